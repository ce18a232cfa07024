/*-------------------------------------------------------------------------
 *
 * common.c
 *	  What every schedphi C file may use: whether the library was
 *	  preloaded, and the plans of the queries it keeps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "common.h"

/* Set by _PG_init (schedphi.c). */
bool		schedphi_preloaded = false;

/*
 * Prepare a query once per backend and keep the plan (the caller is
 * connected to SPI).  The plans are generic: every query schedphi keeps
 * has the same shape whatever its parameters, and re-planning it on every
 * call would cost more than running it.
 */
SPIPlanPtr
schedphi_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "schedphi: could not prepare \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "schedphi: could not keep the plan of \"%s\"", sql);
		*slot = plan;
	}
	return *slot;
}

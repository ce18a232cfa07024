/*-------------------------------------------------------------------------
 *
 * schedphi.c
 *	  Module entry point: _PG_init, settings, hooks and workers.
 *
 * The library works whether or not it is preloaded.  Preloaded, the
 * postmaster runs schedphi.key_command once at start and every backend
 * inherits the master keys, and the log-masking hook covers every
 * statement from the first; otherwise each backend loads the keys when it
 * first needs them and masks the log from the moment the library is
 * loaded.  Features that need shared memory or a background worker (added
 * by later parts) check schedphi_preloaded and say so with an errhint.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "schedphi.h"

PG_MODULE_MAGIC;

bool		schedphi_preloaded = false;

void		_PG_init(void);

/*
 * Define the settings, install the log hook, and reserve the "schedphi."
 * setting prefix, so that nobody can invent a schedphi.* placeholder
 * setting and have code (ours or an application's) mistake it for one of
 * ours.  When preloaded, load the master keys in the postmaster.
 */
void
_PG_init(void)
{
	schedphi_preloaded = process_shared_preload_libraries_in_progress;

	schedphi_keys_init_guc();
	schedphi_actor_init();
	schedphi_ratelimit_init();
	schedphi_logmask_init();
	schedphi_audit_init();
	MarkGUCPrefixReserved("schedphi");

	if (schedphi_preloaded)
		schedphi_keys_preload();
}

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

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
#include "tcop/utility.h"
#include "utils/guc.h"

#include "schedphi.h"

PG_MODULE_MAGIC;

bool		schedphi_preloaded = false;

void		_PG_init(void);

static ProcessUtility_hook_type prev_utility_hook = NULL;

static void
next_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			 ProcessUtilityContext context, ParamListInfo params,
			 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

/*
 * Utility statements some parts must see before they run: DISCARD ALL and
 * RESET ALL end a session-scoped actor context (actor.c), DROP DATABASE
 * first stops that database's audit worker (audit.c); a COPY into the bulk
 * import has the rows it would quote cut from its errors (import.c).
 */
static void
schedphi_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	schedphi_actor_utility(pstmt->utilityStmt);
	schedphi_audit_utility(pstmt->utilityStmt);
	if (!schedphi_is_import_copy(pstmt->utilityStmt))
	{
		next_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		return;
	}

	/*
	 * COPY into the bulk import: the error of a bad row must not quote the
	 * row (COPY's context would), only where it is.
	 */
	{
		MemoryContext cxt = CurrentMemoryContext;

		PG_TRY();
		{
			next_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			if (edata->context != NULL)
				schedphi_import_scrub_context(edata->context);
			ReThrowError(edata);
		}
		PG_END_TRY();
	}
}

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
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = schedphi_utility_hook;
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

/*-------------------------------------------------------------------------
 *
 * schedphi.c
 *	  Module entry point: _PG_init, which has each part define its settings
 *	  and install its hooks, and the utility hook they share.
 *
 * The library works whether or not it is preloaded.  Preloaded, the
 * postmaster runs schedphi.key_command once at start and every backend
 * inherits the master keys, and the log-masking hook covers every
 * statement from the first; otherwise each backend loads the keys when it
 * first needs them and masks the log from the moment the library is
 * loaded.  Features that need shared memory or a background worker (the
 * audit queue, rate limits, the shared generations of the role and rules
 * caches) check that their shared memory exists and say so with an errhint.
 *
 * Nothing else includes what is defined here: every other file depends
 * only on the parts whose headers it includes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "actor.h"
#include "analytics.h"
#include "audit.h"
#include "common.h"
#include "estimates.h"
#include "import.h"
#include "keys.h"
#include "ledger.h"
#include "logmask.h"
#include "membership.h"
#include "origin.h"
#include "queue.h"
#include "ratelimit.h"
#include "walltime.h"

PG_MODULE_MAGIC;

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
 * RESET ALL end a session-scoped actor context (actor.c), any statement
 * readies the recording of PostgreSQL's own refusals (audit.c), DROP
 * DATABASE first stops that database's audit worker (queue.c), a role's
 * GRANT, REVOKE, CREATE, ALTER, DROP or RENAME makes the roles cached by
 * every session stale at commit (membership.c), and a COPY
 * into the bulk import has the rows it would quote cut from its errors
 * (import.c).
 */
static void
schedphi_utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	schedphi_actor_utility(pstmt->utilityStmt);
	schedphi_audit_utility(pstmt->utilityStmt);
	schedphi_queue_utility(pstmt->utilityStmt);
	schedphi_members_utility(pstmt->utilityStmt);
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
 * Define the settings, install the hooks, and reserve the "schedphi."
 * setting prefix, so that nobody can invent a schedphi.* placeholder
 * setting and have code (ours or an application's) mistake it for one of
 * ours.  When preloaded, load the master keys in the postmaster.
 *
 * The order matters where hooks meet: transaction callbacks run newest
 * first, so membership and rules (registered after audit) refuse a PREPARE
 * before audit.c records the reads gathered in the transaction, as they
 * did when one callback did all three; audit's emit_log hook runs before
 * logmask's.
 */
void
_PG_init(void)
{
	schedphi_preloaded = process_shared_preload_libraries_in_progress;

	schedphi_keys_init_guc();
	schedphi_actor_init();
	schedphi_ratelimit_init();
	schedphi_logmask_init();
	schedphi_queue_init();
	schedphi_ledger_init();
	schedphi_audit_init();
	schedphi_rules_init();
	schedphi_membership_init();
	schedphi_origin_init();
	schedphi_analytics_init();
	schedphi_estimates_init();
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = schedphi_utility_hook;
	MarkGUCPrefixReserved("schedphi");

	if (schedphi_preloaded)
		schedphi_keys_preload();
}

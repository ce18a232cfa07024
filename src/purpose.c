/*-------------------------------------------------------------------------
 *
 * purpose.c
 *	  set_purpose(): the purpose of use of a transaction, checked before
 *	  actor.c keeps it.
 *
 * TREAT, PAYMENT and OPERATIONS are declared freely.  EMERGENCY is the
 * purpose of an active break-glass grant, and through an assumed token it
 * needs a token that showed a second factor (schedphi.require_mfa); a
 * refusal is recorded in the audit log (audit.c) like every denial.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "actor.h"
#include "audit.h"
#include "common.h"

/* Does the caller hold an active break-glass grant? */
static bool
holds_break_glass(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	bool		held;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&plan, "SELECT schedphi._holds_break_glass()", 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi: break-glass query failed");
	held = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
	SPI_finish();
	return held;
}

PG_FUNCTION_INFO_V1(schedphi_set_purpose);

/*
 * set_purpose(purpose text) -> void: the purpose of use of this
 * transaction.  EMERGENCY needs an active break-glass grant.
 */
Datum
schedphi_set_purpose(PG_FUNCTION_ARGS)
{
	char	   *p;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("purpose must not be null")));
	p = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strcmp(p, "TREAT") != 0 && strcmp(p, "PAYMENT") != 0 && strcmp(p, "OPERATIONS") != 0 &&
		strcmp(p, "EMERGENCY") != 0)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("unknown purpose of use"),
				 errdetail("Purposes are TREAT, PAYMENT, OPERATIONS and EMERGENCY.")));
	if (strcmp(p, "EMERGENCY") == 0 && !holds_break_glass())
		schedphi_audit_deny(NULL, ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied: break-glass rule",
							"EMERGENCY is the purpose of an active break-glass grant.",
							"Open one with schedphi.break_glass(patient, reason).");
	/* a grant is used as it is opened: through a token, with a second factor */
	if (strcmp(p, "EMERGENCY") == 0 && schedphi_require_mfa &&
		schedphi_current_actor() != NULL && !schedphi_current_actor()->mfa)
		schedphi_audit_deny(&schedphi_current_actor()->tenant, ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied: MFA rule",
							"Using a break-glass grant through an assumed token needs a token whose amr shows a second factor.",
							NULL);
	schedphi_set_current_purpose(p);
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 *
 * actor.c
 *	  Who is asking: the actor context, assumed from a verified token, and
 *	  the purpose of use.
 *
 * The context lives in this backend's memory and only the C code here
 * writes it: no setting, SET or set_config can forge it (the "schedphi."
 * setting prefix is reserved).  assume() sets it from a token that jwt.c
 * has verified.  A transaction-scoped context ends at commit or abort; a
 * session-scoped one (only where schedphi.allow_session_scope is on) ends
 * with DISCARD ALL or RESET ALL (what a session pool runs between
 * clients), when the session user changes, or when its token expires.
 * The purpose of use always lasts one transaction; set_purpose()
 * (purpose.c) checks it before it is set here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "actor.h"
#include "audit.h"
#include "common.h"
#include "membership.h"

static SchedphiActor actor;
static uint64 actor_generation = 0;
static char purpose[16];
static LocalTransactionId purpose_lxid = InvalidLocalTransactionId;

int			schedphi_max_token_lifetime = 900;
bool		schedphi_require_mfa = true;
bool		schedphi_allow_session_scope = false;
bool		schedphi_require_training = false;

/* End the actor context; its memory is zeroed. */
static void
forget_actor(void)
{
	explicit_bzero(&actor, sizeof(actor));
	actor_generation++;
}

/* Changes whenever the actor context is set or forgotten. */
uint64
schedphi_actor_generation(void)
{
	return actor_generation;
}

/* The assumed actor, or NULL when none is in force. */
const SchedphiActor *
schedphi_current_actor(void)
{
	if (!actor.active)
		return NULL;
	if (actor.login != GetSessionUserId())
	{
		/* SET SESSION AUTHORIZATION: the context belonged to someone else */
		forget_actor();
		return NULL;
	}
	if (GetCurrentStatementStartTimestamp() >= actor.ends)
	{
		/* the token has expired: so has what it vouched for */
		forget_actor();
		purpose[0] = '\0';
		return NULL;
	}
	return &actor;
}

/*
 * assume() in a subtransaction (a savepoint, an exception block) is undone
 * when that subtransaction rolls back: each assume() pushes the context it
 * replaces, with the subtransaction that context was set in.  The stack is
 * short; should it overflow, the oldest entries are dropped, and rolling
 * back to one of them leaves no context at all (never a wrong one).
 */
#define ACTOR_STACK 8
typedef struct
{
	SchedphiActor actor;
	SubTransactionId subid;
	bool		lost;
}			ActorUndo;
static ActorUndo undo[ACTOR_STACK];
static int	nundo = 0;
static SubTransactionId actor_subid = InvalidSubTransactionId;

/* Empty the undo stack. */
static void
forget_undo(void)
{
	explicit_bzero(undo, sizeof(undo));
	nundo = 0;
	actor_subid = InvalidSubTransactionId;
}

/* Make `a` the actor context, pushing the one it replaces (see above). */
void
schedphi_set_actor(const SchedphiActor *a)
{
	if (nundo == ACTOR_STACK)
	{
		memmove(&undo[0], &undo[1], sizeof(ActorUndo) * (ACTOR_STACK - 1));
		undo[0].lost = true;
		nundo--;
	}
	undo[nundo].actor = actor;
	undo[nundo].subid = actor_subid;
	undo[nundo].lost = false;
	nundo++;
	actor_subid = GetCurrentSubTransactionId();
	actor = *a;
	actor.active = true;
	actor.login = GetSessionUserId();
	actor_generation++;
	/* a purpose was declared by whoever was asking before */
	purpose[0] = '\0';
	purpose_lxid = InvalidLocalTransactionId;
}

/*
 * At the end of a transaction: undo an assume() that rolled back, end a
 * transaction-scoped context (a session one it overrode comes back), and
 * forget the purpose.
 */
static void
actor_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* an assume() in a transaction that rolls back is undone, session scope too */
			if (nundo > 0)
			{
				if (undo[0].lost)
					explicit_bzero(&actor, sizeof(actor));
				else
					actor = undo[0].actor;
				actor_generation++;
			}
			/* FALLTHROUGH */
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			if (actor.active && !actor.session_scope)
			{
				/* a transaction-scope token overrode a session one: that one is back */
				int			i = nundo - 1;

				while (i >= 0 && !(undo[i].actor.active && undo[i].actor.session_scope && !undo[i].lost))
					i--;
				if (i >= 0)
				{
					actor = undo[i].actor;
					actor_generation++;
				}
				else
					forget_actor();
			}
			purpose[0] = '\0';
			purpose_lxid = InvalidLocalTransactionId;
			forget_undo();
			break;
		default:
			break;
	}
}

/* At the end of a subtransaction: keep, or undo, the assume() made in it. */
static void
actor_subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		/* what was set in the subtransaction now belongs to its parent */
		if (actor_subid == mySubid)
			actor_subid = parentSubid;
		for (int i = 0; i < nundo; i++)
			if (undo[i].subid == mySubid)
				undo[i].subid = parentSubid;
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		bool		changed = false;

		/* undo every assume() made in the subtransaction, newest first */
		while (nundo > 0 && actor_subid == mySubid)
		{
			nundo--;
			if (undo[nundo].lost)
			{
				explicit_bzero(&actor, sizeof(actor));
				actor_subid = InvalidSubTransactionId;
			}
			else
			{
				actor = undo[nundo].actor;
				actor_subid = undo[nundo].subid;
			}
			explicit_bzero(&undo[nundo], sizeof(ActorUndo));
			changed = true;
		}
		if (changed)
		{
			actor_generation++;
			/* a purpose declared for the undone actor goes with it */
			purpose[0] = '\0';
			purpose_lxid = InvalidLocalTransactionId;
		}
	}
}

/* DISCARD ALL and RESET ALL end a session-scoped context too (schedphi.c's utility hook). */
void
schedphi_actor_utility(Node *node)
{
	if ((IsA(node, DiscardStmt) && ((DiscardStmt *) node)->target == DISCARD_ALL) ||
		(IsA(node, VariableSetStmt) && ((VariableSetStmt *) node)->kind == VAR_RESET_ALL))
	{
		forget_actor();
		purpose[0] = '\0';
	}
}

/*
 * A session-scope context whose subject has been terminated in its tenant
 * (terminate_member) ends at its next statement, refused and recorded.
 * Called at the start of every statement (audit.c's ExecutorStart hook);
 * looks only when memberships changed since it last looked (a generation
 * in shared memory; not preloaded, once per transaction), so its cost does
 * not grow with the session.  A transaction-scope context needs assume()
 * in each transaction, which refuses a terminated subject itself.
 */
void
schedphi_actor_check_terminated(void)
{
	static SPIPlanPtr plan = NULL;
	static bool busy = false;
	static uint64 checked_actor = 0;
	static uint64 checked_members = 0;
	static LocalTransactionId checked_lxid = InvalidLocalTransactionId;
	uint64		members = 0;
	bool		known;
	bool		terminated = false;
	pg_uuid_t	tenant;

	if (!actor.active || !actor.session_scope || busy || IsParallelWorker() || !IsTransactionState())
		return;
	known = schedphi_membership_version(&members);
	if (checked_actor == actor_generation &&
		(known ? checked_members == members : checked_lxid == MyProc->lxid))
		return;
	busy = true;
	PG_TRY();
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&plan, "SELECT schedphi._actor_terminated()", 0, NULL);
		/* (not read-only: a snapshot of its own, see membership.c) */
		if (SPI_execute_plan(plan, NULL, NULL, IsInParallelMode(), 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "schedphi: termination check failed");
		terminated = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
		SPI_finish();
	}
	PG_FINALLY();
	{
		busy = false;
	}
	PG_END_TRY();
	if (terminated)
	{
		/* recorded while the context still names whom it refuses, then ended */
		tenant = actor.tenant;
		schedphi_audit_record_denial(&tenant, ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied: termination rule");
		forget_actor();
		purpose[0] = '\0';
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied: termination rule"),
				 errdetail("The token's subject was terminated in this tenant (terminate_member); its session context has ended.")));
	}
	checked_actor = actor_generation;
	checked_members = known ? members : 0;
	checked_lxid = MyProc->lxid;
}

/* The actor context's settings and its (sub)transaction callbacks. */
void
schedphi_actor_init(void)
{
	DefineCustomIntVariable("schedphi.max_token_lifetime",
							"Longest lifetime (exp - iat) of a token assume() accepts.",
							NULL,
							&schedphi_max_token_lifetime,
							900, 60, 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("schedphi.require_mfa",
							 "Whether tokens for roles that read PHI must show multi-factor authentication (amr).",
							 NULL,
							 &schedphi_require_mfa,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	/*
	 * Off by default: behind a transaction pool a server connection passes
	 * from client to client between transactions, and a session-scope
	 * context would go with it.  Nothing in the session tells a pooled
	 * connection from a direct one, so the DBA says which logins never go
	 * through a transaction pool (ALTER ROLE ... SET, superuser only).
	 */
	DefineCustomBoolVariable("schedphi.allow_session_scope",
							 "Whether assume(token, 'session') is allowed (never for a login behind a transaction pool).",
							 NULL,
							 &schedphi_allow_session_scope,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	/* Off by default; compliance_report() and check_config() say so. */
	DefineCustomBoolVariable("schedphi.require_training",
							 "Whether reading or writing patient data needs current training (record_training).",
							 NULL,
							 &schedphi_require_training,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	RegisterXactCallback(actor_xact_callback, NULL);
	RegisterSubXactCallback(actor_subxact_callback, NULL);
}

/* The purpose of use set for this transaction, or NULL. */
const char *
schedphi_current_purpose(void)
{
	if (purpose[0] == '\0' || purpose_lxid != MyProc->lxid)
		return NULL;
	return purpose;
}

/*
 * Set the purpose of use of this transaction (purpose.c has checked it).
 * The purpose lasts until the transaction ends or the actor changes.
 */
void
schedphi_set_current_purpose(const char *p)
{
	strlcpy(purpose, p, sizeof(purpose));
	purpose_lxid = MyProc->lxid;
}

PG_FUNCTION_INFO_V1(schedphi_session_user_oid);

/* _session_user_oid() -> oid */
Datum
schedphi_session_user_oid(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetSessionUserId());
}

PG_FUNCTION_INFO_V1(schedphi_session_superuser);

/* _session_superuser() -> boolean: is the session user a superuser? */
Datum
schedphi_session_superuser(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(superuser_arg(GetSessionUserId()));
}

PG_FUNCTION_INFO_V1(schedphi_actor_name);

/*
 * _actor_name() -> text: who is asking, as records name them: the assumed
 * token's subject, else the session user.
 */
Datum
schedphi_actor_name(PG_FUNCTION_ARGS)
{
	const SchedphiActor *a = schedphi_current_actor();
	char	   *name;

	if (a != NULL)
		PG_RETURN_TEXT_P(cstring_to_text(a->sub));
	name = GetUserNameFromId(GetSessionUserId(), false);
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

PG_FUNCTION_INFO_V1(schedphi_context);

/*
 * _context() -> (actor text, tenant uuid, role text, practitioner uuid,
 *				  purpose text, via text)
 * The assumed actor (via 'token'), or NULLs but the purpose.
 */
Datum
schedphi_context(PG_FUNCTION_ARGS)
{
	const SchedphiActor *a = schedphi_current_actor();
	const char *p = schedphi_current_purpose();
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {true, true, true, true, true, true, true};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (a != NULL)
	{
		pg_uuid_t  *t = palloc(sizeof(pg_uuid_t));

		*t = a->tenant;
		values[0] = CStringGetTextDatum(a->sub);
		values[1] = UUIDPGetDatum(t);
		values[2] = CStringGetTextDatum(a->role);
		nulls[0] = nulls[1] = nulls[2] = false;
		if (a->has_practitioner)
		{
			pg_uuid_t  *pr = palloc(sizeof(pg_uuid_t));

			*pr = a->practitioner;
			values[3] = UUIDPGetDatum(pr);
			nulls[3] = false;
		}
		values[5] = CStringGetTextDatum("token");
		nulls[5] = false;
		values[6] = BoolGetDatum(a->mfa);
		nulls[6] = false;
	}
	if (p != NULL)
	{
		values[4] = CStringGetTextDatum(p);
		nulls[4] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(schedphi_appointment_access);

/*
 * _appointment_access(tenant uuid) -> (visible, show_patient, show_reason,
 *										 only_practitioner)
 * What the caller may see of the tenant's appointments, worked out by
 * schedphi._appointment_access_compute once per statement, tenant, session
 * user and actor context, and remembered: the appointments view asks for
 * every row.
 */
Datum
schedphi_appointment_access(PG_FUNCTION_ARGS)
{
	static struct
	{
		bool		valid;
		LocalTransactionId lxid;
		TimestampTz stmt;
		Oid			user;
		uint64		generation;
		pg_uuid_t	tenant;
		bool		nulls[4];
		bool		flags[3];
		pg_uuid_t	practitioner;
	}			cache;
	static SPIPlanPtr plan = NULL;
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	TupleDesc	desc;
	Datum		values[4];

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!(cache.valid && cache.lxid == MyProc->lxid &&
		  cache.stmt == GetCurrentStatementStartTimestamp() &&
		  cache.user == GetSessionUserId() && cache.generation == actor_generation &&
		  memcmp(cache.tenant.data, tenant->data, UUID_LEN) == 0))
	{
		Oid			types[1] = {UUIDOID};
		Datum		args[1];

		cache.valid = false;
		args[0] = UUIDPGetDatum(tenant);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&plan, "SELECT * FROM schedphi._appointment_access_compute($1)", 1, types);
		if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "schedphi: appointment access query failed");
		for (int i = 0; i < 4; i++)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &cache.nulls[i]);

			if (cache.nulls[i])
				continue;
			if (i < 3)
				cache.flags[i] = DatumGetBool(d);
			else
				cache.practitioner = *DatumGetUUIDP(d);
		}
		SPI_finish();
		cache.lxid = MyProc->lxid;
		cache.stmt = GetCurrentStatementStartTimestamp();
		cache.user = GetSessionUserId();
		cache.generation = actor_generation;
		cache.tenant = *tenant;
		cache.valid = true;
	}
	for (int i = 0; i < 3; i++)
		values[i] = BoolGetDatum(cache.flags[i]);
	if (!cache.nulls[3])
	{
		pg_uuid_t  *p = palloc(sizeof(pg_uuid_t));

		*p = cache.practitioner;
		values[3] = UUIDPGetDatum(p);
	}
	else
		values[3] = (Datum) 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, cache.nulls)));
}

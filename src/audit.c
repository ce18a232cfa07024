/*-------------------------------------------------------------------------
 *
 * audit.c
 *	  Capture: who touched PHI, what, when, where and why, recorded so that
 *	  neither a rollback nor an error erases it.
 *
 * Two ways into schedphi.audit_log:
 *
 *	 - Writes to PHI tables are recorded by a C trigger (schedphi_audit_write)
 *	   in the transaction that makes them: if it rolls back, nothing was
 *	   written and nothing is recorded.
 *	 - Reads (decryptions), denials, rate-limit refusals, token assumptions,
 *	   break-glass and key operations go into this database's queue in
 *	   shared memory (queue.c), which the audit worker (ledger.c) commits.
 *	   The backend waits for that before its statement completes (explicit
 *	   events wait at once; decryptions are gathered per statement and
 *	   waited for when the statement's executor ends, or before a denial is
 *	   raised).  A full queue or a worker that does not answer within
 *	   schedphi.audit_timeout fails the statement: nothing goes unrecorded.
 *
 * Refusals that PostgreSQL itself raises (a login reading a schedphi
 * table) are recorded too, from the error report hook.  Who is asking
 * comes from actor.c and membership.c; sealing the records into the hash
 * chain is ledger.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/elog.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "actor.h"
#include "analytics.h"
#include "audit.h"
#include "common.h"
#include "ledger.h"
#include "membership.h"
#include "origin.h"
#include "queue.h"

#define PENDING_MAX		256		/* reads gathered before an early enqueue */
#define WRITE_BATCH		1000	/* insert records written in one statement */

static ExecutorEnd_hook_type prev_executor_end_hook = NULL;
static ExecutorRun_hook_type prev_executor_run_hook = NULL;
static ExecutorStart_hook_type prev_executor_start_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* ------------------------------------------------------------------ events */

/* An event of what `w` did, at this moment, in this transaction. */
static void
event_from_who(AuditEvent *ev, const Who *w, const char *action)
{
	memset(ev, 0, sizeof(AuditEvent));
	ev->at = GetCurrentTimestamp();
	ev->xid = (int64) U64FromFullTransactionId(GetTopFullTransactionIdIfAny());
	ev->s[S_LOGIN] = w->login;
	ev->s[S_ACTOR] = w->actor;
	ev->s[S_ROLE] = w->role[0] ? w->role : NULL;
	ev->s[S_PURPOSE] = w->purpose[0] ? w->purpose : NULL;
	ev->s[S_ACTION] = action;
	ev->s[S_CLIENT] = w->client;
	ev->s[S_APPLICATION] = w->application[0] ? w->application : NULL;
	ev->has_tenant = w->has_tenant;
	ev->tenant = w->tenant;
}

/* ---------------------------------------------------- reads, per statement */

#define MAX_COLNAMES 32

typedef struct PendingRead
{
	pg_uuid_t	tenant;
	char		object[32];
	pg_uuid_t	row;
	bool		has_patient;
	pg_uuid_t	patient;
	uint32		cols;			/* bits over colnames */
} PendingRead;

static char colnames[MAX_COLNAMES][NAMEDATALEN];
static int	ncolnames = 0;
static PendingRead pending[PENDING_MAX];
static int	npending = 0;
static Who	pending_who;
static uint64 pending_generation = 0;
static LocalTransactionId pending_lxid = InvalidLocalTransactionId;
static pg_uuid_t reveal_tenant;
static pg_uuid_t reveal_patient;
static bool reveal_known = false;

/* The patient whose data is about to be decrypted (from _note_reveal). */
void
schedphi_audit_note_patient(const pg_uuid_t *tenant, const pg_uuid_t *patient)
{
	reveal_tenant = *tenant;
	reveal_patient = *patient;
	reveal_known = true;
}

/* The bit of a column name among those gathered (the last once full). */
static int
colname_bit(const char *col)
{
	for (int i = 0; i < ncolnames; i++)
		if (strcmp(colnames[i], col) == 0)
			return i;
	if (ncolnames == MAX_COLNAMES)
		return MAX_COLNAMES - 1;
	strlcpy(colnames[ncolnames], col, NAMEDATALEN);
	return ncolnames++;
}

/* Serialise and queue the gathered reads (no wait). */
static void
flush_reads(bool may_error)
{
	StringInfoData buf;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (npending == 0)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	initStringInfo(&buf);
	for (int i = 0; i < npending; i++)
	{
		PendingRead *r = &pending[i];
		AuditEvent	ev;
		StringInfoData cols;

		event_from_who(&ev, &pending_who, "read");
		ev.has_tenant = true;
		ev.tenant = r->tenant;
		ev.s[S_OBJECT] = r->object;
		ev.has_object_id = true;
		ev.object_id = r->row;
		ev.has_patient = r->has_patient;
		ev.patient = r->patient;
		initStringInfo(&cols);
		appendStringInfoChar(&cols, '{');
		for (int b = 0; b < ncolnames; b++)
			if (r->cols & (1u << b))
				appendStringInfo(&cols, "%s%s", cols.len > 1 ? "," : "", colnames[b]);
		appendStringInfoChar(&cols, '}');
		ev.s[S_COLUMNS] = cols.data;
		schedphi_event_serialise(&buf, &ev);
		pfree(cols.data);
	}
	npending = 0;
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		schedphi_queue_enqueue(buf.data, buf.len, may_error, true);
	}
	PG_FINALLY();
	{
		pfree(buf.data);
	}
	PG_END_TRY();
}

/*
 * Who is asking: in one of Citus's connections on a worker node, whom the
 * coordinator named (origin.c); anywhere else, the session's own.
 */
static void
who_is_asking(Who *w, const pg_uuid_t *tenant, bool may_query)
{
	if (!schedphi_origin_received(w, tenant, NULL))
		schedphi_who_is_asking(w, tenant, may_query);
}

/*
 * A PHI field is about to be decrypted: remember it for this statement's
 * read record.  Called by _open after its access check.
 */
void
schedphi_audit_note_read(const pg_uuid_t *tenant, const char *object, const char *col, const pg_uuid_t *row)
{
	PendingRead *r;
	int			bit;

	schedphi_queue_for_database(true);
	if (npending > 0 && (pending_generation != schedphi_actor_generation() || pending_lxid != MyProc->lxid ||
						 strcmp(pending_who.purpose, schedphi_current_purpose() ? schedphi_current_purpose() : "") != 0))
		flush_reads(true);
	if (npending == 0)
	{
		who_is_asking(&pending_who, tenant, true);
		pending_generation = schedphi_actor_generation();
		pending_lxid = MyProc->lxid;
	}
	bit = colname_bit(col);
	for (int i = npending - 1; i >= 0 && i >= npending - 4; i--)
	{
		r = &pending[i];
		if (memcmp(r->row.data, row->data, UUID_LEN) == 0 && strcmp(r->object, object) == 0 &&
			memcmp(r->tenant.data, tenant->data, UUID_LEN) == 0)
		{
			r->cols |= 1u << bit;
			return;
		}
	}
	if (npending == PENDING_MAX)
		flush_reads(true);
	r = &pending[npending++];
	memset(r, 0, sizeof(PendingRead));
	r->tenant = *tenant;
	strlcpy(r->object, object, sizeof(r->object));
	r->row = *row;
	if (strcmp(object, "patient") == 0)
	{
		r->has_patient = true;
		r->patient = *row;
	}
	else if (reveal_known && memcmp(reveal_tenant.data, tenant->data, UUID_LEN) == 0)
	{
		r->has_patient = true;
		r->patient = reveal_patient;
	}
	r->cols = 1u << bit;
}

/*
 * Reads are made durable when the outermost executor (the client's
 * statement, or a statement of a DO block or procedure) finishes running,
 * and again when it ends: nested queries (a function's own SPI, loading a
 * key) do not each wait.  The rows are then still in the backend's output
 * buffer unless they exceeded it (docs/audit.md).
 */
static int	exec_nesting = 0;

/* Queue the reads gathered so far and wait until they are committed. */
static void
make_reads_durable(void)
{
	if (schedphi_in_audit_worker())
		return;
	if (npending > 0)
		flush_reads(true);
	schedphi_queue_wait_durable();
}

/* ExecutorRun hook: the outermost executor's reads, as it finishes. */
static void
audit_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once)
{
	if (exec_nesting == 0)
		schedphi_analytics_run_start(queryDesc);
	exec_nesting++;
	PG_TRY();
	{
		if (prev_executor_run_hook)
			prev_executor_run_hook(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		exec_nesting--;
	}
	PG_END_TRY();
	if (exec_nesting == 0)
	{
		schedphi_analytics_run_end(queryDesc, queryDesc->estate->es_processed);
		make_reads_durable();
	}
}

/* ExecutorEnd hook: and as it ends, if it never finished running. */
static void
audit_executor_end(QueryDesc *queryDesc)
{
	if (exec_nesting == 0)
	{
		make_reads_durable();
		schedphi_analytics_query_end(queryDesc);
	}
	if (prev_executor_end_hook)
		prev_executor_end_hook(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

/*
 * The end of a transaction: reads gathered outside an executor are
 * recorded before it commits, and still recorded when it aborts.
 */
static void
audit_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			/* reads gathered outside an executor (rare): record them now */
			if (npending > 0)
				flush_reads(true);
			schedphi_queue_wait_durable();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* the statement failed after decrypting: still recorded */
			exec_nesting = 0;
			if (npending > 0)
				flush_reads(false);
			schedphi_queue_forget_wait();
			reveal_known = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			reveal_known = false;
			break;
		default:
			break;
	}
}

/* ---------------------------------------------------- explicit events */

/* Argument i as a C string, or NULL for SQL NULL. */
static char *
text_or_null(FunctionCallInfo fcinfo, int i)
{
	return PG_ARGISNULL(i) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(i));
}

/*
 * Record an explicit event and wait until it is durable.  detail is JSON
 * text (never PHI) or NULL.
 */
static void
audit_record(const char *action, const pg_uuid_t *tenant, const char *object,
			 const pg_uuid_t *object_id, const pg_uuid_t *patient, const char *detail,
			 bool wait, bool in_transaction)
{
	Who			w;
	AuditEvent	ev;
	bool		queued = schedphi_auditq != NULL && !in_transaction;

	/*
	 * Not preloaded, there is no queue: an event that goes with a change
	 * (a key operation, break-glass) is recorded in the transaction making
	 * it, and a denial only in the server log (by the error itself).
	 * Reading PHI is refused outright (schedphi_audit_note_read).
	 */
	if (schedphi_auditq == NULL &&
		(strcmp(action, "denied") == 0 || strcmp(action, "rate_limited") == 0))
		return;
	if (schedphi_auditq != NULL)
		schedphi_queue_for_database(true);	/* the worker also seals what is written here */
	/* reads before this event are recorded before it */
	if (npending > 0)
		flush_reads(true);
	who_is_asking(&w, tenant, !IsAbortedTransactionBlockState());
	event_from_who(&ev, &w, action);
	if (tenant != NULL && !ev.has_tenant)
	{
		ev.has_tenant = true;
		ev.tenant = *tenant;
	}
	ev.s[S_OBJECT] = object;
	if (object_id)
		ev.has_object_id = true, ev.object_id = *object_id;
	if (patient)
		ev.has_patient = true, ev.patient = *patient;
	ev.s[S_DETAIL] = detail;
	if (queued)
		schedphi_queue_record(&ev, wait);
	else
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_event_insert(&ev);
		SPI_finish();
	}
}

/* Record an explicit event through the queue (wait: until durable). */
void
schedphi_audit_record(const char *action, const pg_uuid_t *tenant, const char *object,
					  const pg_uuid_t *object_id, const pg_uuid_t *patient, const char *detail, bool wait)
{
	audit_record(action, tenant, object, object_id, patient, detail, wait, false);
}

/*
 * What a refusal in the current statement concerns, when the code about to
 * check knows it (the patient whose record is asked for, the row about to
 * be decrypted): the denial's record then names it, and access_report lists
 * the refused attempt with the patient's other accesses.
 */
static struct
{
	TimestampTz stmt;
	char		object[32];
	bool		has_id;
	pg_uuid_t	id;
	bool		has_patient;
	pg_uuid_t	patient;
}			deny_target;

/* Name what a refusal in this statement concerns; NULL forgets it. */
void
schedphi_audit_deny_target(const char *object, const pg_uuid_t *id, const pg_uuid_t *patient)
{
	/* no object: the checks are passed, what follows is about nothing in particular */
	if (object == NULL)
	{
		deny_target.stmt = 0;
		return;
	}
	deny_target.stmt = GetCurrentStatementStartTimestamp();
	strlcpy(deny_target.object, object, sizeof(deny_target.object));
	deny_target.has_id = id != NULL;
	if (id != NULL)
		deny_target.id = *id;
	deny_target.has_patient = patient != NULL;
	if (patient != NULL)
		deny_target.patient = *patient;
}

PG_FUNCTION_INFO_V1(schedphi_audit_target);

/*
 * _audit_target(object text, object_id uuid, patient uuid) -> void; not
 * strict: a NULL object forgets the target once the checks are passed.
 */
Datum
schedphi_audit_target(PG_FUNCTION_ARGS)
{
	schedphi_audit_deny_target(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
							   PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1),
							   PG_ARGISNULL(2) ? NULL : PG_GETARG_UUID_P(2));
	PG_RETURN_VOID();
}

/* The message of the denial schedphi_audit_deny last recorded itself. */
static char recorded_denial[256];

/*
 * Record a denial (durably) without raising it: for a caller that must
 * change state between the record, which names who was refused, and the
 * error.  The error report hook will not record the same message again.
 */
void
schedphi_audit_record_denial(const pg_uuid_t *tenant, int sqlstate, const char *message)
{
	StringInfoData js;
	const char *action = sqlstate == SCHEDPHI_RATE_LIMITED ? "rate_limited" : "denied";

	/* recorded here: the error report hook must not record it again */
	strlcpy(recorded_denial, message, sizeof(recorded_denial));

	initStringInfo(&js);
	appendStringInfoString(&js, "{\"rule\": ");
	escape_json(&js, message);
	appendStringInfoString(&js, ", \"sqlstate\": ");
	escape_json(&js, unpack_sql_state(sqlstate));
	appendStringInfoChar(&js, '}');
	if (deny_target.stmt != 0 && deny_target.stmt == GetCurrentStatementStartTimestamp())
		schedphi_audit_record(action, tenant, deny_target.object,
							  deny_target.has_id ? &deny_target.id : NULL,
							  deny_target.has_patient ? &deny_target.patient : NULL, js.data, true);
	else
		schedphi_audit_record(action, tenant, NULL, NULL, NULL, js.data, true);
	pfree(js.data);
}

/*
 * A denial: record it (durably), then raise 42501 with the rule.  Never
 * returns.  rule is the message, e.g. "permission denied: role rule".
 */
void
schedphi_audit_deny(const pg_uuid_t *tenant, int sqlstate, const char *message, const char *detail,
					const char *hint)
{
	schedphi_audit_record_denial(tenant, sqlstate, message);
	/*
	 * No CONTEXT lines: they would only show schedphi's own call of _deny.
	 * Whoever catches the error restores the context stack (PG_TRY saves it).
	 */
	error_context_stack = NULL;
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", message),
			 detail ? errdetail("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/*
 * The SQL arguments of _audit_event and _audit_change: (action text,
 * tenant uuid, object text, object_id uuid, patient uuid, detail jsonb).
 * Not strict: only action is required.
 */
static void
audit_record_args(FunctionCallInfo fcinfo, bool in_transaction)
{
	char	   *detail = PG_ARGISNULL(5) ? NULL :
		DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(5)));

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("action must not be null")));
	audit_record(text_to_cstring(PG_GETARG_TEXT_PP(0)),
				 PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1),
				 text_or_null(fcinfo, 2),
				 PG_ARGISNULL(3) ? NULL : PG_GETARG_UUID_P(3),
				 PG_ARGISNULL(4) ? NULL : PG_GETARG_UUID_P(4),
				 detail, !in_transaction, in_transaction);
}

PG_FUNCTION_INFO_V1(schedphi_audit_event);

/* _audit_event(...): an explicit event, queued; waits until it is durable. */
Datum
schedphi_audit_event(PG_FUNCTION_ARGS)
{
	audit_record_args(fcinfo, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(schedphi_audit_change);

/*
 * _audit_change(...): the record of a change that is not a write to a PHI
 * table (a key, membership or issuer event), written in the calling
 * transaction so that it commits or rolls back with the change.
 */
Datum
schedphi_audit_change(PG_FUNCTION_ARGS)
{
	audit_record_args(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(schedphi_deny);

/*
 * _deny(tenant uuid, message text, detail text, hint text) -> void
 * Records the denial, then raises 42501.  Only message is required.
 */
Datum
schedphi_deny(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("message must not be null")));
	schedphi_audit_deny(PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0), ERRCODE_INSUFFICIENT_PRIVILEGE,
						text_to_cstring(PG_GETARG_TEXT_PP(1)), text_or_null(fcinfo, 2), text_or_null(fcinfo, 3));
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------- the triggers */

/*
 * The transaction that is re-encrypting (schedphi.reencrypt): its updates
 * of sealed columns change ciphertext, not values, and are recorded as
 * "reencrypt" rather than as changes of the patient's data.
 */
static LocalTransactionId reencrypt_lxid = InvalidLocalTransactionId;

PG_FUNCTION_INFO_V1(schedphi_audit_reencrypting);

/* _audit_reencrypting(on boolean) -> void: reencrypt's start and end (superuser only). */
Datum
schedphi_audit_reencrypting(PG_FUNCTION_ARGS)
{
	reencrypt_lxid = PG_GETARG_BOOL(0) ? MyProc->lxid : InvalidLocalTransactionId;
	schedphi_origin_set_activity(PG_GETARG_BOOL(0) ? "reencrypt" : NULL);
	PG_RETURN_VOID();
}

/*
 * The names of the columns a write touched, as a text[] literal: for an
 * insert those not null, for an update those changed (old given), never
 * values.
 */
static void
written_columns(StringInfo cols, TupleDesc desc, HeapTuple row, HeapTuple old)
{
	resetStringInfo(cols);
	appendStringInfoChar(cols, '{');
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		n1,
					n2;
		Datum		d1,
					d2;
		bool		changed;

		if (att->attisdropped)
			continue;
		d1 = heap_getattr(row, i + 1, desc, &n1);
		if (old == NULL)
			changed = !n1;
		else
		{
			d2 = heap_getattr(old, i + 1, desc, &n2);
			changed = n1 != n2 || (!n1 && !datum_image_eq(d1, d2, att->attbyval, att->attlen));
		}
		if (changed)
			appendStringInfo(cols, "%s%s", cols->len > 1 ? "," : "", quote_identifier(NameStr(att->attname)));
	}
	appendStringInfoChar(cols, '}');
}

/* The event of one row written: its tenant, id and patient, and columns. */
static void
write_event(AuditEvent *ev, const Who *w, const char *action, Relation rel, const char *object,
			int patientcol, HeapTuple row, const char *cols)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		isnull;
	Datum		d;

	event_from_who(ev, w, action);
	d = heap_getattr(row, SPI_fnumber(desc, "tenant"), desc, &isnull);
	if (isnull)
		elog(ERROR, "schedphi_audit_write: tenant is null");
	ev->has_tenant = true;
	ev->tenant = *DatumGetUUIDP(d);
	ev->s[S_OBJECT] = object;
	d = heap_getattr(row, SPI_fnumber(desc, "id"), desc, &isnull);
	if (!isnull)
		ev->has_object_id = true, ev->object_id = *DatumGetUUIDP(d);
	d = heap_getattr(row, patientcol, desc, &isnull);
	if (!isnull)
		ev->has_patient = true, ev->patient = *DatumGetUUIDP(d);
	ev->s[S_COLUMNS] = cols;
}

/*
 * The column that holds the patient (the trigger's first argument), and the
 * object recorded (its second: the table's name, which on a Citus shard is
 * not the relation's).
 */
static int
write_trigger_setup(TriggerData *td, const char **object)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	int			patientcol;

	if (td->tg_trigger->tgnargs != 2 || !TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "schedphi_audit_write: must be an AFTER trigger with two arguments");
	patientcol = SPI_fnumber(desc, td->tg_trigger->tgargs[0]);
	*object = td->tg_trigger->tgargs[1];
	if (SPI_fnumber(desc, "id") <= 0 || SPI_fnumber(desc, "tenant") <= 0 || patientcol <= 0)
		elog(ERROR, "schedphi_audit_write: table lacks id, tenant or the patient column");
	/* the sealer must run somewhere; a failure to start it is not ours */
	if (schedphi_auditq != NULL)
		schedphi_queue_for_database(false);
	return patientcol;
}

PG_FUNCTION_INFO_V1(schedphi_audit_write);

/*
 * On a PHI table (argument: the column that holds the patient), in the
 * writing transaction:
 *	 - AFTER UPDATE OR DELETE FOR EACH ROW: one record per row;
 *	 - AFTER INSERT FOR EACH STATEMENT, REFERENCING NEW TABLE: one record per
 *	   row inserted, all in one statement (a bulk import of a thousand
 *	   patients writes its thousand records at once, not one by one).
 * Records the names of the columns written (insert: those not null;
 * update: those changed), never values.  Who is asking is the same for
 * every row of a statement.
 */
Datum
schedphi_audit_write(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	int			patientcol;
	const char *object;
	StringInfoData cols;
	Who			w;
	bool		have_who = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "schedphi_audit_write: not called as a trigger");
	rel = td->tg_relation;
	patientcol = write_trigger_setup(td, &object);
	initStringInfo(&cols);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		const char *action;
		char		activity[16];
		HeapTuple	row;
		AuditEvent	ev;
		pg_uuid_t	tenant;
		bool		isnull;

		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			action = reencrypt_lxid == MyProc->lxid ? "reencrypt" : "update";
			row = td->tg_newtuple;
			written_columns(&cols, RelationGetDescr(rel), row, td->tg_trigtuple);
		}
		else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		{
			action = "delete";
			row = td->tg_trigtuple;
			appendStringInfoString(&cols, "{}");
		}
		else
			elog(ERROR, "schedphi_audit_write: inserts are recorded per statement");
		tenant = *DatumGetUUIDP(heap_getattr(row, SPI_fnumber(RelationGetDescr(rel), "tenant"),
											 RelationGetDescr(rel), &isnull));
		/* on a Citus worker node, the coordinator says who, and whether reencrypt */
		if (schedphi_origin_received(&w, &tenant, activity))
		{
			if (strcmp(activity, "reencrypt") == 0 && strcmp(action, "update") == 0)
				action = "reencrypt";
		}
		else
			schedphi_who_is_asking(&w, &tenant, true);
		write_event(&ev, &w, action, rel, object, patientcol, row, cols.data);
		schedphi_event_insert(&ev);
	}
	else
	{
		Tuplestorestate *ts = td->tg_newtable;
		TupleTableSlot *slot;
		AuditEvent *evs;
		int			n = 0;
		MemoryContext batch = AllocSetContextCreate(CurrentMemoryContext, "schedphi audit inserts",
													ALLOCSET_DEFAULT_SIZES);

		if (!TRIGGER_FIRED_BY_INSERT(td->tg_event) || ts == NULL)
			elog(ERROR, "schedphi_audit_write: a statement trigger records inserts, with their new table");
		slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
		evs = palloc(sizeof(AuditEvent) * WRITE_BATCH);
		tuplestore_rescan(ts);
		while (tuplestore_gettupleslot(ts, true, false, slot))
		{
			bool		should_free;
			HeapTuple	row = ExecFetchSlotHeapTuple(slot, false, &should_free);

			if (!have_who)
			{
				bool		isnull;
				pg_uuid_t	tenant = *DatumGetUUIDP(heap_getattr(row, SPI_fnumber(RelationGetDescr(rel), "tenant"),
																 RelationGetDescr(rel), &isnull));

				who_is_asking(&w, &tenant, true);
				have_who = true;
			}
			written_columns(&cols, RelationGetDescr(rel), row, NULL);
			write_event(&evs[n], &w, "insert", rel, object, patientcol, row, MemoryContextStrdup(batch, cols.data));
			if (should_free)
				heap_freetuple(row);
			/* a huge insert is recorded in chunks: memory stays flat */
			if (++n == WRITE_BATCH)
			{
				schedphi_events_insert(evs, n);
				MemoryContextReset(batch);
				n = 0;
			}
		}
		ExecDropSingleTupleTableSlot(slot);
		schedphi_events_insert(evs, n);
		MemoryContextDelete(batch);
	}
	SPI_finish();
	return PointerGetDatum(NULL);
}

/* ------------------------------------------- PostgreSQL's own refusals */

/*
 * Refusals that PostgreSQL itself raises — a login reading a schedphi
 * table, calling an internal function — are recorded too, from the error
 * report hook.  There nothing may wait or fail: the record is queued
 * without waiting (a crash in the next milliseconds can lose it; the
 * statement failed anyway), and only in databases where schedphi is
 * installed (looked up once per backend, before the first statement runs:
 * privileges are checked when an executor starts).
 */
static int	schedphi_here = -1;		/* -1 unknown, 0 no, 1 yes */
static bool in_emit_hook = false;

/*
 * While the catalog may be read (a statement is starting): learn whether
 * schedphi is installed here and the login's name, so that a refusal by
 * PostgreSQL itself, reported later from the error hook where nothing may
 * be looked up, can be recorded and named.  Utility statements (COPY,
 * TRUNCATE, SHOW) come here too, through schedphi's utility hook.
 */
static void
prepare_for_refusals(void)
{
	if (schedphi_in_audit_worker() || !IsTransactionState() || !OidIsValid(MyDatabaseId))
		return;
	if (schedphi_here < 0)
		schedphi_here = OidIsValid(get_extension_oid("schedphi", true)) ? 1 : 0;
	if (schedphi_here == 1)
		(void) schedphi_session_login(true);
}

/*
 * Under Citus the writes, and their records, happen on the workers' shards,
 * so nothing on the coordinator would start its audit worker, which seals
 * every chain: the first statement of each coordinator backend in a
 * database with schedphi and Citus makes sure it runs (it then stays).
 */
static void
ensure_citus_sealer(void)
{
	static bool done = false;

	if (done || !IsTransactionState() || schedphi_auditq == NULL || schedphi_is_audit_worker)
		return;
	done = true;
	if (OidIsValid(get_extension_oid("schedphi", true)) && schedphi_citus_present())
		(void) schedphi_queue_for_database(false);
}

/* ExecutorStart hook: get ready to record PostgreSQL's own refusals. */
static void
audit_executor_start(QueryDesc *queryDesc, int eflags)
{
	ensure_citus_sealer();
	prepare_for_refusals();
	schedphi_actor_check_terminated();
	if (prev_executor_start_hook)
		prev_executor_start_hook(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/* Queue a refusal by PostgreSQL without waiting and without raising. */
static void
record_pg_refusal(ErrorData *edata)
{
	Who			w;
	AuditEvent	ev;
	StringInfoData js;
	StringInfoData buf;

	schedphi_who_is_asking(&w, NULL, false);
	event_from_who(&ev, &w, "denied");
	initStringInfo(&js);
	appendStringInfoString(&js, "{\"rule\": ");
	escape_json(&js, pnstrdup(edata->message, 512));
	appendStringInfoString(&js, ", \"sqlstate\": \"42501\", \"by\": \"postgresql\"}");
	ev.s[S_DETAIL] = js.data;
	initStringInfo(&buf);
	schedphi_event_serialise(&buf, &ev);
	schedphi_queue_enqueue(buf.data, buf.len, false, false);
}

/*
 * emit_log hook: record a permission error that PostgreSQL raised, unless
 * schedphi_audit_deny recorded it already; always chain to the next hook.
 */
static void
audit_emit_log(ErrorData *edata)
{
	if (edata->elevel == ERROR && edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE &&
		edata->message != NULL && schedphi_here == 1 && schedphi_auditq != NULL &&
		!schedphi_in_audit_worker() && !in_emit_hook && OidIsValid(MyDatabaseId) && MyProc != NULL)
	{
		if (strcmp(edata->message, recorded_denial) == 0)
			recorded_denial[0] = '\0';		/* schedphi recorded it itself */
		else
		{
			/* nothing in here raises an error (may_error false, bounded sizes) */
			in_emit_hook = true;
			record_pg_refusal(edata);
			in_emit_hook = false;
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* ----------------------------------------------------- utility statements */

/*
 * Utility statements (schedphi.c's utility hook): ready to record a refusal
 * by PostgreSQL.
 */
void
schedphi_audit_utility(Node *node)
{
	/* not while the extension itself is being created: it is not there yet */
	if (!IsA(node, CreateExtensionStmt))
		prepare_for_refusals();
}

/* ------------------------------------------------------------------- init */

/* The hooks that capture reads, refusals and the ends of transactions. */
void
schedphi_audit_init(void)
{
	RegisterXactCallback(audit_xact_callback, NULL);
	prev_executor_end_hook = ExecutorEnd_hook;
	ExecutorEnd_hook = audit_executor_end;
	prev_executor_run_hook = ExecutorRun_hook;
	ExecutorRun_hook = audit_executor_run;
	prev_executor_start_hook = ExecutorStart_hook;
	ExecutorStart_hook = audit_executor_start;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = audit_emit_log;
}

/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  The audit ledger: the background worker that commits queued events
 *	  to schedphi.audit_log and seals them into a SHA-256 hash chain, the
 *	  chain's verification, its retention purge and its signed digest.
 *
 * A worker per database (registered by queue.c when a backend first needs
 * it) moves the events of its queue into schedphi.audit_log in its own
 * transactions, commits synchronously, and then advances the queue's
 * durable position.  It leaves when idle, when schedphi is dropped from
 * its database, or when the database is.
 *
 * The same worker seals: every schedphi.audit_seal_interval it takes the
 * committed records that have no hash yet, in id order, gives each the next
 * seq and hash = SHA-256(prev_hash || canonical record), and updates them
 * in one statement.  Users' transactions never wait for the sealer.
 * verify_audit() recomputes the chain and names the first record changed,
 * removed or reordered.
 *
 * The log is append-only: a trigger that fires always (even with
 * session_replication_role = replica) refuses UPDATE, DELETE and TRUNCATE,
 * except the sealer's own update of unsealed rows and the retention purge,
 * which this process's C code alone can allow.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "common.h"
#include "keys.h"
#include "ledger.h"
#include "queue.h"

#define WORKER_IDLE_MS	60000	/* an idle worker leaves after this */
#define SEAL_BATCH		5000

/* --------------------------------------------------------------- settings */

static int	audit_seal_interval_ms = 1000;
static char *audit_retention = NULL;

/* This process is the audit worker; it alone may seal and purge. */
static bool in_worker = false;
static bool guard_open = false;

/* Is this process the audit worker?  audit.c captures nothing in it. */
bool
schedphi_in_audit_worker(void)
{
	return in_worker;
}

/* -------------------------------------------------- the append-only guard */

PG_FUNCTION_INFO_V1(schedphi_audit_guard);

/*
 * BEFORE UPDATE OR DELETE (row) and BEFORE TRUNCATE (statement) on the
 * audit log, enabled ALWAYS: the log is append-only.  Only the sealer (an
 * update giving an unsealed record its seq and hash) and the retention
 * purge in this process's C code pass.
 */
Datum
schedphi_audit_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "schedphi_audit_guard: not called as a trigger");
	if (guard_open)
	{
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			bool		isnull;

			(void) heap_getattr(td->tg_trigtuple, SPI_fnumber(RelationGetDescr(td->tg_relation), "hash"),
								RelationGetDescr(td->tg_relation), &isnull);
			if (isnull)
				return PointerGetDatum(td->tg_newtuple);
		}
		else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
			return PointerGetDatum(td->tg_trigtuple);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("schedphi.audit_log is append-only"),
			 errdetail("Audit records cannot be updated, deleted or truncated, by anyone."),
			 errhint("Old records leave only through schedphi.purge_audit(), after schedphi.audit_retention.")));
	return PointerGetDatum(NULL);
}

/* ------------------------------------------------------------- the chain */

/* Columns of the canonical record, in this order, as the queries select them. */
#define CANON_SELECT \
	"seq, at, login::text, actor, tenant, role, purpose, action, object, object_id, patient, columns, " \
	"client_addr::text, application, detail::text, xid"
#define CANON_NCOLS 16

/* A present field: 0x01, its length as 4 bytes big-endian, its bytes. */
static void
canon_field(StringInfo buf, const void *p, uint32 len)
{
	uint8		be[5];

	be[0] = 1;
	be[1] = (len >> 24) & 0xff;
	be[2] = (len >> 16) & 0xff;
	be[3] = (len >> 8) & 0xff;
	be[4] = len & 0xff;
	appendBinaryStringInfo(buf, (const char *) be, 5);
	appendBinaryStringInfo(buf, (const char *) p, len);
}

/* An integer or timestamp field: 8 bytes, big-endian. */
static void
canon_int64(StringInfo buf, int64 v)
{
	uint8		be[8];

	for (int i = 7; i >= 0; i--, v >>= 8)
		be[i] = v & 0xff;
	canon_field(buf, be, 8);
}

/*
 * The canonical form of a record: each column in CANON_SELECT order as
 * 0x00 (null) or 0x01, a 4-byte big-endian length and the bytes: integers
 * and timestamps as 8-byte big-endian, uuids as their 16 bytes, text as
 * UTF-8, columns as its element count followed by each element the same
 * way.  seq is given (the sealer assigns it).
 */
static void
canonical_record(StringInfo buf, HeapTuple tup, TupleDesc desc, int64 seq)
{
	resetStringInfo(buf);
	canon_int64(buf, seq);
	for (int c = 2; c <= CANON_NCOLS; c++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, c, &isnull);
		Oid			typ = SPI_gettypeid(desc, c);

		if (isnull)
		{
			appendStringInfoChar(buf, 0);
			continue;
		}
		if (typ == TIMESTAMPTZOID)
			canon_int64(buf, DatumGetTimestampTz(d));
		else if (typ == INT8OID)
			canon_int64(buf, DatumGetInt64(d));
		else if (typ == UUIDOID)
			canon_field(buf, DatumGetUUIDP(d)->data, UUID_LEN);
		else if (typ == TEXTOID)
		{
			text	   *t = DatumGetTextPP(d);

			canon_field(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		}
		else if (typ == TEXTARRAYOID)
		{
			ArrayType  *arr = DatumGetArrayTypeP(d);
			Datum	   *elems;
			bool	   *nulls;
			int			n;

			deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
			canon_int64(buf, n);
			for (int i = 0; i < n; i++)
			{
				if (nulls[i])
					appendStringInfoChar(buf, 0);
				else
				{
					text	   *t = DatumGetTextPP(elems[i]);

					canon_field(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				}
			}
		}
		else
			elog(ERROR, "schedphi: unexpected type %u in an audit record", typ);
	}
}

/* out = SHA-256(prev || canonical record): the next link of the chain. */
static void
chain_hash(const uint8 *prev, const StringInfo canon, uint8 *out)
{
	static EVP_MD_CTX *ctx = NULL;
	unsigned int n = 0;

	if (ctx == NULL)
		ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
		EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
		EVP_DigestUpdate(ctx, prev, HASH_LEN) != 1 ||
		EVP_DigestUpdate(ctx, canon->data, canon->len) != 1 ||
		EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != HASH_LEN)
		elog(ERROR, "schedphi: SHA-256 failed");
}

/* ------------------------------------------------------------- the worker */

static volatile sig_atomic_t got_sighup = false;

/* At the worker's exit: none runs now; wake whoever waits on the queue. */
static void
worker_detach(int code, Datum arg)
{
	int			qi = DatumGetInt32(arg);
	AuditQueue *q = &schedphi_auditq->q[qi];

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	if (q->worker_pid == MyProcPid)
	{
		q->worker_pid = 0;
		q->worker_latch = NULL;
	}
	LWLockRelease(QLOCK(qi));
	ConditionVariableBroadcast(&q->cv);
}

/* Is schedphi installed in this database?  (in a transaction) */
static bool
extension_here(void)
{
	return OidIsValid(get_extension_oid("schedphi", true)) &&
		OidIsValid(get_relname_relid("audit_log", get_namespace_oid("schedphi", true)));
}

/*
 * The worker's transactions: connected to SPI, with a snapshot.  begin
 * returns false, having opened nothing, when schedphi is not installed in
 * this database (any more).
 */
static void
worker_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Start one of the worker's transactions, as said above. */
static bool
worker_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!extension_here())
	{
		worker_end();
		return false;
	}
	pgstat_report_activity(STATE_RUNNING, activity);
	return true;
}

static void worker_give_up(int qi, bool only_if_idle);

/* Move queued events into audit_log; true if any were moved. */
static bool
drain(int qi, char *buf)
{
	AuditQueue *q = &schedphi_auditq->q[qi];
	uint64		from,
				to;
	Size		len;
	Size		off;

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	from = q->read_pos;
	to = q->insert_pos;
	LWLockRelease(QLOCK(qi));
	if (to == from)
		return false;
	len = to - from;
	schedphi_ring_read(q, from, buf, len);

	if (!worker_begin("recording audit events"))
		worker_give_up(qi, false);	/* dropped meanwhile: nothing can be recorded */
	for (off = 0; off < len;)
	{
		uint32		elen;
		AuditEvent	ev;

		memcpy(&elen, buf + off, sizeof(elen));
		if (elen < sizeof(uint32) || off + elen > len)
			elog(ERROR, "schedphi audit worker: corrupt queue");
		schedphi_event_parse(buf + off, &ev);
		schedphi_event_insert(&ev);
		off += elen;
	}
	worker_end();

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	q->read_pos = to;
	q->durable_pos = to;
	LWLockRelease(QLOCK(qi));
	ConditionVariableBroadcast(&q->cv);
	return true;
}

/* Seal up to SEAL_BATCH records; the number sealed. */
static int
seal(int qi)
{
	static SPIPlanPtr head_plan = NULL,
				todo_plan = NULL,
				update_plan = NULL;
	AuditQueue *q = &schedphi_auditq->q[qi];
	int64		seq;
	uint8		hash[HASH_LEN];
	int			n;
	Datum	   *ids,
			   *ats,
			   *seqs,
			   *prevs,
			   *hashes;
	StringInfoData canon;
	Oid			types[5] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, BYTEAARRAYOID};
	Datum		args[5];

	if (!worker_begin("sealing audit records"))
		return -1;

	schedphi_keep_plan(&head_plan,
					   "SELECT seq, hash FROM schedphi.audit_log WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
					   0, NULL);
	if (SPI_execute_plan(head_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "schedphi audit worker: could not read the chain head");
	memset(hash, 0, HASH_LEN);
	seq = 0;
	if (SPI_processed == 1)
	{
		bool		isnull;
		bytea	   *h;

		seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		h = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (!isnull && VARSIZE_ANY_EXHDR(h) == HASH_LEN)
			memcpy(hash, VARDATA_ANY(h), HASH_LEN);
	}
	/*
	 * Never go back: if records at the end were removed behind our back
	 * (verify_audit will say so), continue after the last one sealed.
	 */
	LWLockAcquire(QLOCK(qi), LW_SHARED);
	if (q->head_known && q->head_seq > seq)
	{
		seq = q->head_seq;
		memcpy(hash, q->head_hash, HASH_LEN);
	}
	LWLockRelease(QLOCK(qi));

	schedphi_keep_plan(&todo_plan,
					   "SELECT " CANON_SELECT ", id, at FROM schedphi.audit_log WHERE hash IS NULL "
					   "ORDER BY id LIMIT " CppAsString2(SEAL_BATCH), 0, NULL);
	if (SPI_execute_plan(todo_plan, NULL, NULL, true, SEAL_BATCH) != SPI_OK_SELECT)
		elog(ERROR, "schedphi audit worker: could not read unsealed records");
	n = (int) SPI_processed;
	if (n == 0)
	{
		worker_end();
		return 0;
	}
	ids = palloc(n * sizeof(Datum));
	ats = palloc(n * sizeof(Datum));
	seqs = palloc(n * sizeof(Datum));
	prevs = palloc(n * sizeof(Datum));
	hashes = palloc(n * sizeof(Datum));
	initStringInfo(&canon);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bytea	   *p = palloc(VARHDRSZ + HASH_LEN);
		bytea	   *h = palloc(VARHDRSZ + HASH_LEN);

		seq++;
		canonical_record(&canon, tup, desc, seq);
		SET_VARSIZE(p, VARHDRSZ + HASH_LEN);
		memcpy(VARDATA(p), hash, HASH_LEN);
		chain_hash(hash, &canon, hash);
		SET_VARSIZE(h, VARHDRSZ + HASH_LEN);
		memcpy(VARDATA(h), hash, HASH_LEN);
		ids[i] = SPI_getbinval(tup, desc, CANON_NCOLS + 1, &isnull);
		ats[i] = SPI_getbinval(tup, desc, CANON_NCOLS + 2, &isnull);
		seqs[i] = Int64GetDatum(seq);
		prevs[i] = PointerGetDatum(p);
		hashes[i] = PointerGetDatum(h);
	}
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(ats, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(seqs, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(prevs, n, BYTEAOID, -1, false, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(hashes, n, BYTEAOID, -1, false, TYPALIGN_INT));
	schedphi_keep_plan(&update_plan,
					   "UPDATE schedphi.audit_log l SET seq = u.seq, prev_hash = u.prev, hash = u.hash "
					   "FROM unnest($1, $2, $3, $4, $5) AS u(id, at, seq, prev, hash) "
					   "WHERE l.at = u.at AND l.id = u.id AND l.hash IS NULL", 5, types);
	guard_open = true;
	PG_TRY();
	{
		if (SPI_execute_plan(update_plan, args, NULL, false, 0) != SPI_OK_UPDATE || (int) SPI_processed != n)
			elog(ERROR, "schedphi audit worker: sealed %d of %d records", (int) SPI_processed, n);
	}
	PG_FINALLY();
	{
		guard_open = false;
	}
	PG_END_TRY();
	worker_end();

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	q->head_known = true;
	q->head_seq = seq;
	memcpy(q->head_hash, hash, HASH_LEN);
	LWLockRelease(QLOCK(qi));
	return n;
}

/*
 * Create this and the next months' partitions of the log; false if it must
 * be tried again soon.  Creating a partition locks the whole log, which
 * every transaction that wrote PHI holds a lock on until it ends; one of
 * them may be waiting for this worker to record a read or a denial.  So
 * the lock is asked for briefly, and never waited for: the records go to
 * the default partition meanwhile, and a later call moves them.
 */
static bool
maintain_partitions(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool done = true;

	if (!worker_begin("making audit partitions"))
		return true;
	guard_open = true;			/* moving records out of the default partition */
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		SPI_execute("SET LOCAL lock_timeout = '50ms'", false, 0);
		SPI_execute("SELECT schedphi._audit_partitions()", false, 0);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		guard_open = false;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		/*
		 * Busy, or a record of the new month arrived in the default
		 * partition after we looked (it is moved on the next try).
		 */
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE &&
			edata->sqlerrcode != ERRCODE_CHECK_VIOLATION)
			ReThrowError(edata);
		FreeErrorData(edata);
		done = false;
	}
	PG_END_TRY();
	guard_open = false;
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	worker_end();
	return done;
}

/*
 * Give the slot up and exit: schedphi is not (or no longer) installed
 * here, the database is being dropped, or (only_if_idle) nothing has
 * happened for a while and nothing is queued.
 */
static void
worker_give_up(int qi, bool only_if_idle)
{
	AuditQueue *q = &schedphi_auditq->q[qi];

	LWLockAcquire(SLOTLOCK, LW_EXCLUSIVE);
	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	if (only_if_idle && q->insert_pos != q->durable_pos)
	{
		LWLockRelease(QLOCK(qi));
		LWLockRelease(SLOTLOCK);
		return;
	}
	q->dboid = InvalidOid;
	q->registered = false;
	q->worker_pid = 0;
	q->worker_latch = NULL;
	LWLockRelease(QLOCK(qi));
	LWLockRelease(SLOTLOCK);
	ConditionVariableBroadcast(&q->cv);
	proc_exit(0);
}

PGDLLEXPORT void schedphi_audit_worker_main(Datum arg);

/*
 * The audit worker of one database (arg: the index of its queue): record
 * what is queued, seal, keep the partitions, and leave when idle.
 */
void
schedphi_audit_worker_main(Datum arg)
{
	int			qi = DatumGetInt32(arg);
	Oid			dboid;
	AuditQueue *q;
	char	   *buf;
	TimestampTz last_seal = 0,
				last_partitions = 0,
				last_activity = GetCurrentTimestamp();

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	in_worker = true;
	q = &schedphi_auditq->q[qi];
	if (q->dboid != dboid)
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "schedphi audit", PGC_USERSET, PGC_S_OVERRIDE);
	pgstat_report_appname("schedphi audit");

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	q->worker_pid = MyProcPid;
	q->worker_latch = MyLatch;
	q->read_pos = q->durable_pos;	/* redo what a dead worker took */
	LWLockRelease(QLOCK(qi));
	before_shmem_exit(worker_detach, Int32GetDatum(qi));
	ConditionVariableBroadcast(&q->cv);

	buf = MemoryContextAlloc(TopMemoryContext, schedphi_auditq->ring_size);
	for (;;)
	{
		TimestampTz now;
		bool		moved;
		bool		requested;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);
		if (q->stop_requested)
			worker_give_up(qi, false);
		now = GetCurrentTimestamp();
		if (now - last_partitions >= USECS_PER_SEC * 3600)
		{
			/* the log busy: try again in ten seconds */
			last_partitions = maintain_partitions() ? now : now - USECS_PER_SEC * (3600 - 10);
		}
		moved = drain(qi, buf);
		LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
		requested = q->seal_requested;
		q->seal_requested = false;
		LWLockRelease(QLOCK(qi));
		if (requested || now - last_seal >= (int64) audit_seal_interval_ms * 1000)
		{
			int			n;

			do
			{
				n = seal(qi);
				if (n < 0)
					worker_give_up(qi, false);
				if (n > 0)
					last_activity = now;
				/* keep the queue moving while a backlog is sealed */
				(void) drain(qi, buf);
			} while (n == SEAL_BATCH);
			last_seal = now;
		}
		if (moved)
		{
			last_activity = now;
			continue;
		}
		if (now - last_activity >= (int64) WORKER_IDLE_MS * 1000)
			worker_give_up(qi, true);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(audit_seal_interval_ms, 10), PG_WAIT_EXTENSION);
	}
}

/* ----------------------------------------------------------- SQL: chain */

PG_FUNCTION_INFO_V1(schedphi_audit_wake);

/*
 * _audit_wake() -> void: make sure this database's worker runs and have it
 * record and seal what is waiting now, without waiting for its interval.
 */
Datum
schedphi_audit_wake(PG_FUNCTION_ARGS)
{
	int			qi = schedphi_queue_for_database(true);
	AuditQueue *q = &schedphi_auditq->q[qi];
	Latch	   *latch;

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	q->seal_requested = true;
	latch = q->worker_latch;
	LWLockRelease(QLOCK(qi));
	if (latch)
		SetLatch(latch);
	PG_RETURN_VOID();
}

/* The chain head the worker last sealed in this server's life, if any. */
static bool
shared_head(int64 *seq, uint8 *hash)
{
	bool		known = false;
	int			my_queue = schedphi_queue_index();

	if (schedphi_auditq == NULL || my_queue < 0)
		return false;
	LWLockAcquire(QLOCK(my_queue), LW_SHARED);
	if (schedphi_auditq->q[my_queue].dboid == MyDatabaseId && schedphi_auditq->q[my_queue].head_known)
	{
		known = true;
		*seq = schedphi_auditq->q[my_queue].head_seq;
		memcpy(hash, schedphi_auditq->q[my_queue].head_hash, HASH_LEN);
	}
	LWLockRelease(QLOCK(my_queue));
	return known;
}

PG_FUNCTION_INFO_V1(schedphi_verify_chain);

/*
 * _verify_chain(from_seq bigint, from_prev bytea)
 *	 -> (checked bigint, pending bigint, first_bad bigint, last_seq bigint,
 *		 last_hash bytea)
 * Recompute the chain from record from_seq, whose prev_hash must be
 * from_prev, to the end.  first_bad: the first record changed, reordered
 * or missing (the seq where the chain breaks), or null.
 */
Datum
schedphi_verify_chain(PG_FUNCTION_ARGS)
{
	int64		from = PG_GETARG_INT64(0);
	bytea	   *from_prev = PG_GETARG_BYTEA_PP(1);
	uint8		prev[HASH_LEN];
	int64		expect = from;
	int64		checked = 0,
				pending = 0,
				first_bad = 0;
	Portal		cur;
	StringInfoData canon;
	TupleDesc	rdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, true, false, false};
	bytea	   *last;
	int64		head_seq;
	uint8		head_hash[HASH_LEN];
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	MemoryContext callcxt = CurrentMemoryContext;

	if (VARSIZE_ANY_EXHDR(from_prev) != HASH_LEN)
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("from_prev must be 32 bytes")));
	memcpy(prev, VARDATA_ANY(from_prev), HASH_LEN);
	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = Int64GetDatum(from);
	cur = SPI_cursor_open_with_args(NULL,
									"SELECT " CANON_SELECT ", prev_hash, hash FROM schedphi.audit_log "
									"WHERE seq >= $1 ORDER BY seq, id", 1, types, args, NULL, true, 0);
	initStringInfo(&canon);
	for (;;)
	{
		SPI_cursor_fetch(cur, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed && first_bad == 0; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull,
						hnull,
						pnull;
			int64		seq = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			bytea	   *p = DatumGetByteaPP(SPI_getbinval(tup, desc, CANON_NCOLS + 1, &pnull));
			bytea	   *h = DatumGetByteaPP(SPI_getbinval(tup, desc, CANON_NCOLS + 2, &hnull));
			uint8		want[HASH_LEN];

			if (seq != expect)
			{
				/* a gap: the record expected here was removed (or renumbered) */
				first_bad = seq < expect ? seq : expect;
				break;
			}
			canonical_record(&canon, tup, desc, seq);
			chain_hash(prev, &canon, want);
			if (pnull || hnull || VARSIZE_ANY_EXHDR(p) != HASH_LEN || VARSIZE_ANY_EXHDR(h) != HASH_LEN ||
				memcmp(VARDATA_ANY(p), prev, HASH_LEN) != 0 || memcmp(VARDATA_ANY(h), want, HASH_LEN) != 0)
			{
				first_bad = seq;
				break;
			}
			memcpy(prev, want, HASH_LEN);
			checked++;
			expect++;
		}
		SPI_freetuptable(SPI_tuptable);
		if (first_bad != 0)
			break;
	}
	SPI_cursor_close(cur);
	/* records removed from the end while this server ran */
	if (first_bad == 0 && shared_head(&head_seq, head_hash) && head_seq >= expect)
		first_bad = expect;
	if (SPI_execute("SELECT count(*) FROM schedphi.audit_log WHERE hash IS NULL", true, 0) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		pending = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	MemoryContextSwitchTo(callcxt);

	last = palloc(VARHDRSZ + HASH_LEN);
	SET_VARSIZE(last, VARHDRSZ + HASH_LEN);
	memcpy(VARDATA(last), prev, HASH_LEN);
	values[0] = Int64GetDatum(checked);
	values[1] = Int64GetDatum(pending);
	values[2] = Int64GetDatum(first_bad);
	nulls[2] = first_bad == 0;
	values[3] = Int64GetDatum(expect - 1);
	values[4] = PointerGetDatum(last);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, nulls)));
}

PG_FUNCTION_INFO_V1(schedphi_audit_purge_rows);

/*
 * _audit_purge_rows(through bigint) -> bigint: delete the records up to seq
 * through, with the append-only guard open for this statement only.  Called
 * by purge_audit, which has checked the retention and anchored the cut.
 */
Datum
schedphi_audit_purge_rows(PG_FUNCTION_ARGS)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	int64		n = 0;

	args[0] = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	guard_open = true;
	PG_TRY();
	{
		if (SPI_execute_with_args("DELETE FROM schedphi.audit_log WHERE seq <= $1", 1, types, args, NULL,
								  false, 0) != SPI_OK_DELETE)
			elog(ERROR, "schedphi: purge failed");
		n = (int64) SPI_processed;
	}
	PG_FINALLY();
	{
		guard_open = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64(n);
}

PG_FUNCTION_INFO_V1(schedphi_audit_sign_head);

/*
 * _audit_sign(seq bigint, hash bytea, kek text) -> (key text, signature bytea)
 * HMAC-SHA-256 of "schedphi audit digest v1|<seq>|<hash in hex>" under the
 * audit key derived from master key kek (null: the active one).
 */
Datum
schedphi_audit_sign_head(PG_FUNCTION_ARGS)
{
	int64		seq;
	bytea	   *hash;
	char	   *kek = NULL;
	char		used[128];
	char		hex[2 * HASH_LEN + 1];
	uint8		mac[32];
	StringInfoData msg;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	bytea	   *sig;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("seq and hash must not be null")));
	seq = PG_GETARG_INT64(0);
	hash = PG_GETARG_BYTEA_PP(1);
	if (!PG_ARGISNULL(2))
		kek = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (VARSIZE_ANY_EXHDR(hash) != HASH_LEN)
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("hash must be 32 bytes")));
	hex_encode(VARDATA_ANY(hash), HASH_LEN, hex);
	hex[2 * HASH_LEN] = '\0';
	initStringInfo(&msg);
	appendStringInfo(&msg, "schedphi audit digest v1|" INT64_FORMAT "|%s", seq, hex);
	schedphi_audit_sign(kek, (const uint8 *) msg.data, msg.len, mac, used, sizeof(used));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	sig = palloc(VARHDRSZ + 32);
	SET_VARSIZE(sig, VARHDRSZ + 32);
	memcpy(VARDATA(sig), mac, 32);
	values[0] = CStringGetTextDatum(used);
	values[1] = PointerGetDatum(sig);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ------------------------------------------------------------------- init */

/* The sealer's and the retention's settings. */
void
schedphi_ledger_init(void)
{
	DefineCustomIntVariable("schedphi.audit_seal_interval",
							"How often the audit worker seals new records into the hash chain.",
							NULL, &audit_seal_interval_ms, 1000, 10, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("schedphi.audit_retention",
							   "How long audit records are kept before schedphi.purge_audit() may remove them.",
							   NULL, &audit_retention, "6 years",
							   PGC_SUSET, 0, NULL, NULL, NULL);
}

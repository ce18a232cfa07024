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
 * committed records that have no hash yet, in id order, and links each
 * into its chain (one per tenant, see 70_audit.sql): the next seq (unique
 * across chains, the order of sealing), prev_seq and prev_hash naming the
 * chain's previous record, and hash = SHA-256(prev_hash || canonical
 * record); schedphi.audit_chain keeps each chain's head.  Its queries are
 * planned for each batch (a plan kept from an empty log would scan it
 * whole).  Users' transactions never wait for the sealer.  verify_audit()
 * recomputes the chains and names the first record changed, removed or
 * reordered.
 *
 * The log is append-only: a trigger that fires always (even with
 * session_replication_role = replica) refuses UPDATE, DELETE and TRUNCATE,
 * except the one update the sealer makes (an unsealed record given its seq
 * and hashes, nothing else changed: checked on the row, so on any node)
 * and the retention purge, which this process's C code alone can allow.
 * A chain's head only moves forward (its own guard).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/sequence.h"
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
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
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

/* The retention purge is deleting (this process only). */
static bool guard_open = false;

/* Is this process the audit worker?  audit.c captures nothing in it. */
bool
schedphi_in_audit_worker(void)
{
	return schedphi_is_audit_worker;
}

/* -------------------------------------------------- the append-only guard */

/* The columns the sealer fills in; every other column is the record. */
static bool
is_seal_column(const char *name)
{
	return strcmp(name, "seq") == 0 || strcmp(name, "prev_seq") == 0 ||
		strcmp(name, "prev_hash") == 0 || strcmp(name, "hash") == 0;
}

/*
 * Is this update the sealer's: an unsealed record (no hash) given its
 * seq, prev_seq and hashes, and nothing else of it changed?
 */
static bool
is_sealing(TriggerData *td)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	bool		isnull;

	(void) heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "hash"), desc, &isnull);
	if (!isnull)
		return false;
	(void) heap_getattr(td->tg_newtuple, SPI_fnumber(desc, "hash"), desc, &isnull);
	if (isnull)
		return false;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		onull,
					nnull;
		Datum		o,
					n;

		if (att->attisdropped || is_seal_column(NameStr(att->attname)))
			continue;
		o = heap_getattr(td->tg_trigtuple, i + 1, desc, &onull);
		n = heap_getattr(td->tg_newtuple, i + 1, desc, &nnull);
		if (onull != nnull || (!onull && !datum_image_eq(o, n, att->attbyval, att->attlen)))
			return false;
	}
	return true;
}

PG_FUNCTION_INFO_V1(schedphi_audit_guard);

/*
 * BEFORE UPDATE OR DELETE (row) and BEFORE TRUNCATE (statement) on the
 * audit log, enabled ALWAYS: the log is append-only.  Only the sealing of
 * an unsealed record, and the retention purge in this process's C code,
 * pass.
 */
Datum
schedphi_audit_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "schedphi_audit_guard: not called as a trigger");
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && TRIGGER_FIRED_FOR_ROW(td->tg_event) && is_sealing(td))
		return PointerGetDatum(td->tg_newtuple);
	if (guard_open && TRIGGER_FIRED_BY_DELETE(td->tg_event))
		return PointerGetDatum(td->tg_trigtuple);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("schedphi.audit_log is append-only"),
			 errdetail("Audit records cannot be updated, deleted or truncated, by anyone."),
			 errhint("Old records leave only through schedphi.purge_audit(), after schedphi.audit_retention.")));
	return PointerGetDatum(NULL);
}

/* An int8 column of a trigger's tuple (0 when null). */
static int64
tuple_int8(TriggerData *td, HeapTuple tup, const char *col)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	bool		isnull;
	Datum		d = heap_getattr(tup, SPI_fnumber(desc, col), desc, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

PG_FUNCTION_INFO_V1(schedphi_audit_chain_guard);

/*
 * BEFORE UPDATE OR DELETE (row) and BEFORE TRUNCATE on audit_chain,
 * enabled ALWAYS: a chain's head and its purge anchor only move forward,
 * and a chain is never removed.
 */
Datum
schedphi_audit_chain_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "schedphi_audit_chain_guard: not called as a trigger");
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		TupleDesc	desc = RelationGetDescr(td->tg_relation);
		bool		n1,
					n2;
		Datum		oc = heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "tenant"), desc, &n1);
		Datum		nc = heap_getattr(td->tg_newtuple, SPI_fnumber(desc, "tenant"), desc, &n2);

		if (!n1 && !n2 && memcmp(DatumGetUUIDP(oc)->data, DatumGetUUIDP(nc)->data, UUID_LEN) == 0 &&
			tuple_int8(td, td->tg_newtuple, "head_seq") >= tuple_int8(td, td->tg_trigtuple, "head_seq") &&
			tuple_int8(td, td->tg_newtuple, "records") >= tuple_int8(td, td->tg_trigtuple, "records") &&
			tuple_int8(td, td->tg_newtuple, "start_after") >= tuple_int8(td, td->tg_trigtuple, "start_after"))
			return PointerGetDatum(td->tg_newtuple);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("schedphi.audit_chain only moves forward"),
			 errdetail("A chain's head and its purge anchor advance; a chain is never removed.")));
	return PointerGetDatum(NULL);
}

/* ------------------------------------------------------------- the chain */

/* Columns of the canonical record, in this order, as the queries select them. */
#define CANON_SELECT \
	"seq, at, login::text, actor, tenant, role, purpose, action, object, object_id, patient, columns, " \
	"client_addr::text, application, detail::text, xid, chain, prev_seq"
#define CANON_NCOLS 18
#define CANON_PREV_SEQ 18		/* prev_seq's place: the sealer gives it */

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
 * way.  seq and prev_seq are given (the sealer assigns them).
 */
static void
canonical_record(StringInfo buf, HeapTuple tup, TupleDesc desc, int64 seq, int64 prev_seq)
{
	resetStringInfo(buf);
	canon_int64(buf, seq);
	for (int c = 2; c <= CANON_NCOLS; c++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, c, &isnull);
		Oid			typ = SPI_gettypeid(desc, c);

		if (c == CANON_PREV_SEQ)
		{
			canon_int64(buf, prev_seq);
			continue;
		}
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

/*
 * Which node is this worker's?  Asked once (connected to SPI).  On a Citus
 * worker it records the node's queued events, and leaves the partitions
 * and the sealing to the coordinator's worker, which sees every shard; and
 * that one stays when idle, since the records it seals are written on the
 * workers, where nothing could wake it.
 */
typedef enum
{
	NODE_UNKNOWN,
	NODE_ALONE,
	NODE_CITUS_COORDINATOR,
	NODE_CITUS_WORKER
} NodeKind;

static NodeKind node_kind = NODE_UNKNOWN;

static bool
on_citus_worker(void)
{
	if (node_kind == NODE_UNKNOWN)
		node_kind = !schedphi_citus_present() ? NODE_ALONE :
			schedphi_citus_worker_node() ? NODE_CITUS_WORKER : NODE_CITUS_COORDINATOR;
	return node_kind == NODE_CITUS_WORKER;
}

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

/* A chain's head while a batch is sealed. */
typedef struct ChainHead
{
	pg_uuid_t	chain;
	int64		seq;
	uint8		hash[HASH_LEN];
	int64		added;			/* records this batch sealed into it */
} ChainHead;

static int
chain_head_cmp(const void *a, const void *b)
{
	return memcmp(((const ChainHead *) a)->chain.data, ((const ChainHead *) b)->chain.data, UUID_LEN);
}

static bytea *
hash_bytea(const uint8 *h)
{
	bytea	   *b = palloc(VARHDRSZ + HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + HASH_LEN);
	memcpy(VARDATA(b), h, HASH_LEN);
	return b;
}

static Datum
int8_array(Datum *d, int n)
{
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Where the next batch starts: after the last id sealed, while a backlog
 * lasts.  Sealed records leave the log's "unsealed" index only when vacuum
 * can remove their old versions, which a long transaction (a report, a
 * dump, a caller waiting in _audit_sync) prevents; started from the
 * beginning every time, each batch would step over all the records sealed
 * so far, and a backlog of millions would take hours.  A record that
 * arrives with a smaller id (its transaction committed late, or, under
 * Citus, another node's) is sealed when the backlog is done and the next
 * batch starts from the floor again.
 */
static int64 seal_after_id = 0;

/*
 * The floor: every record with an id at or below it is sealed, or its
 * transaction rolled back.  A pass "from the beginning" starts there, not
 * at 0: from 0 it stepped over the index entries of every record sealed
 * since the last vacuum (after a backlog of 20 million, seconds a pass,
 * which each read waiting on this worker paid, and verify_audit too).
 *
 * It moves in two steps.  A pass notes the last id handed out (upto) and
 * then the transactions running in this database: a record with an id up
 * to upto is by then committed, rolled back, or one of theirs.  Once all
 * of those have ended (checked at each later pass), every record up to
 * upto is visible to a pass that starts then; a pass from the floor that
 * read every unsealed record up to some id (all of them up to its last
 * when the batch was full, all of them when it was not) has sealed them,
 * and the floor becomes that id, or upto if less.
 *
 * Passes start from the floor when the sealer has caught up, and, during a
 * backlog, once the backlog is FLOOR_STRIDE ids past the floor (then the
 * backlog goes on where it was): the floor keeps up with a backlog of
 * millions, and the first pass after it steps over a stride's dead index
 * entries, not the whole backlog's.  Kept in shared memory for the
 * database and its log's id sequence, apart from the queue's slot (see
 * schedphi_queue_seal_floor): backends count what is pending from it, and
 * the next worker starts there.  Under Citus, where records come from
 * other nodes, it stays 0.
 */
#define FLOOR_STRIDE	100000

typedef struct FloorCandidate
{
	bool		valid;
	bool		certified;		/* every transaction with an xid before xid has ended */
	int64		upto;
	TransactionId xid;			/* the next xid, read after upto */
} FloorCandidate;

static int64 seal_floor = 0;
static Oid	seal_floor_seq = InvalidOid;
static FloorCandidate floor_cand;

/* The log's id sequence (in a transaction). */
static Oid
log_sequence(void)
{
	return get_relname_relid("audit_log_id", get_namespace_oid("schedphi", false));
}

/*
 * Has every transaction whose xid precedes xid ended (committed, rolled
 * back, or a prepared one finished)?  A transaction takes an id of the log
 * only once it has its xid (_audit_next_id, the id's default), so one that
 * had none when upto was read holds no id up to it: a long read-only
 * transaction (a report, pg_dump, a wait) does not hold the floor.
 */
static bool
xids_ended_before(TransactionId xid)
{
	return !TransactionIdPrecedes(GetOldestActiveTransactionId(), xid);
}

/*
 * Before a pass reads the log (connected to SPI; the read takes its own
 * snapshot, after this): certify the candidate, or note a new one.  The
 * last id handed out is read before the next xid is: a transaction that
 * took an id up to it had its xid before.
 */
static void
floor_before_pass(void)
{
	Oid			seq = log_sequence();
	int64		upto;
	bool		isnull;
	bool		uncached;

	if (seq != seal_floor_seq)
	{
		/* first pass, or schedphi made again: the floor kept for this sequence */
		seal_floor = schedphi_queue_seal_floor(seq);
		seal_floor_seq = seq;
		floor_cand.valid = false;
	}
	if (floor_cand.valid)
	{
		if (!floor_cand.certified)
			floor_cand.certified = xids_ended_before(floor_cand.xid);
		return;
	}
	/* (a sequence that caches ids hands them out after its last_value moved on: no floor then) */
	if (SPI_execute("SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END, "
					"(SELECT p.seqcache FROM pg_catalog.pg_sequence p "
					"WHERE p.seqrelid = 'schedphi.audit_log_id'::pg_catalog.regclass) = 1 "
					"FROM schedphi.audit_log_id s", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi audit worker: could not read the log's sequence");
	upto = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	uncached = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) && !isnull;
	if (upto < seal_floor || !uncached)
	{
		/* the sequence was set back, or caches: the floor no longer says anything */
		seal_floor = 0;
		schedphi_queue_set_seal_floor(seq, 0);
		if (!uncached)
			return;
	}
	floor_cand.upto = upto;
	floor_cand.xid = XidFromFullTransactionId(ReadNextFullTransactionId());
	floor_cand.certified = false;
	floor_cand.valid = true;
}

/* May a pass from the floor start now, during a backlog whose place is after? */
static bool
floor_pass_due(int64 after)
{
	return floor_cand.valid && floor_cand.certified && after - seal_floor >= FLOOR_STRIDE;
}

/*
 * After a pass from the floor that sealed n records (the last of them
 * last), before it commits: where the floor may move (0: nowhere).  It is
 * published once the pass has committed (floor_publish).
 */
static int64
floor_proved(int n, int64 last)
{
	if (!floor_cand.valid || !floor_cand.certified)
		return 0;
	return n < SEAL_BATCH ? floor_cand.upto : Min(floor_cand.upto, last);
}

static void
floor_publish(int64 to)
{
	if (to > seal_floor)
	{
		seal_floor = to;
		schedphi_queue_set_seal_floor(seal_floor_seq, seal_floor);
	}
	/* a candidate the floor has reached can move it no further: the next pass notes another */
	if (floor_cand.valid && seal_floor >= floor_cand.upto)
		floor_cand.valid = false;
}

/*
 * Seal up to SEAL_BATCH records into their chains; the number sealed, or
 * -1 when schedphi is gone from this database.  The queries are planned
 * for the batch (plans kept from an empty log would scan it whole), but
 * the one-row upsert of a chain's head.
 */
static int
seal(int qi)
{
	int			n,
				nheads = 0;
	int64		next_seq;
	ChainHead  *heads;
	SPITupleTable *todo;
	Datum	   *ids,
			   *ats,
			   *seqs,
			   *prev_seqs,
			   *prevs,
			   *hashes;
	StringInfoData canon;
	Oid			utypes[10] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	BYTEAARRAYOID, BYTEAARRAYOID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		uargs[10];
	TimestampTz first_at = 0,
				last_at = 0;
	bool		isnull;
	bool		from_floor;
	int64		resume = 0;		/* a backlog's place, when a pass from the floor interrupts it */
	int64		floor_to;

	if (!worker_begin("sealing audit records"))
		return -1;
	if (on_citus_worker())
	{
		worker_end();
		return 0;
	}

	/*
	 * Not while pg_restore is loading this database: a plain restore writes
	 * patients and appointments (recorded, as the restoring superuser's)
	 * before it loads the chains' heads, and a head made here first would
	 * stop it with a duplicate key.  The records wait; they are sealed, in
	 * their chains, once the restore has gone.
	 */
	{
		Oid			types[1] = {OIDOID};
		Datum		args[1] = {ObjectIdGetDatum(MyDatabaseId)};

		/* pg_restore, or a plain SQL dump loading through psql (COPY ... FROM stdin) */
		if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_stat_activity a "
								  "WHERE a.datid = $1 AND (a.application_name = 'pg_restore' "
								  "OR a.query ~ '^COPY schedphi\\.[a-z_0-9]+ .* FROM stdin;') LIMIT 1",
								  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "schedphi audit worker: could not look for a restore");
		if (SPI_processed > 0)
		{
			worker_end();
			return 0;
		}
	}
	from_floor = false;
	if (node_kind == NODE_ALONE)
	{
		floor_before_pass();
		from_floor = seal_after_id == 0 || floor_pass_due(seal_after_id);
		resume = seal_after_id;
	}
	{
		Oid			types[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(from_floor ? seal_floor : seal_after_id)};

		/* (not read-only: a snapshot of its own, taken after floor_before_pass) */
		if (SPI_execute_with_args("SELECT " CANON_SELECT ", id, at FROM schedphi.audit_log "
								  "WHERE hash IS NULL AND id > $1 ORDER BY id LIMIT " CppAsString2(SEAL_BATCH),
								  1, types, args, NULL, false, SEAL_BATCH) != SPI_OK_SELECT)
			elog(ERROR, "schedphi audit worker: could not read unsealed records");
	}
	n = (int) SPI_processed;
	if (n == 0)
	{
		floor_to = from_floor ? floor_proved(0, 0) : 0;
		worker_end();
		floor_publish(floor_to);
		if (seal_after_id != 0 && !from_floor)
		{
			seal_after_id = 0;	/* caught up: from the floor, for late arrivals */
			return seal(qi);
		}
		seal_after_id = 0;
		return 0;
	}
	todo = SPI_tuptable;

	/* the heads of the chains in the batch, and where seq goes on */
	heads = palloc0(sizeof(ChainHead) * n);
	for (int i = 0; i < n; i++)
	{
		pg_uuid_t  *c = DatumGetUUIDP(SPI_getbinval(todo->vals[i], todo->tupdesc, CANON_PREV_SEQ - 1, &isnull));
		bool		seen = false;

		for (int j = 0; j < nheads && !seen; j++)
			seen = memcmp(heads[j].chain.data, c->data, UUID_LEN) == 0;
		if (!seen)
			heads[nheads++].chain = *c;
	}
	qsort(heads, nheads, sizeof(ChainHead), chain_head_cmp);
	{
		Datum	   *chains = palloc(sizeof(Datum) * nheads);
		Oid			types[1] = {UUIDARRAYOID};
		Datum		args[1];

		for (int j = 0; j < nheads; j++)
		{
			chains[j] = UUIDPGetDatum(&heads[j].chain);
			memset(heads[j].hash, 0, HASH_LEN);
		}
		args[0] = PointerGetDatum(construct_array(chains, nheads, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		if (SPI_execute_with_args("SELECT tenant, head_seq, head_hash FROM schedphi.audit_chain WHERE tenant = ANY ($1)",
								  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "schedphi audit worker: could not read the chains' heads");
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	t = SPI_tuptable->vals[r];
			ChainHead	key;
			ChainHead  *h;
			bytea	   *hb;

			key.chain = *DatumGetUUIDP(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
			h = bsearch(&key, heads, nheads, sizeof(ChainHead), chain_head_cmp);
			if (h == NULL)
				continue;
			h->seq = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
			hb = DatumGetByteaPP(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
			if (VARSIZE_ANY_EXHDR(hb) == HASH_LEN)
				memcpy(h->hash, VARDATA_ANY(hb), HASH_LEN);
		}
	}
	if (SPI_execute("SELECT coalesce(max(head_seq), 0) FROM schedphi.audit_chain", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "schedphi audit worker: could not read the last seq");
	next_seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) + 1;

	ids = palloc(n * sizeof(Datum));
	ats = palloc(n * sizeof(Datum));
	seqs = palloc(n * sizeof(Datum));
	prev_seqs = palloc(n * sizeof(Datum));
	prevs = palloc(n * sizeof(Datum));
	hashes = palloc(n * sizeof(Datum));
	initStringInfo(&canon);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = todo->vals[i];
		TupleDesc	desc = todo->tupdesc;
		ChainHead	key;
		ChainHead  *h;
		int64		seq = next_seq++;

		key.chain = *DatumGetUUIDP(SPI_getbinval(tup, desc, CANON_PREV_SEQ - 1, &isnull));
		h = bsearch(&key, heads, nheads, sizeof(ChainHead), chain_head_cmp);
		canonical_record(&canon, tup, desc, seq, h->seq);
		prevs[i] = PointerGetDatum(hash_bytea(h->hash));
		prev_seqs[i] = Int64GetDatum(h->seq);
		chain_hash(h->hash, &canon, h->hash);
		hashes[i] = PointerGetDatum(hash_bytea(h->hash));
		seqs[i] = Int64GetDatum(seq);
		h->seq = seq;
		h->added++;
		ids[i] = SPI_getbinval(tup, desc, CANON_NCOLS + 1, &isnull);
		ats[i] = SPI_getbinval(tup, desc, CANON_NCOLS + 2, &isnull);
		if (i == 0 || DatumGetTimestampTz(ats[i]) < first_at)
			first_at = DatumGetTimestampTz(ats[i]);
		if (i == 0 || DatumGetTimestampTz(ats[i]) > last_at)
			last_at = DatumGetTimestampTz(ats[i]);
	}
	uargs[0] = int8_array(ids, n);
	uargs[1] = PointerGetDatum(construct_array(ats, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	uargs[2] = int8_array(seqs, n);
	uargs[3] = int8_array(prev_seqs, n);
	uargs[4] = PointerGetDatum(construct_array(prevs, n, BYTEAOID, -1, false, TYPALIGN_INT));
	uargs[5] = PointerGetDatum(construct_array(hashes, n, BYTEAOID, -1, false, TYPALIGN_INT));
	uargs[6] = ids[0];			/* the batch is in id order */
	uargs[7] = ids[n - 1];
	uargs[8] = TimestampTzGetDatum(first_at);
	uargs[9] = TimestampTzGetDatum(last_at);

	/*
	 * The batch's span of ids and times bounds the statement: the times
	 * leave only the partitions the batch is in, and the ids give the index
	 * of unsealed records a range.  Joined on the array alone, the planner,
	 * once statistics say few records are unsealed, read that index of
	 * every partition whole: after a backlog it still holds the sealed
	 * records' old versions, millions of them (15 s a batch at 21 million,
	 * while the reads waiting on this worker waited too).
	 */
	if (SPI_execute_with_args("UPDATE schedphi.audit_log l "
							  "SET seq = u.seq, prev_seq = u.prev_seq, prev_hash = u.prev, hash = u.hash "
							  "FROM unnest($1, $2, $3, $4, $5, $6) AS u(id, at, seq, prev_seq, prev, hash) "
							  "WHERE l.at = u.at AND l.id = u.id AND l.hash IS NULL "
							  "AND l.id BETWEEN $7 AND $8 AND l.at BETWEEN $9 AND $10",
							  10, utypes, uargs, NULL, false, 0) != SPI_OK_UPDATE || (int) SPI_processed != n)
		elog(ERROR, "schedphi audit worker: sealed %d of %d records", (int) SPI_processed, n);

	/*
	 * The chains' new heads, one row each (under Citus each is a statement
	 * on the chain's node; the time goes as a value).
	 */
	{
		static SPIPlanPtr head_plan = NULL;
		Oid			types[5] = {UUIDOID, INT8OID, BYTEAOID, INT8OID, TIMESTAMPTZOID};
		Datum		args[5];

		schedphi_keep_plan(&head_plan,
						   "INSERT INTO schedphi.audit_chain AS c (tenant, head_seq, head_hash, records, sealed_at) "
						   "VALUES ($1, $2, $3, $4, $5) "
						   "ON CONFLICT (tenant) DO UPDATE SET head_seq = excluded.head_seq, "
						   "head_hash = excluded.head_hash, records = c.records + excluded.records, "
						   "sealed_at = excluded.sealed_at", 5, types);
		args[4] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		for (int j = 0; j < nheads; j++)
		{
			args[0] = UUIDPGetDatum(&heads[j].chain);
			args[1] = Int64GetDatum(heads[j].seq);
			args[2] = PointerGetDatum(hash_bytea(heads[j].hash));
			args[3] = Int64GetDatum(heads[j].added);
			if (SPI_execute_plan(head_plan, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "schedphi audit worker: could not move the chains' heads");
		}
	}
	/* a full batch: a backlog, go on after it (or where it was); else from the floor */
	floor_to = from_floor ? floor_proved(n, DatumGetInt64(ids[n - 1])) : 0;
	seal_after_id = n == SEAL_BATCH ? Max(DatumGetInt64(ids[n - 1]), resume) : 0;
	worker_end();
	floor_publish(floor_to);
	return n;
}

/* The partitions, with the lock on the log asked for briefly. */
static void
make_partitions(void *arg)
{
	SPI_execute("SET LOCAL lock_timeout = '50ms'", false, 0);
	SPI_execute("SELECT schedphi._audit_partitions()", false, 0);
}

/*
 * Create this and the next months' partitions of the log; false if it must
 * be tried again soon.  Creating a partition locks the whole log, which
 * every transaction that wrote PHI holds a lock on until it ends; one of
 * them may be waiting for this worker to record a read or a denial.  So
 * the lock is asked for briefly, and never waited for.
 */
static bool
maintain_partitions(void)
{
	bool		done;

	if (!worker_begin("making audit partitions"))
		return true;
	if (on_citus_worker())
	{
		worker_end();
		return true;
	}
	/* busy: tried again soon */
	done = schedphi_in_subtransaction(make_partitions, NULL, ERRCODE_LOCK_NOT_AVAILABLE, 0);
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
	schedphi_is_audit_worker = true;
	q = &schedphi_auditq->q[qi];
	if (q->dboid != dboid)
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * Each batch touches a few thousand records, but the planner costs its
	 * statements against the whole log: past a few million records every
	 * batch was JIT-compiled, which cost far more than running it (20
	 * million records sealed at 1,500 a second, 86% of the time in LLVM).
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
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
		LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
		requested = q->partitions_requested;
		q->partitions_requested = false;
		LWLockRelease(QLOCK(qi));
		if (requested || now - last_partitions >= USECS_PER_SEC * 3600)
		{
			/* the log busy: try again in ten seconds (or when asked again) */
			last_partitions = maintain_partitions() ? now : now - USECS_PER_SEC * (3600 - 10);
			if (requested)
				ConditionVariableBroadcast(&q->cv);
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
		if (now - last_activity >= (int64) WORKER_IDLE_MS * 1000 && node_kind != NODE_CITUS_COORDINATOR)
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
	schedphi_queue_wake_worker(true, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(schedphi_audit_next_id);

/*
 * _audit_next_id(seq regclass) -> bigint: the default of the log's id:
 * nextval(seq), taken once the transaction has its xid, so that a
 * transaction without one holds no id of the log (the sealer's floor
 * counts on it).  Inserting a record gives the transaction its xid anyway.
 */
Datum
schedphi_audit_next_id(PG_FUNCTION_ARGS)
{
	(void) GetTopTransactionId();
	PG_RETURN_INT64(nextval_internal(PG_GETARG_OID(0), true));
}

PG_FUNCTION_INFO_V1(schedphi_audit_floor);

/*
 * _audit_floor() -> bigint: every record of the log with an id at or below
 * it is sealed (or was rolled back); 0 when not known.  What counts the
 * unsealed records starts after it (see the sealer's floor).
 */
Datum
schedphi_audit_floor(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(schedphi_queue_seal_floor(log_sequence()));
}

/* Where the walk of one chain stands. */
typedef struct ChainWalk
{
	pg_uuid_t	chain;
	int64		prev_seq;		/* the last record verified (or the start) */
	uint8		prev[HASH_LEN];
	int64		head_seq;		/* what audit_chain says the end is */
	uint8		head_hash[HASH_LEN];
	bool		bad;
} ChainWalk;

/* Does audit_chain know this chain now?  (a statement of its own) */
static bool
chain_known_now(const pg_uuid_t *chain)
{
	Oid			types[1] = {UUIDOID};
	Datum		args[1] = {UUIDPGetDatum(chain)};

	if (SPI_execute_with_args("SELECT 1 FROM schedphi.audit_chain c WHERE c.tenant = $1", 1, types, args,
							  NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: could not read the chains");
	return SPI_processed > 0;
}

static void
copy_hash(uint8 *to, HeapTuple t, TupleDesc d, int col)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);

	memset(to, 0, HASH_LEN);
	if (!isnull && VARSIZE_ANY_EXHDR(DatumGetByteaPP(v)) == HASH_LEN)
		memcpy(to, VARDATA_ANY(DatumGetByteaPP(v)), HASH_LEN);
}

/* At the end of a chain's records: did they reach its head? */
static int64
chain_end(ChainWalk *w)
{
	if (w->bad)
		return 0;
	if (w->prev_seq != w->head_seq || memcmp(w->prev, w->head_hash, HASH_LEN) != 0)
		return w->head_seq;		/* records at the end were removed (or the head was moved) */
	return 0;
}

PG_FUNCTION_INFO_V1(schedphi_verify_chains);

/*
 * _verify_chains(p_chain uuid, p_after bigint)
 *	 -> (checked bigint, pending bigint, first_bad bigint)
 * Recompute the chains (p_chain's, or every one) from each one's record
 * last sealed at or before global seq p_after, trusted as it stands (0:
 * from the chain's start: after its purge anchor, or from nothing), to
 * its head in audit_chain.  first_bad: the smallest seq of a record
 * changed, reordered or removed (a removed record is named by the seq its
 * successor says came before it), or null.  Both walks are in chain
 * order: the chains from audit_chain, the records by (chain, seq).
 */
Datum
schedphi_verify_chains(PG_FUNCTION_ARGS)
{
	bool		one = !PG_ARGISNULL(0);
	int64		after = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	int64		checked = 0,
				pending = 0,
				first_bad = 0;
	Portal		cur;
	StringInfoData canon;
	TupleDesc	rdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, true};
	Oid			types[2] = {INT8OID, UUIDOID};
	Datum		args[2];
	ChainWalk  *walks;
	int			nwalks;
	int			w = 0;
	MemoryContext callcxt = CurrentMemoryContext;
	bool		isnull;
	bool		citus = schedphi_citus_active();

#define BAD(seq) do { int64 b_ = (seq); if (b_ > 0 && (first_bad == 0 || b_ < first_bad)) first_bad = b_; } while (0)

	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	args[0] = Int64GetDatum(after);
	args[1] = one ? PG_GETARG_DATUM(0) : (Datum) 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* where each chain starts, and where it ends (by the chain index: see _audit_root) */
	if (SPI_execute_with_args(psprintf(
							  "SELECT c.tenant, coalesce(b.seq, c.start_after), coalesce(b.hash, c.start_prev), "
							  "c.head_seq, c.head_hash FROM schedphi.audit_chain c "
							  "LEFT JOIN LATERAL (SELECT l.seq, l.hash FROM schedphi.audit_log l "
							  "WHERE l.seq IS NOT NULL AND %s "
							  "ORDER BY l.chain DESC, l.seq DESC LIMIT 1) b ON true %s ORDER BY c.tenant",
							  schedphi_citus_active() ?
							  "l.chain = c.tenant AND l.seq <= $1 AND l.seq > c.start_after" :
							  "(l.chain, l.seq) <= (c.tenant, $1) AND (l.chain, l.seq) > (c.tenant, c.start_after)",
							  one ? "WHERE c.tenant = $2" : ""),
							  2, types, args, one ? NULL : " n", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: could not read the chains");
	nwalks = (int) SPI_processed;
	walks = MemoryContextAllocZero(callcxt, sizeof(ChainWalk) * (nwalks + 1));
	for (int i = 0; i < nwalks; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;

		walks[i].chain = *DatumGetUUIDP(SPI_getbinval(t, d, 1, &isnull));
		walks[i].prev_seq = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
		copy_hash(walks[i].prev, t, d, 3);
		walks[i].head_seq = DatumGetInt64(SPI_getbinval(t, d, 4, &isnull));
		copy_hash(walks[i].head_hash, t, d, 5);
	}

	/* every record sealed after each chain's start */
	cur = SPI_cursor_open_with_args(NULL, psprintf(
									"SELECT " CANON_SELECT ", prev_hash, hash FROM schedphi.audit_log l "
									"WHERE l.seq IS NOT NULL AND l.seq > $1 %s ORDER BY l.chain, l.seq",
									one ? "AND l.chain = $2" : ""),
									2, types, args, one ? NULL : " n", true, 0);
	initStringInfo(&canon);
	for (;;)
	{
		SPITupleTable *tt;
		uint64		ntt;

		SPI_cursor_fetch(cur, true, 10000);
		if (SPI_processed == 0)
			break;
		tt = SPI_tuptable;
		ntt = SPI_processed;
		for (uint64 i = 0; i < ntt; i++)
		{
			HeapTuple	tup = tt->vals[i];
			TupleDesc	desc = tt->tupdesc;
			pg_uuid_t  *chain = DatumGetUUIDP(SPI_getbinval(tup, desc, CANON_PREV_SEQ - 1, &isnull));
			int64		seq = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			bool		pnull;
			Datum		pd = SPI_getbinval(tup, desc, CANON_PREV_SEQ, &pnull);
			int64		prev_seq = pnull ? -1 : DatumGetInt64(pd);
			uint8		stored_prev[HASH_LEN],
						stored[HASH_LEN],
						want[HASH_LEN];
			int			cmp;

			/* the chain this record belongs to (chains without one were all removed) */
			while (w < nwalks && (cmp = memcmp(walks[w].chain.data, chain->data, UUID_LEN)) < 0)
				BAD(chain_end(&walks[w++]));
			if (w >= nwalks || memcmp(walks[w].chain.data, chain->data, UUID_LEN) != 0)
			{
				/*
				 * Sealed into a chain audit_chain does not know: tampering,
				 * unless (under Citus, whose nodes each read as of their
				 * own moment) the chain was begun since its heads were read.
				 */
				if (citus && chain_known_now(chain))
					pending++;
				else
					BAD(seq);
				continue;
			}
			/* under Citus: sealed since this chain's head was read */
			if (citus && seq > walks[w].head_seq)
			{
				pending++;
				continue;
			}
			/* after a break, or at or before the start (a purge not yet done): not walked */
			if (walks[w].bad || seq <= walks[w].prev_seq)
				continue;
			copy_hash(stored_prev, tup, desc, CANON_NCOLS + 1);
			copy_hash(stored, tup, desc, CANON_NCOLS + 2);
			if (prev_seq != walks[w].prev_seq)
			{
				/* the record it says came before is not the one before it */
				BAD(prev_seq > walks[w].prev_seq ? prev_seq : seq);
				walks[w].bad = true;
				continue;
			}
			canonical_record(&canon, tup, desc, seq, prev_seq);
			chain_hash(walks[w].prev, &canon, want);
			if (memcmp(stored_prev, walks[w].prev, HASH_LEN) != 0 || memcmp(stored, want, HASH_LEN) != 0)
			{
				BAD(seq);
				walks[w].bad = true;
				continue;
			}
			memcpy(walks[w].prev, want, HASH_LEN);
			walks[w].prev_seq = seq;
			checked++;
		}
		SPI_freetuptable(tt);
	}
	SPI_cursor_close(cur);
	while (w < nwalks)
		BAD(chain_end(&walks[w++]));

	/*
	 * From a digest, after the floor: below it all is sealed, and the
	 * sealed records' index entries wait for vacuum.  From the start, every
	 * record (the walk read them all anyway): were the floor ever wrong, a
	 * record it passed unsealed is counted here.
	 */
	args[0] = Int64GetDatum(after == 0 ? 0 : schedphi_queue_seal_floor(log_sequence()));
	if (SPI_execute_with_args(psprintf("SELECT count(*) FROM schedphi.audit_log l WHERE l.hash IS NULL "
									   "AND l.id > $1 %s", one ? "AND l.chain = $2" : ""),
							  2, types, args, one ? NULL : " n", true, 0) == SPI_OK_SELECT && SPI_processed == 1)
		pending += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	MemoryContextSwitchTo(callcxt);
#undef BAD

	values[0] = Int64GetDatum(checked);
	values[1] = Int64GetDatum(pending);
	values[2] = Int64GetDatum(first_bad);
	nulls[2] = first_bad == 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, nulls)));
}

PG_FUNCTION_INFO_V1(schedphi_audit_purge_rows);

/*
 * _audit_purge_rows() -> bigint: delete the records at or before their
 * chain's purge anchor, with the append-only guard open for this statement
 * only.  Called by purge_audit, which has checked the retention and moved
 * the anchors.
 */
Datum
schedphi_audit_purge_rows(PG_FUNCTION_ARGS)
{
	int64		n = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	guard_open = true;
	PG_TRY();
	{
		if (SPI_execute("DELETE FROM schedphi.audit_log l USING schedphi.audit_chain c "
						"WHERE l.chain = c.tenant AND l.seq <= c.start_after", false, 0) != SPI_OK_DELETE)
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
 * _audit_sign(scope text, seq bigint, hash bytea, kek text)
 *	 -> (key text, signature bytea)
 * HMAC-SHA-256 of "schedphi audit digest v2|<scope>|<seq>|<hash in hex>"
 * under the audit key derived from master key kek (null: the active one).
 * scope: a tenant's uuid (its chain's head), or * (the root of every
 * chain).
 */
Datum
schedphi_audit_sign_head(PG_FUNCTION_ARGS)
{
	char	   *scope;
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

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("scope, seq and hash must not be null")));
	scope = text_to_cstring(PG_GETARG_TEXT_PP(0));
	seq = PG_GETARG_INT64(1);
	hash = PG_GETARG_BYTEA_PP(2);
	if (!PG_ARGISNULL(3))
		kek = text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (VARSIZE_ANY_EXHDR(hash) != HASH_LEN)
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("hash must be 32 bytes")));
	hex_encode(VARDATA_ANY(hash), HASH_LEN, hex);
	hex[2 * HASH_LEN] = '\0';
	initStringInfo(&msg);
	appendStringInfo(&msg, "schedphi audit digest v2|%s|" INT64_FORMAT "|%s", scope, seq, hex);
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

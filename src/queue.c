/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The audit event queue: a ring per database in shared memory, from
 *	  the backends that record events to the worker that commits them.
 *
 * Reads (decryptions), denials, rate-limit refusals, token assumptions,
 * break-glass and key operations go into a per-database queue in shared
 * memory.  A background worker per database (ledger.c; started by the
 * first backend that needs it) inserts them in its own transactions,
 * commits synchronously, and then advances the queue's durable position.
 * The backend waits for that before its statement completes (audit.c
 * decides when).  A full queue or a worker that does not answer within
 * schedphi.audit_timeout fails the statement: nothing goes unrecorded.
 *
 * The queue lives in shared memory, so it needs shared_preload_libraries;
 * without it schedphi_auditq is NULL and what needs the queue says so.
 * DROP DATABASE first asks that database's worker to leave.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "common.h"
#include "queue.h"

#define AQ_MAX_EVENT	16384	/* bytes of one serialised event */

/* --------------------------------------------------------------- settings */

static int	audit_queue_kb = 1024;
static int	audit_timeout_ms = 10000;

/* ------------------------------------------------------------ shared state */

AuditShared *schedphi_auditq = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Bytes of each database's ring (schedphi.audit_queue_size). */
static Size
ring_size(void)
{
	return (Size) audit_queue_kb * 1024;
}

/* The shared struct, then one ring per database. */
static Size
audit_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(AuditShared)), mul_size(ring_size(), AQ_DBS));
}

/* Ask for the queues' memory and their locks (preloaded only). */
static void
audit_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(audit_shmem_size());
	RequestNamedLWLockTranche("schedphi_audit", AQ_DBS + 1);
}

/* Find or make the queues: all free, each ring after the struct. */
static void
audit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	schedphi_auditq = ShmemInitStruct("schedphi audit", audit_shmem_size(), &found);
	if (!found)
	{
		memset(schedphi_auditq, 0, sizeof(AuditShared));
		schedphi_auditq->ring_size = ring_size();
		for (int i = 0; i < AQ_DBS; i++)
		{
			ConditionVariableInit(&schedphi_auditq->q[i].cv);
			schedphi_auditq->q[i].ring_off = MAXALIGN(sizeof(AuditShared)) + i * schedphi_auditq->ring_size;
		}
	}
	schedphi_auditq->locks = GetNamedLWLockTranche("schedphi_audit");
	LWLockRelease(AddinShmemInitLock);
}

#define RING(q)		((char *) schedphi_auditq + (q)->ring_off)

/* ------------------------------------------------------------------ events */

/* Append len raw bytes to buf. */
static void
put_bytes(StringInfo buf, const void *p, int len)
{
	appendBinaryStringInfo(buf, (const char *) p, len);
}

/* Serialised: uint32 length, then the fields (see schedphi_event_parse). */
void
schedphi_event_serialise(StringInfo buf, const AuditEvent *ev)
{
	uint32		len = 0;
	uint8		flags = (ev->has_tenant ? 1 : 0) | (ev->has_object_id ? 2 : 0) | (ev->has_patient ? 4 : 0);
	int			start = buf->len;

	put_bytes(buf, &len, sizeof(len));
	put_bytes(buf, &ev->at, sizeof(ev->at));
	put_bytes(buf, &ev->xid, sizeof(ev->xid));
	put_bytes(buf, &flags, 1);
	put_bytes(buf, ev->tenant.data, UUID_LEN);
	put_bytes(buf, ev->object_id.data, UUID_LEN);
	put_bytes(buf, ev->patient.data, UUID_LEN);
	for (int i = 0; i < AQ_STRINGS; i++)
	{
		int32		n = ev->s[i] ? (int32) strlen(ev->s[i]) : -1;

		put_bytes(buf, &n, sizeof(n));
		if (n > 0)
			put_bytes(buf, ev->s[i], n);
	}
	len = buf->len - start;
	if (len > AQ_MAX_EVENT)
		elog(ERROR, "schedphi: audit event too large (%u bytes)", len);
	memcpy(buf->data + start, &len, sizeof(len));
}

/* The inverse of schedphi_event_serialise; strings are palloc'd. */
void
schedphi_event_parse(const char *p, AuditEvent *ev)
{
	uint8		flags;

	p += sizeof(uint32);
	memcpy(&ev->at, p, sizeof(ev->at));
	p += sizeof(ev->at);
	memcpy(&ev->xid, p, sizeof(ev->xid));
	p += sizeof(ev->xid);
	flags = (uint8) *p++;
	ev->has_tenant = (flags & 1) != 0;
	ev->has_object_id = (flags & 2) != 0;
	ev->has_patient = (flags & 4) != 0;
	memcpy(ev->tenant.data, p, UUID_LEN);
	p += UUID_LEN;
	memcpy(ev->object_id.data, p, UUID_LEN);
	p += UUID_LEN;
	memcpy(ev->patient.data, p, UUID_LEN);
	p += UUID_LEN;
	for (int i = 0; i < AQ_STRINGS; i++)
	{
		int32		n;

		memcpy(&n, p, sizeof(n));
		p += sizeof(n);
		if (n < 0)
			ev->s[i] = NULL;
		else
		{
			ev->s[i] = pnstrdup(p, n);
			p += n;
		}
	}
}

#define INSERT_NARGS 15
static const char *insert_sql =
"INSERT INTO schedphi.audit_log (at, login, actor, tenant, role, purpose, action, object, object_id, "
"patient, columns, client_addr, application, detail, xid, chain) "
"VALUES ($1, $2::name, $3, $4, $5, $6, $7, $8, $9, $10, $11::text[], $12::inet, $13, $14::jsonb, $15, "
"coalesce($4, '00000000-0000-0000-0000-000000000000'::uuid))";
static Oid	insert_types[INSERT_NARGS] = {
	TIMESTAMPTZOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID,
	UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID
};

/* This process is the audit worker (set by ledger.c when it starts). */
bool		schedphi_is_audit_worker = false;

static void audit_unavailable(const char *why) pg_attribute_noreturn();

/*
 * The month (UTC) a record falls in, as year * 12 + month - 1, and whether
 * this backend has seen the partition for it.
 */
static int	partition_month_known = -1;

/*
 * Make sure the log has a partition for a record written at `at`.  The
 * audit worker makes them ahead of time; in a new database, or after the
 * worker was away for a month, a record may come first.  The worker is
 * then asked to make it (the writing transaction never makes one: it
 * would hold the whole log locked until it ends), and waited for as long
 * as for a queued event to be durable.  The worker itself, and a server
 * without it (not preloaded), make it at once.
 */
static void
ensure_partition(TimestampTz at)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			month;
	char		name[NAMEDATALEN];
	Oid			nsp;
	TimestampTz deadline;

	if (timestamp2tm(at, NULL, &tm, &fsec, NULL, NULL) != 0)
		elog(ERROR, "schedphi: audit record time out of range");
	month = tm.tm_year * 12 + tm.tm_mon - 1;
	if (month == partition_month_known)
		return;
	snprintf(name, sizeof(name), "audit_log_%04d%02d", tm.tm_year, tm.tm_mon);
	nsp = get_namespace_oid("schedphi", false);
	if (OidIsValid(get_relname_relid(name, nsp)))
	{
		partition_month_known = month;
		return;
	}
	if (schedphi_citus_worker_node())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("schedphi audit log is not available: the partition for %s is missing", name),
				 errhint("The coordinator's audit worker makes the partitions; on Citus run SELECT schedphi.distribute() on the coordinator.")));
	if (schedphi_auditq == NULL || schedphi_is_audit_worker)
	{
		if (SPI_execute("SELECT schedphi._audit_partitions()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: could not make the audit log's partitions");
		return;
	}
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), audit_timeout_ms);
	for (;;)
	{
		int			qi = schedphi_queue_for_database(true);

		schedphi_queue_wake_worker(false, true);
		ConditionVariableTimedSleep(&schedphi_auditq->q[qi].cv, 100, PG_WAIT_EXTENSION);
		AcceptInvalidationMessages();
		if (OidIsValid(get_relname_relid(name, nsp)))
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			ConditionVariableCancelSleep();
			audit_unavailable("its worker did not make the log's partition for this month in time");
		}
	}
	ConditionVariableCancelSleep();
	partition_month_known = month;
}

/* Insert one event (connected to SPI, with a snapshot). */
void
schedphi_event_insert(const AuditEvent *ev)
{
	static SPIPlanPtr plan = NULL;
	Datum		v[INSERT_NARGS];
	char		n[INSERT_NARGS];
	static const int strcol[INSERT_NARGS] = {
		-1, S_LOGIN, S_ACTOR, -1, S_ROLE, S_PURPOSE, S_ACTION, S_OBJECT, -1, -1, S_COLUMNS, S_CLIENT,
		S_APPLICATION, S_DETAIL, -1
	};

	memset(n, ' ', sizeof(n));
	for (int i = 0; i < INSERT_NARGS; i++)
	{
		if (strcol[i] < 0)
			continue;
		if (ev->s[strcol[i]] == NULL)
			n[i] = 'n', v[i] = (Datum) 0;
		else
			v[i] = CStringGetTextDatum(ev->s[strcol[i]]);
	}
	v[0] = TimestampTzGetDatum(ev->at);
	v[3] = UUIDPGetDatum(&ev->tenant);
	n[3] = ev->has_tenant ? ' ' : 'n';
	v[8] = UUIDPGetDatum(&ev->object_id);
	n[8] = ev->has_object_id ? ' ' : 'n';
	v[9] = UUIDPGetDatum(&ev->patient);
	n[9] = ev->has_patient ? ' ' : 'n';
	v[14] = Int64GetDatum(ev->xid);
	n[14] = ev->xid != 0 ? ' ' : 'n';
	ensure_partition(ev->at);
	schedphi_keep_plan(&plan, insert_sql, INSERT_NARGS, insert_types);
	if (SPI_execute_plan(plan, v, n, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "schedphi: could not insert an audit record");
}

/*
 * Insert n events in one statement (connected to SPI, with a snapshot):
 * the inserts of one statement to a PHI table.
 */
void
schedphi_events_insert(const AuditEvent *evs, int n)
{
	static SPIPlanPtr plan = NULL;
	static const int strcol[INSERT_NARGS] = {
		-1, S_LOGIN, S_ACTOR, -1, S_ROLE, S_PURPOSE, S_ACTION, S_OBJECT, -1, -1, S_COLUMNS, S_CLIENT,
		S_APPLICATION, S_DETAIL, -1
	};
	Oid			types[INSERT_NARGS];
	Datum		args[INSERT_NARGS];
	Datum	   *v;
	bool	   *nl;
	int			dims[1] = {n};
	int			lbs[1] = {1};
	MemoryContext cxt,
				old;

	if (n == 0)
		return;
	if (n == 1)
	{
		schedphi_event_insert(&evs[0]);
		return;
	}
	/* the arrays go when the records are in: a huge insert comes in many calls */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "schedphi audit records", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	v = palloc(sizeof(Datum) * n);
	nl = palloc(sizeof(bool) * n);
	ensure_partition(evs[0].at);
	ensure_partition(evs[n - 1].at);
	for (int c = 0; c < INSERT_NARGS; c++)
	{
		Oid			elem = insert_types[c];
		int16		typlen;
		bool		typbyval;
		char		typalign;

		for (int i = 0; i < n; i++)
		{
			const AuditEvent *ev = &evs[i];

			nl[i] = false;
			if (strcol[c] >= 0)
			{
				nl[i] = ev->s[strcol[c]] == NULL;
				v[i] = nl[i] ? (Datum) 0 : CStringGetTextDatum(ev->s[strcol[c]]);
			}
			else if (c == 0)
				v[i] = TimestampTzGetDatum(ev->at);
			else if (c == 3)
				nl[i] = !ev->has_tenant, v[i] = UUIDPGetDatum(&ev->tenant);
			else if (c == 8)
				nl[i] = !ev->has_object_id, v[i] = UUIDPGetDatum(&ev->object_id);
			else if (c == 9)
				nl[i] = !ev->has_patient, v[i] = UUIDPGetDatum(&ev->patient);
			else
				nl[i] = ev->xid == 0, v[i] = Int64GetDatum(ev->xid);
		}
		get_typlenbyvalalign(elem, &typlen, &typbyval, &typalign);
		types[c] = get_array_type(elem);
		args[c] = PointerGetDatum(construct_md_array(v, nl, 1, dims, lbs, elem, typlen, typbyval, typalign));
	}
	schedphi_keep_plan(&plan,
					   "INSERT INTO schedphi.audit_log (at, login, actor, tenant, role, purpose, action, object, "
					   "object_id, patient, columns, client_addr, application, detail, xid, chain) "
					   "SELECT at, login::name, actor, tenant, role, purpose, action, object, object_id, patient, "
					   "columns::text[], client_addr::inet, application, detail::jsonb, xid, "
					   "coalesce(tenant, '00000000-0000-0000-0000-000000000000'::uuid) "
					   "FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
					   "AS u(at, login, actor, tenant, role, purpose, action, object, object_id, patient, columns, "
					   "client_addr, application, detail, xid)",
					   INSERT_NARGS, types);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT || (int) SPI_processed != n)
		elog(ERROR, "schedphi: could not insert audit records");
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* ------------------------------------------------------------------ queue */

static int	my_queue = -1;			/* index of this database's queue */
static uint64 wait_target = 0;		/* queue position to wait for */
static uint64 wait_generation = 0;	/* ... in this generation of the queue */

/* Refuse: without shared memory there is no queue to record through. */
static void
require_queue(void)
{
	if (schedphi_auditq == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("schedphi audit log is not available"),
				 errdetail("Reading patient data and denials are recorded through a queue in shared memory."),
				 errhint("Add schedphi to shared_preload_libraries and restart the server.")));
}

/* Register this database's worker unless one is registered (queue lock held). */
static bool
register_worker(int qi)
{
	BackgroundWorker w;
	BackgroundWorkerHandle *handle;
	AuditQueue *q = &schedphi_auditq->q[qi];

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 1;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "schedphi");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "schedphi_audit_worker_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "schedphi audit %u", q->dboid);
	snprintf(w.bgw_type, BGW_MAXLEN, "schedphi audit");
	w.bgw_main_arg = Int32GetDatum(qi);
	memcpy(w.bgw_extra, &q->dboid, sizeof(Oid));
	w.bgw_notify_pid = 0;
	if (!RegisterDynamicBackgroundWorker(&w, &handle))
		return false;
	q->registered = true;
	q->registered_at = GetCurrentTimestamp();
	return true;
}

/*
 * This database's queue, claimed if new, with its worker registered.
 * With may_error false, returns -1 rather than raise.
 */
int
schedphi_queue_for_database(bool may_error)
{
	int			qi = my_queue;
	AuditQueue *q;
	bool		ok = true;

	if (schedphi_auditq == NULL)
	{
		if (may_error)
			require_queue();
		return -1;
	}
	if (qi < 0)
	{
		int			free_slot = -1;

		LWLockAcquire(SLOTLOCK, LW_EXCLUSIVE);
		for (int i = 0; i < AQ_DBS; i++)
		{
			if (schedphi_auditq->q[i].dboid == MyDatabaseId)
			{
				qi = i;
				break;
			}
			if (free_slot < 0 && schedphi_auditq->q[i].dboid == InvalidOid)
				free_slot = i;
		}
		if (qi < 0 && free_slot >= 0)
		{
			LWLockAcquire(QLOCK(free_slot), LW_EXCLUSIVE);
			q = &schedphi_auditq->q[free_slot];
			q->dboid = MyDatabaseId;
			q->generation++;
			q->insert_pos = q->read_pos = q->durable_pos = 0;
			q->registered = false;
			q->worker_pid = 0;
			q->seal_requested = false;
			q->partitions_requested = false;
			q->stop_requested = false;
			LWLockRelease(QLOCK(free_slot));
			qi = free_slot;
		}
		LWLockRelease(SLOTLOCK);
		if (qi < 0)
		{
			if (may_error)
				ereport(ERROR,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("schedphi audit log is not available: more than %d databases use schedphi", AQ_DBS)));
			return -1;
		}
		my_queue = qi;
	}
	q = &schedphi_auditq->q[qi];
	if (!q->registered)
	{
		LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
		if (q->dboid == MyDatabaseId && !q->registered)
			ok = register_worker(qi);
		LWLockRelease(QLOCK(qi));
		if (!ok && may_error)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("schedphi audit log is not available: could not start its background worker"),
					 errhint("Raise max_worker_processes: schedphi needs one worker per database that uses it.")));
	}
	if (q->dboid != MyDatabaseId)
	{
		/* the worker gave the slot up (extension dropped); claim again */
		my_queue = -1;
		return schedphi_queue_for_database(may_error);
	}
	return qi;
}

/* Copy len bytes into the ring at position pos, wrapping at its end. */
static void
ring_write(AuditQueue *q, uint64 pos, const char *src, Size len)
{
	Size		size = schedphi_auditq->ring_size;
	Size		off = pos % size;
	Size		first = Min(len, size - off);

	memcpy(RING(q) + off, src, first);
	if (len > first)
		memcpy(RING(q), src + first, len - first);
}

/* Copy len bytes out of the ring from position pos (the worker's drain). */
void
schedphi_ring_read(AuditQueue *q, uint64 pos, char *dst, Size len)
{
	Size		size = schedphi_auditq->ring_size;
	Size		off = pos % size;
	Size		first = Min(len, size - off);

	memcpy(dst, RING(q) + off, first);
	if (len > first)
		memcpy(dst + first, RING(q), len - first);
}

/* Refuse what could not be recorded: the access fails closed. */
static void
audit_unavailable(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("schedphi audit log is not available: %s", why),
			 errdetail("The access could not be recorded, so it was not allowed."),
			 errhint("The DBA checks the \"schedphi audit\" background worker and the server log.")));
}

/*
 * Put serialised events into the queue, waiting for room.  With may_error
 * false (abort processing), gives up silently when there is no room.  With
 * durable, the statement will wait until they are committed (see
 * schedphi_queue_wait_durable); otherwise the next event that is waited
 * for covers them (the queue is committed in order).
 */
void
schedphi_queue_enqueue(const char *data, Size len, bool may_error, bool durable)
{
	int			qi = schedphi_queue_for_database(may_error);
	AuditQueue *q;
	TimestampTz deadline;
	int			lookups = 0;

	if (qi < 0)
		return;
	q = &schedphi_auditq->q[qi];
	if (len > schedphi_auditq->ring_size / 2)
		elog(ERROR, "schedphi: audit batch larger than half the queue");
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), audit_timeout_ms);
	for (;;)
	{
		bool		done = false;
		Latch	   *latch;

		LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
		if (q->dboid != MyDatabaseId || !q->registered)
		{
			/* an idle worker gave the queue up meanwhile: find it again */
			LWLockRelease(QLOCK(qi));
			if (++lookups > 3)
			{
				/* no worker could be started (schedphi_queue_for_database said why) */
				if (!may_error)
					return;
				audit_unavailable("its background worker could not be started");
			}
			my_queue = -1;
			qi = schedphi_queue_for_database(may_error);
			if (qi < 0)
				return;
			q = &schedphi_auditq->q[qi];
			continue;
		}
		if (q->insert_pos - q->durable_pos + len <= schedphi_auditq->ring_size)
		{
			ring_write(q, q->insert_pos, data, len);
			q->insert_pos += len;
			if (durable)
			{
				wait_target = q->insert_pos;
				wait_generation = q->generation;
			}
			done = true;
		}
		latch = q->worker_latch;
		LWLockRelease(QLOCK(qi));
		if (latch)
			SetLatch(latch);
		if (done)
			break;
		if (!may_error)
			return;
		if (GetCurrentTimestamp() >= deadline)
		{
			ConditionVariableCancelSleep();
			audit_unavailable("the queue is full");
		}
		ConditionVariableTimedSleep(&q->cv, 100, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/* Wait until everything this backend queued is committed by the worker. */
void
schedphi_queue_wait_durable(void)
{
	AuditQueue *q;
	TimestampTz deadline;

	if (wait_target == 0 || my_queue < 0)
		return;
	q = &schedphi_auditq->q[my_queue];
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), audit_timeout_ms);
	for (;;)
	{
		uint64		durable;
		bool		mine;

		LWLockAcquire(QLOCK(my_queue), LW_SHARED);
		durable = q->durable_pos;
		mine = q->dboid == MyDatabaseId && q->generation == wait_generation;
		LWLockRelease(QLOCK(my_queue));
		/* a queue is only given up once everything in it is durable */
		if (!mine || durable >= wait_target)
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			ConditionVariableCancelSleep();
			wait_target = 0;
			audit_unavailable("its worker did not confirm the record in time");
		}
		ConditionVariableTimedSleep(&q->cv, 200, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	wait_target = 0;
}

/*
 * Ask this database's worker to seal now, or to make the log's partitions,
 * and wake it (starting it if none runs).
 */
void
schedphi_queue_wake_worker(bool seal, bool partitions)
{
	int			qi = schedphi_queue_for_database(true);
	AuditQueue *q = &schedphi_auditq->q[qi];
	Latch	   *latch;

	LWLockAcquire(QLOCK(qi), LW_EXCLUSIVE);
	if (seal)
		q->seal_requested = true;
	if (partitions)
		q->partitions_requested = true;
	latch = q->worker_latch;
	LWLockRelease(QLOCK(qi));
	if (latch)
		SetLatch(latch);
}

/* Record one event through the queue; with wait, until it is durable. */
void
schedphi_queue_record(const AuditEvent *ev, bool wait)
{
	StringInfoData buf;

	initStringInfo(&buf);
	schedphi_event_serialise(&buf, ev);
	schedphi_queue_enqueue(buf.data, buf.len, true, wait);
	pfree(buf.data);
	if (wait)
		schedphi_queue_wait_durable();
}

/* This database's queue, or -1 while this backend has not used one. */
int
schedphi_queue_index(void)
{
	return my_queue;
}

/*
 * The sealer's floor in this database for its log sequence seq (every
 * record with an id up to it is sealed or was rolled back), or 0 when not
 * known.  It outlives the worker, and the queue's slot, which another
 * database may take meanwhile.  (Kept in the slot, it was wiped when
 * another database took it: the next worker of this one started from the
 * floor of long before, and stepped over the dead index entries of the 21
 * million records sealed since, 19 s, while a read waited on it.)
 */
int64
schedphi_queue_seal_floor(Oid seq)
{
	int64		floor = 0;

	if (schedphi_auditq == NULL || !OidIsValid(seq))
		return 0;
	LWLockAcquire(SLOTLOCK, LW_SHARED);
	for (int i = 0; i < AQ_FLOORS; i++)
	{
		AuditFloor *f = &schedphi_auditq->floors[i];

		if (f->db == MyDatabaseId && f->seq == seq)
		{
			floor = f->floor;
			break;
		}
	}
	LWLockRelease(SLOTLOCK);
	return floor;
}

/*
 * Remember this database's floor (0: forget it).  With every entry taken,
 * the one set longest ago goes: that database starts from 0 again, which
 * is slow, never wrong.
 */
void
schedphi_queue_set_seal_floor(Oid seq, int64 floor)
{
	AuditFloor *f = NULL;
	AuditFloor *oldest = NULL;

	if (schedphi_auditq == NULL)
		return;
	LWLockAcquire(SLOTLOCK, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_FLOORS && f == NULL; i++)
	{
		AuditFloor *e = &schedphi_auditq->floors[i];

		if (e->db == MyDatabaseId)
			f = e;
		else if (oldest == NULL || (oldest->db != InvalidOid &&
									(e->db == InvalidOid || e->stamp < oldest->stamp)))
			oldest = e;
	}
	if (f == NULL && floor > 0)
		f = oldest;
	if (f != NULL)
	{
		f->db = floor > 0 ? MyDatabaseId : InvalidOid;
		f->seq = seq;
		f->floor = floor;
		f->stamp = ++schedphi_auditq->floor_clock;
	}
	LWLockRelease(SLOTLOCK);
}

/* A database dropped: its floor goes too (its oid may come back). */
static void
forget_floor_of(Oid dboid)
{
	LWLockAcquire(SLOTLOCK, LW_EXCLUSIVE);
	for (int i = 0; i < AQ_FLOORS; i++)
		if (schedphi_auditq->floors[i].db == dboid)
			schedphi_auditq->floors[i].db = InvalidOid;
	LWLockRelease(SLOTLOCK);
}

/* Nothing this backend queued need be waited for any more (abort). */
void
schedphi_queue_forget_wait(void)
{
	wait_target = 0;
}

/* ------------------------------------------------ DROP DATABASE */

/*
 * DROP DATABASE waits for nobody: the worker connected to that database
 * is asked to leave first (it gives its queue up), so that the drop does
 * not fail with "database is being accessed by other users".
 */
static void
stop_worker_of(Oid dboid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);

	for (int i = 0; i < AQ_DBS; i++)
	{
		AuditQueue *q = &schedphi_auditq->q[i];
		Latch	   *latch = NULL;
		bool		found = false;

		LWLockAcquire(QLOCK(i), LW_EXCLUSIVE);
		if (q->dboid == dboid && q->registered)
		{
			q->stop_requested = true;
			latch = q->worker_latch;
			found = true;
		}
		LWLockRelease(QLOCK(i));
		if (!found)
			continue;
		if (latch)
			SetLatch(latch);
		while (GetCurrentTimestamp() < deadline)
		{
			bool		gone;

			LWLockAcquire(QLOCK(i), LW_SHARED);
			gone = q->dboid != dboid;
			LWLockRelease(QLOCK(i));
			if (gone)
				break;
			ConditionVariableTimedSleep(&q->cv, 100, PG_WAIT_EXTENSION);
		}
		ConditionVariableCancelSleep();
	}
}

/*
 * DROP DATABASE (schedphi.c's utility hook) first stops that database's
 * audit worker.
 */
void
schedphi_queue_utility(Node *node)
{
	if (schedphi_auditq != NULL && IsA(node, DropdbStmt))
	{
		Oid			dboid = get_database_oid(((DropdbStmt *) node)->dbname, true);

		if (OidIsValid(dboid))
		{
			stop_worker_of(dboid);
			forget_floor_of(dboid);
		}
	}
}

/* ------------------------------------------------------------------- init */

/* The queue's settings and, when preloaded, its shared memory. */
void
schedphi_queue_init(void)
{
	/* a PGC_POSTMASTER setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("schedphi.audit_queue_size",
								"Shared memory for each database's audit queue.",
								NULL, &audit_queue_kb, 1024, 64, 1024 * 1024,
								PGC_POSTMASTER, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("schedphi.audit_timeout",
							"How long a statement waits for its audit records to become durable before it fails.",
							NULL, &audit_timeout_ms, 10000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = audit_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = audit_shmem_startup;
}

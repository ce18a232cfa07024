/*-------------------------------------------------------------------------
 *
 * audit.c
 *	  The audit ledger: who touched PHI, what, when, where and why,
 *	  recorded so that neither a rollback nor an error erases it, and sealed
 *	  into a SHA-256 hash chain.
 *
 * Two ways into schedphi.audit_log:
 *
 *	 - Writes to PHI tables are recorded by a C trigger (schedphi_audit_write)
 *	   in the transaction that makes them: if it rolls back, nothing was
 *	   written and nothing is recorded.
 *	 - Reads (decryptions), denials, rate-limit refusals, token assumptions,
 *	   break-glass and key operations go into a per-database queue in shared
 *	   memory.  A background worker per database (started by the first
 *	   backend that needs it) inserts them in its own transactions, commits
 *	   synchronously, and then advances the queue's durable position.  The
 *	   backend waits for that before its statement completes (explicit
 *	   events wait at once; decryptions are gathered per statement and
 *	   waited for when the statement's executor ends, or before a denial is
 *	   raised).  A full queue or a worker that does not answer within
 *	   schedphi.audit_timeout fails the statement: nothing goes unrecorded.
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
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/executor.h"
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
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "nodes/parsenodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "schedphi.h"

#define AQ_DBS			16		/* databases with a queue at once */
#define WORKER_IDLE_MS	60000	/* an idle worker leaves after this */
#define AQ_MAX_EVENT	16384	/* bytes of one serialised event */
#define AQ_STRINGS		10		/* string fields of an event */
#define PENDING_MAX		256		/* reads gathered before an early enqueue */
#define SEAL_BATCH		5000
#define HASH_LEN		32

/* --------------------------------------------------------------- settings */

static int	audit_queue_kb = 1024;
static int	audit_timeout_ms = 10000;
static int	audit_seal_interval_ms = 1000;
static char *audit_retention = NULL;

/* ------------------------------------------------------------ shared state */

typedef struct AuditQueue
{
	Oid			dboid;			/* InvalidOid: slot free */
	uint64		generation;		/* bumped each time the slot is claimed */
	bool		registered;		/* a worker is registered (running or
								 * restarting) */
	pid_t		worker_pid;		/* 0 while none runs */
	Latch	   *worker_latch;
	TimestampTz registered_at;
	uint64		insert_pos;		/* bytes ever queued */
	uint64		read_pos;		/* bytes the worker has taken */
	uint64		durable_pos;	/* bytes committed to audit_log */
	bool		head_known;		/* chain head below is valid */
	int64		head_seq;
	uint8		head_hash[HASH_LEN];
	bool		seal_requested; /* a backend asked to seal now */
	bool		stop_requested; /* the database is being dropped */
	ConditionVariable cv;		/* durable_pos moved, or the worker changed */
	Size		ring_off;		/* offset of the ring in AuditShared */
} AuditQueue;

typedef struct AuditShared
{
	LWLockPadded *locks;		/* [0..AQ_DBS-1] queues, [AQ_DBS] slot table */
	pg_atomic_uint64 member_generation; /* bumped when any membership changes */
	pg_atomic_uint64 rules_generation;	/* bumped when availability or a zone changes */
	Size		ring_size;
	AuditQueue	q[AQ_DBS];
} AuditShared;

static AuditShared *audit = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorEnd_hook_type prev_executor_end_hook = NULL;
static ExecutorRun_hook_type prev_executor_run_hook = NULL;
static ExecutorStart_hook_type prev_executor_start_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* This process is the audit worker; it alone may seal and purge. */
static bool in_worker = false;
static bool guard_open = false;

static Size
ring_size(void)
{
	return (Size) audit_queue_kb * 1024;
}

static Size
audit_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(AuditShared)), mul_size(ring_size(), AQ_DBS));
}

static void
audit_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(audit_shmem_size());
	RequestNamedLWLockTranche("schedphi_audit", AQ_DBS + 1);
}

static void
audit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	audit = ShmemInitStruct("schedphi audit", audit_shmem_size(), &found);
	if (!found)
	{
		memset(audit, 0, sizeof(AuditShared));
		pg_atomic_init_u64(&audit->member_generation, 1);
		pg_atomic_init_u64(&audit->rules_generation, 1);
		audit->ring_size = ring_size();
		for (int i = 0; i < AQ_DBS; i++)
		{
			ConditionVariableInit(&audit->q[i].cv);
			audit->q[i].ring_off = MAXALIGN(sizeof(AuditShared)) + i * audit->ring_size;
		}
	}
	audit->locks = GetNamedLWLockTranche("schedphi_audit");
	LWLockRelease(AddinShmemInitLock);
}

#define QLOCK(i)	(&audit->locks[(i)].lock)
#define SLOTLOCK	(&audit->locks[AQ_DBS].lock)
#define RING(q)		((char *) audit + (q)->ring_off)

/* ------------------------------------------------------------------ events */

/*
 * One audit record before it has a seq and hash.  Strings are NUL-terminated
 * or NULL (SQL NULL); columns is a text[] literal.
 */
typedef struct AuditEvent
{
	TimestampTz at;
	int64		xid;			/* 0: none */
	bool		has_tenant,
				has_object_id,
				has_patient;
	pg_uuid_t	tenant,
				object_id,
				patient;
	const char *s[AQ_STRINGS];
} AuditEvent;

enum
{
	S_LOGIN, S_ACTOR, S_ROLE, S_PURPOSE, S_ACTION, S_OBJECT, S_COLUMNS, S_CLIENT, S_APPLICATION, S_DETAIL
};

static void
put_bytes(StringInfo buf, const void *p, int len)
{
	appendBinaryStringInfo(buf, (const char *) p, len);
}

/* Serialised: uint32 length, then the fields (read back by parse_event). */
static void
serialise_event(StringInfo buf, const AuditEvent *ev)
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

/* The inverse of serialise_event; strings are palloc'd. */
static void
parse_event(const char *p, AuditEvent *ev)
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
"patient, columns, client_addr, application, detail, xid) "
"VALUES ($1, $2::name, $3, $4, $5, $6, $7, $8, $9, $10, $11::text[], $12::inet, $13, $14::jsonb, $15)";
static Oid	insert_types[INSERT_NARGS] = {
	TIMESTAMPTZOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID,
	UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID
};

/* Insert one event (connected to SPI, with a snapshot). */
static void
insert_event(const AuditEvent *ev)
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
	schedphi_keep_plan(&plan, insert_sql, INSERT_NARGS, insert_types);
	if (SPI_execute_plan(plan, v, n, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "schedphi: could not insert an audit record");
}

/* --------------------------------------------------------- who is asking */

typedef struct Who
{
	char		login[NAMEDATALEN];
	char		actor[256];
	char		role[96];
	char		purpose[16];
	bool		has_tenant;
	pg_uuid_t	tenant;
	char	   *client;			/* palloc'd in TopMemoryContext, or NULL */
	char		application[NAMEDATALEN];
} Who;

static char *client_addr = NULL;
static bool client_addr_known = false;

/* The client's IP address as text, or NULL (Unix socket, background). */
static const char *
client_address(void)
{
	if (!client_addr_known)
	{
		LOCAL_FCINFO(fc, 0);
		Datum		d;

		client_addr_known = true;
		InitFunctionCallInfoData(*fc, NULL, 0, InvalidOid, NULL, NULL);
		d = inet_client_addr(fc);
		if (!fc->isnull)
			client_addr = MemoryContextStrdup(TopMemoryContext, DatumGetCString(DirectFunctionCall1(inet_out, d)));
	}
	return client_addr;
}

/*
 * Memberships change rarely and are read on every audited write: the role
 * of the session user in a tenant is cached until any membership changes
 * (a generation counter in shared memory, bumped at the commit of a
 * change), or, not preloaded, for one transaction.
 */
static bool members_changed = false;

/*
 * Bumped when a transaction that changed memberships aborts: what this
 * backend cached during it may hold roles that were never committed.
 */
static uint64 members_rolled_back = 0;

static uint64
member_generation(void)
{
	return audit ? pg_atomic_read_u64(&audit->member_generation) : 0;
}

static void
member_role(const pg_uuid_t *tenant, char *role, int rolelen)
{
	static SPIPlanPtr plan = NULL;
	static uint64 cached_generation = 0;
	static uint64 cached_rollbacks = 0;
	static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
	static pg_uuid_t cached_tenant;
	static Oid	cached_user = InvalidOid;
	static char cached_role[96];
	Oid			types[1] = {UUIDOID};
	Datum		v[1];
	uint64		gen = member_generation();

	if (cached_user == GetSessionUserId() && memcmp(cached_tenant.data, tenant->data, UUID_LEN) == 0 &&
		!members_changed && cached_rollbacks == members_rolled_back &&
		(gen != 0 ? cached_generation == gen : cached_lxid == MyProc->lxid))
	{
		strlcpy(role, cached_role, rolelen);
		return;
	}
	cached_role[0] = '\0';
	if (superuser_arg(GetSessionUserId()))
		strlcpy(cached_role, "superuser", sizeof(cached_role));
	else
	{
		v[0] = UUIDPGetDatum(tenant);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&plan,
						   "SELECT string_agg(m.role, ',' ORDER BY m.role) FROM schedphi.member m "
						   "WHERE m.tenant = $1 AND schedphi._is_mine(m.login, m.login_oid, m.role)", 1, types);
		if (SPI_execute_plan(plan, v, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			char	   *r = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (r != NULL)
				strlcpy(cached_role, r, sizeof(cached_role));
		}
		SPI_finish();
	}
	cached_generation = gen;
	cached_rollbacks = members_rolled_back;
	cached_lxid = MyProc->lxid;
	cached_tenant = *tenant;
	cached_user = GetSessionUserId();
	strlcpy(role, cached_role, rolelen);
}

/*
 * Does the caller hold one of `roles` in `tenant`: an assumed token for
 * that tenant with one of them, or (no token) the session user's
 * membership, from the cache above?  false means "not cleared here": the
 * caller then asks schedphi._authorize, which decides (superusers
 * included) and raises the documented refusal.
 */
bool
schedphi_has_role(const pg_uuid_t *tenant, const char *const *roles, int nroles)
{
	const SchedphiActor *a = schedphi_current_actor();
	char		held[96];
	char	   *tok;
	char	   *save = NULL;

	if (a != NULL)
	{
		if (memcmp(a->tenant.data, tenant->data, UUID_LEN) != 0)
			return false;
		for (int i = 0; i < nroles; i++)
			if (strcmp(a->role, roles[i]) == 0)
				return true;
		return false;
	}
	member_role(tenant, held, sizeof(held));
	for (tok = strtok_r(held, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
		for (int i = 0; i < nroles; i++)
			if (strcmp(tok, roles[i]) == 0)
				return true;
	return false;
}

PG_FUNCTION_INFO_V1(schedphi_members_changed);

/*
 * Statement trigger on schedphi.member: at commit, tell every backend that
 * the roles it cached are stale.
 */
Datum
schedphi_members_changed(PG_FUNCTION_ARGS)
{
	members_changed = true;
	return PointerGetDatum(NULL);
}

/*
 * Availability rules and the zones of their locations are cached per
 * backend (walltime.c) under the generation below, bumped at the commit of
 * any change.  A transaction that changes them reads them from the catalog
 * until it ends, and stores nothing in the cache meanwhile, so a rollback
 * leaves the cache as it was: committed rules only.
 */
static bool rules_changed = false;

/*
 * The version under which availability rules may be served from the cache
 * now, or 0 when they must be read: not preloaded (no shared counter), in a
 * transaction that changed them, or above READ COMMITTED (a snapshot older
 * than the cache, and serializable transactions must read the rows).
 */
uint64
schedphi_rules_version(void)
{
	if (audit == NULL || rules_changed || XactIsoLevel != XACT_READ_COMMITTED)
		return 0;
	return pg_atomic_read_u64(&audit->rules_generation);
}

PG_FUNCTION_INFO_V1(schedphi_rules_changed);

/*
 * Statement trigger on schedphi.availability and schedphi.location, before
 * the change: stop using the cache in this transaction and, at its commit,
 * tell every backend that the rules they cached are stale.
 */
Datum
schedphi_rules_changed(PG_FUNCTION_ARGS)
{
	rules_changed = true;
	return PointerGetDatum(NULL);
}

/*
 * The session user's name, cached per user; looked up in the catalog only
 * when may_lookup (not while an error is being reported).
 */
static const char *
session_login(bool may_lookup)
{
	static Oid	cached_oid = InvalidOid;
	static char cached_name[NAMEDATALEN];
	Oid			user = GetSessionUserId();

	if (user != cached_oid)
	{
		char	   *name = may_lookup ? GetUserNameFromId(user, true) : NULL;

		if (name != NULL)
			strlcpy(cached_name, name, sizeof(cached_name));
		else
			snprintf(cached_name, sizeof(cached_name), "oid %u", user);
		cached_oid = name != NULL ? user : InvalidOid;
	}
	return cached_name;
}

/*
 * Fill in who is asking.  tenant: the tenant the event concerns, if known
 * (an assumed token's tenant wins).  may_query: whether the catalog and SPI
 * may be used (the login's name and membership role); not while an error
 * is being reported.
 */
static void
who_is_asking(Who *w, const pg_uuid_t *tenant, bool may_query)
{
	const SchedphiActor *a = schedphi_current_actor();
	const char *p = schedphi_current_purpose();

	memset(w, 0, sizeof(Who));
	strlcpy(w->login, session_login(may_query), sizeof(w->login));
	if (a != NULL)
	{
		strlcpy(w->actor, a->sub, sizeof(w->actor));
		strlcpy(w->role, a->role, sizeof(w->role));
		w->has_tenant = true;
		w->tenant = a->tenant;
	}
	else
	{
		strlcpy(w->actor, w->login, sizeof(w->actor));
		if (tenant != NULL)
		{
			w->has_tenant = true;
			w->tenant = *tenant;
			if (may_query)
				member_role(tenant, w->role, sizeof(w->role));
		}
		else if (may_query && superuser_arg(GetSessionUserId()))
			strlcpy(w->role, "superuser", sizeof(w->role));
	}
	if (p != NULL)
		strlcpy(w->purpose, p, sizeof(w->purpose));
	w->client = (char *) client_address();
	if (application_name != NULL)
		strlcpy(w->application, application_name, sizeof(w->application));
}

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

/* ------------------------------------------------------------------ queue */

static int	my_queue = -1;			/* index of this database's queue */
static uint64 wait_target = 0;		/* queue position to wait for */
static uint64 wait_generation = 0;	/* ... in this generation of the queue */

static void
require_queue(void)
{
	if (audit == NULL)
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
	AuditQueue *q = &audit->q[qi];

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
static int
queue_for_database(bool may_error)
{
	int			qi = my_queue;
	AuditQueue *q;
	bool		ok = true;

	if (audit == NULL)
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
			if (audit->q[i].dboid == MyDatabaseId)
			{
				qi = i;
				break;
			}
			if (free_slot < 0 && audit->q[i].dboid == InvalidOid)
				free_slot = i;
		}
		if (qi < 0 && free_slot >= 0)
		{
			LWLockAcquire(QLOCK(free_slot), LW_EXCLUSIVE);
			q = &audit->q[free_slot];
			q->dboid = MyDatabaseId;
			q->generation++;
			q->insert_pos = q->read_pos = q->durable_pos = 0;
			q->registered = false;
			q->worker_pid = 0;
			q->head_known = false;
			q->seal_requested = false;
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
	q = &audit->q[qi];
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
		return queue_for_database(may_error);
	}
	return qi;
}

static void
ring_write(AuditQueue *q, uint64 pos, const char *src, Size len)
{
	Size		size = audit->ring_size;
	Size		off = pos % size;
	Size		first = Min(len, size - off);

	memcpy(RING(q) + off, src, first);
	if (len > first)
		memcpy(RING(q), src + first, len - first);
}

static void
ring_read(AuditQueue *q, uint64 pos, char *dst, Size len)
{
	Size		size = audit->ring_size;
	Size		off = pos % size;
	Size		first = Min(len, size - off);

	memcpy(dst, RING(q) + off, first);
	if (len > first)
		memcpy(dst + first, RING(q), len - first);
}

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
 * wait_durable); otherwise the next event that is waited for covers them
 * (the queue is committed in order).
 */
static void
enqueue_bytes(const char *data, Size len, bool may_error, bool durable)
{
	int			qi = queue_for_database(may_error);
	AuditQueue *q;
	TimestampTz deadline;
	int			lookups = 0;

	if (qi < 0)
		return;
	q = &audit->q[qi];
	if (len > audit->ring_size / 2)
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
				/* no worker could be started (queue_for_database said why) */
				if (!may_error)
					return;
				audit_unavailable("its background worker could not be started");
			}
			my_queue = -1;
			qi = queue_for_database(may_error);
			if (qi < 0)
				return;
			q = &audit->q[qi];
			continue;
		}
		if (q->insert_pos - q->durable_pos + len <= audit->ring_size)
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
static void
wait_durable(void)
{
	AuditQueue *q;
	TimestampTz deadline;

	if (wait_target == 0 || my_queue < 0)
		return;
	q = &audit->q[my_queue];
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

/* Record one event through the queue; with wait, until it is durable. */
static void
record_event(const AuditEvent *ev, bool wait)
{
	StringInfoData buf;

	initStringInfo(&buf);
	serialise_event(&buf, ev);
	enqueue_bytes(buf.data, buf.len, true, wait);
	pfree(buf.data);
	if (wait)
		wait_durable();
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
		serialise_event(&buf, &ev);
		pfree(cols.data);
	}
	npending = 0;
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		enqueue_bytes(buf.data, buf.len, may_error, true);
	}
	PG_FINALLY();
	{
		pfree(buf.data);
	}
	PG_END_TRY();
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

	queue_for_database(true);
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

static void
make_reads_durable(void)
{
	if (in_worker)
		return;
	if (npending > 0)
		flush_reads(true);
	if (wait_target != 0)
		wait_durable();
}

static void
audit_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once)
{
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
		make_reads_durable();
}

static void
audit_executor_end(QueryDesc *queryDesc)
{
	if (exec_nesting == 0)
		make_reads_durable();
	if (prev_executor_end_hook)
		prev_executor_end_hook(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

static void
audit_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:

			/*
			 * Cached roles are dropped when a membership change commits, and
			 * nothing runs here when a prepared transaction commits: a
			 * revoked role could outlive it in other sessions' caches.
			 */
			if (members_changed)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed schedphi memberships"),
						 errhint("Change memberships in a transaction that commits directly.")));
			if (rules_changed)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed schedphi availability or locations"),
						 errhint("Change availability and locations in a transaction that commits directly.")));
			/* FALLTHROUGH */
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			/* reads gathered outside an executor (rare): record them now */
			if (npending > 0)
				flush_reads(true);
			if (wait_target != 0)
				wait_durable();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* the statement failed after decrypting: still recorded */
			exec_nesting = 0;
			if (members_changed)
				members_rolled_back++;
			members_changed = false;
			rules_changed = false;
			if (npending > 0)
				flush_reads(false);
			wait_target = 0;
			reveal_known = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			reveal_known = false;
			if (members_changed && audit != NULL)
				pg_atomic_fetch_add_u64(&audit->member_generation, 1);
			members_changed = false;
			if (rules_changed && audit != NULL)
				pg_atomic_fetch_add_u64(&audit->rules_generation, 1);
			rules_changed = false;
			break;
		default:
			break;
	}
}

/* ---------------------------------------------------- explicit events */

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
	bool		queued = audit != NULL && !in_transaction;

	/*
	 * Not preloaded, there is no queue: an event that goes with a change
	 * (a key operation, break-glass) is recorded in the transaction making
	 * it, and a denial only in the server log (by the error itself).
	 * Reading PHI is refused outright (schedphi_audit_note_read).
	 */
	if (audit == NULL && (strcmp(action, "denied") == 0 || strcmp(action, "rate_limited") == 0))
		return;
	if (audit != NULL)
		queue_for_database(true);	/* the worker also seals what is written here */
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
		record_event(&ev, wait);
	else
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		insert_event(&ev);
		SPI_finish();
	}
}

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
 * A denial: record it (durably), then raise 42501 with the rule.  Never
 * returns.  rule is the message, e.g. "permission denied: role rule".
 */
void
schedphi_audit_deny(const pg_uuid_t *tenant, int sqlstate, const char *message, const char *detail,
					const char *hint)
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
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(schedphi_audit_write);

/*
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on a PHI table; argument:
 * the column that holds the patient.  Records the names of the columns
 * written (insert: those not null; update: those changed), never values.
 */
Datum
schedphi_audit_write(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	row;
	const char *action;
	StringInfoData cols;
	int			idcol,
				tenantcol,
				patientcol;
	bool		isnull;
	Datum		d;
	Who			w;
	AuditEvent	ev;
	pg_uuid_t	tenant;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event) || td->tg_trigger->tgnargs != 1)
		elog(ERROR, "schedphi_audit_write: must be an AFTER ROW trigger with one argument");
	desc = RelationGetDescr(td->tg_relation);
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		action = "insert", row = td->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		action = reencrypt_lxid == MyProc->lxid ? "reencrypt" : "update", row = td->tg_newtuple;
	else
		action = "delete", row = td->tg_trigtuple;

	idcol = SPI_fnumber(desc, "id");
	tenantcol = SPI_fnumber(desc, "tenant");
	patientcol = SPI_fnumber(desc, td->tg_trigger->tgargs[0]);
	if (idcol <= 0 || tenantcol <= 0 || patientcol <= 0)
		elog(ERROR, "schedphi_audit_write: table lacks id, tenant or the patient column");

	initStringInfo(&cols);
	appendStringInfoChar(&cols, '{');
	if (!TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
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
			if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
				changed = !n1;
			else
			{
				d2 = heap_getattr(td->tg_trigtuple, i + 1, desc, &n2);
				changed = n1 != n2 || (!n1 && !datum_image_eq(d1, d2, att->attbyval, att->attlen));
			}
			if (changed)
				appendStringInfo(&cols, "%s%s", cols.len > 1 ? "," : "", quote_identifier(NameStr(att->attname)));
		}
	}
	appendStringInfoChar(&cols, '}');

	d = heap_getattr(row, tenantcol, desc, &isnull);
	if (isnull)
		elog(ERROR, "schedphi_audit_write: tenant is null");
	tenant = *DatumGetUUIDP(d);
	who_is_asking(&w, &tenant, true);
	event_from_who(&ev, &w, action);
	ev.has_tenant = true;
	ev.tenant = tenant;
	ev.s[S_OBJECT] = RelationGetRelationName(td->tg_relation);
	d = heap_getattr(row, idcol, desc, &isnull);
	if (!isnull)
		ev.has_object_id = true, ev.object_id = *DatumGetUUIDP(d);
	d = heap_getattr(row, patientcol, desc, &isnull);
	if (!isnull)
		ev.has_patient = true, ev.patient = *DatumGetUUIDP(d);
	ev.s[S_COLUMNS] = cols.data;

	/* the sealer must run somewhere; a failure to start it is not ours */
	if (audit != NULL)
		queue_for_database(false);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	insert_event(&ev);
	SPI_finish();
	return PointerGetDatum(NULL);
}

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

static void
worker_detach(int code, Datum arg)
{
	int			qi = DatumGetInt32(arg);
	AuditQueue *q = &audit->q[qi];

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
	AuditQueue *q = &audit->q[qi];
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
	ring_read(q, from, buf, len);

	if (!worker_begin("recording audit events"))
		worker_give_up(qi, false);	/* dropped meanwhile: nothing can be recorded */
	for (off = 0; off < len;)
	{
		uint32		elen;
		AuditEvent	ev;

		memcpy(&elen, buf + off, sizeof(elen));
		if (elen < sizeof(uint32) || off + elen > len)
			elog(ERROR, "schedphi audit worker: corrupt queue");
		parse_event(buf + off, &ev);
		insert_event(&ev);
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
	AuditQueue *q = &audit->q[qi];
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
	AuditQueue *q = &audit->q[qi];

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
	q = &audit->q[qi];
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

	buf = MemoryContextAlloc(TopMemoryContext, audit->ring_size);
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
	int			qi = queue_for_database(true);
	AuditQueue *q = &audit->q[qi];
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

	if (audit == NULL || my_queue < 0)
		return false;
	LWLockAcquire(QLOCK(my_queue), LW_SHARED);
	if (audit->q[my_queue].dboid == MyDatabaseId && audit->q[my_queue].head_known)
	{
		known = true;
		*seq = audit->q[my_queue].head_seq;
		memcpy(hash, audit->q[my_queue].head_hash, HASH_LEN);
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
	if (in_worker || !IsTransactionState() || !OidIsValid(MyDatabaseId))
		return;
	if (schedphi_here < 0)
		schedphi_here = OidIsValid(get_extension_oid("schedphi", true)) ? 1 : 0;
	if (schedphi_here == 1)
		(void) session_login(true);
}

static void
audit_executor_start(QueryDesc *queryDesc, int eflags)
{
	prepare_for_refusals();
	if (prev_executor_start_hook)
		prev_executor_start_hook(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
record_pg_refusal(ErrorData *edata)
{
	Who			w;
	AuditEvent	ev;
	StringInfoData js;
	StringInfoData buf;

	who_is_asking(&w, NULL, false);
	event_from_who(&ev, &w, "denied");
	initStringInfo(&js);
	appendStringInfoString(&js, "{\"rule\": ");
	escape_json(&js, pnstrdup(edata->message, 512));
	appendStringInfoString(&js, ", \"sqlstate\": \"42501\", \"by\": \"postgresql\"}");
	ev.s[S_DETAIL] = js.data;
	initStringInfo(&buf);
	serialise_event(&buf, &ev);
	enqueue_bytes(buf.data, buf.len, false, false);
}

static void
audit_emit_log(ErrorData *edata)
{
	if (edata->elevel == ERROR && edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE &&
		edata->message != NULL && schedphi_here == 1 && audit != NULL && !in_worker && !in_emit_hook &&
		OidIsValid(MyDatabaseId) && MyProc != NULL)
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
		AuditQueue *q = &audit->q[i];
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
 * Utility statements (schedphi.c's utility hook): ready to record a refusal
 * by PostgreSQL; DROP DATABASE first stops that database's audit worker.
 */
void
schedphi_audit_utility(Node *node)
{
	/* not while the extension itself is being created: it is not there yet */
	if (!IsA(node, CreateExtensionStmt))
		prepare_for_refusals();
	if (audit != NULL && IsA(node, DropdbStmt))
	{
		Oid			dboid = get_database_oid(((DropdbStmt *) node)->dbname, true);

		if (OidIsValid(dboid))
			stop_worker_of(dboid);
	}
}

/* ------------------------------------------------------------------- init */

void
schedphi_audit_init(void)
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
	DefineCustomIntVariable("schedphi.audit_seal_interval",
							"How often the audit worker seals new records into the hash chain.",
							NULL, &audit_seal_interval_ms, 1000, 10, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("schedphi.audit_retention",
							   "How long audit records are kept before schedphi.purge_audit() may remove them.",
							   NULL, &audit_retention, "6 years",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	RegisterXactCallback(audit_xact_callback, NULL);
	prev_executor_end_hook = ExecutorEnd_hook;
	ExecutorEnd_hook = audit_executor_end;
	prev_executor_run_hook = ExecutorRun_hook;
	ExecutorRun_hook = audit_executor_run;
	prev_executor_start_hook = ExecutorStart_hook;
	ExecutorStart_hook = audit_executor_start;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = audit_emit_log;
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = audit_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = audit_shmem_startup;
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

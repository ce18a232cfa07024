/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Per-actor rate limits in shared memory.
 *
 * Two limits: find_patient calls per actor per minute, and distinct
 * patients whose PHI an actor decrypts per hour.  The defaults are the
 * settings schedphi.lookup_rate_limit and schedphi.reveal_rate_limit; a
 * superuser may set other limits for a role or a login
 * (schedphi.set_rate_limit, schedphi._rate_limits decides which applies).
 * Nobody raises their own.  Beyond a limit the call fails with SP429
 * naming the limit.  An actor is the tenant and the token subject or login.
 *
 * Counting lives in three tables in shared memory, each open addressing
 * with linear probing, keyed by a 64-bit hash and stamped with the window
 * (minute or hour number) it counts in: lookups per (actor, minute),
 * reveals per (actor, hour), and the set of (actor, patient) pairs revealed
 * this hour.  Every entry of a table turns stale at the same moment, when
 * the window moves on, and a stale entry is free.  A lookup stops at the
 * first entry that is not of the current window: an entry of this window
 * went into the first such slot on its probe path, and no slot before it
 * can turn stale until the whole window does.  Nothing is ever deleted and
 * no sweep is needed.  A table whose current window fills it to 3/4 refuses
 * further counting (fail closed, SP429 naming the size setting).
 *
 * The pairs table holds schedphi.reveal_tracking_size entries (16 bytes
 * each, set at server start): the distinct patients revealed in one hour by
 * all actors together, which is the sum of every actor's reveals.  One
 * LWLock guards the tables: every operation is a few memory accesses.  The
 * tables need shared_preload_libraries; without them the limits cannot be
 * kept, and the operations they guard refuse to run (fail closed).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "actor.h"
#include "audit.h"
#include "common.h"
#include "membership.h"
#include "ratelimit.h"

#define RL_ACTORS		16384	/* actors counted in one window, per table */
#define RL_MAX_LIMIT	1000000

/* One counted key in one window; key 0 never occurs (0 is made 1). */
typedef struct RateEntry
{
	uint64		key;
	uint32		window;
	int32		count;
} RateEntry;

/* A table of nslots entries and how many of them hold the current window. */
typedef struct RateTable
{
	uint32		nslots;			/* a power of two */
	uint32		window;			/* the window `used` counts */
	uint32		used;
	RateEntry  *slots;
} RateTable;

typedef struct RateShared
{
	LWLock	   *lock;
	RateTable	lookups;		/* (actor, minute) -> find_patient calls */
	RateTable	reveals;		/* (actor, hour) -> distinct patients */
	RateTable	revealed;		/* (actor, patient, hour) -> present */
} RateShared;

int			schedphi_lookup_rate_limit = 120;
int			schedphi_reveal_rate_limit = 2000;
static int	reveal_tracking_size = 1048576;

static RateShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The power of two at or above n. */
static uint32
pow2_at_least(uint32 n)
{
	uint32		p = 1024;

	while (p < n)
		p <<= 1;
	return p;
}

static Size
ratelimit_shmem_size(void)
{
	Size		s = MAXALIGN(sizeof(RateShared));

	s = add_size(s, mul_size(sizeof(RateEntry), 2 * pow2_at_least(RL_ACTORS * 4 / 3)));
	return add_size(s, mul_size(sizeof(RateEntry), pow2_at_least((uint32) reveal_tracking_size)));
}

static void
ratelimit_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(ratelimit_shmem_size());
	RequestNamedLWLockTranche("schedphi_ratelimit", 1);
}

static void
ratelimit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("schedphi rate limits", ratelimit_shmem_size(), &found);
	if (!found)
	{
		char	   *p = (char *) shared + MAXALIGN(sizeof(RateShared));
		RateTable  *tables[3] = {&shared->lookups, &shared->reveals, &shared->revealed};

		memset(shared, 0, ratelimit_shmem_size());
		shared->lock = &(GetNamedLWLockTranche("schedphi_ratelimit"))->lock;
		for (int i = 0; i < 3; i++)
		{
			tables[i]->nslots = i < 2 ? pow2_at_least(RL_ACTORS * 4 / 3) :
				pow2_at_least((uint32) reveal_tracking_size);
			tables[i]->slots = (RateEntry *) p;
			p += sizeof(RateEntry) * tables[i]->nslots;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

void
schedphi_ratelimit_init(void)
{
	DefineCustomIntVariable("schedphi.lookup_rate_limit",
							"find_patient calls an actor may make per minute, unless a limit is set for its role or login.",
							NULL, &schedphi_lookup_rate_limit, 120, 1, RL_MAX_LIMIT,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("schedphi.reveal_rate_limit",
							"Distinct patients whose data an actor may decrypt per hour, unless a limit is set for its role or login.",
							NULL, &schedphi_reveal_rate_limit, 2000, 1, RL_MAX_LIMIT,
							PGC_SUSET, 0, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	/* sizes shared memory: defined only when preloaded, as server settings must be */
	DefineCustomIntVariable("schedphi.reveal_tracking_size",
							"Distinct (actor, patient) pairs the reveal limits can count in one hour, all actors together (16 bytes each).",
							NULL, &reveal_tracking_size, 1048576, 65536, 1 << 28,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ratelimit_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ratelimit_shmem_startup;
}

static RateShared *
rate_shared(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("schedphi rate limits are not available"),
				 errdetail("Looking patients up and reading their data are rate-limited in shared memory."),
				 errhint("Add schedphi to shared_preload_libraries and restart the server.")));
	return shared;
}

/*
 * The entry of key in the current window, or NULL when absent; with
 * create, a new entry (count 0), or NULL when the window fills 3/4 of the
 * table.  Lock held exclusively.
 */
static RateEntry *
rate_entry(RateTable *t, uint64 key, uint32 window, bool create)
{
	uint32		mask = t->nslots - 1;
	uint32		pos = (uint32) (key ^ (key >> 32)) & mask;

	if (key == 0)
		key = 1;
	if (t->window != window)
	{
		t->window = window;
		t->used = 0;
	}
	for (;;)
	{
		RateEntry  *e = &t->slots[pos];

		if (e->window != window || e->key == 0)
		{
			if (!create || t->used >= t->nslots / 4 * 3)
				return NULL;
			e->key = key;
			e->window = window;
			e->count = 0;
			t->used++;
			return e;
		}
		if (e->key == key)
			return e;
		pos = (pos + 1) & mask;
	}
}

/* The hash of an actor: its tenant and name. */
static uint64
actor_key(const pg_uuid_t *tenant, text *actor)
{
	return hash_bytes_extended(tenant->data, UUID_LEN, 0) ^
		hash_bytes_extended((const unsigned char *) VARDATA_ANY(actor), (int) VARSIZE_ANY_EXHDR(actor), 1);
}

/*
 * The limits that apply to the caller in a tenant (schedphi._rate_limits:
 * a limit set for the login, else for its role, else the settings),
 * worked out once per statement, tenant, session user and actor context.
 */
typedef struct Limits
{
	int32		lookups;
	int32		reveals;
	char		source[128];	/* "login x" or "role y" */
	bool		lookups_set;	/* from the table, not the setting */
	bool		reveals_set;
} Limits;

/*
 * The limits set for the caller (-1: none, the setting applies), kept
 * across statements until the session user, the actor context or a
 * membership or limit changes (membership.c's version: a statement trigger
 * on rate_limit bumps it too), or, in a transaction that changed them, for
 * one statement.
 */
static const Limits *
limits_for(const pg_uuid_t *tenant)
{
	static struct
	{
		bool		valid;
		bool		per_statement;
		uint64		version;
		LocalTransactionId lxid;
		TimestampTz stmt;
		Oid			user;
		uint64		generation;
		pg_uuid_t	tenant;
		Limits		set;		/* what the table says */
	}			cache;
	static Limits limits;
	static SPIPlanPtr plan = NULL;
	uint64		version = 0;
	bool		cacheable = schedphi_membership_version(&version);

	if (!(cache.valid && cache.user == GetSessionUserId() && cache.generation == schedphi_actor_generation() &&
		  memcmp(cache.tenant.data, tenant->data, UUID_LEN) == 0 &&
		  (cacheable && !cache.per_statement ? cache.version == version :
		   cache.lxid == MyProc->lxid && cache.stmt == GetCurrentStatementStartTimestamp())))
	{
		Oid			types[1] = {UUIDOID};
		Datum		args[1];
		bool		isnull;
		char	   *src;
		Datum		d;

		cache.valid = false;
		args[0] = UUIDPGetDatum(tenant);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&plan, "SELECT lookups, reveals, source FROM schedphi._rate_limits($1)", 1, types);
		/* (not read-only: a snapshot of its own, see membership.c) */
		if (SPI_execute_plan(plan, args, NULL, IsInParallelMode(), 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "schedphi: rate limit query failed");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		cache.set.lookups = isnull ? -1 : DatumGetInt32(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		cache.set.reveals = isnull ? -1 : DatumGetInt32(d);
		src = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		strlcpy(cache.set.source, src ? src : "", sizeof(cache.set.source));
		SPI_finish();
		cache.per_statement = !cacheable;
		cache.version = version;
		cache.lxid = MyProc->lxid;
		cache.stmt = GetCurrentStatementStartTimestamp();
		cache.user = GetSessionUserId();
		cache.generation = schedphi_actor_generation();
		cache.tenant = *tenant;
		cache.valid = true;
	}
	/* the settings as they are now (a SET LOCAL counts at once) */
	limits.lookups = cache.set.lookups >= 0 ? cache.set.lookups : schedphi_lookup_rate_limit;
	limits.reveals = cache.set.reveals >= 0 ? cache.set.reveals : schedphi_reveal_rate_limit;
	limits.lookups_set = cache.set.lookups >= 0;
	limits.reveals_set = cache.set.reveals >= 0;
	strlcpy(limits.source, cache.set.source, sizeof(limits.source));
	return &limits;
}

/* Refuse: recorded in the audit log, then SP429 naming the limit. */
static void
over_limit(const pg_uuid_t *tenant, const char *setting, int limit, const char *source)
{
	schedphi_audit_deny(tenant, SCHEDPHI_RATE_LIMITED, psprintf("rate limit exceeded: %s", setting),
						source[0] ? psprintf("The limit is %d, set for %s by a superuser.", limit, source) :
						psprintf("The limit is %d; it is set by a superuser.", limit), NULL);
}

/* Refuse: the table that counts is full (fail closed). */
static void
tracking_full(const pg_uuid_t *tenant, const char *setting)
{
	schedphi_audit_deny(tenant, SCHEDPHI_RATE_LIMITED, psprintf("rate limit exceeded: %s", setting),
						"The server counts no more actors or patients in this window.",
						"The DBA raises it (server start) or lowers the limits.");
}

PG_FUNCTION_INFO_V1(schedphi_note_lookup);

/* _note_lookup(tenant uuid, actor text) -> void: one find_patient call. */
Datum
schedphi_note_lookup(PG_FUNCTION_ARGS)
{
	RateShared *rs = rate_shared();
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	const Limits *lim = limits_for(tenant);
	uint32		minute = (uint32) (timestamptz_to_time_t(GetCurrentTimestamp()) / 60);
	RateEntry  *e;
	bool		over;

	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	e = rate_entry(&rs->lookups, actor_key(tenant, PG_GETARG_TEXT_PP(1)), minute, true);
	over = e != NULL && e->count >= lim->lookups;
	if (e != NULL && !over)
		e->count++;
	LWLockRelease(rs->lock);
	if (e == NULL)
		tracking_full(tenant, "too many actors looking patients up at once");
	if (over)
		over_limit(tenant, "schedphi.lookup_rate_limit", lim->lookups, lim->lookups_set ? lim->source : "");
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(schedphi_note_reveal);

/*
 * _note_reveal(tenant uuid, actor text, patient uuid) -> boolean (true):
 * the actor is about to decrypt this patient's data.  A patient already
 * revealed this hour does not count again.
 */
Datum
schedphi_note_reveal(PG_FUNCTION_ARGS)
{
	RateShared *rs = rate_shared();
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	pg_uuid_t  *patient = PG_GETARG_UUID_P(2);
	const Limits *lim = limits_for(tenant);
	uint32		hour = (uint32) (timestamptz_to_time_t(GetCurrentTimestamp()) / 3600);
	uint64		actor = actor_key(tenant, PG_GETARG_TEXT_PP(1));
	uint64		pair = actor ^ hash_bytes_extended(patient->data, UUID_LEN, 2);
	const char *full = NULL;
	bool		over = false;

	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	if (rate_entry(&rs->revealed, pair, hour, false) == NULL)
	{
		RateEntry  *count = rate_entry(&rs->reveals, actor, hour, true);

		if (count == NULL)
			full = "too many actors reading patient data at once";
		else if (count->count >= lim->reveals)
			over = true;
		else if (rate_entry(&rs->revealed, pair, hour, true) == NULL)
			full = "schedphi.reveal_tracking_size";
		else
			count->count++;
	}
	LWLockRelease(rs->lock);
	if (full != NULL)
		tracking_full(tenant, full);
	if (over)
		over_limit(tenant, "schedphi.reveal_rate_limit", lim->reveals, lim->reveals_set ? lim->source : "");
	schedphi_audit_note_patient(tenant, patient);
	PG_RETURN_BOOL(true);
}

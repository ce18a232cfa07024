/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Per-actor rate limits in shared memory.
 *
 * schedphi.lookup_rate_limit: find_patient calls per actor per minute.
 * schedphi.reveal_rate_limit: distinct patients whose PHI an actor decrypts
 * per hour.  Both superuser-only: nobody raises their own.  Beyond a limit
 * the call fails with SP429 naming the limit.
 *
 * The table has a fixed number of actor slots (an actor is the tenant and
 * the token subject or login); each holds a fixed-window lookup counter and
 * an exact set of the patients revealed this hour (hashes, open
 * addressing).  When every slot is taken, the one idle longest is reused.
 * One LWLock guards the table: every operation is a few memory accesses.
 * The table needs shared_preload_libraries; without it the limits cannot be
 * kept, and the operations they guard refuse to run (fail closed).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "schedphi.h"

#define RL_SLOTS		256
#define RL_SET_SIZE		8192	/* power of two, > 2 x the largest reveal limit */
#define RL_MAX_REVEAL	4000

typedef struct RateSlot
{
	uint64		actor;			/* hash of tenant and actor; 0 = free */
	int64		last_used;		/* seconds */
	int64		lookup_window;	/* minute number */
	int32		lookups;
	int64		reveal_window;	/* hour number */
	int32		reveals;
	uint32		revealed[RL_SET_SIZE];	/* patient hashes, 0 = empty */
} RateSlot;

typedef struct RateTable
{
	LWLock	   *lock;
	RateSlot	slots[RL_SLOTS];
} RateTable;

int			schedphi_lookup_rate_limit = 120;
int			schedphi_reveal_rate_limit = 2000;

static RateTable *table = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
ratelimit_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RateTable)));
	RequestNamedLWLockTranche("schedphi_ratelimit", 1);
}

static void
ratelimit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	table = ShmemInitStruct("schedphi rate limits", sizeof(RateTable), &found);
	if (!found)
	{
		memset(table, 0, sizeof(RateTable));
		table->lock = &(GetNamedLWLockTranche("schedphi_ratelimit"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
schedphi_ratelimit_init(void)
{
	DefineCustomIntVariable("schedphi.lookup_rate_limit",
							"find_patient calls an actor may make per minute.",
							NULL, &schedphi_lookup_rate_limit, 120, 1, 100000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("schedphi.reveal_rate_limit",
							"Distinct patients whose data an actor may decrypt per hour.",
							NULL, &schedphi_reveal_rate_limit, 2000, 1, RL_MAX_REVEAL,
							PGC_SUSET, 0, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ratelimit_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ratelimit_shmem_startup;
}

static RateTable *
rate_table(void)
{
	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("schedphi rate limits are not available"),
				 errdetail("Looking patients up and reading their data are rate-limited in shared memory."),
				 errhint("Add schedphi to shared_preload_libraries and restart the server.")));
	return table;
}

/* The slot of an actor (tenant + name), taking over the idlest if new. */
static RateSlot *
find_slot(RateTable *t, const pg_uuid_t *tenant, const char *actor, int64 now)
{
	uint64		key = hash_bytes_extended(tenant->data, UUID_LEN, 0) ^
		hash_bytes_extended((const unsigned char *) actor, (int) strlen(actor), 1);
	RateSlot   *idlest = NULL;

	if (key == 0)
		key = 1;
	for (int i = 0; i < RL_SLOTS; i++)
	{
		RateSlot   *s = &t->slots[i];

		if (s->actor == key)
		{
			s->last_used = now;
			return s;
		}
		if (idlest == NULL || s->last_used < idlest->last_used)
			idlest = s;
	}
	memset(idlest, 0, sizeof(RateSlot));
	idlest->actor = key;
	idlest->last_used = now;
	return idlest;
}

/* Refuse: recorded in the audit log, then SP429 naming the limit. */
static void
over_limit(const pg_uuid_t *tenant, const char *setting, int limit)
{
	schedphi_audit_deny(tenant, SCHEDPHI_RATE_LIMITED, psprintf("rate limit exceeded: %s", setting),
						psprintf("The limit is %d; it is set by a superuser.", limit), NULL);
}

PG_FUNCTION_INFO_V1(schedphi_note_lookup);

/* _note_lookup(tenant uuid, actor text) -> void: one find_patient call. */
Datum
schedphi_note_lookup(PG_FUNCTION_ARGS)
{
	RateTable  *t = rate_table();
	int64		now = (int64) timestamptz_to_time_t(GetCurrentTimestamp());
	RateSlot   *s;
	bool		over;

	LWLockAcquire(t->lock, LW_EXCLUSIVE);
	s = find_slot(t, PG_GETARG_UUID_P(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), now);
	if (s->lookup_window != now / 60)
	{
		s->lookup_window = now / 60;
		s->lookups = 0;
	}
	over = s->lookups >= schedphi_lookup_rate_limit;
	if (!over)
		s->lookups++;
	LWLockRelease(t->lock);
	if (over)
		over_limit(PG_GETARG_UUID_P(0), "schedphi.lookup_rate_limit", schedphi_lookup_rate_limit);
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
	RateTable  *t = rate_table();
	int64		now = (int64) timestamptz_to_time_t(GetCurrentTimestamp());
	pg_uuid_t  *patient = PG_GETARG_UUID_P(2);
	uint32		h = hash_bytes(patient->data, UUID_LEN);
	RateSlot   *s;
	bool		over = false;
	uint32		pos;

	if (h == 0)
		h = 1;
	LWLockAcquire(t->lock, LW_EXCLUSIVE);
	s = find_slot(t, PG_GETARG_UUID_P(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), now);
	if (s->reveal_window != now / 3600)
	{
		s->reveal_window = now / 3600;
		s->reveals = 0;
		memset(s->revealed, 0, sizeof(s->revealed));
	}
	for (pos = h & (RL_SET_SIZE - 1); s->revealed[pos] != 0 && s->revealed[pos] != h;
		 pos = (pos + 1) & (RL_SET_SIZE - 1))
		;
	if (s->revealed[pos] == 0)
	{
		if (s->reveals >= schedphi_reveal_rate_limit)
			over = true;
		else
		{
			s->revealed[pos] = h;
			s->reveals++;
		}
	}
	LWLockRelease(t->lock);
	if (over)
		over_limit(PG_GETARG_UUID_P(0), "schedphi.reveal_rate_limit", schedphi_reveal_rate_limit);
	schedphi_audit_note_patient(PG_GETARG_UUID_P(0), patient);
	PG_RETURN_BOOL(true);
}

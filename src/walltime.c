/*-------------------------------------------------------------------------
 *
 * walltime.c
 *	  Wall-clock time at a location to an instant, with deliberate DST rules.
 *
 * Availability is weekly wall-clock time at a location ("09:00-17:00"), so
 * each day's window is found by reading a local date and time in the
 * location's IANA zone.  Most local times name exactly one instant; around
 * a DST change some name none or two.  schedphi reads a window as running
 * from the first instant the clock shows its start to the last instant
 * the clock shows its end:
 *
 *	 - a time in the spring-forward gap (02:30 in New York on the second
 *	   Sunday of March) is the instant of the change itself, when the clock
 *	   jumps from 02:00 to 03:00: a window opening at 02:30 opens at 03:00
 *	   daylight time, one closing at 02:30 closes at that same instant;
 *	 - a time in the fall-back repeat (01:30 on the first Sunday of
 *	   November) is its first occurrence when it starts a window and its
 *	   second when it ends one, so 00:00-04:00 on that night is five hours.
 *
 * The weekly rules are expanded into windows here too (for slots.c and
 * book.c), from a per-backend cache of the rules that a generation counter
 * in shared memory invalidates whenever a change of availability or of a
 * location commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rangetypes.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "common.h"
#include "walltime.h"

static TimestampTz wall_to_instant_slow(Timestamp local, const pg_tz *tz, bool early);

/* UTC offset in seconds in force at an instant. */
static long
offset_at(TimestampTz t, const pg_tz *tz)
{
	pg_time_t	tt = timestamptz_to_time_t(t);
	struct pg_tm *tm = pg_localtime(&tt, tz);

	if (tm == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return tm->tm_gmtoff;
}

/*
 * The instant at which local time `local` (microseconds since 2000-01-01 on
 * the wall clock) occurs in zone tz; `early` picks the first of two
 * occurrences, otherwise the last.  Assumes at most one UTC-offset change
 * within 26 hours of the time, which holds for every IANA zone.
 */
TimestampTz
schedphi_wall_to_instant(Timestamp local, const pg_tz *tz, bool early)
{
	pg_time_t	from = timestamptz_to_time_t(local - 26 * USECS_PER_HOUR);
	pg_time_t	boundary;
	long		before_off,
				after_off;
	int			before_dst,
				after_dst;
	int			found = pg_next_dst_boundary(&from, &before_off, &before_dst, &boundary,
											 &after_off, &after_dst, tz);

	/*
	 * Almost always the offset does not change within 26 hours either side:
	 * then the time names exactly one instant.  Otherwise, work it out.
	 */
	if (found == 0 ||
		(found == 1 && boundary > timestamptz_to_time_t(local + 26 * USECS_PER_HOUR)))
		return local - (int64) before_off * USECS_PER_SEC;
	return wall_to_instant_slow(local, tz, early);
}

/* The general case, around an offset change. */
static TimestampTz
wall_to_instant_slow(Timestamp local, const pg_tz *tz, bool early)
{
	long		oa = offset_at(local - 26 * USECS_PER_HOUR, tz);
	long		ob = offset_at(local + 26 * USECS_PER_HOUR, tz);
	TimestampTz ca = local - (int64) oa * USECS_PER_SEC;
	TimestampTz cb = local - (int64) ob * USECS_PER_SEC;
	bool		va = offset_at(ca, tz) == oa;
	bool		vb = offset_at(cb, tz) == ob;
	TimestampTz lo,
				hi;

	if (va && vb)
		return early ? Min(ca, cb) : Max(ca, cb);
	if (va)
		return ca;
	if (vb)
		return cb;

	/*
	 * In a gap: the change happens in (min, max]; find the first second at
	 * which the later offset is in force.
	 */
	lo = Min(ca, cb) / USECS_PER_SEC;
	hi = Max(ca, cb) / USECS_PER_SEC;
	while (lo + 1 < hi)
	{
		TimestampTz mid = lo + (hi - lo) / 2;

		if (offset_at(mid * USECS_PER_SEC, tz) == ob)
			hi = mid;
		else
			lo = mid;
	}
	return hi * USECS_PER_SEC;
}

PG_FUNCTION_INFO_V1(schedphi_wall_instant);

/*
 * _wall_to_instant(local timestamp, zone text, early boolean) -> timestamptz
 * Strict: NULL in, NULL out.
 */
Datum
schedphi_wall_instant(PG_FUNCTION_ARGS)
{
	Timestamp	local = PG_GETARG_TIMESTAMP(0);
	char	   *zone = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		early = PG_GETARG_BOOL(2);
	pg_tz	   *tz = pg_tzset(zone);

	if (tz == NULL)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("unknown time zone")));
	if (TIMESTAMP_NOT_FINITE(local))
		PG_RETURN_TIMESTAMPTZ(local);
	PG_RETURN_TIMESTAMPTZ(schedphi_wall_to_instant(local, tz, early));
}

/* ------------------------------------------------- availability windows */

/* One weekly availability rule, as read from the catalog. */
typedef struct Rule
{
	pg_uuid_t	actor;
	bool		days[8];		/* [1..7]: ISO day of week */
	TimeADT		starts;
	TimeADT		ends;
	bool		has_from,
				has_until;
	DateADT		valid_from;		/* inclusive */
	DateADT		valid_until;	/* exclusive */
	int32		slot_minutes;
	char	   *zone;
} Rule;

/*
 * The generation of the rules, in shared memory (preloaded only): every
 * backend's cache is valid while it stays the same.
 */
typedef struct RulesShared
{
	pg_atomic_uint64 rules_generation;	/* bumped when availability or a zone changes */
	pg_atomic_uint64 waitlist_generation;	/* bumped when a waitlist entry starts waiting */
} RulesShared;

static RulesShared *rules_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Ask for the shared generation counter (preloaded only). */
static void
rules_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RulesShared)));
}

/* Find or make the shared generation counter; it starts at 1. */
static void
rules_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rules_shared = ShmemInitStruct("schedphi rules", sizeof(RulesShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&rules_shared->rules_generation, 1);
		pg_atomic_init_u64(&rules_shared->waitlist_generation, 1);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Availability rules and the zones of their locations are cached per
 * backend (below) under the generation that follows, bumped at the commit
 * of any change.  A transaction that changes them reads them from the catalog
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
	if (rules_shared == NULL || rules_changed || XactIsoLevel != XACT_READ_COMMITTED)
		return 0;
	return pg_atomic_read_u64(&rules_shared->rules_generation);
}

/*
 * The same for the waitlist: book.c remembers which tenants have no entry
 * waiting (a booking then need not look for one to serve) while this
 * version stays the same; a transaction that makes an entry wait bumps it
 * at commit.
 */
static bool waitlist_changed = false;

uint64
schedphi_waitlist_version(void)
{
	if (rules_shared == NULL || waitlist_changed || XactIsoLevel != XACT_READ_COMMITTED)
		return 0;
	return pg_atomic_read_u64(&rules_shared->waitlist_generation);
}

PG_FUNCTION_INFO_V1(schedphi_waitlist_changed);

/* Row trigger on schedphi.waitlist, for an entry written as waiting. */
Datum
schedphi_waitlist_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("schedphi._waitlist_changed() must be called as a trigger")));
	waitlist_changed = true;
	return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple);
}

PG_FUNCTION_INFO_V1(schedphi_rules_changed);

/*
 * Statement trigger on schedphi.availability and schedphi.location, before
 * the change: stop using the cache in this transaction and, at its commit,
 * tell every backend that the rules they cached are stale.  Also called as
 * a function, _note_rules_changed(), by the functions that change them,
 * before they do: on Citus the trigger fires on the shard's node, and this
 * is how the coordinator, where find_slots runs, learns of it.
 */
Datum
schedphi_rules_changed(PG_FUNCTION_ARGS)
{
	rules_changed = true;
	if (CALLED_AS_TRIGGER(fcinfo))
		return PointerGetDatum(NULL);
	PG_RETURN_VOID();
}
/*
 * The end of a transaction that changed availability or locations: at
 * commit, every backend's cached rules become stale.
 */
static void
rules_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			/*
			 * Nothing runs here when a prepared transaction commits.  (On a
			 * Citus worker node nothing is cached: the shard's part of a
			 * coordinator's transaction may be prepared.)
			 */
			if (rules_changed && !schedphi_citus_internal_backend())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed schedphi availability or locations"),
						 errhint("Change availability and locations in a transaction that commits directly.")));
			if (waitlist_changed && !schedphi_citus_internal_backend())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that added to the schedphi waitlist"),
						 errhint("Add to the waitlist in a transaction that commits directly.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			rules_changed = false;
			waitlist_changed = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			if (rules_changed && rules_shared != NULL)
				pg_atomic_fetch_add_u64(&rules_shared->rules_generation, 1);
			if (waitlist_changed && rules_shared != NULL)
				pg_atomic_fetch_add_u64(&rules_shared->waitlist_generation, 1);
			rules_changed = false;
			waitlist_changed = false;
			break;
		default:
			break;
	}
}

/*
 * The rules of each (tenant, actor) this backend has read, while
 * schedphi_rules_version() stays the same: a booking or a search then
 * expands availability without a query.  An entry with no rules is kept
 * too (an actor without availability, or of another tenant).
 */
typedef struct RulesKey
{
	pg_uuid_t	tenant;
	pg_uuid_t	actor;
} RulesKey;

typedef struct RulesEntry
{
	RulesKey	key;
	int			nrules;
	Rule	   *rules;
} RulesEntry;

#define RULES_CACHE_MAX		4096	/* entries; beyond, start afresh */

static MemoryContext rules_cxt = NULL;
static HTAB *rules_cache = NULL;
static uint64 rules_cache_version = 0;

/* An empty cache for `version`. */
static void
rules_cache_reset(uint64 version)
{
	/* forget the old table first: if what follows fails, nothing points into freed memory */
	rules_cache = NULL;
	rules_cache_version = 0;
	rules_cache = schedphi_cache_table(&rules_cxt, "schedphi availability rules",
									   sizeof(RulesKey), sizeof(RulesEntry));
	rules_cache_version = version;
}

/*
 * The cached rules of every actor in `ids`, gathered into a new array, or
 * NULL if any of them is not cached.
 */
static Rule *
rules_from_cache(const pg_uuid_t *tenant, Datum *ids, int nids, int *nrules)
{
	RulesEntry **found = palloc(sizeof(RulesEntry *) * Max(nids, 1));
	Rule	   *rules;
	int			n = 0;

	for (int i = 0; i < nids; i++)
	{
		RulesKey	key;

		key.tenant = *tenant;
		key.actor = *DatumGetUUIDP(ids[i]);
		found[i] = hash_search(rules_cache, &key, HASH_FIND, NULL);
		if (found[i] == NULL)
			return NULL;
		n += found[i]->nrules;
	}
	rules = palloc(sizeof(Rule) * Max(n, 1));
	n = 0;
	for (int i = 0; i < nids; i++)
	{
		memcpy(&rules[n], found[i]->rules, sizeof(Rule) * found[i]->nrules);
		n += found[i]->nrules;
	}
	*nrules = n;
	return rules;
}

/* Keep the rules just read for every actor in `ids`, those without any too. */
static void
rules_to_cache(const pg_uuid_t *tenant, Datum *ids, int nids, const Rule *rules, int nrules)
{
	MemoryContext old;

	if (hash_get_num_entries(rules_cache) + nids > RULES_CACHE_MAX)
		rules_cache_reset(rules_cache_version);
	old = MemoryContextSwitchTo(rules_cxt);
	for (int i = 0; i < nids; i++)
	{
		RulesKey	key;
		RulesEntry *e;
		Rule	   *mine;
		int			n = 0;

		key.tenant = *tenant;
		key.actor = *DatumGetUUIDP(ids[i]);
		if (hash_search(rules_cache, &key, HASH_FIND, NULL) != NULL)
			continue;			/* the same actor twice in ids */

		/* everything first, then the entry: an error leaves no half-made one */
		for (int r = 0; r < nrules; r++)
			if (memcmp(rules[r].actor.data, key.actor.data, UUID_LEN) == 0)
				n++;
		mine = palloc(sizeof(Rule) * Max(n, 1));
		n = 0;
		for (int r = 0; r < nrules; r++)
			if (memcmp(rules[r].actor.data, key.actor.data, UUID_LEN) == 0)
			{
				mine[n] = rules[r];
				mine[n].zone = pstrdup(rules[r].zone);
				n++;
			}
		e = hash_search(rules_cache, &key, HASH_ENTER, NULL);
		e->nrules = n;
		e->rules = mine;
	}
	MemoryContextSwitchTo(old);
}

/* The availability rules of `actors` in `tenant`, from the catalog. */
static Rule *
rules_from_catalog(Datum tenant, Datum actors, int *nrules)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext callctx = CurrentMemoryContext;
	Oid			types[2] = {UUIDOID, UUIDARRAYOID};
	Datum		args[2] = {tenant, actors};
	Rule	   *rules;
	int			n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&plan,
					   "SELECT av.actor, av.days, av.starts, av.ends, lower(av.valid), upper(av.valid), "
					   "av.slot_minutes, l.timezone "
					   "FROM schedphi.availability av "
					   "JOIN schedphi.location l ON l.tenant = av.tenant AND l.id = av.location "
					   "WHERE av.tenant = $1 AND av.actor = ANY ($2) AND NOT isempty(av.valid)", 2, types);
	if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: availability query failed");
	MemoryContextSwitchTo(callctx);
	n = (int) SPI_processed;
	rules = palloc0(sizeof(Rule) * Max(n, 1));
	for (int r = 0; r < n; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Rule	   *rule = &rules[r];
		bool		isnull;
		ArrayType  *days;
		Datum	   *elems;
		bool	   *nulls;
		int			ndays;
		Datum		d;

		rule->actor = *DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull));
		days = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 2, &isnull));
		deconstruct_array(days, INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, &ndays);
		for (int i = 0; i < ndays; i++)
		{
			int32		day = DatumGetInt32(elems[i]);

			if (!nulls[i] && day >= 1 && day <= 7)
				rule->days[day] = true;
		}
		rule->starts = DatumGetTimeADT(SPI_getbinval(tup, desc, 3, &isnull));
		rule->ends = DatumGetTimeADT(SPI_getbinval(tup, desc, 4, &isnull));
		d = SPI_getbinval(tup, desc, 5, &isnull);
		rule->has_from = !isnull;
		rule->valid_from = isnull ? 0 : DatumGetDateADT(d);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		rule->has_until = !isnull;
		rule->valid_until = isnull ? 0 : DatumGetDateADT(d);
		rule->slot_minutes = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		rule->zone = TextDatumGetCString(SPI_getbinval(tup, desc, 8, &isnull));
	}
	SPI_finish();
	*nrules = n;
	return rules;
}

/* The local date, in zone tz, of an instant. */
static DateADT
local_date(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/*
 * Expand the availability rules of `actors` (a uuid[] datum without NULLs)
 * in `tenant` into the daily windows that overlap [wlo, whi), each day read
 * in the rule's location's zone with the rules above, and hand each to `cb`
 * (unordered), in the caller's memory context.  The rules come from this
 * backend's cache when schedphi_rules_version() allows, otherwise from one
 * query through SPI (nesting is fine).
 */
void
schedphi_expand_windows(Datum tenant, Datum actors, TimestampTz wlo, TimestampTz whi,
						schedphi_window_cb cb, void *arg)
{
	Rule	   *rules = NULL;
	int			nrules = 0;
	uint64		version;
	Datum	   *ids = NULL;
	bool	   *idnulls;
	int			nids = 0;

	if (TIMESTAMP_NOT_FINITE(wlo) || TIMESTAMP_NOT_FINITE(whi) || wlo >= whi)
		return;

	/* read the version before the rules: a change committed meanwhile bumps it */
	version = schedphi_rules_version();
	if (version != 0)
	{
		deconstruct_array(DatumGetArrayTypeP(actors), UUIDOID, UUID_LEN, false, TYPALIGN_CHAR,
						  &ids, &idnulls, &nids);
		for (int i = 0; i < nids; i++)
			if (idnulls[i])
				version = 0;
	}
	if (version != 0)
	{
		if (rules_cache == NULL || rules_cache_version != version)
			rules_cache_reset(version);
		rules = rules_from_cache(DatumGetUUIDP(tenant), ids, nids, &nrules);
	}
	if (rules == NULL)
	{
		rules = rules_from_catalog(tenant, actors, &nrules);
		if (version != 0)
			rules_to_cache(DatumGetUUIDP(tenant), ids, nids, rules, nrules);
	}

	for (int r = 0; r < nrules; r++)
	{
		Rule	   *rule = &rules[r];
		pg_tz	   *tz = pg_tzset(rule->zone);
		DateADT		first,
					last;

		if (tz == NULL)
			ereport(ERROR,
					(errcode(SCHEDPHI_BAD_ARGUMENT),
					 errmsg("unknown time zone")));
		first = local_date(wlo, tz) - 1;
		last = local_date(whi, tz);
		for (DateADT day = first; day <= last; day++)
		{
			int			dow = j2day(day + POSTGRES_EPOCH_JDATE);
			TimestampTz s,
						e;

			if (!rule->days[dow == 0 ? 7 : dow])
				continue;
			if ((rule->has_from && !DATE_NOT_FINITE(rule->valid_from) && day < rule->valid_from) ||
				(rule->has_from && DATE_IS_NOEND(rule->valid_from)) ||
				(rule->has_until && !DATE_NOT_FINITE(rule->valid_until) && day >= rule->valid_until) ||
				(rule->has_until && DATE_IS_NOBEGIN(rule->valid_until)))
				continue;
			s = schedphi_wall_to_instant((Timestamp) day * USECS_PER_DAY + rule->starts, tz, true);
			e = schedphi_wall_to_instant((Timestamp) day * USECS_PER_DAY + rule->ends, tz, false);
			if (s < whi && e > wlo && s < e)
				cb(arg, &rule->actor, s, e, rule->slot_minutes);
		}
	}
}

/* _windows' callback: one row of the result. */
static void
window_row(void *arg, const pg_uuid_t *actor, TimestampTz s, TimestampTz e, int32 slot_minutes)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) arg;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = UUIDPGetDatum(actor);
	values[1] = TimestampTzGetDatum(s);
	values[2] = TimestampTzGetDatum(e);
	values[3] = Int32GetDatum(slot_minutes);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

PG_FUNCTION_INFO_V1(schedphi_windows);

/*
 * _windows(tenant uuid, actors uuid[], window tstzrange)
 *	 -> table(actor uuid, starts timestamptz, ends timestamptz, slot_minutes int)
 * Strict.  schedphi_expand_windows as a set-returning function.  An
 * unbounded or empty window has no windows.
 */
Datum
schedphi_windows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RangeType  *win = PG_GETARG_RANGE_P(2);
	TypeCacheEntry *typcache = range_get_typcache(fcinfo, RangeTypeGetOid(win));
	RangeBound	lo,
				hi;
	bool		empty;

	InitMaterializedSRF(fcinfo, 0);
	range_deserialize(typcache, win, &lo, &hi, &empty);
	if (empty || lo.infinite || hi.infinite)
		return (Datum) 0;
	schedphi_expand_windows(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), DatumGetTimestampTz(lo.val),
							DatumGetTimestampTz(hi.val), window_row, rsinfo);
	return (Datum) 0;
}

/* The transaction callback and, when preloaded, the shared generation. */
void
schedphi_rules_init(void)
{
	RegisterXactCallback(rules_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rules_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rules_shmem_startup;
}

/*-------------------------------------------------------------------------
 *
 * book.c
 *	  The booking path in C: book() and hold().
 *
 * schedphi._create_appointment (PL/pgSQL, src/sql/50_scheduling.sql) is the
 * reference: it checks every argument, the caller, the actors, availability
 * and blocks, takes the per-actor-day locks, chooses seats and writes the
 * rows, raising the documented error for each thing that is wrong.  This
 * file does the same for the common case in a handful of statements
 * instead of a few dozen, and hands every other case to the reference,
 * which then raises exactly the error it always raised:
 *
 *	 - an argument that is NULL, out of range or otherwise odd, an
 *	   isolation level above READ COMMITTED, a caller
 *	   this file cannot clear from its caches (a superuser, someone without
 *	   the role): the reference does everything, from the start;
 *	 - an unknown patient or actor, an actor not available or blocked:
 *	   the reference starts again from scratch (nothing was written yet);
 *	 - a seat missing: schedphi._raise_conflict names the clashes;
 *	 - an idempotency key: schedphi._request_digest and _idempotent, as the
 *	   reference calls them (a retry gets the first booking's id, a key
 *	   used for something else 22023), and the appointment written first,
 *	   ON CONFLICT DO NOTHING and before the locks, as the reference does,
 *	   so that calls with one key racing on both paths cannot deadlock.
 *
 * The actors' seats and buffers come from a per-backend cache once booked
 * (see ActorEntry).  The common write (every actor single-seated, no key)
 * is one statement in a subtransaction that checks only the blocks; the
 * exclusion constraint and the foreign keys refuse a seat taken or a
 * patient of another tenant, and a refused write is undone alone before
 * the careful path (or the reference) looks at why.
 *
 * The exclusion constraint on appointment_actor remains the guarantee
 * against double booking whatever happens here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rangetypes.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "actor.h"
#include "common.h"
#include "membership.h"
#include "walltime.h"

#define MAX_ACTORS		50
#define MAX_REASON		2000
#define MAX_KEY			200
#define UNIX_EPOCH_USECS	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

static void appointment_uuid(pg_uuid_t *id);

typedef struct BookActor
{
	pg_uuid_t	id;
	int32		capacity;
	bool		found;
	bool		blocked;
	TimestampTz span_lo;		/* the time widened by the actor's buffers */
	TimestampTz span_hi;
	TimestampTz covered;		/* availability sweep: covered up to here */
	int32		seat;			/* chosen seat, 0 while none */
	bool	   *busy;			/* [capacity]: seats taken during the span */
} BookActor;

typedef struct BookWindow
{
	int			actor;
	TimestampTz lo;
	TimestampTz hi;
} BookWindow;

typedef struct BookRequest
{
	Datum		patient;
	Datum		actors;			/* as given */
	Datum		during;			/* as given */
	Datum		status;
	Datum		kind;			/* as given */
	Datum		reason;
	Datum		key;
	Datum		hold_expires;
	bool		isnull[8];
} BookRequest;

static SPIPlanPtr fallback_plan = NULL;
static SPIPlanPtr insert_if_free_plan = NULL;
static SPIPlanPtr insert_if_free_unwaited_plan = NULL;
static SPIPlanPtr waiting_plan = NULL;
static SPIPlanPtr lookup_plan = NULL;
static SPIPlanPtr seats_plan = NULL;
static SPIPlanPtr expire_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_key_plan = NULL;
static SPIPlanPtr insert_key_rows_plan = NULL;
static SPIPlanPtr digest_plan = NULL;
static SPIPlanPtr idempotent_plan = NULL;
static SPIPlanPtr conflict_plan = NULL;
static SPIPlanPtr ehr_actors_plan = NULL;
static SPIPlanPtr ehr_rows_plan = NULL;

/*
 * Requests handed to the reference in this backend, and requests (book,
 * hold, an EHR's seats) whose actors came from the cache (for the tests).
 */
static uint64 book_fallbacks = 0;
static uint64 book_cached = 0;

static const char *const kinds[] = {"routine", "followup", "walkin", "checkup", "emergency"};

static int
uuid_order(const void *a, const void *b)
{
	return memcmp(((const BookActor *) a)->id.data, ((const BookActor *) b)->id.data, UUID_LEN);
}

static int
window_order(const void *a, const void *b)
{
	const BookWindow *x = a,
			   *y = b;

	if (x->actor != y->actor)
		return x->actor < y->actor ? -1 : 1;
	return x->lo < y->lo ? -1 : (x->lo > y->lo ? 1 : 0);
}

static int
find_actor(BookActor *actors, int n, const pg_uuid_t *id)
{
	int			lo = 0,
				hi = n - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			c = memcmp(id->data, actors[mid].id.data, UUID_LEN);

		if (c == 0)
			return mid;
		if (c < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return -1;
}

/* The reference implementation, for every case this file does not take. */
static Datum
book_reference(const BookRequest *r)
{
	Oid			types[8] = {UUIDOID, UUIDARRAYOID, TSTZRANGEOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TIMESTAMPTZOID};
	Datum		values[8] = {r->patient, r->actors, r->during, r->status, r->kind, r->reason,
	r->key, r->hold_expires};
	char		nulls[8];
	bool		isnull;
	Datum		d;

	book_fallbacks++;
	for (int i = 0; i < 8; i++)
		nulls[i] = r->isnull[i] ? 'n' : ' ';
	schedphi_keep_plan(&fallback_plan,
					   "SELECT schedphi._create_appointment($1, $2, $3, $4, $5, $6, $7, $8)",
					   8, types);
	if (SPI_execute_plan(fallback_plan, values, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi: booking failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "schedphi: booking returned no appointment");
	return d;
}

/*
 * An appointment kind spelled exactly as one of the five; else NULL (the
 * reference lower-cases it with the database's rules and decides).
 */
static const char *
known_kind(text *t)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	for (size_t i = 0; i < lengthof(kinds); i++)
		if (strlen(kinds[i]) == (size_t) len && memcmp(s, kinds[i], len) == 0)
			return kinds[i];
	return NULL;
}

/* Collects the availability windows of the actors being booked. */
typedef struct WindowList
{
	BookActor  *actors;
	int			nactors;
	BookWindow *w;
	int			n;
	int			cap;
} WindowList;

static void
collect_window(void *arg, const pg_uuid_t *actor, TimestampTz s, TimestampTz e, int32 slot_minutes)
{
	WindowList *wl = arg;
	int			i = find_actor(wl->actors, wl->nactors, actor);

	if (i < 0)
		return;
	if (wl->n == wl->cap)
	{
		wl->cap = wl->cap ? wl->cap * 2 : 16;
		wl->w = wl->w ? repalloc(wl->w, sizeof(BookWindow) * wl->cap) : palloc(sizeof(BookWindow) * wl->cap);
	}
	wl->w[wl->n].actor = i;
	wl->w[wl->n].lo = s;
	wl->w[wl->n].hi = e;
	wl->n++;
}

/*
 * Is every actor available for the whole of [lo, hi)?  The union of its
 * windows must cover it, as range_agg(...) @> during does in the reference.
 */
static bool
all_available(Datum tenant, Datum actors_sorted, BookActor *actors, int n, TimestampTz lo, TimestampTz hi)
{
	WindowList	wl = {actors, n, NULL, 0, 0};

	schedphi_expand_windows(tenant, actors_sorted, lo, hi, collect_window, &wl);
	if (wl.n > 1)
		qsort(wl.w, wl.n, sizeof(BookWindow), window_order);
	for (int i = 0; i < n; i++)
		actors[i].covered = lo;
	for (int i = 0; i < wl.n; i++)
	{
		BookActor  *a = &actors[wl.w[i].actor];

		if (wl.w[i].lo <= a->covered && wl.w[i].hi > a->covered)
			a->covered = wl.w[i].hi;
	}
	for (int i = 0; i < n; i++)
		if (actors[i].covered < hi)
			return false;
	return true;
}

/* floor(epoch seconds / 86400) of an instant, as the reference computes it. */
static int32
unix_day(TimestampTz t)
{
	int64		u = t + UNIX_EPOCH_USECS;
	int64		d = u / USECS_PER_DAY;

	if (u < 0 && d * USECS_PER_DAY != u)
		d--;
	return (int32) d;
}

/*
 * The locks that serialise bookings that could clash: one per actor and
 * UTC day its span touches, in actor then day order, with the keys of the
 * reference (hashtext('schedphi.actor.' || id), day), which the other
 * booking paths take too.
 */
static void
lock_actor_days(BookActor *actors, int n)
{
	for (int i = 0; i < n; i++)
	{
		char		key[64];
		int32		h;

		snprintf(key, sizeof(key), "schedphi.actor.%s",
				 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&actors[i].id))));
		h = (int32) DatumGetUInt32(hash_any((const unsigned char *) key, strlen(key)));
		for (int32 d = unix_day(actors[i].span_lo); d <= unix_day(actors[i].span_hi); d++)
			DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(h), Int32GetDatum(d));
	}
}

static Datum
make_tstzrange(TypeCacheEntry *tc, TimestampTz lo, TimestampTz hi)
{
	RangeBound	l = {.val = TimestampTzGetDatum(lo), .infinite = false, .inclusive = true, .lower = true};
	RangeBound	u = {.val = TimestampTzGetDatum(hi), .infinite = false, .inclusive = false, .lower = false};

	return RangeTypePGetDatum(make_range(tc, &l, &u, false));
}

/* Has every actor a single seat? */
static bool
all_single_seated(const BookActor *actors, int n)
{
	for (int i = 0; i < n; i++)
		if (actors[i].capacity != 1)
			return false;
	return true;
}

/*
 * Which seats are taken during each actor's span?  Returns whether an
 * expired hold is in the way (the caller deactivates those and asks again).
 */
static bool
taken_seats(Datum tenant, Datum ids, Datum spans, BookActor *actors, int n)
{
	Oid			types[3] = {UUIDOID, UUIDARRAYOID, TSTZRANGEARRAYOID};
	Datum		values[3] = {tenant, ids, spans};
	bool		expired_seen = false;

	/*
	 * Actor by actor (LATERAL, not flattened): a join of all of them could
	 * be planned, while the table was nearly empty, as a scan of the
	 * tenant's every booking; this plan reads each actor's bookings in the
	 * span only, however few rows there were when it was made.
	 */
	schedphi_keep_plan(&seats_plan,
					   "SELECT x.actor, x.seat, x.expires IS NOT NULL AND x.expires <= statement_timestamp() "
					   "FROM unnest($2, $3) AS u(id, span) "
					   "CROSS JOIN LATERAL (SELECT y.actor, y.seat, y.expires FROM schedphi.appointment_actor y "
					   "WHERE y.tenant = $1 AND y.actor = u.id AND y.active AND y.span && u.span OFFSET 0) x",
					   3, types);
	if (SPI_execute_plan(seats_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: seat query failed");
	for (int i = 0; i < n; i++)
		memset(actors[i].busy, 0, sizeof(bool) * actors[i].capacity);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		n1,
					n2,
					n3;
		Datum		actor = SPI_getbinval(tup, desc, 1, &n1);
		int32		seat = DatumGetInt32(SPI_getbinval(tup, desc, 2, &n2));
		bool		expired = DatumGetBool(SPI_getbinval(tup, desc, 3, &n3));
		int			i = n1 ? -1 : find_actor(actors, n, DatumGetUUIDP(actor));

		if (expired)
			expired_seen = true;
		else if (i >= 0 && seat >= 1 && seat <= actors[i].capacity)
			actors[i].busy[seat - 1] = true;
	}
	return expired_seen;
}

/*
 * What a booking needs of each actor (its tenant, seats and buffers), kept
 * per backend while schedphi_rules_version() stays the same: a change to
 * schedphi.actor bumps it as a change to availability does (the
 * rules_changed trigger).  An actor whose entry is here is booked without
 * the lookup query; the write then checks what that query would have (no
 * block; the patient in the actor's tenant by the foreign key), and
 * anything amiss goes to the reference, which says what.
 */
typedef struct ActorEntry
{
	pg_uuid_t	id;				/* key */
	pg_uuid_t	tenant;
	int32		capacity;
	Interval	buffer_before;
	Interval	buffer_after;
} ActorEntry;

#define ACTOR_CACHE_MAX		8192	/* entries; beyond, start afresh */

static MemoryContext actor_cxt = NULL;
static HTAB *actor_cache = NULL;
static uint64 actor_cache_version = 0;

/* The cache for `version`, emptied if it was for another one or is full. */
static HTAB *
actor_cache_for(uint64 version)
{
	if (actor_cache != NULL && actor_cache_version == version &&
		hash_get_num_entries(actor_cache) < ACTOR_CACHE_MAX)
		return actor_cache;
	actor_cache = NULL;
	actor_cache = schedphi_cache_table(&actor_cxt, "schedphi booking actors",
									   sizeof(pg_uuid_t), sizeof(ActorEntry));
	actor_cache_version = version;
	return actor_cache;
}

/*
 * The tenants with no waitlist entry waiting, and those with one, as this
 * backend last saw them, while schedphi_waitlist_version() stays the same
 * (an entry that starts waiting, by any path, bumps it at commit).
 */
typedef struct WaitingEntry
{
	pg_uuid_t	tenant;			/* key */
	bool		waiting;
} WaitingEntry;

static MemoryContext waiting_cxt = NULL;
static HTAB *waiting_cache = NULL;
static uint64 waiting_cache_version = 0;

/* Has the tenant a waitlist entry waiting?  (true when unsure) */
static bool
tenant_has_waiting(Datum tenant)
{
	uint64		version = schedphi_waitlist_version();	/* before the snapshot below */
	WaitingEntry *e;
	Oid			types[1] = {UUIDOID};
	bool		isnull;
	bool		waiting;

	if (version != 0 && waiting_cache != NULL && waiting_cache_version == version &&
		(e = hash_search(waiting_cache, DatumGetUUIDP(tenant), HASH_FIND, NULL)) != NULL)
		return e->waiting;
	schedphi_keep_plan(&waiting_plan,
					   "SELECT EXISTS (SELECT 1 FROM schedphi.waitlist w WHERE w.tenant = $1 AND w.status = 'waiting')",
					   1, types);
	if (SPI_execute_plan(waiting_plan, &tenant, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi: waitlist lookup failed");
	waiting = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		waiting = true;
	if (version == 0)
		return waiting;
	if (waiting_cache == NULL || waiting_cache_version != version ||
		hash_get_num_entries(waiting_cache) >= ACTOR_CACHE_MAX)
	{
		waiting_cache = NULL;
		waiting_cache = schedphi_cache_table(&waiting_cxt, "schedphi booking waitlist",
											 sizeof(pg_uuid_t), sizeof(WaitingEntry));
		waiting_cache_version = version;
	}
	e = hash_search(waiting_cache, DatumGetUUIDP(tenant), HASH_ENTER, NULL);
	e->waiting = waiting;
	return waiting;
}

/* The span of a booking [lo, hi) widened by an actor's buffers. */
static void
actor_span(BookActor *a, TimestampTz lo, TimestampTz hi, Interval *before, Interval *after)
{
	a->span_lo = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(lo),
														 IntervalPGetDatum(before)));
	a->span_hi = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(hi),
														 IntervalPGetDatum(after)));
}

/*
 * Every actor from the cache, all single-seated and of one tenant: fills
 * them in, sets *tenant and returns true; otherwise changes nothing that
 * the lookup does not set again, and returns false.
 */
static bool
actors_from_cache(BookActor *actors, int n, uint64 version, TimestampTz lo, TimestampTz hi, Datum *tenant)
{
	ActorEntry *entries[MAX_ACTORS];
	ActorEntry *first;

	if (version == 0 || actor_cache == NULL || actor_cache_version != version || n < 1 || n > MAX_ACTORS)
		return false;
	for (int i = 0; i < n; i++)
	{
		ActorEntry *e = hash_search(actor_cache, &actors[i].id, HASH_FIND, NULL);

		if (e == NULL || e->capacity != 1 ||
			(i > 0 && memcmp(e->tenant.data, entries[0]->tenant.data, UUID_LEN) != 0))
			return false;
		entries[i] = e;
	}
	first = entries[0];
	for (int i = 0; i < n; i++)
	{
		ActorEntry *e = entries[i];

		actors[i].found = true;
		actors[i].capacity = 1;
		actors[i].blocked = false;
		actor_span(&actors[i], lo, hi, &e->buffer_before, &e->buffer_after);
		actors[i].busy = palloc0(sizeof(bool));
	}
	*tenant = UUIDPGetDatum(palloc_object(pg_uuid_t));
	memcpy(DatumGetUUIDP(*tenant)->data, first->tenant.data, UUID_LEN);
	return true;
}

/* Remember an actor the lookup found, under `version` (0: nothing). */
static void
actor_remember(uint64 version, const BookActor *a, Datum tenant, Interval *before, Interval *after)
{
	ActorEntry *e;

	if (version == 0)
		return;
	e = hash_search(actor_cache_for(version), &a->id, HASH_ENTER, NULL);
	memcpy(e->tenant.data, DatumGetUUIDP(tenant)->data, UUID_LEN);
	e->capacity = a->capacity;
	e->buffer_before = *before;
	e->buffer_after = *after;
}

/*
 * The statements that write a booking.  Parameters: $1 tenant, $2 id,
 * $3 patient, $4 actors (sorted), $5 during, $6 status, $7 kind, $8 reason,
 * $9 hold expiry, $10 seats, $11 spans, $12 idempotency key, $13 request
 * digest.  Without a key, one statement writes the appointment, the waitlist
 * entry it serves and its actors' rows.  With a key, the appointment comes
 * first, as the reference writes it: ON CONFLICT DO NOTHING, before the
 * per-actor-day locks, so that two calls with one key, on either path,
 * settle who books on the key's unique index and never wait for each other
 * in the opposite order; the rest follows once the seats are chosen.
 */
#define WRITE_APPOINTMENT \
	"INSERT INTO schedphi.appointment (tenant, id, patient, actors, during, status, kind," \
	" reason, hold_expires, idempotency_key, request_digest)" \
	" VALUES ($1, $2, $3, $4, $5, $6, $7, schedphi._seal($1, 'appointment', 'reason', $2, $8), $9, $12, $13)"
#define WRITE_SERVED \
	"served AS (UPDATE schedphi.waitlist w SET status = 'booked'" \
	" WHERE $6 = 'booked' AND w.tenant = $1 AND w.status = 'waiting' AND w.patient = $3" \
	" AND w.actors <@ $4 AND w.wanted @> $5)"
#define WRITE_ROWS(appointment) \
	" INSERT INTO schedphi.appointment_actor (tenant, appointment, actor, seat, during, span, expires)" \
	" SELECT $1, " appointment ", u.id, u.seat, $5, u.span, $9"

static const char *const write_booking_sql =
"WITH ap AS (" WRITE_APPOINTMENT " RETURNING id), " WRITE_SERVED
WRITE_ROWS("ap.id") " FROM ap, unnest($4, $10, $11) AS u(id, seat, span)";
/*
 * Every actor single-seated and no key: the seats need no choosing, so
 * the booking is written in one statement, in a subtransaction, and the
 * exclusion constraint and the foreign keys decide: a seat taken (or an
 * expired hold still in the way), or a patient not of the actors' tenant,
 * fails the write, which is rolled back, and the careful path below (or,
 * for actors from the cache, the reference) then looks at what is in the
 * way and says what.  The statement itself checks only what no constraint
 * holds, the blocks, and writes nothing if one is in the way.  Looking for
 * the seat before writing, as this path once did, searched the exclusion
 * constraint's index twice per booking.  Run after the per-actor-day
 * locks.
 */
#define WRITE_IF_FREE \
"WITH free AS (SELECT NOT EXISTS (SELECT 1 FROM unnest($4) AS u(id) CROSS JOIN LATERAL (SELECT 1 FROM schedphi.block b" \
" WHERE b.tenant = $1 AND b.actor = u.id AND b.during && $5 LIMIT 1) b) AS ok), " \
"ap AS (INSERT INTO schedphi.appointment (tenant, id, patient, actors, during, status, kind," \
" reason, hold_expires, idempotency_key, request_digest)" \
" SELECT $1, $2, $3, $4, $5, $6, $7, schedphi._seal($1, 'appointment', 'reason', $2, $8), $9, $12, $13" \
" FROM free WHERE ok RETURNING id)"
static const char *const write_if_free_sql =
WRITE_IF_FREE ", "
"served AS (UPDATE schedphi.waitlist w SET status = 'booked'"
" WHERE $6 = 'booked' AND EXISTS (SELECT 1 FROM ap) AND w.tenant = $1 AND w.status = 'waiting'"
" AND w.patient = $3 AND w.actors <@ $4 AND w.wanted @> $5)"
WRITE_ROWS("ap.id") " FROM ap, unnest($4, $10, $11) AS u(id, seat, span)";
/* the same where no entry is waiting in the tenant (see tenant_has_waiting) */
static const char *const write_if_free_unwaited_sql =
WRITE_IF_FREE WRITE_ROWS("ap.id") " FROM ap, unnest($4, $10, $11) AS u(id, seat, span)";
static const char *const write_keyed_appointment_sql =
WRITE_APPOINTMENT " ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id";
static const char *const write_keyed_rows_sql =
"WITH " WRITE_SERVED WRITE_ROWS("$2") " FROM unnest($4, $10, $11) AS u(id, seat, span)";

/*
 * The one-statement write, in a subtransaction (see WRITE_IF_FREE): the
 * number of actors' rows it wrote, or -1 when the exclusion constraint or
 * a foreign key refused it (nothing of it remains, and the caller looks at
 * why).  Any other error is raised as it came.
 */
typedef struct BookWrite
{
	SPIPlanPtr	plan;
	Datum	   *values;
	const char *nulls;
	int64		written;
} BookWrite;

static void
book_write(void *arg)
{
	BookWrite  *w = (BookWrite *) arg;

	if (SPI_execute_plan(w->plan, w->values, w->nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "schedphi: could not write the booking");
	w->written = (int64) SPI_processed;
}

static int64
write_unless_refused(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	BookWrite	w = {plan, values, nulls, -1};

	if (!schedphi_in_subtransaction(book_write, &w, ERRCODE_EXCLUSION_VIOLATION,
									ERRCODE_FOREIGN_KEY_VIOLATION))
		return -1;
	return w.written;
}

/*
 * The actors of a request: 1..MAX_ACTORS distinct uuids, no NULL, sorted
 * by id (*n of them); NULL for anything else, which the reference judges.
 */
static BookActor *
sorted_actors(Datum actors_datum, int *n)
{
	ArrayType  *arr = DatumGetArrayTypeP(actors_datum);
	Datum	   *elems;
	bool	   *elemnulls;
	BookActor  *actors;

	if (ARR_NDIM(arr) != 1)
		return NULL;
	deconstruct_array(arr, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elems, &elemnulls, n);
	if (*n < 1 || *n > MAX_ACTORS)
		return NULL;
	actors = palloc0(sizeof(BookActor) * *n);
	for (int i = 0; i < *n; i++)
	{
		if (elemnulls[i])
			return NULL;
		memcpy(actors[i].id.data, DatumGetPointer(elems[i]), UUID_LEN);
	}
	qsort(actors, *n, sizeof(BookActor), uuid_order);
	for (int i = 1; i < *n; i++)
		if (memcmp(actors[i].id.data, actors[i - 1].id.data, UUID_LEN) == 0)
			return NULL;
	return actors;
}

/* The actors' ids as a uuid[], in their (sorted) order. */
static Datum
actor_id_array(const BookActor *actors, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		ids[i] = UUIDPGetDatum(&actors[i].id);
	return PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/*
 * A request's time: bounded, finite, not empty, at most a day; its bounds
 * as [lower, upper) and its range type.  False for anything else.
 */
static bool
day_at_most(Datum during_datum, TypeCacheEntry **rtc, RangeBound *lower, RangeBound *upper)
{
	RangeType  *during = DatumGetRangeTypeP(during_datum);
	bool		empty;
	int64		span;

	*rtc = lookup_type_cache(RangeTypeGetOid(during), TYPECACHE_RANGE_INFO);
	range_deserialize(*rtc, during, lower, upper, &empty);
	if (empty || lower->infinite || upper->infinite ||
		TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(lower->val)) ||
		TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(upper->val)) ||
		DatumGetTimestampTz(lower->val) >= DatumGetTimestampTz(upper->val))
		return false;
	/* finite bounds can still be too far apart for an int64 difference */
	return !pg_sub_s64_overflow(DatumGetTimestampTz(upper->val), DatumGetTimestampTz(lower->val), &span) &&
		span <= USECS_PER_DAY;
}

/*
 * The booking itself, for book() and hold(): the arguments of
 * _create_appointment.  Returns the appointment id.
 */
static Datum
book_appointment(BookRequest *r)
{
	int			n;
	BookActor  *actors;
	TypeCacheEntry *rtc;
	RangeBound	lower,
				upper;
	const char *kind;
	const char *status;
	Datum		tenant = (Datum) 0;
	Datum		sorted_ids;
	Datum		spans;
	Datum		during_n;		/* during as [lower, upper) */
	Datum	   *tmp;
	pg_uuid_t  *id;
	Datum		digest = (Datum) 0;
	bool		keyed = !r->isnull[6];
	Oid			write_types[13] = {UUIDOID, UUIDOID, UUIDOID, UUIDARRAYOID, TSTZRANGEOID, TEXTOID,
	TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4ARRAYOID, TSTZRANGEARRAYOID, TEXTOID, BYTEAOID};
	Datum		values[13];
	char		nulls[13];
	bool		fallback = false;
	bool		cached = false;
	uint64		version;
	static const char *const booking_roles[] = {"scheduler", "integration"};

	/*
	 * The reference decides what the fast path would not: NULLs, other
	 * isolation levels, superusers, and Citus (whose router sends the
	 * reference's plain statements to the tenant's node whole, where this
	 * path's one-statement writes would go through the coordinator).
	 */
	if (r->isnull[0] || r->isnull[1] || r->isnull[2] || r->isnull[3] || r->isnull[4] ||
		XactIsoLevel != XACT_READ_COMMITTED ||
		(schedphi_current_actor() == NULL && superuser_arg(GetSessionUserId())) ||
		schedphi_citus_active())
		return book_reference(r);

	actors = sorted_actors(r->actors, &n);
	if (actors == NULL || !day_at_most(r->during, &rtc, &lower, &upper))
		return book_reference(r);

	kind = known_kind(DatumGetTextPP(r->kind));
	status = TextDatumGetCString(r->status);
	if (kind == NULL || (strcmp(status, "booked") != 0 && strcmp(status, "pending") != 0))
		return book_reference(r);
	if (!r->isnull[5])
	{
		text	   *reason = DatumGetTextPP(r->reason);

		if (pg_mbstrlen_with_len(VARDATA_ANY(reason), VARSIZE_ANY_EXHDR(reason)) > MAX_REASON)
			return book_reference(r);
	}
	if (!r->isnull[6])
	{
		text	   *key = DatumGetTextPP(r->key);
		int			len = pg_mbstrlen_with_len(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));

		if (len < 1 || len > MAX_KEY)
			return book_reference(r);
	}

	/*
	 * The actors from the cache (read the version before any snapshot: a
	 * change committed after it bumps it again), or the patient's tenant
	 * and the actors in one query, remembered for the next time.
	 */
	version = schedphi_rules_version();
	sorted_ids = actor_id_array(actors, n);
	during_n = make_tstzrange(rtc, DatumGetTimestampTz(lower.val), DatumGetTimestampTz(upper.val));
	if (!keyed && actors_from_cache(actors, n, version, DatumGetTimestampTz(lower.val),
									DatumGetTimestampTz(upper.val), &tenant))
	{
		cached = true;
		book_cached++;
	}
	else
	{
		Oid			types[3] = {UUIDOID, UUIDARRAYOID, TSTZRANGEOID};
		Datum		lookup_values[3];

		lookup_values[0] = r->patient;
		lookup_values[1] = sorted_ids;
		lookup_values[2] = during_n;

		schedphi_keep_plan(&lookup_plan,
						   "SELECT p.tenant, a.id, a.capacity, a.buffer_before, a.buffer_after, "
						   "EXISTS (SELECT 1 FROM schedphi.block b WHERE b.tenant = p.tenant "
						   "AND b.actor = a.id AND b.during && $3) "
						   "FROM schedphi.patient p CROSS JOIN unnest($2) AS u(id) "
						   /* actor by actor: exact on the id, whatever the plan (see taken_seats) */
						   "LEFT JOIN LATERAL (SELECT * FROM schedphi.actor y WHERE y.tenant = p.tenant "
						   "AND y.id = u.id OFFSET 0) a ON true "
						   "WHERE p.id = $1", 3, types);
		if (SPI_execute_plan(lookup_plan, lookup_values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: booking lookup failed");
		if (SPI_processed != (uint64) n)
			fallback = true;
		for (uint64 i = 0; i < SPI_processed && !fallback; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		t = SPI_getbinval(tup, desc, 1, &isnull);
			Datum		a = SPI_getbinval(tup, desc, 2, &isnull);
			Interval   *before;
			Interval   *after;
			int			k;

			if (isnull || (k = find_actor(actors, n, DatumGetUUIDP(a))) < 0 || actors[k].found)
			{
				fallback = true;
				break;
			}
			if (i == 0)
				tenant = datumCopy(t, false, UUID_LEN);
			else if (memcmp(DatumGetPointer(t), DatumGetPointer(tenant), UUID_LEN) != 0)
			{
				fallback = true;
				break;
			}
			actors[k].found = true;
			actors[k].capacity = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			before = DatumGetIntervalP(SPI_getbinval(tup, desc, 4, &isnull));
			after = DatumGetIntervalP(SPI_getbinval(tup, desc, 5, &isnull));
			actor_span(&actors[k], DatumGetTimestampTz(lower.val), DatumGetTimestampTz(upper.val), before, after);
			actors[k].blocked = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
			if (actors[k].blocked || actors[k].capacity < 1)
				fallback = true;
			else
				actor_remember(version, &actors[k], tenant, before, after);
			actors[k].busy = palloc(sizeof(bool) * Max(actors[k].capacity, 1));
		}
		if (fallback)
			return book_reference(r);
	}

	/* the caller: a token or a membership with the role; anyone else, the reference */
	if (!schedphi_has_role(DatumGetUUIDP(tenant), booking_roles, lengthof(booking_roles)))
		return book_reference(r);

	/* a key already used: the first booking's id, or 22023 if it asked for something else */
	if (keyed)
	{
		Oid			types[7] = {UUIDOID, TEXTOID, UUIDOID, UUIDARRAYOID, TSTZRANGEOID, TEXTOID, TEXTOID};
		Datum		digest_values[7] = {tenant, r->key, r->patient, sorted_ids, r->during,
		CStringGetTextDatum(kind), r->reason};
		char		digest_nulls[7] = "      ";
		bool		isnull;
		Datum		existing;

		digest_nulls[6] = r->isnull[5] ? 'n' : ' ';
		schedphi_keep_plan(&digest_plan,
						   "SELECT s.d, schedphi._idempotent($1, $2, s.d) "
						   "FROM (SELECT schedphi._request_digest($1, $3, $4, $5, $6, $7) AS d) s", 7, types);
		if (SPI_execute_plan(digest_plan, digest_values, digest_nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "schedphi: idempotency lookup failed");
		digest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			elog(ERROR, "schedphi: no request digest");
		digest = datumCopy(digest, false, -1);
		existing = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull)
			return existing;
	}

	if (!all_available(tenant, sorted_ids, actors, n, DatumGetTimestampTz(lower.val),
					   DatumGetTimestampTz(upper.val)))
		return book_reference(r);

	tmp = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		tmp[i] = make_tstzrange(rtc, actors[i].span_lo, actors[i].span_hi);
	spans = PointerGetDatum(construct_array(tmp, n, TSTZRANGEOID, -1, false, TYPALIGN_DOUBLE));

	id = palloc(sizeof(pg_uuid_t));
	appointment_uuid(id);
	memset(nulls, ' ', sizeof(nulls));
	values[0] = tenant;
	values[1] = UUIDPGetDatum(id);
	values[2] = r->patient;
	values[3] = sorted_ids;
	values[4] = during_n;
	values[5] = CStringGetTextDatum(status);
	values[6] = CStringGetTextDatum(kind);
	values[7] = r->reason;
	nulls[7] = r->isnull[5] ? 'n' : ' ';
	values[8] = r->hold_expires;
	nulls[8] = r->isnull[7] ? 'n' : ' ';
	values[9] = (Datum) 0;		/* the seats, once chosen */
	nulls[9] = 'n';
	values[10] = spans;
	values[11] = r->key;
	nulls[11] = keyed ? ' ' : 'n';
	values[12] = digest;
	nulls[12] = keyed ? ' ' : 'n';

	/* with a key, the appointment first (see write_keyed_appointment_sql) */
	if (keyed)
	{
		schedphi_keep_plan(&insert_key_plan, write_keyed_appointment_sql, 13, write_types);
		if (SPI_execute_plan(insert_key_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "schedphi: could not write the booking");
		if (SPI_processed == 0)
		{
			/* a concurrent call with the same key committed first: its id */
			bool		isnull;
			Datum		other;

			schedphi_keep_plan(&idempotent_plan, "SELECT schedphi._idempotent($1, $12, $13)", 13, write_types);
			if (SPI_execute_plan(idempotent_plan, values, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "schedphi: idempotency lookup failed");
			other = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (isnull)
				return book_reference(r);	/* it has gone since: start again */
			return other;
		}
	}

	lock_actor_days(actors, n);

	/* every actor with one seat, no key: written at once if all are free */
	if (!keyed && all_single_seated(actors, n))
	{
		Datum	   *ones = palloc(sizeof(Datum) * n);
		SPIPlanPtr	plan;
		int64		written;

		for (int i = 0; i < n; i++)
			ones[i] = Int32GetDatum(1);
		values[9] = PointerGetDatum(construct_array(ones, n, INT4OID, 4, true, TYPALIGN_INT));
		nulls[9] = ' ';
		if (strcmp(status, "booked") == 0 && tenant_has_waiting(tenant))
			plan = schedphi_keep_plan(&insert_if_free_plan, write_if_free_sql, 13, write_types);
		else
			plan = schedphi_keep_plan(&insert_if_free_unwaited_plan, write_if_free_unwaited_sql, 13, write_types);
		written = write_unless_refused(plan, values, nulls);
		if (written == n)
			return UUIDPGetDatum(id);
		if (written > 0)
			elog(ERROR, "schedphi: wrote %d of %d actors' rows", (int) written, n);
		/* refused or blocked: for actors from the cache, the reference says what is wrong */
		if (cached)
			return book_reference(r);
		/* something is in the way: look at what, below */
		values[9] = (Datum) 0;
		nulls[9] = 'n';
	}

	/* expired holds stop blocking: deactivate those in the way, then look again */
	if (taken_seats(tenant, sorted_ids, spans, actors, n))
	{
		Oid			expire_types[3] = {UUIDOID, UUIDOID, TSTZRANGEOID};
		Datum		expire_values[3] = {tenant, 0, 0};

		/* actor by actor, for the reason given at taken_seats */
		schedphi_keep_plan(&expire_plan,
						   "UPDATE schedphi.appointment_actor x SET active = false "
						   "WHERE x.tenant = $1 AND x.actor = $2 AND x.active "
						   "AND x.expires IS NOT NULL AND x.expires <= statement_timestamp() "
						   "AND x.span && $3", 3, expire_types);
		for (int i = 0; i < n; i++)
		{
			expire_values[1] = UUIDPGetDatum(&actors[i].id);
			expire_values[2] = tmp[i];
			if (SPI_execute_plan(expire_plan, expire_values, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "schedphi: could not release expired holds");
		}
		(void) taken_seats(tenant, sorted_ids, spans, actors, n);
	}
	for (int i = 0; i < n; i++)
	{
		for (int s = 0; s < actors[i].capacity && actors[i].seat == 0; s++)
			if (!actors[i].busy[s])
				actors[i].seat = s + 1;
		if (actors[i].seat == 0)
		{
			Oid			types[3] = {UUIDOID, UUIDARRAYOID, TSTZRANGEOID};
			Datum		conflict_values[3] = {tenant, sorted_ids, during_n};

			schedphi_keep_plan(&conflict_plan, "SELECT schedphi._raise_conflict($1, $2, $3)", 3, types);
			SPI_execute_plan(conflict_plan, conflict_values, NULL, false, 0);
			elog(ERROR, "schedphi: booking conflict not raised");
		}
	}

	/* the actors' rows and the waitlist entry served (and the appointment, without a key) */
	{
		Datum	   *seats = palloc(sizeof(Datum) * n);
		SPIPlanPtr	plan;

		for (int i = 0; i < n; i++)
			seats[i] = Int32GetDatum(actors[i].seat);
		values[9] = PointerGetDatum(construct_array(seats, n, INT4OID, 4, true, TYPALIGN_INT));
		nulls[9] = ' ';
		plan = keyed ?
			schedphi_keep_plan(&insert_key_rows_plan, write_keyed_rows_sql, 13, write_types) :
			schedphi_keep_plan(&insert_plan, write_booking_sql, 13, write_types);
		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT || SPI_processed != (uint64) n)
			elog(ERROR, "schedphi: could not write the booking");
	}
	return UUIDPGetDatum(id);
}

/* Run the booking inside SPI; the id comes back in the caller's context. */
static Datum
book_in_spi(BookRequest *r)
{
	MemoryContext caller = CurrentMemoryContext;
	pg_uuid_t  *out = palloc(sizeof(pg_uuid_t));
	Datum		d;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	d = book_appointment(r);
	memcpy(out->data, DatumGetUUIDP(d)->data, UUID_LEN);
	SPI_finish();
	MemoryContextSwitchTo(caller);
	return UUIDPGetDatum(out);
}

/*
 * The seats of an EHR's appointment (HL7 v2 or FHIR, src/sql/85_hl7.sql):
 * what schedphi._reserve(..., p_rules => false) does -- no availability,
 * no blocks, only a clash refuses -- for the common case: READ COMMITTED,
 * every actor of the tenant and single-seated.  The actors come from the
 * cache book() keeps, or one look-up; the per-actor-day locks are the
 * reference's; the rows are written in a subtransaction, seat 1 each, and
 * the exclusion constraint decides.  False, with nothing written, whenever
 * the reference must do it (and then says what is wrong).
 */
static bool
ehr_reserve(Datum tenant, Datum appointment, Datum actors_datum, Datum during_datum)
{
	BookActor  *actors;
	int			n;
	TypeCacheEntry *rtc;
	RangeBound	lower,
				upper;
	TimestampTz lo,
				hi;
	uint64		version;
	Datum		cached_tenant;
	Datum	   *spans;
	Datum		sorted_ids;
	Oid			types[5] = {UUIDOID, UUIDOID, UUIDARRAYOID, TSTZRANGEOID, TSTZRANGEARRAYOID};
	Datum		values[5];

	if (XactIsoLevel != XACT_READ_COMMITTED || schedphi_citus_active())
		return false;
	actors = sorted_actors(actors_datum, &n);
	if (actors == NULL || !day_at_most(during_datum, &rtc, &lower, &upper))
		return false;
	lo = DatumGetTimestampTz(lower.val);
	hi = DatumGetTimestampTz(upper.val);
	sorted_ids = actor_id_array(actors, n);

	version = schedphi_rules_version();
	if (actors_from_cache(actors, n, version, lo, hi, &cached_tenant) &&
		memcmp(DatumGetUUIDP(cached_tenant)->data, DatumGetUUIDP(tenant)->data, UUID_LEN) == 0)
		book_cached++;
	else
	{
		Oid			lookup_types[2] = {UUIDOID, UUIDARRAYOID};
		Datum		lookup_values[2] = {tenant, sorted_ids};

		for (int i = 0; i < n; i++)
			actors[i].found = false;

		/* actor by actor, exact on the id whatever the plan (see taken_seats) */
		schedphi_keep_plan(&ehr_actors_plan,
						   "SELECT a.id, a.capacity, a.buffer_before, a.buffer_after "
						   "FROM unnest($2) AS u(id) CROSS JOIN LATERAL (SELECT * FROM schedphi.actor y "
						   "WHERE y.tenant = $1 AND y.id = u.id OFFSET 0) a", 2, lookup_types);
		if (SPI_execute_plan(ehr_actors_plan, lookup_values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: actor lookup failed");
		if (SPI_processed != (uint64) n)
			return false;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int			k = find_actor(actors, n, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)));
			Interval   *before;
			Interval   *after;

			if (k < 0 || actors[k].found)
				return false;
			actors[k].found = true;
			actors[k].capacity = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			before = DatumGetIntervalP(SPI_getbinval(tup, desc, 3, &isnull));
			after = DatumGetIntervalP(SPI_getbinval(tup, desc, 4, &isnull));
			actor_span(&actors[k], lo, hi, before, after);
			if (actors[k].capacity < 1)
				return false;
			actor_remember(version, &actors[k], tenant, before, after);
		}
		if (!all_single_seated(actors, n))
			return false;
	}

	spans = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		spans[i] = make_tstzrange(rtc, actors[i].span_lo, actors[i].span_hi);
	lock_actor_days(actors, n);
	values[0] = tenant;
	values[1] = appointment;
	values[2] = sorted_ids;
	values[3] = during_datum;
	values[4] = PointerGetDatum(construct_array(spans, n, TSTZRANGEOID, -1, false, TYPALIGN_DOUBLE));
	schedphi_keep_plan(&ehr_rows_plan,
					   "INSERT INTO schedphi.appointment_actor (tenant, appointment, actor, seat, during, span) "
					   "SELECT $1, $2, u.id, 1, $4, u.span FROM unnest($3, $5) AS u(id, span)", 5, types);
	return write_unless_refused(ehr_rows_plan, values, NULL) == n;
}

PG_FUNCTION_INFO_V1(schedphi_ehr_reserve);

/*
 * _ehr_reserve(tenant uuid, appointment uuid, actors uuid[], during
 * tstzrange) -> boolean: see ehr_reserve.  STRICT.
 */
Datum
schedphi_ehr_reserve(PG_FUNCTION_ARGS)
{
	bool		done;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	done = ehr_reserve(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), PG_GETARG_DATUM(2), PG_GETARG_DATUM(3));
	SPI_finish();
	PG_RETURN_BOOL(done);
}

/*
 * A new appointment id: a version 7 UUID (RFC 9562), whose first 48 bits
 * are the Unix time in milliseconds and the next 12 the fraction of the
 * millisecond, the rest random.  New ids sort after older ones, so the
 * btree indexes that lead with an appointment id (appointment's keys,
 * appointment_actor's primary key) grow at their right edge, where the
 * pages are in memory, instead of on a random page each: at a few million
 * appointments that is the difference between cached and read from disk.
 * The id tells when it was made, which appointment.created_at says anyway.
 */
static void
appointment_uuid(pg_uuid_t *id)
{
	int64		us = GetCurrentTimestamp() + UNIX_EPOCH_USECS;
	uint64		ms = (uint64) (us / 1000);
	uint32		frac = (uint32) ((us % 1000) * 4096 / 1000);

	if (!pg_strong_random(id->data + 6, UUID_LEN - 6))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	for (int i = 0; i < 6; i++)
		id->data[i] = (uint8) (ms >> (8 * (5 - i)));
	id->data[6] = 0x70 | (uint8) (frac >> 8);	/* version 7 */
	id->data[7] = (uint8) (frac & 0xff);
	id->data[8] = (id->data[8] & 0x3f) | 0x80;	/* RFC 9562 variant */
}

PG_FUNCTION_INFO_V1(schedphi_appointment_id);

/* schedphi._appointment_id() -> uuid: what appointment.id defaults to */
Datum
schedphi_appointment_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	appointment_uuid(id);
	PG_RETURN_UUID_P(id);
}

PG_FUNCTION_INFO_V1(schedphi_book);

/*
 * book(patient uuid, actors uuid[], during tstzrange, kind text, reason text,
 *		idempotency_key text) -> uuid
 * NULL-safe: NULL arguments go to the reference, which says what is wrong.
 */
Datum
schedphi_book(PG_FUNCTION_ARGS)
{
	BookRequest r;

	memset(&r, 0, sizeof(r));
	for (int i = 0; i < 6; i++)
		r.isnull[i < 3 ? i : i + 1] = PG_ARGISNULL(i);
	r.patient = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	r.actors = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	r.during = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	r.status = CStringGetTextDatum("booked");
	r.isnull[3] = false;
	r.kind = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	r.reason = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	r.key = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
	r.isnull[7] = true;
	PG_RETURN_DATUM(book_in_spi(&r));
}

PG_FUNCTION_INFO_V1(schedphi_book_core);

/*
 * _book(patient, actors, during, status, kind, reason, key, hold_expires)
 *	 -> uuid
 * The arguments of _create_appointment; hold() calls it.  NULL-safe.
 */
Datum
schedphi_book_core(PG_FUNCTION_ARGS)
{
	BookRequest r;
	Datum	   *slots[8] = {&r.patient, &r.actors, &r.during, &r.status, &r.kind, &r.reason,
	&r.key, &r.hold_expires};

	memset(&r, 0, sizeof(r));
	for (int i = 0; i < 8; i++)
	{
		r.isnull[i] = PG_ARGISNULL(i);
		*slots[i] = r.isnull[i] ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	PG_RETURN_DATUM(book_in_spi(&r));
}

PG_FUNCTION_INFO_V1(schedphi_book_fallbacks);

/* _book_fallbacks() -> bigint: requests this backend handed to the reference. */
Datum
schedphi_book_fallbacks(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) book_fallbacks);
}

PG_FUNCTION_INFO_V1(schedphi_book_cached);

/* _book_cached() -> bigint: requests this backend booked with the actors from its cache. */
Datum
schedphi_book_cached(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) book_cached);
}

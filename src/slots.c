/*-------------------------------------------------------------------------
 *
 * slots.c
 *	  find_slots: free time common to several actors, cut on their grids.
 *
 * For the requested actors and window, schedphi_expand_windows gives the
 * weekly availability as absolute instants under each location's time-zone
 * rules, and one query each loads the blocks and the active bookings and
 * unexpired holds with their seats.  Bookings are read a stretch of time at
 * a time, as far as max_results is likely to need (next_stretch).  The rest
 * is interval arithmetic in memory: no query per slot.
 *
 * A start time t is offered when, for every actor,
 *	 - some availability window covers [t, t + duration) and t lies on that
 *	   window's slot_minutes grid (counted from the window's start),
 *	 - no block overlaps [t, t + duration), and
 *	 - some seat (capacity N = seats 1..N) has no booking overlapping
 *	   [t - buffer_before, t + duration + buffer_after), which is exactly
 *	   the span the exclusion constraint will compare when booking.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/rangetypes.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "actor.h"
#include "common.h"
#include "membership.h"
#include "walltime.h"

/*
 * Sorts with the comparison inlined (lib/sort_template.h): a booked actor
 * has thousands of spans a month, and qsort's call per comparison was a
 * tenth of find_slots.
 */
#define ST_SORT sort_timestamps
#define ST_ELEMENT_TYPE TimestampTz
#define ST_COMPARE(a, b) ((*(a) > *(b)) - (*(a) < *(b)))
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

#define MAX_ACTORS			50
#define MAX_WINDOW_DAYS		370
#define MAX_RESULTS_CAP		10000
/* An availability window never exceeds a day plus a DST shift. */
#define MAX_WINDOW_LENGTH	(26 * USECS_PER_HOUR)

typedef struct Span
{
	TimestampTz lo;
	TimestampTz hi;
} Span;

typedef struct Window
{
	TimestampTz lo;
	TimestampTz hi;
	int64		step;
} Window;

typedef struct SpanList
{
	Span	   *items;
	int			n;
	int			cap;
	int			pos;			/* first span that may still matter (see span_overlaps) */
} SpanList;

#define ST_SORT sort_spans
#define ST_ELEMENT_TYPE Span
#define ST_COMPARE(a, b) (((a)->lo > (b)->lo) - ((a)->lo < (b)->lo))
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

typedef struct ActorPlan
{
	pg_uuid_t	id;
	int			capacity;
	int64		before;
	int64		after;
	Window	   *windows;
	int			nwindows;
	int			capwindows;
	SpanList	blocks;
	SpanList   *seats;			/* capacity lists, seat 1 first */
} ActorPlan;

static SPIPlanPtr actors_plan = NULL;
static SPIPlanPtr auth_plan = NULL;
static SPIPlanPtr unknown_plan = NULL;
static SPIPlanPtr blocks_plan = NULL;
static SPIPlanPtr busy_plan = NULL;

static void
span_append(SpanList *list, TimestampTz lo, TimestampTz hi)
{
	if (list->n == list->cap)
	{
		list->cap = list->cap ? list->cap * 2 : 8;
		list->items = list->items ?
			repalloc(list->items, sizeof(Span) * list->cap) :
			palloc(sizeof(Span) * list->cap);
	}
	list->items[list->n].lo = lo;
	list->items[list->n].hi = hi;
	list->n++;
}

/*
 * Does any span of a sorted list of disjoint spans overlap [lo, hi)?
 *
 * Candidates are tried in increasing order, so lo never decreases between
 * calls on one list: spans that end at or before lo can never matter again,
 * and the cursor steps over them once (linear in the list over a whole
 * call of find_slots, instead of a binary search per candidate).
 */
static bool
span_overlaps(SpanList *list, TimestampTz lo, TimestampTz hi)
{
	while (list->pos < list->n && list->items[list->pos].hi <= lo)
		list->pos++;
	return list->pos < list->n && list->items[list->pos].lo < hi;
}

/* Is [t, t + dur) inside one of the actor's windows, on its grid? */
static bool
actor_covers(const ActorPlan *a, TimestampTz t, int64 dur)
{
	int			left = 0,
				right = a->nwindows;

	/* first window starting after t */
	while (left < right)
	{
		int			mid = left + (right - left) / 2;

		if (a->windows[mid].lo <= t)
			left = mid + 1;
		else
			right = mid;
	}
	for (int i = left - 1; i >= 0 && a->windows[i].lo > t - MAX_WINDOW_LENGTH; i--)
	{
		const Window *w = &a->windows[i];

		if (t + dur <= w->hi && (t - w->lo) % w->step == 0)
			return true;
	}
	return false;
}

static bool
actor_free(ActorPlan *a, TimestampTz t, int64 dur)
{
	if (!actor_covers(a, t, dur))
		return false;
	if (span_overlaps(&a->blocks, t, t + dur))
		return false;
	for (int s = 0; s < a->capacity; s++)
		if (!span_overlaps(&a->seats[s], t - a->before, t + dur + a->after))
			return true;
	return false;
}

static int
find_actor(ActorPlan *plans, int n, const pg_uuid_t *id)
{
	for (int i = 0; i < n; i++)
		if (memcmp(plans[i].id.data, id->data, UUID_LEN) == 0)
			return i;
	elog(ERROR, "find_slots: query returned an actor that was not asked for");
	return -1;					/* keep compiler quiet */
}

/* A duration or buffer in microseconds; months are refused. */
static int64
interval_usecs(const Interval *iv, const char *what)
{
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("%s must be given in days, hours or minutes, not months", what)));
	return iv->day * USECS_PER_DAY + iv->time;
}

static Datum
get_attr(HeapTuple tuple, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, attno, &isnull);

	if (isnull)
		elog(ERROR, "find_slots: unexpected NULL in column %d", attno);
	return d;
}

/* Validate the actors argument: 1..50 distinct, non-NULL uuids. */
static ArrayType *
check_actor_array(Datum arg, Datum **elems, int *nelems)
{
	ArrayType  *arr = DatumGetArrayTypeP(arg);
	bool	   *nulls;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("actors must be a one-dimensional array")));
	deconstruct_array(arr, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, elems, &nulls, nelems);
	if (*nelems == 0)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("actors must name at least one actor")));
	if (*nelems > MAX_ACTORS)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("actors may name at most %d actors", MAX_ACTORS)));
	for (int i = 0; i < *nelems; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(SCHEDPHI_BAD_ARGUMENT),
					 errmsg("actors must not contain NULL")));
		for (int j = 0; j < i; j++)
			if (memcmp(DatumGetPointer((*elems)[i]), DatumGetPointer((*elems)[j]), UUID_LEN) == 0)
				ereport(ERROR,
						(errcode(SCHEDPHI_BAD_ARGUMENT),
						 errmsg("actors must not name the same actor twice")));
	}
	return arr;
}

/* Who may look for free time: any member who works with schedules. */
static const char *const slot_roles[] = {"admin", "scheduler", "clinician", "integration", "support"};
static const char *const any_role[] = {"admin", "scheduler", "clinician", "billing", "support", "analyst",
"integration", "auditor"};

/* Refuse an actor that does not exist, as schedphi._unknown does. */
static void
unknown_actor(ActorPlan *plan)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {UUIDPGetDatum(&plan->id)};

	schedphi_keep_plan(&unknown_plan, "SELECT schedphi._unknown('actor', $1)", 1, types);
	(void) SPI_execute_plan(unknown_plan, values, NULL, true, 0);
	elog(ERROR, "find_slots: schedphi._unknown returned");
}

/*
 * Load the actors, their tenant, capacity and buffers; check that they all
 * exist, share one tenant, and that the caller may look at that tenant.
 * Returns the tenant.
 *
 * The answer must not tell a caller what exists outside the tenants it may
 * look at (docs/security.md): the tenant is the first, in the order given,
 * where the caller holds one of slot_roles; failing that, the first where
 * it holds any role, then the first actor that exists, decide through
 * _authorize (the role or the tenant rule), and an array naming no actor at
 * all gets _unknown's refusal (the same 42501, except for a superuser
 * acting as no one).  Once the tenant is settled, an actor of another tenant
 * is as unknown as one that does not exist.
 */
static Datum
load_actors(ActorPlan *plans, int n, Datum actors_arg, MemoryContext keep)
{
	Oid			arrtypes[1] = {UUIDARRAYOID};
	Datum		values[1] = {actors_arg};
	Oid			authtypes[2] = {UUIDOID, TEXTARRAYOID};
	Datum		authvalues[2];
	Datum		roles[lengthof(slot_roles)];
	pg_uuid_t  *tenants = palloc0(sizeof(pg_uuid_t) * n);
	int			chosen = -1;
	SPITupleTable *tt;

	schedphi_keep_plan(&actors_plan,
			  "SELECT a.id, a.tenant, a.capacity, a.buffer_before, a.buffer_after "
			  "FROM schedphi.actor a WHERE a.id = ANY ($1)", 1, arrtypes);
	if (SPI_execute_plan(actors_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "find_slots: actor query failed");
	/* SPI leaves its own context current: what we keep goes in the caller's */
	MemoryContextSwitchTo(keep);
	tt = SPI_tuptable;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = tt->vals[r];
		pg_uuid_t  *id = DatumGetUUIDP(get_attr(tup, tt->tupdesc, 1));

		for (int i = 0; i < n; i++)
			if (memcmp(plans[i].id.data, id->data, UUID_LEN) == 0)
			{
				memcpy(tenants[i].data, DatumGetUUIDP(get_attr(tup, tt->tupdesc, 2))->data, UUID_LEN);
				plans[i].capacity = DatumGetInt32(get_attr(tup, tt->tupdesc, 3));
				plans[i].before = interval_usecs(DatumGetIntervalP(get_attr(tup, tt->tupdesc, 4)), "buffer_before");
				plans[i].after = interval_usecs(DatumGetIntervalP(get_attr(tup, tt->tupdesc, 5)), "buffer_after");
			}
	}

	/* capacity is at least 1 (a check constraint): 0 means not found */
	for (int i = 0; i < n && chosen < 0; i++)
		if (plans[i].capacity > 0 && schedphi_has_role(&tenants[i], slot_roles, lengthof(slot_roles)))
			chosen = i;
	if (chosen < 0)
	{
		/*
		 * Not a tenant where the caller may search: one where it has some
		 * role (a refusal names the role rule there), else the first actor
		 * that exists (the tenant rule, as for one that does not).
		 */
		for (int i = 0; i < n && chosen < 0; i++)
			if (plans[i].capacity > 0 && schedphi_has_role(&tenants[i], any_role, lengthof(any_role)))
				chosen = i;
		for (int i = 0; i < n && chosen < 0; i++)
			if (plans[i].capacity > 0)
				chosen = i;
		if (chosen < 0)
			unknown_actor(&plans[0]);
		for (size_t i = 0; i < lengthof(slot_roles); i++)
			roles[i] = CStringGetTextDatum(slot_roles[i]);
		authvalues[0] = UUIDPGetDatum(&tenants[chosen]);
		authvalues[1] = PointerGetDatum(construct_array(roles, lengthof(slot_roles), TEXTOID, -1, false, TYPALIGN_INT));
		schedphi_keep_plan(&auth_plan, "SELECT schedphi._authorize($1, $2)", 2, authtypes);
		if (SPI_execute_plan(auth_plan, authvalues, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "find_slots: authorization query failed");
		MemoryContextSwitchTo(keep);
	}

	for (int i = 0; i < n; i++)
	{
		if (plans[i].capacity > 0 && memcmp(tenants[i].data, tenants[chosen].data, UUID_LEN) == 0)
			continue;
		/* a superuser acting as no one sees every tenant anyway */
		if (plans[i].capacity > 0 && schedphi_current_actor() == NULL && superuser_arg(GetSessionUserId()))
			ereport(ERROR,
					(errcode(SCHEDPHI_BAD_ARGUMENT),
					 errmsg("actors must all belong to one tenant")));
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("unknown actor %s",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&plans[i].id))))));
	}
	return UUIDPGetDatum(&tenants[chosen]);
}

/* A window of an actor, from schedphi_expand_windows. */
typedef struct WindowLoad
{
	ActorPlan  *plans;
	int			n;
} WindowLoad;

static void
add_window(void *arg, const pg_uuid_t *actor, TimestampTz s, TimestampTz e, int32 slot_minutes)
{
	WindowLoad *wl = (WindowLoad *) arg;
	ActorPlan  *a = &wl->plans[find_actor(wl->plans, wl->n, actor)];
	Window	   *w;

	if (a->nwindows == a->capwindows)
	{
		a->capwindows = a->capwindows ? a->capwindows * 2 : 16;
		a->windows = a->windows ?
			repalloc(a->windows, sizeof(Window) * a->capwindows) :
			palloc(sizeof(Window) * a->capwindows);
	}
	w = &a->windows[a->nwindows++];
	w->lo = s;
	w->hi = e;
	w->step = (int64) slot_minutes * USECS_PER_MINUTE;
}

static int
window_cmp(const void *x, const void *y)
{
	const Window *a = (const Window *) x;
	const Window *b = (const Window *) y;

	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	return 0;
}

/* Each actor's availability windows in [wlo, whi), sorted by start and end. */
static void
load_windows(ActorPlan *plans, int n, Datum tenant, Datum actors_arg, TimestampTz wlo, TimestampTz whi,
			 MemoryContext keep)
{
	WindowLoad	wl = {plans, n};

	MemoryContextSwitchTo(keep);
	schedphi_expand_windows(tenant, actors_arg, wlo, whi, add_window, &wl);
	for (int i = 0; i < n; i++)
		if (plans[i].nwindows > 1)
			qsort(plans[i].windows, plans[i].nwindows, sizeof(Window), window_cmp);
}

static void
load_blocks(ActorPlan *plans, int n, Datum tenant, Datum actors_arg, Datum window, MemoryContext keep)
{
	Oid			types[3] = {UUIDOID, UUIDARRAYOID, TSTZRANGEOID};
	Datum		values[3] = {tenant, actors_arg, window};
	SPITupleTable *tt;

	schedphi_keep_plan(&blocks_plan,
			  "SELECT b.actor, lower(b.during), upper(b.during) FROM schedphi.block b "
			  "WHERE b.tenant = $1 AND b.actor = ANY ($2) AND b.during && $3 "
			  "ORDER BY lower(b.during)", 3, types);
	if (SPI_execute_plan(blocks_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "find_slots: block query failed");
	MemoryContextSwitchTo(keep);
	tt = SPI_tuptable;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = tt->vals[r];
		ActorPlan  *a = &plans[find_actor(plans, n, DatumGetUUIDP(get_attr(tup, tt->tupdesc, 1)))];
		TimestampTz lo = DatumGetTimestampTz(get_attr(tup, tt->tupdesc, 2));
		TimestampTz hi = DatumGetTimestampTz(get_attr(tup, tt->tupdesc, 3));
		SpanList   *b = &a->blocks;

		/* sorted by start: merge into disjoint spans as we go */
		if (b->n > 0 && lo <= b->items[b->n - 1].hi)
			b->items[b->n - 1].hi = Max(b->items[b->n - 1].hi, hi);
		else
			span_append(b, lo, hi);
	}
}

/*
 * Bookings arrive through a DestReceiver straight into the seat lists: no
 * copy of the rows in SPI memory, and no sort in SQL (each seat's list is
 * sorted afterwards in C).  The span comes whole and is taken apart once
 * here, rather than by lower() and upper() in the query.
 */
typedef struct BusyReceiver
{
	DestReceiver pub;
	ActorPlan  *plans;
	int			n;
	MemoryContext keep;
	TypeCacheEntry *range_type;
} BusyReceiver;

static bool
busy_receive(TupleTableSlot *slot, DestReceiver *self)
{
	BusyReceiver *r = (BusyReceiver *) self;
	ActorPlan  *a;
	int			seat;
	RangeType  *span;
	RangeBound	lo,
				hi;
	bool		empty;
	MemoryContext old;

	slot_getallattrs(slot);
	if (slot->tts_isnull[0] || slot->tts_isnull[1] || slot->tts_isnull[2])
		elog(ERROR, "find_slots: unexpected NULL in a booking");
	a = &r->plans[find_actor(r->plans, r->n, DatumGetUUIDP(slot->tts_values[0]))];
	seat = DatumGetInt32(slot->tts_values[1]);

	/*
	 * A seat above today's capacity still holds its booking, but no new
	 * booking can take it, so it does not matter here.
	 */
	if (seat < 1 || seat > a->capacity)
		return true;
	span = DatumGetRangeTypeP(slot->tts_values[2]);
	range_deserialize(r->range_type, span, &lo, &hi, &empty);
	/* spans are written bounded and non-empty (schedphi._span) */
	if (empty || lo.infinite || hi.infinite)
		elog(ERROR, "find_slots: a booking's span is empty or unbounded");
	old = MemoryContextSwitchTo(r->keep);
	span_append(&a->seats[seat - 1], DatumGetTimestampTz(lo.val), DatumGetTimestampTz(hi.val));
	MemoryContextSwitchTo(old);
	if ((Pointer) span != DatumGetPointer(slot->tts_values[2]))
		pfree(span);
	return true;
}

static void
busy_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
busy_noop(DestReceiver *self)
{
}

/*
 * Replace every seat list by the active bookings and unexpired holds whose
 * spans overlap [lo, hi), each list sorted and its cursor at the start.
 */
static void
load_busy(ActorPlan *plans, int n, Datum tenant, Datum actors_arg, TimestampTz lo, TimestampTz hi,
		  MemoryContext keep)
{
	Oid			types[4] = {UUIDOID, UUIDARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[4] = {tenant, actors_arg, TimestampTzGetDatum(lo), TimestampTzGetDatum(hi)};
	ParamListInfo params = makeParamList(4);
	SPIExecuteOptions options;
	BusyReceiver rcv;

	/*
	 * Actor by actor (LATERAL, not flattened), so that no plan made while
	 * the table was small reads the tenant's other actors' bookings; and
	 * through a bitmap ("= ANY" of one element, which a plain GiST scan
	 * cannot take): a busy month is thousands of rows, and fetching them
	 * in the index's order visits a heap page per row (3x slower).
	 */
	schedphi_keep_plan(&busy_plan,
			  "SELECT x.actor, x.seat, x.span "
			  "FROM unnest($2) AS u(id) "
			  "CROSS JOIN LATERAL (SELECT y.actor, y.seat, y.span FROM schedphi.appointment_actor y "
			  "WHERE y.tenant = $1 AND y.actor = ANY (ARRAY[u.id]) AND y.active "
			  "AND (y.expires IS NULL OR y.expires > statement_timestamp()) "
			  "AND y.span && tstzrange($3, $4) OFFSET 0) x", 4, types);
	for (int i = 0; i < 4; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}
	for (int i = 0; i < n; i++)
		for (int s = 0; s < plans[i].capacity; s++)
			plans[i].seats[s].n = plans[i].seats[s].pos = 0;
	memset(&rcv, 0, sizeof(rcv));
	rcv.pub.receiveSlot = busy_receive;
	rcv.pub.rStartup = busy_startup;
	rcv.pub.rShutdown = busy_noop;
	rcv.pub.rDestroy = busy_noop;
	rcv.pub.mydest = DestNone;
	rcv.plans = plans;
	rcv.n = n;
	rcv.keep = keep;
	rcv.range_type = lookup_type_cache(TSTZRANGEOID, TYPECACHE_RANGE_INFO);
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = (DestReceiver *) &rcv;
	/* with a DestNone receiver SPI reports SPI_OK_UTILITY for a SELECT */
	if (SPI_execute_plan_extended(busy_plan, &options) < 0)
		elog(ERROR, "find_slots: booking query failed");
	MemoryContextSwitchTo(keep);

	/* the exclusion constraint keeps one seat's spans disjoint: sort them */
	for (int i = 0; i < n; i++)
		for (int s = 0; s < plans[i].capacity; s++)
			if (plans[i].seats[s].n > 1)
				sort_spans(plans[i].seats[s].items, plans[i].seats[s].n);
}

/*
 * How far past the candidate `at` the next load of bookings should reach.
 * max_results usually ends the search long before the end of the window,
 * and a busy actor's bookings are most of the work, so they are read a
 * stretch of time at a time: the first stretch as if every candidate were
 * free, the next ones from the rate at which free slots have turned up so
 * far, with a quarter to spare (twice as far as so far when none has).  A
 * stretch is at least a day; past the end of the window it is all the rest.
 */
static int64
next_stretch(TimestampTz from, TimestampTz until, TimestampTz at, bool first,
			 int ncand, int emitted, int max_results)
{
	double		want;

	if (first)
		want = (double) (until - from) * Min(1.0, 1.25 * max_results / Max(ncand, 1));
	else if (emitted == 0)
		want = 2.0 * (double) (at - from);
	else
		want = 1.25 * (double) (at - from) * (max_results - emitted) / emitted;
	want = Max(want, (double) USECS_PER_DAY);
	if (want >= (double) (until - at))
		return until - at;
	return (int64) want;
}

PG_FUNCTION_INFO_V1(schedphi_find_slots);

/*
 * find_slots(actors uuid[], window tstzrange, duration interval,
 *			  max_results int default 100)
 *	 -> table(starts timestamptz, ends timestamptz, actors uuid[])
 */
Datum
schedphi_find_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		actors_arg;
	Datum	   *elems;
	int			nactors;
	RangeType  *window;
	RangeBound	wlo,
				whi;
	bool		wempty;
	TimestampTz from,
				until;
	int64		span_usecs;
	int64		dur;
	int			max_results = 100;
	ActorPlan  *plans;
	Datum		tenant;
	int64		max_before = 0,
				max_after = 0;
	TimestampTz *cand = NULL;
	int			ncand = 0,
				capcand = 0;
	int			emitted = 0;
	int			c;
	MemoryContext callctx = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("actors must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("window must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("duration must not be null")));
	if (!PG_ARGISNULL(3))
	{
		max_results = PG_GETARG_INT32(3);
		if (max_results < 1 || max_results > MAX_RESULTS_CAP)
			ereport(ERROR,
					(errcode(SCHEDPHI_BAD_ARGUMENT),
					 errmsg("max_results must be between 1 and %d", MAX_RESULTS_CAP)));
	}

	actors_arg = PG_GETARG_DATUM(0);
	check_actor_array(actors_arg, &elems, &nactors);

	window = PG_GETARG_RANGE_P(1);
	range_deserialize(lookup_type_cache(RangeTypeGetOid(window), TYPECACHE_RANGE_INFO),
					  window, &wlo, &whi, &wempty);
	if (wempty || wlo.infinite || whi.infinite ||
		TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(wlo.val)) ||
		TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(whi.val)))
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("window must be a non-empty range bounded on both sides")));
	from = DatumGetTimestampTz(wlo.val);
	until = DatumGetTimestampTz(whi.val);
	/* finite timestamps can still be too far apart for an int64 difference */
	if (pg_sub_s64_overflow(until, from, &span_usecs) ||
		span_usecs > MAX_WINDOW_DAYS * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("window must not be longer than %d days", MAX_WINDOW_DAYS)));

	dur = interval_usecs(PG_GETARG_INTERVAL_P(2), "duration");
	if (dur <= 0)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("duration must be positive (zero duration)")));
	if (dur > USECS_PER_DAY)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("duration must not be longer than one day")));

	InitMaterializedSRF(fcinfo, 0);

	plans = palloc0(sizeof(ActorPlan) * nactors);
	for (int i = 0; i < nactors; i++)
		memcpy(plans[i].id.data, DatumGetPointer(elems[i]), UUID_LEN);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* everything we keep is allocated in the caller's context */
	MemoryContextSwitchTo(callctx);
	tenant = load_actors(plans, nactors, actors_arg, callctx);
	for (int i = 0; i < nactors; i++)
	{
		plans[i].seats = palloc0(sizeof(SpanList) * plans[i].capacity);
		max_before = Max(max_before, plans[i].before);
		max_after = Max(max_after, plans[i].after);
	}
	load_windows(plans, nactors, tenant, actors_arg, from, until, callctx);
	load_blocks(plans, nactors, tenant, actors_arg, PointerGetDatum(window), callctx);

	/* Candidate starts: the grid of the first actor's windows. */
	for (int i = 0; i < plans[0].nwindows; i++)
	{
		const Window *w = &plans[0].windows[i];
		TimestampTz lo = Max(w->lo, from);
		TimestampTz hi = Min(w->hi, until);
		TimestampTz t = w->lo;

		if (lo > w->lo)
			t = w->lo + ((lo - w->lo + w->step - 1) / w->step) * w->step;
		for (; t + dur <= hi; t += w->step)
		{
			if (ncand == capcand)
			{
				capcand = capcand ? capcand * 2 : 256;
				cand = cand ? repalloc(cand, sizeof(TimestampTz) * capcand) :
					palloc(sizeof(TimestampTz) * capcand);
			}
			cand[ncand++] = t;
		}
	}
	if (ncand > 1)
		sort_timestamps(cand, ncand);

	/*
	 * Try the candidates in order, a stretch of time at a time: before each
	 * stretch, load the bookings that a candidate in it could touch with its
	 * buffers.
	 */
	c = 0;
	while (c < ncand && emitted < max_results)
	{
		TimestampTz stop = cand[c] + next_stretch(from, until, cand[c], c == 0,
												  ncand, emitted, max_results);

		if (stop >= until)
			stop = until + 1;	/* the last stretch: every remaining candidate */
		load_busy(plans, nactors, tenant, actors_arg,
				  cand[c] - max_before, stop + dur + max_after, callctx);
		for (; c < ncand && cand[c] < stop && emitted < max_results; c++)
		{
			TimestampTz t = cand[c];
			bool		ok = true;

			if (c > 0 && cand[c - 1] == t)
				continue;
			for (int i = 0; i < nactors && ok; i++)
				ok = actor_free(&plans[i], t, dur);
			if (ok)
			{
				Datum		values[3];
				bool		nulls[3] = {false, false, false};

				values[0] = TimestampTzGetDatum(t);
				values[1] = TimestampTzGetDatum(t + dur);
				values[2] = actors_arg;
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
				emitted++;
			}
		}
	}
	SPI_finish();
	return (Datum) 0;
}

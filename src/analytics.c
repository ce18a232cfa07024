/*-------------------------------------------------------------------------
 *
 * analytics.c
 *	  What the de-identified analytics (src/sql/80_analytics.sql) need from
 *	  C: the few facts derived from sealed fields when a row is written (an
 *	  age at a visit, a 5-digit ZIP), and the export record of each
 *	  statement that reads the analysts' views.
 *
 * Analysts never decrypt: the triggers that keep schedphi.appointment_deid
 * and schedphi.patient_deid call the functions below as the extension's
 * owner, when a patient or an appointment is written.  Each opens one
 * sealed value, keeps one derived fact (never the value) and wipes the
 * plaintext.  None of them is executable by PUBLIC: a caller who could
 * pass any date to _age_at could find a birth date by bisection.
 *
 * Each statement that reads deid_appointments or lds_appointments leaves
 * one "export" record per tenant it covered, with the view, the number of
 * rows the statement returned and the data use agreement it used: the
 * views note what they read (_analytics_note, evaluated once per
 * statement), and the executor hook of audit.c calls
 * schedphi_analytics_statement_end when the client's statement has run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "analytics.h"
#include "audit.h"
#include "common.h"
#include "sealed.h"
#include "walltime.h"

/* The oldest age shown as itself; older is "90+" (45 CFR 164.514(b)(2)(i)(C)). */
#define AGE_TOP 90

/* schedphi.analytics_min_k: the fewest patients a class of rows may show */
static int	analytics_min_k = 11;

void
schedphi_analytics_init(void)
{
	DefineCustomIntVariable("schedphi.analytics_min_k",
							"The fewest patients that one (age at visit, ZIP3, visit year) class of "
							"de-identified rows may show; smaller classes are generalised, then suppressed.",
							"11 follows the CMS cell-size rule (no count from 1 to 10); 1 leaves Safe Harbor alone.",
							&analytics_min_k,
							11, 1, 1000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
}

/*
 * Open a sealed patient field for a derivation: NULL when it does not open
 * (a damaged value makes the fact unknown; it does not stop the write).
 * The caller wipes the plaintext (wipe_text) once it has what it needs.
 */
static text *
open_field(bytea *sealed, pg_uuid_t *tenant, const char *col, pg_uuid_t *patient)
{
	return schedphi_unseal_or_null(sealed, tenant, "patient", col, patient);
}

static void
wipe_text(text *t)
{
	explicit_bzero(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	pfree(t);
}

static bool
is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/*
 * Completed years between a birth date and a visit date, or -1 when the
 * visit comes before the birth.  Someone born on 29 February has a
 * birthday on 28 February in a common year: of the two customs (28
 * February or 1 March) the earlier one, so that the collapse into "90+" is
 * never a day late.
 */
int
schedphi_age_on(int by, int bm, int bd, int vy, int vm, int vd)
{
	int			age;

	if (bm == 2 && bd == 29 && !is_leap(vy))
		bd = 28;
	age = vy - by;
	if (vm < bm || (vm == bm && vd < bd))
		age--;
	return age;
}

PG_FUNCTION_INFO_V1(schedphi_age_at);

/*
 * _age_at(birth_date sealed, tenant uuid, patient uuid, visit date) -> smallint
 * Strict.  The patient's age in completed years on the visit's date, 90
 * for 90 and over, NULL when the visit is before the birth or the stored
 * birth date is not a date.
 */
Datum
schedphi_age_at(PG_FUNCTION_ARGS)
{
	text	   *plain = open_field(PG_GETARG_BYTEA_PP(0), PG_GETARG_UUID_P(1), "birth_date", PG_GETARG_UUID_P(2));
	DateADT		visit = PG_GETARG_DATEADT(3);
	char		buf[16];
	int			n = plain ? VARSIZE_ANY_EXHDR(plain) : 0;
	int			by,
				bm,
				bd,
				vy,
				vm,
				vd,
				age;
	bool		ok;

	if (plain == NULL)
		PG_RETURN_NULL();
	ok = n == 10 && !DATE_NOT_FINITE(visit);
	if (ok)
	{
		memcpy(buf, VARDATA_ANY(plain), n);
		buf[n] = '\0';
		ok = sscanf(buf, "%4d-%2d-%2d", &by, &bm, &bd) == 3 && bm >= 1 && bm <= 12 && bd >= 1 && bd <= 31;
		explicit_bzero(buf, sizeof(buf));
	}
	wipe_text(plain);
	if (!ok)
		PG_RETURN_NULL();
	j2date(visit + POSTGRES_EPOCH_JDATE, &vy, &vm, &vd);
	age = schedphi_age_on(by, bm, bd, vy, vm, vd);
	by = bm = bd = 0;
	if (age < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT16((int16) Min(age, AGE_TOP));
}

/*
 * The 5-digit ZIP code of a postal code as stored (upper-cased, trimmed by
 * patient_fields.c): 5 digits, or ZIP+4 with or without its dash or a
 * space.  Anything else (a foreign postal code, a 3-digit fragment) is
 * unknown: NULL.  Writes 6 bytes to out.
 */
bool
schedphi_zip5_of(const char *s, int n, char *out)
{
	int			digits = 0;

	for (int i = 0; i < n; i++)
	{
		if (s[i] >= '0' && s[i] <= '9')
		{
			if (digits < 5)
				out[digits] = s[i];
			digits++;
		}
		else if (!((s[i] == '-' || s[i] == ' ') && i == 5 && digits == 5))
			return false;
	}
	out[5] = '\0';
	return digits == 5 || (digits == 9 && n >= 9);
}

PG_FUNCTION_INFO_V1(schedphi_zip5);

/* _zip5(zip sealed, tenant uuid, patient uuid) -> text; strict */
Datum
schedphi_zip5(PG_FUNCTION_ARGS)
{
	text	   *plain = open_field(PG_GETARG_BYTEA_PP(0), PG_GETARG_UUID_P(1), "zip", PG_GETARG_UUID_P(2));
	char		zip[6];
	bool		ok;

	if (plain == NULL)
		PG_RETURN_NULL();
	ok = schedphi_zip5_of(VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain), zip);

	wipe_text(plain);
	if (!ok)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(zip));
}

PG_FUNCTION_INFO_V1(schedphi_opens_equal);

/*
 * _opens_equal(a sealed, b sealed, tenant uuid, col text, patient uuid) -> boolean
 * Whether two sealings of a patient's field hold the same value (a
 * re-encryption changes the bytes, not the value).  NULL-safe: two NULLs
 * are equal, one NULL is not.
 */
Datum
schedphi_opens_equal(PG_FUNCTION_ARGS)
{
	text	   *a,
			   *b;
	char	   *col;
	bool		same;

	if (PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(PG_ARGISNULL(0) && PG_ARGISNULL(1));
	col = text_to_cstring(PG_GETARG_TEXT_PP(3));
	a = open_field(PG_GETARG_BYTEA_PP(0), PG_GETARG_UUID_P(2), col, PG_GETARG_UUID_P(4));
	b = open_field(PG_GETARG_BYTEA_PP(1), PG_GETARG_UUID_P(2), col, PG_GETARG_UUID_P(4));
	/* one that does not open: not known to be the same */
	same = a != NULL && b != NULL && VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
	if (a)
		wipe_text(a);
	if (b)
		wipe_text(b);
	PG_RETURN_BOOL(same);
}

/* ------------------------------------------- an appointment's actors */

/*
 * What the de-identified row of an appointment needs of its actors (kind,
 * location and the location's time zone) and of its tenant (the time zone),
 * kept per backend while schedphi_rules_version() stays the same: a change
 * to an actor or a location bumps it (the rules_changed triggers), and a
 * tenant's zone never changes.  A booking then pays for no look-up.
 */
#define TZ_NAME_MAX 64
#define FACTS_CACHE_MAX 8192

typedef struct ActorFacts
{
	pg_uuid_t	id;				/* key: an actor, or a tenant */
	char		kind;			/* 'p'ractitioner, 'r'oom, 'd'evice; 't' for a tenant */
	bool		has_location;
	pg_uuid_t	location;
	char		tz[TZ_NAME_MAX];	/* the location's zone, or the tenant's; "" unknown */
} ActorFacts;

static MemoryContext facts_cxt = NULL;
static HTAB *facts_cache = NULL;
static uint64 facts_version = 0;

static HTAB *
facts_for(uint64 version)
{
	if (facts_cache == NULL || facts_version != version || hash_get_num_entries(facts_cache) >= FACTS_CACHE_MAX)
	{
		facts_cache = NULL;
		facts_cache = schedphi_cache_table(&facts_cxt, "schedphi analytics actors", sizeof(pg_uuid_t),
										   sizeof(ActorFacts));
		facts_version = version;
	}
	return facts_cache;
}

/*
 * Look up what the cache lacks: the tenant's zone, and the actors'.  The
 * tables are named by the caller (on a Citus node, the shards of the
 * tenant's: a query of the distributed tables cannot run there).
 */
static void
facts_fill(HTAB *cache, const char *actor_rel, const char *location_rel, const char *tenant_rel,
		   Datum tenant, Datum *missing, int nmissing, bool need_tenant)
{
	Oid			types[2] = {UUIDOID, UUIDARRAYOID};
	Datum		values[2];
	char	   *sql;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = tenant;
	if (need_tenant)
	{
		ActorFacts *e;

		sql = psprintf("SELECT t.timezone FROM %s t WHERE t.tenant = $1", tenant_rel);
		if (SPI_execute_with_args(sql, 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: tenant zone lookup failed");
		e = hash_search(cache, DatumGetUUIDP(tenant), HASH_ENTER, NULL);
		e->kind = 't';
		e->has_location = false;
		e->tz[0] = '\0';
		if (SPI_processed == 1)
		{
			Datum		tz = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				text_to_cstring_buffer(DatumGetTextPP(tz), e->tz, TZ_NAME_MAX);
		}
	}
	if (nmissing > 0)
	{
		values[1] = PointerGetDatum(construct_array(missing, nmissing, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		sql = psprintf("SELECT a.id, a.kind, a.location, l.timezone FROM %s a "
					   "LEFT JOIN %s l ON l.tenant = a.tenant AND l.id = a.location "
					   "WHERE a.tenant = $1 AND a.id = ANY ($2)", actor_rel, location_rel);
		if (SPI_execute_with_args(sql, 2, types, values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: actor lookup failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		id = SPI_getbinval(tup, desc, 1, &isnull);
			Datum		kind = SPI_getbinval(tup, desc, 2, &isnull);
			char	   *k = TextDatumGetCString(kind);
			Datum		loc = SPI_getbinval(tup, desc, 3, &isnull);
			ActorFacts *e = hash_search(cache, DatumGetUUIDP(id), HASH_ENTER, NULL);

			e->kind = k[0];
			e->has_location = !isnull;
			if (!isnull)
				e->location = *DatumGetUUIDP(loc);
			e->tz[0] = '\0';
			if (e->has_location)
			{
				Datum		tz = SPI_getbinval(tup, desc, 4, &isnull);

				if (!isnull)
					text_to_cstring_buffer(DatumGetTextPP(tz), e->tz, TZ_NAME_MAX);
			}
		}
	}
	SPI_finish();
}

/* A relation's name, schema-qualified and quoted, for a query's text. */
static char *
rel_name(Oid relid)
{
	char	   *rel = get_rel_name(relid);

	if (rel == NULL)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation %u does not exist", relid)));
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), rel);
}

PG_FUNCTION_INFO_V1(schedphi_deid_facts);

/*
 * _deid_facts(actor_rel regclass, location_rel regclass, tenant_rel regclass, tenant uuid,
 *			   actors uuid[], starts timestamptz,
 *			   OUT location uuid, OUT practitioner uuid, OUT kinds text[], OUT visit date)
 * Strict.  The first actor with a location gives the location, the first
 * practitioner the practitioner; kinds are the kinds booked, sorted; visit
 * is the date of starts where the visit happens (the location's zone, or
 * the tenant's).  An actor not found counts for nothing.
 */
Datum
schedphi_deid_facts(PG_FUNCTION_ARGS)
{
	Datum		tenant = PG_GETARG_DATUM(3);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(4);
	TimestampTz starts = PG_GETARG_TIMESTAMPTZ(5);
	HTAB	   *cache = facts_for(schedphi_rules_version());
	Datum	   *ids;
	bool	   *nulls;
	int			n;
	Datum	   *missing;
	int			nmissing = 0;
	ActorFacts *t;
	ActorFacts *loc = NULL;
	ActorFacts *prac = NULL;
	bool		has[3] = {false, false, false};	/* device, practitioner, room */
	const char *names[3] = {"device", "practitioner", "room"};
	Datum		kinds[3];
	int			nkinds = 0;
	const char *tz;
	TupleDesc	desc;
	Datum		out[4];
	bool		outnull[4] = {true, true, false, true};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "schedphi: _deid_facts must return a record");
	deconstruct_array(arr, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &ids, &nulls, &n);
	missing = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		if (!nulls[i] && hash_search(cache, DatumGetUUIDP(ids[i]), HASH_FIND, NULL) == NULL)
			missing[nmissing++] = ids[i];
	t = hash_search(cache, DatumGetUUIDP(tenant), HASH_FIND, NULL);
	if (nmissing > 0 || t == NULL)
	{
		facts_fill(cache, rel_name(PG_GETARG_OID(0)), rel_name(PG_GETARG_OID(1)), rel_name(PG_GETARG_OID(2)),
				   tenant, missing, nmissing, t == NULL);
		t = hash_search(cache, DatumGetUUIDP(tenant), HASH_FIND, NULL);
	}
	for (int i = 0; i < n; i++)
	{
		ActorFacts *a;

		if (nulls[i] || (a = hash_search(cache, DatumGetUUIDP(ids[i]), HASH_FIND, NULL)) == NULL || a->kind == 't')
			continue;
		if (loc == NULL && a->has_location)
			loc = a;
		if (prac == NULL && a->kind == 'p')
			prac = a;
		has[a->kind == 'd' ? 0 : a->kind == 'p' ? 1 : 2] = true;
	}
	if (loc != NULL)
	{
		out[0] = UUIDPGetDatum(&loc->location);
		outnull[0] = false;
	}
	if (prac != NULL)
	{
		out[1] = UUIDPGetDatum(&prac->id);
		outnull[1] = false;
	}
	for (int k = 0; k < 3; k++)
		if (has[k])
			kinds[nkinds++] = CStringGetTextDatum(names[k]);
	out[2] = PointerGetDatum(construct_array(kinds, nkinds, TEXTOID, -1, false, TYPALIGN_INT));
	tz = loc != NULL && loc->tz[0] ? loc->tz : (t != NULL && t->tz[0] ? t->tz : NULL);
	if (tz != NULL && !TIMESTAMP_NOT_FINITE(starts))
	{
		Timestamp	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, CStringGetTextDatum(tz),
																  TimestampTzGetDatum(starts)));

		out[3] = DirectFunctionCall1(timestamp_date, TimestampGetDatum(local));
		outnull[3] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), out, outnull)));
}

/* ------------------------------------------------ generalised classes */

/*
 * The k-anonymity classes that deid_appointments does not show as they
 * are, looked up row by row in a parallel scan.  The view computes them
 * once per statement, in the leader (an initPlan over _deid_generalised,
 * which only the views' owner may read), and passes them here as one
 * array; each process that scans rows (the leader and every parallel
 * worker) hashes that array on its first row and probes the hash after.
 * The function is pure: what it answers is a function of its arguments.
 */
typedef struct ClassKey
{
	pg_uuid_t	tenant;
	int32		visit_year;
	int16		age;			/* -1 unknown */
	char		zip3[4];		/* "" unknown, else three digits */
} ClassKey;

typedef struct ClassEntry
{
	ClassKey	key;
	bool		shown;
} ClassEntry;

typedef struct ClassCache
{
	Datum		source;			/* the classes argument hashed, as passed */
	Size		size;			/* and its size */
	int			n;				/* classes in it */
	HTAB	   *classes;
} ClassCache;

/*
 * Is the array argument now the one a cache was made from?  The value is
 * one for every row of a scan (an initPlan's), so its address and size
 * tell a new one.
 */
static inline bool
same_array(Datum cached, Size cached_size, Datum now)
{
	return cached == now && cached_size == VARSIZE_ANY(DatumGetPointer(now));
}

/* Fill key; false when the values cannot be a class's (no such row). */
static bool
class_key(ClassKey *key, const pg_uuid_t *tenant, int32 visit_year, int16 age, text *zip3)
{
	int			len = VARSIZE_ANY_EXHDR(zip3);

	if (len > 3)
		return false;
	memset(key, 0, sizeof(ClassKey));
	key->tenant = *tenant;
	key->visit_year = visit_year;
	key->age = age;
	memcpy(key->zip3, VARDATA_ANY(zip3), len);
	return true;
}

/* Hash the classes of arr, in the function's memory. */
static void
class_cache_fill(FunctionCallInfo fcinfo, ClassCache *cache, Datum source)
{
	ArrayType  *arr = DatumGetArrayTypeP(source);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	HASHCTL		ctl;

	if (cache->classes)
		hash_destroy(cache->classes);
	cache->classes = NULL;
	/* (the elements in the caller's memory: only the hash is kept) */
	deconstruct_array(arr, ARR_ELEMTYPE(arr), -1, false, TYPALIGN_DOUBLE, &elems, &nulls, &n);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(ClassKey);
	ctl.entrysize = sizeof(ClassEntry);
	ctl.hcxt = fcinfo->flinfo->fn_mcxt;
	cache->classes = hash_create("schedphi generalised classes", Max(n, 16), &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		HeapTupleHeader t;
		bool		isnull[5];
		Datum		v[5];
		ClassKey	key;
		ClassEntry *e;

		if (nulls[i])
			elog(ERROR, "schedphi: a generalised class is null");
		t = DatumGetHeapTupleHeader(elems[i]);
		for (int a = 0; a < 5; a++)
			v[a] = GetAttributeByNum(t, a + 1, &isnull[a]);
		if (isnull[0] || isnull[1] || isnull[2] || isnull[3] || isnull[4] ||
			!class_key(&key, DatumGetUUIDP(v[0]), DatumGetInt32(v[1]), DatumGetInt16(v[2]), DatumGetTextPP(v[3])))
			elog(ERROR, "schedphi: a generalised class is incomplete");
		e = hash_search(cache->classes, &key, HASH_ENTER, NULL);
		e->shown = DatumGetBool(v[4]);
	}
	cache->source = source;
	cache->size = VARSIZE_ANY(DatumGetPointer(source));
	cache->n = n;
}

PG_FUNCTION_INFO_V1(schedphi_deid_class_state);

/*
 * _deid_class_state(classes _deid_class_key[], tenant uuid, visit_year int,
 *					 age smallint, zip3 text) -> int
 * 0: the row's class is shown as it is; 1: it is generalised (its age in a
 * ten-year band, its ZIP3 000); 2: it is suppressed.  A NULL age is the
 * unknown age.  Fails closed: NULL classes, tenant, year or ZIP3 is 2.
 * The classes must be one value for every row a scan passes (the view's
 * initPlan; same_array).
 */
Datum
schedphi_deid_class_state(PG_FUNCTION_ARGS)
{
	ClassCache *cache = (ClassCache *) fcinfo->flinfo->fn_extra;
	Datum		source;
	ClassKey	key;
	ClassEntry *e;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(4))
		PG_RETURN_INT32(2);
	source = PG_GETARG_DATUM(0);
	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ClassCache));
		fcinfo->flinfo->fn_extra = cache;
	}
	if (cache->classes == NULL || !same_array(cache->source, cache->size, source))
		class_cache_fill(fcinfo, cache, source);
	if (cache->n == 0)
		PG_RETURN_INT32(0);
	if (!class_key(&key, PG_GETARG_UUID_P(1), PG_GETARG_INT32(2),
				   PG_ARGISNULL(3) ? -1 : PG_GETARG_INT16(3), PG_GETARG_TEXT_PP(4)))
		PG_RETURN_INT32(0);
	e = hash_search(cache->classes, &key, HASH_FIND, NULL);
	if (e == NULL)
		PG_RETURN_INT32(0);
	PG_RETURN_INT32(e->shown ? 1 : 2);
}

PG_FUNCTION_INFO_V1(schedphi_zip3_shown);

/*
 * _zip3_shown(restricted text[], zip3 text) -> text
 * A ZIP3 as Safe Harbor shows it: NULL unknown (''), '000' for one of the
 * restricted zones, else itself.  restricted (schedphi.zip3_restricted, as
 * one value for every row: the view's initPlan) is kept per process like
 * the classes above.  NULL zip3: NULL; NULL restricted: '000' (fails
 * closed).
 */
typedef struct ZoneCache
{
	Datum		source;
	Size		size;
	int			n;
	char		(*zones)[4];
} ZoneCache;

Datum
schedphi_zip3_shown(PG_FUNCTION_ARGS)
{
	ZoneCache  *cache = (ZoneCache *) fcinfo->flinfo->fn_extra;
	Datum		source;
	text	   *zip3;
	int			len;

	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	zip3 = PG_GETARG_TEXT_PP(1);
	len = VARSIZE_ANY_EXHDR(zip3);
	if (len == 0)
		PG_RETURN_NULL();
	if (PG_ARGISNULL(0))
		PG_RETURN_TEXT_P(cstring_to_text("000"));
	source = PG_GETARG_DATUM(0);
	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ZoneCache));
		fcinfo->flinfo->fn_extra = cache;
	}
	if (cache->zones == NULL || !same_array(cache->source, cache->size, source))
	{
		ArrayType  *arr = DatumGetArrayTypeP(source);
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		if (cache->zones)
			pfree(cache->zones);
		cache->zones = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(char[4]) * Max(n, 1));
		cache->n = 0;
		for (int i = 0; i < n; i++)
		{
			text	   *z;

			if (nulls[i])
				continue;
			z = DatumGetTextPP(elems[i]);
			if (VARSIZE_ANY_EXHDR(z) != 3)
				continue;		/* (the table's check allows three digits only) */
			memcpy(cache->zones[cache->n++], VARDATA_ANY(z), 3);
		}
		cache->source = source;
		cache->size = VARSIZE_ANY(DatumGetPointer(source));
	}
	if (len == 3)
		for (int i = 0; i < cache->n; i++)
			if (memcmp(cache->zones[i], VARDATA_ANY(zip3), 3) == 0)
				PG_RETURN_TEXT_P(cstring_to_text("000"));
	PG_RETURN_TEXT_P(zip3);
}

/* ------------------------------------------------------ export records */

/*
 * What the client's statement (or open cursor) read through the analysts'
 * views: one entry per view and agreement, with the tenants it covered,
 * owned by the outermost query (its QueryDesc) that was running when the
 * view noted it.  Each run of that query (a statement, or each FETCH of a
 * cursor) leaves its records; the notes go when the query ends.
 */
#define MAX_NOTES 16
typedef struct ExportNote
{
	const void *owner;
	char		view[NAMEDATALEN];
	bool		has_agreement;
	pg_uuid_t	agreement;
	int			ntenants;
	pg_uuid_t  *tenants;
} ExportNote;

static ExportNote notes[MAX_NOTES];
static int	nnotes = 0;
static LocalTransactionId notes_lxid = InvalidLocalTransactionId;
static const void *running_top = NULL;

static void
forget_notes(const void *owner)
{
	int			kept = 0;

	for (int i = 0; i < nnotes; i++)
	{
		if (owner == NULL || notes[i].owner == owner)
		{
			if (notes[i].tenants)
				pfree(notes[i].tenants);
		}
		else
			notes[kept++] = notes[i];
	}
	nnotes = kept;
}

/* The outermost query starts running (audit.c's executor hook). */
void
schedphi_analytics_run_start(const void *top)
{
	if (notes_lxid != MyProc->lxid)
	{
		forget_notes(NULL);
		notes_lxid = MyProc->lxid;
	}
	running_top = top;
}

PG_FUNCTION_INFO_V1(schedphi_analytics_note);

/*
 * _analytics_note(view text, tenants uuid[], agreement uuid) -> uuid[]
 * Remembers that the running statement reads view for those tenants (under
 * that agreement, if any) and returns the tenants, for the view's filter.
 * view and tenants must not be NULL.
 */
Datum
schedphi_analytics_note(PG_FUNCTION_ARGS)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	   *view;
	ExportNote *e = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("view and tenants must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	/* outside a client's statement (a plan-time estimate): nothing to record */
	if (running_top == NULL)
		PG_RETURN_ARRAYTYPE_P(arr);
	if (notes_lxid != MyProc->lxid)
	{
		forget_notes(NULL);
		notes_lxid = MyProc->lxid;
	}
	view = text_to_cstring(PG_GETARG_TEXT_PP(0));
	deconstruct_array(arr, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elems, &nulls, &n);
	for (int i = 0; i < nnotes; i++)
		if (notes[i].owner == running_top && strcmp(notes[i].view, view) == 0 &&
			notes[i].has_agreement == !PG_ARGISNULL(2) &&
			(PG_ARGISNULL(2) || memcmp(notes[i].agreement.data, PG_GETARG_UUID_P(2)->data, UUID_LEN) == 0))
			e = &notes[i];
	if (e == NULL)
	{
		if (nnotes == MAX_NOTES)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							errmsg("at most %d queries of the analytics views may be open at once", MAX_NOTES)));
		e = &notes[nnotes++];
		memset(e, 0, sizeof(ExportNote));
		e->owner = running_top;
		strlcpy(e->view, view, sizeof(e->view));
		e->has_agreement = !PG_ARGISNULL(2);
		if (e->has_agreement)
			e->agreement = *PG_GETARG_UUID_P(2);
		e->tenants = MemoryContextAllocZero(TopMemoryContext, sizeof(pg_uuid_t) * Max(n, 1));
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				e->tenants[e->ntenants++] = *DatumGetUUIDP(elems[i]);
	}
	PG_RETURN_ARRAYTYPE_P(arr);
}

/*
 * A run of the outermost query top has returned rows rows: one export
 * record per view, agreement and tenant it read, each durable before the
 * client has the rows (as the statement's reads are).
 */
void
schedphi_analytics_run_end(const void *top, uint64 rows)
{
	running_top = NULL;
	if (nnotes == 0 || notes_lxid != MyProc->lxid)
		return;
	for (int i = 0; i < nnotes; i++)
	{
		ExportNote *e = &notes[i];

		if (e->owner != top)
			continue;
		for (int t = 0; t < e->ntenants; t++)
		{
			StringInfoData detail;

			initStringInfo(&detail);
			appendStringInfoString(&detail, "{\"view\": ");
			escape_json(&detail, e->view);
			appendStringInfo(&detail, ", \"rows\": " UINT64_FORMAT, rows);
			if (e->has_agreement)
				appendStringInfo(&detail, ", \"agreement\": \"%s\"",
								 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&e->agreement))));
			appendStringInfoChar(&detail, '}');
			schedphi_audit_record("export", &e->tenants[t], e->view, NULL, NULL, detail.data, true);
			pfree(detail.data);
		}
	}
}

/* The outermost query top has ended: its notes go. */
void
schedphi_analytics_query_end(const void *top)
{
	if (nnotes > 0)
		forget_notes(top);
}

/*-------------------------------------------------------------------------
 *
 * hl7.c
 *	  What hl7_ingest (src/sql/85_hl7.sql) needs from C: the values of an
 *	  SIU message that scheduling uses, read with the codec of
 *	  src/codec/hl7.c, escapes undone, as one jsonb document; and a value
 *	  escaped for the ACKs and messages schedphi writes.
 *
 * _hl7_read never raises for a message it cannot read: it returns
 * {"error": ..., "code": ..., "location": ...} with an HL7 table 0357
 * error code and an ERR-2 location (segment^sequence^field), so that the
 * caller can answer it with an ACK.  Errors name segments and fields, never
 * their content (a message carries PHI).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "codec/hl7.h"

/* the most a message may hold (an SIU is a few kilobytes) */
#define HL7_MAX_MESSAGE (1024 * 1024)

typedef struct Reader
{
	sp_hl7_msg *m;
	StringInfo	out;
	char	   *buf;			/* for undone escapes */
	size_t		bufcap;
	const char *bad;			/* the first value that could not be read */
	char		badloc[64];
	bool		first;			/* no member written yet at this level */
} Reader;

/* seg^occurrence^field, for ERR-2 */
static void
note_location(Reader *r, int seg, int field)
{
	int			occurrence = 0;
	const char *id = sp_hl7_seg_id(r->m, seg);

	for (int i = 0; i <= seg; i++)
		if (memcmp(sp_hl7_seg_id(r->m, i), id, 3) == 0)
			occurrence++;
	snprintf(r->badloc, sizeof(r->badloc), "%.3s^%d^%d", id, occurrence, field);
}

/* A value, escapes undone, or NULL when absent or empty. */
static char *
value(Reader *r, int seg, int field, int rep, int comp, int sub)
{
	sp_hl7_span s;
	size_t		n;
	char	   *v;

	if (seg < 0 || !sp_hl7_get(r->m, seg, field, rep, comp, sub, &s) || s.len == 0)
		return NULL;
	n = sp_hl7_unescape(&r->m->d, s.p, s.len, r->buf, r->bufcap);
	if (n == (size_t) -1 || !pg_verifymbstr(r->buf, n, true))
	{
		if (r->bad == NULL)
		{
			r->bad = "a value holds a NUL byte or is not valid in the database's encoding";
			note_location(r, seg, field);
		}
		return NULL;
	}
	/* white space around a value is not data (MSH-10 " 38762") */
	while (n > 0 && (r->buf[n - 1] == ' ' || r->buf[n - 1] == '\t'))
		n--;
	v = r->buf;
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	if (n == 0)
		return NULL;
	return pnstrdup(v, n);
}

static void
key(Reader *r, const char *k)
{
	if (!r->first)
		appendStringInfoString(r->out, ", ");
	r->first = false;
	escape_json(r->out, k);
	appendStringInfoString(r->out, ": ");
}

static void
put(Reader *r, const char *k, int seg, int field, int rep, int comp, int sub)
{
	char	   *v = value(r, seg, field, rep, comp, sub);

	key(r, k);
	if (v == NULL)
		appendStringInfoString(r->out, "null");
	else
	{
		escape_json(r->out, v);
		pfree(v);
	}
}

/* A DTM as {"local": "YYYY-MM-DD HH:MI:SS.US", "offset": minutes or null}, or null. */
static void
put_dtm(Reader *r, const char *k, int seg, int field, int rep, int comp)
{
	char	   *v = value(r, seg, field, rep, comp, 0);
	sp_hl7_dtm	t;

	key(r, k);
	if (v == NULL)
	{
		appendStringInfoString(r->out, "null");
		return;
	}
	if (!sp_hl7_parse_dtm(v, strlen(v), &t) || t.precision < 5)
	{
		appendStringInfoString(r->out, "null");
		if (r->bad == NULL)
		{
			r->bad = "a timestamp is not a date and time to the minute at least (YYYYMMDDHHMM[SS][+/-ZZZZ])";
			note_location(r, seg, field);
		}
		pfree(v);
		return;
	}
	appendStringInfo(r->out, "{\"local\": \"%04d-%02d-%02d %02d:%02d:%02d.%06d\", \"offset\": ",
					 t.year, t.month, t.day, t.hour, t.minute, t.second, t.usec);
	if (t.has_offset)
		appendStringInfo(r->out, "%d}", t.offset_minutes);
	else
		appendStringInfoString(r->out, "null}");
	pfree(v);
}

static void
open_obj(Reader *r, const char *k)
{
	if (k)
		key(r, k);
	else if (!r->first)
		appendStringInfoString(r->out, ", ");
	appendStringInfoChar(r->out, '{');
	r->first = true;
}

static void
close_obj(Reader *r)
{
	appendStringInfoChar(r->out, '}');
	r->first = false;
}

/*
 * A resource segment: its id, name, start and duration, from the fields
 * each of AIG, AIL and AIP keeps them in.
 */
static void
put_resource(Reader *r, int i)
{
	const char *id = sp_hl7_seg_id(r->m, i);
	int			f_id = 3,
				f_start,
				f_dur,
				f_units;

	if (memcmp(id, "AIG", 3) == 0)
		f_start = 8, f_dur = 11, f_units = 12;
	else
		f_start = 6, f_dur = 9, f_units = 10;	/* AIL, AIP */
	open_obj(r, NULL);
	key(r, "segment");
	appendStringInfo(r->out, "\"%.3s\"", id);
	put(r, "action", i, 2, 1, 1, 0);
	if (memcmp(id, "AIL", 3) == 0)
	{
		/* a PL: point of care, room, bed, facility: the first given is its id */
		char	   *v = NULL;

		for (int c = 1; c <= 4 && v == NULL; c++)
			v = value(r, i, f_id, 1, c, 0);
		key(r, "id");
		if (v)
			escape_json(r->out, v);
		else
			appendStringInfoString(r->out, "null");
		/* its room, else its point of care */
		put(r, "name", i, f_id, 1, 2, 0);
		put(r, "name2", i, f_id, 1, 1, 0);
	}
	else if (memcmp(id, "AIP", 3) == 0)
	{
		/* an XCN: id, family name, given name */
		put(r, "id", i, f_id, 1, 1, 0);
		put(r, "name", i, f_id, 1, 2, 1);
		put(r, "name2", i, f_id, 1, 3, 0);
	}
	else
	{
		/* a CE or CWE: id, text */
		put(r, "id", i, f_id, 1, 1, 0);
		put(r, "name", i, f_id, 1, 2, 0);
	}
	put(r, "kind", i, 4, 1, 1, 0);
	put_dtm(r, "start", i, f_start, 1, 1);
	put(r, "duration", i, f_dur, 1, 1, 0);
	put(r, "units", i, f_units, 1, 1, 0);
	put(r, "units2", i, f_units, 1, 2, 0);
	close_obj(r);
}

static Datum
error_doc(const char *msg, const char *code, const char *loc)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfoString(&s, "{\"error\": ");
	escape_json(&s, msg);
	appendStringInfo(&s, ", \"code\": \"%s\", \"location\": ", code);
	if (loc)
		escape_json(&s, loc);
	else
		appendStringInfoString(&s, "null");
	appendStringInfoChar(&s, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data));
}

PG_FUNCTION_INFO_V1(schedphi_hl7_read);

/*
 * _hl7_read(message text) -> jsonb.  Strict.  The values of an SIU message
 * that hl7_ingest uses:
 *   msh: sending/receiving application and facility, type, event,
 *        control_id, processing_id, version
 *   msa: code, control_id (an ACK's MSA-1 and MSA-2)
 *   sch: placer_id, filler_id, reason, kind, duration, units, units2,
 *        start, end (SCH-11), status (SCH-25)
 *   tq1: start, end (the first TQ1)
 *   pid: identifiers [{id, authority, type}], family, given, birth_date,
 *        sex, zip, phone, email
 *   resources: [{segment, action, id, name, name2, kind, start, duration,
 *        units, units2}] for each AIG, AIL and AIP in order (name: AIG's
 *        text, AIL's room, AIP's family name; name2: AIL's point of care,
 *        AIP's given name)
 * and, when a value could not be read (a timestamp that is not one, a
 * NUL byte), bad: {error, code, location} for the AE that names it; or
 * only {"error", "code", "location"} for a message that cannot be read.
 */
Datum
schedphi_hl7_read(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	size_t		len = VARSIZE_ANY_EXHDR(t);
	char		err[256];
	Reader		r;
	StringInfoData out;
	int			msh,
				sch,
				tq1,
				pid;
	Datum		result;

	if (len > HL7_MAX_MESSAGE)
		return error_doc("the message is longer than 1 MB", "100", NULL);
	r.m = palloc(sizeof(sp_hl7_msg));
	if (!sp_hl7_parse(VARDATA_ANY(t), len, r.m, err, sizeof(err)))
		return error_doc(err, "100", NULL);
	r.bufcap = len + 1;
	r.buf = palloc(r.bufcap);
	r.bad = NULL;
	r.out = &out;
	initStringInfo(&out);
	msh = 0;
	sch = sp_hl7_find(r.m, "SCH", 0);
	tq1 = sp_hl7_find(r.m, "TQ1", 0);
	pid = sp_hl7_find(r.m, "PID", 0);

	r.first = true;
	appendStringInfoChar(&out, '{');
	open_obj(&r, "msh");
	put(&r, "sending_application", msh, 3, 1, 1, 0);
	put(&r, "sending_facility", msh, 4, 1, 1, 0);
	put(&r, "receiving_application", msh, 5, 1, 1, 0);
	put(&r, "receiving_facility", msh, 6, 1, 1, 0);
	put(&r, "type", msh, 9, 1, 1, 0);
	put(&r, "event", msh, 9, 1, 2, 0);
	put(&r, "control_id", msh, 10, 1, 1, 0);
	put(&r, "processing_id", msh, 11, 1, 1, 0);
	put(&r, "version", msh, 12, 1, 1, 0);
	close_obj(&r);

	{
		int			msa = sp_hl7_find(r.m, "MSA", 0);

		open_obj(&r, "msa");
		put(&r, "code", msa, 1, 1, 1, 0);
		put(&r, "control_id", msa, 2, 1, 1, 0);
		close_obj(&r);
	}

	open_obj(&r, "sch");
	key(&r, "present");
	appendStringInfoString(&out, sch >= 0 ? "true" : "false");
	put(&r, "placer_id", sch, 1, 1, 1, 0);
	put(&r, "filler_id", sch, 2, 1, 1, 0);
	put(&r, "reason", sch, 7, 1, 2, 0);
	put(&r, "reason_code", sch, 7, 1, 1, 0);
	put(&r, "kind", sch, 8, 1, 1, 0);
	put(&r, "duration", sch, 9, 1, 1, 0);
	put(&r, "units", sch, 10, 1, 1, 0);
	put(&r, "units2", sch, 10, 1, 2, 0);
	put(&r, "tq_duration", sch, 11, 1, 3, 0);
	put_dtm(&r, "start", sch, 11, 1, 4);
	put_dtm(&r, "end", sch, 11, 1, 5);
	put(&r, "status", sch, 25, 1, 1, 0);
	close_obj(&r);

	open_obj(&r, "tq1");
	put_dtm(&r, "start", tq1, 7, 1, 1);
	put_dtm(&r, "end", tq1, 8, 1, 1);
	close_obj(&r);

	open_obj(&r, "pid");
	key(&r, "present");
	appendStringInfoString(&out, pid >= 0 ? "true" : "false");
	key(&r, "identifiers");
	appendStringInfoChar(&out, '[');
	r.first = true;
	for (int rep = 1; pid >= 0 && rep <= sp_hl7_reps(r.m, pid, 3) && rep <= 20; rep++)
	{
		open_obj(&r, NULL);
		put(&r, "id", pid, 3, rep, 1, 0);
		put(&r, "authority", pid, 3, rep, 4, 1);
		put(&r, "type", pid, 3, rep, 5, 0);
		close_obj(&r);
	}
	/* (before 2.3, PID-2 held the external id; 2.2 feeds put their MRN there) */
	if (pid >= 0 && sp_hl7_reps(r.m, pid, 3) == 0 && sp_hl7_reps(r.m, pid, 2) > 0)
	{
		open_obj(&r, NULL);
		put(&r, "id", pid, 2, 1, 1, 0);
		put(&r, "authority", pid, 2, 1, 4, 1);
		key(&r, "type");
		appendStringInfoString(&out, "\"MR\"");
		close_obj(&r);
	}
	appendStringInfoChar(&out, ']');
	r.first = false;
	put(&r, "family", pid, 5, 1, 1, 1);
	put(&r, "given", pid, 5, 1, 2, 0);
	put(&r, "birth_date", pid, 7, 1, 1, 0);
	put(&r, "sex", pid, 8, 1, 1, 0);
	put(&r, "zip", pid, 11, 1, 5, 0);
	put(&r, "phone", pid, 13, 1, 1, 0);
	put(&r, "email", pid, 13, 1, 4, 0);
	close_obj(&r);

	key(&r, "resources");
	appendStringInfoChar(&out, '[');
	r.first = true;
	for (int i = 0; i < r.m->nseg; i++)
	{
		const char *id = sp_hl7_seg_id(r.m, i);

		if (memcmp(id, "AIG", 3) == 0 || memcmp(id, "AIL", 3) == 0 || memcmp(id, "AIP", 3) == 0)
			put_resource(&r, i);
	}
	appendStringInfoChar(&out, ']');

	/* a value that could not be read: the rest, for an AE that names it */
	if (r.bad != NULL)
	{
		appendStringInfoString(&out, ", \"bad\": {\"error\": ");
		escape_json(&out, r.bad);
		appendStringInfoString(&out, ", \"code\": \"102\", \"location\": ");
		escape_json(&out, r.badloc);
		appendStringInfoChar(&out, '}');
	}
	appendStringInfoChar(&out, '}');
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));
	explicit_bzero(out.data, out.len);
	explicit_bzero(r.buf, r.bufcap);
	pfree(out.data);
	pfree(r.buf);
	pfree(r.m);
	PG_RETURN_DATUM(result);
}

PG_FUNCTION_INFO_V1(schedphi_hl7_escape);

/*
 * _hl7_escape(value text) -> text.  Strict.  The value as a field of a
 * message written with the standard encoding characters |^~\&.
 */
Datum
schedphi_hl7_escape(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	size_t		len = VARSIZE_ANY_EXHDR(t);
	sp_hl7_delims d = {'|', '^', '~', '\\', '&', 0};
	size_t		cap = 5 * len + 1;
	char	   *buf = palloc(cap);
	size_t		n = sp_hl7_escape(&d, VARDATA_ANY(t), len, buf, cap);
	text	   *result;

	if (n == (size_t) -1)
		elog(ERROR, "HL7 escape buffer too small");
	result = cstring_to_text_with_len(buf, n);
	pfree(buf);
	PG_RETURN_TEXT_P(result);
}

/*
 * libFuzzer harness for the HL7 v2 codec (src/codec/hl7.c): any input
 * must be accepted or refused without reading or writing out of bounds;
 * what it accepts must have segments inside the input, each with a valid
 * id; every value found at every level must lie inside its segment; undoing
 * a value's escapes never grows it, and escaping what came out and undoing
 * that again gives the same bytes; a DTM read from any component is in
 * range.  The same escape round trip is checked on the raw input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/hl7.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sp_hl7_msg m;
static char unesc[8192];
static char esc[5 * 8192 + 1];
static char again[8192];

static void
roundtrip(const sp_hl7_delims *d, const char *p, size_t len)
{
	size_t		n,
				e,
				b;

	if (len > sizeof(unesc))
		return;
	n = sp_hl7_unescape(d, p, len, unesc, sizeof(unesc));
	if (n == (size_t) -1)
		return;
	if (n > len)
		abort();
	e = sp_hl7_escape(d, unesc, n, esc, sizeof(esc));
	if (e == (size_t) -1)
		abort();				/* 5 * n + 1 always suffices */
	b = sp_hl7_unescape(d, esc, e, again, sizeof(again));
	/* a NUL byte cannot come out of an undone escape, so none goes in */
	if (b != n || memcmp(again, unesc, n) != 0)
		abort();
}

static void
check_dtm(const sp_hl7_span *s)
{
	sp_hl7_dtm	t;

	if (!sp_hl7_parse_dtm(s->p, s->len, &t))
		return;
	if (t.year < 1 || t.year > 9999 || t.month < 1 || t.month > 12 || t.day < 1 || t.day > 31 ||
		t.hour < 0 || t.hour > 23 || t.minute < 0 || t.minute > 59 || t.second < 0 || t.second > 59 ||
		t.usec < 0 || t.usec > 999999 || t.precision < 1 || t.precision > 6 ||
		t.offset_minutes < -720 || t.offset_minutes > 840)
		abort();
}

static void
inside(const sp_hl7_span *v, const sp_hl7_span *seg)
{
	if (v->p < seg->p || v->p + v->len > seg->p + seg->len)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *msg = (const char *) data;
	char		err[256];
	sp_hl7_delims plain = {'|', '^', '~', '\\', '&', 0};

	roundtrip(&plain, msg, size);
	if (!sp_hl7_parse(msg, size, &m, err, sizeof(err)))
	{
		if (memchr(err, '\0', sizeof(err)) == NULL)
			abort();
		return 0;
	}
	if (m.nseg < 1 || m.nseg > SP_HL7_MAX_SEGMENTS || memcmp(m.seg[0].p, "MSH", 3) != 0)
		abort();
	roundtrip(&m.d, msg, size);
	for (int i = 0; i < m.nseg; i++)
	{
		const sp_hl7_span *seg = &m.seg[i];
		int			nf = sp_hl7_nfields(&m, i);

		if (seg->p < msg || seg->p + seg->len > msg + size || seg->len < 3)
			abort();
		if (sp_hl7_find(&m, sp_hl7_seg_id(&m, i), 0) > i)
			abort();
		for (int f = 1; f <= nf + 1 && f <= 64; f++)
		{
			int			reps = sp_hl7_reps(&m, i, f);
			sp_hl7_span v;

			if (sp_hl7_get(&m, i, f, 0, 0, 0, &v))
			{
				if (f > nf)
					abort();
				inside(&v, seg);
				roundtrip(&m.d, v.p, v.len);
			}
			for (int r = 1; r <= reps + 1 && r <= 8; r++)
				for (int c = 1; c <= 12; c++)
				{
					if (!sp_hl7_get(&m, i, f, r, c, 0, &v))
						break;
					inside(&v, seg);
					check_dtm(&v);
					for (int s = 1; s <= 6; s++)
					{
						if (!sp_hl7_get(&m, i, f, r, c, s, &v))
							break;
						inside(&v, seg);
						roundtrip(&m.d, v.p, v.len);
					}
				}
		}
	}
	return 0;
}

/*-------------------------------------------------------------------------
 *
 * hl7.c
 *	  HL7 v2 pipe-and-hat encoding (see hl7.h): one pass to find the
 *	  segments, then values found on demand by their delimiters.  A raw
 *	  delimiter always delimits (data carries its delimiters escaped), so a
 *	  value is found without undoing any escape first.
 *
 *-------------------------------------------------------------------------
 */
#include "codec/hl7.h"

#include <stdio.h>
#include <string.h>

static void
set_err(char *err, size_t errlen, const char *msg)
{
	if (errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

static bool
is_id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A character that may serve as a delimiter: printable ASCII, not a letter,
 * a digit or a space. */
static bool
is_delim_char(char c)
{
	return c > ' ' && c < 0x7F && !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'));
}

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool
sp_hl7_parse(const char *msg, size_t len, sp_hl7_msg *out, char *err, size_t errlen)
{
	const char *p = msg;
	const char *end = msg + len;
	const char *enc;
	size_t		nenc;
	char		all[6];

	out->nseg = 0;
	memset(&out->d, 0, sizeof(out->d));
	while (p < end && (*p == 0x0B || is_blank(*p)))
		p++;
	while (end > p && (end[-1] == 0x1C || is_blank(end[-1])))
		end--;
	if (end - p < 8 || memcmp(p, "MSH", 3) != 0)
	{
		set_err(err, errlen, "the message does not begin with an MSH segment");
		return false;
	}

	/* MSH-1, then MSH-2 up to the next field separator */
	out->d.field = p[3];
	enc = p + 4;
	nenc = 0;
	while (enc + nenc < end && enc[nenc] != out->d.field && enc[nenc] != '\r' && enc[nenc] != '\n')
		nenc++;
	if (nenc != 4 && nenc != 5)
	{
		set_err(err, errlen, "MSH-2 must hold four encoding characters (five from version 2.7)");
		return false;
	}
	out->d.comp = enc[0];
	out->d.rep = enc[1];
	out->d.esc = enc[2];
	out->d.sub = enc[3];
	out->d.trunc = nenc == 5 ? enc[4] : 0;
	all[0] = out->d.field;
	memcpy(all + 1, enc, nenc);
	for (size_t i = 0; i < nenc + 1; i++)
	{
		if (!is_delim_char(all[i]))
		{
			set_err(err, errlen, "an encoding character in MSH-1 or MSH-2 is a letter, a digit, a space or a control character");
			return false;
		}
		for (size_t j = 0; j < i; j++)
			if (all[i] == all[j])
			{
				set_err(err, errlen, "the encoding characters in MSH-1 and MSH-2 are not distinct");
				return false;
			}
	}

	while (p < end)
	{
		const char *q = p;
		size_t		n;

		while (q < end && *q != '\r' && *q != '\n')
			q++;
		n = q - p;
		if (n > 0)
		{
			if (n < 3 || !is_id_char(p[0]) || !is_id_char(p[1]) || !is_id_char(p[2]) ||
				(n > 3 && p[3] != out->d.field))
			{
				if (errlen > 0)
					snprintf(err, errlen, "segment %d does not begin with a segment id (three capital letters or digits) and a field separator",
							 out->nseg + 1);
				return false;
			}
			if (out->nseg == SP_HL7_MAX_SEGMENTS)
			{
				if (errlen > 0)
					snprintf(err, errlen, "the message has more than %d segments", SP_HL7_MAX_SEGMENTS);
				return false;
			}
			out->seg[out->nseg].p = p;
			out->seg[out->nseg].len = n;
			out->nseg++;
		}
		if (q < end && *q == '\r')
			q++;
		if (q < end && *q == '\n')
			q++;
		p = q;
	}
	return true;
}

const char *
sp_hl7_seg_id(const sp_hl7_msg *m, int i)
{
	return m->seg[i].p;
}

int
sp_hl7_find(const sp_hl7_msg *m, const char *id, int from)
{
	for (int i = from < 0 ? 0 : from; i < m->nseg; i++)
		if (memcmp(m->seg[i].p, id, 3) == 0)
			return i;
	return -1;
}

/* The n-th (from 1) piece of [p, p + len) between separators sep. */
static bool
nth(const char *p, size_t len, char sep, int n, sp_hl7_span *out)
{
	const char *e = p + len;
	const char *s = p;
	const char *x;

	if (n < 1)
		return false;
	for (int k = 1; k < n; k++)
	{
		x = memchr(s, sep, e - s);
		if (x == NULL)
			return false;
		s = x + 1;
	}
	x = memchr(s, sep, e - s);
	out->p = s;
	out->len = (x ? x : e) - s;
	return true;
}

static bool
is_msh(const sp_hl7_msg *m, int i)
{
	return memcmp(m->seg[i].p, "MSH", 3) == 0;
}

/* The whole of field (HL7 numbering) of segment i. */
static bool
field_span(const sp_hl7_msg *m, int i, int field, sp_hl7_span *out)
{
	const sp_hl7_span *s;

	if (i < 0 || i >= m->nseg || field < 1)
		return false;
	s = &m->seg[i];
	if (is_msh(m, i))
	{
		if (field == 1)
		{
			/* a later segment may be a bare "MSH": it has no MSH-1 */
			if (s->len < 4)
				return false;
			out->p = s->p + 3;
			out->len = 1;
			return true;
		}
		/* piece 2 is MSH-2, piece k is MSH-k */
		return nth(s->p, s->len, m->d.field, field, out);
	}
	return nth(s->p, s->len, m->d.field, field + 1, out);
}

bool
sp_hl7_get(const sp_hl7_msg *m, int i, int field, int rep, int comp, int sub, sp_hl7_span *out)
{
	sp_hl7_span f;

	if (rep < 0 || comp < 0 || sub < 0 || !field_span(m, i, field, &f))
		return false;
	if (is_msh(m, i) && field <= 2)
	{
		/* the separator and the encoding characters are not split */
		if (rep > 1 || comp > 0 || sub > 0)
			return false;
		*out = f;
		return true;
	}
	if (rep == 0 && comp == 0 && sub == 0)
	{
		*out = f;
		return true;
	}
	if (!nth(f.p, f.len, m->d.rep, rep == 0 ? 1 : rep, &f))
		return false;
	if (comp == 0 && sub == 0)
	{
		*out = f;
		return true;
	}
	if (!nth(f.p, f.len, m->d.comp, comp == 0 ? 1 : comp, &f))
		return false;
	if (sub == 0)
	{
		*out = f;
		return true;
	}
	if (!nth(f.p, f.len, m->d.sub, sub, &f))
		return false;
	*out = f;
	return true;
}

int
sp_hl7_reps(const sp_hl7_msg *m, int i, int field)
{
	sp_hl7_span f;
	int			n = 1;

	if (!field_span(m, i, field, &f) || f.len == 0)
		return 0;
	if (is_msh(m, i) && field <= 2)
		return 1;
	for (size_t k = 0; k < f.len; k++)
		if (f.p[k] == m->d.rep)
			n++;
	return n;
}

int
sp_hl7_nfields(const sp_hl7_msg *m, int i)
{
	const sp_hl7_span *s;
	int			pieces = 1;

	if (i < 0 || i >= m->nseg)
		return 0;
	s = &m->seg[i];
	for (size_t k = 0; k < s->len; k++)
		if (s->p[k] == m->d.field)
			pieces++;
	if (is_msh(m, i))
		return s->len > 3 ? pieces : 0;
	return pieces - 1;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

size_t
sp_hl7_unescape(const sp_hl7_delims *d, const char *in, size_t len, char *out, size_t cap)
{
	size_t		o = 0;
	size_t		i = 0;

	while (i < len)
	{
		const char *close;
		const char *s;
		size_t		n;
		int			put = -1;

		if (in[i] == '\0')
			return (size_t) -1;
		if (in[i] != d->esc ||
			(close = memchr(in + i + 1, d->esc, len - i - 1)) == NULL)
		{
			if (o >= cap)
				return (size_t) -1;
			out[o++] = in[i++];
			continue;
		}
		s = in + i + 1;
		n = close - s;
		i = close - in + 1;
		if (n == 1)
		{
			switch (s[0])
			{
				case 'F':
					put = (unsigned char) d->field;
					break;
				case 'S':
					put = (unsigned char) d->comp;
					break;
				case 'T':
					put = (unsigned char) d->sub;
					break;
				case 'R':
					put = (unsigned char) d->rep;
					break;
				case 'E':
					put = (unsigned char) d->esc;
					break;
				case 'P':
					if (d->trunc)
						put = (unsigned char) d->trunc;
					break;
				default:		/* \H\ \N\ and the like: dropped */
					break;
			}
		}
		else if (n == 3 && (memcmp(s, ".br", 3) == 0 || memcmp(s, ".sp", 3) == 0))
			put = '\n';
		else if (n >= 3 && s[0] == 'X' && (n - 1) % 2 == 0)
		{
			bool		hex = true;

			for (size_t k = 1; k < n; k++)
				if (hexval(s[k]) < 0)
					hex = false;
			if (hex)
			{
				for (size_t k = 1; k < n; k += 2)
				{
					int			b = hexval(s[k]) * 16 + hexval(s[k + 1]);

					if (b == 0)
						return (size_t) -1;
					if (o >= cap)
						return (size_t) -1;
					out[o++] = (char) b;
				}
			}
		}
		/* anything else (\C..\ \M..\ \Z..\ \.in\ ...): dropped */
		if (put >= 0)
		{
			if (o >= cap)
				return (size_t) -1;
			out[o++] = (char) put;
		}
	}
	return o;
}

size_t
sp_hl7_escape(const sp_hl7_delims *d, const char *in, size_t len, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = in[i];
		char		seq[6];
		size_t		n = 0;

		if (c == d->field)
			memcpy(seq, "\0F\0", 3), n = 3;
		else if (c == d->comp)
			memcpy(seq, "\0S\0", 3), n = 3;
		else if (c == d->sub)
			memcpy(seq, "\0T\0", 3), n = 3;
		else if (c == d->rep)
			memcpy(seq, "\0R\0", 3), n = 3;
		else if (c == d->esc)
			memcpy(seq, "\0E\0", 3), n = 3;
		else if (d->trunc && c == d->trunc)
			memcpy(seq, "\0P\0", 3), n = 3;
		else if (c == '\n')
			memcpy(seq, "\0.br\0", 5), n = 5;
		else if ((unsigned char) c < 0x20 || c == 0x7F)
		{
			seq[1] = 'X';
			seq[2] = hex[((unsigned char) c) >> 4];
			seq[3] = hex[((unsigned char) c) & 0xF];
			n = 5;
		}
		if (n == 0)
		{
			if (o + 1 > cap)
				return (size_t) -1;
			out[o++] = c;
			continue;
		}
		seq[0] = seq[n - 1] = d->esc;
		if (o + n > cap)
			return (size_t) -1;
		memcpy(out + o, seq, n);
		o += n;
	}
	return o;
}

static bool
digits(const char *p, const char *e, int n, int *v)
{
	*v = 0;
	if (e - p < n)
		return false;
	for (int i = 0; i < n; i++)
	{
		if (p[i] < '0' || p[i] > '9')
			return false;
		*v = *v * 10 + (p[i] - '0');
	}
	return true;
}

static int
days_in_month(int y, int m)
{
	static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dm[m - 1];
}

bool
sp_hl7_parse_dtm(const char *in, size_t len, sp_hl7_dtm *out)
{
	const char *p = in;
	const char *e = in + len;
	int		   *parts[5];

	memset(out, 0, sizeof(*out));
	out->month = out->day = 1;
	parts[0] = &out->month;
	parts[1] = &out->day;
	parts[2] = &out->hour;
	parts[3] = &out->minute;
	parts[4] = &out->second;
	while (p < e && is_blank(*p))
		p++;
	while (e > p && is_blank(e[-1]))
		e--;
	if (!digits(p, e, 4, &out->year) || out->year < 1)
		return false;
	p += 4;
	out->precision = 1;
	for (int k = 0; k < 5 && p < e && *p >= '0' && *p <= '9'; k++)
	{
		if (!digits(p, e, 2, parts[k]))
			return false;
		p += 2;
		out->precision++;
	}
	if (p < e && *p == '.')
	{
		int			nd = 0;
		int			scale = 100000;

		if (out->precision != 6)
			return false;
		p++;
		while (p < e && *p >= '0' && *p <= '9' && nd < 4)
		{
			out->usec += (*p - '0') * scale;
			scale /= 10;
			p++;
			nd++;
		}
		if (nd == 0)
			return false;
	}
	if (p < e && (*p == '+' || *p == '-'))
	{
		int			sign = *p == '-' ? -1 : 1;
		int			oh,
					om;

		p++;
		/* the offsets in use: -12:00 to +14:00 */
		if (!digits(p, e, 2, &oh) || !digits(p + 2, e, 2, &om) || om > 59 ||
			oh * 60 + om > (sign < 0 ? 12 * 60 : 14 * 60))
			return false;
		p += 4;
		out->has_offset = true;
		out->offset_minutes = sign * (oh * 60 + om);
	}
	if (p != e)
		return false;
	if (out->month < 1 || out->month > 12 || out->day < 1 || out->day > days_in_month(out->year, out->month) ||
		out->hour > 23 || out->minute > 59 || out->second > 59)
		return false;
	return true;
}

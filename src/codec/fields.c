/*-------------------------------------------------------------------------
 *
 * fields.c
 *	  Pure parsers of a patient's contact fields (phone, e-mail, MRN,
 *	  postal code) and of a YYYY-MM-DD birth date: what register_patient,
 *	  find_patient and the bulk import accept, and the normal form they
 *	  store and index.  patient_fields.c raises the errors; this file only
 *	  says yes or no.  Fuzzed standalone (test/fuzz/fuzz_fields.c).
 *
 *-------------------------------------------------------------------------
 */
#include "fields.h"

#include <string.h>

static bool
is_white(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* [*s, *e) without the given leading and trailing characters */
static void
trim(const char **s, const char **e, bool white)
{
	while (*s < *e && (white ? is_white(**s) : **s == ' '))
		(*s)++;
	while (*e > *s && (white ? is_white((*e)[-1]) : (*e)[-1] == ' '))
		(*e)--;
}

/* Copy [s, e) into out (cap bytes) through f; false if it does not fit. */
static bool
copy_mapped(const char *s, const char *e, char *out, size_t cap, char (*f) (char))
{
	size_t		n = (size_t) (e - s);

	if (n + 1 > cap)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = f(s[i]);
	out[n] = '\0';
	return true;
}

static char
to_upper(char c)
{
	return (c >= 'a' && c <= 'z') ? (char) (c - 'a' + 'A') : c;
}

static char
to_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
}

bool
sp_norm_phone(const char *in, size_t len, char *out, size_t cap)
{
	const char *s = in;
	const char *e = in + len;
	size_t		n = 0;

	trim(&s, &e, true);
	if (s < e && *s == '+')
		s++;
	if (s == e)
		return false;
	for (; s < e; s++)
	{
		if (is_digit(*s))
		{
			if (n + 1 >= cap)
				return false;
			out[n++] = *s;
		}
		else if (*s == '\0' || strchr(" ().-", *s) == NULL)
			return false;
	}
	if (n < 7 || n > 15)
		return false;
	out[n] = '\0';
	return true;
}

bool
sp_norm_email(const char *in, size_t len, char *out, size_t cap)
{
	const char *s = in;
	const char *e = in + len;
	const char *at = NULL;
	const char *label;
	int			labels = 0;

	trim(&s, &e, false);
	if (e - s > 254)
		return false;
	for (const char *p = s; p < e; p++)
		if (*p == '@')
		{
			at = p;
			break;
		}
	if (at == NULL || at == s)
		return false;
	/* the local part */
	for (const char *p = s; p < at; p++)
		if (!is_alnum(*p) && (*p == '\0' || strchr(".!#$%&'*+/=?^_`{|}~-", *p) == NULL))
			return false;
	/* the domain: labels of [a-z0-9-], two at least, the last of 2+ letters */
	label = at + 1;
	for (const char *p = at + 1;; p++)
	{
		if (p == e || *p == '.')
		{
			if (p == label)
				return false;
			labels++;
			if (p == e)
				break;
			label = p + 1;
		}
		else if (!is_alnum(*p) && *p != '-')
			return false;
	}
	if (labels < 2 || e - label < 2)
		return false;
	for (const char *p = label; p < e; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
			return false;
	return copy_mapped(s, e, out, cap, to_lower);
}

bool
sp_norm_mrn(const char *in, size_t len, char *out, size_t cap)
{
	const char *s = in;
	const char *e = in + len;

	trim(&s, &e, false);
	if (e - s < 1 || e - s > 64)
		return false;
	for (const char *p = s; p < e; p++)
		if (!is_alnum(*p) && *p != '.' && *p != '_' && *p != '/' && *p != '-')
			return false;
	return copy_mapped(s, e, out, cap, to_upper);
}

bool
sp_norm_zip(const char *in, size_t len, char *out, size_t cap)
{
	const char *s = in;
	const char *e = in + len;

	trim(&s, &e, false);
	if (e - s < 3 || e - s > 10 || !is_alnum(s[0]) || !is_alnum(e[-1]))
		return false;
	for (const char *p = s + 1; p < e - 1; p++)
		if (!is_alnum(*p) && *p != ' ' && *p != '-')
			return false;
	return copy_mapped(s, e, out, cap, to_upper);
}

bool
sp_parse_ymd(const char *in, size_t len, int *year, int *month, int *day, bool *format_ok)
{
	static const int days[2][12] = {
		{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31},
		{31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	};
	const char *s = in;
	const char *e = in + len;
	int			y,
				m,
				d,
				leap;

	*format_ok = false;
	trim(&s, &e, true);
	if (e - s != 10 || s[4] != '-' || s[7] != '-')
		return false;
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && !is_digit(s[i]))
			return false;
	*format_ok = true;
	y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
	m = (s[5] - '0') * 10 + (s[6] - '0');
	d = (s[8] - '0') * 10 + (s[9] - '0');
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (y < 1 || m < 1 || m > 12 || d < 1 || d > days[leap][m - 1])
		return false;
	*year = y;
	*month = m;
	*day = d;
	return true;
}

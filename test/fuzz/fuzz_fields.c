/*
 * libFuzzer harness for the patient field parsers (src/codec/fields.c):
 * any input must be accepted or refused without reading or writing out of
 * bounds; what is accepted must be in its normal form (phone: 7 to 15
 * digits; e-mail: lower case with one @; MRN and ZIP: upper case, within
 * their lengths) and normalising it again must give it back unchanged; a
 * date accepted must be a day of the calendar and read back the same.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/fields.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef bool (*norm_fn) (const char *, size_t, char *, size_t);

/* Normalise, check the output is terminated in its buffer, and idempotent. */
static const char *
check(norm_fn f, const char *in, size_t len, char *out, size_t cap)
{
	char		again[300];

	if (!f(in, len, out, cap))
		return NULL;
	if (memchr(out, '\0', cap) == NULL)
		abort();
	if (!f(out, strlen(out), again, sizeof(again)) || strcmp(out, again) != 0)
		abort();
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *) data;
	char		out[300];
	const char *r;
	int			y,
				m,
				d;
	bool		format_ok;

	if (size > 280)
		return 0;
	if ((r = check(sp_norm_phone, in, size, out, sizeof(out))) != NULL)
	{
		size_t		n = strlen(r);

		if (n < 7 || n > 15 || strspn(r, "0123456789") != n)
			abort();
	}
	if ((r = check(sp_norm_email, in, size, out, sizeof(out))) != NULL)
	{
		const char *at = strchr(r, '@');

		if (at == NULL || strchr(at + 1, '@') != NULL || strlen(r) > 254)
			abort();
		for (const char *p = r; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				abort();
	}
	if ((r = check(sp_norm_mrn, in, size, out, sizeof(out))) != NULL)
	{
		size_t		n = strlen(r);

		if (n < 1 || n > 64 || strspn(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-") != n)
			abort();
	}
	if ((r = check(sp_norm_zip, in, size, out, sizeof(out))) != NULL)
	{
		size_t		n = strlen(r);

		if (n < 3 || n > 10 || strspn(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -") != n)
			abort();
	}
	/* a short buffer is refused, never overrun */
	(void) sp_norm_email(in, size, out, 4);
	(void) sp_norm_phone(in, size, out, 4);
	if (sp_parse_ymd(in, size, &y, &m, &d, &format_ok))
	{
		char		back[16];
		int			y2,
					m2,
					d2;
		bool		ok2;

		if (!format_ok || y < 1 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31)
			abort();
		snprintf(back, sizeof(back), "%04d-%02d-%02d", y, m, d);
		if (!sp_parse_ymd(back, strlen(back), &y2, &m2, &d2, &ok2) || y2 != y || m2 != m || d2 != d)
			abort();
	}
	return 0;
}

/*
 * libFuzzer harness for the JWT parser (src/codec/jose.c): any input must
 * be accepted or refused without reading or writing out of bounds, every
 * string it returns must be terminated within its buffer and be valid
 * UTF-8 without control characters, and what it accepts must have three
 * parts and a signing input inside the token.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/jose.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_terminated(const char *s, size_t cap)
{
	if (memchr(s, '\0', cap) == NULL)
		abort();
}

/*
 * A claim must be UTF-8 (checked here by a second, simpler reading: the
 * length from the lead byte, continuation bytes, no overlong form, no
 * surrogate) with no C0/C1 control character or DEL.
 */
static void
check_text(const char *s, size_t cap)
{
	const unsigned char *p = (const unsigned char *) s;

	check_terminated(s, cap);
	while (*p)
	{
		unsigned	cp;
		int			n;

		if (*p < 0x80)
			cp = *p, n = 0;
		else if ((*p & 0xE0) == 0xC0)
			cp = *p & 0x1F, n = 1;
		else if ((*p & 0xF0) == 0xE0)
			cp = *p & 0x0F, n = 2;
		else if ((*p & 0xF8) == 0xF0)
			cp = *p & 0x07, n = 3;
		else
			abort();
		for (int i = 1; i <= n; i++)
		{
			if ((p[i] & 0xC0) != 0x80)
				abort();
			cp = (cp << 6) | (p[i] & 0x3F);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
			cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
			abort();
		p += n + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sp_jwt	   *jwt = malloc(sizeof(sp_jwt));
	char		err[128];
	uint8_t		buf[64];
	size_t		n;

	if (jwt == NULL)
		return 0;
	if (sp_jwt_parse((const char *) data, size, jwt, err, sizeof(err)))
	{
		check_text(jwt->alg, sizeof(jwt->alg));
		check_text(jwt->kid, sizeof(jwt->kid));
		check_text(jwt->iss, sizeof(jwt->iss));
		check_text(jwt->sub, sizeof(jwt->sub));
		check_text(jwt->tenant, sizeof(jwt->tenant));
		check_text(jwt->role, sizeof(jwt->role));
		check_text(jwt->practitioner, sizeof(jwt->practitioner));
		if (jwt->naud < 0 || jwt->naud > SP_JWT_MAX_AUD || jwt->namr < 0 || jwt->namr > SP_JWT_MAX_AMR)
			abort();
		for (int i = 0; i < jwt->naud; i++)
			check_text(jwt->aud[i], SP_JWT_STR);
		for (int i = 0; i < jwt->namr; i++)
			check_text(jwt->amr[i], sizeof(jwt->amr[i]));
		if (jwt->signing_input_len >= size || jwt->siglen > SP_JWT_MAX_SIG)
			abort();
	}
	else
		check_terminated(err, sizeof(err));
	(void) sp_b64url_decode((const char *) data, size, buf, sizeof(buf), &n);
	free(jwt);
	return 0;
}

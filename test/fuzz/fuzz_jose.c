/*
 * libFuzzer harness for the JWT parser (src/codec/jose.c): any input must
 * be accepted or refused without reading or writing out of bounds, every
 * string it returns must be terminated within its buffer, and what it
 * accepts must have three parts and a signing input inside the token.
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
		check_terminated(jwt->alg, sizeof(jwt->alg));
		check_terminated(jwt->iss, sizeof(jwt->iss));
		check_terminated(jwt->sub, sizeof(jwt->sub));
		check_terminated(jwt->tenant, sizeof(jwt->tenant));
		check_terminated(jwt->role, sizeof(jwt->role));
		if (jwt->naud < 0 || jwt->naud > SP_JWT_MAX_AUD || jwt->namr < 0 || jwt->namr > SP_JWT_MAX_AMR)
			abort();
		for (int i = 0; i < jwt->naud; i++)
			check_terminated(jwt->aud[i], SP_JWT_STR);
		if (jwt->signing_input_len >= size || jwt->siglen > SP_JWT_MAX_SIG)
			abort();
	}
	else
		check_terminated(err, sizeof(err));
	(void) sp_b64url_decode((const char *) data, size, buf, sizeof(buf), &n);
	free(jwt);
	return 0;
}

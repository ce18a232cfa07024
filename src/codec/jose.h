/*-------------------------------------------------------------------------
 *
 * jose.h
 *	  Compact JWS (JWT) parsing: base64url, the header and the claims that
 *	  schedphi reads.  No PostgreSQL dependency, no allocation: every field
 *	  has a fixed bound, so that the parser can be fuzzed standalone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_JOSE_H
#define SCHEDPHI_JOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SP_JWT_MAX_LEN		8192
#define SP_JWT_MAX_SIG		512
#define SP_JWT_STR			256
#define SP_JWT_MAX_AUD		8
#define SP_JWT_MAX_AMR		16

typedef struct sp_jwt
{
	/* header */
	char		alg[16];
	char		kid[SP_JWT_STR];
	/* claims */
	char		iss[SP_JWT_STR];
	char		sub[SP_JWT_STR];
	int			naud;
	char		aud[SP_JWT_MAX_AUD][SP_JWT_STR];
	bool		has_exp,
				has_nbf,
				has_iat;
	int64_t		exp,
				nbf,
				iat;
	int			namr;
	char		amr[SP_JWT_MAX_AMR][32];
	char		tenant[64];
	char		role[64];
	char		practitioner[64];
	/* what the signature covers, and the signature */
	size_t		signing_input_len;
	uint8_t		sig[SP_JWT_MAX_SIG];
	size_t		siglen;
} sp_jwt;

/*
 * Parse a compact JWS.  Returns true and fills *out, or false with a
 * message in err (which never quotes the token).  Checks only the form:
 * the caller verifies the signature over token[0 .. signing_input_len) and
 * every claim.
 */
extern bool sp_jwt_parse(const char *token, size_t len, sp_jwt *out, char *err, size_t errlen);

/* Strict base64url without padding; false on any other character. */
extern bool sp_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);

#endif							/* SCHEDPHI_JOSE_H */

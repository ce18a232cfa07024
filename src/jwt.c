/*-------------------------------------------------------------------------
 *
 * jwt.c
 *	  Verify identity-provider tokens (compact JWS) and assume their actor.
 *
 * The issuer's key decides the algorithm: an RSA public key verifies RS256
 * only, an EC P-256 key ES256 only (JOSE raw R||S signatures), an HMAC
 * secret HS256 only (constant-time comparison).  "alg": "none", and HS256
 * with a public key as the secret (algorithm confusion), are refused
 * because the header's alg must equal the key's.  Then iss (a registered
 * issuer of the claimed tenant), aud, exp, nbf, iat (60 s of clock skew),
 * the lifetime exp - iat (schedphi.max_token_lifetime) and, for roles that
 * read PHI while schedphi.require_mfa is on, an amr value that shows a
 * second factor.  Every refusal is 42501 and names the rule, never the
 * token's content.  Parsing is codec/jose.c (fuzzed standalone).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "common/hashfn.h"
#include "utils/json.h"

#include "codec/jose.h"
#include "actor.h"
#include "audit.h"
#include "common.h"
#include "sealed.h"

#define CLOCK_SKEW	60
/*
 * An HS256 secret with fewer distinct bytes than this is not random (all
 * zeros, a repeated pattern, a short word): the chance that 32 random
 * bytes show fewer than 12 distinct values is below 1e-20.
 */
#define HS256_MIN_DISTINCT	12

static SPIPlanPtr issuer_plan = NULL;
static SPIPlanPtr practitioner_plan = NULL;

/* Refuse the token: recorded in the audit log, then 42501 naming the rule. */
static void
reject(const char *rule)
{
	schedphi_audit_deny(NULL, ERRCODE_INSUFFICIENT_PRIVILEGE, psprintf("token rejected: %s", rule), NULL, NULL);
}

/* Load a PEM public key; NULL if it is not one. */
static EVP_PKEY *
load_public_key(const char *pem)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	EVP_PKEY   *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	return pkey;
}

/* "rsa" (2048 bits or more), "ec" (P-256), or NULL for anything else. */
static const char *
public_key_kind(EVP_PKEY *pkey)
{
	if (EVP_PKEY_is_a(pkey, "RSA"))
		return EVP_PKEY_get_bits(pkey) >= 2048 ? "rsa" : NULL;
	if (EVP_PKEY_is_a(pkey, "EC"))
	{
		char		curve[64];
		size_t		len;

		if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof(curve), &len) == 1 &&
			strcmp(curve, "prime256v1") == 0)
			return "ec";
	}
	return NULL;
}

PG_FUNCTION_INFO_V1(schedphi_key_kind);

/*
 * _key_kind(key text) -> text: 'rsa' or 'ec' for a PEM public key, 'hs256'
 * for "hs256:" + base64 of a secret of at least 32 bytes that looks random;
 * 22023 otherwise (the message never repeats the key).
 */
Datum
schedphi_key_kind(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *kind = NULL;
	bool		weak = false;

	if (strncmp(key, "hs256:", 6) == 0)
	{
		size_t		n = strlen(key + 6);
		uint8	   *buf = palloc(n + 1);
		int			len = EVP_DecodeBlock(buf, (const unsigned char *) key + 6, (int) n);

		/* EVP_DecodeBlock counts padding as data: subtract it */
		if (len > 0 && n >= 1 && key[6 + n - 1] == '=')
			len--;
		if (len > 0 && n >= 2 && key[6 + n - 2] == '=')
			len--;
		if (len >= 32 && n % 4 == 0)
		{
			bool		seen[256] = {false};
			int			distinct = 0;

			for (int i = 0; i < len; i++)
				if (!seen[buf[i]])
				{
					seen[buf[i]] = true;
					distinct++;
				}
			explicit_bzero(seen, sizeof(seen));
			weak = distinct < HS256_MIN_DISTINCT;
			kind = "hs256";
		}
		explicit_bzero(buf, n + 1);
	}
	else
	{
		EVP_PKEY   *pkey = load_public_key(key);

		if (pkey != NULL)
			kind = public_key_kind(pkey);
		EVP_PKEY_free(pkey);
	}
	explicit_bzero(key, strlen(key));
	if (kind == NULL)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("key must be a PEM public key (RSA of 2048 bits or more, or EC P-256) or hs256: and a base64 secret of 32 bytes or more")));
	if (weak)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("the hs256 secret is not random"),
				 errdetail("It has fewer than %d distinct byte values; a random secret of 32 bytes has about 30.",
						   HS256_MIN_DISTINCT),
				 errhint("Use the secret your identity provider generated, or 32 bytes from a random source (openssl rand -base64 32).")));
	PG_RETURN_TEXT_P(cstring_to_text(kind));
}

/*
 * Parsing a PEM key costs more than verifying a signature with it: each
 * backend keeps the keys of the issuers it has seen, by issuer id and the
 * PEM text's hash (a re-registered key is parsed again).  Public keys only.
 */
#define KEY_CACHE_SIZE 16

typedef struct CachedKey
{
	pg_uuid_t	issuer;
	uint32		pem_hash;
	EVP_PKEY   *pkey;
} CachedKey;

static CachedKey key_cache[KEY_CACHE_SIZE];
static int	key_cache_next = 0;

static EVP_PKEY *
cached_public_key(const pg_uuid_t *issuer, const char *pem)
{
	uint32		h = hash_bytes((const unsigned char *) pem, (int) strlen(pem));
	CachedKey  *slot;
	EVP_PKEY   *pkey;

	for (int i = 0; i < KEY_CACHE_SIZE; i++)
		if (key_cache[i].pkey != NULL && key_cache[i].pem_hash == h &&
			memcmp(key_cache[i].issuer.data, issuer->data, UUID_LEN) == 0)
			return key_cache[i].pkey;
	pkey = load_public_key(pem);
	if (pkey == NULL)
		return NULL;
	slot = &key_cache[key_cache_next];
	key_cache_next = (key_cache_next + 1) % KEY_CACHE_SIZE;
	EVP_PKEY_free(slot->pkey);
	slot->issuer = *issuer;
	slot->pem_hash = h;
	slot->pkey = pkey;
	return pkey;
}

static bool
verify_signature(EVP_PKEY *pkey, const char *md, const uint8 *sig, size_t siglen,
				 const char *msg, size_t msglen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool		ok = ctx != NULL &&
		EVP_DigestVerifyInit_ex(ctx, NULL, md, NULL, NULL, pkey, NULL) == 1 &&
		EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *) msg, msglen) == 1;

	EVP_MD_CTX_free(ctx);
	return ok;
}

/* ES256: JOSE's raw R||S (64 bytes) to the DER form OpenSSL verifies. */
static bool
verify_es256(EVP_PKEY *pkey, const uint8 *sig, size_t siglen, const char *msg, size_t msglen)
{
	ECDSA_SIG  *es;
	BIGNUM	   *r,
			   *s;
	unsigned char *der = NULL;
	int			derlen;
	bool		ok;

	if (siglen != 64)
		return false;
	es = ECDSA_SIG_new();
	r = BN_bin2bn(sig, 32, NULL);
	s = BN_bin2bn(sig + 32, 32, NULL);
	if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1)
	{
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return false;
	}
	derlen = i2d_ECDSA_SIG(es, &der);
	ok = derlen > 0 && verify_signature(pkey, "SHA256", der, (size_t) derlen, msg, msglen);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	return ok;
}

static bool
verify_hs256(const uint8 *secret, size_t secretlen, const uint8 *sig, size_t siglen,
			 const char *msg, size_t msglen)
{
	EVP_MAC    *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM	params[2];
	uint8		expect[32];
	size_t		len = 0;
	bool		ok;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	ok = ctx != NULL &&
		EVP_MAC_init(ctx, secret, secretlen, params) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) msg, msglen) == 1 &&
		EVP_MAC_final(ctx, expect, &len, sizeof(expect)) == 1 &&
		len == 32 && siglen == 32 && CRYPTO_memcmp(expect, sig, 32) == 0;
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	explicit_bzero(expect, sizeof(expect));
	return ok;
}

static bool
parse_uuid(const char *s, pg_uuid_t *out)
{
	int			n = 0;

	for (const char *p = s; *p; p++)
	{
		int			v;

		if (*p == '-' && (p - s == 8 || p - s == 13 || p - s == 18 || p - s == 23))
			continue;
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			v = *p - 'a' + 10;
		else if (*p >= 'A' && *p <= 'F')
			v = *p - 'A' + 10;
		else
			return false;
		if (n >= 32)
			return false;
		if (n % 2 == 0)
			out->data[n / 2] = (uint8) (v << 4);
		else
			out->data[n / 2] |= (uint8) v;
		n++;
	}
	return n == 32 && strlen(s) == 36;
}

static const char *
short_role(const char *role)
{
	static const char *const roles[] = {"admin", "scheduler", "clinician", "billing", "support",
	"analyst", "integration", "auditor", NULL};
	const char *r = strncmp(role, "schedphi_", 9) == 0 ? role + 9 : role;

	for (int i = 0; roles[i]; i++)
		if (strcmp(r, roles[i]) == 0)
			return roles[i];
	return NULL;
}

static bool
shows_mfa(const sp_jwt *jwt)
{
	static const char *const factors[] = {"mfa", "otp", "hwk", "swk", "fpt", "face", "iris",
	"retina", "vbm", "sc", NULL};

	for (int i = 0; i < jwt->namr; i++)
		for (int j = 0; factors[j]; j++)
			if (strcmp(jwt->amr[i], factors[j]) == 0)
				return true;
	return false;
}

PG_FUNCTION_INFO_V1(schedphi_assume_token);

/*
 * _assume_token(token text, scope text) -> void
 * Verify the token and make its actor the context of this transaction or
 * session.  Strict.
 */
Datum
schedphi_assume_token(PG_FUNCTION_ARGS)
{
	text	   *tok = PG_GETARG_TEXT_PP(0);
	char	   *scope = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const char *token = VARDATA_ANY(tok);
	size_t		toklen = VARSIZE_ANY_EXHDR(tok);
	sp_jwt	   *jwt = palloc0(sizeof(sp_jwt));
	char		err[128];
	char		rule[192];
	SchedphiActor a;
	const char *role;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];
	bool		isnull;
	char	   *kind;
	char	   *audience;
	bool		verified = false;
	int64		now = (int64) timestamptz_to_time_t(GetCurrentTimestamp());
	HeapTuple	row;
	TupleDesc	desc;

	if (strcmp(scope, "transaction") != 0 && strcmp(scope, "session") != 0)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("scope must be transaction or session")));
	if (strcmp(scope, "session") == 0 && !schedphi_allow_session_scope)
		schedphi_audit_deny(NULL, ERRCODE_INSUFFICIENT_PRIVILEGE, "token rejected: session scope rule",
							"A session-scope context outlives the transaction; behind a transaction pool the next client would run as this actor.",
							"Call assume(token) in every transaction, or have a superuser set schedphi.allow_session_scope = on for a login that never goes through a transaction pool.");
	if (!sp_jwt_parse(token, toklen, jwt, err, sizeof(err)))
	{
		snprintf(rule, sizeof(rule), "malformed (%s)", err);
		reject(rule);
	}
	memset(&a, 0, sizeof(a));
	if (!parse_uuid(jwt->tenant, &a.tenant))
		reject("claim schedphi_tenant is missing or not a uuid");
	role = short_role(jwt->role);
	if (role == NULL)
		reject("claim schedphi_role is missing or not a schedphi role");
	if (jwt->sub[0] == '\0')
		reject("claim sub is missing");
	if (jwt->iss[0] == '\0')
		reject("claim iss is missing");

	/* the issuer, registered for the claimed tenant */
	values[0] = UUIDPGetDatum(&a.tenant);
	values[1] = CStringGetTextDatum(jwt->iss);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&issuer_plan,
					   "SELECT i.id, i.audience, i.key_kind, i.public_key, i.secret "
					   "FROM schedphi.issuer i WHERE i.tenant = $1 AND i.issuer = $2", 2, types);
	if (SPI_execute_plan(issuer_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: issuer query failed");
	if (SPI_processed == 0)
		reject("unknown issuer for the tenant");
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	audience = SPI_getvalue(row, desc, 2);
	kind = SPI_getvalue(row, desc, 3);

	/* the key decides the algorithm */
	if (!((strcmp(kind, "rsa") == 0 && strcmp(jwt->alg, "RS256") == 0) ||
		  (strcmp(kind, "ec") == 0 && strcmp(jwt->alg, "ES256") == 0) ||
		  (strcmp(kind, "hs256") == 0 && strcmp(jwt->alg, "HS256") == 0)))
		reject("alg does not match the issuer's key");
	if (strcmp(kind, "hs256") == 0)
	{
		pg_uuid_t  *issuer_id = DatumGetUUIDP(SPI_getbinval(row, desc, 1, &isnull));
		Datum		sealed_datum = SPI_getbinval(row, desc, 5, &isnull);
		bytea	   *sealed;
		text	   *b64;
		uint8	   *secret;
		int			n;
		size_t		b64len;

		if (isnull)
			elog(ERROR, "schedphi: HS256 issuer without a secret");
		sealed = DatumGetByteaPP(sealed_datum);
		b64 = schedphi_unseal(sealed, &a.tenant, "issuer", "secret", issuer_id);
		b64len = VARSIZE(b64) - VARHDRSZ;
		secret = palloc(b64len + 1);
		n = EVP_DecodeBlock(secret, (const unsigned char *) VARDATA(b64), (int) b64len);
		if (n > 0 && b64len >= 1 && VARDATA(b64)[b64len - 1] == '=')
			n--;
		if (n > 0 && b64len >= 2 && VARDATA(b64)[b64len - 2] == '=')
			n--;
		verified = n >= 32 && verify_hs256(secret, (size_t) n, jwt->sig, jwt->siglen, token,
										   jwt->signing_input_len);
		explicit_bzero(secret, b64len + 1);
		explicit_bzero(VARDATA(b64), b64len);
	}
	else
	{
		char	   *pem = SPI_getvalue(row, desc, 4);
		EVP_PKEY   *pkey = pem == NULL ? NULL :
			cached_public_key(DatumGetUUIDP(SPI_getbinval(row, desc, 1, &isnull)), pem);

		if (pkey == NULL)
			elog(ERROR, "schedphi: a registered issuer key does not load");
		if (strcmp(kind, "rsa") == 0)
			verified = verify_signature(pkey, "SHA256", jwt->sig, jwt->siglen, token, jwt->signing_input_len);
		else
			verified = verify_es256(pkey, jwt->sig, jwt->siglen, token, jwt->signing_input_len);
	}
	if (!verified)
		reject("signature does not verify");

	/* audience, times, lifetime */
	{
		bool		aud_ok = false;

		for (int i = 0; i < jwt->naud; i++)
			if (strcmp(jwt->aud[i], audience) == 0)
				aud_ok = true;
		if (!aud_ok)
			reject("wrong audience");
	}
	if (!jwt->has_exp || !jwt->has_iat)
		reject("claims exp and iat are required");
	if (jwt->exp <= now - CLOCK_SKEW)
		reject("expired");
	if (jwt->has_nbf && jwt->nbf > now + CLOCK_SKEW)
		reject("not yet valid");
	if (jwt->iat > now + CLOCK_SKEW)
		reject("issued in the future");
	if (jwt->exp <= jwt->iat || jwt->exp - jwt->iat > schedphi_max_token_lifetime)
		reject("lifetime longer than schedphi.max_token_lifetime");

	/* multi-factor authentication for roles that read PHI */
	if (schedphi_require_mfa &&
		(strcmp(role, "scheduler") == 0 || strcmp(role, "clinician") == 0 ||
		 strcmp(role, "billing") == 0 || strcmp(role, "integration") == 0) &&
		!shows_mfa(jwt))
		reject("MFA rule (amr shows no second factor)");

	/* a clinician acts for one practitioner of the tenant */
	if (strcmp(role, "clinician") == 0)
	{
		Oid			ptypes[2] = {UUIDOID, UUIDOID};
		Datum		pvalues[2];

		if (!parse_uuid(jwt->practitioner, &a.practitioner))
			reject("claim schedphi_practitioner is required for a clinician");
		pvalues[0] = UUIDPGetDatum(&a.tenant);
		pvalues[1] = UUIDPGetDatum(&a.practitioner);
		schedphi_keep_plan(&practitioner_plan,
						   "SELECT 1 FROM schedphi.actor a WHERE a.tenant = $1 AND a.id = $2 "
						   "AND a.kind = 'practitioner'", 2, ptypes);
		if (SPI_execute_plan(practitioner_plan, pvalues, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: practitioner query failed");
		if (SPI_processed == 0)
			reject("claim schedphi_practitioner is not a practitioner of the tenant");
		a.has_practitioner = true;
	}
	SPI_finish();

	strlcpy(a.sub, jwt->sub, sizeof(a.sub));
	strlcpy(a.issuer, jwt->iss, sizeof(a.issuer));
	strlcpy(a.role, role, sizeof(a.role));
	a.session_scope = strcmp(scope, "session") == 0;
	a.mfa = shows_mfa(jwt);
	/* the same allowance for clock skew as the check of exp above */
	a.ends = time_t_to_timestamptz((pg_time_t) (jwt->exp + CLOCK_SKEW));
	schedphi_set_actor(&a);
	explicit_bzero(jwt, sizeof(sp_jwt));
	{
		StringInfoData js;

		initStringInfo(&js);
		appendStringInfoString(&js, "{\"issuer\": ");
		escape_json(&js, a.issuer);
		appendStringInfoString(&js, ", \"scope\": ");
		escape_json(&js, scope);
		appendStringInfoChar(&js, '}');
		/*
		 * Not waited for: the queue is committed in order, so the wait of
		 * the first read of PHI (or denial, or explicit event) after this
		 * covers it, and writes carry the actor in their own records.
		 */
		schedphi_audit_record("assume", &a.tenant, NULL, NULL, NULL, js.data, false);
	}
	PG_RETURN_VOID();
}

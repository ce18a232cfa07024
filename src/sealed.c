/*-------------------------------------------------------------------------
 *
 * sealed.c
 *	  The schedphi.sealed type, sealing and opening PHI fields, and blind
 *	  indexes.
 *
 * A sealed value is AES-256-GCM ciphertext under a tenant's data key, with
 * a 96-bit random nonce and associated data that binds it to (tenant,
 * table, column, row id): copied to another row, column or tenant it does
 * not open.  Its text form ("spv1:" + base64, see codec/sealed_codec.h) is
 * what pg_dump writes and never shows plaintext; there are no comparison
 * operators, so nothing can sort or group by a sealed value.
 *
 * Opening is refused unless the actor (an assumed token, or else the
 * session user's membership) reads PHI in the tenant, and a purpose of use
 * is set for the transaction: a superuser sees ciphertext like everyone
 * else (the row-level-security work refines this into the full matrix).
 *
 * Blind indexes are HMAC-SHA-256 of a normalised value under a key derived
 * with HKDF from the tenant's index data key, one key per field (keys.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "portability/instr_time.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "codec/sealed_codec.h"
#include "actor.h"
#include "audit.h"
#include "common.h"
#include "keys.h"
#include "logmask.h"
#include "sealed.h"

#define MAX_AAD		(UUID_LEN * 2 + 2 * 64 + 4)

static SPIPlanPtr reveal_plan = NULL;
static EVP_MAC *hmac = NULL;
static EVP_MAC_CTX *hmac_ctx = NULL;
static LocalTransactionId reveal_lxid = InvalidLocalTransactionId;
static pg_uuid_t reveal_tenant;
static Oid	reveal_user = InvalidOid;
static uint64 reveal_generation = 0;

/* The training rule's yes, remembered like the reveal check's. */
static SPIPlanPtr training_plan = NULL;
static LocalTransactionId training_lxid = InvalidLocalTransactionId;
static pg_uuid_t training_tenant;
static Oid	training_user = InvalidOid;
static uint64 training_generation = 0;

static void check_training(const pg_uuid_t *tenant);

/* ---------------------------------------------------------------- the type */

static void
report_bad_sealed(sp_status st)
{
	/* never echo the input: it may be a key or a value pasted by mistake */
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type schedphi.sealed"),
			 errdetail("%s", sp_status_detail(st))));
}

PG_FUNCTION_INFO_V1(schedphi_sealed_in);

Datum
schedphi_sealed_in(PG_FUNCTION_ARGS)
{
	char	   *text = PG_GETARG_CSTRING(0);
	size_t		len = strlen(text);
	bytea	   *out;
	size_t		outlen;
	sp_status	st;

	if (len > sp_sealed_text_len(SP_SEALED_MAX_BIN))
		report_bad_sealed(SP_ERR_LENGTH);
	out = palloc(VARHDRSZ + len);	/* base64 decodes shorter */
	st = sp_sealed_from_text(text, len, (uint8 *) VARDATA(out), len, &outlen);
	if (st != SP_OK)
		report_bad_sealed(st);
	SET_VARSIZE(out, VARHDRSZ + outlen);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(schedphi_sealed_out);

Datum
schedphi_sealed_out(PG_FUNCTION_ARGS)
{
	bytea	   *v = PG_GETARG_BYTEA_PP(0);
	size_t		n = VARSIZE_ANY_EXHDR(v);
	char	   *out = palloc(sp_sealed_text_len(n) + 1);
	size_t		len = sp_sealed_to_text((const uint8 *) VARDATA_ANY(v), n, out);

	out[len] = '\0';
	PG_RETURN_CSTRING(out);
}

PG_FUNCTION_INFO_V1(schedphi_sealed_recv);

Datum
schedphi_sealed_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			n = buf->len - buf->cursor;
	bytea	   *out;
	sp_sealed_view view;
	sp_status	st;

	if (n < 0 || n > SP_SEALED_MAX_BIN)
		report_bad_sealed(SP_ERR_LENGTH);
	out = palloc(VARHDRSZ + n);
	SET_VARSIZE(out, VARHDRSZ + n);
	pq_copymsgbytes(buf, VARDATA(out), n);
	st = sp_sealed_parse((const uint8 *) VARDATA(out), n, &view);
	if (st != SP_OK)
		report_bad_sealed(st);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(schedphi_sealed_send);

Datum
schedphi_sealed_send(PG_FUNCTION_ARGS)
{
	bytea	   *v = PG_GETARG_BYTEA_PP(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbytes(&buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(schedphi_sealed_key_id);

/* _sealed_key_id(sealed) -> int: the data key a value is sealed under. */
Datum
schedphi_sealed_key_id(PG_FUNCTION_ARGS)
{
	bytea	   *v = PG_GETARG_BYTEA_PP(0);
	sp_sealed_view view;
	sp_status	st = sp_sealed_parse((const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), &view);

	if (st != SP_OK)
		report_bad_sealed(st);
	PG_RETURN_INT32((int32) view.dek_id);
}

/* ------------------------------------------------------------ seal / open */

static void
append_text(uint8 *aad, int *n, const text *t)
{
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len > 64)
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("table or column name too long")));
	aad[(*n)++] = (uint8) len;
	memcpy(aad + *n, VARDATA_ANY(t), len);
	*n += len;
}

/* tenant || len table || len column || row id */
static int
field_aad(uint8 *aad, const pg_uuid_t *tenant, const text *tbl, const text *col, const pg_uuid_t *row)
{
	int			n = 0;

	memcpy(aad, tenant->data, UUID_LEN);
	n = UUID_LEN;
	append_text(aad, &n, tbl);
	append_text(aad, &n, col);
	memcpy(aad + n, row->data, UUID_LEN);
	return n + UUID_LEN;
}

/*
 * Random 96-bit nonces, drawn from OpenSSL's CSPRNG 256 at a time: one
 * RAND_bytes call costs several times an AES-GCM encryption of a short
 * field.  Nonces are not secret (they are stored with the ciphertext), and
 * a nonce is never handed out twice.
 */
static uint8 nonce_pool[SP_NONCE_LEN * 256];
static int	nonce_left = 0;
static int	nonce_pid = 0;

static void
next_nonce(uint8 *nonce)
{
	/* a forked process never inherits its parent's unused nonces */
	if (nonce_left == 0 || nonce_pid != MyProcPid)
	{
		nonce_pid = MyProcPid;
		sp_random(nonce_pool, sizeof(nonce_pool));
		nonce_left = 256;
	}
	nonce_left--;
	memcpy(nonce, nonce_pool + nonce_left * SP_NONCE_LEN, SP_NONCE_LEN);
	memset(nonce_pool + nonce_left * SP_NONCE_LEN, 0, SP_NONCE_LEN);
}

/* Seal n bytes of plaintext for a place under the tenant's active key. */
static bytea *
seal_bytes(const pg_uuid_t *tenant, const text *tbl, const text *col, const pg_uuid_t *row,
		   const uint8 *plain, int n)
{
	uint8		aad[MAX_AAD];
	int			aadlen;
	int32		dek_id;
	const uint8 *dek;
	bytea	   *out;
	uint8	   *p;

	if (n > SP_SEALED_MAX_PLAIN)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("value too long to seal"),
				 errdetail("A sealed field holds at most %d bytes.", SP_SEALED_MAX_PLAIN)));
	aadlen = field_aad(aad, tenant, tbl, col, row);
	dek_id = schedphi_seal_key(tenant, "phi");
	dek = schedphi_data_key(tenant, dek_id);

	out = palloc(VARHDRSZ + SP_SEALED_HEADER + n);
	SET_VARSIZE(out, VARHDRSZ + SP_SEALED_HEADER + n);
	p = (uint8 *) VARDATA(out);
	sp_sealed_header(p, (uint32) dek_id);
	next_nonce(p + 5);
	if (!sp_gcm_encrypt(dek, p + 5, aad, aadlen, plain, n,
						p + SP_SEALED_HEADER, p + 5 + SP_NONCE_LEN))
		elog(ERROR, "schedphi: encryption failed");
	return out;
}

/*
 * Open a sealed value for a place into a new text; data_corrupted if it
 * does not belong there or was altered.  No permission check: callers do.
 * With or_null, a malformed value, one that does not open, or one under a
 * data key that is missing or destroyed gives NULL instead (a missing
 * master key is an error either way).
 */
static text *
open_bytes(const bytea *v, const pg_uuid_t *tenant, const text *tbl, const text *col,
		   const pg_uuid_t *row, bool or_null)
{
	sp_sealed_view view;
	sp_status	st;
	uint8		aad[MAX_AAD];
	int			aadlen;
	const uint8 *dek;
	const char *why = NULL;
	text	   *out;

	st = sp_sealed_parse((const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), &view);
	if (st != SP_OK)
	{
		if (or_null)
			return NULL;
		report_bad_sealed(st);
	}
	aadlen = field_aad(aad, tenant, tbl, col, row);
	dek = schedphi_data_key_ext(tenant, (int32) view.dek_id, or_null ? &why : NULL);
	if (dek == NULL)
		return NULL;
	out = palloc(VARHDRSZ + view.ct_len);
	SET_VARSIZE(out, VARHDRSZ + view.ct_len);
	if (!sp_gcm_decrypt(dek, view.nonce, aad, aadlen, view.ct, (int) view.ct_len, view.tag,
						(uint8 *) VARDATA(out)))
	{
		explicit_bzero(VARDATA(out), view.ct_len);
		if (or_null)
		{
			pfree(out);
			return NULL;
		}
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed value does not open here"),
				 errdetail("It was sealed for another tenant, table, column or row, or it was altered.")));
	}
	return out;
}

/*
 * Open a sealed secret that is not PHI (an issuer's HMAC key) for C code;
 * no reveal check.  The caller zeroes and frees the result.
 */
text *
schedphi_unseal(const bytea *v, const pg_uuid_t *tenant, const char *tbl, const char *col,
				const pg_uuid_t *row)
{
	return open_bytes(v, tenant, cstring_to_text(tbl), cstring_to_text(col), row, false);
}

/*
 * The same for a derivation that must not stop the write it serves (the
 * analytics' age and ZIP, analytics.c): NULL when the value is malformed,
 * was sealed for another place or altered, or its data key is missing or
 * destroyed.  A missing master key is still an error.
 */
text *
schedphi_unseal_or_null(const bytea *v, const pg_uuid_t *tenant, const char *tbl, const char *col,
						const pg_uuid_t *row)
{
	return open_bytes(v, tenant, cstring_to_text(tbl), cstring_to_text(col), row, true);
}

PG_FUNCTION_INFO_V1(schedphi_seal);

/*
 * _seal(tenant uuid, tbl text, col text, row uuid, plain text) -> sealed
 * Strict: a NULL field stays NULL.
 */
Datum
schedphi_seal(PG_FUNCTION_ARGS)
{
	text	   *plain = PG_GETARG_TEXT_PP(4);

	schedphi_note_phi();
	/* (an issuer's secret is key material, not patient data) */
	if (schedphi_require_training &&
		!(VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 6 && memcmp(VARDATA_ANY(PG_GETARG_TEXT_PP(1)), "issuer", 6) == 0))
		check_training(PG_GETARG_UUID_P(0));
	PG_RETURN_BYTEA_P(seal_bytes(PG_GETARG_UUID_P(0), PG_GETARG_TEXT_PP(1), PG_GETARG_TEXT_PP(2),
								 PG_GETARG_UUID_P(3), (const uint8 *) VARDATA_ANY(plain),
								 VARSIZE_ANY_EXHDR(plain)));
}

/*
 * Values re-encryption could not open, gathered for _reseal_skipped() in a
 * context that goes away with the transaction.
 */
typedef struct SkippedValue
{
	pg_uuid_t	tenant;
	char	   *tbl;
	char	   *col;
	pg_uuid_t	row;
	int32		key_id;
	const char *reason;
	uint8		digest[32];
} SkippedValue;

static MemoryContext skipped_cxt = NULL;
static List *skipped = NIL;

static void
forget_skipped(void *arg)
{
	skipped_cxt = NULL;
	skipped = NIL;
}

/* SHA-256 of a sealed value's bytes (ciphertext: no PHI). */
static void
sealed_digest(const bytea *v, uint8 *out)
{
	unsigned int len = 0;

	if (EVP_Digest(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), out, &len, EVP_sha256(), NULL) != 1 || len != 32)
		elog(ERROR, "schedphi: SHA-256 failed");
}

static void
note_skipped(const bytea *v, const pg_uuid_t *tenant, const text *tbl, const text *col,
			 const pg_uuid_t *row, int32 key_id, const char *reason)
{
	MemoryContext old;
	SkippedValue *sv;

	if (skipped_cxt == NULL)
	{
		MemoryContextCallback *cb;

		skipped_cxt = AllocSetContextCreate(TopTransactionContext, "schedphi reseal skips",
											ALLOCSET_SMALL_SIZES);
		cb = MemoryContextAlloc(skipped_cxt, sizeof(MemoryContextCallback));
		cb->func = forget_skipped;
		cb->arg = NULL;
		MemoryContextRegisterResetCallback(skipped_cxt, cb);
	}
	old = MemoryContextSwitchTo(skipped_cxt);
	sv = palloc0(sizeof(SkippedValue));
	sv->tenant = *tenant;
	sv->tbl = text_to_cstring(tbl);
	sv->col = text_to_cstring(col);
	sv->row = *row;
	sv->key_id = key_id;
	sv->reason = reason;
	sealed_digest(v, sv->digest);
	skipped = lappend(skipped, sv);
	MemoryContextSwitchTo(old);
}

PG_FUNCTION_INFO_V1(schedphi_reseal);

/*
 * _reseal(value sealed, tenant uuid, tbl text, col text, row uuid) -> sealed
 * The same plaintext sealed afresh under the tenant's active data key; the
 * plaintext never leaves this function and is zeroed before it returns.
 * A value that does not open here (copied from another row, altered, under
 * a data key that is missing or destroyed) is returned as it is and noted
 * for _reseal_skipped(): one damaged value must not stop a rotation.  A
 * missing master key still stops it (nothing would open).
 */
Datum
schedphi_reseal(PG_FUNCTION_ARGS)
{
	bytea	   *v = PG_GETARG_BYTEA_PP(0);
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(1);
	text	   *tbl = PG_GETARG_TEXT_PP(2);
	text	   *col = PG_GETARG_TEXT_PP(3);
	pg_uuid_t  *row = PG_GETARG_UUID_P(4);
	sp_sealed_view view;
	uint8		aad[MAX_AAD];
	int			aadlen;
	const uint8 *dek;
	const char *why = NULL;
	uint8	   *plain;
	bytea	   *out;

	if (sp_sealed_parse((const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), &view) != SP_OK)
	{
		note_skipped(v, tenant, tbl, col, row, -1, "malformed");
		PG_RETURN_BYTEA_P(v);
	}
	aadlen = field_aad(aad, tenant, tbl, col, row);
	dek = schedphi_data_key_ext(tenant, (int32) view.dek_id, &why);
	if (dek == NULL)
	{
		note_skipped(v, tenant, tbl, col, row, (int32) view.dek_id, why);
		PG_RETURN_BYTEA_P(v);
	}
	plain = palloc(view.ct_len + 1);
	if (!sp_gcm_decrypt(dek, view.nonce, aad, aadlen, view.ct, (int) view.ct_len, view.tag, plain))
	{
		explicit_bzero(plain, view.ct_len);
		pfree(plain);
		note_skipped(v, tenant, tbl, col, row, (int32) view.dek_id, "does not open here");
		PG_RETURN_BYTEA_P(v);
	}
	out = seal_bytes(tenant, tbl, col, row, plain, (int) view.ct_len);
	explicit_bzero(plain, view.ct_len);
	pfree(plain);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(schedphi_reseal_skipped);

/*
 * _reseal_skipped() -> setof (tenant uuid, tbl text, col text, row_id uuid,
 *							  key_id int, reason text, digest bytea)
 * The values _reseal could not open in this transaction, since the last
 * call; the list is emptied.
 */
Datum
schedphi_reseal_skipped(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, skipped)
	{
		SkippedValue *sv = lfirst(lc);
		Datum		values[7];
		bool		nulls[7] = {false};
		pg_uuid_t  *t = palloc(sizeof(pg_uuid_t));
		pg_uuid_t  *r = palloc(sizeof(pg_uuid_t));
		bytea	   *d = palloc(VARHDRSZ + 32);

		*t = sv->tenant;
		*r = sv->row;
		SET_VARSIZE(d, VARHDRSZ + 32);
		memcpy(VARDATA(d), sv->digest, 32);
		values[0] = UUIDPGetDatum(t);
		values[1] = CStringGetTextDatum(sv->tbl);
		values[2] = CStringGetTextDatum(sv->col);
		values[3] = UUIDPGetDatum(r);
		values[4] = Int32GetDatum(sv->key_id);
		nulls[4] = sv->key_id < 0;
		values[5] = CStringGetTextDatum(sv->reason);
		values[6] = PointerGetDatum(d);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (skipped_cxt != NULL)
		MemoryContextDelete(skipped_cxt);
	PG_RETURN_NULL();
}

PG_FUNCTION_INFO_V1(schedphi_sealed_digest);

/* _sealed_digest(sealed) -> bytea: SHA-256 of the ciphertext. */
Datum
schedphi_sealed_digest(PG_FUNCTION_ARGS)
{
	bytea	   *d = palloc(VARHDRSZ + 32);

	SET_VARSIZE(d, VARHDRSZ + 32);
	sealed_digest(PG_GETARG_BYTEA_PP(0), (uint8 *) VARDATA(d));
	PG_RETURN_BYTEA_P(d);
}

/*
 * Refuse to decrypt unless the actor reads PHI in this tenant and a purpose
 * of use is set (the refusal's record names tbl and row).  A yes is remembered for the rest of the transaction, for
 * the same tenant, session user and actor context only.
 */
static void
check_reveal(const pg_uuid_t *tenant, text *tbl, const pg_uuid_t *row)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	bool		isnull;
	bool		ok;
	char	   *t;

	if (reveal_lxid == MyProc->lxid && memcmp(reveal_tenant.data, tenant->data, UUID_LEN) == 0 &&
		reveal_user == GetSessionUserId() && reveal_generation == schedphi_actor_generation())
		return;
	/* a refusal names the row it was about (and the patient, for a patient's row) */
	t = text_to_cstring(tbl);
	schedphi_audit_deny_target(t, row, strcmp(t, "patient") == 0 ? row : NULL);
	values[0] = UUIDPGetDatum(tenant);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&reveal_plan, "SELECT schedphi._may_reveal($1)", 1, types);
	if (SPI_execute_plan(reveal_plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi: reveal check failed");
	ok = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
	SPI_finish();
	if (!ok)
		schedphi_audit_deny(tenant, ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied: PHI rule",
							"Decrypting patient data needs a role that reads it in the patient's tenant; superusers too.",
							NULL);
	if (schedphi_current_purpose() == NULL)
		schedphi_audit_deny(tenant, ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied: purpose of use rule",
							"Reading patient data needs a purpose of use for the transaction.",
							"Call schedphi.set_purpose('TREAT'), 'PAYMENT' or 'OPERATIONS' first, in the same transaction.");
	schedphi_audit_deny_target(NULL, NULL, NULL);
	reveal_lxid = MyProc->lxid;
	reveal_tenant = *tenant;
	reveal_user = GetSessionUserId();
	reveal_generation = schedphi_actor_generation();
}

/*
 * With schedphi.require_training on, refuse to read or write patient data
 * for a caller (the session user, or the assumed token's subject) without
 * current training in the tenant (record_training), and record the
 * refusal.  A yes is remembered for the rest of the transaction, for the
 * same tenant, session user and actor context only.
 */
static void
check_training(const pg_uuid_t *tenant)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	bool		isnull;
	bool		ok;

	if (!schedphi_require_training)
		return;
	if (training_lxid == MyProc->lxid && memcmp(training_tenant.data, tenant->data, UUID_LEN) == 0 &&
		training_user == GetSessionUserId() && training_generation == schedphi_actor_generation())
		return;
	values[0] = UUIDPGetDatum(tenant);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&training_plan, "SELECT schedphi._training_current($1)", 1, types);
	if (SPI_execute_plan(training_plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi: training check failed");
	ok = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
	SPI_finish();
	if (!ok)
		schedphi_audit_deny(tenant, ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied: training rule",
							"Reading or writing patient data needs current training in the tenant (schedphi.require_training is on).",
							"An admin records it with schedphi.record_training().");
	training_lxid = MyProc->lxid;
	training_tenant = *tenant;
	training_user = GetSessionUserId();
	training_generation = schedphi_actor_generation();
}

PG_FUNCTION_INFO_V1(schedphi_open);

/*
 * _open(value sealed, tenant uuid, tbl text, col text, row uuid) -> text
 * Strict.  A value that was moved from another place, or altered, fails
 * with data_corrupted and is never returned.
 */
Datum
schedphi_open(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(1);

	text	   *tbl = PG_GETARG_TEXT_PP(2);
	text	   *col = PG_GETARG_TEXT_PP(3);
	pg_uuid_t  *row = PG_GETARG_UUID_P(4);

	schedphi_note_phi();
	check_reveal(tenant, tbl, row);
	check_training(tenant);
	schedphi_audit_note_read(tenant, text_to_cstring(tbl), text_to_cstring(col), row);
	PG_RETURN_TEXT_P(open_bytes(PG_GETARG_BYTEA_PP(0), tenant, tbl, col, row, false));
}

/* ------------------------------------------------------------ blind index */

/*
 * Seal a value for C callers (the bulk import): as _seal, with the table
 * and column as C strings.
 */
bytea *
schedphi_seal_value(const pg_uuid_t *tenant, const char *tbl, const char *col, const pg_uuid_t *row,
					const char *plain, int n)
{
	check_training(tenant);
	return seal_bytes(tenant, cstring_to_text(tbl), cstring_to_text(col), row, (const uint8 *) plain, n);
}

/*
 * HMAC-SHA-256 of the (already normalised) value under the tenant's key for
 * that field (schedphi_field_key).
 */
bytea *
schedphi_blind_value(const pg_uuid_t *tenant, const char *field, int fieldlen, const char *value, int n)
{
	const uint8 *fieldkey;
	bytea	   *out = palloc(VARHDRSZ + 32);
	size_t		outlen = 32;
	OSSL_PARAM	params[2];
	bool		ok;

	fieldkey = schedphi_field_key(tenant, field, fieldlen);
	if (hmac == NULL)
		hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (hmac_ctx == NULL && hmac != NULL)
		hmac_ctx = EVP_MAC_CTX_new(hmac);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	ok = hmac_ctx != NULL &&
		EVP_MAC_init(hmac_ctx, fieldkey, SP_KEY_LEN, params) == 1 &&
		EVP_MAC_update(hmac_ctx, (const unsigned char *) value, n) == 1 &&
		EVP_MAC_final(hmac_ctx, (unsigned char *) VARDATA(out), &outlen, 32) == 1;
	if (!ok || outlen != 32)
		elog(ERROR, "schedphi: blind index computation failed");
	SET_VARSIZE(out, VARHDRSZ + 32);
	return out;
}

PG_FUNCTION_INFO_V1(schedphi_blind);

/* _blind(tenant uuid, field text, value text) -> bytea: schedphi_blind_value. */
Datum
schedphi_blind(PG_FUNCTION_ARGS)
{
	text	   *field = PG_GETARG_TEXT_PP(1);
	text	   *value = PG_GETARG_TEXT_PP(2);

	schedphi_note_phi();
	PG_RETURN_BYTEA_P(schedphi_blind_value(PG_GETARG_UUID_P(0), VARDATA_ANY(field), VARSIZE_ANY_EXHDR(field),
										   VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)));
}

/* ------------------------------------------------------------- benchmark */

PG_FUNCTION_INFO_V1(schedphi_crypto_bench);

/*
 * _crypto_bench(tenant uuid, iterations int)
 *	 -> table(operation text, ns_per_call float8)
 * Superuser only; used by bench/.  Times, in this process, sealing and
 * opening a 32-byte field against bare OpenSSL EVP AES-256-GCM on the same
 * 32 bytes with the same key (the floor), so that the ratio shows what
 * schedphi adds (key lookup, nonce, associated data, framing).
 */
Datum
schedphi_crypto_bench(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	int			n = PG_GETARG_INT32(1);
	text	   *tbl = cstring_to_text("patient");
	text	   *col = cstring_to_text("given");
	pg_uuid_t	row;
	uint8		plain[32];
	uint8		ct[32];
	uint8		tag[SP_GCM_TAG];
	uint8		nonce[SP_GCM_NONCE];
	uint8		out[32];
	const uint8 *dek;
	bytea	   *sealed = NULL;
	instr_time	start,
				stop;
	const char *names[4] = {"evp_encrypt_32", "evp_decrypt_32", "seal_32", "open_32"};
	double		ns[4];

	if (!superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("permission denied: only a superuser runs the crypto benchmark")));
	if (n < 1 || n > 10000000)
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("iterations must be between 1 and 10000000")));
	memset(plain, 'x', sizeof(plain));
	sp_random(row.data, UUID_LEN);
	sp_random(nonce, SP_GCM_NONCE);
	dek = schedphi_data_key(tenant, schedphi_active_key(tenant, "phi"));

	INSTR_TIME_SET_CURRENT(start);
	for (int i = 0; i < n; i++)
		if (!sp_gcm_encrypt(dek, nonce, NULL, 0, plain, 32, ct, tag))
			elog(ERROR, "encryption failed");
	INSTR_TIME_SET_CURRENT(stop);
	INSTR_TIME_SUBTRACT(stop, start);
	ns[0] = INSTR_TIME_GET_DOUBLE(stop) * 1e9 / n;

	INSTR_TIME_SET_CURRENT(start);
	for (int i = 0; i < n; i++)
		if (!sp_gcm_decrypt(dek, nonce, NULL, 0, ct, 32, tag, out))
			elog(ERROR, "decryption failed");
	INSTR_TIME_SET_CURRENT(stop);
	INSTR_TIME_SUBTRACT(stop, start);
	ns[1] = INSTR_TIME_GET_DOUBLE(stop) * 1e9 / n;

	INSTR_TIME_SET_CURRENT(start);
	for (int i = 0; i < n; i++)
	{
		if (sealed)
			pfree(sealed);
		sealed = seal_bytes(tenant, tbl, col, &row, plain, 32);
	}
	INSTR_TIME_SET_CURRENT(stop);
	INSTR_TIME_SUBTRACT(stop, start);
	ns[2] = INSTR_TIME_GET_DOUBLE(stop) * 1e9 / n;

	INSTR_TIME_SET_CURRENT(start);
	for (int i = 0; i < n; i++)
		pfree(open_bytes(sealed, tenant, tbl, col, &row, false));
	INSTR_TIME_SET_CURRENT(stop);
	INSTR_TIME_SUBTRACT(stop, start);
	ns[3] = INSTR_TIME_GET_DOUBLE(stop) * 1e9 / n;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < 4; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(names[i]);
		values[1] = Float8GetDatum(ns[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	explicit_bzero(out, sizeof(out));
	return (Datum) 0;
}

/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  Master keys, per-tenant data keys, AES-256-GCM and the audit digest
 *	  key (keys.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_KEYS_H
#define SCHEDPHI_KEYS_H

#include "utils/uuid.h"

#define SP_KEY_LEN		32
#define SP_GCM_NONCE	12
#define SP_GCM_TAG		16

extern char *schedphi_key_command;
extern int	schedphi_seal_limit;
extern void schedphi_keys_init_guc(void);
extern void schedphi_keys_preload(void);
extern bool sp_gcm_encrypt(const uint8 *key, const uint8 *nonce, const uint8 *aad, int aadlen,
						   const uint8 *pt, int ptlen, uint8 *ct, uint8 *tag);
extern bool sp_gcm_decrypt(const uint8 *key, const uint8 *nonce, const uint8 *aad, int aadlen,
						   const uint8 *ct, int ctlen, const uint8 *tag, uint8 *pt);
extern void sp_random(uint8 *buf, int len);
extern Oid	schedphi_data_key_relid(bool missing_ok);
extern const uint8 *schedphi_data_key(const pg_uuid_t *tenant, int32 id);
extern const uint8 *schedphi_data_key_ext(const pg_uuid_t *tenant, int32 id, const char **why);
extern int32 schedphi_active_key(const pg_uuid_t *tenant, const char *purpose);
extern int32 schedphi_seal_key(const pg_uuid_t *tenant, const char *purpose);
extern const uint8 *schedphi_field_key(const pg_uuid_t *tenant, const char *field, int fieldlen);

/* MACs under keys derived from a master key: the audit digest (ledger.c),
 * the caller's identity carried to a Citus worker node (origin.c) */
extern void schedphi_kek_mac(const char *kek_id, const char *label, const uint8 *msg, int len,
							 uint8 *out, char *used_id, int used_len);
extern void schedphi_audit_sign(const char *kek_id, const uint8 *msg, int len, uint8 *out,
								char *used_id, int used_len);

#endif							/* SCHEDPHI_KEYS_H */

/*-------------------------------------------------------------------------
 *
 * schedphi.h
 *	  Declarations shared by the schedphi extension's C sources.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_H
#define SCHEDPHI_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/uuid.h"

/* True when the library was loaded through shared_preload_libraries. */
extern bool schedphi_preloaded;

/* The SQLSTATE schedphi uses for a bad argument (22023). */
#define SCHEDPHI_BAD_ARGUMENT ERRCODE_INVALID_PARAMETER_VALUE
/* Rate limit exceeded (SP429). */
#define SCHEDPHI_RATE_LIMITED MAKE_SQLSTATE('S','P','4','2','9')
/* Key unavailable: master key not loaded, data key missing (SPK01). */
#define SCHEDPHI_KEY_UNAVAILABLE MAKE_SQLSTATE('S','P','K','0','1')

#define SP_KEY_LEN		32
#define SP_GCM_NONCE	12
#define SP_GCM_TAG		16

/* keys.c */
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

struct Node;

/* actor.c: the actor a verified token names */
typedef struct SchedphiActor
{
	bool		active;
	bool		session_scope;
	Oid			login;			/* the session user that assumed it */
	char		sub[256];
	char		issuer[256];
	pg_uuid_t	tenant;
	char		role[16];
	bool		has_practitioner;
	pg_uuid_t	practitioner;
	bool		mfa;			/* the token showed a second factor (amr) */
	TimestampTz ends;			/* the context ends with the token (exp) */
} SchedphiActor;

extern int	schedphi_max_token_lifetime;
extern bool schedphi_require_mfa;
extern bool schedphi_allow_session_scope;
extern void schedphi_actor_init(void);
extern void schedphi_actor_utility(struct Node *node);
extern const SchedphiActor *schedphi_current_actor(void);
extern uint64 schedphi_actor_generation(void);
extern void schedphi_set_actor(const SchedphiActor *a);
extern const char *schedphi_current_purpose(void);

/* sealed.c */
extern bytea *schedphi_seal_value(const pg_uuid_t *tenant, const char *tbl, const char *col,
								  const pg_uuid_t *row, const char *plain, int n);
extern bytea *schedphi_blind_value(const pg_uuid_t *tenant, const char *field, int fieldlen,
								   const char *value, int n);
extern text *schedphi_unseal(const bytea *v, const pg_uuid_t *tenant, const char *tbl,
							 const char *col, const pg_uuid_t *row);

/* audit.c */
extern void schedphi_audit_init(void);
extern void schedphi_audit_utility(struct Node *node);
extern void schedphi_audit_note_read(const pg_uuid_t *tenant, const char *object, const char *col,
									 const pg_uuid_t *row);
extern void schedphi_audit_note_patient(const pg_uuid_t *tenant, const pg_uuid_t *patient);
extern void schedphi_audit_deny_target(const char *object, const pg_uuid_t *id, const pg_uuid_t *patient);
extern void schedphi_audit_record(const char *action, const pg_uuid_t *tenant, const char *object,
								  const pg_uuid_t *object_id, const pg_uuid_t *patient, const char *detail,
								  bool wait);
extern bool schedphi_has_role(const pg_uuid_t *tenant, const char *const *roles, int nroles);
extern void schedphi_appointment_uuid(pg_uuid_t *id);
extern uint64 schedphi_rules_version(void);
extern void schedphi_audit_deny(const pg_uuid_t *tenant, int sqlstate, const char *message,
								const char *detail, const char *hint) pg_attribute_noreturn();

/* keys.c, for the audit digest */
extern void schedphi_audit_sign(const char *kek_id, const uint8 *msg, int len, uint8 *out,
								char *used_id, int used_len);

/* ratelimit.c */
extern void schedphi_ratelimit_init(void);

/* patient_fields.c */
extern char *schedphi_check_name(const char *what, const char *value);
extern int32 schedphi_check_birth_date(int32 d);
extern int32 schedphi_parse_birth_date(const char *value);
extern char *schedphi_norm_phone(const char *value);
extern char *schedphi_norm_email(const char *value);
extern char *schedphi_norm_mrn(const char *value);
extern char *schedphi_norm_zip(const char *value);
extern char *schedphi_family_dob(const char *family, int32 birth);
extern char *schedphi_date_iso(int32 d);

/* import.c */
extern bool schedphi_is_import_copy(struct Node *node);
extern void schedphi_import_scrub_context(char *context);

/* logmask.c */
extern void schedphi_logmask_init(void);
extern void schedphi_note_phi(void);

struct _SPI_plan;

/* schedphi.c */
extern struct _SPI_plan *schedphi_keep_plan(struct _SPI_plan **slot, const char *sql, int nargs,
											Oid *argtypes);

struct pg_tz;

/* walltime.c */
extern TimestampTz schedphi_wall_to_instant(Timestamp local, const struct pg_tz *tz, bool early);
typedef void (*schedphi_window_cb) (void *arg, const pg_uuid_t *actor, TimestampTz starts,
									TimestampTz ends, int32 slot_minutes);
extern void schedphi_expand_windows(Datum tenant, Datum actors, TimestampTz wlo, TimestampTz whi,
									schedphi_window_cb cb, void *arg);

#endif							/* SCHEDPHI_H */

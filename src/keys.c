/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Master keys (KEKs) from schedphi.key_command, and per-tenant data
 *	  keys (DEKs) stored wrapped by them.
 *
 * The key command prints lines "KEY_ID HEX64"; the first key is active
 * (it wraps new data keys), the others only unwrap older ones.  The keys
 * live in one anonymous page that is locked in memory, excluded from core
 * dumps and zeroed when the process exits.  When the library is preloaded
 * the postmaster runs the command once at start and every backend inherits
 * the page; otherwise, or when that failed, a backend runs it the first
 * time it needs a key.  Nothing of the output ever reaches a log or an
 * error: a bad command is reported by line number only.
 *
 * Data keys are generated with RAND_bytes, wrapped with AES-256-GCM under
 * the active master key (associated data binds them to tenant, id and
 * purpose) and stored in schedphi.data_key.  A backend keeps unwrapped data
 * keys in a cache whose memory is zeroed before it is freed; any change to
 * schedphi.data_key by our functions sends a relcache invalidation that
 * empties every backend's cache.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "common.h"
#include "keys.h"

#define MAX_KEKS			16
#define KEK_ID_MAX			64
#define KEY_OUTPUT_MAX		8192
#define WRAPPED_LEN			(SP_GCM_NONCE + SP_GCM_TAG + SP_KEY_LEN)

typedef struct Kek
{
	char		id[KEK_ID_MAX + 1];
	uint8		key[SP_KEY_LEN];
} Kek;

typedef struct KeyRing
{
	int			nkeys;
	Kek			keks[MAX_KEKS];
} KeyRing;

typedef struct DekCacheKey
{
	pg_uuid_t	tenant;
	int32		id;
} DekCacheKey;

typedef struct DekCacheEntry
{
	DekCacheKey key;
	uint8		dek[SP_KEY_LEN];
} DekCacheEntry;

typedef struct FieldCacheKey
{
	pg_uuid_t	tenant;
	char		field[64];
} FieldCacheKey;

typedef struct FieldCacheEntry
{
	FieldCacheKey key;
	uint8		fkey[SP_KEY_LEN];
} FieldCacheEntry;

typedef struct ActiveCacheKey
{
	pg_uuid_t	tenant;
	char		purpose[16];
} ActiveCacheKey;

typedef struct ActiveCacheEntry
{
	ActiveCacheKey key;
	int32		id;
	int64		base;			/* seal counter when the key was made */
} ActiveCacheEntry;

char	   *schedphi_key_command = NULL;

static KeyRing *ring = NULL;
static size_t ring_size = 0;
static pid_t ring_wipe_pid = 0;
static bool ring_loaded = false;

static MemoryContext key_context = NULL;
static Oid	data_key_relid = InvalidOid;
static HTAB *dek_cache = NULL;
static HTAB *active_cache = NULL;
static HTAB *field_cache = NULL;
static bool callback_registered = false;

static SPIPlanPtr dek_plan = NULL;
static SPIPlanPtr active_plan = NULL;
static SPIPlanPtr counter_plan = NULL;
static SPIPlanPtr rotate_plan = NULL;

/* Seals this backend may still make: counter values [seal_next, seal_end). */
static int64 seal_next = 0;
static int64 seal_end = 0;

#define SEAL_RESERVE		1024

int			schedphi_seal_limit = 1 << 30;

/* ---------------------------------------------------------------- AES-GCM */

/*
 * AES-256-GCM through EVP.  Returns false on any failure; decryption
 * returns false when the tag does not verify.
 */
static EVP_CIPHER *gcm_cipher = NULL;
static EVP_CIPHER_CTX *gcm_ctx = NULL;

/* The cipher and a context, fetched once per process. */
static EVP_CIPHER_CTX *
gcm_context(void)
{
	if (gcm_cipher == NULL)
		gcm_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	if (gcm_ctx == NULL)
		gcm_ctx = EVP_CIPHER_CTX_new();
	if (gcm_cipher == NULL || gcm_ctx == NULL)
		elog(ERROR, "schedphi: OpenSSL has no AES-256-GCM");
	return gcm_ctx;
}

/*
 * AES-256-GCM through EVP, with a 96-bit nonce and a 128-bit tag.  Returns
 * false on any failure; decryption returns false when the tag does not
 * verify, and then the output must be discarded.
 */
bool
sp_gcm_encrypt(const uint8 *key, const uint8 *nonce, const uint8 *aad, int aadlen,
			   const uint8 *pt, int ptlen, uint8 *ct, uint8 *tag)
{
	EVP_CIPHER_CTX *ctx = gcm_context();
	int			len = 0;
	int			fin;

	return EVP_EncryptInit_ex2(ctx, gcm_cipher, key, nonce, NULL) == 1 &&
		(aadlen == 0 || EVP_EncryptUpdate(ctx, NULL, &len, aad, aadlen) == 1) &&
		((len = 0), ptlen == 0 || EVP_EncryptUpdate(ctx, ct, &len, pt, ptlen) == 1) &&
		EVP_EncryptFinal_ex(ctx, ct + len, &fin) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SP_GCM_TAG, tag) == 1;
}

bool
sp_gcm_decrypt(const uint8 *key, const uint8 *nonce, const uint8 *aad, int aadlen,
			   const uint8 *ct, int ctlen, const uint8 *tag, uint8 *pt)
{
	EVP_CIPHER_CTX *ctx = gcm_context();
	int			len = 0;
	int			fin;

	return EVP_DecryptInit_ex2(ctx, gcm_cipher, key, nonce, NULL) == 1 &&
		(aadlen == 0 || EVP_DecryptUpdate(ctx, NULL, &len, aad, aadlen) == 1) &&
		((len = 0), ctlen == 0 || EVP_DecryptUpdate(ctx, pt, &len, ct, ctlen) == 1) &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SP_GCM_TAG, (void *) tag) == 1 &&
		EVP_DecryptFinal_ex(ctx, pt + len, &fin) == 1;
}

/* Random bytes from OpenSSL's CSPRNG; an error if it cannot deliver. */
void
sp_random(uint8 *buf, int len)
{
	if (RAND_bytes(buf, len) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
}

/* ------------------------------------------------------------ master keys */

static void
ring_wipe(int code, Datum arg)
{
	if (ring != NULL)
		explicit_bzero(ring, ring_size);
}

/* The locked, non-dumpable page that holds the master keys. */
static bool
ring_alloc(void)
{
	void	   *p;

	if (ring != NULL)
		return true;
	ring_size = TYPEALIGN(sysconf(_SC_PAGESIZE), sizeof(KeyRing));
	p = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return false;
#ifdef MADV_DONTDUMP
	(void) madvise(p, ring_size, MADV_DONTDUMP);
#endif
	(void) mlock(p, ring_size);
	memset(p, 0, ring_size);
	ring = (KeyRing *) p;
	return true;
}

/* Each process zeroes the page when it exits (children inherit a copy). */
static void
ring_guard(void)
{
	if (ring != NULL && ring_wipe_pid != MyProcPid)
	{
		(void) mlock(ring, ring_size);	/* locks are not inherited by fork */
		on_proc_exit(ring_wipe, (Datum) 0);
		ring_wipe_pid = MyProcPid;
	}
}

/*
 * Parse the command's output into tmp.  On failure returns false and sets
 * *why to a message that names a line number at most.
 */
static bool
parse_key_output(char *buf, size_t len, KeyRing *tmp, char *why, size_t whylen)
{
	size_t		pos = 0;
	int			line = 0;

	tmp->nkeys = 0;
	while (pos < len)
	{
		size_t		end = pos;
		size_t		idlen = 0;
		size_t		p;
		Kek		   *k;

		while (end < len && buf[end] != '\n')
			end++;
		line++;
		/* allow blank lines and a trailing carriage return */
		if (end > pos && buf[end - 1] == '\r')
			buf[end - 1] = ' ';
		p = pos;
		while (p < end && buf[p] == ' ')
			p++;
		if (p == end)
		{
			pos = end + 1;
			continue;
		}
		if (tmp->nkeys == MAX_KEKS)
		{
			snprintf(why, whylen, "more than %d keys", MAX_KEKS);
			return false;
		}
		k = &tmp->keks[tmp->nkeys];
		while (p < end && buf[p] != ' ' && buf[p] != '\t')
		{
			char		c = buf[p];

			if (!(isalnum((unsigned char) c) || c == '-' || c == '_' || c == '.') || idlen == KEK_ID_MAX)
			{
				snprintf(why, whylen, "line %d: the key id must be 1 to %d letters, digits, '-', '_' or '.'",
						 line, KEK_ID_MAX);
				return false;
			}
			k->id[idlen++] = c;
			p++;
		}
		k->id[idlen] = '\0';
		while (p < end && (buf[p] == ' ' || buf[p] == '\t'))
			p++;
		if (idlen == 0 || end - p < 2 * SP_KEY_LEN)
		{
			snprintf(why, whylen, "line %d is not \"KEY_ID HEX64\"", line);
			return false;
		}
		for (int i = 0; i < SP_KEY_LEN; i++)
		{
			int			hi = schedphi_hex_digit(buf[p + 2 * i]);
			int			lo = schedphi_hex_digit(buf[p + 2 * i + 1]);

			if (hi < 0 || lo < 0)
			{
				snprintf(why, whylen, "line %d: the key is not 64 hexadecimal digits", line);
				return false;
			}
			k->key[i] = (uint8) ((hi << 4) | lo);
		}
		p += 2 * SP_KEY_LEN;
		while (p < end && (buf[p] == ' ' || buf[p] == '\t'))
			p++;
		if (p != end)
		{
			snprintf(why, whylen, "line %d: the key is not 64 hexadecimal digits", line);
			return false;
		}
		for (int i = 0; i < tmp->nkeys; i++)
			if (strcmp(tmp->keks[i].id, k->id) == 0)
			{
				snprintf(why, whylen, "line %d repeats a key id", line);
				return false;
			}
		tmp->nkeys++;
		pos = end + 1;
	}
	if (tmp->nkeys == 0)
	{
		snprintf(why, whylen, "it printed no key");
		return false;
	}
	return true;
}

/*
 * Run the key command and load its keys.  Never raises: returns false and
 * logs at `elevel` (LOG in the postmaster, DEBUG1 elsewhere: the caller
 * reports SPK01) when anything is wrong, leaving no key loaded.
 */
static bool
load_master_keys(int elevel)
{
	char		buf[KEY_OUTPUT_MAX];
	char		why[160];
	size_t		len = 0;
	FILE	   *fp;
	int			rc;
	KeyRing		tmp;
	bool		ok;

	if (schedphi_key_command == NULL || schedphi_key_command[0] == '\0')
	{
		elog(elevel, "schedphi: schedphi.key_command is not set; PHI operations will fail");
		return false;
	}
	if (!ring_alloc())
	{
		elog(elevel, "schedphi: could not allocate locked memory for master keys");
		return false;
	}
	fflush(NULL);
	fp = popen(schedphi_key_command, "r");
	if (fp == NULL)
	{
		elog(elevel, "schedphi: could not run schedphi.key_command: %m");
		return false;
	}
	while (len < sizeof(buf))
	{
		size_t		n = fread(buf + len, 1, sizeof(buf) - len, fp);

		if (n == 0)
			break;
		len += n;
	}
	if (len == sizeof(buf))
	{
		/* drain, so that the command is not killed by SIGPIPE mid-way */
		char		sink[256];

		while (fread(sink, 1, sizeof(sink), fp) > 0)
			;
		explicit_bzero(sink, sizeof(sink));
	}
	rc = pclose(fp);

	if (rc != 0)
	{
		snprintf(why, sizeof(why), "it exited with status %d", rc);
		ok = false;
	}
	else if (len == sizeof(buf))
	{
		snprintf(why, sizeof(why), "its output is longer than %d bytes", KEY_OUTPUT_MAX - 1);
		ok = false;
	}
	else
		ok = parse_key_output(buf, len, &tmp, why, sizeof(why));

	explicit_bzero(buf, sizeof(buf));
	if (ok)
	{
		memcpy(ring, &tmp, sizeof(KeyRing));
		ring_loaded = true;
	}
	explicit_bzero(&tmp, sizeof(tmp));
	if (!ok)
		elog(elevel, "schedphi: schedphi.key_command failed: %s; PHI operations will fail", why);
	return ok;
}

/* Called from _PG_init while preloading: load once in the postmaster. */
void
schedphi_keys_preload(void)
{
	if (load_master_keys(LOG))
	{
		on_proc_exit(ring_wipe, (Datum) 0);
		ring_wipe_pid = MyProcPid;
		elog(LOG, "schedphi: %d master key(s) loaded; active key \"%s\"",
			 ring->nkeys, ring->keks[0].id);
	}
}

/* The master keys, loading them on first use; SPK01 if unavailable. */
static KeyRing *
master_keys(void)
{
	if (!ring_loaded)
	{
		if (!load_master_keys(DEBUG1))
			ereport(ERROR,
					(errcode(SCHEDPHI_KEY_UNAVAILABLE),
					 errmsg("master key not loaded"),
					 errhint("The DBA sets schedphi.key_command; see docs/keys.md.")));
	}
	ring_guard();
	return ring;
}

static const Kek *
find_kek(const char *id)
{
	KeyRing    *r = master_keys();

	for (int i = 0; i < r->nkeys; i++)
		if (strcmp(r->keks[i].id, id) == 0)
			return &r->keks[i];
	ereport(ERROR,
			(errcode(SCHEDPHI_KEY_UNAVAILABLE),
			 errmsg("master key \"%s\" is not loaded", id)));
	return NULL;				/* keep compiler quiet */
}

/* Associated data that binds a wrapped data key to its row. */
static int
wrap_aad(uint8 *aad, const pg_uuid_t *tenant, int32 id, const char *purpose)
{
	int			n = 0;

	memcpy(aad, "schedphi-dek", 12);
	n = 12;
	memcpy(aad + n, tenant->data, UUID_LEN);
	n += UUID_LEN;
	aad[n++] = (uint8) (id >> 24);
	aad[n++] = (uint8) (id >> 16);
	aad[n++] = (uint8) (id >> 8);
	aad[n++] = (uint8) id;
	memcpy(aad + n, purpose, strlen(purpose));
	return n + (int) strlen(purpose);
}

static bytea *
wrap_dek(const Kek *kek, const uint8 *dek, const pg_uuid_t *tenant, int32 id, const char *purpose)
{
	bytea	   *out = palloc(VARHDRSZ + WRAPPED_LEN);
	uint8	   *p = (uint8 *) VARDATA(out);
	uint8		aad[64];
	int			aadlen = wrap_aad(aad, tenant, id, purpose);

	SET_VARSIZE(out, VARHDRSZ + WRAPPED_LEN);
	sp_random(p, SP_GCM_NONCE);
	if (!sp_gcm_encrypt(kek->key, p, aad, aadlen, dek, SP_KEY_LEN,
						p + SP_GCM_NONCE + SP_GCM_TAG, p + SP_GCM_NONCE))
		elog(ERROR, "schedphi: could not wrap a data key");
	return out;
}

static void
unwrap_dek(const Kek *kek, const bytea *wrapped, const pg_uuid_t *tenant, int32 id,
		   const char *purpose, uint8 *dek)
{
	const uint8 *p = (const uint8 *) VARDATA_ANY(wrapped);
	uint8		aad[64];
	int			aadlen = wrap_aad(aad, tenant, id, purpose);

	if (VARSIZE_ANY_EXHDR(wrapped) != WRAPPED_LEN ||
		!sp_gcm_decrypt(kek->key, p, aad, aadlen, p + SP_GCM_NONCE + SP_GCM_TAG, SP_KEY_LEN,
						p + SP_GCM_NONCE, dek))
		ereport(ERROR,
				(errcode(SCHEDPHI_KEY_UNAVAILABLE),
				 errmsg("data key %d does not unwrap with master key \"%s\"", id, kek->id)));
}

/* -------------------------------------------------------------- DEK cache */

/*
 * Zero every cached data key, then free the cache.  (The hash tables keep
 * their entries in child contexts of key_context, which MemoryContextDelete
 * frees before any reset callback of key_context would run: so the keys
 * are zeroed here, while the tables are still alive.)
 */
static void
cache_reset(void)
{
	if (dek_cache != NULL)
	{
		HASH_SEQ_STATUS seq;
		DekCacheEntry *e;

		hash_seq_init(&seq, dek_cache);
		while ((e = hash_seq_search(&seq)) != NULL)
			explicit_bzero(e->dek, SP_KEY_LEN);
	}
	if (field_cache != NULL)
	{
		HASH_SEQ_STATUS seq;
		FieldCacheEntry *f;

		hash_seq_init(&seq, field_cache);
		while ((f = hash_seq_search(&seq)) != NULL)
			explicit_bzero(f->fkey, SP_KEY_LEN);
	}
	dek_cache = NULL;
	active_cache = NULL;
	field_cache = NULL;
	if (key_context != NULL)
		MemoryContextDelete(key_context);
	key_context = NULL;
}

static void
cache_reset_at_exit(int code, Datum arg)
{
	cache_reset();
}

/*
 * Any change to schedphi.data_key, or a full reset: forget every key.  No
 * catalog access here: compare with the OID remembered by cache_init.
 */
static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == data_key_relid)
	{
		cache_reset();
		data_key_relid = InvalidOid;
	}
}

static void
cache_init(void)
{
	HASHCTL		ctl;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
		on_proc_exit(cache_reset_at_exit, (Datum) 0);
		callback_registered = true;
	}
	if (!OidIsValid(data_key_relid))
		data_key_relid = schedphi_data_key_relid(true);
	if (dek_cache != NULL)
		return;
	key_context = AllocSetContextCreate(TopMemoryContext, "schedphi data keys",
										ALLOCSET_SMALL_SIZES);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(DekCacheKey);
	ctl.entrysize = sizeof(DekCacheEntry);
	ctl.hcxt = key_context;
	dek_cache = hash_create("schedphi data keys", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(ActiveCacheKey);
	ctl.entrysize = sizeof(ActiveCacheEntry);
	active_cache = hash_create("schedphi active data keys", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(FieldCacheKey);
	ctl.entrysize = sizeof(FieldCacheEntry);
	field_cache = hash_create("schedphi field keys", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* OID of schedphi.data_key (InvalidOid if missing and missing_ok). */
Oid
schedphi_data_key_relid(bool missing_ok)
{
	Oid			nsp = get_namespace_oid("schedphi", true);

	if (!OidIsValid(nsp))
	{
		if (!missing_ok)
			elog(ERROR, "schema schedphi does not exist");
		return InvalidOid;
	}
	return get_relname_relid("data_key", nsp);
}

/*
 * The unwrapped data key (tenant, id), from the cache or from the table.
 * 55000 if it was destroyed, SPK01 if it is missing or its master key is.
 */
const uint8 *
schedphi_data_key(const pg_uuid_t *tenant, int32 id)
{
	return schedphi_data_key_ext(tenant, id, NULL);
}

/*
 * The same; with why != NULL, a data key that is missing or destroyed is
 * not an error: NULL is returned and *why says which (re-encryption skips
 * such values).  A missing master key is an error either way.
 */
const uint8 *
schedphi_data_key_ext(const pg_uuid_t *tenant, int32 id, const char **why)
{
	DekCacheKey key;
	DekCacheEntry *e;
	bool		found;
	Oid			types[2] = {UUIDOID, INT4OID};
	Datum		values[2];
	char		purpose[16];
	char		kek_id[KEK_ID_MAX + 1];
	bytea	   *wrapped;
	uint8		dek[SP_KEY_LEN];
	MemoryContext caller = CurrentMemoryContext;

	cache_init();
	memset(&key, 0, sizeof(key));
	key.tenant = *tenant;
	key.id = id;
	e = hash_search(dek_cache, &key, HASH_FIND, NULL);
	if (e != NULL)
		return e->dek;

	values[0] = UUIDPGetDatum(tenant);
	values[1] = Int32GetDatum(id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&dek_plan,
				 "SELECT purpose, kek_id, wrapped, status FROM schedphi.data_key "
				 "WHERE tenant = $1 AND id = $2", 2, types);
	if (SPI_execute_plan(dek_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: data key query failed");
	if (SPI_processed == 0)
	{
		if (why != NULL)
		{
			SPI_finish();
			*why = "data key missing";
			return NULL;
		}
		ereport(ERROR,
				(errcode(SCHEDPHI_KEY_UNAVAILABLE),
				 errmsg("data key %d is missing", id)));
	}
	/* status first: shredding destroys a key by emptying its other columns */
	{
		char	   *st = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
		char	   *pu = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *kk = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		bool		isnull;
		Datum		w;

		if (st != NULL && strcmp(st, "destroyed") == 0)
		{
			if (why != NULL)
			{
				SPI_finish();
				*why = "data key destroyed";
				return NULL;
			}
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data key %d is destroyed", id),
					 errdetail("The tenant's data was shredded; it can no longer be read.")));
		}
		w = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
		if (st == NULL || pu == NULL || kk == NULL || isnull)
		{
			if (why != NULL)
			{
				SPI_finish();
				*why = "data key missing";
				return NULL;
			}
			ereport(ERROR,
					(errcode(SCHEDPHI_KEY_UNAVAILABLE),
					 errmsg("data key %d is missing", id)));
		}
		strlcpy(purpose, pu, sizeof(purpose));
		strlcpy(kek_id, kk, sizeof(kek_id));
		MemoryContextSwitchTo(caller);
		wrapped = DatumGetByteaPCopy(w);
	}
	SPI_finish();

	unwrap_dek(find_kek(kek_id), wrapped, tenant, id, purpose, dek);
	cache_init();
	e = hash_search(dek_cache, &key, HASH_ENTER, &found);
	memcpy(e->dek, dek, SP_KEY_LEN);
	explicit_bzero(dek, SP_KEY_LEN);
	return e->dek;
}

/* The tenant's active data key for a purpose; SPK01 if none. */
static ActiveCacheEntry *
active_entry(const pg_uuid_t *tenant, const char *purpose)
{
	ActiveCacheKey key;
	ActiveCacheEntry *e;
	bool		found;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];
	int32		id;
	int64		base;
	bool		isnull;

	cache_init();
	memset(&key, 0, sizeof(key));
	key.tenant = *tenant;
	strlcpy(key.purpose, purpose, sizeof(key.purpose));
	e = hash_search(active_cache, &key, HASH_FIND, NULL);
	if (e != NULL)
		return e;

	values[0] = UUIDPGetDatum(tenant);
	values[1] = CStringGetTextDatum(purpose);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&active_plan,
				 "SELECT id, seal_base FROM schedphi.data_key "
				 "WHERE tenant = $1 AND purpose = $2 AND status = 'active'", 2, types);
	if (SPI_execute_plan(active_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "schedphi: data key query failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(SCHEDPHI_KEY_UNAVAILABLE),
				 errmsg("no active %s data key for the tenant", purpose)));
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	base = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_finish();

	cache_init();
	e = hash_search(active_cache, &key, HASH_ENTER, &found);
	e->id = id;
	e->base = base;
	return e;
}

/* The id of the tenant's active data key for a purpose (no use counted). */
int32
schedphi_active_key(const pg_uuid_t *tenant, const char *purpose)
{
	return active_entry(tenant, purpose)->id;
}

/*
 * The data key to seal one more value with.  Every seal takes a number
 * from schedphi.seal_counter (reserved SEAL_RESERVE at a time, without
 * locks); a data key's uses are at most the numbers taken since it was
 * made.  Past schedphi.data_key_seal_limit, far below the 2^32 random
 * nonces NIST SP 800-38D allows one key, the key is retired and a new one
 * made, in this transaction.
 */
int32
schedphi_seal_key(const pg_uuid_t *tenant, const char *purpose)
{
	ActiveCacheEntry *e = active_entry(tenant, purpose);

	if (seal_next >= seal_end)
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&counter_plan, "SELECT nextval('schedphi.seal_counter')", 0, NULL);
		if (SPI_execute_plan(counter_plan, NULL, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: seal counter query failed");
		seal_next = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		seal_end = seal_next + SEAL_RESERVE;
		SPI_finish();
		e = active_entry(tenant, purpose);
	}
	if (seal_next - e->base >= schedphi_seal_limit)
	{
		Oid			types[3] = {UUIDOID, TEXTOID, INT4OID};
		Datum		values[3];

		values[0] = UUIDPGetDatum(tenant);
		values[1] = CStringGetTextDatum(purpose);
		values[2] = Int32GetDatum(e->id);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&rotate_plan, "SELECT schedphi._retire_worn_key($1, $2, $3)", 3, types);
		if (SPI_execute_plan(rotate_plan, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "schedphi: key rotation failed");
		SPI_finish();
		cache_reset();
		e = active_entry(tenant, purpose);
	}
	seal_next++;
	return e->id;
}

/*
 * HKDF-SHA-256 of a 32-byte key with salt and info (a string) into out
 * (32 bytes).
 */
static void
sp_hkdf(const uint8 *ikm, const uint8 *salt, int saltlen, const char *info, uint8 *out)
{
	EVP_KDF    *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM	params[5];
	bool		ok;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *) ikm, SP_KEY_LEN);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *) salt, saltlen);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *) info, strlen(info));
	params[4] = OSSL_PARAM_construct_end();
	ok = kctx != NULL && EVP_KDF_derive(kctx, out, SP_KEY_LEN, params) == 1;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	if (!ok)
		elog(ERROR, "schedphi: key derivation failed");
}

/*
 * The blind-index key of one field of a tenant:
 * HKDF-SHA-256(index data key, salt = tenant, info = "schedphi blind index " || field),
 * derived once per backend and cached with the data keys.
 */
const uint8 *
schedphi_field_key(const pg_uuid_t *tenant, const char *field, int fieldlen)
{
	FieldCacheKey key;
	FieldCacheEntry *e;
	bool		found;
	const uint8 *ikm;
	char		info[96];
	uint8		fkey[SP_KEY_LEN];

	if (fieldlen <= 0 || fieldlen >= (int) sizeof(key.field))
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("field name too long")));
	cache_init();
	memset(&key, 0, sizeof(key));
	key.tenant = *tenant;
	memcpy(key.field, field, fieldlen);
	e = hash_search(field_cache, &key, HASH_FIND, NULL);
	if (e != NULL)
		return e->fkey;

	ikm = schedphi_data_key(tenant, schedphi_active_key(tenant, "index"));
	snprintf(info, sizeof(info), "schedphi blind index %s", key.field);
	sp_hkdf(ikm, tenant->data, UUID_LEN, info, fkey);

	cache_init();
	e = hash_search(field_cache, &key, HASH_ENTER, &found);
	memcpy(e->fkey, fkey, SP_KEY_LEN);
	explicit_bzero(fkey, SP_KEY_LEN);
	return e->fkey;
}

/*
 * HMAC-SHA-256 of msg under a key derived for one use: HKDF-SHA-256(master
 * key kek_id, no salt, info label).  kek_id NULL: the active master key,
 * whose id is written to used_id.  The derived key is wiped.
 */
void
schedphi_kek_mac(const char *kek_id, const char *label, const uint8 *msg, int len, uint8 *out,
				 char *used_id, int used_len)
{
	const Kek  *kek = kek_id ? find_kek(kek_id) : &master_keys()->keks[0];
	uint8		akey[SP_KEY_LEN];
	size_t		outlen = 0;
	bool		ok;

	sp_hkdf(kek->key, (const uint8 *) "", 0, label, akey);
	ok = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, akey, SP_KEY_LEN, msg, len, out, 32, &outlen) != NULL &&
		outlen == 32;
	explicit_bzero(akey, SP_KEY_LEN);
	if (!ok)
		elog(ERROR, "schedphi: HMAC failed");
	if (used_id)
		strlcpy(used_id, kek->id, used_len);
}

/* The audit digest's signature: the MAC with info "schedphi audit digest". */
void
schedphi_audit_sign(const char *kek_id, const uint8 *msg, int len, uint8 *out, char *used_id, int used_len)
{
	schedphi_kek_mac(kek_id, "schedphi audit digest", msg, len, out, used_id, used_len);
}

/* ------------------------------------------------------------ SQL-callable */

PG_FUNCTION_INFO_V1(schedphi_wrap_new_key);

/*
 * _wrap_new_key(tenant uuid, id int, purpose text) -> table(kek_id text, wrapped bytea)
 * A fresh random data key wrapped under the active master key, for the
 * caller to store as data key `id`.  The plain key never leaves C.
 */
Datum
schedphi_wrap_new_key(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	int32		id = PG_GETARG_INT32(1);
	char	   *purpose = text_to_cstring(PG_GETARG_TEXT_PP(2));
	const Kek  *kek = &master_keys()->keks[0];
	uint8		dek[SP_KEY_LEN];
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (strlen(purpose) >= 16)
		ereport(ERROR, (errcode(SCHEDPHI_BAD_ARGUMENT), errmsg("purpose is too long")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	sp_random(dek, SP_KEY_LEN);
	values[0] = CStringGetTextDatum(kek->id);
	values[1] = PointerGetDatum(wrap_dek(kek, dek, tenant, id, purpose));
	explicit_bzero(dek, SP_KEY_LEN);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(schedphi_rewrap);

/*
 * _rewrap(tenant uuid, id int, purpose text, kek_id text, wrapped bytea)
 *	 -> table(kek_id text, wrapped bytea)
 * The same data key wrapped under the active master key.
 */
Datum
schedphi_rewrap(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	int32		id = PG_GETARG_INT32(1);
	char	   *purpose = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *kek_id = text_to_cstring(PG_GETARG_TEXT_PP(3));
	bytea	   *wrapped = PG_GETARG_BYTEA_PP(4);
	const Kek  *active = &master_keys()->keks[0];
	uint8		dek[SP_KEY_LEN];
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	unwrap_dek(find_kek(kek_id), wrapped, tenant, id, purpose, dek);
	values[0] = CStringGetTextDatum(active->id);
	values[1] = PointerGetDatum(wrap_dek(active, dek, tenant, id, purpose));
	explicit_bzero(dek, SP_KEY_LEN);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(schedphi_keys_changed);

/*
 * _keys_changed() -> void: tell every backend, at commit, to forget the
 * data keys it has cached.
 */
Datum
schedphi_keys_changed(PG_FUNCTION_ARGS)
{
	CacheInvalidateRelcacheByRelid(schedphi_data_key_relid(false));
	cache_reset();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(schedphi_master_key_ids);

/*
 * master_keys() -> table(key_id text, active boolean): which master keys
 * are loaded (ids only, never key material).  SPK01 if none.
 */
Datum
schedphi_master_key_ids(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	KeyRing    *r;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied: only a superuser lists master keys")));
	r = master_keys();

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < r->nkeys; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(r->keks[i].id);
		values[1] = BoolGetDatum(i == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Settings of the key subsystem, defined from _PG_init. */
void
schedphi_keys_init_guc(void)
{
	DefineCustomStringVariable("schedphi.key_command",
							   "Command that prints the master keys, one \"KEY_ID HEX64\" per line, active first.",
							   "Run by the server at start (or at first use when not preloaded); a new command takes effect at the next restart.",
							   &schedphi_key_command,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("schedphi.data_key_seal_limit",
							"Values sealed under one data key before it is retired and replaced.",
							"Far below the 2^32 random nonces NIST SP 800-38D allows one AES-GCM key.",
							&schedphi_seal_limit,
							1 << 30, 1000, INT_MAX,
							PGC_SUSET,
							GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(schedphi_key_source_check);

/*
 * _key_source_check() -> (status text, detail text), for check_config():
 * whether what schedphi.key_command reads is readable by the server's user
 * only.  The setting itself is visible to superusers only; this says
 * neither the command nor the file, only what was found.  A command that is
 * not a plain "cat FILE" cannot be judged from here: 'warn'.
 */
Datum
schedphi_key_source_check(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	const char *status;
	char	   *detail;
	const char *cmd = schedphi_key_command;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (cmd == NULL || cmd[0] == '\0')
	{
		status = "fail";
		detail = pstrdup("schedphi.key_command is not set: no master key can be loaded");
	}
	else if (strncmp(cmd, "cat ", 4) == 0 && strpbrk(cmd + 4, " \t;|&$`<>'\"\\*?") == NULL && cmd[4] == '/')
	{
		struct stat st;

		if (stat(cmd + 4, &st) != 0)
		{
			status = "warn";
			detail = psprintf("the key file named by schedphi.key_command cannot be examined (%m)");
		}
		else if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		{
			status = "fail";
			detail = psprintf("the key file is open to group or others (mode %04o); it must be 0600 or 0400",
							  (unsigned int) (st.st_mode & 07777));
		}
		else if (st.st_uid != geteuid())
		{
			status = "warn";
			detail = psprintf("the key file (mode %04o) is owned by another user than the server's",
							  (unsigned int) (st.st_mode & 07777));
		}
		else
		{
			status = "pass";
			detail = psprintf("the key file is the server user's only (mode %04o); the setting is shown to superusers only",
							  (unsigned int) (st.st_mode & 07777));
		}
	}
	else
	{
		status = "warn";
		detail = pstrdup("schedphi.key_command is not a plain \"cat FILE\": check that what it reads is readable by the server's user only");
	}
	values[0] = CStringGetTextDatum(status);
	values[1] = CStringGetTextDatum(detail);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

-- schedphi install script, part 0.5: the sealed type and the C primitives
-- for keys, sealing and blind indexes (src/sealed.c, src/keys.c).  None of
-- these is executable by PUBLIC but the type's input and output functions,
-- which only parse and print ciphertext: a literal needs no privilege, but a
-- cast at run time (text to sealed) asks for EXECUTE on them, and a
-- malformed value must be 22P02 for everyone (90_privileges.sql).

CREATE TYPE schedphi.sealed;

CREATE FUNCTION schedphi._sealed_in(cstring) RETURNS schedphi.sealed
AS 'MODULE_PATHNAME', 'schedphi_sealed_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION schedphi._sealed_out(schedphi.sealed) RETURNS cstring
AS 'MODULE_PATHNAME', 'schedphi_sealed_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION schedphi._sealed_recv(internal) RETURNS schedphi.sealed
AS 'MODULE_PATHNAME', 'schedphi_sealed_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION schedphi._sealed_send(schedphi.sealed) RETURNS bytea
AS 'MODULE_PATHNAME', 'schedphi_sealed_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- AES-256-GCM ciphertext with its data key id and nonce.  No comparison
-- operators: a sealed value cannot be sorted, grouped or compared.
-- Ciphertext does not compress, so it is stored uncompressed.
CREATE TYPE schedphi.sealed (
	INPUT = schedphi._sealed_in,
	OUTPUT = schedphi._sealed_out,
	RECEIVE = schedphi._sealed_recv,
	SEND = schedphi._sealed_send,
	INTERNALLENGTH = VARIABLE,
	STORAGE = external
);
COMMENT ON TYPE schedphi.sealed IS
	'AES-256-GCM ciphertext bound to (tenant, table, column, row); text form spv1:<base64>, never plaintext';

-- Seal a value for one place: (tenant, table, column, row id).
CREATE FUNCTION schedphi._seal(tenant uuid, tbl text, col text, row_id uuid, plain text)
RETURNS schedphi.sealed
AS 'MODULE_PATHNAME', 'schedphi_seal' LANGUAGE C VOLATILE STRICT;

-- Open a value sealed for that place; refused unless the session user
-- reads PHI in the tenant (schedphi._may_reveal).
CREATE FUNCTION schedphi._open(value schedphi.sealed, tenant uuid, tbl text, col text, row_id uuid)
RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_open' LANGUAGE C STABLE STRICT;

-- Re-seal a value under the tenant's active key, without ever returning
-- the plaintext (key rotation: no PHI role needed).  A value that does not
-- open is returned unchanged and listed by _reseal_skipped().
CREATE FUNCTION schedphi._reseal(value schedphi.sealed, tenant uuid, tbl text, col text, row_id uuid)
RETURNS schedphi.sealed
AS 'MODULE_PATHNAME', 'schedphi_reseal' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION schedphi._reseal_skipped()
RETURNS TABLE (tenant uuid, tbl text, col text, row_id uuid, key_id int, reason text, digest bytea)
AS 'MODULE_PATHNAME', 'schedphi_reseal_skipped' LANGUAGE C VOLATILE;
CREATE FUNCTION schedphi._sealed_digest(schedphi.sealed) RETURNS bytea
AS 'MODULE_PATHNAME', 'schedphi_sealed_digest' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION schedphi._sealed_key_id(schedphi.sealed) RETURNS int
AS 'MODULE_PATHNAME', 'schedphi_sealed_key_id' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Blind index: HMAC-SHA-256 under a per-tenant, per-field key.
CREATE FUNCTION schedphi._blind(tenant uuid, field text, value text) RETURNS bytea
AS 'MODULE_PATHNAME', 'schedphi_blind' LANGUAGE C STABLE STRICT;

-- A new random data key, wrapped under the active master key.
CREATE FUNCTION schedphi._wrap_new_key(tenant uuid, id int, purpose text,
									   OUT kek_id text, OUT wrapped bytea)
AS 'MODULE_PATHNAME', 'schedphi_wrap_new_key' LANGUAGE C VOLATILE STRICT;

-- The same data key wrapped under the active master key.
CREATE FUNCTION schedphi._rewrap(tenant uuid, id int, purpose text, old_kek_id text, old_wrapped bytea,
								 OUT kek_id text, OUT wrapped bytea)
AS 'MODULE_PATHNAME', 'schedphi_rewrap' LANGUAGE C VOLATILE STRICT;

-- Every backend forgets its cached data keys when this transaction commits.
CREATE FUNCTION schedphi._keys_changed() RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_keys_changed' LANGUAGE C VOLATILE;

-- Which master keys are loaded: ids only, never key material.
CREATE FUNCTION schedphi.master_keys() RETURNS TABLE (key_id text, active boolean)
AS 'MODULE_PATHNAME', 'schedphi_master_key_ids' LANGUAGE C VOLATILE;

-- Benchmark support (bench/): seal and open against bare EVP, in-process.
CREATE FUNCTION schedphi._crypto_bench(tenant uuid, iterations int)
RETURNS TABLE (operation text, ns_per_call float8)
AS 'MODULE_PATHNAME', 'schedphi_crypto_bench' LANGUAGE C VOLATILE STRICT;

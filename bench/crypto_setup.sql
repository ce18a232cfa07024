-- schedphi encryption benchmarks (bench/crypto.sh): the data and helpers.
-- Synthetic data only: no real names, no real identifiers.  Nothing here
-- ever prints a field value; the helpers return timings and counts.
--
-- Run by bench/crypto.sh as a superuser in a fresh database.  It builds:
--
--   * one tenant (its data keys are made by create_tenant, under the
--     throwaway cluster's master key);
--   * crypto_scheduler, a login that is a scheduler member of the tenant:
--     it runs every measured workload but _crypto_bench (superuser only);
--   * cbench.sample: :n_fast synthetic 32-byte values, each with a row id,
--     and the same values already encrypted by pgp_sym_encrypt (the first
--     :n_pgp only: it is slow), by encrypt_iv (AES-256-CBC) and by
--     schedphi._seal, for the decryption loops;
--   * cbench.sql_loops(): benchmark 2, per-call costs measured inside the
--     server over a SELECT that calls one function once per sample row;
--   * benchmark 3's tables and functions: cbench.patient_plain (plaintext),
--     cbench.patient_pgp with cbench.register_pgcrypto() (pgcrypto), and
--     cbench.register_plain() (register_patient's work without the crypto),
--     each table seeded with :n_seed patients through its own function.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS schedphi CASCADE;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA cbench;
CREATE TABLE cbench.clinic (tenant uuid NOT NULL);
INSERT INTO cbench.clinic SELECT schedphi.create_tenant('Synthetic Crypto Clinic', 'America/New_York');

DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crypto_scheduler') THEN
		CREATE ROLE crypto_scheduler LOGIN;
	END IF;
END
$roles$;
SELECT schedphi.add_member(c.tenant, 'crypto_scheduler', 'scheduler') FROM cbench.clinic c;

-- The hand-written pgcrypto version's secrets: one passphrase for
-- pgp_sym_encrypt, one HMAC key for its blind indexes, one AES key and IV
-- for encrypt_iv.  Random, for this run only.
CREATE TABLE cbench.pgc_key (
	passphrase	text NOT NULL,
	hmac_key	bytea NOT NULL,
	aes_key		bytea NOT NULL,
	aes_iv		bytea NOT NULL
);
INSERT INTO cbench.pgc_key
SELECT encode(gen_random_bytes(24), 'base64'), gen_random_bytes(32), gen_random_bytes(32), gen_random_bytes(16);

-- -------------------------------------------------------------- benchmark 2

-- 32-byte synthetic values: 'Synthetic-given-' and 16 digits.
CREATE TABLE cbench.sample (
	n		int PRIMARY KEY,
	row_id	uuid NOT NULL,
	plain	text NOT NULL,
	plain_b	bytea NOT NULL,
	pgp		bytea,
	aes		bytea NOT NULL,
	sealed	schedphi.sealed NOT NULL
);
INSERT INTO cbench.sample (n, row_id, plain, plain_b, pgp, aes, sealed)
SELECT g, s.row_id, s.plain, convert_to(s.plain, 'UTF8'),
	   CASE WHEN g <= :n_pgp THEN pgp_sym_encrypt(s.plain, k.passphrase) END,
	   encrypt_iv(convert_to(s.plain, 'UTF8'), k.aes_key, k.aes_iv, 'aes'),
	   schedphi._seal(c.tenant, 'patient', 'given', s.row_id, s.plain)
FROM generate_series(1, :n_fast) g
CROSS JOIN cbench.pgc_key k
CROSS JOIN cbench.clinic c
CROSS JOIN LATERAL (SELECT gen_random_uuid() AS row_id,
						   'Synthetic-given-' || lpad(g::text, 16, '0') AS plain) s;
DO $check$
BEGIN
	IF (SELECT min(octet_length(plain)) <> 32 OR max(octet_length(plain)) <> 32 FROM cbench.sample) THEN
		RAISE EXCEPTION 'sample values are not 32 bytes';
	END IF;
END
$check$;

-- Benchmark 2: for each operation, the time of one SELECT that calls it
-- once for each of the first N sample rows, divided by N; p_reps
-- repetitions, interleaved, of which the median and the minimum are kept.
-- 'scan' calls length() instead: the cost of the loop itself, which the
-- caller subtracts.  'pgp_s2k_mode_1' is pgp_sym_encrypt with a salted but
-- not iterated S2K: what pgp costs without its key stretching.  The _open loop needs a session user that reads PHI in
-- the tenant: run this as crypto_scheduler.  It is SECURITY DEFINER like
-- schedphi.patient_record, so it reaches schedphi._seal and _open (which
-- PUBLIC may not execute) the same way the extension's own functions do,
-- and _open checks the session user, as it always does.  _open checks the
-- session user's role once per transaction and tenant (check_reveal), so
-- here, as in a SELECT over many patients, that check is paid once per loop.
CREATE FUNCTION cbench.sql_loops(p_reps int, p_n_fast int, p_n_pgp int)
RETURNS TABLE (operation text, calls int, ns_median float8, ns_min float8)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant uuid := (SELECT c.tenant FROM cbench.clinic c);
	v_ops text[] := ARRAY['scan', 'pgp_sym_encrypt', 'pgp_sym_decrypt', 'pgp_s2k_mode_1', 'encrypt_iv',
						  'decrypt_iv', 'hmac_sha256', 'seal', 'open', 'blind'];
	v_sql text;
	v_n int;
	v_count bigint;
	t0 timestamptz;
	v_ns float8;
	r record;
BEGIN
	PERFORM schedphi.set_purpose('OPERATIONS');		-- reading PHI needs a purpose of use
	CREATE TEMP TABLE IF NOT EXISTS loop_times (op text, n int, ns float8) ON COMMIT DROP;
	FOR rep IN 1..p_reps LOOP
		FOREACH operation IN ARRAY v_ops LOOP
			v_n := CASE WHEN operation LIKE 'pgp_sym%' THEN p_n_pgp ELSE p_n_fast END;
			v_sql := 'SELECT count(' || CASE operation
				WHEN 'scan' THEN 'length(s.plain)'
				WHEN 'pgp_sym_encrypt' THEN 'public.pgp_sym_encrypt(s.plain, k.passphrase)'
				WHEN 'pgp_sym_decrypt' THEN 'public.pgp_sym_decrypt(s.pgp, k.passphrase)'
				WHEN 'pgp_s2k_mode_1' THEN 'public.pgp_sym_encrypt(s.plain, k.passphrase, ''s2k-mode=1'')'
				WHEN 'encrypt_iv' THEN 'public.encrypt_iv(s.plain_b, k.aes_key, k.aes_iv, ''aes'')'
				WHEN 'decrypt_iv' THEN 'public.decrypt_iv(s.aes, k.aes_key, k.aes_iv, ''aes'')'
				WHEN 'hmac_sha256' THEN 'public.hmac(s.plain_b, k.hmac_key, ''sha256'')'
				WHEN 'seal' THEN 'schedphi._seal($2, ''patient'', ''given'', s.row_id, s.plain)'
				WHEN 'open' THEN 'schedphi._open(s.sealed, $2, ''patient'', ''given'', s.row_id)'
				WHEN 'blind' THEN 'schedphi._blind($2, ''mrn'', s.plain)'
				END || ') FROM cbench.sample s CROSS JOIN cbench.pgc_key k WHERE s.n <= $1';
			t0 := clock_timestamp();
			EXECUTE v_sql INTO v_count USING v_n, v_tenant;
			v_ns := extract(epoch FROM clock_timestamp() - t0) * 1e9 / v_n;
			IF v_count <> v_n THEN
				RAISE EXCEPTION '% returned % values for % rows', operation, v_count, v_n;
			END IF;
			INSERT INTO loop_times VALUES (operation, v_n, v_ns);
		END LOOP;
	END LOOP;
	FOR r IN SELECT t.op, min(t.n) AS n,
					percentile_cont(0.5) WITHIN GROUP (ORDER BY t.ns) AS med, min(t.ns) AS mn
			 FROM loop_times t GROUP BY t.op ORDER BY array_position(v_ops, t.op) LOOP
		operation := r.op;
		calls := r.n;
		ns_median := r.med;
		ns_min := r.mn;
		RETURN NEXT;
	END LOOP;
	DROP TABLE loop_times;
END
$$;
REVOKE ALL ON FUNCTION cbench.sql_loops(int, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cbench.sql_loops(int, int, int) TO crypto_scheduler;

-- Not a test, but a timing of a wrong answer is worth nothing: how many
-- sample values do NOT come back from each decryption (0 expected).
-- Counts only: no value ever leaves the server.
CREATE FUNCTION cbench.roundtrip_mismatches(OUT pgp bigint, OUT aes bigint, OUT sealed bigint)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT schedphi.set_purpose('OPERATIONS');		-- reading PHI needs a purpose of use
	SELECT count(*) FILTER (WHERE s.pgp IS NOT NULL
							 AND public.pgp_sym_decrypt(s.pgp, k.passphrase) IS DISTINCT FROM s.plain),
		   count(*) FILTER (WHERE public.decrypt_iv(s.aes, k.aes_key, k.aes_iv, 'aes') IS DISTINCT FROM s.plain_b),
		   count(*) FILTER (WHERE schedphi._open(s.sealed, c.tenant, 'patient', 'given', s.row_id)
							 IS DISTINCT FROM s.plain)
	FROM cbench.sample s CROSS JOIN cbench.pgc_key k CROSS JOIN cbench.clinic c
$$;
REVOKE ALL ON FUNCTION cbench.roundtrip_mismatches() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cbench.roundtrip_mismatches() TO crypto_scheduler;

-- -------------------------------------------------------------- benchmark 3

-- (b) plaintext: the same fields in clear, with the indexes a plaintext
-- design needs for the same look-ups (MRN unique, phone, email,
-- family + birth date) and the same primary key, id index and tenant
-- foreign key as schedphi.patient.
CREATE TABLE cbench.patient_plain (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	given		text NOT NULL,
	family		text NOT NULL,
	birth_date	date NOT NULL,
	phone		text,
	email		text,
	mrn			text,
	zip			text,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	UNIQUE (tenant, mrn)
);
CREATE INDEX ON cbench.patient_plain (id);
CREATE INDEX ON cbench.patient_plain (tenant, phone);
CREATE INDEX ON cbench.patient_plain (tenant, email);
CREATE INDEX ON cbench.patient_plain (tenant, lower(family), birth_date);

-- (a) pgcrypto: schedphi.patient's shape, with bytea instead of sealed.
CREATE TABLE cbench.patient_pgp (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL,
	given		bytea NOT NULL,
	family		bytea NOT NULL,
	birth_date	bytea NOT NULL,
	phone		bytea,
	email		bytea,
	mrn			bytea,
	zip			bytea,
	mrn_idx		bytea,
	phone_idx	bytea,
	email_idx	bytea,
	family_dob_idx bytea NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	UNIQUE (tenant, mrn_idx)
);
CREATE INDEX ON cbench.patient_pgp (id);
CREATE INDEX ON cbench.patient_pgp (tenant, phone_idx);
CREATE INDEX ON cbench.patient_pgp (tenant, email_idx);
CREATE INDEX ON cbench.patient_pgp (tenant, family_dob_idx);

-- register_patient written by hand with pgcrypto: the same validation and
-- normalisation functions, the same authorization, the same duplicate-MRN
-- check, the same SECURITY DEFINER and SET search_path, and the same table
-- shape and indexes; only the crypto differs: pgp_sym_encrypt (pgcrypto's
-- defaults: AES-128, iterated and salted S2K) for the seven fields, and
-- hmac(..., 'sha256') under one key for the four blind indexes.  The
-- secrets come from cbench.pgc_key.
CREATE FUNCTION cbench.register_pgcrypto(tenant uuid, given text, family text, birth_date date,
										 phone text DEFAULT NULL, email text DEFAULT NULL,
										 mrn text DEFAULT NULL, zip text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid := gen_random_uuid();
	v_given text := schedphi._check_name('given', given);
	v_family text := schedphi._check_name('family', family);
	v_birth date := schedphi._check_birth_date(birth_date);
	v_phone text := schedphi._norm_phone(phone);
	v_email text := schedphi._norm_email(email);
	v_mrn text := schedphi._norm_mrn(mrn);
	v_zip text := schedphi._norm_zip(zip);
	v_mrn_idx bytea;
	k record;
BEGIN
	PERFORM schedphi._authorize(tenant, ARRAY['scheduler', 'integration']);
	SELECT * INTO k FROM cbench.pgc_key;
	v_mrn_idx := public.hmac(convert_to(v_mrn, 'UTF8'), k.hmac_key, 'sha256');
	IF v_mrn_idx IS NOT NULL AND EXISTS (SELECT 1 FROM cbench.patient_pgp p
										 WHERE p.tenant = tenant AND p.mrn_idx = v_mrn_idx) THEN
		RAISE EXCEPTION 'a patient with this mrn is already registered' USING ERRCODE = '23505';
	END IF;
	INSERT INTO cbench.patient_pgp (tenant, id, given, family, birth_date, phone, email, mrn, zip,
									mrn_idx, phone_idx, email_idx, family_dob_idx)
	VALUES (tenant, v_id,
			public.pgp_sym_encrypt(v_given, k.passphrase),
			public.pgp_sym_encrypt(v_family, k.passphrase),
			public.pgp_sym_encrypt(v_birth::text, k.passphrase),
			public.pgp_sym_encrypt(v_phone, k.passphrase),
			public.pgp_sym_encrypt(v_email, k.passphrase),
			public.pgp_sym_encrypt(v_mrn, k.passphrase),
			public.pgp_sym_encrypt(v_zip, k.passphrase),
			v_mrn_idx,
			public.hmac(convert_to(v_phone, 'UTF8'), k.hmac_key, 'sha256'),
			public.hmac(convert_to(v_email, 'UTF8'), k.hmac_key, 'sha256'),
			public.hmac(convert_to(schedphi._family_dob(v_family, v_birth), 'UTF8'), k.hmac_key, 'sha256'));
	RETURN v_id;
EXCEPTION WHEN unique_violation THEN
	RAISE EXCEPTION 'a patient with this mrn is already registered' USING ERRCODE = '23505';
END
$$;

-- A reference, not a goal: register_patient's work (validation,
-- authorization, duplicate check, PL/pgSQL, SECURITY DEFINER) with no
-- crypto at all, into the plaintext table.  register_patient minus this
-- is what sealing and blind indexing cost it.
CREATE FUNCTION cbench.register_plain(tenant uuid, given text, family text, birth_date date,
									  phone text DEFAULT NULL, email text DEFAULT NULL,
									  mrn text DEFAULT NULL, zip text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid := gen_random_uuid();
	v_given text := schedphi._check_name('given', given);
	v_family text := schedphi._check_name('family', family);
	v_birth date := schedphi._check_birth_date(birth_date);
	v_phone text := schedphi._norm_phone(phone);
	v_email text := schedphi._norm_email(email);
	v_mrn text := schedphi._norm_mrn(mrn);
	v_zip text := schedphi._norm_zip(zip);
BEGIN
	PERFORM schedphi._authorize(tenant, ARRAY['scheduler', 'integration']);
	IF v_mrn IS NOT NULL AND EXISTS (SELECT 1 FROM cbench.patient_plain p
									 WHERE p.tenant = tenant AND p.mrn = v_mrn) THEN
		RAISE EXCEPTION 'a patient with this mrn is already registered' USING ERRCODE = '23505';
	END IF;
	INSERT INTO cbench.patient_plain (tenant, id, given, family, birth_date, phone, email, mrn, zip)
	VALUES (tenant, v_id, v_given, v_family, v_birth, v_phone, v_email, v_mrn, v_zip);
	RETURN v_id;
EXCEPTION WHEN unique_violation THEN
	RAISE EXCEPTION 'a patient with this mrn is already registered' USING ERRCODE = '23505';
END
$$;

REVOKE ALL ON FUNCTION cbench.register_pgcrypto(uuid, text, text, date, text, text, text, text),
	cbench.register_plain(uuid, text, text, date, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cbench.register_pgcrypto(uuid, text, text, date, text, text, text, text),
	cbench.register_plain(uuid, text, text, date, text, text, text, text) TO crypto_scheduler;
GRANT USAGE ON SCHEMA cbench TO crypto_scheduler;
GRANT INSERT ON cbench.patient_plain TO crypto_scheduler;

-- Benchmark 3 inside the server: the mean time of one call of each
-- registration function, p_n calls (p_n_pgp for pgcrypto) in a loop in one
-- transaction: no round trip, no commit, no client.  p_reps repetitions,
-- interleaved; the median is kept.  Run as crypto_scheduler (the functions
-- authorize the session user); SECURITY DEFINER only to reach the MRN
-- sequence.  Synthetic values; MRNs 'LOOP-' and a number from a sequence.
CREATE SEQUENCE cbench.loop_mrn;
CREATE FUNCTION cbench.register_loops(p_reps int, p_n int, p_n_pgp int)
RETURNS TABLE (workload text, calls int, us_median float8)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant uuid := (SELECT c.tenant FROM cbench.clinic c);
	v_ws text[] := ARRAY['plain_fn', 'pgcrypto', 'register'];
	v_times float8[] := '{}';	-- v_times[rep * 3 + workload's position]
	v_w text;
	v_n int;
	v_u bigint;
	t0 timestamptz;
BEGIN
	FOR rep IN 0..p_reps - 1 LOOP
		FOR w IN 1..3 LOOP
			v_w := v_ws[w];
			v_n := CASE v_w WHEN 'pgcrypto' THEN p_n_pgp ELSE p_n END;
			t0 := clock_timestamp();
			FOR i IN 1..v_n LOOP
				v_u := nextval('cbench.loop_mrn');
				IF v_w = 'register' THEN
					PERFORM schedphi.register_patient(v_tenant, 'Given' || i, 'Synthetic' || i,
						date '1950-01-01' + i, '+1 555 ' || (2000000 + i), 'l' || v_u || '@example.org',
						'LOOP-' || v_u, '12345');
				ELSIF v_w = 'pgcrypto' THEN
					PERFORM cbench.register_pgcrypto(v_tenant, 'Given' || i, 'Synthetic' || i,
						date '1950-01-01' + i, '+1 555 ' || (2000000 + i), 'l' || v_u || '@example.org',
						'LOOP-' || v_u, '12345');
				ELSE
					PERFORM cbench.register_plain(v_tenant, 'Given' || i, 'Synthetic' || i,
						date '1950-01-01' + i, '+1 555 ' || (2000000 + i), 'l' || v_u || '@example.org',
						'LOOP-' || v_u, '12345');
				END IF;
			END LOOP;
			v_times[rep * 3 + w] := extract(epoch FROM clock_timestamp() - t0) * 1e6 / v_n;
		END LOOP;
	END LOOP;
	FOR w IN 1..3 LOOP
		workload := v_ws[w];
		calls := CASE workload WHEN 'pgcrypto' THEN p_n_pgp ELSE p_n END;
		us_median := (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v_times[r * 3 + w])
					  FROM generate_series(0, p_reps - 1) r);
		RETURN NEXT;
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION cbench.register_loops(int, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cbench.register_loops(int, int, int) TO crypto_scheduler;

-- ------------------------------------------------- reading back (reference)

-- patient_record written by hand with pgcrypto: the same authorization and
-- role look-up as schedphi.patient_record, then the seven fields opened
-- with pgp_sym_decrypt into the same jsonb.
CREATE FUNCTION cbench.pgp_record(patient uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid := (SELECT p.tenant FROM cbench.patient_pgp p WHERE p.id = patient);
	v_roles text[] := ARRAY['scheduler', 'integration', 'clinician', 'billing'];
	v_role text;
	p cbench.patient_pgp;
	k record;
BEGIN
	PERFORM schedphi._authorize(v_tenant, v_roles);
	v_role := schedphi._member_role(v_tenant, v_roles);
	IF v_role IS NULL OR v_role = 'superuser' THEN
		RAISE EXCEPTION 'permission denied: PHI rule' USING ERRCODE = '42501';
	END IF;
	SELECT * INTO k FROM cbench.pgc_key;
	SELECT * INTO p FROM cbench.patient_pgp x WHERE x.tenant = v_tenant AND x.id = patient;
	RETURN jsonb_strip_nulls(jsonb_build_object('id', p.id, 'tenant', p.tenant,
		'given', public.pgp_sym_decrypt(p.given, k.passphrase),
		'family', public.pgp_sym_decrypt(p.family, k.passphrase),
		'birth_date', public.pgp_sym_decrypt(p.birth_date, k.passphrase),
		'phone', public.pgp_sym_decrypt(p.phone, k.passphrase),
		'email', public.pgp_sym_decrypt(p.email, k.passphrase),
		'mrn', public.pgp_sym_decrypt(p.mrn, k.passphrase),
		'zip', public.pgp_sym_decrypt(p.zip, k.passphrase)));
END
$$;

-- The mean time, in nanoseconds, of schedphi.patient_record and of
-- cbench.pgp_record over (up to) p_n patients each registered by the
-- throughput benchmark, with how many were read.  Run as crypto_scheduler:
-- both check the session user.  Returns counts and timings only.
CREATE FUNCTION cbench.read_records(p_n int, OUT n_schedphi int, OUT schedphi_ns float8,
									OUT n_pgcrypto int, OUT pgcrypto_ns float8)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant uuid := (SELECT c.tenant FROM cbench.clinic c);
	v_ids uuid[];
	v_count bigint;
	t0 timestamptz;
BEGIN
	PERFORM schedphi.set_purpose('OPERATIONS');		-- reading PHI needs a purpose of use
	v_ids := ARRAY(SELECT p.id FROM schedphi.patient p WHERE p.tenant = v_tenant ORDER BY p.id LIMIT p_n);
	n_schedphi := cardinality(v_ids);
	t0 := clock_timestamp();
	SELECT count(schedphi.patient_record(i)) INTO v_count FROM unnest(v_ids) i;
	schedphi_ns := extract(epoch FROM clock_timestamp() - t0) * 1e9 / nullif(n_schedphi, 0);

	v_ids := ARRAY(SELECT p.id FROM cbench.patient_pgp p WHERE p.tenant = v_tenant ORDER BY p.id LIMIT p_n);
	n_pgcrypto := cardinality(v_ids);
	t0 := clock_timestamp();
	SELECT count(cbench.pgp_record(i)) INTO v_count FROM unnest(v_ids) i;
	pgcrypto_ns := extract(epoch FROM clock_timestamp() - t0) * 1e9 / nullif(n_pgcrypto, 0);
END
$$;
REVOKE ALL ON FUNCTION cbench.pgp_record(uuid), cbench.read_records(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cbench.read_records(int) TO crypto_scheduler;

-- ------------------------------------------------------------------ seeding

-- Fresh tables have no statistics, and plans cached on empty tables can
-- choose sequential scans: every registration table starts with :n_seed
-- patients registered through its own function, then everything is
-- analysed.
SET cbench.n_seed = :n_seed;
DO $seed$
DECLARE
	v_tenant uuid := (SELECT c.tenant FROM cbench.clinic c);
BEGIN
	FOR i IN 1..current_setting('cbench.n_seed')::int LOOP
		PERFORM schedphi.register_patient(v_tenant, 'Given' || i, 'Synthetic' || i, date '1950-01-01' + i,
			'+1 555 ' || (2000000 + i), 's' || i || '@example.org', 'SEED-' || i, '12345');
		PERFORM cbench.register_pgcrypto(v_tenant, 'Given' || i, 'Synthetic' || i, date '1950-01-01' + i,
			'+1 555 ' || (2000000 + i), 's' || i || '@example.org', 'SEED-' || i, '12345');
		PERFORM cbench.register_plain(v_tenant, 'Given' || i, 'Synthetic' || i, date '1950-01-01' + i,
			'+1 555 ' || (2000000 + i), 's' || i || '@example.org', 'SEED-' || i, '12345');
	END LOOP;
END
$seed$;

VACUUM ANALYZE;

-- Field encryption: ciphertext at rest, the sealed type's text form,
-- binding to (tenant, table, column, row), who may decrypt, blind
-- indexes, data-key rotation, re-encryption, automatic retirement, and
-- shredding one tenant without touching another.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS t2, p1 AS t2p1 FROM tst.clinic('Europe/Berlin') \gset
CREATE ROLE tst_sched LOGIN;
CREATE ROLE tst_sched2 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_sched', 'scheduler');
SELECT schedphi.add_member(:'t2', 'tst_sched2', 'scheduler');

-- At rest: only ciphertext and keyed digests.
SELECT ok((SELECT bool_and(given::text LIKE 'spv1:%' AND family::text LIKE 'spv1:%' AND birth_date::text LIKE 'spv1:%')
		   FROM schedphi.patient WHERE tenant = :'tenant'), 'every field is stored sealed');
SELECT is((SELECT count(*)::int FROM schedphi.patient p
		   WHERE (p.given, p.family, p.birth_date, p.phone, p.email, p.mrn, p.zip)::text
				 ~* 'testa|synthetica|1970-01-01|5550100001|testa@example|SYN-0001|99999'), 0,
	'no plaintext anywhere in the stored rows');
SELECT is((SELECT octet_length(mrn_idx) FROM schedphi.patient WHERE id = :'p1'), 32, 'blind indexes are 32-byte HMACs');
SELECT isnt(schedphi._seal(:'tenant', 'patient', 'given', :'p1', 'Same')::text,
			schedphi._seal(:'tenant', 'patient', 'given', :'p1', 'Same')::text,
	'sealing the same value twice gives different ciphertext (random nonce)');

-- The sealed type.
SELECT is((SELECT given::text::schedphi.sealed::text = given::text FROM schedphi.patient WHERE id = :'p1'), true,
	'the text form round-trips (dump and restore)');
SELECT throws_ok($$SELECT 'Testa Synthetica'::schedphi.sealed$$, '22P02',
	'invalid input syntax for type schedphi.sealed', 'a malformed literal is 22P02');
SELECT is(tst.error_of($$SELECT 'spv1:c2VjcmV0LWtleS1tYXRlcmlhbA=='::schedphi.sealed$$),
	'22P02: invalid input syntax for type schedphi.sealed', 'the error never echoes the literal');
SELECT throws_ok($$SELECT 'spv1:AQ'::schedphi.sealed$$, '22P02', NULL, 'bad base64 is 22P02');
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok($$SELECT ('spv1:' || repeat('A', 3))::schedphi.sealed$$, '22P02',
	'invalid input syntax for type schedphi.sealed', 'a malformed value cast at run time is 22P02 for anyone');
RESET SESSION AUTHORIZATION;
SELECT throws_ok($$SELECT 'spv1:AgAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'::schedphi.sealed$$, '22P02', NULL,
	'an unknown version is 22P02');
SELECT throws_ok($$SELECT given < family FROM schedphi.patient$$, '42883', NULL, 'sealed values cannot be compared');
CREATE TEMP TABLE sealed_copy (id uuid, given schedphi.sealed);
COPY (SELECT id, given FROM schedphi.patient WHERE tenant = :'tenant') TO '/tmp/schedphi_tap_sealed.bin' (FORMAT binary);
COPY sealed_copy FROM '/tmp/schedphi_tap_sealed.bin' (FORMAT binary);
SELECT is((SELECT count(*)::int FROM sealed_copy c JOIN schedphi.patient p USING (id) WHERE c.given::text = p.given::text), 3,
	'binary send and receive round-trip');
SELECT throws_ok($$COPY sealed_copy FROM PROGRAM 'printf "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0\0\2\0\0\0\20aaaaaaaaaaaaaaaa\0\0\0\3xyz\377\377"' (FORMAT binary)$$,
	'22P02', NULL, 'a malformed binary value is refused');

-- Who may decrypt.
SELECT throws_ok(format($$SELECT schedphi._open(given, tenant, 'patient', 'given', id) FROM schedphi.patient WHERE id = %L$$, :'p1'),
	'42501', 'permission denied: PHI rule', 'a superuser cannot open a sealed field directly either');
SELECT schedphi.set_purpose('TREAT');
SET SESSION AUTHORIZATION tst_sched;
SELECT is(schedphi.patient_record(:'p1')->>'given', 'Testa', 'a scheduler of the tenant reads the patient');
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'t2p1'), '42501', NULL,
	'but not a patient of another tenant');
RESET SESSION AUTHORIZATION;
CREATE ROLE tst_outsider LOGIN;
GRANT EXECUTE ON FUNCTION schedphi._open(schedphi.sealed, uuid, text, text, uuid) TO tst_outsider;
GRANT SELECT ON schedphi.patient TO tst_outsider;
CREATE FUNCTION pg_temp.open_given(p uuid) RETURNS text LANGUAGE sql SECURITY DEFINER AS
$f$ SELECT schedphi._open(given, tenant, 'patient', 'given', id) FROM schedphi.patient WHERE id = p $f$;
GRANT EXECUTE ON FUNCTION pg_temp.open_given(uuid) TO tst_sched, tst_outsider;
SET SESSION AUTHORIZATION tst_sched;
SELECT is(pg_temp.open_given(:'p1'), 'Testa', 'a member opens a field (the check is remembered for the transaction)');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_outsider;
SELECT throws_ok(format($$SELECT pg_temp.open_given(%L)$$, :'p1'), '42501', 'permission denied: PHI rule',
	'but the remembered answer does not carry over to another session user');
RESET SESSION AUTHORIZATION;

-- Ciphertext bound to its place: moved values refuse to open.
UPDATE schedphi.patient SET given = (SELECT given FROM schedphi.patient WHERE id = :'p2') WHERE id = :'p1';
UPDATE schedphi.patient SET zip = family WHERE id = :'p2';
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p1'), 'XX001', 'sealed value does not open here',
	'a value copied from another patient does not open (never the other patient''s name)');
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p2'), 'XX001', 'sealed value does not open here',
	'a value copied from another column does not open');
RESET SESSION AUTHORIZATION;
UPDATE schedphi.patient SET given = (SELECT given FROM schedphi.patient WHERE id = :'t2p1') WHERE id = :'p3';
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p3'), NULL, NULL,
	'a value copied from another tenant does not open');
RESET SESSION AUTHORIZATION;

-- repair the moved values
UPDATE schedphi.patient SET given = schedphi._seal(tenant, 'patient', 'given', id, 'Testa') WHERE id = :'p1';
UPDATE schedphi.patient SET zip = NULL WHERE id = :'p2';
UPDATE schedphi.patient SET given = schedphi._seal(tenant, 'patient', 'given', id, 'Mock') WHERE id = :'p3';

-- Appointment reasons and cancellation reasons are sealed too.
SELECT schedphi.book(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)', reason => 'Synthetic chest pain') AS a1 \gset
SELECT schedphi.cancel(:'a1', 'Synthetic relapse');
SELECT ok((SELECT reason::text LIKE 'spv1:%' AND cancel_reason::text LIKE 'spv1:%' FROM schedphi.appointment WHERE id = :'a1'),
	'appointment reason and cancellation reason are sealed');

-- Keys: three data keys per tenant, wrapped under the active master key.
SELECT is((SELECT array_agg(purpose || ':' || status ORDER BY purpose) FROM schedphi.data_keys WHERE tenant = :'tenant'),
	ARRAY['index:active', 'phi:active', 'token:active'], 'each tenant has active phi, index and token keys');
SELECT is((SELECT count(*)::int FROM schedphi.master_keys() WHERE active), 1, 'one master key is active');
SELECT is((SELECT count(*)::int FROM schedphi.data_key WHERE kek_id <> (SELECT key_id FROM schedphi.master_keys() WHERE active)), 0,
	'every data key is wrapped under the active master key');
SELECT ok((SELECT bool_and(octet_length(wrapped) = 60) FROM schedphi.data_key), 'data keys are stored only wrapped');
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok($$SELECT * FROM schedphi.master_keys()$$, '42501', NULL, 'only a superuser lists master keys');
SELECT throws_ok($$SELECT * FROM schedphi.data_key$$, '42501', NULL, 'nobody else reads the data key table');
RESET SESSION AUTHORIZATION;

-- Rotation and re-encryption.  Sealed values outside patients and
-- appointments too: a break-glass reason and an HS256 issuer's secret.
CREATE ROLE tst_glass_admin LOGIN;
CREATE ROLE tst_glass_admin2 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_glass_admin', 'admin');
SELECT schedphi.add_member(:'t2', 'tst_glass_admin2', 'admin');
SET SESSION AUTHORIZATION tst_glass_admin;
SELECT schedphi.break_glass(:'p1', 'synthetic emergency before rotation') IS NOT NULL AS glass1;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_glass_admin2;
SELECT schedphi.break_glass(:'t2p1', 'synthetic emergency before the shred') IS NOT NULL AS glass2;
RESET SESSION AUTHORIZATION;
SELECT schedphi.add_issuer(t, 'https://hs.example', 'schedphi', 'hs256:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=') IS NOT NULL
FROM unnest(ARRAY[:'tenant', :'t2']::uuid[]) t;
SELECT (SELECT id FROM schedphi.data_key WHERE tenant = :'tenant' AND purpose = 'phi' AND status = 'active') AS old_key \gset
SELECT schedphi.rotate_key(:'tenant') AS new_key \gset
SELECT isnt(:new_key, :old_key, 'rotate_key returns a new active key');
SELECT is((SELECT status FROM schedphi.data_key WHERE id = :old_key), 'retired', 'the old key is retired');
SELECT schedphi.register_patient(:'tenant', 'After', 'Rotation', '2000-02-02', mrn => 'SYN-ROT') AS p4 \gset
SELECT is((SELECT schedphi._sealed_key_id(given) FROM schedphi.patient WHERE id = :'p4'), :new_key, 'new values use the new key');
SELECT is((SELECT schedphi._sealed_key_id(given) FROM schedphi.patient WHERE id = :'p2'), :old_key, 'old values keep the old key until re-encrypted');
SET SESSION AUTHORIZATION tst_sched;
SELECT is(schedphi.patient_record(:'p2')->>'family', 'Fictional', 'old values still open after rotation');
RESET SESSION AUTHORIZATION;
SELECT coalesce(max(id), 0) AS before_reencrypt FROM schedphi.audit_log \gset
SELECT cmp_ok(schedphi.reencrypt(2), '=', 2::bigint, 'reencrypt works in batches');
SELECT cmp_ok(schedphi.reencrypt(1000), '>', 0::bigint, 'the next batch carries on');
SELECT is(schedphi.reencrypt(1000), 0::bigint, 'until nothing is left');
SELECT is((SELECT array_agg(DISTINCT action ORDER BY action) FROM schedphi.audit_log
		   WHERE id > :before_reencrypt AND object IN ('patient', 'appointment')), ARRAY['reencrypt'],
	're-encrypted rows are on record as re-encrypted, not as changes of the patients'' data');
SELECT schedphi.book(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 14:30Z)') AS a5 \gset
SELECT schedphi.set_status(:'a5', 'arrived');
SELECT is((SELECT action FROM schedphi.audit_log WHERE object = 'appointment' AND object_id = :'a5' ORDER BY id DESC LIMIT 1),
	'update', 'a change after it in the same transaction is an update again');
SELECT is((SELECT count(*)::int FROM schedphi.break_glass_grant WHERE tenant = :'tenant' AND schedphi._sealed_key_id(reason) <> :new_key), 0,
	'break-glass reasons are re-encrypted too');
SELECT is((SELECT count(*)::int FROM schedphi.issuer WHERE tenant = :'tenant' AND schedphi._sealed_key_id(secret) <> :new_key), 0,
	'and HS256 secrets');
SELECT is((SELECT count(*)::int FROM schedphi.patient p, unnest(ARRAY[given, family, birth_date, phone, email, mrn, zip]) f
		   WHERE p.tenant = :'tenant' AND schedphi._sealed_key_id(f) <> :new_key), 0,
	'every field of the tenant is under the active key');
SELECT is((SELECT schedphi._sealed_key_id(reason) FROM schedphi.appointment WHERE id = :'a1'), :new_key,
	'appointment reasons are re-encrypted too');
SET SESSION AUTHORIZATION tst_sched;
SELECT is(schedphi.patient_record(:'p2') - 'id' - 'tenant',
	'{"given": "Probe", "family": "Fictional", "birth_date": "1985-06-15", "phone": "15550100002",
	  "email": "probe@example.org", "mrn": "SYN-0002"}'::jsonb, 're-encrypted values read back unchanged');
SELECT is(schedphi.find_patient(:'tenant', mrn => 'syn-0002'), :'p2'::uuid, 'blind indexes survive rotation');
RESET SESSION AUTHORIZATION;
SELECT is(schedphi.rewrap_keys(), 0, 'rewrap_keys has nothing to do while one master key is in use');
SELECT ok((SELECT count(*) FROM schedphi.key_event WHERE tenant = :'tenant' AND action = 'key_rotate') >= 1
		  AND (SELECT count(*) FROM schedphi.key_event WHERE tenant = :'tenant' AND action = 'reencrypt') >= 1,
	'key operations are recorded');
SELECT is((SELECT count(*)::int FROM schedphi.key_event WHERE detail::text ~ '[0-9a-f]{64}'), 0,
	'key events never hold key material');

-- Automatic retirement before the nonce limit.
SET LOCAL schedphi.data_key_seal_limit = 1000;  -- the minimum; 600 patients seal 1800 values
SELECT schedphi.register_patient(:'tenant', 'Bulk', 'Synthetic' || n, '1990-01-01') FROM generate_series(1, 600) n \g /dev/null
SELECT cmp_ok((SELECT count(*)::int FROM schedphi.key_event WHERE tenant = :'tenant' AND detail->>'reason' = 'seal limit reached'),
	'>=', 1, 'a worn data key is retired and replaced automatically');
RESET schedphi.data_key_seal_limit;

-- Shredding one tenant.
SELECT given AS t2_given FROM schedphi.patient WHERE id = :'t2p1' \gset
SELECT lives_ok(format($$SELECT schedphi.shred_tenant(%L)$$, :'t2'), 'shred_tenant works');
SELECT is((SELECT count(*)::int FROM schedphi.patient WHERE tenant = :'t2'), 0, 'the tenant''s patients are gone');
SELECT is((SELECT count(*)::int FROM schedphi.actor WHERE tenant = :'t2'), 0, 'and its actors');
SELECT is((SELECT array_agg(DISTINCT status) FROM schedphi.data_key WHERE tenant = :'t2'), ARRAY['destroyed'],
	'its data keys are destroyed');
SELECT is((SELECT count(*)::int FROM schedphi.break_glass_grant WHERE tenant = :'t2'), 0,
	'a tenant with a break-glass grant is shredded, the grant with it');
SELECT is((SELECT count(*)::int FROM schedphi.issuer WHERE tenant = :'t2'), 0, 'and so are its identity providers');
SELECT is((SELECT schedphi._reseal(:'t2_given'::schedphi.sealed, :'t2', 'patient', 'given', :'t2p1')::text), :'t2_given',
	'a value sealed under a destroyed key is left as it is by re-encryption (once, a crash)');
SELECT is((SELECT string_agg(reason, ',') FROM schedphi._reseal_skipped()), 'data key destroyed',
	'and listed as such');
SELECT throws_ok(format($$SELECT schedphi.register_patient(%L, 'New', 'Synthetic', '1990-01-01')$$, :'t2'), '55000',
	'tenant was shredded', 'nothing more is registered in a shredded tenant');
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'X', 'UTC')$$, :'t2'), '55000', 'tenant was shredded',
	'nor set up');
SELECT is((SELECT count(*)::int FROM schedphi.data_key WHERE tenant = :'t2' AND wrapped IS NOT NULL), 0,
	'nothing of them is left');
CREATE FUNCTION pg_temp.open_as(login name, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET SESSION AUTHORIZATION %I', login);
	EXECUTE stmt;
	RESET SESSION AUTHORIZATION;
	RETURN '00000';
EXCEPTION WHEN OTHERS THEN
	RESET SESSION AUTHORIZATION;
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT schedphi.add_member(:'tenant', 'tst_sched2', 'scheduler');
SELECT throws_ok(format($$SELECT schedphi.rotate_key(%L)$$, :'t2'), '55000', NULL, 'a shredded tenant has no keys to rotate');
SELECT cmp_ok(schedphi.reencrypt(100000), '>', 0::bigint, 're-encryption after the automatic rotation');
SELECT is((SELECT count(*)::int FROM schedphi.key_event WHERE tenant = :'t2' AND action = 'reencrypt'), 0,
	'nothing of the shredded tenant was left to re-encrypt');
SET SESSION AUTHORIZATION tst_sched;
SELECT is(schedphi.patient_record(:'p4')->>'family', 'Rotation', 'the other tenant is untouched');
RESET SESSION AUTHORIZATION;
SELECT throws_ok($$SELECT schedphi.shred_tenant(gen_random_uuid())$$, '22023', 'unknown tenant', 'shredding an unknown tenant');
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok(format($$SELECT schedphi.shred_tenant(%L)$$, :'tenant'), '42501', NULL, 'only a superuser shreds');
SELECT throws_ok($$SELECT schedphi.reencrypt()$$, '42501', NULL, 'only a superuser re-encrypts');
SELECT throws_ok($$SELECT schedphi.rewrap_keys()$$, '42501', NULL, 'only a superuser re-wraps');
SELECT throws_ok(format($$SELECT schedphi.rotate_key(%L)$$, :'tenant'), '42501', NULL, 'a scheduler cannot rotate keys');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;

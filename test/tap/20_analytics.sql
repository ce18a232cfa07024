-- De-identified analytics (issue #13): deid_appointments under HIPAA Safe
-- Harbor, its tokens and their rotation, who may read it, the export
-- record of each statement, and that analysts never decrypt.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
-- Safe Harbor alone first (k-anonymity: the last part)
SET LOCAL schedphi.analytics_min_k = 1;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS t2, dr AS t2dr, p1 AS t2p1 FROM tst.clinic('Europe/Berlin') \gset
CREATE ROLE tst_a_analyst LOGIN;
CREATE ROLE tst_a_desk LOGIN;
CREATE ROLE tst_a_admin LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_a_analyst', 'analyst');
SELECT schedphi.add_member(:'tenant', 'tst_a_desk', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_a_admin', 'admin');
-- The k-anonymity classes (deid_class) kept by triggers must always equal
-- what the derived rows give; the rows where they differ:
CREATE TEMP VIEW class_drift AS
	WITH truth AS (SELECT DISTINCT tenant, visit_year, coalesce(age, -1::smallint) AS age, coalesce(left(zip5, 3), '') AS zip3,
						  patient
				   FROM schedphi.appointment_deid),
	kept AS (SELECT tenant, visit_year, age, zip3, patient FROM schedphi.deid_class)
	(SELECT * FROM truth EXCEPT ALL SELECT * FROM kept) UNION ALL (SELECT * FROM kept EXCEPT ALL SELECT * FROM truth);

-- ages: a patient born 1936-06-30 is 89 on 2026-03-02 and 90+ from 2026-06-30;
-- one born on 29 February has a birthday on 28 February in a common year
SELECT schedphi.register_patient(:'tenant', 'Old', 'Synthetic', '1936-06-30', NULL, NULL, 'SYN-A1', '03601') AS old \gset
SELECT schedphi.register_patient(:'tenant', 'Leap', 'Synthetic', '1936-02-29', NULL, NULL, 'SYN-A2', '10001-1234') AS leap \gset
SELECT schedphi.register_patient(:'tenant', 'Abroad', 'Synthetic', '1990-05-05', NULL, NULL, 'SYN-A3', 'SW1A 1AA') AS abroad \gset
SELECT schedphi.book(:'old', ARRAY[:'dr']::uuid[], '[2026-03-02 14:00Z, 2026-03-02 14:30Z)') AS o1 \gset
SELECT schedphi.book(:'old', ARRAY[:'dr']::uuid[], '[2026-06-29 14:00Z, 2026-06-29 14:30Z)') AS o2 \gset
SELECT schedphi.book(:'old', ARRAY[:'dr', :'room']::uuid[], '[2026-06-30 14:00Z, 2026-06-30 14:45Z)') AS o3 \gset
SELECT schedphi.book(:'leap', ARRAY[:'dr']::uuid[], '[2026-02-27 15:00Z, 2026-02-27 15:30Z)') AS l1 \gset
SELECT schedphi.book(:'leap', ARRAY[:'dr']::uuid[], '[2026-02-28 15:00Z, 2026-02-28 15:30Z)') AS l2 \gset
SELECT schedphi.book(:'abroad', ARRAY[:'chair']::uuid[], '[2026-04-01 14:00Z, 2026-04-01 15:00Z)') AS a1 \gset
SELECT schedphi.book(:'p3', ARRAY[:'dr2']::uuid[], '[2026-04-01 14:00Z, 2026-04-01 14:30Z)') AS q1 \gset
SELECT schedphi.book(:'t2p1', ARRAY[:'t2dr']::uuid[], '[2026-04-01 08:00Z, 2026-04-01 08:30Z)') AS other \gset
SELECT schedphi.set_status(:'q1', 'noshow');

-- the rows as the analyst reads them
SELECT coalesce(max(id), 0) AS mark FROM schedphi.audit_log \gset
SET SESSION AUTHORIZATION tst_a_analyst;
CREATE TEMP TABLE seen AS SELECT * FROM schedphi.deid_appointments;
RESET SESSION AUTHORIZATION;
CREATE TEMP TABLE truth AS
	SELECT d.*, a.id AS appointment FROM seen d
	JOIN schedphi.appointment_deid x ON x.token::text = d.appointment_token
	JOIN schedphi.appointment a ON a.tenant = x.tenant AND a.id = x.appointment;

SELECT is((SELECT count(*)::int FROM seen), 7, 'the analyst sees every appointment of the tenant, and no other tenant''s');
SELECT is((SELECT count(*)::int FROM seen WHERE tenant <> :'tenant'), 0, 'none of the other tenant');
SELECT is((SELECT array_agg(column_name::text ORDER BY ordinal_position) FROM information_schema.columns
		   WHERE table_schema = 'schedphi' AND table_name = 'deid_appointments'),
		  ARRAY['tenant', 'patient_token', 'appointment_token', 'visit_year', 'age_at_visit', 'zip3', 'status', 'kind',
				'duration_minutes', 'lead_days_band', 'location', 'practitioner', 'actor_kinds'],
	'the columns of the SPEC, and no other (no name, date, number, reason)');
SELECT is((SELECT age_at_visit FROM truth WHERE appointment = :'o1'), '89', 'born 1936-06-30: 89 on 2026-03-02');
SELECT is((SELECT age_at_visit FROM truth WHERE appointment = :'o2'), '89', '89 on 2026-06-29');
SELECT is((SELECT age_at_visit FROM truth WHERE appointment = :'o3'), '90+', '90+ on 2026-06-30');
SELECT is((SELECT age_at_visit FROM truth WHERE appointment = :'l1'), '89', 'born 1936-02-29: 89 on 2026-02-27');
SELECT is((SELECT age_at_visit FROM truth WHERE appointment = :'l2'), '90+', '90+ on 2026-02-28 (the birthday of a common year)');
SELECT is((SELECT visit_year FROM truth WHERE appointment = :'o3'), 2026, 'the visit year');
SELECT is((SELECT zip3 FROM truth WHERE appointment = :'o1'), '000', 'ZIP 03601 is in the restricted zone 036: 000');
SELECT is((SELECT zip3 FROM truth WHERE appointment = :'l1'), '100', 'ZIP+4 10001-1234: 100');
SELECT is((SELECT zip3 FROM truth WHERE appointment = :'a1'), NULL, 'a foreign postal code: unknown (NULL)');
SELECT is((SELECT zip3 FROM truth WHERE appointment = :'q1'), NULL, 'no postal code: NULL');
SELECT is((SELECT status FROM truth WHERE appointment = :'q1'), 'noshow', 'a status change reaches the row');
SELECT is((SELECT duration_minutes FROM truth WHERE appointment = :'o3'), 45, 'the duration in minutes');
SELECT is((SELECT actor_kinds FROM truth WHERE appointment = :'o3'), ARRAY['practitioner', 'room'], 'the kinds of actors booked');
SELECT is((SELECT practitioner FROM truth WHERE appointment = :'o3'), :'dr'::uuid, 'the practitioner');
SELECT is((SELECT location FROM truth WHERE appointment = :'o3'), :'loc'::uuid, 'the location (of the room)');
SELECT is((SELECT count(DISTINCT patient_token)::int FROM truth WHERE appointment IN (:'o1', :'o2', :'o3')), 1,
	'one patient token for one patient''s visits');
SELECT is((SELECT count(DISTINCT appointment_token)::int FROM seen), 7, 'one token per appointment');

-- each restricted zone, and its neighbours
SELECT is((SELECT string_agg(z || '=' || coalesce(v, 'null'), ',' ORDER BY z) FROM (
	SELECT z, (SELECT CASE WHEN z IN (SELECT r.zip3 FROM schedphi.zip3_restricted r) THEN '000' ELSE z END) AS v
	FROM unnest(ARRAY['036', '059', '063', '102', '203', '556', '692', '790', '821', '823', '830', '831',
					  '878', '879', '884', '890', '893']) z) x WHERE v <> '000'), NULL,
	'the 17 restricted zones of the 2000 Census are in the list');
SELECT is((SELECT count(*)::int FROM schedphi.zip3_restricted), 17, 'and only they');
SELECT is((SELECT count(DISTINCT vintage)::int FROM schedphi.zip3_restricted WHERE vintage LIKE '2000 Census%'), 1,
	'with their census vintage');
SELECT schedphi.register_patient(:'tenant', 'Zone' || z, 'Synthetic', '1980-01-01', NULL, NULL, 'SYN-Z' || z, z || '42')
FROM unnest(ARRAY['036', '059', '063', '102', '203', '556', '692', '790', '821', '823', '830', '831',
				  '878', '879', '884', '890', '893', '035', '037', '894']) z \g /dev/null
SELECT is((SELECT string_agg(DISTINCT a.kind, ',') FROM schedphi.patient p, LATERAL (SELECT 1) x,
		   LATERAL (SELECT CASE WHEN left(d.zip5, 3) IN (SELECT zip3 FROM schedphi.zip3_restricted) THEN 'restricted'
								ELSE 'open:' || left(d.zip5, 3) END AS kind
					FROM schedphi.patient_deid d WHERE d.tenant = p.tenant AND d.patient = p.id) a
		   WHERE p.tenant = :'tenant' AND p.mrn_idx = schedphi._blind(:'tenant', 'mrn', 'SYN-Z036')), 'restricted',
	'a ZIP written at registration keeps its five digits apart from the sealed column');

-- age computed for any dates (the function the triggers use)
SELECT is(schedphi._age_at(schedphi._seal(:'tenant', 'patient', 'birth_date', :'old', b), :'tenant', :'old', v::date),
		  want::smallint, format('born %s, on %s: %s', b, v, want))
FROM (VALUES ('2000-02-29', '2024-02-29', 24), ('2000-02-29', '2025-02-28', 25), ('2000-02-29', '2025-02-27', 24),
			 ('2000-02-29', '2028-02-28', 27), ('2000-02-29', '2028-02-29', 28), ('1936-06-30', '2026-06-29', 89),
			 ('1936-06-30', '2026-06-30', 90), ('1900-01-01', '2026-01-01', 90), ('2026-01-01', '2026-01-01', 0),
			 ('2026-01-02', '2026-01-01', NULL)) t(b, v, want);
SELECT schedphi.add_resource(:'tenant', 'device', 'Night monitor', 1, :'loc') AS night \gset
SELECT schedphi.add_availability(:'night', :'loc', '{1,2,3,4,5,6,7}', '00:00', '24:00', daterange('2026-01-01', NULL), 15) \g /dev/null
SELECT schedphi.book(:'old', ARRAY[:'night']::uuid[], '[2026-06-30 03:00Z, 2026-06-30 03:30Z)') AS late \gset
SELECT is((SELECT age FROM schedphi.appointment_deid WHERE tenant = :'tenant' AND appointment = :'late'), 89::smallint,
	'the visit''s date is the one where it happens: 03:00 UTC on 30 June is the 29th in New York, still 89');

-- a correction of the birth date or ZIP reaches the derived rows; a re-encryption changes nothing
UPDATE schedphi.patient SET birth_date = schedphi._seal(:'tenant', 'patient', 'birth_date', :'old', '1936-07-15'),
							zip = schedphi._seal(:'tenant', 'patient', 'zip', :'old', '02139')
WHERE tenant = :'tenant' AND id = :'old';
SELECT patient_token AS old_token FROM truth WHERE appointment = :'o1' \gset
SET SESSION AUTHORIZATION tst_a_analyst;
SELECT is((SELECT string_agg(age_at_visit || '/' || zip3, ',' ORDER BY age_at_visit) FROM schedphi.deid_appointments d
		   WHERE d.patient_token = :'old_token'),
		  '89/021,89/021,89/021,89/021', 'a corrected birth date and ZIP are derived again for every visit');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(age || '/' || zip3, ',') FROM schedphi.deid_class
		   WHERE tenant = :'tenant' AND patient = :'old'), '89/021',
	'the patient''s k-anonymity class moved with the correction (its four visits in one class)');
SELECT is((SELECT count(*)::int FROM class_drift), 0, 'the kept classes equal the derived rows after a correction');
-- a visit moved to another year moves its class
SELECT schedphi.reschedule(:'o1', '[2027-03-02 14:00Z, 2027-03-02 14:30Z)') \g /dev/null
SELECT is((SELECT string_agg(visit_year || '/' || age, ',' ORDER BY visit_year) FROM schedphi.deid_class
		   WHERE tenant = :'tenant' AND patient = :'old'), '2026/89,2027/90',
	'a visit rescheduled into the next year (and past the 90th birthday) leaves its class for the new one');
SELECT is((SELECT count(*)::int FROM class_drift), 0, 'and the kept classes still equal the derived rows');
SELECT schedphi.reschedule(:'o1', '[2026-03-02 14:00Z, 2026-03-02 14:30Z)') \g /dev/null
SELECT is((SELECT string_agg(visit_year || '/' || age, ',' ORDER BY visit_year) FROM schedphi.deid_class
		   WHERE tenant = :'tenant' AND patient = :'old'), '2026/89',
	'moved back, its last visit gone from the 2027 class, the patient leaves that class');
SELECT schedphi.rotate_key(:'tenant') \g /dev/null
SELECT schedphi.reencrypt(1000) \g /dev/null
SELECT is((SELECT count(*)::int FROM schedphi.appointment_deid WHERE tenant = :'tenant' AND age IS NULL), 0,
	'after key rotation and re-encryption every age is still known');

-- tokens: random surrogates, never a hash of anything about the person
SELECT is((SELECT count(*)::int FROM schedphi.patient_deid d JOIN schedphi.patient p ON p.tenant = d.tenant AND p.id = d.patient
		   WHERE d.tenant = :'tenant' AND (
				 d.token::text IN (md5(p.id::text), encode(sha256(p.id::text::bytea), 'hex'))
			  OR replace(d.token::text, '-', '') IN (md5(p.id::text), left(encode(sha256(p.id::text::bytea), 'hex'), 32),
				   left(encode(sha256(uuid_send(p.id)), 'hex'), 32), left(encode(p.mrn_idx, 'hex'), 32),
				   left(encode(p.family_dob_idx, 'hex'), 32), left(encode(schedphi._blind(p.tenant, 'mrn', p.id::text), 'hex'), 32),
				   left(encode(schedphi._blind(p.tenant, 'family_dob', p.id::text), 'hex'), 32))
			  OR d.token = p.id)), 0,
	'no patient token is its id, or a hash or HMAC of its id, MRN or name under the project''s keys');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_deid d WHERE d.token = d.appointment OR d.token = d.patient
		   OR d.patient_token = d.patient OR replace(d.token::text, '-', '') = md5(d.appointment::text)), 0,
	'no appointment token is its id or a hash of it');
SELECT is((SELECT count(*)::int FROM schedphi.patient_deid WHERE tenant = :'tenant'
		   AND substr(token::text, 15, 1) = '4' AND substr(token::text, 20, 1) IN ('8', '9', 'a', 'b')), 
		  (SELECT count(*)::int FROM schedphi.patient_deid WHERE tenant = :'tenant'),
	'tokens are random (version 4) uuids');

SELECT birth_date::text AS sealed_dob FROM schedphi.patient WHERE tenant = :'tenant' AND id = :'old' \gset
CREATE TEMP TABLE before_rotation AS SELECT patient_token, appointment_token FROM seen;
SET SESSION AUTHORIZATION tst_a_desk;
SELECT is(tst.sqlstate_of(format('SELECT schedphi.rotate_analytics_tokens(%L)', :'tenant')), '42501',
	'a scheduler cannot rotate the tokens');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_a_admin;
SELECT is(schedphi.rotate_analytics_tokens(:'tenant'), 2, 'an admin starts a new token epoch');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_a_analyst;
CREATE TEMP TABLE after_rotation AS SELECT * FROM schedphi.deid_appointments;
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM after_rotation a JOIN before_rotation b
		   ON a.patient_token = b.patient_token OR a.appointment_token = b.appointment_token
			  OR a.patient_token = b.appointment_token OR a.appointment_token = b.patient_token), 0,
	'after rotation no old token appears');
SELECT is((SELECT count(*)::int FROM after_rotation), 8, 'and every row is still there');
SELECT is((SELECT count(DISTINCT patient_token)::int FROM after_rotation a WHERE age_at_visit = '89' OR age_at_visit = '90+'),
		  2, 'one patient''s rows still share one token');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE action = 'rotate_tokens' AND tenant = :'tenant'
		   AND detail->>'epoch' = '2' AND login = 'tst_a_admin'), 1, 'the rotation is on the ledger');

-- who may read: the analyst role only; 42501 otherwise, recorded
SET SESSION AUTHORIZATION tst_a_desk;
SELECT is(tst.error_of('SELECT count(*) FROM schedphi.deid_appointments'),
	'42501: permission denied: de-identified analytics are for the analyst role', 'a scheduler: 42501');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_a_admin;
SELECT is(tst.sqlstate_of('SELECT count(*) FROM schedphi.deid_appointments'), '42501', 'an admin: 42501');
SELECT is(tst.sqlstate_of('SELECT count(*) FROM schedphi.appointment_deid'), '42501',
	'nobody reads the derived table itself');
SELECT is(tst.sqlstate_of(format('SELECT schedphi._age_at(%L::schedphi.sealed, %L, %L, %L)', :'sealed_dob', :'tenant', :'old', '2026-01-01')), '42501',
	'nor calls the functions that derive from sealed values');
RESET SESSION AUTHORIZATION;

-- export records: one per statement, with the view and the row count; no read
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'read' AND login = 'tst_a_analyst'), 0,
	'the analyst''s queries decrypted nothing: no read on the ledger');
SELECT coalesce(max(id), 0) AS mark2 FROM schedphi.audit_log \gset
SET SESSION AUTHORIZATION tst_a_analyst;
SELECT count(*) FROM (SELECT * FROM schedphi.deid_appointments LIMIT 3) x \g /dev/null
SELECT * FROM schedphi.deid_appointments WHERE status = 'noshow' \g /dev/null
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg((detail->>'view') || ':' || (detail->>'rows') || ':' || role, ',' ORDER BY id)
		   FROM schedphi.audit_log WHERE id > :mark2 AND action = 'export' AND login = 'tst_a_analyst'),
		  'deid_appointments:1:analyst,deid_appointments:1:analyst',
	'each statement leaves one export record with the view and the rows it returned');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark2 AND action = 'export' AND tenant = :'tenant'
		   AND object = 'deid_appointments'), 2, 'in the analyst''s tenant');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'denied' AND login = 'tst_a_desk'
		   AND detail->>'rule' LIKE '%analyst role%'), 1, 'the scheduler''s refusal is on the ledger');

SET SESSION AUTHORIZATION tst_a_analyst;
SELECT is(tst.sqlstate_of($$SELECT schedphi._analytics_scope('deid_appointments", "rows": 0, "x": "')$$), '22023',
	'the scope helper the view calls takes only the analysts'' views (no forged export record)');
RESET SESSION AUTHORIZATION;

-- no PHI anywhere in what the analyst saw
SELECT is((SELECT count(*)::int FROM after_rotation a
		   WHERE concat_ws('|', a.visit_year, a.age_at_visit, a.zip3, a.status, a.kind, a.duration_minutes, a.lead_days_band,
						   a.actor_kinds::text)
				 ~* '(synthetic|testa|probe|mock|old|leap|abroad|SYN-|03601|10001|SW1A|1936|555|example\.org|-0[0-9]-)'), 0,
	'no name, MRN, ZIP, birth date, phone or e-mail in any row the analyst read');

-- rebuilt from scratch (after a restore): the same rows, new tokens
CREATE TEMP TABLE before_rebuild AS
	SELECT tenant, appointment, patient, age, zip5, status, token FROM schedphi.appointment_deid;
SELECT ok(schedphi.rebuild_analytics() >= 8, 'rebuild_analytics makes every appointment''s row again');
SELECT is((SELECT count(*)::int FROM before_rebuild b JOIN schedphi.appointment_deid d USING (tenant, appointment)
		   WHERE (b.patient, b.age, b.zip5, b.status) IS NOT DISTINCT FROM (d.patient, d.age, d.zip5, d.status)
			 AND b.token <> d.token), (SELECT count(*)::int FROM before_rebuild),
	'with the same facts and new tokens');

-- a shredded tenant's rows go with it
SELECT schedphi.shred_tenant(:'t2');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_deid WHERE tenant = :'t2')
		+ (SELECT count(*)::int FROM schedphi.patient_deid WHERE tenant = :'t2'), 0,
	'shred_tenant removes the tenant''s derived rows');
SELECT is((SELECT count(*)::int FROM schedphi.deid_class WHERE tenant = :'t2'), 0, 'and its k-anonymity classes');
SELECT is((SELECT count(*)::int FROM class_drift), 0, 'the kept classes equal the derived rows after a rebuild and a shredding');

-- k-anonymity over (age at visit, ZIP3, visit year), here with k = 3:
--   A: 3 patients aged 40 in 021 -> shown as they are (exactly k)
--   B: 2 patients aged 41 in 021, C: 1 aged 45 in 100 -> generalised to (40-49, 000): 3 patients, shown
--   D: 1 aged 70 in 606 -> (70-79, 000): 1 patient, suppressed
--   E: 1 aged 40 with no ZIP -> (40-49, unknown): 1 patient, suppressed
SET LOCAL schedphi.analytics_min_k = 3;
SELECT tenant AS t3, dr AS t3dr FROM tst.clinic('America/Chicago') \gset
CREATE ROLE tst_a_k LOGIN;
SELECT schedphi.add_member(:'t3', 'tst_a_k', 'analyst');
CREATE TEMP TABLE kp AS
SELECT g, c, schedphi.register_patient(:'t3', 'K' || g, 'Synthetic', b::date, NULL, NULL, 'SYN-K' || g, z) AS id
FROM (VALUES (1, 'A', '1986-06-01', '02139'), (2, 'A', '1986-06-01', '02140'), (3, 'A', '1986-06-01', '02141'),
			 (4, 'B', '1985-06-01', '02139'), (5, 'B', '1985-06-01', '02139'), (6, 'C', '1981-06-01', '10001'),
			 (7, 'D', '1956-06-01', '60614'), (8, 'E', '1986-06-01', NULL)) v(g, c, b, z);
SELECT schedphi.book(id, ARRAY[:'t3dr']::uuid[], tstzrange(t, t + interval '30 minutes'))
FROM (SELECT id, timestamptz '2027-03-01 15:00Z' + g * interval '30 minutes' AS t FROM kp) x \g /dev/null
SET SESSION AUTHORIZATION tst_a_k;
CREATE TEMP TABLE kseen AS SELECT * FROM schedphi.deid_appointments;
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(age_at_visit || '/' || coalesce(zip3, '-'), ',' ORDER BY age_at_visit, zip3) FROM kseen),
		  '40/021,40/021,40/021,40-49/000,40-49/000,40-49/000',
	'a class of exactly k is shown; smaller ones are generalised to 10 years and 000 where that makes k; the rest suppressed');
SELECT is((SELECT count(*)::int FROM kseen WHERE age_at_visit = '70' OR age_at_visit = '70-79' OR zip3 = '606'), 0,
	'a patient alone in a class even after generalising is not shown at all');
SET SESSION AUTHORIZATION tst_a_k;
SELECT is((SELECT row(quasi_identifiers, k, rows_generalised, rows_suppressed)::text FROM schedphi.k_anonymity(:'t3')),
		  '("{age_at_visit,zip3,visit_year}",3,3,2)', 'k_anonymity reports k, the rows generalised and the rows suppressed');
SELECT is(tst.sqlstate_of(format('SELECT * FROM schedphi.k_anonymity(%L)', :'tenant')), '42501',
	'k_anonymity is for the tenant''s analysts');
SELECT is(tst.sqlstate_of('SELECT * FROM schedphi._deid_classes'), '42501',
	'the classes with their sizes, suppressed ones too, are not the analyst''s to read');
SELECT is(tst.sqlstate_of('SELECT * FROM schedphi._deid_appointments'), '42501',
	'nor is the view under deid_appointments');
SELECT is((SELECT count(*)::int FROM schedphi._deid_rows()), 6, 'the rows the view reads are the shown ones only');
RESET SESSION AUTHORIZATION;
SET LOCAL schedphi.analytics_min_k = 2;
SET SESSION AUTHORIZATION tst_a_k;
SELECT is((SELECT string_agg(age_at_visit || '/' || coalesce(zip3, '-'), ',' ORDER BY age_at_visit, zip3)
		   FROM schedphi.deid_appointments), '40/021,40/021,40/021,41/021,41/021',
	'with k = 2 the class of two is shown as it is, and one alone in its generalised class is suppressed');
RESET SESSION AUTHORIZATION;

-- the view is one query over the derived rows (not a security barrier of
-- its own): an analyst's aggregate is scanned and aggregated by parallel
-- workers, and what they show is what one process shows
SET LOCAL schedphi.analytics_min_k = 3;
SET SESSION AUTHORIZATION tst_a_k;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SET LOCAL parallel_leader_participation = off;
CREATE TEMP TABLE kplan AS
SELECT string_agg(p, E'\n') AS p FROM tst.lines('EXPLAIN (COSTS OFF) SELECT count(*), max(age_at_visit), max(zip3) FROM schedphi.deid_appointments') p;
SELECT ok((SELECT p ~ 'Gather' AND p ~ 'Partial' AND p ~ 'Parallel Seq Scan on appointment_deid' FROM kplan),
	'an analyst''s aggregate over deid_appointments is planned for parallel workers, partial aggregates included');
SELECT is((SELECT string_agg(format('%s/%s:%s', age_at_visit, coalesce(zip3, '-'), n), ',' ORDER BY age_at_visit, zip3)
		   FROM (SELECT age_at_visit, zip3, count(*) AS n FROM schedphi.deid_appointments GROUP BY 1, 2) x),
		  '40/021:3,40-49/000:3',
	'run by the workers alone, it shows what one process shows (k = 3: generalised, suppressed)');
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;
-- a condition of the analyst's own that could leak what it sees (cheap,
-- not leakproof) sees only the rows shown: not another tenant's, not a
-- suppressed class's
SELECT set_config('tst.leaked', '', true) \g /dev/null
SELECT is((SELECT count(*)::int FROM schedphi.deid_appointments
		   WHERE tst.leak(coalesce(age_at_visit, '-') || '/' || coalesce(zip3, '-'))), 6,
	'a leaky condition of the caller''s keeps its rows');
SELECT is((SELECT string_agg(v, ',' ORDER BY v) FROM unnest(string_to_array(nullif(current_setting('tst.leaked'), ''), ',')) v),
		  '40-49/000,40-49/000,40-49/000,40/021,40/021,40/021',
	'and was given the six rows shown and nothing else (no other tenant''s, no suppressed class''s)');
SELECT is(tst.sqlstate_of('SELECT * FROM schedphi._deid_generalised'), '42501',
	'the generalised classes the view looks rows up in are not the analyst''s to read');
RESET SESSION AUTHORIZATION;

-- aggregates with small-cell suppression: a clinic with, in March 2026,
--   dr:  week of 2 March 12 visits (no no-show); of 9 March 15 visits, 12 no-shows
--        (so 3 attended: suppressed); of 16 March 20 visits
--   dr2: week of 2 March 11 visits
-- dr's year then holds one suppressed week, which its total would give away:
-- its smallest other week (2 March) is suppressed too; that week then holds
-- one suppressed cell over the practitioners, so dr2's is suppressed too.
SELECT tenant AS t5, dr AS t5dr, dr2 AS t5dr2, p1 AS t5p, room AS t5room FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_a_agg LOGIN;
SELECT schedphi.add_member(:'t5', 'tst_a_agg', 'analyst');
CREATE TEMP TABLE agg AS
SELECT a, d, i, schedphi.book(:'t5p', ARRAY[a]::uuid[],
		tstzrange(d + time '14:00' + i * interval '15 minutes', d + time '14:15' + i * interval '15 minutes')) AS id
FROM (VALUES (:'t5dr'::uuid, date '2026-03-02', 12), (:'t5dr'::uuid, date '2026-03-09', 15),
			 (:'t5dr'::uuid, date '2026-03-16', 20), (:'t5dr2'::uuid, date '2026-03-02', 11)) v(a, d, k),
	 generate_series(0, k - 1) i;
SELECT schedphi.set_status(id, 'noshow') FROM agg WHERE d = '2026-03-09' AND i < 12 \g /dev/null
SELECT coalesce(max(id), 0) AS mark3 FROM schedphi.audit_log \gset
SET SESSION AUTHORIZATION tst_a_agg;
SELECT is((SELECT string_agg(format('%s %s %s/%s/%s %s', CASE grp WHEN :'t5dr' THEN 'dr' WHEN :'t5dr2' THEN 'dr2' END, week,
								   coalesce(appointments::text, '-'), coalesce(no_shows::text, '-'), coalesce(rate::text, '-'),
								   suppressed), '; ' ORDER BY grp = :'t5dr2', week)
		   FROM schedphi.no_show_rates(:'t5', '[2026-03-01, 2026-04-01)', 'practitioner')),
		  'dr 2026-03-02 -/-/- t; dr 2026-03-09 -/-/- t; dr 2026-03-16 20/0/0.0000 f; dr2 2026-03-02 -/-/- t',
	'no_show_rates: a small cell (3 attended) is suppressed, and so are the cells that would give it away');
SELECT is((SELECT string_agg(format('%s/%s', coalesce(appointments::text, '-'), suppressed), ',' ORDER BY grp = :'t5dr2', week)
		   FROM schedphi.lead_times(:'t5', '[2026-03-01, 2026-04-01)', 'practitioner')),
		  '12/f,15/f,20/f,11/f', 'lead_times: cells of 11 and more are shown');
SELECT is((SELECT string_agg(format('%s %s/%s', CASE grp WHEN :'t5dr' THEN 'dr' WHEN :'t5dr2' THEN 'dr2' WHEN :'t5room' THEN 'room' ELSE 'other' END,
								   available_minutes, booked_minutes), ',' ORDER BY available_minutes, booked_minutes DESC, grp)
		   FROM schedphi.utilisation(:'t5', '[2026-03-02 05:00Z, 2026-03-03 05:00Z)') WHERE grp IN (:'t5dr', :'t5dr2', :'t5room')),
		  'dr 480/180,dr2 480/165,room 480/0', 'utilisation: available minutes from the weekly rules, booked minutes from the bookings');
SELECT is((SELECT count(*)::int FROM schedphi.utilisation(:'t5', '[2026-03-09 04:00Z, 2026-03-10 04:00Z)')
		   WHERE grp = :'t5dr' AND suppressed), 0, 'a day of 15 visits is shown');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.no_show_rates(%L, '[2026-03-01,)')$$, :'t5')), '22023',
	'an unbounded period is refused');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.no_show_rates(%L, '[2026-03-01, 2026-04-01)', 'kind')$$, :'t5')), '22023',
	'a grouping that is not a uuid is refused');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.no_show_rates(%L, '[2026-03-01, 2026-04-01)')$$, :'tenant')), '42501',
	'another tenant''s: 42501');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(object || ':' || (detail->>'rows'), ',' ORDER BY id) FROM schedphi.audit_log
		   WHERE id > :mark3 AND action = 'export' AND login = 'tst_a_agg'),
		  'no_show_rates:1,lead_times:1,utilisation:1,utilisation:1',
	'each statement is one export record, with the rows it returned (here one: an aggregate of the cells)');
SET SESSION AUTHORIZATION tst_a_desk;
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.lead_times(%L, '[2026-03-01, 2026-04-01)')$$, :'tenant')), '42501',
	'a scheduler: 42501');
RESET SESSION AUTHORIZATION;
-- a period's bounds are kept as given: dr's 20 visits of 16 March start at 14:00, 14:15, ... 18:45
SET SESSION AUTHORIZATION tst_a_agg;
SELECT is((SELECT string_agg(coalesce(x.n::text, '-'), ',' ORDER BY p.o)
		   FROM unnest(ARRAY['[2026-03-16 14:00Z, 2026-03-16 19:00Z)', '(2026-03-16 14:00Z, 2026-03-16 19:00Z)',
							 '(2026-03-16 14:00Z, 2026-03-16 18:45Z]', '(2026-03-16 14:00Z, 2026-03-16 18:45Z)']::tstzrange[])
				WITH ORDINALITY p(r, o)
		   CROSS JOIN LATERAL (SELECT sum(l.appointments) AS n FROM schedphi.lead_times(:'t5', p.r, 'practitioner') l
							   WHERE l.grp = :'t5dr') x), '20,19,19,18',
	'an aggregate''s period includes or excludes each bound as the range says');
RESET SESSION AUTHORIZATION;

-- the Limited Data Set: only under a current data use agreement; dates
-- shifted per patient by whole weeks (kept), or true; the 5-digit ZIP
CREATE ROLE tst_a_lds LOGIN;
CREATE ROLE tst_a_lds_true LOGIN;
SET SESSION AUTHORIZATION tst_a_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_data_use_agreement(%L, 'tst_a_lds', 'no-show study', current_date + 30)$$,
								 :'tenant')), '42501', 'a scheduler cannot sign a data use agreement');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_a_admin;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_data_use_agreement(%L, 'tst_a_lds', 'no-show study', current_date - 2)$$,
								 :'tenant')), '22023', 'an agreement that has already expired is refused');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_data_use_agreement(%L, 'tst_no_such_login', 'study', current_date + 2)$$,
								 :'tenant')), '22023', 'the recipient must be a login');
SELECT schedphi.add_data_use_agreement(:'tenant', 'tst_a_lds', 'no-show study', current_date + 30) AS dua \gset
SELECT schedphi.add_data_use_agreement(:'tenant', 'tst_a_lds_true', 'scheduling audit', current_date + 30, false) AS dua_true \gset
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_a_lds;
CREATE TEMP TABLE lds1 AS SELECT * FROM schedphi.lds_appointments;
CREATE TEMP TABLE lds2 AS SELECT * FROM schedphi.lds_appointments;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_a_lds_true;
CREATE TEMP TABLE lds_true AS SELECT * FROM schedphi.lds_appointments;
RESET SESSION AUTHORIZATION;
CREATE TEMP TABLE lds_check AS
	SELECT l.*, d.patient, lower(a.during) AS true_starts, upper(a.during) AS true_ends,
		   (l.starts AT TIME ZONE 'America/New_York')::date - (lower(a.during) AT TIME ZONE 'America/New_York')::date AS days,
		   (l.starts AT TIME ZONE 'America/New_York')::time AS shifted_time,
		   (lower(a.during) AT TIME ZONE 'America/New_York')::time AS true_time
	FROM lds1 l JOIN schedphi.appointment_deid d ON d.token::text = l.appointment_token
	JOIN schedphi.appointment a ON a.tenant = d.tenant AND a.id = d.appointment;
SELECT is((SELECT count(*)::int FROM lds1), (SELECT count(*)::int FROM schedphi.appointment WHERE tenant = :'tenant'),
	'the recipient reads every appointment of the tenant');
SELECT is((SELECT count(*)::int FROM lds_check WHERE days % 7 <> 0 OR days = 0 OR shifted_time <> true_time
			 OR ends - starts <> true_ends - true_starts), 0,
	'every date is shifted by a whole number of weeks (not none), keeping the local time of day and the length');
SELECT is((SELECT count(*)::int FROM (SELECT patient FROM lds_check GROUP BY patient HAVING count(DISTINCT days) > 1) x), 0,
	'one shift per patient, so the intervals between a patient''s visits survive');
SELECT is((SELECT count(*)::int FROM lds1 a JOIN lds2 b USING (appointment_token) WHERE a.starts <> b.starts), 0,
	'the shifts are kept: the same on the next read');
SELECT is((SELECT count(*)::int FROM schedphi.lds_shift WHERE agreement = :'dua'),
		  (SELECT count(*)::int FROM schedphi.patient_deid WHERE tenant = :'tenant'), 'drawn once per patient and agreement');
SELECT is((SELECT count(*)::int FROM lds_true l JOIN schedphi.appointment_deid d ON d.token::text = l.appointment_token
		   WHERE l.starts <> d.starts), 0, 'an agreement without date shifting gives the true dates');
SELECT is((SELECT min(zip5) FROM lds_check WHERE patient = :'old'), '02139', 'the 5-digit ZIP');
SELECT is((SELECT string_agg(DISTINCT (detail->>'agreement') || ':' || (detail->>'rows'), ',')
		   FROM schedphi.audit_log WHERE action = 'export' AND login = 'tst_a_lds'),
		  :'dua' || ':' || (SELECT count(*) FROM lds1), 'each read is an export record naming the agreement');
SET SESSION AUTHORIZATION tst_a_analyst;
SELECT is(tst.error_of('SELECT count(*) FROM schedphi.lds_appointments'),
		  '42501: permission denied: no current data use agreement', 'an analyst without an agreement: 42501');
RESET SESSION AUTHORIZATION;
UPDATE schedphi.data_use_agreement d SET expires = (now() AT TIME ZONE t.timezone)::date - 1 FROM schedphi.tenant t WHERE t.tenant = d.tenant AND d.id = :'dua';
SET SESSION AUTHORIZATION tst_a_lds;
SELECT is(tst.sqlstate_of('SELECT count(*) FROM schedphi.lds_appointments'), '42501', 'an expired agreement: 42501');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE action = 'denied' AND login = 'tst_a_lds'
		   AND detail->>'rule' LIKE '%data use agreement%'), 1, 'and recorded');

-- every restricted ZIP3 zone, and its neighbours, as the analyst's view shows them
SET LOCAL schedphi.analytics_min_k = 1;
SELECT tenant AS t6, dr AS t6dr FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_a_zone LOGIN;
SELECT schedphi.add_member(:'t6', 'tst_a_zone', 'analyst');
CREATE TEMP TABLE zones AS
SELECT z, schedphi.register_patient(:'t6', 'Zone' || z, 'Synthetic', '1980-01-01', NULL, NULL, 'SYN-Z' || z, z || '42') AS id
FROM unnest(ARRAY['036', '059', '063', '102', '203', '556', '692', '790', '821', '823', '830', '831',
				  '878', '879', '884', '890', '893', '035', '037', '894']) WITH ORDINALITY u(z, o);
CREATE TEMP TABLE zone_visits AS
SELECT z, schedphi.book(id, ARRAY[:'t6dr']::uuid[], tstzrange(t, t + interval '15 minutes')) AS appt
FROM (SELECT z, id, timestamptz '2026-05-04 14:00Z' + row_number() OVER (ORDER BY z) * interval '15 minutes' AS t FROM zones) x;
SET SESSION AUTHORIZATION tst_a_zone;
CREATE TEMP TABLE zone_seen AS SELECT appointment_token, zip3 FROM schedphi.deid_appointments;
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(v.z || '=' || s.zip3, ',' ORDER BY v.z) FROM zone_visits v
		   JOIN schedphi.appointment_deid d ON d.tenant = :'t6' AND d.appointment = v.appt
		   JOIN zone_seen s ON s.appointment_token = d.token::text),
		  '035=035,036=000,037=037,059=000,063=000,102=000,203=000,556=000,692=000,790=000,821=000,823=000,830=000,'
		  || '831=000,878=000,879=000,884=000,890=000,893=000,894=894',
	'each of the 17 restricted zones shows as 000; their neighbours as themselves');

SELECT ok((SELECT count(*) FROM schedphi.deid_class) > 20 AND (SELECT count(*) FROM class_drift) = 0,
	'at the end, the kept classes (more than 20) still equal the derived rows');

SELECT * FROM finish();
ROLLBACK;

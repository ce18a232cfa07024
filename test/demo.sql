-- The demo clinic: synthetic people only.  Run by test/demo.sh.
\set QUIET on
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
\pset footer off

\echo '== 1. A clinic group with two sites in different time zones'
SELECT schedphi.create_tenant('Synthetic Health Group', 'America/New_York') AS clinic \gset
SELECT schedphi.add_location(:'clinic', 'Boston Harbor Clinic', 'America/New_York') AS boston \gset
SELECT schedphi.add_location(:'clinic', 'Denver Foothills Clinic', 'America/Denver') AS denver \gset

CREATE TEMP TABLE staff (name text, site text, id uuid);
INSERT INTO staff
SELECT n, s, schedphi.add_practitioner(:'clinic', n)
FROM (VALUES ('Dr Ada Example', 'boston'), ('Dr Ben Placeholder', 'boston'),
			 ('Dr Cy Fictional', 'denver'), ('Dr Dee Sample', 'denver')) v(n, s);
INSERT INTO staff
SELECT n, s, schedphi.add_resource(:'clinic', k, n, c,
								   CASE s WHEN 'boston' THEN :'boston'::uuid ELSE :'denver'::uuid END)
FROM (VALUES ('Exam room B1', 'boston', 'room', 1), ('Exam room B2', 'boston', 'room', 1),
			 ('Exam room D1', 'denver', 'room', 1), ('Ultrasound D', 'denver', 'device', 1),
			 ('Infusion chairs B', 'boston', 'device', 3)) v(n, s, k, c);
SELECT schedphi.add_availability(id, CASE site WHEN 'boston' THEN :'boston'::uuid ELSE :'denver'::uuid END,
								 '{1,2,3,4,5}', '09:00', '17:00', daterange('2026-01-01', NULL), 30) IS NOT NULL
FROM staff \g /dev/null
SELECT schedphi.add_block(id, tstzrange((date_trunc('week', current_date + 7)::date + 2 + time '12:00') AT TIME ZONE 'America/New_York',
										(date_trunc('week', current_date + 7)::date + 2 + time '13:00') AT TIME ZONE 'America/New_York'),
						  'team meeting') IS NOT NULL
FROM staff WHERE site = 'boston' AND name LIKE 'Dr %' \g /dev/null
SELECT schedphi.set_buffer(id, '0', '15 minutes') FROM staff WHERE name = 'Ultrasound D' \gset
SELECT l.name AS site, l.timezone, string_agg(a.name || ' (' || a.kind || CASE WHEN a.capacity > 1 THEN ', ' || a.capacity || ' seats' ELSE '' END || ')', ', ' ORDER BY a.kind, a.name) AS bookable
FROM schedphi.location l
JOIN schedphi.actor a ON a.tenant = l.tenant AND (a.location = l.id OR a.id IN (SELECT id FROM staff s WHERE s.site = CASE l.name WHEN 'Boston Harbor Clinic' THEN 'boston' ELSE 'denver' END))
WHERE l.tenant = :'clinic' GROUP BY l.name, l.timezone ORDER BY 1;

\echo
\echo '== 2. Three hundred synthetic patients'
CREATE TEMP TABLE pats AS
SELECT n, schedphi.register_patient(:'clinic',
		(ARRAY['Avery','Blake','Casey','Devon','Emery','Finley','Gray','Harper','Indy','Jules'])[1 + n % 10],
		(ARRAY['Synthetic','Example','Placeholder','Fictional','Sample','Mockwell'])[1 + n % 6] || '-' || n,
		date '1933-01-01' + (n * 97) % 31000,
		phone => '555-01' || lpad((n % 100)::text, 2, '0') || '-' || lpad(n::text, 4, '0'),
		mrn => 'DEMO-' || lpad(n::text, 5, '0'),
		zip => (ARRAY['02114', '02139', '80202', '80401', '05901'])[1 + n % 5]) AS id
FROM generate_series(1, 300) n;
SELECT count(*) AS patients_registered FROM schedphi.patient WHERE tenant = :'clinic';

\echo
\echo '== 2b. Patient data is sealed: AES-256-GCM under the tenant''s data key, wrapped by a master key'
\echo '       the database never stores.  What the table holds:'
SELECT left(p.given::text, 40) || '...' AS given_as_stored, left(p.birth_date::text, 40) || '...' AS birth_date_as_stored,
	   encode(substr(p.mrn_idx, 1, 8), 'hex') || '...' AS mrn_blind_index
FROM schedphi.patient p JOIN pats ON pats.id = p.id WHERE pats.n = 1;
\echo 'The DBA (a superuser) sees rows but cannot decrypt:'
\set VERBOSITY terse
\set ON_ERROR_STOP off
SELECT schedphi.patient_record((SELECT id FROM pats WHERE n = 1));
\set ON_ERROR_STOP on
\echo 'A front-desk login that is a scheduler member of the clinic can, with a purpose of use for the transaction'
\echo '(the lookup by MRN goes through the blind index):'
DROP ROLE IF EXISTS demo_frontdesk;
CREATE ROLE demo_frontdesk LOGIN;
SELECT schedphi.add_member(:'clinic', 'demo_frontdesk', 'scheduler') \g /dev/null
SET SESSION AUTHORIZATION demo_frontdesk;
BEGIN;
SELECT schedphi.set_purpose('TREAT') \g /dev/null
SELECT r->>'given' AS given, r->>'family' AS family, r->>'birth_date' AS birth_date, r->>'mrn' AS mrn
FROM schedphi.find_patient(:'clinic', mrn => 'demo-00001') id, schedphi.patient_record(id) r;
COMMIT;
RESET SESSION AUTHORIZATION;
\echo 'Keys: the master key (id only) and the clinic''s data keys, then a rotation and re-encryption:'
SELECT key_id AS master_key, active FROM schedphi.master_keys();
SELECT schedphi.rotate_key(:'clinic') AS new_phi_key \gset
SELECT schedphi.reencrypt(100000) AS rows_reencrypted;
SELECT purpose, id, status, kek_id FROM schedphi.data_keys WHERE tenant = :'clinic' ORDER BY purpose, id;

\echo
\echo '== 3. A week of bookings (about half of every practitioner''s time, each with a room)'
SELECT date_trunc('week', current_date + 7)::date AS monday \gset
DO $$
DECLARE
	s record;
	pr record;
	k int := 0;
	room uuid;
BEGIN
	FOR pr IN SELECT id, name FROM staff WHERE name LIKE 'Dr %' ORDER BY name LOOP
		SELECT st.id INTO room FROM staff st
		WHERE st.name = (SELECT v.r FROM (VALUES ('Dr Ada Example', 'Exam room B1'), ('Dr Ben Placeholder', 'Exam room B2'),
							 ('Dr Cy Fictional', 'Exam room D1'), ('Dr Dee Sample', 'Ultrasound D')) v(p, r)
						 WHERE v.p = pr.name);
		FOR s IN SELECT * FROM schedphi.find_slots(ARRAY[pr.id, room],
				tstzrange(date_trunc('week', current_date + 7), date_trunc('week', current_date + 7) + interval '5 days'),
				'30 minutes', 1000)
		LOOP
			k := k + 1;
			CONTINUE WHEN hashint4(k) % 2 = 0;
			BEGIN
				PERFORM schedphi.book((SELECT id FROM pats WHERE pats.n = 1 + (k * 37) % 300), s.actors,
									  tstzrange(s.starts, s.ends), 'routine');
			EXCEPTION WHEN exclusion_violation THEN
				NULL;	-- taken meanwhile (the ultrasound's cleaning buffer): next slot
			END;
		END LOOP;
	END LOOP;
END $$;
SELECT st.name AS practitioner, count(*) AS booked_next_week,
	   to_char(min(lower(ap.during)) AT TIME ZONE l.timezone, 'Dy HH24:MI') AS first_local
FROM schedphi.appointments ap
JOIN staff st ON st.id = ANY (ap.actors) AND st.name LIKE 'Dr %'
JOIN schedphi.location l ON l.name LIKE CASE st.site WHEN 'boston' THEN 'Boston%' ELSE 'Denver%' END
WHERE ap.status = 'booked'
GROUP BY st.name, l.timezone ORDER BY 1;

\echo
\echo '== 4. Free 30-minute slots next Monday morning for Dr Ada Example together with Exam room B1'
\echo '     (times shown in Boston local time; find_slots works in UTC and honours each site''s zone)'
SELECT id AS ada FROM staff WHERE name = 'Dr Ada Example' \gset
SELECT id AS b1 FROM staff WHERE name = 'Exam room B1' \gset
SELECT to_char(starts AT TIME ZONE 'America/New_York', 'Dy DD Mon HH24:MI') AS starts_local,
	   to_char(ends AT TIME ZONE 'America/New_York', 'HH24:MI') AS ends_local
FROM schedphi.find_slots(ARRAY[:'ada', :'b1']::uuid[],
	tstzrange((:'monday'::date + time '09:00') AT TIME ZONE 'America/New_York',
			  (:'monday'::date + time '12:00') AT TIME ZONE 'America/New_York'), '30 minutes', 6);

\echo
\echo '== 5. Book the first free slot for a patient'
SELECT starts AS slot_start, ends AS slot_end
FROM schedphi.find_slots(ARRAY[:'ada', :'b1']::uuid[],
	tstzrange((:'monday'::date + time '09:00') AT TIME ZONE 'America/New_York',
			  (:'monday'::date + time '12:00') AT TIME ZONE 'America/New_York'), '30 minutes', 1) \gset
SELECT id AS patient FROM pats WHERE n = 7 \gset
SELECT schedphi.book(:'patient', ARRAY[:'ada', :'b1']::uuid[], tstzrange(:'slot_start', :'slot_end'),
					 'followup', 'synthetic follow-up visit', idempotency_key => 'demo-visit-1') AS visit \gset
SELECT ap.id AS appointment, ap.status, ap.kind,
	   to_char(lower(ap.during) AT TIME ZONE 'America/New_York', 'Dy DD Mon HH24:MI') || '-' ||
	   to_char(upper(ap.during) AT TIME ZONE 'America/New_York', 'HH24:MI') AS boston_time,
	   (SELECT string_agg(a.name, ' + ' ORDER BY a.name) FROM schedphi.actor a WHERE a.id = ANY (ap.actors)) AS with
FROM schedphi.appointments ap WHERE ap.id = :'visit';
\echo 'A client retry with the same idempotency key gets the same appointment back:'
SELECT schedphi.book(:'patient', ARRAY[:'ada', :'b1']::uuid[], tstzrange(:'slot_start', :'slot_end'),
					 'followup', 'synthetic follow-up visit', idempotency_key => 'demo-visit-1') = :'visit' AS same_appointment;

\echo
\echo '== 6. Another scheduler tries to book the same time: refused by the exclusion constraint'
SELECT id AS other FROM pats WHERE n = 8 \gset
\set VERBOSITY default
\set SHOW_CONTEXT never
\set ON_ERROR_STOP off
SELECT schedphi.book(:'other', ARRAY[:'ada', :'b1']::uuid[], tstzrange(:'slot_start', :'slot_end'));
\set ON_ERROR_STOP on
\echo '(SQLSTATE 23P01; the message names every busy actor and interval, never the other patient)'

\echo
\echo '== 7. The second patient joins the waitlist; the first patient cancels'
SELECT schedphi.waitlist_add(:'other', ARRAY[:'ada']::uuid[],
	tstzrange((:'monday'::date + time '09:00') AT TIME ZONE 'America/New_York',
			  (:'monday'::date + time '12:00') AT TIME ZONE 'America/New_York'), '30 minutes') AS wait \gset
SELECT schedphi.cancel(:'visit', 'patient request') \gset
SELECT status AS visit_status_now FROM schedphi.appointments WHERE id = :'visit';
\echo 'The freed time is offered to the waitlist, first come first served:'
SELECT o.waitlist, o.patient = :'other' AS is_the_waiting_patient FROM schedphi.waitlist_offers(:'visit') o;
\echo 'And the slot is free again:'
SELECT to_char(starts AT TIME ZONE 'America/New_York', 'Dy DD Mon HH24:MI') AS starts_local
FROM schedphi.find_slots(ARRAY[:'ada', :'b1']::uuid[], tstzrange(:'slot_start', :'slot_end'), '30 minutes');
SELECT schedphi.book(:'other', ARRAY[:'ada', :'b1']::uuid[], tstzrange(:'slot_start', :'slot_end')) IS NOT NULL AS waitlisted_patient_booked;

\echo
\echo '== 8. Statuses follow FHIR R4 Appointment.status; illegal moves are refused'
SELECT ap.id AS some_visit FROM schedphi.appointments ap WHERE ap.status = 'booked' ORDER BY lower(ap.during) LIMIT 1 \gset
SELECT schedphi.set_status(:'some_visit', 'arrived') \gset
SELECT schedphi.set_status(:'some_visit', 'fulfilled') \gset
SELECT status FROM schedphi.appointments WHERE id = :'some_visit';
\set ON_ERROR_STOP off
SELECT schedphi.set_status(:'some_visit', 'booked');
\set ON_ERROR_STOP on

\echo
\echo '== 9. Daylight saving time: 09:00-17:00 stays 09:00-17:00 on the wall clock'
SELECT to_char(d, 'Dy DD Mon YYYY') AS boston_day,
	   to_char(min(s.starts) AT TIME ZONE 'UTC', 'HH24:MI') || ' UTC' AS opens,
	   to_char(min(s.starts) AT TIME ZONE 'America/New_York', 'HH24:MI') || ' local' AS opens_local
FROM (VALUES (date '2026-03-06'), (date '2026-03-09'), (date '2026-10-30'), (date '2026-11-02')) v(d)
CROSS JOIN LATERAL schedphi.find_slots(ARRAY[:'ada']::uuid[],
	tstzrange(d::timestamp AT TIME ZONE 'America/New_York', (d + 1)::timestamp AT TIME ZONE 'America/New_York'), '30 minutes', 1) s
GROUP BY d ORDER BY d;

\echo
\echo '== 10. Every touch of patient data is in the audit log: who, what (column names, never values), when, where, why'
SELECT schedphi._audit_sync() \g /dev/null
SELECT action, count(*) AS records FROM schedphi.audit_log GROUP BY action ORDER BY count(*) DESC, action;
DROP ROLE IF EXISTS demo_auditor;
CREATE ROLE demo_auditor LOGIN;
SELECT schedphi.add_member(:'clinic', 'demo_auditor', 'auditor') \g /dev/null
SELECT id AS demo_p1 FROM pats WHERE n = 1 \gset
\echo 'The accounting of disclosures for patient demo-00001, as the clinic''s auditor sees it (in plain words too):'
SET SESSION AUTHORIZATION demo_auditor;
SELECT to_char(at, 'HH24:MI:SS') AS at, login, role, coalesce(purpose, '') AS purpose, action, object,
	   CASE WHEN cardinality(columns) > 4 THEN array_to_string(columns[1:4], ',') || ',...'
			ELSE array_to_string(columns, ',') END AS columns
FROM schedphi.access_report(:'demo_p1')
WHERE action <> 'export'
ORDER BY at, action LIMIT 8;
SELECT to_char(at, 'HH24:MI:SS') AS at, who, what FROM schedphi.access_report_text(:'demo_p1')
WHERE what NOT LIKE 'produced%' ORDER BY at LIMIT 4;
\echo 'The refused decryption by the DBA is on record too:'
SELECT login, action, detail ->> 'rule' AS rule FROM schedphi.audit_log WHERE action = 'denied';
\echo 'The hash chains (one per tenant) verify, and their signed heads are kept outside the database:'
SELECT checked, pending, first_bad, ok FROM schedphi.verify_audit();
SELECT d ->> 'seq' AS seq, d ->> 'chains' AS chains, left(d ->> 'root', 16) || '...' AS root, d ->> 'key' AS signed_with
FROM schedphi.audit_digest() d;
RESET SESSION AUTHORIZATION;
\echo 'Nobody edits it, not even the DBA:'
\set ON_ERROR_STOP off
UPDATE schedphi.audit_log SET login = 'nobody' WHERE seq = 1;
\set ON_ERROR_STOP on

\echo
\echo '== 11. An analyst sees de-identified rows (HIPAA Safe Harbor): random tokens, visit year, age (90+), ZIP3; nothing decrypted'
DROP ROLE IF EXISTS demo_analyst;
CREATE ROLE demo_analyst LOGIN;
SELECT schedphi.add_member(:'clinic', 'demo_analyst', 'analyst') \g /dev/null
SET SESSION AUTHORIZATION demo_analyst;
SELECT left(patient_token, 8) || '...' AS patient_token, visit_year, age_at_visit, zip3, status, kind,
	   duration_minutes, lead_days_band, actor_kinds
FROM schedphi.deid_appointments ORDER BY appointment_token LIMIT 5;
\echo 'No-shows and booked minutes by practitioner (the first three):'
SELECT left(practitioner::text, 8) || '...' AS practitioner, count(*) AS appointments,
	   count(*) FILTER (WHERE status = 'noshow') AS no_shows, sum(duration_minutes) AS booked_minutes
FROM schedphi.deid_appointments WHERE practitioner IS NOT NULL
GROUP BY practitioner ORDER BY practitioner LIMIT 3;
\echo 'Appointments by ZIP3 (059, a zone of fewer than 20,000 people, shows as 000) and whether the patient was 90 or over:'
SELECT zip3, count(*) AS appointments, count(*) FILTER (WHERE age_at_visit = '90+') AS aged_90_plus
FROM schedphi.deid_appointments GROUP BY zip3 ORDER BY zip3;
RESET SESSION AUTHORIZATION;
\echo 'On the ledger: an export per statement, with its row count; no read:'
SELECT login, action, object, detail ->> 'rows' AS rows FROM schedphi.audit_log
WHERE login = 'demo_analyst' ORDER BY id;

\echo
\echo '== 12. The EHR books through its interface engine: an HL7 v2 SIU S12 in, an ACK out (docs/integration.md)'
DROP ROLE IF EXISTS demo_engine;
CREATE ROLE demo_engine LOGIN;
SELECT schedphi.add_member(:'clinic', 'demo_engine', 'integration') \g /dev/null
SELECT schedphi.add_hl7_sender(:'clinic', 'DEMOEHR', 'DEMOFAC', 'America/New_York', create_unknown => false) \g /dev/null
SELECT schedphi.add_external_id(:'clinic', 'hl7:' || s.id || ':AIP', 'EHR-ADA', (SELECT id FROM staff WHERE name = 'Dr Ada Example'))
FROM schedphi.hl7_sender s WHERE s.tenant = :'clinic' \g /dev/null
SELECT format(E'MSH|^~\\&|DEMOEHR|DEMOFAC|SCHEDPHI|SYNTHETIC|%s||SIU^S12^SIU_S12|DEMO-0001|P|2.5.1\r'
			  'SCH||EHR-APPT-1|||||ROUTINE|NORMAL|30|min|^^30^%s||||||||||||||Booked\r'
			  'PID|1||EHR-MRN-77^^^DEMOEHR^MR||Examplefamily^Robin||19750505|F|||1 Sample Way^^Boston^MA^02110\r'
			  'RGS|1|A\rAIP|1|A|EHR-ADA^Example^Ada|ATTENDING\r',
			  to_char(now() AT TIME ZONE 'America/New_York', 'YYYYMMDDHH24MISS'),
			  to_char(current_date + 63, 'YYYYMMDD') || '1000') AS siu \gset
\echo 'The message (its patient a synthetic one), as the EHR sends it:'
SELECT replace(:'siu', E'\r', E'\n') AS "SIU^S12";
SET SESSION AUTHORIZATION demo_engine;
\echo 'The ACK the interface engine gets back (the time read in the sender''s zone; the patient registered by MRN):'
SELECT replace(schedphi.hl7_ingest(:'siu'), E'\r', E'\n') AS "ACK";
\echo 'The same message again: the same ACK, nothing booked twice:'
SELECT split_part(schedphi.hl7_ingest(:'siu'), E'\r', 2) AS "MSA";
RESET SESSION AUTHORIZATION;
SELECT to_char(lower(a.during) AT TIME ZONE 'America/New_York', 'YYYY-MM-DD HH24:MI') || ' New York' AS starts,
	   a.status, a.kind, (SELECT s.name FROM staff s WHERE s.id = ANY (a.actors)) AS practitioner
FROM schedphi.appointment_ref r JOIN schedphi.appointment a ON a.tenant = r.tenant AND a.id = r.appointment
WHERE r.tenant = :'clinic' AND r.value = 'EHR-APPT-1';
\echo 'On the ledger: one record per message, its outcome and a keyed digest, never its content:'
SELECT login, action, detail ->> 'event' AS event, detail ->> 'control_id' AS control_id, detail ->> 'outcome' AS outcome,
	   coalesce(detail ->> 'applied', CASE WHEN (detail ->> 'duplicate')::boolean THEN 'duplicate' END) AS applied
FROM schedphi.audit_log WHERE action = 'hl7_in' ORDER BY id;

\echo
\echo '== 13. An app speaks FHIR R4: a free Slot found, held and booked; a clash answered with an OperationOutcome (docs/integration.md)'
SET SESSION AUTHORIZATION demo_frontdesk;
SELECT e -> 'resource' ->> 'id' AS slot FROM jsonb_array_elements(schedphi.fhir_search('Slot', jsonb_build_object(
	'schedule', 'Schedule/' || :'ada', 'status', 'free', 'duration', 30, '_count', 1,
	'start', 'ge' || to_char((:'monday'::date + 14 + time '09:00') AT TIME ZONE 'America/New_York' AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
	-> 'entry') e \gset
\echo 'The first free 30-minute Slot of Dr Ada Example two weeks on (its id names the actor, the UTC start and the minutes):'
SELECT :'slot' AS "Slot.id";
SELECT schedphi.fhir_hold(jsonb_build_object('resourceType', 'Appointment', 'status', 'pending',
	'slot', jsonb_build_array(jsonb_build_object('reference', 'Slot/' || :'slot')),
	'participant', jsonb_build_array(jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'patient')))))
	AS held \gset
\echo 'Held for ten minutes (it expires by itself), then booked:'
SELECT :'held'::jsonb ->> 'status' AS held, schedphi.fhir_book(jsonb_build_object('resourceType', 'Appointment', 'id', :'held'::jsonb ->> 'id')) ->> 'status' AS booked;
\echo 'Another patient asks for the same time: an OperationOutcome naming what blocks it (never who):'
SELECT i ->> 'code' AS "issue.code", i #>> '{details,coding,0,code}' AS sqlstate, i ->> 'diagnostics' AS diagnostics
FROM (SELECT schedphi.fhir_book_oo(jsonb_build_object('resourceType', 'Appointment', 'status', 'booked',
	'slot', jsonb_build_array(jsonb_build_object('reference', 'Slot/' || :'slot')),
	'participant', jsonb_build_array(jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'other')))))
	-> 'issue' -> 0 AS i) x;
RESET SESSION AUTHORIZATION;

\echo
\echo '== 14. Reminders on the channel the patient chose, through a vendor under a current BAA (docs/communications.md)'
SELECT schedphi.set_reminder_policy(:'clinic', '{1 day, 2 hours}', '21:00-09:00', '+1 555 0100 999', 'https://portal.example.org/l/') \g /dev/null
SELECT schedphi.add_message_template(:'clinic', k, 'sms', 'Hi {given_name}, ' || k || ': {date} at {time}, {location}. {portal_link}')
FROM unnest(ARRAY['confirmation', 'reminder']) k \g /dev/null
\echo 'A template naming the reason of the visit is refused (the minimum necessary):'
\set ON_ERROR_STOP off
SELECT schedphi.add_message_template(:'clinic', 'reminder', 'sms', 'Your {reason} visit');
\set ON_ERROR_STOP on
SELECT schedphi.add_business_associate(:'clinic', 'Synthetic Texting Co', '{sms}', current_date - 30, current_date + 335, 'limited') AS texter \gset
SET SESSION AUTHORIZATION demo_frontdesk;
SELECT schedphi.set_contact_preference(:'patient', 'sms', true, unencrypted_ok => true, source => 'front desk: warned, chose SMS') \g /dev/null
SELECT schedphi.book(:'patient', ARRAY[:'ada']::uuid[],
	tstzrange((:'monday'::date + 15 + time '10:00') AT TIME ZONE 'America/New_York',
			  (:'monday'::date + 15 + time '10:30') AT TIME ZONE 'America/New_York')) AS reminded \gset
RESET SESSION AUTHORIZATION;
\echo 'The booking queued, in its own transaction, a confirmation and two reminders (no PHI in the queue):'
SELECT kind, channel, status, not_before AT TIME ZONE 'America/New_York' AS "not before (New York)"
FROM schedphi.message_queue(:'clinic') WHERE appointment = :'reminded' ORDER BY not_before;
\echo 'The texting vendor''s agent claims what is due (outside quiet hours; a disclosure on the ledger):'
SET SESSION AUTHORIZATION demo_engine;
BEGIN;
SELECT schedphi.set_purpose('TREAT') \g /dev/null
SELECT id, channel, address, left(body, 60) || '...' AS body FROM schedphi.claim_messages(:'texter', 10);
COMMIT;
RESET SESSION AUTHORIZATION;

\echo
\echo '== 15. Compliance evidence on demand: business associates, training, a risk, an access review, the server''s configuration, and the signed report (docs/compliance.md)'
SELECT schedphi.add_business_associate(:'clinic', 'Synthetic SMS Gateway', '{sms}', current_date - 300, current_date + 430, 'limited') AS ba \gset
SELECT schedphi.verify_business_associate(:'ba', current_date - 20, 'SOC 2 Type II report reviewed') \g /dev/null
SELECT schedphi.add_business_associate(:'clinic', 'Synthetic Old Hosting', '{hosting}', current_date - 800, current_date - 5, 'full') \g /dev/null
SELECT schedphi.record_training(:'clinic', 'demo_frontdesk', 'HIPAA privacy and security', current_date - 30, current_date + 335) \g /dev/null
SELECT schedphi.add_risk(:'clinic', 'Front-desk screens visible from the waiting room', 'physical', 3, 3, 'postgres', current_date + 60) \g /dev/null
SELECT schedphi.record_evidence(:'clinic', 'penetration_test', current_date - 45, 'external firm, report on file') \g /dev/null
SELECT schedphi.start_access_review(:'clinic') AS review \gset
SELECT schedphi.review_access(:'review', 'demo_frontdesk', 'keep', 'front desk, current') \g /dev/null
\echo 'The server reviewed from inside (CIS PostgreSQL Benchmark items, HIPAA sections); this throwaway cluster fails several on purpose:'
SELECT check_id, status, reference FROM schedphi.check_config() ORDER BY status <> 'fail', check_id;
\echo 'The report an auditor gets (Markdown; also JSON and a self-contained HTML page), signed and anchored to the ledger:'
\pset format unaligned
\pset tuples_only on
SELECT schedphi.compliance_report(:'clinic', 'markdown');
\pset format aligned
\pset tuples_only off

\echo
\echo '== Next: the MLLP agent, schedphi-agent (docs/agent.md); docs/security.md: roles, tokens, break-glass; docs/audit.md: the ledger; docs/analytics.md: analysts; docs/integration.md: EHRs; docs/compliance.md: evidence.'
DROP OWNED BY demo_frontdesk;
DROP ROLE demo_frontdesk;
DROP OWNED BY demo_auditor;
DROP ROLE demo_auditor;
DROP OWNED BY demo_analyst;
DROP ROLE demo_analyst;
DROP OWNED BY demo_engine;
DROP ROLE demo_engine;

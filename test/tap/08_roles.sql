-- Minimum necessary by role (SPEC, "Who is asking"): what each role sees of
-- patients and appointments, a clinician's own patients, and that reading
-- decrypted PHI needs a purpose of use.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)', reason => 'Synthetic cough') AS a1 \gset
SELECT schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)', reason => 'Synthetic rash') AS a2 \gset
SELECT schedphi.set_purpose('TREAT');
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['scheduler', 'clinician', 'billing', 'support', 'analyst', 'integration', 'auditor', 'admin'] LOOP
		EXECUTE format('CREATE ROLE %I LOGIN', 'tst_' || r);
	END LOOP;
END $$;
SELECT schedphi.add_member(:'tenant', 'tst_' || r, r, CASE WHEN r = 'clinician' THEN :'dr'::uuid END)
FROM unnest(ARRAY['scheduler', 'clinician', 'billing', 'support', 'analyst', 'integration', 'auditor', 'admin']) r \g /dev/null

CREATE FUNCTION pg_temp.seen(login name, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	v text;
BEGIN
	EXECUTE format('SET SESSION AUTHORIZATION %I', login);
	EXECUTE q INTO v;
	RESET SESSION AUTHORIZATION;
	RETURN v;
EXCEPTION WHEN OTHERS THEN
	RESET SESSION AUTHORIZATION;
	RETURN SQLSTATE;
END $$;

-- Appointments: rows, patient identity, reason.
SELECT is(pg_temp.seen('tst_' || r, $$SELECT count(*) || '/' || count(patient) || '/' || count(reason)
									 FROM schedphi.appointments$$), want, r || ' sees appointments: rows/patients/reasons = ' || want)
FROM (VALUES ('scheduler', '2/2/2'), ('integration', '2/2/2'), ('clinician', '1/1/1'), ('billing', '2/2/0'),
			 ('support', '2/0/0'), ('admin', '2/0/0'), ('analyst', '0/0/0'), ('auditor', '0/0/0')) v(r, want);
SELECT is((SELECT count(*) || '/' || count(patient) || '/' || count(reason) FROM schedphi.appointments
		   WHERE tenant = :'tenant'), '2/2/0', 'a superuser sees every appointment and its patient, no reason');
SELECT is(pg_temp.seen('tst_clinician', format($$SELECT reason FROM schedphi.appointments WHERE id = %L$$, :'a1')),
	'Synthetic cough', 'the clinician reads the reason of their own appointment');

-- Patients: who is listed, what is decrypted.
SELECT is(pg_temp.seen('tst_' || r, $$SELECT count(*) || '/' || count(given) || '/' || count(mrn) FROM schedphi.patients$$),
	want, r || ' sees patients: rows/names/MRNs = ' || want)
FROM (VALUES ('scheduler', '3/3/2'), ('integration', '3/3/2'), ('clinician', '1/1/1'), ('billing', '3/3/0'),
			 ('support', '0/0/0'), ('admin', '0/0/0'), ('analyst', '0/0/0'), ('auditor', '0/0/0')) v(r, want);
SELECT is(pg_temp.seen('tst_clinician', format($$SELECT schedphi.patient_record(%L)->>'given'$$, :'p1')), 'Testa',
	'a clinician reads their own patient');
SELECT is(pg_temp.seen('tst_clinician', format($$SELECT schedphi.patient_record(%L)->>'given'$$, :'p2')), '42501',
	'but not a patient without an appointment with their practitioner');
SELECT is(pg_temp.seen('tst_' || r, format($$SELECT schedphi.patient_record(%L)->>'given'$$, :'p1')), '42501',
	r || ' cannot read a patient record')
FROM unnest(ARRAY['support', 'analyst', 'auditor', 'admin']) r;
SELECT is(pg_temp.seen('tst_billing', format($$SELECT schedphi.patient_record(%L)->>'phone'$$, :'p1')), NULL,
	'billing gets no contact details');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant' AND action = 'denied'
		   AND actor = 'tst_support' AND object = 'patient' AND patient = :'p1'), 1,
	'a refused read names the patient, so the accounting of disclosures lists it');

-- find_patient follows the same matrix: billing looks up by name and birth
-- date only, a clinician finds only their own patients; every lookup is
-- on record, a match as a read of that patient.
SELECT is(pg_temp.seen('tst_billing', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, phone => '+1 555 0100 001')$$),
	'42501', 'billing cannot find a patient by phone');
SELECT is(pg_temp.seen('tst_billing', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, mrn => 'SYN-0002')$$),
	'42501', 'nor by MRN');
SELECT is(pg_temp.seen('tst_billing', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, family => 'Synthetica', birth_date => '1970-01-01')$$),
	'1', 'billing finds a patient by family name and birth date');
SELECT is(pg_temp.seen('tst_clinician', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, mrn => 'SYN-0001')$$),
	'1', 'a clinician finds their own patient');
SELECT is(pg_temp.seen('tst_clinician', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, mrn => 'SYN-0002')$$),
	'0', 'but not another practitioner''s patient');
SELECT is(pg_temp.seen('tst_scheduler', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, mrn => 'SYN-0002')$$),
	'1', 'a scheduler finds any patient of the tenant');
SELECT is(pg_temp.seen('tst_scheduler', $$SELECT count(*)::text FROM schedphi.find_patient($$ || quote_literal(:'tenant') || $$, mrn => 'SYN-0404')$$),
	'0', 'and nobody by an MRN nobody has');
SELECT schedphi._audit_wake();
SELECT pg_sleep(0.3);
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant' AND action = 'read' AND actor = 'tst_scheduler'
		   AND patient = :'p2' AND detail -> 'lookup' = '["mrn"]'), 1, 'a match is recorded as a read of that patient');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant' AND action = 'read' AND actor = 'tst_scheduler'
		   AND patient IS NULL AND (detail ->> 'matches')::int = 0), 1, 'a lookup that matched nobody is recorded too');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant' AND action = 'read' AND actor = 'tst_clinician'
		   AND patient = :'p2'), 0, 'a patient a clinician did not find is not in their record');

-- The reason helper decides on the stored row, not on one a caller built:
-- the clinician's practitioner put into another appointment's actors opens nothing.
SELECT (SELECT a FROM schedphi.appointment a WHERE a.id = :'a2')::text AS a2_row \gset
SELECT is(pg_temp.seen('tst_clinician', format($$SELECT schedphi._appointment_reason(%L::schedphi.appointment)$$,
	replace(:'a2_row', :'dr2', :'dr'))), NULL, 'a forged row opens no reason');
SELECT is(pg_temp.seen('tst_clinician', format($$SELECT schedphi._appointment_reason(%L::schedphi.appointment)$$,
	replace(replace(:'a2_row', :'dr2', :'dr'), :'a2', :'a1'))), 'Synthetic cough',
	'another appointment''s sealed reason under the id of one''s own opens that one''s own reason');

-- The clinician's own patients widen with their appointments.
SELECT schedphi.book(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 14:30Z)') AS a3 \gset
SELECT is(pg_temp.seen('tst_clinician', format($$SELECT schedphi.patient_record(%L)->>'given'$$, :'p2')), 'Probe',
	'a patient booked with the clinician''s practitioner becomes their own');

SELECT * FROM finish();
ROLLBACK;

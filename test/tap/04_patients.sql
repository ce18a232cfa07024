-- Patients: registration with validation that never echoes the refused
-- value, look-ups by MRN, phone, email and family name + birth date on
-- normalised input, patient_record and the patients view by role.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset

SELECT isa_ok(schedphi.register_patient(:'tenant', 'Quinn', 'Placeholder', '1990-02-03', '(555) 010-0999',
	'Quinn.Placeholder@Example.ORG', 'syn-0999', '99901'), 'uuid', 'register_patient returns a uuid') ;
SELECT schedphi.find_patient(:'tenant', mrn => 'SYN-0999') AS q \gset
SELECT is(schedphi.find_patient(:'tenant', mrn => ' syn-0999 '), :'q'::uuid, 'find by MRN, trimmed and case-folded');
SELECT is(schedphi.find_patient(:'tenant', phone => '555.010.0999'), :'q'::uuid, 'find by phone in another format');
SELECT is(schedphi.find_patient(:'tenant', email => 'quinn.placeholder@example.org'), :'q'::uuid, 'find by email, case-folded');
SELECT is(schedphi.find_patient(:'tenant', family => ' PLACEHOLDER', birth_date => '1990-02-03'), :'q'::uuid,
	'find by family name and birth date');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', family => 'Placeholder', birth_date => '1990-02-04')), 0,
	'a wrong birth date finds nobody');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', mrn => 'SYN-0999', phone => '5550100998')), 0,
	'criteria combine with AND');
SELECT tenant AS t2 FROM tst.clinic('Europe/Berlin') \gset
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'t2', mrn => 'SYN-0999')), 0,
	'look-ups stay inside the tenant');
SELECT throws_ok(format($$SELECT schedphi.find_patient(%L)$$, :'tenant'), '22023',
	'find_patient needs mrn, phone, email, or family with birth_date', 'find_patient needs a criterion');
SELECT throws_ok(format($$SELECT schedphi.find_patient(%L, family => 'Placeholder')$$, :'tenant'), '22023',
	'family and birth_date must be given together', 'family alone is not enough');

-- Validation: 22023, and the refused value never appears in the error.
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01', phone => 'call-me-0042')$$, :'tenant')),
	'22023: invalid phone number', 'a bad phone is refused without echoing it');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01', phone => '12345')$$, :'tenant')),
	'22023: invalid phone number', 'too few digits');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01', email => 'canary-at-example')$$, :'tenant')),
	'22023: invalid email address', 'a bad email is refused without echoing it');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '2999-01-01')$$, :'tenant')),
	'22023: invalid birth_date', 'a birth date in the future');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', NULL)$$, :'tenant')),
	'22023: invalid birth_date', 'a missing birth date');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, ' ', 'B', '1990-01-01')$$, :'tenant')),
	'22023: given must not be empty', 'an empty given name');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', NULL, '1990-01-01')$$, :'tenant')),
	'22023: family must not be empty', 'a missing family name');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01', mrn => 'bad mrn!')$$, :'tenant')),
	'22023: invalid mrn', 'a malformed MRN');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01', zip => '!')$$, :'tenant')),
	'22023: invalid zip', 'a malformed ZIP');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01', mrn => 'SYN-0999')$$, :'tenant')),
	'23505: a patient with this mrn is already registered', 'an MRN is unique in a tenant');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE action = 'read' AND patient = :'q'
		   AND detail ->> 'by' = 'register_patient'), 1,
	'the refusal tells that the MRN is taken, so it is on record like a look-up of that patient');
SELECT is(tst.error_of($$SELECT schedphi.register_patient(gen_random_uuid(), 'A', 'B', '1990-01-01')$$),
	'22023: unknown tenant', 'an unknown tenant');
SELECT is((SELECT count(*)::int FROM schedphi.patient WHERE tenant = :'tenant'), 4, 'refused registrations changed nothing');

-- patient_record and the patients view, by role (interim rule).
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'q'), '42501', 'permission denied: PHI rule',
	'a superuser is no member: patient_record refuses to decrypt');
SELECT is((SELECT count(*)::int FROM schedphi.patients WHERE tenant = :'tenant' AND given IS NULL), 4,
	'a superuser lists every patient in the view, without decrypted fields');
CREATE ROLE tst_sched LOGIN;
CREATE ROLE tst_bill LOGIN;
CREATE ROLE tst_support LOGIN;
CREATE ROLE tst_outsider LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_sched', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_bill', 'billing');
SELECT schedphi.add_member(:'tenant', 'tst_support', 'support');
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'q'), '42501', 'permission denied: purpose of use rule',
	'reading PHI needs a purpose of use');
SELECT lives_ok($$SELECT schedphi.set_purpose('TREAT')$$, 'set_purpose for the transaction');
SELECT is(schedphi.patient_record(:'q') - 'id' - 'tenant',
	'{"given": "Quinn", "family": "Placeholder", "birth_date": "1990-02-03", "phone": "5550100999",
	  "email": "quinn.placeholder@example.org", "mrn": "SYN-0999", "zip": "99901"}'::jsonb,
	'a scheduler''s patient_record returns the normalised fields');
SELECT is((SELECT count(*)::int FROM schedphi.patients), 4, 'a scheduler sees the tenant''s patients in the view');
SELECT isa_ok(schedphi.register_patient(:'tenant', 'Rory', 'Sample', '2010-10-10'), 'uuid', 'a scheduler registers patients');
SET SESSION AUTHORIZATION tst_bill;
SELECT is(schedphi.patient_record(:'q') - 'id' - 'tenant', '{"given": "Quinn", "family": "Placeholder", "birth_date": "1990-02-03"}'::jsonb,
	'billing sees name and birth date only');
SELECT is((SELECT count(*)::int FROM schedphi.patients WHERE phone IS NOT NULL), 0, 'billing sees no phone in the view');
SELECT throws_ok(format($$SELECT schedphi.register_patient(%L, 'A', 'B', '1990-01-01')$$, :'tenant'), '42501', NULL,
	'billing cannot register patients');
SET SESSION AUTHORIZATION tst_support;
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'q'), '42501', NULL, 'support cannot read a patient record');
SELECT is((SELECT count(*)::int FROM schedphi.patients), 0, 'support sees no patients in the view');
SET SESSION AUTHORIZATION tst_outsider;
SELECT throws_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0999')$$, :'tenant'), '42501', NULL,
	'a non-member cannot look patients up');
SELECT throws_ok($$SELECT * FROM schedphi.patient$$, '42501', NULL, 'the patient table is not readable directly');
RESET SESSION AUTHORIZATION;

-- Neither the session's DateStyle nor how an accent was composed changes
-- what is stored or found
SET SESSION AUTHORIZATION tst_sched;
SET LOCAL DateStyle = 'German, DMY';
SELECT schedphi.register_patient(:'tenant', 'Rene', 'Mu' || U&'\0308' || 'ller-Synthetic', '1991-03-02') AS r \gset
RESET DateStyle;
SELECT is(schedphi.find_patient(:'tenant', family => U&'M\00FCller-Synthetic', birth_date => '1991-03-02'), :'r'::uuid,
	'registered under another DateStyle, with a decomposed accent: found by the composed name and the date');
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT birth_date FROM schedphi.patients WHERE id = :'r'), '1991-03-02'::date,
	'the birth date reads back as the same day under any DateStyle');
SET LOCAL DateStyle = 'SQL, MDY';
SELECT is((SELECT birth_date FROM schedphi.patients WHERE id = :'r'), '1991-03-02'::date, 'also under SQL, MDY');
RESET DateStyle;
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;

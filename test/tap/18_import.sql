-- Bulk import: COPY (or INSERT) into schedphi.patient_import registers
-- patients exactly as register_patient does: the same checks and normal
-- forms, sealing, blind indexes (find_patient finds them), audit records,
-- roles and tenants.  test/import.sh covers COPY's errors (line numbers,
-- no value anywhere) and all-or-nothing.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS t2 FROM tst.clinic('Europe/Berlin') \gset
CREATE ROLE tst_i_desk LOGIN;
CREATE ROLE tst_i_both LOGIN;
CREATE ROLE tst_i_bill LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_i_desk', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_i_both', 'integration');
SELECT schedphi.add_member(:'t2', 'tst_i_both', 'integration');
SELECT schedphi.add_member(:'tenant', 'tst_i_bill', 'billing');
SELECT coalesce(max(id), 0) AS mark FROM schedphi.audit_log \gset

SET SESSION AUTHORIZATION tst_i_desk;
COPY schedphi.patient_import (given, family, birth_date, phone, email, mrn, zip) FROM STDIN WITH (FORMAT csv, HEADER);
given,family,birth_date,phone,email,mrn,zip
  Imp ,  Ortsynthetic ,1977-07-07,+1 (555) 010-0777,Imp.Ort@Example.ORG, imp-77 ,ab1 2cd
Lone,Synthetic,1988-08-08,,,,
\.
SELECT schedphi.register_patient(:'tenant', '  Reg ', '  Ortsynthetic ', '1977-07-07', '+1 (555) 010-0778',
								 'Reg.Ort@Example.ORG', ' imp-78 ', 'ab1 2cd') AS reg \gset
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', mrn => 'IMP-77')), 1,
	'an imported patient is found by MRN (blind index)');
SELECT schedphi.find_patient(:'tenant', mrn => 'imp-77') AS imp \gset
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', phone => '1 555 010 0777')), 1, 'and by phone');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', email => 'imp.ort@example.org')), 1, 'and by email');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', family => 'ORTSYNTHETIC', birth_date => '1977-07-07')), 2,
	'and by family name and birth date, beside the one registered by register_patient');
SELECT is(schedphi.patient_record(:'imp') - 'id' - 'tenant',
		  jsonb_build_object('given', 'Imp', 'family', 'Ortsynthetic', 'birth_date', '1977-07-07',
							 'phone', '15550100777', 'email', 'imp.ort@example.org', 'mrn', 'IMP-77', 'zip', 'AB1 2CD'),
	'its fields are stored in the same normal forms');
SELECT is((schedphi.patient_record(:'reg') - 'id' - 'tenant' - 'given' - 'phone' - 'mrn' - 'email')::text,
		  (schedphi.patient_record(:'imp') - 'id' - 'tenant' - 'given' - 'phone' - 'mrn' - 'email')::text,
	'as register_patient''s');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', family => 'Synthetic', birth_date => '1988-08-08')), 1,
	'a row with only the required fields is imported');
RESET SESSION AUTHORIZATION;

SELECT is((SELECT string_agg(DISTINCT action || ':' || login || ':' || role, ',') FROM schedphi.audit_log
		   WHERE id > :mark AND object = 'patient' AND action = 'insert'),
	'insert:tst_i_desk:scheduler', 'each imported patient has its insert record, with who and role');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND object = 'patient' AND action = 'insert'), 3,
	'one per patient (two imported, one registered)');
SELECT is((SELECT count(*)::int FROM schedphi.patient WHERE id = :'imp'
		   AND given::text LIKE 'spv1:%' AND mrn_idx IS NOT NULL AND phone_idx IS NOT NULL), 1, 'sealed, with its blind indexes');

-- the tenant: the caller's, or a column
SET SESSION AUTHORIZATION tst_i_both;
SELECT is(tst.error_of($$INSERT INTO schedphi.patient_import (given, family, birth_date) VALUES ('Two', 'Synthetic', '1990-01-01')$$),
	'22023: tenant must be given', 'a login in two tenants must say which');
SELECT is(tst.error_of(format($$INSERT INTO schedphi.patient_import (tenant, given, family, birth_date)
							   VALUES (%L, 'Two', 'Synthetic', '1990-01-01')$$, :'t2')), '00000', 'as a column');
SELECT is(tst.error_of($$INSERT INTO schedphi.patient_import (tenant, given, family, birth_date)
						 VALUES ('Not A Tenant', 'Two', 'Synthetic', '1990-01-01')$$), '22023: tenant is not a uuid',
	'a tenant column that is not a uuid is refused without quoting it');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.patient WHERE tenant = :'t2'), 4, 'the row went to that tenant');

-- who may import: as register_patient
SET SESSION AUTHORIZATION tst_i_bill;
SELECT is(tst.error_of($$INSERT INTO schedphi.patient_import (given, family, birth_date) VALUES ('No', 'Synthetic', '1990-01-01')$$),
	'22023: tenant must be given', 'billing registers patients nowhere');
SELECT is(tst.error_of(format($$INSERT INTO schedphi.patient_import (tenant, given, family, birth_date)
							   VALUES (%L, 'No', 'Synthetic', '1990-01-01')$$, :'tenant')), '42501: permission denied: role rule',
	'and naming the tenant is the role rule');
RESET SESSION AUTHORIZATION;

-- every check of register_patient, with the same message
SET SESSION AUTHORIZATION tst_i_desk;
SELECT is(tst.error_of(format($$INSERT INTO schedphi.patient_import (given, family, birth_date, phone, email, mrn, zip)
							   VALUES (%L, %L, %L, %L, %L, %L, %L)$$,
							  CASE WHEN c = 'given' THEN v ELSE 'Bad' END, CASE WHEN c = 'family' THEN v ELSE 'Synthetic' END,
							  CASE WHEN c = 'birth_date' THEN v ELSE '1990-01-01' END, CASE WHEN c = 'phone' THEN v END,
							  CASE WHEN c = 'email' THEN v END, CASE WHEN c = 'mrn' THEN v END, CASE WHEN c = 'zip' THEN v END)),
		  expected, 'refused like register_patient: ' || c || ' ' || why)
FROM (VALUES
	('birth_date', '1990-02-30', '22023: invalid birth_date', 'not a day'),
	('birth_date', '02/03/1990', '22023: invalid birth_date', 'not YYYY-MM-DD'),
	('birth_date', '2999-01-01', '22023: invalid birth_date', 'in the future'),
	('birth_date', '1879-12-31', '22023: invalid birth_date', 'before 1880'),
	('phone', '555-01', '22023: invalid phone number', 'too few digits'),
	('phone', 'call me', '22023: invalid phone number', 'letters'),
	('email', 'no-at-sign', '22023: invalid email address', 'no @'),
	('email', 'x@localhost', '22023: invalid email address', 'one label'),
	('mrn', 'MRN 1', '22023: invalid mrn', 'a space'),
	('zip', 'z', '22023: invalid zip', 'too short'),
	('given', '   ', '22023: given must not be empty', 'blank'),
	('family', repeat('x', 201), '22023: family is longer than 200 characters', 'too long')) t(c, v, expected, why);
SELECT is(tst.error_of($$INSERT INTO schedphi.patient_import (given, family, birth_date, mrn)
						 VALUES ('Dup', 'Synthetic', '1990-01-01', 'imp-77')$$), '23505: a patient with this mrn is already registered',
	'a taken MRN is 23505');
SELECT is(tst.error_of($$INSERT INTO schedphi.patient_import (given, family, birth_date, mrn)
						 VALUES ('Dup', 'Synthetic', '1990-01-01', 'IMP-NEW'), ('Dup', 'Synthetic', '1990-01-02', 'imp-new')$$),
	'23505: a patient with this mrn is already registered', 'and so is one MRN twice in one import');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.patient WHERE tenant = :'tenant'), 6, 'none of the refused rows was registered');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'read' AND detail->>'by' = 'patient_import'), 2,
	'a refusal for a taken MRN is on record as a look-up, like register_patient''s');

SELECT * FROM finish();
ROLLBACK;

-- NULL in any argument of any public function: either a documented
-- default meaning "none" (the call works) or 22023 naming the argument;
-- never an internal error, and a refused call changes nothing.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_member LOGIN;
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS appt \gset
SELECT schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS appt2 \gset
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 20:00Z)', '30 minutes') AS wl \gset
SELECT schedphi.add_hl7_receiver(:'tenant', 'NULLRECV', 'NULLFAC') AS recv \gset
SELECT schedphi.add_business_associate(:'tenant', 'Null BA', '{sms}', '2026-01-01', '2027-01-01', 'limited') AS ba \gset
SELECT schedphi.add_risk(:'tenant', 'Null risk', 'technical', 2, 2, 'postgres', '2027-01-01') AS risk \gset
CREATE ROLE tst_glass LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_glass', 'clinician', :'dr2');
SET SESSION AUTHORIZATION tst_glass;
SELECT schedphi.break_glass(:'p3', 'synthetic emergency for the NULL test') AS grant_id \gset
RESET SESSION AUTHORIZATION;
SELECT schedphi.start_access_review(:'tenant') AS review \gset
-- a message as a vendor has claimed it, for mark_sent
SELECT schedphi.add_message_template(:'tenant', 'confirmation', 'sms', 'Booked {date} {time}') AS tpl \gset
INSERT INTO schedphi.message (tenant, appointment, patient, kind, channel, template, timezone, not_before, expires,
							  status, claimed_at, claims)
VALUES (:'tenant', :'appt', :'p1', 'confirmation', 'sms', :'tpl', 'UTC', now(), now() + interval '1 day', 'claimed', now(), 1)
RETURNING id AS msg \gset

-- fn: the function; args: valid literal arguments; nullable: positions
-- (1-based) where NULL is a documented "none".
CREATE TEMP TABLE calls (fn text, args text[], nullable int[]);
INSERT INTO calls VALUES
	('create_tenant', ARRAY[quote_literal('Null Clinic'), quote_literal('UTC')], '{}'),
	('add_location', ARRAY[quote_literal(:'tenant'), quote_literal('Null site'), quote_literal('UTC')], '{}'),
	('add_practitioner', ARRAY[quote_literal(:'tenant'), quote_literal('Dr Null'), quote_literal('1234567893')], '{3}'),
	('add_resource', ARRAY[quote_literal(:'tenant'), quote_literal('room'), quote_literal('Null room'), '2', quote_literal(:'loc')], '{5}'),
	('add_availability', ARRAY[quote_literal(:'dr2'), quote_literal(:'loc'), quote_literal('{6}'), quote_literal('09:00'),
		quote_literal('10:00'), quote_literal('[2026-01-01,)'), '15'], '{}'),
	('add_block', ARRAY[quote_literal(:'dr2'), quote_literal('[2026-07-01 10:00Z, 2026-07-01 11:00Z)'), quote_literal('null test')], '{}'),
	('set_buffer', ARRAY[quote_literal(:'dr2'), quote_literal('5 minutes'), quote_literal('5 minutes')], '{}'),
	('add_member', ARRAY[quote_literal(:'tenant'), quote_literal('tst_member'), quote_literal('clinician'), quote_literal(:'dr')], '{}'),
	('register_patient', ARRAY[quote_literal(:'tenant'), quote_literal('Nul'), quote_literal('Lish'), quote_literal('1999-09-09'),
		quote_literal('555-0199-000'), quote_literal('nul@example.org'), quote_literal('SYN-NULL'), quote_literal('99000')], '{5,6,7,8}'),
	('find_patient', ARRAY[quote_literal(:'tenant'), quote_literal('SYN-0001'), 'NULL', 'NULL', 'NULL', 'NULL'], '{3,4,5,6}'),  -- no criterion at all: 22023
	('patient_record', ARRAY[quote_literal(:'p1')], '{}'),
	('rotate_analytics_tokens', ARRAY[quote_literal(:'tenant')], '{}'),
	('k_anonymity', ARRAY[quote_literal(:'tenant')], '{}'),
	('no_show_rates', ARRAY[quote_literal(:'tenant'), quote_literal('[2026-06-01, 2026-07-01)'), quote_literal('practitioner')], '{}'),
	('lead_times', ARRAY[quote_literal(:'tenant'), quote_literal('[2026-06-01, 2026-07-01)'), quote_literal('location')], '{}'),
	('utilisation', ARRAY[quote_literal(:'tenant'), quote_literal('[2026-06-15, 2026-06-16)'), quote_literal('actor')], '{}'),
	('find_slots', ARRAY[format('ARRAY[%L]::uuid[]', :'dr'), quote_literal('[2026-06-15, 2026-06-16)'), quote_literal('30 minutes'), '5'], '{4}'),
	('hold', ARRAY[quote_literal(:'p3'), format('ARRAY[%L]::uuid[]', :'dr'), quote_literal('[2026-06-16 14:00Z, 2026-06-16 14:30Z)'),
		quote_literal('5 minutes')], '{}'),
	('book', ARRAY[quote_literal(:'p3'), format('ARRAY[%L]::uuid[]', :'dr'), quote_literal('[2026-06-16 15:00Z, 2026-06-16 15:30Z)'),
		quote_literal('routine'), quote_literal('null test'), quote_literal('null-key')], '{5,6}'),
	('reschedule', ARRAY[quote_literal(:'appt'), quote_literal('[2026-06-15 16:00Z, 2026-06-15 16:30Z)')], '{}'),
	('set_status', ARRAY[quote_literal(:'appt'), quote_literal('arrived')], '{}'),
	('cancel', ARRAY[quote_literal(:'appt2'), quote_literal('null test')], '{2}'),
	('waitlist_add', ARRAY[quote_literal(:'p3'), format('ARRAY[%L]::uuid[]', :'dr'), quote_literal('[2026-06-16, 2026-06-17)'),
		quote_literal('30 minutes')], '{}'),
	('waitlist_remove', ARRAY[quote_literal(:'wl')], '{}'),
	('confirm', ARRAY['NULL'], '{}'),
	('waitlist_offers', ARRAY['NULL'], '{}'),
	('remove_member', ARRAY['NULL', quote_literal('tst_member'), quote_literal('clinician')], '{}'),
	('rotate_key', ARRAY[quote_literal(:'tenant')], '{}'),
	('reencrypt', ARRAY['10'], '{}'),
	('shred_tenant', ARRAY[quote_literal(:'tenant')], '{}'),
	('rewrap_keys', '{}', '{}'),
	('master_keys', '{}', '{}'),
	('rebuild_analytics', '{}', '{}'),
	('add_data_use_agreement', ARRAY[quote_literal(:'tenant'), quote_literal('tst_member'), quote_literal('study'),
		'current_date + 1', 'true'], '{}'),
	('add_issuer', ARRAY[quote_literal(:'tenant'), quote_literal('https://idp.example'), quote_literal('schedphi'),
		quote_literal('hs256:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=')], '{}'),
	('remove_issuer', ARRAY[quote_literal(:'tenant'), quote_literal('https://idp.example')], '{}'),
	('set_purpose', ARRAY[quote_literal('TREAT')], '{}'),
	('set_rate_limit', ARRAY[quote_literal(:'tenant'), quote_literal('integration'), 'NULL', '600', '50000'], '{3,4,5}'),
	('whoami', '{}', '{}'),
	('add_business_associate', ARRAY[quote_literal(:'tenant'), quote_literal('Null BA 2'), quote_literal('{email}'), quote_literal('2026-01-01'),
		quote_literal('2027-01-01'), quote_literal('none')], '{}'),
	('verify_business_associate', ARRAY[quote_literal(:'ba'), quote_literal('2026-06-01'), quote_literal('null test')], '{3}'),
	('record_training', ARRAY[quote_literal(:'tenant'), quote_literal('tst_member'), quote_literal('HIPAA'), quote_literal('2026-01-01'),
		quote_literal('2027-01-01')], '{}'),
	('terminate_member', ARRAY[quote_literal(:'tenant'), quote_literal('tst_glass'), 'now()'], '{}'),
	('add_risk', ARRAY[quote_literal(:'tenant'), quote_literal('Null risk 2'), quote_literal('physical'), '3', '3', quote_literal('postgres'),
		quote_literal('2027-01-01')], '{}'),
	('update_risk', ARRAY[quote_literal(:'risk'), quote_literal('mitigating'), quote_literal('null test')], '{3}'),
	('record_incident', ARRAY[quote_literal(:'tenant'), quote_literal('security'), quote_literal('2026-11-01 10:00Z'),
		quote_literal('null test (synthetic)'), '3'], '{5}'),
	('record_evidence', ARRAY[quote_literal(:'tenant'), quote_literal('restore_test'), quote_literal('2026-06-01'), quote_literal('null test')], '{4}'),
	('start_access_review', ARRAY[quote_literal(:'tenant')], '{}'),
	('review_access', ARRAY[quote_literal(:'review'), quote_literal('tst_glass'), quote_literal('keep'), quote_literal('null test')], '{4}'),
	('check_config', '{}', '{}'),
	('compliance_report', ARRAY[quote_literal(:'tenant'), quote_literal('markdown')], '{}'),
	('verify_report', ARRAY[quote_literal(:'tenant'), quote_literal(schedphi.compliance_report(:'tenant', 'markdown'))], '{}'),
	('break_glass', ARRAY[quote_literal(:'p1'), quote_literal('synthetic emergency reason'), '30'], '{}'),
	('review_break_glass', ARRAY[quote_literal(:'grant_id'), quote_literal('justified'), quote_literal('checked')], '{}'),
	('verify_audit', '{}', '{}'),
	('verify_audit', ARRAY[quote_literal('{"seq": 0}')], '{}'),
	('audit_digest', '{}', '{}'),
	('audit_digest', ARRAY[quote_literal(:'tenant')], '{}'),
	('access_report', ARRAY[quote_literal(:'p1'), quote_literal('[2026-01-01, 2027-01-01)')], '{2}'),
	('access_report_text', ARRAY[quote_literal(:'p1'), quote_literal('[2026-01-01, 2027-01-01)')], '{2}'),
	('purge_audit', ARRAY[quote_literal('2000-01-01')], '{}'),
	('distribute', '{}', '{}'),
	('add_external_id', ARRAY[quote_literal(:'tenant'), quote_literal('urn:null'), quote_literal('N-1'), quote_literal(:'dr')], '{}'),
	('add_hl7_sender', ARRAY[quote_literal(:'tenant'), quote_literal('NAPP'), quote_literal('NFAC'), quote_literal('UTC'), 'true'],
		'{3}'),
	('hl7_ingest', ARRAY[quote_literal(E'MSH|^~\\&|NOAPP|NOFAC|||20260101||SIU^S12|N1|P|2.5\r')], '{}'),
	('add_hl7_receiver', ARRAY[quote_literal(:'tenant'), quote_literal('NRECV'), quote_literal('NFAC')], '{3}'),
	('fhir_appointment', ARRAY[quote_literal(:'appt')], '{}'),
	('fhir_schedule', ARRAY[quote_literal(:'dr')], '{}'),
	('fhir_patient', ARRAY[quote_literal(:'p1')], '{}'),
	('fhir_cancel', ARRAY[quote_literal(:'appt2'), quote_literal('null test')], '{2}'),
	('fhir_find', ARRAY[quote_literal(format('{"start": "2026-06-15T13:00:00Z", "end": "2026-06-15T16:00:00Z", "actor": ["%s"], "duration": 30}', :'dr'))], '{}'),
	('fhir_search', ARRAY[quote_literal('Appointment'), quote_literal(format('{"patient": "Patient/%s"}', :'p1'))], '{}'),
	('fhir_hold', ARRAY[quote_literal(format('{"resourceType": "Appointment", "start": "2026-06-16T14:00:00Z", "end": "2026-06-16T14:30:00Z", "participant": [{"actor": {"reference": "Patient/%s"}}, {"actor": {"reference": "Practitioner/%s"}}]}', :'p3', :'dr'))], '{}'),
	('fhir_book', ARRAY[quote_literal(format('{"resourceType": "Appointment", "start": "2026-06-16T15:00:00Z", "end": "2026-06-16T15:30:00Z", "participant": [{"actor": {"reference": "Patient/%s"}}, {"actor": {"reference": "Practitioner/%s"}}]}', :'p3', :'dr'))], '{}'),
	('fhir_ingest', ARRAY[quote_literal('{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Slot"}}]}')], '{}'),
	-- (the _oo variants answer a NULL, as any bad argument, with an
	-- OperationOutcome of issue type invalid: test/tap/22_fhir.sql)
	('fhir_appointment_oo', ARRAY[quote_literal(:'appt')], '{1}'),
	('fhir_schedule_oo', ARRAY[quote_literal(:'dr')], '{1}'),
	('fhir_patient_oo', ARRAY[quote_literal(:'p1')], '{1}'),
	('fhir_cancel_oo', ARRAY[quote_literal(:'appt2'), quote_literal('null test')], '{1,2}'),
	('fhir_find_oo', ARRAY['NULL'], '{1}'),
	('fhir_search_oo', ARRAY[quote_literal('Slot'), quote_literal('{}')], '{1,2}'),
	('fhir_hold_oo', ARRAY[quote_literal('{}')], '{1}'),
	('fhir_book_oo', ARRAY[quote_literal('{}')], '{1}'),
	('fhir_ingest_oo', ARRAY[quote_literal('{}')], '{1}'),
	('hl7_outbound', ARRAY[quote_literal(:'recv'), '10'], '{}'),
	('hl7_ack', ARRAY[quote_literal(:'recv'), quote_literal(E'MSH|^~\\&|R|F|||20260101||ACK|A1|P|2.5\rMSA|AA|SO999\r')], '{}'),
	('set_reminder_policy', ARRAY[quote_literal(:'tenant'), quote_literal('{1 day}'), quote_literal('21:00-09:00'),
		quote_literal('+1 555 0100 999'), quote_literal('https://portal.example.org/l/')], '{4,5}'),
	('add_message_template', ARRAY[quote_literal(:'tenant'), quote_literal('reminder'), quote_literal('sms'),
		quote_literal('See you {date} at {time}')], '{}'),
	('set_contact_preference', ARRAY[quote_literal(:'p1'), quote_literal('sms'), 'true', 'false', quote_literal('null test')], '{5}'),
	('opt_out', ARRAY[quote_literal(:'tenant'), quote_literal('sms'), quote_literal('+1 555 0100 001')], '{}'),
	('portal_link', ARRAY[quote_literal(:'appt'), quote_literal('1 hour')], '{}'),
	('redeem_portal_link', ARRAY[quote_literal(schedphi.portal_link(:'appt')), 'false'], '{}'),
	('claim_messages', ARRAY[quote_literal(:'ba'), '10'], '{}'),
	('mark_sent', ARRAY[:'msg', quote_literal('sent'), quote_literal('REF-1')], '{3}'),
	('message_queue', ARRAY[quote_literal(:'tenant')], '{}'),
	('hl7_queue', ARRAY[quote_literal(:'tenant')], '{}'),
	('hl7_skip', ARRAY[quote_literal(:'recv'), '999999'], '{}');
-- assume() is covered by test/tap/08_tokens.sql: a NULL token is refused
-- there, and its scope defaults to the transaction.

-- every public function is covered
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
		   WHERE p.pronamespace = 'schedphi'::regnamespace AND p.proname !~ '^_'),
		  (SELECT array_agg(fn ORDER BY fn) FROM (SELECT fn FROM calls UNION ALL SELECT 'assume') c),
	'every public function is exercised with NULLs');

-- Each NULL position, in its own subtransaction so that calls cannot
-- interfere; the state after each call is compared with the state before.
CREATE TEMP TABLE outcome (fn text, pos int, state text, nullable boolean, changed boolean);
CREATE FUNCTION pg_temp.snapshot() RETURNS text LANGUAGE sql AS $$
	SELECT md5(concat_ws('|',
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.tenant t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.location t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.actor t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.member t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.availability t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.block t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.patient t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.appointment t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.appointment_actor t),
		(SELECT string_agg(t::text, ',' ORDER BY t::text) FROM schedphi.waitlist t)))
$$;
DO $$
DECLARE
	c record;
	i int;
	a text[];
	st text;
	before text;
	after text;
BEGIN
	FOR c IN SELECT * FROM calls LOOP
		FOR i IN 1 .. cardinality(c.args) LOOP
			a := c.args;
			a[i] := 'NULL';
			before := pg_temp.snapshot();
			BEGIN
				EXECUTE format('SELECT * FROM schedphi.%I(%s)', c.fn, array_to_string(a, ', '));
				st := '00000';
				after := pg_temp.snapshot();
				RAISE SQLSTATE 'TSTRB';
			EXCEPTION
				WHEN SQLSTATE 'TSTRB' THEN NULL;
				WHEN OTHERS THEN
					st := SQLSTATE;
					after := pg_temp.snapshot();
			END;
			INSERT INTO outcome VALUES (c.fn, i, st, i = ANY (c.nullable), after <> before);
		END LOOP;
	END LOOP;
END $$;

SELECT is((SELECT string_agg(fn || '#' || pos || '=' || state, ', ' ORDER BY fn, pos) FROM outcome
		   WHERE NOT nullable AND state <> '22023'), NULL,
	'NULL where a value is required is 22023 for every function and argument');
SELECT is((SELECT string_agg(fn || '#' || pos || '=' || state, ', ' ORDER BY fn, pos) FROM outcome
		   WHERE nullable AND state <> '00000'), NULL,
	'NULL where the SPEC allows it (a default of none) works');
SELECT is((SELECT string_agg(fn || '#' || pos, ', ' ORDER BY fn, pos) FROM outcome
		   WHERE state <> '00000' AND changed), NULL,
	'a refused call changes nothing');
SELECT cmp_ok((SELECT count(*)::int FROM outcome), '>=', 70, 'every argument position was tried');

SELECT * FROM finish();
ROLLBACK;

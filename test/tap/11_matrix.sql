-- The role matrix: every role (and a login with none) against every public
-- function, with valid arguments.  "allowed" means the call was not refused
-- with 42501 (it may still fail on the state of things, e.g. 55000);
-- "denied" means 42501.  Each call runs in its own subtransaction and is
-- rolled back, so the calls cannot disturb each other.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_m_none LOGIN;
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['admin', 'scheduler', 'clinician', 'billing', 'support', 'analyst', 'integration', 'auditor'] LOOP
		EXECUTE format('CREATE ROLE %I LOGIN', 'tst_m_' || r);
	END LOOP;
END $$;
SELECT schedphi.add_hl7_receiver(:'tenant', 'MRECV', 'MFAC') AS recv \gset
SELECT schedphi.add_business_associate(:'tenant', 'Matrix BA', '{sms}', '2026-01-01', '2027-01-01', 'limited') AS ba \gset
SELECT schedphi.add_risk(:'tenant', 'Matrix risk', 'technical', 2, 2, 'postgres', '2027-01-01') AS risk \gset
SELECT schedphi.add_member(:'tenant', 'tst_m_' || r, r, CASE WHEN r = 'clinician' THEN :'dr'::uuid END)
FROM unnest(ARRAY['admin', 'scheduler', 'clinician', 'billing', 'support', 'analyst', 'integration', 'auditor']) r \g /dev/null
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS appt \gset
SELECT schedphi.hold(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-15 15:00Z, 2026-06-15 15:30Z)') AS held \gset
SELECT schedphi.book(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-15 16:00Z, 2026-06-15 16:30Z)') AS gone \gset
SELECT schedphi.cancel(:'gone');
SELECT schedphi.waitlist_add(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 20:00Z)', '30 minutes') AS wl \gset
CREATE ROLE tst_m_glass LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_m_glass', 'clinician', :'dr2');
SET SESSION AUTHORIZATION tst_m_glass;
SELECT schedphi.break_glass(:'p1', 'synthetic emergency for the matrix') AS grant_id \gset
RESET SESSION AUTHORIZATION;
SELECT schedphi.start_access_review(:'tenant') AS review \gset
SELECT schedphi.add_business_associate(:'tenant', 'Matrix SMS', '{sms}', current_date - 30, current_date + 300, 'limited') AS sms_ba \gset
SELECT schedphi.add_message_template(:'tenant', 'confirmation', 'sms', 'See you {date} at {time}') \g /dev/null
SELECT schedphi.set_contact_preference(:'p1', 'sms', true);
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 14:30Z)') AS msg_appt \gset
SELECT max(id) AS msg FROM schedphi.message WHERE tenant = :'tenant' \gset
SELECT schedphi.portal_link(:'appt') AS tok \gset

CREATE TEMP TABLE calls (fn text, call text, allowed text[]);
INSERT INTO calls VALUES
	('create_tenant', $$schedphi.create_tenant('M', 'UTC')$$, '{}'),
	('add_location', format($$schedphi.add_location(%L, 'M site', 'UTC')$$, :'tenant'), '{admin}'),
	('add_practitioner', format($$schedphi.add_practitioner(%L, 'Dr M')$$, :'tenant'), '{admin}'),
	('add_resource', format($$schedphi.add_resource(%L, 'room', 'M room')$$, :'tenant'), '{admin}'),
	('add_availability', format($$schedphi.add_availability(%L, %L, '{6}', '09:00', '10:00')$$, :'dr', :'loc'), '{admin}'),
	('add_block', format($$schedphi.add_block(%L, '[2026-07-01 10:00Z, 2026-07-01 11:00Z)', 'meeting')$$, :'dr'), '{admin,scheduler}'),
	('set_buffer', format($$schedphi.set_buffer(%L, '5 minutes', '5 minutes')$$, :'dr'), '{admin}'),
	('add_member', format($$schedphi.add_member(%L, 'tst_m_none', 'support')$$, :'tenant'), '{admin}'),
	('remove_member', format($$schedphi.remove_member(%L, 'tst_m_support', 'support')$$, :'tenant'), '{admin}'),
	('add_issuer', format($$schedphi.add_issuer(%L, 'https://m.example', 'schedphi', 'hs256:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=')$$, :'tenant'), '{admin}'),
	('remove_issuer', format($$schedphi.remove_issuer(%L, 'https://m.example')$$, :'tenant'), '{admin}'),
	('rotate_key', format($$schedphi.rotate_key(%L)$$, :'tenant'), '{admin}'),
	('rotate_analytics_tokens', format($$schedphi.rotate_analytics_tokens(%L)$$, :'tenant'), '{admin}'),
	('k_anonymity', format($$schedphi.k_anonymity(%L)$$, :'tenant'), '{analyst}'),
	('rebuild_analytics', $$schedphi.rebuild_analytics()$$, '{}'),
	('add_data_use_agreement', format($$schedphi.add_data_use_agreement(%L, 'tst_m_analyst', 'study', current_date + 1)$$, :'tenant'), '{admin}'),
	('no_show_rates', format($$schedphi.no_show_rates(%L, '[2026-06-01, 2026-07-01)')$$, :'tenant'), '{analyst}'),
	('lead_times', format($$schedphi.lead_times(%L, '[2026-06-01, 2026-07-01)')$$, :'tenant'), '{analyst}'),
	('utilisation', format($$schedphi.utilisation(%L, '[2026-06-15, 2026-06-16)')$$, :'tenant'), '{analyst}'),
	('reencrypt', $$schedphi.reencrypt(10)$$, '{}'),
	('rewrap_keys', $$schedphi.rewrap_keys()$$, '{}'),
	('set_rate_limit', format($$schedphi.set_rate_limit(%L, role => 'integration', reveals_per_hour => 50000)$$, :'tenant'), '{}'),
	('shred_tenant', format($$schedphi.shred_tenant(%L)$$, :'tenant'), '{}'),
	('master_keys', $$schedphi.master_keys()$$, '{}'),
	('register_patient', format($$schedphi.register_patient(%L, 'M', 'Synthetic', '1990-01-01')$$, :'tenant'), '{scheduler,integration}'),
	('find_patient', format($$schedphi.find_patient(%L, family => 'Synthetic', birth_date => '1990-01-01')$$, :'tenant'), '{scheduler,integration,clinician,billing}'),
	('patient_record', format($$schedphi.patient_record(%L)$$, :'p1'), '{scheduler,integration,clinician,billing}'),
	('find_slots', format($$schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')$$, :'dr'), '{admin,scheduler,clinician,integration,support}'),
	('book', format($$schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-16 14:00Z, 2026-06-16 14:30Z)')$$, :'p1', :'dr'), '{scheduler,integration}'),
	('hold', format($$schedphi.hold(%L, ARRAY[%L]::uuid[], '[2026-06-16 15:00Z, 2026-06-16 15:30Z)')$$, :'p1', :'dr'), '{scheduler,integration}'),
	('confirm', format($$schedphi.confirm(%L)$$, :'held'), '{scheduler,integration}'),
	('reschedule', format($$schedphi.reschedule(%L, '[2026-06-15 17:00Z, 2026-06-15 17:30Z)')$$, :'appt'), '{scheduler,integration}'),
	('cancel', format($$schedphi.cancel(%L)$$, :'appt'), '{scheduler,integration}'),
	('set_status', format($$schedphi.set_status(%L, 'arrived')$$, :'appt'), '{scheduler,integration,clinician}'),
	('waitlist_add', format($$schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], '[2026-06-16, 2026-06-17)', '30 minutes')$$, :'p1', :'dr'), '{scheduler,integration}'),
	('waitlist_offers', format($$schedphi.waitlist_offers(%L)$$, :'gone'), '{scheduler,integration}'),
	('waitlist_remove', format($$schedphi.waitlist_remove(%L)$$, :'wl'), '{scheduler,integration}'),
	('break_glass', format($$schedphi.break_glass(%L, 'synthetic emergency reason')$$, :'p2'), '{clinician,admin}'),
	('review_break_glass', format($$schedphi.review_break_glass(%L, 'justified', 'checked')$$, :'grant_id'), '{admin,auditor}'),
	('verify_audit', $$schedphi.verify_audit()$$, '{auditor}'),
	('verify_audit', $$schedphi.verify_audit('{"seq": 0}')$$, '{auditor}'),
	('audit_digest', $$schedphi.audit_digest()$$, '{auditor}'),
	('audit_digest', format($$schedphi.audit_digest(%L)$$, :'tenant'), '{auditor}'),
	('access_report', format($$schedphi.access_report(%L)$$, :'p1'), '{auditor}'),
	('access_report_text', format($$schedphi.access_report_text(%L)$$, :'p1'), '{auditor}'),
	('purge_audit', $$schedphi.purge_audit('2000-01-01')$$, '{}'),
	('distribute', $$schedphi.distribute()$$, '{}'),
	('add_external_id', format($$schedphi.add_external_id(%L, 'urn:m', 'M-1', %L)$$, :'tenant', :'dr'), '{admin}'),
	('add_hl7_sender', format($$schedphi.add_hl7_sender(%L, 'MAPP', 'MFAC', 'UTC')$$, :'tenant'), '{admin}'),
	-- (an integration login gets an ACK, here AR: no such sender)
	('hl7_ingest', $$schedphi.hl7_ingest(E'MSH|^~\&|NOAPP|NOFAC|||20260101||SIU^S12|M1|P|2.5\r')$$, '{integration}'),
	('add_hl7_receiver', format($$schedphi.add_hl7_receiver(%L, 'MR2', 'MF2')$$, :'tenant'), '{admin}'),
	('fhir_appointment', format($$schedphi.fhir_appointment(%L)$$, :'appt'), '{scheduler,integration,clinician,billing,support,admin}'),
	('fhir_schedule', format($$schedphi.fhir_schedule(%L)$$, :'dr'), '{admin,scheduler,clinician,integration,support}'),
	('fhir_patient', format($$schedphi.fhir_patient(%L)$$, :'p1'), '{scheduler,integration,clinician,billing}'),
	('fhir_cancel', format($$schedphi.fhir_cancel(%L)$$, :'appt'), '{scheduler,integration}'),
	('fhir_find', format($$schedphi.fhir_find('{"start": "2026-06-15T13:00:00Z", "end": "2026-06-15T16:00:00Z", "actor": ["Practitioner/%s"], "duration": 30}')$$, :'dr'),
	 '{admin,scheduler,clinician,integration,support}'),
	('fhir_search', format($$schedphi.fhir_search('Appointment', '{"patient": "Patient/%s"}')$$, :'p1'),
	 '{scheduler,integration,clinician,billing,support,admin}'),
	('fhir_hold', format($$schedphi.fhir_hold('{"resourceType": "Appointment", "start": "2026-06-16T14:00:00Z", "end": "2026-06-16T14:30:00Z", "participant": [{"actor": {"reference": "Patient/%s"}}, {"actor": {"reference": "Practitioner/%s"}}]}')$$, :'p3', :'dr'),
	 '{scheduler,integration}'),
	('fhir_book', format($$schedphi.fhir_book('{"resourceType": "Appointment", "start": "2026-06-16T14:00:00Z", "end": "2026-06-16T14:30:00Z", "participant": [{"actor": {"reference": "Patient/%s"}}, {"actor": {"reference": "Practitioner/%s"}}]}')$$, :'p3', :'dr'),
	 '{scheduler,integration}'),
	('fhir_ingest', $$schedphi.fhir_ingest('{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Slot"}}]}')$$, '{integration}'),
	-- the _oo variants: the same rules, a refusal as an OperationOutcome
	-- (pg_temp.oo turns an issue of type forbidden back into 42501)
	('fhir_appointment_oo', format($$pg_temp.oo(schedphi.fhir_appointment_oo(%L))$$, :'appt'), '{scheduler,integration,clinician,billing,support,admin}'),
	('fhir_schedule_oo', format($$pg_temp.oo(schedphi.fhir_schedule_oo(%L))$$, :'dr'), '{admin,scheduler,clinician,integration,support}'),
	('fhir_patient_oo', format($$pg_temp.oo(schedphi.fhir_patient_oo(%L))$$, :'p1'), '{scheduler,integration,clinician,billing}'),
	('fhir_cancel_oo', format($$pg_temp.oo(schedphi.fhir_cancel_oo(%L))$$, :'appt'), '{scheduler,integration}'),
	('fhir_find_oo', format($$pg_temp.oo(schedphi.fhir_find_oo('{"start": "2026-06-15T13:00:00Z", "end": "2026-06-15T16:00:00Z", "actor": ["Practitioner/%s"], "duration": 30}'))$$, :'dr'),
	 '{admin,scheduler,clinician,integration,support}'),
	('fhir_search_oo', format($$pg_temp.oo(schedphi.fhir_search_oo('Appointment', '{"patient": "Patient/%s"}'))$$, :'p1'),
	 '{scheduler,integration,clinician,billing,support,admin}'),
	('fhir_hold_oo', format($$pg_temp.oo(schedphi.fhir_hold_oo('{"resourceType": "Appointment", "start": "2026-06-16T14:00:00Z", "end": "2026-06-16T14:30:00Z", "participant": [{"actor": {"reference": "Patient/%s"}}, {"actor": {"reference": "Practitioner/%s"}}]}'))$$, :'p3', :'dr'),
	 '{scheduler,integration}'),
	('fhir_book_oo', format($$pg_temp.oo(schedphi.fhir_book_oo('{"resourceType": "Appointment", "start": "2026-06-16T14:00:00Z", "end": "2026-06-16T14:30:00Z", "participant": [{"actor": {"reference": "Patient/%s"}}, {"actor": {"reference": "Practitioner/%s"}}]}'))$$, :'p3', :'dr'),
	 '{scheduler,integration}'),
	('fhir_ingest_oo', $$pg_temp.oo(schedphi.fhir_ingest_oo('{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Slot"}}]}'))$$, '{integration}'),
	-- (an integration login: nothing queued yet; an ACK for nothing sent, 22023)
	('hl7_outbound', format($$schedphi.hl7_outbound(%L)$$, :'recv'), '{integration}'),
	('hl7_ack', format($$schedphi.hl7_ack(%L, E'MSH|^~\\&|R|F|||20260101||ACK|A1|P|2.5\rMSA|AA|SO999\r')$$, :'recv'), '{integration}'),
	('whoami', $$schedphi.whoami()$$, '{admin,scheduler,clinician,billing,support,analyst,integration,auditor,none}'),
	('add_business_associate', format($$schedphi.add_business_associate(%L, 'M BA', '{email}', '2026-01-01', '2027-01-01', 'none')$$, :'tenant'), '{admin}'),
	('verify_business_associate', format($$schedphi.verify_business_associate(%L, '2026-06-01', 'matrix')$$, :'ba'), '{admin}'),
	('record_training', format($$schedphi.record_training(%L, 'tst_m_scheduler', 'HIPAA', '2026-01-01', '2027-01-01')$$, :'tenant'), '{admin}'),
	('terminate_member', format($$schedphi.terminate_member(%L, 'tst_m_billing')$$, :'tenant'), '{admin}'),
	('add_risk', format($$schedphi.add_risk(%L, 'M risk', 'physical', 3, 3, 'postgres', '2027-01-01')$$, :'tenant'), '{admin}'),
	('update_risk', format($$schedphi.update_risk(%L, 'mitigating', 'matrix')$$, :'risk'), '{admin}'),
	('record_incident', format($$schedphi.record_incident(%L, 'security', '2026-11-01 10:00Z', 'matrix (synthetic)', 3)$$, :'tenant'), '{admin}'),
	('record_evidence', format($$schedphi.record_evidence(%L, 'restore_test', '2026-06-01')$$, :'tenant'), '{admin}'),
	('start_access_review', format($$schedphi.start_access_review(%L)$$, :'tenant'), '{admin}'),
	('review_access', format($$schedphi.review_access(%L, 'tst_m_billing', 'keep')$$, :'review'), '{admin}'),
	('check_config', $$schedphi.check_config()$$, '{admin,auditor}'),
	('compliance_report', format($$schedphi.compliance_report(%L, 'markdown')$$, :'tenant'), '{admin,auditor}'),
	('verify_report', format($$schedphi.verify_report(%L, %L)$$, :'tenant', schedphi.compliance_report(:'tenant', 'markdown')), '{admin,auditor}'),
	('set_reminder_policy', format($$schedphi.set_reminder_policy(%L, '{1 day}')$$, :'tenant'), '{admin}'),
	('add_message_template', format($$schedphi.add_message_template(%L, 'reminder', 'sms', 'See you {date}')$$, :'tenant'), '{admin}'),
	('set_contact_preference', format($$schedphi.set_contact_preference(%L, 'email', true)$$, :'p2'), '{admin,scheduler,integration}'),
	('opt_out', format($$schedphi.opt_out(%L, 'sms', '+1 555 0100 002')$$, :'tenant'), '{admin,scheduler,integration}'),
	('portal_link', format($$schedphi.portal_link(%L)$$, :'appt'), '{admin,scheduler,integration}'),
	('redeem_portal_link', format($$schedphi.redeem_portal_link(%L, false)$$, :'tok'), '{scheduler,integration}'),
	('claim_messages', format($$schedphi.claim_messages(%L)$$, :'sms_ba'), '{integration}'),
	('mark_sent', format($$schedphi.mark_sent(%s, 'sent')$$, :'msg'), '{integration}'),
	('message_queue', format($$schedphi.message_queue(%L)$$, :'tenant'), '{admin}'),
	('hl7_queue', format($$schedphi.hl7_queue(%L)$$, :'tenant'), '{admin}'),
	('hl7_skip', format($$schedphi.hl7_skip(%L, 999999)$$, :'recv'), '{admin}'),
	('set_purpose', $$schedphi.set_purpose('TREAT')$$, '{admin,scheduler,clinician,billing,support,analyst,integration,auditor,none}');

SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
		   WHERE p.pronamespace = 'schedphi'::regnamespace AND p.proname !~ '^_' AND p.proname <> 'assume'),
		  (SELECT array_agg(fn ORDER BY fn) FROM calls), 'every public function is in the matrix (assume: test/tokens.sh)');

CREATE FUNCTION pg_temp.oo(r jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	IF r->>'resourceType' = 'OperationOutcome' AND r #>> '{issue,0,code}' = 'forbidden' THEN
		RAISE EXCEPTION 'forbidden' USING ERRCODE = '42501';
	END IF;
	RETURN r;
END $$;
CREATE TEMP TABLE outcome (fn text, role text, state text);
GRANT ALL ON outcome TO PUBLIC;
DO $$
DECLARE
	c record;
	r text;
	st text;
BEGIN
	FOR c IN SELECT * FROM calls LOOP
		FOREACH r IN ARRAY ARRAY['admin', 'scheduler', 'clinician', 'billing', 'support', 'analyst', 'integration', 'auditor', 'none'] LOOP
			BEGIN
				EXECUTE format('SET SESSION AUTHORIZATION %I', 'tst_m_' || r);
				PERFORM schedphi.set_purpose('TREAT');
				EXECUTE 'SELECT ' || c.call;
				st := '00000';
				RAISE SQLSTATE 'TSTRB';
			EXCEPTION
				WHEN SQLSTATE 'TSTRB' THEN NULL;
				WHEN OTHERS THEN st := SQLSTATE;
			END;
			RESET SESSION AUTHORIZATION;
			INSERT INTO outcome VALUES (c.fn, r, st);
		END LOOP;
	END LOOP;
END $$;

SELECT is((SELECT string_agg(o.fn || ':' || o.role || '=' || o.state, ', ' ORDER BY o.fn, o.role)
		   FROM outcome o JOIN calls c USING (fn)
		   WHERE (o.role = ANY (c.allowed)) = (o.state = '42501')), NULL,
	'every role is allowed exactly what the SPEC matrix allows, and refused the rest with 42501');
SELECT cmp_ok((SELECT count(*)::int FROM outcome), '=', (SELECT count(*)::int * 9 FROM calls), 'every call was tried by every role');

SELECT * FROM finish();
ROLLBACK;

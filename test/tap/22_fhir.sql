-- FHIR R4 (issue #14): searches (Appointment, Slot, Schedule), holds and
-- bookings from Appointment resources, an EHR's bundles (the official R4
-- examples among them), and the OperationOutcome variants.  Medplum's
-- validator checks the same resources in test/fhir.sh.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
-- the session's zone must not matter
SET LOCAL TimeZone = 'Pacific/Auckland';
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS other, dr AS other_dr, p1 AS other_p1 FROM tst.clinic('Europe/Berlin') \gset
CREATE ROLE tst_f_desk LOGIN;
CREATE ROLE tst_f_eng LOGIN;
CREATE ROLE tst_f_admin LOGIN;
CREATE ROLE tst_f_support LOGIN;
CREATE ROLE tst_f_doc LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_f_desk', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_f_eng', 'integration');
SELECT schedphi.add_member(:'tenant', 'tst_f_admin', 'admin');
SELECT schedphi.add_member(:'tenant', 'tst_f_support', 'support');
SELECT schedphi.add_member(:'tenant', 'tst_f_doc', 'clinician', practitioner => :'dr2');
SELECT coalesce(max(id), 0) AS mark FROM schedphi.audit_log \gset

-- ------------------------------------------------------------ hold and book
SET SESSION AUTHORIZATION tst_f_desk;
SELECT schedphi.fhir_hold(jsonb_build_object('resourceType', 'Appointment', 'status', 'pending',
	'start', '2026-08-03T14:00:00Z', 'end', '2026-08-03T14:30:00Z',
	'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p1'), 'status', 'needs-action'),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'dr'), 'status', 'needs-action')))) AS h \gset
SELECT is(:'h'::jsonb ->> 'status', 'pending', 'fhir_hold: a pending Appointment');
SELECT is(:'h'::jsonb -> 'slot' -> 0 ->> 'reference', 'Slot/' || :'dr' || '-202608031400-30',
		  'Appointment.slot is filled: the Slot of its actor and time');
SELECT is((SELECT status FROM schedphi.appointments WHERE id = (:'h'::jsonb ->> 'id')::uuid), 'pending',
		  'the hold is held as hold() holds');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.fhir_book(%L::jsonb)$$, jsonb_build_object('resourceType', 'Appointment',
	'status', 'booked', 'start', '2026-08-03T14:15:00Z', 'end', '2026-08-03T14:45:00Z',
	'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p2'), 'status', 'accepted'),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'dr'), 'status', 'accepted'))))),
	'23P01', 'a booking over the hold is a conflict');
SELECT schedphi.fhir_book_oo(jsonb_build_object('resourceType', 'Appointment',
	'status', 'booked', 'start', '2026-08-03T14:15:00Z', 'end', '2026-08-03T14:45:00Z',
	'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p2'), 'status', 'accepted'),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'dr'), 'status', 'accepted')))) AS oo \gset
SELECT is(:'oo'::jsonb #>> '{resourceType}', 'OperationOutcome', 'fhir_book_oo: the conflict as an OperationOutcome');
SELECT is(:'oo'::jsonb #>> '{issue,0,code}', 'conflict', '... of issue type conflict');
SELECT ok(:'oo'::jsonb #>> '{issue,0,diagnostics}' LIKE '%Dr Alpha Synthetic (' || :'dr' || ') is busy during%',
		  '... naming what blocks it: the actor and the interval');
SELECT ok(:'oo'::jsonb::text !~* ('Testa|Synthetica|SYN-0001|' || :'p1'), '... and never the other patient');
SELECT is(:'oo'::jsonb #>> '{issue,0,details,coding,0,code}', '23P01', '... with the SQLSTATE as a coding');
SELECT schedphi.fhir_book(jsonb_build_object('resourceType', 'Appointment', 'id', :'h'::jsonb ->> 'id',
	'status', 'booked')) AS b \gset
SELECT is(:'b'::jsonb ->> 'status', 'booked', 'fhir_book of the hold''s id confirms the hold');
SELECT is(:'b'::jsonb ->> 'start', '2026-08-03T14:00:00Z', '... as it was held');
-- a booking by Slot, with a client identifier as the idempotency key
SELECT schedphi.fhir_book(jsonb_build_object('resourceType', 'Appointment', 'status', 'booked',
	'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:example:app', 'value', 'req-1')),
	'appointmentType', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object('code', 'FOLLOWUP'))),
	'slot', jsonb_build_array(jsonb_build_object('reference', 'Slot/' || :'room' || '-202608031500-45')),
	'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p2'), 'status', 'accepted'),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'dr2'), 'status', 'accepted')))) AS b2 \gset
SELECT is(concat_ws(' ', :'b2'::jsonb ->> 'start', :'b2'::jsonb ->> 'end', :'b2'::jsonb #>> '{appointmentType,coding,0,code}',
					jsonb_array_length(:'b2'::jsonb -> 'slot')),
		  '2026-08-03T15:00:00Z 2026-08-03T15:45:00Z FOLLOWUP 2', 'a booking by Slot: its time, the kind, a Slot per actor');
SELECT is(schedphi.fhir_book(jsonb_build_object('resourceType', 'Appointment', 'status', 'booked',
	'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:example:app', 'value', 'req-1')),
	'appointmentType', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object('code', 'FOLLOWUP'))),
	'slot', jsonb_build_array(jsonb_build_object('reference', 'Slot/' || :'room' || '-202608031500-45')),
	'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p2'), 'status', 'accepted'),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'dr2'), 'status', 'accepted')))) ->> 'id',
	:'b2'::jsonb ->> 'id', 'the same request again (same identifier): the same appointment');
SELECT is(tst.sqlstate_of($$SELECT schedphi.fhir_book('{"resourceType": "Appointment", "participant": []}')$$), '22023',
		  'an Appointment without patient, actors or time: 22023');
SELECT is(tst.error_of(format($$SELECT schedphi.fhir_book(%L)$$, jsonb_build_object('resourceType', 'Appointment',
	'start', '2026-08-03T15:00:00', 'end', '2026-08-03T15:30:00Z', 'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p2')),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'dr2')))))),
	'22023: Appointment.start must be a FHIR instant (YYYY-MM-DDThh:mm:ss with Z or an offset)',
	'a time without an offset is refused, never read in the session''s zone');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.fhir_book(%L)$$, jsonb_build_object('resourceType', 'Appointment',
	'slot', jsonb_build_array('Slot/' || :'room' || '-202613031500-45'), 'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p2')))))),
	'22023', 'a Slot id that names no time (month 13): 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.fhir_book(%L)$$, jsonb_build_object('resourceType', 'Appointment',
	'start', '2026-08-04T14:00:00Z', 'end', '2026-08-04T14:30:00Z', 'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'other_p1')),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/' || :'other_dr')))))),
	'42501', 'another tenant''s patient and practitioner: 42501');
RESET SESSION AUTHORIZATION;
-- a hold expires by itself: confirming it afterwards is 55000
SET SESSION AUTHORIZATION tst_f_desk;
SELECT schedphi.fhir_hold(jsonb_build_object('resourceType', 'Appointment',
	'start', '2026-08-05T14:00:00Z', 'minutesDuration', 20, 'participant', jsonb_build_array(
		jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || :'p3')),
		jsonb_build_object('actor', jsonb_build_object('reference', 'Location/' || :'room'))))) ->> 'id' AS h2 \gset
RESET SESSION AUTHORIZATION;
UPDATE schedphi.appointment SET hold_expires = now() - interval '1 minute' WHERE id = :'h2';
UPDATE schedphi.appointment_actor SET expires = now() - interval '1 minute' WHERE appointment = :'h2';
SET SESSION AUTHORIZATION tst_f_desk;
SELECT is(schedphi.fhir_book_oo(jsonb_build_object('resourceType', 'Appointment', 'id', :'h2')) #>> '{issue,0,code}',
		  'business-rule', 'an expired hold cannot be booked (55000, business-rule)');
SELECT is((schedphi.fhir_search('Slot', jsonb_build_object('schedule', 'Schedule/' || :'room',
			'start', jsonb_build_array('ge2026-08-05T14:00:00Z', 'lt2026-08-05T14:20:00Z'), 'status', 'free'))) -> 'entry' -> 0
			-> 'resource' ->> 'start', '2026-08-05T14:00:00Z', 'and its time is free again');
RESET SESSION AUTHORIZATION;

-- ------------------------------------------------------------ search
SET SESSION AUTHORIZATION tst_f_desk;
SELECT schedphi.book(:'p1', ARRAY[:'chair']::uuid[], '[2026-08-06 14:00Z, 2026-08-06 15:00Z)') AS c1 \gset
SELECT schedphi.book(:'p2', ARRAY[:'chair']::uuid[], '[2026-08-06 14:30Z, 2026-08-06 15:30Z)') AS c2 \gset
SELECT schedphi.book(:'p1', ARRAY[:'dr2']::uuid[], '[2026-08-07 14:00Z, 2026-08-07 14:30Z)') AS d1 \gset
SELECT schedphi.cancel(schedphi.book(:'p1', ARRAY[:'dr2']::uuid[], '[2026-08-08 14:00Z, 2026-08-08 14:30Z)'));
SELECT is((SELECT string_agg(e -> 'resource' ->> 'start', ' ' ORDER BY e -> 'resource' ->> 'start')
		   FROM jsonb_array_elements(schedphi.fhir_search('Appointment', jsonb_build_object('patient', 'Patient/' || :'p1')) -> 'entry') e),
		  '2026-08-03T14:00:00Z 2026-08-06T14:00:00Z 2026-08-07T14:00:00Z 2026-08-08T14:00:00Z',
		  'Appointment?patient: every appointment of the patient, by start');
SELECT is((SELECT string_agg(e -> 'resource' ->> 'start', ' ' ORDER BY e -> 'resource' ->> 'start')
		   FROM jsonb_array_elements(schedphi.fhir_search('Appointment', jsonb_build_object('patient', :'p1',
				'date', jsonb_build_array('ge2026-08-06', 'lt2026-08-08'), 'status', 'booked,arrived')) -> 'entry') e),
		  '2026-08-06T14:00:00Z 2026-08-07T14:00:00Z', '... with date prefixes (ge, lt) and a status list');
SELECT is(jsonb_array_length(schedphi.fhir_search('Appointment', jsonb_build_object('patient', 'Patient/' || :'p1',
		  'date', '2026-08-07')) -> 'entry'), 1, '... a date without a time is that whole day');
SELECT is((SELECT string_agg(e -> 'resource' ->> 'id', ' ' ORDER BY e -> 'resource' ->> 'start')
		   FROM jsonb_array_elements(schedphi.fhir_search('Appointment', jsonb_build_object('device', 'Device/' || :'chair',
				'date', 'ge2026-08-06T00:00:00Z')) -> 'entry') e),
		  :'c1' || ' ' || :'c2', 'Appointment?device: the appointments that hold the actor');
SELECT is(schedphi.fhir_search('Appointment', jsonb_build_object('identifier', 'urn:example:app|req-1')) #>> '{entry,0,resource,id}',
		  :'b2'::jsonb ->> 'id', 'Appointment?identifier=system|value: a client''s identifier');
SELECT is(schedphi.fhir_search('Appointment', jsonb_build_object('identifier', 'urn:schedphi:appointment|' || :'d1')) #>> '{entry,0,resource,id}',
		  :'d1', '... and schedphi''s own');
SELECT is(schedphi.fhir_search('Appointment', jsonb_build_object('patient', 'Patient/' || :'other_p1')) ->> 'total', '0',
		  'another tenant''s patient: nothing found');
SELECT is(tst.error_of($$SELECT schedphi.fhir_search('Appointment', '{"date": "ge2026-01-01"}')$$),
		  '22023: an Appointment search needs patient, actor (practitioner, location, device), identifier or _id',
		  'a search by date alone is refused (it would read every tenant''s rows)');
SELECT is(tst.sqlstate_of($$SELECT schedphi.fhir_search('Appointment', '{"patient": "x", "colour": "red"}')$$), '22023',
		  'an unknown parameter: 22023');
SELECT is(tst.sqlstate_of($$SELECT schedphi.fhir_search('Appointment', '{"patient": "Patient/x", "date": "soon"}')$$), '22023',
		  'a date that is not one: 22023');
SELECT is(tst.sqlstate_of($$SELECT schedphi.fhir_search('Observation', '{}')$$), 'SPF05', 'another resource type: SPF05');
SELECT is(schedphi.fhir_search_oo('Observation', '{}') #>> '{issue,0,code}', 'not-supported', '... not-supported in its OperationOutcome');
-- Slots
SELECT schedphi.fhir_search('Slot', jsonb_build_object('schedule', 'Schedule/' || :'chair',
	'start', jsonb_build_array('ge2026-08-06T13:00:00Z', 'lt2026-08-06T17:00:00Z'), 'duration', 30)) AS slots \gset
SELECT is((SELECT string_agg(concat_ws('/', e -> 'resource' ->> 'status', to_char((e -> 'resource' ->> 'start')::timestamptz AT TIME ZONE 'UTC', 'HH24MI'),
										  e -> 'resource' ->> 'overbooked'), ' ' ORDER BY e -> 'resource' ->> 'start', e -> 'resource' ->> 'status')
		   FROM jsonb_array_elements(:'slots'::jsonb -> 'entry') e WHERE e -> 'resource' ->> 'start' < '2026-08-06T15:00'),
		  'free/1300 free/1315 free/1330 free/1345 busy/1400/true free/1400 busy/1430/true',
		  'Slot?schedule: free Slots on the grid and busy ones; the chair bay''s shared busy Slots are overbooked');
SELECT ok(:'slots'::jsonb::text !~ :'p1', 'a Slot names no patient');
SELECT is((SELECT e -> 'resource' ->> 'comment' FROM jsonb_array_elements(:'slots'::jsonb -> 'entry') e
		   WHERE e -> 'resource' ->> 'status' = 'busy' LIMIT 1), '2 of 2 seats taken', '... and how many seats are taken');
SELECT is(schedphi.fhir_search('Slot', jsonb_build_object('_id', :'dr' || '-202608031400-30')) #>> '{entry,0,resource,status}',
		  'busy', 'Slot?_id: the Slot an id names, as it is now');
SELECT is(schedphi.fhir_search('Slot', jsonb_build_object('_id', :'dr' || '-202608030300-30')) #>> '{entry,0,resource,status}',
		  'busy-unavailable', '... busy-unavailable outside availability');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.fhir_search('Slot', %L)$$, jsonb_build_object('schedule', 'Schedule/' || :'dr',
		  'start', jsonb_build_array('ge2026-01-01', 'lt2026-06-01')))), '22023', 'a Slot search covers at most 31 days');
SELECT is(schedphi.fhir_search('Schedule', jsonb_build_object('actor', jsonb_build_array('Practitioner/' || :'dr', 'Location/' || :'room')))
		  ->> 'total', '2', 'Schedule?actor: one Schedule per actor');
RESET SESSION AUTHORIZATION;
-- minimum necessary: support sees no patient; a clinician their own practitioner's only
SET SESSION AUTHORIZATION tst_f_support;
SELECT is((SELECT count(*)::int FROM jsonb_array_elements(schedphi.fhir_search('Appointment', jsonb_build_object('device', :'chair')) -> 'entry') e,
			jsonb_array_elements(e -> 'resource' -> 'participant') p WHERE p -> 'actor' ->> 'reference' LIKE 'Patient/%'), 0,
		  'support: Appointments without the patient');
SELECT is(schedphi.fhir_search('Appointment', jsonb_build_object('patient', :'p1')) ->> 'total', '0',
		  '... and a search by patient finds nothing for support');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_f_doc;
SELECT is((SELECT string_agg(e -> 'resource' ->> 'id', ' ') FROM jsonb_array_elements(
			schedphi.fhir_search('Appointment', jsonb_build_object('patient', :'p1', 'status', 'booked')) -> 'entry') e),
		  :'d1', 'a clinician: only their own practitioner''s appointments');
RESET SESSION AUTHORIZATION;

-- ------------------------------------------------------------ _oo variants
SET SESSION AUTHORIZATION tst_f_desk;
SELECT is(concat_ws(' ',
	schedphi.fhir_appointment_oo(gen_random_uuid()) #>> '{issue,0,code}',
	schedphi.fhir_patient_oo(:'p1') #>> '{issue,0,code}',
	schedphi.fhir_schedule_oo(:'other_dr') #>> '{issue,0,code}',
	schedphi.fhir_find_oo('{}') #>> '{issue,0,code}',
	schedphi.fhir_hold_oo('[]') #>> '{issue,0,code}',
	schedphi.fhir_cancel_oo(:'d1') ->> 'status',
	schedphi.fhir_cancel_oo(:'d1') #>> '{issue,0,code}',
	schedphi.fhir_ingest_oo('{"resourceType": "Bundle", "type": "transaction", "entry": [{}]}') #>> '{issue,0,code}'),
	'forbidden forbidden forbidden invalid invalid cancelled business-rule forbidden',
	'the _oo variants: unknown or other tenant''s ids forbidden, no purpose of use forbidden, bad params invalid, a result when all is well, an illegal transition business-rule, a scheduler''s bundle forbidden');
SELECT is(concat_ws(' ', schedphi.fhir_appointment_oo(NULL) #>> '{issue,0,code}', schedphi.fhir_patient_oo(NULL) #>> '{issue,0,code}',
	schedphi.fhir_schedule_oo(NULL) #>> '{issue,0,code}', schedphi.fhir_find_oo(NULL) #>> '{issue,0,code}',
	schedphi.fhir_search_oo(NULL, NULL) #>> '{issue,0,code}', schedphi.fhir_hold_oo(NULL) #>> '{issue,0,code}',
	schedphi.fhir_book_oo(NULL) #>> '{issue,0,code}', schedphi.fhir_cancel_oo(NULL) #>> '{issue,0,code}',
	schedphi.fhir_ingest_oo(NULL) #>> '{issue,0,code}'),
	'invalid invalid invalid invalid invalid invalid invalid invalid invalid', 'every _oo variant answers a NULL with an OperationOutcome (invalid)');
SELECT is(schedphi.fhir_patient_oo(:'p1') #>> '{issue,0,diagnostics}', 'permission denied: purpose of use rule',
		  'an OperationOutcome says which rule denied');
RESET SESSION AUTHORIZATION;

-- ------------------------------------------------------------ EHR bundles
SET SESSION AUTHORIZATION tst_f_admin;
SELECT schedphi.add_external_id(:'tenant', 'fhir:Practitioner', 'example', :'dr');
SELECT schedphi.add_external_id(:'tenant', 'fhir:Practitioner', 'f202', :'dr2');
SELECT schedphi.add_external_id(:'tenant', 'fhir:Location', '1', :'room');
RESET SESSION AUTHORIZATION;
-- the official R4 examples, with a synthetic Patient for "Patient/example"
CREATE TEMP TABLE bundles (name text PRIMARY KEY, b jsonb);
GRANT SELECT ON bundles TO PUBLIC;
INSERT INTO bundles VALUES
('examples', jsonb_build_object('resourceType', 'Bundle', 'type', 'transaction', 'entry', jsonb_build_array(
	jsonb_build_object('fullUrl', 'urn:uuid:7c0e5a3e-0d4e-4c55-9a57-3a4f1c1e0001',
		'resource', '{"resourceType": "Patient", "id": "example", "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:example:mrn", "value": "FHIRSYN-1"}], "name": [{"family": "Fhirsynthetic", "given": ["Exa"]}], "birthDate": "1974-12-25", "address": [{"postalCode": "02139"}]}'::jsonb,
		'request', jsonb_build_object('method', 'POST', 'url', 'Patient')),
	jsonb_build_object('resource', (SELECT body::jsonb FROM tst.sample WHERE name = 'fhir/Appointment-example'),
		'request', jsonb_build_object('method', 'PUT', 'url', 'Appointment/example')),
	jsonb_build_object('resource', (SELECT body::jsonb || '{"id": "example2doctors"}' FROM tst.sample WHERE name = 'fhir/Appointment-2docs'),
		'request', jsonb_build_object('method', 'PUT', 'url', 'Appointment/example2doctors'))))),
('batch', jsonb_build_object('resourceType', 'Bundle', 'type', 'batch', 'entry', jsonb_build_array(
	jsonb_build_object('resource', (SELECT body::jsonb FROM tst.sample WHERE name = 'fhir/Appointment-examplereq')),
	jsonb_build_object('resource', (SELECT body::jsonb FROM tst.sample WHERE name = 'fhir/Slot-example')),
	jsonb_build_object('resource', jsonb_build_object('resourceType', 'Appointment', 'status', 'booked',
		'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:example:ehr', 'value', 'E-1')),
		'start', '2026-08-10T15:00:00Z', 'end', '2026-08-10T15:30:00Z', 'participant', jsonb_build_array(
			jsonb_build_object('actor', jsonb_build_object('type', 'Patient', 'identifier',
				jsonb_build_object('system', 'urn:example:mrn', 'value', 'FHIRSYN-1'))),
			jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/unmapped'))))),
	jsonb_build_object('resource', jsonb_build_object('resourceType', 'Appointment', 'status', 'booked',
		'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:example:ehr', 'value', 'E-2')),
		'start', '2026-08-10T15:00:00Z', 'end', '2026-08-10T15:30:00Z', 'participant', jsonb_build_array(
			jsonb_build_object('actor', jsonb_build_object('type', 'Patient', 'identifier',
				jsonb_build_object('system', 'urn:example:mrn', 'value', 'FHIRSYN-1'))),
			jsonb_build_object('actor', jsonb_build_object('reference', 'Practitioner/f202'))))))));

SET SESSION AUTHORIZATION tst_f_desk;
SELECT is(tst.sqlstate_of($$SELECT schedphi.fhir_ingest((SELECT b FROM bundles WHERE name = 'examples'))$$), '42501',
		  'fhir_ingest: a scheduler may not hand in an EHR''s bundle');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_f_eng;
SELECT schedphi.fhir_ingest((SELECT b FROM bundles WHERE name = 'examples')) AS r1 \gset
SELECT is((SELECT string_agg(e -> 'response' ->> 'status', ', ') FROM jsonb_array_elements(:'r1'::jsonb -> 'entry') e),
		  '201 Created, 201 Created, 201 Created', 'the official examples ingested: a patient registered, two appointments made');
SELECT is(:'r1'::jsonb ->> 'type', 'transaction-response', '... in a transaction-response Bundle, one entry per input');
SELECT (:'r1'::jsonb #>> '{entry,1,response,location}') AS ex_loc \gset
SELECT is(schedphi.fhir_ingest((SELECT b FROM bundles WHERE name = 'examples')) #>> '{entry,1,response,status}', '200 OK',
		  'the same bundle again: matched (200), nothing new');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.appointment WHERE tenant = :'tenant' AND during && '[2013-12-01, 2013-12-31)'), 2,
		  '... two appointments, not four');
SELECT is((SELECT concat_ws(' ', status, kind, lower(during), cardinality(actors)) FROM schedphi.appointment
		   WHERE id = split_part(:'ex_loc', '/', 2)::uuid),
		  'booked followup 2013-12-10 22:00:00+13 2', 'Appointment/example: booked, FOLLOWUP, 09:00Z, the practitioner and the room');
SET SESSION AUTHORIZATION tst_f_desk;
SELECT is((SELECT string_agg(i ->> 'system' || '|' || (i ->> 'value'), ' ') FROM jsonb_array_elements(
			schedphi.fhir_appointment(split_part(:'ex_loc', '/', 2)::uuid) -> 'identifier') i WHERE i ->> 'system' <> 'urn:schedphi:appointment'),
		  'urn:schedphi:fhir-id|example', 'an Appointment without identifier is known by its id');
SELECT is(schedphi.fhir_search('Appointment', jsonb_build_object('identifier', 'http://example.org/sampleappointment-identifier|123')) ->> 'total',
		  '0', '(the request example was not taken)');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_f_eng;
SELECT schedphi.fhir_ingest((SELECT b FROM bundles WHERE name = 'batch')) AS r2 \gset
SELECT is((SELECT string_agg(concat_ws('/', e -> 'response' ->> 'status', e #>> '{response,outcome,issue,0,code}'), ', ')
		   FROM jsonb_array_elements(:'r2'::jsonb -> 'entry') e),
		  '400 Bad Request/invalid, 422 Unprocessable Entity/not-supported, 404 Not Found/not-found, 201 Created',
		  'a batch: each entry on its own (a request without a time, a Slot, an unmapped practitioner, a booking)');
SELECT is(:'r2'::jsonb #>> '{entry,2,response,outcome,issue,0,details,text}',
		  'An admin maps it with add_external_id(tenant, ''fhir:Practitioner'', ''unmapped'', actor).',
		  'an unknown actor: what to map, and how');
SELECT is(:'r2'::jsonb #>> '{entry,0,response,outcome,issue,0,diagnostics}',
		  'Appointment.start and end are required (a request by requestedPeriod alone is not taken)', 'a request without a time: why');
-- an ended appointment is never revived; a transaction is all or nothing
SELECT schedphi.fhir_ingest(jsonb_build_object('resourceType', 'Bundle', 'type', 'batch', 'entry', jsonb_build_array(
	jsonb_build_object('resource', ((SELECT b FROM bundles WHERE name = 'batch') #> '{entry,3,resource}') || '{"status": "cancelled"}')))) AS r3 \gset
SELECT is(schedphi.fhir_ingest((SELECT b FROM bundles WHERE name = 'batch')) #>> '{entry,3,response,outcome,issue,0,diagnostics}',
		  'ignored: the appointment has ended', 'a late booked for a cancelled appointment is ignored');
SELECT is(tst.error_of(format($$SELECT schedphi.fhir_ingest(%L)$$, jsonb_build_object('resourceType', 'Bundle', 'type', 'transaction',
	'entry', jsonb_build_array(
		jsonb_build_object('resource', ((SELECT b FROM bundles WHERE name = 'batch') #> '{entry,3,resource}')
			|| '{"identifier": [{"system": "urn:example:ehr", "value": "E-3"}], "start": "2026-08-11T15:00:00Z", "end": "2026-08-11T15:30:00Z"}'),
		jsonb_build_object('resource', ((SELECT b FROM bundles WHERE name = 'batch') #> '{entry,3,resource}')
			|| '{"identifier": [{"system": "urn:example:ehr", "value": "E-4"}], "start": "2026-08-11T15:15:00Z", "end": "2026-08-11T15:45:00Z"}'))))),
	'23P01: Bundle.entry[1]: booking conflict: Dr Beta Synthetic (' || :'dr2' || ') is busy during ["2026-08-12 03:00:00+12","2026-08-12 03:30:00+12")',
	'a transaction whose second entry clashes: 23P01 naming the entry, the actor and the interval');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.appointment_ref WHERE tenant = :'tenant' AND value IN ('E-3', 'E-4')), 0,
		  '... and nothing of it stays');

-- hostile input: clear errors, nothing written
SELECT count(*) AS before FROM schedphi.appointment_ref \gset
SET SESSION AUTHORIZATION tst_f_eng;
SELECT is(string_agg(tst.sqlstate_of(format('SELECT schedphi.fhir_ingest(%L)', x)), ' ' ORDER BY o), '22023 22023 22023 22023 22023 22023 22023 22023',
		  'hostile bundles (wrong types, no entries, nested, huge strings, bad dates): 22023')
FROM unnest(ARRAY[
	'[]',
	'{"resourceType": "Bundle", "type": "transaction"}',
	'{"resourceType": "Bundle", "type": "collection", "entry": [{}]}',
	'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Appointment", "status": "booked", "start": {"a": [1]}, "participant": 7}}]}',
	'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Appointment", "status": "booked", "identifier": [{"system": "s", "value": "v"}], "start": "2026-02-30T10:00:00Z", "end": "2026-02-30T11:00:00Z", "participant": []}}]}',
	'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient", "identifier": [{"value": "' || repeat('A', 100000) || '"}]}}]}',
	'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Appointment", "status": "booked", "id": "x", "start": "2026-08-12T10:00:00Z", "end": "2026-08-12T11:00:00Z", "participant": [{"actor": {"reference": ' || repeat('[', 200) || repeat(']', 200) || '}}]}}]}',
	'{"resourceType": "Bundle", "type": "transaction", "entry": ' || repeat('[', 3000) || repeat(']', 3000) || '}'
]) WITH ORDINALITY AS u(x, o);
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*) FROM schedphi.appointment_ref), :'before'::bigint, '... and nothing written');

-- the ledger: one record per entry, never its content
SELECT is((SELECT string_agg(DISTINCT detail ->> 'outcome', ',') FROM schedphi.audit_log
		   WHERE id > :mark AND action = 'fhir_in'), 'cancelled,created,error,ignored: the appointment has ended,matched,unchanged',
		  'every entry of every bundle is on the ledger with its outcome');
SELECT ok(NOT EXISTS (SELECT 1 FROM schedphi.audit_log WHERE id > :mark AND action = 'fhir_in'
					  AND detail::text ~* 'Fhirsynthetic|FHIRSYN|1974-12-25|02139|MRI'), '... and none of its content');

SELECT * FROM finish();
ROLLBACK;

-- HL7 v2 scheduling messages in (issue #14): the public samples answered
-- with the right ACK, times in the sender's zone, idempotency on the
-- control id, the trigger events, out-of-order messages, clashes, unknown
-- senders and resources, and one ledger record per message.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
-- the session's zone must not matter
SET LOCAL TimeZone = 'Asia/Tokyo';
SELECT * FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_h_eng LOGIN;
CREATE ROLE tst_h_admin LOGIN;
CREATE ROLE tst_h_desk LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_h_eng', 'integration');
SELECT schedphi.add_member(:'tenant', 'tst_h_admin', 'admin');
SELECT schedphi.add_member(:'tenant', 'tst_h_desk', 'scheduler');

-- senders: an admin's
SET SESSION AUTHORIZATION tst_h_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_hl7_sender(%L, 'ATHENANET', '235', 'America/New_York')$$,
								 :'tenant')), '42501', 'a scheduler cannot add a sender');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_h_admin;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_hl7_sender(%L, 'X', 'Y', 'Mars/Olympus')$$, :'tenant')),
		  '22023', 'a sender''s time zone must be a zone');
SELECT schedphi.add_hl7_sender(:'tenant', 'ATHENANET', '235', 'America/New_York') AS s2 \gset
SELECT schedphi.add_hl7_sender(:'tenant', 'SCHApp', 'GHHSFacility', 'Europe/Berlin') AS s1 \gset
SELECT schedphi.add_hl7_sender(:'tenant', 'ORSOS', 'G', 'America/Toronto') AS s3 \gset
SELECT schedphi.add_hl7_sender(:'tenant', 'MESA_OP', 'XYZ_HOSPITAL', 'America/Indiana/Indianapolis') AS s4 \gset
SELECT schedphi.add_hl7_sender(:'tenant', 'ATHENANET', '99999', 'America/New_York') AS s5 \gset
SELECT schedphi.add_hl7_sender(:'tenant', 'TESTEHR', 'TESTFAC', 'America/New_York', false) AS st \gset
RESET SESSION AUTHORIZATION;

-- a synthetic SIU: control id, event, filler id, start (local, or with an
-- offset), minutes, AIP id, MRN, family name, SCH-25
CREATE FUNCTION pg_temp.siu(ctl text, ev text, filler text, start text, mins int, aip text, mrn text,
							family text DEFAULT 'Synthetic', status text DEFAULT 'Booked')
RETURNS text LANGUAGE sql AS $$
	SELECT concat_ws(E'\r',
		'MSH|^~\&|TESTEHR|TESTFAC|SCHEDPHI|CLINIC|20260301120000||SIU^' || ev || '^SIU_S12|' || ctl || '|P|2.5.1',
		'SCH||' || filler || '|||||ROUTINE^Routine visit|NORMAL|' || mins || '|min|^^' || mins || '^' || start
			|| '||||||||||||||' || status,
		'PID|1||' || mrn || '^^^TESTEHR^MR||' || family || '^Hl7Test||19800101|F|||1 Main St^^Town^ST^02139',
		'RGS|1|A',
		'AIP|1|A|' || aip || '^Provider^Test|ATTENDING||' || start || '|||' || mins || '|min') || E'\r'
$$;
-- the values of an ACK: MSA-1, MSA-2, ERR-3's code, ERR-2
CREATE FUNCTION pg_temp.ack(a text) RETURNS text LANGUAGE sql AS $$
	SELECT concat_ws(' ', (regexp_match(a, E'\rMSA\\|([A-Z]{2})\\|'))[1], (regexp_match(a, E'\rMSA\\|[A-Z]{2}\\|([^|\r]*)'))[1],
					 (regexp_match(a, E'\rERR\\|[^|]*\\|([^|]*)\\|([0-9]{3})'))[2],
					 nullif((regexp_match(a, E'\rERR\\|[^|]*\\|([^|]*)\\|'))[1], ''))
$$;
SELECT coalesce(max(id), 0) AS mark FROM schedphi.audit_log \gset

-- the public samples (test/samples/hl7v2), as the integration login
SET SESSION AUTHORIZATION tst_h_eng;
CREATE TEMP TABLE acks AS
SELECT s.name, schedphi.hl7_ingest(s.body) AS ack FROM tst.sample s WHERE s.name ~ '^0[1-5]_' ORDER BY s.name;
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(left(name, 2) || ' ' || pg_temp.ack(ack), '; ' ORDER BY name) FROM acks),
		  '01 AA MSG00012; 02 AA 501; 03 AE 38762 101 PID^1^7; 04 AA 24916560; 05 AE 189M90009 204 SCH^1^2',
		  'the samples: three bookings accepted; an S14 of an unknown appointment whose patient has no birth date, and an S15 of an unknown appointment, refused with ERR');
SELECT is((SELECT string_agg(split_part(ack, '|', 9) || ' ' || split_part(split_part(ack, E'\r', 1), '|', 12), ',' ORDER BY name)
		   FROM acks),
		  'ACK^S12^ACK 2.8,ACK^S12^ACK 2.2,ACK^S14^ACK 2.3,ACK^S12^ACK 2.3,ACK^S15^ACK 2.3.1',
		  'each ACK names the event and answers in the message''s version');
SELECT is((SELECT string_agg(split_part(ack, '|', 3) || '/' || split_part(ack, '|', 5) || '/' || split_part(ack, '|', 6), ','
						   ORDER BY name) FROM acks WHERE name ~ '^0[12]'),
		  'EHRApp/SCHApp/GHHSFacility,ATHENA/ATHENANET/235', 'an ACK goes back from the receiver to the sender');
SELECT is((SELECT string_agg(lower(a.during)::text || ' ' || upper(a.during)::text || ' ' || a.kind, '; ' ORDER BY lower(a.during))
		   FROM schedphi.appointment_ref r JOIN schedphi.appointment a ON a.tenant = r.tenant AND a.id = r.appointment
		   WHERE r.tenant = :'tenant' AND r.system LIKE '%:filler'),
		  '2004-03-23 05:40:00+09 2004-03-23 05:50:00+09 routine; 2011-06-17 21:45:00+09 2011-06-17 22:30:00+09 routine; '
		  || '2021-09-24 16:15:00+09 2021-09-24 17:05:00+09 emergency',
	'times: 02 in the sender''s zone (15:40 New York) for 10 minutes; 04 from SCH-11 in Indianapolis; 01 from TQ1 with its offsets, and EMERGENCY from SCH-7');
SELECT is((SELECT string_agg(DISTINCT split_part(r.system, ':', 3), ',') || ' ' || count(DISTINCT r.appointment)
		   FROM schedphi.appointment_ref r WHERE r.tenant = :'tenant' AND r.value IN ('12345', '36996')),
		  'filler,placer 1', 'an appointment is known by its filler id (SCH-2) and its placer id (SCH-1) both');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', mrn => '70690')), 1,
		  'the patient of 02 was registered with the MRN of its PID');
SELECT is((SELECT string_agg(a.kind || ':' || a.name, ',' ORDER BY a.kind, a.name) FROM schedphi.external_id e
		   JOIN schedphi.actor a ON a.tenant = e.tenant AND a.id = e.target
		   WHERE e.tenant = :'tenant' AND e.system LIKE 'hl7:' || :'s2' || ':%'),
		  'device:medickinson2,room:Brockton', 'its unknown AIG and AIL became actors with the sender''s external ids');

-- the same message again: the same ACK, nothing new
SELECT count(*) AS appts_before FROM schedphi.appointment WHERE tenant = :'tenant' \gset
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(schedphi.hl7_ingest((SELECT body FROM tst.sample WHERE name LIKE '02%')),
		  (SELECT ack FROM acks WHERE name LIKE '02%'), 'the same message again gets the ACK it got the first time');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(replace((SELECT body FROM tst.sample WHERE name LIKE '02%'), '|10|minutes|', '|20|minutes|'))),
		  'AE 501 205 MSH^1^10', 'the same control id with other content: AE');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*) FROM schedphi.appointment WHERE tenant = :'tenant'), :'appts_before'::bigint,
		  'and neither changed anything');

-- the trigger events on a synthetic sender (create_unknown off: resources by external id)
SELECT schedphi.add_external_id(:'tenant', 'hl7:' || :'st' || ':AIP', 'DR-A', :'dr');
SELECT schedphi.add_external_id(:'tenant', 'hl7:' || :'st' || ':AIP', 'DR-B', :'dr2');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C1', 'S12', 'F1', '202603100900', 30, 'DR-A', 'SYN-H1'))),
		  'AA C1', 'S12 books');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C1B', 'S12', 'F9', '202603101000', 30, 'DR-X', 'SYN-H9'))),
		  'AE C1B 103 AIP^1^3', 'a resource unknown to a sender that may not make actors: AE naming AIP-3');
RESET SESSION AUTHORIZATION;
SELECT r.appointment AS h1 FROM schedphi.appointment_ref r WHERE r.tenant = :'tenant' AND r.value = 'F1' \gset
SELECT is((SELECT lower(during) AT TIME ZONE 'UTC' FROM schedphi.appointment WHERE tenant = :'tenant' AND id = :'h1'),
		  timestamp '2026-03-10 13:00', 'a time without an offset is the sender''s (09:00 in New York, EDT), not the session''s');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C2', 'S13', 'F1', '202603101100', 45, 'DR-A', 'SYN-H1'))),
		  'AA C2', 'S13 moves it');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT format('%s %s %s', lower(during) AT TIME ZONE 'UTC', upper(during) - lower(during), status)
		   FROM schedphi.appointment WHERE tenant = :'tenant' AND id = :'h1'),
		  '2026-03-10 15:00:00 00:45:00 booked', 'to 11:00 for 45 minutes');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_actor WHERE tenant = :'tenant' AND appointment = :'h1'
			 AND active AND lower(span) AT TIME ZONE 'UTC' = '2026-03-10 15:00'), 1, 'its actor''s time moved with it');

-- a clash: another patient at an overlapping time with the same practitioner
SET SESSION AUTHORIZATION tst_h_eng;
SELECT pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C3', 'S12', 'F2', '202603101130', 30, 'DR-A', 'SYN-H2', 'Clashing')))
	AS clash_ack, schedphi.hl7_ingest(pg_temp.siu('C3', 'S12', 'F2', '202603101130', 30, 'DR-A', 'SYN-H2', 'Clashing'))
	AS clash_raw \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'clash_ack'::text, 'AE C3 207 AIP', 'a message that would double-book: AE');
SELECT ok(:'clash_raw' ~ 'Dr Alpha Synthetic' AND :'clash_raw' !~* '(Synthetic\^|Hl7Test|SYN-H1|Clashing)',
		  'naming the practitioner and the interval, never the other patient');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_ref WHERE tenant = :'tenant' AND value = 'F2')
		  + (SELECT count(*)::int FROM schedphi.find_patient(:'tenant', mrn => 'SYN-H2')), 0,
		  'and changes nothing: no appointment, no patient registered');

-- ending events, case-insensitive SCH-25, out of order
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C4', 'S15', 'F1', '202603101100', 45, 'DR-A', 'SYN-H1', status => 'NoShow'))),
		  'AA C4', 'S15 with SCH-25 NOSHOW (any case)');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT status FROM schedphi.appointment WHERE tenant = :'tenant' AND id = :'h1'), 'noshow',
		  'is a no-show, not a cancellation');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C5', 'S13', 'F1', '202603101400', 30, 'DR-A', 'SYN-H1'))),
		  'AA C5', 'a late S13 is accepted');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT format('%s %s', status, lower(during) AT TIME ZONE 'UTC') FROM schedphi.appointment
		   WHERE tenant = :'tenant' AND id = :'h1'), 'noshow 2026-03-10 15:00:00',
		  'but never revives an ended appointment');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C6', 'S17', 'F1', '202603101100', 45, 'DR-A', 'SYN-H1'))),
		  'AA C6', 'S17 deletes');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C7', 'S12', 'F3', '202603111100', 30, 'DR-B', 'SYN-H1'))),
		  'AA C7', 'another booking of the same patient, known by MRN');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C8', 'S26', 'F3', '202603111100', 30, 'DR-B', 'SYN-H1'))),
		  'AA C8', 'S26');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C9', 'S12', 'F4', '202603121100', 30, 'DR-B', 'SYN-H1'))),
		  'AA C9', 'and another');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('C10', 'S16', 'F4', '202603121100', 30, 'DR-B', 'SYN-H1'))),
		  'AA C10', 'S16');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(r.value || '=' || a.status, ',' ORDER BY r.value)
		   FROM schedphi.appointment_ref r JOIN schedphi.appointment a ON a.tenant = r.tenant AND a.id = r.appointment
		   WHERE r.tenant = :'tenant' AND r.system LIKE 'hl7:' || :'st' || ':%'),
		  'F1=entered-in-error,F3=noshow,F4=cancelled', 'S17 entered in error, S26 no-show, S16 cancelled');
SELECT is((SELECT count(*)::int FROM schedphi.find_patient(:'tenant', mrn => 'SYN-H1')), 1,
		  'one patient for the MRN, however many messages name it');

-- what is refused outright (AR)
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(replace(pg_temp.siu('D1', 'S12', 'F5', '202603131100', 30, 'DR-B', 'SYN-H3'),
												  'TESTEHR|TESTFAC', 'OTHER|PLACE'))),
		  'AR D1 207 MSH^1^3', 'an unknown sender: AR');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(replace(pg_temp.siu('D2', 'S12', 'F5', '202603131100', 30, 'DR-B', 'SYN-H3'),
												  'SIU^S12^SIU_S12', 'ADT^A01^ADT_A01'))),
		  'AR D2 200 MSH^1^9', 'a message that is not SIU: AR');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('D3', 'S23', 'F5', '202603131100', 30, 'DR-B', 'SYN-H3'))),
		  'AR D3 200 MSH^1^9', 'an SIU event not taken (S23): AR');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('', 'S12', 'F5', '202603131100', 30, 'DR-B', 'SYN-H3'))),
		  'AR  101 MSH^1^10', 'no control id: AR');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(E'PID|1||Zqxcanary\r')), 'AR  100', 'not HL7: AR');
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('D4', 'S12', 'F5', '2026031311', 30, 'DR-B', 'SYN-H3'))),
		  'AE D4 102 SCH^1^11', 'a start that is not a time to the minute: AE with its location');
SELECT is(tst.sqlstate_of('SELECT schedphi.hl7_ingest(NULL)'), '22023', 'a NULL message: 22023');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_h_desk;
SELECT is(tst.sqlstate_of(format('SELECT schedphi.hl7_ingest(%L)',
								 pg_temp.siu('E1', 'S12', 'F6', '202603131100', 30, 'DR-B', 'SYN-H4'))),
		  '42501', 'a login without the integration role hands in nothing: 42501');
RESET SESSION AUTHORIZATION;

-- the ledger: one record per message, with its outcome, never its content
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'hl7_in'), 25,
		  'every message handed in left one hl7_in record');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'hl7_in'
			 AND detail::text ~* '(Synthetic|Hl7Test|SYN-H|Zqxcanary|70690|HALL|ROSCOE|Main St)'), 0,
		  'no name, MRN or address in them');
SELECT is((SELECT string_agg(detail->>'outcome', ',' ORDER BY id) FROM schedphi.audit_log
		   WHERE id > :mark AND action = 'hl7_in' AND detail->>'control_id' IN ('501', 'C3', 'D2')),
		  'AA,AA,AE,AE,AE,AR', 'with the outcome (the duplicate marked as one)');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'hl7_in'
			 AND detail->>'digest' IS NOT NULL AND detail->>'control_id' = 'C1'), 1, 'and the message''s keyed digest');

-- units of duration as found in the wild
SELECT is((SELECT string_agg(coalesce(schedphi._hl7_duration(v, u, u2)::text, '-'), ',')
		   FROM (VALUES ('60', 's', NULL), ('45', 'm', NULL), ('10', 'minutes', NULL), ('379', 'MIN', 'MINUTES'),
						('15', NULL, NULL), ('2', 'hours', NULL), ('5', '', 'MINUTES'), ('5', 'fortnights', NULL),
						('x', 'min', NULL)) t(v, u, u2)),
		  '00:01:00,00:45:00,00:10:00,06:19:00,00:15:00,02:00:00,00:05:00,-,-',
		  'duration units: s, m, minutes, MIN^MINUTES, blank (minutes), hours; others refused');

-- SIU out: a receiver gets every change made through schedphi, in order per
-- appointment, each again until it is acknowledged AA; an EHR's own changes
-- are not echoed
SET SESSION AUTHORIZATION tst_h_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_hl7_receiver(%L, 'RIS', 'RAD')$$, :'tenant')), '42501',
		  'a scheduler cannot add a receiver');
RESET SESSION AUTHORIZATION;
SELECT schedphi.add_hl7_receiver(:'tenant', 'RIS', 'RAD') AS recv \gset
SET SESSION AUTHORIZATION tst_h_desk;
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-07-06 14:00Z, 2026-07-06 14:30Z)') AS ob1 \gset
SELECT schedphi.book(:'p2', ARRAY[:'dr2', :'room']::uuid[], '[2026-07-06 14:00Z, 2026-07-06 14:45Z)') AS ob2 \gset
SELECT schedphi.reschedule(:'ob1', '[2026-07-06 15:00Z, 2026-07-06 15:30Z)');
SELECT schedphi.cancel(:'ob1');
SELECT schedphi.hold(:'p3', ARRAY[:'dr']::uuid[], '[2026-07-07 14:00Z, 2026-07-07 14:30Z)') \g /dev/null
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('O1', 'S12', 'FO1', '202607081000', 30, 'DR-B', 'SYN-H7'))),
		  'AA O1', 'an EHR''s booking handed in');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(CASE appointment WHEN :'ob1' THEN 'a' WHEN :'ob2' THEN 'b' ELSE '?' END || ':' || event, ',' ORDER BY id)
		   FROM schedphi.hl7_outbox WHERE tenant = :'tenant' AND receiver = :'recv'),
		  'a:S12,b:S12,a:S13,a:S15', 'queued: two bookings, a reschedule, a cancellation; not the hold, not the EHR''s own booking');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(tst.sqlstate_of(format('SELECT * FROM schedphi.hl7_outbound(%L)', :'recv')), '42501',
		  'fetching messages, which carry the patient''s identity, needs a purpose of use');
SELECT schedphi.set_purpose('OPERATIONS');
CREATE TEMP TABLE out1 AS SELECT * FROM schedphi.hl7_outbound(:'recv');
SELECT is((SELECT count(*)::int FROM schedphi.hl7_outbound(:'recv')), 0, 'sent a moment ago: not sent again yet');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(control_id || ' ' || split_part(split_part(message, E'\r', 1), '|', 9), ',' ORDER BY id) FROM out1),
		  (SELECT string_agg('SO' || id || ' SIU^S12^SIU_S12', ',' ORDER BY id) FROM schedphi.hl7_outbox
		   WHERE tenant = :'tenant' AND receiver = :'recv' AND event = 'S12'),
		  'each appointment''s first change only, with its control id');
CREATE TEMP TABLE out1_read AS SELECT o.id, schedphi._hl7_read(o.message) AS d FROM out1 o;
SELECT is((SELECT string_agg(format('%s %s %s %s %s', d->'msh'->>'receiving_application', d->'sch'->>'status',
								 d->'tq1'->'start'->>'local', d->'pid'->>'family', jsonb_array_length(d->'resources')), ',' ORDER BY id)
		   FROM out1_read),
		  'RIS Booked 2026-07-06 14:00:00.000000 Synthetica 1,RIS Booked 2026-07-06 14:00:00.000000 Fictional 2',
		  'the messages read back: receiver, status, start (UTC), the patient, one resource segment per actor');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT schedphi.hl7_ack(:'recv', E'MSH|^~\\&|RIS|RAD|SCHEDPHI||20260706||ACK^S12^ACK|R1|P|2.5.1\rMSA|AA|'
						 || (SELECT control_id FROM out1 ORDER BY id LIMIT 1) || E'\r');
SELECT schedphi.hl7_ack(:'recv', E'MSH|^~\\&|RIS|RAD|SCHEDPHI||20260706||ACK^S12^ACK|R2|P|2.5.1\rMSA|AE|'
						 || (SELECT control_id FROM out1 ORDER BY id DESC LIMIT 1) || E'\r');
SELECT is(tst.sqlstate_of(format('SELECT schedphi.hl7_ack(%L, %L)', :'recv', E'MSH|^~\\&|R|F|||2026||ACK|R3|P|2.5\rMSA|AA|SO0\r')),
		  '22023', 'an ACK for no message sent: 22023');
RESET SESSION AUTHORIZATION;
UPDATE schedphi.hl7_outbox SET sent_at = sent_at - interval '2 minutes' WHERE tenant = :'tenant' AND receiver = :'recv';
SET SESSION AUTHORIZATION tst_h_eng;
SELECT schedphi.set_purpose('OPERATIONS');
CREATE TEMP TABLE out2 AS SELECT id, control_id FROM schedphi.hl7_outbound(:'recv');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(CASE o.appointment WHEN :'ob1' THEN 'a' ELSE 'b' END || ':' || o.event || ':' || x.control_id, ','
							 ORDER BY x.id)
		   FROM out2 x JOIN schedphi.hl7_outbox o ON o.tenant = :'tenant' AND o.id = x.id),
		  (SELECT 'b:S12:SO' || min(id) FILTER (WHERE event = 'S12' AND appointment = :'ob2') || ',a:S13:SO' || min(id) FILTER (WHERE event = 'S13')
		   FROM schedphi.hl7_outbox WHERE tenant = :'tenant' AND receiver = :'recv'),
		  'after AA the appointment''s next change goes; after AE the same message again, with the same control id');
SELECT is((SELECT string_agg(event || ':' || attempts || ':' || coalesce(ack, '-'), ',' ORDER BY id) FROM schedphi.hl7_outbox
		   WHERE tenant = :'tenant' AND receiver = :'recv'),
		  'S12:1:AA,S12:2:AE,S13:1:-,S15:0:-', 'attempts and ACKs kept per change; the cancellation waits for the reschedule');

-- what waits, as the admin sees it; a change the receiver will not take, given up
SET SESSION AUTHORIZATION tst_h_desk;
SELECT is(tst.sqlstate_of(format('SELECT * FROM schedphi.hl7_queue(%L)', :'tenant')), '42501',
		  'a scheduler does not see the outbound queue');
RESET SESSION AUTHORIZATION;
SELECT x.control_id AS s13_ctl FROM out2 x JOIN schedphi.hl7_outbox o ON o.tenant = :'tenant' AND o.id = x.id
WHERE o.event = 'S13' \gset
SET SESSION AUTHORIZATION tst_h_eng;
SELECT schedphi.hl7_ack(:'recv', E'MSH|^~\\&|RIS|RAD|SCHEDPHI||20260706||ACK^S13^ACK|R4|P|2.5.1\rMSA|AR|'
						 || :'s13_ctl' || E'\r');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_h_admin;
CREATE TEMP TABLE q1 AS SELECT * FROM schedphi.hl7_queue(:'tenant');
RESET SESSION AUTHORIZATION;
GRANT SELECT ON q1 TO PUBLIC;
SELECT is((SELECT string_agg(event || ':' || coalesce(ack, '-') || ':' || regexp_replace(state, 'change \d+', 'change N'), ' | ' ORDER BY id) FROM q1),
		  'S12:AE:error at the receiver (AE): sent again a minute after each attempt | S13:AR:rejected by the receiver (AR): sent again a minute after each attempt until acknowledged AA; hl7_skip gives it up | S15:-:waits for change N of the same appointment',
		  'hl7_queue: each change not acknowledged, with why it waits (the AA''d one is not listed)');
SELECT is((SELECT count(*)::int FROM q1 WHERE state ~ ('waits for change ' || (SELECT id FROM q1 WHERE event = 'S13') || ' ')), 1,
		  'the cancellation names the change it waits for');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(tst.sqlstate_of(format('SELECT schedphi.hl7_skip(%L, %s)', :'recv', (SELECT id FROM q1 WHERE event = 'S13'))),
		  '42501', 'the integration login cannot give a change up');
RESET SESSION AUTHORIZATION;
SELECT coalesce(max(id), 0) AS skipmark FROM schedphi.audit_log \gset
SET SESSION AUTHORIZATION tst_h_admin;
SELECT schedphi.hl7_skip(:'recv', (SELECT id FROM q1 WHERE event = 'S13'));
SELECT is(tst.sqlstate_of(format('SELECT schedphi.hl7_skip(%L, %s)', :'recv', (SELECT id FROM q1 WHERE event = 'S13'))),
		  '22023', 'a change already given up (or acknowledged): 22023');
SELECT is((SELECT string_agg(event || ':' || regexp_replace(state, ' at \d{4}-\d\d-\d\d \d\d:\d\d:[0-9.]+[+-]\d\d', ''), ' | ' ORDER BY id) FROM schedphi.hl7_queue(:'tenant')),
		  'S12:error at the receiver (AE): sent again a minute after each attempt | S13:skipped by tst_h_admin: not sent again | S15:due',
		  'after hl7_skip the reschedule shows as skipped and the cancellation is due');
RESET SESSION AUTHORIZATION;
UPDATE schedphi.hl7_outbox SET sent_at = sent_at - interval '2 minutes' WHERE tenant = :'tenant' AND receiver = :'recv';
SET SESSION AUTHORIZATION tst_h_eng;
SELECT schedphi.set_purpose('OPERATIONS');
SELECT is((SELECT string_agg(split_part(split_part(message, E'\r', 1), '|', 9), ',' ORDER BY id) FROM schedphi.hl7_outbound(:'recv')),
		  'SIU^S12^SIU_S12,SIU^S15^SIU_S12', 'the skipped change is not sent again; the cancellation after it goes');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(action || ':' || (detail->>'event') || ':' || (detail->>'ack'), ',') FROM schedphi.audit_log
		   WHERE id > :skipmark AND action = 'hl7_skip'), 'hl7_skip:S13:AR', 'the skip is on the ledger');

-- a resource the message deletes (segment action code D) is not the appointment's
SET SESSION AUTHORIZATION tst_h_eng;
SELECT pg_temp.ack(schedphi.hl7_ingest(concat_ws(E'\r',
	'MSH|^~\&|ATHENANET|235|SCHEDPHI|CLINIC|20260301120000||SIU^S12^SIU_S12|DEL-1|P|2.5.1',
	'SCH||DEL-F1|||||ROUTINE|NORMAL|30|min|^^30^202609011000||||||||||||||Booked',
	'PID|1||DEL-MRN-1^^^X^MR||Delsynthetic^Dee||19800101|F',
	'RGS|1|A', 'AIP|1|A|DELDR1^One^Dr|ATTENDING', 'AIP|2|A|DELDR2^Two^Dr|ATTENDING') || E'\r')) AS del1 \gset
SELECT pg_temp.ack(schedphi.hl7_ingest(concat_ws(E'\r',
	'MSH|^~\&|ATHENANET|235|SCHEDPHI|CLINIC|20260301120100||SIU^S13^SIU_S12|DEL-2|P|2.5.1',
	'SCH||DEL-F1|||||ROUTINE|NORMAL|30|min|^^30^202609011000||||||||||||||Booked',
	'PID|1||DEL-MRN-1^^^X^MR||Delsynthetic^Dee||19800101|F',
	'RGS|1|U', 'AIP|1|U|DELDR1^One^Dr|ATTENDING', 'AIP|2|D|DELDR2^Two^Dr|ATTENDING') || E'\r')) AS del2 \gset
RESET SESSION AUTHORIZATION;
SELECT is(:'del1' || ' / ' || :'del2' || ' / ' || (SELECT cardinality(a.actors) FROM schedphi.appointment_ref r
		JOIN schedphi.appointment a ON a.tenant = r.tenant AND a.id = r.appointment
		WHERE r.tenant = :'tenant' AND r.value = 'DEL-F1' AND r.system LIKE '%:filler'),
		  'AA DEL-1 / AA DEL-2 / 1', 'an S13 whose AIP has action code D takes that practitioner off the appointment');

-- S14's SCH-25: the EHR's status, through the steps it did not report
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(concat_ws(' / ',
		pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('K1', 'S12', 'FK1', '202604061000', 30, 'DR-B', 'SYN-K1'))),
		pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('K2', 'S14', 'FK1', '202604061000', 30, 'DR-B', 'SYN-K1',
													 status => 'Complete')))),
		  'AA K1 / AA K2', 'an S14 reporting a booked visit Complete is accepted');
RESET SESSION AUTHORIZATION;
CREATE FUNCTION pg_temp.filler_status(t uuid, filler text) RETURNS text LANGUAGE sql AS $$
	SELECT a.status FROM schedphi.appointment_ref r
	JOIN schedphi.appointment a ON a.tenant = r.tenant AND a.id = r.appointment
	WHERE r.tenant = t AND r.value = filler AND r.system LIKE '%:filler'
$$;
SELECT is(pg_temp.filler_status(:'tenant', 'FK1'), 'fulfilled', 'and the visit is fulfilled (booked -> arrived -> fulfilled)');
SELECT is(schedphi._status_path('booked', 'fulfilled'), ARRAY['arrived', 'fulfilled'],
		  'the steps from booked to fulfilled');
SELECT is(schedphi._status_path('pending', 'checked-in'), ARRAY['booked', 'checked-in'],
		  'the steps from pending to checked-in');
SELECT ok(schedphi._status_path('fulfilled', 'booked') IS NULL AND schedphi._status_path('arrived', 'booked') IS NULL
		  AND schedphi._status_path('cancelled', 'fulfilled') IS NULL, 'no way back, none out of an end');
SET SESSION AUTHORIZATION tst_h_eng;
SELECT is(concat_ws(' / ',
		pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('K3', 'S12', 'FK2', '202604061100', 30, 'DR-B', 'SYN-K1'))),
		pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('K4', 'S14', 'FK2', '202604061100', 30, 'DR-B', 'SYN-K1',
													 status => 'STARTED'))),
		pg_temp.ack(schedphi.hl7_ingest(pg_temp.siu('K5', 'S14', 'FK2', '202604061100', 30, 'DR-B', 'SYN-K1',
													 status => 'Booked')))),
		  'AA K3 / AA K4 / AA K5', 'an S14 Started, then a late S14 Booked: both accepted');
RESET SESSION AUTHORIZATION;
SELECT is(pg_temp.filler_status(:'tenant', 'FK2'), 'arrived', 'the visit stays arrived: a status no step leads to is not taken');

SELECT * FROM finish();
ROLLBACK;

-- Patient communications (issue #16): templates from the allowlist, the
-- clinic's reminder policy, consent per channel, STOP, messages made by
-- appointment changes, claims only through a current BAA with the limits
-- and quiet hours, mark_sent, and portal links (preview, consume, altered,
-- expired, revoked).  Synthetic patients only.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_g_engine LOGIN;
CREATE ROLE tst_g_desk LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_g_engine', 'integration');
SELECT schedphi.add_member(:'tenant', 'tst_g_desk', 'scheduler');
CREATE FUNCTION pg_temp.local_day(n int) RETURNS date LANGUAGE sql STABLE
	AS $$ SELECT (now() AT TIME ZONE 'America/New_York')::date + n $$;
-- an appointment n days ahead at a local wall time
CREATE FUNCTION pg_temp.at(n int, t time, minutes int DEFAULT 30) RETURNS tstzrange LANGUAGE sql STABLE
	AS $$ SELECT tstzrange((pg_temp.local_day(n) + t) AT TIME ZONE 'America/New_York',
						   (pg_temp.local_day(n) + t + make_interval(mins => minutes)) AT TIME ZONE 'America/New_York') $$;
SELECT coalesce(max(id), 0) AS mark FROM schedphi.audit_log \gset

-- ------------------------------------------------------------ templates
SELECT lives_ok(format($$SELECT schedphi.add_message_template(%L, 'reminder', 'sms',
	'Hi {given_name}, see you {date} at {time}, {location}. Questions: {clinic_phone}. {portal_link}')$$, :'tenant'),
	'a template with every allowed placeholder is taken');
SELECT is(tst.error_of(format($$SELECT schedphi.add_message_template(%L, 'reminder', 'sms', 'Your {reason} visit')$$, :'tenant')),
	'22023: placeholder {reason} is not allowed in a message', 'a template naming the reason is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_message_template(%L, 'reminder', 'email', 'With {practitioner} on {date}')$$, :'tenant')),
	'22023', 'a template naming the practitioner is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_message_template(%L, 'reminder', 'email', 'See you {date')$$, :'tenant')),
	'22023', 'a stray brace is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_message_template(%L, 'invoice', 'sms', 'x')$$, :'tenant')),
	'22023', 'an unknown kind is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_message_template(%L, 'reminder', 'fax', 'x')$$, :'tenant')),
	'22023', 'an unknown channel is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_message_template(%L, 'reminder', 'sms', repeat('x', 1601))$$, :'tenant')),
	'22023', 'a body over 1600 characters is 22023');
SELECT schedphi.add_message_template(:'tenant', k, c, 'Hi {given_name}: ' || k || ' {date} {time} at {location}. {portal_link}')
FROM unnest(ARRAY['confirmation', 'cancellation', 'reschedule']) k, unnest(ARRAY['sms', 'email', 'voice']) c \g /dev/null
SELECT schedphi.add_message_template(:'tenant', 'reminder', c, 'Reminder {date} {time} at {location}. {portal_link}')
FROM unnest(ARRAY['email', 'voice']) c \g /dev/null

-- ------------------------------------------------------------ reminder policy
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, %L)$$, :'tenant', '{00:14:00}')), '22023',
	'an offset of 14 minutes is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, %L)$$, :'tenant', '{00:15:00}')), '00000',
	'an offset of 15 minutes is taken');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, %L)$$, :'tenant', '{30 days}')), '00000',
	'an offset of 30 days is taken');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, %L)$$, :'tenant', '{30 days 1 minute}')), '22023',
	'an offset over 30 days is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, %L)$$, :'tenant', '{1 mon}')), '22023',
	'an offset in months is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, %L)$$, :'tenant', '{1h,2h,3h,4h,5h,6h}')), '22023',
	'six offsets are 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, '{1 day}', '24:00-09:00')$$, :'tenant')), '22023',
	'quiet hours that are no wall time are 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_reminder_policy(%L, '{1 day}', '21:00-09:00', NULL, 'http://portal.example.org/')$$, :'tenant')),
	'22023', 'a portal that is not https is 22023');
SELECT schedphi.set_reminder_policy(:'tenant', '{2 hours, 1 day}', '21:00-09:00', '+1 555 0100 999', 'https://portal.example.org/l/');

-- the quiet-hours arithmetic, across a change of clocks (America/New_York, 8 March 2026)
SELECT is(schedphi._message_time('2026-03-08 07:30Z', 'America/New_York', '21:00', '09:00'), '2026-03-08 01:00Z'::timestamptz,
	'a reminder due at 03:30 EDT goes at 20:00 EST the evening before (the night the clocks change)');
SELECT is(schedphi._message_time('2026-03-09 17:00Z', 'America/New_York', '21:00', '09:00'), '2026-03-09 17:00Z'::timestamptz,
	'a reminder due at 13:00 goes then');
SELECT is(schedphi._message_time('2026-11-01 02:00Z', 'America/New_York', '21:00', '09:00'), '2026-11-01 00:00Z'::timestamptz,
	'one due at 22:00 EDT goes at 20:00 EDT the same evening');
SELECT is(schedphi._quiet_end('2026-03-08 04:00Z', 'America/New_York', '21:00', '09:00'), '2026-03-08 13:00Z'::timestamptz,
	'quiet hours from 23:00 EST end at 09:00 EDT the next morning');
SELECT is(schedphi._quiet_end('2026-11-01 12:59Z', 'America/New_York', '21:00', '09:00'), '2026-11-01 14:00Z'::timestamptz,
	'quiet hours the morning the clocks go back end at 09:00 EST');
SELECT ok(schedphi._in_quiet('21:00', '21:00', '09:00') AND NOT schedphi._in_quiet('09:00', '21:00', '09:00')
		  AND schedphi._in_quiet('08:59:59', '21:00', '09:00') AND NOT schedphi._in_quiet('20:59:59', '21:00', '09:00')
		  AND NOT schedphi._in_quiet('03:00', '00:00', '00:00'),
	'quiet hours include their start and exclude their end; equal times mean none');

-- ------------------------------------------------------------ consent
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_contact_preference(%L, 'voice', true, true)$$, :'p1')), '22023',
	'unencrypted_ok on voice is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.set_contact_preference(%L, 'pager', true)$$, :'p1')), '22023',
	'an unknown channel is 22023');
SET SESSION AUTHORIZATION tst_g_desk;
SELECT schedphi.set_contact_preference(:'p1', 'sms', true, true, 'front desk, warned and chose sms');
SELECT schedphi.set_contact_preference(:'p2', 'email', true, false, 'intake form');
SELECT schedphi.set_contact_preference(:'p2', 'voice', true);
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'consent' AND patient IN (:'p1', :'p2')), 3,
	'each preference is on the ledger, with its patient');

-- ------------------------------------------------------------ messages from appointment changes
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], pg_temp.at(3, '10:00'), 'routine', 'CANARY-REASON-ONCOLOGY') AS a1 \gset
SELECT schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], pg_temp.at(3, '10:00')) AS a2 \gset
SELECT schedphi.book(:'p3', ARRAY[:'room']::uuid[], pg_temp.at(3, '11:00')) AS a3 \gset
SELECT is((SELECT string_agg(kind || '/' || channel, ',' ORDER BY channel, kind) FROM schedphi.message WHERE appointment = :'a1'),
	'confirmation/sms,reminder/sms,reminder/sms', 'a booking queues a confirmation and a reminder per offset on the channel allowed');
SELECT is((SELECT string_agg(kind || '/' || channel, ',' ORDER BY channel, kind, not_before) FROM schedphi.message WHERE appointment = :'a2'),
	'confirmation/email,reminder/email,reminder/email,confirmation/voice,reminder/voice,reminder/voice',
	'one per channel the patient allows');
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE appointment = :'a3'), 0, 'a patient who chose no channel gets nothing');
SELECT is((SELECT not_before FROM schedphi.message WHERE appointment = :'a1' AND kind = 'reminder' ORDER BY not_before DESC LIMIT 1),
	(pg_temp.local_day(2) + time '20:00') AT TIME ZONE 'America/New_York',
	'a reminder due at 08:00 (2 hours before a 10:00 visit, in quiet hours) goes at 20:00 the evening before');
SELECT is((SELECT not_before FROM schedphi.message WHERE appointment = :'a1' AND kind = 'reminder' ORDER BY not_before LIMIT 1),
	(pg_temp.local_day(2) + time '10:00') AT TIME ZONE 'America/New_York', 'the day-before reminder goes 24 hours before');
SELECT ok(NOT EXISTS (SELECT 1 FROM schedphi.message m WHERE m::text LIKE '%CANARY%' OR m::text LIKE '%Testa%'),
	'the queue holds no PHI: no reason, no name');
-- a hold makes no message; confirming it does
SELECT schedphi.hold(:'p1', ARRAY[:'dr']::uuid[], pg_temp.at(4, '10:00')) AS h1 \gset
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE appointment = :'h1'), 0, 'a hold queues nothing');
SELECT schedphi.confirm(:'h1');
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE appointment = :'h1' AND kind = 'confirmation'), 1,
	'a hold confirmed queues its confirmation');

-- ------------------------------------------------------------ vendors and claims
SELECT schedphi.add_business_associate(:'tenant', 'Synthetic SMS Co', '{sms}', pg_temp.local_day(-30), pg_temp.local_day(300), 'limited') AS sms_ba \gset
SELECT schedphi.add_business_associate(:'tenant', 'Synthetic Mail Co', '{email}', pg_temp.local_day(-30), pg_temp.local_day(300), 'limited') AS mail_ba \gset
SELECT schedphi.add_business_associate(:'tenant', 'Lapsed Voice Co', '{voice}', pg_temp.local_day(-400), pg_temp.local_day(-1), 'limited') AS voice_ba \gset
-- no quiet hours from here on, so that what follows does not depend on the hour it runs
SELECT schedphi.set_reminder_policy(:'tenant', '{2 hours, 1 day}', '00:00-00:00', '+1 555 0100 999', 'https://portal.example.org/l/');

SET SESSION AUTHORIZATION tst_g_engine;
SELECT is(tst.error_of(format($$SELECT * FROM schedphi.claim_messages(%L)$$, :'sms_ba')),
	'42501: permission denied: purpose of use rule', 'a claim decrypts: it needs a purpose of use');
SELECT schedphi.set_purpose('TREAT');
CREATE TEMP TABLE claimed AS SELECT * FROM schedphi.claim_messages(:'sms_ba', 10);
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM claimed), 1, 'the SMS vendor claims what is due on SMS only: one message (1 a day per patient)');
SELECT is((SELECT address FROM claimed), '15550100001', 'to the patient''s telephone number (as registered, normalised to digits)');
SELECT ok((SELECT body LIKE 'Hi Testa: confirmation %' AND body LIKE '%https://portal.example.org/l/%' FROM claimed),
	'with the template''s facts, as the patient allowed unencrypted');
SELECT ok((SELECT body NOT LIKE '%CANARY%' AND body NOT LIKE '%Synthetica%' AND body NOT LIKE '%Alpha%' FROM claimed),
	'and nothing the template does not name: no reason, no family name, no practitioner');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'disclose' AND patient = :'p1'
		   AND detail->>'vendor' = :'sms_ba'), 1, 'the claim is a disclosure to the vendor on the ledger');
SELECT ok(EXISTS (SELECT 1 FROM schedphi.access_report(:'p1') r WHERE r::text LIKE '%disclose%'),
	'and appears in the patient''s access_report');
SELECT is((SELECT status || '/' || reason FROM schedphi.message WHERE appointment = :'h1' AND kind = 'confirmation'),
	'pending/limit: 1 a day, 3 a week', 'the second message to the same patient and channel today waits (limit)');
SELECT is((SELECT not_before FROM schedphi.message WHERE appointment = :'h1' AND kind = 'confirmation'),
	now() + interval '1 day', 'until a day after the first');
-- the day limit at its boundary: a claim exactly a day ago no longer counts
-- (the vendor reported it sent: a claim not reported could be claimed again)
UPDATE schedphi.message SET status = 'sent', claimed_at = now() - interval '1 day' WHERE id = (SELECT id FROM claimed);
UPDATE schedphi.message SET not_before = now() WHERE appointment = :'h1' AND kind = 'confirmation';
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT count(*)::int FROM schedphi.claim_messages(:'sms_ba', 10)), 1, 'a claim exactly a day before does not hold the next');
RESET SESSION AUTHORIZATION;
-- the week limit: three in the last seven days hold the fourth
UPDATE schedphi.message SET status = 'sent', claimed_at = now() - interval '2 days' WHERE appointment = :'h1' AND kind = 'confirmation';
UPDATE schedphi.message SET status = 'sent', claimed_at = now() - interval '6 days 23 hours'
WHERE id = (SELECT id FROM schedphi.message WHERE appointment = :'h1' AND kind = 'reminder' ORDER BY not_before LIMIT 1);
UPDATE schedphi.message SET not_before = now() - interval '1 minute' WHERE appointment = :'a1' AND kind = 'reminder';
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT count(*)::int FROM schedphi.claim_messages(:'sms_ba', 10)), 0, 'three in the last 7 days (none today) hold the fourth');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT min(not_before) FROM schedphi.message WHERE appointment = :'a1' AND kind = 'reminder'),
	now() - interval '6 days 23 hours' + interval '7 days', 'until the oldest of the three is a week old');
-- the week limit at its boundary: a claim exactly 7 days before no longer counts
UPDATE schedphi.message SET claimed_at = now() - interval '7 days' WHERE appointment = :'h1' AND kind = 'reminder' AND status = 'sent';
UPDATE schedphi.message SET not_before = now() - interval '1 minute' WHERE appointment = :'a1' AND kind = 'reminder';
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT count(*)::int FROM schedphi.claim_messages(:'sms_ba', 10)), 1,
	'a claim exactly 7 days before no longer counts: the next goes (one: the day limit holds the other)');
RESET SESSION AUTHORIZATION;

-- a claim counts against the login's reveal limit like any other read:
-- this login has revealed one patient this hour (the SMS claims above)
SELECT schedphi.set_rate_limit(:'tenant', login => 'tst_g_engine', reveals_per_hour => 1);
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is(tst.error_of(format($$SELECT * FROM schedphi.claim_messages(%L, 10)$$, :'mail_ba')),
	'SP429: rate limit exceeded: schedphi.reveal_rate_limit',
	'a claim that would disclose a second patient in the hour beyond a limit of 1: SP429');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE channel = 'email' AND status = 'claimed'), 0,
	'and nothing was claimed: the message waits');
SELECT schedphi.set_rate_limit(:'tenant', login => 'tst_g_engine');

-- email without unencrypted_ok: a portal link only
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
CREATE TEMP TABLE mailed AS SELECT * FROM schedphi.claim_messages(:'mail_ba', 10);
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM mailed), 1, 'the mail vendor claims the email confirmation');
SELECT is((SELECT address FROM mailed), 'probe@example.org', 'to the patient''s address');
SELECT ok((SELECT body ~ '^You have a new message from your care team: https://portal\.example\.org/l/[A-Za-z0-9_-]{64}$' FROM mailed),
	'without unencrypted_ok an email carries only a portal link');
SELECT ok((SELECT body NOT LIKE '%Probe%' FROM mailed), 'not even the given name');

-- a lapsed BAA: nothing goes through it, and the admin sees why the voice messages wait
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is(tst.error_of(format($$SELECT * FROM schedphi.claim_messages(%L)$$, :'voice_ba')),
	'42501: permission denied: business associate rule', 'a vendor whose BAA lapsed claims nothing (42501)');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'denied'
		   AND detail->>'rule' = 'permission denied: business associate rule'), 1, 'and the refusal is recorded');
SELECT is((SELECT DISTINCT reason FROM schedphi.message_queue(:'tenant') WHERE channel = 'voice' AND status = 'pending'),
	'held: the BAA of Lapsed Voice Co (voice) is not current since ' || pg_temp.local_day(-1)::text,
	'the voice messages are held, with the reason, for the admin');
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE channel = 'voice' AND status <> 'pending'), 0,
	'and were never sent elsewhere');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.claim_messages(%L, 0)$$, :'sms_ba')), '22023', 'max 0 is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.claim_messages(%L, 1001)$$, :'sms_ba')), '22023', 'max 1001 is 22023');

-- ------------------------------------------------------------ mark_sent
SELECT id AS mail_id FROM mailed \gset
SET SESSION AUTHORIZATION tst_g_engine;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.mark_sent(%s, 'lost')$$, :mail_id)), '22023', 'an unknown status is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.mark_sent(%s, 'sent', 'bad ref with spaces')$$, :mail_id)), '22023',
	'a vendor reference with spaces is 22023');
SELECT lives_ok(format($$SELECT schedphi.mark_sent(%s, 'failed')$$, :mail_id), 'a failure is taken');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT status || ' ' || (not_before = now() + interval '5 minutes') || ' ' || (claimed_at IS NULL) FROM schedphi.message WHERE id = :mail_id),
	'pending true true', 'and the message waits 5 minutes to be claimed again, nothing lost');
SET SESSION AUTHORIZATION tst_g_engine;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.mark_sent(%s, 'sent')$$, :mail_id)), '55000', 'a message not claimed is not reported');
RESET SESSION AUTHORIZATION;
UPDATE schedphi.message SET not_before = now() WHERE id = :mail_id;
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT string_agg(id::text, ',') FROM schedphi.claim_messages(:'mail_ba', 10)), :'mail_id', 'it is claimed again');
SELECT lives_ok(format($$SELECT schedphi.mark_sent(%s, 'sent', 'SM-123')$$, :mail_id), 'then marked sent');
SELECT lives_ok(format($$SELECT schedphi.mark_sent(%s, 'delivered')$$, :mail_id), 'then delivered');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.mark_sent(%s, 'sent')$$, :mail_id)), '55000', 'a delivered message is not sent again');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT status || ' ' || claims || ' ' || vendor_ref FROM schedphi.message WHERE id = :mail_id), 'delivered 2 SM-123',
	'the vendor''s reference is kept, and the claims counted');
SELECT is(tst.sqlstate_of('SELECT schedphi.mark_sent(-1, ''sent'')'), '22023', 'an unknown message is 22023 for a superuser');

-- ------------------------------------------------------------ STOP and consent withdrawn
UPDATE schedphi.message SET not_before = now() - interval '1 minute', claimed_at = NULL WHERE patient = :'p1' AND status = 'pending';
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.opt_out(:'tenant', 'sms', '+1 (555) 0100-001');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE patient = :'p1' AND channel = 'sms' AND status = 'pending'), 0,
	'STOP withdraws every pending SMS to that number at once');
SELECT ok(NOT EXISTS (SELECT 1 FROM schedphi.opt_out o WHERE o::text LIKE '%555%'), 'the opt-out keeps no number');
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], pg_temp.at(5, '10:00')) AS a5 \gset
UPDATE schedphi.message SET not_before = now() - interval '1 minute' WHERE appointment = :'a5';
UPDATE schedphi.message SET claimed_at = NULL WHERE patient = :'p1';
SET SESSION AUTHORIZATION tst_g_engine;
SELECT schedphi.set_purpose('TREAT');
SELECT is((SELECT count(*)::int FROM schedphi.claim_messages(:'sms_ba', 10)), 0, 'a later message to a number that said STOP is not claimed');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(DISTINCT status || '/' || reason, ',') FROM schedphi.message WHERE appointment = :'a5'),
	'withdrawn/opted out', 'it is withdrawn, saying why');
SET SESSION AUTHORIZATION tst_g_desk;
SELECT schedphi.set_contact_preference(:'p2', 'email', false, false, 'patient asked by phone');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.message WHERE patient = :'p2' AND channel = 'email' AND status = 'pending'), 0,
	'consent withdrawn withdraws the pending messages of that channel');

-- ------------------------------------------------------------ reschedule and cancel
SELECT schedphi.reschedule(:'a2', pg_temp.at(6, '14:00'));
SELECT is((SELECT string_agg(DISTINCT reason, ',') FROM schedphi.message WHERE appointment = :'a2' AND status = 'withdrawn'
		   AND channel = 'voice'), 'rescheduled', 'a reschedule withdraws the reminders of the old time');
SELECT is((SELECT string_agg(kind, ',' ORDER BY not_before) FROM schedphi.message WHERE appointment = :'a2' AND status = 'pending'),
	'reschedule,reminder,reminder', 'and queues a reschedule message and reminders for the new time');
SET SESSION AUTHORIZATION tst_g_desk;
SELECT schedphi.portal_link(:'a2') AS tok_cancel \gset
RESET SESSION AUTHORIZATION;
SELECT schedphi.cancel(:'a2');
SELECT is((SELECT string_agg(kind || '/' || status, ',' ORDER BY id) FROM schedphi.message WHERE appointment = :'a2'
		   AND channel = 'voice' AND status IN ('pending')), 'cancellation/pending',
	'a cancellation withdraws the pending reminders and queues the cancellation');

-- ------------------------------------------------------------ portal links
SET SESSION AUTHORIZATION tst_g_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.portal_link(%L, '4 minutes')$$, :'a1')), '22023', 'a ttl under 5 minutes is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.portal_link(%L, '31 days')$$, :'a1')), '22023', 'a ttl over 30 days is 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.portal_link(%L, '30 days')$$, :'a1')), '00000', 'a ttl of 30 days is taken');
SELECT schedphi.portal_link(:'a1', '5 minutes') AS tok \gset
SELECT ok(:'tok' ~ '^[A-Za-z0-9_-]{64}$', 'a link token is 64 opaque characters');
RESET SESSION AUTHORIZATION;
SELECT ok(NOT EXISTS (SELECT 1 FROM schedphi.portal_link k WHERE k::text LIKE '%' || substr(:'tok', 23, 30) || '%'),
	'the token is not stored, only its keyed hash');
SET SESSION AUTHORIZATION tst_g_engine;
SELECT is((schedphi.redeem_portal_link(:'tok', false))->>'time', '10:00', 'a preview shows the visit''s local time');
SELECT is((schedphi.redeem_portal_link(:'tok', false))->>'location', 'Main site', 'a second preview works too (mail scanners), with the place of the practitioner''s hours');
SELECT is((schedphi.redeem_portal_link(:'tok'))->>'date', pg_temp.local_day(3)::text, 'consumed once');
SELECT is(tst.error_of(format($$SELECT schedphi.redeem_portal_link(%L)$$, :'tok')), '42501: permission denied: portal link rule',
	'a used link is refused');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.redeem_portal_link(%L, false)$$, :'tok')), '42501', 'even for a preview');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.redeem_portal_link(%L, false)$$, :'tok_cancel')), '42501',
	'a link to a cancelled appointment is revoked');
RESET SESSION AUTHORIZATION;
SELECT schedphi.portal_link(:'a1') AS tok2 \gset
SELECT schedphi.portal_link(:'a1') AS tok3 \gset
SELECT schedphi.portal_link(:'a1') AS tok4 \gset
-- altered: one character of the secret changed
SET SESSION AUTHORIZATION tst_g_engine;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.redeem_portal_link(%L, false)$$,
		  overlay(:'tok2' placing CASE WHEN substr(:'tok2', 40, 1) = 'A' THEN 'B' ELSE 'A' END from 40 for 1))), '42501',
	'an altered token is refused');
SELECT is(tst.sqlstate_of($$SELECT schedphi.redeem_portal_link('not a token', false)$$), '42501', 'a malformed token is refused');
RESET SESSION AUTHORIZATION;
-- a row altered (its expiry extended by hand) no longer redeems
UPDATE schedphi.portal_link SET expires = expires + interval '1 day'
WHERE id = encode(substr(decode(translate(:'tok3', '-_', '+/'), 'base64'), 1, 16), 'hex')::uuid;
-- a link expired (its hash made again for the earlier expiry, as if time had passed)
UPDATE schedphi.portal_link k SET expires = now() - interval '1 second',
	mac = schedphi._portal_mac(k.tenant, substr(decode(translate(:'tok4', '-_', '+/'), 'base64'), 17), k.appointment, k.purpose,
							   now() - interval '1 second')
WHERE id = encode(substr(decode(translate(:'tok4', '-_', '+/'), 'base64'), 1, 16), 'hex')::uuid;
SET SESSION AUTHORIZATION tst_g_engine;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.redeem_portal_link(%L, false)$$, :'tok3')), '42501',
	'a link whose row was altered is refused');
SELECT is(tst.error_of(format($$SELECT schedphi.redeem_portal_link(%L, false)$$, :'tok4')), '42501: permission denied: portal link rule',
	'an expired link is refused');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'denied'
		   AND detail->>'rule' = 'permission denied: portal link rule'), 7, 'every refused link is recorded');
SELECT ok(NOT EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.id > :mark
					  AND (l::text LIKE '%' || substr(:'tok', 20, 30) || '%' OR l::text LIKE '%' || substr(:'tok2', 20, 30) || '%')),
	'no token is on the ledger');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :mark AND action = 'portal_link' AND patient = :'p1'
		   AND detail->>'event' IN ('preview', 'redeem')), 3, 'each preview and redemption is recorded with its patient');

-- ------------------------------------------------------------ tenant isolation
SELECT tenant AS other FROM tst.clinic('Europe/Berlin') \gset
CREATE ROLE tst_g_other LOGIN;
SELECT schedphi.add_member(:'other', 'tst_g_other', 'integration');
SET SESSION AUTHORIZATION tst_g_other;
SELECT schedphi.set_purpose('TREAT');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.claim_messages(%L)$$, :'sms_ba')), '42501',
	'another tenant''s integration login cannot claim through this tenant''s vendor');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.redeem_portal_link(%L, false)$$, :'tok2')), '42501',
	'nor redeem its links');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.mark_sent(%s, 'sent')$$, :mail_id)), '42501', 'nor report its messages');
SELECT is(tst.sqlstate_of('SELECT count(*) FROM schedphi.message'), '42501', 'nor read the queue table (no grant; row-level security behind)');
SELECT is(tst.sqlstate_of(format($$SELECT * FROM schedphi.message_queue(%L)$$, :'tenant')), '42501', 'nor list it');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;

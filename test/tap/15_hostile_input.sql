-- Hostile input found by an outside probe (issue #12): ranges whose bounds
-- are too far apart for an interval, dates beyond any birth date, NULLs
-- where a tenant or a scope is needed, a secret that is not random, and a
-- session-scope token (refused unless the DBA allows it).  Every refusal
-- is 22023 (or 42501 for the token rule), says which argument, takes
-- milliseconds, and changes nothing.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS t2, dr AS t2dr FROM tst.clinic('Europe/Berlin') \gset
CREATE ROLE tst_h_sched LOGIN;
CREATE ROLE tst_h_doc LOGIN;
CREATE ROLE tst_h_both LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_h_sched', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_h_doc', 'clinician', :'dr');
SELECT schedphi.add_member(:'tenant', 'tst_h_both', 'clinician', :'dr2');
SELECT schedphi.add_member(:'t2', 'tst_h_both', 'clinician', :'t2dr');
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS appt \gset
SELECT count(*) AS appointments_before FROM schedphi.appointment \gset

-- The widest range PostgreSQL 15 holds: upper - lower wraps to a negative
-- interval, which the old "longer than a day" tests let through.
\set huge '''[4713-01-01 00:00+00 BC,294276-12-31 00:00+00)'''
SET SESSION AUTHORIZATION tst_h_sched;
CREATE TEMP TABLE timing (what text, took interval, err text);
CREATE FUNCTION pg_temp.timed(what text, stmt text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	e text := tst.error_of(stmt);
BEGIN
	INSERT INTO timing VALUES (what, clock_timestamp() - t0, e);
END
$$;
SELECT pg_temp.timed('hold', format('SELECT schedphi.hold(%L, ARRAY[%L]::uuid[], %L)', :'p1', :'dr', :huge));
SELECT pg_temp.timed('book', format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', :'p2', :'dr', :huge));
SELECT pg_temp.timed('book with a key', format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L, idempotency_key => %L)',
												:'p2', :'dr', :huge, 'hostile-1'));
SELECT pg_temp.timed('reschedule', format('SELECT schedphi.reschedule(%L, %L)', :'appt', :huge));
SELECT pg_temp.timed('waitlist_add', format('SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], %L, %L)',
											 :'p3', :'dr', :huge, '30 minutes'));
SELECT pg_temp.timed('find_slots', format('SELECT count(*) FROM schedphi.find_slots(ARRAY[%L]::uuid[], %L, %L)',
										   :'dr', :huge, '30 minutes'));
SELECT is((SELECT string_agg(what || ': ' || err, '; ' ORDER BY what) FROM timing
		   WHERE what IN ('hold', 'book', 'book with a key', 'reschedule')), concat_ws('; ',
		  'book: 22023: during must not be longer than one day',
		  'book with a key: 22023: during must not be longer than one day',
		  'hold: 22023: during must not be longer than one day',
		  'reschedule: 22023: during must not be longer than one day'),
	'hold, book and reschedule refuse a range whose interval would wrap, naming the argument');
SELECT is((SELECT err FROM timing WHERE what = 'waitlist_add'),
	'22023: window must not be longer than 370 days', 'waitlist_add says the window is too long, not that the duration is');
SELECT is((SELECT err FROM timing WHERE what = 'find_slots'),
	'22023: window must not be longer than 370 days', 'find_slots refuses it too');
SELECT is((SELECT string_agg(what, ', ') FROM timing WHERE took > interval '500 ms'), NULL,
	'every refusal takes milliseconds, not an expansion over 300,000 years');

-- the boundaries: exactly one day is not "too long" (it fails on availability),
-- one microsecond more is; the same for a waitlist window of 370 days
SELECT is(tst.error_of(format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', :'p2', :'dr',
							  '[2026-06-16 00:00Z, 2026-06-17 00:00Z)')) LIKE '22023: %not available%', true,
	'a booking of exactly one day is judged on availability');
SELECT is(tst.error_of(format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', :'p2', :'dr',
							  '[2026-06-16 00:00Z, 2026-06-17 00:00:00.000001Z)')),
	'22023: during must not be longer than one day', 'one microsecond more than a day is too long');
SELECT is(tst.error_of(format('SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], %L, %L)', :'p3', :'dr',
							  '[2026-01-01 00:00Z, 2027-01-06 00:00Z)', '30 minutes')), '00000',
	'a waitlist window of 370 days is accepted');
SELECT is(tst.error_of(format('SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], %L, %L)', :'p3', :'dr',
							  '[2026-01-01 00:00Z, 2027-01-06 00:00:01Z)', '30 minutes')),
	'22023: window must not be longer than 370 days', 'one second more is refused');
SELECT is(tst.error_of(format('SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], %L, %L)', :'p3', :'dr',
							  '[2026-06-16 10:00Z, 2026-06-16 10:20Z)', '30 minutes')),
	'22023: duration is longer than the window', 'a duration longer than a short window is still named as such');

-- a birth date no registration accepts is a bad argument, not 22008
SELECT is(tst.error_of(format('SELECT * FROM schedphi.find_patient(%L, family => %L, birth_date => %L)',
							  :'tenant', 'Synthetica', '5874897-12-31')),
	'22023: invalid birth_date', 'find_patient with the largest date is 22023');
SELECT is(tst.error_of(format('SELECT * FROM schedphi.find_patient(%L, family => %L, birth_date => %L)',
							  :'tenant', 'Synthetica', '4713-01-01 BC')),
	'22023: invalid birth_date', 'and with the smallest');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*) FROM schedphi.appointment), :'appointments_before'::bigint,
	'the refused calls booked nothing');

-- NULL tenants are named as such, not as an unknown tenant
SELECT is(tst.error_of('SELECT schedphi.shred_tenant(NULL)'), '22023: tenant must not be null',
	'shred_tenant(NULL) says the tenant is null');
SELECT is(tst.error_of('SELECT schedphi.rotate_key(NULL)'), '22023: tenant must not be null',
	'rotate_key(NULL) says the tenant is null');

-- assume(): a NULL scope is not silently the transaction; session scope is
-- refused while schedphi.allow_session_scope is off (the default)
SELECT is(current_setting('schedphi.allow_session_scope'), 'off', 'session scope is off by default');
SELECT is(tst.error_of($$SELECT schedphi.assume('a.b.c', NULL)$$), '22023: scope must be transaction or session',
	'assume(token, NULL) is 22023');
SELECT is(tst.error_of($$SELECT schedphi.assume('a.b.c', 'session')$$), '42501: token rejected: session scope rule',
	'a session-scope assume() is refused by default, before the token is read');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE action = 'denied'
		   AND detail->>'rule' = 'token rejected: session scope rule'), 1,
	'the refusal is on the audit ledger');

-- an HS256 secret must look random
SELECT is(tst.error_of(format('SELECT schedphi.add_issuer(%L, %L, %L, %L)', :'tenant', 'https://zero.idp.example',
							  'schedphi', 'hs256:' || encode(decode(repeat('00', 32), 'hex'), 'base64'))),
	'22023: the hs256 secret is not random', 'add_issuer refuses an all-zero secret');
SELECT is(tst.error_of(format('SELECT schedphi.add_issuer(%L, %L, %L, %L)', :'tenant', 'https://abab.idp.example',
							  'schedphi', 'hs256:' || encode(convert_to(repeat('ab', 24), 'UTF8'), 'base64'))),
	'22023: the hs256 secret is not random', 'and a repeated pattern');
SELECT is(tst.error_of(format('SELECT schedphi.add_issuer(%L, %L, %L, %L)', :'tenant', 'https://good.idp.example',
							  'schedphi', 'hs256:' || encode(decode(md5(random()::text) || md5(random()::text), 'hex'), 'base64'))),
	'00000', 'a random secret of 32 bytes is accepted');

-- shred_tenant takes members as remove_member would: group roles included,
-- unless the login holds the role in another tenant
SELECT schedphi.shred_tenant(:'tenant');
SELECT ok(NOT pg_has_role('tst_h_sched', 'schedphi_scheduler', 'MEMBER'), 'shred_tenant revokes a member''s group role');
SELECT ok(NOT pg_has_role('tst_h_doc', 'schedphi_clinician', 'MEMBER'), 'for every role');
SELECT ok(pg_has_role('tst_h_both', 'schedphi_clinician', 'MEMBER'), 'but not one the login holds in another tenant');
SELECT is((SELECT count(*)::int FROM schedphi.member_event WHERE tenant = :'tenant' AND action = 'remove'), 3,
	'each membership it ends is in the membership history');

SELECT * FROM finish();
ROLLBACK;

-- Denials never tell what exists: for someone with no role in a tenant,
-- that tenant's patients, appointments, actors and MRNs look exactly like
-- ones that do not exist (same SQLSTATE, message, DETAIL and HINT), and
-- both are refused with 42501 naming the tenant rule.  Each refusal is
-- recorded in the audit log.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS t2, p1 AS t2p1, dr AS t2dr FROM tst.clinic('Europe/Berlin') \gset
SELECT schedphi.book(:'t2p1', ARRAY[:'t2dr']::uuid[], '[2026-06-15 10:00Z, 2026-06-15 10:30Z)') AS t2appt \gset
SELECT schedphi.cancel(schedphi.book(:'t2p1', ARRAY[:'t2dr']::uuid[], '[2026-06-15 11:00Z, 2026-06-15 11:30Z)')) IS NULL;
SELECT id AS t2gone FROM schedphi.appointment WHERE tenant = :'t2' AND status = 'cancelled' \gset
CREATE ROLE tst_x_sched LOGIN;
CREATE ROLE tst_x_admin LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_x_sched', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_x_admin', 'admin');

-- everything the error says
CREATE FUNCTION pg_temp.refusal(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	det text;
	hnt text;
BEGIN
	EXECUTE stmt;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
							hnt = PG_EXCEPTION_HINT;
	RETURN concat_ws(' | ', st, msg, nullif(det, ''), nullif(hnt, ''));
END
$$;
CREATE TEMP TABLE pairs (what text, other text, missing text);
INSERT INTO pairs VALUES
	('patient_record', format('SELECT schedphi.patient_record(%L)', :'t2p1'),
					   format('SELECT schedphi.patient_record(%L)', gen_random_uuid())),
	('book', format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', :'t2p1', :'dr', '[2026-06-16 14:00Z, 2026-06-16 14:30Z)'),
			 format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', gen_random_uuid(), :'dr', '[2026-06-16 14:00Z, 2026-06-16 14:30Z)')),
	('book, a bad range too', format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', :'t2p1', :'dr', 'empty'),
			 format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', gen_random_uuid(), :'dr', 'empty')),
	('waitlist_add', format('SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], %L, %L)', :'t2p1', :'dr', '[2026-06-16, 2026-06-17)', '30 minutes'),
					 format('SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], %L, %L)', gen_random_uuid(), :'dr', '[2026-06-16, 2026-06-17)', '30 minutes')),
	('cancel', format('SELECT schedphi.cancel(%L)', :'t2appt'), format('SELECT schedphi.cancel(%L)', gen_random_uuid())),
	('reschedule, a bad range too', format('SELECT schedphi.reschedule(%L, %L)', :'t2appt', 'empty'),
					format('SELECT schedphi.reschedule(%L, %L)', gen_random_uuid(), 'empty')),
	('set_status', format('SELECT schedphi.set_status(%L, %L)', :'t2appt', 'arrived'),
				   format('SELECT schedphi.set_status(%L, %L)', gen_random_uuid(), 'arrived')),
	('confirm', format('SELECT schedphi.confirm(%L)', :'t2appt'), format('SELECT schedphi.confirm(%L)', gen_random_uuid())),
	('waitlist_offers', format('SELECT * FROM schedphi.waitlist_offers(%L)', :'t2gone'),
						format('SELECT * FROM schedphi.waitlist_offers(%L)', gen_random_uuid())),
	('add_block', format('SELECT schedphi.add_block(%L, %L, %L)', :'t2dr', '[2026-07-01 10:00Z, 2026-07-01 11:00Z)', 'x'),
				  format('SELECT schedphi.add_block(%L, %L, %L)', gen_random_uuid(), '[2026-07-01 10:00Z, 2026-07-01 11:00Z)', 'x')),
	('find_patient by an MRN that exists there, or not', format('SELECT schedphi.find_patient(%L, mrn => %L)', :'t2', 'SYN-0001'),
						   format('SELECT schedphi.find_patient(%L, mrn => %L)', :'t2', 'SYN-9999')),
	('find_patient in a tenant that does not exist', format('SELECT schedphi.find_patient(%L, mrn => %L)', :'t2', 'SYN-0001'),
						   format('SELECT schedphi.find_patient(%L, mrn => %L)', gen_random_uuid(), 'SYN-0001')),
	('register_patient', format('SELECT schedphi.register_patient(%L, %L, %L, %L)', :'t2', 'X', 'Y', '1990-01-01'),
						 format('SELECT schedphi.register_patient(%L, %L, %L, %L)', gen_random_uuid(), 'X', 'Y', '1990-01-01')),
	('find_slots', format('SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], %L, %L)', :'t2dr', '[2026-06-16, 2026-06-17)', '30 minutes'),
				   format('SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], %L, %L)', gen_random_uuid(), '[2026-06-16, 2026-06-17)', '30 minutes'));
-- find_slots takes its tenant from the actors: wherever another tenant's
-- actor stands among one's own, it is as unknown as one that does not exist
CREATE TEMP TABLE mixed (what text, other text, missing text);
INSERT INTO mixed
SELECT what, format('SELECT * FROM schedphi.find_slots(%L::uuid[], %L, %L)', o, '[2026-06-16, 2026-06-17)', '30 minutes'),
			 format('SELECT * FROM schedphi.find_slots(%L::uuid[], %L, %L)', m, '[2026-06-16, 2026-06-17)', '30 minutes')
FROM (VALUES
	('find_slots, another tenant''s actor after one''s own', ARRAY[:'dr', :'t2dr']::uuid[], ARRAY[:'dr', '00000000-0000-0000-0000-00000000000a']::uuid[]),
	('find_slots, another tenant''s actor before one''s own', ARRAY[:'t2dr', :'dr']::uuid[], ARRAY['00000000-0000-0000-0000-00000000000a', :'dr']::uuid[]),
	('find_slots, another tenant''s actor and an unknown one', ARRAY[:'t2dr', '00000000-0000-0000-0000-00000000000b']::uuid[],
															  ARRAY['00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-00000000000b']::uuid[])
	) v(what, o, m);
GRANT SELECT ON mixed TO PUBLIC;
GRANT SELECT ON pairs TO PUBLIC;

SET SESSION AUTHORIZATION tst_x_sched;
SELECT is(pg_temp.refusal(other), pg_temp.refusal(missing), what || ': another tenant''s looks like none')
FROM pairs ORDER BY what;
SELECT is((SELECT count(*)::int FROM pairs WHERE pg_temp.refusal(other) NOT LIKE '42501 | permission denied: tenant rule | %'), 0,
	'and each is 42501, the tenant rule');
SELECT is(replace(pg_temp.refusal(other), :'t2dr', '<id>'), replace(replace(pg_temp.refusal(missing), '00000000-0000-0000-0000-00000000000a', '<id>'), :'t2dr', '<id>'),
		  what || ': looks like none')
FROM mixed ORDER BY what;
SELECT is(pg_temp.refusal(format('SELECT * FROM schedphi.find_slots(ARRAY[%L, %L]::uuid[], %L, %L)', :'t2dr', :'dr', '[2026-06-16, 2026-06-17)', '30 minutes')),
		  format('22023 | unknown actor %s', :'t2dr'), 'find_slots: one''s own tenant is searched, the other''s actor is unknown there');
RESET SESSION AUTHORIZATION;
-- a member whose role may not search hears the role rule, whatever the other actor is
CREATE ROLE tst_x_bill LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_x_bill', 'billing');
SET SESSION AUTHORIZATION tst_x_bill;
SELECT is(replace(pg_temp.refusal(other), :'t2dr', '<id>'), replace(replace(pg_temp.refusal(missing), '00000000-0000-0000-0000-00000000000a', '<id>'), :'t2dr', '<id>'),
		  what || ', for a member who may not search: looks like none')
FROM mixed WHERE what NOT LIKE '%unknown one' ORDER BY what;
RESET SESSION AUTHORIZATION;
-- a superuser acting as no one still hears that the actors span tenants
SELECT is(pg_temp.refusal(format('SELECT * FROM schedphi.find_slots(ARRAY[%L, %L]::uuid[], %L, %L)', :'t2dr', :'dr', '[2026-06-16, 2026-06-17)', '30 minutes')),
		  '22023 | actors must all belong to one tenant', 'find_slots: a superuser hears that the actors span tenants');

SET SESSION AUTHORIZATION tst_x_admin;
SELECT is(pg_temp.refusal(format('SELECT schedphi.break_glass(%L, %L)', :'t2p1', 'too short')),
		  pg_temp.refusal(format('SELECT schedphi.break_glass(%L, %L)', gen_random_uuid(), 'too short')),
	'break_glass: another tenant''s patient looks like none, whatever else is wrong');
SELECT is(pg_temp.refusal(format('SELECT schedphi.set_buffer(%L, %L, %L)', :'t2dr', '5 minutes', '5 minutes')),
		  pg_temp.refusal(format('SELECT schedphi.set_buffer(%L, %L, %L)', gen_random_uuid(), '5 minutes', '5 minutes')),
	'set_buffer: another tenant''s actor looks like none');
RESET SESSION AUTHORIZATION;

-- Inside one's own tenant the usual errors stay: a wrong role is the role rule.
SET SESSION AUTHORIZATION tst_x_sched;
SELECT is(pg_temp.refusal(format('SELECT schedphi.set_buffer(%L, %L, %L)', :'dr', '5 minutes', '5 minutes')),
	'42501 | permission denied: role rule | This needs the admin role in the tenant. | An administrator grants roles with schedphi.add_member().',
	'a member with the wrong role hears which role it needs');
RESET SESSION AUTHORIZATION;

-- A superuser, who sees every row anyway, is told what does not exist.
SELECT is(pg_temp.refusal(format('SELECT schedphi.cancel(%L)', '00000000-0000-0000-0000-000000000009')),
	'22023 | unknown appointment 00000000-0000-0000-0000-000000000009', 'a superuser hears "unknown appointment"');

-- Records without a tenant (refusals of ids that exist nowhere, say) may
-- name logins of any tenant: a tenant's auditor does not see them, the DBA does.
CREATE ROLE tst_x_aud LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_x_aud', 'auditor');
SELECT cmp_ok((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant IS NULL AND login = 'tst_x_sched'), '>', 0,
	'refusals without a tenant are on record');
SET SESSION AUTHORIZATION tst_x_aud;
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant IS NULL), 0, 'a tenant''s auditor does not see them');
SELECT cmp_ok((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant'), '>', 0, 'but sees the tenant''s records');
RESET SESSION AUTHORIZATION;

-- The refusals are on record.
SELECT cmp_ok((SELECT count(*)::int FROM schedphi.audit_log
			   WHERE action = 'denied' AND login = 'tst_x_sched' AND detail ->> 'rule' = 'permission denied: tenant rule'),
	'>=', (SELECT 2 * count(*)::int FROM pairs), 'every refusal is in the audit log');

SELECT * FROM finish();
ROLLBACK;

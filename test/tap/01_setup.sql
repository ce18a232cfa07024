-- Tenants, members, locations, actors, availability, blocks, buffers:
-- every function and every error path, and that a refused call changes
-- nothing.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic() \gset

-- create_tenant
SELECT isa_ok(schedphi.create_tenant('Another Clinic', 'Europe/Berlin'), 'uuid', 'create_tenant returns a uuid');
SELECT throws_ok($$SELECT schedphi.create_tenant('X', 'Mars/Olympus_Mons')$$, '22023', 'unknown time zone',
	'create_tenant refuses an unknown time zone');
SELECT throws_ok($$SELECT schedphi.create_tenant('X', NULL)$$, '22023', 'unknown time zone',
	'create_tenant refuses a NULL time zone');
SELECT throws_ok($$SELECT schedphi.create_tenant('  ', 'UTC')$$, '22023', 'name must not be empty',
	'create_tenant refuses an empty name');

-- add_location
SELECT isa_ok(schedphi.add_location(:'tenant', 'Annex', 'America/Chicago'), 'uuid', 'add_location returns a uuid');
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'Annex', 'America/Nowhere')$$, :'tenant'),
	'22023', 'unknown time zone', 'add_location validates the IANA zone');
SELECT throws_ok($$SELECT schedphi.add_location(gen_random_uuid(), 'Annex', 'UTC')$$,
	'22023', 'unknown tenant', 'add_location refuses an unknown tenant');

-- add_practitioner, add_resource
SELECT isa_ok(schedphi.add_practitioner(:'tenant', 'Dr Gamma Synthetic'), 'uuid', 'add_practitioner returns a uuid');
SELECT throws_ok(format($$SELECT schedphi.add_practitioner(%L, 'Dr X', '12345')$$, :'tenant'),
	'22023', 'npi must be 10 digits', 'add_practitioner validates the NPI');
SELECT throws_ok(format($$SELECT schedphi.add_practitioner(%L, '')$$, :'tenant'),
	'22023', 'name must not be empty', 'add_practitioner refuses an empty name');
SELECT throws_ok(format($$SELECT schedphi.add_resource(%L, 'spaceship', 'X')$$, :'tenant'),
	'22023', 'kind must be room or device', 'add_resource validates the kind');
SELECT throws_ok(format($$SELECT schedphi.add_resource(%L, 'room', 'X', 0)$$, :'tenant'),
	'22023', 'capacity must be between 1 and 1000', 'add_resource refuses capacity 0');
SELECT throws_ok(format($$SELECT schedphi.add_resource(%L, 'room', 'X', 1, gen_random_uuid())$$, :'tenant'),
	'22023', NULL, 'add_resource refuses an unknown location');
SELECT is((SELECT capacity FROM schedphi.actor WHERE id = :'chair'), 2, 'capacity is stored');

-- add_availability
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{}', '09:00', '17:00')$$, :'dr', :'loc'),
	'22023', 'days must list ISO weekdays 1 (Monday) to 7 (Sunday)', 'add_availability refuses no days');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1,8}', '09:00', '17:00')$$, :'dr', :'loc'),
	'22023', 'days must list ISO weekdays 1 (Monday) to 7 (Sunday)', 'add_availability refuses day 8');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1,NULL}', '09:00', '17:00')$$, :'dr', :'loc'),
	'22023', 'days must list ISO weekdays 1 (Monday) to 7 (Sunday)', 'add_availability refuses a NULL day');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1}', '17:00', '09:00')$$, :'dr', :'loc'),
	'22023', 'ends must be later than starts on the same day', 'add_availability refuses ends before starts');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1}', '09:00', '09:00')$$, :'dr', :'loc'),
	'22023', 'ends must be later than starts on the same day', 'add_availability refuses an empty window');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1}', '09:00', '17:00', daterange('2026-01-01', NULL), 0)$$, :'dr', :'loc'),
	'22023', 'slot_minutes must be between 1 and 1440', 'add_availability refuses slot_minutes 0');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1}', '09:00', '17:00', 'empty')$$, :'dr', :'loc'),
	'22023', 'valid must be a non-empty date range with a first day', 'add_availability refuses an empty validity');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, gen_random_uuid(), '{1}', '09:00', '17:00')$$, :'dr'),
	'22023', NULL, 'add_availability refuses an unknown location');
SELECT throws_ok($$SELECT schedphi.add_availability(gen_random_uuid(), gen_random_uuid(), '{1}', '09:00', '17:00')$$,
	'22023', NULL, 'add_availability refuses an unknown actor');
SELECT isa_ok(schedphi.add_availability(:'dr', :'loc', '{6,6,7}', '20:00', '24:00'), 'uuid',
	'add_availability accepts 24:00 as the end of the day');
SELECT is((SELECT days FROM schedphi.availability WHERE actor = :'dr' AND starts = '20:00'), '{6,7}'::int[],
	'repeated days are folded');

-- add_block
SELECT isa_ok(schedphi.add_block(:'dr', '[2026-06-15 15:00Z, 2026-06-15 16:00Z)', 'staff meeting'), 'uuid',
	'add_block returns a uuid');
SELECT throws_ok(format($$SELECT schedphi.add_block(%L, 'empty', 'x')$$, :'dr'),
	'22023', 'during must not be empty (zero duration)', 'add_block refuses an empty range');
SELECT throws_ok(format($$SELECT schedphi.add_block(%L, '[2026-06-15 15:00Z,)', 'x')$$, :'dr'),
	'22023', 'during must be bounded on both sides', 'add_block refuses an unbounded range');
SELECT throws_ok(format($$SELECT schedphi.add_block(%L, '[2026-06-15 15:00Z, 2026-06-15 16:00Z)', ' ')$$, :'dr'),
	'22023', 'reason must not be empty', 'add_block needs a reason');

-- set_buffer
SELECT lives_ok(format($$SELECT schedphi.set_buffer(%L, '5 minutes', '10 minutes')$$, :'room'), 'set_buffer works');
SELECT is((SELECT buffer_before || ' ' || buffer_after FROM schedphi.actor WHERE id = :'room'), '00:05:00 00:10:00',
	'buffers are stored');
SELECT throws_ok(format($$SELECT schedphi.set_buffer(%L, '-5 minutes', '0')$$, :'room'),
	'22023', 'before must be zero or more', 'set_buffer refuses a negative buffer');
SELECT throws_ok(format($$SELECT schedphi.set_buffer(%L, '0', '1 month')$$, :'room'),
	'22023', 'after must be given in days, hours or minutes, not months', 'set_buffer refuses months');
SELECT throws_ok($$SELECT schedphi.set_buffer(gen_random_uuid(), '0', '0')$$, '22023', NULL,
	'set_buffer refuses an unknown actor');

-- add_member / remove_member
CREATE ROLE tst_sched LOGIN;
CREATE ROLE tst_outsider LOGIN;
CREATE ROLE tst_doc LOGIN;
SELECT lives_ok(format($$SELECT schedphi.add_member(%L, 'tst_sched', 'scheduler')$$, :'tenant'), 'add_member works');
SELECT ok(pg_has_role('tst_sched', 'schedphi_scheduler', 'MEMBER'), 'add_member grants the group role');
SELECT lives_ok(format($$SELECT schedphi.add_member(%L, 'tst_doc', 'schedphi_clinician', %L)$$, :'tenant', :'dr'),
	'add_member accepts the full role name and a practitioner');
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, 'tst_nobody_here', 'scheduler')$$, :'tenant'),
	'22023', 'unknown login', 'add_member refuses an unknown login');
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, 'tst_sched', 'janitor')$$, :'tenant'),
	'22023', 'unknown role', 'add_member refuses an unknown role');
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, 'tst_sched', 'clinician')$$, :'tenant'),
	'22023', 'a clinician must be linked to a practitioner', 'a clinician needs a practitioner');
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, 'tst_sched', 'clinician', %L)$$, :'tenant', :'room'),
	'22023', NULL, 'a clinician is linked to a practitioner, not a room');
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, 'postgres', 'scheduler')$$, :'tenant'),
	'22023', 'a superuser cannot be made a member', 'superusers are not members');

CREATE ROLE tst_admin LOGIN;
CREATE ROLE tst_admin2 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_admin', 'admin');
SET SESSION AUTHORIZATION tst_admin;
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, 'tst_admin', 'scheduler')$$, :'tenant'),
	'42501', 'permission denied: separation of duties rule', 'an administrator cannot grant their own login a role');
SELECT lives_ok(format($$SELECT schedphi.add_member(%L, 'tst_admin2', 'scheduler')$$, :'tenant'),
	'an administrator grants roles to others');
RESET SESSION AUTHORIZATION;

-- interim authorisation: only members with the right role
SET SESSION AUTHORIZATION tst_outsider;
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'Rogue site', 'UTC')$$, :'tenant'),
	'42501', NULL, 'a non-member cannot add a location');
SELECT throws_ok($$SELECT schedphi.create_tenant('Rogue', 'UTC')$$, '42501', NULL,
	'only a superuser creates tenants');
SELECT throws_ok($$INSERT INTO schedphi.location (tenant, name, timezone) VALUES (gen_random_uuid(), 'x', 'UTC')$$,
	'42501', NULL, 'tables cannot be written directly');
SET SESSION AUTHORIZATION tst_sched;
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'Rogue site', 'UTC')$$, :'tenant'),
	'42501', NULL, 'a scheduler cannot add a location');
SELECT lives_ok(format($$SELECT schedphi.add_block(%L, '[2026-06-16 15:00Z, 2026-06-16 16:00Z)', 'training')$$, :'dr'),
	'a scheduler can add a block');
SELECT throws_ok($$DELETE FROM schedphi.block$$, '42501', NULL, 'a scheduler cannot delete rows directly');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.location WHERE name = 'Rogue site'), 0, 'refused calls changed nothing');

SELECT lives_ok(format($$SELECT schedphi.remove_member(%L, 'tst_sched', 'scheduler')$$, :'tenant'), 'remove_member works');
SELECT ok(NOT pg_has_role('tst_sched', 'schedphi_scheduler', 'MEMBER'), 'remove_member revokes the group role');
SELECT is((SELECT array_agg(action || ':' || login || ':' || role ORDER BY id) FROM schedphi.member_event
		   WHERE tenant = :'tenant' AND login IN ('tst_sched', 'tst_doc')),
	ARRAY['add:tst_sched:scheduler', 'add:tst_doc:clinician', 'remove:tst_sched:scheduler'],
	'membership changes are recorded');
SELECT throws_ok(format($$SELECT schedphi.remove_member(%L, 'tst_sched', 'scheduler')$$, :'tenant'),
	'22023', 'no such member', 'remove_member refuses a non-member');

-- roles and privileges
SELECT is((SELECT count(*)::int FROM pg_roles WHERE rolname LIKE 'schedphi\_%' AND rolname <> 'schedphi_deid_reader'
		   AND NOT rolcanlogin), 8,
	'the eight group roles exist and cannot log in');
SELECT is((SELECT row(rolcanlogin, rolsuper, rolbypassrls)::text FROM pg_roles WHERE rolname = 'schedphi_deid_reader'),
		  '(f,f,f)', 'the owner of the analysts'' view cannot log in and is subject to row-level security');
SELECT is((SELECT count(*)::int FROM pg_auth_members m WHERE m.roleid = 'schedphi_deid_reader'::regrole
			  OR m.member = 'schedphi_deid_reader'::regrole), 0,
	'and no role is its member, nor is it a member of any');
SELECT is((SELECT count(*)::int
		   FROM pg_tables t, pg_roles r, unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
		   WHERE t.schemaname = 'schedphi' AND r.rolname LIKE 'schedphi\_%'
			 AND has_table_privilege(r.oid, format('schedphi.%I', t.tablename), p)), 0,
	'no schedphi role may write any table directly');
SELECT is((SELECT count(*)::int FROM pg_proc p
		   WHERE p.pronamespace = 'schedphi'::regnamespace AND p.prosecdef
			 AND NOT coalesce(p.proconfig::text[] @> ARRAY['search_path=pg_catalog, pg_temp'], false)), 0,
	'every SECURITY DEFINER function pins search_path');
SELECT is((SELECT count(*)::int FROM pg_proc p
		   WHERE p.pronamespace = 'schedphi'::regnamespace AND p.proname ~ '^_'
			 AND p.proname NOT IN ('_member_role', '_my_roles', '_patient_json', '_patient_field', '_patient_visible',
								   '_appointment_access', '_appointment_access_compute', '_appointment_reason',
								   '_tenant_readable', '_may_review', '_is_auditor', '_analytics_scope', '_analytics_tenants', '_lead_band', '_deid_class_state', '_zip3_shown',
								   '_deid_rows', '_lds_rows',
								   '_citus_patients', '_citus_appointments', '_citus_break_glass_pending', '_actor_terminated',
								   '_sealed_in', '_sealed_out', '_sealed_recv', '_sealed_send')
			 AND has_function_privilege('public', p.oid, 'EXECUTE')), 0,
	'internal functions are not executable by PUBLIC (but those the views and policies call, which check the caller, the termination check on the caller''s own token, and the sealed type''s input and output)');

-- Row-level security: enabled and forced everywhere, a second wall.
SELECT is((SELECT count(*)::int FROM pg_class c WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind = 'r'
		   AND NOT (c.relrowsecurity AND c.relforcerowsecurity)), 0, 'row-level security is enabled and forced on every table');
CREATE ROLE tst_mistake LOGIN;
CREATE ROLE tst_mistake_member LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_mistake_member', 'scheduler');
SELECT tenant AS other_tenant FROM tst.clinic('Europe/Berlin') \gset
GRANT SELECT, INSERT, UPDATE, DELETE ON schedphi.location, schedphi.data_key TO tst_mistake, tst_mistake_member;
SET SESSION AUTHORIZATION tst_mistake;
SELECT is((SELECT count(*)::int FROM schedphi.location), 0, 'a wrongly granted non-member sees no row');
SELECT is((SELECT count(*)::int FROM (SELECT 1 FROM schedphi.location) x), 0, 'still nothing');
SET SESSION AUTHORIZATION tst_mistake_member;
SELECT is((SELECT count(DISTINCT tenant)::int FROM schedphi.location), 1, 'a wrongly granted member sees only its tenant''s rows');
SELECT is((SELECT tenant FROM schedphi.location LIMIT 1), :'tenant'::uuid, 'the right tenant');
SELECT is((SELECT count(*)::int FROM schedphi.data_key), 0, 'and no key material at all');
SELECT lives_ok($$UPDATE schedphi.location SET name = 'Rogue'$$, 'an UPDATE runs');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.location WHERE name = 'Rogue'), 0, 'but no policy lets it change a row');

-- Names in the zone database that are not zones
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'X', %L)$$, :'tenant', z), '22023', 'unknown time zone',
	z || ' is not an IANA zone') FROM unnest(ARRAY['localtime', 'posixrules', 'Factory']) z;
-- Arrays of more than one dimension, infinite times
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{{1,2},{3,4}}', '09:00', '10:00')$$, :'dr', :'loc'),
	'22023', 'days must list ISO weekdays 1 (Monday) to 7 (Sunday)', 'days as a two-dimensional array');
SELECT throws_ok(format($$SELECT schedphi.add_availability(%L, %L, '{1}', '09:00', '10:00', %L)$$, :'dr', :'loc', v),
	'22023', 'valid must be a non-empty date range with a first day', 'valid ' || v)
FROM unnest(ARRAY['[-infinity,2027-01-01)', '[2026-01-01,infinity)']) v;
SELECT throws_ok(format($$SELECT schedphi.add_block(%L, %L, 'x')$$, :'dr', r), '22023', 'during must be bounded on both sides',
	'a block during ' || r) FROM unnest(ARRAY['[-infinity,2026-07-01)', '[2026-07-01,infinity)', '[-infinity,infinity)']) r;
-- Memberships: only a login, and only while it holds the group role
CREATE ROLE tst_group NOLOGIN;
SELECT throws_ok(format($$SELECT schedphi.add_member(%L, %L, 'auditor')$$, :'tenant', r), '22023',
	'only a login role can be made a member', r || ' cannot be made a member')
FROM unnest(ARRAY['tst_group', 'pg_monitor', 'pg_read_all_data', 'schedphi_admin']) r;
SELECT ok(NOT pg_has_role('pg_monitor', 'schedphi_auditor', 'MEMBER'), 'and no group role was granted');
CREATE ROLE tst_leaver LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_leaver', 'scheduler');
DROP ROLE tst_leaver;
CREATE ROLE tst_leaver LOGIN;   -- someone else, later, under the same name
SET SESSION AUTHORIZATION tst_leaver;
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'X', 'UTC')$$, :'tenant'), '42501', 'permission denied: tenant rule',
	'a new login with a dropped member''s name inherits nothing');
SELECT is(schedphi.whoami() ->> 'tenant', NULL, 'whoami names no tenant');
RESET SESSION AUTHORIZATION;
-- ... not even when it is later given the same role elsewhere, or the group role by hand
SELECT schedphi.create_tenant('Leaver Two', 'UTC') AS t_two \gset
SELECT schedphi.add_member(:'t_two', 'tst_leaver', 'scheduler');
CREATE ROLE tst_leaver3 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_leaver3', 'admin');
DROP ROLE tst_leaver3;
CREATE ROLE tst_leaver3 LOGIN;
GRANT schedphi_admin TO tst_leaver3;
SET SESSION AUTHORIZATION tst_leaver;
SELECT throws_ok(format($$SELECT schedphi.add_block(%L, '[2026-07-01 10:00Z, 2026-07-01 11:00Z)', 'x')$$, :'dr'), '42501',
	'permission denied: tenant rule', 'nor when it is given the same role in another tenant');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_leaver3;
SELECT throws_ok(format($$SELECT schedphi.add_location(%L, 'X', 'UTC')$$, :'tenant'), '42501', 'permission denied: tenant rule',
	'nor when a DBA grants it the group role by hand');
RESET SESSION AUTHORIZATION;
-- A membership change is recorded in its own transaction: rolled back, it
-- leaves no record of having happened
SAVEPOINT before_member;
CREATE ROLE tst_brief LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_brief', 'support');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant' AND action = 'member_add'
		   AND detail ->> 'login' = 'tst_brief'), 1, 'add_member is on record in its transaction');
ROLLBACK TO SAVEPOINT before_member;
SELECT schedphi._audit_wake();
SELECT pg_sleep(0.3);
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE tenant = :'tenant' AND action = 'member_add'
		   AND detail ->> 'login' = 'tst_brief'), 0, 'an add_member rolled back leaves no record');
SET SESSION AUTHORIZATION tst_leaver;
-- A NULL tenant is a bad argument, for members too
SELECT throws_ok($$SELECT schedphi.add_location(NULL, 'X', 'UTC')$$, '22023', 'tenant must not be null',
	'a NULL tenant is 22023 for a non-superuser');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;

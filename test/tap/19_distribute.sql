-- schedphi.distribute() where Citus is not installed (the Citus suite,
-- test/citus.sh, runs it where it is): a superuser is told 0A000 "citus is
-- not installed" with what to do, anyone else 42501, and nothing changes:
-- the views still read the tables (not the coordinator's functions).
BEGIN;
SELECT plan(5);
SET LOCAL client_min_messages = error;
SELECT throws_ok($$SELECT schedphi.distribute()$$, '0A000', 'citus is not installed',
	'without Citus a superuser is told 0A000');
CREATE TEMP TABLE views_before AS
	SELECT c.relname, pg_get_viewdef(c.oid) AS def FROM pg_class c
	WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind = 'v';
CREATE ROLE tst_distribute LOGIN;
SET SESSION AUTHORIZATION tst_distribute;
SELECT throws_ok($$SELECT schedphi.distribute()$$, '42501', NULL, 'a login that is no superuser may not distribute');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM views_before b JOIN pg_class c ON c.relname = b.relname
		   AND c.relnamespace = 'schedphi'::regnamespace
		   WHERE pg_get_viewdef(c.oid) <> b.def), 0, 'no view changed');
SELECT doesnt_match((SELECT pg_get_viewdef('schedphi._patients_visible'::regclass)), '_citus_patients',
	'the patients view reads the table');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'schedphi.distribute()'::regprocedure), false,
	'distribute() runs as its caller (a superuser), not as the extension''s owner');
SELECT * FROM finish();
ROLLBACK;

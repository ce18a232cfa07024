-- schedphi install script, part 0: roles.
--
-- The extension's group roles are cluster-wide objects; a second database's
-- CREATE EXTENSION must find them and go on, so they are created only when
-- missing.  They are NOLOGIN: logins are mapped to them with add_member().

\echo Use "CREATE EXTENSION schedphi" to load this file. \quit

DO $roles$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['schedphi_admin', 'schedphi_scheduler', 'schedphi_clinician',
							 'schedphi_billing', 'schedphi_support', 'schedphi_analyst',
							 'schedphi_integration', 'schedphi_auditor']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$roles$;

-- The owner of the analysts' de-identified view (80_analytics.sql): not a
-- superuser and not BYPASSRLS, so that the view reads the derived rows
-- through their row-level security, whose policy for this role decides the
-- tenants and the suppressed classes.  No login is ever a member.
DO $reader$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'schedphi_deid_reader') THEN
		CREATE ROLE schedphi_deid_reader NOLOGIN;
	END IF;
END
$reader$;

-- schedphi install script, last part: privileges.
--
-- Nobody holds INSERT, UPDATE, DELETE or TRUNCATE on the extension's
-- tables: writes go through the functions, which check the caller.  Internal
-- functions (leading underscore) are not executable by PUBLIC.

REVOKE ALL ON ALL TABLES IN SCHEMA schedphi FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA schedphi FROM PUBLIC;

DO $grants$
DECLARE
	r text;
	f record;
BEGIN
	FOREACH r IN ARRAY ARRAY['schedphi_admin', 'schedphi_scheduler', 'schedphi_clinician',
							 'schedphi_billing', 'schedphi_support', 'schedphi_analyst',
							 'schedphi_integration', 'schedphi_auditor']
	LOOP
		EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA schedphi TO %I', r);
		EXECUTE pg_catalog.format('GRANT SELECT ON schedphi.appointments, schedphi.patients TO %I', r);
		-- public functions, and the helpers the views call as the invoker
		FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_catalog.pg_proc p
				 WHERE p.pronamespace = 'schedphi'::regnamespace
				   AND (p.proname !~ '^_' OR p.proname IN ('_visible_tenant', '_member_role', '_patient_json'))
		LOOP
			EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f.sig, r);
		END LOOP;
	END LOOP;
END
$grants$;

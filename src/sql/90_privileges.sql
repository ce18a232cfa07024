-- schedphi install script, last part: privileges.
--
-- Nobody holds INSERT, UPDATE, DELETE or TRUNCATE on the extension's
-- tables: writes go through the functions, which check the caller.  Internal
-- functions (leading underscore) are not executable by PUBLIC.

REVOKE ALL ON ALL TABLES IN SCHEMA schedphi FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA schedphi FROM PUBLIC;

-- Any login may call the public functions and read the views: each checks
-- who is asking (membership or an assumed token) and refuses otherwise.
-- A pooled application login needs no schedphi role at all.
GRANT USAGE ON SCHEMA schedphi TO PUBLIC;
GRANT SELECT ON schedphi.appointments, schedphi.patients TO PUBLIC;

DO $grants$
DECLARE
	f record;
BEGIN
	-- public functions, and the helpers the views call as the invoker
	FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_catalog.pg_proc p
			 WHERE p.pronamespace = 'schedphi'::regnamespace
			   AND (p.proname !~ '^_' OR p.proname IN ('_member_role', '_patient_json',
													   '_patient_visible', '_appointment_view'))
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.sig);
	END LOOP;
END
$grants$;

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
GRANT SELECT ON schedphi.appointments, schedphi.patients, schedphi.break_glass_pending TO PUBLIC;
-- the analysts' views check for the analyst role themselves (80_analytics.sql);
-- the restricted ZIP3 zones are public reference data
GRANT SELECT ON schedphi.deid_appointments, schedphi.lds_appointments, schedphi.zip3_restricted TO PUBLIC;
-- COPY ... FROM into the bulk import; its trigger checks who is asking
GRANT INSERT ON schedphi.patient_import TO PUBLIC;
-- The audit log: auditors only, and row-level security keeps each to the
-- tenants where they are auditors (src/sql/70_audit.sql).
GRANT SELECT ON schedphi.audit_log TO schedphi_auditor;

DO $grants$
DECLARE
	f record;
BEGIN
	-- public functions, and the helpers the views call as the invoker
	FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_catalog.pg_proc p
			 WHERE p.pronamespace = 'schedphi'::regnamespace
			   AND (p.proname !~ '^_' OR p.proname IN ('_member_role', '_my_roles', '_patient_json', '_patient_field',
													   '_patient_visible', '_appointment_access', '_appointment_access_compute',
													   '_appointment_reason', '_analytics_scope', '_analytics_tenants', '_lead_band',
													   '_deid_class_state', '_zip3_shown',
													   '_deid_rows', '_lds_rows',
													   '_may_review', '_is_auditor', '_actor_terminated',
													   -- the sealed type's input and output: a cast
													   -- at run time asks for EXECUTE on them
													   '_sealed_in', '_sealed_out', '_sealed_recv', '_sealed_send'))
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.sig);
	END LOOP;
END
$grants$;

-- Row-level security, enabled and forced on every table, as a second wall
-- behind the privileges above.  The functions (owned by the superuser who
-- installed the extension) are not subject to it; a login that a DBA
-- granted SELECT on a table by mistake still sees only the rows of tenants
-- where the actor context or its membership places it, and can write
-- nothing (no policy allows a write).  Key material and key events: no row.
CREATE FUNCTION schedphi._tenant_readable(p_tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
BEGIN
	IF c.via = 'token' THEN
		RETURN c.tenant = p_tenant;
	END IF;
	RETURN cardinality(schedphi._my_roles(p_tenant)) > 0;
END
$$;
GRANT EXECUTE ON FUNCTION schedphi._tenant_readable(uuid) TO PUBLIC;

DO $rls$
DECLARE
	t name;
BEGIN
	FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
			 WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind = 'r'
			   AND c.relname !~ '^audit_(log|chain)'	-- their own rules, in 70_audit.sql
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I FORCE ROW LEVEL SECURITY', t);
		IF t = 'zip3_restricted' THEN
			-- reference data of the installation, no tenant's
			EXECUTE pg_catalog.format('CREATE POLICY everyone ON schedphi.%I FOR SELECT USING (true)', t);
		ELSIF t IN ('data_key', 'issuer', 'key_event') THEN
			EXECUTE pg_catalog.format('CREATE POLICY no_rows ON schedphi.%I FOR SELECT USING (false)', t);
		ELSIF t = 'appointment_deid' THEN
			-- not for PUBLIC: the analysts' view reads it as schedphi_deid_reader,
			-- under its own policy alone (80_analytics.sql)
			EXECUTE pg_catalog.format(
				'CREATE POLICY tenant_rows ON schedphi.%I FOR SELECT TO schedphi_admin, schedphi_scheduler, '
				'schedphi_clinician, schedphi_billing, schedphi_support, schedphi_analyst, schedphi_integration, '
				'schedphi_auditor USING (schedphi._tenant_readable(tenant))', t);
		ELSE
			EXECUTE pg_catalog.format(
				'CREATE POLICY tenant_rows ON schedphi.%I FOR SELECT USING (schedphi._tenant_readable(tenant))', t);
		END IF;
	END LOOP;
END
$rls$;

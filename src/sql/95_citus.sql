-- ===================================================================
-- Scale-out on Citus (docs/scaling.md)
-- ===================================================================

-- Every table is distributed by its tenant, co-located: a tenant's
-- patients, appointments, keys, members and audit chain live on one node,
-- so that every statement of the API about one tenant is a router query
-- that Citus sends to that node whole (its exclusion constraints, foreign
-- keys and triggers run there).  The ledger is distributed by its chain,
-- which is the tenant (the records of no tenant make the nil uuid's chain).
-- The order matters only for the foreign keys: a table is distributed after
-- the tables it references.  Idempotent: a table already distributed is
-- left alone, so a DBA can run it again after an upgrade adds a table.
CREATE FUNCTION schedphi.distribute()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t record;
	v_anchor regclass;
	v_done int := 0;
BEGIN
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
		RAISE EXCEPTION 'only a superuser can distribute schedphi' USING ERRCODE = '42501';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'citus is not installed'
			USING ERRCODE = '0A000',
				  HINT = 'Install Citus on every node, add citus first to shared_preload_libraries, CREATE EXTENSION citus, then call schedphi.distribute() on the coordinator.';
	END IF;
	-- Citus refuses tables with triggers unless told the triggers are safe:
	-- schedphi's run on the shard and touch only the same tenant's rows,
	-- which are on the same node (co-located).
	SET LOCAL citus.enable_unsafe_triggers = on;
	SET LOCAL citus.multi_shard_modify_mode = 'sequential';
	-- The one table of no tenant, the restricted ZIP3 zones (reference data
	-- of the installation): copied whole to every node.
	IF NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = 'schedphi.zip3_restricted'::regclass) THEN
		PERFORM create_reference_table('schedphi.zip3_restricted');
		v_done := v_done + 1;
	END IF;
	-- The analysts' view with its conditions in it: a distributed table
	-- takes no policy with a subquery (80_analytics.sql).
	IF EXISTS (SELECT 1 FROM pg_policy p WHERE p.polname = 'deid_reader'
			   AND p.polrelid = 'schedphi.appointment_deid'::regclass) THEN
		PERFORM schedphi._deid_view(true);
	END IF;
	-- Each table after the tables its foreign keys reference.
	LOOP
		SELECT c.oid::regclass AS rel, CASE WHEN c.relname = 'audit_log' THEN 'chain' ELSE 'tenant' END AS col
		INTO t
		FROM pg_class c
		WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)
		  AND NOT EXISTS (SELECT 1 FROM pg_constraint k
						  WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid
							AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = k.confrelid))
		ORDER BY c.relname = 'tenant' DESC, c.relname
		LIMIT 1;
		EXIT WHEN NOT FOUND;
		SELECT p.logicalrelid INTO v_anchor FROM pg_dist_partition p
		WHERE p.logicalrelid = 'schedphi.tenant'::regclass;
		IF v_anchor IS NULL THEN
			PERFORM create_distributed_table(t.rel, t.col);
		ELSE
			PERFORM create_distributed_table(t.rel, t.col, colocate_with => v_anchor::text);
		END IF;
		v_done := v_done + 1;
	END LOOP;
	IF EXISTS (SELECT 1 FROM pg_class c
			   WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
				 AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)) THEN
		RAISE EXCEPTION 'schedphi: some tables could not be distributed (a foreign key to a table outside schedphi?)';
	END IF;
	-- The ledger's partitions are the coordinator's to make (its audit
	-- worker makes them ahead; a worker node cannot): this month's and the
	-- next ones now, distributed with the log.
	PERFORM schedphi._audit_partitions();
	-- Citus plans a statement on a distributed table with its values (to
	-- find the shard); a function that forces generic plans would have it
	-- plan statements it cannot route.
	ALTER FUNCTION schedphi.register_patient(uuid, text, text, date, text, text, text, text) RESET plan_cache_mode;
	ALTER FUNCTION schedphi._create_appointment(uuid, uuid[], tstzrange, text, text, text, text, timestamptz)
		RESET plan_cache_mode;
	ALTER FUNCTION schedphi.hl7_ingest(text) RESET plan_cache_mode;
	ALTER FUNCTION schedphi._hl7_apply(schedphi.hl7_sender, jsonb) RESET plan_cache_mode;
	ALTER FUNCTION schedphi._hl7_actor(uuid, schedphi.hl7_sender, jsonb) RESET plan_cache_mode;
	-- The views readers use, through the coordinator (see below).
	CREATE OR REPLACE VIEW schedphi._patients_visible WITH (security_barrier) AS
		SELECT * FROM schedphi._citus_patients();
	CREATE OR REPLACE VIEW schedphi._appointments_visible WITH (security_barrier) AS
		SELECT * FROM schedphi._citus_appointments();
	CREATE OR REPLACE VIEW schedphi.break_glass_pending WITH (security_barrier) AS
		SELECT * FROM schedphi._citus_break_glass_pending();
	CREATE OR REPLACE VIEW schedphi.deid_appointments AS
		SELECT * FROM schedphi._deid_rows();

	-- Auditors read the ledger through its functions (access_report,
	-- verify_audit, audit_digest): its row-level security would be decided
	-- on the worker nodes, where who is asking is not known.
	REVOKE SELECT ON schedphi.audit_log FROM schedphi_auditor;
	RAISE NOTICE 'schedphi: % tables distributed by tenant', v_done;
END
$$;
REVOKE ALL ON FUNCTION schedphi.distribute() FROM PUBLIC;

-- ------------------------------------------------------------- the views
-- Under Citus a view's query goes to the shards whole, in a connection of
-- the client's own login, which may read no table there; and the checks
-- the views call would run on the worker node, where who is asking is not
-- known.  So distribute() points the three views readers use at these
-- functions, which run on the coordinator as the extension's owner: they
-- decide who is asking there, read the caller's tenants' rows by tenant
-- (a query per tenant, routed to its node), and keep the rows the caller
-- may see.  The outer views then decrypt only the rows a query returns,
-- as before.  (Without Citus the views read the tables, and a query's
-- WHERE reaches the indexes; here it filters what these return.)

-- The tenants whose rows the caller may see at all: a token's, the
-- login's memberships', or, for a superuser, every tenant.
CREATE FUNCTION schedphi._visible_tenants()
RETURNS uuid[]
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
BEGIN
	IF c.via = 'token' THEN
		RETURN ARRAY[c.tenant];
	END IF;
	IF schedphi._session_superuser() THEN
		RETURN ARRAY(SELECT t.tenant FROM schedphi.tenant t ORDER BY t.tenant);
	END IF;
	RETURN ARRAY(SELECT DISTINCT m.tenant FROM schedphi.member m
				 WHERE m.login = v_login AND m.login_oid = v_oid ORDER BY m.tenant);
END
$$;

CREATE FUNCTION schedphi._citus_patients()
RETURNS TABLE (id uuid, tenant uuid, given schedphi.sealed, family schedphi.sealed, birth_date schedphi.sealed,
			   phone schedphi.sealed, email schedphi.sealed, mrn schedphi.sealed, zip schedphi.sealed,
			   created_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 1000
AS $$
DECLARE
	t uuid;
	p schedphi.patient;
BEGIN
	FOREACH t IN ARRAY schedphi._visible_tenants() LOOP
		FOR p IN SELECT * FROM schedphi.patient x WHERE x.tenant = t ORDER BY x.id LOOP
			IF schedphi._patient_visible(p.tenant, p.id) THEN
				id := p.id; tenant := p.tenant; given := p.given; family := p.family;
				birth_date := p.birth_date; phone := p.phone; email := p.email; mrn := p.mrn; zip := p.zip;
				created_at := p.created_at;
				RETURN NEXT;
			END IF;
		END LOOP;
	END LOOP;
END
$$;

CREATE FUNCTION schedphi._citus_appointments()
RETURNS TABLE (id uuid, tenant uuid, patient uuid, actors uuid[], during tstzrange, status text, kind text,
			   hold_expires timestamptz, created_at timestamptz, updated_at timestamptz,
			   reason_shown boolean, appointment schedphi.appointment)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 1000
AS $$
DECLARE
	t uuid;
	r record;
	a schedphi.appointment;
BEGIN
	FOREACH t IN ARRAY schedphi._visible_tenants() LOOP
		r := schedphi._appointment_access(t);
		CONTINUE WHEN r.visible IS NOT TRUE;
		FOR a IN SELECT * FROM schedphi.appointment x
				 WHERE x.tenant = t AND (r.only_practitioner IS NULL OR r.only_practitioner = ANY (x.actors))
				 ORDER BY x.id
		LOOP
			id := a.id; tenant := a.tenant; patient := CASE WHEN r.show_patient THEN a.patient END;
			actors := a.actors; during := a.during; status := a.status; kind := a.kind;
			hold_expires := a.hold_expires; created_at := a.created_at; updated_at := a.updated_at;
			reason_shown := r.show_reason AND a.reason IS NOT NULL;
			appointment := a;
			RETURN NEXT;
		END LOOP;
	END LOOP;
END
$$;

CREATE FUNCTION schedphi._citus_break_glass_pending()
RETURNS TABLE (id uuid, tenant uuid, patient uuid, requested_by text, role text, starts timestamptz,
			   expires timestamptz, expired boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t uuid;
	g record;
	v_now timestamptz := now();
BEGIN
	FOREACH t IN ARRAY schedphi._visible_tenants() LOOP
		CONTINUE WHEN NOT coalesce(schedphi._may_review(t), false);
		FOR g IN SELECT x.id, x.tenant, x.patient, x.actor, x.role, x.starts, x.expires
				 FROM schedphi.break_glass_grant x WHERE x.tenant = t AND x.outcome IS NULL ORDER BY x.starts, x.id
		LOOP
			id := g.id; tenant := g.tenant; patient := g.patient; requested_by := g.actor; role := g.role;
			starts := g.starts; expires := g.expires; expired := v_now >= g.expires;
			RETURN NEXT;
		END LOOP;
	END LOOP;
END
$$;
-- the views call them as the reader; each decides who is asking itself
GRANT EXECUTE ON FUNCTION schedphi._citus_patients(), schedphi._citus_appointments(),
	schedphi._citus_break_glass_pending() TO PUBLIC;
REVOKE EXECUTE ON FUNCTION schedphi._visible_tenants() FROM PUBLIC;

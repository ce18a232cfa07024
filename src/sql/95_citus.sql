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
	RAISE NOTICE 'schedphi: % tables distributed by tenant', v_done;
END
$$;
REVOKE ALL ON FUNCTION schedphi.distribute() FROM PUBLIC;

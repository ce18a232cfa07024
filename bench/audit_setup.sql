-- Audit benchmarks (bench/audit.sh), loaded after bench/setup.sql.
-- bench.audit_plain and its trigger are the classic alternative the goal
-- is measured against: a PL/pgSQL row trigger that writes the whole row as
-- jsonb into a plain table.  bench.audit_mode() switches between
-- schedphi's C trigger ('c'), no audit of writes ('none') and the PL/pgSQL
-- trigger ('plpgsql') on the three PHI tables.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE TABLE bench.audit_plain (
	id			bigserial PRIMARY KEY,
	at			timestamptz NOT NULL DEFAULT clock_timestamp(),
	login		name NOT NULL DEFAULT session_user,
	tbl			text NOT NULL,
	op			text NOT NULL,
	txid		bigint NOT NULL DEFAULT txid_current(),
	row_data	jsonb,
	changed		jsonb
);

CREATE FUNCTION bench.audit_plain_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO bench.audit_plain (tbl, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
	ELSIF TG_OP = 'UPDATE' THEN
		INSERT INTO bench.audit_plain (tbl, op, row_data, changed)
		SELECT TG_TABLE_NAME, TG_OP, to_jsonb(OLD), jsonb_object_agg(n.key, n.value)
		FROM jsonb_each(to_jsonb(NEW)) n JOIN jsonb_each(to_jsonb(OLD)) o USING (key)
		WHERE n.value IS DISTINCT FROM o.value;
	ELSE
		INSERT INTO bench.audit_plain (tbl, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(OLD));
	END IF;
	RETURN NULL;
END
$$;

DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['patient', 'appointment', 'waitlist'] LOOP
		EXECUTE format('CREATE TRIGGER audit_plain AFTER INSERT OR UPDATE OR DELETE ON schedphi.%I '
					   'FOR EACH ROW EXECUTE FUNCTION bench.audit_plain_trigger()', t);
		EXECUTE format('ALTER TABLE schedphi.%I DISABLE TRIGGER audit_plain', t);
	END LOOP;
END $$;

CREATE FUNCTION bench.audit_mode(p_mode text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['patient', 'appointment', 'waitlist'] LOOP
		EXECUTE format('ALTER TABLE schedphi.%I %s TRIGGER audit', t,
					   CASE WHEN p_mode = 'c' THEN 'ENABLE ALWAYS' ELSE 'DISABLE' END);
		EXECUTE format('ALTER TABLE schedphi.%I %s TRIGGER audit_plain', t,
					   CASE WHEN p_mode = 'plpgsql' THEN 'ENABLE' ELSE 'DISABLE' END);
	END LOOP;
END
$$;

-- Trigger cost alone: one UPDATE of n appointments (rolled back), in each
-- mode, timed inside the server: (mode - none) / n is the cost per row.
CREATE FUNCTION bench.update_ms(p_n int) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	t1 timestamptz;
BEGIN
	t0 := clock_timestamp();
	UPDATE schedphi.appointment a SET updated_at = clock_timestamp()
	WHERE a.id IN (SELECT x.id FROM schedphi.appointment x ORDER BY x.id LIMIT p_n);
	t1 := clock_timestamp();
	RAISE SQLSTATE 'BNCH1' USING MESSAGE = extract(epoch FROM t1 - t0) * 1000;
END
$$;
CREATE FUNCTION bench.trigger_ms(p_mode text, p_n int) RETURNS float8
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM bench.audit_mode(p_mode);
	BEGIN
		PERFORM bench.update_ms(p_n);
	EXCEPTION WHEN SQLSTATE 'BNCH1' THEN
		PERFORM bench.audit_mode('c');
		RETURN SQLERRM::float8;
	END;
	RETURN NULL;
END
$$;

-- Sealing: n synthetic read records inserted unsealed in one transaction.
CREATE FUNCTION bench.unsealed(p_n int) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO schedphi.audit_log (at, login, actor, tenant, role, purpose, action, object, object_id,
									patient, columns, application, chain)
	SELECT clock_timestamp(), 'bench_scheduler', 'bench_scheduler', c.tenant, 'scheduler', 'TREAT', 'read',
		   'patient', gen_random_uuid(), gen_random_uuid(), '{given,family,birth_date}', 'bench', c.tenant
	FROM generate_series(1, p_n), bench.clinic c
$$;

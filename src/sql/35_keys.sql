-- schedphi install script, part 3.5: data keys and their life cycle.
--
-- rotate_key and the tenant's administrator; reencrypt, rewrap_keys and
-- shred_tenant are the DBA's (superuser).  Every operation is recorded in
-- schedphi.key_event, and tells every backend to forget cached keys.

-- A new active data key for (tenant, purpose); the caller has retired the
-- previous one.  Returns its id.
CREATE FUNCTION schedphi._new_data_key(p_tenant uuid, p_purpose text)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id int := nextval('schedphi.data_key_id');
	w record;
BEGIN
	SELECT * INTO w FROM schedphi._wrap_new_key(p_tenant, v_id, p_purpose);
	INSERT INTO schedphi.data_key (tenant, id, purpose, kek_id, wrapped, seal_base)
	VALUES (p_tenant, v_id, p_purpose, w.kek_id, w.wrapped, nextval('schedphi.seal_counter'));
	INSERT INTO schedphi.key_event (tenant, action, detail)
	VALUES (p_tenant, 'key_create', jsonb_build_object('key_id', v_id, 'purpose', p_purpose, 'kek_id', w.kek_id));
	PERFORM schedphi._keys_changed();
	RETURN v_id;
END
$$;

-- Retire the active key of (tenant, purpose) and make a new one.
CREATE FUNCTION schedphi._rotate(p_tenant uuid, p_purpose text, p_reason text)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_old int;
	v_new int;
BEGIN
	UPDATE schedphi.data_key k SET status = 'retired', retired_at = now()
	WHERE k.tenant = p_tenant AND k.purpose = p_purpose AND k.status = 'active'
	RETURNING k.id INTO v_old;
	v_new := schedphi._new_data_key(p_tenant, p_purpose);
	INSERT INTO schedphi.key_event (tenant, action, detail)
	VALUES (p_tenant, 'key_rotate', jsonb_build_object('purpose', p_purpose, 'retired', v_old,
													   'active', v_new, 'reason', p_reason));
	RETURN v_new;
END
$$;

-- Called by the sealing code when a key has sealed schedphi.data_key_seal_limit
-- values: rotate it unless a concurrent session already has.
CREATE FUNCTION schedphi._retire_worn_key(p_tenant uuid, p_purpose text, p_id int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('schedphi.data_key.' || p_tenant::text), 0);
	IF EXISTS (SELECT 1 FROM schedphi.data_key k
			   WHERE k.tenant = p_tenant AND k.id = p_id AND k.status = 'active') THEN
		PERFORM schedphi._rotate(p_tenant, p_purpose, 'seal limit reached');
	END IF;
END
$$;

CREATE FUNCTION schedphi.rotate_key(tenant uuid)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(rotate_key.tenant), ARRAY['admin']);
	IF (SELECT t.shredded_at FROM schedphi.tenant t WHERE t.tenant = rotate_key.tenant) IS NOT NULL THEN
		RAISE EXCEPTION 'tenant was shredded: its keys are destroyed' USING ERRCODE = '55000';
	END IF;
	PERFORM pg_advisory_xact_lock(hashtext('schedphi.data_key.' || rotate_key.tenant::text), 0);
	RETURN schedphi._rotate(rotate_key.tenant, 'phi', 'rotate_key');
END
$$;

CREATE FUNCTION schedphi._require_superuser(p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT schedphi._session_superuser() THEN
		PERFORM schedphi._deny(NULL, 'permission denied: only a superuser may ' || p_what);
	END IF;
END
$$;

-- Move up to p_batch sealed rows to their tenant's active key.  Rows that
-- a concurrent transaction holds are skipped (SKIP LOCKED) and picked up by
-- a later call, so this runs beside live traffic; call it until it
-- returns 0.  A value that does not open (the damage the binding to its
-- row exists to catch) is left as it is, listed in
-- schedphi.reencrypt_skipped, recorded on the audit ledger, counted in a
-- WARNING, and not tried again until its ciphertext changes: one damaged
-- value never stops a rotation.
-- reencrypt() under Citus, one table: tenant by tenant, the rows with a
-- value under an older key are locked on their node, their values resealed
-- here on the coordinator (a worker node's query may not read the data
-- keys, which are distributed too) and written back as values.
CREATE FUNCTION schedphi._reencrypt_citus(p_tbl text, p_cols text[], p_limit int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant uuid;
	v_n int := 0;
	r record;
	v_new schedphi.sealed[];
	v_select text;
	v_update text;
BEGIN
	v_select := pg_catalog.format($q$
		SELECT x.id, ARRAY[%3$s]::schedphi.sealed[] AS vals FROM schedphi.%1$I x
		JOIN schedphi.data_key k ON k.tenant = $1 AND k.purpose = 'phi' AND k.status = 'active'
		WHERE x.tenant = $1 AND (%2$s)
		LIMIT $2
		FOR UPDATE OF x SKIP LOCKED$q$,
		p_tbl,
		(SELECT pg_catalog.string_agg(pg_catalog.format(
			'(schedphi._sealed_key_id(x.%1$I) <> k.id AND NOT EXISTS (SELECT 1 FROM schedphi.reencrypt_skipped s '
			'WHERE s.tenant = $1 AND s.tbl = %2$L AND s.row_id = x.id AND s.col = %1$L '
			'AND s.digest = schedphi._sealed_digest(x.%1$I)))', c, p_tbl), ' OR ') FROM unnest(p_cols) c),
		(SELECT pg_catalog.string_agg(pg_catalog.format('x.%I', c), ', ') FROM unnest(p_cols) c));
	v_update := pg_catalog.format('UPDATE schedphi.%I x SET %s WHERE x.tenant = $1 AND x.id = $2', p_tbl,
		(SELECT pg_catalog.string_agg(pg_catalog.format('%I = $%s', c, i + 2), ', ')
		 FROM unnest(p_cols) WITH ORDINALITY AS u(c, i)));
	IF cardinality(p_cols) > 7 THEN
		RAISE EXCEPTION 'schedphi: more sealed columns than _reencrypt_citus takes';
	END IF;
	FOR v_tenant IN SELECT t.tenant FROM schedphi.tenant t WHERE t.shredded_at IS NULL ORDER BY t.tenant LOOP
		EXIT WHEN v_n >= p_limit;
		PERFORM schedphi._citus_origin(v_tenant);
		FOR r IN EXECUTE v_select USING v_tenant, p_limit - v_n LOOP
			v_new := ARRAY(SELECT schedphi._reseal(u.v, v_tenant, p_tbl, u.c, r.id)
						   FROM unnest(r.vals, p_cols) WITH ORDINALITY AS u(v, c, i) ORDER BY u.i);
			-- one value per parameter (a subscript of an array parameter
			-- crashes Citus 13.2's deparser)
			EXECUTE v_update USING v_tenant, r.id, v_new[1], v_new[2], v_new[3], v_new[4], v_new[5],
				v_new[6], v_new[7];
			INSERT INTO schedphi_reencrypted VALUES (v_tenant);
			v_n := v_n + 1;
		END LOOP;
	END LOOP;
END
$$;

CREATE FUNCTION schedphi.reencrypt(batch int DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_done bigint := 0;
	v_skipped bigint := 0;
	t record;
	s record;
	v_citus boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus');
BEGIN
	PERFORM schedphi._require_superuser('re-encrypt');
	IF batch IS NULL OR batch < 1 OR batch > 1000000 THEN
		RAISE EXCEPTION 'batch must be between 1 and 1000000' USING ERRCODE = '22023';
	END IF;
	CREATE TEMP TABLE IF NOT EXISTS schedphi_reencrypted (tenant uuid) ON COMMIT DROP;
	-- the rows' audit records say "reencrypt", not that their data changed
	PERFORM schedphi._audit_reencrypting(true);
	PERFORM schedphi._reseal_skipped();		-- start from an empty list

	-- Every sealed column, table by table: the rows with a value under an
	-- older key, up to what is left of the batch.
	FOR t IN SELECT * FROM (VALUES
			('patient', ARRAY['given', 'family', 'birth_date', 'phone', 'email', 'mrn', 'zip']),
			('appointment', ARRAY['reason', 'cancel_reason']),
			('break_glass_grant', ARRAY['reason', 'review_note']),
			('issuer', ARRAY['secret'])) v(tbl, cols)
	LOOP
		-- a skipped value that was since repaired, replaced or deleted is forgotten
		EXECUTE pg_catalog.format($q$
			DELETE FROM schedphi.reencrypt_skipped s
			WHERE s.tbl = %1$L AND NOT EXISTS (
				SELECT 1 FROM schedphi.%1$I x
				WHERE x.tenant = s.tenant AND x.id = s.row_id
				  AND schedphi._sealed_digest(CASE s.col %2$s END) = s.digest)$q$,
			t.tbl,
			(SELECT pg_catalog.string_agg(pg_catalog.format('WHEN %1$L THEN x.%1$I', c), ' ') FROM unnest(t.cols) c));
		IF v_citus THEN
			PERFORM schedphi._reencrypt_citus(t.tbl, t.cols,
											  greatest(batch - (SELECT count(*) FROM schedphi_reencrypted), 0)::int);
			CONTINUE;
		END IF;
		EXECUTE pg_catalog.format($q$
			WITH todo AS (
				SELECT x.tenant, x.id FROM schedphi.%1$I x
				JOIN schedphi.data_key k ON k.tenant = x.tenant AND k.purpose = 'phi' AND k.status = 'active'
				WHERE %2$s
				LIMIT $1
				FOR UPDATE OF x SKIP LOCKED
			), done AS (
				UPDATE schedphi.%1$I x SET %3$s
				FROM todo WHERE x.tenant = todo.tenant AND x.id = todo.id
				RETURNING x.tenant
			)
			INSERT INTO schedphi_reencrypted SELECT tenant FROM done$q$,
			t.tbl,
			(SELECT pg_catalog.string_agg(pg_catalog.format(
				'(schedphi._sealed_key_id(x.%1$I) <> k.id AND NOT EXISTS (SELECT 1 FROM schedphi.reencrypt_skipped s '
				'WHERE s.tenant = x.tenant AND s.tbl = %2$L AND s.row_id = x.id AND s.col = %1$L '
				'AND s.digest = schedphi._sealed_digest(x.%1$I)))', c, t.tbl), ' OR ')
			 FROM unnest(t.cols) c),
			(SELECT pg_catalog.string_agg(pg_catalog.format('%1$I = schedphi._reseal(x.%1$I, x.tenant, %2$L, %1$L, x.id)', c, t.tbl), ', ')
			 FROM unnest(t.cols) c))
		USING greatest(batch - (SELECT count(*) FROM schedphi_reencrypted), 0);
	END LOOP;

	-- what did not open: where, on record (never what), and left for the DBA
	FOR s IN SELECT * FROM schedphi._reseal_skipped() LOOP
		INSERT INTO schedphi.reencrypt_skipped AS r (tenant, tbl, row_id, col, key_id, reason, digest)
		VALUES (s.tenant, s.tbl, s.row_id, s.col, s.key_id, s.reason, s.digest)
		ON CONFLICT (tenant, tbl, row_id, col) DO UPDATE
			SET key_id = excluded.key_id, reason = excluded.reason, digest = excluded.digest, last_seen = now();
		PERFORM schedphi._audit_change('reencrypt', s.tenant, s.tbl, s.row_id,
			schedphi._row_patient(s.tenant, s.tbl, s.row_id),
			jsonb_build_object('skipped', s.col, 'reason', s.reason, 'key_id', s.key_id));
		v_skipped := v_skipped + 1;
	END LOOP;

	INSERT INTO schedphi.key_event (tenant, action, detail)
	SELECT r.tenant, 'reencrypt', jsonb_build_object('rows', count(*))
	FROM schedphi_reencrypted r GROUP BY r.tenant;
	PERFORM schedphi._audit_reencrypting(false);
	SELECT count(*) INTO v_done FROM schedphi_reencrypted;
	TRUNCATE schedphi_reencrypted;
	IF v_skipped > 0 THEN
		RAISE WARNING 'reencrypt skipped % sealed value(s) that do not open', v_skipped
			USING DETAIL = 'They stay under their old data key, which stays too; each is on the audit ledger.',
				  HINT = 'SELECT * FROM schedphi.reencrypt_skipped lists where they are (never what).';
	END IF;
	RETURN v_done;
END
$$;

-- The patient a sealed value belongs to, for the ledger (no PHI).
CREATE FUNCTION schedphi._row_patient(p_tenant uuid, p_tbl text, p_id uuid)
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN CASE p_tbl
		WHEN 'patient' THEN p_id
		WHEN 'appointment' THEN (SELECT a.patient FROM schedphi.appointment a WHERE a.tenant = p_tenant AND a.id = p_id)
		WHEN 'break_glass_grant' THEN (SELECT g.patient FROM schedphi.break_glass_grant g
									   WHERE g.tenant = p_tenant AND g.id = p_id)
	END;
END
$$;

-- Wrap every live data key under the active master key; returns how many
-- were re-wrapped.  Afterwards older master keys can be dropped from the
-- key command's output.
CREATE FUNCTION schedphi.rewrap_keys()
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_active text;
	v_n int := 0;
	k record;
	w record;
	v_tenant uuid;
BEGIN
	PERFORM schedphi._require_superuser('re-wrap keys');
	SELECT m.key_id INTO v_active FROM schedphi.master_keys() m WHERE m.active;
	-- tenant by tenant: under Citus a row lock needs the tenant's node
	FOR v_tenant IN SELECT t.tenant FROM schedphi.tenant t ORDER BY t.tenant LOOP
		FOR k IN SELECT * FROM schedphi.data_key d
				 WHERE d.tenant = v_tenant AND d.status <> 'destroyed' AND d.kek_id <> v_active
				 ORDER BY d.id FOR UPDATE
		LOOP
			SELECT * INTO w FROM schedphi._rewrap(k.tenant, k.id, k.purpose, k.kek_id, k.wrapped);
			UPDATE schedphi.data_key d SET kek_id = w.kek_id, wrapped = w.wrapped
			WHERE d.tenant = k.tenant AND d.id = k.id;
			INSERT INTO schedphi.key_event (tenant, action, detail)
			VALUES (k.tenant, 'key_rewrap', jsonb_build_object('key_id', k.id, 'from', k.kek_id, 'to', w.kek_id));
			v_n := v_n + 1;
		END LOOP;
	END LOOP;
	IF v_n > 0 THEN
		PERFORM schedphi._keys_changed();
	END IF;
	RETURN v_n;
END
$$;

-- Delete every row of the tenant and destroy its data keys.  Copies of
-- its ciphertext in old backups stay unreadable once the master keys that
-- wrapped its data keys are retired at the key source (docs/keys.md).
CREATE FUNCTION schedphi.shred_tenant(tenant uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_rows jsonb;
	n_appt bigint;
	n_pat bigint;
	n_other bigint := 0;
	n bigint;
	m record;
	v_now timestamptz;
BEGIN
	PERFORM schedphi._require_superuser('shred a tenant');
	IF NOT EXISTS (SELECT 1 FROM schedphi.tenant t WHERE t.tenant = schedphi._tenant_arg(tenant)) THEN
		RAISE EXCEPTION 'unknown tenant' USING ERRCODE = '22023';
	END IF;
	PERFORM 1 FROM schedphi.tenant t WHERE t.tenant = tenant FOR UPDATE;
	DELETE FROM schedphi.waitlist x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	DELETE FROM schedphi.appointment x WHERE x.tenant = tenant;		-- cascades to appointment_actor
	GET DIAGNOSTICS n_appt = ROW_COUNT;
	DELETE FROM schedphi.break_glass_grant x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	-- its identity providers: a token for a tenant that is gone opens nothing
	DELETE FROM schedphi.issuer x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	DELETE FROM schedphi.patient x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n_pat = ROW_COUNT;
	-- the members go as remove_member would take them, group roles included;
	-- the membership history stays, like the key events: it names logins, not patients
	FOR m IN DELETE FROM schedphi.member x WHERE x.tenant = tenant RETURNING x.login, x.role LOOP
		INSERT INTO schedphi.member_event (tenant, action, login, role) VALUES (tenant, 'remove', m.login, m.role);
		PERFORM schedphi._release_group_role(m.login, m.role);
		n_other := n_other + 1;
	END LOOP;
	PERFORM schedphi._note_members_changed();
	DELETE FROM schedphi.block x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	PERFORM schedphi._note_rules_changed();
	DELETE FROM schedphi.availability x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	DELETE FROM schedphi.actor x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	DELETE FROM schedphi.location x WHERE x.tenant = tenant;
	GET DIAGNOSTICS n = ROW_COUNT; n_other := n_other + n;
	-- (the time as a value: under Citus these run on the tenant's node)
	v_now := now();
	UPDATE schedphi.data_key k
	SET status = 'destroyed', wrapped = NULL, kek_id = NULL, destroyed_at = v_now,
		retired_at = coalesce(k.retired_at, v_now)
	WHERE k.tenant = tenant AND k.status <> 'destroyed';
	UPDATE schedphi.tenant t SET shredded_at = v_now WHERE t.tenant = tenant;
	INSERT INTO schedphi.key_event (tenant, action, detail)
	VALUES (tenant, 'shred', jsonb_build_object('appointments', n_appt, 'patients', n_pat, 'other_rows', n_other));
	PERFORM schedphi._keys_changed();
END
$$;

-- Data keys for DBAs: never key material.
CREATE VIEW schedphi.data_keys AS
	SELECT k.tenant, k.id, k.purpose, k.status, k.kek_id, k.created_at, k.retired_at, k.destroyed_at,
		   CASE WHEN k.status = 'active'
				THEN greatest((SELECT s.last_value FROM schedphi.seal_counter s) - k.seal_base, 0) END
			   AS seals_at_most
	FROM schedphi.data_key k;

-- schedphi install script, part 3: tenants, members, locations, actors,
-- availability, blocks and buffers.  These are the administrator's tools.

-- Each backend caches availability rules and their locations' zones
-- (walltime.c); any change to either, by any path, tells every backend at
-- commit.  ALWAYS: a restore with session_replication_role = replica too.
CREATE FUNCTION schedphi._rules_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_rules_changed' LANGUAGE C;
CREATE TRIGGER rules_changed BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON schedphi.availability
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._rules_changed();
CREATE TRIGGER rules_changed BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON schedphi.location
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._rules_changed();
-- Each backend also caches the seats and buffers of the actors it books
-- (book.c), under the same version: a change to an actor tells them too.
CREATE TRIGGER rules_changed BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON schedphi.actor
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._rules_changed();
ALTER TABLE schedphi.availability ENABLE ALWAYS TRIGGER rules_changed;
ALTER TABLE schedphi.location ENABLE ALWAYS TRIGGER rules_changed;
ALTER TABLE schedphi.actor ENABLE ALWAYS TRIGGER rules_changed;
-- the same, called by the functions that change them (see walltime.c)
CREATE FUNCTION schedphi._note_rules_changed() RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_rules_changed' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi.create_tenant(name text, timezone text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id uuid;
BEGIN
	IF NOT schedphi._session_superuser() THEN
		PERFORM schedphi._deny(NULL, 'permission denied: only a superuser creates tenants');
	END IF;
	INSERT INTO schedphi.tenant (name, timezone)
	VALUES (schedphi._check_name('name', create_tenant.name),
			schedphi._check_timezone(create_tenant.timezone))
	RETURNING tenant INTO v_id;
	PERFORM schedphi._citus_origin(v_id);
	-- its data keys: SPK01 (and nothing written) without a master key
	PERFORM schedphi._new_data_key(v_id, p) FROM unnest(ARRAY['phi', 'index', 'token']) p;
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi._role_name(p_role text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	v text := lower(btrim(coalesce(p_role, '')));
BEGIN
	IF v LIKE 'schedphi\_%' THEN
		v := substr(v, 10);
	END IF;
	IF v NOT IN ('admin', 'scheduler', 'clinician', 'billing', 'support', 'analyst',
				 'integration', 'auditor') THEN
		RAISE EXCEPTION 'unknown role'
			USING ERRCODE = '22023',
				  DETAIL = 'Roles are admin, scheduler, clinician, billing, support, analyst, integration and auditor.';
	END IF;
	RETURN v;
END
$$;

CREATE FUNCTION schedphi.add_member(tenant uuid, login name, role text, practitioner uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_role text := schedphi._role_name(role);
	v_oid oid;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF login IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = login) THEN
		RAISE EXCEPTION 'unknown login' USING ERRCODE = '22023',
			HINT = 'Create the login with CREATE ROLE ... LOGIN first.';
	END IF;
	IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = login) THEN
		RAISE EXCEPTION 'a superuser cannot be made a member' USING ERRCODE = '22023';
	END IF;
	-- Only a person's (or an application's) own login: granting the group
	-- role to a group or to a built-in role would pass it to everyone in it.
	IF NOT (SELECT r.rolcanlogin FROM pg_catalog.pg_roles r WHERE r.rolname = login)
	   OR login ~ '^(pg_|schedphi_)' THEN
		RAISE EXCEPTION 'only a login role can be made a member' USING ERRCODE = '22023',
			HINT = 'Not a NOLOGIN group role, a built-in pg_ role or a schedphi_ role: create the login with CREATE ROLE ... LOGIN.';
	END IF;
	IF login = session_user THEN
		PERFORM schedphi._deny(tenant, 'permission denied: separation of duties rule',
			'Nobody grants roles to their own login; another administrator must.');
	END IF;
	IF v_role = 'clinician' AND practitioner IS NULL THEN
		RAISE EXCEPTION 'a clinician must be linked to a practitioner' USING ERRCODE = '22023';
	END IF;
	IF v_role <> 'clinician' AND practitioner IS NOT NULL THEN
		RAISE EXCEPTION 'only a clinician is linked to a practitioner' USING ERRCODE = '22023';
	END IF;
	IF practitioner IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM schedphi.actor a
		WHERE a.tenant = tenant AND a.id = practitioner AND a.kind = 'practitioner') THEN
		RAISE EXCEPTION 'unknown practitioner %', practitioner USING ERRCODE = '22023';
	END IF;
	-- Memberships name the login and are bound to it (its oid): a login that
	-- was dropped leaves rows that bind nobody, and a new login of the same
	-- name starts with none of them.
	-- (the oid as a value: under Citus these run on the tenant's node)
	v_oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = login);
	DELETE FROM schedphi.member m WHERE m.login = login AND m.login_oid <> v_oid;
	INSERT INTO schedphi.member AS m (tenant, login, login_oid, role, practitioner)
	VALUES (tenant, login, v_oid, v_role, practitioner)
	ON CONFLICT ON CONSTRAINT member_pkey DO UPDATE SET practitioner = excluded.practitioner;
	INSERT INTO schedphi.member_event (tenant, action, login, role, practitioner)
	VALUES (tenant, 'add', login, v_role, practitioner);
	PERFORM schedphi._note_members_changed();
	EXECUTE pg_catalog.format('GRANT %I TO %I', 'schedphi_' || v_role, login);
END
$$;

-- A login whose last membership with a role is gone loses the role's group
-- role (it keeps it while it holds the role in another tenant).
CREATE FUNCTION schedphi._release_group_role(p_login name, p_role text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM schedphi.member m WHERE m.login = p_login AND m.role = p_role)
	   AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = p_login) THEN
		EXECUTE pg_catalog.format('REVOKE %I FROM %I', 'schedphi_' || p_role, p_login);
	END IF;
END
$$;

CREATE FUNCTION schedphi.remove_member(tenant uuid, login name, role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_role text := schedphi._role_name(role);
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	DELETE FROM schedphi.member m WHERE m.tenant = tenant AND m.login = login AND m.role = v_role;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no such member' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.member_event (tenant, action, login, role) VALUES (tenant, 'remove', login, v_role);
	PERFORM schedphi._note_members_changed();
	PERFORM schedphi._release_group_role(login, v_role);
END
$$;

CREATE FUNCTION schedphi.add_location(tenant uuid, name text, timezone text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	PERFORM schedphi._note_rules_changed();
	INSERT INTO schedphi.location (tenant, name, timezone)
	VALUES (tenant, schedphi._check_name('name', name), schedphi._check_timezone(timezone))
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi._add_actor(p_tenant uuid, p_kind text, p_name text, p_npi text,
									p_capacity int, p_location uuid)
RETURNS uuid
LANGUAGE plpgsql
AS $$
DECLARE
	v_id uuid;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(p_tenant), ARRAY['admin']);
	IF p_npi IS NOT NULL AND p_npi !~ '^[0-9]{10}$' THEN
		RAISE EXCEPTION 'npi must be 10 digits' USING ERRCODE = '22023';
	END IF;
	IF p_capacity IS NULL OR p_capacity < 1 OR p_capacity > 1000 THEN
		RAISE EXCEPTION 'capacity must be between 1 and 1000' USING ERRCODE = '22023';
	END IF;
	IF p_location IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM schedphi.location l WHERE l.tenant = p_tenant AND l.id = p_location) THEN
		RAISE EXCEPTION 'unknown location %', p_location USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.actor (tenant, kind, name, npi, capacity, location)
	VALUES (p_tenant, p_kind, schedphi._check_name('name', p_name), p_npi, p_capacity, p_location)
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.add_practitioner(tenant uuid, name text, npi text DEFAULT NULL)
RETURNS uuid
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT schedphi._add_actor(tenant, 'practitioner', name, npi, 1, NULL)
$$;

CREATE FUNCTION schedphi.add_resource(tenant uuid, kind text, name text, capacity int DEFAULT 1,
									  location uuid DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF kind IS NULL OR lower(kind) NOT IN ('room', 'device') THEN
		RAISE EXCEPTION 'kind must be room or device' USING ERRCODE = '22023';
	END IF;
	RETURN schedphi._add_actor(tenant, lower(kind), name, NULL, capacity, location);
END
$$;

CREATE FUNCTION schedphi.add_availability(actor uuid, location uuid, days int[], starts time, ends time,
										  valid daterange DEFAULT daterange(current_date, NULL),
										  slot_minutes int DEFAULT 15)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid := schedphi._actor_tenant(actor);
	v_days int[];
	v_id uuid;
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['admin']);
	IF location IS NULL OR NOT EXISTS (
		SELECT 1 FROM schedphi.location l WHERE l.tenant = v_tenant AND l.id = location) THEN
		RAISE EXCEPTION 'unknown location %', coalesce(location::text, 'NULL') USING ERRCODE = '22023';
	END IF;
	IF days IS NULL OR coalesce(array_ndims(days), 0) <> 1 OR array_position(days, NULL) IS NOT NULL
	   OR NOT days <@ ARRAY[1, 2, 3, 4, 5, 6, 7] THEN
		RAISE EXCEPTION 'days must list ISO weekdays 1 (Monday) to 7 (Sunday)' USING ERRCODE = '22023';
	END IF;
	SELECT array_agg(DISTINCT d ORDER BY d) INTO v_days FROM unnest(days) d;
	IF starts IS NULL OR ends IS NULL OR starts >= ends THEN
		RAISE EXCEPTION 'ends must be later than starts on the same day'
			USING ERRCODE = '22023', HINT = 'Use 24:00 for midnight at the end of the day.';
	END IF;
	IF valid IS NULL OR isempty(valid) OR lower_inf(valid) OR NOT isfinite(lower(valid))
	   OR NOT coalesce(isfinite(upper(valid)), true) THEN
		RAISE EXCEPTION 'valid must be a non-empty date range with a first day' USING ERRCODE = '22023',
			HINT = 'Leave the upper bound empty (NULL) for no last day; infinity is not a date.';
	END IF;
	IF slot_minutes IS NULL OR slot_minutes < 1 OR slot_minutes > 1440 THEN
		RAISE EXCEPTION 'slot_minutes must be between 1 and 1440' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._note_rules_changed();
	INSERT INTO schedphi.availability (tenant, actor, location, days, starts, ends, valid, slot_minutes)
	VALUES (v_tenant, actor, location, v_days, starts, ends, valid, slot_minutes)
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.add_block(actor uuid, during tstzrange, reason text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid := schedphi._actor_tenant(actor);
	v_id uuid;
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['admin', 'scheduler']);
	INSERT INTO schedphi.block (tenant, actor, during, reason)
	VALUES (v_tenant, actor, schedphi._check_range('during', during), schedphi._check_name('reason', reason))
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.set_buffer(actor uuid, before interval, after interval)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid := schedphi._actor_tenant(actor);
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['admin']);
	UPDATE schedphi.actor a
	SET buffer_before = schedphi._check_interval('before', before, true),
		buffer_after = schedphi._check_interval('after', after, true)
	WHERE a.tenant = v_tenant AND a.id = actor;
END
$$;

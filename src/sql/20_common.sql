-- schedphi install script, part 2: shared checks used by every public
-- function.  Internal functions start with an underscore; none of them is
-- executable by PUBLIC.
--
-- Authorisation here is the interim rule until the actor context (issue 4)
-- replaces it: a superuser may do anything; anyone else must be mapped by
-- add_member() to the tenant with one of the roles the function allows.

-- The actor context kept in C (actor.c): the actor of a verified token, or
-- NULLs; and the purpose of use of this transaction.
CREATE FUNCTION schedphi._context(OUT actor text, OUT tenant uuid, OUT role text, OUT practitioner uuid,
								  OUT purpose text, OUT via text, OUT mfa boolean)
AS 'MODULE_PATHNAME', 'schedphi_context' LANGUAGE C VOLATILE;

-- Refusals that must not tell whether something exists.  Someone with no
-- role in a tenant learns nothing about it: another tenant's patient,
-- appointment, actor or MRN, an unknown one and an unknown tenant all get
-- the same 42501 "tenant rule".  A superuser (who sees every row anyway)
-- gets 22023 "unknown ..." for what does not exist.
CREATE FUNCTION schedphi._deny_tenant(p_tenant uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	PERFORM schedphi._deny(p_tenant, 'permission denied: tenant rule',
		'You have no role in the tenant it belongs to, or it does not exist.',
		'An administrator of the tenant grants roles with schedphi.add_member().');
END
$$;

-- What to do when an id names nothing: 22023 for a NULL or for a
-- superuser; for anyone else the same refusal as another tenant's object.
CREATE FUNCTION schedphi._unknown(p_what text, p_id uuid, p_show_id boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	IF p_id IS NULL OR ((SELECT c.via FROM schedphi._context() c) IS NULL AND schedphi._session_superuser()) THEN
		IF p_show_id THEN
			RAISE EXCEPTION 'unknown % %', p_what, coalesce(p_id::text, 'NULL') USING ERRCODE = '22023';
		END IF;
		RAISE EXCEPTION 'unknown %', p_what USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._deny_tenant(NULL);
END
$$;

-- Is the session user (not the current user: SECURITY DEFINER functions
-- run as their owner) a superuser?  From the catalog cache, in C.
CREATE FUNCTION schedphi._session_superuser() RETURNS boolean
AS 'MODULE_PATHNAME', 'schedphi_session_superuser' LANGUAGE C STABLE;

-- The session user's oid: memberships are bound to the login itself.
CREATE FUNCTION schedphi._session_user_oid() RETURNS oid
AS 'MODULE_PATHNAME', 'schedphi_session_user_oid' LANGUAGE C STABLE;

-- The roles the session user holds through its memberships (not a token)
-- in a tenant, or in any tenant when p_tenant is NULL.  A membership is
-- bound to the login itself, not only its name (a login dropped and made
-- again is someone else), and counts only while the login holds the
-- group role.  The login's name
-- and oid are taken here and the rows read with them as values, the group
-- roles checked here too: under Citus the query runs on the tenant's node,
-- where session_user is Citus's connection and not the client.
CREATE FUNCTION schedphi._my_roles(p_tenant uuid)
RETURNS text[]
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
	v_roles text[];
BEGIN
	IF p_tenant IS NULL THEN
		v_roles := ARRAY(SELECT m.role FROM schedphi.member m WHERE m.login = v_login AND m.login_oid = v_oid);
	ELSE
		v_roles := ARRAY(SELECT m.role FROM schedphi.member m
						 WHERE m.tenant = p_tenant AND m.login = v_login AND m.login_oid = v_oid);
	END IF;
	RETURN ARRAY(SELECT DISTINCT r FROM unnest(v_roles) r
				 WHERE pg_catalog.pg_has_role(v_login, 'schedphi_' || r, 'MEMBER') ORDER BY r);
END
$$;

-- The tenants where the caller acts with p_role: an assumed token's tenant
-- when that is its role, else the login's memberships in p_role (while it
-- holds the group role), in order.  Empty when none.  The memberships are
-- read by _role_tenants_read and cached in the backend (src/membership.c)
-- until any membership or role changes.
CREATE FUNCTION schedphi._role_tenants_read(p_role text)
RETURNS uuid[]
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
BEGIN
	RETURN ARRAY(SELECT DISTINCT m.tenant FROM schedphi.member m
				 WHERE m.role = p_role AND m.login = v_login AND m.login_oid = v_oid
				   AND pg_catalog.pg_has_role(v_login, 'schedphi_' || p_role, 'MEMBER')
				 ORDER BY m.tenant);
END
$$;
CREATE FUNCTION schedphi._role_tenants(p_role text) RETURNS uuid[]
AS 'MODULE_PATHNAME', 'schedphi_role_tenants_sql' LANGUAGE C STABLE;

-- Before a function writes a tenant's rows, on a Citus coordinator: who is
-- asking, signed, for the worker node whose triggers record the writes
-- (src/origin.c).  Nothing without Citus.
CREATE FUNCTION schedphi._citus_origin(p_tenant uuid) RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_origin_sql' LANGUAGE C VOLATILE;

-- A tenant passed as an argument: NULL is a bad argument, for everyone
-- (an unknown tenant is left to _authorize, which does not tell).
CREATE FUNCTION schedphi._tenant_arg(p_tenant uuid)
RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_tenant IS NULL THEN
		RAISE EXCEPTION 'tenant must not be null' USING ERRCODE = '22023';
	END IF;
	RETURN p_tenant;
END
$$;

-- A shredded tenant stays as a name only: whoever may act in it is told so
-- (its members are gone; a superuser, or a token already assumed, remain).
CREATE FUNCTION schedphi._not_shredded(p_tenant uuid)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
	IF (SELECT t.shredded_at FROM schedphi.tenant t WHERE t.tenant = p_tenant) IS NOT NULL THEN
		RAISE EXCEPTION 'tenant was shredded' USING ERRCODE = '55000',
			DETAIL = 'Its data and data keys were destroyed; nothing more can be done in it.';
	END IF;
END
$$;

-- Is the caller allowed to act in the tenant with one of the roles?  Raise
-- the documented refusal otherwise; on success, on a Citus coordinator,
-- name the caller to the worker nodes for the writes that follow.
CREATE FUNCTION schedphi._authorize(p_tenant uuid, p_roles text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	c record := schedphi._context();
	v_mine text[];
BEGIN
	-- an assumed token decides alone, whoever the login is
	IF c.via = 'token' THEN
		IF c.tenant = p_tenant AND c.role = ANY (p_roles) THEN
			PERFORM schedphi._not_shredded(p_tenant);
			PERFORM schedphi._citus_origin(p_tenant);
			RETURN;
		END IF;
		IF c.tenant IS DISTINCT FROM p_tenant THEN
			PERFORM schedphi._deny_tenant(p_tenant);
		END IF;
		PERFORM schedphi._deny(p_tenant, 'permission denied: role rule',
			pg_catalog.format('This needs the %s role in the tenant.', pg_catalog.array_to_string(p_roles, ' or ')));
	END IF;
	IF schedphi._session_superuser() THEN
		IF NOT EXISTS (SELECT 1 FROM schedphi.tenant t WHERE t.tenant = p_tenant) THEN
			RAISE EXCEPTION 'unknown tenant' USING ERRCODE = '22023';
		END IF;
		PERFORM schedphi._not_shredded(p_tenant);
		PERFORM schedphi._citus_origin(p_tenant);
		RETURN;
	END IF;
	-- the session user's roles as cached (src/membership.c: stale once a
	-- membership or a role changes anywhere), read afresh for a refusal
	IF schedphi._member_role(p_tenant, p_roles) IS NOT NULL THEN
		PERFORM schedphi._not_shredded(p_tenant);
		PERFORM schedphi._citus_origin(p_tenant);
		RETURN;
	END IF;
	v_mine := schedphi._my_roles(p_tenant);
	IF v_mine && p_roles THEN
		PERFORM schedphi._not_shredded(p_tenant);
		PERFORM schedphi._citus_origin(p_tenant);
		RETURN;
	END IF;
	IF cardinality(v_mine) = 0 THEN
		PERFORM schedphi._deny_tenant(p_tenant);
	END IF;
	-- recorded in the audit log (it survives this error), then 42501
	PERFORM schedphi._deny(p_tenant, 'permission denied: role rule',
		pg_catalog.format('This needs the %s role in the tenant.', pg_catalog.array_to_string(p_roles, ' or ')),
		'An administrator grants roles with schedphi.add_member().');
END
$$;

-- May the session user see decrypted PHI of this tenant?  Superusers are
-- not members, so they may not: they see ciphertext (SPEC).  Called by the
-- C function _open before it decrypts anything.
CREATE FUNCTION schedphi._may_reveal(p_tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v_mine text[];
BEGIN
	IF c.via = 'token' THEN
		RETURN c.tenant = p_tenant AND (c.role IN ('scheduler', 'integration', 'clinician', 'billing')
										OR (c.role = 'admin' AND c.purpose = 'EMERGENCY'));
	END IF;
	v_mine := schedphi._my_roles(p_tenant);
	RETURN v_mine && ARRAY['scheduler', 'integration', 'clinician', 'billing']
		OR ('admin' = ANY (v_mine) AND c.purpose IS NOT DISTINCT FROM 'EMERGENCY');
END
$$;

CREATE FUNCTION schedphi._bad_argument(p_message text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	RAISE EXCEPTION '%', p_message USING ERRCODE = '22023';
END
$$;

CREATE FUNCTION schedphi._check_timezone(p_timezone text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
	-- pg_timezone_names also lists files of the zone database that are not
	-- zones: localtime (the server's own setting), posixrules, Factory
	IF p_timezone IS NULL OR p_timezone IN ('localtime', 'posixrules', 'Factory')
	   OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE z.name = p_timezone) THEN
		RAISE EXCEPTION 'unknown time zone'
			USING ERRCODE = '22023',
				  DETAIL = 'The time zone must be an IANA name such as America/New_York or Europe/Berlin.';
	END IF;
	RETURN p_timezone;
END
$$;

-- A name: trimmed of spaces, 1 to 200 characters (src/patient_fields.c).
CREATE FUNCTION schedphi._check_name(p_what text, p_value text)
RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_check_name_sql'
LANGUAGE C IMMUTABLE;

-- A time range argument: non-empty, bounded on both sides, normalised to
-- [), and, given p_longest, no longer than that.  The length is compared
-- in seconds as numeric: on PostgreSQL 15 the interval between two distant
-- finite timestamps wraps around to a negative value, which a test of
-- upper - lower would let through.
CREATE FUNCTION schedphi._check_range(p_what text, p_range tstzrange, p_longest interval DEFAULT NULL)
RETURNS tstzrange
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_range IS NULL THEN
		RAISE EXCEPTION '% must not be null', p_what USING ERRCODE = '22023';
	END IF;
	IF lower_inf(p_range) OR upper_inf(p_range)
	   OR NOT coalesce(isfinite(lower(p_range)) AND isfinite(upper(p_range)), true) THEN
		RAISE EXCEPTION '% must be bounded on both sides', p_what USING ERRCODE = '22023';
	END IF;
	IF isempty(p_range) OR lower(p_range) >= upper(p_range) THEN
		RAISE EXCEPTION '% must not be empty (zero duration)', p_what USING ERRCODE = '22023';
	END IF;
	IF p_longest IS NOT NULL AND
	   extract(epoch FROM upper(p_range)) - extract(epoch FROM lower(p_range)) > extract(epoch FROM p_longest) THEN
		RAISE EXCEPTION '% must not be longer than %', p_what,
			CASE WHEN p_longest = interval '1 day' THEN 'one day' ELSE extract(day FROM p_longest) || ' days' END
			USING ERRCODE = '22023';
	END IF;
	RETURN tstzrange(lower(p_range), upper(p_range), '[)');
END
$$;

CREATE FUNCTION schedphi._check_interval(p_what text, p_value interval, p_allow_zero boolean)
RETURNS interval
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_value IS NULL THEN
		RAISE EXCEPTION '% must not be null', p_what USING ERRCODE = '22023';
	END IF;
	IF extract(month FROM p_value) <> 0 OR extract(year FROM p_value) <> 0 THEN
		RAISE EXCEPTION '% must be given in days, hours or minutes, not months', p_what
			USING ERRCODE = '22023';
	END IF;
	IF p_value < interval '0' OR (p_value = interval '0' AND NOT p_allow_zero) THEN
		RAISE EXCEPTION '% must be %', p_what, CASE WHEN p_allow_zero THEN 'zero or more' ELSE 'positive (zero duration)' END
			USING ERRCODE = '22023';
	END IF;
	IF p_value > interval '7 days' THEN
		RAISE EXCEPTION '% must not exceed 7 days', p_what USING ERRCODE = '22023';
	END IF;
	RETURN p_value;
END
$$;

-- The tenant an actor belongs to; 22023 if there is no such actor.
CREATE FUNCTION schedphi._actor_tenant(p_actor uuid)
RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_tenant uuid;
BEGIN
	SELECT a.tenant INTO v_tenant FROM schedphi.actor a WHERE a.id = p_actor;
	IF v_tenant IS NULL THEN
		PERFORM schedphi._unknown('actor', p_actor);
	END IF;
	RETURN v_tenant;
END
$$;

-- The tenant a patient belongs to; 22023 if there is no such patient.
CREATE FUNCTION schedphi._patient_tenant(p_patient uuid)
RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_tenant uuid;
BEGIN
	SELECT p.tenant INTO v_tenant FROM schedphi.patient p WHERE p.id = p_patient;
	IF v_tenant IS NULL THEN
		PERFORM schedphi._unknown('patient', p_patient, false);
	END IF;
	RETURN v_tenant;
END
$$;

-- An actor list: non-empty, no NULLs, no repeats, every actor of p_tenant.
-- Returned sorted, which is the order rows are locked in (no deadlocks
-- between two multi-actor bookings).
CREATE FUNCTION schedphi._check_actors(p_tenant uuid, p_actors uuid[])
RETURNS uuid[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_missing uuid;
	v_sorted uuid[];
BEGIN
	IF p_actors IS NULL OR cardinality(p_actors) = 0 THEN
		RAISE EXCEPTION 'actors must name at least one actor' USING ERRCODE = '22023';
	END IF;
	IF coalesce(array_ndims(p_actors), 0) <> 1 THEN
		RAISE EXCEPTION 'actors must be a one-dimensional array' USING ERRCODE = '22023';
	END IF;
	IF array_position(p_actors, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'actors must not contain NULL' USING ERRCODE = '22023';
	END IF;
	IF cardinality(p_actors) > 50 THEN
		RAISE EXCEPTION 'actors may name at most 50 actors' USING ERRCODE = '22023';
	END IF;
	SELECT array_agg(DISTINCT x ORDER BY x) INTO v_sorted FROM unnest(p_actors) x;
	IF cardinality(v_sorted) <> cardinality(p_actors) THEN
		RAISE EXCEPTION 'actors must not name the same actor twice' USING ERRCODE = '22023';
	END IF;
	IF (SELECT count(*) FROM schedphi.actor a WHERE a.tenant = p_tenant AND a.id = ANY (v_sorted))
	   <> cardinality(v_sorted) THEN
		SELECT x INTO v_missing FROM unnest(v_sorted) x
		WHERE NOT EXISTS (SELECT 1 FROM schedphi.actor a WHERE a.tenant = p_tenant AND a.id = x)
		LIMIT 1;
		RAISE EXCEPTION 'unknown actor %', v_missing USING ERRCODE = '22023';
	END IF;
	RETURN v_sorted;
END
$$;

-- Wall-clock time in a zone to an instant; see src/walltime.c for the rules
-- in the spring-forward gap and the fall-back repeat.
CREATE FUNCTION schedphi._wall_to_instant(local timestamp, zone text, early boolean)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'schedphi_wall_instant'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Availability windows of the given actors that overlap p_window, expanded
-- from weekly wall-clock rules into absolute instants with the location's
-- time-zone rules for each date: 09:00-17:00 local is 14:00-22:00 UTC in
-- New York winter and 13:00-21:00 in summer.  A window runs from the first
-- instant the local clock shows its start to the last instant it shows its
-- end (_wall_to_instant).  In C (src/walltime.c); find_slots and the
-- booking checks both use it.  test/tap/13_windows.sql holds the same
-- expansion in plain SQL and compares the two.
CREATE FUNCTION schedphi._windows(p_tenant uuid, p_actors uuid[], p_window tstzrange)
RETURNS TABLE (actor uuid, starts timestamptz, ends timestamptz, slot_minutes int)
AS 'MODULE_PATHNAME', 'schedphi_windows'
LANGUAGE C STABLE STRICT;

-- schedphi install script, part 2.5: who is asking.  Identity providers,
-- assume() with a verified token, whoami(), and the purpose of use.  The
-- context itself lives in C (src/actor.c, src/jwt.c); these are its
-- SQL faces.

CREATE FUNCTION schedphi._key_kind(key text) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_key_kind' LANGUAGE C IMMUTABLE STRICT;

CREATE FUNCTION schedphi._assume_token(token text, scope text) RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_assume_token' LANGUAGE C VOLATILE STRICT;

-- Rate limits in shared memory (src/ratelimit.c): SP429 beyond them.
CREATE FUNCTION schedphi._note_lookup(tenant uuid, actor text) RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_note_lookup' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION schedphi._note_reveal(tenant uuid, actor text, patient uuid) RETURNS boolean
AS 'MODULE_PATHNAME', 'schedphi_note_reveal' LANGUAGE C VOLATILE STRICT;

-- The limits set for the caller in a tenant: one set for the session
-- login, else the highest set for a role the caller acts with there (the
-- token's role, or the login's memberships); NULL where none is (the
-- settings apply).  source names where they come from ('login x', 'role
-- y').  src/ratelimit.c keeps the answer until a membership or a limit
-- changes.
CREATE FUNCTION schedphi._rate_limits(p_tenant uuid, OUT lookups int, OUT reveals int, OUT source text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v_login name := session_user;
	v_roles text[];
	l record;
	r record;
	v_by_login boolean;
BEGIN
	IF c.via = 'token' THEN
		v_roles := CASE WHEN c.tenant = p_tenant THEN ARRAY[c.role] ELSE '{}' END;
	ELSE
		v_roles := schedphi._my_roles(p_tenant);
	END IF;
	SELECT x.lookups_per_minute, x.reveals_per_hour INTO l FROM schedphi.rate_limit x
	WHERE x.tenant = p_tenant AND x.scope = 'login' AND x.name = v_login;
	v_by_login := FOUND;
	SELECT max(x.lookups_per_minute) AS lookups_per_minute, max(x.reveals_per_hour) AS reveals_per_hour,
		   string_agg(x.name, ',' ORDER BY x.name) AS names
	INTO r FROM schedphi.rate_limit x
	WHERE x.tenant = p_tenant AND x.scope = 'role' AND x.name = ANY (v_roles);
	lookups := coalesce(l.lookups_per_minute, r.lookups_per_minute);
	reveals := coalesce(l.reveals_per_hour, r.reveals_per_hour);
	source := CASE WHEN v_by_login THEN 'login ' || v_login
				   WHEN r.names IS NOT NULL THEN 'role ' || r.names END;
END
$$;

-- An addition to the SPEC: limits for a role or a login in a tenant (an
-- integration login that syncs an EHR's patient list touches tens of
-- thousands an hour).  Superuser only, like the settings; NULL for a limit
-- means the setting applies, both NULL removes the entry.  On the ledger.
CREATE FUNCTION schedphi.set_rate_limit(tenant uuid, role text DEFAULT NULL, login name DEFAULT NULL,
										lookups_per_minute int DEFAULT NULL, reveals_per_hour int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_scope text;
	v_name text;
BEGIN
	PERFORM schedphi._require_superuser('set rate limits');
	IF NOT EXISTS (SELECT 1 FROM schedphi.tenant t WHERE t.tenant = schedphi._tenant_arg(tenant)) THEN
		RAISE EXCEPTION 'unknown tenant' USING ERRCODE = '22023';
	END IF;
	IF (role IS NULL) = (login IS NULL) THEN
		RAISE EXCEPTION 'give either a role or a login' USING ERRCODE = '22023';
	END IF;
	IF lookups_per_minute IS NOT NULL AND lookups_per_minute NOT BETWEEN 1 AND 1000000 THEN
		RAISE EXCEPTION 'lookups_per_minute must be between 1 and 1000000' USING ERRCODE = '22023';
	END IF;
	IF reveals_per_hour IS NOT NULL AND reveals_per_hour NOT BETWEEN 1 AND 1000000 THEN
		RAISE EXCEPTION 'reveals_per_hour must be between 1 and 1000000' USING ERRCODE = '22023';
	END IF;
	IF role IS NOT NULL THEN
		v_scope := 'role';
		v_name := schedphi._role_name(role);
	ELSE
		v_scope := 'login';
		v_name := login;
	END IF;
	IF lookups_per_minute IS NULL AND reveals_per_hour IS NULL THEN
		DELETE FROM schedphi.rate_limit r WHERE r.tenant = tenant AND r.scope = v_scope AND r.name = v_name;
	ELSE
		INSERT INTO schedphi.rate_limit AS r (tenant, scope, name, lookups_per_minute, reveals_per_hour)
		VALUES (tenant, v_scope, v_name, lookups_per_minute, reveals_per_hour)
		ON CONFLICT ON CONSTRAINT rate_limit_pkey DO UPDATE
			SET lookups_per_minute = excluded.lookups_per_minute, reveals_per_hour = excluded.reveals_per_hour,
				set_at = excluded.set_at, set_by = excluded.set_by;
	END IF;
	PERFORM schedphi._note_members_changed();
	PERFORM schedphi._audit_change('rate_limit', tenant, 'rate_limit', NULL, NULL,
		jsonb_build_object(v_scope, v_name, 'lookups_per_minute', lookups_per_minute,
						   'reveals_per_hour', reveals_per_hour));
END
$$;

CREATE FUNCTION schedphi.set_purpose(purpose text) RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_set_purpose' LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Who is asking: the assumed token's actor, or the login's membership
-- (tenant and role filled in when the login holds exactly one).
CREATE FUNCTION schedphi.whoami()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	m record;
	n int;
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
BEGIN
	IF c.via = 'token' THEN
		RETURN jsonb_build_object('actor', c.actor, 'tenant', c.tenant, 'role', c.role,
								  'practitioner', c.practitioner, 'purpose', c.purpose, 'via', 'token');
	END IF;
	SELECT count(*) INTO n FROM schedphi.member x
	WHERE x.login = v_login AND x.login_oid = v_oid AND pg_catalog.pg_has_role(v_login, 'schedphi_' || x.role, 'MEMBER');
	IF n = 1 THEN
		SELECT * INTO m FROM schedphi.member x
		WHERE x.login = v_login AND x.login_oid = v_oid AND pg_catalog.pg_has_role(v_login, 'schedphi_' || x.role, 'MEMBER');
		RETURN jsonb_build_object('actor', session_user::text, 'tenant', m.tenant, 'role', m.role,
								  'practitioner', m.practitioner, 'purpose', c.purpose, 'via', 'membership');
	END IF;
	RETURN jsonb_build_object('actor', session_user::text, 'tenant', NULL, 'role', NULL,
							  'practitioner', NULL, 'purpose', c.purpose,
							  'via', CASE WHEN n > 1 THEN 'membership' END);
END
$$;

-- Verify a token from a registered identity provider and act as its actor
-- for this transaction (or, with scope => 'session' where the superuser has
-- allowed it with schedphi.allow_session_scope, until DISCARD ALL).
-- Callable by any login: what follows is what the verified claims allow.
CREATE FUNCTION schedphi.assume(token text, scope text DEFAULT 'transaction')
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
BEGIN
	IF token IS NULL THEN
		RAISE EXCEPTION 'token must not be null' USING ERRCODE = '22023';
	END IF;
	IF scope IS NULL THEN
		RAISE EXCEPTION 'scope must be transaction or session' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._assume_token(token, scope);
	-- a subject terminated in the tenant is refused, whatever its token says
	-- (the context first, in a statement of its own: under Citus the look-up
	-- runs on the tenant's node)
	c := schedphi._context();
	IF schedphi._terminated(c.tenant, c.actor) THEN
		PERFORM schedphi._deny(c.tenant, 'permission denied: termination rule',
			'The token''s subject was terminated in this tenant (terminate_member).');
	END IF;
	RETURN schedphi.whoami();
END
$$;

CREATE FUNCTION schedphi.add_issuer(tenant uuid, issuer text, audience text, key text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid := gen_random_uuid();
	v_kind text;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF issuer IS NULL OR btrim(issuer) = '' OR length(issuer) > 255 THEN
		RAISE EXCEPTION 'issuer must be 1 to 255 characters' USING ERRCODE = '22023';
	END IF;
	IF audience IS NULL OR btrim(audience) = '' OR length(audience) > 255 THEN
		RAISE EXCEPTION 'audience must be 1 to 255 characters' USING ERRCODE = '22023';
	END IF;
	IF key IS NULL THEN
		RAISE EXCEPTION 'key must not be null' USING ERRCODE = '22023';
	END IF;
	v_kind := schedphi._key_kind(key);
	IF EXISTS (SELECT 1 FROM schedphi.issuer i WHERE i.tenant = tenant AND i.issuer = issuer) THEN
		RAISE EXCEPTION 'issuer is already registered for the tenant' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.issuer (tenant, id, issuer, audience, key_kind, public_key, secret)
	VALUES (tenant, v_id, issuer, audience, v_kind,
			CASE WHEN v_kind <> 'hs256' THEN key END,
			CASE WHEN v_kind = 'hs256' THEN schedphi._seal(tenant, 'issuer', 'secret', v_id, substr(key, 7)) END);
	PERFORM schedphi._audit_change('issuer_add', tenant, 'issuer', v_id, NULL,
								   jsonb_build_object('issuer', issuer, 'audience', audience, 'key_kind', v_kind));
	RETURN v_id;
END
$$;

-- An addition to the SPEC: withdraw an identity provider (a compromised
-- key, a retired IdP).  Tokens it signed are refused from the next
-- assume(); a context already assumed ends with its token (at most
-- schedphi.max_token_lifetime), or at once with DISCARD ALL.
CREATE FUNCTION schedphi.remove_issuer(tenant uuid, issuer text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF issuer IS NULL THEN
		RAISE EXCEPTION 'issuer must not be null' USING ERRCODE = '22023';
	END IF;
	DELETE FROM schedphi.issuer i WHERE i.tenant = tenant AND i.issuer = issuer RETURNING i.id INTO v_id;
	IF v_id IS NULL THEN
		RAISE EXCEPTION 'unknown issuer' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._audit_change('issuer_remove', tenant, 'issuer', v_id, NULL, jsonb_build_object('issuer', issuer));
END
$$;

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
BEGIN
	IF c.via = 'token' THEN
		RETURN jsonb_build_object('actor', c.actor, 'tenant', c.tenant, 'role', c.role,
								  'practitioner', c.practitioner, 'purpose', c.purpose, 'via', 'token');
	END IF;
	SELECT count(*) INTO n FROM schedphi.member x WHERE schedphi._is_mine(x.login, x.login_oid, x.role);
	IF n = 1 THEN
		SELECT * INTO m FROM schedphi.member x WHERE schedphi._is_mine(x.login, x.login_oid, x.role);
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
BEGIN
	IF token IS NULL THEN
		RAISE EXCEPTION 'token must not be null' USING ERRCODE = '22023';
	END IF;
	IF scope IS NULL THEN
		RAISE EXCEPTION 'scope must be transaction or session' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._assume_token(token, scope);
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

-- schedphi install script, part 4.5: break-glass.  A clinician reading a
-- patient who is not theirs, or an administrator reading any patient,
-- opens a time-boxed grant with a reason, sets EMERGENCY as the purpose of
-- use, and someone else (an administrator or an auditor) reviews it.  A
-- grant expires by itself; nothing needs to run.

CREATE FUNCTION schedphi.break_glass(patient uuid, reason text, minutes int DEFAULT 60)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid;
	v_role text;
	v_id uuid := gen_random_uuid();
	v_by_token boolean;
BEGIN
	PERFORM schedphi._audit_target('patient', patient, patient);
	v_tenant := schedphi._patient_tenant(patient);
	-- who first: what follows must not tell another tenant's patient from none
	PERFORM schedphi._authorize(v_tenant, ARRAY['clinician', 'admin']);
	IF reason IS NULL OR length(btrim(reason)) < 10 OR length(reason) > 2000 THEN
		RAISE EXCEPTION 'reason must say why, in 10 to 2000 characters' USING ERRCODE = '22023';
	END IF;
	IF minutes IS NULL OR minutes < 1 OR minutes > 480 THEN
		RAISE EXCEPTION 'minutes must be between 1 and 480' USING ERRCODE = '22023';
	END IF;
	-- break-glass opens PHI: a token must show a second factor, as it must
	-- for the roles that read PHI every day (SPEC: MFA rule)
	IF (SELECT c.via = 'token' AND NOT c.mfa FROM schedphi._context() c)
	   AND pg_catalog.current_setting('schedphi.require_mfa')::boolean THEN
		PERFORM schedphi._deny(v_tenant, 'permission denied: MFA rule',
			'Break-glass through an assumed token needs a token whose amr shows a second factor.');
	END IF;
	v_role := schedphi._member_role(v_tenant, ARRAY['clinician', 'admin']);
	IF v_role = 'superuser' THEN
		PERFORM schedphi._deny(v_tenant, 'permission denied: break-glass rule',
			'Break-glass is for a clinician or an administrator of the tenant.');
	END IF;
	PERFORM schedphi._audit_target(NULL, NULL, NULL);	-- the checks are passed
	-- (values only in the INSERT: under Citus it runs on the tenant's node)
	v_by_token := coalesce((SELECT c.via = 'token' FROM schedphi._context() c), false);
	INSERT INTO schedphi.break_glass_grant (tenant, id, patient, login, actor, role, reason, starts, expires, by_token)
	VALUES (v_tenant, v_id, patient, schedphi._login(), schedphi._actor_name(), v_role,
			schedphi._seal(v_tenant, 'break_glass_grant', 'reason', v_id, reason),
			now(), now() + minutes * interval '1 minute', v_by_token);
	PERFORM schedphi._audit_event('break_glass', v_tenant, 'break_glass_grant', v_id, patient,
								  jsonb_build_object('minutes', minutes));
	RETURN v_id;
END
$$;

-- Does the caller hold an active grant in its tenant?  (set_purpose asks
-- before accepting EMERGENCY.)
CREATE FUNCTION schedphi._holds_break_glass()
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_actor text := schedphi._actor_name();
	v_login name := session_user;
BEGIN
	RETURN EXISTS (SELECT 1 FROM schedphi.break_glass_grant g
				   WHERE g.actor = v_actor AND g.login = v_login AND now() >= g.starts AND now() < g.expires);
END
$$;

CREATE FUNCTION schedphi.review_break_glass(id uuid, outcome text, note text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	g schedphi.break_glass_grant;
	v_tenant uuid;
	v_note schedphi.sealed;
	v_reviewer text;
BEGIN
	-- the tenant, then the row locked by its key (see _lock_appointment)
	SELECT x.tenant INTO v_tenant FROM schedphi.break_glass_grant x WHERE x.id = review_break_glass.id;
	SELECT * INTO g FROM schedphi.break_glass_grant x
	WHERE x.tenant = v_tenant AND x.id = review_break_glass.id FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('break-glass grant', review_break_glass.id, false);
	END IF;
	PERFORM schedphi._authorize(g.tenant, ARRAY['admin', 'auditor']);
	-- The same person: the same actor, or the same login unless both the
	-- grant and the review came through tokens (an application's pool
	-- login, shared by everyone who uses it, tells nobody apart).
	IF g.actor = schedphi._actor_name()
	   OR (g.login = session_user
		   AND NOT (g.by_token AND coalesce((SELECT c.via = 'token' FROM schedphi._context() c), false))) THEN
		PERFORM schedphi._deny(g.tenant, 'permission denied: separation of duties rule',
			'A break-glass grant is reviewed by someone other than its requester.');
	END IF;
	IF outcome IS NULL OR outcome NOT IN ('justified', 'unjustified') THEN
		RAISE EXCEPTION 'outcome must be justified or unjustified' USING ERRCODE = '22023';
	END IF;
	IF note IS NULL OR btrim(note) = '' OR length(note) > 2000 THEN
		RAISE EXCEPTION 'note must say what was found, in at most 2000 characters' USING ERRCODE = '22023';
	END IF;
	IF g.outcome IS NOT NULL THEN
		RAISE EXCEPTION 'cannot review a grant already reviewed as %', g.outcome USING ERRCODE = '55000';
	END IF;
	-- sealed first: the UPDATE carries values only (Citus sends it whole to
	-- the tenant's node, where no volatile function may run for it)
	v_note := schedphi._seal(g.tenant, 'break_glass_grant', 'review_note', g.id, note);
	v_reviewer := schedphi._actor_name();
	UPDATE schedphi.break_glass_grant x
	SET outcome = review_break_glass.outcome, reviewer = v_reviewer, reviewed_at = now(), review_note = v_note
	WHERE x.tenant = g.tenant AND x.id = g.id;
	PERFORM schedphi._audit_event('review', g.tenant, 'break_glass_grant', g.id, g.patient,
								  jsonb_build_object('outcome', outcome));
END
$$;

-- Grants awaiting review, for the tenant's administrators and auditors.
CREATE FUNCTION schedphi._may_review(p_tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN schedphi._member_role(p_tenant, ARRAY['admin', 'auditor']) IN ('admin', 'auditor', 'superuser');
END
$$;

CREATE VIEW schedphi.break_glass_pending WITH (security_barrier) AS
	SELECT g.id, g.tenant, g.patient, g.actor AS requested_by, g.role, g.starts, g.expires,
		   now() >= g.expires AS expired
	FROM schedphi.break_glass_grant g
	WHERE g.outcome IS NULL AND schedphi._may_review(g.tenant);

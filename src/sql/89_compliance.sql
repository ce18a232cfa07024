-- schedphi install script, part 8e: compliance evidence (docs/compliance.md).
--
-- Evidence is kept beside the data and enforced where it can be: a
-- business associate's BAA has dates that decide whether it is current,
-- training gates PHI (schedphi.require_training, src/sealed.c), a
-- termination or a review's revoke ends access at once.  Admins write it,
-- auditors (and admins) read it; nothing here holds PHI; every change is
-- on the audit ledger (action 'compliance', in the same transaction).

-- ---------------------------------------------------------------- tables

CREATE TABLE schedphi.business_associate (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	name		text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	services	text[] NOT NULL,
	baa_signed	date NOT NULL,
	baa_expires date NOT NULL,
	phi_access	text NOT NULL CHECK (phi_access IN ('none', 'limited', 'full')),
	last_verified date,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	CHECK (baa_expires > baa_signed)
);
CREATE INDEX business_associate_id ON schedphi.business_associate (id);

-- The yearly written verification of an associate's safeguards.
CREATE TABLE schedphi.associate_verification (
	tenant		uuid NOT NULL,
	associate	uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	verified	date NOT NULL,
	note		text CHECK (length(note) <= 2000),
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, associate, id),
	FOREIGN KEY (tenant, associate) REFERENCES schedphi.business_associate (tenant, id)
);

-- Training: a login (or a token's subject) and a course, completed and
-- valid until expires.
CREATE TABLE schedphi.training (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	login		text NOT NULL CHECK (length(login) BETWEEN 1 AND 255),
	course		text NOT NULL CHECK (length(course) BETWEEN 1 AND 200),
	completed	date NOT NULL,
	expires		date NOT NULL,
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, login, course, completed),
	CHECK (expires > completed)
);

-- Terminations: when a login's access in a tenant ended, and when it was
-- recorded (the report measures the PHI accesses after the first).
CREATE TABLE schedphi.termination (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	login		text NOT NULL,
	at			timestamptz NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	memberships int NOT NULL,
	grants		int NOT NULL,
	PRIMARY KEY (tenant, login, id)
);

CREATE TABLE schedphi.risk (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	title		text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
	safeguard	text NOT NULL CHECK (safeguard IN ('administrative', 'physical', 'technical')),
	likelihood	int NOT NULL CHECK (likelihood BETWEEN 1 AND 5),
	impact		int NOT NULL CHECK (impact BETWEEN 1 AND 5),
	owner		text NOT NULL,
	due			date NOT NULL,
	status		text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'mitigating', 'accepted', 'closed')),
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id)
);
CREATE INDEX risk_id ON schedphi.risk (id);

-- A risk's status history.
CREATE TABLE schedphi.risk_event (
	tenant		uuid NOT NULL,
	risk		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	at			timestamptz NOT NULL DEFAULT clock_timestamp(),
	status		text NOT NULL,
	note		text CHECK (length(note) <= 2000),
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	PRIMARY KEY (tenant, risk, id),
	FOREIGN KEY (tenant, risk) REFERENCES schedphi.risk (tenant, id)
);

-- Incidents and the breach-notification deadlines worked out from their
-- discovery (45 CFR 164.404-164.408).
CREATE TABLE schedphi.incident (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	kind		text NOT NULL CHECK (kind IN ('breach', 'suspected_breach', 'security', 'privacy', 'other')),
	detected	timestamptz NOT NULL,
	summary		text NOT NULL CHECK (length(summary) BETWEEN 1 AND 2000),
	patients_affected int CHECK (patients_affected >= 0),
	individuals_due date NOT NULL,
	hhs_due		date NOT NULL,
	media_due	date,
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id)
);

-- Access reviews: one item per membership and open break-glass grant,
-- with the member's PHI accesses since the review before.
CREATE TABLE schedphi.access_review (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	started_at	timestamptz NOT NULL DEFAULT now(),
	since		timestamptz,	-- the review before (NULL: the first)
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	PRIMARY KEY (tenant, id)
);
CREATE INDEX access_review_id ON schedphi.access_review (id);

CREATE TABLE schedphi.access_review_item (
	tenant		uuid NOT NULL,
	review		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	login		text NOT NULL,
	kind		text NOT NULL CHECK (kind IN ('membership', 'break_glass')),
	role		text NOT NULL,
	grant_id	uuid,
	phi_accesses bigint NOT NULL,
	last_access timestamptz,
	decision	text CHECK (decision IN ('keep', 'revoke')),
	decided_by	text,
	decided_at	timestamptz,
	note		text CHECK (length(note) <= 2000),
	PRIMARY KEY (tenant, review, id),
	FOREIGN KEY (tenant, review) REFERENCES schedphi.access_review (tenant, id)
);

-- Evidence schedphi can only hold as recorded (a scan, a penetration test,
-- a restore test, ...), each kind with how often it is due.
CREATE TABLE schedphi.evidence (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	kind		text NOT NULL,
	performed	date NOT NULL,
	note		text CHECK (length(note) <= 2000),
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id)
);
CREATE INDEX evidence_kind ON schedphi.evidence (tenant, kind, performed);

-- The kinds of recorded evidence and how often each is due (the HIPAA
-- Security Rule NPRM of January 2025 where it proposes one).
CREATE FUNCTION schedphi._evidence_kinds(OUT kind text, OUT every interval, OUT reference text)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE
AS $$
	VALUES ('risk_analysis', interval '12 months', '164.308(a)(1)(ii)(A); NPRM: yearly'),
		   ('asset_inventory', interval '12 months', 'NPRM 164.308(a)(1): written inventory, yearly'),
		   ('compliance_audit', interval '12 months', 'NPRM 164.308(a)(14): yearly'),
		   ('vulnerability_scan', interval '6 months', 'NPRM 164.312(h): every 6 months'),
		   ('penetration_test', interval '12 months', 'NPRM 164.312(h): every 12 months'),
		   ('restore_test', interval '12 months', 'NPRM 164.308(a)(7): restore within 72 hours, tested'),
		   ('contingency_plan', interval '12 months', '164.308(a)(7)(ii)(D)'),
		   ('security_awareness', interval '12 months', '164.308(a)(5)')
$$;

-- ---------------------------------------------------------------- helpers

-- A date argument: not NULL, 22023 naming it otherwise.
CREATE FUNCTION schedphi._check_date(p_what text, p_value date)
RETURNS date
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_value IS NULL OR NOT isfinite(p_value) THEN
		RAISE EXCEPTION '% must be a date', p_what USING ERRCODE = '22023';
	END IF;
	RETURN p_value;
END
$$;

-- A short note: at most 2,000 characters (never PHI: it is evidence).
CREATE FUNCTION schedphi._check_note(p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF length(p_value) > 2000 THEN
		RAISE EXCEPTION 'note must be at most 2000 characters' USING ERRCODE = '22023';
	END IF;
	RETURN nullif(btrim(p_value), '');
END
$$;

-- Is the caller an admin or an auditor of the tenant (who read evidence)?
CREATE FUNCTION schedphi._authorize_evidence(p_tenant uuid)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT (schedphi._is_auditor(p_tenant) IS TRUE OR 'admin' = ANY (schedphi._my_roles(p_tenant)) IS TRUE
			OR (SELECT c.via = 'token' AND c.role = 'admin' AND c.tenant = p_tenant FROM schedphi._context() c) IS TRUE) THEN
		PERFORM schedphi._deny(p_tenant, 'permission denied: role rule',
			'Compliance evidence is read by the tenant''s admins and auditors.');
	END IF;
END
$$;

-- "Today" for a tenant's evidence is the date in the tenant's own zone (as
-- for data use agreements), never the session's TimeZone.
-- (PL/pgSQL, not SQL: Citus cannot plan a SQL function's parameters
-- against a distributed table.)
CREATE FUNCTION schedphi._tenant_today(p_tenant uuid)
RETURNS date
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_zone text;
BEGIN
	SELECT t.timezone INTO v_zone FROM schedphi.tenant t WHERE t.tenant = p_tenant;
	RETURN (now() AT TIME ZONE coalesce(v_zone, 'UTC'))::date;
END
$$;

-- Is a business associate's BAA current today?  (The communications work
-- sends only through an associate whose BAA is.)
CREATE FUNCTION schedphi._baa_current(p_tenant uuid, p_associate uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_today date := schedphi._tenant_today(p_tenant);
	b record;
BEGIN
	SELECT x.baa_signed, x.baa_expires INTO b FROM schedphi.business_associate x
	WHERE x.tenant = p_tenant AND x.id = p_associate;
	RETURN coalesce(b.baa_signed <= v_today AND b.baa_expires >= v_today, false);
END
$$;

-- Does the caller (the session user, or the assumed token's subject) hold
-- current training in the tenant?  (src/sealed.c asks, when
-- schedphi.require_training is on, before PHI is read or written.)
CREATE FUNCTION schedphi._training_current(p_tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_login text := schedphi._actor_name();
	v_today date := schedphi._tenant_today(p_tenant);
BEGIN
	RETURN EXISTS (SELECT 1 FROM schedphi.training t
				   WHERE t.tenant = p_tenant AND t.login = v_login
					 AND t.completed <= v_today AND t.expires >= v_today);
END
$$;

-- ---------------------------------------------------------------- business associates

CREATE FUNCTION schedphi.add_business_associate(tenant uuid, name text, services text[],
												baa_signed date, baa_expires date, phi_access text)
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
	name := schedphi._check_name('name', name);
	IF services IS NULL OR cardinality(services) NOT BETWEEN 1 AND 20
	   OR EXISTS (SELECT 1 FROM unnest(services) s WHERE s IS NULL OR s !~ '^[a-z][a-z0-9_-]{0,31}$') THEN
		RAISE EXCEPTION 'services must be 1 to 20 lower-case names, e.g. {sms,email,hosting,interface}'
			USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._check_date('baa_signed', baa_signed), schedphi._check_date('baa_expires', baa_expires);
	IF baa_expires <= baa_signed THEN
		RAISE EXCEPTION 'baa_expires must come after baa_signed' USING ERRCODE = '22023';
	END IF;
	IF phi_access IS NULL OR phi_access NOT IN ('none', 'limited', 'full') THEN
		RAISE EXCEPTION 'phi_access must be none, limited or full' USING ERRCODE = '22023';
	END IF;
	services := ARRAY(SELECT DISTINCT s FROM unnest(services) s ORDER BY s);
	INSERT INTO schedphi.business_associate AS b (tenant, name, services, baa_signed, baa_expires, phi_access)
	VALUES (tenant, name, services, baa_signed, baa_expires, phi_access)
	RETURNING b.id INTO v_id;
	PERFORM schedphi._audit_change('compliance', tenant, 'business_associate', v_id, NULL,
		jsonb_build_object('event', 'add', 'baa_signed', baa_signed, 'baa_expires', baa_expires, 'phi_access', phi_access));
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.verify_business_associate(id uuid, verified date, note text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	b schedphi.business_associate;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'id must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT x.* INTO b FROM schedphi.business_associate x WHERE x.id = id;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('business associate', id);
	END IF;
	PERFORM schedphi._authorize(b.tenant, ARRAY['admin']);
	PERFORM schedphi._check_date('verified', verified);
	IF verified > schedphi._tenant_today(b.tenant) THEN
		RAISE EXCEPTION 'verified must not be in the future' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.associate_verification (tenant, associate, verified, note)
	VALUES (b.tenant, b.id, verified, schedphi._check_note(note));
	UPDATE schedphi.business_associate x SET last_verified = greatest(x.last_verified, verified)
	WHERE x.tenant = b.tenant AND x.id = b.id;
	PERFORM schedphi._audit_change('compliance', b.tenant, 'business_associate', b.id, NULL,
		jsonb_build_object('event', 'verify', 'verified', verified));
END
$$;

-- ---------------------------------------------------------------- training and termination

CREATE FUNCTION schedphi.record_training(tenant uuid, login name, course text, completed date, expires date)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF login IS NULL OR btrim(login) = '' THEN
		RAISE EXCEPTION 'login must not be null' USING ERRCODE = '22023';
	END IF;
	course := schedphi._check_name('course', course);
	PERFORM schedphi._check_date('completed', completed), schedphi._check_date('expires', expires);
	IF completed > schedphi._tenant_today(tenant) THEN
		RAISE EXCEPTION 'completed must not be in the future' USING ERRCODE = '22023';
	END IF;
	IF expires <= completed THEN
		RAISE EXCEPTION 'expires must come after completed' USING ERRCODE = '22023';
	END IF;
	-- (recorded_at from excluded: Citus allows no function in DO UPDATE)
	INSERT INTO schedphi.training AS t (tenant, login, course, completed, expires, recorded_at)
	VALUES (tenant, login, course, completed, expires, now())
	ON CONFLICT ON CONSTRAINT training_pkey DO UPDATE SET expires = excluded.expires, recorded_at = excluded.recorded_at;
	PERFORM schedphi._audit_change('compliance', tenant, 'training', NULL, NULL,
		jsonb_build_object('event', 'training', 'login', login, 'course', course, 'completed', completed, 'expires', expires));
END
$$;

-- End, now, everything a login (or a token's subject) holds in a tenant:
-- its memberships (each with its event, and the group role it no longer
-- needs) and its open break-glass grants; how many of each.  Sessions
-- already open are refused at their next statement (the membership cache
-- is invalidated at commit).  Each grant's expiry is a value, not an
-- expression of the row: Citus runs no volatile function, nor a stable
-- one of a column, in an UPDATE.  A grant cannot end before it starts:
-- one that starts after now ends a microsecond after it starts.
CREATE FUNCTION schedphi._end_access(p_tenant uuid, p_login name, OUT memberships int, OUT grants int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_now timestamptz;
	r record;
	g record;
BEGIN
	memberships := 0;
	FOR r IN DELETE FROM schedphi.member m WHERE m.tenant = p_tenant AND m.login = p_login RETURNING m.role LOOP
		INSERT INTO schedphi.member_event (tenant, action, login, role) VALUES (p_tenant, 'remove', p_login, r.role);
		PERFORM schedphi._release_group_role(p_login, r.role);
		memberships := memberships + 1;
	END LOOP;
	PERFORM schedphi._note_members_changed();
	v_now := clock_timestamp();
	UPDATE schedphi.break_glass_grant x SET expires = v_now
	WHERE x.tenant = p_tenant AND (x.login = p_login OR x.actor = p_login::text) AND x.expires > v_now
	  AND x.starts < v_now;
	GET DIAGNOSTICS grants = ROW_COUNT;
	FOR g IN SELECT x.id, x.starts FROM schedphi.break_glass_grant x
			 WHERE x.tenant = p_tenant AND (x.login = p_login OR x.actor = p_login::text) AND x.expires > v_now
			   AND x.starts >= v_now LOOP
		UPDATE schedphi.break_glass_grant x SET expires = g.starts + interval '1 microsecond'
		WHERE x.tenant = p_tenant AND x.id = g.id;
		grants := grants + 1;
	END LOOP;
END
$$;

-- End every membership and open break-glass grant of the login in the
-- tenant at once: sessions already open are refused at their next
-- statement (the membership cache is invalidated at commit), and a token
-- for it (its subject) is refused by assume() from then on.
CREATE FUNCTION schedphi.terminate_member(tenant uuid, login name, at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	e record;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF login IS NULL OR btrim(login) = '' THEN
		RAISE EXCEPTION 'login must not be null' USING ERRCODE = '22023';
	END IF;
	IF at IS NULL OR NOT isfinite(at) OR at > now() + interval '1 minute' THEN
		RAISE EXCEPTION 'at must be a time, not in the future (when the access ended)' USING ERRCODE = '22023';
	END IF;
	SELECT x.memberships, x.grants INTO e FROM schedphi._end_access(tenant, login) x;
	INSERT INTO schedphi.termination (tenant, login, at, memberships, grants)
	VALUES (tenant, login, least(at, now()), e.memberships, e.grants);
	PERFORM schedphi._audit_change('compliance', tenant, 'termination', NULL, NULL,
		jsonb_build_object('event', 'terminate', 'login', login, 'at', least(at, now()),
						   'memberships', e.memberships, 'grants', e.grants));
END
$$;

-- Is the token's subject terminated in its tenant?  (assume() refuses it)
CREATE FUNCTION schedphi._terminated(p_tenant uuid, p_login text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN EXISTS (SELECT 1 FROM schedphi.termination t WHERE t.tenant = p_tenant AND t.login = p_login);
END
$$;

-- Is the caller's own token subject terminated in the token's tenant?
-- (src/actor.c asks, as the caller, before each statement of a
-- session-scope context once memberships have changed; it says nothing
-- about anyone else.)
CREATE FUNCTION schedphi._actor_terminated()
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
BEGIN
	IF c.via IS DISTINCT FROM 'token' THEN
		RETURN false;
	END IF;
	RETURN schedphi._terminated(c.tenant, c.actor);
END
$$;

-- ---------------------------------------------------------------- risks and incidents

CREATE FUNCTION schedphi.add_risk(tenant uuid, title text, safeguard text, likelihood int, impact int,
								  owner name, due date)
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
	title := schedphi._check_name('title', title);
	IF safeguard IS NULL OR safeguard NOT IN ('administrative', 'physical', 'technical') THEN
		RAISE EXCEPTION 'safeguard must be administrative, physical or technical' USING ERRCODE = '22023';
	END IF;
	IF likelihood IS NULL OR likelihood NOT BETWEEN 1 AND 5 OR impact IS NULL OR impact NOT BETWEEN 1 AND 5 THEN
		RAISE EXCEPTION 'likelihood and impact must be 1 to 5' USING ERRCODE = '22023';
	END IF;
	IF owner IS NULL OR btrim(owner) = '' THEN
		RAISE EXCEPTION 'owner must not be null' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._check_date('due', due);
	INSERT INTO schedphi.risk AS r (tenant, title, safeguard, likelihood, impact, owner, due)
	VALUES (tenant, title, safeguard, likelihood, impact, owner, due) RETURNING r.id INTO v_id;
	INSERT INTO schedphi.risk_event (tenant, risk, status, note) VALUES (tenant, v_id, 'open', NULL);
	PERFORM schedphi._audit_change('compliance', tenant, 'risk', v_id, NULL,
		jsonb_build_object('event', 'add', 'safeguard', safeguard, 'score', likelihood * impact, 'due', due));
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.update_risk(id uuid, status text, note text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	r schedphi.risk;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'id must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT x.* INTO r FROM schedphi.risk x WHERE x.id = id;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('risk', id);
	END IF;
	PERFORM schedphi._authorize(r.tenant, ARRAY['admin']);
	IF status IS NULL OR status NOT IN ('open', 'mitigating', 'accepted', 'closed') THEN
		RAISE EXCEPTION 'status must be open, mitigating, accepted or closed' USING ERRCODE = '22023';
	END IF;
	IF status = 'accepted' AND schedphi._check_note(note) IS NULL THEN
		RAISE EXCEPTION 'accepting a risk needs a note saying why' USING ERRCODE = '22023';
	END IF;
	UPDATE schedphi.risk x SET status = update_risk.status WHERE x.tenant = r.tenant AND x.id = r.id;
	INSERT INTO schedphi.risk_event (tenant, risk, status, note) VALUES (r.tenant, r.id, status, schedphi._check_note(note));
	PERFORM schedphi._audit_change('compliance', r.tenant, 'risk', r.id, NULL,
		jsonb_build_object('event', 'status', 'from', r.status, 'to', status));
END
$$;

-- The breach-notification deadlines of an incident discovered at p_detected
-- (45 CFR 164.404, 164.406, 164.408): individuals without unreasonable
-- delay and within 60 days; the media as well, within 60 days, when 500 or
-- more residents of a state are affected (taken as 500 or more patients:
-- schedphi does not know where they live); HHS within 60 days when 500 or
-- more, else in the yearly log, within 60 days of the year's end.  An
-- unknown count is taken as 500 or more (the stricter).  Days are counted from the
-- date of discovery in the tenant's zone.
CREATE FUNCTION schedphi._breach_deadlines(p_detected timestamptz, p_affected int, p_zone text,
	OUT individuals date, OUT hhs date, OUT media date)
LANGUAGE sql STABLE
AS $$
	SELECT (p_detected AT TIME ZONE p_zone)::date + 60,
		   CASE WHEN coalesce(p_affected, 500) >= 500 THEN (p_detected AT TIME ZONE p_zone)::date + 60
				ELSE (date_trunc('year', p_detected AT TIME ZONE p_zone) + interval '1 year')::date + 59 END,
		   CASE WHEN coalesce(p_affected, 500) >= 500 THEN (p_detected AT TIME ZONE p_zone)::date + 60 END
$$;

CREATE FUNCTION schedphi.record_incident(tenant uuid, kind text, detected timestamptz, summary text,
										 patients_affected int DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid;
	d record;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF kind IS NULL OR kind NOT IN ('breach', 'suspected_breach', 'security', 'privacy', 'other') THEN
		RAISE EXCEPTION 'kind must be breach, suspected_breach, security, privacy or other' USING ERRCODE = '22023';
	END IF;
	IF detected IS NULL OR NOT isfinite(detected) OR detected > now() + interval '1 minute' THEN
		RAISE EXCEPTION 'detected must be a time, not in the future' USING ERRCODE = '22023';
	END IF;
	IF summary IS NULL OR length(btrim(summary)) NOT BETWEEN 1 AND 2000 THEN
		RAISE EXCEPTION 'summary must be 1 to 2000 characters (no patient data: it is evidence)' USING ERRCODE = '22023';
	END IF;
	IF patients_affected < 0 THEN
		RAISE EXCEPTION 'patients_affected must not be negative' USING ERRCODE = '22023';
	END IF;
	d := schedphi._breach_deadlines(detected, patients_affected,
		(SELECT t.timezone FROM schedphi.tenant t WHERE t.tenant = record_incident.tenant));
	INSERT INTO schedphi.incident AS i (tenant, kind, detected, summary, patients_affected,
										individuals_due, hhs_due, media_due)
	VALUES (tenant, kind, detected, btrim(summary), patients_affected, d.individuals, d.hhs, d.media)
	RETURNING i.id INTO v_id;
	PERFORM schedphi._audit_change('compliance', tenant, 'incident', v_id, NULL,
		jsonb_build_object('event', 'record', 'kind', kind, 'patients_affected', patients_affected,
						   'individuals_due', d.individuals, 'hhs_due', d.hhs, 'media_due', d.media));
	RETURN v_id;
END
$$;

-- Recorded evidence of what schedphi cannot see itself (a scan, a
-- penetration test, a restore test, ...): its kind and the date it was done.
CREATE FUNCTION schedphi.record_evidence(tenant uuid, kind text, performed date, note text DEFAULT NULL)
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
	IF kind IS NULL OR NOT EXISTS (SELECT 1 FROM schedphi._evidence_kinds() k WHERE k.kind = record_evidence.kind) THEN
		RAISE EXCEPTION 'kind must be one of: %', (SELECT string_agg(k.kind, ', ') FROM schedphi._evidence_kinds() k)
			USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._check_date('performed', performed);
	IF performed > schedphi._tenant_today(tenant) THEN
		RAISE EXCEPTION 'performed must not be in the future' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.evidence AS e (tenant, kind, performed, note)
	VALUES (tenant, kind, performed, schedphi._check_note(note)) RETURNING e.id INTO v_id;
	PERFORM schedphi._audit_change('compliance', tenant, 'evidence', v_id, NULL,
		jsonb_build_object('event', 'record', 'kind', kind, 'performed', performed));
	RETURN v_id;
END
$$;

-- ---------------------------------------------------------------- access reviews

-- One item per membership and per open break-glass grant of the tenant,
-- each with the member's PHI accesses (ledger records naming a patient)
-- since the review before (or ever, for the first).
CREATE FUNCTION schedphi.start_access_review(tenant uuid)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid;
	v_since timestamptz;
	v_n int;
	v_now timestamptz := clock_timestamp();
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	SELECT max(r.started_at) INTO v_since FROM schedphi.access_review r WHERE r.tenant = tenant;
	INSERT INTO schedphi.access_review AS r (tenant, since) VALUES (tenant, v_since) RETURNING r.id INTO v_id;
	INSERT INTO schedphi.access_review_item (tenant, review, login, kind, role, grant_id, phi_accesses, last_access)
	SELECT tenant, v_id, x.login, x.kind, x.role, x.grant_id, coalesce(a.n, 0), a.last_at
	FROM (SELECT m.login::text AS login, 'membership' AS kind, m.role, NULL::uuid AS grant_id
		  FROM schedphi.member m WHERE m.tenant = tenant
		  UNION ALL
		  SELECT coalesce(g.actor, g.login::text), 'break_glass', g.role, g.id
		  FROM schedphi.break_glass_grant g WHERE g.tenant = tenant AND g.expires > v_now) x
	LEFT JOIN (SELECT coalesce(l.actor, l.login::text) AS who, count(*) AS n, max(l.at) AS last_at
			   FROM schedphi.audit_log l
			   WHERE l.chain = tenant AND l.tenant = tenant AND l.patient IS NOT NULL
				 AND l.at > coalesce(v_since, '-infinity')
				 AND l.action IN ('read', 'insert', 'update', 'delete', 'break_glass', 'export')
			   GROUP BY 1) a ON a.who = x.login;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	PERFORM schedphi._audit_change('compliance', tenant, 'access_review', v_id, NULL,
		jsonb_build_object('event', 'start', 'items', v_n, 'since', v_since));
	RETURN v_id;
END
$$;

-- A decision on every item of the login in the review: keep, or revoke
-- (at once: its memberships and open grants end, as terminate_member
-- does, but without recording a termination).  Never by the login itself.
CREATE FUNCTION schedphi.review_access(review uuid, login name, decision text, note text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v schedphi.access_review;
	v_items int;
BEGIN
	IF review IS NULL THEN
		RAISE EXCEPTION 'review must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT x.* INTO v FROM schedphi.access_review x WHERE x.id = review;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('access review', review);
	END IF;
	PERFORM schedphi._authorize(v.tenant, ARRAY['admin']);
	IF login IS NULL OR decision IS NULL OR decision NOT IN ('keep', 'revoke') THEN
		RAISE EXCEPTION 'login must be given and decision be keep or revoke' USING ERRCODE = '22023';
	END IF;
	IF login::text = schedphi._actor_name() THEN
		PERFORM schedphi._deny(v.tenant, 'permission denied: review rule',
			'No one decides on their own access: another admin reviews it.');
	END IF;
	UPDATE schedphi.access_review_item i
	SET decision = review_access.decision, decided_by = schedphi._actor_name(), decided_at = now(),
		note = schedphi._check_note(review_access.note)
	WHERE i.tenant = v.tenant AND i.review = v.id AND i.login = login::text;
	GET DIAGNOSTICS v_items = ROW_COUNT;
	IF v_items = 0 THEN
		RAISE EXCEPTION 'the login has no item in this review' USING ERRCODE = '22023';
	END IF;
	IF decision = 'revoke' THEN
		PERFORM schedphi._end_access(v.tenant, login);
	END IF;
	PERFORM schedphi._audit_change('compliance', v.tenant, 'access_review', v.id, NULL,
		jsonb_build_object('event', 'decide', 'login', login, 'decision', decision, 'items', v_items));
END
$$;

-- ---------------------------------------------------------------- configuration review

CREATE FUNCTION schedphi._key_source_check(OUT status text, OUT detail text)
AS 'MODULE_PATHNAME', 'schedphi_key_source_check' LANGUAGE C VOLATILE;

-- The installation's configuration as the CIS PostgreSQL Benchmark (items
-- numbered as pgdsat labels them) and the HIPAA Security Rule ask, from
-- inside the server.  What the caller cannot read is 'not_readable', with
-- the grant that would make it readable: never an empty pass.  For the
-- admins and auditors of any tenant, and superusers.
CREATE FUNCTION schedphi.check_config()
RETURNS TABLE (check_id text, status text, detail text, reference text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v_who name := session_user;
	v_super boolean := schedphi._session_superuser();
	v text;
	n bigint;
	m bigint;
	r record;
	v_lines text;
BEGIN
	IF NOT (v_super IS TRUE OR (c.via = 'token' AND c.role IN ('admin', 'auditor')) IS TRUE
			OR (c.via IS DISTINCT FROM 'token' AND schedphi._my_roles(NULL) && ARRAY['admin', 'auditor']) IS TRUE) THEN
		PERFORM schedphi._deny(CASE WHEN c.via = 'token' THEN c.tenant END, 'permission denied: role rule',
			'check_config() is for admins and auditors.');
	END IF;

	-- transport
	check_id := 'ssl'; reference := 'CIS 6.8; 164.312(e)(1)';
	status := CASE WHEN current_setting('ssl') = 'on' THEN 'pass' ELSE 'fail' END;
	detail := 'ssl = ' || current_setting('ssl');
	RETURN NEXT;
	check_id := 'ssl_min_protocol_version'; reference := 'CIS 6.8; 164.312(e)(2)(ii)';
	v := current_setting('ssl_min_protocol_version');
	status := CASE WHEN v IN ('TLSv1.2', 'TLSv1.3') THEN 'pass' ELSE 'fail' END;
	detail := 'ssl_min_protocol_version = ' || v || CASE WHEN status = 'fail' THEN ' (TLS 1.2 or later is required)' ELSE '' END;
	RETURN NEXT;
	check_id := 'sessions_without_tls'; reference := 'CIS 5.5; 164.312(e)(1)';
	IF NOT (v_super OR pg_has_role(v_who, 'pg_read_all_stats', 'USAGE')) THEN
		status := 'not_readable';
		detail := format('other sessions'' TLS state needs: GRANT pg_read_all_stats TO %I', v_who);
	ELSE
		SELECT count(*) INTO n FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
		WHERE a.client_addr IS NOT NULL AND NOT s.ssl;
		status := CASE WHEN n = 0 THEN 'pass' ELSE 'fail' END;
		detail := n || ' open TCP session(s) without TLS';
	END IF;
	RETURN NEXT;

	-- authentication
	check_id := 'password_encryption'; reference := 'CIS 5.9; 164.312(d)';
	v := current_setting('password_encryption');
	status := CASE WHEN v = 'scram-sha-256' THEN 'pass' ELSE 'fail' END;
	detail := 'password_encryption = ' || v;
	RETURN NEXT;
	check_id := 'hba_methods'; reference := 'CIS 5.2; 164.312(d)';
	IF NOT (v_super OR (has_table_privilege(v_who, 'pg_catalog.pg_hba_file_rules', 'SELECT')
						AND has_function_privilege(v_who, 'pg_catalog.pg_hba_file_rules()', 'EXECUTE'))) THEN
		status := 'not_readable';
		detail := format('pg_hba_file_rules needs: GRANT SELECT ON pg_catalog.pg_hba_file_rules TO %1$I; '
						 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO %1$I', v_who);
	ELSE
		SELECT count(*) FILTER (WHERE h.error IS NULL AND h.type <> 'local' AND h.auth_method IN ('trust', 'password', 'md5')),
			   count(*) FILTER (WHERE h.error IS NOT NULL),
			   string_agg(h.line_number || ' ' || h.auth_method, ', ' ORDER BY h.line_number)
				   FILTER (WHERE h.error IS NULL AND h.type <> 'local' AND h.auth_method IN ('trust', 'password', 'md5'))
		INTO n, m, v_lines FROM pg_hba_file_rules h;
		status := CASE WHEN n > 0 OR m > 0 THEN 'fail' ELSE 'pass' END;
		detail := CASE WHEN n > 0 THEN 'network lines with trust, password or md5 (line method): ' || v_lines
					   WHEN m > 0 THEN m || ' line(s) of pg_hba.conf have errors'
					   ELSE 'no network line uses trust, password or md5' END;
	END IF;
	RETURN NEXT;
	check_id := 'superusers'; reference := 'CIS 4.2; 164.308(a)(3)(ii)(A)';
	SELECT count(*) INTO n FROM pg_roles WHERE rolsuper;
	status := CASE WHEN n <= 1 THEN 'pass' ELSE 'warn' END;
	detail := n || ' superuser role(s)';
	RETURN NEXT;
	check_id := 'bypassrls'; reference := 'CIS 4.5; 164.312(a)(1)';
	SELECT count(*), string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO n, v_lines
	FROM pg_roles WHERE rolbypassrls AND NOT rolsuper;
	status := CASE WHEN n = 0 THEN 'pass' ELSE 'fail' END;
	detail := CASE WHEN n = 0 THEN 'no role but superusers bypasses row-level security'
				   ELSE 'roles that bypass row-level security: ' || v_lines END;
	RETURN NEXT;
	check_id := 'connection_limits'; reference := 'CIS 5.x; 164.312(a)(1)';
	SELECT count(*) INTO n FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolconnlimit = -1;
	status := CASE WHEN n = 0 THEN 'pass' ELSE 'warn' END;
	detail := n || ' login(s) without a connection limit (ALTER ROLE ... CONNECTION LIMIT)';
	RETURN NEXT;
	check_id := 'password_expiry'; reference := 'CIS 5.3; 164.308(a)(5)(ii)(D)';
	SELECT count(*) INTO n FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolvaliduntil IS NULL;
	status := CASE WHEN n = 0 THEN 'pass' ELSE 'warn' END;
	detail := n || ' login(s) whose password never expires (ALTER ROLE ... VALID UNTIL; not needed for peer or certificate logins)';
	RETURN NEXT;

	-- logging
	check_id := 'log_connections'; reference := 'CIS 3.1.20; 164.312(b)';
	status := CASE WHEN current_setting('log_connections') = 'on' THEN 'pass' ELSE 'fail' END;
	detail := 'log_connections = ' || current_setting('log_connections');
	RETURN NEXT;
	check_id := 'log_disconnections'; reference := 'CIS 3.1.21; 164.312(b)';
	status := CASE WHEN current_setting('log_disconnections') = 'on' THEN 'pass' ELSE 'fail' END;
	detail := 'log_disconnections = ' || current_setting('log_disconnections');
	RETURN NEXT;
	check_id := 'log_line_prefix'; reference := 'CIS 3.1.24; 164.312(b)';
	v := current_setting('log_line_prefix');
	SELECT string_agg(x.k, ' ') INTO v_lines FROM (VALUES ('%u', 1), ('%d', 2), ('%a', 3)) AS x(k, o)
	WHERE strpos(v, x.k) = 0;
	IF strpos(v, '%h') = 0 AND strpos(v, '%r') = 0 THEN
		v_lines := concat_ws(' ', v_lines, '%h');
	END IF;
	status := CASE WHEN v_lines IS NULL THEN 'pass' ELSE 'fail' END;
	detail := CASE WHEN v_lines IS NULL THEN 'log lines name the user, database, application and host'
				   ELSE 'log_line_prefix lacks ' || v_lines || ' (user %u, database %d, application %a, host %h)' END;
	RETURN NEXT;
	check_id := 'log_statement'; reference := 'CIS 3.1.25; 164.312(b)';
	v := current_setting('log_statement');
	status := CASE WHEN v IN ('ddl', 'mod', 'all') THEN 'pass' ELSE 'fail' END;
	detail := 'log_statement = ' || v || CASE WHEN status = 'fail' THEN ' (ddl at least)' ELSE '' END;
	RETURN NEXT;

	-- schedphi itself
	check_id := 'schedphi_preloaded'; reference := 'CIS 6.9; 164.312(a)(2)(iv)';
	status := CASE WHEN 'schedphi' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
				   THEN 'pass' ELSE 'fail' END;
	detail := CASE WHEN status = 'pass' THEN 'schedphi is in shared_preload_libraries (its audit worker and key cache run)'
				   ELSE 'schedphi is not in shared_preload_libraries: no audit worker, keys loaded per session' END;
	RETURN NEXT;
	check_id := 'key_command'; reference := 'CIS 6.9; 164.312(a)(2)(iv)';
	SELECT k.status, k.detail INTO status, detail FROM schedphi._key_source_check() k;
	RETURN NEXT;
	check_id := 'data_key_age'; reference := '164.312(a)(2)(iv); NIST SP 800-57 cryptoperiods';
	SELECT count(*) INTO n FROM schedphi.data_key k WHERE k.status = 'active' AND k.created_at < now() - interval '1 year';
	status := CASE WHEN n = 0 THEN 'pass' ELSE 'warn' END;
	detail := CASE WHEN n = 0 THEN 'every active data key is less than a year old'
				   ELSE n || ' active data key(s) older than a year (rotate_key)' END;
	RETURN NEXT;
	check_id := 'audit_seal_lag'; reference := '164.312(b); 164.312(c)(1)';
	SELECT extract(epoch FROM now() - min(l.at))::bigint INTO n FROM schedphi.audit_log l
	WHERE l.hash IS NULL AND l.id > schedphi._audit_floor();
	status := CASE WHEN coalesce(n, 0) <= 60 THEN 'pass' ELSE 'fail' END;
	detail := CASE WHEN n IS NULL THEN 'every ledger record is sealed into its chain'
				   ELSE 'the oldest unsealed ledger record is ' || n || ' s old' ||
						CASE WHEN status = 'fail' THEN ' (the audit worker is not sealing)' ELSE '' END END;
	RETURN NEXT;
	check_id := 'require_training'; reference := '164.308(a)(5)';
	status := CASE WHEN current_setting('schedphi.require_training', true) = 'on' THEN 'pass' ELSE 'warn' END;
	detail := CASE WHEN status = 'pass' THEN 'reading or writing PHI needs current training'
				   ELSE 'schedphi.require_training is off: training is recorded but not enforced' END;
	RETURN NEXT;
	check_id := 'wal_archiving'; reference := 'CIS 7.4; 164.308(a)(7)(ii)(A)';
	IF current_setting('archive_mode') = 'off' THEN
		status := 'fail';
		detail := 'archive_mode = off: no WAL archive to restore from';
	ELSE
		SELECT * INTO r FROM pg_stat_archiver;
		IF r.last_failed_time IS NOT NULL AND (r.last_archived_time IS NULL OR r.last_failed_time > r.last_archived_time) THEN
			status := 'fail';
			detail := 'the last WAL archiving failed at ' || r.last_failed_time;
		ELSIF r.last_archived_time IS NULL THEN
			status := 'warn';
			detail := 'archive_mode is on; nothing archived yet';
		ELSIF r.last_archived_time < now() - interval '1 day' THEN
			status := 'warn';
			detail := 'the last WAL segment was archived at ' || r.last_archived_time || ' (more than a day ago)';
		ELSE
			status := 'pass';
			detail := 'the last WAL segment was archived at ' || r.last_archived_time;
		END IF;
	END IF;
	RETURN NEXT;
END
$$;

-- ---------------------------------------------------------------- the report

-- Text for HTML and for a Markdown table cell.
CREATE FUNCTION schedphi._html(p text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT replace(replace(replace(replace(replace(coalesce(p, ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
						   '"', '&quot;'), '''', '&#39;')
$$;
CREATE FUNCTION schedphi._md(p text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT regexp_replace(replace(replace(coalesce(p, ''), '\', '\\'), '|', '\|'), '[\r\n]+', ' ', 'g')
$$;

-- The evidence, as JSON: every safeguard of the contract with what shows
-- it now, what is overdue first, the configuration review, and the NPRM
-- items mapped to live or recorded evidence.
CREATE FUNCTION schedphi._compliance_json(p_tenant uuid)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t schedphi.tenant;
	v_today date;
	v_members jsonb;
	v_logins text[];
	v_keys jsonb;
	v_oldest int;
	v_chain record;
	v_lag bigint;
	v_bg jsonb;
	v_bg_unreviewed int;
	v_training jsonb;
	v_untrained text[];
	v_expiring jsonb;
	v_term jsonb;
	v_ba jsonb;
	v_risks jsonb;
	v_inc jsonb;
	v_review record;
	v_undecided int;
	v_evidence jsonb;
	v_config jsonb;
	v_overdue jsonb := '[]';
	v_safeguards jsonb;
	v_nprm jsonb;
BEGIN
	SELECT * INTO t FROM schedphi.tenant x WHERE x.tenant = p_tenant;
	v_today := (now() AT TIME ZONE t.timezone)::date;

	-- access control: who holds which role
	SELECT coalesce(jsonb_object_agg(role, n), '{}') INTO v_members
	FROM (SELECT m.role, count(*) AS n FROM schedphi.member m WHERE m.tenant = p_tenant GROUP BY m.role) x;
	v_logins := ARRAY(SELECT DISTINCT m.login::text FROM schedphi.member m WHERE m.tenant = p_tenant ORDER BY 1);

	-- encryption: the tenant's active data keys and their age
	SELECT coalesce(jsonb_agg(jsonb_build_object('purpose', k.purpose, 'key', k.id, 'kek', k.kek_id,
					'age_days', floor(extract(epoch FROM now() - k.created_at) / 86400)::int) ORDER BY k.purpose), '[]'),
		   max(floor(extract(epoch FROM now() - k.created_at) / 86400)::int)
	INTO v_keys, v_oldest
	FROM schedphi.data_key k WHERE k.tenant = p_tenant AND k.status = 'active';

	-- the ledger
	SELECT c.head_seq, encode(c.head_hash, 'hex') AS head_hash, c.records, c.sealed_at INTO v_chain
	FROM schedphi.audit_chain c WHERE c.tenant = p_tenant;
	SELECT extract(epoch FROM now() - min(l.at))::bigint INTO v_lag
	FROM schedphi.audit_log l WHERE l.chain = p_tenant AND l.hash IS NULL AND l.id > schedphi._audit_floor();

	-- break-glass in the last 90 days, and the grants not reviewed
	SELECT jsonb_build_object('grants_90_days', count(*) FILTER (WHERE g.starts > now() - interval '90 days'),
							  'unreviewed', count(*) FILTER (WHERE g.outcome IS NULL AND g.expires < now()),
							  'oldest_unreviewed', min(g.expires) FILTER (WHERE g.outcome IS NULL AND g.expires < now()))
	INTO v_bg FROM schedphi.break_glass_grant g WHERE g.tenant = p_tenant;
	v_bg_unreviewed := (v_bg->>'unreviewed')::int;

	-- training: every member's current course, who has none, who expires within 30 days
	v_untrained := ARRAY(SELECT l FROM unnest(v_logins) l
						 WHERE NOT EXISTS (SELECT 1 FROM schedphi.training x WHERE x.tenant = p_tenant AND x.login = l
										   AND x.completed <= v_today AND x.expires >= v_today));
	SELECT coalesce(jsonb_agg(jsonb_build_object('login', x.login, 'course', x.course, 'expires', x.expires)
							  ORDER BY x.expires, x.login), '[]') INTO v_expiring
	FROM (SELECT DISTINCT ON (tr.login) tr.login, tr.course, tr.expires FROM schedphi.training tr
		  WHERE tr.tenant = p_tenant AND tr.login = ANY (v_logins) AND tr.completed <= v_today AND tr.expires >= v_today
		  ORDER BY tr.login, tr.expires DESC) x
	WHERE x.expires <= v_today + 30;
	v_training := jsonb_build_object('enforced', coalesce(current_setting('schedphi.require_training', true), 'off') = 'on',
									 'members', cardinality(v_logins), 'without_current_training', to_jsonb(v_untrained),
									 'expiring_within_30_days', v_expiring);

	-- terminations: the delay until recorded, and PHI accesses after the end
	SELECT coalesce(jsonb_agg(jsonb_build_object('login', x.login, 'ended', x.at, 'recorded', x.recorded_at,
				'recorded_after_minutes', round(extract(epoch FROM x.recorded_at - x.at) / 60.0, 1),
				'memberships', x.memberships, 'grants', x.grants,
				'phi_accesses_after_end', x.after_n, 'last_phi_access', x.last_access) ORDER BY x.at DESC), '[]')
	INTO v_term
	FROM (SELECT tm.*, a.n AS after_n, a.last_at AS last_access
		  FROM schedphi.termination tm
		  LEFT JOIN LATERAL (SELECT count(*) AS n, max(l.at) AS last_at FROM schedphi.audit_log l
							 WHERE l.chain = p_tenant AND l.at > tm.at AND l.patient IS NOT NULL
							   AND l.action IN ('read', 'insert', 'update', 'delete', 'break_glass', 'export')
							   AND coalesce(l.actor, l.login::text) = tm.login) a ON true
		  WHERE tm.tenant = p_tenant) x;

	-- business associates
	SELECT coalesce(jsonb_agg(jsonb_build_object('id', b.id, 'name', b.name, 'services', b.services,
				'phi_access', b.phi_access, 'baa_signed', b.baa_signed, 'baa_expires', b.baa_expires,
				'baa_current', b.baa_signed <= v_today AND b.baa_expires >= v_today,
				'last_verified', b.last_verified,
				'verification_due', (coalesce(b.last_verified, b.baa_signed) + interval '1 year')::date)
				ORDER BY b.name, b.id), '[]')
	INTO v_ba FROM schedphi.business_associate b WHERE b.tenant = p_tenant;

	-- risks, by score
	SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'title', r.title, 'safeguard', r.safeguard,
				'likelihood', r.likelihood, 'impact', r.impact, 'score', r.likelihood * r.impact, 'owner', r.owner,
				'due', r.due, 'status', r.status,
				'history', (SELECT jsonb_agg(jsonb_build_object('at', e.at, 'status', e.status, 'by', e.by_login) ORDER BY e.at)
							FROM schedphi.risk_event e WHERE e.tenant = r.tenant AND e.risk = r.id))
				ORDER BY r.status IN ('closed', 'accepted'), r.likelihood * r.impact DESC, r.due), '[]')
	INTO v_risks FROM schedphi.risk r WHERE r.tenant = p_tenant;

	-- incidents and their deadlines
	SELECT coalesce(jsonb_agg(jsonb_build_object('id', i.id, 'kind', i.kind, 'detected', i.detected,
				'summary', i.summary, 'patients_affected', i.patients_affected,
				'notify_individuals_by', i.individuals_due, 'notify_hhs_by', i.hhs_due, 'notify_media_by', i.media_due)
				ORDER BY i.detected DESC), '[]')
	INTO v_inc FROM schedphi.incident i WHERE i.tenant = p_tenant;

	-- the last access review
	SELECT r.id, r.started_at INTO v_review FROM schedphi.access_review r
	WHERE r.tenant = p_tenant ORDER BY r.started_at DESC LIMIT 1;
	SELECT count(*) INTO v_undecided FROM schedphi.access_review_item i
	WHERE i.tenant = p_tenant AND i.review = v_review.id AND i.decision IS NULL;

	-- recorded evidence, each kind's last and next
	SELECT jsonb_agg(jsonb_build_object('kind', k.kind, 'reference', k.reference, 'last_performed', e.last,
				'due', CASE WHEN e.last IS NULL THEN v_today ELSE (e.last + k.every)::date END) ORDER BY k.kind)
	INTO v_evidence
	FROM schedphi._evidence_kinds() k
	LEFT JOIN LATERAL (SELECT max(x.performed) AS last FROM schedphi.evidence x
					   WHERE x.tenant = p_tenant AND x.kind = k.kind) e ON true;

	-- the configuration review
	SELECT jsonb_agg(jsonb_build_object('check', c.check_id, 'status', c.status, 'detail', c.detail, 'reference', c.reference)
					 ORDER BY CASE c.status WHEN 'fail' THEN 0 WHEN 'not_readable' THEN 1 WHEN 'warn' THEN 2 ELSE 3 END, c.check_id)
	INTO v_config FROM schedphi.check_config() c;

	-- what is overdue (or past a deadline), soonest first
	SELECT coalesce(jsonb_agg(o ORDER BY o->>'due', o->>'item'), '[]') INTO v_overdue FROM (
		SELECT jsonb_build_object('item', 'business associate ' || (b->>'name') || ': BAA expired', 'due', b->>'baa_expires') AS o
		FROM jsonb_array_elements(v_ba) b WHERE NOT (b->>'baa_current')::boolean
		UNION ALL
		SELECT jsonb_build_object('item', 'business associate ' || (b->>'name') || ': yearly verification', 'due', b->>'verification_due')
		FROM jsonb_array_elements(v_ba) b WHERE (b->>'verification_due')::date < v_today
		UNION ALL
		SELECT jsonb_build_object('item', 'training of ' || l, 'due', v_today::text)
		FROM unnest(v_untrained) l
		UNION ALL
		SELECT jsonb_build_object('item', 'risk: ' || (r->>'title'), 'due', r->>'due')
		FROM jsonb_array_elements(v_risks) r WHERE r->>'status' IN ('open', 'mitigating') AND (r->>'due')::date < v_today
		UNION ALL
		SELECT jsonb_build_object('item', 'incident ' || (i->>'id') || ': notice to ' || w.who || ' (confirm it was sent)', 'due', w.due)
		FROM jsonb_array_elements(v_inc) i,
			 LATERAL (VALUES ('individuals', i->>'notify_individuals_by'), ('HHS', i->>'notify_hhs_by'),
							 ('the media', i->>'notify_media_by')) AS w(who, due)
		WHERE w.due IS NOT NULL AND w.due::date < v_today AND i->>'kind' IN ('breach', 'suspected_breach')
		UNION ALL
		SELECT jsonb_build_object('item', 'access review', 'due',
			coalesce(((v_review.started_at AT TIME ZONE t.timezone) + interval '1 year')::date, v_today)::text)
		WHERE v_review.started_at IS NULL OR v_review.started_at < now() - interval '1 year'
		UNION ALL
		SELECT jsonb_build_object('item', 'access review: ' || v_undecided || ' item(s) not decided', 'due', (v_review.started_at AT TIME ZONE t.timezone)::date::text)
		WHERE v_undecided > 0
		UNION ALL
		SELECT jsonb_build_object('item', 'break-glass: ' || v_bg_unreviewed || ' grant(s) not reviewed', 'due', ((v_bg->>'oldest_unreviewed')::timestamptz AT TIME ZONE t.timezone)::date::text)
		WHERE v_bg_unreviewed > 0
		UNION ALL
		SELECT jsonb_build_object('item', 'evidence: ' || (e->>'kind'), 'due', e->>'due')
		FROM jsonb_array_elements(v_evidence) e WHERE (e->>'due')::date <= v_today
		UNION ALL
		SELECT jsonb_build_object('item', 'configuration: ' || (c->>'check') || ' (' || (c->>'status') || ')', 'due', v_today::text)
		FROM jsonb_array_elements(v_config) c WHERE c->>'status' IN ('fail', 'not_readable')) x;

	v_safeguards := jsonb_build_array(
		jsonb_build_object('id', 'access_control', 'reference', '164.312(a)(1); 164.308(a)(4)',
			'title', 'Access control: roles per tenant, an actor context nobody can forge',
			'status', 'ok', 'evidence', jsonb_build_object('members_by_role', v_members, 'logins', cardinality(v_logins),
				'mfa_required_for_tokens', current_setting('schedphi.require_mfa') = 'on',
				'identity_providers', (SELECT count(*) FROM schedphi.issuer i WHERE i.tenant = p_tenant))),
		jsonb_build_object('id', 'encryption', 'reference', '164.312(a)(2)(iv); 164.312(e)(2)(ii)',
			'title', 'PHI encrypted at rest: AES-256-GCM envelope encryption, rotatable keys',
			'status', CASE WHEN v_oldest > 365 THEN 'attention' ELSE 'ok' END,
			'evidence', jsonb_build_object('active_data_keys', v_keys, 'oldest_key_days', v_oldest)),
		jsonb_build_object('id', 'audit', 'reference', '164.312(b); 164.312(c)(1)',
			'title', 'Audit controls: every PHI access on a tamper-evident ledger',
			'status', CASE WHEN coalesce(v_lag, 0) > 60 THEN 'attention' ELSE 'ok' END,
			'evidence', jsonb_build_object('head_seq', v_chain.head_seq, 'head_hash', v_chain.head_hash,
				'records', v_chain.records, 'last_sealed', v_chain.sealed_at, 'unsealed_for_seconds', v_lag)),
		jsonb_build_object('id', 'break_glass', 'reference', '164.312(a)(2)(ii)',
			'title', 'Emergency access: time-boxed, reviewed by someone else',
			'status', CASE WHEN v_bg_unreviewed > 0 THEN 'attention' ELSE 'ok' END, 'evidence', v_bg),
		jsonb_build_object('id', 'training', 'reference', '164.308(a)(5)',
			'title', 'Security awareness and training',
			'status', CASE WHEN cardinality(v_untrained) > 0 THEN 'overdue'
						   WHEN NOT (v_training->>'enforced')::boolean THEN 'attention' ELSE 'ok' END,
			'evidence', v_training),
		jsonb_build_object('id', 'termination', 'reference', '164.308(a)(3)(ii)(C)',
			'title', 'Termination: access ends at once',
			'status', CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_term) x WHERE (x->>'phi_accesses_after_end')::int > 0)
						   THEN 'attention' ELSE 'ok' END,
			'evidence', v_term),
		jsonb_build_object('id', 'business_associates', 'reference', '164.308(b)(1); 164.314(a)',
			'title', 'Business associate agreements, verified yearly',
			'status', CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_ba) b
										WHERE NOT (b->>'baa_current')::boolean OR (b->>'verification_due')::date < v_today)
						   THEN 'overdue' ELSE 'ok' END,
			'evidence', v_ba),
		jsonb_build_object('id', 'risk_management', 'reference', '164.308(a)(1)(ii)(A)-(B)',
			'title', 'Risk analysis and management',
			'status', CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_risks) r
										WHERE r->>'status' IN ('open', 'mitigating') AND (r->>'due')::date < v_today)
						   THEN 'overdue' ELSE 'ok' END,
			'evidence', v_risks),
		jsonb_build_object('id', 'incidents', 'reference', '164.308(a)(6); 164.404-164.408',
			'title', 'Security incidents and breach notification deadlines',
			'status', 'ok', 'evidence', v_inc),
		jsonb_build_object('id', 'access_review', 'reference', '164.308(a)(3)(ii)(B); 164.308(a)(4)(ii)(C)',
			'title', 'Access reviews that act',
			'status', CASE WHEN v_review.started_at IS NULL OR v_review.started_at < now() - interval '1 year' OR v_undecided > 0
						   THEN 'overdue' ELSE 'ok' END,
			'evidence', jsonb_build_object('last_review', v_review.started_at, 'undecided_items', v_undecided)),
		jsonb_build_object('id', 'recorded_evidence', 'reference', 'HIPAA Security Rule NPRM (January 2025)',
			'title', 'Evidence held as recorded: scans, tests, plans',
			'status', CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_evidence) e WHERE (e->>'due')::date <= v_today)
						   THEN 'overdue' ELSE 'ok' END,
			'evidence', v_evidence),
		jsonb_build_object('id', 'configuration', 'reference', 'CIS PostgreSQL Benchmark; 164.312',
			'title', 'Server configuration, reviewed from inside',
			'status', CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_config) c WHERE c->>'status' IN ('fail', 'not_readable'))
						   THEN 'attention' ELSE 'ok' END,
			'evidence', v_config));

	-- the NPRM's proposals, each with what shows it
	v_nprm := jsonb_build_array(
		jsonb_build_object('item', 'Written technology asset inventory', 'shown', 'recorded', 'evidence', 'evidence kind asset_inventory'),
		jsonb_build_object('item', 'Risk analysis', 'shown', 'live and recorded', 'evidence', 'risk register; evidence kind risk_analysis'),
		jsonb_build_object('item', 'Yearly compliance audit', 'shown', 'recorded', 'evidence', 'evidence kind compliance_audit; this report'),
		jsonb_build_object('item', 'Multi-factor authentication', 'shown', 'live',
			'evidence', 'schedphi.require_mfa = ' || current_setting('schedphi.require_mfa') || ' (tokens of roles that read PHI show amr)'),
		jsonb_build_object('item', 'Encryption of ePHI at rest and in transit', 'shown', 'live',
			'evidence', 'sealed columns, oldest active data key ' || coalesce(v_oldest::text, '-') || ' days; ssl = ' || current_setting('ssl')),
		jsonb_build_object('item', 'Access ended within 1 hour of termination', 'shown', 'live', 'evidence', 'terminations and PHI accesses after them'),
		jsonb_build_object('item', 'Business associates'' yearly written verification', 'shown', 'live', 'evidence', 'verification dates and due dates'),
		jsonb_build_object('item', 'Vulnerability scans every 6 months', 'shown', 'recorded', 'evidence', 'evidence kind vulnerability_scan'),
		jsonb_build_object('item', 'Penetration test every 12 months', 'shown', 'recorded', 'evidence', 'evidence kind penetration_test'),
		jsonb_build_object('item', 'Backups and restore within 72 hours', 'shown', 'live and recorded',
			'evidence', 'WAL archiving (check_config wal_archiving); evidence kind restore_test'));

	RETURN jsonb_build_object('report', 'schedphi compliance evidence',
		'tenant', jsonb_build_object('id', t.tenant, 'name', t.name),
		'generated_at', now(), 'overdue', v_overdue, 'safeguards', v_safeguards, 'nprm', v_nprm,
		'ledger', jsonb_build_object('seq', coalesce(v_chain.head_seq, 0), 'hash', coalesce(v_chain.head_hash, repeat('0', 64))));
END
$$;

-- A value of the evidence as one line of text.
CREATE FUNCTION schedphi._evidence_text(p jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE jsonb_typeof(p)
		WHEN 'object' THEN (SELECT string_agg(k || ': ' || schedphi._evidence_text(v), '; ' ORDER BY k) FROM jsonb_each(p) x(k, v))
		WHEN 'array' THEN CASE WHEN jsonb_array_length(p) = 0 THEN 'none'
							   ELSE (SELECT string_agg(schedphi._evidence_text(v), ' / ' ORDER BY o)
									 FROM jsonb_array_elements(p) WITH ORDINALITY y(v, o)) END
		WHEN 'null' THEN '-'
		ELSE p #>> '{}' END
$$;

-- compliance_report(tenant, format): 'json', 'markdown' or 'html' (a page
-- with no external asset), what is overdue first; signed with the audit
-- key like audit_digest(), over the SHA-256 of the text and the head of
-- the tenant's ledger chain.  For the tenant's admins and auditors.
CREATE FUNCTION schedphi.compliance_report(tenant uuid, format text DEFAULT 'json')
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	j jsonb;
	v_body text;
	v_digest bytea;
	s record;
	v_seq bigint;
	v_hash bytea;
	x jsonb;
	v_lines text[] := '{}';
BEGIN
	PERFORM schedphi._authorize_evidence(schedphi._tenant_arg(tenant));
	IF format IS NULL OR format NOT IN ('json', 'markdown', 'html') THEN
		RAISE EXCEPTION 'format must be json, markdown or html' USING ERRCODE = '22023';
	END IF;
	j := schedphi._compliance_json(tenant);
	v_seq := (j->'ledger'->>'seq')::bigint;
	v_hash := decode(j->'ledger'->>'hash', 'hex');

	IF format = 'json' THEN
		v_body := j::text;
	ELSIF format = 'markdown' THEN
		v_lines := ARRAY['# Compliance evidence: ' || schedphi._md(j->'tenant'->>'name'), '',
						 'Generated ' || (j->>'generated_at') || ' from live state; ledger head ' || (j->'ledger'->>'seq') || '.', '',
						 '## Overdue', ''];
		IF jsonb_array_length(j->'overdue') = 0 THEN
			v_lines := v_lines || 'Nothing is overdue.'::text;
		ELSE
			v_lines := v_lines || ARRAY['| due | item |', '|---|---|'];
			FOR x IN SELECT e FROM jsonb_array_elements(j->'overdue') e LOOP
				v_lines := v_lines || ('| ' || schedphi._md(x->>'due') || ' | ' || schedphi._md(x->>'item') || ' |');
			END LOOP;
		END IF;
		v_lines := v_lines || ARRAY['', '## Safeguards', '', '| safeguard | status | reference | evidence |', '|---|---|---|---|'];
		FOR x IN SELECT e FROM jsonb_array_elements(j->'safeguards') e WHERE e->>'id' <> 'configuration' LOOP
			v_lines := v_lines || ('| ' || schedphi._md(x->>'title') || ' | ' || (x->>'status') || ' | '
								   || schedphi._md(x->>'reference') || ' | ' || schedphi._md(schedphi._evidence_text(x->'evidence')) || ' |');
		END LOOP;
		v_lines := v_lines || ARRAY['', '## Configuration (check_config)', '', '| check | status | detail | reference |', '|---|---|---|---|'];
		FOR x IN SELECT e FROM jsonb_array_elements(j->'safeguards') sg(v), jsonb_array_elements(sg.v->'evidence') e
				 WHERE sg.v->>'id' = 'configuration' LOOP
			v_lines := v_lines || ('| ' || schedphi._md(x->>'check') || ' | ' || (x->>'status') || ' | '
								   || schedphi._md(x->>'detail') || ' | ' || schedphi._md(x->>'reference') || ' |');
		END LOOP;
		v_lines := v_lines || ARRAY['', '## HIPAA Security Rule NPRM (January 2025)', '', '| proposal | shown | evidence |', '|---|---|---|'];
		FOR x IN SELECT e FROM jsonb_array_elements(j->'nprm') e LOOP
			v_lines := v_lines || ('| ' || schedphi._md(x->>'item') || ' | ' || (x->>'shown') || ' | ' || schedphi._md(x->>'evidence') || ' |');
		END LOOP;
		v_body := array_to_string(v_lines, E'\n') || E'\n';
	ELSE
		v_lines := ARRAY['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
			'<title>Compliance evidence: ' || schedphi._html(j->'tenant'->>'name') || '</title>',
			'<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0;width:100%}'
			'th,td{border:1px solid #bbb;padding:.3em .5em;text-align:left;vertical-align:top;font-size:.9em}'
			'th{background:#eee}.fail,.overdue{background:#fdd}.warn,.attention,.not_readable{background:#ffd}.pass,.ok{background:#dfd}'
			'footer{margin-top:2em;font-size:.8em;color:#555;word-break:break-all}</style></head><body>',
			'<h1>Compliance evidence: ' || schedphi._html(j->'tenant'->>'name') || '</h1>',
			'<p>Generated ' || schedphi._html(j->>'generated_at') || ' from live state; ledger head '
				|| schedphi._html(j->'ledger'->>'seq') || '.</p>', '<h2>Overdue</h2>'];
		IF jsonb_array_length(j->'overdue') = 0 THEN
			v_lines := v_lines || '<p>Nothing is overdue.</p>'::text;
		ELSE
			v_lines := v_lines || '<table><tr><th>due</th><th>item</th></tr>'::text;
			FOR x IN SELECT e FROM jsonb_array_elements(j->'overdue') e LOOP
				v_lines := v_lines || ('<tr class="overdue"><td>' || schedphi._html(x->>'due') || '</td><td>'
									   || schedphi._html(x->>'item') || '</td></tr>');
			END LOOP;
			v_lines := v_lines || '</table>'::text;
		END IF;
		v_lines := v_lines || ARRAY['<h2>Safeguards</h2>',
			'<table><tr><th>safeguard</th><th>status</th><th>reference</th><th>evidence</th></tr>'];
		FOR x IN SELECT e FROM jsonb_array_elements(j->'safeguards') e WHERE e->>'id' <> 'configuration' LOOP
			v_lines := v_lines || ('<tr><td>' || schedphi._html(x->>'title') || '</td><td class="' || (x->>'status') || '">'
				|| schedphi._html(x->>'status') || '</td><td>' || schedphi._html(x->>'reference') || '</td><td>'
				|| schedphi._html(schedphi._evidence_text(x->'evidence')) || '</td></tr>');
		END LOOP;
		v_lines := v_lines || ARRAY['</table>', '<h2>Configuration (check_config)</h2>',
			'<table><tr><th>check</th><th>status</th><th>detail</th><th>reference</th></tr>'];
		FOR x IN SELECT e FROM jsonb_array_elements(j->'safeguards') sg(v), jsonb_array_elements(sg.v->'evidence') e
				 WHERE sg.v->>'id' = 'configuration' LOOP
			v_lines := v_lines || ('<tr><td>' || schedphi._html(x->>'check') || '</td><td class="' || (x->>'status') || '">'
				|| schedphi._html(x->>'status') || '</td><td>' || schedphi._html(x->>'detail') || '</td><td>'
				|| schedphi._html(x->>'reference') || '</td></tr>');
		END LOOP;
		v_lines := v_lines || ARRAY['</table>', '<h2>HIPAA Security Rule NPRM (January 2025)</h2>',
			'<table><tr><th>proposal</th><th>shown</th><th>evidence</th></tr>'];
		FOR x IN SELECT e FROM jsonb_array_elements(j->'nprm') e LOOP
			v_lines := v_lines || ('<tr><td>' || schedphi._html(x->>'item') || '</td><td>' || schedphi._html(x->>'shown')
				|| '</td><td>' || schedphi._html(x->>'evidence') || '</td></tr>');
		END LOOP;
		v_lines := v_lines || '</table>'::text;
		v_body := array_to_string(v_lines, E'\n') || E'\n';
	END IF;

	-- signed: the text's SHA-256 bound to the head of the tenant's chain
	v_digest := sha256(convert_to(v_body, 'UTF8'));
	s := schedphi._audit_sign('report:' || tenant::text, v_seq, sha256(v_digest || v_hash), NULL);
	IF format = 'json' THEN
		RETURN (j || jsonb_build_object('signature', jsonb_build_object('sha256', encode(v_digest, 'hex'),
				'ledger_seq', v_seq, 'ledger_hash', encode(v_hash, 'hex'), 'key', s.key,
				'value', encode(s.signature, 'hex'))))::text;
	ELSIF format = 'markdown' THEN
		RETURN v_body || E'\n---\n' || 'Signed: sha256 ' || encode(v_digest, 'hex') || ', ledger seq ' || v_seq
			|| ', key ' || s.key || ', signature ' || encode(s.signature, 'hex') || E'\n';
	END IF;
	RETURN v_body || '<footer>Signed: sha256 ' || encode(v_digest, 'hex') || ', ledger seq ' || v_seq
		|| ', key ' || schedphi._html(s.key) || ', signature ' || encode(s.signature, 'hex') || E'</footer>\n</body></html>\n';
END
$$;

-- verify_report(tenant, report): does a report that compliance_report()
-- gave (in any format) still verify?  True when its text is unchanged, the
-- tenant's ledger still holds the record it is anchored to, and the
-- signature is this database's audit key's over both.  False when the text
-- was altered, the ledger record is gone or changed, or the signature is
-- not ours; 22023 when it carries no signature at all.  For the tenant's
-- admins and auditors.
CREATE FUNCTION schedphi.verify_report(tenant uuid, report text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_body text;
	m text[];
	v_sha text;
	v_seq bigint;
	v_key text;
	v_sig text;
	v_hash bytea;
	j jsonb;
BEGIN
	PERFORM schedphi._authorize_evidence(schedphi._tenant_arg(tenant));
	IF report IS NULL THEN
		RAISE EXCEPTION 'report must not be null' USING ERRCODE = '22023';
	END IF;
	IF left(ltrim(report), 1) = '{' THEN
		BEGIN
			j := report::jsonb;
		EXCEPTION WHEN invalid_text_representation THEN
			j := NULL;
		END;
		IF j IS NOT NULL AND jsonb_typeof(j->'signature') = 'object' THEN
			v_body := (j - 'signature')::text;
			v_sha := j #>> '{signature,sha256}';
			v_seq := CASE WHEN j #>> '{signature,ledger_seq}' ~ '^[0-9]{1,18}$' THEN (j #>> '{signature,ledger_seq}')::bigint END;
			v_key := j #>> '{signature,key}';
			v_sig := j #>> '{signature,value}';
		END IF;
	ELSE
		m := regexp_match(report, '^(.*)(?:\n---\n|<footer>)Signed: sha256 ([0-9a-f]{64}), ledger seq ([0-9]{1,18}), key ([^,<\n]+), signature ([0-9a-f]+)(?:\n|</footer>\n</body></html>\n)$');
		IF m IS NOT NULL THEN
			v_body := m[1];
			v_sha := m[2];
			v_seq := m[3]::bigint;
			v_key := replace(replace(replace(replace(replace(m[4], '&#39;', ''''), '&quot;', '"'), '&gt;', '>'), '&lt;', '<'), '&amp;', '&');
			v_sig := m[5];
		END IF;
	END IF;
	IF v_sha IS NULL OR v_seq IS NULL OR v_key IS NULL OR v_sig IS NULL OR v_sig !~ '^[0-9a-f]+$' THEN
		RAISE EXCEPTION 'report must be what schedphi.compliance_report() returned, with its signature' USING ERRCODE = '22023';
	END IF;
	IF encode(sha256(convert_to(v_body, 'UTF8')), 'hex') <> v_sha THEN
		RETURN false;			-- the text was altered
	END IF;
	IF v_seq = 0 THEN
		v_hash := decode(repeat('0', 64), 'hex');
	ELSE
		SELECT l.hash INTO v_hash FROM schedphi.audit_log l WHERE l.chain = tenant AND l.seq = v_seq;
		IF v_hash IS NULL THEN
			RETURN false;		-- the ledger no longer holds the record the report is anchored to
		END IF;
	END IF;
	RETURN (schedphi._audit_sign('report:' || tenant::text, v_seq, sha256(decode(v_sha, 'hex') || v_hash), v_key)).signature
		   = decode(v_sig, 'hex');
END
$$;

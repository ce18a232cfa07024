-- schedphi install script, part 4: patients.
--
-- Every field is sealed for its place (tenant, 'patient', column, id); the
-- look-ups use blind indexes of normalised values: trimmed, case-folded
-- names, digits-only phone, lower-cased e-mail, upper-cased MRN.
-- No error raised here ever includes the value that was refused.

-- The checks and normal forms of a patient's fields, one implementation
-- in C (src/patient_fields.c) for register_patient, find_patient and the
-- bulk import: trimmed, case-folded names, digits-only phone, lower-cased
-- e-mail, upper-cased MRN and ZIP; the family-and-birth-date blind-index
-- input ignores the session's DateStyle and how an accent was composed
-- (YYYY-MM-DD, Unicode NFC).  Every refusal is 22023 naming the field.
CREATE FUNCTION schedphi._norm_phone(p_phone text) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_norm_phone_sql' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION schedphi._norm_email(p_email text) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_norm_email_sql' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION schedphi._norm_mrn(p_mrn text) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_norm_mrn_sql' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION schedphi._norm_zip(p_zip text) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_norm_zip_sql' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION schedphi._check_birth_date(p_birth date) RETURNS date
AS 'MODULE_PATHNAME', 'schedphi_check_birth_date_sql' LANGUAGE C STABLE;
CREATE FUNCTION schedphi._family_dob(p_family text, p_birth date) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_family_dob_sql' LANGUAGE C IMMUTABLE STRICT;

-- A registration's fields checked and normalised, as register_patient and
-- the bulk import (patient_import) store them: names trimmed, the birth
-- date as YYYY-MM-DD, phone digits, lower-case e-mail, upper-case MRN and
-- ZIP, and the family-and-birth-date blind-index input.  Every refusal is
-- 22023 naming the field, never its value.
CREATE FUNCTION schedphi._patient_fields(p_given text, p_family text, p_birth date, p_phone text, p_email text,
	p_mrn text, p_zip text,
	OUT given text, OUT family text, OUT birth_date text, OUT phone text, OUT email text, OUT mrn text,
	OUT zip text, OUT family_dob text)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_birth date := schedphi._check_birth_date(p_birth);
BEGIN
	given := schedphi._check_name('given', p_given);
	family := schedphi._check_name('family', p_family);
	birth_date := pg_catalog.to_char(v_birth, 'YYYY-MM-DD');
	phone := schedphi._norm_phone(p_phone);
	email := schedphi._norm_email(p_email);
	mrn := schedphi._norm_mrn(p_mrn);
	zip := schedphi._norm_zip(p_zip);
	family_dob := schedphi._family_dob(family, v_birth);
END
$$;

CREATE FUNCTION schedphi.register_patient(tenant uuid, given text, family text, birth_date date,
										  phone text DEFAULT NULL, email text DEFAULT NULL,
										  mrn text DEFAULT NULL, zip text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid := gen_random_uuid();
	f record := schedphi._patient_fields(given, family, birth_date, phone, email, mrn, zip);
	v_mrn_idx bytea;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['scheduler', 'integration']);
	v_mrn_idx := schedphi._blind(tenant, 'mrn', f.mrn);
	-- No look-up first: the unique index decides.  (A look-up planned once
	-- per session, generic, while the table was empty, chose an index on the
	-- tenant alone and so read every patient of the tenant on each call: the
	-- cost grew with each registration of a long session.)
	INSERT INTO schedphi.patient AS x (tenant, id, given, family, birth_date, phone, email, mrn, zip,
									   mrn_idx, phone_idx, email_idx, family_dob_idx)
	VALUES (tenant, v_id,
			schedphi._seal(tenant, 'patient', 'given', v_id, f.given),
			schedphi._seal(tenant, 'patient', 'family', v_id, f.family),
			schedphi._seal(tenant, 'patient', 'birth_date', v_id, f.birth_date),
			schedphi._seal(tenant, 'patient', 'phone', v_id, f.phone),
			schedphi._seal(tenant, 'patient', 'email', v_id, f.email),
			schedphi._seal(tenant, 'patient', 'mrn', v_id, f.mrn),
			schedphi._seal(tenant, 'patient', 'zip', v_id, f.zip),
			v_mrn_idx,
			schedphi._blind(tenant, 'phone', f.phone),
			schedphi._blind(tenant, 'email', f.email),
			schedphi._blind(tenant, 'family_dob', f.family_dob))
	ON CONFLICT ON CONSTRAINT patient_mrn_unique DO NOTHING
	RETURNING x.id INTO v_id;
	IF v_id IS NULL THEN
		PERFORM schedphi._mrn_taken_record(tenant, v_mrn_idx, 'register_patient');
		RAISE EXCEPTION 'a patient with this mrn is already registered' USING ERRCODE = '23505';
	END IF;
	RETURN v_id;
END
$$;

-- A registration refused because the MRN is taken tells that it is, as a
-- look-up would: on record like one, naming the patient (looked up only
-- now, planned for the table as it is).  The caller then raises 23505.
CREATE FUNCTION schedphi._mrn_taken_record(p_tenant uuid, p_mrn_idx bytea, p_by text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	v_dup uuid;
BEGIN
	EXECUTE 'SELECT p.id FROM schedphi.patient p WHERE p.tenant = $1 AND p.mrn_idx = $2'
		INTO v_dup USING p_tenant, p_mrn_idx;
	IF v_dup IS NOT NULL THEN
		PERFORM schedphi._audit_event('read', p_tenant, 'patient', v_dup, v_dup,
									  jsonb_build_object('lookup', jsonb_build_array('mrn'), 'by', p_by));
	END IF;
END
$$;

-- Bulk registration (an addition to the SPEC, beside register_patient):
--   COPY schedphi.patient_import (given, family, birth_date, phone, email, mrn, zip) FROM ...
-- with the same checks, sealing, blind indexes and audit records as
-- register_patient, all or nothing per COPY (it is one statement).  Every
-- column is text, so that no value is ever quoted by a conversion error;
-- birth_date is YYYY-MM-DD.  tenant may be given as a column; otherwise it
-- is the caller's (the token's, or the one tenant where the login
-- registers patients).  A bad row fails the COPY with its line number and
-- the field at fault, never a value (schedphi.c trims the line COPY would
-- quote from the error's context).  The work is src/import.c.
CREATE VIEW schedphi.patient_import AS
	SELECT NULL::text AS tenant, NULL::text AS given, NULL::text AS family, NULL::text AS birth_date,
		   NULL::text AS phone, NULL::text AS email, NULL::text AS mrn, NULL::text AS zip
	WHERE false;

-- The tenant of a COPY into patient_import, authorised: given (a uuid,
-- as text) or else the caller's one tenant for registering patients.
CREATE FUNCTION schedphi._import_tenant(p_tenant text)
RETURNS uuid
LANGUAGE plpgsql
AS $$
DECLARE
	c record := schedphi._context();
	v uuid;
	n int;
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
BEGIN
	IF p_tenant IS NOT NULL THEN
		IF p_tenant !~* '^\s*[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\s*$' THEN
			RAISE EXCEPTION 'tenant is not a uuid' USING ERRCODE = '22023';
		END IF;
		v := btrim(p_tenant)::uuid;
	ELSIF c.via = 'token' THEN
		v := c.tenant;
	ELSE
		SELECT min(m.tenant::text)::uuid, count(DISTINCT m.tenant) INTO v, n FROM schedphi.member m
		WHERE m.role IN ('scheduler', 'integration') AND m.login = v_login AND m.login_oid = v_oid
		  AND pg_catalog.pg_has_role(v_login, 'schedphi_' || m.role, 'MEMBER');
		IF n <> 1 THEN
			RAISE EXCEPTION 'tenant must be given' USING ERRCODE = '22023',
				DETAIL = 'The login registers patients in no tenant or in several: COPY the tenant column too.';
		END IF;
	END IF;
	PERFORM schedphi._authorize(v, ARRAY['scheduler', 'integration']);
	RETURN v;
END
$$;

CREATE FUNCTION schedphi._patient_import_row() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_patient_import_row'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION schedphi._patient_import_flush() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_patient_import_flush'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER import INSTEAD OF INSERT ON schedphi.patient_import
	FOR EACH ROW EXECUTE FUNCTION schedphi._patient_import_row();
CREATE TRIGGER import_flush AFTER INSERT ON schedphi.patient_import
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._patient_import_flush();

CREATE FUNCTION schedphi.find_patient(tenant uuid, mrn text DEFAULT NULL, phone text DEFAULT NULL,
									  email text DEFAULT NULL, family text DEFAULT NULL,
									  birth_date date DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_mrn text := schedphi._norm_mrn(mrn);
	v_phone text := schedphi._norm_phone(phone);
	v_email text := schedphi._norm_email(email);
	v_family text := nullif(lower(btrim(family)), '');
	v_mrn_idx bytea;
	v_phone_idx bytea;
	v_email_idx bytea;
	v_fd_idx bytea;
	v_role text;
	v_detail jsonb;
	v_id uuid;
	v_match record;
	v_found boolean := false;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['scheduler', 'integration', 'clinician', 'billing']);
	-- A match tells who a phone number, an email or an MRN belongs to: the
	-- minimum necessary of each role, as for patient_record.  (A superuser,
	-- who may compute the blind indexes anyway, looks up as before.)
	v_role := schedphi._member_role(tenant, ARRAY['scheduler', 'integration', 'clinician', 'billing']);
	IF v_role = 'billing' AND (mrn IS NOT NULL OR phone IS NOT NULL OR email IS NOT NULL) THEN
		PERFORM schedphi._deny(tenant, 'permission denied: role rule',
			'Billing sees name and birth date only, and looks patients up by family name and birth date.');
	END IF;
	PERFORM schedphi._note_lookup(tenant, schedphi._actor_name());
	IF v_mrn IS NULL AND v_phone IS NULL AND v_email IS NULL AND v_family IS NULL THEN
		RAISE EXCEPTION 'find_patient needs mrn, phone, email, or family with birth_date'
			USING ERRCODE = '22023';
	END IF;
	IF (v_family IS NULL) <> (birth_date IS NULL) THEN
		RAISE EXCEPTION 'family and birth_date must be given together' USING ERRCODE = '22023';
	END IF;
	-- a date no registration accepts is a bad argument, whatever its size
	IF birth_date IS NOT NULL THEN
		PERFORM schedphi._check_birth_date(birth_date);
	END IF;
	v_mrn_idx := schedphi._blind(tenant, 'mrn', v_mrn);
	v_phone_idx := schedphi._blind(tenant, 'phone', v_phone);
	v_email_idx := schedphi._blind(tenant, 'email', v_email);
	v_fd_idx := schedphi._blind(tenant, 'family_dob', schedphi._family_dob(v_family, birth_date));
	-- Each match is recorded as a read of the patient (access_report lists
	-- it), and a lookup that matched nobody once: probing leaves a trace.
	v_detail := jsonb_build_object('lookup', to_jsonb(array_remove(ARRAY[
		CASE WHEN v_mrn IS NOT NULL THEN 'mrn' END, CASE WHEN v_phone IS NOT NULL THEN 'phone' END,
		CASE WHEN v_email IS NOT NULL THEN 'email' END,
		CASE WHEN v_family IS NOT NULL THEN 'family_dob' END], NULL)));
	-- Driven by the most selective criterion given, by its own index (the
	-- partial indexes cannot serve "tenant" alone, so even a plan made on an
	-- empty table is this one); the other criteria filter.
	FOR v_match IN
		SELECT p.id, p.created_at FROM schedphi.patient p
		WHERE p.tenant = tenant AND v_mrn_idx IS NOT NULL AND p.mrn_idx = v_mrn_idx
		  AND (v_phone_idx IS NULL OR p.phone_idx = v_phone_idx)
		  AND (v_email_idx IS NULL OR p.email_idx = v_email_idx)
		  AND (v_fd_idx IS NULL OR p.family_dob_idx = v_fd_idx)
		  AND (v_role <> 'clinician' OR schedphi._own_patient(tenant, p.id) OR schedphi._break_glass_active(tenant, p.id))
		UNION ALL
		SELECT p.id, p.created_at FROM schedphi.patient p
		WHERE p.tenant = tenant AND v_mrn_idx IS NULL AND v_phone_idx IS NOT NULL AND p.phone_idx = v_phone_idx
		  AND (v_email_idx IS NULL OR p.email_idx = v_email_idx)
		  AND (v_fd_idx IS NULL OR p.family_dob_idx = v_fd_idx)
		  AND (v_role <> 'clinician' OR schedphi._own_patient(tenant, p.id) OR schedphi._break_glass_active(tenant, p.id))
		UNION ALL
		SELECT p.id, p.created_at FROM schedphi.patient p
		WHERE p.tenant = tenant AND v_mrn_idx IS NULL AND v_phone_idx IS NULL AND v_email_idx IS NOT NULL
		  AND p.email_idx = v_email_idx
		  AND (v_fd_idx IS NULL OR p.family_dob_idx = v_fd_idx)
		  AND (v_role <> 'clinician' OR schedphi._own_patient(tenant, p.id) OR schedphi._break_glass_active(tenant, p.id))
		UNION ALL
		SELECT p.id, p.created_at FROM schedphi.patient p
		WHERE p.tenant = tenant AND v_mrn_idx IS NULL AND v_phone_idx IS NULL AND v_email_idx IS NULL
		  AND v_fd_idx IS NOT NULL AND p.family_dob_idx = v_fd_idx
		  AND (v_role <> 'clinician' OR schedphi._own_patient(tenant, p.id) OR schedphi._break_glass_active(tenant, p.id))
		-- in order of registration
		ORDER BY 2, 1
	LOOP
		v_id := v_match.id;
		PERFORM schedphi._audit_event('read', tenant, 'patient', v_id, v_id, v_detail);
		v_found := true;
		RETURN NEXT v_id;
	END LOOP;
	IF NOT v_found THEN
		PERFORM schedphi._audit_event('read', tenant, 'patient', NULL, NULL,
									  v_detail || jsonb_build_object('matches', 0));
	END IF;
END
$$;

-- The role the caller acts with in the tenant: the first of p_roles it
-- holds (the token's, 'superuser', or the login's membership, cached in
-- src/membership.c until a membership changes), or NULL.
CREATE FUNCTION schedphi._member_role(p_tenant uuid, p_roles text[])
RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_member_role_sql'
LANGUAGE C STABLE STRICT;

-- The practitioner the calling clinician acts for in the tenant (from the
-- assumed token, or else the login's membership), or NULL.
CREATE FUNCTION schedphi._clinician_practitioner(p_tenant uuid)
RETURNS uuid
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
	v_practitioner uuid;
BEGIN
	IF c.via = 'token' THEN
		RETURN CASE WHEN c.tenant = p_tenant AND c.role = 'clinician' THEN c.practitioner END;
	END IF;
	SELECT m.practitioner INTO v_practitioner FROM schedphi.member m
	WHERE m.tenant = p_tenant AND m.login = v_login AND m.login_oid = v_oid AND m.role = 'clinician';
	IF pg_catalog.pg_has_role(v_login, 'schedphi_clinician', 'MEMBER') THEN
		RETURN v_practitioner;
	END IF;
	RETURN NULL;
END
$$;

-- A clinician's own patients: those with an appointment (past or future,
-- any status) with the clinician's practitioner.
CREATE FUNCTION schedphi._own_patient(p_tenant uuid, p_patient uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_practitioner uuid := schedphi._clinician_practitioner(p_tenant);
BEGIN
	RETURN EXISTS (SELECT 1 FROM schedphi.appointment a
				   WHERE a.tenant = p_tenant AND a.patient = p_patient AND v_practitioner = ANY (a.actors));
END
$$;

-- Who the caller is, as recorded: the token's subject, or the login.
CREATE FUNCTION schedphi._actor_name()
RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_actor_name'
LANGUAGE C STABLE;

-- Is the caller reading under an active break-glass grant for this
-- patient (with EMERGENCY as the purpose of the transaction)?
CREATE FUNCTION schedphi._break_glass_active(p_tenant uuid, p_patient uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_actor text := schedphi._actor_name();
	v_login name := session_user;
BEGIN
	IF (SELECT c.purpose FROM schedphi._context() c) IS DISTINCT FROM 'EMERGENCY' THEN
		RETURN false;
	END IF;
	RETURN EXISTS (SELECT 1 FROM schedphi.break_glass_grant g
				   WHERE g.tenant = p_tenant AND g.patient = p_patient
					 AND g.actor = v_actor AND g.login = v_login
					 AND now() >= g.starts AND now() < g.expires);
END
$$;

-- May the caller list this patient?  Scheduler, integration and billing:
-- every patient of the tenant; a clinician: their own patients; a
-- superuser: every row (no decrypted field).  Callable by anyone: it only
-- answers about the caller.
CREATE FUNCTION schedphi._patient_visible(p_tenant uuid, p_patient uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_role text := schedphi._member_role(p_tenant, ARRAY['scheduler', 'integration', 'clinician', 'billing', 'admin']);
BEGIN
	RETURN CASE v_role
		WHEN 'clinician' THEN schedphi._own_patient(p_tenant, p_patient)
			OR schedphi._break_glass_active(p_tenant, p_patient)
		WHEN 'admin' THEN schedphi._break_glass_active(p_tenant, p_patient)
		ELSE v_role IS NOT NULL END;
END
$$;

-- The decrypted fields of a patient that the caller's role may see
-- (minimum necessary: billing sees name and birth date only; a clinician
-- sees their own patients; a superuser, who is no member, sees none).
-- It works out the caller's role itself, so calling it directly gains
-- nothing.
CREATE FUNCTION schedphi._patient_json(p schedphi.patient)
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN p_role IS NULL OR p_role = 'superuser'
			 OR (p_role = 'clinician' AND NOT schedphi._own_patient(p.tenant, p.id)
				 AND NOT schedphi._break_glass_active(p.tenant, p.id))
			 OR (p_role = 'admin' AND NOT schedphi._break_glass_active(p.tenant, p.id)) THEN
			jsonb_build_object('id', p.id, 'tenant', p.tenant)
		-- counted against schedphi.reveal_rate_limit before anything is decrypted
		WHEN NOT schedphi._note_reveal(p.tenant, schedphi._actor_name(), p.id) THEN NULL
		WHEN p_role = 'billing' THEN
			jsonb_build_object('id', p.id, 'tenant', p.tenant,
				'given', schedphi._open(p.given, p.tenant, 'patient', 'given', p.id),
				'family', schedphi._open(p.family, p.tenant, 'patient', 'family', p.id),
				'birth_date', schedphi._open(p.birth_date, p.tenant, 'patient', 'birth_date', p.id))
		ELSE
			jsonb_strip_nulls(jsonb_build_object('id', p.id, 'tenant', p.tenant,
				'given', schedphi._open(p.given, p.tenant, 'patient', 'given', p.id),
				'family', schedphi._open(p.family, p.tenant, 'patient', 'family', p.id),
				'birth_date', schedphi._open(p.birth_date, p.tenant, 'patient', 'birth_date', p.id),
				'phone', schedphi._open(p.phone, p.tenant, 'patient', 'phone', p.id),
				'email', schedphi._open(p.email, p.tenant, 'patient', 'email', p.id),
				'mrn', schedphi._open(p.mrn, p.tenant, 'patient', 'mrn', p.id),
				'zip', schedphi._open(p.zip, p.tenant, 'patient', 'zip', p.id)))
	END
	FROM (SELECT schedphi._member_role(p.tenant, ARRAY['scheduler', 'integration', 'clinician', 'billing',
														'admin']) AS p_role) r
$$;

CREATE FUNCTION schedphi.patient_record(patient uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid;
	v_roles text[] := ARRAY['scheduler', 'integration', 'clinician', 'billing', 'admin'];
	v_role text;
	v_row schedphi.patient;
	v_json jsonb;
BEGIN
	-- a refusal names the patient asked for (access_report lists it)
	PERFORM schedphi._audit_target('patient', patient, patient);
	v_tenant := schedphi._patient_tenant(patient);
	PERFORM schedphi._authorize(v_tenant, v_roles);
	v_role := schedphi._member_role(v_tenant, v_roles);
	IF v_role = 'superuser' THEN
		PERFORM schedphi._deny(v_tenant, 'permission denied: PHI rule',
			'Decrypting patient data needs a role that reads it in the patient''s tenant; superusers too.');
	END IF;
	IF v_role = 'clinician' AND NOT schedphi._own_patient(v_tenant, patient)
	   AND NOT schedphi._break_glass_active(v_tenant, patient) THEN
		PERFORM schedphi._deny(v_tenant, 'permission denied: own patients rule',
			'A clinician reads the patients who have an appointment with their practitioner.',
			'In an emergency: schedphi.break_glass(patient, reason), then set_purpose(''EMERGENCY'').');
	END IF;
	IF v_role = 'admin' AND NOT schedphi._break_glass_active(v_tenant, patient) THEN
		PERFORM schedphi._deny(v_tenant, 'permission denied: break-glass rule',
			'An administrator reads patient data only under an active break-glass grant, with purpose EMERGENCY.');
	END IF;
	SELECT * INTO v_row FROM schedphi.patient p WHERE p.tenant = v_tenant AND p.id = patient;
	v_json := schedphi._patient_json(v_row);
	PERFORM schedphi._audit_target(NULL, NULL, NULL);	-- no later refusal is about this patient
	RETURN v_json;
END
$$;

-- One decrypted field of a patient, if the caller's role may see it (the
-- rules of _patient_json); counted against the reveal limit and recorded
-- as read.  Costed high, so that the planner evaluates it after the
-- query's WHERE, ORDER BY and LIMIT: only the rows a query returns are
-- decrypted and recorded.  Anyone may call it; a value opens only for the
-- (tenant, row, column) it was sealed for, and the checks are on those.
CREATE FUNCTION schedphi._patient_field(p_tenant uuid, p_id uuid, p_col text, p_value schedphi.sealed)
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
COST 1000
AS $$
	SELECT CASE
		WHEN p_value IS NULL
			 OR r.p_role IS NULL OR r.p_role = 'superuser'
			 OR (r.p_role = 'billing' AND p_col NOT IN ('given', 'family', 'birth_date'))
			 OR (r.p_role = 'clinician' AND NOT schedphi._own_patient(p_tenant, p_id)
				 AND NOT schedphi._break_glass_active(p_tenant, p_id))
			 OR (r.p_role = 'admin' AND NOT schedphi._break_glass_active(p_tenant, p_id)) THEN NULL
		-- counted against schedphi.reveal_rate_limit before anything is decrypted
		WHEN NOT schedphi._note_reveal(p_tenant, schedphi._actor_name(), p_id) THEN NULL
		ELSE schedphi._open(p_value, p_tenant, 'patient', p_col, p_id)
	END
	FROM (SELECT schedphi._member_role(p_tenant, ARRAY['scheduler', 'integration', 'clinician', 'billing',
														 'admin']) AS p_role) r
$$;

-- The rows: one per patient the caller may list (_patient_visible), as
-- ciphertext.  A barrier, so that the caller's own conditions see no row
-- before that check.
CREATE VIEW schedphi._patients_visible WITH (security_barrier) AS
	SELECT p.id, p.tenant, p.given, p.family, p.birth_date, p.phone, p.email, p.mrn, p.zip, p.created_at
	FROM schedphi.patient p
	WHERE schedphi._patient_visible(p.tenant, p.id);

-- What callers read: the decrypted fields the caller's role may see (NULL
-- otherwise, and for a superuser), decrypted only for the rows the query
-- returns (SELECT ... ORDER BY id LIMIT 50 decrypts and records 50).
CREATE VIEW schedphi.patients AS
	SELECT v.id, v.tenant,
		   schedphi._patient_field(v.tenant, v.id, 'given', v.given) AS given,
		   schedphi._patient_field(v.tenant, v.id, 'family', v.family) AS family,
		   schedphi._patient_field(v.tenant, v.id, 'birth_date', v.birth_date)::date AS birth_date,
		   schedphi._patient_field(v.tenant, v.id, 'phone', v.phone) AS phone,
		   schedphi._patient_field(v.tenant, v.id, 'email', v.email) AS email,
		   schedphi._patient_field(v.tenant, v.id, 'mrn', v.mrn) AS mrn,
		   schedphi._patient_field(v.tenant, v.id, 'zip', v.zip) AS zip
	FROM schedphi._patients_visible v;

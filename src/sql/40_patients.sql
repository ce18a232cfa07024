-- schedphi install script, part 4: patients.
--
-- PROVISIONAL storage (see 10_tables.sql): the field-encryption work seals
-- every field and replaces the lookups below with blind indexes.  The
-- normalisation rules are the ones the blind indexes will use: trimmed,
-- case-folded names, digits-only phone, lower-cased e-mail.
-- No error raised here ever includes the value that was refused.

CREATE FUNCTION schedphi._norm_phone(p_phone text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	v text;
BEGIN
	IF p_phone IS NULL THEN
		RETURN NULL;
	END IF;
	IF p_phone !~ '^\s*\+?[0-9 ().-]+\s*$' THEN
		RAISE EXCEPTION 'invalid phone number' USING ERRCODE = '22023',
			DETAIL = 'A phone number holds 7 to 15 digits, optionally with +, spaces, dots, dashes and parentheses.';
	END IF;
	v := regexp_replace(p_phone, '[^0-9]', '', 'g');
	IF length(v) NOT BETWEEN 7 AND 15 THEN
		RAISE EXCEPTION 'invalid phone number' USING ERRCODE = '22023',
			DETAIL = 'A phone number holds 7 to 15 digits, optionally with +, spaces, dots, dashes and parentheses.';
	END IF;
	RETURN v;
END
$$;

CREATE FUNCTION schedphi._norm_email(p_email text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	v text := lower(btrim(p_email));
BEGIN
	IF p_email IS NULL THEN
		RETURN NULL;
	END IF;
	IF length(v) > 254 OR v !~ '^[a-z0-9.!#$%&''*+/=?^_`{|}~-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$' THEN
		RAISE EXCEPTION 'invalid email address' USING ERRCODE = '22023',
			DETAIL = 'An email address looks like name@example.org.';
	END IF;
	RETURN v;
END
$$;

CREATE FUNCTION schedphi._norm_mrn(p_mrn text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_mrn IS NULL THEN
		RETURN NULL;
	END IF;
	IF btrim(p_mrn) !~ '^[A-Za-z0-9._/-]{1,64}$' THEN
		RAISE EXCEPTION 'invalid mrn' USING ERRCODE = '22023',
			DETAIL = 'An MRN holds 1 to 64 letters, digits, dots, dashes, slashes or underscores.';
	END IF;
	RETURN upper(btrim(p_mrn));
END
$$;

CREATE FUNCTION schedphi._norm_zip(p_zip text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_zip IS NULL THEN
		RETURN NULL;
	END IF;
	IF btrim(p_zip) !~ '^[A-Za-z0-9][A-Za-z0-9 -]{1,8}[A-Za-z0-9]$' THEN
		RAISE EXCEPTION 'invalid zip' USING ERRCODE = '22023',
			DETAIL = 'A postal code holds 3 to 10 letters, digits, spaces or dashes.';
	END IF;
	RETURN upper(btrim(p_zip));
END
$$;

CREATE FUNCTION schedphi._check_birth_date(p_birth date)
RETURNS date
LANGUAGE plpgsql STABLE
AS $$
BEGIN
	IF p_birth IS NULL OR p_birth > current_date OR p_birth < date '1880-01-01' THEN
		RAISE EXCEPTION 'invalid birth_date' USING ERRCODE = '22023',
			DETAIL = 'A birth date lies between 1880-01-01 and today.';
	END IF;
	RETURN p_birth;
END
$$;

CREATE FUNCTION schedphi.register_patient(tenant uuid, given text, family text, birth_date date,
										  phone text DEFAULT NULL, email text DEFAULT NULL,
										  mrn text DEFAULT NULL, zip text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid;
	v_mrn text := schedphi._norm_mrn(mrn);
BEGIN
	PERFORM schedphi._authorize(tenant, ARRAY['scheduler', 'integration']);
	IF v_mrn IS NOT NULL AND EXISTS (SELECT 1 FROM schedphi.patient p WHERE p.tenant = tenant AND p.mrn = v_mrn) THEN
		RAISE EXCEPTION 'a patient with this mrn is already registered' USING ERRCODE = '23505';
	END IF;
	INSERT INTO schedphi.patient (tenant, given, family, birth_date, phone, email, mrn, zip)
	VALUES (tenant, schedphi._check_name('given', given), schedphi._check_name('family', family),
			schedphi._check_birth_date(birth_date), schedphi._norm_phone(phone),
			schedphi._norm_email(email), v_mrn, schedphi._norm_zip(zip))
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

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
	v_family text := lower(btrim(family));
BEGIN
	PERFORM schedphi._authorize(tenant, ARRAY['scheduler', 'integration', 'clinician', 'billing']);
	IF v_mrn IS NULL AND v_phone IS NULL AND v_email IS NULL AND v_family IS NULL THEN
		RAISE EXCEPTION 'find_patient needs mrn, phone, email, or family with birth_date'
			USING ERRCODE = '22023';
	END IF;
	IF (v_family IS NULL) <> (birth_date IS NULL) THEN
		RAISE EXCEPTION 'family and birth_date must be given together' USING ERRCODE = '22023';
	END IF;
	RETURN QUERY
		SELECT p.id FROM schedphi.patient p
		WHERE p.tenant = tenant
		  AND (v_mrn IS NULL OR p.mrn = v_mrn)
		  AND (v_phone IS NULL OR p.phone = v_phone)
		  AND (v_email IS NULL OR p.email = v_email)
		  AND (v_family IS NULL OR (lower(p.family) = v_family AND p.birth_date = birth_date))
		ORDER BY p.created_at, p.id;
END
$$;

-- The fields of a patient a role may see (interim minimum-necessary rule:
-- billing sees name and birth date only).
CREATE FUNCTION schedphi._patient_json(p schedphi.patient, p_role text)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
	SELECT CASE WHEN p_role = 'billing' THEN
		jsonb_build_object('id', p.id, 'tenant', p.tenant, 'given', p.given, 'family', p.family,
						   'birth_date', p.birth_date)
	ELSE
		jsonb_strip_nulls(jsonb_build_object('id', p.id, 'tenant', p.tenant, 'given', p.given,
						   'family', p.family, 'birth_date', p.birth_date, 'phone', p.phone,
						   'email', p.email, 'mrn', p.mrn, 'zip', p.zip))
	END
$$;

CREATE FUNCTION schedphi._member_role(p_tenant uuid, p_roles text[])
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
		THEN 'superuser'
		ELSE (SELECT m.role FROM schedphi.member m
			  WHERE m.tenant = p_tenant AND m.login = session_user AND m.role = ANY (p_roles)
			  ORDER BY array_position(p_roles, m.role) LIMIT 1) END
$$;

CREATE FUNCTION schedphi.patient_record(patient uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid := schedphi._patient_tenant(patient);
	v_roles text[] := ARRAY['scheduler', 'integration', 'clinician', 'billing'];
	v_row schedphi.patient;
BEGIN
	PERFORM schedphi._authorize(v_tenant, v_roles);
	SELECT * INTO v_row FROM schedphi.patient p WHERE p.tenant = v_tenant AND p.id = patient;
	RETURN schedphi._patient_json(v_row, schedphi._member_role(v_tenant, v_roles));
END
$$;

CREATE VIEW schedphi.patients WITH (security_barrier) AS
	SELECT p.id, p.tenant, j->>'given' AS given, j->>'family' AS family,
		   (j->>'birth_date')::date AS birth_date, j->>'phone' AS phone, j->>'email' AS email,
		   j->>'mrn' AS mrn, j->>'zip' AS zip
	FROM schedphi.patient p
	CROSS JOIN LATERAL (SELECT schedphi._member_role(p.tenant,
				ARRAY['scheduler', 'integration', 'clinician', 'billing']) AS role) r
	CROSS JOIN LATERAL schedphi._patient_json(p, r.role) j
	WHERE r.role IS NOT NULL;

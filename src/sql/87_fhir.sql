-- schedphi install script, part 8c: FHIR R4 resources (docs/integration.md).
--
-- Resources are jsonb; any HTTP layer can serve them.  What a caller sees
-- of an appointment is what schedphi.appointments shows them (the minimum
-- necessary of their role: no patient for support and admin, a clinician's
-- own appointments only), read through it, so that the same rules and the
-- same audit apply.

-- The FHIR reference of an actor: Practitioner, Location (a room) or Device.
CREATE FUNCTION schedphi._fhir_actor_ref(p_kind text, p_id uuid, p_name text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.jsonb_build_object('reference',
		CASE p_kind WHEN 'practitioner' THEN 'Practitioner/' WHEN 'room' THEN 'Location/' ELSE 'Device/' END || p_id::text,
		'display', p_name)
$$;

-- An instant as FHIR writes it (UTC, seconds).
CREATE FUNCTION schedphi._fhir_instant(p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- An R4 Appointment: status, start and end, its kind (HL7 table 0276),
-- the appointment's ids (schedphi's, and an EHR's filler or placer id), and
-- a participant for the patient (when the caller's role shows it) and for
-- each actor.  42501 for a caller who may not see it.
CREATE FUNCTION schedphi.fhir_appointment(appointment uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_tenant uuid;
	v record;
	v_ids jsonb;
	v_parts jsonb;
	v_pstatus text;
BEGIN
	IF $1 IS NULL THEN
		RAISE EXCEPTION 'appointment must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT a.tenant INTO v_tenant FROM schedphi.appointment a WHERE a.id = $1;
	IF v_tenant IS NULL THEN
		PERFORM schedphi._unknown('appointment', $1);
	END IF;
	PERFORM schedphi._authorize(v_tenant, ARRAY['scheduler', 'integration', 'clinician', 'billing', 'support', 'admin']);
	SELECT x.* INTO v FROM schedphi.appointments x WHERE x.tenant = v_tenant AND x.id = $1;
	IF NOT FOUND THEN
		PERFORM schedphi._deny(v_tenant, 'permission denied: own appointments rule',
			'A clinician reads the appointments of their own practitioner.');
	END IF;
	v_pstatus := CASE WHEN v.status IN ('proposed', 'pending', 'waitlist') THEN 'tentative' ELSE 'accepted' END;
	SELECT jsonb_agg(i ORDER BY o) INTO v_ids FROM (
		SELECT 1 AS o, jsonb_build_object('system', 'urn:schedphi:appointment', 'value', v.id::text) AS i
		UNION ALL
		SELECT 2, jsonb_build_object('system', 'urn:schedphi:' || r.system, 'value', r.value)
		FROM schedphi.appointment_ref r WHERE r.tenant = v_tenant AND r.appointment = v.id) x;
	SELECT coalesce(jsonb_agg(p ORDER BY o, n), '[]') INTO v_parts FROM (
		SELECT 0 AS o, '' AS n, jsonb_build_object('actor', jsonb_build_object('reference', 'Patient/' || v.patient::text),
												  'required', 'required', 'status', v_pstatus) AS p
		WHERE v.patient IS NOT NULL
		UNION ALL
		SELECT 1, ac.kind || ac.id::text,
			   jsonb_build_object('actor', schedphi._fhir_actor_ref(ac.kind, ac.id, ac.name),
								  'required', 'required', 'status', v_pstatus)
		FROM schedphi.actor ac WHERE ac.tenant = v_tenant AND ac.id = ANY (v.actors)) x;
	RETURN jsonb_strip_nulls(jsonb_build_object(
		'resourceType', 'Appointment',
		'id', v.id::text,
		'meta', jsonb_build_object('lastUpdated', schedphi._fhir_instant(v.updated_at)),
		'identifier', v_ids,
		'status', v.status,
		'appointmentType', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
			'system', 'http://terminology.hl7.org/CodeSystem/v2-0276', 'code', upper(v.kind)))),
		'start', schedphi._fhir_instant(lower(v.during)),
		'end', schedphi._fhir_instant(upper(v.during)),
		'minutesDuration', (extract(epoch FROM upper(v.during) - lower(v.during)) / 60)::int,
		'created', schedphi._fhir_instant(v.created_at),
		'participant', v_parts));
END
$$;

-- An R4 Schedule for an actor: the actor it is for, active.  For the roles
-- that look for free times.
CREATE FUNCTION schedphi.fhir_schedule(actor uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a schedphi.actor;
BEGIN
	IF $1 IS NULL THEN
		RAISE EXCEPTION 'actor must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT x.* INTO a FROM schedphi.actor x WHERE x.id = $1;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('actor', $1);
	END IF;
	PERFORM schedphi._authorize(a.tenant, ARRAY['admin', 'scheduler', 'clinician', 'integration', 'support']);
	RETURN jsonb_build_object(
		'resourceType', 'Schedule',
		'id', a.id::text,
		'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:schedphi:actor', 'value', a.id::text)),
		'active', true,
		'actor', jsonb_build_array(schedphi._fhir_actor_ref(a.kind, a.id, a.name)));
END
$$;

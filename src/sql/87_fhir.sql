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

-- A Slot's id: schedphi keeps no Slot rows (free time is worked out from
-- availability and bookings), so a Slot is named by what it is: its
-- actor, its start (UTC, to the minute) and its length in minutes, as
-- "<actor>-<YYYYMMDDHHMI>-<minutes>" (at most 54 characters of
-- [A-Za-z0-9-], a valid FHIR id).  Appointment.slot, $find and Slot
-- searches use it; fhir_hold and fhir_book take it back.
CREATE FUNCTION schedphi._fhir_slot_id(p_actor uuid, p_during tstzrange)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT p_actor::text || '-' || pg_catalog.to_char(pg_catalog.lower(p_during) AT TIME ZONE 'UTC', 'YYYYMMDDHH24MI')
		|| '-' || ((extract(epoch FROM pg_catalog.upper(p_during) - pg_catalog.lower(p_during)) / 60)::bigint)::text
$$;

-- The actor and time a Slot id names, or NULL when it names none.
CREATE FUNCTION schedphi._fhir_slot_parse(p_id text, OUT actor uuid, OUT during tstzrange)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	m text[] := pg_catalog.regexp_match(p_id,
		'^(?:Slot/)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-([0-9]{12})-([0-9]{1,4})$');
	v_start timestamptz;
BEGIN
	IF m IS NULL OR m[3]::int NOT BETWEEN 1 AND 1440 THEN
		RETURN;
	END IF;
	BEGIN
		v_start := pg_catalog.to_timestamp(m[2], 'YYYYMMDDHH24MI')::timestamp AT TIME ZONE 'UTC';
	EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
		RETURN;
	END;
	-- (to_timestamp is lenient: a month 13 rolls over; such an id names nothing)
	IF pg_catalog.to_char(v_start AT TIME ZONE 'UTC', 'YYYYMMDDHH24MI') <> m[2] THEN
		RETURN;
	END IF;
	actor := m[1]::uuid;
	during := pg_catalog.tstzrange(v_start, v_start + m[3]::int * interval '1 minute');
END
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
	SELECT jsonb_agg(i ORDER BY o, i->>'system', i->>'value') INTO v_ids FROM (
		SELECT 1 AS o, jsonb_build_object('system', 'urn:schedphi:appointment', 'value', v.id::text) AS i
		UNION ALL
		SELECT 2, jsonb_strip_nulls(jsonb_build_object(
			'type', CASE WHEN r.system LIKE 'hl7:%:filler' OR r.system LIKE 'hl7:%:placer' THEN
						jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
							'system', 'http://terminology.hl7.org/CodeSystem/v2-0203',
							'code', CASE WHEN r.system LIKE '%:filler' THEN 'FILL' ELSE 'PLAC' END))) END,
			'system', CASE WHEN r.system LIKE 'fhir:%' THEN substr(r.system, 6) ELSE 'urn:schedphi:' || r.system END,
			'value', r.value))
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
		'participant', v_parts,
		'slot', (SELECT jsonb_agg(jsonb_build_object('reference', 'Slot/' || schedphi._fhir_slot_id(u, v.during)) ORDER BY u)
				 FROM unnest(v.actors) u)));
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

-- An R4 Patient with the fields the caller's role may see, decrypted
-- through patient_record (its rules, rate limit and read record): MRN as
-- identifier, name, birth date, phone and e-mail, postal code.
CREATE FUNCTION schedphi.fhir_patient(patient uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p jsonb;
BEGIN
	IF $1 IS NULL THEN
		RAISE EXCEPTION 'patient must not be null' USING ERRCODE = '22023';
	END IF;
	p := schedphi.patient_record($1);
	RETURN jsonb_strip_nulls(jsonb_build_object(
		'resourceType', 'Patient',
		'id', $1::text,
		'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:schedphi:patient', 'value', $1::text))
			|| CASE WHEN p ? 'mrn' THEN jsonb_build_array(jsonb_build_object(
				   'type', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
					   'system', 'http://terminology.hl7.org/CodeSystem/v2-0203', 'code', 'MR'))),
				   'system', 'urn:schedphi:mrn', 'value', p->>'mrn')) ELSE '[]'::jsonb END,
		'name', CASE WHEN p ? 'family' OR p ? 'given' THEN jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
					'family', p->>'family', 'given', CASE WHEN p ? 'given' THEN jsonb_build_array(p->>'given') END))) END,
		'birthDate', p->>'birth_date',
		'telecom', nullif(jsonb_path_query_array(jsonb_build_array(
				CASE WHEN p ? 'phone' THEN jsonb_build_object('system', 'phone', 'value', p->>'phone') END,
				CASE WHEN p ? 'email' THEN jsonb_build_object('system', 'email', 'value', p->>'email') END),
			'$[*] ? (@ != null)'), '[]'::jsonb),
		'address', CASE WHEN p ? 'zip' THEN jsonb_build_array(jsonb_build_object('postalCode', p->>'zip')) END));
END
$$;

-- Cancel, and the Appointment as it now is.
CREATE FUNCTION schedphi.fhir_cancel(appointment uuid, reason text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM schedphi.cancel($1, $2);
	RETURN schedphi.fhir_appointment($1);
END
$$;

-- $find: free times as a searchset Bundle.  params: start, end (instants),
-- actor (an array of references "Practitioner/<id>", "Location/<id>",
-- "Device/<id>", or of schedphi ids), duration (minutes), _count (default
-- 100).  One actor: free R4 Slots of its Schedule; several at once:
-- proposed Appointments holding them all.
CREATE FUNCTION schedphi.fhir_find(params jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_actors uuid[];
	v_window tstzrange;
	v_minutes int;
	v_count int;
	v_entries jsonb;
BEGIN
	IF $1 IS NULL OR jsonb_typeof($1) <> 'object' THEN
		RAISE EXCEPTION 'params must be a JSON object' USING ERRCODE = '22023';
	END IF;
	BEGIN
		v_actors := ARRAY(SELECT (regexp_match(a, '^(?:(?:Practitioner|Location|Device)/)?([0-9a-fA-F-]{36})$'))[1]::uuid
						  FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof($1->'actor') = 'array' THEN $1->'actor'
															   ELSE jsonb_build_array($1->'actor') END) a);
		v_window := tstzrange(($1->>'start')::timestamptz, ($1->>'end')::timestamptz);
		v_minutes := coalesce(($1->>'duration')::int, 15);
		v_count := coalesce(($1->>'_count')::int, 100);
	EXCEPTION WHEN invalid_text_representation OR invalid_datetime_format OR datetime_field_overflow
					OR numeric_value_out_of_range OR data_exception THEN
		RAISE EXCEPTION 'params: start and end must be instants, actor references, duration and _count whole numbers'
			USING ERRCODE = '22023';
	END;
	IF cardinality(v_actors) = 0 OR array_position(v_actors, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'params: actor must name one or more actors (Practitioner/<id>, Location/<id>, Device/<id>)'
			USING ERRCODE = '22023';
	END IF;
	IF v_count NOT BETWEEN 1 AND 1000 OR v_minutes NOT BETWEEN 1 AND 1440 THEN
		RAISE EXCEPTION 'params: _count must be 1 to 1000, duration 1 to 1440 minutes' USING ERRCODE = '22023';
	END IF;
	SELECT coalesce(jsonb_agg(e ORDER BY s), '[]') INTO v_entries FROM (
		SELECT f.starts AS s, jsonb_build_object('resource',
			CASE WHEN cardinality(v_actors) = 1 THEN
				jsonb_build_object('resourceType', 'Slot',
					'id', schedphi._fhir_slot_id(v_actors[1], tstzrange(f.starts, f.ends)),
					'schedule', jsonb_build_object('reference', 'Schedule/' || v_actors[1]::text),
					'status', 'free', 'start', schedphi._fhir_instant(f.starts), 'end', schedphi._fhir_instant(f.ends))
			ELSE
				jsonb_build_object('resourceType', 'Appointment', 'status', 'proposed',
					'start', schedphi._fhir_instant(f.starts), 'end', schedphi._fhir_instant(f.ends),
					'minutesDuration', v_minutes,
					'slot', (SELECT jsonb_agg(jsonb_build_object('reference',
								'Slot/' || schedphi._fhir_slot_id(u, tstzrange(f.starts, f.ends))) ORDER BY u)
							 FROM unnest(f.actors) u),
					'participant', (SELECT jsonb_agg(jsonb_build_object(
										'actor', schedphi._fhir_actor_ref(ac.kind, ac.id, ac.name),
										'required', 'required', 'status', 'needs-action') ORDER BY ac.id)
									FROM schedphi.actor ac WHERE ac.id = ANY (f.actors)))
			END, 'search', jsonb_build_object('mode', 'match')) AS e
		FROM schedphi.find_slots(v_actors, v_window, v_minutes * interval '1 minute', v_count) f) x;
	RETURN jsonb_build_object('resourceType', 'Bundle', 'type', 'searchset',
							  'total', jsonb_array_length(v_entries), 'entry', v_entries);
END
$$;

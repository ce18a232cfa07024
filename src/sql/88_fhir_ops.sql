-- schedphi install script, part 8d: FHIR R4 searches, holds, bookings,
-- EHR bundles and OperationOutcomes (docs/integration.md).
--
-- Everything here goes through the functions an application calls
-- (book, hold, confirm, cancel, find_slots) and the appointments view, so
-- that the same rules, the same minimum necessary and the same ledger
-- apply to FHIR clients.  Only fhir_ingest writes as the EHR's interface
-- does (hl7_ingest): the EHR is the system of record for its bookings.

-- ---------------------------------------------------------------- helpers

-- The id a reference names, when it is one of the given types:
-- "Practitioner/<id>", a full URL ending with it, or (p_bare) a bare id.
CREATE FUNCTION schedphi._fhir_ref(p_ref jsonb, p_types text[], p_bare boolean DEFAULT false,
								   OUT type text, OUT id text)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	v text := CASE WHEN pg_catalog.jsonb_typeof(p_ref) = 'string' THEN p_ref #>> '{}'
				   WHEN pg_catalog.jsonb_typeof(p_ref) = 'object' AND pg_catalog.jsonb_typeof(p_ref->'reference') = 'string'
				   THEN p_ref->>'reference' END;
	m text[];
BEGIN
	IF v IS NULL OR length(v) > 300 THEN
		RETURN;
	END IF;
	m := pg_catalog.regexp_match(v, '(?:^|/)([A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[A-Za-z0-9.-]{1,64})?$');
	IF m IS NOT NULL AND m[1] = ANY (p_types) THEN
		type := m[1];
		id := m[2];
	ELSIF p_bare AND v ~ '^[A-Za-z0-9.-]{1,64}$' THEN
		id := v;
	END IF;
END
$$;

-- A schedphi id, or NULL.
CREATE FUNCTION schedphi._fhir_uuid(p_id text)
RETURNS uuid
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE WHEN p_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN p_id::uuid END
$$;

-- An instant (or a date) from FHIR JSON; 22023 naming the element when it
-- is not one.  A dateTime without an offset is refused: FHIR requires one
-- when a time is given, and the session's zone must never decide.
CREATE FUNCTION schedphi._fhir_time(p_value jsonb, p_what text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v text;
BEGIN
	IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) = 'null' THEN
		RETURN NULL;
	END IF;
	v := CASE WHEN pg_catalog.jsonb_typeof(p_value) = 'string' THEN p_value #>> '{}' END;
	IF v IS NULL OR v !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})$' THEN
		RAISE EXCEPTION '% must be a FHIR instant (YYYY-MM-DDThh:mm:ss with Z or an offset)', p_what
			USING ERRCODE = '22023';
	END IF;
	BEGIN
		RETURN v::timestamptz;
	EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format OR invalid_time_zone_displacement_value THEN
		RAISE EXCEPTION '% is not a valid instant', p_what USING ERRCODE = '22023';
	END;
END
$$;

-- A whole number parameter within bounds, or the default; 22023 otherwise.
CREATE FUNCTION schedphi._fhir_int(p_value jsonb, p_what text, p_default int, p_min int, p_max int)
RETURNS int
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	v text := p_value #>> '{}';
BEGIN
	IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) = 'null' THEN
		RETURN p_default;
	END IF;
	IF pg_catalog.jsonb_typeof(p_value) NOT IN ('string', 'number') OR v !~ '^[0-9]{1,9}$'
	   OR v::int NOT BETWEEN p_min AND p_max THEN
		RAISE EXCEPTION '% must be a whole number from % to %', p_what, p_min, p_max USING ERRCODE = '22023';
	END IF;
	RETURN v::int;
END
$$;

-- A parameter's values: a JSON array, or one value (a comma list for
-- string parameters that allow it).
CREATE FUNCTION schedphi._fhir_values(p_value jsonb, p_commas boolean DEFAULT false)
RETURNS SETOF text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT btrim(y.x) FROM (
		SELECT unnest(CASE WHEN p_commas THEN string_to_array(e, ',') ELSE ARRAY[e] END) AS x
		FROM unnest(CASE pg_catalog.jsonb_typeof(p_value)
						WHEN 'array' THEN (SELECT array_agg(v #>> '{}') FROM pg_catalog.jsonb_array_elements(p_value) v
										   WHERE pg_catalog.jsonb_typeof(v) IN ('string', 'number'))
						WHEN 'string' THEN ARRAY[p_value #>> '{}']
						WHEN 'number' THEN ARRAY[p_value #>> '{}'] END) e) y
	WHERE btrim(y.x) <> ''
$$;

-- A date search parameter (FHIR prefixes eq, ne not taken, gt, ge, lt, le,
-- sa, eb) as a range of instants; several values intersect.  A value
-- without a time is the whole day in UTC.
CREATE FUNCTION schedphi._fhir_date_range(p_value jsonb, p_what text)
RETURNS tstzrange
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v text;
	m text[];
	t timestamptz;
	t_end timestamptz;
	r tstzrange := tstzrange(NULL, NULL);
BEGIN
	FOR v IN SELECT schedphi._fhir_values(p_value) LOOP
		m := pg_catalog.regexp_match(v, '^(eq|gt|ge|lt|le|sa|eb)?([0-9]{4}-[0-9]{2}-[0-9]{2})(T.*)?$');
		IF m IS NULL THEN
			RAISE EXCEPTION '% must be a date or instant with an optional prefix eq, gt, ge, lt, le, sa or eb', p_what
				USING ERRCODE = '22023';
		END IF;
		IF m[3] IS NULL THEN
			BEGIN
				t := (m[2]::date)::timestamp AT TIME ZONE 'UTC';
			EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
				RAISE EXCEPTION '% is not a valid date', p_what USING ERRCODE = '22023';
			END;
			t_end := t + interval '1 day';
		ELSE
			t := schedphi._fhir_time(to_jsonb(m[2] || m[3]), p_what);
			t_end := t;
		END IF;
		r := r * CASE coalesce(m[1], 'eq')
			WHEN 'eq' THEN CASE WHEN t = t_end THEN tstzrange(t, t, '[]') ELSE tstzrange(t, t_end) END
			WHEN 'gt' THEN tstzrange(t_end, NULL, '()')
			WHEN 'sa' THEN tstzrange(t_end, NULL, '()')
			WHEN 'ge' THEN tstzrange(t, NULL)
			WHEN 'lt' THEN tstzrange(NULL, t)
			WHEN 'eb' THEN tstzrange(NULL, t)
			WHEN 'le' THEN tstzrange(NULL, t_end, '(]') END;
	END LOOP;
	RETURN r;
END
$$;

-- A searchset Bundle of resources.
CREATE FUNCTION schedphi._fhir_searchset(p_resources jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.jsonb_build_object('resourceType', 'Bundle', 'type', 'searchset',
		'total', pg_catalog.jsonb_array_length(coalesce(p_resources, '[]')),
		'entry', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
				'fullUrl', 'urn:schedphi:' || (r->>'resourceType') || '/' || (r->>'id'),
				'resource', r, 'search', pg_catalog.jsonb_build_object('mode', 'match')) ORDER BY o)
			FROM pg_catalog.jsonb_array_elements(p_resources) WITH ORDINALITY AS x(r, o)), '[]'))
$$;

-- How FHIR names an error of a SQLSTATE: the OperationOutcome issue type
-- and the HTTP status a FHIR server would answer with.
CREATE FUNCTION schedphi._fhir_issue(p_sqlstate text, OUT code text, OUT http text)
LANGUAGE sql IMMUTABLE
AS $$
	SELECT coalesce(m.code, CASE WHEN p_sqlstate LIKE '22%' THEN 'invalid' ELSE 'processing' END),
		   coalesce(m.http, '400 Bad Request')
	FROM (SELECT 1) one
	LEFT JOIN (VALUES ('23P01', 'conflict', '409 Conflict'),
					  ('42501', 'forbidden', '403 Forbidden'),
					  ('55000', 'business-rule', '422 Unprocessable Entity'),
					  ('SP429', 'throttled', '429 Too Many Requests'),
					  ('SPK01', 'transient', '503 Service Unavailable'),
					  ('SPF04', 'not-found', '404 Not Found'),
					  ('SPF05', 'not-supported', '422 Unprocessable Entity')) AS m(state, code, http)
		ON m.state = p_sqlstate
$$;

-- An OperationOutcome for an error: its issue type from the SQLSTATE,
-- the message (which never holds PHI), the SQLSTATE as a coding, and the
-- element it concerns when known.
CREATE FUNCTION schedphi._fhir_oo(p_sqlstate text, p_message text, p_detail text DEFAULT NULL,
								  p_expression text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.jsonb_build_object('resourceType', 'OperationOutcome',
		'issue', pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
			'severity', 'error',
			'code', (schedphi._fhir_issue(p_sqlstate)).code,
			'details', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
				'system', 'urn:schedphi:sqlstate', 'code', p_sqlstate)), 'text', p_detail),
			'diagnostics', p_message,
			'expression', CASE WHEN p_expression IS NOT NULL THEN pg_catalog.jsonb_build_array(p_expression) END))))
$$;

-- The business errors an _oo variant answers with an OperationOutcome
-- instead of raising (anything else, an internal error, still raises).
CREATE FUNCTION schedphi._fhir_business_error(p_sqlstate text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
	SELECT p_sqlstate IN ('23P01', '42501', '55000', 'SP429', 'SPK01', 'SPF04', 'SPF05', '22P02')
		OR p_sqlstate LIKE '22%'
$$;

-- The tenants where the caller may read appointments (any role that does).
CREATE FUNCTION schedphi._fhir_tenants()
RETURNS uuid[]
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v uuid[] := '{}';
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['scheduler', 'integration', 'clinician', 'billing', 'support', 'admin'] LOOP
		v := v || schedphi._role_tenants(r);
	END LOOP;
	RETURN ARRAY(SELECT DISTINCT u FROM unnest(v) u ORDER BY u);
END
$$;

-- ---------------------------------------------------------------- search

-- Slots of one actor's Schedule: free ones as $find finds them (on the
-- availability's grid, `duration` minutes long, default 15), busy ones
-- as booked (busy-tentative when only holds take the time).  An actor with
-- shared seats (capacity above 1) shows a busy Slot as overbooked when
-- more than one appointment shares it, and says how many seats are taken.
CREATE FUNCTION schedphi._fhir_slots(p_actor schedphi.actor, p_window tstzrange, p_status text[],
									 p_minutes int, p_count int)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_free jsonb := '[]';
	v_busy jsonb := '[]';
BEGIN
	IF 'free' = ANY (p_status) THEN
		SELECT coalesce(jsonb_agg(jsonb_build_object('resourceType', 'Slot',
				'id', schedphi._fhir_slot_id(p_actor.id, tstzrange(f.starts, f.ends)),
				'schedule', jsonb_build_object('reference', 'Schedule/' || p_actor.id::text),
				'status', 'free', 'start', schedphi._fhir_instant(f.starts), 'end', schedphi._fhir_instant(f.ends))
				ORDER BY f.starts), '[]')
		INTO v_free
		FROM schedphi.find_slots(ARRAY[p_actor.id], p_window, p_minutes * interval '1 minute', p_count) f;
	END IF;
	IF 'busy' = ANY (p_status) OR 'busy-tentative' = ANY (p_status) THEN
		SELECT coalesce(jsonb_agg(s ORDER BY st), '[]') INTO v_busy FROM (
			SELECT lower(b.during) AS st, jsonb_strip_nulls(jsonb_build_object('resourceType', 'Slot',
					'id', schedphi._fhir_slot_id(p_actor.id, b.during),
					'schedule', jsonb_build_object('reference', 'Schedule/' || p_actor.id::text),
					'status', b.status, 'start', schedphi._fhir_instant(lower(b.during)),
					'end', schedphi._fhir_instant(upper(b.during)),
					'overbooked', CASE WHEN p_actor.capacity > 1 THEN b.sharing > 1 END,
					'comment', CASE WHEN p_actor.capacity > 1
									THEN b.seats || ' of ' || p_actor.capacity || ' seats taken' END)) AS s
			FROM (
				SELECT x.during, CASE WHEN bool_and(x.expires IS NOT NULL) THEN 'busy-tentative' ELSE 'busy' END AS status,
					   (SELECT count(*) FROM schedphi.appointment_actor y
						WHERE y.tenant = p_actor.tenant AND y.actor = p_actor.id AND y.active
						  AND (y.expires IS NULL OR y.expires > statement_timestamp()) AND y.during && x.during) AS sharing,
					   (SELECT count(DISTINCT y.seat) FROM schedphi.appointment_actor y
						WHERE y.tenant = p_actor.tenant AND y.actor = p_actor.id AND y.active
						  AND (y.expires IS NULL OR y.expires > statement_timestamp()) AND y.during && x.during) AS seats
				FROM schedphi.appointment_actor x
				WHERE x.tenant = p_actor.tenant AND x.actor = p_actor.id AND x.active
				  AND (x.expires IS NULL OR x.expires > statement_timestamp())
				  AND x.span && p_window AND x.during && p_window
				GROUP BY x.during
				ORDER BY lower(x.during)
				LIMIT p_count) b
			WHERE b.status = ANY (p_status)) z;
	END IF;
	RETURN (SELECT coalesce(jsonb_agg(e ORDER BY e->>'start', e->>'status' DESC), '[]')
			FROM (SELECT e FROM jsonb_array_elements(v_free || v_busy) e
				  ORDER BY e->>'start', e->>'status' DESC LIMIT p_count) y);
END
$$;

-- Search.  Appointment: patient, actor, practitioner, location (a room),
-- device, identifier (system|value or value), date (prefixed, several
-- values intersect), status (comma list), _id, _count (default 100, at
-- most 1000); one of patient, an actor, identifier or _id is required, so
-- that a search reads one tenant's rows through an index.  Rows come
-- through the appointments view (the caller's rules, minimum necessary,
-- audit) and are returned as fhir_appointment makes them.  Slot: schedule
-- (required), start (prefixed; default the next 7 days; at most 31 days),
-- status (free, busy, busy-tentative; default all), duration (minutes of a
-- free Slot, default 15), _id (a Slot id), _count.  Schedule: actor.
CREATE FUNCTION schedphi.fhir_search(resource_type text, params jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p jsonb := coalesce(params, '{}');
	v_count int;
	v_known text[];
	v_bad text;
	v_tenants uuid[];
	v_patient uuid;
	v_actor uuid;
	v_ids uuid[];
	v_found uuid[];
	v_read uuid[];
	v_t uuid;
	v_window tstzrange;
	v_status text[];
	v_ident text;
	v_sys text;
	v_val text;
	a schedphi.actor;
	v_res jsonb;
	v_slot record;
	v_minutes int;
	r record;
BEGIN
	IF resource_type IS NULL THEN
		RAISE EXCEPTION 'resource_type must not be null' USING ERRCODE = '22023';
	END IF;
	IF resource_type NOT IN ('Appointment', 'Slot', 'Schedule') THEN
		RAISE EXCEPTION 'resource_type must be Appointment, Slot or Schedule' USING ERRCODE = 'SPF05';
	END IF;
	IF jsonb_typeof(p) <> 'object' THEN
		RAISE EXCEPTION 'params must be a JSON object' USING ERRCODE = '22023';
	END IF;
	v_known := CASE resource_type
		WHEN 'Appointment' THEN ARRAY['patient', 'actor', 'practitioner', 'location', 'device', 'identifier',
									  'date', 'status', '_id', '_count']
		WHEN 'Slot' THEN ARRAY['schedule', 'start', 'status', 'duration', '_id', '_count']
		ELSE ARRAY['actor', '_id', '_count'] END;
	SELECT k INTO v_bad FROM jsonb_object_keys(p) k WHERE NOT k = ANY (v_known) ORDER BY k LIMIT 1;
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'unknown search parameter for %: %', resource_type, left(v_bad, 64)
			USING ERRCODE = '22023', DETAIL = 'Known: ' || array_to_string(v_known, ', ') || '.';
	END IF;
	v_count := schedphi._fhir_int(p->'_count', '_count', 100, 1, 1000);

	IF resource_type = 'Schedule' THEN
		SELECT coalesce(jsonb_agg(schedphi.fhir_schedule(u) ORDER BY o), '[]') INTO v_res
		FROM (SELECT u, min(o) AS o FROM (
				SELECT coalesce(schedphi._fhir_uuid((schedphi._fhir_ref(to_jsonb(x), ARRAY['Practitioner', 'Location', 'Device', 'Schedule'], true)).id),
								'00000000-0000-0000-0000-000000000000') AS u, o
				FROM schedphi._fhir_values(coalesce(p->'actor', p->'_id')) WITH ORDINALITY AS v(x, o)) y
			  GROUP BY u ORDER BY min(o) LIMIT v_count) z;
		IF NOT (p ? 'actor' OR p ? '_id') THEN
			RAISE EXCEPTION 'a Schedule search needs actor (or _id)' USING ERRCODE = '22023';
		END IF;
		RETURN schedphi._fhir_searchset(v_res);
	END IF;

	IF resource_type = 'Slot' THEN
		IF p ? '_id' THEN
			v_slot := schedphi._fhir_slot_parse((SELECT x FROM schedphi._fhir_values(p->'_id') x LIMIT 1));
			IF v_slot.actor IS NULL THEN
				RAISE EXCEPTION '_id is not a schedphi Slot id' USING ERRCODE = '22023';
			END IF;
			v_actor := v_slot.actor;
			v_window := v_slot.during;
			v_minutes := (extract(epoch FROM upper(v_slot.during) - lower(v_slot.during)) / 60)::int;
		ELSE
			v_actor := schedphi._fhir_uuid((schedphi._fhir_ref(p->'schedule', ARRAY['Schedule'], true)).id);
			IF v_actor IS NULL THEN
				RAISE EXCEPTION 'a Slot search needs schedule (Schedule/<id>)' USING ERRCODE = '22023';
			END IF;
			v_window := schedphi._fhir_date_range(p->'start', 'start');
			v_window := tstzrange(coalesce(lower(v_window), statement_timestamp()),
								  coalesce(upper(v_window), coalesce(lower(v_window), statement_timestamp()) + interval '7 days'));
			IF upper(v_window) > lower(v_window) + interval '31 days' THEN
				RAISE EXCEPTION 'start: a Slot search covers at most 31 days' USING ERRCODE = '22023';
			END IF;
			v_minutes := schedphi._fhir_int(p->'duration', 'duration', 15, 1, 1440);
		END IF;
		v_status := coalesce(ARRAY(SELECT schedphi._fhir_values(p->'status', true)), '{}');
		IF cardinality(v_status) = 0 THEN
			v_status := ARRAY['free', 'busy', 'busy-tentative'];
		ELSIF NOT v_status <@ ARRAY['free', 'busy', 'busy-tentative', 'busy-unavailable', 'entered-in-error'] THEN
			RAISE EXCEPTION 'status must be free, busy or busy-tentative' USING ERRCODE = '22023';
		END IF;
		SELECT x.* INTO a FROM schedphi.actor x WHERE x.id = v_actor;
		IF NOT FOUND THEN
			PERFORM schedphi._unknown('actor', v_actor);
		END IF;
		PERFORM schedphi._authorize(a.tenant, ARRAY['admin', 'scheduler', 'clinician', 'integration', 'support']);
		v_res := schedphi._fhir_slots(a, v_window, v_status, v_minutes, v_count);
		IF p ? '_id' THEN
			-- the one Slot the id names: as it is now, or busy-unavailable
			-- when it is neither free nor booked as such (off hours, a block,
			-- a booking of other times)
			SELECT coalesce(jsonb_agg(e), '[]') INTO v_res FROM jsonb_array_elements(v_res) e
			WHERE e->>'id' = schedphi._fhir_slot_id(v_actor, v_window);
			IF jsonb_array_length(v_res) = 0 THEN
				v_res := jsonb_build_array(jsonb_build_object('resourceType', 'Slot',
					'id', schedphi._fhir_slot_id(v_actor, v_window),
					'schedule', jsonb_build_object('reference', 'Schedule/' || v_actor::text),
					'status', 'busy-unavailable', 'start', schedphi._fhir_instant(lower(v_window)),
					'end', schedphi._fhir_instant(upper(v_window))));
			END IF;
		END IF;
		RETURN schedphi._fhir_searchset(v_res);
	END IF;

	-- Appointment
	v_window := schedphi._fhir_date_range(p->'date', 'date');
	v_status := ARRAY(SELECT schedphi._fhir_values(p->'status', true));
	IF cardinality(v_status) > 0 AND NOT v_status <@ ARRAY['proposed', 'pending', 'booked', 'arrived', 'fulfilled',
			'cancelled', 'noshow', 'entered-in-error', 'checked-in', 'waitlist'] THEN
		RAISE EXCEPTION 'status must be Appointment.status codes' USING ERRCODE = '22023';
	END IF;
	IF p ? 'patient' THEN
		v_patient := schedphi._fhir_uuid((schedphi._fhir_ref(p->'patient', ARRAY['Patient'], true)).id);
		IF v_patient IS NULL THEN
			RAISE EXCEPTION 'patient must be Patient/<id>' USING ERRCODE = '22023';
		END IF;
	END IF;
	SELECT k INTO v_bad FROM unnest(ARRAY['actor', 'practitioner', 'location', 'device']) k WHERE p ? k LIMIT 1;
	IF v_bad IS NOT NULL THEN
		v_actor := schedphi._fhir_uuid((schedphi._fhir_ref(p->v_bad,
			CASE v_bad WHEN 'practitioner' THEN ARRAY['Practitioner'] WHEN 'location' THEN ARRAY['Location']
					   WHEN 'device' THEN ARRAY['Device'] ELSE ARRAY['Practitioner', 'Location', 'Device'] END, true)).id);
		IF v_actor IS NULL THEN
			RAISE EXCEPTION '% must be a reference to a schedphi actor', v_bad USING ERRCODE = '22023';
		END IF;
	END IF;
	IF p ? 'identifier' THEN
		v_ident := (SELECT x FROM schedphi._fhir_values(p->'identifier') x LIMIT 1);
		IF v_ident IS NULL OR length(v_ident) > 500 THEN
			RAISE EXCEPTION 'identifier must be system|value or value' USING ERRCODE = '22023';
		END IF;
		IF strpos(v_ident, '|') > 0 THEN
			v_sys := nullif(split_part(v_ident, '|', 1), '');
			v_val := substr(v_ident, strpos(v_ident, '|') + 1);
		ELSE
			v_val := v_ident;
		END IF;
	END IF;
	IF v_patient IS NULL AND v_actor IS NULL AND v_ident IS NULL AND NOT p ? '_id' THEN
		RAISE EXCEPTION 'an Appointment search needs patient, actor (practitioner, location, device), identifier or _id'
			USING ERRCODE = '22023';
	END IF;

	-- the candidate ids, each way through an index of one tenant
	v_tenants := schedphi._fhir_tenants();
	IF cardinality(v_tenants) = 0 THEN
		PERFORM schedphi._deny(NULL, 'permission denied: role rule',
			'Searching appointments needs the scheduler, integration, clinician, billing, support or admin role.');
	END IF;
	IF p ? '_id' THEN
		v_ids := ARRAY(SELECT schedphi._fhir_uuid(x) FROM schedphi._fhir_values(p->'_id', true) x LIMIT 1000);
	END IF;
	IF v_ident IS NOT NULL THEN
		v_found := ARRAY(
			SELECT y.u FROM (SELECT schedphi._fhir_uuid(v_val) AS u) y
			WHERE y.u IS NOT NULL AND (v_sys IS NULL OR v_sys = 'urn:schedphi:appointment')
			UNION
			SELECT x.appointment FROM schedphi.appointment_ref x
			WHERE x.tenant = ANY (v_tenants) AND x.value = v_val
			  AND (v_sys IS NULL OR x.system = CASE WHEN v_sys LIKE 'urn:schedphi:hl7:%' THEN substr(v_sys, 14)
													 ELSE 'fhir:' || v_sys END));
		v_ids := CASE WHEN v_ids IS NULL THEN v_found
					  ELSE ARRAY(SELECT unnest(v_found) INTERSECT SELECT unnest(v_ids)) END;
	END IF;
	IF v_actor IS NOT NULL THEN
		SELECT x.* INTO a FROM schedphi.actor x WHERE x.id = v_actor;
		IF NOT FOUND OR NOT a.tenant = ANY (v_tenants) THEN
			PERFORM schedphi._unknown('actor', v_actor);
		END IF;
		v_ids := ARRAY(SELECT x.appointment FROM schedphi.appointment_actor x
					   WHERE x.tenant = a.tenant AND x.actor = a.id AND x.active
						 AND x.span && v_window AND x.during && v_window
						 AND (v_ids IS NULL OR x.appointment = ANY (v_ids)));
	END IF;
	-- the tenants to read: the patient's, the actor's, or those of the ids
	-- found (one statement per tenant, each through that tenant's rows)
	IF v_actor IS NOT NULL THEN
		v_read := ARRAY[a.tenant];
	ELSIF v_patient IS NOT NULL THEN
		v_read := ARRAY(SELECT x.tenant FROM schedphi.patient x WHERE x.id = v_patient AND x.tenant = ANY (v_tenants));
	ELSE
		v_read := ARRAY(SELECT DISTINCT x.tenant FROM schedphi.appointment x
						WHERE x.id = ANY (v_ids) AND x.tenant = ANY (v_tenants) ORDER BY 1);
	END IF;
	v_res := '[]';
	FOREACH v_t IN ARRAY v_read LOOP
		FOR r IN
			SELECT x.id, lower(x.during) AS st FROM schedphi.appointments x
			WHERE x.tenant = v_t
			  AND (v_ids IS NULL OR x.id = ANY (v_ids))
			  AND (v_patient IS NULL OR x.patient = v_patient)
			  AND x.during && v_window
			  AND (cardinality(v_status) = 0 OR x.status = ANY (v_status))
			ORDER BY lower(x.during), x.id
			LIMIT v_count
		LOOP
			v_res := v_res || jsonb_build_array(jsonb_build_object('st', r.st, 'id', r.id));
		END LOOP;
	END LOOP;
	SELECT coalesce(jsonb_agg(schedphi.fhir_appointment((e->>'id')::uuid) ORDER BY (e->>'st')::timestamptz, e->>'id'), '[]')
	INTO v_res
	FROM (SELECT e FROM jsonb_array_elements(v_res) e ORDER BY (e->>'st')::timestamptz, e->>'id' LIMIT v_count) y;
	RETURN schedphi._fhir_searchset(v_res);
END
$$;

-- ---------------------------------------------------------------- write

-- An Appointment's time: start and end, or start and minutesDuration
-- (instants with an offset); NULL when it gives neither; 22023 when it
-- gives part of one, or an end not after its start.
CREATE FUNCTION schedphi._fhir_when(p_appt jsonb)
RETURNS tstzrange
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_start timestamptz := schedphi._fhir_time(p_appt->'start', 'Appointment.start');
	v_end timestamptz := schedphi._fhir_time(p_appt->'end', 'Appointment.end');
	v_min int := schedphi._fhir_int(p_appt->'minutesDuration', 'Appointment.minutesDuration', NULL, 1, 1440);
BEGIN
	IF v_end IS NULL AND v_start IS NOT NULL AND v_min IS NOT NULL THEN
		v_end := v_start + v_min * interval '1 minute';
	END IF;
	IF v_start IS NULL AND v_end IS NULL THEN
		RETURN NULL;
	END IF;
	IF v_start IS NULL OR v_end IS NULL OR v_end <= v_start THEN
		RAISE EXCEPTION 'Appointment.start and end: both, the end after the start' USING ERRCODE = '22023';
	END IF;
	RETURN tstzrange(v_start, v_end);
END
$$;

-- An Appointment's kind (appointmentType from HL7 table 0276, else
-- routine) and reason (reasonCode text, else description; to be sealed).
CREATE FUNCTION schedphi._fhir_kind_reason(p_appt jsonb, OUT kind text, OUT reason text)
LANGUAGE sql IMMUTABLE
AS $$
	SELECT coalesce((SELECT lower(c->>'code')
					 FROM pg_catalog.jsonb_array_elements(CASE WHEN pg_catalog.jsonb_typeof(p_appt->'appointmentType'->'coding') = 'array'
															   THEN p_appt->'appointmentType'->'coding' ELSE '[]' END) c
					 WHERE lower(c->>'code') IN ('routine', 'followup', 'walkin', 'checkup', 'emergency') LIMIT 1), 'routine'),
		   coalesce((SELECT left(x->>'text', 2000)
					 FROM pg_catalog.jsonb_array_elements(CASE WHEN pg_catalog.jsonb_typeof(p_appt->'reasonCode') = 'array'
															   THEN p_appt->'reasonCode' ELSE '[]' END) x
					 WHERE pg_catalog.jsonb_typeof(x->'text') = 'string' LIMIT 1),
					CASE WHEN pg_catalog.jsonb_typeof(p_appt->'description') = 'string' THEN left(p_appt->>'description', 2000) END)
$$;

-- What an Appointment resource asks for: its patient, its actors (by
-- schedphi id, or by Slot), its time (start and end, start and
-- minutesDuration, or its Slots), its kind (appointmentType from HL7 table
-- 0276), its reason (reasonCode text or description; sealed), and an
-- identifier as an idempotency key.  22023 naming the element when it is
-- not usable.
CREATE FUNCTION schedphi._fhir_request(p_appt jsonb,
	OUT patient uuid, OUT actors uuid[], OUT during tstzrange, OUT kind text, OUT reason text, OUT idem text)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	pt record;
	r jsonb;
	n int := 0;
	v_slot record;
	v_when tstzrange;
BEGIN
	IF p_appt IS NULL OR jsonb_typeof(p_appt) <> 'object' OR p_appt->>'resourceType' IS DISTINCT FROM 'Appointment' THEN
		RAISE EXCEPTION 'appointment must be an Appointment resource' USING ERRCODE = '22023';
	END IF;
	actors := '{}';
	IF jsonb_typeof(p_appt->'participant') <> 'array' THEN
		RAISE EXCEPTION 'Appointment.participant must be an array' USING ERRCODE = '22023';
	END IF;
	FOR r IN SELECT x FROM jsonb_array_elements(p_appt->'participant') x LOOP
		n := n + 1;
		IF jsonb_typeof(r) <> 'object' OR r->'actor' IS NULL THEN
			CONTINUE;
		END IF;
		pt := schedphi._fhir_ref(r->'actor', ARRAY['Patient', 'Practitioner', 'Location', 'Device']);
		IF pt.type IS NULL OR schedphi._fhir_uuid(pt.id) IS NULL THEN
			RAISE EXCEPTION 'Appointment.participant[%].actor must reference a schedphi Patient, Practitioner, Location or Device', n - 1
				USING ERRCODE = '22023';
		ELSIF pt.type = 'Patient' THEN
			IF patient IS NOT NULL AND patient <> pt.id::uuid THEN
				RAISE EXCEPTION 'Appointment.participant: one patient only' USING ERRCODE = '22023';
			END IF;
			patient := pt.id::uuid;
		ELSIF NOT pt.id::uuid = ANY (actors) THEN
			actors := actors || pt.id::uuid;
		END IF;
	END LOOP;
	IF jsonb_typeof(p_appt->'slot') = 'array' THEN
		FOR r IN SELECT x FROM jsonb_array_elements(p_appt->'slot') x LOOP
			v_slot := schedphi._fhir_slot_parse((schedphi._fhir_ref(r, ARRAY['Slot'])).id);
			IF v_slot.actor IS NULL THEN
				RAISE EXCEPTION 'Appointment.slot must reference schedphi Slots' USING ERRCODE = '22023';
			END IF;
			IF during IS NOT NULL AND during <> v_slot.during THEN
				RAISE EXCEPTION 'Appointment.slot: the Slots must be of the same time' USING ERRCODE = '22023';
			END IF;
			during := v_slot.during;
			IF NOT v_slot.actor = ANY (actors) THEN
				actors := actors || v_slot.actor;
			END IF;
		END LOOP;
	END IF;
	IF patient IS NULL THEN
		RAISE EXCEPTION 'Appointment.participant must include the Patient' USING ERRCODE = '22023';
	END IF;
	IF cardinality(actors) = 0 THEN
		RAISE EXCEPTION 'Appointment.participant must include a Practitioner, Location or Device' USING ERRCODE = '22023';
	END IF;
	v_when := schedphi._fhir_when(p_appt);
	IF v_when IS NOT NULL THEN
		IF during IS NOT NULL AND during <> v_when THEN
			RAISE EXCEPTION 'Appointment.start and end differ from its Slots' USING ERRCODE = '22023';
		END IF;
		during := v_when;
	END IF;
	IF during IS NULL THEN
		RAISE EXCEPTION 'Appointment.start and end (or its Slots) are required' USING ERRCODE = '22023';
	END IF;
	SELECT x.kind, x.reason INTO kind, reason FROM schedphi._fhir_kind_reason(p_appt) x;
	SELECT (i->>'system') || '|' || (i->>'value') INTO idem
	FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_appt->'identifier') = 'array' THEN p_appt->'identifier' ELSE '[]' END) i
	WHERE jsonb_typeof(i->'system') = 'string' AND jsonb_typeof(i->'value') = 'string'
	  AND length(i->>'system') BETWEEN 1 AND 100 AND strpos(i->>'system', '|') = 0
	  AND length(i->>'value') BETWEEN 1 AND 100
	  AND i->>'system' <> 'urn:schedphi:appointment'
	LIMIT 1;
END
$$;

-- A pending Appointment: hold(), for ten minutes; it expires by itself
-- (find_slots and bookings no longer see it; confirming it is 55000).
CREATE FUNCTION schedphi.fhir_hold(appointment jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	q record := schedphi._fhir_request(appointment);
BEGIN
	RETURN schedphi.fhir_appointment(schedphi.hold(q.patient, q.actors, q.during));
END
$$;

-- A booked Appointment: an Appointment with the id of a pending hold
-- confirms that hold (as it was held); any other is booked with book(),
-- its first identifier (system|value) as the idempotency key, so that the
-- same request again returns the same appointment.
CREATE FUNCTION schedphi.fhir_book(appointment jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id uuid;
	q record;
BEGIN
	IF appointment IS NULL OR jsonb_typeof(appointment) <> 'object' THEN
		RAISE EXCEPTION 'appointment must be an Appointment resource' USING ERRCODE = '22023';
	END IF;
	v_id := schedphi._fhir_uuid(CASE WHEN jsonb_typeof(appointment->'id') = 'string' THEN appointment->>'id' END);
	IF v_id IS NOT NULL AND EXISTS (SELECT 1 FROM schedphi.appointment a WHERE a.id = v_id) THEN
		PERFORM schedphi.confirm(v_id);
		RETURN schedphi.fhir_appointment(v_id);
	END IF;
	q := schedphi._fhir_request(appointment);
	v_id := schedphi.book(q.patient, q.actors, q.during, q.kind, q.reason, q.idem);
	-- the client's identifier is the appointment's from now on (search by it)
	IF q.idem IS NOT NULL THEN
		INSERT INTO schedphi.appointment_ref (tenant, system, value, appointment)
		SELECT a.tenant, 'fhir:' || split_part(q.idem, '|', 1), substr(q.idem, strpos(q.idem, '|') + 1), a.id
		FROM schedphi.appointment a WHERE a.id = v_id
		ON CONFLICT ON CONSTRAINT appointment_ref_pkey DO NOTHING;
	END IF;
	RETURN schedphi.fhir_appointment(v_id);
END
$$;

-- ---------------------------------------------------------------- ingest

-- The tenant a bundle is for: the caller's integration tenant, or, for a
-- login that integrates for several, the one Bundle.meta.tag names
-- (system urn:schedphi:tenant).
CREATE FUNCTION schedphi._fhir_ingest_tenant(p_bundle jsonb)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v_mine uuid[] := schedphi._role_tenants('integration');
	v_tag uuid;
BEGIN
	IF cardinality(v_mine) = 0 THEN
		PERFORM schedphi._deny(CASE WHEN c.via = 'token' THEN c.tenant END,
			'permission denied: EHR bundles are handed in by the integration role',
			'fhir_ingest needs the integration role in a tenant.');
	END IF;
	SELECT schedphi._fhir_uuid(t->>'code') INTO v_tag
	FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_bundle->'meta'->'tag') = 'array' THEN p_bundle->'meta'->'tag' ELSE '[]' END) t
	WHERE t->>'system' = 'urn:schedphi:tenant' LIMIT 1;
	IF v_tag IS NOT NULL THEN
		IF NOT v_tag = ANY (v_mine) THEN
			PERFORM schedphi._deny_tenant(v_tag);
		END IF;
		RETURN v_tag;
	END IF;
	IF cardinality(v_mine) > 1 THEN
		RAISE EXCEPTION 'this login integrates for several tenants: name one in Bundle.meta.tag (system urn:schedphi:tenant)'
			USING ERRCODE = '22023';
	END IF;
	RETURN v_mine[1];
END
$$;

-- A Patient entry of a bundle: found by its MRN (the identifier of type
-- MR, else its first), or registered from name, birthDate and postalCode.
CREATE FUNCTION schedphi._fhir_ingest_patient(p_tenant uuid, p_res jsonb, OUT patient uuid, OUT created boolean)
LANGUAGE plpgsql
AS $$
DECLARE
	v_mrn text;
	v_name jsonb;
	v_birth date;
	v_zip text;
	v_idx bytea;
BEGIN
	SELECT schedphi._norm_mrn(i->>'value') INTO v_mrn
	FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_res->'identifier') = 'array' THEN p_res->'identifier' ELSE '[]' END)
		 WITH ORDINALITY AS u(i, o)
	WHERE jsonb_typeof(i->'value') = 'string' AND length(i->>'value') <= 64 AND schedphi._norm_mrn(i->>'value') IS NOT NULL
	ORDER BY coalesce(i->'type'->'coding' @> '[{"code": "MR"}]', false) DESC, o
	LIMIT 1;
	IF v_mrn IS NULL THEN
		RAISE EXCEPTION 'Patient.identifier: a patient needs an identifier that is an MRN' USING ERRCODE = '22023';
	END IF;
	-- (the blind index first: under Citus the query runs on the tenant's
	-- node, and the tenant's key is the coordinator's to use)
	v_idx := schedphi._blind(p_tenant, 'mrn', v_mrn);
	SELECT p.id INTO patient FROM schedphi.patient p WHERE p.tenant = p_tenant AND p.mrn_idx = v_idx;
	created := patient IS NULL;
	IF NOT created THEN
		RETURN;
	END IF;
	v_name := CASE WHEN jsonb_typeof(p_res->'name') = 'array' THEN p_res->'name'->0 END;
	IF jsonb_typeof(v_name->'family') <> 'string' OR jsonb_typeof(v_name->'given'->0) <> 'string' THEN
		RAISE EXCEPTION 'Patient.name: a new patient needs a family and a given name' USING ERRCODE = '22023';
	END IF;
	IF coalesce(p_res->>'birthDate', '') !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
		RAISE EXCEPTION 'Patient.birthDate: a new patient needs a full birth date' USING ERRCODE = '22023';
	END IF;
	BEGIN
		v_birth := (p_res->>'birthDate')::date;
	EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
		RAISE EXCEPTION 'Patient.birthDate is not a valid date' USING ERRCODE = '22023';
	END;
	v_zip := (SELECT a->>'postalCode' FROM jsonb_array_elements(
				CASE WHEN jsonb_typeof(p_res->'address') = 'array' THEN p_res->'address' ELSE '[]' END) a
			  WHERE coalesce(a->>'postalCode', '') ~ '^[0-9]{5}(-?[0-9]{4})?$' LIMIT 1);
	patient := schedphi.register_patient(p_tenant, left(v_name->'given'->>0, 200), left(v_name->>'family', 200),
										 v_birth, NULL, NULL, v_mrn, v_zip);
END
$$;

-- The actor a participant of an EHR's Appointment names: a schedphi id of
-- the tenant, else an external id the admin mapped (add_external_id):
-- ('fhir:<Type>', <id>) for a reference, (system, value) for a logical
-- reference by identifier.  SPF04 when it names none.
CREATE FUNCTION schedphi._fhir_ingest_actor(p_tenant uuid, p_actor jsonb, p_n int)
RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	r record := schedphi._fhir_ref(p_actor, ARRAY['Practitioner', 'PractitionerRole', 'Location', 'Device', 'HealthcareService']);
	v uuid;
	v_sys text;
	v_val text;
BEGIN
	IF r.type IS NOT NULL THEN
		v := schedphi._fhir_uuid(r.id);
		IF v IS NOT NULL AND EXISTS (SELECT 1 FROM schedphi.actor a WHERE a.tenant = p_tenant AND a.id = v) THEN
			RETURN v;
		END IF;
		v_sys := 'fhir:' || r.type;
		v_val := r.id;
	ELSIF p_actor ? 'reference' THEN
		RAISE EXCEPTION 'Appointment.participant[%].actor.reference must be a Practitioner, Location or Device reference', p_n
			USING ERRCODE = '22023';
	ELSIF jsonb_typeof(p_actor->'identifier') = 'object' THEN
		v_sys := left(p_actor->'identifier'->>'system', 200);
		v_val := left(p_actor->'identifier'->>'value', 200);
	END IF;
	SELECT e.target INTO v FROM schedphi.external_id e WHERE e.tenant = p_tenant AND e.system = v_sys AND e.value = v_val;
	IF v IS NULL THEN
		RAISE EXCEPTION 'Appointment.participant[%].actor is not known to schedphi', p_n
			USING ERRCODE = 'SPF04',
				  DETAIL = CASE WHEN v_sys IS NOT NULL
								THEN pg_catalog.format('An admin maps it with add_external_id(tenant, %L, %L, actor).', v_sys, v_val) END;
	END IF;
	RETURN v;
END
$$;

-- One Appointment of an EHR's bundle, matched on its identifiers (else
-- its id): made, moved or given its new status.  An ended appointment
-- (cancelled, noshow, entered-in-error, fulfilled) is never revived.
-- Availability is not checked (the EHR decides its own bookings); a
-- clash is, as everywhere (23P01).
CREATE FUNCTION schedphi._fhir_ingest_appointment(p_tenant uuid, p_res jsonb, p_patients jsonb,
	OUT appointment uuid, OUT outcome text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
	v_refs text[][] := '{}';
	i jsonb;
	r jsonb;
	n int := 0;
	pt record;
	v_patient uuid;
	v_actors uuid[] := '{}';
	v_actor uuid;
	v_during tstzrange;
	v_status text;
	v_kr record;
	v schedphi.appointment;
	v_exists boolean;
	k int;
	v_idx bytea;
BEGIN
	FOR i IN SELECT x FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_res->'identifier') = 'array'
													   THEN p_res->'identifier' ELSE '[]' END) x LOOP
		IF jsonb_typeof(i->'system') = 'string' AND jsonb_typeof(i->'value') = 'string'
		   AND length(i->>'system') BETWEEN 1 AND 190 AND length(i->>'value') BETWEEN 1 AND 200
		   AND i->>'system' <> 'urn:schedphi:appointment' THEN
			v_refs := v_refs || ARRAY[ARRAY['fhir:' || (i->>'system'), i->>'value']];
		END IF;
	END LOOP;
	IF cardinality(v_refs) = 0 THEN
		IF coalesce(p_res->>'id', '') !~ '^[A-Za-z0-9.-]{1,64}$' THEN
			RAISE EXCEPTION 'Appointment.identifier (system and value) or Appointment.id is required' USING ERRCODE = '22023';
		END IF;
		v_refs := ARRAY[ARRAY['fhir:urn:schedphi:fhir-id', p_res->>'id']];
	END IF;
	v_status := p_res->>'status';
	IF v_status IS NULL OR v_status NOT IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'cancelled',
											'noshow', 'entered-in-error', 'checked-in', 'waitlist') THEN
		RAISE EXCEPTION 'Appointment.status must be an R4 Appointment.status code' USING ERRCODE = '22023';
	END IF;

	-- an appointment this EHR sent before (by any of its identifiers)
	FOR k IN 1 .. array_length(v_refs, 1) LOOP
		SELECT a.* INTO v FROM schedphi.appointment_ref x
		JOIN schedphi.appointment a ON a.tenant = x.tenant AND a.id = x.appointment
		WHERE x.tenant = p_tenant AND x.system = v_refs[k][1] AND x.value = v_refs[k][2]
		FOR UPDATE OF a;
		v_exists := FOUND;
		EXIT WHEN v_exists;
	END LOOP;

	-- the time and the actors
	v_during := schedphi._fhir_when(p_res);
	IF v_during IS NULL THEN
		RAISE EXCEPTION 'Appointment.start and end are required (a request by requestedPeriod alone is not taken)'
			USING ERRCODE = '22023';
	END IF;
	IF upper(v_during) > lower(v_during) + interval '1 day' THEN
		RAISE EXCEPTION 'Appointment.end must come after the start, within a day' USING ERRCODE = '22023';
	END IF;
	IF jsonb_typeof(p_res->'participant') <> 'array' THEN
		RAISE EXCEPTION 'Appointment.participant must be an array' USING ERRCODE = '22023';
	END IF;
	FOR r IN SELECT x FROM jsonb_array_elements(p_res->'participant') x LOOP
		n := n + 1;
		IF jsonb_typeof(r) <> 'object' OR jsonb_typeof(r->'actor') <> 'object'
		   OR NOT (r->'actor' ? 'reference' OR r->'actor' ? 'identifier') THEN
			CONTINUE;   -- (a participant by display only: "Phone Call")
		END IF;
		pt := schedphi._fhir_ref(r->'actor', ARRAY['Patient']);
		IF pt.type = 'Patient' OR (r->'actor'->>'type') = 'Patient'
		   OR (p_patients ? (r->'actor'->>'reference')) THEN
			v_actor := coalesce((p_patients->>(r->'actor'->>'reference'))::uuid,
								(p_patients->>('Patient/' || pt.id))::uuid);
			IF v_actor IS NULL AND schedphi._fhir_uuid(pt.id) IS NOT NULL THEN
				SELECT p.id INTO v_actor FROM schedphi.patient p WHERE p.tenant = p_tenant AND p.id = pt.id::uuid;
			END IF;
			IF v_actor IS NULL AND jsonb_typeof(r->'actor'->'identifier'->'value') = 'string'
			   AND schedphi._norm_mrn(left(r->'actor'->'identifier'->>'value', 64)) IS NOT NULL THEN
				-- a logical reference by MRN (the blind index, worked out first)
				v_idx := schedphi._blind(p_tenant, 'mrn', schedphi._norm_mrn(left(r->'actor'->'identifier'->>'value', 64)));
				SELECT p.id INTO v_actor FROM schedphi.patient p WHERE p.tenant = p_tenant AND p.mrn_idx = v_idx;
			END IF;
			IF v_actor IS NULL THEN
				RAISE EXCEPTION 'Appointment.participant[%].actor: the patient is neither a schedphi patient nor a Patient entry of the bundle', n - 1
					USING ERRCODE = 'SPF04';
			END IF;
			IF v_patient IS NOT NULL AND v_patient <> v_actor THEN
				RAISE EXCEPTION 'Appointment.participant: one patient only' USING ERRCODE = '22023';
			END IF;
			v_patient := v_actor;
			CONTINUE;
		END IF;
		IF r->>'required' = 'information-only' THEN
			CONTINUE;
		END IF;
		v_actor := schedphi._fhir_ingest_actor(p_tenant, r->'actor', n - 1);
		IF NOT v_actor = ANY (v_actors) THEN
			v_actors := v_actors || v_actor;
		END IF;
	END LOOP;
	IF cardinality(v_actors) = 0 THEN
		RAISE EXCEPTION 'Appointment.participant must include a Practitioner, Location or Device' USING ERRCODE = '22023';
	END IF;
	v_actors := ARRAY(SELECT u FROM unnest(v_actors) u ORDER BY u);

	IF v_exists THEN
		appointment := v.id;
		IF v.status IN ('cancelled', 'noshow', 'entered-in-error', 'fulfilled') THEN
			outcome := CASE WHEN v_status = v.status THEN 'unchanged' ELSE 'ignored: the appointment has ended' END;
			RETURN;
		END IF;
		outcome := CASE WHEN schedphi._ehr_move(v, v_during, v_actors) THEN 'moved' ELSE 'unchanged' END;
		IF v_status <> v.status THEN
			IF NOT schedphi._transition_allowed(v.status, v_status) THEN
				RAISE EXCEPTION 'Appointment.status: the appointment is %; it cannot become %', v.status, v_status
					USING ERRCODE = '55000';
			END IF;
			SELECT a.* INTO v FROM schedphi.appointment a WHERE a.tenant = p_tenant AND a.id = v.id;
			PERFORM schedphi._set_status(v, v_status);
			outcome := v_status;
		END IF;
	ELSE
		IF v_patient IS NULL THEN
			RAISE EXCEPTION 'Appointment.participant must include the Patient' USING ERRCODE = '22023';
		END IF;
		v_kr := schedphi._fhir_kind_reason(p_res);
		appointment := schedphi._ehr_create(p_tenant, v_patient, v_actors, v_during, v_status, v_kr.kind, v_kr.reason);
		outcome := 'created';
	END IF;
	-- every identifier of it known from now on
	INSERT INTO schedphi.appointment_ref (tenant, system, value, appointment)
	SELECT p_tenant, v_refs[g.idx][1], v_refs[g.idx][2], appointment FROM generate_subscripts(v_refs, 1) AS g(idx)
	ON CONFLICT ON CONSTRAINT appointment_ref_pkey DO NOTHING;
	-- the EHR's own changes are the EHR's to tell: nothing queued for HL7 receivers
	DELETE FROM schedphi.hl7_outbox o
	WHERE o.tenant = p_tenant AND o.appointment = appointment AND o.created_at = now() AND o.sent_at IS NULL;
END
$$;

-- An EHR's transaction or batch Bundle: Patient entries (found by MRN or
-- registered) and Appointment entries (matched on their identifiers,
-- idempotent).  Returns the transaction-response (batch-response) Bundle,
-- one entry per input, in order.  A transaction is all or nothing: its
-- first failing entry raises (with the entry's index) and nothing stays.
-- A batch applies each entry on its own and answers a failed one with
-- its HTTP status and an OperationOutcome.  Each entry is on the ledger
-- (its index, type, a keyed digest of it and the outcome; never its
-- content).
CREATE FUNCTION schedphi.fhir_ingest(bundle jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t uuid;
	v_type text;
	e jsonb;
	res jsonb;
	n int := 0;
	v_patients jsonb := '{}';
	v_out jsonb := '[]';
	v_resp jsonb;
	v_p record;
	v_a record;
	v_detail jsonb;
	v_state text;
	v_msg text;
	v_det text;
	v_key text;
BEGIN
	IF bundle IS NULL OR jsonb_typeof(bundle) <> 'object' OR bundle->>'resourceType' IS DISTINCT FROM 'Bundle' THEN
		RAISE EXCEPTION 'bundle must be a Bundle resource' USING ERRCODE = '22023';
	END IF;
	v_type := bundle->>'type';
	IF v_type IS NULL OR v_type NOT IN ('transaction', 'batch') THEN
		RAISE EXCEPTION 'Bundle.type must be transaction or batch' USING ERRCODE = '22023';
	END IF;
	IF jsonb_typeof(bundle->'entry') IS DISTINCT FROM 'array' OR jsonb_array_length(bundle->'entry') NOT BETWEEN 1 AND 1000 THEN
		RAISE EXCEPTION 'Bundle.entry must hold 1 to 1000 entries' USING ERRCODE = '22023';
	END IF;
	t := schedphi._fhir_ingest_tenant(bundle);
	PERFORM schedphi._authorize(t, ARRAY['integration']);

	-- Patient entries first (Appointments refer to them), then the rest, in order
	FOR e, n IN SELECT x, o::int FROM jsonb_array_elements(bundle->'entry') WITH ORDINALITY AS y(x, o)
				ORDER BY (x->'resource'->>'resourceType' IS DISTINCT FROM 'Patient'), o LOOP
		res := CASE WHEN jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'resource') = 'object' THEN e->'resource' END;
		v_detail := jsonb_build_object('entry', n - 1, 'type', left(res->>'resourceType', 64), 'bundle', v_type,
									   'digest', encode(schedphi._blind(t, 'fhir', e::text), 'hex'));
		BEGIN
			IF res IS NULL THEN
				RAISE EXCEPTION 'Bundle.entry[%] has no resource', n - 1 USING ERRCODE = '22023';
			ELSIF jsonb_typeof(e->'request') = 'object' AND coalesce(e->'request'->>'method', '') NOT IN ('POST', 'PUT') THEN
				RAISE EXCEPTION 'Bundle.entry[%].request.method must be POST or PUT', n - 1 USING ERRCODE = 'SPF05';
			ELSIF res->>'resourceType' = 'Patient' THEN
				v_p := schedphi._fhir_ingest_patient(t, res);
				FOREACH v_key IN ARRAY ARRAY[e->>'fullUrl', 'Patient/' || (res->>'id')] LOOP
					IF v_key IS NOT NULL THEN
						v_patients := v_patients || jsonb_build_object(v_key, v_p.patient);
					END IF;
				END LOOP;
				v_resp := jsonb_build_object('status', CASE WHEN v_p.created THEN '201 Created' ELSE '200 OK' END,
											 'location', 'Patient/' || v_p.patient::text);
				PERFORM schedphi._audit_change('fhir_in', t, 'patient', v_p.patient, v_p.patient,
					v_detail || jsonb_build_object('outcome', CASE WHEN v_p.created THEN 'created' ELSE 'matched' END));
			ELSIF res->>'resourceType' = 'Appointment' THEN
				v_a := schedphi._fhir_ingest_appointment(t, res, v_patients);
				v_resp := jsonb_build_object('status', CASE WHEN v_a.outcome = 'created' THEN '201 Created' ELSE '200 OK' END,
											 'location', 'Appointment/' || v_a.appointment::text);
				IF v_a.outcome LIKE 'ignored%' THEN
					v_resp := v_resp || jsonb_build_object('outcome', jsonb_build_object('resourceType', 'OperationOutcome',
						'issue', jsonb_build_array(jsonb_build_object('severity', 'information', 'code', 'informational',
							'diagnostics', v_a.outcome))));
				END IF;
				PERFORM schedphi._audit_change('fhir_in', t, 'appointment', v_a.appointment, NULL,
					v_detail || jsonb_build_object('outcome', v_a.outcome));
			ELSE
				RAISE EXCEPTION 'Bundle.entry[%]: only Patient and Appointment resources are taken', n - 1
					USING ERRCODE = 'SPF05';
			END IF;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_det = PG_EXCEPTION_DETAIL;
			-- (a malformed value the checks above let through: an invalid argument)
			IF v_state IN ('22P02', '22007', '22008', '23514', '22001', '2202E', '22004') THEN
				v_state := '22023';
				v_msg := 'Bundle.entry[' || (n - 1) || '] has a value of the wrong form';
				v_det := NULL;
			END IF;
			PERFORM schedphi._audit_event('fhir_in', t, lower(coalesce(left(res->>'resourceType', 64), 'entry')), NULL, NULL,
				v_detail || jsonb_build_object('outcome', 'error', 'error', v_state));
			IF v_type = 'transaction' OR NOT schedphi._fhir_business_error(v_state) THEN
				RAISE EXCEPTION USING ERRCODE = v_state,
					MESSAGE = CASE WHEN v_msg LIKE 'Bundle.entry[%' THEN v_msg
								   ELSE 'Bundle.entry[' || (n - 1) || ']: ' || v_msg END,
					DETAIL = coalesce(v_det, '');
			END IF;
			v_resp := jsonb_build_object('status', (schedphi._fhir_issue(v_state)).http,
										 'outcome', schedphi._fhir_oo(v_state, v_msg, v_det));
		END;
		v_out := v_out || jsonb_build_array(jsonb_build_object('o', n, 'response', v_resp));
	END LOOP;
	RETURN jsonb_build_object('resourceType', 'Bundle', 'type', v_type || '-response',
		'entry', (SELECT jsonb_agg(jsonb_build_object('response', x->'response') ORDER BY (x->>'o')::int)
				  FROM jsonb_array_elements(v_out) x));
END
$$;

-- ---------------------------------------------------------------- _oo

-- The _oo variants: the same, but a business error (a bad argument, a
-- denial, a conflict, an illegal transition, a rate limit, an unavailable
-- key) is returned as an OperationOutcome instead of raised.  What the
-- call changed is undone; what the ledger recorded of it stays.
CREATE FUNCTION schedphi._fhir_oo_call(p_sql text, p_arg1 anyelement, p_arg2 text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
	v jsonb;
	v_state text;
	v_msg text;
	v_det text;
BEGIN
	EXECUTE p_sql INTO v USING p_arg1, p_arg2;
	RETURN v;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_det = PG_EXCEPTION_DETAIL;
	IF NOT schedphi._fhir_business_error(v_state) THEN
		RAISE;
	END IF;
	RETURN schedphi._fhir_oo(v_state, v_msg, nullif(v_det, ''));
END
$$;

CREATE FUNCTION schedphi.fhir_appointment_oo(appointment uuid) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_appointment($1)', $1) $$;
CREATE FUNCTION schedphi.fhir_patient_oo(patient uuid) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_patient($1)', $1) $$;
CREATE FUNCTION schedphi.fhir_schedule_oo(actor uuid) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_schedule($1)', $1) $$;
CREATE FUNCTION schedphi.fhir_find_oo(params jsonb) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_find($1)', $1) $$;
CREATE FUNCTION schedphi.fhir_search_oo(resource_type text, params jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_search($2, $1)', $2, $1) $$;
CREATE FUNCTION schedphi.fhir_hold_oo(appointment jsonb) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_hold($1)', $1) $$;
CREATE FUNCTION schedphi.fhir_book_oo(appointment jsonb) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_book($1)', $1) $$;
CREATE FUNCTION schedphi.fhir_cancel_oo(appointment uuid, reason text DEFAULT NULL) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_cancel($1, $2)', $1, $2) $$;
CREATE FUNCTION schedphi.fhir_ingest_oo(bundle jsonb) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT schedphi._fhir_oo_call('SELECT schedphi.fhir_ingest($1)', $1) $$;

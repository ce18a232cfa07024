-- schedphi install script, part 8b: HL7 v2 scheduling messages from EHRs
-- (docs/integration.md).
--
-- An interface engine (or schedphi-agent mllp) hands each SIU message to
-- hl7_ingest() as an integration login and returns the ACK it gets.  The
-- message is read by the C codec (src/codec/hl7.c, fuzzed), its sender
-- decides the tenant and the time zone of times written without an
-- offset, and the appointment it names is made, moved or ended as the
-- trigger event says.  The EHR is the system of record for its own
-- bookings: availability and blocks are not checked, but a clash is (the
-- exclusion constraint decides, as everywhere), and answered AE.  The
-- message itself is never kept: a keyed digest of it, its control id and
-- the ACK are, for idempotency; the ledger has one record per message.

-- An EHR's identifiers of actors: (system, value) -> an actor of the tenant.
CREATE TABLE schedphi.external_id (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	system		text NOT NULL CHECK (length(system) BETWEEN 1 AND 200),
	value		text NOT NULL CHECK (length(value) BETWEEN 1 AND 200),
	target		uuid NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, system, value),
	FOREIGN KEY (tenant, target) REFERENCES schedphi.actor (tenant, id) ON DELETE CASCADE
);

-- The senders of HL7 messages: MSH-3 and MSH-4 (first components) name one.
CREATE TABLE schedphi.hl7_sender (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	application text NOT NULL CHECK (length(application) BETWEEN 1 AND 200),
	facility	text NOT NULL CHECK (length(facility) <= 200),	-- '' when the sender names none
	timezone	text NOT NULL,
	create_unknown boolean NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	created_by	name NOT NULL DEFAULT schedphi._login(),
	PRIMARY KEY (tenant, id),
	UNIQUE (tenant, application, facility)
);
CREATE INDEX hl7_sender_name ON schedphi.hl7_sender (application, facility);

-- Each message accepted (AA), by its sender and control id: the keyed
-- digest of its bytes and the ACK it was answered with.
CREATE TABLE schedphi.hl7_message (
	tenant		uuid NOT NULL,
	sender		uuid NOT NULL,
	control_id	text NOT NULL,
	digest		bytea NOT NULL,
	event		text NOT NULL,
	appointment uuid,
	ack			text NOT NULL,
	received_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, sender, control_id),
	FOREIGN KEY (tenant, sender) REFERENCES schedphi.hl7_sender (tenant, id) ON DELETE CASCADE
);

-- An EHR's ids of appointments (SCH-2 filler, else SCH-1 placer).
CREATE TABLE schedphi.appointment_ref (
	tenant		uuid NOT NULL,
	system		text NOT NULL,
	value		text NOT NULL CHECK (length(value) BETWEEN 1 AND 200),
	appointment uuid NOT NULL,
	PRIMARY KEY (tenant, system, value),
	FOREIGN KEY (tenant, appointment) REFERENCES schedphi.appointment (tenant, id) ON DELETE CASCADE
);
CREATE INDEX appointment_ref_appointment ON schedphi.appointment_ref (tenant, appointment);

DO $config$
BEGIN
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.external_id', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.hl7_sender', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.hl7_message', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.appointment_ref', '');
END
$config$;

CREATE FUNCTION schedphi._hl7_read(message text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'schedphi_hl7_read' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION schedphi._hl7_escape(value text) RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_hl7_escape' LANGUAGE C IMMUTABLE STRICT;

CREATE FUNCTION schedphi.add_external_id(tenant uuid, system text, value text, target uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF system IS NULL OR length(btrim(system)) NOT BETWEEN 1 AND 200
	   OR value IS NULL OR length(btrim(value)) NOT BETWEEN 1 AND 200 THEN
		RAISE EXCEPTION 'system and value must be 1 to 200 characters' USING ERRCODE = '22023';
	END IF;
	IF target IS NULL OR NOT EXISTS (SELECT 1 FROM schedphi.actor a WHERE a.tenant = tenant AND a.id = target) THEN
		RAISE EXCEPTION 'target must be an actor of the tenant' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.external_id AS e (tenant, system, value, target)
	VALUES (tenant, btrim(system), btrim(value), target)
	ON CONFLICT ON CONSTRAINT external_id_pkey DO UPDATE SET target = excluded.target;
END
$$;

CREATE FUNCTION schedphi.add_hl7_sender(tenant uuid, application text, facility text, timezone text,
										create_unknown boolean DEFAULT true)
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
	IF application IS NULL OR length(btrim(application)) NOT BETWEEN 1 AND 200
	   OR length(btrim(coalesce(facility, ''))) > 200 THEN
		RAISE EXCEPTION 'application must be 1 to 200 characters, facility at most 200' USING ERRCODE = '22023';
	END IF;
	IF create_unknown IS NULL THEN
		RAISE EXCEPTION 'create_unknown must not be null' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.hl7_sender (tenant, application, facility, timezone, create_unknown)
	VALUES (tenant, btrim(application), btrim(coalesce(facility, '')), schedphi._check_timezone(timezone),
			create_unknown)
	ON CONFLICT ON CONSTRAINT hl7_sender_tenant_application_facility_key DO UPDATE
	SET timezone = excluded.timezone, create_unknown = excluded.create_unknown
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

-- An ACK: MSH (receiver and sender swapped), MSA, and for AE and AR an ERR
-- (ERR-2 location, ERR-3 an HL7 table 0357 code, ERR-4 severity E) with
-- the reason in MSA-3 too (versions before 2.5 read only that).  Nothing
-- from the message but its routing fields, its control id and version.
CREATE FUNCTION schedphi._hl7_ack(p_msh jsonb, p_code text, p_error text, p_err_code text, p_location text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- (PL/pgSQL: its plan is kept, where a SQL function with a SET clause
	-- would be parsed again at every call)
	RETURN (
	SELECT concat_ws(E'\r',
		concat_ws('|', 'MSH', '^~\&', schedphi._hl7_escape(coalesce(p_msh->>'receiving_application', 'SCHEDPHI')),
				  schedphi._hl7_escape(coalesce(p_msh->>'receiving_facility', '')),
				  schedphi._hl7_escape(coalesce(p_msh->>'sending_application', '')),
				  schedphi._hl7_escape(coalesce(p_msh->>'sending_facility', '')),
				  to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS') || '+0000', '',
				  'ACK^' || schedphi._hl7_escape(coalesce(p_msh->>'event', '')) || '^ACK',
				  -- (20 characters: versions before 2.5 allow no more)
				  'SP' || left(replace(gen_random_uuid()::text, '-', ''), 18), 'P',
				  schedphi._hl7_escape(coalesce(p_msh->>'version', '2.5'))),
		concat_ws('|', 'MSA', p_code, schedphi._hl7_escape(coalesce(p_msh->>'control_id', '')),
				  schedphi._hl7_escape(p_error)),
		CASE WHEN p_code <> 'AA' THEN
			-- (the location is ours, seg^seq^field, with its components as written)
			concat_ws('|', 'ERR', '', CASE WHEN p_location ~ '^[A-Z0-9]{3}(\^[0-9]+){0,3}$' THEN p_location ELSE '' END,
					  p_err_code || '^' || CASE p_err_code
						  WHEN '100' THEN 'Segment sequence error' WHEN '101' THEN 'Required field missing'
						  WHEN '102' THEN 'Data type error' WHEN '103' THEN 'Table value not found'
						  WHEN '200' THEN 'Unsupported message type' WHEN '201' THEN 'Unsupported event code'
						  WHEN '204' THEN 'Unknown key identifier' WHEN '205' THEN 'Duplicate key identifier'
						  WHEN '206' THEN 'Application record locked'
						  ELSE 'Application internal error' END || '^HL70357',
					  'E', '', '', schedphi._hl7_escape(coalesce(p_error, '')))
		END) || E'\r');
END
$$;

-- A DTM read by _hl7_read as a time: with its offset, or in the sender's zone.
-- (This and the next: one expression, no SET clause, every name qualified,
-- so that the planner inlines them into the statements that call them.)
CREATE FUNCTION schedphi._hl7_time(p_dtm jsonb, p_timezone text)
RETURNS timestamptz
-- (STABLE as the cast from text is: declared IMMUTABLE it would not be inlined)
LANGUAGE sql STABLE
AS $$
	SELECT CASE WHEN p_dtm IS NULL OR pg_catalog.jsonb_typeof(p_dtm) <> 'object' THEN NULL
				WHEN p_dtm->'offset' = 'null'::jsonb THEN (p_dtm->>'local')::timestamp AT TIME ZONE p_timezone
				ELSE ((p_dtm->>'local')::timestamp - (p_dtm->>'offset')::int * interval '1 minute') AT TIME ZONE 'UTC' END
$$;

-- A duration and its unit as senders write them: s, sec, seconds; m, min,
-- minutes, MIN^MINUTES; h, hr, hours; blank means minutes.  NULL when the
-- unit is not one of these.
CREATE FUNCTION schedphi._hl7_duration(p_value text, p_unit text, p_unit2 text)
RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE WHEN p_value IS NULL OR p_value !~ '^[0-9]{1,6}(\.[0-9]+)?$' THEN NULL
				ELSE p_value::numeric * CASE pg_catalog.lower(coalesce(nullif(pg_catalog.btrim(p_unit), ''),
																	 nullif(pg_catalog.btrim(p_unit2), ''), 'min'))
					WHEN 's' THEN interval '1 second' WHEN 'sec' THEN interval '1 second'
					WHEN 'second' THEN interval '1 second' WHEN 'seconds' THEN interval '1 second'
					WHEN 'm' THEN interval '1 minute' WHEN 'min' THEN interval '1 minute'
					WHEN 'mins' THEN interval '1 minute' WHEN 'minute' THEN interval '1 minute'
					WHEN 'minutes' THEN interval '1 minute'
					WHEN 'h' THEN interval '1 hour' WHEN 'hr' THEN interval '1 hour'
					WHEN 'hour' THEN interval '1 hour' WHEN 'hours' THEN interval '1 hour' END END
$$;

-- The actor an AIG, AIL or AIP resource names, by the sender's external
-- ids ('hl7:<sender>:<segment>'); made when the sender allows it.  NULL:
-- unknown and not to be made.
CREATE FUNCTION schedphi._hl7_actor(p_tenant uuid, p_sender schedphi.hl7_sender, p_res jsonb)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- the same statements every time: generic plans save planning them
-- (distribute() takes it off: Citus routes by the values)
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	v_system text := 'hl7:' || p_sender.id || ':' || (p_res->>'segment');
	v_value text := left(p_res->>'id', 200);
	v_id uuid;
	v_name text;
	v_kind text;
BEGIN
	SELECT e.target INTO v_id FROM schedphi.external_id e
	WHERE e.tenant = p_tenant AND e.system = v_system AND e.value = v_value;
	IF v_id IS NOT NULL OR NOT p_sender.create_unknown THEN
		RETURN v_id;
	END IF;
	v_name := left(coalesce(CASE p_res->>'segment' WHEN 'AIP' THEN nullif(concat_ws(' ', p_res->>'name2', p_res->>'name'), '')
													ELSE coalesce(p_res->>'name', p_res->>'name2') END, v_value), 200);
	-- (values worked out first: Citus sends the statement to the tenant's
	-- node, and writes a CASE on a parameter there as one it cannot run)
	v_kind := CASE p_res->>'segment' WHEN 'AIP' THEN 'practitioner' WHEN 'AIL' THEN 'room' ELSE 'device' END;
	v_name := schedphi._check_name('name', v_name);
	INSERT INTO schedphi.actor (tenant, kind, name, capacity) VALUES (p_tenant, v_kind, v_name, 1)
	RETURNING id INTO v_id;
	INSERT INTO schedphi.external_id (tenant, system, value, target) VALUES (p_tenant, v_system, v_value, v_id);
	RETURN v_id;
END
$$;

-- An HL7 filler status (table 0278) as an appointment status, or NULL.
CREATE FUNCTION schedphi._hl7_status(p_code text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE lower(btrim(p_code))
		WHEN 'pending' THEN 'pending' WHEN 'waitlist' THEN 'waitlist' WHEN 'booked' THEN 'booked'
		WHEN 'overbook' THEN 'booked' WHEN 'started' THEN 'arrived' WHEN 'complete' THEN 'fulfilled'
		WHEN 'cancelled' THEN 'cancelled' WHEN 'dc' THEN 'cancelled' WHEN 'deleted' THEN 'entered-in-error'
		WHEN 'noshow' THEN 'noshow' END
$$;

-- The seats of an EHR's appointment in the common case (src/book.c), as
-- _reserve(..., p_rules => false) takes them; false when _reserve must.
CREATE FUNCTION schedphi._ehr_reserve(p_tenant uuid, p_appointment uuid, p_actors uuid[], p_during tstzrange)
RETURNS boolean
AS 'MODULE_PATHNAME', 'schedphi_ehr_reserve'
LANGUAGE C VOLATILE STRICT;

-- An EHR's appointment (HL7 v2 or FHIR), as the EHR made it: availability
-- and blocks are not checked (the EHR decides its own bookings), a clash
-- is (23P01), the reason sealed.
CREATE FUNCTION schedphi._ehr_create(p_tenant uuid, p_patient uuid, p_actors uuid[], p_during tstzrange,
									 p_status text, p_kind text, p_reason text)
RETURNS uuid
LANGUAGE plpgsql
AS $$
DECLARE
	v_id uuid := schedphi._appointment_id();
BEGIN
	IF p_during IS NULL OR isempty(p_during) OR lower_inf(p_during) OR upper_inf(p_during) THEN
		RAISE EXCEPTION 'an appointment needs a start and a later end' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.appointment (tenant, id, patient, actors, during, status, kind, reason)
	VALUES (p_tenant, v_id, p_patient, p_actors, p_during, p_status, p_kind,
			schedphi._seal(p_tenant, 'appointment', 'reason', v_id, p_reason));
	IF schedphi._occupies(p_status)
	   AND NOT coalesce(schedphi._ehr_reserve(p_tenant, v_id, p_actors, p_during), false) THEN
		PERFORM schedphi._reserve(p_tenant, v_id, p_actors, p_during, NULL, false);
	END IF;
	RETURN v_id;
END
$$;

-- An EHR's appointment given its new time and actors, when they changed
-- (its seats taken again where it occupies them).  Whether it moved.
CREATE FUNCTION schedphi._ehr_move(v schedphi.appointment, p_during tstzrange, p_actors uuid[])
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
	IF v.during IS NOT DISTINCT FROM p_during AND v.actors IS NOT DISTINCT FROM p_actors THEN
		RETURN false;
	END IF;
	IF p_during IS NULL OR isempty(p_during) OR lower_inf(p_during) OR upper_inf(p_during) THEN
		RAISE EXCEPTION 'an appointment needs a start and a later end' USING ERRCODE = '22023';
	END IF;
	IF schedphi._occupies(v.status) THEN
		DELETE FROM schedphi.appointment_actor x WHERE x.tenant = v.tenant AND x.appointment = v.id;
		IF v.hold_expires IS NOT NULL
		   OR NOT coalesce(schedphi._ehr_reserve(v.tenant, v.id, p_actors, p_during), false) THEN
			PERFORM schedphi._reserve(v.tenant, v.id, p_actors, p_during, v.hold_expires, false);
		END IF;
	END IF;
	UPDATE schedphi.appointment a SET during = p_during, actors = p_actors, updated_at = now()
	WHERE a.tenant = v.tenant AND a.id = v.id;
	RETURN true;
END
$$;

-- The work of one message, in its own subtransaction (hl7_ingest): the
-- patient, the actors, the appointment.  Raises with SQLSTATE 'SPH01' and
-- "code|location|text" as its message for what the sender must fix; any
-- other error (a clash: 23P01) is answered AE by the caller too.
CREATE FUNCTION schedphi._hl7_apply(p_sender schedphi.hl7_sender, p_doc jsonb, OUT appointment uuid,
									OUT outcome text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- the same statements every time: generic plans save planning them
-- (distribute() takes it off: Citus routes by the values)
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	t uuid := p_sender.tenant;
	v_event text := upper(p_doc->'msh'->>'event');
	sch jsonb := p_doc->'sch';
	pid jsonb := p_doc->'pid';
	v_ref_system text;
	v_ref text;
	v_start timestamptz;
	v_end timestamptz;
	v_dur interval;
	v_actors uuid[] := '{}';
	v_actor uuid;
	r jsonb;
	n int := 0;
	v_patient uuid;
	v_mrn text;
	v_idx bytea;
	v_kind text := 'routine';
	v_reason text;
	v schedphi.appointment;
	v_to text;
	v_path text[];
	v_step text;
	v_exists boolean;
	v_resources int := coalesce(jsonb_array_length(p_doc->'resources'), 0);
	v_m text;
BEGIN
	IF NOT (sch->>'present')::boolean THEN
		RAISE EXCEPTION '100|SCH|an SIU message needs its SCH segment' USING ERRCODE = 'SPH01';
	END IF;
	IF sch->>'filler_id' IS NOT NULL THEN
		v_ref_system := 'hl7:' || p_sender.id || ':filler';
		v_ref := left(sch->>'filler_id', 200);
	ELSIF sch->>'placer_id' IS NOT NULL THEN
		v_ref_system := 'hl7:' || p_sender.id || ':placer';
		v_ref := left(sch->>'placer_id', 200);
	ELSE
		RAISE EXCEPTION '101|SCH^1^2|SCH-2 (filler appointment id) or SCH-1 (placer appointment id) is required'
			USING ERRCODE = 'SPH01';
	END IF;
	SELECT a.* INTO v FROM schedphi.appointment_ref x
	JOIN schedphi.appointment a ON a.tenant = x.tenant AND a.id = x.appointment
	WHERE x.tenant = t AND x.system = v_ref_system AND x.value = v_ref
	FOR UPDATE OF a;
	v_exists := FOUND;

	-- ending events: the appointment must be known
	IF v_event IN ('S15', 'S16', 'S17', 'S26') THEN
		IF NOT v_exists THEN
			RAISE EXCEPTION '204|SCH^1^2|no appointment with this id is known' USING ERRCODE = 'SPH01';
		END IF;
		v_to := CASE v_event WHEN 'S17' THEN 'entered-in-error' WHEN 'S26' THEN 'noshow'
							 ELSE CASE WHEN schedphi._hl7_status(sch->>'status') = 'noshow' THEN 'noshow'
									   ELSE 'cancelled' END END;
		appointment := v.id;
		IF v.status = v_to THEN
			outcome := 'unchanged';
		ELSIF schedphi._transition_allowed(v.status, v_to) THEN
			PERFORM schedphi._set_status(v, v_to);
			outcome := v_to;
		ELSE
			RAISE EXCEPTION '207|SCH^1^25|the appointment is %; it cannot become %', v.status, v_to
				USING ERRCODE = 'SPH01';
		END IF;
		RETURN;
	END IF;

	-- S12, S13, S14: the time (TQ1, else SCH-11, else the first resource)
	v_start := coalesce(schedphi._hl7_time(p_doc->'tq1'->'start', p_sender.timezone),
						schedphi._hl7_time(sch->'start', p_sender.timezone));
	v_end := coalesce(schedphi._hl7_time(p_doc->'tq1'->'end', p_sender.timezone),
					  schedphi._hl7_time(sch->'end', p_sender.timezone));
	-- (the resources by their place, not by a query: this runs for every message)
	FOR i IN 0 .. v_resources - 1 LOOP
		r := p_doc->'resources'->i;
		v_start := coalesce(v_start, schedphi._hl7_time(r->'start', p_sender.timezone));
		v_dur := coalesce(v_dur, schedphi._hl7_duration(r->>'duration', r->>'units', r->>'units2'));
	END LOOP;
	IF v_start IS NULL THEN
		RAISE EXCEPTION '101|TQ1^1^7|the start is required (TQ1-7, SCH-11.4 or a resource''s start)'
			USING ERRCODE = 'SPH01';
	END IF;
	IF v_end IS NULL THEN
		v_dur := coalesce(schedphi._hl7_duration(sch->>'duration', sch->>'units', sch->>'units2'),
						  schedphi._hl7_duration(sch->>'tq_duration', NULL, NULL), v_dur);
		IF v_dur IS NULL AND sch->>'duration' IS NOT NULL THEN
			RAISE EXCEPTION '103|SCH^1^10|the duration''s unit is not one of s, min, h (or their long forms)'
				USING ERRCODE = 'SPH01';
		END IF;
		v_end := v_start + v_dur;
	END IF;
	IF v_end IS NULL OR v_end <= v_start OR v_end > v_start + interval '1 day' THEN
		RAISE EXCEPTION '102|TQ1^1^8|the end must come after the start, within a day' USING ERRCODE = 'SPH01';
	END IF;

	-- the resources, each known by the sender's ids
	FOR i IN 0 .. v_resources - 1 LOOP
		r := p_doc->'resources'->i;
		n := n + 1;
		-- (a resource without an id, or one the message deletes (action
		-- code D), is not the appointment's)
		IF r->>'id' IS NULL OR upper(coalesce(r->>'action', '')) = 'D' THEN
			CONTINUE;
		END IF;
		v_actor := schedphi._hl7_actor(t, p_sender, r);
		IF v_actor IS NULL THEN
			RAISE EXCEPTION '103|%^%^3|the resource is not known to schedphi (add_external_id)',
				r->>'segment', n USING ERRCODE = 'SPH01';
		END IF;
		IF NOT v_actor = ANY (v_actors) THEN
			v_actors := v_actors || v_actor;
		END IF;
	END LOOP;
	IF cardinality(v_actors) = 0 THEN
		RAISE EXCEPTION '101|AIP|a resource (AIG, AIL or AIP with its id) is required' USING ERRCODE = 'SPH01';
	END IF;
	IF cardinality(v_actors) > 1 THEN
		v_actors := ARRAY(SELECT u FROM unnest(v_actors) u ORDER BY u);
	END IF;

	IF v_exists THEN
		appointment := v.id;
		IF v.status IN ('cancelled', 'noshow', 'entered-in-error', 'fulfilled') THEN
			-- late or out of order: an ended appointment stays ended
			outcome := 'ignored: the appointment has ended (' || v.status || ')';
			RETURN;
		END IF;
		outcome := CASE WHEN schedphi._ehr_move(v, tstzrange(v_start, v_end), v_actors) THEN 'moved' ELSE 'unchanged' END;
		v_to := schedphi._hl7_status(sch->>'status');
		IF v_event = 'S14' AND v_to IS NOT NULL AND v_to <> v.status THEN
			-- the EHR's status, through the steps it did not report (a
			-- booked visit reported Complete arrived first); none that
			-- leads there (back to booked, say): the status stays
			v_path := schedphi._status_path(v.status, v_to);
			IF v_path IS NULL THEN
				outcome := outcome || '; status ' || v_to || ' not taken (the appointment is ' || v.status || ')';
			ELSE
				FOREACH v_step IN ARRAY v_path LOOP
					SELECT a.* INTO v FROM schedphi.appointment a WHERE a.tenant = t AND a.id = v.id;
					PERFORM schedphi._set_status(v, v_step);
				END LOOP;
				outcome := v_to;
			END IF;
		END IF;
		RETURN;
	END IF;

	-- a new appointment: its patient, by an identifier (MR first), or registered
	IF NOT (pid->>'present')::boolean THEN
		RAISE EXCEPTION '100|PID|a new appointment needs its patient (PID)' USING ERRCODE = 'SPH01';
	END IF;
	FOR i IN 0 .. coalesce(jsonb_array_length(pid->'identifiers'), 0) - 1 LOOP
		v_m := schedphi._norm_mrn(pid->'identifiers'->i->>'id');
		CONTINUE WHEN v_m IS NULL;
		IF upper(coalesce(pid->'identifiers'->i->>'type', '')) = 'MR' THEN
			v_mrn := v_m;
			EXIT;
		END IF;
		v_mrn := coalesce(v_mrn, v_m);
	END LOOP;
	IF v_mrn IS NULL THEN
		RAISE EXCEPTION '101|PID^1^3|the patient needs an identifier (PID-3) that is an MRN' USING ERRCODE = 'SPH01';
	END IF;
	-- (the blind index first: under Citus a query on the tables runs on
	-- the tenant's node, and the tenant's key is the coordinator's to use)
	v_idx := schedphi._blind(t, 'mrn', v_mrn);
	SELECT p.id INTO v_patient FROM schedphi.patient p WHERE p.tenant = t AND p.mrn_idx = v_idx;
	IF v_patient IS NULL THEN
		IF pid->>'family' IS NULL OR pid->>'given' IS NULL THEN
			RAISE EXCEPTION '101|PID^1^5|a new patient needs a family and a given name (PID-5)' USING ERRCODE = 'SPH01';
		END IF;
		IF coalesce(pid->>'birth_date', '') !~ '^[0-9]{8}' THEN
			RAISE EXCEPTION '101|PID^1^7|a new patient needs a birth date (PID-7)' USING ERRCODE = 'SPH01';
		END IF;
		BEGIN
			v_patient := schedphi.register_patient(t, pid->>'given', pid->>'family',
				to_date(left(pid->>'birth_date', 8), 'YYYYMMDD'), NULL, NULL, v_mrn,
				CASE WHEN pid->>'zip' ~ '^[0-9]{5}(-?[0-9]{4})?$' THEN pid->>'zip' END);
		EXCEPTION WHEN invalid_parameter_value OR datetime_field_overflow OR invalid_datetime_format THEN
			RAISE EXCEPTION '102|PID^1^7|the patient''s name or birth date is not valid' USING ERRCODE = 'SPH01';
		END;
	END IF;

	-- kind (SCH-7 from table 0276 when it is one), else the reason, sealed
	IF lower(sch->>'reason_code') IN ('routine', 'followup', 'walkin', 'checkup', 'emergency') THEN
		v_kind := lower(sch->>'reason_code');
	ELSE
		v_reason := left(coalesce(sch->>'reason', sch->>'reason_code'), 2000);
	END IF;
	appointment := schedphi._ehr_create(t, v_patient, v_actors, tstzrange(v_start, v_end), 'booked', v_kind, v_reason);
	-- (the placer's id too, when the filler's names it: a later message
	-- that carries only one of them finds it)
	INSERT INTO schedphi.appointment_ref (tenant, system, value, appointment)
	SELECT t, x.s, x.v, appointment
	FROM (VALUES (v_ref_system, v_ref),
				 ('hl7:' || p_sender.id || ':placer', left(sch->>'placer_id', 200))) AS x(s, v)
	WHERE x.v IS NOT NULL
	ON CONFLICT ON CONSTRAINT appointment_ref_pkey DO NOTHING;
	outcome := 'booked';
END
$$;

CREATE FUNCTION schedphi.hl7_ingest(message text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the same statements every time: generic plans save planning them
-- (distribute() takes it off: Citus routes by the values)
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	v_doc jsonb;
	v_msh jsonb;
	s schedphi.hl7_sender;
	n int;
	c record := schedphi._context();
	v_digest bytea;
	v_prior schedphi.hl7_message;
	v_ack text;
	v_res record;
	v_parts text[];
	v_detail jsonb;
	v_mine uuid[];
	v_senders schedphi.hl7_sender[];
BEGIN
	IF message IS NULL THEN
		RAISE EXCEPTION 'message must not be null' USING ERRCODE = '22023';
	END IF;
	-- only an integration login (or token) hands messages in: anyone else
	-- is refused before the message is read (42501, recorded)
	v_mine := schedphi._role_tenants('integration');
	IF cardinality(v_mine) = 0 THEN
		PERFORM schedphi._deny(CASE WHEN c.via = 'token' THEN c.tenant END,
			'permission denied: HL7 messages are handed in by the integration role',
			'hl7_ingest needs the integration role in a tenant.');
	END IF;
	v_doc := schedphi._hl7_read(message);
	v_msh := coalesce(v_doc->'msh', '{}');
	-- (an unreadable message has no sender to trust: AR, on the ledger without a tenant)
	IF v_doc ? 'error' THEN
		PERFORM schedphi._audit_event('hl7_in', NULL, 'hl7_message', NULL, NULL,
			jsonb_build_object('outcome', 'AR', 'error', v_doc->>'code', 'location', v_doc->>'location'));
		RETURN schedphi._hl7_ack(v_msh, 'AR', v_doc->>'error', v_doc->>'code', v_doc->>'location');
	END IF;

	-- the sender, among the tenants where the caller integrates
	SELECT array_agg(x) INTO v_senders FROM schedphi.hl7_sender x
	WHERE x.application = coalesce(v_msh->>'sending_application', '')
	  AND x.facility = coalesce(v_msh->>'sending_facility', '')
	  AND x.tenant = ANY (v_mine);
	n := coalesce(cardinality(v_senders), 0);
	IF n <> 1 THEN
		PERFORM schedphi._audit_event('hl7_in', NULL, 'hl7_message', NULL, NULL,
			jsonb_build_object('outcome', 'AR', 'error', 'unknown sender', 'type', v_msh->>'type',
							   'event', v_msh->>'event', 'control_id', left(v_msh->>'control_id', 64)));
		RETURN schedphi._hl7_ack(v_msh, 'AR',
			CASE WHEN n = 0 THEN 'unknown sender (MSH-3, MSH-4) for this login'
				 ELSE 'the sender (MSH-3, MSH-4) names several tenants of this login' END, '207', 'MSH^1^3');
	END IF;
	s := v_senders[1];
	PERFORM schedphi._authorize(s.tenant, ARRAY['integration']);

	v_detail := jsonb_build_object('sender', s.id, 'type', v_msh->>'type', 'event', v_msh->>'event',
								   'control_id', left(v_msh->>'control_id', 64), 'version', v_msh->>'version');
	IF upper(coalesce(v_msh->>'type', '')) <> 'SIU'
	   OR upper(coalesce(v_msh->>'event', '')) NOT IN ('S12', 'S13', 'S14', 'S15', 'S16', 'S17', 'S26') THEN
		PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
			v_detail || jsonb_build_object('outcome', 'AR'));
		RETURN schedphi._hl7_ack(v_msh, 'AR', 'only SIU S12 to S17 and S26 are taken', '200', 'MSH^1^9');
	END IF;
	IF v_msh->>'control_id' IS NULL OR length(v_msh->>'control_id') > 199 THEN
		PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
			v_detail || jsonb_build_object('outcome', 'AR'));
		RETURN schedphi._hl7_ack(v_msh, 'AR', 'MSH-10 (message control id) is required, at most 199 characters',
								 '101', 'MSH^1^10');
	END IF;

	-- the same control id again: its ACK, or AE when the content differs
	v_digest := schedphi._blind(s.tenant, 'hl7', message);
	v_detail := v_detail || jsonb_build_object('digest', encode(v_digest, 'hex'));
	SELECT * INTO v_prior FROM schedphi.hl7_message x
	WHERE x.tenant = s.tenant AND x.sender = s.id AND x.control_id = v_msh->>'control_id';
	IF FOUND THEN
		IF v_prior.digest = v_digest THEN
			PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', v_prior.appointment, NULL,
				v_detail || jsonb_build_object('outcome', 'AA', 'duplicate', true));
			RETURN v_prior.ack;
		END IF;
		PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
			v_detail || jsonb_build_object('outcome', 'AE', 'error', '205'));
		RETURN schedphi._hl7_ack(v_msh, 'AE', 'this control id was already used for another message',
								 '205', 'MSH^1^10');
	END IF;

	IF v_doc ? 'bad' THEN
		PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
			v_detail || jsonb_build_object('outcome', 'AE', 'error', v_doc->'bad'->>'code',
										   'location', v_doc->'bad'->>'location'));
		RETURN schedphi._hl7_ack(v_msh, 'AE', v_doc->'bad'->>'error', v_doc->'bad'->>'code',
								 v_doc->'bad'->>'location');
	END IF;
	BEGIN
		v_res := schedphi._hl7_apply(s, v_doc);
	EXCEPTION
		WHEN SQLSTATE 'SPH01' THEN
			v_parts := regexp_match(SQLERRM, '^([0-9]{3})\|([^|]*)\|(.*)$');
			PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
				v_detail || jsonb_build_object('outcome', 'AE', 'error', v_parts[1], 'location', v_parts[2]));
			RETURN schedphi._hl7_ack(v_msh, 'AE', v_parts[3], v_parts[1], v_parts[2]);
		WHEN exclusion_violation THEN
			-- names the actor and the interval, never the other patient
			PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
				v_detail || jsonb_build_object('outcome', 'AE', 'error', '23P01'));
			RETURN schedphi._hl7_ack(v_msh, 'AE', SQLERRM, '207', 'AIP');
		WHEN OTHERS THEN
			PERFORM schedphi._audit_event('hl7_in', s.tenant, 'hl7_message', NULL, NULL,
				v_detail || jsonb_build_object('outcome', 'AE', 'error', SQLSTATE));
			RETURN schedphi._hl7_ack(v_msh, 'AE', 'the message could not be applied (' || SQLSTATE || ')', '207', NULL);
	END;
	-- the EHR's own changes are the EHR's to tell: nothing queued for the
	-- receivers by this message
	DELETE FROM schedphi.hl7_outbox o
	WHERE o.tenant = s.tenant AND o.appointment = v_res.appointment AND o.created_at = now() AND o.sent_at IS NULL;
	v_ack := schedphi._hl7_ack(v_msh, 'AA', NULL, NULL, NULL);
	INSERT INTO schedphi.hl7_message (tenant, sender, control_id, digest, event, appointment, ack)
	VALUES (s.tenant, s.id, v_msh->>'control_id', v_digest, upper(v_msh->>'event'), v_res.appointment, v_ack);
	-- (in this transaction, as the changes it records: no wait for the
	-- ledger's worker; every refusal above is recorded through it, durable
	-- whatever the caller's transaction does)
	PERFORM schedphi._audit_change('hl7_in', s.tenant, 'hl7_message', v_res.appointment, NULL,
		v_detail || jsonb_build_object('outcome', 'AA', 'applied', v_res.outcome));
	RETURN v_ack;
END
$$;

-- ---------------------------------------------------------- SIU out
-- Receivers: systems that want an SIU for every change of an appointment
-- made through schedphi (an EHR's own changes, handed in by hl7_ingest,
-- are the EHR's to tell).  Each change is queued at once, in the
-- transaction that makes it, with what it changed (no PHI: ids, times,
-- status); hl7_outbound builds the messages when they are fetched
-- (decrypting the patient's identity then, as a read by the integration
-- login), one appointment's in the order of its changes, the next only
-- once the one before is acknowledged AA; hl7_ack takes the ACKs.
CREATE TABLE schedphi.hl7_receiver (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	name		text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	facility	text NOT NULL CHECK (length(facility) <= 200),
	created_at	timestamptz NOT NULL DEFAULT now(),
	created_by	name NOT NULL DEFAULT schedphi._login(),
	PRIMARY KEY (tenant, id),
	UNIQUE (tenant, name, facility)
);

CREATE SEQUENCE schedphi.hl7_outbox_seq;
CREATE TABLE schedphi.hl7_outbox (
	tenant		uuid NOT NULL,
	receiver	uuid NOT NULL,
	id			bigint NOT NULL DEFAULT nextval('schedphi.hl7_outbox_seq'),
	appointment uuid NOT NULL,
	event		text NOT NULL CHECK (event IN ('S12', 'S13', 'S14', 'S15', 'S17', 'S26')),
	status		text NOT NULL,
	during		tstzrange NOT NULL,
	actors		uuid[] NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	control_id	text,
	attempts	int NOT NULL DEFAULT 0,
	sent_at		timestamptz,
	ack			text CHECK (ack IN ('AA', 'AE', 'AR', 'CA', 'CE', 'CR')),
	acked_at	timestamptz,	-- by an AA (or CA), or given up (skipped_at)
	skipped_at	timestamptz,	-- given up by an admin (hl7_skip): never sent again
	skipped_by	text,
	PRIMARY KEY (tenant, receiver, id),
	FOREIGN KEY (tenant, receiver) REFERENCES schedphi.hl7_receiver (tenant, id) ON DELETE CASCADE
);
CREATE INDEX hl7_outbox_pending ON schedphi.hl7_outbox (tenant, receiver, appointment, id) WHERE acked_at IS NULL;
CREATE UNIQUE INDEX hl7_outbox_control ON schedphi.hl7_outbox (tenant, receiver, control_id) WHERE control_id IS NOT NULL;

DO $config$
BEGIN
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.hl7_receiver', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.hl7_outbox', '');
END
$config$;

-- The event a change of an appointment is, for a receiver: a booking (or
-- a hold confirmed) S12, a new time or new actors S13, a cancellation S15,
-- a no-show S26, entered in error S17, arrival and after S14.  NULL: not
-- told (a hold, a proposal, or a hold that ends).
CREATE FUNCTION schedphi._hl7_out_event(p_old_status text, p_new_status text, p_moved boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE
		WHEN p_old_status IS NULL THEN CASE WHEN p_new_status = 'booked' THEN 'S12' END
		WHEN p_old_status = p_new_status THEN
			CASE WHEN p_moved AND p_new_status IN ('booked', 'arrived', 'checked-in') THEN 'S13' END
		WHEN p_old_status IN ('pending', 'proposed', 'waitlist') THEN
			CASE WHEN p_new_status = 'booked' THEN 'S12' END
		WHEN p_new_status = 'cancelled' THEN 'S15'
		WHEN p_new_status = 'noshow' THEN 'S26'
		WHEN p_new_status = 'entered-in-error' THEN 'S17'
		WHEN p_new_status IN ('arrived', 'checked-in', 'fulfilled', 'booked') THEN 'S14'
	END
$$;

CREATE FUNCTION schedphi.add_hl7_receiver(tenant uuid, name text, facility text)
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
	IF name IS NULL OR length(btrim(name)) NOT BETWEEN 1 AND 200 OR length(btrim(coalesce(facility, ''))) > 200 THEN
		RAISE EXCEPTION 'name must be 1 to 200 characters, facility at most 200' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.hl7_receiver AS r (tenant, name, facility)
	VALUES (tenant, btrim(name), btrim(coalesce(facility, '')))
	ON CONFLICT ON CONSTRAINT hl7_receiver_tenant_name_facility_key DO UPDATE SET name = excluded.name
	RETURNING r.id INTO v_id;
	RETURN v_id;
END
$$;

-- Queue the changes of a statement for the tenant's receivers: the
-- statement as written (kept plan) on the tables themselves; on a Citus
-- node (a trigger fired on a shard) the same on the tenant's shards.  (The
-- id from the sequence by name: a shard has no column defaults; under
-- Citus each node draws from its own range of it.)
-- %1$s hl7_receiver, %2$s hl7_outbox; old_rows is empty for an INSERT.
CREATE FUNCTION schedphi._hl7_outbox_sql(p_with_old boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.format($q$
	INSERT INTO %%1$s (tenant, receiver, id, appointment, event, status, during, actors)
	SELECT n.tenant, r.id, pg_catalog.nextval('schedphi.hl7_outbox_seq'), n.id, e.event, n.status, n.during, n.actors
	FROM new_rows n
	%s
	JOIN %%2$s r ON r.tenant = n.tenant
	CROSS JOIN LATERAL (SELECT schedphi._hl7_out_event(%s, n.status,
								   %s) AS event) e
	WHERE e.event IS NOT NULL
	ORDER BY n.tenant, n.id
	$q$,
	CASE WHEN p_with_old THEN 'JOIN old_rows o ON o.tenant = n.tenant AND o.id = n.id' ELSE '' END,
	CASE WHEN p_with_old THEN 'o.status' ELSE 'NULL' END,
	CASE WHEN p_with_old THEN 'o.during IS DISTINCT FROM n.during OR o.actors IS DISTINCT FROM n.actors' ELSE 'false' END)
$$;

DO $make$
DECLARE
	f record;
BEGIN
	FOR f IN SELECT * FROM (VALUES ('_hl7_outbox_inserted', false), ('_hl7_outbox_updated', true)) x(fn, with_old) LOOP
		EXECUTE pg_catalog.format($f$
			CREATE FUNCTION schedphi.%1$I() RETURNS trigger
			LANGUAGE plpgsql
			SECURITY DEFINER
			SET search_path = pg_catalog, pg_temp
			AS $body$
			BEGIN
				IF TG_TABLE_NAME = 'appointment' THEN
					%2$s;
				ELSIF EXISTS (SELECT 1 FROM new_rows) THEN
					EXECUTE pg_catalog.format(schedphi._hl7_outbox_sql(%3$L),
						VARIADIC schedphi._deid_tables(TG_TABLE_NAME, (SELECT n.tenant FROM new_rows n LIMIT 1),
													   ARRAY['schedphi.hl7_outbox', 'schedphi.hl7_receiver']));
				END IF;
				RETURN NULL;
			END
			$body$
			$f$, f.fn, pg_catalog.format(schedphi._hl7_outbox_sql(f.with_old), 'schedphi.hl7_outbox', 'schedphi.hl7_receiver'),
			f.with_old);
	END LOOP;
END
$make$;
CREATE TRIGGER hl7_outbox_insert AFTER INSERT ON schedphi.appointment REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._hl7_outbox_inserted();
CREATE TRIGGER hl7_outbox_update AFTER UPDATE ON schedphi.appointment
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._hl7_outbox_updated();
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER hl7_outbox_insert;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER hl7_outbox_update;

-- A change queued for a receiver, as an SIU message: MSH, SCH (schedphi's
-- id as the filler id), TQ1, PID (the patient's MRN, name and birth date,
-- decrypted through patient_record: a read by the caller, on the ledger),
-- RGS and one AIP, AIL or AIG per actor.  Times in UTC with their offset.
CREATE FUNCTION schedphi._hl7_siu(r schedphi.hl7_receiver, o schedphi.hl7_outbox)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	a schedphi.appointment;
	p jsonb;
	v_segs text[];
	v_n int := 0;
	x record;
	v_status text := CASE o.status WHEN 'booked' THEN 'Booked' WHEN 'arrived' THEN 'Started'
								   WHEN 'checked-in' THEN 'Started' WHEN 'fulfilled' THEN 'Complete'
								   WHEN 'cancelled' THEN 'Cancelled' WHEN 'noshow' THEN 'Noshow'
								   WHEN 'entered-in-error' THEN 'Deleted' WHEN 'pending' THEN 'Pending'
								   ELSE 'Waitlist' END;
	v_start text := to_char(lower(o.during) AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS') || '+0000';
	v_end text := to_char(upper(o.during) AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS') || '+0000';
	v_mins int := (extract(epoch FROM upper(o.during) - lower(o.during)) / 60)::int;
BEGIN
	SELECT * INTO a FROM schedphi.appointment ap WHERE ap.tenant = o.tenant AND ap.id = o.appointment;
	p := schedphi.patient_record(a.patient);
	v_segs := ARRAY[
		concat_ws('|', 'MSH', '^~\&', 'SCHEDPHI', '', schedphi._hl7_escape(r.name), schedphi._hl7_escape(r.facility),
				  to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS') || '+0000', '',
				  'SIU^' || o.event || '^SIU_S12', o.control_id, 'P', '2.5.1'),
		-- SCH-2 filler id, SCH-7 the kind (table 0276), SCH-9/10 duration, SCH-11 the TQ, SCH-25 status
		concat_ws('|', 'SCH', '', o.appointment::text || '^SCHEDPHI', '', '', '', '',
				  upper(a.kind) || '^' || initcap(a.kind) || '^HL70276', '', v_mins::text, 'min',
				  '^^' || v_mins || '^' || v_start || '^' || v_end,
				  '', '', '', '', '', '', '', '', '', '', '', '', '', v_status),
		concat_ws('|', 'TQ1', '1', '', '', '', '', '', v_start, v_end),
		concat_ws('|', 'PID', '1', '',
				  CASE WHEN p->>'mrn' IS NOT NULL THEN schedphi._hl7_escape(p->>'mrn') || '^^^SCHEDPHI^MR' ELSE '' END
				  || CASE WHEN p->>'mrn' IS NOT NULL THEN '~' ELSE '' END || a.patient::text || '^^^SCHEDPHI^PI',
				  '', schedphi._hl7_escape(coalesce(p->>'family', '')) || '^' || schedphi._hl7_escape(coalesce(p->>'given', '')),
				  '', coalesce(replace(p->>'birth_date', '-', ''), '')),
		'RGS|1|A'];
	FOR x IN SELECT ac.id, ac.kind, ac.name FROM schedphi.actor ac
			 WHERE ac.tenant = o.tenant AND ac.id = ANY (o.actors) ORDER BY ac.kind, ac.id LOOP
		v_n := v_n + 1;
		v_segs := v_segs || CASE x.kind
			WHEN 'practitioner' THEN concat_ws('|', 'AIP', v_n::text, 'A', x.id::text || '^' || schedphi._hl7_escape(x.name),
											  '', '', v_start, '', '', v_mins::text, 'min')
			WHEN 'room' THEN concat_ws('|', 'AIL', v_n::text, 'A', '^' || x.id::text || '^^^^^^^' || schedphi._hl7_escape(x.name),
									   '', '', v_start, '', '', v_mins::text, 'min')
			ELSE concat_ws('|', 'AIG', v_n::text, 'A', x.id::text || '^' || schedphi._hl7_escape(x.name), '', '', '', '',
						   v_start, '', '', v_mins::text, 'min') END;
	END LOOP;
	RETURN array_to_string(v_segs, E'\r') || E'\r';
END
$$;

-- A receiver, for its tenant's integration role (unknown: 22023).
CREATE FUNCTION schedphi._hl7_receiver(p_id uuid, p_roles text[] DEFAULT ARRAY['integration'])
RETURNS schedphi.hl7_receiver
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r schedphi.hl7_receiver;
BEGIN
	SELECT x.* INTO r FROM schedphi.hl7_receiver x WHERE x.id = p_id;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('receiver', p_id);
	END IF;
	PERFORM schedphi._authorize(r.tenant, p_roles);
	RETURN r;
END
$$;

-- What the receiver has to be sent now, at most max messages: for each
-- appointment its oldest change not yet acknowledged AA, sent again when
-- it was last sent more than a minute ago.  Each gets its control id the
-- first time (SO<id>, the same on every attempt).  The integration role of
-- the receiver's tenant, with a purpose of use set (the messages carry the
-- patient's identity).
CREATE FUNCTION schedphi.hl7_outbound(receiver uuid, max int DEFAULT 100)
RETURNS TABLE (id bigint, control_id text, message text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	r schedphi.hl7_receiver;
	o schedphi.hl7_outbox;
BEGIN
	IF $1 IS NULL THEN
		RAISE EXCEPTION 'receiver must not be null' USING ERRCODE = '22023';
	END IF;
	IF $2 IS NULL OR $2 NOT BETWEEN 1 AND 1000 THEN
		RAISE EXCEPTION 'max must be between 1 and 1000' USING ERRCODE = '22023';
	END IF;
	r := schedphi._hl7_receiver($1);
	-- what was acknowledged more than a week ago goes
	DELETE FROM schedphi.hl7_outbox x
	WHERE x.tenant = r.tenant AND x.receiver = r.id AND x.acked_at < now() - interval '7 days';
	FOR o IN
		SELECT x.* FROM schedphi.hl7_outbox x
		WHERE x.tenant = r.tenant AND x.receiver = r.id AND x.acked_at IS NULL
		  AND (x.sent_at IS NULL OR x.sent_at < now() - interval '1 minute')
		  AND NOT EXISTS (SELECT 1 FROM schedphi.hl7_outbox y
						  WHERE y.tenant = x.tenant AND y.receiver = x.receiver AND y.appointment = x.appointment
							AND y.acked_at IS NULL AND y.id < x.id)
		ORDER BY x.id
		LIMIT $2
		FOR UPDATE SKIP LOCKED
	LOOP
		UPDATE schedphi.hl7_outbox x
		SET control_id = coalesce(x.control_id, 'SO' || x.id), attempts = x.attempts + 1, sent_at = now()
		WHERE x.tenant = o.tenant AND x.receiver = o.receiver AND x.id = o.id
		RETURNING x.* INTO o;
		id := o.id;
		control_id := o.control_id;
		message := schedphi._hl7_siu(r, o);
		RETURN NEXT;
	END LOOP;
END
$$;

-- An ACK from the receiver, matched on MSA-2: AA (or CA) ends the change
-- (the appointment's next may go); AE or AR keep it, to be sent again.
CREATE FUNCTION schedphi.hl7_ack(receiver uuid, ack text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r schedphi.hl7_receiver;
	v_doc jsonb;
	v_code text;
	n int;
BEGIN
	IF $1 IS NULL OR $2 IS NULL THEN
		RAISE EXCEPTION 'receiver and ack must not be null' USING ERRCODE = '22023';
	END IF;
	r := schedphi._hl7_receiver($1);
	v_doc := schedphi._hl7_read($2);
	v_code := upper(v_doc->'msa'->>'code');
	IF v_doc ? 'error' OR v_code IS NULL OR v_code NOT IN ('AA', 'AE', 'AR', 'CA', 'CE', 'CR')
	   OR v_doc->'msa'->>'control_id' IS NULL THEN
		RAISE EXCEPTION 'ack must be an HL7 ACK with MSA-1 (AA, AE, AR, CA, CE, CR) and MSA-2' USING ERRCODE = '22023';
	END IF;
	UPDATE schedphi.hl7_outbox x
	SET ack = v_code, acked_at = CASE WHEN v_code IN ('AA', 'CA') THEN now() END
	WHERE x.tenant = r.tenant AND x.receiver = r.id AND x.control_id = v_doc->'msa'->>'control_id'
	  AND x.acked_at IS NULL;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n = 0 THEN
		RAISE EXCEPTION 'no message awaiting an ACK has this control id (MSA-2)' USING ERRCODE = '22023';
	END IF;
END
$$;

-- The outbound queue as the tenant's admin sees it: every change not yet
-- acknowledged AA, and those given up, with why each waits.  No PHI: ids,
-- events, times, attempts and ACK codes (never an ACK's text).
CREATE FUNCTION schedphi.hl7_queue(tenant uuid)
RETURNS TABLE (receiver uuid, receiver_name text, id bigint, control_id text, appointment uuid, event text,
			   created_at timestamptz, attempts int, sent_at timestamptz, ack text, state text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_tenant uuid := schedphi._tenant_arg(hl7_queue.tenant);
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['admin']);
	RETURN QUERY
	SELECT o.receiver, r.name, o.id, o.control_id, o.appointment, o.event, o.created_at, o.attempts, o.sent_at,
		   o.ack,
		   CASE WHEN o.skipped_at IS NOT NULL
				THEN 'skipped by ' || o.skipped_by || ' at ' || o.skipped_at::text || ': not sent again'
				WHEN w.id IS NOT NULL
				THEN 'waits for change ' || w.id || ' of the same appointment'
				WHEN o.ack IN ('AR', 'CR')
				THEN 'rejected by the receiver (' || o.ack || '): sent again a minute after each attempt until '
					 || 'acknowledged AA; hl7_skip gives it up'
				WHEN o.ack IN ('AE', 'CE')
				THEN 'error at the receiver (' || o.ack || '): sent again a minute after each attempt'
				WHEN o.sent_at IS NULL THEN 'due'
				WHEN o.sent_at > now() - interval '1 minute' THEN 'sent, waiting for its ACK'
				ELSE 'no ACK: due again' END
	FROM schedphi.hl7_outbox o
	JOIN schedphi.hl7_receiver r ON r.tenant = o.tenant AND r.id = o.receiver
	LEFT JOIN LATERAL (SELECT y.id FROM schedphi.hl7_outbox y
					   WHERE y.tenant = o.tenant AND y.receiver = o.receiver AND y.appointment = o.appointment
						 AND y.acked_at IS NULL AND y.id < o.id
					   ORDER BY y.id LIMIT 1) w ON o.acked_at IS NULL
	WHERE o.tenant = v_tenant AND (o.acked_at IS NULL OR o.skipped_at IS NOT NULL)
	ORDER BY o.receiver, o.id;
END
$$;

-- An admin gives up one change the receiver will not take (an AR that
-- sending again cannot cure, say): it is never sent again, and the
-- appointment's next change goes.  Recorded on the ledger.
CREATE FUNCTION schedphi.hl7_skip(receiver uuid, id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	r schedphi.hl7_receiver;
	o schedphi.hl7_outbox;
	v_by text;
BEGIN
	IF $1 IS NULL OR $2 IS NULL THEN
		RAISE EXCEPTION 'receiver and id must not be null' USING ERRCODE = '22023';
	END IF;
	r := schedphi._hl7_receiver($1, ARRAY['admin']);
	-- (a value, not a function in the UPDATE: Citus sends it to the node)
	v_by := schedphi._actor_name();
	UPDATE schedphi.hl7_outbox x
	SET acked_at = now(), skipped_at = now(), skipped_by = v_by
	WHERE x.tenant = r.tenant AND x.receiver = r.id AND x.id = $2 AND x.acked_at IS NULL
	RETURNING x.* INTO o;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no change waiting for receiver % has id %', $1, $2
			USING ERRCODE = '22023', HINT = 'schedphi.hl7_queue(tenant) lists what waits.';
	END IF;
	PERFORM schedphi._audit_change('hl7_skip', r.tenant, 'hl7_outbox', o.appointment, NULL,
		jsonb_build_object('receiver', r.id, 'id', o.id, 'event', o.event, 'attempts', o.attempts, 'ack', o.ack));
END
$$;

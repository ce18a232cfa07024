-- schedphi install script, part 5: finding free time and booking it.
--
-- The guarantee against double booking is the exclusion constraint on
-- appointment_actor; these functions only choose seats, check availability
-- and blocks, and turn the constraint's refusal into an error that names
-- every clashing actor and interval and never the other patient.

CREATE FUNCTION schedphi.find_slots(actors uuid[], "window" tstzrange, duration interval,
									max_results int DEFAULT 100)
RETURNS TABLE (starts timestamptz, ends timestamptz, actors uuid[])
AS 'MODULE_PATHNAME', 'schedphi_find_slots'
LANGUAGE C STABLE CALLED ON NULL INPUT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- FHIR R4 Appointment.status transitions.  Any status but
-- entered-in-error itself may be corrected to entered-in-error; fulfilled,
-- cancelled, noshow and entered-in-error allow nothing else.
CREATE FUNCTION schedphi._transition_allowed(p_from text, p_to text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
	SELECT (p_to = 'entered-in-error' AND p_from <> 'entered-in-error')
		OR (p_from, p_to) IN (VALUES
			('proposed', 'pending'), ('proposed', 'booked'), ('proposed', 'waitlist'), ('proposed', 'cancelled'),
			('waitlist', 'proposed'), ('waitlist', 'pending'), ('waitlist', 'booked'), ('waitlist', 'cancelled'),
			('pending', 'booked'), ('pending', 'cancelled'),
			('booked', 'arrived'), ('booked', 'checked-in'), ('booked', 'noshow'), ('booked', 'cancelled'),
			('arrived', 'checked-in'), ('arrived', 'fulfilled'),
			('checked-in', 'fulfilled'))
$$;

-- The shortest way from one status to another through allowed transitions:
-- each step's status, the last p_to; NULL when there is none.  (An EHR
-- reports a visit Complete that schedphi saw booked: it arrived first.)
CREATE FUNCTION schedphi._status_path(p_from text, p_to text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
	WITH RECURSIVE w(s, path) AS (
		SELECT p_from, ARRAY[]::text[]
		UNION ALL
		SELECT n.s, w.path || n.s
		FROM w CROSS JOIN unnest(ARRAY['proposed', 'pending', 'waitlist', 'booked', 'arrived', 'checked-in',
									   'fulfilled', 'cancelled', 'noshow', 'entered-in-error']) AS n(s)
		WHERE cardinality(w.path) < 4 AND w.s <> p_to AND n.s <> p_from AND n.s <> ALL (w.path)
		  AND schedphi._transition_allowed(w.s, n.s))
	SELECT w.path FROM w WHERE w.s = p_to AND cardinality(w.path) > 0
	ORDER BY cardinality(w.path), w.path LIMIT 1
$$;

-- Statuses whose appointment occupies its actors' time.
CREATE FUNCTION schedphi._occupies(p_status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
	SELECT p_status NOT IN ('cancelled', 'entered-in-error', 'waitlist')
$$;

CREATE FUNCTION schedphi._check_kind(p_kind text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_kind IS NULL OR lower(p_kind) NOT IN ('routine', 'followup', 'walkin', 'checkup', 'emergency') THEN
		RAISE EXCEPTION 'unknown appointment kind'
			USING ERRCODE = '22023',
				  DETAIL = 'Kinds are routine, followup, walkin, checkup and emergency (HL7 v2 table 0276).';
	END IF;
	RETURN lower(p_kind);
END
$$;

-- Raise the 23P01 that names every actor that has no free seat during
-- p_during (buffers included) and the intervals that clash.
CREATE FUNCTION schedphi._raise_conflict(p_tenant uuid, p_actors uuid[], p_during tstzrange)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	v_msg text;
	v_busy record;
	v_parts text[] := '{}';
BEGIN
	-- The rows come back as values and are written out here, in this
	-- session's DateStyle and time zone (under Citus the query runs on the
	-- tenant's node, whose settings are not the client's).
	FOR v_busy IN WITH want AS (
		SELECT ac.id, ac.name, ac.capacity,
			   tstzrange(lower(p_during) - ac.buffer_before, upper(p_during) + ac.buffer_after) AS span
		FROM schedphi.actor ac
		WHERE ac.tenant = p_tenant AND ac.id = ANY (p_actors)
	), busy AS (
		SELECT w.id, w.name, w.capacity, x.seat, x.span
		FROM want w
		JOIN schedphi.appointment_actor x ON x.tenant = p_tenant AND x.actor = w.id
		WHERE x.active AND (x.expires IS NULL OR x.expires > statement_timestamp()) AND x.span && w.span
	), full_actors AS (
		SELECT b.id FROM busy b GROUP BY b.id, b.capacity HAVING count(DISTINCT b.seat) >= b.capacity
	)
	SELECT b.name, b.id, b.span FROM busy b WHERE b.id IN (SELECT f.id FROM full_actors f)
	ORDER BY b.name, b.id, lower(b.span)
	LOOP
		v_parts := v_parts || pg_catalog.format('%s (%s) is busy during %s', v_busy.name, v_busy.id, v_busy.span);
	END LOOP;
	v_msg := nullif(pg_catalog.array_to_string(v_parts, '; '), '');

	IF v_msg IS NULL THEN
		-- The clashing booking is not visible to this snapshot (REPEATABLE
		-- READ and a concurrent commit): name what was asked for.
		SELECT string_agg(pg_catalog.format('%s (%s)', ac.name, ac.id), ', ' ORDER BY ac.name, ac.id)
		INTO v_msg FROM schedphi.actor ac WHERE ac.tenant = p_tenant AND ac.id = ANY (p_actors);
		v_msg := pg_catalog.format('%s not free during %s', v_msg, p_during);
	END IF;
	RAISE EXCEPTION 'booking conflict: %', v_msg
		USING ERRCODE = '23P01', HINT = 'Use schedphi.find_slots() to find free times.';
END
$$;

-- Give appointment p_appointment a seat of every actor for p_during, or
-- fail having changed nothing: 22023 when an actor is not available or is
-- blocked, 23P01 when an actor has no free seat.
CREATE FUNCTION schedphi._reserve(p_tenant uuid, p_appointment uuid, p_actors uuid[],
								  p_during tstzrange, p_expires timestamptz, p_rules boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	a record;
	v_ids uuid[] := '{}';
	v_caps int[] := '{}';
	v_spans tstzrange[] := '{}';
	v_seats int[];
	v_span tstzrange;
	v_seat int;
	v_full boolean;
	v_multi boolean := false;
	v_attempt int := 0;
	v_available uuid[];
BEGIN
	-- Each actor: available for the whole time, not blocked; its span is
	-- the time widened by its buffers.  The availability first, in a query
	-- of its own (under Citus a function that reads tables must not run
	-- inside a query on a shard).  Without p_rules (an EHR's own booking,
	-- src/sql/85_hl7.sql) neither is checked: only a clash refuses it.
	IF p_rules THEN
		SELECT coalesce(array_agg(x.actor), '{}') INTO v_available
		FROM (SELECT w.actor FROM schedphi._windows(p_tenant, p_actors, p_during) w
			  GROUP BY w.actor HAVING range_agg(tstzrange(w.starts, w.ends)) @> p_during) x;
	ELSE
		v_available := p_actors;
	END IF;
	FOR a IN SELECT ac.id, ac.name, ac.capacity,
					tstzrange(lower(p_during) - ac.buffer_before, upper(p_during) + ac.buffer_after) AS span,
					ac.id = ANY (v_available) AS available,
					EXISTS (SELECT 1 FROM schedphi.block b
							WHERE b.tenant = p_tenant AND b.actor = ac.id AND b.during && p_during) AS blocked
			 FROM schedphi.actor ac
			 WHERE ac.tenant = p_tenant AND ac.id = ANY (p_actors) ORDER BY ac.id
	LOOP
		IF NOT a.available THEN
			RAISE EXCEPTION 'actor % (%) is not available during %', a.name, a.id, p_during
				USING ERRCODE = '22023', HINT = 'Use schedphi.find_slots() to find free times.';
		END IF;
		IF a.blocked AND p_rules THEN
			RAISE EXCEPTION 'actor % (%) is blocked during %', a.name, a.id, p_during
				USING ERRCODE = '22023', HINT = 'Use schedphi.find_slots() to find free times.';
		END IF;
		v_multi := v_multi OR a.capacity > 1;
		v_ids := v_ids || a.id;
		v_caps := v_caps || a.capacity;
		v_spans := v_spans || a.span;
	END LOOP;

	-- Serialise bookings that could clash: one transaction-scoped lock per
	-- actor and UTC day the span touches, taken in a fixed order (the
	-- subquery's; the aggregate takes them row by row).  Without it, two
	-- transactions inserting clashing rows at the same moment each wait for
	-- the other (an exclusion constraint checks after inserting) and the
	-- deadlock detector resolves the tie only after deadlock_timeout; with
	-- it the second waits for the first to finish and then gets a plain
	-- conflict or the seat.  The constraint remains the guarantee; the lock
	-- only makes contention orderly.
	PERFORM count(pg_advisory_xact_lock(k.h, k.day))
	FROM (SELECT hashtext('schedphi.actor.' || u.id::text) AS h, d.day
		  FROM unnest(v_ids, v_spans) AS u(id, span)
		  CROSS JOIN LATERAL generate_series(floor(extract(epoch FROM lower(u.span)) / 86400)::int,
											 floor(extract(epoch FROM upper(u.span)) / 86400)::int) AS d(day)
		  ORDER BY u.id, d.day) k;

	-- Expired holds stop blocking from the moment they expire: deactivate
	-- the ones in our way, in our own transaction (actor by actor: one
	-- statement joined to all of them could be planned to read the
	-- tenant's every hold).
	FOR i IN 1 .. cardinality(v_ids) LOOP
		UPDATE schedphi.appointment_actor x SET active = false
		WHERE x.tenant = p_tenant AND x.actor = v_ids[i] AND x.active
		  AND x.expires IS NOT NULL AND x.expires <= statement_timestamp()
		  AND x.span && v_spans[i];
	END LOOP;

	-- READ COMMITTED (the default): every booking that could clash holds one
	-- of the locks taken above, so what this statement sees is all there is;
	-- choose the seats, refuse with the full message if one is missing, and
	-- insert without a subtransaction.  The constraint still decides.
	IF current_setting('transaction_isolation') = 'read committed' THEN
		SELECT array_agg((SELECT s FROM generate_series(1, u.cap) s
						  WHERE NOT EXISTS (SELECT 1 FROM schedphi.appointment_actor x
											WHERE x.tenant = p_tenant AND x.actor = u.id AND x.seat = s
											  AND x.active AND x.span && u.span)
						  ORDER BY s LIMIT 1) ORDER BY u.ord)
		INTO v_seats
		FROM unnest(v_ids, v_caps, v_spans) WITH ORDINALITY AS u(id, cap, span, ord);
		IF array_position(v_seats, NULL) IS NOT NULL THEN
			PERFORM schedphi._raise_conflict(p_tenant, p_actors, p_during);
		END IF;
		INSERT INTO schedphi.appointment_actor (tenant, appointment, actor, seat, during, span, expires)
		SELECT p_tenant, p_appointment, u.id, u.seat, p_during, u.span, p_expires
		FROM unnest(v_ids, v_seats, v_spans) AS u(id, seat, span);
		RETURN;
	END IF;

	-- REPEATABLE READ or SERIALIZABLE: a clashing booking committed after
	-- this transaction's snapshot is invisible here and shows up only as
	-- the constraint's refusal; catch it and say what clashes.
	LOOP
		v_full := false;
		BEGIN
			FOR a IN SELECT ac.id, ac.capacity, ac.buffer_before, ac.buffer_after FROM schedphi.actor ac
					 WHERE ac.tenant = p_tenant AND ac.id = ANY (p_actors) ORDER BY ac.id
			LOOP
				v_span := tstzrange(lower(p_during) - a.buffer_before, upper(p_during) + a.buffer_after);
				IF a.capacity = 1 THEN
					v_seat := 1;
				ELSE
					SELECT s INTO v_seat FROM generate_series(1, a.capacity) s
					WHERE NOT EXISTS (SELECT 1 FROM schedphi.appointment_actor x
									  WHERE x.tenant = p_tenant AND x.actor = a.id AND x.seat = s
										AND x.active AND x.span && v_span)
					ORDER BY s LIMIT 1;
					IF v_seat IS NULL THEN
						v_full := true;
						EXIT;
					END IF;
				END IF;
				INSERT INTO schedphi.appointment_actor (tenant, appointment, actor, seat, during, span, expires)
				VALUES (p_tenant, p_appointment, a.id, v_seat, p_during, v_span, p_expires);
			END LOOP;
			IF NOT v_full THEN
				RETURN;
			END IF;
		EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
			-- A concurrent booking took the seat first.  With capacity > 1
			-- another seat may still be free: try again a few times.  Two
			-- transactions inserting clashing rows at the same moment each
			-- wait for the other (exclusion constraints check after
			-- inserting), and the deadlock detector picks one: that one
			-- tries again, now waiting for the winner, and gets a plain
			-- conflict or, if the winner rolled back, the seat.
			v_attempt := v_attempt + 1;
			v_full := v_attempt >= 4 OR (SQLSTATE = '23P01' AND NOT v_multi);
		END;
		EXIT WHEN v_full;
	END LOOP;
	PERFORM schedphi._raise_conflict(p_tenant, p_actors, p_during);
END
$$;

-- The appointment, locked, after the caller's role has been checked.
CREATE FUNCTION schedphi._lock_appointment(p_id uuid, p_roles text[])
RETURNS schedphi.appointment
LANGUAGE plpgsql
AS $$
DECLARE
	v schedphi.appointment;
	v_tenant uuid;
BEGIN
	-- the tenant first, then the row locked by its key (under Citus a row
	-- lock needs the shard, which the tenant names)
	SELECT a.tenant INTO v_tenant FROM schedphi.appointment a WHERE a.id = p_id;
	SELECT * INTO v FROM schedphi.appointment a WHERE a.tenant = v_tenant AND a.id = p_id FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('appointment', p_id);
	END IF;
	PERFORM schedphi._authorize(v.tenant, p_roles);
	RETURN v;
END
$$;

CREATE FUNCTION schedphi._check_transition(p_from text, p_to text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF NOT schedphi._transition_allowed(p_from, p_to) THEN
		RAISE EXCEPTION 'cannot change appointment status from % to %', p_from, p_to
			USING ERRCODE = '55000';
	END IF;
END
$$;

-- A hold that has run out can no longer take up time: refuse to make it
-- booked, to keep it pending or to move it (p_what says which).
CREATE FUNCTION schedphi._check_hold_live(v schedphi.appointment, p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
	IF v.status = 'pending' AND v.hold_expires IS NOT NULL AND v.hold_expires <= statement_timestamp() THEN
		RAISE EXCEPTION 'hold expired: cannot %', p_what
			USING ERRCODE = '55000', DETAIL = 'The hold ran out; find a new slot and hold or book it.';
	END IF;
END
$$;

-- An earlier call with the same idempotency key: its id when it asked for
-- the same booking, 22023 when it asked for another.
CREATE FUNCTION schedphi._idempotent(p_tenant uuid, p_key text, p_digest bytea)
RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v schedphi.appointment;
BEGIN
	SELECT * INTO v FROM schedphi.appointment a WHERE a.tenant = p_tenant AND a.idempotency_key = p_key;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF v.request_digest IS DISTINCT FROM p_digest THEN
		RAISE EXCEPTION 'idempotency_key was already used for a different booking' USING ERRCODE = '22023';
	END IF;
	RETURN v.id;
END
$$;

-- What a booking request asked for, as a keyed digest (the reason is PHI):
-- a retry with the same idempotency key must ask for exactly the same.
-- No SET clause, and every name qualified: the planner inlines it into the
-- statement that calls it (book.c's, _create_appointment's), where a SET
-- would make it a separate SQL function call, parsed again on every call.
CREATE FUNCTION schedphi._request_digest(p_tenant uuid, p_patient uuid, p_actors uuid[], p_during tstzrange,
										 p_kind text, p_reason text)
RETURNS bytea
LANGUAGE sql STABLE
AS $$
	SELECT schedphi._blind(p_tenant, 'request',
		pg_catalog.format('%s|%s|%s|%s|%s|%s', p_patient, p_actors,
						  extract(epoch FROM pg_catalog.lower(p_during)),
						  extract(epoch FROM pg_catalog.upper(p_during)),
						  p_kind, pg_catalog.quote_nullable(p_reason)))
$$;

-- A patient who got what they waited for leaves the waitlist.
CREATE FUNCTION schedphi._waitlist_served(p_tenant uuid, p_patient uuid, p_actors uuid[], p_during tstzrange)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	UPDATE schedphi.waitlist w SET status = 'booked'
	WHERE w.tenant = p_tenant AND w.status = 'waiting' AND w.patient = p_patient
	  AND w.actors <@ p_actors AND w.wanted @> p_during;
END
$$;

CREATE FUNCTION schedphi._create_appointment(p_patient uuid, p_actors uuid[], p_during tstzrange,
	p_status text, p_kind text, p_reason text, p_key text, p_hold_expires timestamptz)
RETURNS uuid
LANGUAGE plpgsql
-- the same few statements every time: generic plans save planning them
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	v_tenant uuid := schedphi._patient_tenant(p_patient);
	v_actors uuid[];
	v_during tstzrange;
	v_kind text;
	v_id uuid;
	v_new uuid;
	v_digest bytea;
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['scheduler', 'integration']);
	v_actors := schedphi._check_actors(v_tenant, p_actors);
	v_during := schedphi._check_range('during', p_during, interval '1 day');
	v_kind := schedphi._check_kind(p_kind);
	IF p_reason IS NOT NULL AND length(p_reason) > 2000 THEN
		RAISE EXCEPTION 'reason is longer than 2000 characters' USING ERRCODE = '22023';
	END IF;
	IF p_key IS NOT NULL THEN
		IF length(p_key) NOT BETWEEN 1 AND 200 THEN
			RAISE EXCEPTION 'idempotency_key must be 1 to 200 characters' USING ERRCODE = '22023';
		END IF;
		v_digest := schedphi._request_digest(v_tenant, p_patient, v_actors, v_during, v_kind, p_reason);
		v_id := schedphi._idempotent(v_tenant, p_key, v_digest);
		IF v_id IS NOT NULL THEN
			RETURN v_id;
		END IF;
	END IF;
	v_new := schedphi._appointment_id();
	INSERT INTO schedphi.appointment AS ap (tenant, id, patient, actors, during, status, kind, reason,
											idempotency_key, request_digest, hold_expires)
	VALUES (v_tenant, v_new, p_patient, v_actors, v_during, p_status, v_kind,
			schedphi._seal(v_tenant, 'appointment', 'reason', v_new, p_reason),
			p_key, v_digest, p_hold_expires)
	ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
	RETURNING ap.id INTO v_id;
	IF v_id IS NULL THEN
		-- A concurrent call with the same key committed first.
		RETURN schedphi._idempotent(v_tenant, p_key, v_digest);
	END IF;
	PERFORM schedphi._reserve(v_tenant, v_id, v_actors, v_during, p_hold_expires);
	IF p_status = 'booked' THEN
		PERFORM schedphi._waitlist_served(v_tenant, p_patient, v_actors, v_during);
	END IF;
	RETURN v_id;
END
$$;

-- The booking path in C (src/book.c): the common case in a few statements,
-- everything else (odd arguments, idempotency keys, isolation levels above
-- READ COMMITTED, callers not cleared from the caches, every error) through
-- _create_appointment above, which raises the documented errors.
CREATE FUNCTION schedphi._book(p_patient uuid, p_actors uuid[], p_during tstzrange,
	p_status text, p_kind text, p_reason text, p_key text, p_hold_expires timestamptz)
RETURNS uuid
AS 'MODULE_PATHNAME', 'schedphi_book_core'
LANGUAGE C VOLATILE CALLED ON NULL INPUT;

-- How many requests this backend handed to _create_appointment (tests).
CREATE FUNCTION schedphi._book_fallbacks()
RETURNS bigint
AS 'MODULE_PATHNAME', 'schedphi_book_fallbacks'
LANGUAGE C VOLATILE STRICT;
-- How many requests this backend booked with its actors from its cache (tests).
CREATE FUNCTION schedphi._book_cached()
RETURNS bigint
AS 'MODULE_PATHNAME', 'schedphi_book_cached'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION schedphi.book(patient uuid, actors uuid[], during tstzrange, kind text DEFAULT 'routine',
							  reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'schedphi_book'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION schedphi.hold(patient uuid, actors uuid[], during tstzrange,
							  ttl interval DEFAULT '10 minutes')
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 day' THEN
		RAISE EXCEPTION 'ttl must be positive and at most one day' USING ERRCODE = '22023';
	END IF;
	RETURN schedphi._book(patient, actors, during, 'pending', 'routine', NULL, NULL,
						  statement_timestamp() + ttl);
END
$$;

CREATE FUNCTION schedphi.confirm(appointment uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v schedphi.appointment := schedphi._lock_appointment(appointment, ARRAY['scheduler', 'integration']);
BEGIN
	IF v.status <> 'pending' OR v.hold_expires IS NULL THEN
		RAISE EXCEPTION 'cannot confirm: appointment status is %, not a pending hold', v.status
			USING ERRCODE = '55000', DETAIL = 'confirm moves a hold from pending to booked.';
	END IF;
	PERFORM schedphi._set_status(v, 'booked');
END
$$;

-- Apply a status change that has been checked by the caller's rules.
CREATE FUNCTION schedphi._set_status(v schedphi.appointment, p_to text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	v_rows int;
BEGIN
	PERFORM schedphi._check_transition(v.status, p_to);
	IF schedphi._occupies(p_to) THEN
		PERFORM schedphi._check_hold_live(v, pg_catalog.format('change appointment status from pending to %s', p_to));
	END IF;
	IF schedphi._occupies(v.status) AND NOT schedphi._occupies(p_to) THEN
		UPDATE schedphi.appointment_actor x SET active = false
		WHERE x.tenant = v.tenant AND x.appointment = v.id;
	ELSIF NOT schedphi._occupies(v.status) AND schedphi._occupies(p_to) THEN
		DELETE FROM schedphi.appointment_actor x WHERE x.tenant = v.tenant AND x.appointment = v.id;
		PERFORM schedphi._reserve(v.tenant, v.id, v.actors, v.during,
								  CASE WHEN p_to = 'pending' THEN v.hold_expires END);
	END IF;
	IF p_to = 'booked' THEN
		-- A confirmed hold stops expiring, provided nobody has taken its
		-- place (which only happens once it has expired).
		-- (IS TRUE: no index with "active" in its predicate can serve it, so
		-- the plan is the key's, however few rows there were when it was made)
		UPDATE schedphi.appointment_actor x SET expires = NULL
		WHERE x.tenant = v.tenant AND x.appointment = v.id AND x.active IS TRUE;
		GET DIAGNOSTICS v_rows = ROW_COUNT;
		IF v_rows <> cardinality(v.actors) THEN
			RAISE EXCEPTION 'hold expired: cannot change appointment status from pending to booked'
				USING ERRCODE = '55000';
		END IF;
		PERFORM schedphi._waitlist_served(v.tenant, v.patient, v.actors, v.during);
	END IF;
	UPDATE schedphi.appointment a
	SET status = p_to, updated_at = now(),
		hold_expires = CASE WHEN p_to = 'pending' THEN a.hold_expires END
	WHERE a.tenant = v.tenant AND a.id = v.id;
END
$$;

CREATE FUNCTION schedphi.set_status(appointment uuid, status text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v schedphi.appointment;
BEGIN
	IF status IS NULL OR status NOT IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled',
				'cancelled', 'noshow', 'entered-in-error', 'checked-in', 'waitlist') THEN
		RAISE EXCEPTION 'unknown appointment status'
			USING ERRCODE = '22023',
				  DETAIL = 'Statuses are the FHIR R4 Appointment.status codes: proposed, pending, booked, arrived, fulfilled, cancelled, noshow, entered-in-error, checked-in, waitlist.';
	END IF;
	v := schedphi._lock_appointment(appointment, ARRAY['scheduler', 'integration', 'clinician']);
	IF schedphi._member_role(v.tenant, ARRAY['scheduler', 'integration', 'clinician']) = 'clinician' THEN
		IF status NOT IN ('arrived', 'checked-in', 'fulfilled', 'noshow', 'entered-in-error') THEN
			PERFORM schedphi._deny(v.tenant, 'permission denied: role rule',
				'A clinician records arrived, checked-in, fulfilled, noshow and entered-in-error; schedulers book and cancel.');
		END IF;
		IF NOT coalesce(schedphi._clinician_practitioner(v.tenant) = ANY (v.actors), false) THEN
			PERFORM schedphi._deny(v.tenant, 'permission denied: own appointments rule',
				'A clinician changes only appointments with their own practitioner.');
		END IF;
	END IF;
	PERFORM schedphi._set_status(v, status);
END
$$;

CREATE FUNCTION schedphi.cancel(appointment uuid, reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v schedphi.appointment := schedphi._lock_appointment(appointment, ARRAY['scheduler', 'integration']);
	v_reason schedphi.sealed;
BEGIN
	IF cancel.reason IS NOT NULL AND length(cancel.reason) > 2000 THEN
		RAISE EXCEPTION 'reason is longer than 2000 characters' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._set_status(v, 'cancelled');
	-- sealed first: the UPDATE carries values only (see review_break_glass)
	v_reason := schedphi._seal(v.tenant, 'appointment', 'cancel_reason', v.id, cancel.reason);
	UPDATE schedphi.appointment a SET cancel_reason = v_reason WHERE a.tenant = v.tenant AND a.id = v.id;
END
$$;

CREATE FUNCTION schedphi.reschedule(appointment uuid, during tstzrange)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v schedphi.appointment := schedphi._lock_appointment(appointment, ARRAY['scheduler', 'integration']);
	v_during tstzrange := schedphi._check_range('during', during, interval '1 day');
BEGIN
	IF v.status NOT IN ('booked', 'pending') THEN
		RAISE EXCEPTION 'cannot reschedule an appointment whose status is %', v.status
			USING ERRCODE = '55000', DETAIL = 'Only booked appointments and live holds can be moved.';
	END IF;
	PERFORM schedphi._check_hold_live(v, 'reschedule it');
	DELETE FROM schedphi.appointment_actor x WHERE x.tenant = v.tenant AND x.appointment = v.id;
	PERFORM schedphi._reserve(v.tenant, v.id, v.actors, v_during, v.hold_expires);
	UPDATE schedphi.appointment a SET during = v_during, updated_at = now()
	WHERE a.tenant = v.tenant AND a.id = v.id;
END
$$;

-- What the caller may see of a tenant's appointments (minimum necessary),
-- worked out once per tenant and statement rather than once per row:
-- scheduler, integration, billing: every appointment with its patient;
-- clinician: the appointments of their practitioner (only_practitioner);
-- support and admin: every appointment without the patient; a superuser:
-- every row, no decrypted field.  Reasons (sealed) are decrypted for
-- scheduler, integration and the clinician, once a purpose of use is set.
CREATE FUNCTION schedphi._appointment_access_compute(p_tenant uuid,
	OUT visible boolean, OUT show_patient boolean, OUT show_reason boolean, OUT only_practitioner uuid)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_role text := schedphi._member_role(p_tenant, ARRAY['scheduler', 'integration', 'clinician',
														   'billing', 'support', 'admin']);
BEGIN
	visible := v_role IS NOT NULL;
	show_patient := v_role IN ('scheduler', 'integration', 'clinician', 'billing', 'superuser');
	show_reason := v_role IN ('scheduler', 'integration', 'clinician')
		AND (SELECT c.purpose FROM schedphi._context() c) IS NOT NULL;
	IF v_role = 'clinician' THEN
		only_practitioner := schedphi._clinician_practitioner(p_tenant);
		visible := only_practitioner IS NOT NULL;
	END IF;
END
$$;

-- The same, remembered for the rest of the statement (src/actor.c).
CREATE FUNCTION schedphi._appointment_access(p_tenant uuid,
	OUT visible boolean, OUT show_patient boolean, OUT show_reason boolean, OUT only_practitioner uuid)
AS 'MODULE_PATHNAME', 'schedphi_appointment_access' LANGUAGE C STABLE STRICT;

-- The decrypted reason of an appointment the caller may read it of; it
-- checks again, and counts against schedphi.reveal_rate_limit.
CREATE FUNCTION schedphi._appointment_reason(a schedphi.appointment)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	acc record;
	v schedphi.appointment;
BEGIN
	-- Anyone may call this with a row of their own making: decide on the row
	-- as stored (the sealed reason is bound to its id, not to its actors).
	SELECT * INTO v FROM schedphi.appointment x WHERE x.tenant = a.tenant AND x.id = a.id;
	IF NOT FOUND OR v.reason IS NULL THEN
		RETURN NULL;
	END IF;
	acc := schedphi._appointment_access(v.tenant);
	IF NOT acc.visible OR NOT acc.show_reason
	   OR (acc.only_practitioner IS NOT NULL AND NOT acc.only_practitioner = ANY (v.actors)) THEN
		RETURN NULL;
	END IF;
	PERFORM schedphi._note_reveal(v.tenant, schedphi._actor_name(), v.patient);
	RETURN schedphi._open(v.reason, v.tenant, 'appointment', 'reason', v.id);
END
$$;

ALTER FUNCTION schedphi._appointment_reason(schedphi.appointment) COST 1000;

-- The rows the caller may see, reasons still sealed; a barrier, so that
-- the caller's own conditions see no row before the access check.
CREATE VIEW schedphi._appointments_visible WITH (security_barrier) AS
	SELECT a.id, a.tenant, CASE WHEN r.show_patient THEN a.patient END AS patient, a.actors, a.during,
		   a.status, a.kind, a.hold_expires, a.created_at, a.updated_at,
		   r.show_reason AND a.reason IS NOT NULL AS reason_shown, a AS appointment
	FROM schedphi.appointment a
	CROSS JOIN LATERAL schedphi._appointment_access(a.tenant) r
	WHERE r.visible AND (r.only_practitioner IS NULL OR r.only_practitioner = ANY (a.actors));

-- What callers read.  The reason is decrypted (costed high) after the
-- query's WHERE, ORDER BY and LIMIT: only for the rows it returns.
CREATE VIEW schedphi.appointments AS
	SELECT v.id, v.tenant, v.patient, v.actors, v.during, v.status, v.kind, v.hold_expires,
		   v.created_at, v.updated_at,
		   CASE WHEN v.reason_shown THEN schedphi._appointment_reason(v.appointment) END AS reason
	FROM schedphi._appointments_visible v;

-- schedphi install script, part 6: the waitlist.  A patient waits for any
-- time inside a window with a set of actors; when an appointment is
-- cancelled, waitlist_offers() lists who to offer its time to, first come
-- first served.

-- A booking looks for a waitlist entry of its patient to mark booked only
-- in tenants with an entry waiting: each backend remembers which have none
-- (book.c) until an entry starts waiting, by any path.  ALWAYS: a restore
-- with session_replication_role = replica too.
CREATE FUNCTION schedphi._waitlist_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_waitlist_changed' LANGUAGE C;
CREATE TRIGGER waitlist_changed AFTER INSERT OR UPDATE OF status ON schedphi.waitlist
	FOR EACH ROW WHEN (NEW.status = 'waiting') EXECUTE FUNCTION schedphi._waitlist_changed();
ALTER TABLE schedphi.waitlist ENABLE ALWAYS TRIGGER waitlist_changed;

CREATE FUNCTION schedphi.waitlist_add(patient uuid, actors uuid[], "window" tstzrange, duration interval)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant uuid := schedphi._patient_tenant(patient);
	v_actors uuid[];
	v_window tstzrange;
	v_duration interval;
	v_id uuid;
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['scheduler', 'integration']);
	v_actors := schedphi._check_actors(v_tenant, actors);
	-- as long as find_slots would search
	v_window := schedphi._check_range('window', "window", interval '370 days');
	v_duration := schedphi._check_interval('duration', duration, false);
	IF v_duration > interval '1 day' THEN
		RAISE EXCEPTION 'duration must not be longer than one day' USING ERRCODE = '22023';
	END IF;
	IF upper(v_window) - lower(v_window) < v_duration THEN
		RAISE EXCEPTION 'duration is longer than the window' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.waitlist (tenant, patient, actors, wanted, duration)
	VALUES (v_tenant, patient, v_actors, v_window, v_duration)
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.waitlist_offers(appointment uuid)
RETURNS TABLE (waitlist uuid, patient uuid)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v schedphi.appointment;
	e record;
BEGIN
	SELECT * INTO v FROM schedphi.appointment a WHERE a.id = waitlist_offers.appointment;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('appointment', waitlist_offers.appointment);
	END IF;
	PERFORM schedphi._authorize(v.tenant, ARRAY['scheduler', 'integration']);
	-- a hold that has expired blocks nothing (find_slots already offers it)
	IF schedphi._occupies(v.status)
	   AND NOT (v.status = 'pending' AND v.hold_expires IS NOT NULL AND v.hold_expires <= statement_timestamp()) THEN
		RAISE EXCEPTION 'appointment status is %: its time is not free', v.status
			USING ERRCODE = '55000', DETAIL = 'Offers are made for cancelled appointments and expired holds.';
	END IF;
	-- An entry is offered when find_slots finds it at least one slot of its
	-- length, for its actors, inside both its window and the freed time: the
	-- same answer as the search a scheduler makes next, so seats, blocks,
	-- buffers, availability and live holds all count.  The entries first,
	-- then the search for each here (under Citus a function that reads
	-- tables must not run inside a query on a shard).
	FOR e IN SELECT w.id, w.patient, w.actors, w.wanted * v.during AS freed, w.duration
			 FROM schedphi.waitlist w
			 WHERE w.tenant = v.tenant AND w.status = 'waiting'
			   AND w.patient <> v.patient
			   AND w.actors <@ v.actors
			   AND w.wanted && v.during
			 ORDER BY w.created_at, w.id
	LOOP
		IF upper(e.freed) - lower(e.freed) >= e.duration
		   AND EXISTS (SELECT 1 FROM schedphi.find_slots(e.actors, e.freed, e.duration, 1)) THEN
			waitlist := e.id;
			patient := e.patient;
			RETURN NEXT;
		END IF;
	END LOOP;
END
$$;

CREATE FUNCTION schedphi.waitlist_remove(waitlist uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v schedphi.waitlist;
	v_tenant uuid;
BEGIN
	-- the tenant, then the row locked by its key (see _lock_appointment)
	SELECT w.tenant INTO v_tenant FROM schedphi.waitlist w WHERE w.id = waitlist_remove.waitlist;
	SELECT * INTO v FROM schedphi.waitlist w WHERE w.tenant = v_tenant AND w.id = waitlist_remove.waitlist FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('waitlist entry', waitlist_remove.waitlist, false);
	END IF;
	PERFORM schedphi._authorize(v.tenant, ARRAY['scheduler', 'integration']);
	IF v.status <> 'waiting' THEN
		RAISE EXCEPTION 'cannot remove a waitlist entry whose status is %', v.status USING ERRCODE = '55000';
	END IF;
	UPDATE schedphi.waitlist w SET status = 'removed' WHERE w.tenant = v.tenant AND w.id = v.id;
END
$$;

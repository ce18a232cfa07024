-- Test fixtures, loaded once into the pgTAP database.  Synthetic people
-- only.  tst.clinic(tz) builds a tenant with one location in zone tz,
-- two practitioners, a room (capacity 1) and a chair bay (capacity 2),
-- all available every day 09:00-17:00 local from 2026-01-01 on a 15-minute
-- grid, and three patients.  Each test file calls it inside its own
-- transaction, which is rolled back at the end.
CREATE SCHEMA tst;

-- The public sample messages of test/samples (loaded by sp_load_samples,
-- test/lib/samples.sh): name (the file's, without .hl7) and body.
CREATE TABLE tst.sample (name text PRIMARY KEY, body text NOT NULL);
GRANT SELECT ON tst.sample TO PUBLIC;

CREATE FUNCTION tst.clinic(tz text DEFAULT 'America/New_York')
RETURNS TABLE (tenant uuid, loc uuid, dr uuid, dr2 uuid, room uuid, chair uuid,
			   p1 uuid, p2 uuid, p3 uuid)
LANGUAGE plpgsql AS $$
DECLARE
	a uuid;
BEGIN
	tenant := schedphi.create_tenant('Synthetic Clinic ' || tz, tz);
	loc := schedphi.add_location(tenant, 'Main site', tz);
	dr := schedphi.add_practitioner(tenant, 'Dr Alpha Synthetic', '1234567893');
	dr2 := schedphi.add_practitioner(tenant, 'Dr Beta Synthetic');
	room := schedphi.add_resource(tenant, 'room', 'Exam room 1', 1, loc);
	chair := schedphi.add_resource(tenant, 'device', 'Infusion chairs', 2, loc);
	FOREACH a IN ARRAY ARRAY[dr, dr2, room, chair] LOOP
		PERFORM schedphi.add_availability(a, loc, '{1,2,3,4,5,6,7}', '09:00', '17:00',
										  daterange('2026-01-01', NULL), 15);
	END LOOP;
	p1 := schedphi.register_patient(tenant, 'Testa', 'Synthetica', '1970-01-01',
									'+1 555 0100 001', 'testa@example.org', 'SYN-0001', '99999');
	p2 := schedphi.register_patient(tenant, 'Probe', 'Fictional', '1985-06-15',
									'+1 555 0100 002', 'probe@example.org', 'SYN-0002', '99998');
	p3 := schedphi.register_patient(tenant, 'Mock', 'Imaginary', '2001-12-31');
	RETURN NEXT;
END
$$;

-- The SQLSTATE a statement raises, or '00000' when it succeeds.
CREATE FUNCTION tst.sqlstate_of(stmt text)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN '00000';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;

GRANT USAGE ON SCHEMA tst TO PUBLIC;

-- The lines a statement returns as text (an EXPLAIN's plan).
CREATE FUNCTION tst.lines(stmt text)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY EXECUTE stmt;
END
$$;

-- A condition that leaks what it is given: appends it to the setting
-- tst.leaked (cheap, and not leakproof, as a caller's own function is).
CREATE FUNCTION tst.leak(v text)
RETURNS boolean
LANGUAGE sql VOLATILE COST 0.0001 AS $$
	SELECT set_config('tst.leaked', concat_ws(',', nullif(current_setting('tst.leaked', true), ''), v), true) IS NOT NULL
$$;

-- 'SQLSTATE: message' of the error a statement raises, or '00000'.
CREATE FUNCTION tst.error_of(stmt text)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN '00000';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- Start times (UTC, as text) that find_slots offers.
CREATE FUNCTION tst.starts(actors uuid[], win tstzrange, dur interval, n int DEFAULT 1000)
RETURNS text[]
LANGUAGE sql AS $$
	SELECT coalesce(array_agg(to_char(s.starts AT TIME ZONE 'UTC', 'MM-DD HH24:MI') ORDER BY s.starts), '{}')
	FROM schedphi.find_slots(actors, win, dur, n) s
$$;

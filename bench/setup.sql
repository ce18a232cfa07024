-- schedphi benchmarks: a synthetic clinic, built through the public API.
-- Synthetic data only: no real names, no real identifiers.
--
-- Run by bench/run.sh as a superuser in a fresh database.  It builds:
--
--   * one tenant, one location in America/New_York (the pgbench scripts
--     name the same zone);
--   * 200 practitioners (bench.prac n = 1..200), each available every day
--     08:00-17:00 local on a 15-minute grid from 2030-01-01 on;
--   * one "busy" practitioner available every day 07:00-19:00 local on a
--     5-minute grid, who gets 2,000 ten-minute bookings spread over the
--     30 days from Monday 2030-01-07 (benchmark 2a);
--   * for the 200 practitioners, about a third of the 15-minute slots of
--     the week from 2030-01-07 booked (benchmark 2b);
--   * 500 synthetic patients (bench.patient n = 1..500);
--   * a login bench_scheduler, member of the tenant as scheduler, which
--     runs every measured workload but the direct-insert reference;
--   * bench.bare, the baseline of benchmark 3: a bare table carrying the
--     same exclusion constraint as schedphi.appointment_actor.
--
-- Bookings go through schedphi.book(), so the data is what the extension
-- itself writes.  The booking throughput benchmark books from 2031-01-05
-- on, clear of everything loaded here.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS schedphi CASCADE;

CREATE SCHEMA bench;
CREATE TABLE bench.clinic (tenant uuid NOT NULL, loc uuid NOT NULL, busy uuid NOT NULL, tz text NOT NULL);
CREATE TABLE bench.prac (n int PRIMARY KEY, id uuid NOT NULL);
CREATE TABLE bench.patient (n int PRIMARY KEY, id uuid NOT NULL);

DO $setup$
DECLARE
	v_tz text := 'America/New_York';
	v_tenant uuid := schedphi.create_tenant('Synthetic Benchmark Clinic', v_tz);
	v_loc uuid := schedphi.add_location(v_tenant, 'Synthetic Site', v_tz);
	v_busy uuid;
	v_id uuid;
BEGIN
	FOR i IN 1..200 LOOP
		v_id := schedphi.add_practitioner(v_tenant, pg_catalog.format('Synthetic Practitioner %s', i));
		PERFORM schedphi.add_availability(v_id, v_loc, '{1,2,3,4,5,6,7}', '08:00', '17:00',
										  daterange('2030-01-01', NULL), 15);
		INSERT INTO bench.prac VALUES (i, v_id);
	END LOOP;
	v_busy := schedphi.add_practitioner(v_tenant, 'Synthetic Practitioner Busy');
	PERFORM schedphi.add_availability(v_busy, v_loc, '{1,2,3,4,5,6,7}', '07:00', '19:00',
									  daterange('2030-01-01', NULL), 5);
	FOR i IN 1..500 LOOP
		v_id := schedphi.register_patient(v_tenant, pg_catalog.format('Given%s', i),
										  pg_catalog.format('Synthetic%s', i),
										  date '1950-01-01' + (i * 37) % 25000);
		INSERT INTO bench.patient VALUES (i, v_id);
	END LOOP;
	INSERT INTO bench.clinic VALUES (v_tenant, v_loc, v_busy, v_tz);
END
$setup$;

-- Fresh tables have no statistics: without them the plans that book()
-- caches choose sequential scans and loading slows down several times.
ANALYZE;

-- 2a: 2,000 ten-minute bookings for the busy practitioner, on 10-minute
-- boundaries from 07:00, days 2030-01-07 .. 2030-02-05: 2,000 of the 2,160
-- ten-minute blocks, chosen by a fixed hash so the gaps are scattered.
SELECT count(schedphi.book(p.id, ARRAY[c.busy], tstzrange(s.t, s.t + interval '10 minutes')))
	AS busy_bookings
FROM bench.clinic c
CROSS JOIN LATERAL (
	SELECT ((date '2030-01-07' + d) + time '07:00' + k * interval '10 minutes') AT TIME ZONE c.tz AS t,
		   row_number() OVER (ORDER BY md5(d || ':' || k)) AS r
	FROM generate_series(0, 29) d, generate_series(0, 71) k
	ORDER BY md5(d || ':' || k)
	LIMIT 2000) s
JOIN bench.patient p ON p.n = 1 + s.r % 500;

ANALYZE;

-- 2b: about a third of the 252 slots of the week 2030-01-07 .. 2030-01-13
-- booked for each of the 200 practitioners.
SELECT count(schedphi.book(p.id, ARRAY[pr.id], tstzrange(s.t, s.t + interval '15 minutes')))
	AS week_bookings
FROM bench.clinic c
CROSS JOIN bench.prac pr
CROSS JOIN LATERAL (
	SELECT ((date '2030-01-07' + d) + time '08:00' + k * interval '15 minutes') AT TIME ZONE c.tz AS t,
		   d * 36 + k AS r
	FROM generate_series(0, 6) d, generate_series(0, 35) k
	WHERE hashint4(pr.n * 1000 + d * 36 + k) % 3 = 0) s
JOIN bench.patient p ON p.n = 1 + (pr.n * 7 + s.r) % 500;

-- The baseline of benchmark 3.
CREATE TABLE bench.bare (
	tenant	uuid NOT NULL,
	actor	uuid NOT NULL,
	seat	int NOT NULL,
	span	tstzrange NOT NULL,
	active	boolean NOT NULL DEFAULT true,
	EXCLUDE USING gist (tenant WITH =, actor WITH =, seat WITH =, span WITH &&) WHERE (active)
);

-- The second reference of benchmark 3: the least any design that keeps an
-- appointment row apart from its actors' rows must write -- the appointment
-- with only its primary key (no other index, no foreign key, no audit
-- record), and the actor's row in bench.bare.
CREATE TABLE bench.bare_appointment (
	tenant	uuid NOT NULL,
	id		uuid NOT NULL DEFAULT gen_random_uuid(),
	patient uuid NOT NULL,
	actors	uuid[] NOT NULL,
	during	tstzrange NOT NULL,
	status	text NOT NULL,
	kind	text NOT NULL,
	PRIMARY KEY (tenant, id)
);

-- 2b, measured server side: one find_slots call per practitioner, 200
-- calls in one statement.  Returns the number of slots found.
CREATE FUNCTION bench.slots_all(p_window tstzrange, p_duration interval)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	v_total bigint := 0;
	v_n bigint;
	r record;
BEGIN
	FOR r IN SELECT id FROM bench.prac ORDER BY n LOOP
		SELECT count(*) INTO v_n FROM schedphi.find_slots(ARRAY[r.id], p_window, p_duration);
		v_total := v_total + v_n;
	END LOOP;
	RETURN v_total;
END
$$;

-- 2a, measured server side: the mean time of one find_slots call for the
-- busy practitioner over p_reps calls, in milliseconds (no client round
-- trip, no result transfer).
CREATE FUNCTION bench.busy_mean_ms(p_reps int)
RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
	v_busy uuid := (SELECT busy FROM bench.clinic);
	v_window tstzrange := tstzrange(timestamp '2030-01-07 00:00' AT TIME ZONE 'America/New_York',
									timestamp '2030-02-06 00:00' AT TIME ZONE 'America/New_York');
	v_n bigint;
	t0 timestamptz;
BEGIN
	SELECT count(*) INTO v_n FROM schedphi.find_slots(ARRAY[v_busy], v_window, interval '10 minutes');
	t0 := clock_timestamp();
	FOR i IN 1..p_reps LOOP
		SELECT count(*) INTO v_n FROM schedphi.find_slots(ARRAY[v_busy], v_window, interval '10 minutes');
	END LOOP;
	RETURN round((extract(epoch FROM clock_timestamp() - t0) * 1000 / p_reps)::numeric, 4);
END
$$;

-- A sanity check, not a test: every free 10-minute slot of the busy
-- practitioner's 30 days as find_slots returns them (max_results 10000),
-- against the same set computed in plain SQL from the bookings.  Returns
-- (found, expected, missing, extra).
CREATE FUNCTION bench.check_busy(OUT found bigint, OUT expected bigint, OUT missing bigint, OUT extra bigint)
LANGUAGE sql AS $$
	WITH c AS (SELECT busy FROM bench.clinic),
	got AS (
		SELECT s.starts AS t FROM c, schedphi.find_slots(ARRAY[c.busy],
			tstzrange(timestamp '2030-01-07 00:00' AT TIME ZONE 'America/New_York',
					  timestamp '2030-02-06 00:00' AT TIME ZONE 'America/New_York'),
			interval '10 minutes', 10000) s),
	want AS (
		SELECT g.t FROM c, (
			SELECT ((date '2030-01-07' + d) + time '07:00' + k * interval '5 minutes')
				   AT TIME ZONE 'America/New_York' AS t
			FROM generate_series(0, 29) d, generate_series(0, 142) k) g
		WHERE NOT EXISTS (SELECT 1 FROM schedphi.appointment_actor x
						  WHERE x.actor = c.busy AND x.active
							AND x.span && tstzrange(g.t, g.t + interval '10 minutes')))
	SELECT (SELECT count(*) FROM got), (SELECT count(*) FROM want),
		   (SELECT count(*) FROM (SELECT t FROM want EXCEPT SELECT t FROM got) m),
		   (SELECT count(*) FROM (SELECT t FROM got EXCEPT SELECT t FROM want) e)
$$;

DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_scheduler') THEN
		CREATE ROLE bench_scheduler LOGIN;
	END IF;
END
$roles$;
SELECT schedphi.add_member(c.tenant, 'bench_scheduler', 'scheduler') FROM bench.clinic c;
GRANT USAGE ON SCHEMA bench TO bench_scheduler;
GRANT SELECT ON ALL TABLES IN SCHEMA bench TO bench_scheduler;
GRANT INSERT ON bench.bare, bench.bare_appointment TO bench_scheduler;

-- The baseline tables start as big as the real ones.
INSERT INTO bench.bare (tenant, actor, seat, span, active)
SELECT tenant, actor, seat, span, active FROM schedphi.appointment_actor;
INSERT INTO bench.bare_appointment (tenant, id, patient, actors, during, status, kind)
SELECT tenant, id, patient, actors, during, status, kind FROM schedphi.appointment;

VACUUM ANALYZE;

-- schedphi identity benchmarks: a synthetic clinic, built through the public
-- API.  Synthetic data only: no real names, no real identifiers.
--
-- Run by bench/identity.sh as a superuser in a fresh database.  It builds:
--
--   * one tenant, one location in America/New_York (the pgbench scripts
--     name the same zone);
--   * 20 practitioners (ibench.prac n = 1..20), each available every day
--     08:00-17:00 local on a 15-minute grid;
--   * 300 synthetic patients;
--   * for the 20 practitioners, about 15% of the 15-minute slots of the six
--     weeks from Monday 2029-12-31 booked through schedphi.book(), each with
--     a synthetic reason (sealed): about 750 appointments a week, 4,500 in
--     all.  The measured week is Monday 2030-01-14 .. Sunday 2030-01-20;
--   * ibench.mean_us() and ibench.authorize_us(), the server-side timing
--     loops;
--   * the logins ibench_scheduler (a scheduler member of the tenant) and
--     ibench_pool (no membership, no schedphi role).
--
-- The identity providers are registered by bench/identity.sh, which makes
-- their keys.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS schedphi CASCADE;

CREATE SCHEMA ibench;
CREATE TABLE ibench.clinic (tenant uuid NOT NULL, loc uuid NOT NULL, tz text NOT NULL);
CREATE TABLE ibench.prac (n int PRIMARY KEY, id uuid NOT NULL);
CREATE TABLE ibench.patient (n int PRIMARY KEY, id uuid NOT NULL);

DO $setup$
DECLARE
	v_tz text := 'America/New_York';
	v_tenant uuid := schedphi.create_tenant('Synthetic Identity Benchmark Clinic', v_tz);
	v_loc uuid := schedphi.add_location(v_tenant, 'Synthetic Site', v_tz);
	v_id uuid;
BEGIN
	FOR i IN 1..20 LOOP
		v_id := schedphi.add_practitioner(v_tenant, pg_catalog.format('Synthetic Practitioner %s', i));
		PERFORM schedphi.add_availability(v_id, v_loc, '{1,2,3,4,5,6,7}', '08:00', '17:00',
										  daterange('2029-12-01', NULL), 15);
		INSERT INTO ibench.prac VALUES (i, v_id);
	END LOOP;
	FOR i IN 1..300 LOOP
		v_id := schedphi.register_patient(v_tenant, pg_catalog.format('Given%s', i),
										  pg_catalog.format('Synthetic%s', i),
										  date '1950-01-01' + (i * 37) % 25000);
		INSERT INTO ibench.patient VALUES (i, v_id);
	END LOOP;
	INSERT INTO ibench.clinic VALUES (v_tenant, v_loc, v_tz);
END
$setup$;

ANALYZE;

-- About 15% of the 36 daily slots of each practitioner over 42 days, chosen
-- by a fixed hash; every booking carries a synthetic reason.
SELECT count(schedphi.book(p.id, ARRAY[pr.id], tstzrange(s.t, s.t + interval '15 minutes'), 'routine',
						   pg_catalog.format('Synthetic reason %s', s.r % 40)))
	AS bookings
FROM ibench.clinic c
CROSS JOIN ibench.prac pr
CROSS JOIN LATERAL (
	SELECT ((date '2029-12-31' + d) + time '08:00' + k * interval '15 minutes') AT TIME ZONE c.tz AS t,
		   d * 36 + k AS r
	FROM generate_series(0, 41) d, generate_series(0, 35) k
	WHERE (hashint4(pr.n * 100000 + d * 36 + k) & 65535) < 9830) s
JOIN ibench.patient p ON p.n = 1 + (pr.n * 7 + s.r) % 300;

-- The server-side loop: the mean time of one call, in microseconds, over
-- p_reps calls in one statement (no client round trip, no result
-- transfer), run as the caller (SECURITY INVOKER), so the access checks
-- are those of the calling login or of the token it assumed.  p_what is
-- 'slots' (find_slots for one practitioner over the measured week,
-- 15 minutes), 'week' (the measured week of schedphi.appointments) or
-- 'table' (the same week straight from the table: superuser only, the
-- floor with no check at all).  Also returns what the last call saw:
-- rows, rows with a patient id, rows with a decrypted reason.
CREATE FUNCTION ibench.mean_us(p_what text, p_reps int, p_tenant uuid, p_prac uuid,
							   OUT mean_us numeric, OUT seen bigint, OUT patients bigint, OUT reasons bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_week tstzrange := tstzrange(timestamp '2030-01-14 00:00' AT TIME ZONE 'America/New_York',
								  timestamp '2030-01-21 00:00' AT TIME ZONE 'America/New_York');
	t0 timestamptz;
BEGIN
	FOR i IN 0..p_reps LOOP
		IF i = 1 THEN
			t0 := clock_timestamp();	-- call 0 warms the session's caches
		END IF;
		IF p_what = 'slots' THEN
			SELECT count(*), count(*), 0 INTO seen, patients, reasons
			FROM schedphi.find_slots(ARRAY[p_prac], v_week, interval '15 minutes');
		ELSIF p_what = 'table' THEN
			SELECT count(*), count(a.patient), 0 INTO seen, patients, reasons
			FROM schedphi.appointment a
			WHERE a.tenant = p_tenant AND a.during && v_week;
		ELSE
			SELECT count(*), count(a.patient), count(a.reason) INTO seen, patients, reasons
			FROM schedphi.appointments a
			WHERE a.tenant = p_tenant AND a.during && v_week;
		END IF;
	END LOOP;
	mean_us := round((extract(epoch FROM clock_timestamp() - t0) * 1e6 / p_reps)::numeric, 1);
END
$$;

-- find_slots' access check alone: the mean time of one
-- schedphi._authorize() call with the roles find_slots passes, in
-- microseconds.  SECURITY DEFINER only to reach the internal function: the
-- session user, and any token assumed, are the caller's, so the check runs
-- the caller's path (superuser, membership or token).
CREATE FUNCTION ibench.authorize_us(p_reps int, p_tenant uuid)
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_roles text[] := ARRAY['admin', 'scheduler', 'clinician', 'integration', 'support'];
	t0 timestamptz;
BEGIN
	PERFORM schedphi._authorize(p_tenant, v_roles);
	t0 := clock_timestamp();
	FOR i IN 1..p_reps LOOP
		PERFORM schedphi._authorize(p_tenant, v_roles);
	END LOOP;
	RETURN round((extract(epoch FROM clock_timestamp() - t0) * 1e6 / p_reps)::numeric, 2);
END
$$;

DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ibench_scheduler') THEN
		CREATE ROLE ibench_scheduler LOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ibench_pool') THEN
		CREATE ROLE ibench_pool LOGIN;
	END IF;
END
$roles$;
-- (b) a login mapped to the tenant as a scheduler; (c) a pooled login with
-- no membership and no schedphi role: it acts only through assume().
SELECT schedphi.add_member(c.tenant, 'ibench_scheduler', 'scheduler') FROM ibench.clinic c;
GRANT USAGE ON SCHEMA ibench TO ibench_scheduler, ibench_pool;
GRANT EXECUTE ON FUNCTION ibench.mean_us(text, int, uuid, uuid), ibench.authorize_us(int, uuid)
	TO ibench_scheduler, ibench_pool;

VACUUM ANALYZE;

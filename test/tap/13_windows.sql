-- Availability expansion (schedphi._windows, in C) against the same rules
-- written in plain SQL (the executable specification below): weekly rules
-- in New York, Berlin, Kolkata (no DST) and Lord Howe (half-hour DST),
-- windows that cross both DST changes of 2026, days of the week, validity
-- ranges that start and end mid-window, a window ending at 24:00 and one in
-- the spring-forward gap.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;

CREATE FUNCTION pg_temp.windows_sql(p_tenant uuid, p_actors uuid[], p_window tstzrange)
RETURNS TABLE (actor uuid, starts timestamptz, ends timestamptz, slot_minutes int)
LANGUAGE sql STABLE AS $$
	SELECT av.actor, w.s, w.e, av.slot_minutes
	FROM schedphi.availability av
	JOIN schedphi.location l ON l.tenant = av.tenant AND l.id = av.location
	CROSS JOIN LATERAL generate_series(
		((lower(p_window) AT TIME ZONE l.timezone)::date - 1)::timestamp,
		((upper(p_window) AT TIME ZONE l.timezone)::date)::timestamp,
		interval '1 day') AS g(d)
	CROSS JOIN LATERAL (SELECT schedphi._wall_to_instant(g.d + av.starts, l.timezone, true) AS s,
							   schedphi._wall_to_instant(g.d + av.ends, l.timezone, false) AS e) w
	WHERE av.tenant = p_tenant
	  AND av.actor = ANY (p_actors)
	  AND extract(isodow FROM g.d)::int = ANY (av.days)
	  AND av.valid @> g.d::date
	  AND w.s < upper(p_window)
	  AND w.e > lower(p_window)
	  AND w.s < w.e
$$;

CREATE TEMP TABLE rig (tenant uuid, actors uuid[]);
DO $$
DECLARE
	v_tenant uuid := schedphi.create_tenant('Windows Clinic', 'UTC');
	v_loc uuid;
	v_a uuid;
	v_actors uuid[] := '{}';
	z text;
BEGIN
	FOREACH z IN ARRAY ARRAY['America/New_York', 'Europe/Berlin', 'Asia/Kolkata', 'Australia/Lord_Howe'] LOOP
		v_loc := schedphi.add_location(v_tenant, 'Site ' || z, z);
		v_a := schedphi.add_practitioner(v_tenant, 'Dr ' || z);
		PERFORM schedphi.add_availability(v_a, v_loc, '{1,2,3,4,5}', '09:00', '17:00', daterange('2026-01-01', NULL), 15);
		PERFORM schedphi.add_availability(v_a, v_loc, '{6}', '01:00', '04:00', daterange('2026-03-01', '2026-11-20'), 30);
		PERFORM schedphi.add_availability(v_a, v_loc, '{7}', '20:00', '24:00', daterange('2026-02-10', '2026-04-15'), 60);
		PERFORM schedphi.add_availability(v_a, v_loc, '{7}', '02:30', '03:30', daterange('2026-03-01', '2026-04-30'), 10);
		v_actors := v_actors || v_a;
	END LOOP;
	INSERT INTO rig VALUES (v_tenant, v_actors);
END $$;

CREATE TEMP TABLE probes (win tstzrange);
INSERT INTO probes VALUES
	('[2026-03-05, 2026-04-10)'), ('[2026-10-20, 2026-11-10)'), ('[2026-03-28 23:00Z, 2026-03-29 05:00Z)'),
	('[2026-03-08 05:00Z, 2026-03-08 09:00Z)'), ('[2026-11-01 04:00Z, 2026-11-01 08:00Z)'),
	('[2026-04-04 13:00Z, 2026-04-05 17:00Z)'), ('[2026-10-03 14:00Z, 2026-10-04 17:00Z)'),
	('[2026-01-01, 2026-01-02)'), ('[2026-02-14 10:17Z, 2026-02-16 08:03Z)'), ('[2026-11-19, 2026-11-22)'),
	('[2025-12-30, 2026-01-03)'), ('[2026-06-15 12:00Z, 2026-06-15 12:00:01Z)');

SELECT is((SELECT count(*)::int FROM (
			 (SELECT * FROM rig r, probes p, schedphi._windows(r.tenant, r.actors, p.win)
			  EXCEPT ALL SELECT * FROM rig r, probes p, pg_temp.windows_sql(r.tenant, r.actors, p.win))
			 UNION ALL
			 (SELECT * FROM rig r, probes p, pg_temp.windows_sql(r.tenant, r.actors, p.win)
			  EXCEPT ALL SELECT * FROM rig r, probes p, schedphi._windows(r.tenant, r.actors, p.win))) d), 0,
	'C and SQL expansions agree on every probe window');
SELECT cmp_ok((SELECT count(*)::int FROM rig r, probes p, schedphi._windows(r.tenant, r.actors, p.win)), '>', 100,
	'and the probes produce windows to compare');
SELECT is((SELECT count(*)::int FROM rig r, schedphi._windows(r.tenant, r.actors, '[2026-03-05,)')), 0,
	'an unbounded window has no windows');
SELECT is((SELECT count(*)::int FROM rig r, schedphi._windows(r.tenant, r.actors, 'empty')), 0,
	'an empty window has none');
-- New York, Sunday 2026-03-08: 02:30-03:30 local is in the gap until 03:00
SELECT is((SELECT array_agg(tstzrange(w.starts, w.ends)) FROM rig r,
				  schedphi._windows(r.tenant, r.actors[1:1], '[2026-03-08 05:00Z, 2026-03-08 09:00Z)') w),
		  ARRAY[tstzrange('2026-03-08 07:00Z', '2026-03-08 07:30Z')],
	'a window in the spring-forward gap opens at the change (03:00 EDT)');

SELECT * FROM finish();
ROLLBACK;

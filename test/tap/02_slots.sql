-- find_slots: availability in the location's zone across DST (New York and
-- Berlin, both directions, the gap and the repeat), the grid, blocks,
-- buffers, bookings, holds and their expiry, capacity, several actors at
-- once, bounds, and every bad argument.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset

-- Monday 2026-06-15 is daylight time: 09:00-17:00 EDT is 13:00-21:00 UTC.
SELECT is(cardinality(tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')), 31,
	'a free 8-hour day holds 31 half-hour slots on a 15-minute grid');
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes'))[1], '06-15 13:00',
	'the day starts at 09:00 local');
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes'))[31], '06-15 20:30',
	'the last half hour starts at 16:30 local');
SELECT is(tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15 13:07Z, 2026-06-15 14:00Z)', '30 minutes'),
	ARRAY['06-15 13:15', '06-15 13:30'], 'starts stay on the grid and slots inside the window');
SELECT is((SELECT count(*)::int FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-20)', '15 minutes', 7)),
	7, 'max_results bounds the answer');
SELECT is((SELECT count(*)::int FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-20)', '15 minutes')),
	100, 'max_results defaults to 100');
SELECT ok((SELECT bool_and(s.actors = ARRAY[:'dr']::uuid[] AND s.ends - s.starts = '20 minutes')
		   FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-16)', '20 minutes') s),
	'each slot carries the actors and the duration');
SELECT is((SELECT array_agg(s.starts ORDER BY s.starts) = array_agg(s.starts)
		   FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-14, 2026-06-21)', '45 minutes', 1000) s), true,
	'slots come sorted');
SELECT is(tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15 21:00Z, 2026-06-16 13:00Z)', '15 minutes'), '{}'::text[],
	'no slots outside availability');
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2025-12-30, 2026-01-02)', '60 minutes'))[1:2],
	ARRAY['01-01 14:00', '01-01 14:15'], 'availability starts on its first valid date');

-- DST, New York: the wall clock stays 09:00-17:00.
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-03-07 05:00Z, 2026-03-08 05:00Z)', '60 minutes'))[1], '03-07 14:00',
	'NY Saturday before spring-forward: 09:00 EST = 14:00 UTC');
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-03-08 05:00Z, 2026-03-09 04:00Z)', '60 minutes'))[1], '03-08 13:00',
	'NY spring-forward Sunday: 09:00 EDT = 13:00 UTC');
SELECT is(cardinality(tst.starts(ARRAY[:'dr']::uuid[], '[2026-03-08 05:00Z, 2026-03-09 04:00Z)', '60 minutes')), 29,
	'NY spring-forward Sunday still has 8 wall-clock hours');
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-10-31 04:00Z, 2026-11-01 04:00Z)', '60 minutes'))[1], '10-31 13:00',
	'NY Saturday before fall-back: 09:00 EDT = 13:00 UTC');
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-11-01 04:00Z, 2026-11-02 05:00Z)', '60 minutes'))[1], '11-01 14:00',
	'NY fall-back Sunday: 09:00 EST = 14:00 UTC');

-- The spring-forward gap and the fall-back repeat, with a night window.
SELECT schedphi.add_availability(:'dr2', :'loc', '{7}', '00:00', '04:00', daterange('2026-03-08', '2026-03-09')) AS x \gset
SELECT schedphi.add_availability(:'dr2', :'loc', '{7}', '00:00', '04:00', daterange('2026-11-01', '2026-11-02')) AS x \gset
SELECT is(tst.starts(ARRAY[:'dr2']::uuid[], '[2026-03-08 00:00Z, 2026-03-08 12:00Z)', '60 minutes'),
	ARRAY['03-08 05:00', '03-08 05:15', '03-08 05:30', '03-08 05:45', '03-08 06:00', '03-08 06:15', '03-08 06:30',
		  '03-08 06:45', '03-08 07:00'],
	'00:00-04:00 on spring-forward night is three real hours (02:00-03:00 does not exist)');
SELECT is(cardinality(tst.starts(ARRAY[:'dr2']::uuid[], '[2026-11-01 00:00Z, 2026-11-01 12:00Z)', '15 minutes')), 20,
	'00:00-04:00 on fall-back night is five real hours: the repeated hour is offered twice');
SELECT is((tst.starts(ARRAY[:'dr2']::uuid[], '[2026-11-01 00:00Z, 2026-11-01 12:00Z)', '15 minutes'))[6:11],
	ARRAY['11-01 05:15', '11-01 05:30', '11-01 05:45', '11-01 06:00', '11-01 06:15', '11-01 06:30'],
	'01:xx EDT and then 01:xx EST are both offered');
SELECT schedphi.add_availability(:'dr', :'loc', '{7}', '02:30', '05:00', daterange('2026-03-08', '2026-03-09')) AS x \gset
SELECT is((tst.starts(ARRAY[:'dr']::uuid[], '[2026-03-08 00:00Z, 2026-03-08 12:00Z)', '60 minutes'))[1], '03-08 07:00',
	'a window opening inside the gap (02:30) opens when the clock jumps, at 03:00 EDT');
SELECT is(schedphi._wall_to_instant('2026-11-01 01:30', 'America/New_York', true), '2026-11-01 05:30Z'::timestamptz,
	'a window opening in the repeat opens at the first 01:30');
SELECT is(schedphi._wall_to_instant('2026-11-01 01:30', 'America/New_York', false), '2026-11-01 06:30Z'::timestamptz,
	'a window closing in the repeat closes at the second 01:30');

-- DST, Berlin.
SELECT tenant AS bt, loc AS bloc, dr AS bdr, dr2 AS bdr2 FROM tst.clinic('Europe/Berlin') \gset
SELECT is((tst.starts(ARRAY[:'bdr']::uuid[], '[2026-03-28, 2026-03-29)', '60 minutes'))[1], '03-28 08:00',
	'Berlin Saturday before spring-forward: 09:00 CET = 08:00 UTC');
SELECT is((tst.starts(ARRAY[:'bdr']::uuid[], '[2026-03-29, 2026-03-30)', '60 minutes'))[1], '03-29 07:00',
	'Berlin spring-forward Sunday: 09:00 CEST = 07:00 UTC');
SELECT is((tst.starts(ARRAY[:'bdr']::uuid[], '[2026-10-24, 2026-10-25)', '60 minutes'))[1], '10-24 07:00',
	'Berlin Saturday before fall-back: 09:00 CEST = 07:00 UTC');
SELECT is((tst.starts(ARRAY[:'bdr']::uuid[], '[2026-10-25, 2026-10-26)', '60 minutes'))[1], '10-25 08:00',
	'Berlin fall-back Sunday: 09:00 CET = 08:00 UTC');
SELECT schedphi.add_availability(:'bdr2', :'bloc', '{7}', '00:00', '04:00', daterange('2026-03-29', '2026-03-30')) AS x \gset
SELECT schedphi.add_availability(:'bdr2', :'bloc', '{7}', '00:00', '04:00', daterange('2026-10-25', '2026-10-26')) AS x \gset
SELECT is(cardinality(tst.starts(ARRAY[:'bdr2']::uuid[], '[2026-03-28 20:00Z, 2026-03-29 05:00Z)', '15 minutes')), 12,
	'Berlin spring-forward night 00:00-04:00 is three real hours');
SELECT is(cardinality(tst.starts(ARRAY[:'bdr2']::uuid[], '[2026-10-24 20:00Z, 2026-10-25 05:00Z)', '15 minutes')), 20,
	'Berlin fall-back night 00:00-04:00 is five real hours');

-- Bookings, blocks, buffers.
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS a1 \gset
SELECT is(tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 15:00Z)', '30 minutes'),
	ARRAY['06-15 13:00', '06-15 13:15', '06-15 13:30', '06-15 14:30'], 'a booking hides the slots it overlaps');
SELECT schedphi.add_block(:'dr', '[2026-06-15 15:10Z, 2026-06-15 15:20Z)', 'phone call') AS x \gset
SELECT is(tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15 14:30Z, 2026-06-15 16:00Z)', '30 minutes'),
	ARRAY['06-15 14:30', '06-15 15:30'], 'a block hides the slots it overlaps');
SELECT schedphi.set_buffer(:'room', '10 minutes', '10 minutes');
SELECT schedphi.book(:'p2', ARRAY[:'room']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS a2 \gset
SELECT is(tst.starts(ARRAY[:'room']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 15:30Z)', '30 minutes'),
	ARRAY['06-15 13:00', '06-15 15:00'], 'buffers on both sides keep the room free around a booking');
SELECT is(tst.starts(ARRAY[:'dr', :'room']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 16:00Z)', '30 minutes'),
	ARRAY['06-15 13:00', '06-15 15:30'], 'several actors: only times when all of them are free');
SELECT schedphi.cancel(:'a1');
SELECT is(tst.starts(ARRAY[:'dr']::uuid[], '[2026-06-15 13:45Z, 2026-06-15 14:45Z)', '30 minutes'),
	ARRAY['06-15 13:45', '06-15 14:00', '06-15 14:15'], 'a cancellation frees the slots');

-- Capacity: two seats.
SELECT schedphi.book(:'p1', ARRAY[:'chair']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 15:00Z)') AS c1 \gset
SELECT is(tst.starts(ARRAY[:'chair']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 15:00Z)', '60 minutes'),
	ARRAY['06-16 14:00'], 'capacity 2: one booking leaves a seat free');
SELECT schedphi.book(:'p2', ARRAY[:'chair']::uuid[], '[2026-06-16 14:30Z, 2026-06-16 15:30Z)') AS c2 \gset
SELECT is(tst.starts(ARRAY[:'chair']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 16:00Z)', '30 minutes'),
	ARRAY['06-16 14:00', '06-16 15:00', '06-16 15:15', '06-16 15:30'],
	'capacity 2: a slot needs one seat free for all of it; both seats taken hides the time');
SELECT is(tst.starts(ARRAY[:'chair']::uuid[], '[2026-06-16 15:00Z, 2026-06-16 15:30Z)', '30 minutes'),
	ARRAY['06-16 15:00'], 'capacity 2: a seat freed at 15:00 is offered');

-- Holds hide a slot until they expire; no sweeper is needed.
SELECT schedphi.hold(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', '10 minutes') AS h1 \gset
SELECT is(tst.starts(ARRAY[:'dr2']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', '30 minutes'), '{}'::text[],
	'a live hold hides its slot');
SELECT schedphi.hold(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-17 15:00Z, 2026-06-17 15:30Z)', '1 second') AS h2 \gset
SELECT pg_sleep(1.2);
SELECT is(tst.starts(ARRAY[:'dr2']::uuid[], '[2026-06-17 15:00Z, 2026-06-17 15:30Z)', '30 minutes'),
	ARRAY['06-17 15:00'], 'an expired hold no longer hides its slot');

-- Many bookings: find_slots agrees with a brute-force computation in SQL.
DO $$
DECLARE
	c record;
BEGIN
	SELECT * INTO c FROM schedphi.actor a WHERE a.name = 'Dr Beta Synthetic' AND a.tenant =
		(SELECT tenant FROM schedphi.location l WHERE l.timezone = 'America/New_York' ORDER BY created_at LIMIT 1);
	FOR d IN 0 .. 39 LOOP
		FOR k IN 0 .. 15 LOOP
			CONTINUE WHEN hashint4(d * 16 + k) % 3 = 0;
			PERFORM schedphi.book((SELECT id FROM schedphi.patient p WHERE p.tenant = c.tenant LIMIT 1), ARRAY[c.id],
				tstzrange(timestamptz '2026-07-01 13:00Z' + d * interval '1 day' + k * interval '30 minutes',
						  timestamptz '2026-07-01 13:30Z' + d * interval '1 day' + k * interval '30 minutes'));
		END LOOP;
	END LOOP;
END $$;
SELECT cmp_ok((SELECT count(*)::int FROM schedphi.appointment_actor WHERE actor = :'dr2' AND active), '>', 400,
	'about four hundred bookings loaded');
-- The free 30-minute starts of one actor over those forty days, computed
-- by brute force: every grid point from 09:00 to 16:30 local (EDT) where
-- some seat has no active booking within the actor's buffers.
CREATE FUNCTION tst.free_starts(actor uuid, seats int, before interval, after interval) RETURNS timestamptz[]
LANGUAGE sql AS $$
	SELECT array_agg(t ORDER BY t)
	FROM generate_series(0, 39) d,
		 generate_series(timestamptz '2026-07-01 13:00Z' + d * interval '1 day',
						 timestamptz '2026-07-01 20:30Z' + d * interval '1 day', '15 minutes') t
	WHERE EXISTS (SELECT 1 FROM generate_series(1, seats) seat
				  WHERE NOT EXISTS (SELECT 1 FROM schedphi.appointment_actor x
									WHERE x.actor = free_starts.actor AND x.active AND x.seat = seat.seat
									  AND x.span && tstzrange(t - before, t + interval '30 minutes' + after)))
$$;
SELECT is(
	(SELECT array_agg(s.starts ORDER BY s.starts)
	 FROM schedphi.find_slots(ARRAY[:'dr2']::uuid[], '[2026-07-01, 2026-08-10)', '30 minutes', 10000) s),
	tst.free_starts(:'dr2', 1, '0', '0'),
	'find_slots matches a brute-force answer over forty busy days');

-- When max_results ends the search early, find_slots reads the bookings a
-- stretch of time at a time.  With buffers that reach across stretches, two
-- seats, two actors at once and windows that start mid-day, the first k
-- slots must be exactly the first k of the whole answer, and the whole
-- answer must match a brute-force one (seat by seat, buffers included).
SELECT schedphi.set_buffer(:'chair', '10 minutes', '25 minutes');
DO $$
DECLARE
	c record;
BEGIN
	SELECT a.* INTO c FROM schedphi.actor a WHERE a.name = 'Infusion chairs' AND a.tenant =
		(SELECT tenant FROM schedphi.location l WHERE l.timezone = 'America/New_York' ORDER BY created_at LIMIT 1);
	FOR d IN 0 .. 39 LOOP
		FOR k IN 0 .. 14 LOOP
			CONTINUE WHEN hashint4(d * 31 + k) % 5 < 2;
			BEGIN
				PERFORM schedphi.book((SELECT id FROM schedphi.patient p WHERE p.tenant = c.tenant LIMIT 1), ARRAY[c.id],
					tstzrange(timestamptz '2026-07-01 13:00Z' + d * interval '1 day' + k * interval '30 minutes',
							  timestamptz '2026-07-01 13:45Z' + d * interval '1 day' + k * interval '30 minutes'));
			EXCEPTION WHEN exclusion_violation THEN
				NULL;			-- both seats taken: leave it
			END;
		END LOOP;
	END LOOP;
END $$;
SELECT cmp_ok((SELECT count(DISTINCT seat)::int FROM schedphi.appointment_actor
			   WHERE actor = :'chair' AND active AND lower(span) >= '2026-07-01'), '=', 2,
	'the chairs are booked on both seats');
SELECT is(
	(SELECT array_agg(s.starts ORDER BY s.starts)
	 FROM schedphi.find_slots(ARRAY[:'chair']::uuid[], '[2026-07-01, 2026-08-10)', '30 minutes', 10000) s),
	tst.free_starts(:'chair', 2, '10 minutes', '25 minutes'),
	'find_slots matches a brute-force answer for two seats with buffers over forty days');
SELECT is(
	(SELECT count(*)::int
	 FROM (VALUES (ARRAY[:'chair']::uuid[]), (ARRAY[:'dr2', :'chair']::uuid[])) a(actors),
		  (VALUES (tstzrange('2026-07-01', '2026-08-10')), (tstzrange('2026-07-03 15:10Z', '2026-08-09 18:00Z'))) w(win),
		  (VALUES (interval '15 minutes'), (interval '30 minutes'), (interval '2 hours')) d(dur),
		  LATERAL (SELECT array_agg(s.starts ORDER BY s.starts) AS whole
				   FROM schedphi.find_slots(a.actors, w.win, d.dur, 10000) s) f,
		  generate_series(1, 60) k
	 WHERE k <= cardinality(f.whole)
	   AND (SELECT array_agg(s.starts ORDER BY s.starts) FROM schedphi.find_slots(a.actors, w.win, d.dur, k) s)
		   IS DISTINCT FROM f.whole[1:k]),
	0, 'the first k slots are the first k of the whole answer (k = 1..60, 12 searches)');
SELECT cmp_ok((SELECT count(*)::int FROM schedphi.find_slots(ARRAY[:'dr2', :'chair']::uuid[],
					'[2026-07-01, 2026-08-10)', '30 minutes', 10000)), '>', 60,
	'the searches above go on past the first stretch');

-- Bad arguments.
SELECT throws_ok($$SELECT * FROM schedphi.find_slots(NULL, '[2026-06-15, 2026-06-16)', '30 minutes')$$,
	'22023', 'actors must not be null', 'NULL actors');
SELECT throws_ok($$SELECT * FROM schedphi.find_slots('{}', '[2026-06-15, 2026-06-16)', '30 minutes')$$,
	'22023', 'actors must name at least one actor', 'no actors');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L, NULL]::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')$$, :'dr'),
	'22023', 'actors must not contain NULL', 'a NULL actor');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L, %L]::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')$$, :'dr', :'dr'),
	'22023', 'actors must not name the same actor twice', 'a repeated actor');
SELECT throws_ok($$SELECT * FROM schedphi.find_slots(ARRAY['00000000-0000-0000-0000-000000000001']::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')$$,
	'22023', 'unknown actor 00000000-0000-0000-0000-000000000001', 'an unknown actor');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L, %L]::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')$$, :'dr', :'bdr'),
	'22023', 'actors must all belong to one tenant', 'actors of two tenants');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], NULL, '30 minutes')$$, :'dr'),
	'22023', 'window must not be null', 'NULL window');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15,)', '30 minutes')$$, :'dr'),
	'22023', 'window must be a non-empty range bounded on both sides', 'unbounded window');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], 'empty', '30 minutes')$$, :'dr'),
	'22023', 'window must be a non-empty range bounded on both sides', 'empty window');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-01-01, 2027-06-01)', '30 minutes')$$, :'dr'),
	'22023', 'window must not be longer than 370 days', 'too long a window');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '0')$$, :'dr'),
	'22023', 'duration must be positive (zero duration)', 'zero duration');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '-5 minutes')$$, :'dr'),
	'22023', 'duration must be positive (zero duration)', 'negative duration');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '1 month')$$, :'dr'),
	'22023', 'duration must be given in days, hours or minutes, not months', 'duration in months');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', NULL)$$, :'dr'),
	'22023', 'duration must not be null', 'NULL duration');
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes', 0)$$, :'dr'),
	'22023', 'max_results must be between 1 and 10000', 'max_results 0');
SELECT is((SELECT count(*)::int FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-18, 2026-06-19)', '30 minutes', NULL)),
	31, 'NULL max_results means the default');

-- Who may look.
CREATE ROLE tst_outsider LOGIN;
SET SESSION AUTHORIZATION tst_outsider;
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes')$$, :'dr'),
	'42501', NULL, 'a non-member cannot search another tenant''s schedule');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;

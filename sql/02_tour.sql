-- The README's five-minute tour, with stable output: a clinic, free slots,
-- a booking, a refused double booking, a cancellation and the waitlist.
SET client_min_messages = warning;
SET timezone = 'America/New_York';
\set VERBOSITY terse
CREATE FUNCTION pg_temp.err(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', 'g');
END $$;

SELECT schedphi.create_tenant('Synthetic Health', 'America/New_York') AS clinic \gset
SELECT schedphi.add_location(:'clinic', 'Downtown', 'America/New_York') AS downtown \gset
SELECT schedphi.add_practitioner(:'clinic', 'Dr Ada Example') AS ada \gset
SELECT schedphi.add_resource(:'clinic', 'room', 'Room 101', 1, :'downtown') AS room \gset
SELECT schedphi.add_availability(:'ada', :'downtown', '{1,2,3,4,5}', '09:00', '17:00',
								 daterange('2026-01-01', NULL), 30) IS NOT NULL AS ada_hours;
SELECT schedphi.add_availability(:'room', :'downtown', '{1,2,3,4,5}', '08:00', '18:00',
								 daterange('2026-01-01', NULL), 15) IS NOT NULL AS room_hours;

-- Free hour-long slots for Dr Ada and Room 101 together on a Monday morning.
SELECT starts, ends
FROM schedphi.find_slots(ARRAY[:'ada', :'room']::uuid[], '[2026-06-15 08:00, 2026-06-15 12:00)', '1 hour');

SELECT schedphi.register_patient(:'clinic', 'Jamie', 'Doe-Synthetic', '1984-04-01',
								 phone => '555-0100-123', mrn => 'SYN-1') AS jamie \gset
SELECT schedphi.register_patient(:'clinic', 'Alex', 'Roe-Synthetic', '1979-09-09') AS alex \gset
SELECT schedphi.book(:'jamie', ARRAY[:'ada', :'room']::uuid[], '[2026-06-15 10:00, 2026-06-15 11:00)',
					 reason => 'synthetic follow-up') AS visit \gset
SELECT status, kind, during FROM schedphi.appointments WHERE id = :'visit';

-- The same hour again: refused, naming the actors and intervals only.
SELECT pg_temp.err(format($$SELECT schedphi.book(%L, ARRAY[%L, %L]::uuid[], '[2026-06-15 10:30, 2026-06-15 11:30)')$$,
						  :'alex', :'ada', :'room')) AS double_booking;

-- Outside Dr Ada's hours, and a bad argument.
SELECT pg_temp.err(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 18:00, 2026-06-15 18:30)')$$,
						  :'alex', :'ada')) AS after_hours;
SELECT pg_temp.err(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], '[2026-06-15, 2026-06-16)', '0')$$,
						  :'ada')) AS zero_duration;

-- Alex waits for any hour with Dr Ada that morning; Jamie cancels.
SELECT schedphi.waitlist_add(:'alex', ARRAY[:'ada']::uuid[], '[2026-06-15 09:00, 2026-06-15 12:00)', '1 hour') AS wait \gset
SELECT schedphi.cancel(:'visit', 'synthetic patient request');
SELECT status FROM schedphi.appointments WHERE id = :'visit';
SELECT w.waitlist = :'wait' AS offered_to_alex, w.patient = :'alex' AS is_alex
FROM schedphi.waitlist_offers(:'visit') w;
SELECT starts, ends
FROM schedphi.find_slots(ARRAY[:'ada', :'room']::uuid[], '[2026-06-15 08:00, 2026-06-15 12:00)', '1 hour');

-- Hold, then confirm.
SELECT schedphi.hold(:'alex', ARRAY[:'ada']::uuid[], '[2026-06-15 10:00, 2026-06-15 11:00)', '5 minutes') AS held \gset
SELECT status FROM schedphi.appointments WHERE id = :'held';
SELECT schedphi.confirm(:'held');
SELECT status FROM schedphi.appointments WHERE id = :'held';
SELECT pg_temp.err(format($$SELECT schedphi.set_status(%L, 'fulfilled')$$, :'held')) AS skipping_arrival;

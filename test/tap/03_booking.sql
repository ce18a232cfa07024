-- book, hold, confirm, reschedule, cancel, set_status: double booking
-- refused with a message naming every clashing actor and never the other
-- patient, multi-actor atomicity, capacity, buffers, idempotency, hold
-- expiry, the FHIR status table, and every bad argument changing nothing.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
-- 2026-06-15 is a Monday; 09:00-17:00 EDT is 13:00-21:00 UTC.

SELECT schedphi.book(:'p1', ARRAY[:'dr', :'room']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)',
					 'checkup', 'annual synthetic checkup') AS a1 \gset
SELECT is((SELECT status FROM schedphi.appointments WHERE id = :'a1'), 'booked', 'book creates a booked appointment');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_actor WHERE appointment = :'a1' AND active), 2,
	'book reserves every actor');
SELECT is((SELECT kind FROM schedphi.appointments WHERE id = :'a1'), 'checkup', 'the kind is kept');

-- Double booking.
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 14:15Z, 2026-06-15 14:45Z)')$$, :'p2', :'dr')),
	'23P01', 'an overlapping booking of the same practitioner is refused with 23P01');
SELECT schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-15 15:00Z, 2026-06-15 15:30Z)') AS a2 \gset
SELECT tst.error_of(format($$SELECT schedphi.book(%L, ARRAY[%L, %L, %L]::uuid[], '[2026-06-15 14:00Z, 2026-06-15 15:30Z)')$$,
	:'p3', :'room', :'dr', :'dr2')) AS err \gset
SELECT matches(:'err'::text, '^23P01: booking conflict: ', 'the conflict message says what happened');
SELECT matches(:'err'::text, 'Dr Alpha Synthetic \(' || :'dr' || '\) is busy during \["2026-06-15 14:00:00\+00","2026-06-15 14:30:00\+00"\)',
	'the conflict names the first practitioner and its clashing interval');
SELECT matches(:'err'::text, 'Dr Beta Synthetic \(' || :'dr2' || '\) is busy during \["2026-06-15 15:00:00\+00","2026-06-15 15:30:00\+00"\)',
	'the conflict names the second practitioner too');
SELECT matches(:'err'::text, 'Exam room 1 \(' || :'room' || '\)', 'the conflict names the room too');
SELECT ok(position(:'p1' IN :'err'::text) = 0 AND position(:'p2' IN :'err'::text) = 0 AND :'err'::text !~ 'Synthetica|Testa|Probe|Fictional|SYN-',
	'the conflict never names the other patients');
SELECT is((SELECT count(*)::int FROM schedphi.appointment WHERE patient = :'p3'), 0,
	'a refused booking leaves no appointment behind');

-- Multi-actor atomicity: the practitioner is free, the room is not.
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L, %L]::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)')$$, :'p3', :'dr2', :'room')),
	'23P01', 'a booking needing a busy room is refused');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_actor WHERE actor = :'dr2'), 1,
	'and the free practitioner was not booked either: all actors or none');

-- Availability and blocks.
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 12:00Z, 2026-06-15 12:30Z)')$$, :'p1', :'dr'),
	'22023', NULL, 'booking outside availability: 22023');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 20:45Z, 2026-06-15 21:15Z)')$$, :'p1', :'dr'),
	'22023', NULL, 'booking across the end of availability: 22023');
SELECT matches(tst.error_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 12:00Z, 2026-06-15 12:30Z)')$$, :'p1', :'dr')),
	'^22023: actor Dr Alpha Synthetic \(.*\) is not available during', 'the message names the actor');
SELECT schedphi.add_block(:'dr', '[2026-06-15 16:00Z, 2026-06-15 17:00Z)', 'staff meeting') AS b \gset
SELECT throws_like(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 16:30Z, 2026-06-15 17:30Z)')$$, :'p1', :'dr'),
	'%Dr Alpha Synthetic%is blocked during%', 'booking inside a block is refused');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 16:30Z, 2026-06-15 17:30Z)')$$, :'p1', :'dr')),
	'22023', 'booking inside a block: 22023');
-- two adjacent availability windows together cover a booking across them
SELECT schedphi.add_availability(:'dr2', :'loc', '{1}', '17:00', '19:00', daterange('2026-01-01', NULL)) AS x \gset
SELECT isa_ok(schedphi.book(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-15 20:30Z, 2026-06-15 21:30Z)'), 'uuid',
	'a booking may span two adjacent availability windows');

-- Bad arguments.
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], 'empty')$$, :'p1', :'dr'),
	'22023', 'during must not be empty (zero duration)', 'zero duration');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:00Z]')$$, :'p1', :'dr'),
	'22023', 'during must not be empty (zero duration)', 'a zero-length closed range');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 14:00Z,)')$$, :'p1', :'dr'),
	'22023', 'during must be bounded on both sides', 'unbounded during');
SELECT throws_ok(format($$SELECT schedphi.book(%L, '{}'::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)')$$, :'p1'),
	'22023', 'actors must name at least one actor', 'no actors');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L, %L]::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)')$$, :'p1', :'dr', :'dr'),
	'22023', 'actors must not name the same actor twice', 'repeated actor');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)', 'party')$$, :'p1', :'dr'),
	'22023', 'unknown appointment kind', 'unknown kind');
SELECT throws_ok(format($$SELECT schedphi.book(gen_random_uuid(), ARRAY[%L]::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)')$$, :'dr'),
	'22023', 'unknown patient', 'unknown patient');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY['00000000-0000-0000-0000-000000000002']::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)')$$, :'p1'),
	'22023', 'unknown actor 00000000-0000-0000-0000-000000000002', 'unknown actor');
SELECT tenant AS t2, dr AS odr, p1 AS op1 FROM tst.clinic('Europe/Berlin') \gset
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)')$$, :'p1', :'odr'),
	'22023', 'unknown actor ' || :'odr', 'an actor of another tenant is unknown here');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-15 18:00Z, 2026-06-17 18:30Z)')$$, :'p1', :'dr'),
	'22023', 'during must not be longer than one day', 'too long');
SELECT is((SELECT count(*)::int FROM schedphi.appointment WHERE tenant = :'tenant'), 3, 'refused calls changed nothing');

-- Capacity and buffers.
SELECT isa_ok(schedphi.book(:'p1', ARRAY[:'chair']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 15:00Z)'), 'uuid', 'first chair');
SELECT isa_ok(schedphi.book(:'p2', ARRAY[:'chair']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 15:00Z)'), 'uuid', 'second chair, same time');
SELECT is((SELECT array_agg(seat ORDER BY seat) FROM schedphi.appointment_actor WHERE actor = :'chair'), '{1,2}'::int[],
	'each booking takes the first free seat');
SELECT throws_like(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-16 14:30Z, 2026-06-16 15:00Z)')$$, :'p3', :'chair'),
	'booking conflict: Infusion chairs%', 'capacity 2: a third booking is refused');
SELECT schedphi.set_buffer(:'room', '10 minutes', '10 minutes');
SELECT schedphi.book(:'p1', ARRAY[:'room']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 14:30Z)') AS r1 \gset
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-16 14:30Z, 2026-06-16 15:00Z)')$$, :'p2', :'room')),
	'23P01', 'the buffer after a booking cannot be booked');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-16 13:30Z, 2026-06-16 13:50Z)')$$, :'p2', :'room')),
	'23P01', 'the buffer before a booking cannot be booked');
SELECT isa_ok(schedphi.book(:'p2', ARRAY[:'room']::uuid[], '[2026-06-16 14:50Z, 2026-06-16 15:20Z)'), 'uuid',
	'buffers may touch: 14:40 + 10 minutes');

-- Idempotency.
SELECT schedphi.book(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', idempotency_key => 'req-42') AS i1 \gset
SELECT is(schedphi.book(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', idempotency_key => 'req-42'), :'i1'::uuid,
	'the same idempotency key returns the same appointment');
SELECT is((SELECT count(*)::int FROM schedphi.appointment WHERE idempotency_key = 'req-42'), 1, 'and books only once');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-17 15:00Z, 2026-06-17 15:30Z)', idempotency_key => 'req-42')$$, :'p3', :'dr'),
	'22023', 'idempotency_key was already used for a different booking', 'a reused key for another booking is refused');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', 'emergency', idempotency_key => 'req-42')$$, :'p3', :'dr'),
	'22023', 'idempotency_key was already used for a different booking', 'a reused key with another kind is refused');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', reason => 'other', idempotency_key => 'req-42')$$, :'p3', :'dr'),
	'22023', 'idempotency_key was already used for a different booking', 'a reused key with another reason is refused');
SELECT isnt(schedphi.book(:'op1', ARRAY[:'odr']::uuid[], '[2026-06-17 08:00Z, 2026-06-17 08:30Z)', idempotency_key => 'req-42'), :'i1'::uuid,
	'idempotency keys are per tenant');

-- Holds.
SELECT schedphi.hold(:'p1', ARRAY[:'dr2']::uuid[], '[2026-06-18 14:00Z, 2026-06-18 14:30Z)') AS h1 \gset
SELECT is((SELECT status FROM schedphi.appointments WHERE id = :'h1'), 'pending', 'a hold is pending');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-18 14:00Z, 2026-06-18 14:30Z)')$$, :'p2', :'dr2')),
	'23P01', 'a live hold blocks a booking');
SELECT lives_ok(format($$SELECT schedphi.confirm(%L)$$, :'h1'), 'confirm works');
SELECT is((SELECT status || coalesce(hold_expires::text, '') FROM schedphi.appointments WHERE id = :'h1'), 'booked',
	'a confirmed hold is booked and no longer expires');
SELECT throws_ok(format($$SELECT schedphi.confirm(%L)$$, :'h1'), '55000',
	'cannot confirm: appointment status is booked, not a pending hold', 'confirming twice: 55000');
SELECT schedphi.hold(:'p1', ARRAY[:'dr2']::uuid[], '[2026-06-18 15:00Z, 2026-06-18 15:30Z)', '1 second') AS h2 \gset
SELECT pg_sleep(1.2);
SELECT isa_ok(schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-18 15:00Z, 2026-06-18 15:30Z)'), 'uuid',
	'an expired hold does not block a booking, without any sweeper');
SELECT throws_ok(format($$SELECT schedphi.confirm(%L)$$, :'h2'), '55000',
	'hold expired: cannot change appointment status from pending to booked', 'an expired hold cannot be confirmed');
SELECT throws_ok(format($$SELECT schedphi.reschedule(%L, '[2026-06-18 16:00Z, 2026-06-18 16:30Z)')$$, :'h2'), '55000',
	'hold expired: cannot reschedule it', 'an expired hold cannot be moved');
SELECT throws_ok(format($$SELECT schedphi.hold(%L, ARRAY[%L]::uuid[], '[2026-06-18 16:00Z, 2026-06-18 16:30Z)', '0')$$, :'p1', :'dr2'),
	'22023', 'ttl must be positive and at most one day', 'a zero ttl');
SELECT lives_ok(format($$SELECT schedphi.cancel(%L)$$, :'h2'), 'an expired hold can still be cancelled');
SELECT schedphi.hold(:'p1', ARRAY[:'dr2']::uuid[], '[2026-06-18 16:00Z, 2026-06-18 16:30Z)', '1 second') AS h3 \gset
SELECT pg_sleep(1.2);
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'entered-in-error')$$, :'h3'),
	'an expired hold can be marked entered-in-error through set_status');

-- Reschedule.
SELECT lives_ok(format($$SELECT schedphi.reschedule(%L, '[2026-06-15 18:00Z, 2026-06-15 18:30Z)')$$, :'a1'), 'reschedule to a free time');
SELECT is((SELECT during FROM schedphi.appointments WHERE id = :'a1'), '[2026-06-15 18:00Z, 2026-06-15 18:30Z)'::tstzrange,
	'the appointment moved');
SELECT is((SELECT count(*)::int FROM schedphi.appointment_actor WHERE appointment = :'a1' AND during = '[2026-06-15 18:00Z, 2026-06-15 18:30Z)'), 2,
	'with all its actors');
SELECT isa_ok(schedphi.book(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)'), 'uuid', 'the old time is free again');
SELECT throws_ok(format($$SELECT schedphi.reschedule(%L, '[2026-06-15 14:00Z, 2026-06-15 14:30Z)')$$, :'a1'), '23P01', NULL,
	'rescheduling onto a busy time: 23P01');
SELECT is((SELECT during FROM schedphi.appointments WHERE id = :'a1'), '[2026-06-15 18:00Z, 2026-06-15 18:30Z)'::tstzrange,
	'and the appointment stayed where it was');
SELECT throws_ok(format($$SELECT schedphi.reschedule(%L, '[2026-06-15 22:00Z, 2026-06-15 22:30Z)')$$, :'a1'), '22023', NULL,
	'rescheduling outside availability: 22023');

-- Cancel.
SELECT lives_ok(format($$SELECT schedphi.cancel(%L, 'patient request')$$, :'a1'), 'cancel works');
SELECT is((SELECT status FROM schedphi.appointments WHERE id = :'a1'), 'cancelled', 'the appointment is cancelled');
SELECT isa_ok(schedphi.book(:'p3', ARRAY[:'dr', :'room']::uuid[], '[2026-06-15 18:00Z, 2026-06-15 18:30Z)'), 'uuid',
	'a cancelled slot can be booked again');
SELECT throws_ok(format($$SELECT schedphi.cancel(%L)$$, :'a1'), '55000',
	'cannot change appointment status from cancelled to cancelled', 'cancelling twice: 55000');
SELECT throws_ok(format($$SELECT schedphi.reschedule(%L, '[2026-06-15 19:00Z, 2026-06-15 19:30Z)')$$, :'a1'), '55000',
	'cannot reschedule an appointment whose status is cancelled', 'a cancelled appointment cannot move');
SELECT throws_ok($$SELECT schedphi.cancel(gen_random_uuid())$$, '22023', NULL, 'cancel of an unknown appointment: 22023');

-- set_status: the FHIR R4 transition table, exhaustively.
SELECT is((SELECT array_agg(f || '>' || t ORDER BY f, t)
		   FROM unnest('{proposed,pending,booked,arrived,fulfilled,cancelled,noshow,entered-in-error,checked-in,waitlist}'::text[]) f,
				unnest('{proposed,pending,booked,arrived,fulfilled,cancelled,noshow,entered-in-error,checked-in,waitlist}'::text[]) t
		   WHERE schedphi._transition_allowed(f, t) AND t <> 'entered-in-error'),
	ARRAY['arrived>checked-in', 'arrived>fulfilled', 'booked>arrived', 'booked>cancelled', 'booked>checked-in',
		  'booked>noshow', 'checked-in>fulfilled', 'pending>booked', 'pending>cancelled', 'proposed>booked',
		  'proposed>cancelled', 'proposed>pending', 'proposed>waitlist', 'waitlist>booked', 'waitlist>cancelled',
		  'waitlist>pending', 'waitlist>proposed'],
	'the transition table is exactly the FHIR workflow');
SELECT ok((SELECT bool_and(schedphi._transition_allowed(f, 'entered-in-error') = (f <> 'entered-in-error'))
		   FROM unnest('{proposed,pending,booked,arrived,fulfilled,cancelled,noshow,entered-in-error,checked-in,waitlist}'::text[]) f),
	'any status can be corrected to entered-in-error, once');
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-19 14:00Z, 2026-06-19 14:30Z)') AS s1 \gset
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'arrived')$$, :'s1'), 'booked -> arrived');
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'checked-in')$$, :'s1'), 'arrived -> checked-in');
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'fulfilled')$$, :'s1'), 'checked-in -> fulfilled');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'booked')$$, :'s1'), '55000',
	'cannot change appointment status from fulfilled to booked', 'fulfilled is terminal');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], '[2026-06-19 14:00Z, 2026-06-19 14:30Z)')$$, :'p2', :'dr')),
	'23P01', 'a fulfilled appointment still occupies its time');
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'entered-in-error')$$, :'s1'), 'fulfilled -> entered-in-error');
SELECT isa_ok(schedphi.book(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-19 14:00Z, 2026-06-19 14:30Z)'), 'uuid',
	'entered-in-error frees the time');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'booked')$$, :'s1'), '55000',
	'cannot change appointment status from entered-in-error to booked', 'entered-in-error is terminal');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'done')$$, :'s1'), '22023', 'unknown appointment status',
	'an unknown status: 22023');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, NULL)$$, :'s1'), '22023', 'unknown appointment status',
	'a NULL status: 22023');
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-19 15:00Z, 2026-06-19 15:30Z)') AS s2 \gset
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'fulfilled')$$, :'s2'), '55000',
	'cannot change appointment status from booked to fulfilled', 'booked cannot jump to fulfilled');
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'noshow')$$, :'s2'), 'booked -> noshow');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'arrived')$$, :'s2'), '55000',
	'cannot change appointment status from noshow to arrived', 'noshow is terminal');
SELECT schedphi.hold(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-19 16:00Z, 2026-06-19 16:30Z)') AS s3 \gset
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'booked')$$, :'s3'), 'pending -> booked through set_status');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'arrived')$$, :'h2'), '55000', NULL,
	'a cancelled hold cannot arrive');

-- Clinicians record the clinical steps of their own appointments only.
CREATE ROLE tst_doc LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_doc', 'clinician', :'dr');
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-22 14:00Z, 2026-06-22 14:30Z)') AS own \gset
SELECT schedphi.book(:'p1', ARRAY[:'dr2']::uuid[], '[2026-06-22 14:00Z, 2026-06-22 14:30Z)') AS other \gset
SET SESSION AUTHORIZATION tst_doc;
SELECT lives_ok(format($$SELECT schedphi.set_status(%L, 'arrived')$$, :'own'), 'a clinician records an arrival');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'arrived')$$, :'other'), '42501',
	'permission denied: own appointments rule', 'but not on another practitioner''s appointment');
SELECT throws_ok(format($$SELECT schedphi.set_status(%L, 'cancelled')$$, :'other'), '42501',
	'permission denied: role rule', 'and a clinician does not cancel through set_status');
SELECT throws_ok(format($$SELECT schedphi.cancel(%L)$$, :'own'), '42501', NULL, 'nor through cancel');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT status FROM schedphi.appointments WHERE id = :'other'), 'booked', 'refused changes changed nothing');

-- The audit record of an update names the columns that changed, and only those
SELECT schedphi.book(:'p2', ARRAY[:'dr', :'room']::uuid[], '[2026-06-18 15:00Z, 2026-06-18 15:30Z)') AS aud \gset
SELECT schedphi.set_status(:'aud', 'arrived');
SELECT is((SELECT columns FROM schedphi.audit_log WHERE object = 'appointment' AND object_id = :'aud' AND action = 'update'
		   ORDER BY id DESC LIMIT 1), '{status}'::text[], 'a status change is recorded as one, not as a change of actors');

-- Arrays of more than one dimension and infinite times are bad arguments
SELECT throws_ok(format($$SELECT schedphi.%s(%L, ARRAY[ARRAY[%L]]::uuid[], '[2026-06-18 14:00Z, 2026-06-18 14:30Z)')$$, f, :'p1', :'dr'),
	'22023', 'actors must be a one-dimensional array', f || ' with a two-dimensional actors array')
FROM unnest(ARRAY['book', 'hold']) f;
SELECT throws_ok(format($$SELECT schedphi.waitlist_add(%L, ARRAY[ARRAY[%L]]::uuid[], '[2026-06-18 14:00Z, 2026-06-18 16:30Z)', '30 minutes')$$, :'p1', :'dr'),
	'22023', 'actors must be a one-dimensional array', 'waitlist_add with a two-dimensional actors array');
SELECT throws_ok(format($$SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)$$, :'p1', :'dr', r), '22023',
	'during must be bounded on both sides', 'book during ' || r)
FROM unnest(ARRAY['[-infinity, 2026-06-18 14:00Z)', '[2026-06-18 14:00Z, infinity)']) r;
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], %L, '15 minutes')$$, :'dr', r), '22023',
	'window must be a non-empty range bounded on both sides', 'find_slots in ' || r)
FROM unnest(ARRAY['[-infinity, 2026-06-18 17:00Z)', '[2026-06-18 14:00Z, infinity)']) r;
SELECT throws_ok(format($$SELECT * FROM schedphi.find_slots(ARRAY[%L]::uuid[], %L, '15 minutes')$$, :'dr', '[4713-01-01 BC, 294276-01-01)'),
	'22023', 'window must not be longer than 370 days', 'find_slots in the widest finite window');

SELECT * FROM finish();
ROLLBACK;

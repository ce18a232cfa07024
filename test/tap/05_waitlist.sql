-- The waitlist: adding, validation, and who is offered a cancelled slot
-- (actors, window, duration, first come first served).
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset

SELECT schedphi.book(:'p1', ARRAY[:'dr', :'room']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 15:00Z)') AS a1 \gset
SELECT schedphi.waitlist_add(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 21:00Z)', '30 minutes') AS w1 \gset
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'dr', :'room']::uuid[], '[2026-06-15 14:30Z, 2026-06-16 00:00Z)', '30 minutes') AS w2 \gset
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 21:00Z)', '30 minutes') AS w3 \gset
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-15 14:45Z, 2026-06-15 21:00Z)', '30 minutes') AS w4 \gset
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 21:00Z)', '90 minutes') AS w5 \gset
SELECT schedphi.waitlist_add(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 21:00Z)', '30 minutes') AS w6 \gset

SELECT throws_ok(format($$SELECT * FROM schedphi.waitlist_offers(%L)$$, :'a1'), '55000',
	'appointment status is booked: its time is not free', 'no offers while the appointment stands');
SELECT schedphi.cancel(:'a1');
SELECT is((SELECT array_agg(waitlist::text ORDER BY ord) FROM schedphi.waitlist_offers(:'a1') WITH ORDINALITY o(waitlist, patient, ord)),
	ARRAY[:'w1', :'w2'], 'offers go first come first served to entries that fit the freed time');
SELECT is((SELECT patient FROM schedphi.waitlist_offers(:'a1') LIMIT 1), :'p2'::uuid, 'offers name the waiting patient');

-- The first offer is taken: that entry is served and the time is no longer offered.
SELECT schedphi.book(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-15 14:30Z, 2026-06-15 15:00Z)') AS b2 \gset
SELECT is((SELECT status FROM schedphi.waitlist WHERE id = :'w1'), 'booked', 'booking what was waited for serves the entry');
SELECT is((SELECT count(*)::int FROM schedphi.waitlist_offers(:'a1')), 0, 'time taken again is no longer offered');
SELECT lives_ok(format($$SELECT schedphi.waitlist_remove(%L)$$, :'w6'), 'waitlist_remove works');
SELECT is((SELECT status FROM schedphi.waitlist WHERE id = :'w6'), 'removed', 'the entry is removed');
SELECT throws_ok(format($$SELECT schedphi.waitlist_remove(%L)$$, :'w6'), '55000',
	'cannot remove a waitlist entry whose status is removed', 'removing twice: 55000');
SELECT throws_ok($$SELECT schedphi.waitlist_remove(gen_random_uuid())$$, '22023', 'unknown waitlist entry',
	'removing an unknown entry: 22023');

SELECT throws_ok(format($$SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], '[2026-06-15 13:00Z, 2026-06-15 13:20Z)', '30 minutes')$$, :'p1', :'dr'),
	'22023', 'duration is longer than the window', 'a duration longer than the window');
SELECT throws_ok(format($$SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], '[2026-06-15 13:00Z, 2026-06-18 15:00Z)', '2 days')$$, :'p1', :'dr'),
	'22023', 'duration must not be longer than one day', 'a duration over a day');
SELECT throws_ok(format($$SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], '[2026-06-15 13:00Z, 2026-06-15 15:00Z)', '0')$$, :'p1', :'dr'),
	'22023', 'duration must be positive (zero duration)', 'a zero duration');
SELECT throws_ok(format($$SELECT schedphi.waitlist_add(%L, ARRAY[%L]::uuid[], '[2026-06-15 13:00Z,)', '30 minutes')$$, :'p1', :'dr'),
	'22023', 'window must be bounded on both sides', 'an unbounded window');
SELECT throws_ok(format($$SELECT schedphi.waitlist_add(%L, '{}'::uuid[], '[2026-06-15 13:00Z, 2026-06-15 15:00Z)', '30 minutes')$$, :'p1'),
	'22023', 'actors must name at least one actor', 'no actors');
SELECT throws_ok(format($$SELECT schedphi.waitlist_add(gen_random_uuid(), ARRAY[%L]::uuid[], '[2026-06-15 13:00Z, 2026-06-15 15:00Z)', '30 minutes')$$, :'dr'),
	'22023', 'unknown patient', 'an unknown patient');
SELECT throws_ok($$SELECT * FROM schedphi.waitlist_offers(gen_random_uuid())$$, '22023', NULL, 'offers for an unknown appointment');
SELECT is((SELECT count(*)::int FROM schedphi.waitlist WHERE tenant = :'tenant'), 6, 'refused calls changed nothing');

SELECT * FROM finish();
ROLLBACK;

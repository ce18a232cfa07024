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

-- Offers follow find_slots: a freed seat of a chair with two seats is
-- offered although the other seat stays booked ...
SELECT schedphi.book(:'p1', ARRAY[:'chair']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 15:00Z)') AS c1 \gset
SELECT schedphi.book(:'p2', ARRAY[:'chair']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 15:00Z)') AS c2 \gset
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'chair']::uuid[], '[2026-06-17 13:00Z, 2026-06-17 17:00Z)', '1 hour') AS wc \gset
SELECT schedphi.cancel(:'c2');
SELECT ok(:'wc' IN (SELECT waitlist FROM schedphi.waitlist_offers(:'c2')),
	'a freed seat is offered while the other seat of the chair stays booked');
SELECT schedphi.book(:'p3', ARRAY[:'chair']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 15:00Z)') IS NOT NULL AS rebooked;
SELECT is((SELECT count(*)::int FROM schedphi.waitlist_offers(:'c2')), 0, 'once both seats are taken again, nothing is offered');
-- ... time that a block has covered since is not ...
SELECT schedphi.book(:'p1', ARRAY[:'dr2']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)') AS d1 \gset
SELECT schedphi.waitlist_add(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-17 13:00Z, 2026-06-17 17:00Z)', '30 minutes') AS wd \gset
SELECT schedphi.cancel(:'d1');
SELECT ok(:'wd' IN (SELECT waitlist FROM schedphi.waitlist_offers(:'d1')), 'the freed half hour is offered');
SELECT schedphi.add_block(:'dr2', '[2026-06-17 13:00Z, 2026-06-17 16:00Z)', 'synthetic training') IS NOT NULL AS blocked;
SELECT is((SELECT count(*)::int FROM schedphi.waitlist_offers(:'d1')), 0, 'freed time that a block has covered since is not offered');
-- ... and an expired hold frees its time like a cancellation.
SELECT schedphi.hold(:'p1', ARRAY[:'room']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)', '1 second') AS h1 \gset
SELECT schedphi.waitlist_add(:'p2', ARRAY[:'room']::uuid[], '[2026-06-17 13:00Z, 2026-06-17 17:00Z)', '30 minutes') AS wr \gset
SELECT pg_sleep(1.2);
SELECT is((SELECT array_agg(waitlist) FROM schedphi.waitlist_offers(:'h1')), ARRAY[:'wr']::uuid[],
	'the time of an expired hold is offered');

SELECT * FROM finish();
ROLLBACK;

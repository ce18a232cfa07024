-- book() and hold() take a path in C (src/book.c) for the common case and
-- hand everything else to the PL/pgSQL reference,
-- schedphi._create_appointment.  Here the same requests -- good ones,
-- clashing ones, blocked, unavailable, across both DST changes, with
-- buffers, capacity, holds live and expired, waitlist entries, other
-- tenants' patients and actors, bad arguments, callers without the role --
-- go through both, each from the same state, and must end the same: the
-- same error (SQLSTATE and message), or the same rows and audit records.
BEGIN;
SELECT plan(22);
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS t2, dr AS t2dr, p1 AS t2p1 FROM tst.clinic('Europe/Berlin') \gset

CREATE ROLE tst_desk LOGIN;
CREATE ROLE tst_nurse LOGIN;
CREATE ROLE tst_stranger LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_desk', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_nurse', 'clinician', :'dr');

-- The state every request starts from: buffers, a block, bookings, a
-- live hold, an expired hold, waitlist entries.
SELECT schedphi.set_buffer(:'dr2', '10 minutes', '5 minutes');
SELECT schedphi.add_block(:'dr', '[2026-06-16 15:00Z, 2026-06-16 16:00Z)', 'synthetic meeting');
SELECT schedphi.book(:'p3', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)');
SELECT schedphi.book(:'p3', ARRAY[:'chair']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 15:00Z)');
SELECT schedphi.book(:'p3', ARRAY[:'dr2']::uuid[], '[2026-03-08 13:30Z, 2026-03-08 14:00Z)');
SELECT schedphi.book(:'p1', ARRAY[:'room', :'dr']::uuid[], '[2026-06-17 13:00Z, 2026-06-17 13:30Z)', 'followup',
					 'synthetic reason', 'synthetic-used');
SELECT schedphi.hold(:'p3', ARRAY[:'room']::uuid[], '[2026-06-15 15:00Z, 2026-06-15 15:30Z)');
SELECT schedphi.hold(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-15 16:00Z, 2026-06-15 16:30Z)') AS gone \gset
UPDATE schedphi.appointment_actor SET expires = now() - interval '1 minute' WHERE appointment = :'gone';
UPDATE schedphi.appointment SET hold_expires = now() - interval '1 minute' WHERE id = :'gone';
SELECT count(schedphi.book(:'p3', ARRAY[a]::uuid[], tstzrange(d + t, d + t + interval '30 minutes')))
FROM unnest(ARRAY[:'dr', :'room', :'chair', :'chair']::uuid[], ARRAY['19:00', '18:00', '17:00', '17:00']::time[]) AS x(a, t),
	 unnest(ARRAY[date '2026-06-15', '2026-06-16', '2026-06-17', '2026-11-01']) AS d;
SELECT schedphi.waitlist_add(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-15 13:00Z, 2026-06-18 00:00Z)', '15 minutes');
SELECT schedphi.waitlist_add(:'p3', ARRAY[:'room']::uuid[], '[2026-06-15 13:00Z, 2026-06-18 00:00Z)', '15 minutes');
SELECT schedphi.waitlist_add(:'p1', ARRAY[:'chair']::uuid[], '[2026-03-08 00:00Z, 2026-03-09 00:00Z)', '15 minutes');
SELECT schedphi.waitlist_add(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 21:00Z)', '30 minutes');
SELECT schedphi.waitlist_add(:'p2', ARRAY[:'room', :'chair']::uuid[], '[2026-06-17 13:00Z, 2026-06-17 21:00Z)', '30 minutes');

-- The requests: a fixed pseudo-random sample, mostly plausible.
SELECT setseed(0.42);
CREATE TABLE tst.req AS
SELECT n,
	   CASE WHEN n % 10 < 8 THEN 'tst_desk' WHEN n % 10 = 8 THEN 'tst_nurse' ELSE 'tst_stranger' END::name AS login,
	   (ARRAY[:'p1', :'p2', :'p3', :'p1', :'p2', :'p3', :'p1', :'p2', :'p3', :'t2p1',
			  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL]::uuid[])[1 + floor(random() * 12)::int] AS patient,
	   CASE WHEN random() < 0.6 THEN 1 + floor(random() * 7)::int ELSE 1 + floor(random() * 14)::int END AS pick,
	   (ARRAY[date '2026-06-15', '2026-06-16', '2026-06-17', '2026-03-08', '2026-11-01'])[1 + floor(random() * 5)::int]
		   + time '12:30' + floor(random() * 38) * interval '15 minutes' AS local_start,
	   (ARRAY[15, 30, 30, 45, 60, 15, 30, 0, 1500])[1 + floor(random() * 9)::int] AS minutes,
	   (ARRAY['routine', 'routine', 'CheckUp', 'followup', 'routine', 'walkin', 'bogus', NULL])[1 + floor(random() * 8)::int] AS kind,
	   (ARRAY[NULL, NULL, NULL, 'synthetic reason', 'synthetic reason', repeat('x', 2001)])[1 + floor(random() * 6)::int] AS reason,
	   (ARRAY['synthetic-key', 'synthetic-used'])[CASE WHEN random() < 0.12 THEN 1 + floor(random() * 2)::int END] AS key,
	   CASE WHEN random() < 0.2 THEN (ARRAY[interval '10 minutes', interval '1 hour', interval '10 minutes', interval '0'])[1 + floor(random() * 4)::int] END AS ttl
FROM generate_series(1, 400) n;
ALTER TABLE tst.req ADD COLUMN actors uuid[], ADD COLUMN during tstzrange;
UPDATE tst.req SET actors = CASE pick
		WHEN 1 THEN ARRAY[:'dr'] WHEN 2 THEN ARRAY[:'dr2'] WHEN 3 THEN ARRAY[:'room'] WHEN 4 THEN ARRAY[:'chair']
		WHEN 5 THEN ARRAY[:'dr', :'room'] WHEN 6 THEN ARRAY[:'chair', :'dr2'] WHEN 7 THEN ARRAY[:'room', :'chair', :'dr']
		WHEN 8 THEN ARRAY[:'dr', :'dr'] WHEN 9 THEN ARRAY[:'t2dr'] WHEN 10 THEN ARRAY[:'dr', :'t2dr']
		WHEN 11 THEN ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL] WHEN 12 THEN ARRAY[:'dr', :'dr2']
		WHEN 13 THEN '{}' END::uuid[],
	during = tstzrange(local_start AT TIME ZONE 'UTC', local_start AT TIME ZONE 'UTC' + minutes * interval '1 minute');
-- Retries of the booking made above with its key (one with the actors in
-- another order), and one more whose time differs.
INSERT INTO tst.req (n, login, patient, pick, local_start, minutes, kind, reason, key, actors, during)
SELECT 400 + i, 'tst_desk', :'p1', 0, NULL, 30, 'followup', 'synthetic reason', 'synthetic-used',
	   CASE WHEN i = 2 THEN ARRAY[:'dr', :'room'] ELSE ARRAY[:'room', :'dr'] END::uuid[],
	   CASE WHEN i = 4 THEN '[2026-06-17 13:15Z, 2026-06-17 13:45Z)' ELSE '[2026-06-17 13:00Z, 2026-06-17 13:30Z)' END::tstzrange
FROM generate_series(1, 4) i;
GRANT SELECT ON tst.req TO PUBLIC;

-- What a booking left behind: its rows (ids and times of writing aside),
-- what else is active, the waitlist, and the audit records written since.
CREATE FUNCTION tst.booking_state(v uuid, since bigint) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT jsonb_build_object(
		'appointment', (SELECT jsonb_build_object('tenant', a.tenant, 'patient', a.patient, 'actors', a.actors,
				'during', a.during, 'status', a.status, 'kind', a.kind, 'reason', pg_column_size(a.reason),
				'key', a.idempotency_key, 'digest', encode(a.request_digest, 'hex'),
				'hold', a.hold_expires - statement_timestamp())
			FROM schedphi.appointment a WHERE a.id = v),
		'rows', (SELECT jsonb_agg(jsonb_build_object('actor', x.actor, 'seat', x.seat, 'during', x.during,
				'span', x.span, 'active', x.active, 'expires', x.expires - statement_timestamp()) ORDER BY x.actor)
			FROM schedphi.appointment_actor x WHERE x.appointment = v),
		'active', (SELECT jsonb_agg(jsonb_build_object('actor', x.actor, 'seat', x.seat, 'span', x.span)
						ORDER BY x.actor, x.span, x.seat)
			FROM schedphi.appointment_actor x WHERE x.active AND x.appointment <> v),
		'waitlist', (SELECT jsonb_agg(w.status ORDER BY w.created_at) FROM schedphi.waitlist w),
		'audit', (SELECT jsonb_agg(jsonb_build_object('action', l.action, 'object', l.object, 'columns', l.columns,
				'login', l.login, 'role', l.role, 'tenant', l.tenant, 'patient', l.patient,
				'own', l.object_id = v) ORDER BY l.id)
			FROM schedphi.audit_log l WHERE l.id > since))
$$;

-- One request through one path: 'ok <state>' or 'SQLSTATE message', and
-- whether the reference ran.  Everything it did is rolled back.
CREATE FUNCTION tst.try_book(r tst.req, via text, OUT outcome text, OUT reference boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v uuid;
	since bigint := (SELECT coalesce(max(id), 0) FROM schedphi.audit_log);
	calls bigint := schedphi._book_fallbacks();
BEGIN
	BEGIN
		IF via = 'fast' AND r.ttl IS NULL THEN
			v := schedphi.book(r.patient, r.actors, r.during, r.kind, r.reason, r.key);
		ELSIF via = 'fast' THEN
			v := schedphi.hold(r.patient, r.actors, r.during, r.ttl);
		ELSIF r.ttl IS NULL THEN
			v := schedphi._create_appointment(r.patient, r.actors, r.during, 'booked', r.kind, r.reason, r.key, NULL);
		ELSE
			-- what hold() did before it had a path in C
			IF r.ttl IS NULL OR r.ttl <= interval '0' OR r.ttl > interval '1 day' THEN
				RAISE EXCEPTION 'ttl must be positive and at most one day' USING ERRCODE = '22023';
			END IF;
			v := schedphi._create_appointment(r.patient, r.actors, r.during, 'pending', 'routine', NULL, NULL,
											   statement_timestamp() + r.ttl);
		END IF;
		outcome := 'ok ' || tst.booking_state(v, since)::text;
		RAISE EXCEPTION USING ERRCODE = 'SPT00';
	EXCEPTION
		WHEN SQLSTATE 'SPT00' THEN NULL;
		WHEN OTHERS THEN outcome := SQLSTATE || ' ' || SQLERRM;
	END;
	reference := schedphi._book_fallbacks() > calls;
END
$$;

CREATE TABLE tst.outcome (n int, login text, fast text, fast_reference boolean, reference text);
GRANT INSERT ON tst.outcome TO PUBLIC;
CREATE FUNCTION tst.run_as_session_user() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r tst.req;
	f record;
	s record;
BEGIN
	FOR r IN SELECT * FROM tst.req WHERE login = session_user ORDER BY n LOOP
		f := tst.try_book(r, 'fast');
		s := tst.try_book(r, 'reference');
		INSERT INTO tst.outcome VALUES (r.n, r.login, f.outcome, f.reference, s.outcome);
	END LOOP;
END
$$;

SET SESSION AUTHORIZATION tst_desk;
SELECT tst.run_as_session_user();
SET SESSION AUTHORIZATION tst_nurse;
SELECT tst.run_as_session_user();
SET SESSION AUTHORIZATION tst_stranger;
SELECT tst.run_as_session_user();
RESET SESSION AUTHORIZATION;

SELECT is((SELECT count(*)::int FROM tst.outcome), 404, 'every request went through both paths');
SELECT is((SELECT count(*)::int FROM tst.outcome WHERE fast IS DISTINCT FROM reference), 0,
	'the path in C and the reference end the same for every request: same error, or same rows and audit records');
SELECT ok((SELECT count(*) FROM tst.outcome WHERE fast LIKE 'ok %' AND NOT fast_reference AND fast LIKE '%"status": "booked"%') >= 30,
	'the path in C booked on its own (without the reference)');
SELECT ok((SELECT count(*) FROM tst.outcome WHERE fast LIKE 'ok %' AND NOT fast_reference AND fast LIKE '%"status": "pending"%') >= 5,
	'the path in C held on its own');
SELECT ok((SELECT count(*) FROM tst.outcome WHERE fast LIKE '23P01 %' AND NOT fast_reference) >= 5,
	'the path in C found clashes and had them named by _raise_conflict, without the reference');
SELECT ok((SELECT count(*) FROM tst.outcome WHERE fast LIKE 'ok %' AND NOT fast_reference
		   AND fast LIKE '%"waitlist": ["booked"%') >= 1,
	'the path in C served a waitlist entry');
SELECT ok((SELECT count(*) FROM tst.outcome o JOIN tst.req r USING (n)
		   WHERE o.fast LIKE 'ok %' AND NOT o.fast_reference AND :'dr2' = ANY (r.actors)
			 AND r.during && '[2026-06-15 15:45Z, 2026-06-15 16:45Z)') >= 1
	OR NOT EXISTS (SELECT 1 FROM tst.req r WHERE r.login = 'tst_desk' AND :'dr2' = ANY (r.actors)
				   AND r.during && '[2026-06-15 15:45Z, 2026-06-15 16:45Z)'),
	'the path in C booked over an expired hold');
SELECT ok((SELECT count(*) FROM tst.outcome o JOIN tst.req r USING (n)
		   WHERE r.key = 'synthetic-key' AND o.fast LIKE 'ok %' AND NOT o.fast_reference) >= 3,
	'the path in C booked with a new idempotency key, with the digest the reference writes');
SELECT ok((SELECT count(*) FROM tst.outcome o JOIN tst.req r USING (n)
		   WHERE n > 400 AND n < 404 AND o.fast LIKE 'ok %' AND NOT o.fast_reference) = 3,
	'the path in C answered retries with the first booking''s id');
SELECT ok((SELECT count(*) FROM tst.outcome o JOIN tst.req r USING (n)
		   WHERE r.key = 'synthetic-used' AND o.fast LIKE '22023 idempotency_key was already used%'
			 AND NOT o.fast_reference AND n = 404) = 1,
	'the path in C refused a used key for another booking');
SELECT ok((SELECT count(DISTINCT left(fast, 5)) FROM tst.outcome WHERE fast NOT LIKE 'ok %') >= 3,
	'refusals of several kinds were compared (22023, 23P01, 42501)');
SELECT ok((SELECT count(*) FROM tst.outcome WHERE login <> 'tst_desk' AND fast LIKE '42501 %') >= 10,
	'callers without the role are refused the same way on both paths');

-- Both paths make appointment ids the same way: version 7 UUIDs, the
-- millisecond they were made first, so later ids sort after earlier ones.
SET SESSION AUTHORIZATION tst_desk;
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-22 14:00Z, 2026-06-22 14:30Z)') AS v7a \gset
SELECT pg_sleep(0.003);
RESET SESSION AUTHORIZATION;
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-22 15:00Z, 2026-06-22 15:30Z)') AS v7b \gset
SELECT pg_sleep(0.003);
SET SESSION AUTHORIZATION tst_desk;
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-22 16:00Z, 2026-06-22 16:30Z)') AS v7c \gset
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM unnest(ARRAY[:'v7a', :'v7b', :'v7c']::uuid[]) id
		   WHERE substr(id::text, 15, 1) = '7' AND substr(id::text, 20, 1) IN ('8', '9', 'a', 'b')), 3,
	'appointment ids are version 7 UUIDs with the RFC 9562 variant, on both paths');
SELECT is((SELECT count(*)::int FROM schedphi.appointment a
		   WHERE a.id = ANY (ARRAY[:'v7a', :'v7b', :'v7c']::uuid[])
			 AND to_timestamp(('x' || replace(left(a.id::text, 13), '-', ''))::bit(48)::bigint / 1000.0)
				 BETWEEN a.created_at - interval '1 millisecond' AND clock_timestamp()), 3,
	'each id begins with the millisecond it was made');
SELECT ok(:'v7a'::uuid < :'v7b'::uuid AND :'v7b'::uuid < :'v7c'::uuid,
	'ids made later sort after earlier ones (C path, reference, C path)');

-- An EHR's bookings (HL7 v2, FHIR) take their seats on a path in C too
-- (_ehr_reserve: no availability, no blocks, only a clash refuses), and
-- must end as the reference, _reserve(..., p_rules => false), ends: the
-- same requests, each from the same state, through _ehr_create and through
-- the reference.
CREATE FUNCTION tst.try_ehr(r tst.req, p_tenant uuid, via text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	v uuid;
	outcome text;
BEGIN
	BEGIN
		IF via = 'fast' THEN
			v := schedphi._ehr_create(p_tenant, r.patient, r.actors, r.during, 'booked', 'routine', NULL);
		ELSE
			v := schedphi._appointment_id();
			-- (the time is checked first, as _ehr_create does)
			IF r.during IS NULL OR isempty(r.during) OR lower_inf(r.during) OR upper_inf(r.during) THEN
				RAISE EXCEPTION 'an appointment needs a start and a later end' USING ERRCODE = '22023';
			END IF;
			INSERT INTO schedphi.appointment (tenant, id, patient, actors, during, status, kind)
			VALUES (p_tenant, v, r.patient, r.actors, r.during, 'booked', 'routine');
			IF via = 'probe' THEN
				outcome := 'probe ' || coalesce(schedphi._ehr_reserve(p_tenant, v, r.actors, r.during)::text, 'null');
				RAISE EXCEPTION USING ERRCODE = 'SPT00';
			END IF;
			PERFORM schedphi._reserve(p_tenant, v, r.actors, r.during, NULL, false);
		END IF;
		outcome := 'ok ' || coalesce((SELECT jsonb_agg(jsonb_build_object('actor', x.actor, 'seat', x.seat,
				'during', x.during, 'span', x.span, 'active', x.active, 'expires', x.expires) ORDER BY x.actor)
			FROM schedphi.appointment_actor x WHERE x.appointment = v)::text, 'no rows')
			|| ' released ' || (SELECT count(*) FROM schedphi.appointment_actor x WHERE NOT x.active);
		RAISE EXCEPTION USING ERRCODE = 'SPT00';
	EXCEPTION
		WHEN SQLSTATE 'SPT00' THEN NULL;
		WHEN OTHERS THEN outcome := SQLSTATE || ' ' || SQLERRM;
	END;
	RETURN outcome;
END
$$;
CREATE TABLE tst.ehr_outcome AS
SELECT r.n, tst.try_ehr(r, :'tenant', 'fast') AS fast, tst.try_ehr(r, :'tenant', 'reference') AS reference,
	   tst.try_ehr(r, :'tenant', 'probe') AS probe
FROM tst.req r ORDER BY r.n;
SELECT is((SELECT count(*)::int FROM tst.ehr_outcome WHERE fast IS DISTINCT FROM reference), 0,
	'an EHR''s booking ends the same on the path in C and on the reference: same error, or the same seats and spans');
SELECT ok((SELECT count(*) FROM tst.ehr_outcome WHERE probe = 'probe true') >= 30
		  AND (SELECT count(*) FROM tst.ehr_outcome WHERE probe = 'probe false' AND reference LIKE 'ok %') >= 5,
	'the path in C took the seats of many EHR bookings itself, and handed others (several seats, expired holds) back');
SELECT ok((SELECT count(*) FROM tst.ehr_outcome WHERE fast LIKE '23P01 %') >= 5
		  AND (SELECT count(*) FROM tst.ehr_outcome WHERE fast LIKE 'ok %' AND fast LIKE '%"active": false%') = 0,
	'EHR bookings that clash were refused (23P01) the same way on both paths');
SELECT diag(format('EHR request %s: fast %s / reference %s', n, left(fast, 300), left(reference, 300)))
FROM tst.ehr_outcome WHERE fast IS DISTINCT FROM reference ORDER BY n LIMIT 5;

-- The path in C writes in a subtransaction and lets the exclusion
-- constraint decide.  A write it refuses (here an expired hold in the way)
-- is undone alone: what the caller's transaction did before stays, the
-- booking is then made on the careful path without the reference, and the
-- refused attempt leaves no row and no audit record behind.
SET SESSION AUTHORIZATION tst_desk;
SELECT schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-23 14:00Z, 2026-06-23 14:30Z)') AS first_one \gset
RESET SESSION AUTHORIZATION;
SELECT schedphi.hold(:'p3', ARRAY[:'dr2']::uuid[], '[2026-06-23 16:00Z, 2026-06-23 16:30Z)') AS old_hold \gset
UPDATE schedphi.appointment_actor SET expires = now() - interval '1 minute' WHERE appointment = :'old_hold';
UPDATE schedphi.appointment SET hold_expires = now() - interval '1 minute' WHERE id = :'old_hold';
SELECT schedphi._book_fallbacks() AS fallbacks_before, (SELECT max(id) FROM schedphi.audit_log) AS audit_before \gset
SET SESSION AUTHORIZATION tst_desk;
SELECT schedphi.book(:'p2', ARRAY[:'dr2']::uuid[], '[2026-06-23 16:00Z, 2026-06-23 16:30Z)') AS over_hold \gset
SELECT throws_like(format('SELECT schedphi.book(%L, ARRAY[%L]::uuid[], %L)', :'p1', :'dr2',
							'[2026-06-23 14:15Z, 2026-06-23 14:45Z)'),
	'booking conflict: % is busy during %',
	'a seat taken is named by _raise_conflict on the path in C, not by the constraint''s own message');
RESET SESSION AUTHORIZATION;
SELECT is(schedphi._book_fallbacks() - :fallbacks_before, 0::bigint,
	'the booking over the expired hold and the clash were settled without the reference');
SELECT is((SELECT jsonb_build_object('first', (SELECT count(*) FROM schedphi.appointment WHERE id = :'first_one'),
			'over', (SELECT count(*) FROM schedphi.appointment_actor x WHERE x.appointment = :'over_hold' AND x.active),
			'hold', (SELECT count(*) FROM schedphi.appointment_actor x WHERE x.appointment = :'old_hold' AND x.active),
			'records', (SELECT jsonb_agg(l.object_id = :'over_hold' ORDER BY l.id) FROM schedphi.audit_log l
						WHERE l.id > :audit_before AND l.object = 'appointment'))),
	jsonb_build_object('first', 1, 'over', 1, 'hold', 0, 'records', jsonb_build_array(true)),
	'after a refused write: the earlier booking stays, the new one holds its seat, the hold is released, one audit record');

SELECT throws_ok(format('SELECT schedphi._ehr_create(%L, %L, ARRAY[%L]::uuid[], %L, ''booked'', ''routine'', NULL)',
						 :'tenant', :'p1', :'dr', 'empty'),
	'22023', 'an appointment needs a start and a later end',
	'an EHR appointment with no time is refused with 22023, not a constraint''s 23502');

-- The first few differences, if any, to read in the test log.
SELECT diag(format('request %s (%s): fast %s / reference %s', n, login, left(fast, 300), left(reference, 300)))
FROM tst.outcome WHERE fast IS DISTINCT FROM reference ORDER BY n LIMIT 5;

SELECT * FROM finish();
ROLLBACK;

#!/usr/bin/env bash
# Concurrency: 8 clients (pgbench) race for the same 30 slots across two
# actors (a practitioner and a room, booked alone or together) while others
# cancel, for several seconds.  Afterwards: no two active bookings of one
# actor overlap, every booked appointment holds all of its actors, every
# refusal was a 23P01, and idempotent retries racing each other booked once.
# Six clients are a scheduler member (book() in C, src/book.c) and two a
# superuser (the PL/pgSQL reference path): both paths race each other.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
# RACE_CITUS=1 (test/citus.sh): the race runs in RACE_DB (default postgres)
# of a Citus coordinator, where schedphi is installed and distributed
# already, and only the race's own schema is made and dropped.
set -euo pipefail

citus=${RACE_CITUS:-}
db=${RACE_DB:-schedphi_race}
[ -n "$citus" ] && db=${RACE_DB:-postgres}
seconds=${RACE_SECONDS:-6}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

if [ -n "$citus" ]; then
	PGOPTIONS="-c client_min_messages=warning" psql -X -q -d "$db" -c "DROP SCHEMA IF EXISTS race CASCADE" \
		-c "DROP ROLE IF EXISTS race_desk" -c "CREATE ROLE race_desk LOGIN" >/dev/null
else
	PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "DROP ROLE IF EXISTS race_desk" -c "CREATE ROLE race_desk LOGIN" \
		-c "CREATE DATABASE $db" >/dev/null
	q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
fi
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE SCHEMA race;
CREATE TABLE race.cfg (tenant uuid, dr uuid, room uuid, dr2 uuid);
CREATE TABLE race.patient (n int PRIMARY KEY, id uuid);
CREATE TABLE race.outcome (kind text, state text);
CREATE TABLE race.retried (k int, id uuid);
DO $$
DECLARE
	t uuid := schedphi.create_tenant('Race Clinic', 'America/New_York');
	l uuid := schedphi.add_location(t, 'Race site', 'America/New_York');
	dr uuid := schedphi.add_practitioner(t, 'Dr Race Synthetic');
	room uuid := schedphi.add_resource(t, 'room', 'Race room', 1, l);
	dr2 uuid := schedphi.add_practitioner(t, 'Dr Retry Synthetic');
	a uuid;
BEGIN
	FOREACH a IN ARRAY ARRAY[dr, room, dr2] LOOP
		PERFORM schedphi.add_availability(a, l, '{1,2,3,4,5,6,7}', '09:00', '17:00', daterange('2026-01-01', NULL));
	END LOOP;
	INSERT INTO race.cfg VALUES (t, dr, room, dr2);
	PERFORM schedphi.add_member(t, 'race_desk', 'scheduler');
	INSERT INTO race.patient
		SELECT n, schedphi.register_patient(t, 'Racer', 'Synthetic' || n, date '1980-01-01' + n) FROM generate_series(1, 40) n;
END $$;

-- slot s (0..29): half-hour slots, 16 on Monday 2026-06-15 and 14 on the Tuesday
CREATE FUNCTION race.slot(s int) RETURNS tstzrange LANGUAGE sql IMMUTABLE AS $$
	SELECT tstzrange(ts, ts + interval '30 minutes')
	FROM (SELECT CASE WHEN s < 16 THEN timestamptz '2026-06-15 13:00Z' + s * interval '30 minutes'
					  ELSE timestamptz '2026-06-16 13:00Z' + (s - 16) * interval '30 minutes' END AS ts) x
$$;

CREATE FUNCTION race.try_book(s int, which int, p int) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c race.cfg := (SELECT c FROM race.cfg c);
BEGIN
	PERFORM schedphi.book((SELECT id FROM race.patient WHERE n = p),
		CASE which WHEN 0 THEN ARRAY[c.dr] WHEN 1 THEN ARRAY[c.room] ELSE ARRAY[c.dr, c.room] END,
		race.slot(s));
	INSERT INTO race.outcome VALUES ('book', '00000');
EXCEPTION WHEN OTHERS THEN
	INSERT INTO race.outcome VALUES ('book', SQLSTATE);
END $$;

CREATE FUNCTION race.try_cancel() RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	a uuid := (SELECT id FROM schedphi.appointment
			   WHERE tenant = (SELECT c.tenant FROM race.cfg c) AND status = 'booked' AND idempotency_key IS NULL
			   ORDER BY random() LIMIT 1);
BEGIN
	IF a IS NOT NULL THEN
		PERFORM schedphi.cancel(a);
		INSERT INTO race.outcome VALUES ('cancel', '00000');
	END IF;
EXCEPTION WHEN OTHERS THEN
	INSERT INTO race.outcome VALUES ('cancel', SQLSTATE);
END $$;

CREATE FUNCTION race.try_retry(k int) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c race.cfg := (SELECT c FROM race.cfg c);
	v uuid;
BEGIN
	v := schedphi.book((SELECT id FROM race.patient WHERE n = k), ARRAY[c.dr2], race.slot(k),
					   idempotency_key => 'retry-' || k);
	INSERT INTO race.outcome VALUES ('retry', '00000');
	INSERT INTO race.retried VALUES (k, v);
EXCEPTION WHEN OTHERS THEN
	INSERT INTO race.outcome VALUES ('retry', SQLSTATE);
END $$;
GRANT USAGE ON SCHEMA race TO race_desk;
SQL

cat >"$work/book.sql" <<'EOF2'
\set s random(0, 29)
\set w random(0, 2)
\set p random(1, 40)
SELECT race.try_book(:s, :w, :p);
EOF2
cat >"$work/cancel.sql" <<'EOF2'
SELECT race.try_cancel();
EOF2
cat >"$work/retry.sql" <<'EOF2'
\set k random(1, 29)
SELECT race.try_retry(:k);
EOF2

echo "race: 8 clients for ${seconds}s over 30 slots and 2 actors, with cancellations"
pgbench -n -U postgres -c 2 -j 1 -T "$seconds" -f "$work/book.sql@9" -f "$work/cancel.sql@1" "$db" \
	>"$work/pgbench-su.txt" 2>&1 &
su_pid=$!
pgbench -n -U race_desk -c 6 -j 1 -T "$seconds" -f "$work/book.sql@9" -f "$work/cancel.sql@1" "$db" \
	>"$work/pgbench.txt" 2>&1 || {
	cat "$work/pgbench.txt"
	echo "race: pgbench failed"
	exit 1
}
wait "$su_pid" || {
	cat "$work/pgbench-su.txt"
	echo "race: pgbench (superuser clients) failed"
	exit 1
}
grep -E "number of transactions actually processed|tps = " "$work/pgbench.txt" | sed 's/^/race: scheduler clients: /'
grep -E "number of transactions actually processed|tps = " "$work/pgbench-su.txt" | sed 's/^/race: superuser clients: /'
echo "race: 8 clients (6 in C, 2 through the reference) retrying 29 idempotent bookings"
pgbench -n -U postgres -c 2 -j 1 -t 40 -f "$work/retry.sql" "$db" >"$work/pgbench2-su.txt" 2>&1 &
su_pid=$!
pgbench -n -U race_desk -c 6 -j 1 -t 40 -f "$work/retry.sql" "$db" >"$work/pgbench2.txt" 2>&1 || {
	cat "$work/pgbench2.txt"
	echo "race: pgbench (retries) failed"
	exit 1
}
wait "$su_pid" || {
	cat "$work/pgbench2-su.txt"
	echo "race: pgbench (superuser retries) failed"
	exit 1
}

fail=0
check() {
	local what=$1 got=$2 want=$3
	if [ "$got" = "$want" ]; then
		echo "race: ok - $what"
	else
		echo "race: NOT OK - $what (got $got, want $want)"
		fail=1
	fi
}

q -c "SELECT kind, state, count(*) FROM race.outcome GROUP BY 1, 2 ORDER BY 1, 2" | sed 's/^/race: outcome /'
check "no two active bookings of one actor overlap" "$(q -c "
	SELECT count(*) FROM schedphi.appointment_actor a JOIN schedphi.appointment_actor b
	  ON a.tenant = b.tenant AND a.actor = b.actor AND a.appointment < b.appointment
	WHERE a.active AND b.active AND a.span && b.span")" 0
check "every booked appointment holds all of its actors" "$(q -c "
	SELECT count(*) FROM schedphi.appointment ap
	WHERE ap.status = 'booked' AND cardinality(ap.actors) <>
		  (SELECT count(*) FROM schedphi.appointment_actor x
		   WHERE x.tenant = ap.tenant AND x.appointment = ap.id AND x.active)")" 0
check "no cancelled appointment holds an actor" "$(q -c "
	SELECT count(*) FROM schedphi.appointment ap
	JOIN schedphi.appointment_actor x ON x.tenant = ap.tenant AND x.appointment = ap.id
	WHERE ap.status = 'cancelled' AND x.active")" 0
check "every refused booking was a 23P01" "$(q -c "
	SELECT count(*) FROM race.outcome WHERE kind = 'book' AND state NOT IN ('00000', '23P01')")" 0
check "bookings both succeeded and collided" "$(q -c "
	SELECT count(DISTINCT state) FROM race.outcome WHERE kind = 'book'")" 2
check "cancellations only ever lost a race with 55000" "$(q -c "
	SELECT count(*) FROM race.outcome WHERE kind = 'cancel' AND state NOT IN ('00000', '55000')")" 0
check "idempotent retries never failed" "$(q -c "
	SELECT count(*) FROM race.outcome WHERE kind = 'retry' AND state <> '00000'")" 0
check "idempotent retries booked each key once" "$(q -c "
	SELECT count(*) = count(DISTINCT idempotency_key) AND count(*) BETWEEN 1 AND 29
	FROM schedphi.appointment WHERE idempotency_key LIKE 'retry-%'")" t
check "every retry of a key got the same appointment" "$(q -c "
	SELECT count(*) FROM (SELECT k FROM race.retried GROUP BY k HAVING count(DISTINCT id) > 1) x")" 0
check "all 320 retries answered" "$(q -c "SELECT count(*) FROM race.retried")" 320

if [ -n "$citus" ]; then
	q -c "DROP SCHEMA race CASCADE" >/dev/null 2>&1
else
	psql -X -q -c "DROP DATABASE $db" -c "DROP ROLE race_desk" >/dev/null
fi
exit $fail

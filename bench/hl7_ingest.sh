#!/usr/bin/env bash
# hl7_ingest throughput (issue #14: at least 2,000 SIU messages/s with 4
# clients on this machine, p99 under 10 ms), measured in the database
# (pgbench calling hl7_ingest, as the agent will), and book() of the same
# kind of booking with the same clients in the same run, for the ratio.  Each message is an S12 for one of
# 2,000 synthetic patients (registered by their first messages, during the
# warm-up) with one of 50 practitioners (made by their first messages) at a
# random quarter hour of the next eight years, so nearly every one books.
# Prints figures; never part of CI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
DB=schedphi_bench_hl7
SECS=${BENCH_HL7_SECONDS:-15}
CLIENTS=${BENCH_HL7_CLIENTS:-4}

bench_cluster
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
psql -X -q -c "CREATE ROLE bench_engine LOGIN" >/dev/null 2>&1 || true
bench_load /dev/null
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
T=$(q -c "SELECT schedphi.create_tenant('HL7 Bench Clinic', 'America/Chicago')")
q -c "SET client_min_messages = warning" -c "SELECT schedphi.add_member('$T', 'bench_engine', 'integration')" \
	-c "SELECT schedphi.add_hl7_sender('$T', 'BENCHEHR', 'BENCHFAC', 'America/Chicago')" >/dev/null

cat >"$out/s12.pgbench" <<'PGB'
\set n random(1, 2000000000)
\set p random(1, 2000)
\set dr random(1, 50)
\set q random(0, 280000)
SELECT schedphi.hl7_ingest(format(E'MSH|^~\\&|BENCHEHR|BENCHFAC|SCHEDPHI|C|20260301120000||SIU^S12^SIU_S12|B%s|P|2.5.1\rSCH||BF%s|||||ROUTINE|NORMAL|15|min|^^15^%s||||||||||||||Booked\rPID|1||BM%s^^^BENCHEHR^MR||Benchsynthetic^Pat||19800101|F\rRGS|1|A\rAIP|1|A|DR%s^Bench^Dr|ATTENDING||||||15|min\r', :n::bigint, :n::bigint, to_char(timestamp '2027-01-04 00:00' + :q::int * interval '15 minutes', 'YYYYMMDDHH24MI'), :p::int, :dr::int));
PGB
chmod 644 "$out/s12.pgbench"

# warm-up: patients and practitioners made by their first messages
pgb warm bench_engine -c "$CLIENTS" -j 2 -T 10 -f "$out/s12.pgbench"
q -c "VACUUM ANALYZE" >/dev/null
mark=$(q -c "SELECT coalesce(max(id), 0) FROM schedphi.audit_log")
pgb s12 bench_engine -c "$CLIENTS" -j 2 -T "$SECS" -f "$out/s12.pgbench" -l --log-prefix="$out/s12lat"
s12_tps=$TPS
read -r p50 p99 < <(cat "$out"/s12lat.* | awk '{print $3}' | sort -n |
	awk '{v[NR] = $1} END {if (NR) printf "%.2f %.2f\n", v[int(NR * 0.5)] / 1000, v[int(NR * 0.99)] / 1000; else print "? ?"}')
outcomes=$(q -c "SELECT string_agg(o || ' ' || n, ', ' ORDER BY o) FROM (SELECT detail->>'outcome' AS o, count(*) AS n
	FROM schedphi.audit_log WHERE id > $mark AND action = 'hl7_in' GROUP BY 1) x")

# the same bookings through book(), same clients: the practitioners the
# messages made get a location and availability around the clock first
L=$(q -c "SELECT schedphi.add_location('$T', 'Bench site', 'America/Chicago')")
q -c "SET client_min_messages = warning" -c "SELECT schedphi.add_member('$T', 'bench_engine', 'scheduler')" \
	-c "SELECT count(schedphi.add_availability(e.target, '$L', '{1,2,3,4,5,6,7}', '00:00', '24:00',
			daterange('2026-01-01', NULL), 15)) FROM schedphi.external_id e WHERE e.tenant = '$T'" >/dev/null
q -c "CREATE TABLE public.bp AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM schedphi.patient WHERE tenant = '$T'" \
	-c "CREATE TABLE public.bd AS SELECT row_number() OVER (ORDER BY target) AS n, target AS id FROM schedphi.external_id WHERE tenant = '$T'" \
	-c "GRANT SELECT ON public.bp, public.bd TO bench_engine" >/dev/null
# (a clash is answered, not fatal, as hl7_ingest answers it AE)
q -c "CREATE FUNCTION public.try_book(p uuid, a uuid[], d tstzrange) RETURNS uuid LANGUAGE plpgsql AS \$f\$
	BEGIN RETURN schedphi.book(p, a, d); EXCEPTION WHEN exclusion_violation THEN RETURN NULL; END \$f\$" >/dev/null
np=$(q -c "SELECT count(*) FROM public.bp"); nd=$(q -c "SELECT count(*) FROM public.bd")
cat >"$out/book.pgbench" <<PGB
\\set p random(1, $np)
\\set dr random(1, $nd)
\\set q random(290000, 560000)
SELECT public.try_book((SELECT id FROM public.bp WHERE n = :p), ARRAY[(SELECT id FROM public.bd WHERE n = :dr)],
	tstzrange(timestamptz '2027-01-04 06:00Z' + :q::int * interval '15 minutes', timestamptz '2027-01-04 06:15Z' + :q::int * interval '15 minutes'));
PGB
chmod 644 "$out/book.pgbench"
pgb book bench_engine -c "$CLIENTS" -j 2 -T "$SECS" -f "$out/book.pgbench"
book_tps=$TPS

# the floor of the data model: the rows an accepted S12 writes (the
# appointment and its seat, with the triggers every booking fires; the
# EHR's id; the message's digest and ACK; its record on the ledger),
# inserted directly in one statement by a superuser, nothing read or
# checked; each client at times of its own, so nothing clashes
S=$(q -c "SELECT id FROM schedphi.hl7_sender WHERE tenant = '$T'")
cat >"$out/rows.pgbench" <<PGB
\\set n :n + 1
\\set p random(1, $np)
\\set dr random(1, $nd)
\\set q 600000 + :client_id * 100000 + :n
WITH ap AS (
	INSERT INTO schedphi.appointment (tenant, patient, actors, during, status, kind)
	SELECT '$T'::uuid, (SELECT id FROM public.bp WHERE n = :p), ARRAY[d.id],
		   tstzrange(timestamptz '2027-01-04 06:00Z' + :q::int * interval '15 minutes',
					 timestamptz '2027-01-04 06:15Z' + :q::int * interval '15 minutes'), 'booked', 'routine'
	FROM public.bd d WHERE d.n = :dr
	RETURNING tenant, id, actors[1] AS actor, during),
aa AS (INSERT INTO schedphi.appointment_actor (tenant, appointment, actor, seat, during, span)
	SELECT tenant, id, actor, 1, during, during FROM ap),
ar AS (INSERT INTO schedphi.appointment_ref (tenant, system, value, appointment)
	SELECT tenant, 'hl7' || ':' || '$S' || ':' || 'filler', 'RF' || :client_id::int || '-' || :n::int, id FROM ap),
hm AS (INSERT INTO schedphi.hl7_message (tenant, sender, control_id, digest, event, appointment, ack)
	SELECT tenant, '$S', 'R' || :client_id::int || '-' || :n::int, sha256(id::text::bytea), 'S12', id, repeat('x', 160) FROM ap
	RETURNING appointment)
SELECT schedphi._audit_change('hl7_in', '$T'::uuid, 'hl7_message', appointment, NULL,
	'{"outcome": "AA", "applied": "booked"}') FROM hm;
PGB
chmod 644 "$out/rows.pgbench"
pgb rows postgres -c "$CLIENTS" -j 2 -T "$SECS" -D n=0 -f "$out/rows.pgbench"
rows_tps=$TPS
# and the same without the trigger that derives the analytics row (what
# the floor would be were that row written elsewhere); last, as it changes
# the database
q -c "ALTER TABLE schedphi.appointment DISABLE TRIGGER deid_insert" >/dev/null
pgb rows_nodeid postgres -c "$CLIENTS" -j 2 -T "$SECS" -D n=50000 -f "$out/rows.pgbench"
nodeid_tps=$TPS
# and the bare rows: the analytics row inserted directly with the others
# (its values made up, not derived), and every trigger that does not write
# a row of the data model off (the outbox and reminder look-ups, the
# analytics class check); the ledger's own trigger stays.  What is left is
# the rows, their indexes and constraints, the WAL and the commit: no
# PL/pgSQL at all.
ad=$(cat <<'SQL'
RETURNING tenant, id, patient, actors[1] AS actor, during),
ad AS (INSERT INTO schedphi.appointment_deid (tenant, appointment, patient, patient_token, visit_year, age, zip5,
		status, kind, starts, ends, local_date, booked_at, practitioner, actor_kinds)
	SELECT tenant, id, patient, patient, 2027, 40, '60601', 'booked', 'routine', lower(during), upper(during),
		CAST(lower(during) AS date), now(), actor, ARRAY['practitioner'] FROM ap)
SQL
)
rows_sql=$(cat "$out/rows.pgbench")
printf '%s\n' "${rows_sql/"RETURNING tenant, id, actors[1] AS actor, during)"/"$ad"}" >"$out/bare.pgbench"
grep -q '^ad AS' "$out/bare.pgbench" || { echo "bench: bare.pgbench was not made from rows.pgbench" >&2; exit 1; }
chmod 644 "$out/bare.pgbench"
q -c "ALTER TABLE schedphi.appointment DISABLE TRIGGER hl7_outbox_insert" \
	-c "ALTER TABLE schedphi.appointment DISABLE TRIGGER messages_insert" \
	-c "ALTER TABLE schedphi.appointment_deid DISABLE TRIGGER deid_class_insert" >/dev/null
counts="SELECT (SELECT count(*) FROM schedphi.appointment) || ' ' || (SELECT count(*) FROM schedphi.appointment_deid)"
read -r ap0 ad0 < <(q -c "$counts")
pgb bare postgres -c "$CLIENTS" -j 2 -T "$SECS" -D n=25000 -f "$out/bare.pgbench"
bare_tps=$TPS
read -r ap1 ad1 < <(q -c "$counts")

echo
echo "| measure | figure | ratio | goal |"
echo "|---|---|---|---|"
echo "| hl7_ingest, S12, $CLIENTS clients (messages/s) | $(f '%.0f' "$s12_tps") | | >= 2,000: $(verdict "${s12_tps:-}" '>=' 2000) |"
echo "| its latency p50 / p99 (ms) | $p50 / $p99 | | p99 < 10 ms: $(verdict "$p99" '<' 10) |"
echo "| book() of the same bookings, same clients (bookings/s) | $(f '%.0f' "$book_tps") | $(ratio "$s12_tps" "$book_tps") x (hl7_ingest / book) | |"
echo "| the rows an accepted S12 writes, inserted directly, same clients (floor of the data model) | $(f '%.0f' "$rows_tps") | $(ratio "$s12_tps" "$rows_tps") x (hl7_ingest / rows) | |"
echo "| the same rows without the analytics row's trigger | $(f '%.0f' "$nodeid_tps") | $(ratio "$s12_tps" "$nodeid_tps") x (hl7_ingest / these rows) | |"
echo "| the bare rows: the same and the analytics row inserted directly, no PL/pgSQL | $(f '%.0f' "$bare_tps") | $(ratio "$s12_tps" "$bare_tps") x (hl7_ingest / bare rows) | |"
echo "| appointments / analytics rows the bare run wrote | $((ap1 - ap0)) / $((ad1 - ad0)) | | |"
echo "| outcomes on the ledger | ${outcomes:-?} | | |"
echo "bench: hl7 ingest done"

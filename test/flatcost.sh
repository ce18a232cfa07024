#!/usr/bin/env bash
# Cost per call stays flat in a new database's first session (issue #12):
# plans made while the tables were empty must not read more rows with
# every row the session adds.  One session, right after CREATE EXTENSION,
# with autovacuum off for schedphi's tables (nothing re-plans behind our
# back): it registers patients in three statements, books, holds and
# confirms, reschedules, cancels, changes statuses and reads records;
# afterwards the rows read from the tables and their indexes per call are
# counted.  A plan that filters
# the tenant's rows instead of using the right index reads thousands per
# call by the end; a flat one reads a handful.  Timings are printed, not
# judged (this machine is noisy); rows read are judged.
# FLATCOST_VACUUM=1 runs the same after a VACUUM ANALYZE of the new
# database (its tables then say they are empty, and plans made from that
# must still use their indexes as the tables fill).
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -uo pipefail

db=schedphi_flatcost
n=${FLATCOST_N:-1500}
fail=0
count=0
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
tag=
[ "${FLATCOST_VACUUM:-0}" = 1 ] && tag=" (after VACUUM ANALYZE of the new database)"
ok() {
	count=$((count + 1))
	if [ "$2" = "$3" ]; then echo "flatcost: ok - $1$tag"; else echo "flatcost: NOT OK - $1$tag (got '$2', want '$3')"; fail=1; fi
}

psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "DROP ROLE IF EXISTS fc_desk" -c "CREATE ROLE fc_desk LOGIN" \
	-c "CREATE DATABASE $db" >/dev/null 2>&1

# The session that installs the extension does all the work, as a new
# deployment's first import would.
out=$(q 2>&1 <<SQL
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
DO \$\$
DECLARE
	r regclass;
BEGIN
	FOR r IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind = 'r' LOOP
		EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', r);
	END LOOP;
END \$\$;
SELECT schedphi.create_tenant('Flat Cost Clinic', 'UTC') AS t \gset
SELECT schedphi.add_location(:'t', 'Flat site', 'UTC') AS l \gset
SELECT schedphi.add_member(:'t', 'fc_desk', 'scheduler');
CREATE TEMP TABLE drs AS
	SELECT g, schedphi.add_practitioner(:'t', 'Dr Flat ' || g) AS dr FROM generate_series(1, 20) g;
SELECT count(schedphi.add_availability(dr, :'l', '{1,2,3,4,5,6,7}', '00:00', '24:00', daterange('2026-01-01', NULL), 15))
FROM drs;
$([ "${FLATCOST_VACUUM:-0}" = 1 ] && echo "VACUUM ANALYZE;")
-- what the session made, kept here so that nothing reads the tables to find it
CREATE TEMP TABLE pats (n int, id uuid);
CREATE TEMP TABLE appts (n int, id uuid);
GRANT ALL ON drs, pats, appts TO fc_desk;
SET SESSION AUTHORIZATION fc_desk;
\timing on
-- patients in three statements, and bookings between them (plans made on
-- nearly empty tables, used on fuller ones): book, then hold and confirm
INSERT INTO pats SELECT g, schedphi.register_patient(:'t', 'Flat', 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-01' || lpad(g::text, 5, '0'), 'flat' || g || '@example.org', 'FC-' || g, '02139')
FROM generate_series(1, $n) g;
INSERT INTO appts SELECT gs.i, schedphi.book(p.id, ARRAY[d.dr], tstzrange(s, s + interval '15 minutes'))
FROM generate_series(1, $n / 2) gs(i) JOIN pats p ON p.n = gs.i JOIN drs d ON d.g = gs.i % 20 + 1
CROSS JOIN LATERAL (SELECT timestamptz '2027-01-04 00:00Z' + (gs.i / 20) * interval '15 minutes' AS s) t;
INSERT INTO pats SELECT g, schedphi.register_patient(:'t', 'Flat', 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-01' || lpad(g::text, 5, '0'), 'flat' || g || '@example.org', 'FC-' || g, '02139')
FROM generate_series($n + 1, 2 * $n) g;
INSERT INTO appts SELECT gs.i, schedphi.book(p.id, ARRAY[d.dr], tstzrange(s, s + interval '15 minutes'))
FROM generate_series($n / 2 + 1, $n) gs(i) JOIN pats p ON p.n = gs.i JOIN drs d ON d.g = gs.i % 20 + 1
CROSS JOIN LATERAL (SELECT timestamptz '2027-01-04 00:00Z' + (gs.i / 20) * interval '15 minutes' AS s) t;
INSERT INTO pats SELECT g, schedphi.register_patient(:'t', 'Flat', 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-01' || lpad(g::text, 5, '0'), 'flat' || g || '@example.org', 'FC-' || g, '02139')
FROM generate_series(2 * $n + 1, 3 * $n) g;
INSERT INTO appts SELECT gs.i, schedphi.hold(p.id, ARRAY[d.dr], tstzrange(s, s + interval '15 minutes'))
FROM generate_series($n + 1, 3 * $n / 2) gs(i) JOIN pats p ON p.n = gs.i JOIN drs d ON d.g = gs.i % 20 + 1
CROSS JOIN LATERAL (SELECT timestamptz '2027-01-04 00:00Z' + (gs.i / 20) * interval '15 minutes' AS s) t;
SELECT count(schedphi.confirm(a.id)) FROM appts a WHERE a.n > $n;
SELECT count(schedphi.reschedule(a.id, tstzrange(timestamptz '2027-03-01 00:00Z' + a.n * interval '15 minutes',
	timestamptz '2027-03-01 00:15Z' + a.n * interval '15 minutes'))) FROM appts a WHERE a.n % 10 = 1;
SELECT count(schedphi.cancel(a.id)) FROM appts a WHERE a.n % 10 = 2;
SELECT count(schedphi.set_status(a.id, 'arrived')) FROM appts a WHERE a.n % 10 = 3;
BEGIN;
SELECT schedphi.set_purpose('TREAT');
SELECT count(schedphi.patient_record(p.id)) FROM pats p WHERE p.n % 10 = 0;
COMMIT;
\timing off
SQL
)
rc=$?
echo "$out" | grep -E '^Time:' | tr '\n' ' ' | sed 's/Time: //g; s/^/flatcost: statements took (ms): /'
echo
ok "the session registered $((3 * n)) patients and made $((3 * n / 2)) appointments" "$rc" 0

# Rows read from the tables and their indexes: reported when the session
# ended (PostgreSQL 15 flushes a backend's counts when it goes idle or exits).
sleep 1.5
reads() {	# reads TABLE...: rows read from the tables and their indexes
	local rels
	rels=$(printf "'schedphi.%s'::regclass," "$@")
	q -c "SELECT coalesce(sum(coalesce(i.idx_tup_read, 0)), 0) + (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables
		  WHERE relid IN (${rels%,})) FROM pg_stat_user_indexes i WHERE i.relid IN (${rels%,})"
}
calls=$((3 * n + 3 * n / 2 + n / 2 + 3 * n / 10 + 3 * n / 10))
r=$(reads patient)
echo "flatcost: rows of schedphi.patient read by $calls calls: $r"
ok "registrations, bookings' key checks and patient_record read a patient row or two per call, not every patient so far" \
	"$([ "${r:-999999999}" -le $((calls * 2)) ] && echo flat || echo "grows ($r)")" flat
r=$(reads appointment appointment_actor)
echo "flatcost: rows of appointment and appointment_actor read by $calls calls: $r"
ok "book, hold, confirm, reschedule, cancel and set_status read a bounded number of rows per call" \
	"$([ "${r:-999999999}" -le $((calls * 8)) ] && echo flat || echo "grows ($r)")" flat
r=$(reads patient_deid appointment_deid deid_class)
echo "flatcost: rows of the de-identified tables read by $calls calls: $r"
ok "the de-identified rows and classes kept up to date read a bounded number of rows per call" \
	"$([ "${r:-999999999}" -le $((calls * 8)) ] && echo flat || echo "grows ($r)")" flat

psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
echo "flatcost: $count checks"
exit $fail

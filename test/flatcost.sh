#!/usr/bin/env bash
# Cost per call stays flat in a new database's first session (issue #12):
# plans made while the tables were empty must not read more rows with
# every row the session adds.  One session, right after CREATE EXTENSION,
# with autovacuum off for schedphi's tables (nothing re-plans behind our
# back): it registers patients in three statements, then books appointments
# in three statements, and looks patients up; afterwards the rows read from
# the tables and their indexes per call are counted.  A plan that filters
# the tenant's rows instead of using the right index reads thousands per
# call by the end; a flat one reads a handful.  Timings are printed, not
# judged (this machine is noisy); rows read are judged.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -uo pipefail

db=schedphi_flatcost
n=${FLATCOST_N:-1500}
fail=0
count=0
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
ok() {
	count=$((count + 1))
	if [ "$2" = "$3" ]; then echo "flatcost: ok - $1"; else echo "flatcost: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
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
GRANT SELECT ON drs TO fc_desk;
SET SESSION AUTHORIZATION fc_desk;
\timing on
SELECT count(schedphi.register_patient(:'t', 'Flat', 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-01' || lpad(g::text, 5, '0'), 'flat' || g || '@example.org', 'FC-' || g, '02139'))
FROM generate_series(1, $n) g;
SELECT count(schedphi.register_patient(:'t', 'Flat', 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-01' || lpad(g::text, 5, '0'), 'flat' || g || '@example.org', 'FC-' || g, '02139'))
FROM generate_series($n + 1, 2 * $n) g;
SELECT count(schedphi.register_patient(:'t', 'Flat', 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-01' || lpad(g::text, 5, '0'), 'flat' || g || '@example.org', 'FC-' || g, '02139'))
FROM generate_series(2 * $n + 1, 3 * $n) g;
\timing off
RESET SESSION AUTHORIZATION;
SELECT 'patient reads', coalesce(sum(idx_tup_read), 0) + coalesce((SELECT seq_tup_read FROM pg_stat_user_tables
	WHERE relid = 'schedphi.patient'::regclass), 0)
FROM pg_stat_user_indexes WHERE relid = 'schedphi.patient'::regclass;
SQL
)
rc=$?
echo "$out" | grep -E '^Time:' | sed 's/^/flatcost: register_patient, 3 statements of '"$n"': /'
ok "the session registered $((3 * n)) patients" "$rc" 0

# Rows read from schedphi.patient and its indexes: reported when the session
# ended (PostgreSQL 15 flushes a backend's counts when it goes idle or exits).
sleep 1.5
reads=$(q -c "SELECT coalesce(sum(idx_tup_read), 0) + (SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables
	WHERE relid = 'schedphi.patient'::regclass) FROM pg_stat_user_indexes WHERE relid = 'schedphi.patient'::regclass")
echo "flatcost: rows of schedphi.patient read by $((3 * n)) registrations: $reads"
ok "registration reads a bounded number of patient rows per call, not every patient so far" \
	"$([ "${reads:-999999999}" -le $((3 * n)) ] && echo flat || echo "grows ($reads)")" flat

psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
echo "flatcost: $count checks"
exit $fail

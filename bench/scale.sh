#!/usr/bin/env bash
# Scale benchmark (issue #12): the small clinic of bench/run.sh, and the
# same clinic grown to a hospital group's size, in one run on one cluster:
#
#   * 1,000,000 patients (bulk import: COPY into schedphi.patient_import);
#   * 2,000 practitioners (through the API);
#   * 5,000,000 appointments over two years (2028-2029: volume, written
#     directly as the rows book() writes, each with its audit record);
#   * 20,000,000 audit records (the appointments' 5 million, and 15 million
#     reads spread over the 24 months before now, written directly), all
#     sealed into the tenant's chain by the audit worker.
#
# Then, small against large where both apply: find_slots (one practitioner,
# 30 days, its 2,000 bookings: goal within 1.5 x), book() latency,
# find_patient by MRN (goal < 1 ms), access_report of a patient (goal
# < 10 ms), verify_audit from a stored digest (its cost: the records since,
# not the log), purge_audit of a year, the sealer's rate, and the bytes on
# disk per patient, appointment and audit record.  Prints figures; exits 0
# whatever they are; never part of CI.  Takes about an hour and ~15 GB.
#
# Knobs: BENCH_SCALE (default 1: the sizes above; 0.1 for a tenth),
# BENCH_LATENCY_SECONDS (default 5), BENCH_CONF (more postgresql.conf
# lines, separated by ';', e.g. auto_explain's settings to see a stall).
# SP_KEEP=1 keeps the cluster.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

SCALE=${BENCH_SCALE:-1}
LSECS=${BENCH_LATENCY_SECONDS:-5}
PATIENTS=$(calc '%d' "1000000 * $SCALE")
PRACS=2000
APPTS=$(calc '%d' "5000000 * $SCALE")
READS=$(calc '%d' "15000000 * $SCALE")

sp_install_packages
sp_build_install
IFS=';' read -r -a extra_conf <<<"${BENCH_CONF:-}"
cluster_start "shared_buffers = '2GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
	"maintenance_work_mem = '512MB'" "schedphi.audit_timeout = '60s'" ${extra_conf[@]+"${extra_conf[@]}"}
echo "== cluster: $SP_TMP"
out=$SP_TMP/bench
mkdir -p "$out"
chmod 755 "$out"
echo "== machine: $(nproc) cores, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== sizes: $PATIENTS patients, $PRACS practitioners, $APPTS appointments, about $((APPTS + READS)) audit records"

qd() { local d=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -d "$d" "$@"; }
secs() { calc '%.1f' "$(date +%s.%N) - $1"; }

# -------------------------------------------------------- the two clinics
for DB in schedphi_small schedphi_large; do
	echo "== $DB: the small clinic (bench/setup.sql)"
	bench_load "$here/setup.sql"
done
psql -X -q -c "CREATE ROLE bench_sync LOGIN" -c "CREATE ROLE bench_auditor LOGIN" >/dev/null 2>&1 || true
DB=schedphi_large
TENANT=$(qd $DB -c "SELECT tenant FROM bench.clinic")
qd $DB -c "SELECT schedphi.add_member('$TENANT', 'bench_sync', 'integration'),
			      schedphi.add_member('$TENANT', 'bench_auditor', 'auditor'),
			      schedphi.set_rate_limit('$TENANT', login => 'bench_sync', lookups_per_minute => 1000000)" >/dev/null
qd schedphi_small -c "SELECT schedphi.add_member(tenant, 'bench_sync', 'integration'),
			           schedphi.add_member(tenant, 'bench_auditor', 'auditor'),
			           schedphi.set_rate_limit(tenant, login => 'bench_sync', lookups_per_minute => 1000000)
			    FROM bench.clinic" >/dev/null

echo "== growing $DB"
t0=$(date +%s.%N)
qd $DB >/dev/null <<SQL
CREATE TABLE bench.bigprac (n int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO bench.bigprac SELECT n, id FROM bench.prac;
DO \$\$
DECLARE
	c bench.clinic := (SELECT c FROM bench.clinic c);
	v uuid;
BEGIN
	FOR i IN 201..$PRACS LOOP
		v := schedphi.add_practitioner(c.tenant, pg_catalog.format('Synthetic Practitioner %s', i));
		PERFORM schedphi.add_availability(v, c.loc, '{1,2,3,4,5,6,7}', '08:00', '17:00', daterange('2028-01-01', NULL), 15);
		INSERT INTO bench.bigprac VALUES (i, v);
	END LOOP;
END \$\$;
SQL
echo "   $PRACS practitioners: $(secs "$t0") s"

python3 - "$out/patients.csv" "$PATIENTS" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(1, n + 1):
        f.write("Scale%d,Synthetic%d,19%02d-%02d-%02d,555-%07d,scale%d@example.org,SCALE-%d,%05d\n"
                % (i, i % 50000, 30 + i % 70, 1 + i % 12, 1 + i % 28, i, i, i, 2000 + i % 90000))
PY
chmod 644 "$out/patients.csv"
t0=$(date +%s.%N)
psql -X -q -U bench_sync -d $DB \
	-c "\\copy schedphi.patient_import (given, family, birth_date, phone, email, mrn, zip) FROM '$out/patients.csv' WITH (FORMAT csv)" >/dev/null
echo "   $PATIENTS patients by COPY: $(secs "$t0") s"
qd $DB -c "CREATE TABLE bench.bigpatient AS SELECT row_number() OVER (ORDER BY created_at, id) AS n, id FROM schedphi.patient" \
	-c "ALTER TABLE bench.bigpatient ADD PRIMARY KEY (n)" >/dev/null

# Appointments of 2028-2029, in chunks: practitioner i % 2000, day (i / 2000) % 730,
# slot i / 1,460,000 (15 minutes from 08:00): no two overlap.
t0=$(date +%s.%N)
chunk=500000
for ((from = 0; from < APPTS; from += chunk)); do
	to=$((from + chunk - 1)); [ $to -ge $APPTS ] && to=$((APPTS - 1))
	qd $DB >/dev/null <<SQL
WITH v AS (
	SELECT c.tenant, schedphi._appointment_id() AS id, bp.id AS patient, pr.id AS actor,
		   tstzrange(t, t + interval '15 minutes') AS during
	FROM bench.clinic c, generate_series($from, $to) i
	JOIN bench.bigprac pr ON pr.n = 1 + i % $PRACS
	JOIN bench.bigpatient bp ON bp.n = 1 + (i::bigint * 7919) % $PATIENTS
	CROSS JOIN LATERAL (SELECT (date '2028-01-01' + (i / $PRACS) % 730 + time '08:00'
								+ (i / ($PRACS * 730)) * interval '15 minutes') AT TIME ZONE 'America/New_York' AS t) s
), ap AS (
	INSERT INTO schedphi.appointment (tenant, id, patient, actors, during, status, kind)
	SELECT tenant, id, patient, ARRAY[actor], during, 'fulfilled', 'routine' FROM v
	RETURNING tenant, id, actors[1] AS actor, during)
INSERT INTO schedphi.appointment_actor (tenant, appointment, actor, seat, during, span, active)
SELECT tenant, id, actor, 1, during, during, false FROM ap;
SQL
done
echo "   $APPTS appointments (with their audit records): $(secs "$t0") s"

# 15 million reads over the 24 months before now, with their partitions.
# They are the records of a clinic merged into the group (their own chain,
# oldest first, as time made them), of the group's patients: a purge cuts
# a chain after a prefix of old records, and the group's own chain starts
# now.
t0=$(date +%s.%N)
qd $DB >/dev/null <<SQL
DO \$\$
DECLARE
	m timestamp;
	v_name name;
BEGIN
	FOR i IN 1..24 LOOP
		m := date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => i);
		v_name := 'audit_log_' || to_char(m, 'YYYYMM');
		CONTINUE WHEN to_regclass('schedphi.' || v_name) IS NOT NULL;
		EXECUTE format('CREATE TABLE schedphi.%I PARTITION OF schedphi.audit_log FOR VALUES FROM (%L) TO (%L)',
					   v_name, m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
		PERFORM schedphi._audit_protect(v_name);
	END LOOP;
END \$\$;
SQL
for ((from = 0; from < READS; from += 1000000)); do
	to=$((from + 999999)); [ $to -ge $READS ] && to=$((READS - 1))
	qd $DB >/dev/null <<SQL
INSERT INTO schedphi.audit_log (at, login, actor, tenant, role, purpose, action, object, object_id, patient,
								columns, application, chain)
SELECT now() - interval '730 days' + (i::float8 / $READS) * interval '729 days', 'bench_desk', 'bench_desk',
	   '0000000b-e4c4-4000-8000-00000000a4c1', 'scheduler', 'TREAT', 'read', 'patient', bp.id, bp.id,
	   '{given,family,birth_date}', 'bench', '0000000b-e4c4-4000-8000-00000000a4c1'
FROM generate_series($from, $to) i JOIN bench.bigpatient bp ON bp.n = 1 + (i::bigint * 104729) % $PATIENTS;
SQL
done
echo "   $READS reads written directly: $(secs "$t0") s"
qd $DB -c "ANALYZE" >/dev/null

# the worker seals everything, in order
t0=$(date +%s.%N)
total=$(qd $DB -c "SELECT count(*) FROM schedphi.audit_log")
# (waited for in statements of 10 s: one statement of the whole wait
# would hold back, for minutes, the horizon below which vacuum and the
# indexes' kill bits clear the sealed records' old versions, and the
# measurements would start in that backlog, as no clinic ever does)
until err=$(qd $DB -c "SELECT schedphi._audit_sync('10 seconds')" 2>&1 >/dev/null); do
	# (only the wait's own timeout is waited out again)
	if ! grep -q 'were not sealed within' <<<"$err" || [ "$(calc '%d' "$(date +%s.%N) - $t0 > 10800")" = 1 ]; then
		echo "bench: the records were not sealed: $err" >&2
		break
	fi
done
seal_s=$(secs "$t0")
# The statistics as a clinic's are: its records are sealed within
# milliseconds of their commit, so its partitions are never analyzed with
# their seq unset, as the ANALYZE above left these.  (With those, the
# planner read some partitions' chain index whole for verify_audit(digest):
# seconds, until autovacuum had analyzed them again.)
qd $DB -c "ANALYZE schedphi.audit_log" >/dev/null
echo "   $total audit records sealed in $seal_s s: $(calc '%.0f' "$total / $seal_s") records/s"

# ------------------------------------------------------------ measurements
pgbdb() {	# pgbdb DB NAME USER ARGS...
	local d=$1 name=$2 user=$3
	shift 3
	local saved=$DB
	DB=$d pgb "$name" "$user" "$@"
	DB=$saved
}
declare -A lat
for d in schedphi_small schedphi_large; do
	busy=$(qd $d -c "SELECT busy FROM bench.clinic")
	t=$(qd $d -c "SELECT tenant FROM bench.clinic")
	qd $d -c "CHECKPOINT" >/dev/null
	pgbdb $d "slots-$d" bench_scheduler -c 1 -T "$LSECS" -D busy="$busy" -f "$here/slots_busy.pgbench"
	lat[slots-$d]=$LAT
	pgbdb $d "book-$d" bench_scheduler -c 1 -T "$LSECS" -D n=0 -D clients=1 -D base=$((RANDOM * 10)) -D tenant="$t" \
		-f "$here/book.pgbench"
	lat[book-$d]=$LAT
	printf '\\set n random(1, 500)\nSELECT count(*) FROM schedphi.find_patient(CAST(:tenant AS uuid), mrn => %s);\n' \
		"$([ $d = schedphi_large ] && echo "'SCALE-' || :n * 1999" || echo "'none-' || :n")" >"$out/find_$d.pgbench"
	pgbdb $d "find-$d" bench_sync -c 1 -T "$LSECS" -D tenant="$t" -f "$out/find_$d.pgbench"
	lat[find-$d]=$LAT
	qd $d -c "CREATE TABLE IF NOT EXISTS bench.sample AS SELECT row_number() OVER () AS n, patient
			  FROM (SELECT DISTINCT patient FROM schedphi.audit_log WHERE patient IS NOT NULL LIMIT 500) s" \
		-c "GRANT USAGE ON SCHEMA bench TO bench_auditor" -c "GRANT SELECT ON bench.sample TO bench_auditor" >/dev/null
	printf '\\set n random(1, 500)\nSELECT count(*) FROM schedphi.access_report((SELECT patient FROM bench.sample WHERE n = :n));\n' \
		>"$out/report.pgbench"
	pgbdb $d "report-$d" bench_auditor -c 1 -T "$LSECS" -f "$out/report.pgbench"
	lat[report-$d]=$LAT
done
records_per_patient=$(qd $DB -c "SELECT round(avg(c), 1) FROM (SELECT count(*) c FROM schedphi.audit_log l
	JOIN bench.sample s ON s.patient = l.patient GROUP BY l.patient) x")

# verify_audit from a digest: the records of 5,000 bookings after it (in
# 2034, after every day book.pgbench draws from)
digest=$(psql -X -At -U bench_auditor -d $DB -c "SELECT schedphi.audit_digest()")
qd $DB -c "SELECT count(schedphi.book(p.id, ARRAY[pr.id], tstzrange(t, t + interval '15 minutes')))
		   FROM generate_series(1, 5000) g JOIN bench.prac pr ON pr.n = 1 + g % 200 JOIN bench.patient p ON p.n = 1 + g % 500
		   CROSS JOIN LATERAL (SELECT (date '2034-01-01' + g / 200 + time '09:00') AT TIME ZONE 'America/New_York' AS t) s" >/dev/null
qd $DB -c "SELECT schedphi._audit_sync('10 minutes')" >/dev/null
t0=$(date +%s.%N)
since=$(psql -X -q -At -F' ' -U bench_auditor -d $DB -c "SELECT ok, checked FROM schedphi.verify_audit('$digest')")
verify_since_ms=$(calc '%.0f' "($(date +%s.%N) - $t0) * 1000")
t0=$(date +%s.%N)
full=$(psql -X -q -At -F' ' -U bench_auditor -d $DB -c "SET statement_timeout = 0" -c "SELECT ok, checked FROM schedphi.verify_audit()")
verify_full_s=$(secs "$t0")

# bytes on disk
bytes_patient=$(qd $DB -c "SELECT pg_total_relation_size('schedphi.patient') / count(*) FROM schedphi.patient")
bytes_appt=$(qd $DB -c "SELECT (pg_total_relation_size('schedphi.appointment') + pg_total_relation_size('schedphi.appointment_actor'))
	/ count(*) FROM schedphi.appointment")
bytes_audit=$(qd $DB -c "SELECT round(sum(pg_total_relation_size(i.inhrelid)) / (SELECT count(*) FROM schedphi.audit_log))
	FROM pg_inherits i WHERE i.inhparent = 'schedphi.audit_log'::regclass")

# purge a year
t0=$(date +%s.%N)
purged=$(qd $DB -c "SET schedphi.audit_retention = '1 year'" -c "SET statement_timeout = 0" \
	-c "SELECT schedphi.purge_audit(now() - interval '1 year')")
purge_s=$(secs "$t0")
after=$(psql -X -q -At -F' ' -U bench_auditor -d $DB -c "SELECT ok, checked FROM schedphi.verify_audit()")

echo
echo "| measure | small clinic | large | ratio | goal |"
echo "|---|---|---|---|---|"
echo "| find_slots, 1 practitioner, 30 days, 2,000 bookings (ms) | ${lat[slots-schedphi_small]} | ${lat[slots-schedphi_large]} | $(ratio "${lat[slots-schedphi_large]}" "${lat[slots-schedphi_small]}") x | <= 1.5 x: $(verdict "$(ratio "${lat[slots-schedphi_large]}" "${lat[slots-schedphi_small]}")" '<=' 1.5) |"
echo "| book(), 1 client (ms) | ${lat[book-schedphi_small]} | ${lat[book-schedphi_large]} | $(ratio "${lat[book-schedphi_large]}" "${lat[book-schedphi_small]}") x | |"
echo "| find_patient by MRN (ms) | ${lat[find-schedphi_small]} | ${lat[find-schedphi_large]} | | < 1 ms: $(verdict "${lat[find-schedphi_large]}" '<' 1) |"
echo "| access_report of a patient (ms; $records_per_patient records each at scale) | ${lat[report-schedphi_small]} | ${lat[report-schedphi_large]} | | < 10 ms: $(verdict "${lat[report-schedphi_large]}" '<' 10) |"
echo "| verify_audit(digest), the records of 5,000 bookings after the digest | | $verify_since_ms ms (ok, checked: $since) | | the new records only |"
echo "| verify_audit(), every chain from the start | | $verify_full_s s (ok, checked: $full) | | |"
echo "| sealing by the audit worker | | $(calc '%.0f' "$total / $seal_s") records/s | | |"
echo "| purge_audit of the records older than a year | | $purge_s s ($purged records); verify after: $after | | |"
echo "| bytes on disk per patient / appointment (with its actor rows) / audit record | | $bytes_patient / $bytes_appt / $bytes_audit | | |"
echo "bench: scale done"

#!/usr/bin/env bash
# De-identified analytics benchmark (issue #13): a tenant with
# BENCH_ANALYTICS_N appointments (default 1,000,000; 36 a day for each of
# 200 practitioners from 2026-01-05, about 20 weeks) for 20,000 synthetic
# patients, then, as an analyst:
#
#   * a typical question (no-show rate by practitioner and year) through
#     schedphi.deid_appointments, against the same query over a plain table
#     holding the same columns (the view's rows, copied), same run
#     (goal: within 1.5 x); and both again without parallel workers;
#   * schedphi.no_show_rates for a year (goal: under 1 s);
#   * decryptions during those queries, counted (goal: none): calls of the
#     decrypting functions (track_functions) and read records on the ledger.
#
# Appointments are volume: written directly with the statement the
# triggers see from book(), each with its audit record and derived row.
# Prints figures; exits 0 whatever they are; never part of CI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

N=${BENCH_ANALYTICS_N:-1000000}
PATIENTS=20000
RUNS=${BENCH_ANALYTICS_RUNS:-7}
DB=schedphi_bench_analytics

# (the million rows' tables in memory, as on a server sized for them)
bench_cluster "shared_buffers = '1GB'"
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
psql -X -q -c "CREATE ROLE bench_analyst LOGIN" >/dev/null 2>&1 || true
bench_load /dev/null
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
TENANT=$(q -c "SELECT schedphi.create_tenant('Analytics Bench Clinic', 'America/Chicago')")
LOC=$(q -c "SELECT schedphi.add_location('$TENANT', 'Bench site', 'America/Chicago')")
q -c "SET client_min_messages = warning" -c "SELECT schedphi.add_member('$TENANT', 'bench_analyst', 'analyst')" >/dev/null
q -c "CREATE SCHEMA bench" -c "CREATE TABLE bench.prac AS
	SELECT n, schedphi.add_practitioner('$TENANT', 'Dr Bench ' || n) AS id FROM generate_series(1, 200) n" >/dev/null

t0=$(date +%s.%N)
python3 - "$out/patients.csv" "$PATIENTS" "$TENANT" <<'PY'
import sys
path, n, tenant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
zips = ["60614", "60601", "53703", "46204", "05901", "63101"]
with open(path, "w") as f:
    for i in range(1, n + 1):
        f.write("%s,Ana%d,Synthetic%d,19%02d-%02d-%02d,,,ANA-%d,%s\n"
                % (tenant, i, i % 997, 30 + i % 70, 1 + i % 12, 1 + i % 28, i, zips[i % len(zips)]))
PY
chmod 644 "$out/patients.csv"
q -c "\\copy schedphi.patient_import (tenant, given, family, birth_date, phone, email, mrn, zip) FROM '$out/patients.csv' WITH (FORMAT csv)" >/dev/null
q -c "CREATE TABLE bench.patient AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM schedphi.patient WHERE tenant = '$TENANT'" >/dev/null
# appointments in batches of 100,000: practitioner, day and slot from n
batch=100000
for ((lo = 0; lo < N; lo += batch)); do
	hi=$((lo + batch < N ? lo + batch : N))
	q -c "INSERT INTO schedphi.appointment (tenant, patient, actors, during, status, kind, created_at)
		SELECT '$TENANT', p.id, ARRAY[pr.id], tstzrange(s.t, s.t + interval '15 minutes'),
			   CASE WHEN g % 9 = 0 THEN 'noshow' WHEN g % 13 = 0 THEN 'cancelled' ELSE 'fulfilled' END,
			   'routine', s.t - (g % 60) * interval '1 day'
		FROM generate_series($lo, $((hi - 1))) g
		JOIN bench.patient p ON p.n = 1 + g % $PATIENTS
		JOIN bench.prac pr ON pr.n = 1 + g % 200
		CROSS JOIN LATERAL (SELECT timestamptz '2026-01-05 14:00Z' + ((g / 200) / 36) * interval '1 day'
								   + ((g / 200) % 36) * interval '15 minutes' AS t) s" >/dev/null
done
# (and the ledger now, rather than by autovacuum while the figures are taken)
q -c "VACUUM (ANALYZE) schedphi.appointment_deid" -c "VACUUM (ANALYZE) schedphi.patient_deid" -c "VACUUM (ANALYZE) schedphi.deid_class" \
  -c "VACUUM (ANALYZE) schedphi.audit_log" -c "VACUUM (ANALYZE) schedphi.appointment" >/dev/null
t1=$(date +%s.%N)
echo "== $N appointments for $PATIENTS patients and 200 practitioners, with their derived rows: $(calc '%.1f' "$t1 - $t0") s"
echo "   derived rows: $(q -c "SELECT count(*) FROM schedphi.appointment_deid"), with an age: $(q -c "SELECT count(age) FROM schedphi.appointment_deid")"

# the plain table: the view's rows, as the analyst sees them, copied
psql -X -q -U bench_analyst -d "$DB" -c "\\copy (SELECT * FROM schedphi.deid_appointments) TO '$out/plain.csv' WITH (FORMAT csv)"
q -c "CREATE TABLE bench.plain (LIKE schedphi.deid_appointments)" \
  -c "\\copy bench.plain FROM '$out/plain.csv' WITH (FORMAT csv)" -c "VACUUM (ANALYZE) bench.plain" >/dev/null
echo "   rows shown to the analyst: $(q -c "SELECT count(*) FROM bench.plain") (the rest suppressed by k-anonymity)"

QUERY="SELECT practitioner, visit_year, count(*) AS appointments, count(*) FILTER (WHERE status = 'noshow') AS no_shows,
	round(count(*) FILTER (WHERE status = 'noshow')::numeric / count(*), 4) AS rate
	FROM %s WHERE status IN ('fulfilled', 'noshow') GROUP BY practitioner, visit_year"

# one timing (ms) of a statement, as a login
once_ms() {
	psql -X -q -U "$1" -d "$DB" -c "\\timing on" -c "$2" 2>/dev/null | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}
# median of a list of numbers, one per line
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
# median of RUNS timings (ms) of a statement, as a login
median_ms() {
	for ((i = 0; i < RUNS; i++)); do once_ms "$1" "$2"; done | median
}
# pair: RUNS rounds of the view as the analyst then the plain table, one
# after the other (this machine's speed drifts over seconds: a ratio of
# two blocks of runs measured a minute apart says more about the drift
# than about the view); sets VIEW and PLAIN (medians) and RATIO (the
# median of the rounds' ratios)
pair() {
	local v p
	: >"$out/pair.txt"
	for ((i = 0; i < RUNS; i++)); do
		v=$(once_ms bench_analyst "$(printf "$QUERY" schedphi.deid_appointments)")
		p=$(once_ms postgres "$(printf "$QUERY" bench.plain)")
		echo "$v $p" >>"$out/pair.txt"
	done
	VIEW=$(cut -d' ' -f1 "$out/pair.txt" | median)
	PLAIN=$(cut -d' ' -f2 "$out/pair.txt" | median)
	RATIO=$(awk '$1 > 0 && $2 > 0 { printf "%.4f\n", $1 / $2 }' "$out/pair.txt" | median)
}
# (one round unmeasured first: the plain table was just written, its pages not yet in shared buffers)
once_ms bench_analyst "$(printf "$QUERY" schedphi.deid_appointments)" >/dev/null
once_ms postgres "$(printf "$QUERY" bench.plain)" >/dev/null
pair
view_ms=$VIEW plain_ms=$PLAIN view_ratio=$RATIO
# the same two without parallel workers, for information
export PGOPTIONS='-c max_parallel_workers_per_gather=0'
pair
unset PGOPTIONS
view_serial_ms=$VIEW plain_serial_ms=$PLAIN serial_ratio=$RATIO
nsr_ms=$(median_ms bench_analyst "SELECT count(*) FROM schedphi.no_show_rates('$TENANT', '[2026-01-01, 2027-01-01)', 'practitioner')")

# decryptions while the analyst asks: calls of the decrypting functions and read records
mark=$(q -c "SELECT coalesce(max(id), 0) FROM schedphi.audit_log")
calls=$(psql -X -q -At -d "$DB" -c "SET track_functions = 'all'" -c "SET SESSION AUTHORIZATION bench_analyst" \
	-c "BEGIN" -c "SELECT count(*) FROM schedphi.deid_appointments" \
	-c "SELECT count(*) FROM schedphi.no_show_rates('$TENANT', '[2026-01-01, 2027-01-01)', 'practitioner')" \
	-c "RESET SESSION AUTHORIZATION" \
	-c "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE schemaname = 'schedphi'
		AND funcname IN ('_open', '_age_at', '_zip5', '_opens_equal', 'patient_record', '_patient_field')" -c "COMMIT" | tail -1)
reads=$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE id > $mark AND login = 'bench_analyst' AND action = 'read'")
exports=$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE id > $mark AND login = 'bench_analyst' AND action = 'export'")

echo
echo "| measure | figure | ratio | goal |"
echo "|---|---|---|---|"
echo "| no-show rate by practitioner and year, plain table of the same rows (ms) | $(f '%.1f' "$plain_ms") | 1 | |"
echo "| the same through deid_appointments, as the analyst (ms) | $(f '%.1f' "$view_ms") | $(f '%.2f' "$view_ratio") x | <= 1.5 x: $(verdict "$view_ratio" '<=' 1.5) |"
echo "| the same two without parallel workers: plain table / view (ms) | $(f '%.1f' "$plain_serial_ms") / $(f '%.1f' "$view_serial_ms") | $(f '%.2f' "$serial_ratio") x | (information) |"
echo "| no_show_rates, one year, by practitioner (ms) | $(f '%.1f' "$nsr_ms") | | < 1,000 ms: $(verdict "${nsr_ms:-}" '<' 1000) |"
echo "| decrypting calls / read records during two analyst statements | ${calls:-?} / ${reads:-?} (export records: ${exports:-?}) | | none: $(verdict "$(( ${calls:-1} + ${reads:-1} ))" '==' 0) |"
echo "bench: analytics done"

#!/usr/bin/env bash
# Bulk import benchmark (issue #12): BENCH_IMPORT_N synthetic patients
# (default 1,000,000) registered by COPY into schedphi.patient_import, as
# an integration login, against the same number registered by
# register_patient in one statement, each into a new database of its own
# (the same starting state: an empty tenant), in the same run.  Prints the
# rates, their ratio (goal: COPY at least 2 x register_patient) and the
# backend's peak private memory during the COPY, sampled, with its value a
# tenth of the way in (flat: the same).  BENCH_IMPORT_REG sets a smaller
# count for register_patient (its rate then comes from a smaller table, in
# the COPY's favour neither way: see docs/benchmarks.md).  Starts its own
# throwaway cluster; never part of CI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

N=${BENCH_IMPORT_N:-1000000}
REG=${BENCH_IMPORT_REG:-$N}
DB=schedphi_bench_import

bench_cluster
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
psql -X -q -c "CREATE ROLE bench_sync LOGIN" >/dev/null
# new_clinic DB: a database with the extension and an empty tenant whose
# integration login is bench_sync; sets TENANT
new_clinic() {
	DB=$1
	bench_load /dev/null
	q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
	TENANT=$(q -c "SELECT schedphi.create_tenant('Import Bench Clinic', 'UTC')")
	q -c "SET client_min_messages = warning" -c "SELECT schedphi.add_member('$TENANT', 'bench_sync', 'integration')" >/dev/null
}

# synthetic rows, made once: given, family, birth date, phone, email, MRN, ZIP
python3 - "$out/patients.csv" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(1, n + 1):
        f.write("Bench%d,Synthetic%d,19%02d-%02d-%02d,555-%07d,bench%d@example.org,IMP-%d,%05d\n"
                % (i, i % 50000, 30 + i % 70, 1 + i % 12, 1 + i % 28, i, i, i, 2000 + i % 90000))
PY
chmod 644 "$out/patients.csv"

# register_patient in one statement
new_clinic schedphi_bench_register
t0=$(date +%s.%N)
psql -X -q -U bench_sync -d "$DB" -c "SELECT count(schedphi.register_patient('$TENANT', 'Reg' || g, 'Synthetic' || g % 50000,
	date '1930-01-01' + g % 25000, '555-8' || lpad(g::text, 7, '0'), 'reg' || g || '@example.org', 'REG-' || g,
	lpad((2000 + g % 90000)::text, 5, '0'))) FROM generate_series(1, $REG) g" >/dev/null
t1=$(date +%s.%N)
reg_rate=$(calc '%.0f' "$REG / ($t1 - $t0)")
echo "== register_patient, $REG patients in one statement: $(calc '%.1f' "$t1 - $t0") s, $reg_rate patients/s"

# COPY, with the backend's private memory sampled every half second
new_clinic schedphi_bench_import
mem="$out/rss.txt"
: >"$mem"
psql -X -q -U bench_sync -d "$DB" -At -c "SELECT pg_backend_pid()" \
	-c "\\copy schedphi.patient_import (given, family, birth_date, phone, email, mrn, zip) FROM '$out/patients.csv' WITH (FORMAT csv)" \
	>"$out/copy.out" 2>&1 &
copy_pid=$!
t0=$(date +%s.%N)
backend=
while kill -0 "$copy_pid" 2>/dev/null; do
	[ -z "$backend" ] && backend=$(head -1 "$out/copy.out" 2>/dev/null | grep -E '^[0-9]+$' || true)
	[ -n "$backend" ] && awk '/^RssAnon/ { print $2 }' "/proc/$backend/status" 2>/dev/null >>"$mem" || true
	sleep 0.5
done
wait "$copy_pid" || { cat "$out/copy.out" >&2; exit 1; }
t1=$(date +%s.%N)
copy_rate=$(calc '%.0f' "$N / ($t1 - $t0)")
peak=$(sort -n "$mem" | tail -1)
early=$(sed -n "$(($(wc -l <"$mem") / 10 + 1))p" "$mem")
echo "== COPY into patient_import, $N patients: $(calc '%.1f' "$t1 - $t0") s, $copy_rate patients/s"
echo "   backend private memory (RssAnon): ${early:-?} kB a tenth of the way in, ${peak:-?} kB at the peak"
echo "   patients in the tenant: $(q -c "SELECT count(*) FROM schedphi.patient")," \
	"insert records: $(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'insert' AND object = 'patient'")"
echo
echo "| measure | figure | ratio | goal |"
echo "|---|---|---|---|"
echo "| register_patient, one statement of $REG, into an empty tenant | $reg_rate patients/s | 1 | |"
echo "| COPY into patient_import, $N, into an empty tenant | $copy_rate patients/s | $(ratio "$copy_rate" "$reg_rate") x | >= 2 x: $(verdict "$(ratio "$copy_rate" "$reg_rate")" '>=' 2) |"
echo "| backend private memory during the COPY | ${early:-?} kB early, ${peak:-?} kB peak | $(ratio "${peak:-}" "${early:-}") x | flat |"
echo "bench: import done"

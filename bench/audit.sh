#!/usr/bin/env bash
# bash bench/audit.sh: the audit ledger's benchmarks.  Like bench/run.sh,
# it installs what is missing, builds, starts its own throwaway cluster,
# loads the synthetic clinic (bench/setup.sql, bench/audit_setup.sql) and
# measures, in the same run:
#
#   1  book() and register_patient() throughput, 8 clients, with schedphi's
#      audit of writes (C trigger), with no audit of writes, and with a
#      classic PL/pgSQL trigger writing the row as jsonb (bench.audit_plain);
#   2  the trigger alone: one UPDATE of 5,000 appointments in each mode,
#      timed inside the server, giving the cost per audited row;
#   3  sealing: 200,000 records inserted unsealed, timed until the worker
#      has sealed them all into the chain (then verify_audit checks them).
#
# It prints figures and ratios and exits 0 whatever they are: benchmarks
# never gate anything.  Synthetic data only.  Takes about 3 minutes.
#
# Knobs (environment): BENCH_SECONDS (default 8) per throughput run,
# BENCH_ROUNDS (default 2) alternations of the three modes, BENCH_CLIENTS
# (default 8), BENCH_THREADS (default 2), AUDIT_SEAL_RECORDS (default
# 200000).  SP_KEEP=1 keeps the cluster directory and the pgbench logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

TP_SECONDS=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
SEAL_RECORDS=${AUDIT_SEAL_RECORDS:-200000}
UPDATE_ROWS=5000
DB=schedphi_audit_bench
SLOT_SPACE=5256000

bench_cluster

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== loading the synthetic clinic (bench/setup.sql, bench/audit_setup.sql)"
t0=$(date +%s)
bench_load "$here/setup.sql" "$here/audit_setup.sql"
TENANT=$(q -c "SELECT tenant FROM bench.clinic")
q -c "SELECT schedphi._audit_sync('5 minutes')" >/dev/null
echo "   loaded in $(($(date +%s) - t0)) s; $(q -c "SELECT count(*) FROM schedphi.audit_log") audit records so far"

# ------------------------------------------------------------ 1: throughput
modes=(c none plpgsql)
declare -A sum
for w in book register; do for m in "${modes[@]}"; do sum[$w-$m]=0; done; done
nruns=$((ROUNDS * 3))
share=$((SLOT_SPACE / nruns))
run=0
echo "== 1 throughput: $CLIENTS clients, $THREADS threads, ${TP_SECONDS} s a run, $ROUNDS rounds of c / none / plpgsql"
for ((r = 1; r <= ROUNDS; r++)); do
	for m in "${modes[@]}"; do
		q -c "SELECT bench.audit_mode('$m')" >/dev/null
		q -c "CHECKPOINT" >/dev/null
		pgb "book-$m-$r" bench_scheduler -c "$CLIENTS" -j "$THREADS" -T "$TP_SECONDS" -D n=0 -D clients="$CLIENTS" \
			-D base=$((run * share)) -D tenant="$TENANT" -f "$here/book.pgbench"
		sum[book-$m]=$(calc '%.3f' "${sum[book-$m]} + ${TPS:-0}")
		printf '   round %d book     %-8s %8s tps\n' "$r" "$m" "${TPS:-?}"
		pgb "register-$m-$r" bench_scheduler -c "$CLIENTS" -j "$THREADS" -T "$TP_SECONDS" -D n=0 -D clients="$CLIENTS" \
			-D base=$(((run + 1) * 10000000)) -D tenant="$TENANT" -f "$here/crypto_register.pgbench"
		sum[register-$m]=$(calc '%.3f' "${sum[register-$m]} + ${TPS:-0}")
		printf '   round %d register %-8s %8s tps\n' "$r" "$m" "${TPS:-?}"
		run=$((run + 1))
	done
done
q -c "SELECT bench.audit_mode('c')" >/dev/null
declare -A tps
for k in "${!sum[@]}"; do tps[$k]=$(calc '%.0f' "${sum[$k]} / $ROUNDS"); done

# ------------------------------------------------------- 2: trigger alone
echo "== 2 the trigger alone: one UPDATE of $UPDATE_ROWS appointments, inside the server (median of 5)"
declare -A upd
for m in none c plpgsql; do
	upd[$m]=$(q -c "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)
					FROM (SELECT bench.trigger_ms('$m', $UPDATE_ROWS) AS ms FROM generate_series(1, 5)) s")
	echo "   $m: ${upd[$m]} ms"
done
per_row() { if num "$1" && num "$2"; then calc '%.2f' "($1 - $2) * 1000 / $UPDATE_ROWS"; else echo '?'; fi; }
c_row=$(per_row "${upd[c]}" "${upd[none]}")
p_row=$(per_row "${upd[plpgsql]}" "${upd[none]}")

# ------------------------------------------------------------- 3: sealing
echo "== 3 sealing $SEAL_RECORDS records"
q -c "SELECT schedphi._audit_sync('5 minutes')" >/dev/null
q -c "SELECT bench.unsealed($SEAL_RECORDS)" >/dev/null
s0=$(date +%s.%N)
q -c "SELECT schedphi._audit_sync('10 minutes')" >/dev/null
s1=$(date +%s.%N)
seal_s=$(calc '%.2f' "$s1 - $s0")
seal_rate=$(calc '%.0f' "$SEAL_RECORDS / ($s1 - $s0)")
echo "   sealed in $seal_s s: $seal_rate records/s"
v0=$(date +%s.%N)
verified=$(q -F' ' -c "SELECT checked, ok FROM schedphi.verify_audit()")
v1=$(date +%s.%N)
echo "   verify_audit: $verified (checked, ok) in $(calc '%.2f' "$v1 - $v0") s"

# ------------------------------------------------------------------ summary
cost() { ratio "$1" "$2"; }   # none tps / mode tps = the mode's cost relative to none
echo
echo "== summary (noisy: compare ratios, not absolute figures)"
echo
echo "| measure | c (schedphi) | none | plpgsql jsonb | c cost vs none | goal |"
echo "|---|---|---|---|---|---|"
for w in book register; do
	cr=$(cost "${tps[$w-none]}" "${tps[$w-c]}")
	echo "| $w(), $CLIENTS clients, tps | ${tps[$w-c]} | ${tps[$w-none]} | ${tps[$w-plpgsql]} | ${cr} x | <= 1.3 x: $(verdict "$cr" '<=' 1.3) |"
done
speedup=$(ratio "$p_row" "$c_row")
echo "| trigger cost per row (UPDATE of $UPDATE_ROWS, in the server) | $c_row us | 0 | $p_row us | plpgsql / c = $speedup x | >= 2 x: $(verdict "$speedup" '>=' 2) |"
echo "| sealing, records/s | $seal_rate | | | | >= 20,000: $(verdict "$seal_rate" '>=' 20000) |"
echo
echo "bench: audit done"

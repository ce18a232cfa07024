#!/usr/bin/env bash
# make bench: install what is missing, build, start a throwaway cluster,
# load a synthetic clinic (bench/setup.sql, bench/references.sql) and measure
#
#   2a  find_slots latency: one practitioner, 30 days, 2,000 bookings;
#   2b  find_slots over 200 practitioners and 7 days: one call each;
#   3   schedphi.book() throughput with 8 clients against the rows it
#       writes (with their indexes, foreign keys and audit record) inserted
#       directly (goal: 0.90 x), and its latency percentiles; for
#       information, plain INSERTs into a bare table carrying the same
#       exclusion constraint, and three more references: two bare rows (an appointment row with only its primary
#       key, and the actor row); the rows book() really writes, inserted
#       directly; and the same rows in copies of the tables without foreign
#       keys, with and without the audit record,
#
# with the round trip of a trivial SELECT 1 measured in the same run.  It
# prints figures and ratios and exits 0 whatever they are: benchmarks never
# gate anything.  Only synthetic data is used.  Takes about 4 minutes.
#
# Knobs (environment): BENCH_LATENCY_SECONDS (default 5) per latency run,
# BENCH_SECONDS (default 10) per throughput run, BENCH_ROUNDS (default 2)
# alternations of the throughput workloads, BENCH_CLIENTS (default 8),
# BENCH_THREADS (default 2).  SP_KEEP=1 keeps the cluster directory, with
# the pgbench logs in its bench/ folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

LAT_SECONDS=${BENCH_LATENCY_SECONDS:-5}
TP_SECONDS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
DB=schedphi_bench
# book.pgbench, bare.pgbench, rows.pgbench and pair.pgbench draw from 5,256,000
# (practitioner, day, slot) triples; each run gets its own share, which is
# far more than a run books unless BENCH_ROUNDS is in the hundreds.
SLOT_SPACE=5256000

bench_cluster





# ------------------------------------------------------------------ machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
echo "== machine: $(nproc) cores (${cpu:-unknown cpu}), $mem, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(psql -X -At -c 'SELECT version()' | cut -d, -f1), synchronous_commit $(psql -X -At -c 'SHOW synchronous_commit')"

# -------------------------------------------------------------------- setup
echo "== loading the synthetic clinic (bench/setup.sql)"
t0=$(date +%s)
bench_load "$here/setup.sql" "$here/references.sql"
# settle the freshly loaded tables first, or autovacuum runs during the first measurements
q -c "VACUUM (ANALYZE)" >/dev/null
TENANT=$(q -c "SELECT tenant FROM bench.clinic")
BUSY=$(q -c "SELECT busy FROM bench.clinic")
echo "   $(q -c "SELECT count(*) FROM schedphi.appointment_actor x, bench.clinic c WHERE x.actor = c.busy AND x.active") active bookings on the busy practitioner," \
	"$(q -c "SELECT count(*) FROM schedphi.appointment_actor WHERE active") in all, loaded in $(($(date +%s) - t0)) s"

# ------------------------------------------------------------ 1: round trip
echo "== baseline: SELECT 1, 1 client, ${LAT_SECONDS} s"
pgb select1 bench_scheduler -c 1 -T "$LAT_SECONDS" -f "$here/select1.pgbench"
base_lat=$LAT
echo "   ${base_lat:-?} ms per call ($TX calls)"

# -------------------------------------------------------------- 2a: latency
echo "== 2a find_slots: 1 practitioner, 30 days, 2,000 bookings; 1 client, ${LAT_SECONDS} s"
pgb slots_busy bench_scheduler -c 1 -T "$LAT_SECONDS" -D busy="$BUSY" -f "$here/slots_busy.pgbench"
a_lat=$LAT
a_srv=$(q -c "SELECT bench.busy_mean_ms(500)") || a_srv='?' 
echo "   ${a_lat:-?} ms per call from the client ($TX calls), $a_srv ms inside the server (500 calls)"
# Not a test, but a timing of a wrong answer is worth nothing: ask for
# every free slot of the busy practitioner a few times, each in a new
# session, straight and through bench.check_busy(), and compare with the
# free slots computed in plain SQL from the bookings.
sanity_bad=0
for i in 1 2 3; do
	found=? expected=? missing=? extra=?
	direct=$(q -c "SELECT count(*) FROM schedphi.find_slots((SELECT ARRAY[busy] FROM bench.clinic),
		tstzrange(timestamp '2030-01-07 00:00' AT TIME ZONE 'America/New_York',
				  timestamp '2030-02-06 00:00' AT TIME ZONE 'America/New_York'),
		interval '10 minutes', 10000)" 2>&1) || true
	IFS='|' read -r found expected missing extra < <(q -c "SELECT * FROM bench.check_busy()" 2>&1) || true
	if [ "$missing" != 0 ] || [ "$extra" != 0 ] || [ "$direct" != "$expected" ]; then
		sanity_bad=1
		echo "   ! sanity $i: the bookings leave $expected free slots; find_slots returned $direct," \
			"then $found ($missing free ones missing, $extra offered that are not free)"
	fi
done
if [ "$sanity_bad" = 0 ]; then
	echo "   sanity: find_slots returned the $expected free slots that the bookings leave (3 sessions, 2 ways)"
else
	echo "   ! find_slots gave wrong answers here: the timings above are of wrong answers"
fi

# -------------------------------------------------------------- 2b: latency
echo "== 2b find_slots: 200 practitioners x 7 days, one call each"
pgb slots_all bench_scheduler -c 1 -T "$LAT_SECONDS" -f "$here/slots_all.pgbench"
b_total=$LAT
echo "   ${b_total:-?} ms for the 200 calls in one server-side loop (bench.slots_all, $TX loops)"
pgb slots_one bench_scheduler -c 1 -T "$LAT_SECONDS" -f "$here/slots_one.pgbench"
b_one=$LAT
b_client='?'
num "$b_one" && b_client=$(calc '%.1f' "$b_one * 200")
echo "   ${b_one:-?} ms per call from the client, a random practitioner each ($TX calls): $b_client ms for 200"

# ----------------------------------------------------------- 3: throughput
# rows_nofk and rows_noaudit: rows.pgbench on the bench copies of the two
# tables without foreign keys, with and without the audit trigger.
for v in nofk noaudit; do
	sed -e "s/schedphi\.appointment_actor /bench.${v}_appointment_actor /" \
		-e "s/schedphi\.appointment (/bench.${v}_appointment (/" "$here/rows.pgbench" >"$out/rows_$v.pgbench"
	grep -q "bench.${v}_appointment_actor " "$out/rows_$v.pgbench" && grep -q "bench.${v}_appointment (" "$out/rows_$v.pgbench" || {
		echo "bench: could not derive rows_$v.pgbench from rows.pgbench" >&2
		exit 1
	}
done
workloads="bare book rows pair rows_nofk rows_noaudit"
nruns=$((ROUNDS * 6))
share=$((SLOT_SPACE / nruns))
echo "== 3 booking throughput: $CLIENTS clients, $THREADS threads, ${TP_SECONDS} s a run, $ROUNDS rounds"
run=0
declare -A sum fails
for w in $workloads; do sum[$w]=0 fails[$w]=0; done
for ((r = 1; r <= ROUNDS; r++)); do
	for w in $workloads; do
		user=bench_scheduler script="$here/$w.pgbench"
		case $w in
		rows) user=postgres ;; # nobody else may write the tables directly
		rows_*) user=postgres script="$out/$w.pgbench" ;;
		esac
		psql -X -q -d "$DB" -c "CHECKPOINT" >/dev/null
		logargs=()
		# book()'s latency of every transaction, for its percentiles
		[ "$w" = book ] && logargs=(--log --log-prefix="$out/latency-book-$r")
		pgb "$w-$r" "$user" -c "$CLIENTS" -j "$THREADS" -T "$TP_SECONDS" -D n=0 -D clients="$CLIENTS" \
			-D base=$((run * share)) -D tenant="$TENANT" "${logargs[@]}" -f "$script"
		run=$((run + 1))
		sum[$w]=$(calc '%.3f' "${sum[$w]} + ${TPS:-0}")
		fails[$w]=$((${fails[$w]} + ${FAILED:-0}))
		printf '   round %d %-12s %8s tps  (%s transactions, %s failed)\n' "$r" "$w" "${TPS:-?}" "${TX:-?}" "${FAILED:-?}"
	done
done
bare_tps=$(calc '%.0f' "${sum[bare]} / $ROUNDS")
book_tps=$(calc '%.0f' "${sum[book]} / $ROUNDS")
rows_tps=$(calc '%.0f' "${sum[rows]} / $ROUNDS")
pair_tps=$(calc '%.0f' "${sum[pair]} / $ROUNDS")
nofk_tps=$(calc '%.0f' "${sum[rows_nofk]} / $ROUNDS")
noaudit_tps=$(calc '%.0f' "${sum[rows_noaudit]} / $ROUNDS")
[ "${fails[book]}" -gt 0 ] && echo "   ! ${fails[book]} book() transactions failed (conflicts?): SP_KEEP=1 keeps the pgbench logs"
# pgbench's per-transaction log: the third field is the latency in microseconds
read -r book_p50 book_p99 < <(cat "$out"/latency-book-* 2>/dev/null | awk '{ print $3 }' | sort -n |
	awk '{ v[NR] = $1 } END { if (NR) printf "%.2f %.2f\n", v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000; else print "? ?" }')

# ------------------------------------------------------------------ summary
book_ratio=$(ratio "$book_tps" "$bare_tps")
echo
echo "== summary (noisy: compare ratios, not absolute figures)"
echo
echo "| measure | figure | ratio | goal |"
echo "|---|---|---|---|"
echo "| SELECT 1, per call (client) | ${base_lat:-?} ms | 1 | |"
echo "| 2a find_slots, 1 practitioner, 30 days, 2,000 bookings, per call (client) | ${a_lat:-?} ms | $(ratio "$a_lat" "$base_lat") x SELECT 1 | < 1 ms: $(verdict "$a_lat" '<' 1) |"
if [ "$sanity_bad" = 0 ]; then answers=correct; else answers="WRONG (see above)"; fi
echo "| 2a find_slots answers (sanity check against plain SQL) | $answers | | |"
echo "| 2a same, inside the server | $a_srv ms | | < 1 ms: $(verdict "$a_srv" '<' 1) |"
echo "| 2b find_slots, 200 practitioners x 7 days, 200 calls in one server loop | ${b_total:-?} ms | $(ratio "$b_total" "$base_lat") x SELECT 1 | < 50 ms: $(verdict "$b_total" '<' 50) |"
echo "| 2b same, 200 separate calls from the client | $b_client ms | $(ratio "$b_one" "$base_lat") x SELECT 1 per call | < 50 ms: $(verdict "$b_client" '<' 50) |"
echo "| 3 bare INSERT with the exclusion constraint, $CLIENTS clients | $bare_tps tps | 1 | |"
echo "| 3 two bare rows (an appointment with only its primary key, an actor row with only the constraint), $CLIENTS clients | $pair_tps tps | $(ratio "$pair_tps" "$bare_tps") x bare | |"
echo "| 3 the same rows without the foreign keys (copies of the tables), with the audit record, $CLIENTS clients | $nofk_tps tps | $(ratio "$nofk_tps" "$bare_tps") x bare | |"
echo "| 3 the same rows without the foreign keys and without the audit record, $CLIENTS clients | $noaudit_tps tps | $(ratio "$noaudit_tps" "$bare_tps") x bare | |"
echo "| 3 the rows book() writes (with their indexes, foreign keys and audit record), inserted directly, $CLIENTS clients | $rows_tps tps | $(ratio "$rows_tps" "$bare_tps") x bare | |"
book_rows=$(ratio "$book_tps" "$rows_tps")
echo "| 3 schedphi.book(), $CLIENTS clients | $book_tps tps | $book_rows x rows ($book_ratio x bare) | >= 0.90 x rows: $(verdict "$book_rows" '>=' 0.90) |"
echo "| 3 schedphi.book() latency at $CLIENTS clients, p50 / p99 | $book_p50 / $book_p99 ms | | |"
echo
echo "bench: scheduling done"

# The encryption benchmarks start their own throwaway cluster.
if [ -z "${BENCH_SKIP_CRYPTO:-}" ]; then
	cluster_stop
	echo
	bash "$(dirname "$0")/crypto.sh"
fi
# The identity and access benchmarks too.
if [ -z "${BENCH_SKIP_IDENTITY:-}" ]; then
	echo
	bash "$(dirname "$0")/identity.sh"
fi
# And the audit ledger's.
if [ -z "${BENCH_SKIP_AUDIT:-}" ]; then
	echo
	bash "$(dirname "$0")/audit.sh"
fi
echo "bench: done"

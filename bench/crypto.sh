#!/usr/bin/env bash
# bash bench/crypto.sh: the encryption benchmarks.  Like bench/run.sh, it
# installs what is missing, builds, starts its own throwaway cluster (master
# key through schedphi.key_command), loads synthetic data
# (bench/crypto_setup.sql) and measures
#
#   1  sealing and opening a 32-byte field against bare OpenSSL EVP
#      AES-256-GCM in the same process (schedphi._crypto_bench);
#   2  the same, and pgcrypto's pgp_sym_encrypt/decrypt, encrypt_iv/
#      decrypt_iv and hmac, called once per row by a SELECT inside the
#      server (cbench.sql_loops);
#   3  register_patient throughput with 8 clients against a hand-written
#      pgcrypto version and a plaintext INSERT (pgbench); the same
#      registrations timed inside the server (no round trip, no commit);
#      and, for reference, reading a record back both ways.
#
# It prints figures and ratios measured in the same run and exits 0
# whatever they are: benchmarks never gate anything.  Only synthetic data is
# used and no field value is ever printed.  Takes about 2 minutes.
#
# Knobs (environment): BENCH_SECONDS (default 8) per throughput run,
# BENCH_ROUNDS (default 3) alternations of the throughput workloads (the
# median of the rounds is reported),
# BENCH_CLIENTS (default 8), BENCH_THREADS (default 2); CRYPTO_ITERATIONS
# (default 200000) per _crypto_bench operation, CRYPTO_REPS (default 5)
# repetitions of benchmarks 1 and 2, CRYPTO_CALLS (default 20000) and
# CRYPTO_PGP_CALLS (default 500) calls per loop in benchmark 2.  SP_KEEP=1
# keeps the cluster directory, with the pgbench logs in its bench/ folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

TP_SECONDS=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
ITERATIONS=${CRYPTO_ITERATIONS:-200000}
REPS=${CRYPTO_REPS:-5}
CALLS=${CRYPTO_CALLS:-20000}
PGP_CALLS=${CRYPTO_PGP_CALLS:-500}
LOOP_CALLS=1000
SEED=2000
LOOP_PGP_CALLS=200
DB=schedphi_crypto
USER_SCHED=crypto_scheduler

bench_cluster



# us NS: nanoseconds shown as microseconds, or ?.
us() { if num "${1:-}"; then calc '%.1f' "$1 / 1000"; else echo '?'; fi; }



started=$(date +%s)

# ------------------------------------------------------------------ machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
ossl=$(openssl version 2>/dev/null | cut -d' ' -f1-2 || echo 'OpenSSL ?')
aesni=no
grep -qw aes /proc/cpuinfo && aesni=yes
echo "== machine: $(nproc) cores (${cpu:-unknown cpu}, AES-NI $aesni), $mem, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(psql -X -At -c 'SELECT version()' | cut -d, -f1), $ossl, synchronous_commit $(psql -X -At -c 'SHOW synchronous_commit')"

# -------------------------------------------------------------------- setup
echo "== loading synthetic data (bench/crypto_setup.sql): $CALLS sample values, $SEED patients in each registration table"
t0=$(date +%s)
bench_load -v n_fast="$CALLS" -v n_pgp="$PGP_CALLS" -v n_seed="$SEED" "$here/crypto_setup.sql"
TENANT=$(q -c "SELECT tenant FROM cbench.clinic")
echo "   loaded in $(($(date +%s) - t0)) s"

# Values that do not come back from each decryption (0, 0, 0 expected).
IFS='|' read -r mis_pgp mis_aes mis_sealed < <(psql -X -q -At -U "$USER_SCHED" -d "$DB" \
	-c "SELECT * FROM cbench.roundtrip_mismatches()" 2>&1) || true
if [ "$mis_pgp" = 0 ] && [ "$mis_aes" = 0 ] && [ "$mis_sealed" = 0 ]; then
	roundtrip=correct
	echo "   sanity: every sample value decrypts back to itself (pgp, encrypt_iv, sealed)"
else
	roundtrip="WRONG (pgp $mis_pgp, aes $mis_aes, sealed $mis_sealed mismatches)"
	echo "   ! sanity: values that do not decrypt back: pgp ${mis_pgp:-?}, aes ${mis_aes:-?}, sealed ${mis_sealed:-?}"
fi

# ----------------------------------------------- 1: in-process, against EVP
echo "== 1 _crypto_bench: 32-byte field, $ITERATIONS calls per operation, median of $REPS"
declare -A c1=()
while IFS='|' read -r op med mn; do
	c1[$op]=$med
	printf '   %-15s %8.1f ns per call (min %.1f)\n' "$op" "$med" "$mn"
done < <(q -c "SELECT b.operation, percentile_cont(0.5) WITHIN GROUP (ORDER BY b.ns_per_call), min(b.ns_per_call)
	FROM generate_series(1, $REPS) g
	CROSS JOIN LATERAL schedphi._crypto_bench('$TENANT', $ITERATIONS + 0 * g) b
	GROUP BY b.operation ORDER BY min(b.operation)" 2>"$out/crypto_bench.err" || cat "$out/crypto_bench.err" >&2)
seal_x=$(ratio "${c1[seal_32]:-}" "${c1[evp_encrypt_32]:-}")
open_x=$(ratio "${c1[open_32]:-}" "${c1[evp_decrypt_32]:-}")
echo "   seal = $seal_x x EVP encrypt, open = $open_x x EVP decrypt"

# ----------------------------------------------------- 2: SQL-level loops
echo "== 2 SQL-level loops as $USER_SCHED: one call per row of a SELECT; $CALLS calls" \
	"($PGP_CALLS for pgp_sym_*), median of $REPS"
declare -A c2=() c2n=()
while IFS='|' read -r op n med mn; do
	c2[$op]=$med
	c2n[$op]=$n
done < <(psql -X -q -At -v ON_ERROR_STOP=1 -U "$USER_SCHED" -d "$DB" \
	-c "SELECT * FROM cbench.sql_loops($REPS, $CALLS, $PGP_CALLS)" 2>"$out/sql_loops.err" ||
	cat "$out/sql_loops.err" >&2)
scan=${c2[scan]:-}
# net OP: the loop's cost per call minus the bare scan's.
net() { if num "${c2[$1]:-}" && num "$scan"; then calc '%.1f' "${c2[$1]} - $scan"; fi; }
declare -A n2=()
for op in pgp_sym_encrypt pgp_sym_decrypt pgp_s2k_mode_1 encrypt_iv decrypt_iv hmac_sha256 seal open blind; do
	n2[$op]=$(net "$op")
done
printf '   %-16s %10s ns per row (the loop itself)\n' scan "$(f '%.1f' "$scan")"
for op in pgp_sym_encrypt pgp_sym_decrypt pgp_s2k_mode_1 encrypt_iv decrypt_iv hmac_sha256 seal open blind; do
	printf '   %-16s %10s ns per call, net of the scan (%s calls)\n' "$op" "$(f '%.1f' "${n2[$op]:-}")" "${c2n[$op]:-?}"
done
pgp_enc_x=$(ratio "${n2[pgp_sym_encrypt]:-}" "${n2[seal]:-}")
pgp_dec_x=$(ratio "${n2[pgp_sym_decrypt]:-}" "${n2[open]:-}")
s2k1_x=$(ratio "${n2[pgp_s2k_mode_1]:-}" "${n2[seal]:-}")
aes_enc_x=$(ratio "${n2[encrypt_iv]:-}" "${n2[seal]:-}")
aes_dec_x=$(ratio "${n2[decrypt_iv]:-}" "${n2[open]:-}")
hmac_x=$(ratio "${n2[hmac_sha256]:-}" "${n2[blind]:-}")
echo "   schedphi is $pgp_enc_x x faster sealing than pgp_sym_encrypt, $pgp_dec_x x faster opening than pgp_sym_decrypt"
echo "   schedphi is $s2k1_x x faster sealing than pgp_sym_encrypt with s2k-mode=1"
echo "   schedphi is $aes_enc_x x faster sealing than encrypt_iv, $aes_dec_x x faster opening than decrypt_iv"

# ----------------------------------------------------------- 3: throughput
echo "== 3 registration throughput as $USER_SCHED: $CLIENTS clients, $THREADS threads, ${TP_SECONDS} s a run, $ROUNDS rounds"
workloads=(plain plain_fn pgcrypto register)
declare -A tpss=() lats=() fails=()
for w in "${workloads[@]}"; do tpss[$w]='' lats[$w]='' fails[$w]=0; done
run=0
for ((r = 1; r <= ROUNDS; r++)); do
	for w in "${workloads[@]}"; do
		psql -X -q -d "$DB" -c "CHECKPOINT" >/dev/null
		# Every run gets its own range of MRN numbers, so none ever clashes.
		pgb "$w-$r" "$USER_SCHED" -c "$CLIENTS" -j "$THREADS" -T "$TP_SECONDS" -D n=0 -D clients="$CLIENTS" \
			-D base=$(((run + 1) * 100000000)) -D tenant="$TENANT" -f "$here/crypto_$w.pgbench"
		run=$((run + 1))
		tpss[$w]+="${TPS:-} "
		lats[$w]+="${LAT:-} "
		fails[$w]=$((${fails[$w]} + ${FAILED:-0}))
		printf '   round %d %-8s %8s tps  %7s ms  (%s transactions, %s failed)\n' "$r" "$w" "${TPS:-?}" "${LAT:-?}" "${TX:-?}" "${FAILED:-?}"
	done
done
# median VALUES...: the median of the numbers given, or ? if none.
median() {
	printf '%s\n' "$@" | { grep -E '^[0-9]+(\.[0-9]+)?$' || true; } | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
declare -A tps=() lat=()
for w in "${workloads[@]}"; do
	# shellcheck disable=SC2086
	tps[$w]=$(f '%.0f' "$(median ${tpss[$w]})")
	# shellcheck disable=SC2086
	lat[$w]=$(f '%.2f' "$(median ${lats[$w]})")
	[ "${fails[$w]}" -gt 0 ] && echo "   ! ${fails[$w]} $w transactions failed: SP_KEEP=1 keeps the pgbench logs"
done
echo "   median of the rounds: plain ${tps[plain]}, plain_fn ${tps[plain_fn]}, pgcrypto ${tps[pgcrypto]}, register ${tps[register]} tps"
reg_vs_pgp=$(ratio "${tps[register]}" "${tps[pgcrypto]}")

echo "== 3 inside the server, 1 session as $USER_SCHED: $LOOP_CALLS calls ($LOOP_PGP_CALLS for pgcrypto) in one" \
	"transaction, no round trip, no commit; median of 3"
declare -A c3=()
while IFS='|' read -r w n us_; do
	c3[$w]=$us_
	printf '   %-9s %8.1f us per call (%s calls)\n' "$w" "$us_" "$n"
done < <(psql -X -q -At -v ON_ERROR_STOP=1 -U "$USER_SCHED" -d "$DB" \
	-c "SELECT * FROM cbench.register_loops(3, $LOOP_CALLS, $LOOP_PGP_CALLS)" 2>"$out/register_loops.err" ||
	cat "$out/register_loops.err" >&2)
loop_x=$(ratio "${c3[pgcrypto]:-}" "${c3[register]:-}")
echo "   register_patient is $loop_x x faster than the pgcrypto version inside the server"

echo "== reading back, 1 session as $USER_SCHED: patient_record against a pgcrypto equivalent"
IFS='|' read -r rd_n rd_s rd_pn rd_p < <(psql -X -q -At -U "$USER_SCHED" -d "$DB" \
	-c "SELECT * FROM cbench.read_records(300)" 2>"$out/read.err" || cat "$out/read.err" >&2) || true
rd_s_us=$(us "${rd_s:-}")
rd_p_us=$(us "${rd_p:-}")
read_x=$(ratio "${rd_p:-}" "${rd_s:-}")
echo "   patient_record ${rd_s_us} us per record (${rd_n:-?} records), pgcrypto ${rd_p_us} us (${rd_pn:-?}): $read_x x"

# ------------------------------------------------------------------ summary
echo
echo "== summary (noisy: compare ratios, not absolute figures); $(($(date +%s) - started)) s after start"
echo
echo "| measure | figure | ratio | goal |"
echo "|---|---|---|---|"
echo "| 1 EVP AES-256-GCM encrypt, 32 bytes, in-process | $(f '%.0f' "${c1[evp_encrypt_32]:-}") ns | 1 | |"
echo "| 1 seal, 32 bytes, in-process | $(f '%.0f' "${c1[seal_32]:-}") ns | $seal_x x EVP encrypt | <= 3: $(verdict "$seal_x" '<=' 3) |"
echo "| 1 EVP AES-256-GCM decrypt, 32 bytes, in-process | $(f '%.0f' "${c1[evp_decrypt_32]:-}") ns | 1 | |"
echo "| 1 open, 32 bytes, in-process | $(f '%.0f' "${c1[open_32]:-}") ns | $open_x x EVP decrypt | <= 3: $(verdict "$open_x" '<=' 3) |"
echo "| 2 the SQL loop itself (length()), per row | $(f '%.0f' "$scan") ns | | |"
echo "| 2 pgp_sym_encrypt, 32 bytes, per call | $(us "${n2[pgp_sym_encrypt]:-}") us | $pgp_enc_x x _seal | >= 20: $(verdict "$pgp_enc_x" '>=' 20) |"
echo "| 2 pgp_sym_decrypt, per call | $(us "${n2[pgp_sym_decrypt]:-}") us | $pgp_dec_x x _open | >= 20: $(verdict "$pgp_dec_x" '>=' 20) |"
echo "| 2 pgp_sym_encrypt with s2k-mode=1 (no key stretching), per call | $(us "${n2[pgp_s2k_mode_1]:-}") us | $s2k1_x x _seal | |"
echo "| 2 encrypt_iv (AES-256-CBC), per call | $(us "${n2[encrypt_iv]:-}") us | $aes_enc_x x _seal | |"
echo "| 2 decrypt_iv, per call | $(us "${n2[decrypt_iv]:-}") us | $aes_dec_x x _open | |"
echo "| 2 schedphi._seal, per call | $(us "${n2[seal]:-}") us | 1 | |"
echo "| 2 schedphi._open, per call | $(us "${n2[open]:-}") us | 1 | |"
echo "| 2 hmac(..., 'sha256'), per call | $(us "${n2[hmac_sha256]:-}") us | $hmac_x x _blind | |"
echo "| 2 schedphi._blind, per call | $(us "${n2[blind]:-}") us | 1 | |"
echo "| 2 decryptions checked (sanity) | $roundtrip | | |"
echo "| 3 plaintext INSERT, $CLIENTS clients | ${tps[plain]} tps, ${lat[plain]} ms | 1 | |"
echo "| 3 register_patient's work without crypto, $CLIENTS clients | ${tps[plain_fn]} tps, ${lat[plain_fn]} ms | $(ratio "${tps[plain_fn]}" "${tps[plain]}") x plaintext | |"
echo "| 3 pgcrypto register (pgp_sym_encrypt + hmac), $CLIENTS clients | ${tps[pgcrypto]} tps, ${lat[pgcrypto]} ms | $(ratio "${tps[pgcrypto]}" "${tps[plain]}") x plaintext | |"
echo "| 3 schedphi.register_patient, $CLIENTS clients | ${tps[register]} tps, ${lat[register]} ms | $(ratio "${tps[register]}" "${tps[plain]}") x plaintext, $(ratio "${tps[register]}" "${tps[plain_fn]}") x without crypto, $reg_vs_pgp x pgcrypto | >= 5 x pgcrypto: $(verdict "$reg_vs_pgp" '>=' 5) |"
echo "| 3 inside the server: register_patient's work without crypto, per call | $(f '%.1f' "${c3[plain_fn]:-}") us | | |"
echo "| 3 inside the server: pgcrypto register, per call | $(f '%.1f' "${c3[pgcrypto]:-}") us | $loop_x x register_patient | |"
echo "| 3 inside the server: schedphi.register_patient, per call | $(f '%.1f' "${c3[register]:-}") us | 1 | |"
echo "| reading a record back: patient_record, 1 session | $rd_s_us us | 1 | |"
echo "| reading a record back: pgcrypto equivalent, 1 session | $rd_p_us us | $read_x x patient_record | |"
echo
echo "bench: done"

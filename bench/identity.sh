#!/usr/bin/env bash
# bash bench/identity.sh: the identity and access benchmarks.  Like
# bench/crypto.sh, it installs what is missing, builds, starts its own
# throwaway cluster (master key through schedphi.key_command), loads a
# synthetic clinic (bench/identity_setup.sql), makes an RS256, an ES256 and
# an HS256 identity provider with openssl, and measures
#
#   1  the cost of the access checks on find_slots (one practitioner, one
#      week) and on reading a week of appointments through the
#      schedphi.appointments view (about 750 rows, no purpose of use, so
#      reason is NULL), each run
#        (a) by a superuser,
#        (b) by ibench_scheduler, a login that is a scheduler member,
#        (c) by ibench_pool, a pooled login with no membership, after
#            schedphi.assume() of an HS256 token: with session scope (one
#            assume per connection, then the same statement as (a) and
#            (b)), and with transaction scope (BEGIN; assume; query;
#            COMMIT, minus the same transaction without the query), with,
#            for find_slots, the superuser measured the same way as a
#            control (BEGIN; SELECT 1; query; COMMIT, minus BEGIN;
#            SELECT 1; COMMIT);
#      with pgbench (1 client, -M prepared), and inside the server
#      (ibench.mean_us, ibench.authorize_us: no round trip); and, for
#      reference, the same week read straight from the table by the
#      superuser, with no view and no check;
#   2  schedphi.assume() per call for RS256, ES256 and HS256 (BEGIN;
#      SELECT schedphi.assume(token); COMMIT) against BEGIN; SELECT 1;
#      COMMIT.
#
# It prints figures and ratios measured in the same run and exits 0
# whatever they are: benchmarks never gate anything.  Only synthetic data
# is used; it prints timings and counts, never a field value or a token.
# Every token is made just before the run that uses it, valid for
# IDENTITY_TOKEN_LIFETIME seconds (default 600; schedphi.max_token_lifetime
# allows 900).  Takes about 3 minutes.
#
# Knobs (environment): BENCH_LATENCY_SECONDS (default 5) per pgbench run,
# BENCH_ROUNDS (default 2) rounds of every pgbench workload (the second in
# reverse order; the mean of the rounds is reported), IDENTITY_REPS
# (default 3) repetitions of the server-side loops (median),
# IDENTITY_SLOTS_CALLS (1000), IDENTITY_WEEK_CALLS (6) and
# IDENTITY_AUTH_CALLS (20000) calls per loop.  SP_KEEP=1 keeps the cluster
# directory, with the pgbench logs in its bench/ folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

LAT_SECONDS=${BENCH_LATENCY_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-2}
REPS=${IDENTITY_REPS:-3}
SLOTS_CALLS=${IDENTITY_SLOTS_CALLS:-1000}
WEEK_CALLS=${IDENTITY_WEEK_CALLS:-6}
AUTH_CALLS=${IDENTITY_AUTH_CALLS:-20000}
LIFETIME=${IDENTITY_TOKEN_LIFETIME:-600}
DB=schedphi_identity
SCHED=ibench_scheduler
POOL=ibench_pool

started=$(date +%s)
bench_cluster
keys=$SP_TMP/identity-keys
mkdir -p "$keys"
chmod 700 "$keys"



# sub A B: A - B, or empty when either is missing.
sub() { if num "${1:-}" && num "${2:-}"; then calc '%.6f' "$1 - $2"; fi; }
# median VALUES...: the median of the numbers given, or empty if none.
median() {
	printf '%s\n' "$@" | { grep -E '^-?[0-9]+(\.[0-9]+)?$' || true; } | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else if (NR) print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# mean VALUES...: the mean of the numbers given, or empty if none.
mean() {
	printf '%s\n' "$@" | { grep -E '^-?[0-9]+(\.[0-9]+)?$' || true; } |
		awk '{ s += $1; n++ } END { if (n) printf "%.6f\n", s / n }'
}

# pgb (replaces bench/lib.sh's) NAME USER PGBENCH-ARGS...: run pgbench with 1 client and prepared
# statements against $DB; its output goes to $out/NAME.log.  Sets TPS, LAT
# (ms per transaction, from the tps: one client), TX (transactions) and
# FAILED, or leaves them empty when the run produced no figure.
pgb() {
	local name=$1 user=$2
	shift 2
	local log="$out/$name.log"
	if ! pgbench -n -M prepared -c 1 -T "$LAT_SECONDS" -U "$user" "$@" "$DB" >"$log" 2>&1; then
		echo "   ! pgbench $name exited non-zero:" >&2
		grep -Ei 'error|abort|fatal' "$log" | head -5 | sed 's/^/   | /' >&2 || true
	fi
	TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log" | tail -1)
	LAT=
	num "$TPS" && [ "$(calc '%d' "$TPS > 0")" = 1 ] && LAT=$(calc '%.6f' "1000 / $TPS")
	TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log" | tail -1)
	FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log" | tail -1)
	if grep -q 'aborted' "$log"; then
		echo "   ! pgbench $name: the client aborted; its figures are incomplete" >&2
	fi
}


# ------------------------------------------------------------------ machine
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
ossl=$(openssl version 2>/dev/null | cut -d' ' -f1-2 || echo 'OpenSSL ?')
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}" || true)
commit=$(git -C "$SP_ROOT" -c safe.directory="$SP_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
dirty=
[ -n "$(git -C "$SP_ROOT" -c safe.directory="$SP_ROOT" status --porcelain -- src 2>/dev/null)" ] && dirty=', with uncommitted changes in src/'
echo "== machine: $(nproc) cores (${cpu:-unknown cpu}), $mem, ${os:-unknown OS}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(psql -X -At -c 'SELECT version()' | cut -d, -f1), $ossl, synchronous_commit $(psql -X -At -c 'SHOW synchronous_commit')," \
	"schedphi at $commit$dirty, $(date -u '+%Y-%m-%d %H:%M UTC')"

# -------------------------------------------------------------------- setup
echo "== loading the synthetic clinic (bench/identity_setup.sql)"
t0=$(date +%s)
bench_load "$here/identity_setup.sql"
TENANT=$(q -c "SELECT tenant FROM ibench.clinic")
PRAC=$(q -c "SELECT id FROM ibench.prac WHERE n = 1")
echo "   $(q -c "SELECT count(*) FROM schedphi.appointment") appointments over 6 weeks," \
	"$(q -c "SELECT count(*) FROM schedphi.appointment WHERE during && tstzrange('2030-01-14 05:00+00', '2030-01-21 05:00+00')")" \
	"in the measured week; loaded in $(($(date +%s) - t0)) s"

# ------------------------------------------------------ identity providers
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/rsa.pem" 2>/dev/null
openssl pkey -in "$keys/rsa.pem" -pubout -out "$keys/rsa.pub"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/ec.pem" 2>/dev/null
openssl pkey -in "$keys/ec.pem" -pubout -out "$keys/ec.pub"
openssl rand -hex 32 >"$keys/hs.hex"
hsb64=$(perl -e 'print pack("H*", $ARGV[0])' "$(cat "$keys/hs.hex")" | base64 -w0)
q -c "SELECT schedphi.add_issuer('$TENANT', 'https://rs.idp.example', 'schedphi', \$k\$$(cat "$keys/rsa.pub")\$k\$)" \
	-c "SELECT schedphi.add_issuer('$TENANT', 'https://es.idp.example', 'schedphi', \$k\$$(cat "$keys/ec.pub")\$k\$)" \
	-c "SELECT schedphi.add_issuer('$TENANT', 'https://hs.idp.example', 'schedphi', 'hs256:$hsb64')" >/dev/null

# token ALG: a fresh scheduler token for the tenant from the ALG issuer
# (RS256, ES256 or HS256), issued now, valid for $LIFETIME seconds, with a
# second factor in amr.
token() {
	local alg=$1 iss h p input sig now
	now=$(date +%s)
	case $alg in
		RS256) iss=https://rs.idp.example ;;
		ES256) iss=https://es.idp.example ;;
		HS256) iss=https://hs.idp.example ;;
	esac
	h=$(printf '{"alg":"%s","typ":"JWT"}' "$alg" | b64url)
	p=$(printf '{"iss":"%s","sub":"ibench-pool-user","aud":"schedphi","iat":%d,"exp":%d,"amr":["pwd","otp"],"schedphi_tenant":"%s","schedphi_role":"scheduler"}' \
		"$iss" "$now" $((now + LIFETIME)) "$TENANT" | b64url)
	input="$h.$p"
	case $alg in
		RS256) sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$keys/rsa.pem" | b64url) ;;
		HS256) sig=$(printf '%s' "$input" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(cat "$keys/hs.hex")" -binary | b64url) ;;
		ES256)
			# openssl signs in DER; JOSE wants raw R||S, 32 bytes each
			sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$keys/ec.pem" |
				openssl asn1parse -inform DER 2>/dev/null | sed -n 's/.*INTEGER *://p' |
				perl -ne 'chomp; $_ = ("0" x 64 . $_); print substr($_, -64);' |
				perl -e 'print pack("H*", <STDIN>)' | b64url) ;;
	esac
	printf '%s.%s' "$input" "$sig"
}

# run_as WHO SQL: run SQL as the superuser (su), the scheduler member (sched)
# or the pooled login inside a transaction that assumed a fresh HS256
# token (pool); prints the last line of output.
run_as() {
	local who=$1 sql=$2
	case $who in
		su) psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$sql" ;;
		sched) psql -X -q -At -v ON_ERROR_STOP=1 -U "$SCHED" -d "$DB" -c "$sql" ;;
		pool) psql -X -q -At -v ON_ERROR_STOP=1 -U "$POOL" -d "$DB" -c "BEGIN" \
			-c "SELECT schedphi.assume('$(token HS256)') IS NOT NULL" -c "$sql" -c "COMMIT" ;;
	esac 2>>"$out/as.err" | tail -1 || true
}

echo "== identity providers: RS256 (RSA 2048), ES256 (P-256), HS256 (32-byte secret), tokens valid $LIFETIME s"
for alg in RS256 ES256 HS256; do
	got=$(psql -X -q -At -U "$POOL" -d "$DB" -c "BEGIN" \
		-c "SELECT (schedphi.assume('$(token $alg)') ->> 'via') || ' ' || (schedphi.whoami() ->> 'role')" \
		-c "COMMIT" 2>&1 | tail -1)
	if [ "$got" = "token scheduler" ]; then
		echo "   sanity: a $alg token is accepted: the pooled login acts as a scheduler"
	else
		echo "   ! sanity: a $alg token was not accepted; what follows for $alg is worthless" >&2
	fi
done
# Without a token the pooled login may do nothing: the checks are live.
denied=$(psql -X -q -At -U "$POOL" -d "$DB" -c "SELECT count(*) FROM schedphi.find_slots(ARRAY['$PRAC'::uuid],
	tstzrange('2030-01-14 05:00+00', '2030-01-21 05:00+00'), interval '15 minutes')" 2>&1 | grep -c 'permission denied' || true)
unseen=$(psql -X -q -At -U "$POOL" -d "$DB" -c "SELECT count(*) FROM schedphi.appointments WHERE tenant = '$TENANT'" 2>&1 || true)
if [ "$denied" = 1 ] && [ "$unseen" = 0 ]; then
	echo "   sanity: without a token the pooled login is refused find_slots and sees no appointment"
else
	echo "   ! sanity: without a token the pooled login got through (find_slots refused: $denied, appointments seen: $unseen)" >&2
fi

# ---------------------------------------------- 1: inside the server, loops
echo "== 1 inside the server (no round trip): find_slots $SLOTS_CALLS calls, week read $WEEK_CALLS calls," \
	"_authorize $AUTH_CALLS calls per loop; median of $REPS (alternating the order)"
declare -A loop=() seen=()
for ((r = 1; r <= REPS; r++)); do
	whos=(su sched pool)
	((r % 2 == 0)) && whos=(pool sched su)
	for who in "${whos[@]}"; do
		for what in slots week; do
			IFS='|' read -r us n pats reasons < <(run_as "$who" \
				"SELECT * FROM ibench.mean_us('$what', $([ $what = slots ] && echo "$SLOTS_CALLS" || echo "$WEEK_CALLS"), '$TENANT', '$PRAC')") || true
			loop[$who.$what]+="${us:-} "
			seen[$who.$what]="${n:-?} rows, ${pats:-?} with a patient id, ${reasons:-?} with a reason"
		done
		loop[$who.auth]+="$(run_as "$who" "SELECT ibench.authorize_us($AUTH_CALLS, '$TENANT')") "
	done
	IFS='|' read -r us n pats reasons < <(run_as su "SELECT * FROM ibench.mean_us('table', $WEEK_CALLS, '$TENANT', '$PRAC')") || true
	loop[su.table]+="${us:-} "
	seen[su.table]="${n:-?} rows, ${pats:-?} with a patient id"
done
[ -s "$out/as.err" ] && { echo "   ! errors in the server-side loops:" >&2; head -5 "$out/as.err" | sed 's/^/   | /' >&2; }
declare -A srv=()
for k in "${!loop[@]}"; do
	# shellcheck disable=SC2086
	srv[$k]=$(median ${loop[$k]})
done
for who in su sched pool; do
	printf '   %-5s find_slots %8s us (of which _authorize %6s us), week read %9s us   [%s; %s]\n' "$who" \
		"$(f '%.1f' "${srv[$who.slots]:-}")" "$(f '%.2f' "${srv[$who.auth]:-}")" "$(f '%.0f' "${srv[$who.week]:-}")" \
		"slots: ${seen[$who.slots]%%,*}" "week: ${seen[$who.week]}"
done
printf '   su    week read straight from the table (no view, no check): %s us   [%s]\n' \
	"$(f '%.0f' "${srv[su.table]:-}")" "${seen[su.table]}"
same=yes
for who in sched pool; do
	[ "${seen[$who.slots]}" = "${seen[su.slots]}" ] || same=no
	[ "${seen[$who.week]}" = "${seen[su.week]}" ] || same=no
done
[ "${seen[su.week]%%,*}" = "${seen[su.table]%%,*}" ] || same=no
if [ "$same" = yes ]; then
	echo "   sanity: all three see the same slots and the same rows (patient ids visible, no reason without a purpose)"
else
	echo "   ! sanity: the three identities do not see the same answers: the timings compare different work" >&2
fi

# ------------------------------------------------------- pgbench workloads
# name user script [extra pgbench args]; the token, when there is one, is
# made just before the run.
workloads=(
	"begin $POOL identity_begin.pgbench"
	"assume_hs256 $POOL identity_assume.pgbench token=HS256"
	"assume_rs256 $POOL identity_assume.pgbench token=RS256"
	"assume_es256 $POOL identity_assume.pgbench token=ES256"
	"slots_su postgres identity_slots.pgbench"
	"slots_sched $SCHED identity_slots.pgbench"
	"slots_session $POOL identity_slots_session.pgbench token=HS256"
	"slots_tx $POOL identity_slots_tx.pgbench token=HS256"
	"slots_su_tx postgres identity_slots_tx_select1.pgbench"
	"week_table postgres identity_week_table.pgbench"
	"week_su postgres identity_week.pgbench"
	"week_sched $SCHED identity_week.pgbench"
	"week_session $POOL identity_week_session.pgbench token=HS256"
	"week_tx $POOL identity_week_tx.pgbench token=HS256"
)
echo "== pgbench: 1 client, -M prepared, -T $LAT_SECONDS a run, $ROUNDS rounds (even rounds in reverse order)"
declare -A lats=() fails=() txs=()
for ((r = 1; r <= ROUNDS; r++)); do
	order=("${workloads[@]}")
	if ((r % 2 == 0)); then
		order=()
		for ((i = ${#workloads[@]} - 1; i >= 0; i--)); do order+=("${workloads[$i]}"); done
	fi
	for wl in "${order[@]}"; do
		read -r name user script tok <<<"$wl"
		args=(-D prac="$PRAC" -D tenant="$TENANT" -D assumed=0 -f "$here/$script")
		[ -n "${tok:-}" ] && args+=(-D token="$(token "${tok#token=}")")
		pgb "$name-$r" "$user" "${args[@]}"
		lats[$name]+="${LAT:-} "
		txs[$name]+="${TX:-?} "
		fails[$name]=$((${fails[$name]:-0} + ${FAILED:-0}))
		printf '   round %d %-14s %10s ms per transaction  (%s transactions, %s failed)\n' "$r" "$name" \
			"$(f '%.3f' "${LAT:-}")" "${TX:-?}" "${FAILED:-?}"
	done
done
declare -A L=()
for wl in "${workloads[@]}"; do
	read -r name _ <<<"$wl"
	# shellcheck disable=SC2086
	L[$name]=$(mean ${lats[$name]})
	[ "${fails[$name]}" -gt 0 ] && echo "   ! ${fails[$name]} $name transactions failed: SP_KEEP=1 keeps the pgbench logs" >&2
done

# Per-call figures, in ms.  (c) with transaction scope: the transaction
# with the query minus the same transaction without it (assume_hs256).
slots_a=${L[slots_su]}
slots_b=${L[slots_sched]}
slots_cs=${L[slots_session]}
slots_ct=$(sub "${L[slots_tx]}" "${L[assume_hs256]}")
slots_at=$(sub "${L[slots_su_tx]}" "${L[begin]}")
week_0=${L[week_table]}
week_a=${L[week_su]}
week_b=${L[week_sched]}
week_cs=${L[week_session]}
week_ct=$(sub "${L[week_tx]}" "${L[assume_hs256]}")
declare -A assume_net=()
for alg in hs256 rs256 es256; do assume_net[$alg]=$(sub "${L[assume_$alg]}" "${L[begin]}"); done
# us MS: milliseconds shown as microseconds, or ?.
us() { if num "${1:-}"; then calc '%.1f' "$1 * 1000"; else echo '?'; fi; }
ms() { if num "${1:-}"; then calc '%.2f' "$1"; else echo '?'; fi; }
# usms US: microseconds shown as milliseconds, or ?.
usms() { if num "${1:-}"; then calc '%.2f' "$1 / 1000"; else echo '?'; fi; }

r_sb=$(ratio "$slots_b" "$slots_a")
r_ss=$(ratio "$slots_cs" "$slots_a")
r_st=$(ratio "$slots_ct" "$slots_a")
r_stt=$(ratio "$slots_ct" "$slots_at")
r_wb=$(ratio "$week_b" "$week_a")
r_ws=$(ratio "$week_cs" "$week_a")
r_wt=$(ratio "$week_ct" "$week_a")
s_sb=$(ratio "${srv[sched.slots]:-}" "${srv[su.slots]:-}")
s_sp=$(ratio "${srv[pool.slots]:-}" "${srv[su.slots]:-}")
s_wb=$(ratio "${srv[sched.week]:-}" "${srv[su.week]:-}")
s_wp=$(ratio "${srv[pool.week]:-}" "${srv[su.week]:-}")

# ------------------------------------------------------------------ summary
echo
echo "== summary (noisy: compare ratios, not absolute figures); $(($(date +%s) - started)) s after start"
echo
echo "| measure | figure | ratio | goal |"
echo "|---|---|---|---|"
echo "| 1 find_slots, (a) superuser, per call (client) | $(us "$slots_a") us | 1 | |"
echo "| 1 find_slots, (b) scheduler member | $(us "$slots_b") us | $r_sb x (a) | <= 1.2: $(verdict "$r_sb" '<=' 1.2) |"
echo "| 1 find_slots, (c) pooled login, HS256 token, session scope | $(us "$slots_cs") us | $r_ss x (a) | <= 1.2: $(verdict "$r_ss" '<=' 1.2) |"
echo "| 1 find_slots, (c) pooled login, HS256 token, transaction scope, net of assume | $(us "$slots_ct") us | $r_st x (a) | <= 1.2: $(verdict "$r_st" '<=' 1.2) |"
echo "| 1 find_slots, (a) superuser, the same transaction shape (control), net of BEGIN; SELECT 1; COMMIT | $(us "$slots_at") us | (c) transaction scope = $r_stt x this | <= 1.2: $(verdict "$r_stt" '<=' 1.2) |"
echo "| 1 find_slots inside the server, (a) / (b) / (c) | $(f '%.1f' "${srv[su.slots]:-}") / $(f '%.1f' "${srv[sched.slots]:-}") / $(f '%.1f' "${srv[pool.slots]:-}") us | (b) $s_sb x, (c) $s_sp x (a) | |"
echo "| 1 find_slots' check (_authorize) inside the server, (a) / (b) / (c) | $(f '%.2f' "${srv[su.auth]:-}") / $(f '%.2f' "${srv[sched.auth]:-}") / $(f '%.2f' "${srv[pool.auth]:-}") us | | |"
echo "| 1 week read straight from the table, superuser, no check (reference) | $(ms "$week_0") ms | $(ratio "$week_0" "$week_a") x (a) | |"
echo "| 1 week read through the view, (a) superuser, per call (client) | $(ms "$week_a") ms | 1 | |"
echo "| 1 week read, (b) scheduler member | $(ms "$week_b") ms | $r_wb x (a) | <= 1.2: $(verdict "$r_wb" '<=' 1.2) |"
echo "| 1 week read, (c) pooled login, HS256 token, session scope | $(ms "$week_cs") ms | $r_ws x (a) | <= 1.2: $(verdict "$r_ws" '<=' 1.2) |"
echo "| 1 week read, (c) pooled login, HS256 token, transaction scope, net of assume | $(ms "$week_ct") ms | $r_wt x (a) | <= 1.2: $(verdict "$r_wt" '<=' 1.2) |"
echo "| 1 week read inside the server, table / (a) / (b) / (c) | $(usms "${srv[su.table]:-}") / $(usms "${srv[su.week]:-}") / $(usms "${srv[sched.week]:-}") / $(usms "${srv[pool.week]:-}") ms | (b) $s_wb x, (c) $s_wp x (a) | |"
echo "| 2 BEGIN; SELECT 1; COMMIT, per transaction | $(us "${L[begin]}") us | 1 | |"
for alg in hs256 rs256 es256; do
	echo "| 2 BEGIN; SELECT schedphi.assume(${alg^^} token); COMMIT | $(us "${L[assume_$alg]}") us | $(ratio "${L[assume_$alg]}" "${L[begin]}") x baseline | |"
done
for alg in hs256 rs256 es256; do
	echo "| 2 assume(), ${alg^^}, per call, net of the baseline | $(us "${assume_net[$alg]}") us | | |"
done
echo
echo "bench: done"

#!/usr/bin/env bash
# make test: install what is missing, build, start a throwaway cluster and
# run every suite: pg_regress (sql/ -> expected/), pgTAP (test/tap), and the
# concurrency race (test/concurrency).  Ends with "N passed, N failed" and
# exits non-zero on any failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/setup.sh"
. "$here/lib/cluster.sh"

sp_install_packages || exit 1
sp_build_install || exit 1
cluster_start || exit 1

passed=0
failed=0
failures=()

note() {
	if [ "$1" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$2"); fi
}

# counted SUITE PREFIX LABEL SCRIPT...: run a suite that prints
# "PREFIX: ok - ..." and "PREFIX: NOT OK - ..." lines; count each line
counted() {
	local prefix=$1 label=$2 out rc n_ok n_bad
	shift 2
	out=$("$@" 2>&1) && rc=0 || rc=$?
	echo "$out"
	n_ok=$(grep -c "^$prefix: ok - " <<<"$out" || true)
	n_bad=$(grep -c "^$prefix: NOT OK - " <<<"$out" || true)
	passed=$((passed + n_ok))
	failed=$((failed + n_bad))
	[ "$n_bad" -gt 0 ] && failures+=("$label: $n_bad checks")
	if [ "$rc" -ne 0 ] && [ "$n_bad" -eq 0 ]; then note fail "$label (did not build or run)"; fi
	return 0
}

# ---------------------------------------------------------------- pg_regress
echo "== pg_regress"
pgxs_dir=$(dirname "$("$PG_CONFIG" --pgxs)")
regress_tests=$(cd "$SP_ROOT/sql" && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
mkdir -p "$SP_TMP/regress"
"$pgxs_dir/../../src/test/regress/pg_regress" --host="$PGHOST" --port="$PGPORT" \
	--user=postgres --dbname=schedphi_regress --inputdir="$SP_ROOT" --outputdir="$SP_TMP/regress" \
	--load-extension=btree_gist --load-extension=schedphi $regress_tests >"$SP_TMP/regress/out.txt" 2>&1
regress_rc=$?
cat "$SP_TMP/regress/out.txt"
regress_ok=$(grep -Ec '\.\.\. +ok' "$SP_TMP/regress/out.txt")
regress_bad=$(grep -Eic '\.\.\. +failed' "$SP_TMP/regress/out.txt")
passed=$((passed + regress_ok))
failed=$((failed + regress_bad))
[ "$regress_bad" -gt 0 ] && failures+=("pg_regress: $regress_bad tests")
if [ "$regress_rc" -ne 0 ] && [ "$regress_bad" -eq 0 ]; then note fail "pg_regress did not run"; fi
[ -f "$SP_TMP/regress/regression.diffs" ] && cat "$SP_TMP/regress/regression.diffs"

# --------------------------------------------------------------------- pgTAP
echo "== pgTAP"
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE schedphi_tap" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d schedphi_tap \
	-c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION schedphi CASCADE" \
	-f "$here/lib/fixtures.sql" >/dev/null 2>&1 || { echo "could not prepare the pgTAP database" >&2; note fail "pgTAP setup"; }
. "$here/lib/samples.sh"
sp_load_samples schedphi_tap || { echo "could not load the sample messages" >&2; note fail "pgTAP samples"; }
if pg_prove -v -d schedphi_tap "$here"/tap/*.sql >"$SP_TMP/tap.txt" 2>&1; then tap_rc=0; else tap_rc=1; fi
grep -Ev '^\s*ok [0-9]' "$SP_TMP/tap.txt"
tap_ok=$(grep -Ec '^\s*ok [0-9]' "$SP_TMP/tap.txt")
tap_bad=$(grep -Ec '^\s*not ok [0-9]' "$SP_TMP/tap.txt")
passed=$((passed + tap_ok))
failed=$((failed + tap_bad))
if [ "$tap_rc" -ne 0 ] && [ "$tap_bad" -eq 0 ]; then
	note fail "pgTAP (a file died or planned a different number of tests)"
fi
[ "$tap_bad" -gt 0 ] && failures+=("pgTAP: $tap_bad assertions")

# --------------------------------------------------------------- concurrency
echo "== concurrency"
for t in "$here"/concurrency/*.sh; do
	if bash "$t"; then note ok; else note fail "concurrency $(basename "$t")"; fi
done

# ------------------------------------------------------------- bulk import
echo "== bulk import (COPY into patient_import: all or nothing, line numbers, no values in errors)"
if bash "$here/import.sh"; then note ok; else note fail "import"; fi

# ------------------------------------------------------------- flat cost
echo "== flat cost (a new database's first session: rows read per call do not grow)"
if bash "$here/flatcost.sh"; then note ok; else note fail "flat cost"; fi
if FLATCOST_VACUUM=1 bash "$here/flatcost.sh"; then note ok; else note fail "flat cost after VACUUM ANALYZE"; fi

# ------------------------------------------------------------- documentation
echo "== documentation"
for d in "$SP_ROOT/README.md" "$SP_ROOT"/docs/*.md; do
	grep -q '^```sql' "$d" || continue
	if bash "$here/docs.sh" "$d"; then note ok; else note fail "docs $(basename "$d")"; fi
done

# ------------------------------------------------------------------ tokens
echo "== tokens (RS256, ES256, HS256 made with openssl; scopes; forgery; refusals)"
if bash "$here/tokens.sh"; then note ok; else note fail "tokens"; fi

# ----------------------------------------------------------------- pooling
echo "== pooling (a real pgbouncer in transaction mode, pool of 2: session scope refused, no identity crosses clients)"
if bash "$here/pooling.sh"; then note ok; else note fail "pooling"; fi

# -------------------------------------------------------------- audit ledger
echo "== audit ledger (rollbacks, denials, tampering, file edits, digests, fail-closed, purge, crash)"
. "$here/audit.sh"
audit_check
passed=$((passed + AUDIT_PASSED))
failed=$((failed + AUDIT_FAILED))
[ "$AUDIT_FAILED" -gt 0 ] && failures+=("audit: $AUDIT_FAILED checks")
[ "$AUDIT_PASSED" -eq 0 ] && [ "$AUDIT_FAILED" -eq 0 ] && note fail "audit (did not run)"

# ------------------------------------------------------ keys, leaks, fuzzing
echo "== dump and restore of the ledger (full, by table, by schema)"
if bash "$here/dump.sh"; then note ok; else note fail "dump"; fi

echo "== keys (restarts with changed, missing and malformed master keys)"
. "$here/keys.sh"
if keys_check; then note ok; else note fail "keys"; fi

echo "== leaks (canaries in files, WAL, dumps and the server log)"
. "$here/leak.sh"
if leak_check; then note ok; else note fail "leaks"; fi

echo "== codecs (C, no server: HL7 v2 against the public samples in test/samples)"
counted codec codecs bash "$here/codec/run.sh"

echo "== FHIR R4 (schedphi's resources through Medplum's validator, from npm)"
counted fhir FHIR bash "$here/fhir.sh"

echo "== schedphi-agent (MLLP in and out, TLS; Medplum's HL7 client and server from npm)"
counted agent agent bash "$here/agent.sh"

echo "== schedphi-agent deliver (patient messages: Debian's aiosmtpd with STARTTLS, Python's HTTPS server)"
counted deliver deliver bash "$here/deliver.sh"

echo "== compliance report (its HTML page in headless Chromium, from Debian)"
counted report "compliance report" bash "$here/report.sh"

echo "== check_config (a cluster configured badly on purpose and one configured well, with TLS)"
counted config check_config bash "$here/config.sh"

echo "== fuzz (libFuzzer, ${FUZZ_SECONDS:=15}s per harness; fhir_ingest under hostile bundles)"
if FUZZ_SECONDS=$FUZZ_SECONDS bash "$here/fuzz/run.sh"; then note ok; else note fail "fuzz"; fi
if FHIR_FUZZ_CASES=${FHIR_FUZZ_CASES:-1500} bash "$here/fuzz/fhir_ingest.sh"; then note ok; else note fail "fuzz fhir_ingest"; fi

# ----------------------------------------------------------------- load mode
echo "== load modes"
. "$here/loadmode.sh"
if loadmode_check; then note ok; else note fail "not preloaded"; fi

# --------------------------------------------------------------------- Citus
# its own cluster (a coordinator and two workers): the main one stops first
echo "== Citus (a coordinator and two workers)"
cluster_stop
bash "$here/citus.sh" >"${TMPDIR:-/tmp}/schedphi-citus.$$.txt" 2>&1
citus_rc=$?
cat "${TMPDIR:-/tmp}/schedphi-citus.$$.txt"
citus_ok=$(grep -c '^citus: ok - ' "${TMPDIR:-/tmp}/schedphi-citus.$$.txt")
citus_bad=$(grep -c '^citus: NOT OK - ' "${TMPDIR:-/tmp}/schedphi-citus.$$.txt")
rm -f "${TMPDIR:-/tmp}/schedphi-citus.$$.txt"
passed=$((passed + citus_ok))
failed=$((failed + citus_bad))
[ "$citus_bad" -gt 0 ] && failures+=("Citus: $citus_bad checks")
if [ "$citus_rc" -ne 0 ] && [ "$citus_rc" -ne 3 ] && [ "$citus_bad" -eq 0 ]; then note fail "Citus suite did not run"; fi

echo
if [ "$failed" -gt 0 ]; then
	printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

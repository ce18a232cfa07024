# Sourced by the benchmark scripts: the throwaway cluster, and small helpers for
# figures that may be missing (a failed run prints ? rather than stopping).

bench_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$bench_lib_dir/../test/lib/setup.sh"
. "$bench_lib_dir/../test/lib/cluster.sh"

# bench_cluster [extra postgresql.conf lines...]: install what is missing,
# build, install, start a throwaway cluster (stopped on exit), and make
# $out, the folder for pgbench logs.
bench_cluster() {
	sp_install_packages
	sp_build_install
	cluster_start "$@"
	out=$SP_TMP/bench
	mkdir -p "$out"
	chmod 755 "$out"
}

# bench_load [-v NAME=VALUE ...] FILE...: create $DB and load the files
# into it in order, with the -v settings for each; on failure print the
# log and stop the benchmark (the cluster is stopped on exit).
bench_load() {
	local vars=() files=()
	while [ $# -gt 0 ]; do
		if [ "$1" = -v ]; then vars+=(-v "$2"); shift 2; else files+=("$1"); shift; fi
	done
	psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null
	local file
	: >"$out/setup.log"
	for file in "${files[@]}"; do
		psql -X -q -v ON_ERROR_STOP=1 "${vars[@]}" -d "$DB" -f "$file" >>"$out/setup.log" 2>&1 || {
			cat "$out/setup.log" >&2
			echo "bench: setup failed ($(basename "$file"))" >&2
			exit 1
		}
	done
}

# Is $1 a number?
num() { [[ ${1:-} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; }

# A float expression, printed with the given format: calc '%.2f' '1/3'.
calc() {
	awk "BEGIN { v = ($2); printf \"$1\", v }" </dev/null
}

# ratio A B: A / B, or ? when either is missing.
ratio() { if num "$1" && num "$2" && [ "$(calc '%d' "$2 > 0")" = 1 ]; then calc '%.2f' "$1 / $2"; else echo '?'; fi; }

# verdict VALUE OP LIMIT: met, missed, or ? when VALUE is missing.
verdict() {
	if ! num "$1"; then echo '?'; elif [ "$(calc '%d' "$1 $2 $3")" = 1 ]; then echo met; else echo missed; fi
}

# f FORMAT VALUE: VALUE formatted, or ? when it is missing.
f() { if num "${2:-}"; then calc "$1" "$2"; else echo '?'; fi; }

# pgb NAME USER PGBENCH-ARGS...: run pgbench against $DB with prepared
# statements; its output goes to $out/NAME.log.  Sets TPS, LAT (ms per
# transaction), TX (transactions) and FAILED, or leaves them empty when the
# run produced no figure.  Never fails the script.
pgb() {
	local name=$1 user=$2
	shift 2
	local log="$out/$name.log"
	if ! pgbench -n -M prepared -U "$user" "$@" "$DB" >"$log" 2>&1; then
		echo "   ! pgbench $name exited non-zero:" >&2
		grep -Ei 'error|abort|fatal' "$log" | head -5 | sed 's/^/   | /' >&2 || true
	fi
	TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log" | tail -1)
	LAT=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$log" | tail -1)
	TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log" | tail -1)
	FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log" | tail -1)
	if grep -q 'aborted' "$log"; then
		echo "   ! pgbench $name: some clients aborted; its figures are incomplete" >&2
	fi
}

# q ARGS...: psql on the benchmark database, unaligned, stop on error.
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

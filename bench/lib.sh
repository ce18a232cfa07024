# Sourced by the benchmark scripts after they set DB: small helpers for
# figures that may be missing (a failed run prints ? rather than stopping).

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

# q ARGS...: psql on the benchmark database, unaligned, stop on error.
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

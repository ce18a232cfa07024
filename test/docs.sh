#!/usr/bin/env bash
# Documentation must run.  For each Markdown file given, run its ```sql
# blocks in order, as one psql session in a fresh database, and check that
# the errors raised are exactly the "--> ERROR <SQLSTATE>: <message>" lines
# the document shows, in order ("<uuid>" stands for any uuid).  Needs the
# PGHOST/PGPORT/PGUSER of a running cluster.
set -uo pipefail

fail=0
for doc in "$@"; do
	name=$(basename "$doc" .md)
	db="schedphi_doc_$(echo "$name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '_')"
	work=$(mktemp -d)
	awk '/^```sql[[:space:]]*$/ {f = 1; next} /^```/ {f = 0} f' "$doc" >"$work/doc.sql"
	grep -E '^--> ERROR [0-9A-Z]{5}: ' "$doc" | sed 's/^--> ERROR //' >"$work/want"
	psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1 || { echo "docs: cannot create $db"; fail=1; continue; }
	{
		echo "SET client_min_messages = warning;"
		echo "CREATE EXTENSION IF NOT EXISTS schedphi CASCADE;"
		echo "\\set VERBOSITY verbose"
		cat "$work/doc.sql"
	} | psql -X -q -d "$db" >"$work/out" 2>"$work/err"
	grep -E '^(psql:[^ ]* )?ERROR:  [0-9A-Z]{5}: ' "$work/err" | sed -E 's/^(psql:[^ ]* )?ERROR:  //' >"$work/got"
	if python3 - "$work/want" "$work/got" <<'PY'
import re, sys
want = [l.rstrip("\n") for l in open(sys.argv[1])]
got = [l.rstrip("\n") for l in open(sys.argv[2])]
ok = len(want) == len(got)
for i, w in enumerate(want):
    pat = "^" + re.escape(w).replace(re.escape("<uuid>"), "[0-9a-f]{8}-[0-9a-f-]{27}") + "$"
    g = got[i] if i < len(got) else "(nothing)"
    if not re.match(pat, g):
        ok = False
        print("  expected: " + w + "\n  raised:   " + g)
for g in got[len(want):]:
    print("  unexpected error: " + g)
sys.exit(0 if ok else 1)
PY
	then
		echo "docs: ok - $doc runs ($(wc -l <"$work/want") documented errors raised as shown)"
	else
		echo "docs: NOT OK - $doc"
		fail=1
	fi
	psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
	rm -rf "$work"
done
exit $fail

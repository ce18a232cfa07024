#!/usr/bin/env bash
# COPY schedphi.patient_import FROM ... as a DBA or an interface engine runs
# it (psql \copy, CSV with a header): all or nothing per COPY; a bad row
# fails the COPY naming its line and the field at fault, never a value, in
# the error the client sees and in the server log; rows past a batch
# boundary (1,000) are named by their own line.  Synthetic canaries only.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -uo pipefail

db=schedphi_import
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
fail=0
count=0
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
as_desk() { psql -X -q -At -U imp_desk -d "$db" "$@" 2>&1; }
ok() {
	count=$((count + 1))
	if [ "$2" = "$3" ]; then echo "import: ok - $1"; else echo "import: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}

psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "DROP ROLE IF EXISTS imp_desk" -c "CREATE ROLE imp_desk LOGIN" \
	-c "CREATE DATABASE $db" >/dev/null 2>&1
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
T=$(q -c "SELECT schedphi.create_tenant('Import Clinic', 'UTC')")
q -c "SELECT schedphi.add_member('$T', 'imp_desk', 'scheduler')" >/dev/null

# rows: N synthetic patients; the canary is in every field of line BAD
rows() {	# rows FILE N [BAD-LINE BAD-FIELD BAD-VALUE]
	python3 - "$@" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
bad = (int(sys.argv[3]), sys.argv[4], sys.argv[5]) if len(sys.argv) > 3 else None
cols = ["given", "family", "birth_date", "phone", "email", "mrn", "zip"]
with open(path, "w") as f:
    f.write(",".join(cols) + "\n")
    for i in range(1, n + 1):
        r = {"given": "Zqximpgiven%d" % i, "family": "Zqximpfamily", "birth_date": "19%02d-0%d-1%d" % (50 + i % 50, 1 + i % 9, i % 9),
             "phone": "555-07%05d" % i, "email": "zqximp%d@example.org" % i, "mrn": "ZQXIMP-%d" % i, "zip": "0%04d" % (2100 + i % 800)}
        if bad and bad[0] == i + 1:     # line numbers count the header
            r[bad[1]] = bad[2]
        f.write(",".join(r[c] for c in cols) + "\n")
PY
}
copy() {	# copy FILE -> psql's output (with its COPY n)
	psql -X -At -U imp_desk -d "$db" 2>&1 -c "\\copy schedphi.patient_import (given, family, birth_date, phone, email, mrn, zip) FROM '$1' WITH (FORMAT csv, HEADER)"
}
patients() { q -c "SELECT count(*) FROM schedphi.patient"; }

rows "$work/good.csv" 2500
ok "a COPY of 2,500 rows registers 2,500 patients" "$(copy "$work/good.csv")" "COPY 2500"
ok "all of them" "$(patients)" 2500

# a bad value on line 1,733 (past the first batch of 1,000 rows)
rows "$work/bad_phone.csv" 2500 1733 phone "Zqxcanaryphone"
sed -i 's/ZQXIMP-/ZQXPHONE-/' "$work/bad_phone.csv"
out=$(copy "$work/bad_phone.csv")
ok "a bad phone number fails the COPY, naming the field" "$(echo "$out" | grep -c '^ERROR:  invalid phone number')" 1
ok "and its line" "$(echo "$out" | grep -c '^CONTEXT:  COPY patient_import, line 1733$')" 1
ok "the value is not in the error" "$(echo "$out" | grep -c 'Zqx')" 0
ok "all or nothing: none of its 2,500 rows was registered" "$(patients)" 2500

# a taken MRN, found only when the second batch is inserted
sed 's/ZQXIMP-/ZQXNEW-/' "$work/good.csv" >"$work/taken.csv"
sed -i '1502s/ZQXNEW-1501,/ZQXIMP-7,/' "$work/taken.csv"
out=$(copy "$work/taken.csv")
ok "a taken MRN fails the COPY" "$(echo "$out" | grep -c '^ERROR:  a patient with this mrn is already registered')" 1
ok "naming its own line, not the one COPY was reading" "$(echo "$out" | grep -c '^CONTEXT:  COPY patient_import, line 1502$')" 1
ok "nothing registered" "$(patients)" 2500

# bad CSV: an extra column, a missing column, a bad date
printf 'given,family,birth_date,phone,email,mrn,zip\nZqxcanaryextra,Zqximpfamily,1980-01-01,,,,,Zqxcanarymore\n' >"$work/extra.csv"
out=$(copy "$work/extra.csv")
ok "extra data fails with its line, without the line" "$(echo "$out" | grep -c 'line 2$')/$(echo "$out" | grep -c Zqx)" 1/0
printf 'given,family,birth_date,phone,email,mrn,zip\nZqxcanarymissing,Zqximpfamily\n' >"$work/missing.csv"
out=$(copy "$work/missing.csv")
ok "missing data fails with its line, without a value" \
	"$(echo "$out" | grep -c '^CONTEXT:  COPY patient_import, line 2')/$(echo "$out" | grep -c Zqx)" 1/0
rows "$work/bad_date.csv" 10 5 birth_date "1980-02-30"
sed -i 's/ZQXIMP-/ZQXDATE-/' "$work/bad_date.csv"
out=$(copy "$work/bad_date.csv")
ok "an impossible birth date names the field and line" \
	"$(echo "$out" | grep -c '^ERROR:  invalid birth_date')/$(echo "$out" | grep -c 'line 5$')/$(echo "$out" | grep -c '1980-02-30')" 1/1/0

ok "no canary reached the server log" "$(cat "$PGHOST/server.log" 2>/dev/null | grep -c 'Zqxcanary')" 0
ok "every imported patient has its insert record" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'insert' AND object = 'patient' AND login = 'imp_desk'")" 2500

psql -X -q -c "DROP DATABASE $db" >/dev/null
echo "import: $count checks"
exit $fail

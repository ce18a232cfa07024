#!/usr/bin/env bash
# Dump and restore of the audit ledger as a DBA does it (issue #12): a full
# dump restored with --disable-triggers keeps every record once and every
# chain verifying, and a digest taken before the dump verifies after the
# restore; the ledger dumped by table (every partition, one partition, the
# schema) works (pg_dump 15 used to crash on the one partition that was an
# extension member) and restores into a database with the extension.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -uo pipefail

db=schedphi_dump
work=$(mktemp -d)
chmod 777 "$work"
trap 'rm -rf "$work"' EXIT
fail=0
count=0
bin=$(dirname "${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}")
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "${2:-$db}" -c "$1" 2>&1; }
ok() {
	count=$((count + 1))
	if [ "$2" = "$3" ]; then echo "dump: ok - $1"; else echo "dump: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}
fresh() {	# fresh DB [with-extension]
	psql -X -q -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1
	if [ -n "${2:-}" ]; then q "SET client_min_messages = warning; CREATE EXTENSION schedphi CASCADE" "$1" >/dev/null; fi
}

# a ledger with three chains (two tenants and the nil one) and records of
# every kind: writes (triggers), reads and refusals (queue)
fresh $db with-extension
psql -X -q -c "DROP ROLE IF EXISTS dump_desk" -c "CREATE ROLE dump_desk LOGIN" >/dev/null 2>&1
q "SELECT schedphi.create_tenant('Dump One', 'UTC')" >"$work/t1"
q "SELECT schedphi.create_tenant('Dump Two', 'UTC')" >"$work/t2"
T1=$(cat "$work/t1")
T2=$(cat "$work/t2")
q "SELECT schedphi.add_member('$T1', 'dump_desk', 'scheduler')" >/dev/null
for t in "$T1" "$T2"; do
	q "SELECT count(schedphi.register_patient('$t', 'Dump', 'Synthetic' || g, date '1980-01-01' + g)) FROM generate_series(1, 20) g" >/dev/null
done
psql -X -q -U dump_desk -d $db -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" \
	-c "SELECT count(family) FROM schedphi.patients" -c "COMMIT" >/dev/null 2>&1
psql -X -q -U dump_desk -d $db -c "SELECT count(*) FROM schedphi.patients" >/dev/null 2>&1
psql -X -q -U dump_desk -d $db -c "SELECT schedphi.assume('not.a.token')" >/dev/null 2>&1
q "SELECT schedphi._audit_sync()" >/dev/null
records=$(q "SELECT count(*) FROM schedphi.audit_log")
chains=$(q "SELECT count(*) FROM schedphi.audit_chain")
ok "the ledger holds records of three chains" "$chains" 3
digest=$(q "SELECT schedphi.audit_digest()")
part=$(q "SELECT tableoid::regclass::text FROM schedphi.audit_log ORDER BY seq DESC LIMIT 1")

# --------------------------------------------------------------- full dump
"$bin/pg_dump" -Fc -f "$work/full.dump" $db 2>"$work/full.err"
ok "a full dump works" "$?" 0
# the DBA's restore: schema, then the data with every trigger off (a
# restore writes no patient data of its own), then indexes and the rest
fresh ${db}_restored
{ "$bin/pg_restore" --section=pre-data --exit-on-error -d ${db}_restored "$work/full.dump" &&
  "$bin/pg_restore" --section=data --disable-triggers --exit-on-error -d ${db}_restored "$work/full.dump" &&
  "$bin/pg_restore" --section=post-data --exit-on-error -d ${db}_restored "$work/full.dump"; } 2>"$work/restore.err"
ok "restores in three sections, data with --disable-triggers, without an error" "$?/$(wc -l <"$work/restore.err")" "0/0"
ok "the analytics' derived rows are made again after the restore (they are not dumped)" \
	"$(q "SELECT schedphi.rebuild_analytics()" ${db}_restored >/dev/null; q "SELECT count(*) FROM schedphi.patient_deid" ${db}_restored)" 40
ok "every record once, and no other" "$(q "SELECT count(*), count(DISTINCT seq) FROM schedphi.audit_log" ${db}_restored | tr '|' ' ')" \
	"$records $records"
ok "every chain verifies" "$(q "SELECT ok, checked FROM schedphi.verify_audit()" ${db}_restored | tr '|' ' ')" "t $records"
ok "a digest taken before the dump verifies on the restored database" \
	"$(q "SELECT ok FROM schedphi.verify_audit('$digest')" ${db}_restored)" t
ok "the restored database keeps recording and sealing" \
	"$(q "SELECT count(schedphi.register_patient('$T1', 'After', 'Synthetic', '1990-01-01'))" ${db}_restored >/dev/null;
	   q "SELECT schedphi._audit_sync()" ${db}_restored >/dev/null;
	   q "SELECT ok FROM schedphi.verify_audit()" ${db}_restored)" t

# a plain restore in one go: the restore's own inserts are recorded too,
# as the restoring superuser's, and the audit worker seals nothing while
# pg_restore is connected (it loads patients before the chains' heads: a
# head made in between would stop it), so the chains hold
fresh ${db}_plain
"$bin/pg_restore" --exit-on-error -d ${db}_plain "$work/full.dump" 2>"$work/plain.err"
ok "a plain pg_restore works too" "$?/$(wc -l <"$work/plain.err")" "0/0"
q "SELECT schedphi._audit_sync()" ${db}_plain >/dev/null
ok "its chains verify, the restore's own inserts recorded after the restored records" \
	"$(q "SELECT ok FROM schedphi.verify_audit()" ${db}_plain)/$(q "SELECT count(*) > $records FROM schedphi.audit_log" ${db}_plain)" "t/t"

# ------------------------------------------------------ the ledger by table
"$bin/pg_dump" -t "$part" -f "$work/one.sql" $db 2>"$work/one.err"
ok "pg_dump -t of one partition works" "$?/$(grep -c 'COPY schedphi.audit_log' "$work/one.sql")" "0/1"
"$bin/pg_dump" -t 'schedphi.audit_log*' -f "$work/ledger.sql" $db 2>"$work/ledger.err"
ok "pg_dump -t 'schedphi.audit_log*' works" "$?" 0
"$bin/pg_dump" -n schedphi -f "$work/schema.sql" $db 2>"$work/schema.err"
ok "pg_dump -n schedphi works" "$?" 0
fresh ${db}_ledger with-extension
psql -X -q -v ON_ERROR_STOP=1 -d ${db}_ledger \
	-f "$work/ledger.sql" >/dev/null 2>"$work/ledger_restore.err"
ok "the ledger alone restores into a database with the extension" "$?/$(wc -l <"$work/ledger_restore.err")" "0/0"
ok "with every record" "$(q "SELECT count(*) FROM schedphi.audit_log" ${db}_ledger)" "$records"

psql -X -q -c "DROP DATABASE ${db}_restored" -c "DROP DATABASE ${db}_plain" -c "DROP DATABASE ${db}_ledger" \
	-c "DROP DATABASE $db" >/dev/null 2>&1
echo "dump: $count checks"
exit $fail

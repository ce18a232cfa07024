#!/usr/bin/env bash
# Concurrency: 8 clients (pgbench) read patient records for several seconds,
# half of their transactions committing and half rolling back, while a
# ninth books and cancels.  Afterwards every read that returned data has
# its audit record (one per statement and patient, rolled back or not),
# nothing was recorded twice, and the chain, once sealed, verifies.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -euo pipefail

db=schedphi_audit_reads
seconds=${RACE_SECONDS:-6}
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
fail=0
ok() {
	if [ "$2" = "$3" ]; then echo "audit_reads: ok - $1"; else echo "audit_reads: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}

psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "DROP ROLE IF EXISTS ar_desk" -c "CREATE ROLE ar_desk LOGIN" \
	-c "CREATE DATABASE $db" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE SCHEMA ar;
CREATE TABLE ar.patient (n int PRIMARY KEY, id uuid);
DO $$
DECLARE
	t uuid := schedphi.create_tenant('Audit Reads Clinic', 'UTC');
	l uuid := schedphi.add_location(t, 'Reads site', 'UTC');
	dr uuid := schedphi.add_practitioner(t, 'Dr Reads Synthetic');
BEGIN
	PERFORM schedphi.add_availability(dr, l, '{1,2,3,4,5,6,7}', '00:00', '24:00', daterange('2026-01-01', NULL));
	INSERT INTO ar.patient
		SELECT n, schedphi.register_patient(t, 'Reader', 'Synthetic' || n, date '1970-01-01' + n,
											mrn => 'AR-' || n) FROM generate_series(1, 50) n;
	PERFORM schedphi.add_member(t, 'ar_desk', 'scheduler');
END $$;
GRANT USAGE ON SCHEMA ar TO ar_desk;
GRANT SELECT ON ar.patient TO ar_desk;
SQL

cat >"$work/read.pgbench" <<'EOF'
\set p random(1, 50)
\set keep random(0, 1)
BEGIN;
SELECT schedphi.set_purpose('TREAT');
SELECT schedphi.patient_record((SELECT id FROM ar.patient WHERE n = :p)) ->> 'family';
\if :keep
COMMIT;
\else
ROLLBACK;
\endif
EOF
cat >"$work/book.pgbench" <<'EOF'
\set p random(1, 50)
\set m random(0, 100000)
SELECT schedphi.cancel(schedphi.book((SELECT id FROM ar.patient WHERE n = :p),
	(SELECT array_agg(a.id) FROM schedphi.actor a),
	tstzrange(timestamptz '2027-01-01 00:00Z' + :m * interval '10 minutes',
			  timestamptz '2027-01-01 00:10Z' + :m * interval '10 minutes')));
EOF
chmod 644 "$work"/*.pgbench

before=$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'read' AND login = 'ar_desk'")
pgbench -n -U postgres -c 1 -T "$seconds" -f "$work/book.pgbench" "$db" >"$work/book.log" 2>&1 &
booker=$!
pgbench -n -U ar_desk -c 8 -j 2 -T "$seconds" -f "$work/read.pgbench" "$db" >"$work/read.log" 2>&1 || true
wait "$booker" || true
reads=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/read.log")
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$work/read.log")
echo "audit_reads: $reads read transactions by 8 clients in ${seconds}s (about half rolled back), ${failed:-0} failed"
recorded=$(q -c "SELECT count(*) - $before FROM schedphi.audit_log WHERE action = 'read' AND login = 'ar_desk'")
ok "the clients read something" "$([ "${reads:-0}" -gt 100 ] && echo yes)" yes
ok "no read failed" "${failed:-0}" 0
ok "every read is recorded once, committed or rolled back" "$recorded" "$reads"
ok "each record names the patient, the purpose and the columns" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'read' AND login = 'ar_desk'
			 AND (patient IS NULL OR purpose IS DISTINCT FROM 'TREAT' OR NOT columns @> '{given,family,mrn}')")" 0
ok "the bookings made alongside are all recorded" \
	"$(q -c "SELECT count(*) FROM schedphi.appointment a WHERE NOT EXISTS (SELECT 1 FROM schedphi.audit_log l
			 WHERE l.object = 'appointment' AND l.action = 'insert' AND l.object_id = a.id)")" 0
q -c "SELECT schedphi._audit_sync()" >/dev/null
ok "the chain verifies" "$(q -F' ' -c "SELECT ok, pending FROM schedphi.verify_audit()")" "t 0"

psql -X -q -c "DROP DATABASE $db" -c "DROP ROLE ar_desk" >/dev/null
exit $fail

#!/usr/bin/env bash
# schedphi on Citus (issue #12): a coordinator and two workers of its own
# (loopback, private ports, stopped on every exit path), schedphi created
# on the coordinator alone and distributed with schedphi.distribute(); then,
# through the coordinator, as applications would use it:
#
#   - every table distributed by tenant, co-located; distribute() again is
#     harmless;
#   - the README tour (sql/02_tour.sql) gives the single node's answers
#     (expected/02_tour.out);
#   - a scheduler login registers, books, collides (23P01), reads through
#     the views and patient_record, cancels; its writes, made on the worker
#     nodes, are recorded under its own name and role;
#   - a token (HS256) assumed by a login with no membership books as the
#     token's subject; a forged one is refused;
#   - a clinician's break-glass: refused without it, read with it, listed
#     for the administrator, reviewed;
#   - availability added after a search is seen by the next search (the
#     coordinator's rules cache);
#   - key rotation, re-encryption (recorded as such), re-wrapping, a bulk
#     import by COPY, an auditor's access report (and the ledger's table
#     refused to auditors on Citus);
#   - the tenant's shards moved to the other worker: the chain verifies and
#     bookings go on;
#   - the 8-client booking race (test/concurrency/race.sh): no overlaps,
#     while verify_audit() runs again and again without a false alarm;
#   - the audit chain seals, verify_audit() passes, a digest verifies, and
#     a record changed on its worker node is found;
#   - shred_tenant.
#
# Citus comes from ../shared/citus (installed into the PostgreSQL that
# pg_config names) or an existing installation; with neither, the suite
# says it was skipped and exits 3.  Prints "citus: ok - ..." lines; exits 1
# on any failure.  Synthetic people only.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/setup.sh"
. "$here/lib/citus_cluster.sh"

if ! citus_find; then
	echo "citus: skipped (no ../shared/citus and no Citus installed in $(dirname "${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"))"
	exit 3
fi
citus_install || { echo "citus: NOT OK - could not install Citus"; exit 1; }
citus_start || { echo "citus: NOT OK - could not start the Citus cluster"; exit 1; }
PSQL="$SP_PGBIN/psql"
export PATH="$SP_PGBIN:$PATH"

fail=0
ok() {
	if [ "$2" = "$3" ]; then echo "citus: ok - $1"; else echo "citus: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}
q() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
as() { local who=$1; shift; PGUSER=$who "$PSQL" -X -q -At "$@" 2>&1; }
# the SQLSTATE of a statement run as a login (00000 when it succeeds)
state() {
	local who=$1 sql=$2 st
	st=$(PGUSER=$who "$PSQL" -X -q -At -v VERBOSITY=sqlstate -c "$sql" 2>&1 >/dev/null |
		sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\).*/\1/p' | head -1)
	echo "${st:-00000}"
}
seal_now() { q -c "SELECT schedphi._audit_sync()" >/dev/null; }

# ------------------------------------------------------------- distribute
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null ||
	{ echo "citus: NOT OK - CREATE EXTENSION schedphi"; exit 1; }
q -c "SET client_min_messages = warning" -c "SELECT schedphi.distribute()" >/dev/null ||
	{ echo "citus: NOT OK - schedphi.distribute()"; exit 1; }
ok "every schedphi table is distributed by tenant (the ledger by its chain), co-located" \
	"$(q -c "SELECT count(*) FILTER (WHERE p.logicalrelid IS NULL), count(DISTINCT p.colocationid),
				   count(*) FILTER (WHERE p.partmethod = 'h' AND column_to_column_name(p.logicalrelid, p.partkey)
									 = CASE WHEN c.relname = 'audit_log' THEN 'chain' ELSE 'tenant' END) = count(*)
			FROM pg_class c LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
			WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
			  AND c.relname <> 'zip3_restricted'" |
		tr '|' ' ')" "0 1 t"
ok "the restricted ZIP3 zones (no tenant's) are a reference table" \
	"$(q -c "SELECT p.partmethod FROM pg_dist_partition p WHERE p.logicalrelid = 'schedphi.zip3_restricted'::regclass")" n
ok "distribute() again changes nothing" \
	"$(q -c "SET client_min_messages = warning" -c "SELECT schedphi.distribute()" -c "SELECT count(*) FROM pg_dist_partition
			WHERE logicalrelid::text LIKE 'schedphi.%'" | tail -1)" \
	"$(q -c "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'schedphi.%'")"
ok "the ledger's partitions are distributed with it" \
	"$(q -c "SELECT count(*) > 0 AND bool_and(EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = i.inhrelid))
			FROM pg_inherits i WHERE i.inhparent = 'schedphi.audit_log'::regclass")" t

# ------------------------------------------------------------------ tour
# as pg_regress runs it; Citus warns that the tour's pg_temp function stays
# on the coordinator, which is no difference in the answers
PGDATESTYLE='Postgres, MDY' PGTZ=PST8PDT "$PSQL" -X -a -q -f "$SP_ROOT/sql/02_tour.sql" 2>&1 |
	grep -v 'has dependency on unsupported object "schema pg_temp' >"$SP_CTMP/tour.out"
if diff -u "$SP_ROOT/expected/02_tour.out" "$SP_CTMP/tour.out" >"$SP_CTMP/tour.diff"; then
	ok "the README tour gives the single node's answers" same same
else
	head -40 "$SP_CTMP/tour.diff"
	ok "the README tour gives the single node's answers" differs same
fi

# ------------------------------------------------------- a scheduler login
for r in cz_desk cz_pool cz_doc cz_admin cz_analyst; do
	q -c "DROP ROLE IF EXISTS $r" -c "CREATE ROLE $r LOGIN" >/dev/null
done
read -r T LOC DR DR2 < <(q -F' ' -c "
	WITH t AS (SELECT schedphi.create_tenant('Citus Synthetic Clinic', 'UTC') AS t)
	SELECT t.t, l.l, schedphi.add_practitioner(t.t, 'Dr Citus Synthetic'), schedphi.add_practitioner(t.t, 'Dr Other Synthetic')
	FROM t, LATERAL (SELECT schedphi.add_location(t.t, 'Citus site', 'UTC') AS l) l")
q -c "SELECT schedphi.add_availability(a, '$LOC', '{1,2,3,4,5}', '09:00', '12:00', daterange('2026-01-01', NULL), 30)
	  FROM unnest(ARRAY['$DR', '$DR2']::uuid[]) a" >/dev/null
q -c "SELECT schedphi.add_member('$T', 'cz_desk', 'scheduler')" -c "SELECT schedphi.add_member('$T', 'cz_admin', 'admin')" \
	-c "SELECT schedphi.add_member('$T', 'cz_doc', 'clinician', '$DR2')" >/dev/null
P=$(as cz_desk -c "SELECT schedphi.register_patient('$T', 'Quinn', 'Citusfamily-Synthetic', '1977-07-07', mrn => 'CZ-1')")
P2=$(as cz_desk -c "SELECT schedphi.register_patient('$T', 'Rae', 'Othercitus-Synthetic', '1988-08-08')")
A=$(as cz_desk -c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2026-06-15 09:00Z, 2026-06-15 09:30Z)', reason => 'synthetic checkup')")
ok "a scheduler registers and books through the coordinator" "$(echo "$P $A" | grep -Ec '^[0-9a-f-]{36} [0-9a-f-]{36}$')" 1
ok "the same time again is refused with 23P01" \
	"$(state cz_desk "SELECT schedphi.book('$P2', ARRAY['$DR']::uuid[], '[2026-06-15 09:15Z, 2026-06-15 09:45Z)')")" 23P01
ok "find_slots no longer offers the booked time" \
	"$(as cz_desk -c "SELECT count(*) FROM schedphi.find_slots(ARRAY['$DR']::uuid[], '[2026-06-15 09:00Z, 2026-06-15 10:00Z)', '30 minutes')")" 1
ok "find_patient finds by MRN" "$(as cz_desk -c "SELECT count(*) FROM schedphi.find_patient('$T', mrn => 'CZ-1')")" 1
ok "the patients view decrypts for the scheduler" \
	"$(as cz_desk -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT family FROM schedphi.patients WHERE id = '$P'" -c "COMMIT" | grep -c Citusfamily-Synthetic)" 1
ok "the appointments view shows the booking and its reason" \
	"$(as cz_desk -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT status || ' ' || reason FROM schedphi.appointments WHERE id = '$A'" -c "COMMIT" | grep -c 'booked synthetic checkup')" 1
ok "patient_record decrypts for the scheduler" \
	"$(as cz_desk -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.patient_record('$P') ->> 'family'" -c "COMMIT" | grep -c Citusfamily-Synthetic)" 1
ok "a login of no tenant sees no patients and no appointments" \
	"$(as cz_pool -c "SELECT (SELECT count(*) FROM schedphi.patients) + (SELECT count(*) FROM schedphi.appointments)")" 0
ok "a superuser reads no decrypted field through the views" \
	"$(q -c "SELECT count(*) FILTER (WHERE family IS NOT NULL) FROM schedphi.patients WHERE tenant = '$T'")" 0
as cz_desk -c "SELECT schedphi.cancel('$A', 'synthetic change of plans')" >/dev/null
ok "cancel frees the time" \
	"$(as cz_desk -c "SELECT count(*) FROM schedphi.find_slots(ARRAY['$DR']::uuid[], '[2026-06-15 09:00Z, 2026-06-15 10:00Z)', '30 minutes')")" 2
seal_now
ok "writes made on the worker nodes are recorded under the scheduler's name and role" \
	"$(q -c "SELECT string_agg(DISTINCT action || '/' || object || '/' || login || '/' || role, ' ' ORDER BY action || '/' || object || '/' || login || '/' || role)
			FROM schedphi.audit_log WHERE tenant = '$T' AND action IN ('insert', 'update') AND object IN ('patient', 'appointment')")" \
	"insert/appointment/cz_desk/scheduler insert/patient/cz_desk/scheduler update/appointment/cz_desk/scheduler"
ok "no PHI in the ledger" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE audit_log::text ~ '(Citusfamily|Othercitus|synthetic checkup|change of plans)'")" 0

# --------------------------------------------------------------- a token
hskey=$(openssl rand -hex 32)
hsb64=$(printf '%s' "$hskey" | perl -e 'print pack("H*", <STDIN>)' | base64 -w0)
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
token() {	# token SUB ROLE KEYHEX
	local h p
	h=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
	p=$(printf '{"iss":"https://citus.idp.example","sub":"%s","aud":"schedphi","iat":%d,"exp":%d,"amr":["pwd","otp"],"schedphi_tenant":"%s","schedphi_role":"%s"}' \
		"$1" "$now" $((now + 600)) "$T" "$2" | b64url)
	printf '%s.%s.%s' "$h" "$p" "$(printf '%s' "$h.$p" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$3" -binary | b64url)"
}
q -c "SELECT schedphi.add_issuer('$T', 'https://citus.idp.example', 'schedphi', 'hs256:$hsb64')" >/dev/null
TOK=$(token app-user-7 scheduler "$hskey")
BAD=$(token app-user-7 scheduler "$(openssl rand -hex 32)")
A2=$(as cz_pool -c "BEGIN" -c "SELECT schedphi.assume('$TOK')" -c "SELECT schedphi.book('$P2', ARRAY['$DR']::uuid[], '[2026-06-16 10:00Z, 2026-06-16 10:30Z)')" -c "COMMIT" | grep -E '^[0-9a-f-]{36}$')
ok "a pooled login books with a token" "$(echo "$A2" | grep -Ec '^[0-9a-f-]{36}$')" 1
ok "a forged token is refused (42501, recorded)" "$(state cz_pool "SELECT schedphi.assume('$BAD')")" 42501
ok "without the token the pooled login may not book" \
	"$(state cz_pool "SELECT schedphi.book('$P2', ARRAY['$DR']::uuid[], '[2026-06-16 11:00Z, 2026-06-16 11:30Z)')")" 42501
seal_now
ok "the token's booking is recorded as the token's subject" \
	"$(q -c "SELECT login || '/' || actor || '/' || role FROM schedphi.audit_log
			WHERE action = 'insert' AND object = 'appointment' AND object_id = '$A2'")" "cz_pool/app-user-7/scheduler"

# A client that sets schedphi.origin itself, to a value it saw in another
# session (the token's), does not get its writes recorded under that name:
# the functions set it again before they write.
SEEN=$(as cz_pool -c "BEGIN" -c "SELECT schedphi.assume('$TOK')" -c "SELECT schedphi.book('$P2', ARRAY['$DR']::uuid[], '[2026-06-16 09:00Z, 2026-06-16 09:30Z)')" \
	-c "SELECT current_setting('schedphi.origin')" -c "COMMIT" | grep '^v1:')
A4=$(as cz_desk -c "BEGIN" -c "SELECT schedphi.book('$P2', ARRAY['$DR2']::uuid[], '[2026-06-16 09:00Z, 2026-06-16 09:30Z)')" \
	-c "SET LOCAL schedphi.origin = '$SEEN'" \
	-c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2026-06-16 11:30Z, 2026-06-16 12:00Z)')" -c "COMMIT" | grep -E '^[0-9a-f-]{36}$' | tail -1)
seal_now
ok "a signed origin replayed by another login is overwritten before the functions write" \
	"$(echo "$SEEN" | grep -c '^v1:') $(q -c "SELECT login || '/' || actor FROM schedphi.audit_log WHERE action = 'insert' AND object = 'appointment' AND object_id = '${A4:-00000000-0000-0000-0000-000000000000}'")" \
	"1 cz_desk/cz_desk"

# ---------------------------------------------------------- break-glass
ok "a clinician may not read another practitioner's patient" \
	"$(state cz_doc "BEGIN; SELECT schedphi.set_purpose('TREAT'); SELECT schedphi.patient_record('$P'); COMMIT")" 42501
G=$(as cz_doc -c "SELECT schedphi.break_glass('$P', 'synthetic emergency: patient unconscious', 30)")
ok "with a break-glass grant and purpose EMERGENCY the clinician reads the record" \
	"$(as cz_doc -c "BEGIN" -c "SELECT schedphi.set_purpose('EMERGENCY')" -c "SELECT schedphi.patient_record('$P') ->> 'family'" -c "COMMIT" | grep -c Citusfamily-Synthetic)" 1
ok "the grant awaits the administrator's review" \
	"$(as cz_admin -c "SELECT count(*) FROM schedphi.break_glass_pending WHERE id = '$G'")" 1
as cz_admin -c "SELECT schedphi.review_break_glass('$G', 'justified', 'synthetic review: confirmed')" >/dev/null
ok "and is reviewed" "$(as cz_admin -c "SELECT count(*) FROM schedphi.break_glass_pending")" 0
seal_now
ok "the emergency read is on the ledger with its purpose" \
	"$(q -c "SELECT count(*) > 0 FROM schedphi.audit_log WHERE action = 'read' AND login = 'cz_doc' AND purpose = 'EMERGENCY' AND patient = '$P'")" t

# --------------------------------------------------- the rules cache
before=$(as cz_desk -c "SELECT count(*) FROM schedphi.find_slots(ARRAY['$DR']::uuid[], '[2026-06-20, 2026-06-21)', '30 minutes')")
q -c "SELECT schedphi.add_availability('$DR', '$LOC', '{6}', '14:00', '15:00', daterange('2026-01-01', NULL), 30)" >/dev/null
after=$(as cz_desk -c "SELECT count(*) FROM schedphi.find_slots(ARRAY['$DR']::uuid[], '[2026-06-20, 2026-06-21)', '30 minutes')")
ok "availability added after a search is seen by the next one" "$before $after" "0 2"

# ------------------------------------------------------- keys, import, audit
q -c "SELECT schedphi.rotate_key('$T')" >/dev/null
ok "reencrypt moves the tenant's values to the new key, then has nothing left" \
	"$(q -c "SET client_min_messages = warning" -c "SELECT schedphi.reencrypt(100000) >= 2" -c "SELECT schedphi.reencrypt(100000)" | tr '\n' ' ')" \
	"t 0 "
seal_now
ok "its records say reencrypt, under the superuser's name" \
	"$(q -c "SELECT count(*) > 0 AND bool_and(login = 'postgres') FROM schedphi.audit_log WHERE tenant = '$T' AND action = 'reencrypt' AND object = 'patient'")" t
ok "the record reads back under the new key" \
	"$(as cz_desk -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.patient_record('$P') ->> 'family'" -c "COMMIT" | grep -c Citusfamily-Synthetic)" 1
ok "rewrap_keys runs (nothing to re-wrap under one master key)" "$(q -c "SELECT schedphi.rewrap_keys()")" 0
printf '%s,Ivy,Importcitus-Synthetic,1990-01-01,CZ-IMP-1\n%s,Jo,Importcitus-Synthetic,1991-02-02,CZ-IMP-2\n' "$T" "$T" |
	PGUSER=cz_desk "$PSQL" -X -q -c "COPY schedphi.patient_import (tenant, given, family, birth_date, mrn) FROM STDIN WITH (FORMAT csv)"
ok "a bulk import by COPY registers through the coordinator" \
	"$(as cz_desk -c "SELECT count(*) FROM schedphi.find_patient('$T', mrn => 'CZ-IMP-2')")" 1
q -c "DROP ROLE IF EXISTS cz_audit" -c "CREATE ROLE cz_audit LOGIN" -c "SELECT schedphi.add_member('$T', 'cz_audit', 'auditor')" >/dev/null
seal_now
ok "an auditor's access report lists the patient's reads and writes" \
	"$(as cz_audit -c "SELECT count(*) >= 4 FROM schedphi.access_report('$P')")" t
ok "an auditor reads the ledger through its functions, not the table (42501 on Citus)" \
	"$(state cz_audit "SELECT count(*) FROM schedphi.audit_log")" 42501

# ----------------------------------------------------------- a shard move
# The tenant's shards (its rows, its ledger and its chain's head, co-located)
# move to the other worker together; the chain is copied as it is.
read -r SHARD FROMPORT TOPORT < <(q -F' ' -c "
	SELECT s.shardid, p.nodeport, (SELECT n.nodeport FROM pg_dist_node n
								   WHERE n.noderole = 'primary' AND n.groupid > 0 AND n.nodeport <> p.nodeport LIMIT 1)
	FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid) JOIN pg_dist_node p ON p.groupid = pl.groupid
	WHERE s.logicalrelid = 'schedphi.patient'::regclass AND s.shardid = get_shard_id_for_distribution_column('schedphi.patient', '$T')")
q -c "SET client_min_messages = warning" -c "SELECT citus_move_shard_placement($SHARD, '127.0.0.1', $FROMPORT, '127.0.0.1', $TOPORT, shard_transfer_mode => 'block_writes')" >"$SP_CTMP/move.txt" 2>&1 ||
	cat "$SP_CTMP/move.txt"
ok "the tenant's shards move to the other worker" \
	"$(q -c "SELECT p.nodeport FROM pg_dist_placement pl JOIN pg_dist_node p ON p.groupid = pl.groupid WHERE pl.shardid = $SHARD")" "$TOPORT"
ok "after the move the chain still verifies" "$(q -c "SELECT ok FROM schedphi.verify_audit()")" t
A3=$(as cz_desk -c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2026-06-17 09:00Z, 2026-06-17 09:30Z)')")
seal_now
ok "and bookings and their records go on where it is now" \
	"$(q -F' ' -c "SELECT count(*), bool_and(hash IS NOT NULL) FROM schedphi.audit_log WHERE chain = '$T' AND object_id = '${A3:-00000000-0000-0000-0000-000000000000}'") $(q -c "SELECT ok FROM schedphi.verify_audit()")" "1 t t"

# --------------------------------------------------------------- the race
# (meanwhile the ledger is verified again and again while it is sealed:
# each node reads as of its own moment, which must never look like tampering)
RACE_CITUS=1 RACE_SECONDS=${CITUS_RACE_SECONDS:-8} bash "$here/concurrency/race.sh" >"$SP_CTMP/race.txt" 2>&1 &
race_pid=$!
: >"$SP_CTMP/verify.txt"
while kill -0 "$race_pid" 2>/dev/null; do
	q -c "SELECT ok FROM schedphi.verify_audit()" >>"$SP_CTMP/verify.txt" 2>&1
	sleep 0.5
done
if wait "$race_pid"; then
	race=ok
else
	race=failed
	cat "$SP_CTMP/race.txt"
fi
grep -E '^race: (outcome|scheduler clients: tps|superuser clients: tps)' "$SP_CTMP/race.txt" | sed 's/^/citus: /'
ok "the 8-client booking race: no overlaps, every refusal a 23P01 (test/concurrency/race.sh)" "$race" ok
seal_now
ok "verify_audit during the race: never a false alarm ($(grep -c . "$SP_CTMP/verify.txt") runs), and all good after" \
	"$(grep -vc '^t$' "$SP_CTMP/verify.txt") $(q -c "SELECT ok FROM schedphi.verify_audit()")" "0 t"

# ------------------------------------------------------------- the ledger
seal_now
ok "every record is sealed into its chain and verify_audit passes" \
	"$(q -F' ' -c "SELECT ok, pending FROM schedphi.verify_audit()")" "t 0"
ok "one chain per tenant" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_chain WHERE tenant = '$T'")" 1
DIGEST=$(q -c "SELECT schedphi.audit_digest('$T')")
ok "a tenant's digest verifies" "$(q -F' ' -c "SELECT ok FROM schedphi.verify_audit('$DIGEST')")" t
K=$(q -c "SELECT min(seq) FROM schedphi.audit_log WHERE chain = '$T' AND action = 'insert' AND object = 'patient'")
PART=$(q -c "SELECT 'schedphi.audit_log_' || to_char(at AT TIME ZONE 'UTC', 'YYYYMM') FROM schedphi.audit_log
			WHERE chain = '$T' AND seq = $K")
# a rogue superuser on the coordinator: the guard off, one record changed,
# the guard on again (on the log: PostgreSQL 15 carries it to partitions)
q -c "SET citus.enable_unsafe_triggers = on" -c "ALTER TABLE $PART DISABLE TRIGGER ALL" \
	-c "UPDATE schedphi.audit_log SET login = 'someone-else' WHERE chain = '$T' AND seq = $K" \
	-c "ALTER TABLE $PART ENABLE TRIGGER ALL" -c "ALTER TABLE schedphi.audit_log ENABLE ALWAYS TRIGGER append_only" \
	-c "ALTER TABLE $PART ENABLE ALWAYS TRIGGER append_only_truncate" >/dev/null
ok "a record changed on its worker node is found" \
	"$(q -F' ' -c "SELECT ok, first_bad FROM schedphi.verify_audit()")" "f $K"
ok "the log is append-only again on every node" \
	"$(q -c "UPDATE schedphi.audit_log SET login = 'x' WHERE chain = '$T' AND seq = $K" 2>&1 | grep -c 'append-only')" 1

# ------------------------------------------------------------- analytics
q -c "SELECT schedphi.add_member('$T', 'cz_analyst', 'analyst')" >/dev/null
# a handful of patients: Safe Harbor alone (k-anonymity would suppress them all)
q -c "ALTER ROLE cz_analyst SET schedphi.analytics_min_k = 1" >/dev/null
ok "every appointment has its de-identified row, derived on its worker node" \
	"$(q -F' ' -c "SELECT (SELECT count(*) FROM schedphi.appointment WHERE tenant = '$T'),
					   (SELECT count(*) FROM schedphi.appointment_deid d JOIN schedphi.appointment a
						  ON a.tenant = d.tenant AND a.id = d.appointment AND a.status = d.status
						 WHERE d.tenant = '$T' AND d.age IS NOT NULL)")" \
	"$(q -c "SELECT count(*) FROM schedphi.appointment WHERE tenant = '$T'") $(q -c "SELECT count(*) FROM schedphi.appointment WHERE tenant = '$T'")"
ok "the k-anonymity classes are kept beside them; k_anonymity runs through the coordinator" \
	"$(q -c "SELECT (SELECT count(*) FROM schedphi.deid_class WHERE tenant = '$T')
				  = (SELECT count(*) FROM (SELECT DISTINCT patient, visit_year, age, zip3 FROM schedphi.appointment_deid
										   WHERE tenant = '$T') x)") $(as cz_analyst -c "SELECT k >= 1 AND rows_suppressed = 0 FROM schedphi.k_anonymity('$T')")" "t t"
ok "an analyst reads deid_appointments through the coordinator" \
	"$(as cz_analyst -c "SELECT count(*) FROM schedphi.deid_appointments WHERE age_at_visit IS NOT NULL")" \
	"$(q -c "SELECT count(*) FROM schedphi.appointment WHERE tenant = '$T'")"
ok "and leaves an export record; a scheduler is refused" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE tenant = '$T' AND action = 'export' AND login = 'cz_analyst'
			   AND detail->>'view' = 'deid_appointments'") $(state cz_desk "SELECT count(*) FROM schedphi.deid_appointments")" "1 42501"
ok "the aggregates run through the coordinator, their few cells suppressed" \
	"$(as cz_analyst -c "SELECT (SELECT bool_and(suppressed) FROM schedphi.no_show_rates('$T', '[2026-06-01, 2026-07-01)')),
								(SELECT bool_and(suppressed) FROM schedphi.lead_times('$T', '[2026-06-01, 2026-07-01)', 'practitioner')),
								(SELECT count(*) > 0 FROM schedphi.utilisation('$T', '[2026-06-15, 2026-06-16)'))")" "t|t|t"
q -c "DROP ROLE IF EXISTS cz_research" -c "CREATE ROLE cz_research LOGIN" >/dev/null
q -c "SELECT schedphi.add_data_use_agreement('$T', 'cz_research', 'synthetic study', current_date + 7)" >/dev/null
ok "a data use agreement's recipient reads the Limited Data Set through the coordinator" \
	"$(as cz_research -c "SELECT count(*) FROM schedphi.lds_appointments")" "$(q -c "SELECT count(*) FROM schedphi.appointment WHERE tenant = '$T'")"
ok "with a shift of whole weeks drawn for each patient, on the tenant's node" \
	"$(q -c "SELECT count(*) = (SELECT count(*) FROM schedphi.patient WHERE tenant = '$T') AND bool_and(weeks <> 0)
			FROM schedphi.lds_shift WHERE tenant = '$T'")" t
ok "an admin rotates the analytics tokens" \
	"$(q -c "SELECT schedphi.rotate_analytics_tokens('$T')")" 2

# --------------------------------------------------------------- HL7 v2
q -c "DROP ROLE IF EXISTS cz_engine" -c "CREATE ROLE cz_engine LOGIN" \
	-c "SELECT schedphi.add_member('$T', 'cz_engine', 'integration')" \
	-c "SELECT schedphi.add_hl7_sender('$T', 'CZEHR', 'CZFAC', 'America/Chicago')" >/dev/null
siu() {
	printf 'MSH|^~\\&|CZEHR|CZFAC|SCHEDPHI|C|20260301||SIU^%s^SIU_S12|%s|P|2.5\rSCH||CZF1|||||ROUTINE|NORMAL|30|min|^^30^202607011000||||||||||||||Booked\rPID|1||CZ-HL7-1^^^CZ^MR||Hl7citus-Synthetic^Ann||19800101|F\rRGS|1|A\rAIP|1|A|CZDR^Synthetic^Dr||||||30|min\r' "$1" "$2"
}
ok "an SIU S12 through the coordinator books on the tenant's node, and S15 cancels it" \
	"$(as cz_engine -v m1="$(siu S12 CZ1)" -v m2="$(siu S15 CZ2)" <<<"SELECT split_part(split_part(schedphi.hl7_ingest(:'m1'), E'\r', 2), '|', 2);
		SELECT lower(during) AT TIME ZONE 'UTC' FROM schedphi.appointments WHERE tenant = '$T' AND status = 'booked'
		  AND lower(during) = '2026-07-01 15:00Z';
		SELECT split_part(split_part(schedphi.hl7_ingest(:'m2'), E'\r', 2), '|', 2);" | tr '\n' ' ')" \
	"AA 2026-07-01 15:00:00 AA "

R=$(q -c "SELECT schedphi.add_hl7_receiver('$T', 'CZRIS', 'CZRAD')")
as cz_desk -c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2026-07-08 11:00Z, 2026-07-08 11:30Z)')" >/dev/null
ok "a booking through the coordinator is queued on the tenant's node and fetched as an SIU" \
	"$(as cz_engine <<<"BEGIN; SELECT schedphi.set_purpose('OPERATIONS') \\g /dev/null
		SELECT count(*) || ' ' || min(split_part(split_part(message, E'\r', 1), '|', 9)) FROM schedphi.hl7_outbound('$R');
		COMMIT;" | tr -d '\n')" "1 SIU^S12^SIU_S12"
ok "the outbound queue through the coordinator: the admin sees the sent S12 and gives it up (shown as skipped)" \
	"$(as cz_admin <<<"SELECT state FROM schedphi.hl7_queue('$T') WHERE receiver = '$R';
		SELECT schedphi.hl7_skip('$R', (SELECT id FROM schedphi.hl7_queue('$T') WHERE receiver = '$R'));
		SELECT count(*) FROM schedphi.hl7_queue('$T') WHERE receiver = '$R' AND state LIKE 'skipped by cz_admin at %';" | tr '\n' ' ')" \
	"sent, waiting for its ACK  1 "

A9=$(as cz_desk -c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2026-07-10 10:00Z, 2026-07-10 10:30Z)')")
ok "FHIR through the coordinator: the Appointment as a scheduler sees it, \$find's free Slots" \
	"$(as cz_desk -c "SELECT (schedphi.fhir_appointment('$A9') ->> 'status') || ' ' ||
		(schedphi.fhir_find(jsonb_build_object('start', '2026-07-10T09:00:00Z', 'end', '2026-07-10T12:00:00Z',
			'actor', jsonb_build_array('Practitioner/$DR'), 'duration', 30)) ->> 'total')")" "booked 5"

fappt() { # patient, actor reference, start, end
	echo "{\"resourceType\": \"Appointment\", \"status\": \"booked\", \"start\": \"$3\", \"end\": \"$4\", \"participant\": [{\"actor\": {\"reference\": \"Patient/$1\"}}, {\"actor\": {\"reference\": \"$2\"}}]}"
}
ok "FHIR writes through the coordinator: fhir_hold, fhir_book of the hold, a clash as an OperationOutcome" \
	"$(as cz_desk <<<"SELECT schedphi.fhir_hold('$(fappt "$P" "Practitioner/$DR" 2026-07-10T11:00:00Z 2026-07-10T11:30:00Z)') ->> 'id' AS h \\gset
		SELECT schedphi.fhir_book(jsonb_build_object('resourceType', 'Appointment', 'id', :'h')) ->> 'status';
		SELECT schedphi.fhir_book_oo('$(fappt "$P" "Practitioner/$DR" 2026-07-10T11:15:00Z 2026-07-10T11:45:00Z)') #>> '{issue,0,code}';" | tr '\n' ' ')" \
	"booked conflict "
ok "fhir_search through the coordinator: a patient's Appointments, an actor's Slots" \
	"$(as cz_desk -c "SELECT (schedphi.fhir_search('Appointment', jsonb_build_object('patient', 'Patient/$P', 'date', 'ge2026-07-10', 'status', 'booked')) ->> 'total')
		|| ' ' || (SELECT count(*) FROM jsonb_array_elements(schedphi.fhir_search('Slot', jsonb_build_object('schedule', 'Schedule/$DR',
			'start', jsonb_build_array('ge2026-07-10T09:00:00Z', 'lt2026-07-10T12:00:00Z'), 'status', 'busy')) -> 'entry'))")" "2 2"
q -c "SELECT schedphi.add_external_id('$T', 'fhir:Practitioner', 'cz-example', '$DR')" >/dev/null
ok "an EHR's transaction Bundle through the coordinator: a patient registered and an appointment made, idempotent" \
	"$(as cz_engine -v b='{"resourceType": "Bundle", "type": "transaction", "entry": [{"fullUrl": "urn:uuid:0b0b0b0b-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:cz:mrn", "value": "CZ-FHIR-1"}], "name": [{"family": "Fhircitus-Synthetic", "given": ["Eve"]}], "birthDate": "1981-01-01"}}, {"resource": {"resourceType": "Appointment", "status": "booked", "identifier": [{"system": "urn:cz:ehr", "value": "CZ-A-1"}], "start": "2026-07-11T10:00:00Z", "end": "2026-07-11T10:30:00Z", "participant": [{"actor": {"reference": "urn:uuid:0b0b0b0b-0000-4000-8000-000000000001"}}, {"actor": {"reference": "Practitioner/cz-example"}}]}}]}' \
		<<<"SELECT string_agg(e #>> '{response,status}', ',') FROM jsonb_array_elements(schedphi.fhir_ingest(:'b') -> 'entry') e;
			SELECT string_agg(e #>> '{response,status}', ',') FROM jsonb_array_elements(schedphi.fhir_ingest(:'b') -> 'entry') e;" | tr '\n' ' ')" \
	"201 Created,201 Created 200 OK,200 OK "

# ------------------------------------------------------------- compliance evidence
q -c "DROP ROLE IF EXISTS cz_audit" -c "CREATE ROLE cz_audit LOGIN" -c "SELECT schedphi.add_member('$T', 'cz_audit', 'auditor')" \
	-c "DROP ROLE IF EXISTS cz_gone" -c "CREATE ROLE cz_gone LOGIN" -c "SELECT schedphi.add_member('$T', 'cz_gone', 'scheduler')" >/dev/null
ok "compliance evidence through the coordinator: an associate, training, a risk, an incident, a termination, an access review" \
	"$(q 2>&1 <<<"SELECT schedphi.add_business_associate('$T', 'Citus SMS Co', '{sms}', current_date - 10, current_date + 300, 'limited') IS NOT NULL;
		SELECT schedphi.record_training('$T', 'cz_desk', 'HIPAA', current_date - 1, current_date + 300);
		SELECT count(*) = 1 FROM schedphi.training WHERE tenant = '$T' AND login = 'cz_desk';
		SELECT schedphi.add_risk('$T', 'Citus risk', 'technical', 2, 3, 'postgres', current_date + 30) IS NOT NULL;
		SELECT schedphi.record_incident('$T', 'security', now() - interval '1 day', 'synthetic', 3) IS NOT NULL;
		SELECT schedphi.terminate_member('$T', 'cz_gone');
		SELECT count(*) = 1 FROM schedphi.termination WHERE tenant = '$T' AND login = 'cz_gone';
		SELECT schedphi.start_access_review('$T') AS review \\gset
		SELECT count(*) > 0 FROM schedphi.access_review_item WHERE tenant = '$T' AND review = :'review';" | grep -v '^$' | tr '\n' '|')" \
	"t|t|t|t|t|t|"
q -c "ALTER ROLE cz_desk SET schedphi.require_training = on" -c "ALTER ROLE cz_engine SET schedphi.require_training = on" >/dev/null
ok "the training rule through the coordinator: a scheduler with training reads, an engine without is refused" \
	"$(as cz_desk <<<"BEGIN; SELECT schedphi.set_purpose('TREAT') \\g /dev/null
		SELECT schedphi.patient_record('$P') IS NOT NULL; COMMIT;" | tr -d '\n') $(as cz_engine <<<"BEGIN; SELECT schedphi.set_purpose('TREAT') \\g /dev/null
		SELECT schedphi.patient_record('$P') IS NOT NULL; COMMIT;" 2>&1 | grep -c 'permission denied: training rule')" "t 1"
q -c "ALTER ROLE cz_desk RESET schedphi.require_training" -c "ALTER ROLE cz_engine RESET schedphi.require_training" >/dev/null
ok "check_config and the signed report through the coordinator, as the tenant's auditor" \
	"$(as cz_audit -c "SELECT (SELECT count(*) >= 15 FROM schedphi.check_config()),
		length(schedphi.compliance_report('$T')::jsonb #>> '{signature,value}'),
		schedphi.compliance_report('$T', 'html') LIKE '<!DOCTYPE html>%'")" "t|64|t"

# ------------------------------------------------------------- patient communications
PM=$(as cz_desk -c "SELECT schedphi.register_patient('$T', 'Mona', 'Msgcitus-Synthetic', '1979-09-09', email => 'mona@example.org')")
MAIL=$(q -c "SELECT schedphi.add_business_associate('$T', 'Citus Mail Co', '{email}', current_date - 10, current_date + 300, 'limited')")
q -c "SELECT schedphi.add_message_template('$T', 'confirmation', 'email', 'Hi {given_name}, {date} {time} at {location}')" \
	-c "SELECT schedphi.add_message_template('$T', 'reminder', 'email', 'Tomorrow {time} at {location}')" \
	-c "SELECT schedphi.set_reminder_policy('$T', '{1 day}', '00:00-00:00')" >/dev/null
as cz_desk -c "SELECT schedphi.set_contact_preference('$PM', 'email', true, true)" >/dev/null
AM=$(as cz_desk -c "SELECT schedphi.book('$PM', ARRAY['$DR2']::uuid[], '[2027-01-13 10:00Z, 2027-01-13 10:30Z)')")
ok "patient communications through the coordinator: a booking queues its messages on the tenant's node, an integration login claims them" \
	"$(q -c "SELECT string_agg(kind, ',' ORDER BY kind) FROM schedphi.message WHERE tenant = '$T' AND appointment = '$AM'" 2>&1) $(as cz_engine <<<"BEGIN; SELECT schedphi.set_purpose('TREAT') \\g /dev/null
		SELECT address || ' ' || (body LIKE 'Hi Mona, %Citus site') FROM schedphi.claim_messages('$MAIL', 10); COMMIT;" | tr -d '\n')" \
	"confirmation,reminder mona@example.org true"
MID=$(as cz_admin -c "SELECT id FROM schedphi.message_queue('$T') WHERE appointment = '$AM' AND kind = 'confirmation'")
ok "and reports them; the admin's queue; a portal link previewed" \
	"$(as cz_engine -c "SELECT schedphi.mark_sent($MID, 'delivered', 'CZ-1')" | tr -d '\n')$(as cz_admin -c "SELECT string_agg(kind || '/' || status, ',' ORDER BY kind) FROM schedphi.message_queue('$T') WHERE appointment = '$AM'") $(as cz_desk -c "SELECT schedphi.redeem_portal_link(schedphi.portal_link('$AM'), false) ->> 'time'")" \
	"confirmation/delivered,reminder/pending 10:00"

# ------------------------------------------------------------- shredding
T2=$(q -c "SELECT schedphi.create_tenant('Citus Shred Clinic', 'UTC')")
q -c "SELECT schedphi.add_member('$T2', 'cz_desk', 'scheduler')" >/dev/null
as cz_desk -c "SELECT schedphi.register_patient('$T2', 'Sol', 'Shredcitus-Synthetic', '1970-01-01')" >/dev/null
q -c "SELECT schedphi.shred_tenant('$T2')" >/dev/null
ok "shred_tenant destroys a tenant's patients and keys on its node" \
	"$(q -F' ' -c "SELECT (SELECT count(*) FROM schedphi.patient WHERE tenant = '$T2'),
					   (SELECT count(*) FROM schedphi.data_key WHERE tenant = '$T2' AND status <> 'destroyed')")" "0 0"

exit $fail

#!/usr/bin/env bash
# The audit ledger, end to end, against the running throwaway cluster
# (sourced by test/run.sh, which provides cluster_restart, SP_TMP and
# sp_as_server):
#
#   - writes recorded with the names of the columns written, never values;
#   - a read in a rolled-back transaction, a read in a statement that then
#     failed, a denied attempt and a rate-limit refusal all recorded;
#   - UPDATE, DELETE and TRUNCATE refused to the superuser, also with
#     session_replication_role = replica;
#   - tampering that skips the triggers (a changed, a removed and two
#     reordered records) and an edit of the table file itself, each found
#     and located by verify_audit();
#   - a signed digest that verifies, and a forged one that does not;
#   - the accounting of disclosures, for auditors only;
#   - a stopped audit worker fails reads closed, and they work again after;
#   - the retention purge refuses young records, anchors what it removes;
#   - a server killed in the middle of a booking load comes back with every
#     committed booking recorded and a chain that verifies.
#
# Prints "audit: ok - ..." or "audit: NOT OK - ..." per check; audit_check
# returns non-zero if any failed.

audit_check() {
	local db=schedphi_audit
	AUDIT_PASSED=0
	AUDIT_FAILED=0

	aq() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1; }
	as() {
		local u=$1
		shift
		psql -X -q -At -v ON_ERROR_STOP=1 -U "$u" -d "$db" "$@" 2>&1
	}
	aok() {
		if [ "$2" = "$3" ]; then
			AUDIT_PASSED=$((AUDIT_PASSED + 1))
			echo "audit: ok - $1"
		else
			AUDIT_FAILED=$((AUDIT_FAILED + 1))
			echo "audit: NOT OK - $1 (got '$2', want '$3')"
		fi
	}
	seal_now() { aq -c "SELECT schedphi._audit_sync()" >/dev/null; }
	verify() { aq -F' ' -c "SELECT ok, coalesce(first_bad::text, '-') FROM schedphi.verify_audit()"; }

	psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null || return 1
	aq -c "CREATE EXTENSION schedphi CASCADE" -f "$SP_ROOT/test/lib/fixtures.sql" >/dev/null || {
		echo "audit: NOT OK - could not set up"
		return 1
	}
	local r
	for r in au_sched au_support au_auditor au_admin; do
		psql -X -q -c "DROP ROLE IF EXISTS $r" -c "CREATE ROLE $r LOGIN" >/dev/null
	done
	local tenant dr p1
	read -r tenant dr p1 < <(aq -F' ' -c "SELECT tenant, dr, p1 FROM tst.clinic()")
	aq -c "SELECT schedphi.add_member('$tenant', 'au_sched', 'scheduler'),
				  schedphi.add_member('$tenant', 'au_support', 'support'),
				  schedphi.add_member('$tenant', 'au_auditor', 'auditor'),
				  schedphi.add_member('$tenant', 'au_admin', 'admin')" >/dev/null

	# ------------------------------------------------------------ writes
	local canary appt
	canary=$(as au_sched -c "SELECT schedphi.register_patient('$tenant', 'Zqcanarygiven', 'Zqcanaryfamily', '1961-02-03',
		'+1 555 0199 777', 'zqcanary@example.org', 'ZQCANARY-MRN', '10001')")
	appt=$(as au_sched -c "SELECT schedphi.book('$canary', ARRAY['$dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)',
		'routine', 'Zqcanary reason')")
	as au_sched -c "SELECT schedphi.cancel('$appt', 'Zqcanary cancel note')" >/dev/null
	aok "an insert is recorded with who, why-less, and the columns written" \
		"$(aq -c "SELECT login, role, columns @> '{given,family,birth_date,mrn}' FROM schedphi.audit_log
				  WHERE action = 'insert' AND object = 'patient' AND object_id = '$canary'" | tr '\n' ' ')" \
		"au_sched|scheduler|t "
	aok "an update is recorded with the columns it changed and no others" \
		"$(aq -c "SELECT bool_or(columns @> '{status}') AND bool_or(columns @> '{cancel_reason}')
						 AND NOT bool_or(columns && '{patient,during,kind,reason}')
				  FROM schedphi.audit_log WHERE action = 'update' AND object = 'appointment' AND object_id = '$appt'")" t
	aok "the appointment's records name its patient" \
		"$(aq -c "SELECT count(*) FILTER (WHERE patient = '$canary') = count(*) FROM schedphi.audit_log
				  WHERE object = 'appointment' AND object_id = '$appt'")" t

	# ------------------------------------------------------------- reads
	as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" \
		-c "SELECT schedphi.patient_record('$canary') IS NOT NULL" -c "ROLLBACK" >/dev/null
	aok "a read in a rolled-back transaction is recorded, with its purpose and columns" \
		"$(aq -c "SELECT count(*) > 0, bool_and(columns @> '{given,mrn}') FROM schedphi.audit_log
				  WHERE action = 'read' AND login = 'au_sched' AND patient = '$canary' AND purpose = 'TREAT'" | tr '\n' ' ')" \
		"t|t "
	as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('PAYMENT')" \
		-c "SELECT schedphi.patient_record('$canary') IS NOT NULL, 1 / (random() * 0)::int" >/dev/null
	local got=f i
	for i in $(seq 1 50); do
		got=$(aq -c "SELECT count(*) > 0 FROM schedphi.audit_log
					 WHERE action = 'read' AND login = 'au_sched' AND patient = '$canary' AND purpose = 'PAYMENT'")
		[ "$got" = t ] && break
		sleep 0.1
	done
	aok "a read in a statement that then failed is recorded" "$got" t
	as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" \
		-c "SELECT count(*) FROM schedphi.appointments WHERE reason IS NOT NULL" -c "ROLLBACK" >/dev/null
	aok "reading appointment reasons through the view is recorded per appointment, with its patient" \
		"$(aq -c "SELECT count(*) > 0 FROM schedphi.audit_log WHERE action = 'read' AND object = 'appointment'
				  AND object_id = '$appt' AND patient = '$canary' AND columns = '{reason}'")" t

	# ---------------------------------------------------------- denials
	got=$(as au_support -c "SELECT schedphi.patient_record('$canary')")
	aok "a denied attempt fails with 42501" "$(echo "$got" | grep -c '^ERROR:  permission denied: role rule')" 1
	aok "and is recorded, with the rule" \
		"$(aq -c "SELECT detail ->> 'rule' FROM schedphi.audit_log WHERE action = 'denied' AND login = 'au_support'")" \
		"permission denied: role rule"
	psql -X -q -c "ALTER ROLE au_sched IN DATABASE $db SET schedphi.lookup_rate_limit = 2" >/dev/null
	as au_sched -c "SELECT schedphi.find_patient('$tenant', mrn => 'X-1')" \
		-c "SELECT schedphi.find_patient('$tenant', mrn => 'X-2')" -c "SELECT schedphi.find_patient('$tenant', mrn => 'X-3')" >/dev/null
	aok "a rate-limit refusal is recorded" \
		"$(aq -c "SELECT detail ->> 'rule' FROM schedphi.audit_log WHERE action = 'rate_limited' AND login = 'au_sched'")" \
		"rate limit exceeded: schedphi.lookup_rate_limit"
	psql -X -q -c "ALTER ROLE au_sched IN DATABASE $db RESET schedphi.lookup_rate_limit" >/dev/null
	as au_sched -c "SELECT count(*) FROM schedphi.patient" >/dev/null
	for i in $(seq 1 50); do
		got=$(aq -c "SELECT detail ->> 'rule' FROM schedphi.audit_log WHERE action = 'denied' AND login = 'au_sched'
					 AND detail ->> 'by' = 'postgresql'")
		[ -n "$got" ] && break
		sleep 0.1
	done
	aok "PostgreSQL's own refusal (reading a table directly) is recorded too" "$got" "permission denied for table patient"
	# ... also when it is the session's first statement, and a utility one
	as au_support -c "COPY schedphi.patient TO STDOUT" >/dev/null
	as au_support -c "TRUNCATE schedphi.audit_log" >/dev/null
	for i in $(seq 1 50); do
		got=$(aq -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'denied' AND login = 'au_support'
					 AND detail ->> 'by' = 'postgresql'")
		[ "$got" = 2 ] && break
		sleep 0.1
	done
	aok "a refused COPY or TRUNCATE as a session's first statement is recorded, with the login's name" "$got" 2
	as au_admin -c "SELECT schedphi.rotate_key('$tenant')" >/dev/null
	aok "membership changes are recorded" \
		"$(aq -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'member_add' AND detail ->> 'login' LIKE 'au\_%'")" 4
	aok "key operations are recorded" \
		"$(aq -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'key_rotate' AND login = 'au_admin'")" 1

	# Roles are cached per session (book() and find_slots clear callers from
	# that cache): a role removed in another session must stop the next call
	# of a session that already used it.
	psql -X -q -c "DROP ROLE IF EXISTS au_temp" -c "CREATE ROLE au_temp LOGIN" >/dev/null
	aq -c "SELECT schedphi.add_member('$tenant', 'au_temp', 'scheduler')" >/dev/null
	local revoked
	revoked=$(psql -X -q -At -U au_temp -d "$db" 2>&1 <<EOF
SELECT 'first ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-16 14:00Z, 2026-06-16 14:30Z)') IS NOT NULL);
\\! psql -X -q -At -U postgres -d $db -c "SELECT schedphi.remove_member('$tenant', 'au_temp', 'scheduler')" >/dev/null
SELECT 'second ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-16 15:00Z, 2026-06-16 15:30Z)') IS NOT NULL);
EOF
)
	aok "a role removed in another session stops the next booking of a session that used it" \
		"$(grep -c '^first true$' <<<"$revoked") $(grep -c 'permission denied' <<<"$revoked") $(grep -c '^second' <<<"$revoked")" "1 1 0"
	# A session that changes memberships sees its own change while the
	# transaction runs; after a ROLLBACK the role it gave is gone, from its own
	# cache too (here a superuser gives au_temp a role and books as au_temp).
	local rolledback
	rolledback=$(psql -X -q -At -U postgres -d "$db" 2>&1 <<EOF
BEGIN;
SELECT schedphi.add_member('$tenant', 'au_temp', 'scheduler');
SET SESSION AUTHORIZATION au_temp;
SELECT 'inside ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-16 16:00Z, 2026-06-16 16:30Z)') IS NOT NULL);
RESET SESSION AUTHORIZATION;
ROLLBACK;
SET SESSION AUTHORIZATION au_temp;
SELECT 'after ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-16 16:00Z, 2026-06-16 16:30Z)') IS NOT NULL);
EOF
)
	aok "a role given in a transaction that rolled back is gone from the session's cache" \
		"$(grep -c '^inside true$' <<<"$rolledback") $(grep -c 'permission denied' <<<"$rolledback") $(grep -c '^after' <<<"$rolledback")" "1 1 0"
	# The tenants where a login acts with a role are cached per session as
	# well: they alone scope an analyst's de-identified views, and hl7_ingest
	# asks for them on every message.  A membership removed, or the group
	# role revoked, in another session counts at the session's next statement.
	aq -c "SELECT schedphi.add_member('$tenant', 'au_temp', 'analyst')" \
		-c "SELECT schedphi.add_member('$tenant', 'au_temp', 'integration')" \
		-c "SELECT schedphi.add_hl7_sender('$tenant', 'AUEHR', 'AUFAC', 'UTC')" >/dev/null
	local scoped
	deid_line() { echo "SELECT '$1 ' || (count(*) >= 0) FROM schedphi.deid_appointments;"; }
	scoped=$(psql -X -q -At -U au_temp -d "$db" 2>&1 <<EOF
$(deid_line first)
\\! psql -X -q -At -U postgres -d $db -c "SELECT schedphi.remove_member('$tenant', 'au_temp', 'analyst')" >/dev/null
$(deid_line second)
EOF
)
	aok "an analyst membership removed in another session ends the session's de-identified reads at once" \
		"$(grep -c '^first true$' <<<"$scoped") $(grep -c 'permission denied' <<<"$scoped") $(grep -c '^second' <<<"$scoped")" "1 1 0"
	aq -c "SELECT schedphi.add_member('$tenant', 'au_temp', 'analyst')" >/dev/null
	scoped=$(psql -X -q -At -U au_temp -d "$db" 2>&1 <<EOF
$(deid_line first)
\\! psql -X -q -At -U postgres -d $db -c "REVOKE schedphi_analyst FROM au_temp" >/dev/null
$(deid_line second)
\\! psql -X -q -At -U postgres -d $db -c "GRANT schedphi_analyst TO au_temp" >/dev/null
$(deid_line third)
EOF
)
	aok "so does the analyst group role revoked in another session; granted again, it counts again" \
		"$(grep -c '^first true$' <<<"$scoped") $(grep -c 'permission denied' <<<"$scoped") $(grep -c '^second' <<<"$scoped") $(grep -c '^third true$' <<<"$scoped")" "1 1 0 1"
	hl7_line() { echo "SELECT '$1 ' || (schedphi.hl7_ingest('MSH|^~\\&|AUEHR|AUFAC|||20260301120000||SIU^S12|$2|P|2.5.1' || chr(13)) LIKE 'MSH|%MSA|%');"; }
	scoped=$(psql -X -q -At -U au_temp -d "$db" 2>&1 <<EOF
$(hl7_line first AUC-1)
\\! psql -X -q -At -U postgres -d $db -c "SELECT schedphi.remove_member('$tenant', 'au_temp', 'integration')" >/dev/null
$(hl7_line second AUC-2)
EOF
)
	aok "an integration membership removed in another session stops the session's next HL7 message" \
		"$(grep -c '^first true$' <<<"$scoped") $(grep -c 'permission denied' <<<"$scoped") $(grep -c '^second' <<<"$scoped")" "1 1 0"
	# A session whose repeatable read transaction began before a membership
	# was removed still sees it there (its snapshot), but must not carry
	# what it saw into the next transaction.  (au_temp is a scheduler in a
	# second tenant too, so it keeps the group role and only the row goes.)
	local second
	second=$(aq -At -c "SELECT schedphi.create_tenant('Audit second', 'UTC')")
	aq -c "SELECT schedphi.add_member('$second', 'au_temp', 'scheduler')" \
		-c "SELECT schedphi.add_member('$tenant', 'au_temp', 'scheduler')" >/dev/null
	local repeatable
	repeatable=$(psql -X -q -At -U au_temp -d "$db" 2>&1 <<EOF
SELECT 'first ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-17 14:00Z, 2026-06-17 14:30Z)') IS NOT NULL);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 'snapshot ' || count(*) FROM pg_catalog.pg_class WHERE false;
\\! psql -X -q -At -U postgres -d $db -c "SELECT schedphi.remove_member('$tenant', 'au_temp', 'scheduler')" >/dev/null
SELECT 'inside ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-17 15:00Z, 2026-06-17 15:30Z)') IS NOT NULL);
COMMIT;
SELECT 'after ' || (schedphi.book('$p1', ARRAY['$dr']::uuid[], '[2026-06-17 16:00Z, 2026-06-17 16:30Z)') IS NOT NULL);
EOF
)
	aok "a role removed while a repeatable read transaction ran is gone from the session's cache after it" \
		"$(grep -c '^first true$' <<<"$repeatable") $(grep -c '^inside true$' <<<"$repeatable") $(grep -c 'permission denied' <<<"$repeatable") $(grep -c '^after' <<<"$repeatable")" "1 1 1 0"
	# The same for a rate limit set while a repeatable read transaction ran
	# (au_temp is still a scheduler in the second tenant).
	local limited
	limited=$(psql -X -q -At -U au_temp -d "$db" 2>&1 <<EOF
SELECT 'first ' || count(*) FROM schedphi.find_patient('$second', mrn => 'RL-1');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 'snapshot ' || count(*) FROM pg_catalog.pg_class WHERE false;
\\! psql -X -q -At -U postgres -d $db -c "SELECT schedphi.set_rate_limit('$second', login => 'au_temp', lookups_per_minute => 2)" >/dev/null
SELECT 'inside ' || count(*) FROM schedphi.find_patient('$second', mrn => 'RL-2');
COMMIT;
SELECT 'after ' || count(*) FROM schedphi.find_patient('$second', mrn => 'RL-3');
EOF
)
	aok "a rate limit set while a repeatable read transaction ran holds after it" \
		"$(grep -c '^first 0$' <<<"$limited") $(grep -c '^inside 0$' <<<"$limited") $(grep -c 'rate limit exceeded' <<<"$limited") $(grep -c '^after' <<<"$limited")" "1 1 1 0"
	aq -c "SELECT schedphi.set_rate_limit('$second', login => 'au_temp')" >/dev/null
	aok "a membership change cannot be prepared for two-phase commit (other sessions' cached roles)" \
		"$(aq -v ON_ERROR_STOP=0 -c "BEGIN" -c "SELECT schedphi.add_member('$tenant', 'au_temp', 'support')" \
			-c "PREPARE TRANSACTION 'sp_members'" | grep -c 'cannot PREPARE a transaction that changed schedphi memberships')" 1
	aok "no value ever reaches the log (canaries: name, phone, email, MRN, reason, cancel note)" \
		"$(aq -c "SELECT count(*) FROM schedphi.audit_log l WHERE l::text ~* '(zqcanary|0199 777)'")" 0

	# ------------------------------------------------------ append-only
	seal_now
	local first
	first=$(aq -c "SELECT min(seq) FROM schedphi.audit_log")
	aok "UPDATE is refused to the superuser" \
		"$(aq -c "UPDATE schedphi.audit_log SET actor = 'someone else' WHERE seq = $first" | grep -c 'append-only')" 1
	aok "DELETE is refused to the superuser" \
		"$(aq -c "DELETE FROM schedphi.audit_log WHERE seq = $first" | grep -c 'append-only')" 1
	local apart
	apart=$(aq -c "SELECT tableoid::regclass FROM schedphi.audit_log WHERE seq = $first")
	aok "TRUNCATE is refused to the superuser, on the log and on a partition" \
		"$(aq -c "TRUNCATE schedphi.audit_log" 2>&1 | grep -c 'append-only')$(aq -c "TRUNCATE $apart" | grep -c 'append-only')" 11
	aok "sealing a record again is refused (only an unsealed record is sealed)" \
		"$(aq -c "UPDATE schedphi.audit_log SET hash = prev_hash WHERE seq = $first" | grep -c 'append-only')" 1
	aok "a chain's head never moves back, and no chain is removed" \
		"$(aq -c "UPDATE schedphi.audit_chain SET head_seq = head_seq - 1" | grep -c 'only moves forward')$(aq -c "DELETE FROM schedphi.audit_chain" | grep -c 'only moves forward')" 11
	aok "and so is UPDATE under session_replication_role = replica" \
		"$(aq -c "SET session_replication_role = replica" -c "UPDATE schedphi.audit_log SET actor = 'x'" | grep -c 'append-only')" 1
	aok "the chain verifies" "$(verify)" "t -"

	# ---------------------------------------- tampering that skips triggers
	# k and k2: a read record and the next record of the same chain (the tenant's)
	local k k2 part
	k=$(aq -c "SELECT seq FROM schedphi.audit_log WHERE action = 'read' ORDER BY seq LIMIT 1")
	k2=$(aq -c "SELECT min(seq) FROM schedphi.audit_log WHERE seq > $k AND chain = (SELECT chain FROM schedphi.audit_log WHERE seq = $k)")
	part=$(aq -c "SELECT tableoid::regclass FROM schedphi.audit_log WHERE seq = $k")
	aq -c "ALTER TABLE $part DISABLE TRIGGER ALL" >/dev/null
	aq -c "UPDATE $part SET purpose = 'OPERATIONS' WHERE seq = $k" >/dev/null
	aok "a record changed with the triggers disabled is found and located" "$(verify)" "f $k"
	aq -c "UPDATE $part SET purpose = 'TREAT' WHERE seq = $k" >/dev/null
	aok "putting it back makes the chain verify again" "$(verify)" "t -"
	aq -c "CREATE TABLE saved AS SELECT * FROM schedphi.audit_log WHERE seq = $k2" \
		-c "DELETE FROM $part WHERE seq = $k2" >/dev/null
	aok "a removed record is found and located" "$(verify)" "f $k2"
	aq -c "INSERT INTO schedphi.audit_log SELECT * FROM saved" -c "DROP TABLE saved" >/dev/null
	aq -c "UPDATE $part SET seq = CASE seq WHEN $k THEN $k2 ELSE $k END WHERE seq IN ($k, $k2)" >/dev/null
	aok "two reordered records are found and located" "$(verify)" "f $k"
	aq -c "UPDATE $part SET seq = CASE seq WHEN $k THEN $k2 ELSE $k END WHERE seq IN ($k, $k2)" \
		-c "ALTER TABLE $part ENABLE ALWAYS TRIGGER append_only" -c "ALTER TABLE $part ENABLE ALWAYS TRIGGER append_only_truncate" >/dev/null
	aok "and the chain verifies once they are put back" "$(verify)" "t -"

	# ------------------------------------------------- editing the file
	PGAPPNAME=tamper-target-aaaa as au_support -c "SELECT schedphi.patient_record('$canary')" >/dev/null
	seal_now
	k=$(aq -c "SELECT seq FROM schedphi.audit_log WHERE application = 'tamper-target-aaaa'")
	local file
	file=$SP_TMP/data/$(aq -c "SELECT pg_relation_filepath(tableoid) FROM schedphi.audit_log WHERE seq = $k")
	aq -c "CHECKPOINT" >/dev/null
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -m fast -w stop >/dev/null
	sp_as_server perl -0777 -i -pe 's/tamper-target-aaaa/tamper-target-zzzz/g' "$file"
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -l "$SP_TMP/server.log" -w -t 60 start >/dev/null
	aok "a record edited in the table file, server stopped, is found and located" "$(verify)" "f $k"
	aq -c "ALTER TABLE $part DISABLE TRIGGER ALL" \
		-c "UPDATE schedphi.audit_log SET application = 'tamper-target-aaaa' WHERE seq = $k" \
		-c "ALTER TABLE $part ENABLE ALWAYS TRIGGER append_only" -c "ALTER TABLE $part ENABLE ALWAYS TRIGGER append_only_truncate" >/dev/null
	aok "and verifies when repaired" "$(verify)" "t -"

	# ---------------------------------------------------------- digests
	local digest forged
	seal_now
	digest=$(as au_auditor -c "SELECT schedphi.audit_digest()")
	aok "an auditor's digest verifies" "$(as au_auditor -F' ' -c "SELECT ok, checked FROM schedphi.verify_audit('$digest')")" "t 0"
	as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.patient_record('$canary') IS NULL" -c "COMMIT" >/dev/null
	seal_now
	aok "and checks what came after it" \
		"$(as au_auditor -F' ' -c "SELECT ok, checked > 0 FROM schedphi.verify_audit('$digest')")" "t t"
	forged=$(echo "$digest" | sed -E 's/"seq": ([0-9]+)/"seq": 1\1/')
	aok "a forged digest does not verify" \
		"$(as au_auditor -c "SELECT * FROM schedphi.verify_audit('$forged')" | grep -c 'signature does not verify')" 1
	local tdigest
	tdigest=$(as au_auditor -c "SELECT schedphi.audit_digest('$tenant')")
	as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.patient_record('$canary') IS NULL" -c "COMMIT" >/dev/null
	seal_now
	aok "a tenant's auditor takes a digest of the tenant's chain, and verifies what came after it" \
		"$(as au_auditor -F' ' -c "SELECT ok, checked FROM schedphi.verify_audit('$tdigest')")" "t 1"
	aok "a digest of another tenant's chain is refused to them" \
		"$(as au_auditor -c "SELECT schedphi.audit_digest('00000000-0000-0000-0000-000000000000')" | grep -c '^ERROR:  permission denied')" 1
	local last
	last=$(aq -c "SELECT max(seq) FROM schedphi.audit_log WHERE chain = '$tenant'")
	aq -c "ALTER TABLE $part DISABLE TRIGGER ALL" -c "CREATE TABLE saved AS SELECT * FROM schedphi.audit_log WHERE seq = $last" \
		-c "DELETE FROM schedphi.audit_log WHERE seq = $last" >/dev/null
	aok "the last record of a chain, removed, is found (the chain's head names it)" "$(verify)" "f $last"
	aok "and so does a digest taken before it" \
		"$(as au_auditor -F' ' -c "SELECT ok, first_bad FROM schedphi.verify_audit('$tdigest')")" "f $last"
	aq -c "INSERT INTO schedphi.audit_log SELECT * FROM saved" -c "DROP TABLE saved" \
		-c "ALTER TABLE $part ENABLE ALWAYS TRIGGER append_only" -c "ALTER TABLE $part ENABLE ALWAYS TRIGGER append_only_truncate" >/dev/null
	aok "put back, it verifies" "$(verify)" "t -"
	aok "only an auditor makes a digest" "$(as au_sched -c "SELECT schedphi.audit_digest()" | grep -c '^ERROR:  permission denied: audit rule')" 1

	# -------------------------------------------------- accounting of disclosures
	aok "access_report lists who wrote and read the patient's data, and why" \
		"$(as au_auditor -c "SELECT string_agg(DISTINCT action || ':' || login || ':' || coalesce(purpose, '-'), ' ' ORDER BY action || ':' || login || ':' || coalesce(purpose, '-'))
							 FROM schedphi.access_report('$canary') WHERE action IN ('insert', 'read')")" \
		"insert:au_sched:- read:au_sched:PAYMENT read:au_sched:TREAT"
	aok "the same report in plain words" \
		"$(as au_auditor -c "SELECT what FROM schedphi.access_report_text('$canary') WHERE what LIKE 'viewed%payment%'" | head -1)" \
		"viewed the patient's name, date of birth, phone number, e-mail address, medical record number, ZIP code, for payment, using psql"
	aok "a scheduler gets no access report" \
		"$(as au_sched -c "SELECT count(*) FROM schedphi.access_report('$canary')" | grep -c '^ERROR:  permission denied: audit rule')" 1
	aok "an auditor reads the log directly, a scheduler does not" \
		"$(as au_auditor -c "SELECT count(*) > 0 FROM schedphi.audit_log")$(as au_sched -c "SELECT count(*) FROM schedphi.audit_log" | grep -c 'permission denied')" t1

	# ----------------------------------------------------- fail closed
	local wpid
	wpid=$(aq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'schedphi audit' AND datname = '$db'")
	psql -X -q -c "ALTER ROLE au_sched IN DATABASE $db SET schedphi.audit_timeout = '500ms'" >/dev/null
	kill -STOP "$wpid"
	got=$(as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.patient_record('$canary') IS NOT NULL")
	kill -CONT "$wpid"
	aok "with the audit worker stopped, a read fails closed" "$(echo "$got" | grep -c 'audit log is not available')" 1
	got=$(as au_sched -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.patient_record('$canary') IS NOT NULL")
	aok "and works again once the worker runs" "$(echo "$got" | tail -1)" t
	psql -X -q -c "ALTER ROLE au_sched IN DATABASE $db RESET schedphi.audit_timeout" >/dev/null

	# ------------------------------------------------------------ purge
	aok "purge refuses records younger than schedphi.audit_retention" \
		"$(aq -c "SELECT schedphi.purge_audit(now() - interval '1 year')" | grep -c 'younger than')" 1
	aok "a retention that is not a length of time is 22023, and purges nothing" \
		"$(aq -c "SET schedphi.audit_retention = 'banana'" -c "SELECT schedphi.purge_audit(now() - interval '10 years')" | grep -c 'must be a length of time')" 1
	seal_now
	local upto old_digest
	old_digest=$(aq -c "SELECT schedphi.audit_digest()")
	upto=$(aq -c "SELECT max(seq) FROM schedphi.audit_log")
	aok "with a short retention, purge removes old records and anchors the cut" \
		"$(aq -c "SET schedphi.audit_retention = '0'" -c "SELECT schedphi.purge_audit(now()) >= $((upto - 1))")" t
	seal_now
	aok "the chain verifies from the anchor" \
		"$(aq -F' ' -c "SELECT ok, checked < 5 FROM schedphi.verify_audit()")" "t t"
	aok "a digest taken before the purge is reported as purged, not as tampering" \
		"$(aq -c "SELECT * FROM schedphi.verify_audit('$old_digest'::jsonb)" | grep -c "the digest's record was purged")" 1
	# An old month (the records of a clinic merged in, in a chain of their
	# own, as bench/scale.sh writes them): its partition is dropped whole,
	# and the records of this month stay.
	local oldmonth
	oldmonth=$(aq -c "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months', 'YYYYMM')")
	aq -c "DO \$\$ DECLARE m timestamp := to_date('$oldmonth', 'YYYYMM'); BEGIN
			EXECUTE format('CREATE TABLE schedphi.%I PARTITION OF schedphi.audit_log FOR VALUES FROM (%L) TO (%L)',
						   'audit_log_$oldmonth', m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC');
			PERFORM schedphi._audit_protect('audit_log_$oldmonth');
		END \$\$" \
		-c "INSERT INTO schedphi.audit_log (at, login, actor, tenant, role, purpose, action, object, chain)
			SELECT to_date('$oldmonth', 'YYYYMM') AT TIME ZONE 'UTC' + g * interval '1 hour', 'au_merged', 'au_merged',
				   '0000000a-0d17-4000-8000-0000000d0001', 'scheduler', 'TREAT', 'read', 'patient',
				   '0000000a-0d17-4000-8000-0000000d0001'
			FROM generate_series(1, 40) g" >/dev/null
	seal_now
	local before_count
	before_count=$(aq -c "SELECT count(*) FROM schedphi.audit_log WHERE at >= date_trunc('month', now())")
	aok "a purge drops an old month's partition whole" \
		"$(aq -c "SET schedphi.audit_retention = '0'" -c "SELECT schedphi.purge_audit(date_trunc('month', now()) - interval '1 month')") $(aq -c "SELECT to_regclass('schedphi.audit_log_$oldmonth') IS NULL")" "40 t"
	seal_now
	aok "and keeps this month's records, and the chains verify" \
		"$(aq -c "SELECT count(*) >= $before_count FROM schedphi.audit_log WHERE at >= date_trunc('month', now())") $(verify)" "t t -"

	# --------------------------------------------- the sealer's floor
	# Passes "from the beginning" start at a floor below which everything is
	# sealed.  A transaction that took a record's id and commits late must
	# hold the floor below that id while it is open, however many later
	# records are sealed meanwhile; once it commits, its record is sealed
	# and the floor passes it.
	floor_after() {	# wake the sealer until the floor exceeds $1 (or 10 s)
		local f=0 j
		for j in $(seq 1 100); do
			f=$(aq -c "SELECT schedphi._audit_floor() FROM (SELECT schedphi._audit_wake()) w")
			[ "$f" -gt "$1" ] && break
			sleep 0.1
		done
		echo "$f"
	}
	wake_sealer() {	# $1 times, a tenth of a second apart
		for i in $(seq 1 "$1"); do
			aq -c "SELECT schedphi._audit_wake()" >/dev/null
			sleep 0.1
		done
	}
	book_twenty_and_seal() {	# 20 bookings on 2027-03-$1, sealed, and the sealer woken 2 s more
		as au_sched -c "SELECT count(schedphi.book('$p1', ARRAY['$dr']::uuid[], tstzrange(t, t + interval '15 minutes')))
			FROM (SELECT timestamptz '2027-03-$1 09:00 America/New_York' + i * interval '15 minutes' AS t
				  FROM generate_series(0, 19) i) s" >/dev/null
		seal_now
		wake_sealer 20
	}
	late_record_state() {	# the late booking's insert record sealed/all, the chains, the floor past l0
		echo "$(aq -c "SELECT count(*) FILTER (WHERE hash IS NOT NULL) || '/' || count(*) FROM schedphi.audit_log
				  WHERE object = 'appointment' AND object_id = '$late_appt' AND action = 'insert'") $(verify) $(($(floor_after $((l0 + 1))) > l0))"
	}
	local l0 late_appt held=$SP_TMP/audit_late.out
	seal_now
	l0=$(aq -c "SELECT last_value FROM schedphi.audit_log_id")
	aok "the floor rises to what is sealed" "$(($(floor_after $((l0 - 1))) >= l0))" 1
	as au_sched -c "BEGIN" -c "SELECT schedphi.book('$p1', ARRAY['$dr']::uuid[],
		tstzrange('2027-03-09 09:00 America/New_York', '2027-03-09 09:15 America/New_York'))" \
		-c "SELECT pg_sleep(8)" -c "COMMIT" >"$held" &
	local late_pid=$!
	for i in $(seq 1 50); do
		[ "$(aq -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'au_sched' AND query LIKE '%pg_sleep%'")" = 1 ] && break
		sleep 0.1
	done
	book_twenty_and_seal 10
	# (what the open transaction wrote is not visible here: all the rest is sealed)
	aok "records after an open transaction's are sealed, and the floor stays below its record" \
		"$(aq -c "SELECT count(*) FILTER (WHERE hash IS NULL) || '/' || (count(*) >= 20)::int FROM schedphi.audit_log
				  WHERE id > $l0") $(($(aq -c "SELECT schedphi._audit_floor()") <= l0))" "0/1 1"
	wait "$late_pid"
	late_appt=$(sed -n 1p "$held")
	seal_now
	aok "once it commits, its record is sealed, the chain verifies, and the floor passes it" "$(late_record_state)" "1/1 t - 1"
	# The same with two-phase commit: a prepared transaction is still open,
	# and the floor must stay below its record until COMMIT PREPARED, though
	# the backend that made it has moved on.
	seal_now
	l0=$(aq -c "SELECT last_value FROM schedphi.audit_log_id")
	floor_after $((l0 - 1)) >/dev/null
	as au_sched -c "BEGIN" -c "SELECT schedphi.book('$p1', ARRAY['$dr']::uuid[],
		tstzrange('2027-03-11 09:00 America/New_York', '2027-03-11 09:15 America/New_York'))" \
		-c "SELECT pg_sleep(3)" -c "PREPARE TRANSACTION 'audit_floor_2pc'" >"$held" &
	late_pid=$!
	wake_sealer 40	# the sealer notes this transaction while it runs
	wait "$late_pid"
	book_twenty_and_seal 12
	aok "a prepared transaction holds the floor below its record until it commits" \
		"$(aq -c "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'audit_floor_2pc'") $(($(aq -c "SELECT schedphi._audit_floor()") <= l0))" "1 1"
	aq -c "COMMIT PREPARED 'audit_floor_2pc'" >/dev/null
	late_appt=$(sed -n 1p "$held")
	seal_now
	aok "after COMMIT PREPARED its record is sealed, the chain verifies, and the floor passes it" "$(late_record_state)" "1/1 t - 1"
	# During a backlog the floor follows the sealer (a pass from it every
	# 100,000 ids), so that the first pass after a backlog of millions does
	# not step over all of their old index entries; a long read-only
	# statement (a report, pg_dump, _audit_sync's wait) running meanwhile
	# holds no id of the log and does not hold the floor back.
	seal_now
	l0=$(aq -c "SELECT last_value FROM schedphi.audit_log_id")
	PGAPPNAME=au_long_reader aq -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
	local reader_pid=$!
	aq -c "INSERT INTO schedphi.audit_log (at, login, actor, tenant, role, purpose, action, object, object_id,
			patient, columns, application, chain)
		SELECT now(), 'au_backlog', 'au_backlog', '$tenant', 'scheduler', 'TREAT', 'read', 'patient', '$p1', '$p1',
			'{given}', 'backlog', '$tenant' FROM generate_series(1, 250000)" >/dev/null
	local l1 seen=0 sealed_last
	l1=$(aq -c "SELECT last_value FROM schedphi.audit_log_id")
	aq -c "SELECT schedphi._audit_wake()" >/dev/null
	for i in $(seq 1 300); do
		read -r f sealed_last < <(aq -F' ' -c "SELECT schedphi._audit_floor(),
			(SELECT hash IS NOT NULL FROM schedphi.audit_log WHERE id = $l1)")
		[ "$sealed_last" = t ] && break
		[ "$f" -gt $((l0 + 100000)) ] && seen=1
		sleep 0.1
	done
	aq -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'au_long_reader'" >/dev/null
	wait "$reader_pid" || true
	seal_now
	aok "during a backlog of 250,000 records, with a long read-only statement running, the floor rises before the last is sealed" \
		"$seen $(($(floor_after $((l1 - 1))) >= l1)) $(verify)" "1 1 t -"
	aok "nothing is counted as waiting" \
		"$(aq -c "SELECT pending FROM schedphi.verify_audit()")" 0

	# The floor outlives the worker and its queue's slot: once the worker
	# has left (idle), other databases take slots, and this one's next
	# worker must start from the floor, not from long before it (the slot
	# kept it, and the first database to take the slot wiped it).
	local floor_before k others=()
	floor_before=$(aq -c "SELECT schedphi._audit_floor()")
	for i in $(seq 1 100); do
		[ "$(aq -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'schedphi audit'
					AND datname = current_database()")" = 0 ] && break
		sleep 1
	done
	for k in $(seq 1 15); do
		others+=("${db}_other$k")
		psql -X -q -c "DROP DATABASE IF EXISTS ${db}_other$k" -c "CREATE DATABASE ${db}_other$k" >/dev/null 2>&1
		psql -X -q -d "${db}_other$k" -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" \
			-c "SELECT schedphi._audit_wake()" >/dev/null 2>&1
	done
	aok "the floor ($floor_before) outlives the worker, whatever queue slots 15 other databases take meanwhile" \
		"$(($(aq -c "SELECT schedphi._audit_floor()") >= floor_before && floor_before > 0))" 1
	for k in "${others[@]}"; do psql -X -q -c "DROP DATABASE $k" >/dev/null 2>&1; done

	# ----------------------------------------------- crash during bookings
	aq -c "CREATE FUNCTION public.book_one(c int, n int) RETURNS boolean LANGUAGE plpgsql AS \$f\$
			BEGIN
				PERFORM schedphi.book('$p1', ARRAY['$dr']::uuid[],
					tstzrange(t, t + interval '15 minutes'))
				FROM (SELECT (date '2027-01-04' + (n % 300) + time '09:00' + (c * 8 + n / 300 % 8) * interval '15 minutes')
							 AT TIME ZONE 'America/New_York' AS t) s;
				RETURN true;
			EXCEPTION WHEN exclusion_violation OR invalid_parameter_value THEN
				RETURN false;
			END \$f\$" >/dev/null
	printf '\\set n random(0, 100000)\nSELECT public.book_one(:client_id, :n);\n' >"$SP_TMP/audit_book.pgbench"
	chmod 644 "$SP_TMP/audit_book.pgbench"
	"$SP_PGBIN/pgbench" -n -c 4 -j 2 -T 20 -f "$SP_TMP/audit_book.pgbench" "$db" >"$SP_TMP/audit_pgbench.log" 2>&1 &
	local bench=$!
	sleep 4
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -m immediate -w stop >/dev/null
	wait "$bench" 2>/dev/null
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -l "$SP_TMP/server.log" -w -t 60 start >/dev/null
	aok "bookings were committed before the crash" \
		"$(aq -c "SELECT count(*) > 20 FROM schedphi.appointment WHERE during && tstzrange('2027-01-01', '2028-01-01')")" t
	aok "after a crash every committed booking has its audit record" \
		"$(aq -c "SELECT count(*) FROM schedphi.appointment a WHERE a.during && tstzrange('2027-01-01', '2028-01-01') AND NOT EXISTS (
					SELECT 1 FROM schedphi.audit_log l WHERE l.object = 'appointment' AND l.action = 'insert'
					AND l.object_id = a.id)")" 0
	seal_now
	aok "and the chain verifies" "$(verify)" "t -"

	psql -X -q -c "DROP DATABASE $db" >/dev/null
	aok "the database drops although its audit worker ran" "$(psql -X -At -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")" 0

	# A new database's worker makes the log's partitions when it starts, which
	# locks the whole log.  A transaction that has already written a record
	# (here, create_tenant's key) and then waits for the worker (to record a
	# denial) must not be stuck behind that: the worker gives the lock up
	# and tries again later.
	psql -X -q -c "CREATE DATABASE ${db}_fresh" >/dev/null
	psql -X -q -d "${db}_fresh" -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
	psql -X -q -c "DROP ROLE IF EXISTS audit_fresh" -c "CREATE ROLE audit_fresh LOGIN" >/dev/null
	local t0 t1 out
	t0=$(date +%s%N)
	out=$(psql -X -q -At -d "${db}_fresh" -c "BEGIN" -c "SELECT schedphi.create_tenant('Fresh', 'UTC') IS NOT NULL" \
		-c "SET SESSION AUTHORIZATION audit_fresh" -c "SELECT schedphi.create_tenant('Other', 'UTC')" -c "ROLLBACK" 2>&1)
	t1=$(date +%s%N)
	aok "a denial after a write in a new database is recorded at once, not stuck behind the partitions" \
		"$(echo "$out" | grep -c 'ERROR:  permission denied: only a superuser creates tenants') $((t1 - t0 < 3000000000))" "1 1"
	sleep 11
	aok "and the worker makes the partitions a little later" \
		"$(psql -X -At -d "${db}_fresh" -c "SELECT count(*) >= 3 FROM pg_inherits WHERE inhparent = 'schedphi.audit_log'::regclass")" t
	psql -X -q -c "DROP DATABASE ${db}_fresh" -c "DROP ROLE audit_fresh" >/dev/null
	[ "$AUDIT_FAILED" -eq 0 ]
}

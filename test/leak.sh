#!/usr/bin/env bash
# No plaintext PHI at rest, in WAL, in dumps or in the server log.  Synthetic
# canary values go in through the simple and the extended protocol, with
# every statement logged (log_statement = all, log_min_duration_statement =
# 0) and through failing calls; after a CHECKPOINT none of them may appear
# in any file of the data directory (tables, indexes, pg_wal), in pg_dump
# output, or in the server log.  The dump restores into readable data.
# Sourced by test/run.sh after cluster.sh, against its running cluster.

leak_check() {
	local fail=0 db=schedphi_leak t dr loc out hits
	local canaries=(Zqxcanarygiven Zqxcanaryfamily 1911-11-11 15557773219 zqxcanary@example.org
		ZQXCANARYMRN ZQX9X Zqxcanaryreason Zqxcanarycancel Zqxcanaryfailed Zqxcanaryext 1912-12-12
		15557773218 ZQXCANARYEXTMRN 1913-13-13 Zqxcanaryexecute Zqxcanarydoblock)
	lq() { psql -X -q -At -d "$db" "$@" 2>&1; }
	lcheck() {
		if [ "$2" = "$3" ]; then echo "leak: ok - $1"; else echo "leak: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
	}
	psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
	psql -X -q -c "DROP ROLE IF EXISTS leak_sched" -c "CREATE ROLE leak_sched LOGIN" >/dev/null 2>&1
	lq -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
	psql -X -q -c "ALTER SYSTEM SET log_statement = 'all'" -c "ALTER SYSTEM SET log_min_duration_statement = 0" \
		-c "ALTER SYSTEM SET log_min_error_statement = 'error'" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 1

	t=$(lq -c "SELECT schedphi.create_tenant('Leak Clinic', 'America/New_York')")
	loc=$(lq -c "SELECT schedphi.add_location('$t', 'Leak site', 'America/New_York')")
	dr=$(lq -c "SELECT schedphi.add_practitioner('$t', 'Dr Leak Synthetic')")
	lq -c "SELECT schedphi.add_availability('$dr', '$loc', '{1,2,3,4,5,6,7}', '09:00', '17:00', '[2026-01-01,)')" >/dev/null
	lq -c "SELECT schedphi.add_member('$t', 'leak_sched', 'scheduler')" >/dev/null

	# simple protocol, as a member
	lq -v ON_ERROR_STOP=1 >/dev/null <<SQL || { echo "leak: NOT OK - the simple-protocol calls failed"; fail=1; }
SET SESSION AUTHORIZATION leak_sched;
SELECT schedphi.register_patient('$t', 'Zqxcanarygiven', 'Zqxcanaryfamily', '1911-11-11', '+1 555 777 3219',
	'zqxcanary@example.org', 'zqxcanarymrn', 'zqx9x') AS p \gset
SELECT schedphi.book(:'p', ARRAY['$dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)', reason => 'Zqxcanaryreason') AS a \gset
SELECT schedphi.cancel(:'a', 'Zqxcanarycancel');
SQL
	# a portal link's token, passed as a literal (a preview, then a use):
	# it must reach neither the log nor any file (only its keyed hash is kept)
	tok=$(lq -c "SELECT schedphi.portal_link(schedphi.book((SELECT id FROM schedphi.patient LIMIT 1), ARRAY['$dr']::uuid[],
		'[2026-06-16 14:00Z, 2026-06-16 14:30Z)'))")
	lcheck "a portal link's token is made" "$(echo "$tok" | grep -cE '^[A-Za-z0-9_-]{64}$')" "1"
	lcheck "it previews and redeems" \
		"$(lq -c "SELECT schedphi.redeem_portal_link('$tok', false) ->> 'time'" -c "SELECT schedphi.redeem_portal_link('$tok') ->> 'time'" | tr '\n' ' ')" \
		"10:00 10:00 "
	canaries+=("${tok:16:40}")
	# failing calls: a bad email after a canary name, and a bad date literal
	out=$(lq -c "SELECT schedphi.register_patient('$t', 'Zqxcanaryfailed', 'Synthetic', '1950-01-01', email => 'not-an-email')")
	lcheck "a failed registration reports the rule" "$(echo "$out" | grep -c 'invalid email address')" "1"
	out=$(lq -c "SELECT schedphi.register_patient('$t', 'Synthetic', 'Synthetic', '1913-13-13')")
	lcheck "a malformed birth date is refused" "$(echo "$out" | grep -c 'out of range\|invalid input')" "1"
	lcheck "the refused date is not echoed back" "$(echo "$out" | grep -c '1913-13-13')" "0"
	# failing calls whose text the server would quote: EXECUTE of a prepared
	# statement with literal arguments, and a DO block (its CONTEXT line)
	out=$(lq -c "PREPARE reg(uuid, text, text, date) AS SELECT schedphi.register_patient(\$1, \$2, \$3, \$4)" \
		-c "EXECUTE reg('$t', 'Zqxcanaryexecute', 'Synthetic', '2999-01-01')")
	lcheck "a failed EXECUTE reports the rule" "$(echo "$out" | grep -c 'invalid birth_date')" "1"
	out=$(lq -c "DO \$\$ BEGIN PERFORM schedphi.register_patient('$t', 'Zqxcanarydoblock', 'Synthetic', '2999-01-01'); END \$\$")
	lcheck "a failed DO block reports the rule" "$(echo "$out" | grep -c 'invalid birth_date')" "1"
	lcheck "failed calls wrote nothing" "$(lq -c "SELECT count(*) FROM schedphi.patient")" "1"

	# extended protocol: pgbench sends the values as bind parameters
	cat >"$SP_TMP/leak.pgbench" <<'SQL'
SELECT schedphi.register_patient(:tenant, :given, 'Synthetic', :birth, :phone, NULL, :mrn);
SQL
	pgbench -n -M extended -t 1 -D tenant="$t" -D given=Zqxcanaryext -D birth=1912-12-12 -D phone=15557773218 \
		-D mrn=ZQXCANARYEXTMRN -f "$SP_TMP/leak.pgbench" "$db" >/dev/null 2>&1 ||
		{ echo "leak: NOT OK - the extended-protocol registration failed"; fail=1; }
	lcheck "both registrations are stored" "$(lq -c "SELECT count(*) FROM schedphi.patient")" "2"
	lcheck "the statements were logged (masked)" "$(grep -c 'statement: SELECT schedphi.register_patient(?, ?, ?' "$SP_TMP/server.log")" "$(grep -c 'statement: SELECT schedphi.register_patient(' "$SP_TMP/server.log")"
	lcheck "bind parameters were logged (masked)" "$(grep -c 'parameters: ?' "$SP_TMP/server.log" | awk '{print ($1 > 0)}')" "1"

	psql -X -q -c "CHECKPOINT" >/dev/null
	psql -X -q -c "ALTER SYSTEM RESET log_statement" -c "ALTER SYSTEM RESET log_min_duration_statement" \
		-c "ALTER SYSTEM RESET log_min_error_statement" -c "SELECT pg_reload_conf()" >/dev/null
	pg_dump -d "$db" >"$SP_TMP/leak.dump" 2>"$SP_TMP/leak.dump.err" ||
		{ echo "leak: NOT OK - pg_dump failed: $(head -3 "$SP_TMP/leak.dump.err")"; fail=1; }
	lcheck "the dump holds sealed values" "$(grep -c 'spv1:' "$SP_TMP/leak.dump" | awk '{print ($1 > 0)}')" "1"

	for c in "${canaries[@]}"; do
		hits=$(sp_as_server grep -rail -- "$c" "$SP_TMP/data" 2>/dev/null | sed "s|$SP_TMP/||" | tr '\n' ' ')
		lcheck "'$c' is in no file of the data directory (tables, indexes, WAL)" "$hits" ""
		lcheck "'$c' is not in the pg_dump output" "$(grep -aic -- "$c" "$SP_TMP/leak.dump")" "0"
		lcheck "'$c' is not in the server log" "$(grep -aic -- "$c" "$SP_TMP/server.log")" "0"
	done

	# the dump restores, with the same key command, into readable data
	psql -X -q -c "DROP DATABASE IF EXISTS ${db}_restored" -c "CREATE DATABASE ${db}_restored" >/dev/null
	psql -X -q -d "${db}_restored" -v ON_ERROR_STOP=1 -f "$SP_TMP/leak.dump" >/dev/null 2>"$SP_TMP/restore.err" ||
		{ echo "leak: NOT OK - restore failed: $(head -3 "$SP_TMP/restore.err")"; fail=1; }
	out=$(psql -X -q -At -d "${db}_restored" -c "SET SESSION AUTHORIZATION leak_sched" -c "BEGIN" \
		-c "SELECT schedphi.set_purpose('TREAT')" \
		-c "SELECT schedphi.patient_record(id)->>'family' FROM schedphi.find_patient('$t', mrn => 'zqxcanarymrn') id" \
		-c "COMMIT" 2>&1 | grep -v '^$')
	lcheck "the restored database opens the sealed fields" "$out" "Zqxcanaryfamily"
	psql -X -q -c "DROP DATABASE ${db}_restored" -c "DROP DATABASE $db" >/dev/null
	return $fail
}

#!/usr/bin/env bash
# Key management with server restarts, against the cluster test/run.sh
# started (sourced after cluster.sh): master-key rotation and re-wrap, a
# key command that fails or prints nothing (the server stays up and every
# PHI operation fails with SPK01, writing nothing), and recovery.

keys_check() {
	local fail=0 db=schedphi_keys t p out old new
	kq() { psql -X -q -At -d "$db" "$@" 2>&1; }
	kcheck() {
		if [ "$2" = "$3" ]; then echo "keys: ok - $1"; else echo "keys: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
	}
	psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
	psql -X -q -c "DROP ROLE IF EXISTS keys_sched" -c "CREATE ROLE keys_sched LOGIN" >/dev/null 2>&1
	kq -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
	t=$(kq -c "SELECT schedphi.create_tenant('Keys Clinic', 'UTC')")
	kq -c "SELECT schedphi.add_member('$t', 'keys_sched', 'scheduler')" >/dev/null
	p=$(kq -c "SELECT schedphi.register_patient('$t', 'Keya', 'Synthetic', '1977-07-07', mrn => 'KEY-1')")
	read_given() { kq -c "SET SESSION AUTHORIZATION keys_sched" -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" \
		-c "SELECT schedphi.patient_record('$p')->>'given'" -c "COMMIT" | grep -v '^$'; }
	kcheck "a patient reads back under the first master key" "$(read_given)" "Keya"

	# 1. A new master key in front, the old one kept to unwrap.
	old=$(sp_as_server cat "$SP_TMP/master.keys" | head -1)
	new="test-kek-2 $(sp_random_key)"
	cluster_set_keys "$new" "$old"
	cluster_restart fast
	kcheck "the new master key is active after a restart" "$(kq -c "SELECT key_id FROM schedphi.master_keys() WHERE active")" "test-kek-2"
	kcheck "data keys wrapped under the old master key still open" "$(read_given)" "Keya"
	kcheck "rewrap_keys re-wraps all three data keys" "$(kq -c "SELECT schedphi.rewrap_keys()")" "3"
	kcheck "every data key is now under the new master key" \
		"$(kq -c "SELECT count(*) FROM schedphi.data_key WHERE kek_id <> 'test-kek-2'")" "0"
	kcheck "re-wraps are recorded" "$(kq -c "SELECT count(*) FROM schedphi.key_event WHERE action = 'key_rewrap'")" "3"
	cluster_set_keys "$new"
	cluster_restart fast
	kcheck "with the old master key retired, the data still opens" "$(read_given)" "Keya"

	# 2. A key command that prints nothing: the server runs, PHI fails closed.
	cluster_set_keys ""
	cluster_restart fast
	kcheck "the server runs without master keys" "$(kq -c "SELECT 1")" "1"
	out=$(kq -c "SELECT schedphi.register_patient('$t', 'Nokey', 'Synthetic', '1980-01-01')")
	kcheck "registering a patient fails with SPK01" "$(echo "$out" | grep -c 'master key not loaded')" "1"
	kcheck "and writes nothing" "$(kq -c "SELECT count(*) FROM schedphi.patient")" "1"
	out=$(kq -c "SET SESSION AUTHORIZATION keys_sched" -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" \
		-c "SELECT schedphi.patient_record('$p')")
	kcheck "reading a patient fails with SPK01" "$(echo "$out" | grep -c 'master key not loaded')" "1"
	out=$(kq -c "SELECT schedphi.create_tenant('No Key Clinic', 'UTC')")
	kcheck "creating a tenant fails with SPK01" "$(echo "$out" | grep -c 'master key not loaded')" "1"
	kcheck "and writes nothing" "$(kq -c "SELECT count(*) FROM schedphi.tenant")" "1"
	kcheck "the log says why, without any output of the command" \
		"$(grep -c 'schedphi.key_command failed: it printed no key' "$SP_TMP/server.log")" "1"
	out=$(kq -v VERBOSITY=verbose -c "SELECT schedphi.register_patient('$t', 'Nokey', 'Synthetic', '1980-01-01')")
	kcheck "the SQLSTATE is SPK01" "$(echo "$out" | grep -c 'SPK01')" "1"

	# 3. A command whose output is malformed.
	cluster_set_keys "test-kek-3 not-hex-at-all"
	cluster_restart fast
	kcheck "a malformed key line is reported by line number only" \
		"$(grep -c 'key_command failed: line 1 is not "KEY_ID HEX64"' "$SP_TMP/server.log")" "1"
	kcheck "no part of the malformed line reaches the log" "$(grep -c 'not-hex-at-all' "$SP_TMP/server.log")" "0"

	# 4. Only an unrelated master key: the data keys cannot be unwrapped.
	cluster_set_keys "test-kek-9 $(sp_random_key)"
	cluster_restart fast
	out=$(read_given)
	kcheck "data keys under a master key that is gone: SPK01 naming the key id" \
		"$(echo "$out" | grep -c 'master key "test-kek-2" is not loaded')" "1"

	# 5. Recovery.
	cluster_set_keys "$new"
	cluster_restart fast
	kcheck "with the key back, everything works again" "$(read_given)" "Keya"
	kcheck "and new patients can be registered" \
		"$(kq -c "SELECT count(*) FROM (SELECT schedphi.register_patient('$t', 'Back', 'Synthetic', '1980-01-01')) x")" "1"

	psql -X -q -c "DROP DATABASE $db" >/dev/null
	return $fail
}

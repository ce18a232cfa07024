#!/usr/bin/env bash
# The library must work when it is not preloaded too: restart the test
# cluster without shared_preload_libraries, use the extension, and put the
# setting back.  Sourced by test/run.sh after the other suites (needs
# cluster.sh's functions and a running cluster).

loadmode_check() {
	local out
	# a later line in postgresql.conf wins over the earlier one
	echo "shared_preload_libraries = ''  # loadmode" | sp_as_server tee -a "$SP_TMP/data/postgresql.conf" >/dev/null
	cluster_restart fast || return 1
	out=$(psql -X -q -At -v ON_ERROR_STOP=1 2>&1 <<'SQL'
CREATE DATABASE schedphi_loadmode;
\c schedphi_loadmode
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
SELECT count(*) FROM pg_settings WHERE name = 'shared_preload_libraries' AND setting = '';
SELECT schedphi.add_practitioner(schedphi.create_tenant('Load mode', 'UTC'), 'Dr Load Synthetic') AS dr \gset
SELECT count(*) FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-15, 2026-06-16)', '30 minutes');
\c postgres
DROP DATABASE schedphi_loadmode;
SQL
)
	local rc=$?
	sp_as_server sed -i '/# loadmode$/d' "$SP_TMP/data/postgresql.conf"
	cluster_restart fast
	if [ $rc -eq 0 ] && [ "$(echo "$out" | tr '\n' ' ')" = "1 0 " ]; then
		echo "loadmode: ok - schedphi works without shared_preload_libraries"
		return 0
	fi
	echo "loadmode: NOT OK - without preloading: $out"
	return 1
}

# Sourced: start and stop a throwaway PostgreSQL 15 cluster.
#
# The cluster lives in a fresh temporary directory owned by the user that
# runs the server (the `postgres` system user when we are root, since
# PostgreSQL refuses to run as root), listens only on a Unix socket in that
# directory, and preloads schedphi.  cluster_start installs traps so that
# the cluster is stopped and the directory removed on every exit path.

# SP_PG_CONFIG picks another PostgreSQL 15 installation (a developer's copy); the default is Debian's.
SP_PGBIN=$(dirname "${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}")

sp_as_server() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_stop() {
	[ -n "${SP_TMP:-}" ] && [ -d "$SP_TMP" ] || return 0
	if [ -f "$SP_TMP/data/postmaster.pid" ]; then
		sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -m immediate -w stop >/dev/null 2>&1
	fi
	if [ -n "${SP_KEEP:-}" ]; then echo "kept cluster directory $SP_TMP"; else rm -rf "$SP_TMP"; fi
	SP_TMP=
}

# The throwaway cluster's master keys: a file only the server's user can
# read, printed by schedphi.key_command.  cluster_set_keys "ID HEX64" ...
# rewrites it (the first line is the active key); a restart reloads it.
cluster_set_keys() {
	printf '%s\n' "$@" | sp_as_server tee "$SP_TMP/master.keys" >/dev/null
	sp_as_server chmod 600 "$SP_TMP/master.keys"
}

sp_random_key() {
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

# cluster_start [extra postgresql.conf lines...]
cluster_start() {
	SP_TMP=$(mktemp -d /tmp/schedphi.XXXXXX)
	trap 'cluster_stop' EXIT
	trap 'cluster_stop; exit 130' INT
	trap 'cluster_stop; exit 143' TERM
	chmod 700 "$SP_TMP"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$SP_TMP"
	SP_PORT=$((50000 + RANDOM % 10000))
	sp_as_server "$SP_PGBIN/initdb" -D "$SP_TMP/data" -U postgres -A trust -E UTF8 \
		--locale=C.UTF-8 --no-sync >"$SP_TMP/initdb.log" 2>&1 || {
		cat "$SP_TMP/initdb.log" >&2
		return 1
	}
	cluster_set_keys "test-kek-1 $(sp_random_key)"
	{
		echo "port = $SP_PORT"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$SP_TMP'"
		echo "shared_preload_libraries = 'schedphi'"
		echo "schedphi.key_command = 'cat $SP_TMP/master.keys'"
		echo "max_connections = 60"
		echo "max_worker_processes = 20   # one schedphi audit worker per busy database"
		echo "max_prepared_transactions = 10   # the audit tests use two-phase commit"
		echo "log_min_messages = warning"
		echo "timezone = 'UTC'"
		local line
		for line in "$@"; do echo "$line"; done
	} | sp_as_server tee -a "$SP_TMP/data/postgresql.conf" >/dev/null
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -l "$SP_TMP/server.log" -w -t 60 start >/dev/null || {
		cat "$SP_TMP/server.log" >&2
		return 1
	}
	export PGHOST=$SP_TMP PGPORT=$SP_PORT PGUSER=postgres PGDATABASE=postgres
	unset PGPASSWORD PGSERVICE PGOPTIONS
}

# sp_restart [-m immediate]: stop (optionally by crashing) and start again.
cluster_restart() {
	local mode=${1:-fast}
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -m "$mode" -w stop >/dev/null
	sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_TMP/data" -l "$SP_TMP/server.log" -w -t 60 start >/dev/null
}

# Sourced: a throwaway Citus cluster (a coordinator and two workers) for
# test/citus.sh.  Like cluster.sh: one temporary directory owned by the
# server's user, private ports on 127.0.0.1 (Citus's nodes talk over TCP),
# trust authentication for the loopback only, every node stopped and the
# directory removed on every exit path.  schedphi and citus are preloaded
# (citus first, as Citus requires), every node has the same master keys.
#
# citus_find: sets SP_CITUS_SRC to ../shared/citus when it is there, and
# says whether Citus can be had at all (installed, or installable).
# citus_install: installs it into the PostgreSQL that pg_config names.

. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

citus_find() {
	local pg_config=${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
	SP_CITUS_SRC=
	if [ -x "$SP_ROOT/../shared/citus/install.sh" ] || [ -f "$SP_ROOT/../shared/citus/install.sh" ]; then
		SP_CITUS_SRC=$(cd "$SP_ROOT/../shared/citus" && pwd)
		return 0
	fi
	[ -f "$("$pg_config" --pkglibdir)/citus.so" ]
}

citus_install() {
	[ -n "$SP_CITUS_SRC" ] || return 0
	PG_CONFIG=${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config} bash "$SP_CITUS_SRC/install.sh" >/dev/null
}

SP_CITUS_NODES=(coord w1 w2)

citus_stop() {
	[ -n "${SP_CTMP:-}" ] && [ -d "$SP_CTMP" ] || return 0
	local n
	for n in "${SP_CITUS_NODES[@]}"; do
		[ -f "$SP_CTMP/$n/postmaster.pid" ] || continue
		sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_CTMP/$n" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_CTMP/$n" -m immediate -w stop >/dev/null 2>&1
	done
	if [ -n "${SP_KEEP:-}" ]; then echo "kept Citus cluster directory $SP_CTMP"; else rm -rf "$SP_CTMP"; fi
	SP_CTMP=
}

# citus_start: nodes up, citus created on each and the workers registered.
# Exports PGHOST/PGPORT for the coordinator, SP_CPORT, SP_W1PORT, SP_W2PORT.
citus_start() {
	SP_CTMP=$(mktemp -d /tmp/schedphi-citus.XXXXXX)
	trap 'citus_stop' EXIT
	trap 'citus_stop; exit 130' INT
	trap 'citus_stop; exit 143' TERM
	chmod 700 "$SP_CTMP"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$SP_CTMP"
	local base=$((40000 + RANDOM % 9000)) i n port
	printf 'test-kek-1 %s\n' "$(sp_random_key)" | sp_as_server tee "$SP_CTMP/master.keys" >/dev/null
	sp_as_server chmod 600 "$SP_CTMP/master.keys"
	for i in 0 1 2; do
		n=${SP_CITUS_NODES[$i]}
		port=$((base + i))
		sp_as_server "$SP_PGBIN/initdb" -D "$SP_CTMP/$n" -U postgres -A trust -E UTF8 \
			--locale=C.UTF-8 --no-sync >"$SP_CTMP/initdb-$n.log" 2>&1 || {
			cat "$SP_CTMP/initdb-$n.log" >&2
			return 1
		}
		{
			echo "port = $port"
			echo "listen_addresses = '127.0.0.1'"
			echo "unix_socket_directories = '$SP_CTMP'"
			echo "shared_preload_libraries = 'citus,schedphi'"
			echo "schedphi.key_command = 'cat $SP_CTMP/master.keys'"
			echo "max_connections = 120"
			echo "max_worker_processes = 20"
			echo "max_prepared_transactions = 60"
			echo "wal_level = logical"
			echo "log_min_messages = warning"
			echo "timezone = 'UTC'"
		} | sp_as_server tee -a "$SP_CTMP/$n/postgresql.conf" >/dev/null
		sp_as_server "$SP_PGBIN/pg_ctl" -D "$SP_CTMP/$n" -l "$SP_CTMP/$n.log" -w -t 60 start >/dev/null || {
			cat "$SP_CTMP/$n.log" >&2
			return 1
		}
	done
	SP_CPORT=$base SP_W1PORT=$((base + 1)) SP_W2PORT=$((base + 2))
	export PGHOST=127.0.0.1 PGPORT=$SP_CPORT PGUSER=postgres PGDATABASE=postgres
	unset PGPASSWORD PGSERVICE PGOPTIONS
	for port in $SP_CPORT $SP_W1PORT $SP_W2PORT; do
		"$SP_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -p "$port" -c "CREATE EXTENSION citus" >/dev/null || return 1
	done
	"$SP_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 \
		-c "SELECT citus_set_coordinator_host('127.0.0.1', $SP_CPORT)" \
		-c "SELECT citus_add_node('127.0.0.1', $SP_W1PORT)" \
		-c "SELECT citus_add_node('127.0.0.1', $SP_W2PORT)" >/dev/null || return 1
}

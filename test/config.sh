#!/usr/bin/env bash
# check_config() against two clusters of its own (issue #15): one configured
# badly on purpose (trust lines in pg_hba.conf, ssl off, TLS 1.0 allowed, md5
# passwords, no connection or statement logging, schedphi not preloaded, a
# key file others can read, a second superuser, a role that bypasses
# row-level security, a login without limits, a data key over a year old,
# no WAL archive) and one configured well (a certificate made here with
# openssl, TLS 1.2 or later, hostssl lines with scram-sha-256 only, logging,
# training required, WAL archived).  Each check must flip as it should, and
# a session over TCP without TLS must be seen.  Prints "config: ok - ..." or
# "config: NOT OK - ..." lines; exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export SP_ROOT=${SP_ROOT:-$(cd "$here/.." && pwd)}
. "$here/lib/cluster.sh"

fails=0
ok() { echo "config: ok - $1"; }
bad() { echo "config: NOT OK - $1"; fails=$((fails + 1)); }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (have: $2; want: $3)"; fi; }

setup_db() {
	psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE cfg" >/dev/null &&
		psql -X -q -v ON_ERROR_STOP=1 -d cfg -c "SET client_min_messages = warning" \
			-c "CREATE EXTENSION schedphi CASCADE" \
			-c "SELECT schedphi.create_tenant('Configuration Clinic (synthetic)', 'UTC')" >/dev/null
}

# check_config() over TCP as $1 (a libpq connection string's extra words);
# prints "check_id status" lines
run_checks() {
	psql -X -At -F ' ' -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$SP_PORT dbname=cfg user=postgres $1" \
		-c "SELECT check_id, status FROM schedphi.check_config() ORDER BY 1"
}

# ------------------------------------------------------------------ badly
cluster_start "listen_addresses = '127.0.0.1'" "ssl = off" "ssl_min_protocol_version = 'TLSv1'" \
	"password_encryption = md5" "log_connections = off" "log_disconnections = off" \
	"log_line_prefix = '%m [%p] '" "log_statement = none" "archive_mode = off" ||
	{ bad "the badly configured cluster did not start"; exit 1; }
setup_db || bad "schedphi installed in the badly configured cluster"
psql -X -q -d cfg -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || bad "the bad roles and the old data key"
CREATE ROLE cfg_second_super SUPERUSER;
CREATE ROLE cfg_bypass BYPASSRLS;
CREATE ROLE cfg_login LOGIN;
UPDATE schedphi.data_key SET created_at = now() - interval '400 days';
SQL
# initdb -A trust wrote host lines with trust; the key file made readable to all
sp_as_server chmod 644 "$SP_TMP/master.keys"
# the library no longer preloaded (a later line wins), then a restart
echo "shared_preload_libraries = ''" | sp_as_server tee -a "$SP_TMP/data/postgresql.conf" >/dev/null
cluster_restart fast || bad "the badly configured cluster restarted"
bad_out=$(run_checks "sslmode=disable" 2>&1) || bad "check_config() ran in the badly configured cluster: $bad_out"
cluster_stop

# ------------------------------------------------------------------- well
cluster_start "listen_addresses = '127.0.0.1'" "ssl_min_protocol_version = 'TLSv1.2'" \
	"password_encryption = 'scram-sha-256'" "log_connections = on" "log_disconnections = on" \
	"log_line_prefix = '%m [%p] %q%u@%d %a %h '" "log_statement = ddl" "schedphi.require_training = on" \
	"archive_mode = on" ||
	{ bad "the well configured cluster did not start"; exit 1; }
sp_as_server mkdir "$SP_TMP/archive"
echo "archive_command = 'cp %p $SP_TMP/archive/%f'" | sp_as_server tee -a "$SP_TMP/data/postgresql.conf" >/dev/null
# a certificate for the server, made here
sp_as_server openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
	-keyout "$SP_TMP/data/server.key" -out "$SP_TMP/data/server.crt" >/dev/null 2>&1 ||
	bad "openssl made the server's certificate"
sp_as_server chmod 600 "$SP_TMP/data/server.key"
# pg_hba.conf: the Unix socket as before (not network), the network by TLS and SCRAM only
printf '%s\n' "local all all trust" "hostssl all all 127.0.0.1/32 scram-sha-256" |
	sp_as_server tee "$SP_TMP/data/pg_hba.conf" >/dev/null
echo "ssl = on" | sp_as_server tee -a "$SP_TMP/data/postgresql.conf" >/dev/null
cluster_restart fast || { bad "the well configured cluster restarted with TLS"; tail "$SP_TMP/server.log" >&2; exit 1; }
setup_db || bad "schedphi installed in the well configured cluster"
export PGPASSWORD=cfg-synthetic-password
psql -X -q -v ON_ERROR_STOP=1 -d cfg >/dev/null <<SQL || bad "the password set and a WAL segment switched"
ALTER ROLE postgres PASSWORD '$PGPASSWORD';
CREATE TABLE public.filler AS SELECT g FROM generate_series(1, 1000) g;
SELECT pg_switch_wal();
SQL
for _ in $(seq 60); do
	[ "$(psql -X -At -d cfg -c "SELECT last_archived_time IS NOT NULL FROM pg_stat_archiver")" = t ] && break
	sleep 0.5
done
if psql -X -At "host=127.0.0.1 port=$SP_PORT dbname=cfg user=postgres sslmode=disable" -c "SELECT 1" >/dev/null 2>&1; then
	bad "a TCP connection without TLS is refused by the well configured cluster"
else
	ok "a TCP connection without TLS is refused by the well configured cluster"
fi
good_out=$(run_checks "sslmode=require" 2>&1) || bad "check_config() ran in the well configured cluster over TLS: $good_out"
unset PGPASSWORD
cluster_stop

# ------------------------------------------------------------------ flips
status_of() { awk -v k="$2" '$1 == k { print $2 }' <<<"$1"; }
n_bad=$(grep -c . <<<"$bad_out")
n_good=$(grep -c . <<<"$good_out")
if [ "$n_bad" -ge 15 ] && [ "$n_bad" -eq "$n_good" ]; then
	ok "check_config() gives the same $n_good checks in both clusters (15 or more)"
else
	bad "check_config() gives the same checks in both clusters (have $n_bad and $n_good)"
fi
# check_id, its status configured badly, its status configured well
while read -r id want_bad want_good; do
	check "$id: $want_bad when configured badly, $want_good when configured well" \
		"$(status_of "$bad_out" "$id")/$(status_of "$good_out" "$id")" "$want_bad/$want_good"
done <<'FLIPS'
ssl fail pass
ssl_min_protocol_version fail pass
sessions_without_tls fail pass
password_encryption fail pass
hba_methods fail pass
superusers warn pass
bypassrls fail pass
connection_limits warn pass
password_expiry warn pass
log_connections fail pass
log_disconnections fail pass
log_line_prefix fail pass
log_statement fail pass
schedphi_preloaded fail pass
key_command fail pass
data_key_age warn pass
require_training warn pass
wal_archiving fail pass
FLIPS
# the seal lag takes minutes to go wrong (test/audit.sh stops the worker); where the worker runs it passes
check "audit_seal_lag: pass where the audit worker runs" "$(status_of "$good_out" audit_seal_lag)" pass
[ -n "${SP_VERBOSE:-}" ] && paste <(echo "$bad_out") <(echo "$good_out")
exit $((fails > 0))

#!/usr/bin/env bash
# schedphi behind a real pgbouncer in transaction pooling mode (a pool of 2
# server connections shared by every client):
#
#   a. assume(token, 'session') is refused (42501, session scope rule) while
#      other clients run tokenless statements through the same pool: none
#      of them runs as anyone, during or after;
#   b. six clients, each with its own token (two tenants, three roles),
#      interleave transactions that assume their token and read their
#      tenant's patients (given names decrypted) with tokenless statements:
#      nobody ever sees another client's actor, tenant or patients, no
#      tokenless statement has an identity;
#   c. the pool really was shared (at most 2 backends, each used by several
#      clients, server connections handed from one client to another);
#   d. the audit ledger names, for every assume and read of the pooled
#      login, one of the six actors, with its tenant, role, purpose and the
#      client's application_name, and only that tenant's patients;
#   e. a transaction-scope assume ends at COMMIT: the server connection the
#      client used, taken over by another client, and the client's next
#      transaction (on the other connection) have no identity; nor does
#      anyone after a client that left mid-transaction or whose transaction
#      failed;
#   f. the documented form, the token as a bind parameter (pgbench -M
#      extended), keeps each client to its own identity too;
#   and, as a control, a login wrongly cleared for session scope does leak
#   through the pool: the harness sees a leak when there is one.
#
# Needs the PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh) and
# /usr/sbin/pgbouncer (Debian package pgbouncer; test/lib/setup.sh installs
# it).  Prints "pooling: ok - ..." or "pooling: NOT OK - ..." per check and
# exits non-zero if any failed.  Tokens are never printed.
set -uo pipefail

db=schedphi_pooling
login=pool_app             # the application login the pool connects as
cleared=pool_cleared       # the control: a login (wrongly) cleared for session scope
iters=${POOL_ITERS:-200}   # transactions per client in check b
nclients=6

pgbouncer_bin=${PGBOUNCER:-/usr/sbin/pgbouncer}
[ -x "$pgbouncer_bin" ] || pgbouncer_bin=$(command -v pgbouncer 2>/dev/null || true)
if [ -z "$pgbouncer_bin" ] || [ ! -x "$pgbouncer_bin" ]; then
	echo "pooling: skipped (pgbouncer not installed)"
	exit 0
fi

as_server() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

work=$(mktemp -d)          # ours: scripts, outputs
bdir=$(mktemp -d)          # pgbouncer's: config, socket, log, pid file
chmod 700 "$bdir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$bdir"
bgpids=()

stop_bouncer() {	# the pgbouncer we started, by the pid it wrote
	local p i
	[ -f "$bdir/pgbouncer.pid" ] || return 0
	p=$(cat "$bdir/pgbouncer.pid" 2>/dev/null)
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
	kill -TERM "$p" 2>/dev/null
	for i in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null
}
cleanup() {
	local p
	for p in "${bgpids[@]}"; do kill "$p" 2>/dev/null; done
	stop_bouncer
	rm -rf "$work" "$bdir"
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT
trap 'cleanup; trap - EXIT; exit 143' TERM

started=$(date +%s)
fail=0
count=0
nfailed=0
# never let a token reach the output
mask() { sed -E 's/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*/<token>/g'; }
ok() {
	count=$((count + 1))
	if [ "$2" = "$3" ]; then
		echo "pooling: ok - $1"
	else
		echo "pooling: NOT OK - $1 (got '$2', want '$3')" | mask
		fail=1
		nfailed=$((nfailed + 1))
	fi
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# --- tokens (RS256, made with openssl as in test/tokens.sh) -----------------
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/a.pem" 2>/dev/null
openssl pkey -in "$work/a.pem" -pubout -out "$work/a.pub"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/b.pem" 2>/dev/null
openssl pkey -in "$work/b.pem" -pubout -out "$work/b.pub"
H_RS='{"alg":"RS256","typ":"JWT"}'
sign() {	# sign KEYFILE PAYLOAD_JSON -> compact JWS (RS256)
	local input
	input="$(printf '%s' "$H_RS" | b64url).$(printf '%s' "$2" | b64url)"
	printf '%s.%s' "$input" "$(printf '%s' "$input" | openssl dgst -sha256 -sign "$1" | b64url)"
}
now=$(date +%s)
claims() {	# claims ISSUER SUB TENANT ROLE
	printf '{"iss":"%s","sub":"%s","aud":"schedphi","iat":%d,"exp":%d,"amr":["pwd","otp"],"schedphi_tenant":"%s","schedphi_role":"%s"}' \
		"$1" "$2" "$now" $((now + 600)) "$3" "$4"
}

# --- the database, its tenants, issuers and synthetic patients ---------------
# (as the superuser, directly: not through the pool)
psql -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
psql -X -q -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS $login" -c "DROP ROLE IF EXISTS $cleared" \
	-c "CREATE ROLE $login LOGIN" -c "CREATE ROLE $cleared LOGIN" \
	-c "ALTER ROLE $cleared SET schedphi.allow_session_scope = on" \
	-c "CREATE DATABASE $db" >/dev/null || { echo "pooling: NOT OK - could not create the database"; exit 1; }
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null ||
	{ echo "pooling: NOT OK - CREATE EXTENSION schedphi failed"; exit 1; }
TA=$(q -c "SELECT schedphi.create_tenant('Pool Clinic A', 'UTC')")
TB=$(q -c "SELECT schedphi.create_tenant('Pool Clinic B', 'America/Chicago')")
q -c "SELECT schedphi.add_issuer('$TA', 'https://idp-a.example', 'schedphi', \$k\$$(cat "$work/a.pub")\$k\$)" \
	-c "SELECT schedphi.add_issuer('$TB', 'https://idp-b.example', 'schedphi', \$k\$$(cat "$work/b.pub")\$k\$)" >/dev/null
# 3 patients in A, 5 in B: the count a client sees also tells the tenant
q >/dev/null <<SQL
SELECT schedphi.register_patient('$TA', 'Alpha' || n, 'Poolsynthetic', date '1970-01-01' + n, mrn => 'PA-' || n)
	FROM generate_series(1, 3) n;
SELECT schedphi.register_patient('$TB', 'Bravo' || n, 'Poolsynthetic', date '1980-01-01' + n, mrn => 'PB-' || n)
	FROM generate_series(1, 5) n;
-- what each client saw, written by the client in the transaction it saw it in
CREATE TABLE public.pool_seen (
	phase	text NOT NULL,
	client	int NOT NULL,
	iter	int NOT NULL,
	kind	text NOT NULL,		-- before (a transaction's start), token (after assume), none (no token)
	actor	text,
	tenant	text,
	role	text,
	via		text,
	npat	bigint,				-- patients visible
	tenants text,				-- the tenants of those patients
	names	text,				-- their given names, decrypted
	pid		int NOT NULL,
	at		timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT INSERT ON public.pool_seen TO $login;
-- who each client is (the superuser's, not the pooled login's)
CREATE TABLE public.pool_ident (client int PRIMARY KEY, sub text, tenant uuid, role text, npat int, names text);
SQL
subs=(x pool-a-scheduler pool-a-billing pool-a-integration pool-b-scheduler pool-b-billing pool-b-integration)
roles=(x scheduler billing integration scheduler billing integration)
for c in $(seq 1 $nclients); do
	if [ "$c" -le 3 ]; then t=$TA iss=https://idp-a.example key=$work/a.pem n=3; else t=$TB iss=https://idp-b.example key=$work/b.pem n=5; fi
	sign "$key" "$(claims "$iss" "${subs[$c]}" "$t" "${roles[$c]}")" >"$work/tok$c"
	if [ "$c" -le 3 ]; then names=Alpha1,Alpha2,Alpha3; else names=Bravo1,Bravo2,Bravo3,Bravo4,Bravo5; fi
	q -c "INSERT INTO public.pool_ident VALUES ($c, '${subs[$c]}', '$t', '${roles[$c]}', $n, '$names')" >/dev/null
done
# the attacker of check a (tenant A, a scheduler), the client of check e, the control
sign "$work/a.pem" "$(claims https://idp-a.example pool-attacker "$TA" scheduler)" >"$work/tok_attacker"
sign "$work/b.pem" "$(claims https://idp-b.example pool-e-scheduler "$TB" scheduler)" >"$work/tok_e"
sign "$work/a.pem" "$(claims https://idp-a.example pool-control "$TA" scheduler)" >"$work/tok_control"
ok "setup: two tenants with 3 and 5 synthetic patients" \
	"$(q -c "SELECT count(*) FILTER (WHERE tenant = '$TA') || ' ' || count(*) FILTER (WHERE tenant = '$TB') FROM schedphi.patient")" "3 5"

# --- pgbouncer: transaction pooling, a pool of 2, on a private socket ----------
admin=${PGUSER:-postgres}
printf '"%s" ""\n' "$login" "$cleared" "$admin" | as_server tee "$bdir/userlist.txt" >/dev/null
bport=
for _attempt in 1 2 3 4 5; do
	port=$((40000 + RANDOM % 10000))
	[ -e "$bdir/.s.PGSQL.$port" ] && continue
	as_server tee "$bdir/pgbouncer.ini" >/dev/null <<EOF
[databases]
$db = host=$PGHOST port=$PGPORT dbname=$db

[pgbouncer]
listen_addr =
listen_port = $port
unix_socket_dir = $bdir
auth_type = trust
auth_file = $bdir/userlist.txt
admin_users = $admin
pool_mode = transaction
default_pool_size = 2
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
max_db_connections = 0
server_round_robin = 0
ignore_startup_parameters = extra_float_digits,options
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
	as_server "$pgbouncer_bin" -d -q "$bdir/pgbouncer.ini" >>"$work/pgbouncer.start" 2>&1
	for i in $(seq 50); do
		if psql -X -q -At -h "$bdir" -p "$port" -U "$login" -d "$db" -c "SELECT 1" >/dev/null 2>&1; then
			bport=$port
			break 2
		fi
		# no pid file after 2 s: it did not start (the port is taken?)
		if [ "$i" -ge 20 ] && [ ! -f "$bdir/pgbouncer.pid" ]; then break; fi
		sleep 0.1
	done
	# did not answer: stop what started and try another port
	stop_bouncer
done
if [ -z "$bport" ]; then
	echo "pooling: NOT OK - pgbouncer did not start"
	{ cat "$work/pgbouncer.start"; tail -20 "$bdir/pgbouncer.log"; } 2>/dev/null | sed 's/^/  /'
	exit 1
fi
console() { psql -X -q -At -h "$bdir" -p "$bport" -U "$admin" -d pgbouncer "$@" 2>&1; }
ok "pgbouncer $("$pgbouncer_bin" --version 2>/dev/null | head -1 | awk '{print $2}') answers in transaction mode with a pool of 2" \
	"$(console -c "SHOW CONFIG" | awk -F'|' '$1 == "pool_mode" || $1 == "default_pool_size" {print $1 "=" $2}' | sort | tr '\n' ' ')" \
	"default_pool_size=2 pool_mode=transaction "

# the one statement every client uses to say what it saw
seen() {	# seen PHASE CLIENT ITER KIND [READS-PATIENTS]
	if [ -n "${5:-}" ]; then
		echo "INSERT INTO public.pool_seen (phase, client, iter, kind, actor, tenant, role, via, npat, tenants, names, pid)
 SELECT '$1', $2, $3, '$4', w->>'actor', w->>'tenant', w->>'role', coalesce(w->>'via', 'none'), v.n, v.t, v.g, pg_backend_pid()
 FROM schedphi.whoami() w, LATERAL (SELECT count(*) n, string_agg(DISTINCT p.tenant::text, ',') t,
                                           string_agg(p.given, ',' ORDER BY p.given) g FROM schedphi.patients p) v;"
	else
		echo "INSERT INTO public.pool_seen (phase, client, iter, kind, actor, tenant, role, via, pid)
 SELECT '$1', $2, $3, '$4', w->>'actor', w->>'tenant', w->>'role', coalesce(w->>'via', 'none'), pg_backend_pid()
 FROM schedphi.whoami() w;"
	fi
}
# run_client NAME LOGIN TOKENFILE SQLFILE [psql options]: in the background,
# through the pool; its pid is added to $pids
pids=()
run_client() {
	local name=$1 user=$2 tokfile=$3 file=$4
	shift 4
	PGAPPNAME=$name psql -X -q -At -h "$bdir" -p "$bport" -U "$user" -d "$db" \
		-v "tok=$(cat "$tokfile")" "$@" -f "$file" >"$work/$name.out" 2>&1 &
	bgpids+=($!)
	pids+=($!)
}
forget() {	# forget PID: no longer ours to stop
	local p keep=()
	for p in "${bgpids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	bgpids=("${keep[@]}")
}
wait_all() {	# wait for $pids; $bad: how many failed
	local p
	bad=0
	for p in "${pids[@]}"; do
		wait "$p" || bad=$((bad + 1))
		forget "$p"
	done
	pids=()
}
ms() { echo $(($(date +%s%N) / 1000000)); }

# --- a. session scope through the pool is refused, and nobody inherits it -----
attempts=$((iters * 3 / 2))
{
	echo '\set VERBOSITY verbose'
	for k in $(seq 1 "$attempts"); do
		case $((k % 3)) in
			0) echo "SELECT schedphi.assume(:'tok', 'session') IS NOT NULL;" ;;
			1) echo "BEGIN;"; echo "SELECT schedphi.assume(:'tok', 'session') IS NOT NULL;"; echo "COMMIT;" ;;
			2) echo "SET schedphi.allow_session_scope = on;"; echo "SELECT schedphi.assume(:'tok', 'session') IS NOT NULL;" ;;
		esac
	done
} >"$work/attacker.sql"
for c in 1 2 3 4; do
	for k in $(seq 1 "$iters"); do seen a "$c" "$k" none reads; done >"$work/a$c.sql"
done
run_client pool-attacker "$login" "$work/tok_attacker" "$work/attacker.sql"
attacker=${pids[0]}
pids=()
for c in 1 2 3 4; do run_client "pool-a$c" "$login" "$work/tok$c" "$work/a$c.sql" -v ON_ERROR_STOP=1; done
wait_all
bad_a=$bad
wait "$attacker"
forget "$attacker"
# right after: a fresh client
for k in $(seq 1 50); do seen a 9 "$k" none reads; done >"$work/a9.sql"
run_client pool-a9 "$login" "$work/tok1" "$work/a9.sql" -v ON_ERROR_STOP=1
wait_all
bad=$((bad + bad_a))
ok "a: every assume(token, 'session') through the pool is refused with 42501 session scope rule" \
	"$(grep -c 'ERROR:  42501: token rejected: session scope rule' "$work/pool-attacker.out")" "$attempts"
ok "a: and the login cannot clear itself for session scope (SET refused)" \
	"$(grep -c 'ERROR:  42501: permission denied to set parameter "schedphi.allow_session_scope"' "$work/pool-attacker.out")" $((attempts / 3))
ok "a: the attacker's token never became anyone's identity (no 't' from any session assume)" \
	"$(grep -cx 't' "$work/pool-attacker.out")" 0
ok "a: the tokenless clients ran without error" "$bad" 0
during=$(q -c "SELECT count(*) FROM public.pool_seen s,
					(SELECT min(at) t0, max(at) t1 FROM schedphi.audit_log
					 WHERE login = '$login' AND action = 'denied' AND detail->>'rule' LIKE 'token rejected: session scope rule%') d
				WHERE s.phase = 'a' AND s.at BETWEEN d.t0 AND d.t1")
ok "a: the attempts and the tokenless statements ran at the same time ($during tokenless statements during the attack)" \
	"$([ "${during:-0}" -gt 0 ] 2>/dev/null && echo yes || echo "no overlap (${during:-?})")" yes
ok "a: $((4 * iters + 50)) tokenless statements from other clients, during and after: none ran as anyone or saw a patient" \
	"$(q -c "SELECT count(*) || ' ' || count(*) FILTER (WHERE via <> 'none' OR actor IS DISTINCT FROM '$login' OR tenant IS NOT NULL OR role IS NOT NULL OR npat <> 0 OR names IS NOT NULL)
			  FROM public.pool_seen WHERE phase = 'a'")" "$((4 * iters + 50)) 0"

# --- b. six clients, six identities, one pool of 2 -----------------------------
for c in $(seq 1 $nclients); do
	{
		for k in $(seq 1 "$iters"); do
			case $((k % 8)) in
				3)	# assume, then ROLLBACK
					echo "BEGIN;"; echo "SELECT schedphi.assume(:'tok') IS NOT NULL;"; echo "ROLLBACK;" ;;
				7)	# assume in a transaction of its own (autocommit)
					echo "SELECT schedphi.assume(:'tok') IS NOT NULL;" ;;
				*)
					echo "BEGIN;"
					seen b "$c" "$k" before
					echo "SELECT schedphi.assume(:'tok') IS NOT NULL;"
					echo "SELECT schedphi.set_purpose('TREAT');"
					seen b "$c" "$k" token reads
					echo "COMMIT;" ;;
			esac
			seen b "$c" "$k" none reads
		done
	} >"$work/b$c.sql"
done
per_tx=$(seq 1 "$iters" | awk '$1 % 8 != 3 && $1 % 8 != 7' | wc -l)
b_started=$(ms)
for c in $(seq 1 $nclients); do run_client "pool-b$c" "$login" "$work/tok$c" "$work/b$c.sql" -v ON_ERROR_STOP=1; done
wait_all
b_ms=$(($(ms) - b_started))
ok "b: $nclients clients x $iters transactions through the pool ran without error" "$bad" 0
for c in $(seq 1 $nclients); do
	[ -s "$work/pool-b$c.out" ] && grep -v -e '^t$' -e '^$' "$work/pool-b$c.out" | head -3 | mask | sed "s/^/  client $c: /"
done
ok "b: every client recorded what it saw ($per_tx transactions with a token, $iters tokenless statements each)" \
	"$(q -c "SELECT string_agg(n::text, ' ' ORDER BY client) FROM (
			   SELECT client, count(*) FILTER (WHERE kind = 'token') || '/' || count(*) FILTER (WHERE kind = 'none') n
			   FROM public.pool_seen WHERE phase = 'b' GROUP BY client) s")" \
	"$(for c in $(seq 1 $nclients); do printf '%s/%s ' "$per_tx" "$iters"; done | sed 's/ $//')"
ok "b: with its token, every client saw exactly its own actor, tenant, role, and its tenant's patients only (names decrypted)" \
	"$(q -c "SELECT count(*) FROM public.pool_seen s JOIN public.pool_ident i USING (client)
			  WHERE s.phase = 'b' AND s.kind = 'token'
				AND (s.actor IS DISTINCT FROM i.sub OR s.tenant IS DISTINCT FROM i.tenant::text OR s.role IS DISTINCT FROM i.role
					 OR s.via IS DISTINCT FROM 'token' OR s.npat IS DISTINCT FROM i.npat::bigint OR s.tenants IS DISTINCT FROM i.tenant::text
					 OR s.names IS DISTINCT FROM i.names)")" 0
ok "b: no client ever saw another client's actor or tenant (with or without a token)" \
	"$(q -c "SELECT count(*) FROM public.pool_seen s JOIN public.pool_ident i USING (client)
			  WHERE s.phase = 'b' AND ((s.actor IS DISTINCT FROM i.sub AND s.actor IS DISTINCT FROM '$login')
									OR (s.tenant IS NOT NULL AND s.tenant <> i.tenant::text)
									OR (s.tenants IS NOT NULL AND s.tenants <> i.tenant::text)
									OR (s.names IS NOT NULL AND s.names <> i.names))")" 0
ok "b: no transaction started with an identity, no tokenless statement ran with one or saw a patient" \
	"$(q -c "SELECT count(*) FROM public.pool_seen
			  WHERE phase = 'b' AND kind IN ('before', 'none')
				AND (via <> 'none' OR actor IS DISTINCT FROM '$login' OR tenant IS NOT NULL OR role IS NOT NULL OR coalesce(npat, 0) <> 0 OR names IS NOT NULL)")" 0
ok "b: a transaction stayed on one server connection from BEGIN to COMMIT" \
	"$(q -c "SELECT count(*) FROM public.pool_seen a JOIN public.pool_seen b USING (phase, client, iter)
			  WHERE phase = 'b' AND a.kind = 'before' AND b.kind = 'token' AND a.pid <> b.pid")" 0

# --- c. the pool was shared ---------------------------------------------------
ok "c: all $nclients clients ran on at most 2 server backends" \
	"$(q -c "SELECT count(DISTINCT pid) <= 2 AND count(DISTINCT client) = $nclients FROM public.pool_seen WHERE phase = 'b'")" t
ok "c: every backend served several clients, and every client used a backend another client used" \
	"$(q -c "WITH u AS (SELECT DISTINCT client, pid FROM public.pool_seen WHERE phase = 'b')
			  SELECT (SELECT bool_and(n > 1) FROM (SELECT count(*) n FROM u GROUP BY pid) x)
				 AND (SELECT bool_and(EXISTS (SELECT 1 FROM u u2 WHERE u2.pid = u1.pid AND u2.client <> u1.client)) FROM u u1)")" t
handoffs=$(q -c "SELECT count(*) FROM (SELECT client, lag(client) OVER (PARTITION BY pid ORDER BY at) prev
										FROM public.pool_seen WHERE phase = 'b') h WHERE client <> prev")
ok "c: server connections passed from one client to the next many times ($handoffs hand-offs)" \
	"$([ "${handoffs:-0}" -ge 100 ] && echo yes || echo "only ${handoffs:-0}")" yes
ok "c: pgbouncer's own view: at most 2 server connections for the pooled login" \
	"$(console -c "SHOW SERVERS" | awk -F'|' -v u="$login" -v d="$db" '$2 == u && $3 == d' | wc -l | awk '{print ($1 >= 1 && $1 <= 2) ? "yes" : "no (" $1 ")"}')" yes

# --- e. transaction scope ends at COMMIT, whoever gets the connection next -----
# E assumes, commits; H (another client) takes the server connection E just
# used and holds it; E's next transaction therefore runs on the other one.
# psql's \! waits on marker files between transactions without holding a server.
waitfor() { echo "\\! for i in \$(seq 200); do [ -e $work/$1 ] && break; sleep 0.05; done"; }
{
	echo "BEGIN;"; echo "SELECT schedphi.assume(:'tok') IS NOT NULL;"; seen e 1 1 token; echo "COMMIT;"
	echo "\\! touch $work/e1done"
	waitfor holding
	seen e 1 2 none
	echo "\\! touch $work/e2done"
	waitfor released
	echo "BEGIN;"; echo "SELECT schedphi.assume(:'tok') IS NOT NULL;"; seen e 1 3 token; echo "COMMIT;"
	seen e 1 4 none
	echo "SELECT schedphi.assume(:'tok') IS NOT NULL;"
	seen e 1 5 none
} >"$work/e.sql"
{
	waitfor e1done
	echo "BEGIN;"
	seen e 2 1 none
	echo "\\! touch $work/holding"
	waitfor e2done
	echo "COMMIT;"
	echo "\\! touch $work/released"
} >"$work/h.sql"
run_client pool-e "$login" "$work/tok_e" "$work/e.sql" -v ON_ERROR_STOP=1
run_client pool-h "$login" "$work/tok1" "$work/h.sql" -v ON_ERROR_STOP=1
wait_all
ok "e: both clients ran without error" "$bad" 0
ev() { q -c "SELECT $1 FROM public.pool_seen WHERE phase = 'e' AND client = $2 AND iter = $3"; }
ok "e: with its token the client is its actor" "$(ev "via || ' ' || actor" 1 1)" "token pool-e-scheduler"
ok "e: after COMMIT, the other client that took over that server connection has no identity" \
	"$(ev "via || ' ' || (pid = (SELECT pid FROM public.pool_seen WHERE phase = 'e' AND client = 1 AND iter = 1))" 2 1)" "none true"
ok "e: the client's next transaction, on the other server connection, has no identity" \
	"$(ev "via || ' ' || (pid <> (SELECT pid FROM public.pool_seen WHERE phase = 'e' AND client = 1 AND iter = 1))" 1 2)" "none true"
ok "e: nor its next transaction on the same connection, after COMMIT or after an autocommit assume" \
	"$(q -c "SELECT string_agg(via, ' ' ORDER BY iter) FROM public.pool_seen WHERE phase = 'e' AND client = 1 AND iter IN (3, 4, 5)")" \
	"token none none"
# a client that assumes and then disconnects in the middle of its transaction,
# one whose transaction fails after assume: pgbouncer drops or rolls back
# the server connection; the next clients have no identity
printf '%s\n' "BEGIN;" "SELECT schedphi.assume(:'tok') IS NOT NULL;" >"$work/e3.sql"
printf '%s\n' "BEGIN;" "SELECT schedphi.assume(:'tok') IS NOT NULL;" "SELECT 1 / 0;" "ROLLBACK;" >"$work/e4.sql"
for k in $(seq 1 20); do seen e 5 "$k" none; done >"$work/e5.sql"
run_client pool-e3 "$login" "$work/tok_e" "$work/e3.sql" -v ON_ERROR_STOP=1
wait_all
run_client pool-e4 "$login" "$work/tok_e" "$work/e4.sql"
wait_all
run_client pool-e5 "$login" "$work/tok1" "$work/e5.sql" -v ON_ERROR_STOP=1
wait_all
ok "e: after a client left in the middle of its transaction, and one whose transaction failed, 20 statements of the next have no identity" \
	"$(q -c "SELECT count(*) FILTER (WHERE via = 'none' AND actor = '$login' AND tenant IS NULL) FROM public.pool_seen WHERE phase = 'e' AND client = 5")" 20

# --- f. the documented form: the token as a bind parameter ----------------------
# pgbench -M extended sends :tok as $1 (extended query protocol, unnamed
# statements, which transaction pooling supports); two tenants, 3 clients each
{
	echo '\set cid :base + :client_id'
	echo "BEGIN;"
	echo "SELECT schedphi.assume(:tok) IS NOT NULL;"
	echo "SELECT schedphi.set_purpose('TREAT');"
	seen f ':cid::int' 0 token reads
	echo "COMMIT;"
	seen f ':cid::int' 0 none reads
} >"$work/f.sql"
fx=50
for c in 1 4; do	# client 1's and client 4's identities (tenants A and B)
	PGAPPNAME=pool-f$c pgbench -n -M extended -h "$bdir" -p "$bport" -U "$login" -c 3 -j 3 -t $fx \
		-D "tok=$(cat "$work/tok$c")" -D "base=$((c * 10))" -f "$work/f.sql" "$db" >"$work/pool-f$c.out" 2>&1 &
	bgpids+=($!)
	pids+=($!)
done
wait_all
ok "f: 2 x 3 pgbench clients (extended protocol) ran $((6 * fx)) transactions without error" \
	"$bad $(grep -h 'number of failed transactions' "$work"/pool-f*.out | awk '{s += $5} END {print s + 0}')" "0 0"
ok "f: with the token as a bind parameter each client saw its own actor and tenant, and nothing without it" \
	"$(q -c "SELECT count(*) FILTER (WHERE kind = 'token') || ' ' ||
				   count(*) FILTER (WHERE kind = 'token' AND s.actor = i.sub AND s.tenant = i.tenant::text AND s.via = 'token'
									AND s.npat = i.npat AND s.tenants = i.tenant::text AND s.names = i.names) || ' ' ||
				   count(*) FILTER (WHERE kind = 'none' AND s.via = 'none' AND s.actor = '$login' AND s.tenant IS NULL AND s.npat = 0)
			  FROM public.pool_seen s JOIN public.pool_ident i ON i.client = s.client / 10 WHERE s.phase = 'f'")" \
	"$((6 * fx)) $((6 * fx)) $((6 * fx))"

# --- control: a login cleared for session scope leaks through the pool ---------
# (what the refusal of check a prevents; proves this harness sees a leak)
echo "SELECT schedphi.assume(:'tok', 'session') IS NOT NULL;" >"$work/control1.sql"
for k in $(seq 1 20); do echo "SELECT coalesce(schedphi.whoami()->>'actor', 'none');"; done >"$work/control2.sql"
run_client pool-control1 "$cleared" "$work/tok_control" "$work/control1.sql" -v ON_ERROR_STOP=1
wait_all
run_client pool-control2 "$cleared" "$work/tok1" "$work/control2.sql" -v ON_ERROR_STOP=1
wait_all
leaked=$(grep -cx 'pool-control' "$work/pool-control2.out")
ok "control: a login a superuser cleared for session scope does leak through the pool ($leaked of 20 tokenless statements of another client ran as the actor)" \
	"$([ "$(cat "$work/pool-control1.out")" = t ] && [ "$leaked" -gt 0 ] && echo leak-seen || echo "no leak seen")" leak-seen

# --- d. the audit ledger ------------------------------------------------------
# assume records are queued without waiting: wait for the worker to have them all
want_assume=$((nclients * iters + 6 * fx))
for i in $(seq 100); do
	got=$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE login = '$login' AND action = 'assume' AND actor LIKE 'pool-_-%'")
	[ "${got:-0}" -ge "$want_assume" ] 2>/dev/null && break
	sleep 0.2
done
ok "d: one assume record per assume of check b (by application_name), each with its client's actor, tenant, role and issuer" \
	"$(q -c "SELECT string_agg(n::text, ' ' ORDER BY client) FROM (
			   SELECT i.client, count(l.*) n FROM public.pool_ident i
			   LEFT JOIN schedphi.audit_log l ON l.login = '$login' AND l.action = 'assume' AND l.application = 'pool-b' || i.client AND l.actor = i.sub AND l.tenant = i.tenant
				    AND l.role = i.role AND l.detail->>'scope' = 'transaction'
				    AND l.detail->>'issuer' = CASE WHEN i.client <= 3 THEN 'https://idp-a.example' ELSE 'https://idp-b.example' END
			   GROUP BY i.client) s")" \
	"$(for c in $(seq 1 $nclients); do printf '%s ' "$iters"; done | sed 's/ $//')"
ok "d: one read record per patient decrypted and statement, by its actor, with purpose TREAT, of that actor's tenant's patients only" \
	"$(q -c "SELECT string_agg(n::text, ' ' ORDER BY client) FROM (
			   SELECT i.client, count(l.*) n FROM public.pool_ident i
			   LEFT JOIN schedphi.audit_log l ON l.login = '$login' AND l.action = 'read' AND l.application = 'pool-b' || i.client AND l.actor = i.sub AND l.tenant = i.tenant
				    AND l.role = i.role AND l.purpose = 'TREAT'
				    AND EXISTS (SELECT 1 FROM schedphi.patient p WHERE p.id = l.patient AND p.tenant = i.tenant)
			   GROUP BY i.client) s")" \
	"$(for c in $(seq 1 $nclients); do if [ "$c" -le 3 ]; then printf '%s ' $((per_tx * 3)); else printf '%s ' $((per_tx * 5)); fi; done | sed 's/ $//')"
ok "d: every assume and read of the pooled login names a known actor with its own tenant and role" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log l
			  WHERE l.login = '$login' AND l.action IN ('assume', 'read')
				AND NOT EXISTS (SELECT 1 FROM public.pool_ident i WHERE i.sub = l.actor AND i.tenant = l.tenant AND i.role = l.role)
				AND NOT (l.actor = 'pool-e-scheduler' AND l.tenant = '$TB' AND l.role = 'scheduler')")" 0
ok "d: the application_name on those records is the client's own (pgbouncer passes it per transaction)" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log l JOIN public.pool_ident i ON i.sub = l.actor
			  WHERE l.login = '$login' AND l.action IN ('assume', 'read') AND l.application IS DISTINCT FROM 'pool-b' || i.client
				AND l.application IS DISTINCT FROM 'pool-f' || i.client")" 0
ok "d: no read of PHI on record without an actor, and no session-scope assume for the pooled login" \
	"$(q -c "SELECT count(*) FILTER (WHERE action = 'read' AND coalesce(actor, '$login') = '$login') || ' ' || count(*) FILTER (WHERE action = 'assume' AND detail->>'scope' = 'session')
			  FROM schedphi.audit_log WHERE login = '$login'")" "0 0"
ok "d: every refused session assume is on record (denied, session scope rule), and none accepted" \
	"$(q -c "SELECT count(*) FILTER (WHERE action = 'denied' AND detail->>'rule' LIKE 'token rejected: session scope rule%')
			  || ' ' || count(*) FILTER (WHERE action = 'assume' AND actor = 'pool-attacker')
			  FROM schedphi.audit_log WHERE login = '$login'")" "$attempts 0"

# --- no token in the logs ------------------------------------------------------
# the attacker's statements failed: the server logs failing statements
sigpart=$(cut -d. -f3 "$work/tok_attacker" | cut -c1-40)
in_logs=0
for f in "$PGHOST/server.log" "$bdir/pgbouncer.log"; do
	[ -r "$f" ] && in_logs=$((in_logs + $(grep -c -- "$sigpart" "$f")))
done
ok "no token reaches the server's or pgbouncer's log" "$in_logs" 0

stop_bouncer
psql -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP ROLE IF EXISTS $login" -c "DROP ROLE IF EXISTS $cleared" >/dev/null 2>&1
echo "pooling: $count checks, $nfailed failed, $((nclients * iters)) transactions of check b in $((b_ms / 1000)).$(printf '%03d' $((b_ms % 1000)))s, $(($(date +%s) - started))s in all"
exit $fail

#!/usr/bin/env bash
# schedphi-agent mllp (docs/agent.md), driven by MLLP clients and a
# receiver we did not write: Medplum's Hl7Client and Hl7Server (npm
# @medplum/hl7, installed here into a temporary directory; Node 20 from the
# machine), and raw node sockets for what no good client sends.  Checks:
# concurrent clients get their own ACKs and the appointments are booked;
# garbage, a bad frame, an oversized message and a stalled sender are
# handled without harm to others; TLS (client certificates required);
# outbound SIU delivered and acknowledged, also over TLS to a receiver
# behind Debian's stunnel (its certificate verified, ours presented); SIGTERM stops everything
# promptly with status 0; no PHI in the agent's log.  Needs the
# PGHOST/PGPORT/PGUSER of a running cluster.  Prints "agent: ok - ..."
# per check; exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
db=schedphi_agent
fail=0
ok() {
	if [ "$2" = "$3" ]; then echo "agent: ok - $1"; else echo "agent: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

agent=$root/schedphi-agent
if [ ! -x "$agent" ]; then
	make -s -C "$root" PG_CONFIG="${PG_CONFIG:-${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}}" schedphi-agent >/dev/null || {
		echo "agent: NOT OK - could not build schedphi-agent"
		exit 1
	}
fi

MEDPLUM_HL7_VERSION=5.0.10	# @medplum/hl7 5.0.10 with its @medplum/core 5.0.10 (5.2.13 has no hl7 release)
if ! (cd "$work" && npm install --silent --no-audit --no-fund --no-save --engine-strict=false \
	"@medplum/hl7@$MEDPLUM_HL7_VERSION" "@medplum/core@$MEDPLUM_HL7_VERSION" >"$work/npm.log" 2>&1); then
	tail -5 "$work/npm.log"
	echo "agent: NOT OK - could not install Medplum's HL7 client from npm"
	exit 1
fi
cp "$here"/agent/*.mjs "$work/"
node_run() { (cd "$work" && exec node "$@"); }

PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
	-c "DROP ROLE IF EXISTS agent_engine" -c "CREATE ROLE agent_engine LOGIN" \
	-c "DROP ROLE IF EXISTS agent_desk" -c "CREATE ROLE agent_desk LOGIN" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.ids (name text PRIMARY KEY, id uuid);
GRANT SELECT ON public.ids TO PUBLIC;
DO $$
DECLARE
	t uuid := schedphi.create_tenant('Agent Synthetic Clinic', 'America/Chicago');
	l uuid := schedphi.add_location(t, 'Agent site', 'America/Chicago');
	dr uuid := schedphi.add_practitioner(t, 'Dr Out Agentsynthetic');
BEGIN
	PERFORM schedphi.add_availability(dr, l, '{1,2,3,4,5,6,7}', '08:00', '18:00', daterange('2026-01-01', NULL), 15);
	PERFORM schedphi.add_member(t, 'agent_engine', 'integration');
	PERFORM schedphi.add_member(t, 'agent_desk', 'scheduler');
	PERFORM schedphi.add_hl7_sender(t, 'AGENTEHR', 'AGENTFAC', 'America/Chicago');
	INSERT INTO public.ids VALUES ('tenant', t), ('dr', dr),
		('receiver', schedphi.add_hl7_receiver(t, 'AGENTRIS', 'AGENTRAD'));
END $$;
SQL
ids() { q -c "SELECT id FROM public.ids WHERE name = '$1'"; }
T=$(ids tenant); DR=$(ids dr); R=$(ids receiver)
dsn="host=$PGHOST port=$PGPORT dbname=$db user=agent_engine"
# appointments booked from messages of the test's sender, by filler id prefix
booked() { q -c "SELECT count(*) FROM schedphi.appointment_ref WHERE tenant = '$T' AND value LIKE '$1%'"; }

# start_agent NAME ARGS...: runs the agent, its log in $work/NAME.log;
# sets PID and PORT (the port it listens on, from its log).
start_agent() {
	local name=$1 i
	shift
	"$agent" mllp --dsn "${DSN:-$dsn}" "$@" 2>"$work/$name.log" &
	PID=$!
	pids+=("$PID")
	PORT=
	for i in $(seq 100); do
		PORT=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/$name.log" | head -1)
		[ -n "$PORT" ] && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "agent: NOT OK - $name did not start:"
	sed 's/^/agent: | /' "$work/$name.log"
	fail=1
	return 1
}

# ------------------------------------------------------------- plain MLLP
MAX=65536
start_agent plain --listen 127.0.0.1:0 --max-bytes $MAX --idle-timeout 2 --max-clients 16
PLAIN=$PORT; PLAIN_PID=$PID

ok "4 Medplum Hl7Clients at once, 25 S12s each: every ACK is AA and answers its own MSH-10" \
	"$(node_run client.mjs concurrent "$PLAIN" 4 25 AGC)" "100"
ok "and the 100 appointments are booked" "$(booked AGCF)" 100

ok "garbage before a frame (no start byte, binary bytes) is passed over; the frame after it is answered" \
	"$(node_run client.mjs garbage "$PLAIN")" "AA AGG-1"
ok "an end block without CR drops that frame (no ACK); the next frame on the connection is answered" \
	"$(node_run client.mjs badend "$PLAIN")/$(booked AGBF1)/$(booked AGBF2)" "AA AGB-2/0/1"

ok "a message over --max-bytes gets no ACK and its connection is closed" \
	"$(node_run client.mjs oversized "$PLAIN" $MAX)" "closed-without-ack closed"
ok "and nothing of it is written (no appointment, no hl7_in on the ledger for it)" \
	"$(booked AGOF)/$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'hl7_in' AND detail->>'control_id' = 'AGO-1'")" "0/0"

ok "a sender stalled mid-frame does not hold up another client, and is disconnected after --idle-timeout 2" \
	"$(node_run client.mjs stall "$PLAIN")" "AA fast closed-after-about-2s"
ok "the agent is still up after all that, and a new client is served" \
	"$(kill -0 "$PLAIN_PID" 2>/dev/null && echo up)/$(node_run client.mjs concurrent "$PLAIN" 1 2 AGD)" "up/2"

# ------------------------------------------------------- database trouble
(cd "$work" && exec node client.mjs twice "$PLAIN" 1) >"$work/twice.out" 2>&1 &
TWICE_PID=$!
pids+=("$TWICE_PID")
for i in $(seq 100); do grep -q 'control_id=AGR-1 ' "$work/plain.log" && break; sleep 0.1; done
terminated=$(psql -X -q -At -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
	WHERE usename = 'agent_engine' AND application_name = 'schedphi-agent' AND datname = '$db'")
wait "$TWICE_PID"
ok "the database connection cut between two messages: it is reopened and the second message answered" \
	"$terminated/$(cat "$work/twice.out")/$(grep -c 'database connection lost, reconnecting' "$work/plain.log")" "1/AA AA/1"
DSN="host=$PGHOST port=$PGPORT dbname=${db}_missing user=agent_engine" start_agent nodb --listen 127.0.0.1:0
ok "the database unavailable: no ACK (never a made-up one), the connection closed so that the sender retries" \
	"$(node_run client.mjs noack "$PORT")/$(grep -c 'cannot connect to the database' "$work/nodb.log" | sed 's/^[1-9][0-9]*$/logged/')" \
	"no-ack closed/logged"
kill -TERM "$PID"; wait "$PID"

# --------------------------------------------------------------------- TLS
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Agent Test CA" \
	-keyout "$work/ca.key" -out "$work/ca.pem" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$work/server.key" -out "$work/server.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
	-extfile "$work/san.ext" -out "$work/server.pem" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=agent-test-ehr" -keyout "$work/client.key" -out "$work/client.csr" >/dev/null 2>&1
openssl x509 -req -in "$work/client.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
	-out "$work/client.pem" >/dev/null 2>&1
start_agent tls --listen 127.0.0.1:0 --idle-timeout 5 \
	--tls-cert "$work/server.pem" --tls-key "$work/server.key" --tls-ca "$work/ca.pem"
TLSPORT=$PORT
ok "TLS with a client certificate from --tls-ca: the message is answered AA (TLS 1.2 or later)" \
	"$(node_run client.mjs tls "$TLSPORT" "$work/ca.pem" "$work/client.pem" "$work/client.key" | sed 's/^TLSv1\.[23] /TLS /')" "TLS AA AGT-C"
ok "TLS without a client certificate is refused when --tls-ca is given, and nothing is written" \
	"$(node_run client.mjs tls "$TLSPORT" "$work/ca.pem")/$(booked AGTFN)" "refused/0"
ok "TLS 1.1 is refused (openssl s_client -tls1_1)" \
	"$(timeout 10 openssl s_client -connect 127.0.0.1:"$TLSPORT" -tls1_1 -CAfile "$work/ca.pem" \
		-cert "$work/client.pem" -key "$work/client.key" </dev/null 2>&1 | grep -c 'BEGIN CERTIFICATE')" 0
ok "plain MLLP to the TLS port gets no ACK and nothing is written" \
	"$(node_run client.mjs plain "$TLSPORT")/$(booked AGPF)" "no-ack/0"

# ---------------------------------------------------------------- outbound
(cd "$work" && exec node receiver.mjs) >"$work/receiver.out" 2>&1 &
RECV_PID=$!
pids+=("$RECV_PID")
for i in $(seq 100); do grep -q '^port ' "$work/receiver.out" && break; sleep 0.1; done
RPORT=$(sed -n 's/^port //p' "$work/receiver.out")
P=$(PGUSER=agent_desk psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" \
	-c "SELECT schedphi.register_patient('$T', 'Olaf', 'Agentsynthetic', '1990-09-09', mrn => 'AGENT-MRN-OUT')")
A=$(PGUSER=agent_desk psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" \
	-c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2027-03-01 15:00Z, 2027-03-01 15:30Z)')")
PGUSER=agent_desk psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" \
	-c "SELECT schedphi.reschedule('$A', '[2027-03-01 16:00Z, 2027-03-01 16:30Z)')" >/dev/null
start_agent deliver --listen 127.0.0.1:0 --deliver "$R=127.0.0.1:$RPORT" --poll 1
DELIVER_PID=$PID
for i in $(seq 150); do [ "$(grep -c '^got ' "$work/receiver.out")" -ge 2 ] && break; sleep 0.1; done
sleep 0.5
ok "a booking and a reschedule by a scheduler reach Medplum's Hl7Server as an S12 then an S13, with the patient" \
	"$(grep '^got ' "$work/receiver.out" | sed 's/ SO[0-9]* / SO /' | tr '\n' ' ')" \
	"got SIU^S12^SIU_S12 SO with-PID got SIU^S13^SIU_S12 SO with-PID "
ok "and its AA ACKs were handed back: nothing waits in hl7_outbound" \
	"$(q -c "SELECT count(*) FILTER (WHERE acked_at IS NULL) || '/' || count(*) FILTER (WHERE ack = 'AA') FROM schedphi.hl7_outbox")" "0/2"
kill "$RECV_PID" 2>/dev/null; wait "$RECV_PID" 2>/dev/null
PGUSER=agent_desk psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "SELECT schedphi.cancel('$A')" >/dev/null
sleep 2.5
ok "a receiver that cannot be reached is logged, the agent keeps running and the S15 waits in the outbox" \
	"$(grep -c "receiver=$R cannot connect" "$work/deliver.log" | sed 's/^[1-9][0-9]*$/logged/')/$(kill -0 "$DELIVER_PID" 2>/dev/null && echo up)/$(q -c "SELECT count(*) FROM schedphi.hl7_outbox WHERE acked_at IS NULL")" \
	"logged/up/1"

# ---------------------------------------------------------- outbound TLS
# A receiver behind stunnel (Debian's), which speaks TLS with the test CA's
# certificate, wants a client certificate from the same CA, and hands the
# plain MLLP to another Medplum Hl7Server.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
(cd "$work" && exec node receiver.mjs) >"$work/receiver2.out" 2>&1 &
pids+=("$!")
for i in $(seq 100); do grep -q '^port ' "$work/receiver2.out" && break; sleep 0.1; done
RPORT2=$(sed -n 's/^port //p' "$work/receiver2.out")
SPORT=$(free_port)
cat >"$work/stunnel.conf" <<CONF
foreground = yes
pid =
debug = 4
[mllp]
accept = 127.0.0.1:$SPORT
connect = 127.0.0.1:$RPORT2
cert = $work/server.pem
key = $work/server.key
CAfile = $work/ca.pem
verifyChain = yes
requireCert = yes
CONF
stunnel4 "$work/stunnel.conf" >"$work/stunnel.out" 2>&1 &
pids+=("$!")
for i in $(seq 100); do grep -q 'Configuration successful' "$work/stunnel.out" && break; sleep 0.1; done
read -r R2 R3 < <(q -c "SELECT schedphi.add_hl7_receiver('$T', 'AGENTTLS', 'AGENTRAD') || ' ' || schedphi.add_hl7_receiver('$T', 'AGENTBAD', 'AGENTRAD')")
A2=$(PGUSER=agent_desk psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" \
	-c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2027-03-02 15:00Z, 2027-03-02 15:30Z)')")
# the agent without the test CA (the system's anchors only): no TLS
# session, nothing sent, the S12 waits (and is offered again in a minute)
start_agent badca --listen 127.0.0.1:0 --deliver "$R3=tls://localhost:$SPORT" --poll 1
BAD_PID=$PID
for i in $(seq 100); do grep -q 'no TLS session' "$work/badca.log" && break; sleep 0.1; done
kill -TERM "$BAD_PID"; wait "$BAD_PID"
# then with the CA but without its own certificate, for another booking:
# stunnel ends the session (with TLS 1.3 after the handshake), no ACK
PGUSER=agent_desk psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" \
	-c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2027-03-02 16:00Z, 2027-03-02 16:30Z)')" >/dev/null
start_agent nocert --listen 127.0.0.1:0 --deliver "$R3=tls://localhost:$SPORT" --deliver-ca "$work/ca.pem" --poll 1
NOCERT_PID=$PID
for i in $(seq 100); do grep -Eq "receiver=$R3 (no TLS session|control_id=SO[0-9]+ (no ACK|could not be sent))" "$work/nocert.log" && break; sleep 0.1; done
kill -TERM "$NOCERT_PID"; wait "$NOCERT_PID"
ok "tls:// to a receiver whose certificate does not verify (no --deliver-ca), or that wants a client certificate the agent lacks: logged, nothing sent, both S12s wait" \
	"$(grep -c "the receiver's certificate is not accepted" "$work/badca.log" | sed 's/^[1-9][0-9]*$/logged/')/$(grep -Ec "receiver=$R3 (no TLS session|control_id=SO[0-9]+ (no ACK|could not be sent))" "$work/nocert.log" | sed 's/^[1-9][0-9]*$/logged/')/$(grep -c '^got ' "$work/receiver2.out")/$(q -c "SELECT count(*) FROM schedphi.hl7_outbox WHERE receiver = '$R3' AND acked_at IS NULL")" \
	"logged/logged/0/2"
start_agent tlsout --listen 127.0.0.1:0 --deliver "$R2=tls://localhost:$SPORT" --deliver-ca "$work/ca.pem" \
	--deliver-cert "$work/client.pem" --deliver-key "$work/client.key" --poll 1
TLSOUT_PID=$PID
for i in $(seq 150); do [ "$(grep -c '^got ' "$work/receiver2.out")" -ge 2 ] && break; sleep 0.1; done
sleep 0.5
kill -TERM "$TLSOUT_PID"; wait "$TLSOUT_PID"
ok "tls:// with --deliver-ca and a client certificate: both S12s reach Medplum's Hl7Server through stunnel, their AAs are handed back" \
	"$(grep '^got ' "$work/receiver2.out" | sed 's/ SO[0-9]* / SO /' | tr '\n' ' ')/$(q -c "SELECT count(*) FILTER (WHERE acked_at IS NULL) || ':' || count(*) FILTER (WHERE ack = 'AA') FROM schedphi.hl7_outbox WHERE receiver = '$R2'")" \
	"got SIU^S12^SIU_S12 SO with-PID got SIU^S12^SIU_S12 SO with-PID /0:2"
ok "and the agent logged the TLS session (TLS 1.2 or later, certificate verified) and the delivery" \
	"$(grep -c "receiver=$R2 connected to .* (TLSv1\.[23], .*, certificate verified)" "$work/tlsout.log" | sed 's/^[1-9][0-9]*$/logged/')/$(grep -c "receiver=$R2 control_id=SO[0-9]* delivered to .* ack=AA" "$work/tlsout.log")" \
	"logged/2"

# -------------------------------------------------------------- SIGTERM
(cd "$work" && exec node client.mjs hold "$PLAIN" 30) >"$work/hold.out" 2>&1 &
HOLD_PID=$!
pids+=("$HOLD_PID")
for i in $(seq 100); do grep -q connected "$work/hold.out" && break; sleep 0.1; done
kids=$(ps -o pid= --ppid "$PLAIN_PID" --ppid "$DELIVER_PID" | tr -d ' ' | tr '\n' ' ')
t0=$(date +%s%N)
kill -TERM "$PLAIN_PID" "$DELIVER_PID"
wait "$PLAIN_PID"; rc1=$?
wait "$DELIVER_PID"; rc2=$?
ms=$((($(date +%s%N) - t0) / 1000000))
ok "SIGTERM with a client connected: the agents exit 0 within 3 s, their child processes gone" \
	"$(echo $kids | wc -w)/$rc1/$rc2/$([ "$ms" -lt 3000 ] && echo prompt || echo "${ms}ms")/$(for k in $kids; do kill -0 "$k" 2>/dev/null && echo "$k"; done | wc -l)" \
	"2/0/0/prompt/0"
kill "$HOLD_PID" 2>/dev/null

# -------------------------------------------------------------- no PHI
ok "the logs say what happened (ACK codes, control ids, idle and size events)" \
	"$(grep -c 'control_id=AGC-0-0 bytes=[0-9]* ack=AA' "$work/plain.log")/$(grep -c 'disconnected (idle timeout)' "$work/plain.log")/$(grep -c 'longer than --max-bytes' "$work/plain.log")/$(grep -c 'delivered to .* ack=AA' "$work/deliver.log")" \
	"1/1/1/2"
ok "no PHI in the agent's logs (names, MRNs, birth dates, addresses of the synthetic patients)" \
	"$(cat "$work"/*.log | grep -Eci 'Agentsynthetic|AGMRN|AGENT-MRN|Olaf|19800101|1990-09-09|19900909|Main St|60614')" 0

[ "$fail" = 0 ] && [ -z "${AGENT_TEST_LOGS:-}" ] || { echo "agent: | logs:"; tail -n 20 "$work"/*.log | sed 's/^/agent: | /'; }
psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
exit $fail

#!/usr/bin/env bash
# schedphi-agent mllp throughput (issue #14: 2,000 SIU messages/s with 4
# clients): BENCH_HL7_CLIENTS (default 4) MLLP connections through the
# agent, each sending S12s one at a time for BENCH_HL7_SECONDS (default 15)
# after a 10 s warm-up; messages/s and the ACK latency seen by the clients
# (p50, p99), next to hl7_ingest's own figure (bench/hl7_ingest.sh) for the
# agent's share.  The same synthetic workload as bench/hl7_ingest.sh.  The
# load generator is bench/hl7_agent.mjs (Node, no packages).  Prints
# figures; never part of CI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
DB=schedphi_bench_hl7_agent
SECS=${BENCH_HL7_SECONDS:-15}
CLIENTS=${BENCH_HL7_CLIENTS:-4}

bench_cluster
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
psql -X -q -c "CREATE ROLE bench_engine LOGIN" >/dev/null 2>&1 || true
bench_load /dev/null
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
T=$(q -c "SELECT schedphi.create_tenant('HL7 Agent Bench Clinic', 'America/Chicago')")
q -c "SET client_min_messages = warning" -c "SELECT schedphi.add_member('$T', 'bench_engine', 'integration')" \
	-c "SELECT schedphi.add_hl7_sender('$T', 'BENCHEHR', 'BENCHFAC', 'America/Chicago')" >/dev/null

agent="$SP_ROOT/schedphi-agent"
[ -x "$agent" ] || make -s -C "$SP_ROOT" PG_CONFIG="$PG_CONFIG" schedphi-agent >/dev/null
"$agent" mllp --listen 127.0.0.1:0 --dsn "host=$PGHOST port=$PGPORT dbname=$DB user=bench_engine" \
	--max-clients $((CLIENTS + 4)) 2>"$out/agent.log" &
agent_pid=$!
trap 'kill $agent_pid 2>/dev/null || true; wait $agent_pid 2>/dev/null || true' EXIT
port=
for _ in $(seq 100); do
	port=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$out/agent.log" | head -1)
	[ -n "$port" ] && break
	sleep 0.1
done
[ -n "$port" ] || { cat "$out/agent.log" >&2; echo "bench: the agent did not start" >&2; exit 1; }

# warm-up: patients and practitioners made by their first messages
node "$here/hl7_agent.mjs" "$port" "$CLIENTS" 10 W >/dev/null
q -c "VACUUM ANALYZE" >/dev/null
read -r n secs p50 p99 aa other < <(node "$here/hl7_agent.mjs" "$port" "$CLIENTS" "$SECS" M)
rate=$(calc '%.0f' "$n / $secs")
kill -TERM "$agent_pid"
wait "$agent_pid" && stopped=0 || stopped=$?

echo
echo "| measure | figure | goal |"
echo "|---|---|---|"
echo "| S12 through schedphi-agent mllp, $CLIENTS clients (messages/s) | $rate | >= 2,000: $(verdict "$rate" '>=' 2000) |"
echo "| ACK latency at the client p50 / p99 (ms) | $p50 / $p99 | p99 < 10 ms: $(verdict "$p99" '<' 10) |"
echo "| ACKs AA / other (clashes answered AE) | $aa / $other | |"
echo "| agent exit status after SIGTERM | $stopped | 0 |"
echo "bench: hl7 agent done"

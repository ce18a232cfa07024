#!/usr/bin/env bash
# schedphi-agent deliver (docs/communications.md) against real servers on
# loopback that schedphi did not write: Debian's aiosmtpd requiring
# STARTTLS, and Python's http.server over ssl, both with certificates made
# here by openssl under a test CA.  Checks: email over STARTTLS and SMS as
# an authenticated JSON POST reach the servers and are marked sent; an
# untrusted certificate is refused and nothing is marked sent; a server
# that is down is retried and nothing is lost; the auth file must be
# private; SIGTERM stops it with status 0; no address, body, token or
# credential in its log.  Needs the PGHOST/PGPORT/PGUSER of a running
# cluster.  Prints "deliver: ok - ..." per check.
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
db=schedphi_deliver
fail=0
ok() {
	if [ "$2" = "$3" ]; then echo "deliver: ok - $1"; else echo "deliver: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
PY=/usr/bin/python3		# Debian's, with python3-aiosmtpd

agent=$root/schedphi-agent
if [ ! -x "$agent" ]; then
	make -s -C "$root" PG_CONFIG="${PG_CONFIG:-${SP_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}}" schedphi-agent >/dev/null || {
		echo "deliver: NOT OK - could not build schedphi-agent"
		exit 1
	}
fi

# --- certificates: a test CA and a server certificate for 127.0.0.1 and
# localhost; a self-signed one no one trusts
(
	cd "$work" || exit 1
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=schedphi test CA" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
	openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext.cnf 2>/dev/null
	openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 2 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
) || { echo "deliver: NOT OK - could not make certificates"; exit 1; }

# start_server NAME MODE CERT KEY: the port it took, in $NAME_port
start_server() {
	local name=$1 mode=$2 cert=$3 key=$4
	mkdir -p "$work/$name"
	$PY "$here/deliver/servers.py" "$mode" "$work/$name.port" "$work/$cert" "$work/$key" "$work/$name" \
		>"$work/$name.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 1 100); do [ -s "$work/$name.port" ] && break; sleep 0.1; done
	[ -s "$work/$name.port" ] || { echo "deliver: NOT OK - the $name server did not start"; cat "$work/$name.log"; exit 1; }
	printf -v "${name}_port" '%s' "$(cat "$work/$name.port")"
}
start_server smtp smtp srv.pem srv.key
start_server web https srv.pem srv.key
start_server rogue https rogue.pem rogue.key

# --- a clinic with two patients, templates, consent, and a vendor
PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
	-c "DROP ROLE IF EXISTS deliver_engine" -c "CREATE ROLE deliver_engine LOGIN" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.ids (name text PRIMARY KEY, id uuid);
DO $$
DECLARE
	t uuid := schedphi.create_tenant('Deliver Synthetic Clinic', 'America/Chicago');
	l uuid := schedphi.add_location(t, 'Deliver site', 'America/Chicago');
	dr uuid := schedphi.add_practitioner(t, 'Dr Deliver Synthetic');
	p1 uuid;
	p2 uuid;
	d date := (now() AT TIME ZONE 'America/Chicago')::date + 3;
BEGIN
	PERFORM schedphi.add_availability(dr, l, '{1,2,3,4,5,6,7}', '08:00', '18:00', daterange(d - 5, NULL), 15);
	PERFORM schedphi.add_member(t, 'deliver_engine', 'integration');
	PERFORM schedphi.set_reminder_policy(t, '{1 day}', '00:00-00:00', '+1 555 0100 999', 'https://portal.example.org/l/');
	PERFORM schedphi.add_message_template(t, 'confirmation', c, 'Hello {given_name}, you are booked {date} at {time}, {location}.')
	FROM unnest(ARRAY['sms', 'email']) c;
	p1 := schedphi.register_patient(t, 'Dora', 'Delivery-Synthetic', '1975-05-05', '+1 555 0100 411', 'dora@example.org');
	p2 := schedphi.register_patient(t, 'Eli', 'Emailonly-Synthetic', '1982-02-02', NULL, 'eli@example.org');
	PERFORM schedphi.set_contact_preference(p1, 'sms', true, true);
	PERFORM schedphi.set_contact_preference(p2, 'email', true);
	INSERT INTO public.ids VALUES ('tenant', t), ('dr', dr), ('p1', p1), ('p2', p2),
		('vendor', schedphi.add_business_associate(t, 'Synthetic Messaging Co', '{sms,email}', current_date - 30,
												   current_date + 300, 'limited'));
	PERFORM schedphi.book(p1, ARRAY[dr], tstzrange((d + time '10:00') AT TIME ZONE 'America/Chicago',
												   (d + time '10:30') AT TIME ZONE 'America/Chicago'));
	PERFORM schedphi.book(p2, ARRAY[dr], tstzrange((d + time '11:00') AT TIME ZONE 'America/Chicago',
												   (d + time '11:30') AT TIME ZONE 'America/Chicago'));
END $$;
SQL
ids() { q -c "SELECT id FROM public.ids WHERE name = '$1'"; }
T=$(ids tenant); V=$(ids vendor); P1=$(ids p1)
dsn="host=$PGHOST port=$PGPORT dbname=$db user=deliver_engine"
statuses() { q -c "SELECT string_agg(channel || '=' || status, ',' ORDER BY channel) FROM schedphi.message WHERE tenant = '$T' AND kind = 'confirmation'"; }
printf 'https_token=synthetic-bearer-0123456789\nsmtp_user=clinic\nsmtp_password=synthetic-password-42\n' >"$work/auth"
chmod 600 "$work/auth"

# --- refusals of bad options
"$agent" deliver --dsn "$dsn" --vendor "$V" --https "http://127.0.0.1:$web_port/" >/dev/null 2>&1
ok "plain http is refused (exit 2)" "$?" 2
chmod 644 "$work/auth"
"$agent" deliver --dsn "$dsn" --vendor "$V" --https "https://127.0.0.1:$web_port/" --auth-file "$work/auth" >/dev/null 2>"$work/perm.err"
ok "an auth file others can read is refused (exit 2)" "$? $(grep -c 'chmod 600' "$work/perm.err")" "2 1"
chmod 600 "$work/auth"

# --- an untrusted certificate: refused, nothing marked sent
"$agent" deliver --dsn "$dsn" --vendor "$V" --https "https://127.0.0.1:$rogue_port/send" --ca "$work/ca.pem" \
	--auth-file "$work/auth" --smtp "smtp://127.0.0.1:$smtp_port" --from clinic@example.org --once >"$work/rogue.out" 2>&1
ok "a server whose certificate no anchor vouches for gets nothing; the SMS is not marked sent" \
	"$(ls "$work/rogue" | wc -l) $(q -c "SELECT status FROM schedphi.message WHERE tenant = '$T' AND kind = 'confirmation' AND channel = 'sms'")" "0 pending"
ok "the log says why: certificate verification" "$(grep -c 'SSL peer certificate or SSH remote key was not OK' "$work/rogue.out")" 1
# (the email went out meanwhile, through the trusted SMTP server)
ok "meanwhile the email went over STARTTLS, logged in with the auth file's credentials, to the patient's address, from the clinic" \
	"$(ls "$work/smtp" | wc -l) $($PY -c "import json,glob; m=json.load(open(glob.glob('$work/smtp/mail-*.json')[0])); print(m['tls'], m['login'], m['to'][0], m['from'])")" \
	"1 True clinic eli@example.org clinic@example.org"
ok "the email carries only a portal link (the patient did not accept unencrypted email)" \
	"$($PY -c "import json,glob,re; d=json.load(open(glob.glob('$work/smtp/mail-*.json')[0]))['data']; b=re.split(r'\r?\n\r?\n', d, 1)[1].strip(); print(bool(re.fullmatch(r'You have a new message from your care team: https://portal\.example\.org/l/[A-Za-z0-9_-]{64}', b)), 'Eli' in d)")" \
	"True False"
ok "the email is marked sent, the SMS waits for another try" "$(statuses)" "email=sent,sms=pending"

# --- a server that is down: retried, reported failed, nothing lost
q -c "UPDATE schedphi.message SET not_before = now() WHERE tenant = '$T' AND channel = 'sms'" >/dev/null
down=$($PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
"$agent" deliver --dsn "$dsn" --vendor "$V" --https "https://127.0.0.1:$down/send" --ca "$work/ca.pem" \
	--auth-file "$work/auth" --once >"$work/down.out" 2>&1
ok "a server that is down is tried 3 times, then the message is put back (claims counted, not lost)" \
	"$(grep -c 'attempt [0-9] failed' "$work/down.out") $(q -c "SELECT status || ' ' || claims FROM schedphi.message WHERE tenant = '$T' AND kind = 'confirmation' AND channel = 'sms'")" \
	"3 pending 2"

# --- the trusted HTTPS endpoint: SMS delivered with the vendor's credentials
q -c "UPDATE schedphi.message SET not_before = now() WHERE tenant = '$T' AND channel = 'sms'" >/dev/null
"$agent" deliver --dsn "$dsn" --vendor "$V" --https "https://localhost:$web_port/send" --ca "$work/ca.pem" \
	--auth-file "$work/auth" --once >"$work/web.out" 2>&1
ok "the SMS is posted as JSON to the vendor with its bearer token" \
	"$($PY -c "import json,glob; m=json.load(open(glob.glob('$work/web/post-*.json')[0])); print(m['auth'], m['type'], m['json']['channel'], m['json']['to'])")" \
	"Bearer synthetic-bearer-0123456789 application/json sms 15550100411"
ok "with the template's facts, as the patient accepted unencrypted SMS" \
	"$($PY -c "import json,glob; m=json.load(open(glob.glob('$work/web/post-*.json')[0])); print(m['json']['body'].startswith('Hello Dora, you are booked '), m['json']['body'].endswith(', Deliver site.'))")" \
	"True True"
ok "it is marked sent with the vendor's id" \
	"$(statuses) $(q -c "SELECT vendor_ref FROM schedphi.message WHERE tenant = '$T' AND kind = 'confirmation' AND channel = 'sms'")" \
	"email=sent,sms=sent V-1"
ok "each claim is a disclosure to the vendor on the patient's ledger" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE tenant = '$T' AND action = 'disclose' AND patient = '$P1'")" 3

# --- SIGTERM: a long-running agent stops at once with status 0
"$agent" deliver --dsn "$dsn" --vendor "$V" --https "https://localhost:$web_port/send" --ca "$work/ca.pem" \
	--auth-file "$work/auth" --poll 30 >"$work/term.out" 2>&1 &
apid=$!
sleep 1
kill -TERM "$apid"
t0=$(date +%s%N)
wait "$apid"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
ok "SIGTERM stops it with status 0 within 2 s" "$rc $([ "$ms" -lt 2000 ] && echo fast || echo "slow ${ms}ms")" "0 fast"

# --- nothing of PHI or credentials in any log of the agent
leaks=$(cat "$work"/rogue.out "$work"/down.out "$work"/web.out "$work"/term.out |
	grep -ciE 'dora|eli@|example\.org|15550100411|0100 411|synthetic-bearer|synthetic-password|Hello|portal')
ok "the agent's logs name no patient, address, body, link or credential" "$leaks" 0

psql -X -q -c "DROP DATABASE $db" >/dev/null
exit $fail

#!/usr/bin/env bash
# Tokens from an identity provider, made here with openssl: RS256, ES256 and
# HS256 accepted from a pooled login that has no schedphi role, scopes
# (transaction, session, DISCARD ALL, RESET ALL), attempts to forge the
# context through settings, and more than twenty ways a token is refused.
# Needs the PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh).
set -uo pipefail

db=schedphi_tokens
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
count=0

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1; }
as_pool() { psql -X -q -At -U tok_pool -d "$db" "$@" 2>&1; }
# a login the DBA has declared never goes through a transaction pool
as_direct() { psql -X -q -At -U tok_direct -d "$db" "$@" 2>&1; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
ok() {
	count=$((count + 1))
	if [ "$2" = "$3" ]; then echo "tokens: ok - $1"; else echo "tokens: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}

# --- keys ------------------------------------------------------------------
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.pem" 2>/dev/null
openssl pkey -in "$work/rsa.pem" -pubout -out "$work/rsa.pub"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa2.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.pem" 2>/dev/null
openssl pkey -in "$work/ec.pem" -pubout -out "$work/ec.pub"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$work/rsa1024.pem" 2>/dev/null
openssl pkey -in "$work/rsa1024.pem" -pubout -out "$work/rsa1024.pub"
hskey=$(openssl rand -hex 32)
hsb64=$(echo "$hskey" | xxd -r -p 2>/dev/null | base64 -w0 || true)
if [ -z "$hsb64" ]; then hsb64=$(perl -e 'print pack("H*", $ARGV[0])' "$hskey" | base64 -w0); fi

# --- signing ---------------------------------------------------------------
# sign ALG KEYFILE|HEX HEADER_JSON PAYLOAD_JSON -> compact JWS
sign() {
	local alg=$1 key=$2 h p input sig
	h=$(printf '%s' "$3" | b64url)
	p=$(printf '%s' "$4" | b64url)
	input="$h.$p"
	case $alg in
		RS256) sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$key" | b64url) ;;
		HS256) sig=$(printf '%s' "$input" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | b64url) ;;
		ES256)
			# openssl signs in DER; JOSE wants raw R||S, 32 bytes each
			sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$key" |
				openssl asn1parse -inform DER 2>/dev/null | sed -n 's/.*INTEGER *://p' |
				perl -ne 'chomp; $_ = ("0" x 64 . $_); print substr($_, -64);' |
				perl -e 'print pack("H*", <STDIN>)' | b64url) ;;
		ES256DER) sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$key" | b64url) ;;
		none) sig="" ;;
	esac
	printf '%s.%s' "$input" "$sig"
}

now=$(date +%s)
claims() {	# claims ROLE [extra json]
	printf '{"iss":"https://idp.example","sub":"user-%s","aud":"schedphi","iat":%d,"exp":%d,"amr":["pwd","otp"],"schedphi_tenant":"%s","schedphi_role":"%s"%s}' \
		"$1" "$now" $((now + 600)) "$T" "$1" "${2:-}"
}
H_RS='{"alg":"RS256","typ":"JWT"}'
H_ES='{"alg":"ES256","typ":"JWT"}'
H_HS='{"alg":"HS256","typ":"JWT"}'

# --- the clinic and its issuers --------------------------------------------
psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
psql -X -q -c "DROP ROLE IF EXISTS tok_pool" -c "CREATE ROLE tok_pool LOGIN" >/dev/null 2>&1
psql -X -q -c "DROP ROLE IF EXISTS tok_direct" -c "CREATE ROLE tok_direct LOGIN" \
	-c "ALTER ROLE tok_direct SET schedphi.allow_session_scope = on" >/dev/null 2>&1
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
T=$(q -c "SELECT schedphi.create_tenant('Token Clinic', 'America/New_York')")
T2=$(q -c "SELECT schedphi.create_tenant('Other Clinic', 'UTC')")
DR=$(q -c "SELECT schedphi.add_practitioner('$T', 'Dr Token Synthetic')")
q -c "SELECT schedphi.add_issuer('$T', 'https://idp.example', 'schedphi', \$k\$$(cat "$work/rsa.pub")\$k\$)" >/dev/null
q -c "SELECT schedphi.add_issuer('$T', 'https://ec.idp.example', 'schedphi', \$k\$$(cat "$work/ec.pub")\$k\$)" >/dev/null
q -c "SELECT schedphi.add_issuer('$T', 'https://hs.idp.example', 'schedphi', 'hs256:$hsb64')" >/dev/null
q -c "SELECT schedphi.add_issuer('$T2', 'https://t2.idp.example', 'schedphi', \$k\$$(cat "$work/rsa.pub")\$k\$)" >/dev/null

ok "add_issuer refuses a 1024-bit RSA key" \
	"$(q -c "SELECT schedphi.add_issuer('$T', 'https://weak.example', 'schedphi', \$k\$$(cat "$work/rsa1024.pub")\$k\$)" | grep -c 'key must be a PEM public key')" 1
ok "add_issuer refuses a short HMAC secret" \
	"$(q -c "SELECT schedphi.add_issuer('$T', 'https://short.example', 'schedphi', 'hs256:c2hvcnQ=')" | grep -c 'key must be')" 1
ok "add_issuer refuses a private key and never echoes it" \
	"$(q -c "SELECT schedphi.add_issuer('$T', 'https://priv.example', 'schedphi', \$k\$$(cat "$work/rsa2.pem")\$k\$)" | grep -c 'PRIVATE KEY\|key must be')" 1
ok "the HMAC secret is stored sealed" "$(q -c "SELECT secret::text LIKE 'spv1:%' AND public_key IS NULL FROM schedphi.issuer WHERE issuer = 'https://hs.idp.example'")" t

# --- accepted tokens, from a login with no schedphi role ---------------------
rs=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler)")
es=$(sign ES256 "$work/ec.pem" "$H_ES" "$(claims scheduler | sed 's|https://idp.example|https://ec.idp.example|')")
hs=$(sign HS256 "$hskey" "$H_HS" "$(claims scheduler | sed 's|https://idp.example|https://hs.idp.example|')")
for t in rs es hs; do
	tok=${!t}
	ok "$t: a valid token is accepted and names its actor" \
		"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$tok')->>'via' || ' ' || (schedphi.whoami()->>'role') || ' ' || (schedphi.whoami()->>'actor')" -c "COMMIT")" \
		"token scheduler user-scheduler"
done
ok "a pooled login acts with the token's role inside the transaction" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$rs') IS NOT NULL" \
		-c "SELECT schedphi.register_patient('$T', 'Tok', 'Synthetic', '1990-01-01') IS NOT NULL" -c "COMMIT" | tr '\n' ' ')" "t t "
ok "without a token the pooled login is refused" \
	"$(as_pool -c "SELECT schedphi.register_patient('$T', 'Tok', 'Synthetic', '1990-01-01')" | grep -c 'permission denied')" 1
ok "the token's tenant only" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$rs') IS NOT NULL" -c "SELECT schedphi.register_patient('$T2', 'Tok', 'Synthetic', '1990-01-01')" | grep -c 'permission denied')" 1

# --- scopes --------------------------------------------------------------
ok "transaction scope ends at commit" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$rs') IS NOT NULL" -c "COMMIT" -c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" | tail -1)" none
ok "transaction scope ends at rollback" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$rs') IS NOT NULL" -c "ROLLBACK" -c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" | tail -1)" none
ok "session scope is refused for a login the DBA has not cleared (it could be pooled)" \
	"$(as_pool -c "SELECT schedphi.assume('$rs', 'session')" -c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" | tr '\n' ' ')" \
	"ERROR:  token rejected: session scope rule DETAIL:  A session-scope context outlives the transaction; behind a transaction pool the next client would run as this actor. HINT:  Call assume(token) in every transaction, or have a superuser set schedphi.allow_session_scope = on for a login that never goes through a transaction pool. none "
ok "a login cannot clear itself for session scope" \
	"$(as_pool -c "SET schedphi.allow_session_scope = on" | grep -c 'permission denied to set parameter')" 1
ok "nor at connection time" \
	"$(PGOPTIONS='-c schedphi.allow_session_scope=on' as_pool -c "SELECT 1" | grep -c 'permission denied to set parameter')" 1
ok "session scope lasts across transactions (a cleared login)" \
	"$(as_direct -c "SELECT schedphi.assume('$rs', 'session') IS NOT NULL" -c "SELECT schedphi.whoami()->>'via'" | tail -1)" token
ok "DISCARD ALL ends a session scope (a pooler between clients)" \
	"$(as_direct -c "SELECT schedphi.assume('$rs', 'session') IS NOT NULL" -c "DISCARD ALL" -c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" | tail -1)" none
ok "RESET ALL ends a session scope" \
	"$(as_direct -c "SELECT schedphi.assume('$rs', 'session') IS NOT NULL" -c "RESET ALL" -c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" | tail -1)" none
ok "a bad scope is 22023" "$(as_pool -c "SELECT schedphi.assume('$rs', 'forever')" | grep -c 'scope must be transaction or session')" 1
ok "a NULL token is 22023" "$(as_pool -c "SELECT schedphi.assume(NULL)" | grep -c 'token must not be null')" 1

# --- forgery through settings ----------------------------------------------
for name in schedphi.tenant schedphi.role schedphi.actor schedphi.purpose schedphi.practitioner schedphi.via; do
	ok "SET $name is refused" "$(as_pool -c "SET $name = 'admin'" | grep -c 'ERROR:  invalid configuration parameter name')" 1
	ok "set_config('$name') is refused" "$(as_pool -c "SELECT set_config('$name', 'admin', false)" | grep -c 'ERROR:  invalid configuration parameter name')" 1
done
ok "whoami is untouched by those attempts" "$(as_pool -c "SELECT coalesce(schedphi.whoami()->>'role', 'none')")" none
ok "a purpose of use can be set for the transaction" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.whoami()->>'purpose'" -c "COMMIT" | grep -c TREAT)" 1
ok "an unknown purpose is 22023" "$(as_pool -c "SELECT schedphi.set_purpose('CURIOSITY')" | grep -c 'unknown purpose of use')" 1
ok "EMERGENCY needs break-glass" "$(as_pool -c "SELECT schedphi.set_purpose('EMERGENCY')" | grep -c 'break-glass rule')" 1

# --- refused tokens --------------------------------------------------------
refused() {	# refused DESCRIPTION TOKEN EXPECTED-RULE
	local out
	out=$(as_pool -c "SELECT schedphi.assume('$2')")
	ok "refused: $1" "$(echo "$out" | grep -c "ERROR:  token rejected: $3")" 1
}
c0=$(claims scheduler)
refused "expired" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"exp\":$((now + 600))/\"exp\":$((now - 600))}")" "expired"
refused "not yet valid" "$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler ",\"nbf\":$((now + 3600))")")" "not yet valid"
refused "too long-lived" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"exp\":$((now + 600))/\"exp\":$((now + 7200))}")" "lifetime longer"
refused "issued in the future" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"iat\":$now/\"iat\":$((now + 3000))}")" "issued in the future"
refused "wrong audience" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"aud\":\"schedphi\"/\"aud\":[\"billing-app\"]}")" "wrong audience"
refused "unknown issuer" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/https:\/\/idp.example/https://evil.example}")" "unknown issuer"
refused "an issuer of another tenant" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/https:\/\/idp.example/https://t2.idp.example}")" "unknown issuer"
refused "alg none" "$(sign none x '{"alg":"none","typ":"JWT"}' "$c0")" "alg does not match"
confusion=$(perl -e 'print unpack("H*", join("", <STDIN>))' <"$work/rsa.pub")
refused "algorithm confusion (HS256 keyed with the RSA public key)" "$(sign HS256 "$confusion" "$H_HS" "$c0")" "alg does not match"
refused "signed with the wrong key" "$(sign RS256 "$work/rsa2.pem" "$H_RS" "$c0")" "signature does not verify"
good=$(sign RS256 "$work/rsa.pem" "$H_RS" "$c0")
tampered_h="$(printf '%s' '{"alg":"RS256","typ":"JWT","kid":"x"}' | b64url).${good#*.}"
refused "tampered header" "$tampered_h" "signature does not verify"
p_admin=$(printf '%s' "${c0/\"schedphi_role\":\"scheduler\"/\"schedphi_role\":\"admin\"}" | b64url)
refused "tampered payload (role raised to admin)" "${good%%.*}.$p_admin.${good##*.}" "signature does not verify"
refused "truncated signature" "${good:0:${#good}-12}" "signature does not verify\\|malformed"
refused "truncated to two parts" "${good%.*}" "malformed"
refused "bad base64url" "${good:0:20}+${good:21}" "malformed"
refused "missing tenant claim" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"schedphi_tenant\":\"$T\",/}")" "claim schedphi_tenant"
refused "tenant claim not a uuid" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/$T/not-a-uuid}")" "claim schedphi_tenant"
refused "mistyped exp" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"exp\":$((now + 600))/\"exp\":\"soon\"}")" "malformed (claim exp must be a number)"
refused "missing exp" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"exp\":$((now + 600)),/}")" "claims exp and iat are required"
refused "role that is not a schedphi role" "$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims superuser)")" "claim schedphi_role"
refused "duplicate claim" "$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler ',"schedphi_role":"admin"')")" "malformed (a key appears twice)"
refused "no second factor for a PHI role" "$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"pwd\",\"otp\"/\"pwd\"}")" "MFA rule"
refused "clinician without a practitioner" "$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims clinician)")" "claim schedphi_practitioner"
refused "ES256 signature in DER instead of raw R||S" \
	"$(sign ES256DER "$work/ec.pem" "$H_ES" "${c0/https:\/\/idp.example/https:\/\/ec.idp.example}")" "signature does not verify"
# every string claim is UTF-8 without control characters (a byte 0xE9 in
# sub once reached audit_log.actor and broke a logical copy of the ledger)
utf8() {	# utf8 PERL-SUBSTITUTION -> a token signed with claims edited by it
	sign RS256 "$work/rsa.pem" "$H_RS" "$(printf '%s' "$c0" | perl -pe "$1")"
}
refused "a sub with a byte that is not UTF-8 (0xE9)" "$(utf8 's/user-scheduler/user-\xe9/')" "malformed (a string that is not valid UTF-8)"
refused "an overlong UTF-8 form in iss" "$(utf8 's|https://idp.example|https://idp\xc0\xae.example|')" "malformed (a string that is not valid UTF-8)"
refused "a UTF-8 surrogate in sub" "$(utf8 's/user-scheduler/user-\xed\xa0\x80/')" "malformed (a string that is not valid UTF-8)"
refused "a sequence cut short at the end of sub" "$(utf8 's/user-scheduler/user-\xc3/')" "malformed (a string that is not valid UTF-8)"
refused "a not-UTF-8 byte in a claim schedphi does not read" "$(utf8 's/"amr"/"nickname":"\xff","amr"/')" "malformed (a string that is not valid UTF-8)"
refused "an escaped control character in sub" "$(utf8 's/user-scheduler/user-\\u0007/')" "malformed (a control character in a claim)"
refused "a raw DEL in sub" "$(utf8 's/user-scheduler/user-\x7f/')" "malformed (a control character in a claim)"
refused "an escaped C1 control character in sub" "$(utf8 's/user-scheduler/user-\\u0085/')" "malformed (a control character in a claim)"
refused "a newline in a role" "$(utf8 's/"schedphi_role":"scheduler"/"schedphi_role":"scheduler\\n"/')" "malformed (a control character in a claim)"
ok "a sub in UTF-8 (José, as bytes and as \\u escapes) is accepted as written" \
	"$(as_pool -c "SELECT schedphi.assume('$(utf8 's/user-scheduler/Jos\xc3\xa9/')')->>'actor'" \
		-c "SELECT schedphi.assume('$(utf8 's/user-scheduler/Jos\\u00e9/')')->>'actor'" | tr '\n' ' ')" "José José "
# convert_from verifies the bytes: one actor that is not UTF-8 makes it an error
ok "every actor on the ledger is valid UTF-8" \
	"$(q -c "SELECT count(convert_from(convert_to(actor, 'UTF8'), 'UTF8')) > 0 FROM schedphi.audit_log")" t
big=$(head -c 9000 /dev/zero | tr '\0' 'a')
refused "oversized" "$big.$big.$big" "malformed (the token is too long)"
refused "empty" "" "malformed"

# --- positive edge cases ----------------------------------------------------
ok "a clinician token names its practitioner" \
	"$(as_pool -c "SELECT schedphi.assume('$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims clinician ",\"schedphi_practitioner\":\"$DR\"")")')->>'practitioner'")" "$DR"
ok "an admin token needs no second factor (admin reads no PHI)" \
	"$(as_pool -c "SELECT schedphi.assume('$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims admin | sed 's/"pwd","otp"/"pwd"/')")')->>'role'")" admin
ok "with require_mfa off (superuser setting), one factor is enough" \
	"$(q -c "SET schedphi.require_mfa = off" -c "SELECT schedphi.assume('$(sign RS256 "$work/rsa.pem" "$H_RS" "${c0/\"pwd\",\"otp\"/\"pwd\"}")')->>'role'")" scheduler
ok "only a superuser may turn require_mfa off" "$(as_pool -c "SET schedphi.require_mfa = off" | grep -c 'permission denied')" 1
logged=$(grep -c -- "${good:40:30}" "$PGHOST/server.log" 2>/dev/null)
ok "no token content reaches the server log" "${logged:-0}" 0
ok "an accepted token is in the audit log (assume), with its issuer" \
	"$(q -c "SELECT count(*) > 0 FROM schedphi.audit_log WHERE action = 'assume' AND login = 'tok_pool'
			 AND actor = 'user-scheduler' AND detail ->> 'issuer' = 'https://idp.example'")" t
ok "a refused token is in the audit log (denied), with the rule" \
	"$(q -c "SELECT count(*) > 0 FROM schedphi.audit_log WHERE action = 'denied' AND login = 'tok_pool'
			 AND detail ->> 'rule' LIKE 'token rejected: %'")" t

# --- what a token vouches for ends with it -----------------------------------
P=$(q -c "SELECT schedphi.register_patient('$T', 'Glass', 'Synthetic', '1980-01-01')")
admin1=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims admin | sed 's/"pwd","otp"/"pwd"/')")
admin2=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims admin)")
ok "break-glass through a token without a second factor is the MFA rule" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$admin1') IS NOT NULL" \
		-c "SELECT schedphi.break_glass('$P', 'synthetic emergency, patient unconscious')" | grep -c 'ERROR:  permission denied: MFA rule')" 1
ok "break-glass through a token with a second factor opens" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$admin2') IS NOT NULL" \
		-c "SELECT schedphi.break_glass('$P', 'synthetic emergency, patient unconscious') IS NOT NULL" -c "ROLLBACK" | tr '\n' ' ')" "t t "
ok "a purpose declared before assume() does not carry over to the token's actor" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.set_purpose('TREAT')" -c "SELECT schedphi.assume('$rs') IS NOT NULL" \
		-c "SELECT coalesce(schedphi.whoami()->>'purpose', 'none')" -c "COMMIT" | tail -1)" none
aud=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims auditor)")
G=$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$admin2') IS NOT NULL" \
	-c "SELECT schedphi.break_glass('$P', 'synthetic emergency, patient unconscious')" -c "COMMIT" | sed -n 2p)
ok "the grant's own token cannot review it, though the pool login is shared" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$admin2') IS NOT NULL" \
		-c "SELECT schedphi.review_break_glass('$G', 'justified', 'checked')" | grep -c 'separation of duties rule')" 1
ok "another person's token reviews it through the same pool login" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$aud') IS NOT NULL" \
		-c "SELECT count(*) FROM (SELECT schedphi.review_break_glass('$G', 'justified', 'checked')) r" -c "COMMIT" | tr '\n' ' ')" "t 1 "
ok "the review is recorded on the grant, opened through a token" \
	"$(q -c "SELECT count(*) FROM schedphi.break_glass_grant WHERE id = '$G' AND outcome = 'justified' AND by_token")" 1
q -c "SELECT schedphi.add_issuer('$T', 'https://gone.idp.example', 'schedphi', 'hs256:$hsb64') IS NOT NULL" >/dev/null
gone=$(sign HS256 "$hskey" "$H_HS" "$(claims scheduler | sed 's|https://idp.example|https://gone.idp.example|')")
ok "a token of a registered issuer is accepted" "$(as_pool -c "SELECT schedphi.assume('$gone')->>'via'")" token
q -c "SELECT schedphi.remove_issuer('$T', 'https://gone.idp.example')" >/dev/null
ok "remove_issuer withdraws it: its tokens are refused" "$(as_pool -c "SELECT schedphi.assume('$gone')" | grep -c 'token rejected: unknown issuer')" 1
ok "removing it twice is 22023" "$(q -c "SELECT schedphi.remove_issuer('$T', 'https://gone.idp.example')" | grep -c 'unknown issuer')" 1
ok "adding and removing an issuer are on record" \
	"$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action IN ('issuer_add', 'issuer_remove') AND detail ->> 'issuer' = 'https://gone.idp.example'")" 2
ok "an assume() in a savepoint that rolls back is undone" \
	"$(as_pool -c "BEGIN" -c "SAVEPOINT s" -c "SELECT schedphi.assume('$rs') IS NOT NULL" -c "ROLLBACK TO SAVEPOINT s" \
		-c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" -c "COMMIT" | tail -1)" none
ok "one in a savepoint that is released stays" \
	"$(as_pool -c "BEGIN" -c "SAVEPOINT s" -c "SELECT schedphi.assume('$rs') IS NOT NULL" -c "RELEASE SAVEPOINT s" \
		-c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" -c "COMMIT" | tail -1)" token
ok "rolling back to a savepoint restores the context from before it" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$rs') IS NOT NULL" -c "SAVEPOINT s" -c "SELECT schedphi.assume('$admin2') IS NOT NULL" \
		-c "ROLLBACK TO SAVEPOINT s" -c "SELECT schedphi.whoami()->>'role'" -c "COMMIT" | tail -1)" scheduler
ok "a session-scope assume() in a transaction that rolls back is undone" \
	"$(as_direct -c "BEGIN" -c "SELECT schedphi.assume('$rs', 'session') IS NOT NULL" -c "ROLLBACK" \
		-c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" | tail -1)" none
ok "a grant opened with a second factor is not used through a token without one (same sub)" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$admin2') IS NOT NULL" \
		-c "SELECT schedphi.break_glass('$P', 'synthetic emergency, patient unconscious') IS NOT NULL" \
		-c "SELECT schedphi.assume('$admin1') IS NOT NULL" -c "SELECT schedphi.set_purpose('EMERGENCY')" | grep -c 'ERROR:  permission denied: MFA rule')" 1
ok "a transaction-scope token gives way, at commit, to the session-scope one it overrode" \
	"$(as_direct -c "SELECT schedphi.assume('$rs', 'session') IS NOT NULL" -c "BEGIN" -c "SELECT schedphi.assume('$admin2') IS NOT NULL" \
		-c "COMMIT" -c "SELECT schedphi.whoami()->>'role'" | tail -1)" scheduler
n2=$(date +%s)
# accepted within the 60 s allowance for clock skew, so it ends 5 s from now
late=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler | sed "s/\"iat\":$now/\"iat\":$((n2 - 100))/; s/\"exp\":$((now + 600))/\"exp\":$((n2 - 55))/")")
ok "a session-scope context ends when its token expires" \
	"$(as_direct -c "SELECT schedphi.assume('$late', 'session')->>'via'" -c "SELECT pg_sleep(6)" \
		-c "SELECT coalesce(schedphi.whoami()->>'via', 'none')" \
		-c "SELECT schedphi.register_patient('$T', 'Late', 'Synthetic', '1990-01-01')" 2>&1 | grep -v '^$' | tr '\n' ' ' | sed 's/ERROR: *permission denied: tenant rule.*/denied/')" "token none denied"

# --- termination: a terminated subject's tokens are refused -------------------
gone=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler | sed 's/"sub":"user-scheduler"/"sub":"user-gone"/')")
ok "a token of a subject not terminated is accepted" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$gone')->>'actor'" -c "COMMIT" | tr -d '\n')" user-gone
q -c "SELECT schedphi.terminate_member('$T', 'user-gone')" >/dev/null
ok "once terminated in the tenant (terminate_member), its tokens are refused, on the ledger" \
	"$(as_pool -c "BEGIN" -c "SELECT schedphi.assume('$gone')" 2>&1 | grep -c 'permission denied: termination rule') $(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'denied' AND actor = 'user-gone' AND detail::text LIKE '%termination rule%'")" "1 1"
leaving=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler | sed 's/"sub":"user-scheduler"/"sub":"user-leaving"/')")
ok "a session-scope context of a subject terminated meanwhile is refused at its next statement, ends, and is recorded" \
	"$(as_direct <<EOF | grep -v '^$' | sed 's/^ERROR: *\(permission denied: termination rule\).*/\1/' | grep -v '^DETAIL' | tr '\n' '|'
SELECT schedphi.assume('$leaving', 'session')->>'actor';
SELECT count(*) >= 0 FROM schedphi.patients;
\\! psql -X -q -At -d $db -c "SELECT schedphi.terminate_member('$T', 'user-leaving')" >/dev/null
SELECT count(*) >= 0 FROM schedphi.patients;
SELECT coalesce(schedphi.whoami()->>'via', 'none');
EOF
)$(q -c "SELECT count(*) FROM schedphi.audit_log WHERE action = 'denied' AND actor = 'user-leaving' AND detail::text LIKE '%termination rule%'")" \
	"user-leaving|t|permission denied: termination rule|none|1"
staying=$(sign RS256 "$work/rsa.pem" "$H_RS" "$(claims scheduler | sed 's/"sub":"user-scheduler"/"sub":"user-staying"/')")
ok "one terminated while a repeatable read transaction ran is refused at the first statement after it" \
	"$(as_direct <<EOF | grep -v '^$' | sed 's/^ERROR: *\(permission denied: termination rule\).*/\1/' | grep -v '^DETAIL' | tr '\n' '|'
SELECT schedphi.assume('$staying', 'session')->>'actor';
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) >= 0 FROM schedphi.patients;
\\! psql -X -q -At -d $db -c "SELECT schedphi.terminate_member('$T', 'user-staying')" >/dev/null
SELECT count(*) >= 0 FROM schedphi.patients;
COMMIT;
SELECT count(*) >= 0 FROM schedphi.patients;
SELECT coalesce(schedphi.whoami()->>'via', 'none');
EOF
)" "user-staying|t|t|permission denied: termination rule|none|"

psql -X -q -c "DROP DATABASE $db" >/dev/null
echo "tokens: $count checks"
exit $fail

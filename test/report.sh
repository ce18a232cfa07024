#!/usr/bin/env bash
# The compliance report's HTML page (issue #15) opened in a browser we did
# not write: Debian's headless Chromium (installed here if missing) renders
# it with every network request refused, its DOM is read back, and a
# screenshot is taken.  The page must need nothing from outside (no script,
# stylesheet, image or font), render its sections, and verify with
# verify_report() as the auditor received it.  Needs PGHOST/PGPORT/PGUSER of
# a running cluster (test/run.sh sets them).  Prints "report: ok - ..." or
# "report: NOT OK - ..." lines.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export SP_ROOT=${SP_ROOT:-$(cd "$here/.." && pwd)}
. "$here/lib/setup.sh"

fails=0
ok() { echo "report: ok - $1"; }
bad() { echo "report: NOT OK - $1"; fails=$((fails + 1)); }

sp_install_packages chromium || { bad "Debian's chromium could not be installed"; exit 1; }
work=$(mktemp -d /tmp/schedphi-report.XXXXXX)
trap 'rm -rf "$work"' EXIT

db=schedphi_report
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
q >/dev/null 2>&1 <<'SQL' || bad "a clinic with its evidence"
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.cfg AS SELECT schedphi.create_tenant('Report <Clinic> & "Sons" (synthetic)', 'America/Chicago') AS t;
SELECT schedphi.add_business_associate(t, 'Synthetic SMS Gateway', '{sms}', current_date - 300, current_date + 400, 'limited') FROM cfg;
SELECT schedphi.add_business_associate(t, 'Synthetic Old Host <lapsed>', '{hosting}', current_date - 900, current_date - 9, 'full') FROM cfg;
SELECT schedphi.add_risk(t, 'Screens visible from the waiting room', 'physical', 3, 4, 'postgres', current_date - 3) FROM cfg;
SELECT schedphi.record_incident(t, 'security', now() - interval '2 days', 'a lost badge (synthetic)', 0) FROM cfg;
SELECT schedphi.record_evidence(t, 'penetration_test', current_date - 30, 'external firm') FROM cfg;
SQL
tenant=$(q -c "SELECT t FROM public.cfg")
q -c "SELECT schedphi.compliance_report('$tenant', 'html')" >"$work/report.html" || bad "compliance_report(tenant, 'html')"
# psql adds a newline after the value: the report ends with one of its own
head -c -1 "$work/report.html" >"$work/report.exact.html"

if grep -Eiq '<(script|link|img|iframe|object|embed)\b|(src|href)[[:space:]]*=|url\(|@import' "$work/report.exact.html"; then
	bad "the page loads nothing from outside (no script, link, image, frame, url() or @import)"
else
	ok "the page loads nothing from outside (no script, link, image, frame, url() or @import)"
fi
if grep -Fq 'Report &lt;Clinic&gt; &amp; &quot;Sons&quot;' "$work/report.exact.html" && ! grep -Fq '<Clinic>' "$work/report.exact.html"; then
	ok "text from the database is escaped (a tenant named with < > & \")"
else
	bad "text from the database is escaped (a tenant named with < > & \")"
fi

# Chromium: no network at all (every host resolves nowhere), no sandbox as root
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
	--host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$work/profile")
if HOME=$work timeout 120 "${chrome[@]}" --dump-dom "file://$work/report.exact.html" >"$work/dom.html" 2>"$work/chromium.log"; then
	sections=$(grep -o '<h2>[^<]*</h2>' "$work/dom.html" | sed 's/<[^>]*>//g' | paste -sd '|' -)
	if [ "$sections" = "Overdue|Safeguards|Configuration (check_config)|HIPAA Security Rule NPRM (January 2025)" ] &&
		grep -q 'Synthetic Old Host &lt;lapsed&gt;: BAA expired' "$work/dom.html" &&
		grep -q '<footer>Signed: sha256 [0-9a-f]\{64\}' "$work/dom.html"; then
		ok "Chromium parses the page: its four sections, the lapsed BAA overdue, the signature"
	else
		bad "Chromium parses the page: its four sections, the lapsed BAA overdue, the signature (sections: $sections)"
	fi
else
	bad "Chromium read the page (exit $?): $(tail -3 "$work/chromium.log")"
fi
if HOME=$work timeout 120 "${chrome[@]}" --window-size=1280,2400 --screenshot="$work/report.png" \
	"file://$work/report.exact.html" >>"$work/chromium.log" 2>&1 &&
	[ "$(head -c 8 "$work/report.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] &&
	[ "$(stat -c %s "$work/report.png")" -gt 20000 ]; then
	ok "Chromium took a screenshot of it ($(stat -c %s "$work/report.png") bytes of PNG)"
	[ -n "${SP_REPORT_PNG:-}" ] && cp "$work/report.png" "$SP_REPORT_PNG"
else
	bad "Chromium took a screenshot of it: $(tail -3 "$work/chromium.log")"
fi
if grep -Eiq 'ERR_NAME_NOT_RESOLVED|Failed to load resource|net::ERR' "$work/chromium.log"; then
	bad "Chromium asked the network for nothing"
else
	ok "Chromium asked the network for nothing"
fi
# (the shell drops the page's final newline: it is put back)
[ "$(q -v r="$(cat "$work/report.exact.html")" <<<"SELECT schedphi.verify_report('$tenant', :'r' || E'\\n')" 2>&1)" = t ] &&
	ok "the page, as the browser had it, verifies" || bad "the page, as the browser had it, verifies"
psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
exit $((fails > 0))

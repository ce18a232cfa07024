#!/usr/bin/env bash
# Termination at once (issue #15): a scheduler's session is open and has
# used its membership (cached per backend, src/membership.c); an admin in
# another session calls terminate_member(); the open session's very next
# statement is refused.  The same for an access review's revoke, and the
# report measures the PHI accesses after the termination.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -euo pipefail

db=schedphi_terminate
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" \
	-c "DROP ROLE IF EXISTS term_desk" -c "CREATE ROLE term_desk LOGIN" \
	-c "DROP ROLE IF EXISTS term_desk2" -c "CREATE ROLE term_desk2 LOGIN" -c "CREATE DATABASE $db" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.cfg (tenant uuid, p uuid);
GRANT SELECT ON public.cfg TO PUBLIC;
DO $$
DECLARE
	t uuid := schedphi.create_tenant('Termination Clinic', 'UTC');
BEGIN
	PERFORM schedphi.add_member(t, 'term_desk', 'scheduler');
	PERFORM schedphi.add_member(t, 'term_desk2', 'scheduler');
	INSERT INTO public.cfg VALUES (t, schedphi.register_patient(t, 'Termi', 'Synthetic', '1980-01-01'));
END $$;
SQL
read -r tenant p < <(q -F ' ' -c "SELECT tenant, p FROM public.cfg")
other() { echo "\\! psql -X -q -At -U postgres -d $db -c \"$1\" >/dev/null"; }
read1="BEGIN; SELECT schedphi.set_purpose('TREAT') \\g /dev/null
SELECT 'read ' || (schedphi.patient_record('$p') ->> 'family'); COMMIT;"

out=$(psql -X -q -At -U term_desk -d "$db" 2>&1 <<EOF
$read1
$read1
$(other "SELECT schedphi.terminate_member('$tenant', 'term_desk')")
$read1
SELECT 'count ' || count(*) FROM schedphi.appointments WHERE tenant = '$tenant';
EOF
)
review=$(q -c "SELECT schedphi.start_access_review('$tenant')")
out2=$(psql -X -q -At -U term_desk2 -d "$db" 2>&1 <<EOF
$read1
$(other "SELECT schedphi.review_access('$review', 'term_desk2', 'revoke', 'synthetic test')")
$read1
EOF
)

fail=0
check() {
	if [ "$2" = "$3" ]; then
		echo "terminate: ok - $1"
	else
		echo "terminate: NOT OK - $1 (got '$2', want '$3')"
		fail=1
	fi
}
check "an open session reads while a member, twice (the membership cached)" \
	"$(grep -c '^read Synthetic' <<<"$out")" 2
check "terminate_member in another session: the open session's next statement is refused" \
	"$(grep -c 'ERROR:  permission denied' <<<"$out") $(grep '^count' <<<"$out")" "1 count 0"
check "an access review's revoke in another session: the open session's next statement is refused" \
	"$(grep -c '^read Synthetic' <<<"$out2") $(grep -c 'ERROR:  permission denied' <<<"$out2")" "1 1"
check "the report: the termination, recorded with no PHI access after it" \
	"$(q -c "SELECT x->>'login', x->>'phi_accesses_after_end', x->>'memberships' FROM jsonb_array_elements(
		(schedphi.compliance_report('$tenant')::jsonb -> 'safeguards') -> 5 -> 'evidence') x" | tr '\n' ' ')" "term_desk|0|1 "
psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null
exit $fail

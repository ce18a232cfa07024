#!/usr/bin/env bash
# Availability rules are cached per backend (src/walltime.c) and dropped when
# a change to availability or to a location commits anywhere.  One session
# (a scheduler and admin member, so book() takes the path in C) keeps its
# cache warm while another session changes things; after each change the
# first session's very next call must see it:
#   - a window added elsewhere is offered and can be booked;
#   - a window deleted elsewhere is gone, and booking in it is refused;
#   - a location moved to another zone moves its windows;
#   - its own change is seen inside its transaction and forgotten after a
#     ROLLBACK; a REPEATABLE READ transaction keeps its snapshot;
#   - a transaction that changed availability cannot be PREPAREd.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -euo pipefail

db=schedphi_rules_cache
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" \
	-c "DROP ROLE IF EXISTS cache_desk" -c "CREATE ROLE cache_desk LOGIN" -c "CREATE DATABASE $db" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.cfg (tenant uuid, loc uuid, dr uuid, p uuid);
GRANT SELECT ON public.cfg TO cache_desk;
DO $$
DECLARE
	t uuid := schedphi.create_tenant('Cache Clinic', 'America/New_York');
	l uuid := schedphi.add_location(t, 'Cache site', 'America/New_York');
	dr uuid := schedphi.add_practitioner(t, 'Dr Cache Synthetic');
BEGIN
	-- Mondays 09:00-12:00 New York time
	PERFORM schedphi.add_availability(dr, l, '{1}', '09:00', '12:00', daterange('2030-01-01', NULL));
	PERFORM schedphi.add_member(t, 'cache_desk', 'scheduler');
	PERFORM schedphi.add_member(t, 'cache_desk', 'admin');
	INSERT INTO public.cfg VALUES (t, l, dr, schedphi.register_patient(t, 'Cachet', 'Synthetic', '1980-01-01'));
END $$;
SQL
read -r tenant loc dr p < <(q -F ' ' -c "SELECT tenant, loc, dr, p FROM public.cfg")

# Monday 2030-03-04: the number of free half hours, and the first one (UTC)
count="SELECT 'count ' || count(*) FROM schedphi.find_slots(ARRAY['$dr']::uuid[], '[2030-03-04, 2030-03-05)', '30 minutes')"
first="SELECT 'first ' || to_char(min(starts) AT TIME ZONE 'UTC', 'HH24:MI') FROM schedphi.find_slots(ARRAY['$dr']::uuid[], '[2030-03-04, 2030-03-05)', '30 minutes')"
other() { echo "\\! psql -X -q -At -U postgres -d $db -c \"$1\" >/dev/null"; }

out=$(psql -X -q -At -U cache_desk -d "$db" 2>&1 <<EOF
$count;
$first;
$(other "SELECT schedphi.add_availability('$dr', '$loc', '{1}', '13:00', '15:00', daterange('2030-01-01', NULL))")
$count;
SELECT 'booked ' || (schedphi.book('$p', ARRAY['$dr']::uuid[], '[2030-03-04 18:00Z, 2030-03-04 18:30Z)') IS NOT NULL);
$(other "DELETE FROM schedphi.availability WHERE starts = '13:00'")
$count;
SELECT 'late ' || (schedphi.book('$p', ARRAY['$dr']::uuid[], '[2030-03-04 19:00Z, 2030-03-04 19:30Z)') IS NOT NULL);
$(other "UPDATE schedphi.location SET timezone = 'America/Los_Angeles'")
$first;
$(other "UPDATE schedphi.location SET timezone = 'America/New_York'")
$first;
BEGIN;
SELECT schedphi.add_availability('$dr', '$loc', '{1}', '13:00', '14:00', daterange('2030-01-01', NULL));
$count;
ROLLBACK;
$count;
BEGIN ISOLATION LEVEL REPEATABLE READ;
$count;
$(other "SELECT schedphi.add_availability('$dr', '$loc', '{1}', '15:00', '16:00', daterange('2030-01-01', NULL))")
$count;
COMMIT;
$count;
BEGIN;
SELECT schedphi.add_availability('$dr', '$loc', '{1}', '17:00', '18:00', daterange('2030-01-01', NULL));
PREPARE TRANSACTION 'sp_rules';
$count;
EOF
)

fail=0
check() {
	if [ "$2" = "$3" ]; then
		echo "rules_cache: ok - $1"
	else
		echo "rules_cache: NOT OK - $1 (got '$2', want '$3')"
		fail=1
	fi
}
lines() { grep -E "^($1) " <<<"$out" | tr '\n' ' ' | sed 's/ $//'; }
# 09:00-12:00 on a 15-minute grid: 11 half hours; 13:00-15:00 adds 7;
# 13:00-14:00 adds 1 (13:00-13:30 is booked by then); 15:00-16:00 adds 3
check "a window added in another session is offered at once, and booked in C" \
	"$(lines 'count|booked' | cut -d' ' -f1-6)" "count 11 count 18 booked true"
check "a window deleted in another session is gone at once, and booking in it is refused" \
	"$(lines count | cut -d' ' -f5-6) $(grep -c 'is not available during' <<<"$out") $(grep -c '^late' <<<"$out")" "count 11 1 0"
check "a location moved to another zone moves its windows at once (and back)" \
	"$(lines first)" "first 14:00 first 17:00 first 14:00"
check "a window added in this transaction is seen in it and gone after ROLLBACK" \
	"$(lines count | cut -d' ' -f7-10)" "count 12 count 11"
check "a REPEATABLE READ transaction keeps the windows of its snapshot, and sees the change after" \
	"$(lines count | cut -d' ' -f11-16)" "count 11 count 11 count 14"
check "a transaction that changed availability cannot be prepared" \
	"$(grep -c 'cannot PREPARE a transaction that changed schedphi availability' <<<"$out")" 1
check "no other error" \
	"$(grep -c 'ERROR' <<<"$out")" 2

psql -X -q -c "DROP DATABASE $db" -c "DROP ROLE cache_desk" >/dev/null
exit $fail

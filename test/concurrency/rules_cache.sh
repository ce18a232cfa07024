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
#   - a transaction that changed availability cannot be PREPAREd;
#   - the seats and buffers of the actors it books are cached too (book.c):
#     a buffer set elsewhere is kept at once, a block added elsewhere
#     refuses at once, and a patient of another tenant gets the same error
#     with the actor cached as without;
#   - an EHR's bookings take their seats with the actors from that cache;
#   - the roles cached go stale when a group role is revoked by hand;
#   - so is which tenants have no waitlist entry waiting: an entry added
#     elsewhere is served by the very next booking that fits it, and a
#     transaction that added one cannot be PREPAREd.
# Needs PGHOST/PGPORT/PGUSER of a running cluster (test/run.sh sets them).
set -euo pipefail

db=schedphi_rules_cache
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" \
	-c "DROP ROLE IF EXISTS cache_desk" -c "CREATE ROLE cache_desk LOGIN" -c "CREATE DATABASE $db" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.cfg (tenant uuid, loc uuid, dr uuid, p uuid, other_p uuid);
GRANT SELECT ON public.cfg TO cache_desk;
GRANT EXECUTE ON FUNCTION schedphi._book_cached() TO cache_desk;
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
	INSERT INTO public.cfg VALUES (t, l, dr, schedphi.register_patient(t, 'Cachet', 'Synthetic', '1980-01-01'),
		schedphi.register_patient(schedphi.create_tenant('Other Cache Clinic', 'UTC'), 'Otherine', 'Synthetic', '1981-02-02'));
END $$;
SQL
read -r tenant loc dr p other_p < <(q -F ' ' -c "SELECT tenant, loc, dr, p, other_p FROM public.cfg")

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

# The actors' cache: Monday 2030-03-11, 09:00-12:00 New York = 13:00-16:00Z.
# The first call of a session looks the actor up; later ones take it from
# the cache (_book_cached counts them) until a change commits anywhere:
# a2, clash, clear, blocked and the second stranger (a block is checked
# when the booking is written, so adding one leaves the cache as it is; a
# clash is refused by the exclusion constraint, and the reference names it).
book() { echo "SELECT '$1 ' || (schedphi.book('$2', ARRAY['$dr']::uuid[], '$3') IS NOT NULL);"; }
actors=$(psql -X -q -At -U cache_desk -d "$db" 2>&1 <<EOF
$(book stranger "$other_p" '[2030-03-11 13:00Z, 2030-03-11 13:30Z)')
$(book a1 "$p" '[2030-03-11 13:00Z, 2030-03-11 13:30Z)')
$(book a2 "$p" '[2030-03-11 13:30Z, 2030-03-11 14:00Z)')
$(book clash "$p" '[2030-03-11 13:15Z, 2030-03-11 13:45Z)')
SELECT 'cached ' || schedphi._book_cached();
$(other "SELECT schedphi.set_buffer('$dr', '30 minutes', '0')")
$(book buffered "$p" '[2030-03-11 14:00Z, 2030-03-11 14:30Z)')
$(book clear "$p" '[2030-03-11 14:30Z, 2030-03-11 15:00Z)')
$(other "SELECT schedphi.set_buffer('$dr', '0', '0')")
$(other "SELECT schedphi.add_block('$dr', '[2030-03-11 15:00Z, 2030-03-11 15:30Z)', 'synthetic meeting')")
$(book a3 "$p" '[2030-03-11 15:30Z, 2030-03-11 16:00Z)')
$(book blocked "$p" '[2030-03-11 15:00Z, 2030-03-11 15:30Z)')
$(book stranger "$other_p" '[2030-03-11 13:00Z, 2030-03-11 13:30Z)')
SELECT 'cached ' || schedphi._book_cached();
$(other "SELECT schedphi.waitlist_add('$p', ARRAY['$dr']::uuid[], '[2030-03-18 13:00Z, 2030-03-18 17:00Z)', '30 minutes')")
$(book served "$p" '[2030-03-18 13:00Z, 2030-03-18 13:30Z)')
$(other "REVOKE schedphi_scheduler FROM cache_desk")
$(book revoked "$p" '[2030-03-18 14:00Z, 2030-03-18 14:30Z)')
$(other "GRANT schedphi_scheduler TO cache_desk")
$(book regranted "$p" '[2030-03-18 14:00Z, 2030-03-18 14:30Z)')
BEGIN;
SELECT schedphi.waitlist_add('$p', ARRAY['$dr']::uuid[], '[2030-03-25 13:00Z, 2030-03-25 17:00Z)', '30 minutes');
PREPARE TRANSACTION 'sp_waitlist';
EOF
)
waitlist=$(q -c "SELECT string_agg(status, ',') FROM schedphi.waitlist")

# An EHR's bookings (hl7_ingest, fhir_ingest: _ehr_create) take their seats
# with the actors from the same cache: outside the availability (a Sunday),
# and a clash refused by the constraint and named by the reference.
ehr() { echo "SELECT '$1 ' || (schedphi._ehr_create('$tenant', '$p', ARRAY['$dr']::uuid[], '$2', 'booked', 'routine', NULL) IS NOT NULL);"; }
ehrs=$(psql -X -q -At -d "$db" 2>&1 <<EOF
$(ehr e1 '[2030-03-10 13:00Z, 2030-03-10 13:30Z)')
$(ehr e2 '[2030-03-10 13:30Z, 2030-03-10 14:00Z)')
$(ehr e3 '[2030-03-10 13:45Z, 2030-03-10 14:15Z)')
SELECT 'cached ' || schedphi._book_cached();
SELECT 'seats ' || count(*) FROM schedphi.appointment_actor WHERE actor = '$dr' AND active
	AND span && '[2030-03-10 00:00Z, 2030-03-11 00:00Z)';
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

alines() { grep -E "^($1) " <<<"$actors" | tr '\n' ' ' | sed 's/ $//'; }
errors=$(grep 'ERROR' <<<"$actors" | sed 's/^psql:<stdin>:[0-9]*: //')
check "an actor booked before is taken from the cache" "$(alines 'a1|a2|cached' | cut -d' ' -f1-6)" "a1 true a2 true cached 2"
check "a clash with the actor cached: refused by the constraint, named by _raise_conflict" \
	"$(alines clash) $(grep -c 'booking conflict: .* is busy during \["2030-03-11 13:00:00+00","2030-03-11 13:30:00+00")' <<<"$errors")" " 1"
check "a buffer set in another session is kept at once (with the actor cached)" \
	"$(alines 'buffered|clear') $(grep -c 'booking conflict' <<<"$errors")" "clear true 2"
check "a block added in another session refuses at once (with the actor cached)" \
	"$(alines 'a3|blocked' | cut -d' ' -f1-2) $(grep -c 'is blocked during' <<<"$errors") $(alines cached | cut -d' ' -f4)" \
	"a3 true 1 5"
check "a patient of another tenant: the same error with the actor cached as without" \
	"$(grep -c . <<<"$errors") $(grep -v 'booking conflict\|is blocked\|cannot PREPARE\|permission denied: role rule' <<<"$errors" | sort -u | grep -c .)" "7 1"
check "a waitlist entry added in another session is served by the next booking that fits it" \
	"$(alines served) $waitlist" "served true booked"
check "the group role revoked by hand in another session refuses the very next booking; granted again, it books" \
	"$(alines 'revoked|regranted') $(grep -c 'permission denied: role rule' <<<"$errors")" "regranted true 1"
check "a transaction that added to the waitlist cannot be prepared" \
	"$(grep -c 'cannot PREPARE a transaction that added to the schedphi waitlist' <<<"$errors")" 1

check "an EHR's booking takes its seats with the actor cached; a clash is refused and named" \
	"$(grep -E '^(e1|e2|cached|seats) ' <<<"$ehrs" | tr '\n' ' ')$(grep -c 'booking conflict: .* is busy during' <<<"$ehrs")" \
	"e1 true e2 true cached 2 seats 2 1"

psql -X -q -c "DROP DATABASE $db" -c "DROP ROLE cache_desk" >/dev/null
exit $fail

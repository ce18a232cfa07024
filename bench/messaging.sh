#!/usr/bin/env bash
# Patient communications benchmark (issue #16): BENCH_MSG_N appointments
# (default 100,000) booked in a clinic whose patients all chose SMS, with a
# confirmation template and reminders at two offsets (3 messages queued
# per booking, in the booking's transaction), against the same bookings in
# a clinic with no messaging (the baseline, same run, same database);
# then every due message claimed by an integration login through
# claim_messages (address and name decrypted, a disclosure recorded per
# message), against the baseline of reading the same fields of as many
# patients through schedphi.patients.  Prints rates and ratios; never part
# of CI.  Synthetic patients only.  Starts its own throwaway cluster.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

N=${BENCH_MSG_N:-100000}
DB=schedphi_bench_messaging

bench_cluster
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
bench_load /dev/null
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
psql -X -q -c "CREATE ROLE bench_msg LOGIN" >/dev/null

# clinic NAME MESSAGING: a tenant with 200 practitioners available at all
# hours and N patients; with messaging, their SMS consent, templates, a
# policy and a vendor.  Prints the tenant.
clinic() {
	q <<SQL
SET client_min_messages = warning;
SELECT schedphi.create_tenant('$1', 'UTC') AS t \gset
SELECT schedphi.add_location(:'t', 'Bench site', 'UTC') AS l \gset
SELECT count(schedphi.add_availability(schedphi.add_practitioner(:'t', 'Dr Bench ' || g), :'l', '{1,2,3,4,5,6,7}',
	'00:00', '24:00', daterange(current_date, NULL), 30)) FROM generate_series(1, 200) g \g /dev/null
SELECT count(schedphi.register_patient(:'t', 'Msg' || g, 'Synthetic' || g, date '1950-01-01' + g % 20000,
	'555-7' || lpad(g::text, 7, '0'))) FROM generate_series(1, $N) g \g /dev/null
SELECT schedphi.add_member(:'t', 'bench_msg', 'integration') \g /dev/null
\if $2
SELECT schedphi.set_reminder_policy(:'t', '{1 day, 2 hours}', '00:00-00:00') \g /dev/null
SELECT schedphi.add_message_template(:'t', k, 'sms', 'Hi {given_name}, {date} at {time}, {location}.')
FROM unnest(ARRAY['confirmation', 'reminder']) k \g /dev/null
SELECT count(schedphi.set_contact_preference(p.id, 'sms', true, true)) FROM schedphi.patient p WHERE p.tenant = :'t' \g /dev/null
SELECT schedphi.add_business_associate(:'t', 'Bench SMS Co', '{sms}', current_date - 1, current_date + 300, 'limited') \g /dev/null
\endif
SELECT :'t';
SQL
}
echo "== two clinics of $N patients (one with messaging)"
PLAIN=$(clinic 'Bench plain' false | tail -1)
MSG=$(clinic 'Bench messaging' true | tail -1)
# (no VACUUM ANALYZE here: after one of a new database's empty tables,
# book() in a long session slows with every booking -- issue #12, noted in
# docs/benchmarks.md)

# book TENANT: N bookings, one per patient, 30-minute slots from the day
# after tomorrow; seconds taken
book() {
	q <<SQL | tail -1
SET client_min_messages = warning;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(schedphi.book(p.id, ARRAY[a.id],
	tstzrange(date_trunc('day', now()) + interval '2 days' + ((p.n - 1) / 200) * interval '30 minutes',
			  date_trunc('day', now()) + interval '2 days' + ((p.n - 1) / 200 + 1) * interval '30 minutes')))
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM schedphi.patient WHERE tenant = '$1') p
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM schedphi.actor WHERE tenant = '$1') a ON a.k = (p.n - 1) % 200
\g /dev/null
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
}
echo "== booking $N appointments in each"
s_plain=$(book "$PLAIN")
s_msg=$(book "$MSG")
queued=$(q -c "SELECT count(*) FROM schedphi.message WHERE tenant = '$MSG'")
echo "book(), no messaging:   $(f '%.1f' "$s_plain") s, $(f '%.0f' "$(calc '%f' "$N / $s_plain")") bookings/s"
echo "book(), with messaging: $(f '%.1f' "$s_msg") s, $(f '%.0f' "$(calc '%f' "$N / $s_msg")") bookings/s, $queued messages queued"
echo "ratio (with / without, bookings per second): $(ratio "$(calc '%f' "$s_plain")" "$s_msg")"

# claim everything due as the integration login; the baseline reads the
# same fields of N patients through the view
q -c "UPDATE schedphi.message SET not_before = now() - interval '1 second' WHERE tenant = '$MSG'" >/dev/null
vendor=$(q -c "SELECT id FROM schedphi.business_associate WHERE tenant = '$MSG'")
# the baseline reads N patients within the hour: above the default reveal limit
q -c "SELECT schedphi.set_rate_limit('$MSG', 'integration', NULL, NULL, 1000000)" >/dev/null
claim_out=$(psql -X -q -At -U bench_msg -d "$DB" <<SQL
BEGIN;
SELECT schedphi.set_purpose('TREAT') \g /dev/null
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
CREATE TEMP TABLE got (n int);
DO \$\$
DECLARE
	k int;
BEGIN
	LOOP
		SELECT count(*) INTO k FROM schedphi.claim_messages('$vendor', 1000);
		INSERT INTO got VALUES (k);
		EXIT WHEN k = 0;
	END LOOP;
END \$\$;
SELECT sum(n) || ' ' || round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) FROM got;
COMMIT;
SQL
)
read -r claimed s_claim <<<"$(echo "$claim_out" | tail -1)"
s_read=$(psql -X -q -At -U bench_msg -d "$DB" <<SQL | tail -1
BEGIN;
SELECT schedphi.set_purpose('TREAT') \g /dev/null
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT sum(length(x.given) + length(x.phone)) FROM (SELECT given, phone FROM schedphi.patients WHERE tenant = '$MSG' LIMIT $N) x \g /dev/null
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
COMMIT;
SQL
)
echo "claim_messages: $claimed claimed (1 a day per patient: the confirmations) in $(f '%.1f' "$s_claim") s, $(f '%.0f' "$(calc '%f' "$claimed / $s_claim")") messages/s"
echo "baseline, the same fields of $N patients read through schedphi.patients: $(f '%.1f' "$s_read") s, $(f '%.0f' "$(calc '%f' "$N / $s_read")") patients/s"
echo "ratio (claimed messages per second / patients read per second): $(ratio "$(calc '%f' "$claimed / $s_claim")" "$(calc '%f' "$N / $s_read")")"
echo "deferred by the limit: $(q -c "SELECT count(*) FROM schedphi.message WHERE tenant = '$MSG' AND status = 'pending' AND reason LIKE 'limit%'")"

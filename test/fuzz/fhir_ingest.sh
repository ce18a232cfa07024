#!/usr/bin/env bash
# fhir_ingest under hostile JSON (issue #14): FHIR_FUZZ_CASES (default 400)
# mutations of valid bundles (the official R4 Appointment examples and a
# synthetic patient): values replaced by other types, huge strings, deep
# nesting, keys dropped, entries duplicated.  Every call must either work
# or raise one of the documented SQLSTATEs (22023, SPF04, SPF05, 23P01,
# 55000), never another error; a refused transaction bundle must leave
# nothing written, and a batch's failed entries nothing of theirs.  The
# mutations are drawn from a seed printed first (FHIR_FUZZ_SEED repeats
# a run).  Needs the PGHOST/PGPORT/PGUSER of a running cluster.  Prints
# "fuzz: ok - ..." or "fuzz: NOT OK - ..."; exits non-zero on failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
db=schedphi_fhir_fuzz
seed=${FHIR_FUZZ_SEED:-$RANDOM}
cases=${FHIR_FUZZ_CASES:-400}

python3 - "$root/test/samples/fhir-r4" "$seed" "$cases" >"$work/cases.txt" 2>"$work/cases.err" <<'PY'
import json, random, sys, os
sys.setrecursionlimit(20000)
samples, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
def load(name):
    return json.load(open(os.path.join(samples, name)))
patient = {"resourceType": "Patient", "id": "example",
           "identifier": [{"type": {"coding": [{"code": "MR"}]}, "system": "urn:fuzz:mrn", "value": "FUZZ-1"}],
           "name": [{"family": "Fuzzsynthetic", "given": ["Ada"]}], "birthDate": "1980-01-01"}
appts = [load("Appointment-example.json"), load("Appointment-2docs.json"), load("Appointment-examplereq.json")]
for i, a in enumerate(appts):
    a["identifier"] = [{"system": "urn:fuzz:ehr", "value": "F-%d" % i}]
    a["participant"][0]["actor"]["reference"] = "Patient/example"
def bundle(kind):
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"fullUrl": "urn:uuid:5e5e5e5e-0000-4000-8000-000000000001", "resource": json.loads(json.dumps(patient))}]
                     + [{"resource": json.loads(json.dumps(a))} for a in appts[:2]]}
def nested(depth):
    v = "x"
    for _ in range(depth):
        v = [v] if rnd.random() < 0.5 else {"a": v}
    return v
def junk():
    return rnd.choice([None, True, 0, -1, 1e308, 2**53 + 1, "", " ", "x" * rnd.choice([300, 5000, 100000]),
                       "2026-02-30T10:00:00Z", "2026-07-01T10:00:00", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
                       "Patient/", "Practitioner/" + "9" * 70, "urn:uuid:", "\u00e9\u2028\ud83d\ude00",
                       "Patient/../../etc", "'; DROP TABLE x; --", [], {}, nested(rnd.choice([10, 200, 1000])),
                       "ge2026", "booked", "cancelled", "entered-in-error", "Slot", "Bundle"])
def paths(v, p=()):
    # (not below depth 12: a deeply nested value is mutated whole)
    stack = [(v, p)]
    while stack:
        v, p = stack.pop()
        yield p
        if len(p) < 12 and isinstance(v, dict):
            stack.extend((v[k], p + (k,)) for k in v)
        elif len(p) < 12 and isinstance(v, list):
            stack.extend((x, p + (i,)) for i, x in enumerate(v))
def mutate(doc):
    for _ in range(rnd.randint(1, 4)):
        ps = list(paths(doc))
        p = rnd.choice(ps[1:]) if len(ps) > 1 else ()
        parent = doc
        for k in p[:-1]:
            parent = parent[k]
        op = rnd.random()
        if not p:
            return junk()
        if op < 0.55:
            parent[p[-1]] = junk()
        elif op < 0.75 and isinstance(parent, dict):
            del parent[p[-1]]
        elif op < 0.85 and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[p[-1]])))
        elif isinstance(parent, dict):
            parent[rnd.choice(["extension", "contained", "zzz", "meta", "request"])] = junk()
        else:
            parent[p[-1]] = junk()
    return doc
for i in range(n):
    print(json.dumps(mutate(bundle(rnd.choice(["transaction", "transaction", "batch"])))))
PY
[ -s "$work/cases.txt" ] || { echo "fuzz: NOT OK - fhir_ingest: could not make the cases (seed $seed)"; exit 1; }
chmod 644 "$work/cases.txt"

PGOPTIONS="-c client_min_messages=warning" psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
	-c "DROP ROLE IF EXISTS fuzz_engine" -c "CREATE ROLE fuzz_engine LOGIN" >/dev/null
sed "s|@CASES@|$work/cases.txt|" >"$work/run.sql" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
DO $$
DECLARE
	t uuid := schedphi.create_tenant('FHIR Fuzz Clinic', 'America/New_York');
	dr uuid := schedphi.add_practitioner(t, 'Dr Fuzz Synthetic');
	dr2 uuid := schedphi.add_practitioner(t, 'Dr Fuzz Two Synthetic');
	l uuid := schedphi.add_location(t, 'Fuzz site', 'America/New_York');
	room uuid := schedphi.add_resource(t, 'room', 'Fuzz room', 1, l);
BEGIN
	PERFORM schedphi.add_member(t, 'fuzz_engine', 'integration');
	PERFORM schedphi.add_external_id(t, 'fhir:Practitioner', 'example', dr);
	PERFORM schedphi.add_external_id(t, 'fhir:Practitioner', 'f202', dr2);
	PERFORM schedphi.add_external_id(t, 'fhir:Location', '1', room);
END $$;
CREATE TEMP TABLE cases (n serial, body text);
\copy cases (body) FROM '@CASES@' WITH (FORMAT csv, DELIMITER E'\x01', QUOTE E'\x02')
CREATE TEMP TABLE outcome (n int, state text, kind text, wrote boolean, failed_entries int);
CREATE FUNCTION pg_temp.written() RETURNS text LANGUAGE sql AS $f$
	SELECT concat_ws('|', (SELECT count(*) FROM schedphi.patient), (SELECT count(*) FROM schedphi.appointment),
					 (SELECT count(*) FROM schedphi.appointment_actor), (SELECT count(*) FROM schedphi.appointment_ref))
$f$;
DO $$
DECLARE
	c record;
	st text;
	before text;
	after text;
	r jsonb;
	nfail int;
	nok int;
BEGIN
	FOR c IN SELECT * FROM cases ORDER BY n LOOP
		before := pg_temp.written();
		r := NULL;
		BEGIN
			SET SESSION AUTHORIZATION fuzz_engine;
			r := schedphi.fhir_ingest(c.body::jsonb);
			st := '00000';
			RESET SESSION AUTHORIZATION;
			after := pg_temp.written();
			RAISE SQLSTATE 'TSTRB';
		EXCEPTION
			WHEN SQLSTATE 'TSTRB' THEN NULL;
			WHEN OTHERS THEN
				st := SQLSTATE;
				RESET SESSION AUTHORIZATION;
				after := pg_temp.written();
		END;
		-- a batch that worked: each failed entry wrote nothing of its own
		-- (only the entries that say 200/201 may have written)
		SELECT count(*) FILTER (WHERE e #>> '{response,status}' !~ '^20'),
			   count(*) FILTER (WHERE e #>> '{response,status}' ~ '^20')
		INTO nfail, nok FROM jsonb_array_elements(coalesce(r -> 'entry', '[]')) e;
		INSERT INTO outcome VALUES (c.n, st, CASE WHEN c.body::jsonb ->> 'type' = 'batch' THEN 'batch' ELSE 'other' END,
									after <> before AND (st <> '00000' OR nok = 0), nfail);
	END LOOP;
END $$;
SELECT 'states ' || string_agg(state || '=' || k, ' ' ORDER BY state) FROM (SELECT state, count(*) AS k FROM outcome GROUP BY state) s;
SELECT 'bad ' || coalesce(string_agg(n || ':' || state, ' ' ORDER BY n), '') FROM outcome
WHERE state NOT IN ('00000', '22023', 'SPF04', 'SPF05', '23P01', '55000');
SELECT 'wrote ' || coalesce(string_agg(n::text, ' ' ORDER BY n), '') FROM outcome WHERE wrote;
SELECT 'batch_failed_entries ' || coalesce(sum(failed_entries), 0) FROM outcome;
SQL
psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -f "$work/run.sql" >"$work/result.txt" 2>&1
rc=$?
psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "DROP ROLE IF EXISTS fuzz_engine" >/dev/null 2>&1
if [ $rc -ne 0 ]; then
	tail -5 "$work/result.txt"
	echo "fuzz: NOT OK - fhir_ingest: the fuzz run did not complete (seed $seed)"
	exit 1
fi
states=$(sed -n 's/^states //p' "$work/result.txt")
bad=$(sed -n 's/^bad //p' "$work/result.txt")
wrote=$(sed -n 's/^wrote //p' "$work/result.txt")
if [ -z "$bad" ] && [ -z "$wrote" ]; then
	echo "fuzz: ok - fhir_ingest: $cases hostile bundles (seed $seed): only documented errors ($states); nothing written by a refusal"
else
	echo "fuzz: NOT OK - fhir_ingest (seed $seed): undocumented errors [$bad], refusals that wrote [$wrote]; states: $states"
	exit 1
fi

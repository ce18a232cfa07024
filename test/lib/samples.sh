# Sourced by the test scripts.  sp_load_samples DB: the public HL7 v2
# sample messages of test/samples/hl7v2 and the official FHIR R4 examples
# of test/samples/fhir-r4 (named "fhir/<file without .json>") into
# tst.sample (name, body) of DB
# (test/lib/fixtures.sql makes the table), read here by the client, so
# that the server never needs to read the clone.
sp_load_samples() {
	local db=$1 f
	for f in "$SP_ROOT"/test/samples/hl7v2/*.hl7; do
		psql -X -q -v ON_ERROR_STOP=1 -d "$db" -v name="$(basename "$f" .hl7)" -v body="$(cat "$f")" \
			<<<"INSERT INTO tst.sample (name, body) VALUES (:'name', :'body')" || return 1
	done
	for f in "$SP_ROOT"/test/samples/fhir-r4/*.json; do
		psql -X -q -v ON_ERROR_STOP=1 -d "$db" -v name="fhir/$(basename "$f" .json)" -v body="$(cat "$f")" \
			<<<"INSERT INTO tst.sample (name, body) VALUES (:'name', :'body')" || return 1
	done
}

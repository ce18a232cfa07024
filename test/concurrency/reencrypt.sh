#!/usr/bin/env bash
# Re-encryption beside live traffic: while 6 clients register and read
# patients (as a scheduler member), another session rotates the tenant's
# data key and re-encrypts in small batches, over and over.  Afterwards every
# patient opens, nothing is left under a retired key once reencrypt has run
# to the end, and no client saw an error.
set -euo pipefail

db=schedphi_reenc
seconds=${REENC_SECONDS:-6}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

psql -X -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
psql -X -q -c "DROP ROLE IF EXISTS reenc_sched" -c "CREATE ROLE reenc_sched LOGIN" \
	-c "ALTER ROLE reenc_sched SET schedphi.lookup_rate_limit = 100000" \
	-c "ALTER ROLE reenc_sched SET schedphi.reveal_rate_limit = 4000" >/dev/null 2>&1
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION schedphi CASCADE" >/dev/null
t=$(q -c "SELECT schedphi.create_tenant('Reencrypt Clinic', 'UTC')")
q -c "SELECT schedphi.add_member('$t', 'reenc_sched', 'scheduler')" >/dev/null
q -c "SELECT count(*) FROM (SELECT schedphi.register_patient('$t', 'Seed', 'Synthetic' || n, '1980-01-01',
	mrn => 'SEED-' || n) FROM generate_series(1, 300) n) x" >/dev/null
q -c "CREATE TABLE public.reenc_outcome (kind text, state text)" \
  -c "GRANT INSERT ON public.reenc_outcome TO reenc_sched" >/dev/null
q >/dev/null <<SQL
CREATE FUNCTION public.reenc_work(n int) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
	p uuid;
BEGIN
	IF n % 2 = 0 THEN
		PERFORM schedphi.register_patient('$t', 'Live', 'Synthetic' || n, '1990-01-01');
	ELSE
		SELECT id INTO p FROM schedphi.find_patient('$t', mrn => 'SEED-' || (1 + n % 300)) id;
		PERFORM schedphi.set_purpose('OPERATIONS');
		IF schedphi.patient_record(p)->>'given' <> 'Seed' THEN
			RAISE EXCEPTION 'wrong data';
		END IF;
	END IF;
	INSERT INTO public.reenc_outcome VALUES ('work', '00000');
EXCEPTION WHEN OTHERS THEN
	INSERT INTO public.reenc_outcome VALUES ('work', SQLSTATE);
END \$\$;
GRANT EXECUTE ON FUNCTION public.reenc_work(int) TO reenc_sched;
SQL
cat >"$work/work.sql" <<'EOF2'
\set n random(1, 1000000)
SELECT public.reenc_work(:n);
EOF2
cat >"$work/rotate.sql" <<EOF2
SELECT schedphi.rotate_key('$t');
SELECT schedphi.reencrypt(50);
SELECT schedphi.reencrypt(50);
EOF2
echo "reencrypt: 6 clients register and read while keys rotate and data is re-encrypted for ${seconds}s"
pgbench -n -U reenc_sched -c 6 -j 2 -T "$seconds" -f "$work/work.sql" "$db" >"$work/work.txt" 2>&1 &
wp=$!
pgbench -n -c 1 -T "$seconds" -f "$work/rotate.sql" "$db" >"$work/rotate.txt" 2>&1 || { cat "$work/rotate.txt"; echo "reencrypt: rotation failed"; exit 1; }
wait $wp || { cat "$work/work.txt"; echo "reencrypt: clients failed"; exit 1; }

fail=0
check() {
	if [ "$2" = "$3" ]; then echo "reencrypt: ok - $1"; else echo "reencrypt: NOT OK - $1 (got $2, want $3)"; fail=1; fi
}
check "the clients saw no error" "$(q -c "SELECT count(*) FROM public.reenc_outcome WHERE state <> '00000'")" 0
check "the clients did work" "$(q -c "SELECT count(*) > 100 FROM public.reenc_outcome")" t
check "the key was rotated many times" "$(q -c "SELECT count(*) > 3 FROM schedphi.data_key WHERE tenant = '$t' AND purpose = 'phi' AND status = 'retired'")" t
while [ "$(q -c "SELECT schedphi.reencrypt(10000)")" != 0 ]; do :; done
q -c "CREATE TABLE public.reenc_ids AS SELECT id FROM schedphi.patient" -c "GRANT SELECT ON public.reenc_ids TO reenc_sched" >/dev/null
check "after re-encrypting to the end, every field is under the active key" "$(q -c "
	SELECT count(*) FROM schedphi.patient p, unnest(ARRAY[given, family, birth_date, mrn]) f
	WHERE schedphi._sealed_key_id(f) <> (SELECT id FROM schedphi.data_key WHERE tenant = '$t' AND purpose = 'phi' AND status = 'active')")" 0
check "patients still open (a sample of 500, seeds and new)" "$(psql -X -q -At -U reenc_sched -d "$db" -c "BEGIN" \
	-c "SELECT schedphi.set_purpose('OPERATIONS')" \
	-c "SELECT count(*) FILTER (WHERE schedphi.patient_record(id)->>'given' IS NULL)
		FROM (SELECT id FROM public.reenc_ids ORDER BY random() LIMIT 500) s" -c "COMMIT" 2>&1 | grep -v '^$' | tail -1)" 0
psql -X -q -c "DROP DATABASE $db" >/dev/null
exit $fail

-- One damaged value must not stop key rotation (issue #12): a sealed value
-- copied by a superuser into another row (what the binding to tenant,
-- table, column and row exists to catch) is skipped, listed, recorded on
-- the ledger and counted, every other value moves on, the skip is not
-- recorded twice, and a repaired value is moved by the next run.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = error;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)',
					 reason => 'synthetic reason one') AS appt1 \gset
SELECT schedphi.book(:'p2', ARRAY[:'dr']::uuid[], '[2026-06-15 15:00Z, 2026-06-15 15:30Z)',
					 reason => 'synthetic reason two') AS appt2 \gset
-- start from nothing under an older key
SELECT schedphi.reencrypt(1000000) >= 0;

-- the damage: p2's family name and appt2's reason replaced by p1's and appt1's
SELECT family::text AS p2_family FROM schedphi.patient WHERE id = :'p2' \gset
UPDATE schedphi.patient SET family = (SELECT family FROM schedphi.patient WHERE id = :'p1') WHERE id = :'p2';
UPDATE schedphi.appointment SET reason = (SELECT reason FROM schedphi.appointment WHERE id = :'appt1') WHERE id = :'appt2';

SELECT schedphi.rotate_key(:'tenant') AS new_key \gset
SELECT count(*) AS sealed_rows FROM (
	SELECT id FROM schedphi.patient WHERE tenant = :'tenant'
	UNION ALL SELECT id FROM schedphi.appointment WHERE tenant = :'tenant' AND (reason IS NOT NULL OR cancel_reason IS NOT NULL)) r \gset
SELECT coalesce(max(id), 0) AS before FROM schedphi.audit_log \gset

SELECT is(tst.error_of('SELECT schedphi.reencrypt(1000)'), '00000', 'reencrypt does not stop at a value that does not open');
SELECT is((SELECT count(*)::int FROM schedphi.reencrypt_skipped WHERE tenant = :'tenant'), 2,
	'the two damaged values are listed');
SELECT is((SELECT string_agg(tbl || '.' || col || '=' || reason, ', ' ORDER BY tbl) FROM schedphi.reencrypt_skipped
		   WHERE tenant = :'tenant'), 'appointment.reason=does not open here, patient.family=does not open here',
	'by table, column and reason');
SELECT ok((SELECT bool_and(row_id IN (:'p2', :'appt2')) FROM schedphi.reencrypt_skipped WHERE tenant = :'tenant'),
	'and row');
SELECT is((SELECT count(*)::int FROM schedphi.patient WHERE tenant = :'tenant'
		   AND (schedphi._sealed_key_id(given) <> :new_key OR schedphi._sealed_key_id(birth_date) <> :new_key)), 0,
	'every other value moved to the new key, the damaged row''s other columns included');
SELECT is((SELECT schedphi._sealed_key_id(family) <> :new_key FROM schedphi.patient WHERE id = :'p2'), true,
	'the damaged value stays under its old key');
SELECT is((SELECT status FROM schedphi.data_keys WHERE tenant = :'tenant' AND purpose = 'phi'
		   AND id = (SELECT key_id FROM schedphi.reencrypt_skipped WHERE row_id = :'p2')), 'retired',
	'and that key stays (retired, not destroyed)');
SELECT is((SELECT string_agg(object || ':' || (detail->>'skipped') || ':' || (patient = :'p2'), ', '
					 ORDER BY object)
		   FROM schedphi.audit_log WHERE id > :before AND action = 'reencrypt' AND detail ? 'skipped'),
	'appointment:reason:true, patient:family:true', 'each skip is on the ledger with its table, column and patient');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :before AND detail::text LIKE '%Synthetic%'), 0,
	'no value in those records');

SELECT coalesce(max(id), 0) AS before2 FROM schedphi.audit_log \gset
SELECT is(schedphi.reencrypt(1000), 0::bigint, 'the next run has nothing left to move');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE id > :before2 AND detail ? 'skipped'), 0,
	'and does not record the same skips again');

-- repaired (the DBA restores the value from a backup): moved by the next run, no longer listed
UPDATE schedphi.patient SET family = :'p2_family'::schedphi.sealed WHERE id = :'p2';
SELECT is(schedphi.reencrypt(1000), 1::bigint, 'a repaired value is moved by the next run');
SELECT is((SELECT schedphi._sealed_key_id(family) FROM schedphi.patient WHERE id = :'p2'), :new_key, 'to the new key');
SELECT is((SELECT string_agg(tbl, ',') FROM schedphi.reencrypt_skipped WHERE tenant = :'tenant'), 'appointment',
	'and is no longer listed');

-- a damaged value that is deleted is forgotten
UPDATE schedphi.appointment SET reason = NULL WHERE id = :'appt2';
SELECT is(schedphi.reencrypt(1000), 0::bigint, 'a damaged value that is gone leaves nothing to do');
SELECT is((SELECT count(*)::int FROM schedphi.reencrypt_skipped WHERE tenant = :'tenant'), 0, 'and the list is empty');

SELECT * FROM finish();
ROLLBACK;

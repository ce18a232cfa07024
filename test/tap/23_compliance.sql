-- Compliance evidence (issue #15): business associates and their BAA
-- dates, training that gates PHI, termination at once, risks, incidents and
-- their deadlines, access reviews that act, recorded evidence, the
-- configuration review and the signed report.  Every change on the ledger.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT tenant AS other FROM tst.clinic('Europe/Berlin') \gset
-- evidence dates are the tenant's (America/New_York), not the server's
CREATE FUNCTION pg_temp.today() RETURNS date LANGUAGE sql STABLE
	AS $$ SELECT (now() AT TIME ZONE 'America/New_York')::date $$;
CREATE ROLE tst_c_admin LOGIN;
CREATE ROLE tst_c_admin2 LOGIN;
CREATE ROLE tst_c_desk LOGIN;
CREATE ROLE tst_c_audit LOGIN;
CREATE ROLE tst_c_doc LOGIN;
CREATE ROLE tst_c_desk2 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_c_admin', 'admin');
SELECT schedphi.add_member(:'tenant', 'tst_c_admin2', 'admin');
SELECT schedphi.add_member(:'tenant', 'tst_c_desk', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_c_audit', 'auditor');
SELECT schedphi.add_member(:'tenant', 'tst_c_doc', 'clinician', :'dr');
SELECT schedphi.add_member(:'tenant', 'tst_c_desk2', 'scheduler');
SELECT coalesce(max(id), 0) AS mark FROM schedphi.audit_log \gset

-- ------------------------------------------------------------ business associates
SET SESSION AUTHORIZATION tst_c_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.add_business_associate(%L, 'X', '{sms}', '2026-01-01', '2027-01-01', 'none')$$,
		  :'tenant')), '42501', 'a scheduler cannot add a business associate');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_admin;
SELECT schedphi.add_business_associate(:'tenant', 'Synthetic SMS Co', '{sms,email}', pg_temp.today() - 400, pg_temp.today(), 'limited') AS ba_today \gset
SELECT schedphi.add_business_associate(:'tenant', 'Synthetic Mail Co', '{email}', pg_temp.today() - 400, pg_temp.today() - 1, 'limited') AS ba_lapsed \gset
SELECT schedphi.add_business_associate(:'tenant', 'Synthetic Host Co', '{hosting}', pg_temp.today() + 1, pg_temp.today() + 700, 'full') AS ba_future \gset
SELECT is(string_agg(tst.sqlstate_of(x), ' ' ORDER BY o), '22023 22023 22023 22023 22023', 'bad services, dates or phi_access: 22023')
FROM unnest(ARRAY[
	format($$SELECT schedphi.add_business_associate(%L, 'X', '{}', '2026-01-01', '2027-01-01', 'none')$$, :'tenant'),
	format($$SELECT schedphi.add_business_associate(%L, 'X', '{SMS!}', '2026-01-01', '2027-01-01', 'none')$$, :'tenant'),
	format($$SELECT schedphi.add_business_associate(%L, 'X', '{sms}', '2026-01-01', '2026-01-01', 'none')$$, :'tenant'),
	format($$SELECT schedphi.add_business_associate(%L, 'X', '{sms}', '2026-01-01', 'infinity', 'none')$$, :'tenant'),
	format($$SELECT schedphi.add_business_associate(%L, 'X', '{sms}', '2026-01-01', '2027-01-01', 'some')$$, :'tenant')
]) WITH ORDINALITY AS u(x, o);
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.verify_business_associate(%L, pg_temp.today() + 1, NULL)$$, :'ba_today')),
		  '22023', 'a verification in the future: 22023');
SELECT schedphi.verify_business_associate(:'ba_today', pg_temp.today() - 10, 'SOC 2 report reviewed (synthetic)');
SELECT schedphi.verify_business_associate(:'ba_today', pg_temp.today() - 200, 'an older one recorded late');
RESET SESSION AUTHORIZATION;
SELECT is(concat_ws(' ', schedphi._baa_current(:'tenant', :'ba_today'), schedphi._baa_current(:'tenant', :'ba_lapsed'),
					schedphi._baa_current(:'tenant', :'ba_future')), 't f f',
		  'a BAA is current through its expiry day, not the day after, nor before it is signed');
SELECT is((SELECT last_verified FROM schedphi.business_associate WHERE id = :'ba_today'), pg_temp.today() - 10,
		  'the last verification is the latest, whatever the order they were recorded in');
SET SESSION AUTHORIZATION tst_c_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.verify_business_associate(%L, pg_temp.today(), NULL)$$, :'ba_today')),
		  '42501', 'a scheduler cannot verify one');
RESET SESSION AUTHORIZATION;

-- ------------------------------------------------------------ training gates PHI
SET SESSION AUTHORIZATION tst_c_admin;
SELECT is(string_agg(tst.sqlstate_of(x), ' ' ORDER BY o), '22023 22023 22023', 'training: completed in the future, expiring before it, no login: 22023')
FROM unnest(ARRAY[
	format($$SELECT schedphi.record_training(%L, 'tst_c_desk', 'HIPAA', pg_temp.today() + 1, pg_temp.today() + 30)$$, :'tenant'),
	format($$SELECT schedphi.record_training(%L, 'tst_c_desk', 'HIPAA', pg_temp.today(), pg_temp.today())$$, :'tenant'),
	format($$SELECT schedphi.record_training(%L, NULL, 'HIPAA', pg_temp.today(), pg_temp.today() + 1)$$, :'tenant')
]) WITH ORDINALITY AS u(x, o);
SELECT schedphi.record_training(:'tenant', 'tst_c_desk2', 'HIPAA privacy and security', pg_temp.today() - 400, pg_temp.today() - 35);
RESET SESSION AUTHORIZATION;
SET LOCAL schedphi.require_training = on;
SET SESSION AUTHORIZATION tst_c_desk;
SELECT schedphi.set_purpose('TREAT');
SELECT is(tst.error_of(format($$SELECT schedphi.patient_record(%L)$$, :'p1')), '42501: permission denied: training rule',
		  'with require_training on, a login without training cannot read PHI');
SELECT is(tst.error_of(format($$SELECT schedphi.register_patient(%L, 'Trai', 'Ningless', '1990-01-01')$$, :'tenant')),
		  '42501: permission denied: training rule', '... nor write it');
SELECT ok((SELECT count(*) FROM schedphi.find_slots(ARRAY[:'dr']::uuid[], '[2026-06-15 13:00Z, 2026-06-15 16:00Z)', '30 minutes')) > 0,
		  '... while scheduling without PHI goes on');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_desk2;
SELECT schedphi.set_purpose('TREAT');
SELECT is(tst.error_of(format($$SELECT schedphi.patient_record(%L)$$, :'p1')), '42501: permission denied: training rule',
		  'expired training does not count');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_admin;
SELECT schedphi.record_training(:'tenant', 'tst_c_desk', 'HIPAA privacy and security', pg_temp.today() - 5, pg_temp.today() + 360);
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_desk;
SELECT schedphi.set_purpose('TREAT');
SELECT is(schedphi.patient_record(:'p1') ->> 'family', 'Synthetica', 'with current training, the read works');
SELECT ok(schedphi.register_patient(:'tenant', 'Trai', 'Ned', '1990-01-01') IS NOT NULL, '... and so does the write');
RESET SESSION AUTHORIZATION;
SET LOCAL schedphi.require_training = off;
SELECT is((SELECT string_agg(login, ', ' ORDER BY id) FROM schedphi.audit_log WHERE id > :mark AND action = 'denied'
		   AND detail::text LIKE '%training rule%'), 'tst_c_desk, tst_c_desk, tst_c_desk2', 'each refusal by the training rule is on the ledger');

-- ------------------------------------------------------------ termination
SET SESSION AUTHORIZATION tst_c_doc;
SELECT schedphi.break_glass(:'p3', 'synthetic emergency for the termination test') AS bg \gset
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_admin;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.terminate_member(%L, 'tst_c_doc', now() + interval '1 day')$$, :'tenant')),
		  '22023', 'a termination in the future: 22023');
SELECT schedphi.terminate_member(:'tenant', 'tst_c_doc', now() - interval '10 minutes');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.member WHERE tenant = :'tenant' AND login = 'tst_c_doc'), 0,
		  'terminate_member: every membership of the login in the tenant ends');
SELECT ok((SELECT expires <= clock_timestamp() FROM schedphi.break_glass_grant WHERE id = :'bg'), '... and its open break-glass grant');
SELECT is((SELECT memberships || ' ' || grants FROM schedphi.termination WHERE tenant = :'tenant' AND login = 'tst_c_doc'), '1 1',
		  '... recorded with what it ended');
SET SESSION AUTHORIZATION tst_c_doc;
SELECT is(tst.sqlstate_of($$SELECT count(*) FROM schedphi.appointments$$ || format(' WHERE tenant = %L', :'tenant')) || ' '
		  || (SELECT count(*) FROM schedphi.appointments WHERE tenant = :'tenant'), '00000 0',
		  'the terminated login sees nothing more');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.fhir_schedule(%L)$$, :'dr')), '42501', '... and is refused');
RESET SESSION AUTHORIZATION;

-- ------------------------------------------------------------ risks, incidents, evidence
SET SESSION AUTHORIZATION tst_c_admin;
SELECT schedphi.add_risk(:'tenant', 'Shared front-desk workstation', 'physical', 3, 4, 'tst_c_admin', pg_temp.today() - 1) AS risk \gset
SELECT is(string_agg(tst.sqlstate_of(x), ' ' ORDER BY o), '22023 22023 22023 22023', 'a risk: bad safeguard, scales, owner; accepting without a note')
FROM unnest(ARRAY[
	format($$SELECT schedphi.add_risk(%L, 'R', 'magical', 3, 3, 'x', pg_temp.today())$$, :'tenant'),
	format($$SELECT schedphi.add_risk(%L, 'R', 'technical', 6, 3, 'x', pg_temp.today())$$, :'tenant'),
	format($$SELECT schedphi.add_risk(%L, 'R', 'technical', 3, 3, NULL, pg_temp.today())$$, :'tenant'),
	format($$SELECT schedphi.update_risk(%L, 'accepted', NULL)$$, :'risk')
]) WITH ORDINALITY AS u(x, o);
SELECT schedphi.update_risk(:'risk', 'mitigating', 'screen locks ordered');
SELECT schedphi.record_incident(:'tenant', 'breach', '2026-11-01 10:00Z', 'Misdirected letter (synthetic)', 12) AS inc_small \gset
SELECT schedphi.record_incident(:'tenant', 'breach', '2026-11-01 10:00Z', 'Stolen laptop (synthetic)', 600) AS inc_big \gset
SELECT schedphi.record_incident(:'tenant', 'suspected_breach', '2026-11-01 10:00Z', 'Unknown count (synthetic)') AS inc_unknown \gset
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.record_evidence(%L, 'tarot_reading', pg_temp.today())$$, :'tenant')), '22023',
		  'evidence of an unknown kind: 22023');
SELECT schedphi.record_evidence(:'tenant', 'penetration_test', pg_temp.today() - 30, 'synthetic external test');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(concat_ws(' ', individuals_due, hhs_due, coalesce(media_due::text, '-')), ' | ' ORDER BY patients_affected NULLS LAST)
		   FROM schedphi.incident WHERE tenant = :'tenant'),
		  '2026-12-31 2027-03-01 - | 2026-12-31 2026-12-31 2026-12-31 | 2026-12-31 2026-12-31 2026-12-31',
		  'deadlines: individuals in 60 days; under 500, HHS in the yearly log (60 days after the year); 500 or more (or unknown), HHS and the media in 60 days');
SELECT schedphi.record_incident(:'other', 'breach', '2026-10-31 23:30Z', 'Found after midnight in Berlin (synthetic)', 2) AS inc_berlin \gset
SELECT is((SELECT individuals_due FROM schedphi.incident WHERE tenant = :'other' AND id = :'inc_berlin'), '2026-12-31'::date,
		  'days are counted from the date of discovery in the tenant''s zone (Berlin''s 1 November, not UTC''s 31 October)');
SELECT is((SELECT string_agg(status, ',' ORDER BY at) FROM schedphi.risk_event WHERE risk = :'risk'), 'open,mitigating',
		  'a risk keeps its status history');

-- ------------------------------------------------------------ access review
SET SESSION AUTHORIZATION tst_c_desk;
SELECT schedphi.set_purpose('TREAT');
SELECT schedphi.patient_record(:'p2') IS NOT NULL AS read_one;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_admin;
SELECT schedphi.start_access_review(:'tenant') AS review \gset
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(login || ':' || role, ' ' ORDER BY login, role) FROM schedphi.access_review_item WHERE review = :'review'),
		  'tst_c_admin:admin tst_c_admin2:admin tst_c_audit:auditor tst_c_desk:scheduler tst_c_desk2:scheduler',
		  'an access review: one item per membership (the terminated login has none)');
SELECT ok((SELECT phi_accesses FROM schedphi.access_review_item WHERE review = :'review' AND login = 'tst_c_desk') >= 2,
		  '... each with the member''s PHI accesses from the ledger');
SET SESSION AUTHORIZATION tst_c_admin;
SELECT is(tst.error_of(format($$SELECT schedphi.review_access(%L, 'tst_c_admin', 'keep')$$, :'review')),
		  '42501: permission denied: review rule', 'no one decides on their own access');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.review_access(%L, 'tst_c_nobody', 'keep')$$, :'review')), '22023',
		  'a login without an item: 22023');
SELECT schedphi.review_access(:'review', 'tst_c_admin2', 'keep');
SELECT schedphi.review_access(:'review', 'tst_c_desk', 'revoke', 'left the front desk (synthetic)');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*)::int FROM schedphi.member WHERE tenant = :'tenant' AND login = 'tst_c_desk'), 0,
		  'revoke takes effect at once: the membership is gone');
SET SESSION AUTHORIZATION tst_c_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.fhir_schedule(%L)$$, :'dr')), '42501', '... and the login is refused');
RESET SESSION AUTHORIZATION;

-- ------------------------------------------------------------ configuration review
SET SESSION AUTHORIZATION tst_c_doc;
SELECT is(tst.sqlstate_of($$SELECT * FROM schedphi.check_config()$$), '42501', 'check_config: not for a login with no admin or auditor role');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_audit;
CREATE TEMP TABLE cfg AS SELECT * FROM schedphi.check_config();
RESET SESSION AUTHORIZATION;
SELECT cmp_ok((SELECT count(*)::int FROM cfg), '>=', 15, 'check_config: at least 15 checks');
SELECT is((SELECT count(*)::int FROM cfg WHERE status NOT IN ('pass', 'fail', 'warn', 'not_readable') OR reference IS NULL OR detail IS NULL), 0,
		  '... each pass, fail, warn or not_readable, with its detail and its CIS item or HIPAA section');
SELECT is((SELECT status || ': ' || detail FROM cfg WHERE check_id = 'hba_methods'),
		  'not_readable: pg_hba_file_rules needs: GRANT SELECT ON pg_catalog.pg_hba_file_rules TO tst_c_audit; GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO tst_c_audit',
		  'what the caller cannot read is not_readable, with the grant that would make it readable');
SELECT is((SELECT status FROM cfg WHERE check_id = 'require_training'), 'warn', 'require_training off is a warning');
SELECT is((SELECT status FROM schedphi.check_config() WHERE check_id = 'hba_methods'), 'fail',
		  'a superuser reads pg_hba_file_rules: the test cluster''s trust lines fail');

-- ------------------------------------------------------------ the report
SET SESSION AUTHORIZATION tst_c_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.compliance_report(%L)$$, :'tenant')), '42501', 'a scheduler may not read the report');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_audit;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.compliance_report(%L, 'pdf')$$, :'tenant')), '22023', 'an unknown format: 22023');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.compliance_report(%L)$$, :'other')), '42501', 'another tenant''s report: 42501');
SELECT schedphi.compliance_report(:'tenant')::jsonb AS rj \gset
SELECT schedphi.compliance_report(:'tenant', 'markdown') AS rmd \gset
SELECT schedphi.compliance_report(:'tenant', 'html') AS rhtml \gset
RESET SESSION AUTHORIZATION;
SELECT is((SELECT string_agg(e->>'id', ',' ORDER BY o) FROM jsonb_array_elements(:'rj'::jsonb -> 'safeguards') WITH ORDINALITY x(e, o)),
		  'access_control,encryption,audit,break_glass,training,termination,business_associates,risk_management,incidents,access_review,recorded_evidence,configuration',
		  'the report: every safeguard with its live evidence');
SELECT ok(:'rj'::jsonb -> 'overdue' @> '[{"item": "business associate Synthetic Mail Co: BAA expired"}]'
		  AND :'rj'::jsonb -> 'overdue' @> '[{"item": "risk: Shared front-desk workstation"}]',
		  '... what is overdue first: the lapsed BAA, the risk past its due date');
SELECT ok(:'rj'::jsonb #> '{safeguards,5,evidence,0}' ? 'phi_accesses_after_end', '... terminations with the PHI accesses after them');
SELECT is(length(:'rj'::jsonb #>> '{signature,value}'), 64, '... signed with the audit key');
SELECT is((:'rj'::jsonb #>> '{signature,sha256}'), encode(sha256(convert_to((:'rj'::jsonb - 'signature')::text, 'UTF8')), 'hex'),
		  '... over the SHA-256 of the report');
SELECT ok(:'rmd' LIKE '# Compliance evidence: %' AND :'rmd' LIKE '%## Overdue%' AND :'rmd' ~ E'\nSigned: sha256 [0-9a-f]{64}, ledger seq',
		  'Markdown, signed');
SELECT ok(:'rhtml' LIKE '<!DOCTYPE html>%</html>' || E'\n' AND :'rhtml' !~* '<(script|link|img|iframe)|src=|url\(',
		  'HTML: one page, no external asset, no script');
SELECT ok((:'rmd' || :'rhtml' || :'rj') !~* 'Synthetica|Testa|SYN-000|555 0100', 'no PHI in the report');
SET SESSION AUTHORIZATION tst_c_audit;
SELECT is(ARRAY[schedphi.verify_report(:'tenant', :'rj'), schedphi.verify_report(:'tenant', :'rmd'),
				schedphi.verify_report(:'tenant', :'rhtml')], '{t,t,t}', 'verify_report: a report in each format verifies');
SELECT is(ARRAY[schedphi.verify_report(:'tenant', replace(:'rmd', '## Overdue', '## Overdu3')),
				schedphi.verify_report(:'tenant', replace(:'rhtml', 'BAA expired', 'BAA current')),
				schedphi.verify_report(:'tenant', (:'rj'::jsonb || '{"overdue": []}')::text),
				schedphi.verify_report(:'tenant', regexp_replace(:'rmd', 'signature [0-9a-f]{64}\n$', 'signature ' || repeat('0', 64) || E'\n'))],
		  '{f,f,f,f}', '... an altered one does not (text, JSON, signature)');
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.verify_report(%L, 'a report, we promise')$$, :'tenant')), '22023',
		  '... text without a signature: 22023');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_c_desk;
SELECT is(tst.sqlstate_of(format($$SELECT schedphi.verify_report(%L, %L)$$, :'tenant', :'rmd')), '42501',
		  '... and a scheduler may not check one');
RESET SESSION AUTHORIZATION;
SELECT is(schedphi.verify_report(:'other', :'rmd'), false, '... nor does a report as another tenant''s');

-- ------------------------------------------------------------ the ledger
SELECT is((SELECT string_agg(DISTINCT object, ',') FROM schedphi.audit_log WHERE id > :mark AND action = 'compliance'),
		  'access_review,business_associate,evidence,incident,risk,termination,training', 'every change of the evidence is on the ledger');

SELECT * FROM finish();
ROLLBACK;

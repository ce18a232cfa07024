-- Break-glass: a clinician reads a patient who is not theirs, an
-- administrator reads any patient, only under an active, time-boxed grant
-- with a reason and EMERGENCY as the purpose of use; someone else reviews.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
SELECT schedphi.book(:'p1', ARRAY[:'dr']::uuid[], '[2026-06-15 14:00Z, 2026-06-15 14:30Z)') AS a1 \gset
CREATE ROLE tst_doc LOGIN;
CREATE ROLE tst_admin LOGIN;
CREATE ROLE tst_auditor LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_doc', 'clinician', :'dr');
SELECT schedphi.add_member(:'tenant', 'tst_admin', 'admin');
SELECT schedphi.add_member(:'tenant', 'tst_auditor', 'auditor');

SET SESSION AUTHORIZATION tst_doc;
SELECT schedphi.set_purpose('TREAT');
SELECT is(schedphi.patient_record(:'p1')->>'given', 'Testa', 'a clinician reads their own patient');
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p2'), '42501', 'permission denied: own patients rule',
	'but not another patient');
SELECT throws_ok($$SELECT schedphi.set_purpose('EMERGENCY')$$, '42501', 'permission denied: break-glass rule',
	'EMERGENCY needs a grant');
SELECT throws_ok(format($$SELECT schedphi.break_glass(%L, 'urgent')$$, :'p2'), '22023',
	'reason must say why, in 10 to 2000 characters', 'a grant needs a real reason');
SELECT throws_ok(format($$SELECT schedphi.break_glass(%L, 'synthetic collapse in the waiting room', 0)$$, :'p2'), '22023',
	'minutes must be between 1 and 480', 'a grant is time-boxed');
SELECT schedphi.break_glass(:'p2', 'synthetic collapse in the waiting room', 30) AS g1 \gset
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p2'), '42501', 'permission denied: own patients rule',
	'a grant alone is not enough: the purpose must be EMERGENCY');
SELECT lives_ok($$SELECT schedphi.set_purpose('EMERGENCY')$$, 'with a grant, EMERGENCY is accepted');
SELECT is(schedphi.patient_record(:'p2')->>'family', 'Fictional', 'and the clinician reads the patient under the grant');
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p3'), '42501', NULL, 'the grant covers one patient only');
SELECT throws_ok(format($$SELECT schedphi.review_break_glass(%L, 'justified', 'I was right')$$, :'g1'), '42501',
	'permission denied: role rule', 'a clinician reviews no grant');
RESET SESSION AUTHORIZATION;
SELECT ok((SELECT reason::text LIKE 'spv1:%' FROM schedphi.break_glass_grant WHERE id = :'g1'), 'the reason is stored sealed');

-- An administrator reads no PHI but under break-glass.
SET SESSION AUTHORIZATION tst_admin;
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p1'), '42501', 'permission denied: break-glass rule',
	'an administrator reads no patient without a grant');
SELECT schedphi.break_glass(:'p1', 'synthetic identity check for the police', 15) AS g2 \gset
SELECT is(schedphi.patient_record(:'p1')->>'mrn', 'SYN-0001', 'with a grant and EMERGENCY, the administrator reads it');
SELECT throws_ok(format($$SELECT schedphi.review_break_glass(%L, 'justified', 'I was right')$$, :'g2'), '42501',
	'permission denied: separation of duties rule', 'nobody reviews their own grant');
SELECT is((SELECT count(*)::int FROM schedphi.break_glass_pending), 2, 'administrators see the grants awaiting review');
SELECT lives_ok(format($$SELECT schedphi.review_break_glass(%L, 'justified', 'synthetic chart confirms the collapse')$$, :'g1'),
	'another person reviews a grant');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION tst_auditor;
SELECT is((SELECT count(*)::int FROM schedphi.break_glass_pending), 1, 'auditors see what is left to review');
SELECT throws_ok(format($$SELECT schedphi.review_break_glass(%L, 'justified', 'again')$$, :'g1'), '55000',
	'cannot review a grant already reviewed as justified', 'a grant is reviewed once');
SELECT throws_ok(format($$SELECT schedphi.review_break_glass(%L, 'fine', 'x')$$, :'g2'), '22023',
	'outcome must be justified or unjustified', 'the outcome is justified or unjustified');
SELECT lives_ok(format($$SELECT schedphi.review_break_glass(%L, 'unjustified', 'no police request on file')$$, :'g2'),
	'an auditor reviews too');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_doc;
SELECT is((SELECT count(*)::int FROM schedphi.break_glass_pending), 0, 'a clinician sees no review queue');
RESET SESSION AUTHORIZATION;

-- Grants expire by themselves.
UPDATE schedphi.break_glass_grant SET starts = now() - interval '2 hours', expires = now() - interval '1 hour'
WHERE id = :'g1';
SET SESSION AUTHORIZATION tst_doc;
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p2'), '42501', 'permission denied: own patients rule',
	'an expired grant opens nothing');
RESET SESSION AUTHORIZATION;
SELECT throws_ok(format($$SELECT schedphi.break_glass(%L, 'superuser curiosity is no emergency')$$, :'p1'), '42501', NULL,
	'a superuser cannot break glass (it is no member)');

SELECT * FROM finish();
ROLLBACK;

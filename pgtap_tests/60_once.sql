-- pgtap_tests/60_once.sql: run-once markers: once_begin, once_finish, once_abort,
-- once_resolve.
begin;
\ir _fixtures.psql
select plan(92);

-- once_begin -> run, once_finish stores the result, once_begin -> done.
select pgq_test.fresh_queue('once') as q \gset
select job_id, lease_token from pgq_test.running_job('charge', null, :'q') \gset

select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :job_id, :'lease_token', 'charge-card'),
    $$values ('run'::text, null::jsonb)$$,
    'the first once_begin for a key answers run');
select row_eq(format('select m.status, m.lease_token, m.attempt, m.result, m.finished_at from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :job_id, 'charge-card'),
    row('started'::text, :'lease_token'::uuid, 1, null::jsonb, null::timestamptz),
    'once_begin records a started marker with the lease and attempt');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :job_id, :'lease_token', 'charge-card'),
    $$values ('unknown'::text, null::jsonb)$$,
    'a second once_begin before once_finish answers unknown, never run again');
select lives_ok(format('select pgq.once_finish(%s, %L, %L, %L)',
                       :job_id, :'lease_token', 'charge-card', '{"charge": "ch_1"}'),
    'once_finish records the effect''s result');
select row_eq(format('select m.status, m.result, m.finished_at from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :job_id, 'charge-card'),
    row('done'::text, '{"charge": "ch_1"}'::jsonb, now()),
    'the marker is done with its result');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :job_id, :'lease_token', 'charge-card'),
    $$values ('done'::text, '{"charge": "ch_1"}'::jsonb)$$,
    'once_begin after once_finish answers done with the stored result');
select lives_ok(format('select pgq.once_finish(%s, %L, %L, %L)',
                       :job_id, :'lease_token', 'charge-card', '{"charge": "ch_other"}'),
    'repeating once_finish with the same token is accepted');
select is((select m.result from pgq.once_markers m where m.job_id = :job_id and m.effect_key = 'charge-card'),
    '{"charge": "ch_1"}'::jsonb, 'the repeated once_finish did not overwrite the result');
select results_eq(format('select b.status from pgq.once_begin(%s, %L, %L) b',
                         :job_id, :'lease_token', 'send-receipt'),
    array['run'], 'another effect key of the same job has its own marker');
select lives_ok(format('select pgq.once_finish(%s, %L, %L)', :job_id, :'lease_token', 'send-receipt'),
    'once_finish without a result records the effect as done');

-- The marker survives a retry and a new worker.
select pgq.fail(:job_id, :'lease_token', 'crashed after charging') as failed_state \gset
select pgq_test.make_due(:job_id);
select c.lease_token as token2, c.attempt as attempt2 from pgq.claim('pgtap-worker-2', array[:'q']) c \gset
select is(:attempt2, 2, 'the retry runs as attempt 2 with a new worker');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :job_id, :'token2', 'charge-card'),
    $$values ('done'::text, '{"charge": "ch_1"}'::jsonb)$$,
    'after a retry once_begin answers done with the stored result');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :job_id, :'token2', 'send-receipt'),
    $$values ('done'::text, null::jsonb)$$,
    'an effect finished without a result is done with a NULL result');
select row_eq(format('select m.status, m.lease_token, m.attempt from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :job_id, 'charge-card'),
    row('done'::text, :'lease_token'::uuid, 1),
    'a done marker still names the attempt that ran the effect');

-- Begun and never finished, then a new attempt: the outcome is unknown.
select job_id as u_id, lease_token as u_token from pgq_test.running_job('charge') \gset
select b.status as u_status from pgq.once_begin(:u_id, :'u_token', 'charge-card') b \gset
select pgq_test.backdate_lease(:u_id);
select queue as u_queue from pgq.jobs where id = :u_id \gset
-- This claim fails the expired attempt (it is retried later) and takes nothing.
select count(*) as expired_claimed from pgq.claim('pgtap-worker-2', array[:'u_queue']) c \gset
select pgq_test.make_due(:u_id);
select c.lease_token as u_token2, c.attempt as u_attempt2
  from pgq.claim('pgtap-worker-2', array[:'u_queue']) c \gset
select is(:u_attempt2, 2, 'after the lease expired the job is claimed again as attempt 2');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :u_id, :'u_token2', 'charge-card'),
    $$values ('unknown'::text, null::jsonb)$$,
    'an effect begun by a dead attempt and never finished answers unknown');
select row_eq(format('select m.status, m.lease_token, m.attempt from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :u_id, 'charge-card'),
    row('started'::text, :'u_token'::uuid, 1),
    'the unknown marker is left as the first attempt began it');
select throws_ok(format('select pgq.once_finish(%s, %L, %L)', :u_id, :'u_token2', 'charge-card'),
    'PQ102', null, 'the new attempt cannot finish a marker another attempt began');
select throws_ok(format('select pgq.once_abort(%s, %L, %L)', :u_id, :'u_token2', 'charge-card'),
    'PQ102', null, 'the new attempt cannot abort a marker another attempt began');
select row_eq(format('select m.status, m.lease_token from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :u_id, 'charge-card'),
    row('started'::text, :'u_token'::uuid),
    'the refused calls left the marker unknown');

-- once_finish is accepted from the beginning token after its lease expired (the
-- effect did run); that token may not begin anything any more.
select job_id as e_id, lease_token as e_token from pgq_test.running_job('charge') \gset
select b.status as e_status from pgq.once_begin(:e_id, :'e_token', 'charge-card') b \gset
select pgq_test.backdate_lease(:e_id);
select lives_ok(format('select pgq.once_finish(%s, %L, %L, %L)', :e_id, :'e_token', 'charge-card', '{"ok": true}'),
    'once_finish from the beginning token is accepted after its lease expired');
select row_eq(format('select m.status, m.result from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :e_id, 'charge-card'),
    row('done'::text, '{"ok": true}'::jsonb),
    'the late once_finish recorded the result');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', :e_id, :'e_token', 'refund'),
    'PQ101', null, 'once_begin with an expired lease is refused with lease_lost');
select is_empty(format('select from pgq.once_markers m where m.job_id = %s and m.effect_key = %L', :e_id, 'refund'),
    'the refused once_begin recorded no marker');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', :job_id, :'lease_token', 'refund'),
    'PQ101', null, 'once_begin with a token replaced by a retry is refused with lease_lost');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', :job_id, gen_random_uuid(), 'refund'),
    'PQ101', null, 'once_begin with a random token is refused with lease_lost');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', -1, :'token2', 'refund'),
    'PQ101', null, 'once_begin for an unknown job is refused with lease_lost');
select is_empty(format('select from pgq.once_markers m where m.job_id in (%s, -1) and m.effect_key = %L',
                       :job_id, 'refund'),
    'the refused once_begin calls recorded no marker');

-- once_abort withdraws a begun marker: the next attempt runs the effect.
select job_id as a_id, lease_token as a_token from pgq_test.running_job('charge') \gset
select b.status as a_status from pgq.once_begin(:a_id, :'a_token', 'charge-card') b \gset
select lives_ok(format('select pgq.once_abort(%s, %L, %L)', :a_id, :'a_token', 'charge-card'),
    'once_abort withdraws the marker its lease began');
select is_empty(format('select from pgq.once_markers m where m.job_id = %s', :a_id),
    'the aborted marker is gone');
select queue as a_queue from pgq.jobs where id = :a_id \gset
select pgq.fail(:a_id, :'a_token', 'the charge raised') as a_failed \gset
select pgq_test.make_due(:a_id);
select c.lease_token as a_token2 from pgq.claim('pgtap-worker', array[:'a_queue']) c \gset
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :a_id, :'a_token2', 'charge-card'),
    $$values ('run'::text, null::jsonb)$$,
    'after once_abort the next attempt gets run');
select throws_ok(format('select pgq.once_abort(%s, %L, %L)', :a_id, :'a_token', 'charge-card'),
    'PQ102', null, 'once_abort with an earlier attempt''s token is refused with marker_not_begun');
select lives_ok(format('select pgq.once_finish(%s, %L, %L)', :a_id, :'a_token2', 'charge-card'),
    'the new attempt finishes its marker');
select throws_ok(format('select pgq.once_abort(%s, %L, %L)', :a_id, :'a_token2', 'charge-card'),
    'PQ102', null, 'once_abort of a finished marker is refused with marker_not_begun');
select is((select m.status from pgq.once_markers m where m.job_id = :a_id and m.effect_key = 'charge-card'),
    'done', 'the refused once_abort left the marker done');

-- once_finish / once_abort without a begun marker.
select job_id as n_id, lease_token as n_token from pgq_test.running_job('charge') \gset
select throws_ok(format('select pgq.once_finish(%s, %L, %L)', :n_id, :'n_token', 'never-begun'),
    'PQ102', null, 'once_finish without once_begin is refused with marker_not_begun');
select throws_ok(format('select pgq.once_abort(%s, %L, %L)', :n_id, :'n_token', 'never-begun'),
    'PQ102', null, 'once_abort without once_begin is refused with marker_not_begun');
select is_empty(format('select from pgq.once_markers m where m.job_id = %s', :n_id),
    'the refused calls created no marker');
select b.status as n_status from pgq.once_begin(:n_id, :'n_token', 'charge-card') b \gset
select throws_ok(format('select pgq.once_finish(%s, %L, %L)', :n_id, gen_random_uuid(), 'charge-card'),
    'PQ102', null, 'once_finish with another token is refused with marker_not_begun');
select throws_ok(format('select pgq.once_abort(%s, %L, %L)', :n_id, gen_random_uuid(), 'charge-card'),
    'PQ102', null, 'once_abort with another token is refused with marker_not_begun');
select throws_ok(format('select pgq.once_finish(%s, %L, %L)', :n_id, :'n_token', 'other-key'),
    'PQ102', null, 'once_finish for a key this lease did not begin is refused with marker_not_begun');
select row_eq(format('select m.status, m.lease_token, m.result from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :n_id, 'charge-card'),
    row('started'::text, :'n_token'::uuid, null::jsonb),
    'the refused calls left the begun marker as it was');

-- Bad effect keys.
select throws_ok(format('select * from pgq.once_begin(%s, %L, null)', :n_id, :'n_token'),
    'PQ001', null, 'once_begin with a NULL effect_key is refused with invalid_argument');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', :n_id, :'n_token', ''),
    'PQ001', null, 'once_begin with an empty effect_key is refused with invalid_argument');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', :n_id, :'n_token', repeat('k', 201)),
    'PQ001', null, 'once_begin with an effect_key over 200 characters is refused with invalid_argument');
select is((select count(*)::integer from pgq.once_markers m where m.job_id = :n_id), 1,
    'the refused once_begin calls recorded no marker');
select results_eq(format('select b.status from pgq.once_begin(%s, %L, %L) b', :n_id, :'n_token', repeat('k', 200)),
    array['run'], 'an effect_key of 200 characters is accepted');

-- once_resolve: the operator settles an unknown outcome.
select lives_ok(format('select pgq.once_resolve(%s, %L, true, %L)', :u_id, 'charge-card', '{"found": "ch_9"}'),
    'once_resolve with ran => true settles an unknown marker');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :u_id, :'u_token2', 'charge-card'),
    $$values ('done'::text, '{"found": "ch_9"}'::jsonb)$$,
    'once_begin after resolving ran => true answers done with the given result');
select throws_ok(format('select pgq.once_resolve(%s, %L, true)', :u_id, 'charge-card'),
    'PQ204', null, 'once_resolve of a done marker is refused with marker_not_found');
select row_eq(format('select m.status, m.result from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :u_id, 'charge-card'),
    row('done'::text, '{"found": "ch_9"}'::jsonb),
    'the refused once_resolve left the done marker and its result');

select lives_ok(format('select pgq.once_resolve(%s, %L, false)', :n_id, 'charge-card'),
    'once_resolve with ran => false removes an unknown marker');
select is_empty(format('select from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                       :n_id, 'charge-card'),
    'the marker resolved as not run is gone');
select results_eq(format('select b.status from pgq.once_begin(%s, %L, %L) b', :n_id, :'n_token', 'charge-card'),
    array['run'], 'once_begin after resolving ran => false answers run');
select throws_ok(format('select pgq.once_resolve(%s, %L, false)', :n_id, 'no-such-key'),
    'PQ204', null, 'once_resolve of a missing marker is refused with marker_not_found');
select throws_ok(format('select pgq.once_resolve(%s, %L, true)', -1, 'charge-card'),
    'PQ204', null, 'once_resolve for an unknown job is refused with marker_not_found');
select throws_ok(format('select pgq.once_resolve(%s, %L, false)', :job_id, 'charge-card'),
    'PQ204', null, 'once_resolve with ran => false of a done marker is refused with marker_not_found');
select throws_ok(format('select pgq.once_resolve(%s, %L, null)', :n_id, 'charge-card'),
    'PQ001', null, 'once_resolve with a NULL ran is refused with invalid_argument');
select row_eq(format('select m.status, m.lease_token from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :n_id, 'charge-card'),
    row('started'::text, :'n_token'::uuid),
    'the refused once_resolve left the begun marker');
select is((select m.status from pgq.once_markers m where m.job_id = :job_id and m.effect_key = 'charge-card'),
    'done', 'the refused once_resolve left the done marker');

-- Request ids settle a lost answer: a resend of the same once_begin (its answer
-- lost with the connection) gets run again; a new request does not.
select job_id as q_id, lease_token as q_token, queue as q_queue from pgq_test.running_job('charge') \gset
select gen_random_uuid() as req1, gen_random_uuid() as req2 \gset
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token', 'charge-card', :'req1'),
    $$values ('run'::text, null::jsonb)$$, 'once_begin with a request id answers run');
select is((select m.request_id from pgq.once_markers m where m.job_id = :q_id and m.effect_key = 'charge-card'),
    :'req1'::uuid, 'the marker keeps the request that recorded it');
select pgq_test.state_digest() as before_resend \gset
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token', 'charge-card', :'req1'),
    $$values ('run'::text, null::jsonb)$$,
    'a resend of the same request (same lease, same request id) answers run again');
select is(pgq_test.state_digest(), :'before_resend', 'the resend changed nothing');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token', 'charge-card', :'req2'),
    $$values ('unknown'::text, null::jsonb)$$,
    'a new request of the same key within the attempt is not run: unknown');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L) b',
                         :q_id, :'q_token', 'charge-card'),
    $$values ('unknown'::text, null::jsonb)$$,
    'a request without an id for a begun marker is not run: unknown');
select is(pgq_test.state_digest(), :'before_resend', 'the refused requests changed nothing');
select lives_ok(format('select pgq.once_finish(%s, %L, %L, %L)', :q_id, :'q_token', 'charge-card', '{"charge": "ch_9"}'),
    'once_finish of the requested marker is accepted');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token', 'charge-card', :'req1'),
    $$values ('done'::text, '{"charge": "ch_9"}'::jsonb)$$,
    'after once_finish even a resend of the first request answers done with the stored result');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token', 'charge-card', :'req2'),
    $$values ('done'::text, '{"charge": "ch_9"}'::jsonb)$$,
    'a new request after once_finish answers done with the stored result');

-- An earlier attempt's unfinished marker stays unknown, even to its own request id.
select b.status as q2_status from pgq.once_begin(:q_id, :'q_token', 'refund', :'req1') b \gset
select pgq.fail(:q_id, :'q_token', 'crashed while refunding') as q_failed \gset
select pgq_test.make_due(:q_id);
select c.lease_token as q_token2 from pgq.claim('pgtap-worker-2', array[:'q_queue']) c \gset
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token2', 'refund', :'req1'),
    $$values ('unknown'::text, null::jsonb)$$,
    'an earlier attempt''s unfinished marker is unknown to the next attempt, whatever its request id');
select results_eq(format('select b.status, b.result from pgq.once_begin(%s, %L, %L, %L) b',
                         :q_id, :'q_token2', 'refund', gen_random_uuid()),
    $$values ('unknown'::text, null::jsonb)$$,
    'an earlier attempt''s unfinished marker is unknown to a fresh request');
select row_eq(format('select m.status, m.lease_token, m.request_id from pgq.once_markers m where m.job_id = %s and m.effect_key = %L',
                     :q_id, 'refund'),
    row('started'::text, :'q_token'::uuid, :'req1'::uuid), 'the unknown marker is left as its attempt began it');
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L, %L)', :q_id, :'q_token', 'refund', :'req1'),
    'PQ101', null, 'the earlier attempt''s resend is refused with lease_lost');

-- After a cancel, no effect may start.
select job_id as k_id, lease_token as k_token from pgq_test.running_job('charge') \gset
select pgq.cancel(:k_id) as k_state \gset
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L, %L)', :k_id, :'k_token', 'charge-card', gen_random_uuid()),
    'PQ101', format('job %s: lease lost: the job is cancelled', :k_id),
    'once_begin of a cancelled job is refused with lease_lost, saying it is cancelled');
select is_empty(format('select from pgq.once_markers m where m.job_id = %s', :k_id),
    'the refused once_begin recorded no marker');

-- Privileges: workers and admins use markers; only admins resolve them.
select job_id as p_id, lease_token as p_token from pgq_test.running_job('charge') \gset
set local role pgq_producer;
select throws_ok(format('select * from pgq.once_begin(%s, %L, %L)', :p_id, :'p_token', 'k'),
    '42501', null, 'pgq_producer may not call once_begin');
select throws_ok(format('select pgq.once_finish(%s, %L, %L)', :p_id, :'p_token', 'k'),
    '42501', null, 'pgq_producer may not call once_finish');
select throws_ok(format('select pgq.once_abort(%s, %L, %L)', :p_id, :'p_token', 'k'),
    '42501', null, 'pgq_producer may not call once_abort');
select throws_ok(format('select pgq.once_resolve(%s, %L, false)', :n_id, 'charge-card'),
    '42501', null, 'pgq_producer may not call once_resolve');
reset role;
set local role pgq_worker;
select throws_ok(format('select pgq.once_resolve(%s, %L, false)', :n_id, 'charge-card'),
    '42501', null, 'pgq_worker may not call once_resolve');
reset role;
select results_eq(
    format('select m.job_id, m.effect_key, m.status from pgq.once_markers m where m.job_id = %s or (m.job_id = %s and m.effect_key = %L)',
           :p_id, :n_id, 'charge-card'),
    format('values (%s::bigint, %L::text, %L::text)', :n_id, 'charge-card', 'started'),
    'the refused calls changed no marker');
set local role pgq_worker;
select lives_ok(format('select * from pgq.once_begin(%s, %L, %L)', :p_id, :'p_token', 'w1'),
    'pgq_worker may call once_begin');
select lives_ok(format('select pgq.once_finish(%s, %L, %L)', :p_id, :'p_token', 'w1'),
    'pgq_worker may call once_finish');
select lives_ok(format('select * from pgq.once_begin(%s, %L, %L)', :p_id, :'p_token', 'w2'),
    'pgq_worker may begin another marker');
select lives_ok(format('select pgq.once_abort(%s, %L, %L)', :p_id, :'p_token', 'w2'),
    'pgq_worker may call once_abort');
reset role;
set local role pgq_admin;
select lives_ok(format('select * from pgq.once_begin(%s, %L, %L)', :p_id, :'p_token', 'a1'),
    'pgq_admin may call once_begin');
select lives_ok(format('select pgq.once_finish(%s, %L, %L)', :p_id, :'p_token', 'a1'),
    'pgq_admin may call once_finish');
select lives_ok(format('select * from pgq.once_begin(%s, %L, %L)', :p_id, :'p_token', 'a2'),
    'pgq_admin may begin another marker');
select lives_ok(format('select pgq.once_abort(%s, %L, %L)', :p_id, :'p_token', 'a2'),
    'pgq_admin may call once_abort');
select lives_ok(format('select pgq.once_resolve(%s, %L, false)', :n_id, 'charge-card'),
    'pgq_admin may call once_resolve');
reset role;
select results_eq(
    format('select m.job_id, m.effect_key, m.status from pgq.once_markers m where m.job_id = %s or (m.job_id = %s and m.effect_key = %L) order by m.effect_key',
           :p_id, :n_id, 'charge-card'),
    format('values (%s::bigint, %L::text, %L::text), (%s, %L, %L)', :p_id, 'a1', 'done', :p_id, 'w1', 'done'),
    'the worker''s and admin''s calls took effect');

select * from finish();
rollback;

-- pgtap_tests/40_complete.sql: pgq.complete and pgq.complete_many.
begin;
\ir _fixtures.psql
select plan(71);

-- complete: the holder marks its job succeeded.
select job_id, lease_token from pgq_test.running_job('mail') \gset

select lives_ok(format('select pgq.complete(%s, %L)', :job_id, :'lease_token'),
    'the lease holder can complete its job');
select row_eq(format('select j.state, j.finished_at, j.lease_expires_at, j.attempt from pgq.jobs j where j.id = %s',
                     :job_id),
    row('succeeded'::text, now(), null::timestamptz, 1),
    'complete marks the job succeeded, sets finished_at and ends the lease');
select is_empty(format('select from pgq.attempt_errors e where e.job_id = %s', :job_id),
    'complete records no error');

-- A resend after a lost connection: the same token is accepted and changes nothing.
select pgq_test.job(:job_id)::text as completed_row \gset
select lives_ok(format('select pgq.complete(%s, %L)', :job_id, :'lease_token'),
    'repeating complete with the same token after success is accepted');
select is(pgq_test.job(:job_id)::text, :'completed_row',
    'the repeated complete changed nothing');
select throws_ok(format('select pgq.complete(%s, %L)', :job_id, gen_random_uuid()),
    'PQ101', null, 'complete of a succeeded job with another token is refused with lease_lost');
select is(pgq_test.job(:job_id)::text, :'completed_row',
    'the refused complete left the succeeded job unchanged');

-- Refusals: stale token, expired lease, cancelled job, failed job, unknown job.
select job_id as stale_id, lease_token as stale_token from pgq_test.running_job('mail') \gset
select throws_ok(format('select pgq.complete(%s, %L)', :stale_id, gen_random_uuid()),
    'PQ101', null, 'a stale token is refused with lease_lost');
select row_eq(format('select j.state, j.lease_token, j.finished_at from pgq.jobs j where j.id = %s', :stale_id),
    row('running'::text, :'stale_token'::uuid, null::timestamptz),
    'complete with a stale token leaves the job running under its lease');
select throws_ok(format('select pgq.complete(%s, null)', :stale_id),
    'PQ101', null, 'a NULL token is refused with lease_lost');
select throws_ok(format('select pgq.complete(%s, %L)', -1, :'stale_token'),
    'PQ101', null, 'an unknown job id is refused with lease_lost');

-- Late: the lease expired, but no claim reaped the job yet: nobody else holds it.
select pgq_test.backdate_lease(:stale_id);
select is(pgq.complete(:stale_id, :'stale_token'), 'succeeded',
    'complete from the holder of an expired lease is accepted while the job is unclaimed');
select row_eq(format('select j.state, j.lease_token, j.finished_at, j.lease_expires_at, j.attempt from pgq.jobs j where j.id = %s',
                     :stale_id),
    row('succeeded'::text, :'stale_token'::uuid, now(), null::timestamptz, 1),
    'the late complete marks the job succeeded as if in time');
select is_empty(format('select from pgq.attempt_errors e where e.job_id = %s', :stale_id),
    'a late complete before any claim reaped the job records no error');

select job_id as cancelled_id, lease_token as cancelled_token from pgq_test.running_job('mail') \gset
select pgq.cancel(:cancelled_id) as cancelled_state \gset
select throws_ok(format('select pgq.complete(%s, %L)', :cancelled_id, :'cancelled_token'),
    'PQ101', format('job %s: lease lost: the job is cancelled', :cancelled_id),
    'complete of a cancelled job is refused with lease_lost, saying it is cancelled');
select results_eq(
    format('select m.outcome from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[]) m',
           :cancelled_id, :'cancelled_token'),
    array['lease_lost'], 'complete_many of a cancelled job answers lease_lost');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :cancelled_id),
    row('cancelled'::text, now()),
    'the refused complete left the job cancelled');

select job_id as failed_id, lease_token as failed_token from pgq_test.running_job('mail') \gset
select pgq.fail(:failed_id, :'failed_token', 'boom') as failed_state \gset
select throws_ok(format('select pgq.complete(%s, %L)', :failed_id, :'failed_token'),
    'PQ101', null, 'complete after the attempt failed is refused with lease_lost');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :failed_id),
    row('available'::text, null::timestamptz),
    'the refused complete left the failed job waiting for its retry');

-- complete_many: four running jobs in one queue.
select pgq_test.fresh_queue('cm') as q \gset
select pgq.enqueue_many(array['a', 'b', 'c', 'd'], queues => array[:'q', :'q', :'q', :'q']) as ids \gset
with c as (select c.id, c.lease_token, row_number() over (order by c.id) as n
             from pgq.claim('pgtap-worker', array[:'q'], 4) c)
select (select id from c where n = 1) as a_id, (select lease_token from c where n = 1) as a_token,
       (select id from c where n = 2) as b_id, (select lease_token from c where n = 2) as b_token,
       (select id from c where n = 3) as c_id, (select lease_token from c where n = 3) as c_token,
       (select id from c where n = 4) as d_id, (select lease_token from c where n = 4) as d_token \gset
select pgq_test.backdate_lease(:d_id);

select results_eq(
    format('select m.job_id, m.outcome from pgq.complete_many(%L::bigint[], %L::uuid[]) m',
           array[:c_id, :b_id, -1, :d_id, :a_id],
           array[:'c_token', gen_random_uuid(), gen_random_uuid(), :'d_token', :'a_token']::uuid[]),
    format('values (%s::bigint, %L::text), (%s, %L), (%s, %L), (%s, %L), (%s, %L)',
           :c_id, 'succeeded', :b_id, 'lease_lost', -1, 'lease_lost', :d_id, 'succeeded',
           :a_id, 'succeeded'),
    'complete_many answers per job in input order: succeeded (also late, for an expired unclaimed lease), or lease_lost for stale or unknown');
select results_eq(
    format('select j.id, j.state, j.finished_at from pgq.jobs j where j.id in (%s, %s) order by j.id',
           :a_id, :c_id),
    format('values (%s::bigint, %L::text, %L::timestamptz), (%s, %L, %L)',
           :a_id, 'succeeded', now(), :c_id, 'succeeded', now()),
    'complete_many marked the jobs with good tokens succeeded');
select row_eq(format('select j.state, j.lease_token, j.finished_at from pgq.jobs j where j.id = %s', :b_id),
    row('running'::text, :'b_token'::uuid, null::timestamptz),
    'a stale token refused only that job: it is still running under its lease');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :d_id),
    row('succeeded'::text, now()),
    'the job whose lease expired unclaimed was completed late');

select pgq_test.job(:a_id)::text as a_row \gset
select results_eq(
    format('select m.job_id, m.outcome from pgq.complete_many(%L::bigint[], %L::uuid[]) m',
           array[:a_id, :b_id], array[:'a_token', :'b_token']::uuid[]),
    format('values (%s::bigint, %L::text), (%s, %L)', :a_id, 'succeeded', :b_id, 'succeeded'),
    'complete_many repeated for a succeeded job with its token answers succeeded again');
select is(pgq_test.job(:a_id)::text, :'a_row',
    'the repeated complete_many changed nothing for the succeeded job');
select is((pgq_test.job(:b_id)).state, 'succeeded',
    'the remaining job was completed by the second call');
select job_id as x_id, lease_token as x_token from pgq_test.running_job('mail') \gset
select pgq_test.state_digest() as before_twice \gset
select throws_ok(
    format('select * from pgq.complete_many(%L::bigint[], %L::uuid[])',
           array[:x_id, :x_id], array[gen_random_uuid(), :'x_token']::uuid[]),
    'PQ001', null, 'a job listed twice is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before_twice', 'the refused complete_many changed nothing');
select is_empty('select * from pgq.complete_many(''{}''::bigint[], ''{}''::uuid[])',
    'complete_many of no jobs answers no rows');

select job_id as e_id, lease_token as e_token from pgq_test.running_job('mail') \gset
select throws_ok(
    format('select * from pgq.complete_many(%L::bigint[], %L::uuid[])',
           array[:e_id, :a_id], array[:'e_token']::uuid[]),
    'PQ001', null, 'complete_many with arrays of different lengths is refused with invalid_argument');
select throws_ok(
    format('select * from pgq.complete_many(null, %L::uuid[])', array[:'e_token']::uuid[]),
    'PQ001', null, 'complete_many with NULL job_ids is refused with invalid_argument');
select throws_ok(
    format('select * from pgq.complete_many(%L::bigint[], null)', array[:e_id]),
    'PQ001', null, 'complete_many with NULL lease_tokens is refused with invalid_argument');
select row_eq(format('select j.state, j.lease_token, j.finished_at from pgq.jobs j where j.id = %s', :e_id),
    row('running'::text, :'e_token'::uuid, null::timestamptz),
    'refused complete_many calls left the job running');

-- Late completion after claim reaped the expired lease, while nobody claimed since.
select job_id as r_id, lease_token as r_token, queue as r_queue from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:r_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'r_queue']) \gset
select row_eq(format('select j.state, j.lease_token, j.attempt from pgq.jobs j where j.id = %s', :r_id),
    row('available'::text, null::uuid, 1), 'claim reaped the expired lease: the job waits for its retry');
select is(pgq.complete(:r_id, :'r_token', '{"late": true}'), 'succeeded',
    'complete from the reaped holder is accepted while no attempt claimed the job since');
select row_eq(format('select j.state, j.finished_at, j.attempt, j.lease_token, j.lapsed_lease_token, j.result from pgq.jobs j where j.id = %s', :r_id),
    row('succeeded'::text, now(), 1, :'r_token'::uuid, null::uuid, '{"late": true}'::jsonb),
    'the late complete made the job succeeded, its attempt uncounted again, with its result');
select results_eq(format($$select e.attempt, e.error ~ '^lease expired' from pgq.attempt_errors e where e.job_id = %s$$, :r_id),
    $$values (1, true)$$, 'the reaped attempt''s "lease expired" error row stays');
select pgq_test.job(:r_id)::text as r_row \gset
select is(pgq.complete(:r_id, :'r_token', '{"late": true}'), 'succeeded',
    'a resend of the late complete is accepted');
select is(pgq_test.job(:r_id)::text, :'r_row', 'the resent late complete changed nothing');

-- Reaped at its last attempt (dead), not claimed since: the late complete rescues it.
select job_id as rd_id, lease_token as rd_token, queue as rd_queue from pgq_test.running_job('mail', 0) \gset
select pgq_test.backdate_lease(:rd_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rd_queue']) \gset
select is((pgq_test.job(:rd_id)).state, 'dead', 'the reaped last attempt is dead');
select results_eq(
    format('select m.outcome from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[]) m',
           :rd_id, :'rd_token'),
    array['succeeded'], 'complete_many from the reaped holder of a dead job answers succeeded');
select row_eq(format('select j.state, j.finished_at, j.attempt from pgq.jobs j where j.id = %s', :rd_id),
    row('succeeded'::text, now(), 1), 'the late complete took the job out of the dead letter as succeeded');
select is((select count(*) from pgq.attempt_errors e where e.job_id = :rd_id), 1::bigint,
    'the dead attempt''s error row stays');

-- Refused once another attempt claimed the job, or after a retry from the dead letter.
select job_id as rc_id, lease_token as rc_token, queue as rc_queue from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:rc_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rc_queue']) \gset
select pgq_test.make_due(:rc_id);
select c.lease_token as rc_token2 from pgq.claim('pgtap-other', array[:'rc_queue']) c \gset
select pgq_test.state_digest() as before_rc \gset
select throws_ok(format('select pgq.complete(%s, %L)', :rc_id, :'rc_token'),
    'PQ101', format('job %s: lease lost: attempt 2 holds it now (worker pgtap-other)', :rc_id),
    'complete from the reaped holder is refused once another attempt claimed the job');
select results_eq(
    format('select m.outcome from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[]) m',
           :rc_id, :'rc_token'),
    array['lease_lost'], 'complete_many from the reaped holder answers lease_lost once another attempt claimed');
select is(pgq_test.state_digest(), :'before_rc', 'the refused late completes changed nothing');
select pgq.fail(:rc_id, :'rc_token2', 'second attempt failed') as rc_state \gset
select throws_ok(format('select pgq.complete(%s, %L)', :rc_id, :'rc_token'),
    'PQ101', null, 'the first holder stays refused after the second attempt failed');

select job_id as rr_id, lease_token as rr_token, queue as rr_queue from pgq_test.running_job('mail', 0) \gset
select pgq_test.backdate_lease(:rr_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rr_queue']) \gset
select pgq.retry(:rr_id);
select pgq_test.state_digest() as before_rr \gset
select throws_ok(format('select pgq.complete(%s, %L)', :rr_id, :'rr_token'),
    'PQ101', null, 'complete from the reaped holder is refused after the job was retried from the dead letter');
select is(pgq_test.state_digest(), :'before_rr', 'the refused complete changed nothing');

-- Results: kept with the job; NULL for none.
select job_id as res_id, lease_token as res_token from pgq_test.running_job('mail') \gset
select is(pgq.complete(:res_id, :'res_token', '{"sent": 3}'::jsonb), 'succeeded',
    'complete with a result answers succeeded');
select is((pgq_test.job(:res_id)).result, '{"sent": 3}'::jsonb, 'complete keeps the result with the job');
select is((pgq_test.job(:a_id)).result, null::jsonb, 'complete without a result keeps NULL');

select pgq_test.fresh_queue('res') as rq \gset
select pgq.enqueue_many(array['a', 'b', 'c'], queues => array[:'rq', :'rq', :'rq']) as ids \gset
with c as (select c.id, c.lease_token, row_number() over (order by c.id) as n
             from pgq.claim('pgtap-worker', array[:'rq'], 3) c)
select (select id from c where n = 1) as ra_id, (select lease_token from c where n = 1) as ra_token,
       (select id from c where n = 2) as rb_id, (select lease_token from c where n = 2) as rb_token,
       (select id from c where n = 3) as rc3_id, (select lease_token from c where n = 3) as rc3_token \gset
select pgq_test.state_digest() as before_len \gset
select throws_ok(
    format('select * from pgq.complete_many(%L::bigint[], %L::uuid[], array[''1''::jsonb])',
           array[:ra_id, :rb_id], array[:'ra_token', :'rb_token']::uuid[]),
    'PQ001', 'invalid results: 1 results for 2 jobs',
    'results of another length than job_ids are refused with invalid_argument');
select is(pgq_test.state_digest(), :'before_len', 'the refused complete_many changed nothing');

-- A result over 1 MiB fails that job's attempt; the others in the batch succeed.
select results_eq(
    format('select m.job_id, m.outcome from pgq.complete_many(%L::bigint[], %L::uuid[], array[%L::jsonb, to_jsonb(repeat(''x'', 1100000)), null]) m',
           array[:rb_id, :ra_id, :rc3_id], array[:'rb_token', :'ra_token', :'rc3_token']::uuid[], '[1, 2]'),
    format('values (%s::bigint, %L::text), (%s, %L), (%s, %L)',
           :rb_id, 'succeeded', :ra_id, 'failed', :rc3_id, 'succeeded'),
    'complete_many answers failed for a result over 1 MiB, succeeded for the others');
select row_eq(format('select j.state, j.result, j.finished_at, j.last_error ~ ''^result too large: 1100\d\d\d bytes, at most 1048576 allowed$'' from pgq.jobs j where j.id = %s', :ra_id),
    row('available'::text, null::jsonb, null::timestamptz, true),
    'the oversized result failed the attempt: the job waits for its retry, the error names the size and the limit');
select results_eq(format('select e.attempt, e.error ~ ''^result too large'' from pgq.attempt_errors e where e.job_id = %s', :ra_id),
    $$values (1, true)$$, 'the failed attempt is logged with its error');
select results_eq(format('select j.id, j.state, j.result from pgq.jobs j where j.id in (%s, %s) order by j.id', :rb_id, :rc3_id),
    format('values (%s::bigint, %L::text, %L::jsonb), (%s, %L, null)', :rb_id, 'succeeded', '[1, 2]', :rc3_id, 'succeeded'),
    'the other jobs of the batch succeeded with their results');
select pgq_test.job(:ra_id)::text as ra_row \gset
select results_eq(
    format('select m.outcome from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[], array[to_jsonb(repeat(''x'', 1100000))]) m',
           :ra_id, :'ra_token'),
    array['failed'], 'a resend of the oversized completion answers failed again');
select is(pgq_test.job(:ra_id)::text, :'ra_row', 'the resend changed nothing');

select job_id as big_id, lease_token as big_token from pgq_test.running_job('mail', 0) \gset
select is(pgq.complete(:big_id, :'big_token', to_jsonb(repeat('x', 1100000))), 'failed',
    'complete with a result over 1 MiB answers failed');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :big_id),
    row('dead'::text, now()), 'at the last attempt the oversized result dead-letters the job');
select job_id as edge_id, lease_token as edge_token from pgq_test.running_job('mail') \gset
select is(pgq.complete(:edge_id, :'edge_token', to_jsonb(repeat('x', 1048000))), 'succeeded',
    'a result just under 1 MiB is kept');

-- Privileges: workers and admins complete, producers may not.
set local role pgq_producer;
select throws_ok(format('select pgq.complete(%s, %L)', :e_id, :'e_token'),
    '42501', null, 'pgq_producer may not call complete');
select throws_ok(format('select * from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[])',
                        :e_id, :'e_token'),
    '42501', null, 'pgq_producer may not call complete_many');
reset role;
select is((pgq_test.job(:e_id)).state, 'running', 'the refused calls left the job running');

select job_id as w1_id, lease_token as w1_token from pgq_test.running_job('mail') \gset
select job_id as w2_id, lease_token as w2_token from pgq_test.running_job('mail') \gset
select job_id as a1_id, lease_token as a1_token from pgq_test.running_job('mail') \gset
select job_id as a2_id, lease_token as a2_token from pgq_test.running_job('mail') \gset
set local role pgq_worker;
select lives_ok(format('select pgq.complete(%s, %L)', :w1_id, :'w1_token'),
    'pgq_worker may call complete');
select lives_ok(format('select * from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[])',
                       :w2_id, :'w2_token'),
    'pgq_worker may call complete_many');
reset role;
set local role pgq_admin;
select lives_ok(format('select pgq.complete(%s, %L)', :a1_id, :'a1_token'),
    'pgq_admin may call complete');
select lives_ok(format('select * from pgq.complete_many(array[%s]::bigint[], array[%L]::uuid[])',
                       :a2_id, :'a2_token'),
    'pgq_admin may call complete_many');
reset role;
select results_eq(
    format('select j.state from pgq.jobs j where j.id in (%s, %s, %s, %s)',
           :w1_id, :w2_id, :a1_id, :a2_id),
    array['succeeded', 'succeeded', 'succeeded', 'succeeded'],
    'the worker''s and admin''s completes took effect');

select * from finish();
rollback;

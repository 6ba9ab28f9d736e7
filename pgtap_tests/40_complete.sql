-- pgtap_tests/40_complete.sql: pgq.complete and pgq.complete_many.
begin;
\ir _fixtures.psql
select plan(39);

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

select pgq_test.backdate_lease(:stale_id);
select throws_ok(format('select pgq.complete(%s, %L)', :stale_id, :'stale_token'),
    'PQ101', null, 'an expired lease is refused with lease_lost even with the right token');
select row_eq(format('select j.state, j.lease_token, j.finished_at, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :stale_id),
    row('running'::text, :'stale_token'::uuid, null::timestamptz, now() - interval '1 second'),
    'complete after the lease expired leaves the job running (claim will fail the attempt)');

select job_id as cancelled_id, lease_token as cancelled_token from pgq_test.running_job('mail') \gset
select pgq.cancel(:cancelled_id) as cancelled_state \gset
select throws_ok(format('select pgq.complete(%s, %L)', :cancelled_id, :'cancelled_token'),
    'PQ101', null, 'complete of a cancelled job is refused with lease_lost');
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
           :c_id, 'succeeded', :b_id, 'lease_lost', -1, 'lease_lost', :d_id, 'lease_lost',
           :a_id, 'succeeded'),
    'complete_many answers per job in input order: succeeded, or lease_lost for stale, unknown or expired');
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
    row('running'::text, null::timestamptz),
    'an expired lease refused only that job');

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

-- pgtap_tests/30_heartbeat.sql: pgq.heartbeat and pgq.heartbeat_many.
begin;
\ir _fixtures.psql
select plan(56);

-- A queue whose lease is 2 minutes, so the job's own lease_duration is visible.
select pgq_test.fresh_queue('hb') as q \gset
select pgq.configure_queue(:'q', lease => interval '2 minutes');
select job_id, lease_token from pgq_test.running_job('mail', null, :'q') \gset

-- heartbeat: the holder extends its lease.

update pgq.jobs set lease_expires_at = now() + interval '1 second' where id = :job_id;
select is(pgq.heartbeat(:job_id, :'lease_token'),
    now() + interval '2 minutes',
    'heartbeat without a lease returns now() + the job''s lease_duration');
select is((pgq_test.job(:job_id)).lease_expires_at, now() + interval '2 minutes',
    'heartbeat without a lease stores now() + the job''s lease_duration');
select is(pgq.heartbeat(:job_id, :'lease_token', interval '10 minutes'),
    now() + interval '10 minutes',
    'heartbeat with a lease returns now() + that lease');
select is((pgq_test.job(:job_id)).lease_expires_at, now() + interval '10 minutes',
    'heartbeat with a lease stores now() + that lease');
select lives_ok(format('select pgq.heartbeat(%s, %L, %L)', :job_id, :'lease_token', '1 second'),
    'a lease of 1 second is accepted');
select lives_ok(format('select pgq.heartbeat(%s, %L, %L)', :job_id, :'lease_token', '1 day'),
    'a lease of 1 day is accepted');
select row_eq(format('select j.state, j.lease_token, j.attempt, j.worker_id from pgq.jobs j where j.id = %s',
                     :job_id),
    row('running'::text, :'lease_token'::uuid, 1, 'pgtap-worker'::text),
    'heartbeats keep the job running under the same token, attempt and worker');

-- heartbeat: refusals change nothing.

select throws_ok(format('select pgq.heartbeat(%s, %L)', :job_id, gen_random_uuid()),
    'PQ101', null, 'a stale token is refused with lease_lost');
select row_eq(format('select j.state, j.lease_token, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :job_id),
    row('running'::text, :'lease_token'::uuid, now() + interval '1 day'),
    'a heartbeat with a stale token leaves the job unchanged');
select throws_ok(format('select pgq.heartbeat(%s, null)', :job_id),
    'PQ101', null, 'a NULL token is refused with lease_lost');
select throws_ok(format('select pgq.heartbeat(%s, %L)', -1, :'lease_token'),
    'PQ101', null, 'an unknown job id is refused with lease_lost');

select throws_ok(format('select pgq.heartbeat(%s, %L, %L)', :job_id, :'lease_token', '0 seconds'),
    'PQ001', null, 'a zero lease is refused with invalid_argument');
select throws_ok(format('select pgq.heartbeat(%s, %L, %L)', :job_id, :'lease_token', '-5 minutes'),
    'PQ001', null, 'a negative lease is refused with invalid_argument');
select throws_ok(format('select pgq.heartbeat(%s, %L, %L)', :job_id, :'lease_token', '999 milliseconds'),
    'PQ001', null, 'a lease under 1 second is refused with invalid_argument');
select throws_ok(format('select pgq.heartbeat(%s, %L, %L)', :job_id, :'lease_token', '1 day 1 second'),
    'PQ001', null, 'a lease over 1 day is refused with invalid_argument');
select is((pgq_test.job(:job_id)).lease_expires_at, now() + interval '1 day',
    'a refused lease leaves the job''s lease unchanged');

-- An expired lease is lost, even to the right token.
select pgq_test.backdate_lease(:job_id);
select throws_ok(format('select pgq.heartbeat(%s, %L)', :job_id, :'lease_token'),
    'PQ101', null, 'an expired lease is refused with lease_lost even with the right token');
select row_eq(format('select j.state, j.lease_token, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :job_id),
    row('running'::text, :'lease_token'::uuid, now() - interval '1 second'),
    'a refused heartbeat does not revive an expired lease');

-- A job that is no longer running has no lease to extend.
select job_id as failed_id, lease_token as failed_token
  from pgq_test.running_job('mail') \gset
select pgq.fail(:failed_id, :'failed_token', 'boom') as failed_state \gset
select throws_ok(format('select pgq.heartbeat(%s, %L)', :failed_id, :'failed_token'),
    'PQ101', null, 'a heartbeat for a failed (retrying) job is refused with lease_lost');
select is((pgq_test.job(:failed_id)).lease_expires_at, null,
    'the refused heartbeat did not give the failed job a lease back');

select job_id as done_id, lease_token as done_token from pgq_test.running_job('mail') \gset
select pgq.complete(:done_id, :'done_token');
select throws_ok(format('select pgq.heartbeat(%s, %L)', :done_id, :'done_token'),
    'PQ101', null, 'a heartbeat for a succeeded job is refused with lease_lost');
select row_eq(format('select j.state, j.lease_expires_at from pgq.jobs j where j.id = %s', :done_id),
    row('succeeded'::text, null::timestamptz),
    'the refused heartbeat left the succeeded job unchanged');

-- heartbeat_many: three running jobs in a queue with a 3 minute lease.
select pgq_test.fresh_queue('hbm') as q2 \gset
select pgq.configure_queue(:'q2', lease => interval '3 minutes');
select pgq.enqueue_many(array['a', 'b', 'c'], queues => array[:'q2', :'q2', :'q2']) as ids \gset
with c as (select c.id, c.lease_token, row_number() over (order by c.id) as n
             from pgq.claim('pgtap-worker', array[:'q2'], 3) c)
select (select id from c where n = 1) as a_id, (select lease_token from c where n = 1) as a_token,
       (select id from c where n = 2) as b_id, (select lease_token from c where n = 2) as b_token,
       (select id from c where n = 3) as c_id, (select lease_token from c where n = 3) as c_token \gset

update pgq.jobs set lease_expires_at = now() + interval '1 second' where id in (:a_id, :b_id);
select pgq_test.backdate_lease(:c_id);
select gen_random_uuid() as stale \gset

select results_eq(
    format('select h.job_id, h.outcome, h.lease_expires_at from pgq.heartbeat_many(%L::bigint[], %L::uuid[], %L) h',
           array[:c_id, :b_id, -1, :a_id], array[:'c_token', :'stale', :'stale', :'a_token']::uuid[],
           '5 minutes'),
    format('values (%s::bigint, %L::text, null::timestamptz), (%s, %L, null), (%s, %L, null), (%s, %L, %L)',
           :c_id, 'lease_lost', :b_id, 'lease_lost', -1, 'lease_lost',
           :a_id, 'extended', now() + interval '5 minutes'),
    'heartbeat_many answers per job in input order: extended, or lease_lost for expired, stale or unknown');
select is((pgq_test.job(:a_id)).lease_expires_at, now() + interval '5 minutes',
    'heartbeat_many stored the extended lease');
select is((pgq_test.job(:b_id)).lease_expires_at, now() + interval '1 second',
    'heartbeat_many left the lease of the stale-token job unchanged');
select row_eq(format('select j.state, j.lease_token, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :c_id),
    row('running'::text, :'c_token'::uuid, now() - interval '1 second'),
    'heartbeat_many did not revive the expired lease');

select results_eq(
    format('select h.job_id, h.outcome, h.lease_expires_at from pgq.heartbeat_many(%L::bigint[], %L::uuid[]) h',
           array[:b_id, :a_id], array[:'b_token', :'a_token']::uuid[]),
    format('values (%s::bigint, %L::text, %L::timestamptz), (%s, %L, %L)',
           :b_id, 'extended', now() + interval '3 minutes',
           :a_id, 'extended', now() + interval '3 minutes'),
    'heartbeat_many without a lease extends each job by its lease_duration');
select is((pgq_test.job(:b_id)).lease_expires_at, now() + interval '3 minutes',
    'heartbeat_many without a lease stores now() + the job''s lease_duration');
select pgq_test.state_digest() as before_twice \gset
select throws_ok(
    format('select * from pgq.heartbeat_many(%L::bigint[], %L::uuid[], %L)',
           array[:b_id, :b_id], array[:'stale', :'b_token']::uuid[], '4 minutes'),
    'PQ001', null, 'a job listed twice is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before_twice', 'the refused heartbeat_many changed nothing');
select is_empty('select * from pgq.heartbeat_many(''{}''::bigint[], ''{}''::uuid[])',
    'heartbeat_many of no jobs answers no rows');

select throws_ok(
    format('select * from pgq.heartbeat_many(%L::bigint[], %L::uuid[], %L)',
           array[:a_id, :b_id], array[:'a_token']::uuid[], '10 minutes'),
    'PQ001', null, 'heartbeat_many with arrays of different lengths is refused with invalid_argument');
select throws_ok(
    format('select * from pgq.heartbeat_many(null, %L::uuid[])', array[:'a_token']::uuid[]),
    'PQ001', null, 'heartbeat_many with NULL job_ids is refused with invalid_argument');
select throws_ok(
    format('select * from pgq.heartbeat_many(%L::bigint[], null)', array[:a_id]),
    'PQ001', null, 'heartbeat_many with NULL lease_tokens is refused with invalid_argument');
select throws_ok(
    format('select * from pgq.heartbeat_many(%L::bigint[], %L::uuid[], %L)',
           array[:a_id], array[:'a_token']::uuid[], '0 seconds'),
    'PQ001', null, 'heartbeat_many with a zero lease is refused with invalid_argument');
select throws_ok(
    format('select * from pgq.heartbeat_many(%L::bigint[], %L::uuid[], %L)',
           array[:a_id], array[:'a_token']::uuid[], '2 days'),
    'PQ001', null, 'heartbeat_many with a lease over 1 day is refused with invalid_argument');
select results_eq(
    format('select j.lease_expires_at from pgq.jobs j where j.id in (%s, %s) order by j.id', :a_id, :b_id),
    array[now() + interval '3 minutes', now() + interval '3 minutes'],
    'refused heartbeat_many calls left every lease unchanged');

-- Strict after expiry: a reaped lease is not revived either (its holder may only
-- record the outcome, see 40_complete), and neither is it after another claim.
select job_id as rp_id, lease_token as rp_token, queue as rp_queue from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:rp_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rp_queue']) \gset
select pgq_test.state_digest() as before_rp \gset
select throws_ok(format('select pgq.heartbeat(%s, %L)', :rp_id, :'rp_token'),
    'PQ101', null, 'a heartbeat from the holder of a reaped lease is refused with lease_lost');
select results_eq(
    format('select h.outcome from pgq.heartbeat_many(array[%s]::bigint[], array[%L]::uuid[]) h',
           :rp_id, :'rp_token'),
    array['lease_lost'], 'heartbeat_many from the holder of a reaped lease answers lease_lost');
select is(pgq_test.state_digest(), :'before_rp', 'the refused heartbeats did not revive the reaped lease');

-- Cooperative cancellation: the cancelled job's heartbeat answers cancelled.
select job_id as cx_id, lease_token as cx_token from pgq_test.running_job('mail') \gset
select job_id as cy_id, lease_token as cy_token from pgq_test.running_job('mail') \gset
select pgq.cancel(:cx_id) as cx_state \gset
select pgq_test.job(:cx_id)::text as cx_row \gset
select throws_ok(format('select pgq.heartbeat(%s, %L)', :cx_id, :'cx_token'),
    'PQ103', format('job %s: cancelled while this lease held it', :cx_id),
    'heartbeat of a job cancelled under this lease raises job_cancelled');
select results_eq(
    format('select h.job_id, h.outcome, h.lease_expires_at from pgq.heartbeat_many(%L::bigint[], %L::uuid[]) h',
           array[:cy_id, :cx_id], array[:'cy_token', :'cx_token']::uuid[]),
    format('values (%s::bigint, %L::text, %L::timestamptz), (%s, %L, null)',
           :cy_id, 'extended', (pgq_test.job(:cy_id)).lease_expires_at, :cx_id, 'cancelled'),
    'heartbeat_many answers cancelled for the cancelled job only');
select is(pgq_test.job(:cx_id)::text, :'cx_row', 'the refused heartbeats left the cancelled job unchanged, without a lease');
select throws_ok(format('select pgq.heartbeat(%s, %L)', :cx_id, gen_random_uuid()),
    'PQ101', null, 'another token for the cancelled job is refused with lease_lost, not job_cancelled');
select results_eq(
    format('select h.outcome from pgq.heartbeat_many(array[%s]::bigint[], array[%L]::uuid[]) h',
           :cx_id, gen_random_uuid()),
    array['lease_lost'], 'heartbeat_many with another token for the cancelled job answers lease_lost');
select job_id as cz_id, lease_token as cz_token, queue as cz_queue from pgq_test.running_job('mail') \gset
select pgq.fail(:cz_id, :'cz_token', 'boom') as cz_state \gset
select pgq.cancel(:cz_id) as cz_state2 \gset
select throws_ok(format('select pgq.heartbeat(%s, %L)', :cz_id, :'cz_token'),
    'PQ101', null, 'cancel of a job waiting for its retry does not answer its earlier attempt with job_cancelled');
select pgq.retry(:cx_id);
select throws_ok(format('select pgq.heartbeat(%s, %L)', :cx_id, :'cx_token'),
    'PQ101', null, 'after the cancelled job was retried, its old token is refused with lease_lost');

-- Privileges: workers and admins heartbeat, producers may not.
select job_id as p_id, lease_token as p_token from pgq_test.running_job('mail') \gset
set local role pgq_producer;
select throws_ok(format('select pgq.heartbeat(%s, %L)', :p_id, :'p_token'),
    '42501', null, 'pgq_producer may not call heartbeat');
select throws_ok(format('select * from pgq.heartbeat_many(array[%s]::bigint[], array[%L]::uuid[])',
                        :p_id, :'p_token'),
    '42501', null, 'pgq_producer may not call heartbeat_many');
reset role;
select is((pgq_test.job(:p_id)).lease_expires_at, now() + interval '30 seconds',
    'the refused calls left the lease unchanged');
set local role pgq_worker;
select lives_ok(format('select pgq.heartbeat(%s, %L, %L)', :p_id, :'p_token', '1 minute'),
    'pgq_worker may call heartbeat');
select lives_ok(format('select * from pgq.heartbeat_many(array[%s]::bigint[], array[%L]::uuid[], %L)',
                       :p_id, :'p_token', '2 minutes'),
    'pgq_worker may call heartbeat_many');
reset role;
select is((pgq_test.job(:p_id)).lease_expires_at, now() + interval '2 minutes',
    'the worker''s heartbeats took effect');
set local role pgq_admin;
select lives_ok(format('select pgq.heartbeat(%s, %L, %L)', :p_id, :'p_token', '3 minutes'),
    'pgq_admin may call heartbeat');
select lives_ok(format('select * from pgq.heartbeat_many(array[%s]::bigint[], array[%L]::uuid[], %L)',
                       :p_id, :'p_token', '4 minutes'),
    'pgq_admin may call heartbeat_many');
reset role;
select is((pgq_test.job(:p_id)).lease_expires_at, now() + interval '4 minutes',
    'the admin''s heartbeats took effect');

select * from finish();
rollback;

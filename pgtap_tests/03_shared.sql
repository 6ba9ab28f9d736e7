-- pgtap_tests/03_shared.sql: the shared internals of sql/functions/03_shared.sql
-- (_lease_lost, _wake, _check_lease, _check_job_batch, _notify_finished, _backoff,
-- _fail_jobs, _fail_lapsed). Their callers' files test them through the public calls.
begin;
\ir _fixtures.psql
select plan(80);

-- _lease_lost says why the caller no longer holds the job, always as PQ101.
select throws_ok('select pgq._lease_lost(-1)', 'PQ101',
    'job -1: lease lost: no such job (it may have been pruned)',
    '_lease_lost of an unknown job: PQ101, no such job');
select job_id as held_id from pgq_test.running_job('mail') \gset
select throws_ok(format('select pgq._lease_lost(%s)', :held_id), 'PQ101',
    format('job %s: lease lost: attempt 1 holds it now (worker pgtap-worker)', :held_id),
    '_lease_lost of a job another attempt holds: PQ101 naming the attempt and worker');
select pgq_test.backdate_lease(:held_id);
select throws_ok(format('select pgq._lease_lost(%s)', :held_id), 'PQ101',
    format('job %s: lease lost: its lease expired at %s', :held_id,
           (pgq_test.job(:held_id)).lease_expires_at),
    '_lease_lost of a job whose lease expired: PQ101 saying when');

-- _wake and _notify_finished only queue notifications, delivered at commit.
select lives_ok($$select pgq._wake(array['a', 'b', 'a'])$$, '_wake of queues (one repeated)');
select lives_ok('select pgq._wake(null)', '_wake of no queues');
select lives_ok('select pgq._notify_finished(null)', '_notify_finished of no jobs');
select lives_ok('select pgq._notify_finished(array(select g::bigint * 1000000000000 from generate_series(1, 1000) g))',
    '_notify_finished of 1000 long ids, split to fit NOTIFY''s payload limit');

-- _check_lease: NULL (the queue's lease) or between 1 second and 1 day.
select lives_ok('select pgq._check_lease(null)', '_check_lease passes NULL');
select lives_ok($$select pgq._check_lease(interval '1 second')$$, '_check_lease passes 1 second');
select throws_ok($$select pgq._check_lease(interval '0.5 seconds')$$, 'PQ001',
    'invalid lease 00:00:00.5: must be between 1 second and 1 day',
    '_check_lease refuses half a second, naming the range');
select throws_ok($$select pgq._check_lease(interval '2 days')$$, 'PQ001',
    'invalid lease 2 days: must be between 1 second and 1 day',
    '_check_lease refuses 2 days');

-- _check_job_batch: paired arrays of distinct jobs.
select lives_ok($$select pgq._check_job_batch(array[1, 2]::bigint[], array[gen_random_uuid(), gen_random_uuid()])$$,
    '_check_job_batch passes two distinct jobs with a token each');
select throws_ok($$select pgq._check_job_batch(null, array[gen_random_uuid()])$$, 'PQ001',
    'invalid job_ids/lease_tokens: must be non-null arrays of the same length',
    '_check_job_batch refuses NULL job_ids');
select throws_ok($$select pgq._check_job_batch(array[1]::bigint[], array[gen_random_uuid(), gen_random_uuid()])$$,
    'PQ001', 'invalid job_ids/lease_tokens: must be non-null arrays of the same length',
    '_check_job_batch refuses arrays of different lengths');
select throws_ok($$select pgq._check_job_batch(array[7, 7]::bigint[], array[gen_random_uuid(), gen_random_uuid()])$$,
    'PQ001', 'invalid job_ids: job 7 is listed twice',
    '_check_job_batch refuses a job listed twice, naming it');

-- _backoff: for attempt n the delay lies in [d/2, d], d = min(max, base * 2^(n-1)).
-- 200 samples per attempt: every one within the bounds, and spread over them.
create temporary table backoff_samples as
select s.attempt, s.low, s.high, pgq._backoff(s.attempt, interval '10 seconds', interval '1 minute') as delay
  from (values (1, interval '5 seconds', interval '10 seconds'),
               (2, interval '10 seconds', interval '20 seconds'),
               (3, interval '20 seconds', interval '40 seconds'),
               (4, interval '30 seconds', interval '1 minute'),
               (30, interval '30 seconds', interval '1 minute')) as s(attempt, low, high)
 cross join generate_series(1, 200);

select ok(min(b.delay) >= b.low and max(b.delay) <= b.high,
          format('_backoff(%s, 10s, 1min): 200 delays lie in [%s, %s] (min %s, max %s)',
                 b.attempt, b.low, b.high, min(b.delay), max(b.delay)))
  from backoff_samples b group by b.attempt, b.low, b.high order by b.attempt;
select ok(max(b.delay) - min(b.delay) > (b.high - b.low) / 2,
          format('_backoff(%s, 10s, 1min): the jitter spreads the delays over their range', b.attempt))
  from backoff_samples b group by b.attempt, b.low, b.high order by b.attempt;

-- A huge attempt number is capped at backoff_max and never overflows the interval.
select lives_ok('select pgq._backoff(1000, interval ''1 second'', interval ''1 hour'')',
    '_backoff of attempt 1000 with a base of 1 second does not overflow');
select lives_ok('select pgq._backoff(1000, interval ''1 hour'', interval ''1 day'')',
    '_backoff of attempt 1000 with a base of 1 hour does not overflow');
select lives_ok('select pgq._backoff(1000, interval ''1 day'', interval ''30 days'')',
    '_backoff of attempt 1000 with a base of 1 day does not overflow');
select lives_ok('select pgq._backoff(2147483647, interval ''1 hour'', interval ''1 day'')',
    '_backoff of the largest attempt number does not overflow');
select ok(bool_and(pgq._backoff(1000, interval '1 hour', interval '1 day')
                   between interval '12 hours' and interval '1 day'),
    '_backoff of attempt 1000 is capped at backoff_max: within [max/2, max]')
  from generate_series(1, 50);

-- _backoff is internal: no role may call it.
set local role pgq_producer;
select throws_ok('select pgq._backoff(1, interval ''1 second'', interval ''1 hour'')',
    '42501', null, 'pgq_producer may not call _backoff');
reset role;
set local role pgq_worker;
select throws_ok('select pgq._backoff(1, interval ''1 second'', interval ''1 hour'')',
    '42501', null, 'pgq_worker may not call _backoff');
reset role;
set local role pgq_admin;
select throws_ok('select pgq._backoff(1, interval ''1 second'', interval ''1 hour'')',
    '42501', null, 'pgq_admin may not call _backoff');
reset role;

-- _fail_jobs: the dead-letter rule. A queue with base 10 seconds, max 1 minute.
select pgq_test.fresh_queue('shared') as q \gset
select pgq.configure_queue(:'q', backoff_base => interval '10 seconds',
                           backoff_max => interval '1 minute');

-- Attempts used up (max_retries 0, attempt 1): dead, finished, error kept.
select job_id as dead_id, lease_token as dead_token from pgq_test.running_job('mail', 0, :'q') \gset
select is((select f.state from pgq._fail_jobs(job_ids => array[:dead_id]::bigint[], errors => array['e1'],
                                               retry => true, clear_lease_token => false) f),
    'dead', '_fail_jobs of an attempt with no retries left answers dead');
select ok(j.state = 'dead' and j.finished_at = now() and j.lease_expires_at is null
          and j.lease_token = :'dead_token' and j.last_error = 'e1',
    '_fail_jobs dead-letters it: finished now, lease ended, token kept, last_error set')
  from pgq_test.job(:dead_id) j;
select is((select count(*) from pgq.attempt_errors e
            where e.job_id = :dead_id and e.attempt = 1 and e.error = 'e1'), 1::bigint,
    '_fail_jobs logs the attempt''s error');

-- Retries left: available again after backoff in [5s, 10s] for attempt 1.
select job_id as retry_id from pgq_test.running_job('mail', 2, :'q') \gset
select is((select f.state from pgq._fail_jobs(job_ids => array[:retry_id]::bigint[], errors => array['e2'],
                                               retry => true, clear_lease_token => false) f),
    'available', '_fail_jobs of an attempt with retries left answers available');
select ok(j.run_at between now() + interval '5 seconds' and now() + interval '10 seconds',
          format('_fail_jobs schedules the retry after the queue''s backoff (run_at - now() = %s)',
                 j.run_at - now()))
  from pgq_test.job(:retry_id) j;
select ok(j.finished_at is null and j.lease_expires_at is null,
    '_fail_jobs leaves a retried job unfinished, its lease ended')
  from pgq_test.job(:retry_id) j;

-- retry false dead-letters whatever the attempts left.
select job_id as stop_id from pgq_test.running_job('mail', 5, :'q') \gset
select is((select f.state from pgq._fail_jobs(job_ids => array[:stop_id]::bigint[], errors => array['e3'],
                                               retry => false, clear_lease_token => false) f),
    'dead', '_fail_jobs with retry false answers dead though retries are left');

-- clear_lease_token (claim reaping): the token moves to lapsed_lease_token.
select job_id as lapse_id, lease_token as lapse_token from pgq_test.running_job('mail', 2, :'q') \gset
select job_id as lapse_dead_id, lease_token as lapse_dead_token from pgq_test.running_job('mail', 0, :'q') \gset
select set_eq(format($$select f.job_id, f.state
                         from pgq._fail_jobs(job_ids => array[%s, %s]::bigint[], errors => array['gone', 'gone'],
                                             retry => true, clear_lease_token => true) f$$,
                     :lapse_id, :lapse_dead_id),
              format('values (%s::bigint, %L::text), (%s, %L)', :lapse_id, 'available', :lapse_dead_id, 'dead'),
    '_fail_jobs of a batch answers each job''s state: retried or dead-lettered by its own attempts');
select ok(j.lease_token is null and j.lapsed_lease_token = :'lapse_token',
    '_fail_jobs with clear_lease_token moves the token to lapsed_lease_token')
  from pgq_test.job(:lapse_id) j;

-- _fail_lapsed: a late fail from the holder of a reaped lease.
select is((select f.state from pgq._fail_lapsed(job_ids => array[:lapse_id]::bigint[],
                                                 errors => array['late, retry'], retry => true) f),
    'available', '_fail_lapsed with retry true keeps an available job available');
select ok(j.lease_token = :'lapse_token' and j.lapsed_lease_token is null
          and j.finished_at is null and j.last_error = 'late, retry',
    '_fail_lapsed gives the holder''s token back and keeps the job waiting for its retry')
  from pgq_test.job(:lapse_id) j;
-- Another job reaped the same way, failed late with retry false.
select job_id as lapse2_id, lease_token as lapse2_token from pgq_test.running_job('mail', 2, :'q') \gset
select count(*) from pgq._fail_jobs(job_ids => array[:lapse2_id]::bigint[], errors => array['gone'],
                                    retry => true, clear_lease_token => true);
select is((select f.state from pgq._fail_lapsed(job_ids => array[:lapse2_id]::bigint[],
                                                 errors => array['late, stop'], retry => false) f),
    'dead', '_fail_lapsed with retry false dead-letters an available job');
select ok(j.state = 'dead' and j.finished_at = now() and j.lease_token = :'lapse2_token'
          and j.lapsed_lease_token is null and j.last_error = 'late, stop',
    '_fail_lapsed with retry false: finished now, the holder''s token back, its error kept')
  from pgq_test.job(:lapse2_id) j;
select is((select count(*) from pgq.attempt_errors e where e.job_id = :lapse2_id and e.attempt = 1),
    2::bigint, '_fail_lapsed logs each late error as another row for the same attempt');
-- It reads the jobs by primary key, from a cached generic plan too: the available jobs
-- of every queue cost it no index scan.
select job_id as lapse3_id from pgq_test.running_job('mail', 2, :'q') \gset
select count(*) from pgq._fail_jobs(job_ids => array[:lapse3_id]::bigint[], errors => array['gone'],
                                    retry => true, clear_lease_token => true);
set local plan_cache_mode = force_generic_plan;
select pg_stat_get_xact_numscans('pgq.jobs_claim_idx'::regclass) as claim_scans \gset
select is((select f.state from pgq._fail_lapsed(job_ids => array[:lapse3_id]::bigint[],
                                                 errors => array['late, stop'], retry => false) f),
    'dead', '(_fail_lapsed from generic plans dead-letters the job as well)');
select is(pg_stat_get_xact_numscans('pgq.jobs_claim_idx'::regclass), :claim_scans::bigint,
    '_fail_lapsed does not scan jobs_claim_idx, whatever the plan');
reset plan_cache_mode;

-- _lease: the one place an attempt starts, for claims and hand-overs.
select pgq_test.fresh_queue('lease') as lq \gset
select pgq.configure_queue(:'lq', lease => interval '50 seconds');
select pgq.enqueue_many(array['l1', 'l2', 'l3'], queues => array_fill(:'lq'::text, array[3]),
                        priorities => array[2, 1, 3]) as lease_ids \gset
select is(array(select l.job_name
                 from pgq._lease((:'lease_ids'::bigint[])[1:2], 'w-lease', null,
                                 now() + interval '5 seconds') l),
    array['l2', 'l1'], '_lease returns the jobs it leased in claim order');
select is((select array_agg(row(j.state, j.attempt, j.worker_id, j.lease_duration)::text order by j.id)
             from pgq.jobs j where j.id = any ((:'lease_ids'::bigint[])[1:2])),
    array[row('running', 1, 'w-lease', interval '50 seconds')::text,
          row('running', 1, 'w-lease', interval '50 seconds')::text],
    '_lease counts the attempt and leases to the worker, for the queue''s lease when none is given');
select ok((select bool_and(j.started_at = now() + interval '5 seconds'
                           and j.lease_expires_at = now() + interval '55 seconds'
                           and j.lease_token is not null)
             from pgq.jobs j where j.id = any ((:'lease_ids'::bigint[])[1:2])),
    '_lease starts the attempt and its lease at started_at, with a lease token');
select isnt((select j.lease_token from pgq.jobs j where j.id = (:'lease_ids'::bigint[])[1]),
            (select j.lease_token from pgq.jobs j where j.id = (:'lease_ids'::bigint[])[2]),
    'each job gets a token of its own');
select is((select l.lease_duration from pgq._lease(array[(:'lease_ids'::bigint[])[3]], 'w-lease',
                                                   interval '9 seconds', now()) l),
    interval '9 seconds', '_lease takes the lease given over the queue''s');
select is_empty($$select * from pgq._lease('{}', 'w-lease', null, now())$$,
    '_lease of no jobs leases nothing');
select ok(pgq._handoffs_on(), '_handoffs_on: hand-overs are on while pgq.waiting_workers is small');


-- Internal: no role may call any of them.
set local role pgq_producer;
select throws_ok('select pgq.' || c.call, '42501', null, 'pgq_producer may not call pgq.' || c.call)
  from (values ('_lease_lost(1)'), ('_wake(null)'), ('_check_lease(null)'),
               ('_check_job_batch(null, null)'), ('_notify_finished(null)'),
               ('_fail_jobs(null, null, true, false)'), ('_fail_lapsed(null, null, true)'),
               ('_lease(null, null, null, null)')) as c(call);
reset role;
set local role pgq_worker;
select throws_ok('select pgq.' || c.call, '42501', null, 'pgq_worker may not call pgq.' || c.call)
  from (values ('_lease_lost(1)'), ('_wake(null)'), ('_check_lease(null)'),
               ('_check_job_batch(null, null)'), ('_notify_finished(null)'),
               ('_fail_jobs(null, null, true, false)'), ('_fail_lapsed(null, null, true)'),
               ('_lease(null, null, null, null)')) as c(call);
reset role;
set local role pgq_admin;
select throws_ok('select pgq.' || c.call, '42501', null, 'pgq_admin may not call pgq.' || c.call)
  from (values ('_lease_lost(1)'), ('_wake(null)'), ('_check_lease(null)'),
               ('_check_job_batch(null, null)'), ('_notify_finished(null)'),
               ('_fail_jobs(null, null, true, false)'), ('_fail_lapsed(null, null, true)'),
               ('_lease(null, null, null, null)')) as c(call);
reset role;

select * from finish();
rollback;

-- pgtap_tests/50_fail.sql: pgq.fail (pgq._backoff, _fail_jobs, _fail_lapsed: 03_shared.sql).
begin;
\ir _fixtures.psql
select plan(62);

-- fail schedules a retry with backoff: a queue with base 10 seconds, max 1 minute.
select pgq_test.fresh_queue('fail') as q \gset
select pgq.configure_queue(:'q', max_retries => 3, backoff_base => interval '10 seconds',
                           backoff_max => interval '1 minute');
select job_id, lease_token from pgq_test.running_job('mail', null, :'q') \gset

select is(pgq.fail(:job_id, :'lease_token', 'boom: first'), 'available',
    'fail of an attempt with retries left returns available');
select row_eq(format('select j.state, j.attempt, j.last_error, j.lease_expires_at, j.finished_at from pgq.jobs j where j.id = %s',
                     :job_id),
    row('available'::text, 1, 'boom: first'::text, null::timestamptz, null::timestamptz),
    'the failed job waits for its retry with its last error kept and its lease ended');
select ok((pgq_test.job(:job_id)).run_at between now() + interval '5 seconds' and now() + interval '10 seconds',
    'the first retry is scheduled within [base/2, base] from now');
select results_eq(
    format('select e.attempt, e.error, e.worker_id, e.failed_at from pgq.attempt_errors e where e.job_id = %s',
           :job_id),
    format('values (1, %L::text, %L::text, %L::timestamptz)', 'boom: first', 'pgtap-worker', now()),
    'the failed attempt is logged in attempt_errors with its number and error');
select throws_ok(format('select pgq.heartbeat(%s, %L)', :job_id, :'lease_token'),
    'PQ101', null, 'after fail the old lease can no longer be heartbeated');
select throws_ok(format('select pgq.complete(%s, %L)', :job_id, :'lease_token'),
    'PQ101', null, 'after fail the old lease can no longer complete the job');
select is_empty(format('select from pgq.claim(%L, array[%L])', 'pgtap-worker', :'q'),
    'the retry is not claimed before it is due');

-- A resend of the same fail is accepted and records nothing more.
select pgq_test.job(:job_id)::text as failed_row \gset
select is(pgq.fail(:job_id, :'lease_token', 'boom: resent'), 'available',
    'repeating fail with the same token returns the state again');
select is(pgq_test.job(:job_id)::text, :'failed_row',
    'the repeated fail changed nothing: same run_at, same last_error');
select is((select count(*)::integer from pgq.attempt_errors e where e.job_id = :job_id), 1,
    'the repeated fail logged no second error');

-- The second attempt backs off twice as long.
select pgq_test.make_due(:job_id);
select c.lease_token as token2, c.attempt as attempt2
  from pgq.claim('pgtap-worker-2', array[:'q']) c \gset
select is(:attempt2, 2, 'the due retry is claimed as attempt 2');
select throws_ok(format('select pgq.fail(%s, %L, %L)', :job_id, :'lease_token', 'late'),
    'PQ101', null, 'the first attempt''s token cannot fail the second attempt');
select row_eq(format('select j.state, j.lease_token, j.last_error from pgq.jobs j where j.id = %s', :job_id),
    row('running'::text, :'token2'::uuid, 'boom: first'::text),
    'the refused fail left the second attempt running');
select is(pgq.fail(:job_id, :'token2', 'boom: second'), 'available',
    'fail of the second attempt returns available');
select ok((pgq_test.job(:job_id)).run_at between now() + interval '10 seconds' and now() + interval '20 seconds',
    'the second retry is scheduled within [2*base/2, 2*base] from now');
select results_eq(
    format('select e.attempt, e.error, e.worker_id from pgq.attempt_errors e where e.job_id = %s order by e.id',
           :job_id),
    format('values (1, %L::text, %L::text), (2, %L, %L)',
           'boom: first', 'pgtap-worker', 'boom: second', 'pgtap-worker-2'),
    'every failed attempt is kept with its number, error and worker');

-- The error text is kept up to 10,000 characters.
select job_id as long_id, lease_token as long_token from pgq_test.running_job('mail') \gset
select pgq.fail(:long_id, :'long_token', repeat('x', 20000)) as long_state \gset
select is(length((pgq_test.job(:long_id)).last_error), 10000,
    'last_error keeps at most 10,000 characters');
select is((select length(e.error) from pgq.attempt_errors e where e.job_id = :long_id), 10000,
    'the logged error keeps at most 10,000 characters');

-- retry => false dead-letters at once, whatever the attempts left.
select job_id as nr_id, lease_token as nr_token from pgq_test.running_job('mail', 5) \gset
select is(pgq.fail(:nr_id, :'nr_token', 'fatal', retry => false), 'dead',
    'fail with retry => false returns dead');
select row_eq(format('select j.state, j.attempt, j.last_error, j.finished_at, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :nr_id),
    row('dead'::text, 1, 'fatal'::text, now(), null::timestamptz),
    'the job is dead after its first attempt, with its error and finished_at');
select is((select count(*)::integer from pgq.attempt_errors e where e.job_id = :nr_id and e.error = 'fatal'), 1,
    'the fatal error is logged');
select pgq_test.job(:nr_id)::text as dead_row \gset
select is(pgq.fail(:nr_id, :'nr_token', 'fatal again', retry => false), 'dead',
    'repeating fail of a dead job with the same token returns dead again');
select is(pgq_test.job(:nr_id)::text, :'dead_row', 'the repeated fail changed nothing');
select is((select count(*)::integer from pgq.attempt_errors e where e.job_id = :nr_id), 1,
    'the repeated fail logged no second error');

-- A job runs max_retries + 1 times, then goes dead.
select job_id as m0_id, lease_token as m0_token from pgq_test.running_job('mail', 0) \gset
select is(pgq.fail(:m0_id, :'m0_token', 'no retries'), 'dead',
    'with max_retries 0 the first failed attempt is dead');
select is((pgq_test.job(:m0_id)).finished_at, now(), 'the dead job has finished_at');

select pgq_test.fresh_queue('fail1') as q1 \gset
select job_id as m1_id, lease_token as m1_token from pgq_test.running_job('mail', 1, :'q1') \gset
select is(pgq.fail(:m1_id, :'m1_token', 'first of two'), 'available',
    'with max_retries 1 the first failed attempt is retried');
select pgq_test.make_due(:m1_id);
select c.lease_token as m1_token2, c.attempt as m1_attempt2
  from pgq.claim('pgtap-worker', array[:'q1']) c \gset
select is(:m1_attempt2, 2, 'the retry runs as attempt 2');
select is(pgq.fail(:m1_id, :'m1_token2', 'second of two'), 'dead',
    'with max_retries 1 the second failed attempt is dead');
select row_eq(format('select j.state, j.attempt, j.last_error from pgq.jobs j where j.id = %s', :m1_id),
    row('dead'::text, 2, 'second of two'::text),
    'the dead job keeps its attempt count and last error');
select results_eq(
    format('select e.attempt from pgq.attempt_errors e where e.job_id = %s order by e.id', :m1_id),
    array[1, 2], 'both attempts'' errors are kept');

-- Refusals: stale token, expired lease, cancelled, succeeded, unknown job, NULLs.
select job_id as r_id, lease_token as r_token from pgq_test.running_job('mail') \gset
select throws_ok(format('select pgq.fail(%s, %L, %L)', :r_id, gen_random_uuid(), 'x'),
    'PQ101', null, 'a stale token is refused with lease_lost');
select throws_ok(format('select pgq.fail(%s, null, %L)', :r_id, 'x'),
    'PQ101', null, 'a NULL token is refused with lease_lost');
select throws_ok(format('select pgq.fail(%s, %L, %L)', -1, :'r_token', 'x'),
    'PQ101', null, 'an unknown job id is refused with lease_lost');
select throws_ok(format('select pgq.fail(%s, %L, null)', :r_id, :'r_token'),
    'PQ001', null, 'a NULL error is refused with invalid_argument');
select throws_ok(format('select pgq.fail(%s, %L, %L, null)', :r_id, :'r_token', 'x'),
    'PQ001', null, 'a NULL retry is refused with invalid_argument');
select row_eq(format('select j.state, j.lease_token, j.last_error, j.attempt from pgq.jobs j where j.id = %s', :r_id),
    row('running'::text, :'r_token'::uuid, null::text, 1),
    'the refused fails left the job running under its lease');
select is_empty(format('select from pgq.attempt_errors e where e.job_id = %s', :r_id),
    'the refused fails logged no error');

-- Late: the lease expired and no claim reaped the job yet: failed as if in time.
select pgq_test.backdate_lease(:r_id);
select is(pgq.fail(:r_id, :'r_token', 'too late'), 'available',
    'fail from the holder of an expired lease is accepted while the job is unclaimed');
select row_eq(format('select j.state, j.lease_token, j.last_error, j.attempt from pgq.jobs j where j.id = %s', :r_id),
    row('available'::text, :'r_token'::uuid, 'too late'::text, 1),
    'the late fail scheduled the retry with its error, as if in time');
select results_eq(format('select e.attempt, e.error from pgq.attempt_errors e where e.job_id = %s', :r_id),
    $$values (1, 'too late'::text)$$, 'the late fail logged its attempt once');

-- Late after claim reaped the lease, while nobody claimed since: the attempt was
-- counted then; the handler's error is kept beside the "lease expired" row.
select job_id as rp_id, lease_token as rp_token, queue as rp_queue from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:rp_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rp_queue']) \gset
select (pgq_test.job(:rp_id)).run_at as rp_run_at \gset
select is(pgq.fail(:rp_id, :'rp_token', 'handler error'), 'available',
    'fail from the reaped holder is accepted while no attempt claimed the job since');
select row_eq(format('select j.state, j.attempt, j.run_at, j.last_error, j.lease_token, j.lapsed_lease_token from pgq.jobs j where j.id = %s', :rp_id),
    row('available'::text, 1, :'rp_run_at'::timestamptz, 'handler error'::text, :'rp_token'::uuid, null::uuid),
    'the late fail kept the reaped job''s state, attempt and retry time, with the handler''s error as last_error');
select results_eq(format('select e.attempt, e.error ~ ''^lease expired'' from pgq.attempt_errors e where e.job_id = %s order by e.id', :rp_id),
    $$values (1, true), (1, false)$$,
    'the attempt keeps its "lease expired" row and gets the handler''s error as a second row');
select pgq_test.state_digest() as before_rp \gset
select is(pgq.fail(:rp_id, :'rp_token', 'handler error'), 'available',
    'a resend of the late fail answers the state again');
select is(pgq_test.state_digest(), :'before_rp', 'the resent late fail changed nothing');

select job_id as rn_id, lease_token as rn_token, queue as rn_queue from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:rn_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rn_queue']) \gset
select is(pgq.fail(:rn_id, :'rn_token', 'permanent', false), 'dead',
    'a late fail with retry => false dead-letters the reaped job');
select row_eq(format('select j.state, j.finished_at, j.last_error from pgq.jobs j where j.id = %s', :rn_id),
    row('dead'::text, now(), 'permanent'::text), 'the reaped job is dead with the handler''s error');

select job_id as rc_id, lease_token as rc_token, queue as rc_queue from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:rc_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rc_queue']) \gset
select pgq_test.make_due(:rc_id);
select count(*) as reclaimed from pgq.claim('pgtap-other', array[:'rc_queue']) \gset
select pgq_test.state_digest() as before_rc \gset
select throws_ok(format('select pgq.fail(%s, %L, %L)', :rc_id, :'rc_token', 'x'),
    'PQ101', format('job %s: lease lost: attempt 2 holds it now (worker pgtap-other)', :rc_id),
    'fail from the reaped holder is refused once another attempt claimed the job');
select is(pgq_test.state_digest(), :'before_rc', 'the refused late fail changed nothing');

select job_id as c_id, lease_token as c_token from pgq_test.running_job('mail') \gset
select pgq.cancel(:c_id) as c_state \gset
select throws_ok(format('select pgq.fail(%s, %L, %L)', :c_id, :'c_token', 'x'),
    'PQ101', format('job %s: lease lost: the job is cancelled', :c_id),
    'fail of a cancelled job is refused with lease_lost, saying it is cancelled');
select row_eq(format('select j.state, j.last_error from pgq.jobs j where j.id = %s', :c_id),
    row('cancelled'::text, null::text), 'the refused fail left the job cancelled');

select job_id as s_id, lease_token as s_token from pgq_test.running_job('mail') \gset
select pgq.complete(:s_id, :'s_token');
select throws_ok(format('select pgq.fail(%s, %L, %L)', :s_id, :'s_token', 'x'),
    'PQ101', null, 'fail of a succeeded job is refused with lease_lost');
select row_eq(format('select j.state, j.last_error from pgq.jobs j where j.id = %s', :s_id),
    row('succeeded'::text, null::text), 'the refused fail left the job succeeded');
select is_empty(format('select from pgq.attempt_errors e where e.job_id in (%s, %s)', :c_id, :s_id),
    'fails refused for finished jobs logged no error');

-- A long backoff base with a high attempt number still schedules (no overflow).
select pgq_test.fresh_queue('slow') as qs \gset
select pgq.configure_queue(:'qs', max_retries => 1000, backoff_base => interval '1 hour',
                           backoff_max => interval '1 day');
select job_id as h_id, lease_token as h_token from pgq_test.running_job('mail', null, :'qs') \gset
update pgq.jobs set attempt = 500 where id = :h_id;
select lives_ok(format('select pgq.fail(%s, %L, %L)', :h_id, :'h_token', 'again'),
    'fail of attempt 500 in a queue with a 1 hour base does not overflow');
select ok((pgq_test.job(:h_id)).state = 'available'
          and (pgq_test.job(:h_id)).run_at between now() + interval '12 hours' and now() + interval '1 day',
    'its retry is scheduled within [max/2, max]');

-- Privileges: workers and admins fail jobs, producers may not.
select job_id as p_id, lease_token as p_token from pgq_test.running_job('mail') \gset
set local role pgq_producer;
select throws_ok(format('select pgq.fail(%s, %L, %L)', :p_id, :'p_token', 'x'),
    '42501', null, 'pgq_producer may not call fail');
reset role;
select is((pgq_test.job(:p_id)).state, 'running', 'the refused call left the job running');
set local role pgq_worker;
select lives_ok(format('select pgq.fail(%s, %L, %L)', :p_id, :'p_token', 'from worker'),
    'pgq_worker may call fail');
reset role;
select job_id as a_id, lease_token as a_token from pgq_test.running_job('mail') \gset
set local role pgq_admin;
select lives_ok(format('select pgq.fail(%s, %L, %L)', :a_id, :'a_token', 'from admin'),
    'pgq_admin may call fail');
reset role;
select results_eq(
    format('select j.state, j.last_error from pgq.jobs j where j.id in (%s, %s) order by j.id', :p_id, :a_id),
    $$values ('available'::text, 'from worker'::text), ('available', 'from admin')$$,
    'the worker''s and admin''s fails took effect');

select * from finish();
rollback;

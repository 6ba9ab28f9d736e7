-- pgtap_tests/70_operator.sql: pgq.cancel, pgq.job_status, pgq.retry, pgq.retry_dead,
-- pgq.prune.
begin;
\ir _fixtures.psql
select plan(103);

-- cancel an available job: it is finished and no longer claimable.
select pgq_test.fresh_queue('cancel') as q \gset
select pgq.enqueue('mail', '{}', :'q') as avail_id \gset
select is(pgq.cancel(:avail_id), 'cancelled', 'cancel of an available job returns cancelled');
select row_eq(format('select j.state, j.finished_at, j.lease_token, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :avail_id),
    row('cancelled'::text, now(), null::uuid, null::timestamptz),
    'the cancelled job is finished');
select is_empty(format('select from pgq.claim(%L, array[%L])', 'pgtap-worker', :'q'),
    'a cancelled job is not claimed');

-- cancel a running job: its worker loses the lease (cooperative cancellation: the
-- job keeps the token, without expiry, so that its heartbeat can say cancelled).
select job_id as run_id, lease_token as run_token from pgq_test.running_job('mail') \gset
select is(pgq.cancel(:run_id), 'cancelled', 'cancel of a running job returns cancelled');
select row_eq(format('select j.state, j.finished_at, j.lease_token, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :run_id),
    row('cancelled'::text, now(), :'run_token'::uuid, null::timestamptz),
    'the cancelled running job is finished and its lease revoked (the token stays, without expiry)');
select throws_ok(format('select pgq.complete(%s, %L)', :run_id, :'run_token'),
    'PQ101', null, 'the worker of a cancelled job can no longer complete it');
select throws_ok(format('select pgq.heartbeat(%s, %L)', :run_id, :'run_token'),
    'PQ103', null, 'the worker of a cancelled job can no longer heartbeat it: job_cancelled');
select throws_ok(format('select pgq.fail(%s, %L, %L)', :run_id, :'run_token', 'x'),
    'PQ101', null, 'the worker of a cancelled job can no longer fail it');
select is((pgq_test.job(:run_id)).state, 'cancelled', 'the job stays cancelled');

select ok((pgq_test.job(:avail_id)).lease_token is null,
    'a job cancelled while available keeps no token (no attempt held it)');

-- job_status: one row (state, attempt, result, last_error, finished_at) per job.
select pgq_test.fresh_queue('status') as sq \gset
select pgq.enqueue('mail', '{}', :'sq') as st_avail \gset
select row_eq(format('select s.state, s.attempt, s.result, s.last_error, s.finished_at from pgq.job_status(%s) s', :st_avail),
    row('available'::text, 0, null::jsonb, null::text, null::timestamptz),
    'job_status of a new job: available, attempt 0');
select job_id as st_ok, lease_token as st_ok_token from pgq_test.running_job('mail') \gset
select row_eq(format('select s.state, s.attempt, s.result from pgq.job_status(%s) s', :st_ok),
    row('running'::text, 1, null::jsonb), 'job_status of a running job: running, attempt 1');
select pgq.complete(:st_ok, :'st_ok_token', '{"n": 1}') as st_ok_outcome \gset
select row_eq(format('select s.state, s.attempt, s.result, s.last_error, s.finished_at from pgq.job_status(%s) s', :st_ok),
    row('succeeded'::text, 1, '{"n": 1}'::jsonb, null::text, now()),
    'job_status of a succeeded job has its result and finished_at');
select job_id as st_dead, lease_token as st_dead_token from pgq_test.running_job('mail', 0) \gset
select pgq.fail(:st_dead, :'st_dead_token', 'card declined') as st_dead_state \gset
select row_eq(format('select s.state, s.attempt, s.result, s.last_error, s.finished_at from pgq.job_status(%s) s', :st_dead),
    row('dead'::text, 1, null::jsonb, 'card declined'::text, now()),
    'job_status of a dead job has its last error');
select row_eq(format('select s.state, s.finished_at from pgq.job_status(%s) s', :run_id),
    row('cancelled'::text, now()), 'job_status of a cancelled job says cancelled');
select throws_ok('select * from pgq.job_status(-1)', 'PQ201', 'job -1 not found',
    'job_status of an unknown id is refused with job_not_found');
select throws_ok('select * from pgq.job_status(null)', 'PQ201', 'job NULL not found',
    'job_status of a NULL id is refused with job_not_found');
set local role pgq_producer;
select row_eq(format('select s.state from pgq.job_status(%s) s', :st_ok), row('succeeded'::text),
    'pgq_producer may call job_status');
reset role;
set local role pgq_worker;
select row_eq(format('select s.state from pgq.job_status(%s) s', :st_ok), row('succeeded'::text),
    'pgq_worker may call job_status');
reset role;
set local role pgq_admin;
select row_eq(format('select s.state from pgq.job_status(%s) s', :st_ok), row('succeeded'::text),
    'pgq_admin may call job_status');
reset role;

-- cancel refuses finished jobs and unknown ids.
select job_id as done_id, lease_token as done_token from pgq_test.running_job('mail') \gset
select pgq.complete(:done_id, :'done_token');
select job_id as dead_id, lease_token as dead_token from pgq_test.running_job('mail', 0) \gset
select pgq.fail(:dead_id, :'dead_token', 'boom') as dead_state \gset
update pgq.jobs set finished_at = now() - interval '1 minute' where id in (:done_id, :dead_id, :avail_id);
select throws_ok(format('select pgq.cancel(%s)', :done_id),
    'PQ202', null, 'cancel of a succeeded job is refused with job_state_conflict');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :done_id),
    row('succeeded'::text, now() - interval '1 minute'), 'the refused cancel left the job succeeded');
select throws_ok(format('select pgq.cancel(%s)', :dead_id),
    'PQ202', null, 'cancel of a dead job is refused with job_state_conflict');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :dead_id),
    row('dead'::text, now() - interval '1 minute'), 'the refused cancel left the job dead');
select throws_ok(format('select pgq.cancel(%s)', :avail_id),
    'PQ202', null, 'cancel of a cancelled job is refused with job_state_conflict');
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :avail_id),
    row('cancelled'::text, now() - interval '1 minute'), 'the refused cancel left the job as cancelled before');
select throws_ok('select pgq.cancel(-1)', 'PQ201', null, 'cancel of an unknown id is refused with job_not_found');
select throws_ok('select pgq.cancel(null)', 'PQ201', null, 'cancel of a NULL id is refused with job_not_found');

-- retry a dead job: a fresh set of attempts, due now, its errors kept.
update pgq.jobs set run_at = now() - interval '1 hour' where id = :dead_id;
select lives_ok(format('select pgq.retry(%s)', :dead_id), 'retry of a dead job is accepted');
select row_eq(format('select j.state, j.attempt, j.run_at, j.finished_at, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :dead_id),
    row('available'::text, 0, now(), null::timestamptz, null::timestamptz),
    'the retried dead job is available now with its attempts reset');
select results_eq(format('select e.attempt, e.error from pgq.attempt_errors e where e.job_id = %s', :dead_id),
    $$values (1, 'boom'::text)$$, 'the retried job''s error history is kept');
select queue as dead_queue from pgq.jobs where id = :dead_id \gset
select results_eq(format('select c.id, c.attempt from pgq.claim(%L, array[%L]) c', 'pgtap-worker', :'dead_queue'),
    format('values (%s::bigint, 1)', :dead_id),
    'the retried job is claimed again as attempt 1');

-- retry a cancelled job, including one that was scheduled for later.
select pgq_test.fresh_queue('later') as ql \gset
select pgq.enqueue('mail', '{}', :'ql', run_at => now() + interval '1 day') as later_id \gset
select pgq.cancel(:later_id) as later_state \gset
select lives_ok(format('select pgq.retry(%s)', :later_id), 'retry of a cancelled job is accepted');
select row_eq(format('select j.state, j.attempt, j.run_at, j.finished_at from pgq.jobs j where j.id = %s', :later_id),
    row('available'::text, 0, now(), null::timestamptz),
    'the retried cancelled job is available now');
select lives_ok(format('select pgq.retry(%s)', :run_id), 'retry of a job cancelled while running is accepted');
select row_eq(format('select j.state, j.attempt, j.lease_token, j.lease_expires_at from pgq.jobs j where j.id = %s',
                     :run_id),
    row('available'::text, 0, null::uuid, null::timestamptz),
    'the job cancelled while running is available again without a lease');

-- retry refuses jobs that are not dead or cancelled, and unknown ids.
select job_id as r_id, lease_token as r_token from pgq_test.running_job('mail') \gset
select pgq_test.job(:later_id)::text as later_row \gset
select pgq_test.job(:r_id)::text as r_row \gset
select pgq_test.job(:done_id)::text as done_row \gset
select throws_ok(format('select pgq.retry(%s)', :later_id),
    'PQ202', null, 'retry of an available job is refused with job_state_conflict');
select throws_ok(format('select pgq.retry(%s)', :r_id),
    'PQ202', null, 'retry of a running job is refused with job_state_conflict');
select throws_ok(format('select pgq.retry(%s)', :done_id),
    'PQ202', null, 'retry of a succeeded job is refused with job_state_conflict');
select ok(pgq_test.job(:later_id)::text = :'later_row' and pgq_test.job(:r_id)::text = :'r_row'
          and pgq_test.job(:done_id)::text = :'done_row',
    'the refused retries left the jobs unchanged');
select throws_ok('select pgq.retry(-1)', 'PQ201', null, 'retry of an unknown id is refused with job_not_found');

-- retry_dead: per queue, or every queue; returns how many.
select pgq_test.fresh_queue('rda') as qa \gset
select pgq_test.fresh_queue('rdb') as qb \gset
select job_id as da1, lease_token as da1_t from pgq_test.running_job('mail', 0, :'qa') \gset
select pgq.fail(:da1, :'da1_t', 'a1') as s \gset
select job_id as da2, lease_token as da2_t from pgq_test.running_job('mail', 0, :'qa') \gset
select pgq.fail(:da2, :'da2_t', 'a2') as s \gset
select pgq.enqueue('mail', '{}', :'qa') as ca \gset
select pgq.cancel(:ca) as s \gset
select job_id as db1, lease_token as db1_t from pgq_test.running_job('mail', 0, :'qb') \gset
select pgq.fail(:db1, :'db1_t', 'b1') as s \gset

select is(pgq.retry_dead(:'qa'), 2, 'retry_dead of a queue returns how many dead jobs it retried');
select results_eq(
    format('select j.id, j.state, j.attempt from pgq.jobs j where j.id in (%s, %s, %s, %s) order by j.id',
           :da1, :da2, :ca, :db1),
    format('values (%s::bigint, %L::text, 0), (%s, %L, 0), (%s, %L, 0), (%s, %L, 1)',
           :da1, 'available', :da2, 'available', :ca, 'cancelled', :db1, 'dead'),
    'retry_dead of a queue retried only that queue''s dead jobs, not its cancelled ones');
select is(pgq.retry_dead(:'qa'), 0, 'retry_dead of a queue without dead jobs returns 0');
select is(pgq.retry_dead('no-such-queue'), 0, 'retry_dead of an unknown queue returns 0');
select count(*)::integer as all_dead from pgq.jobs where state = 'dead' \gset
select cmp_ok(:all_dead, '>=', 1, 'some queue still has a dead job');
select is(pgq.retry_dead(), :all_dead, 'retry_dead without a queue retries every dead job and returns the count');
select is_empty('select from pgq.jobs j where j.state = ''dead''', 'no dead job is left');
select row_eq(format('select j.state, j.attempt from pgq.jobs j where j.id = %s', :db1),
    row('available'::text, 0), 'the other queue''s dead job was retried');
select is((select count(*)::integer from pgq.attempt_errors e where e.job_id in (:da1, :da2, :db1)), 3,
    'retry_dead kept every error');

-- prune: finished jobs older than older_than, with their errors and markers.
select pgq_test.fresh_queue('prune') as qp \gset
select 'prune-key-' || :'qp' as pkey \gset
-- s_old: failed once (an error), ran an effect (a marker), succeeded 2 hours ago.
select pgq.enqueue('mail', '{}', :'qp', idempotency_key => :'pkey') as s_old \gset
select c.lease_token as t1 from pgq.claim('pgtap-worker', array[:'qp']) c \gset
select b.status as s from pgq.once_begin(:s_old, :'t1', 'effect') b \gset
select pgq.once_finish(:s_old, :'t1', 'effect');
select pgq.fail(:s_old, :'t1', 'first try') as s \gset
select pgq_test.make_due(:s_old);
select c.lease_token as t2 from pgq.claim('pgtap-worker', array[:'qp']) c \gset
select pgq.complete(:s_old, :'t2');
-- s_new: failed once, succeeded 10 minutes ago.
select job_id as s_new, lease_token as t3 from pgq_test.running_job('mail', null, :'qp') \gset
select pgq.fail(:s_new, :'t3', 'recent') as s \gset
select pgq_test.make_due(:s_new);
select c.lease_token as t4 from pgq.claim('pgtap-worker', array[:'qp']) c \gset
select pgq.complete(:s_new, :'t4');
-- c_old: cancelled 2 hours ago; d_old: dead 2 hours ago.
select pgq.enqueue('mail', '{}', :'qp') as c_old \gset
select pgq.cancel(:c_old) as s \gset
select job_id as d_old, lease_token as t5 from pgq_test.running_job('mail', 0, :'qp') \gset
select pgq.fail(:d_old, :'t5', 'died') as s \gset
-- Unfinished jobs: one available, one running (finished_at is NULL).
select pgq.enqueue('mail', '{}', :'qp', run_at => now() + interval '1 day') as a_job \gset
select job_id as r_job, lease_token as t6 from pgq_test.running_job('mail', null, :'qp') \gset
update pgq.jobs set finished_at = now() - interval '2 hours' where id in (:s_old, :c_old, :d_old);
update pgq.jobs set finished_at = now() - interval '10 minutes' where id = :s_new;

select throws_ok('select pgq.prune(interval ''-1 hour'')',
    'PQ001', null, 'prune with a negative older_than is refused with invalid_argument');
select throws_ok('select pgq.prune(null)',
    'PQ001', null, 'prune with a NULL older_than is refused with invalid_argument');
select throws_ok('select pgq.prune(interval ''1 hour'', null)',
    'PQ001', null, 'prune with a NULL include_dead is refused with invalid_argument');
select is((select count(*)::integer from pgq.jobs j where j.queue = :'qp'), 6,
    'the refused prunes deleted nothing');

select is(pgq.prune(interval '1 hour'), 2, 'prune returns how many jobs it deleted');
select results_eq(format('select j.id from pgq.jobs j where j.queue = %L order by j.id', :'qp'),
    format('select unnest(array[%s, %s, %s, %s]::bigint[]) order by 1', :s_new, :d_old, :a_job, :r_job),
    'prune deleted the succeeded and cancelled jobs finished before now() - older_than, and only them');
select is_empty(format('select from pgq.attempt_errors e where e.job_id = %s', :s_old),
    'prune deleted the pruned job''s errors');
select is_empty(format('select from pgq.once_markers m where m.job_id = %s', :s_old),
    'prune deleted the pruned job''s run-once markers');
select is((select count(*)::integer from pgq.attempt_errors e where e.job_id in (:s_new, :d_old)), 2,
    'prune kept the errors of the jobs it kept');
select isnt(pgq.enqueue('mail', '{}', :'qp', idempotency_key => :'pkey'), :s_old::bigint,
    'the pruned job''s idempotency key is free: enqueue with it creates a new job');
select is((select count(*)::integer from pgq.jobs j where j.idempotency_key = :'pkey' and j.state = 'available'), 1,
    'the new job holds the key');

select is(pgq.prune(interval '1 hour', include_dead => true), 1,
    'prune with include_dead deletes the old dead job too');
select is_empty(format('select from pgq.jobs j where j.id = %s', :d_old), 'the old dead job is gone');
select is_empty(format('select from pgq.attempt_errors e where e.job_id = %s', :d_old),
    'with its errors');
-- Finished before now(): s_new, and the succeeded and cancelled jobs from the
-- cancel tests above (finished a minute ago).
select is(pgq.prune(interval '0'), 3, 'prune of interval 0 deletes every job finished before now()');
select is_empty(format('select from pgq.jobs j where j.id in (%s, %s)', :done_id, :avail_id),
    'the succeeded and cancelled jobs of a minute ago are gone');
select is_empty(format('select from pgq.jobs j where j.id = %s', :s_new), 'the recent succeeded job is gone');
select is((select count(*)::integer from pgq.jobs j where j.id in (:a_job, :r_job)), 2,
    'prune never deletes available or running jobs');

-- prune works in batches: at most batch jobs per call, lowest ids first; the
-- caller calls again until 0.
select pgq_test.fresh_queue('pruneb') as qb5 \gset
select array_agg(pgq.enqueue('mail', '{}', :'qb5') order by g)::text as b5_ids
  from generate_series(1, 5) g \gset
select count(pgq.cancel(i)) as s from unnest(:'b5_ids'::bigint[]) i \gset
update pgq.jobs set finished_at = now() - interval '2 hours' where id = any (:'b5_ids'::bigint[]);
select job_id as b5_run, lease_token as b5_run_t from pgq_test.running_job('mail', null, :'qb5') \gset
select throws_ok('select pgq.prune(interval ''1 hour'', batch => 0)',
    'PQ001', 'invalid batch 0: must be between 1 and 100000, or NULL for 5000',
    'prune with batch 0 is refused with invalid_argument');
select throws_ok('select pgq.prune(interval ''1 hour'', batch => -1)',
    'PQ001', null, 'prune with a negative batch is refused with invalid_argument');
select throws_ok('select pgq.prune(interval ''1 hour'', batch => 100001)',
    'PQ001', null, 'prune with a batch over 100000 is refused with invalid_argument');
select is((select count(*)::integer from pgq.jobs j where j.queue = :'qb5'), 6,
    'the refused prunes deleted nothing');
select is(pgq.prune(interval '1 hour', batch => 2), 2, 'prune deletes at most batch jobs per call');
select results_eq(format('select j.id from pgq.jobs j where j.queue = %L and j.state = %L order by j.id',
                         :'qb5', 'cancelled'),
    format('select unnest(%L::bigint[]) offset 2', :'b5_ids'),
    'a batch takes the lowest ids first');
select is(pgq.prune(interval '1 hour', batch => 2), 2, 'the next call deletes the next batch');
select is(pgq.prune(interval '1 hour', batch => 2), 1, 'the last call deletes what is left');
select is(pgq.prune(interval '1 hour', batch => 2), 0, 'a call with nothing left to prune returns 0');
select is((select j.state from pgq.jobs j where j.queue = :'qb5'), 'running',
    'the batches never deleted the running job');

-- Without batch, one call deletes at most 5000 jobs.
select pgq_test.fresh_queue('prunebig') as qbig \gset
insert into pgq.jobs (queue, job_name, max_retries, state, finished_at)
select :'qbig', 'mail', 0, 'succeeded', now() - interval '2 hours' from generate_series(1, 5001);
select is(pgq.prune(interval '1 hour'), 5000, 'prune without batch deletes at most 5000 jobs');
select is(pgq.prune(interval '1 hour', batch => null), 1, 'batch NULL is the same 5000: one job was left');

-- retry_dead in batches: at most batch jobs, lowest ids first; NULL is all.
select pgq_test.fresh_queue('rdbatch') as qrd \gset
select job_id as rd1, lease_token as rd1_t from pgq_test.running_job('mail', 0, :'qrd') \gset
select pgq.fail(:rd1, :'rd1_t', 'x') as s \gset
select job_id as rd2, lease_token as rd2_t from pgq_test.running_job('mail', 0, :'qrd') \gset
select pgq.fail(:rd2, :'rd2_t', 'x') as s \gset
select job_id as rd3, lease_token as rd3_t from pgq_test.running_job('mail', 0, :'qrd') \gset
select pgq.fail(:rd3, :'rd3_t', 'x') as s \gset
select throws_ok(format('select pgq.retry_dead(%L, batch => 0)', :'qrd'),
    'PQ001', 'invalid batch 0: must be between 1 and 100000, or NULL for all',
    'retry_dead with batch 0 is refused with invalid_argument');
select throws_ok(format('select pgq.retry_dead(%L, batch => 100001)', :'qrd'),
    'PQ001', null, 'retry_dead with a batch over 100000 is refused with invalid_argument');
select is((select count(*)::integer from pgq.jobs j where j.queue = :'qrd' and j.state = 'dead'), 3,
    'the refused retry_dead calls left the jobs dead');
select is(pgq.retry_dead(:'qrd', batch => 2), 2, 'retry_dead retries at most batch jobs per call');
select results_eq(format('select j.id, j.state from pgq.jobs j where j.queue = %L order by j.id', :'qrd'),
    format('values (%s::bigint, %L::text), (%s, %L), (%s, %L)',
           :rd1, 'available', :rd2, 'available', :rd3, 'dead'),
    'a retry_dead batch takes the lowest ids first');
select is(pgq.retry_dead(:'qrd', batch => 2), 1, 'the next call retries what is left');
select is(pgq.retry_dead(:'qrd', batch => 2), 0, 'a call with no dead job left returns 0');

-- Privileges: only admins run operator calls.
select pgq.enqueue('mail', '{}', :'qp') as op_id \gset
set local role pgq_producer;
select throws_ok(format('select pgq.cancel(%s)', :op_id), '42501', null, 'pgq_producer may not call cancel');
select throws_ok(format('select pgq.retry(%s)', :op_id), '42501', null, 'pgq_producer may not call retry');
select throws_ok('select pgq.retry_dead()', '42501', null, 'pgq_producer may not call retry_dead');
select throws_ok('select pgq.prune(interval ''1 day'')', '42501', null, 'pgq_producer may not call prune');
reset role;
set local role pgq_worker;
select throws_ok(format('select pgq.cancel(%s)', :op_id), '42501', null, 'pgq_worker may not call cancel');
select throws_ok(format('select pgq.retry(%s)', :op_id), '42501', null, 'pgq_worker may not call retry');
select throws_ok('select pgq.retry_dead()', '42501', null, 'pgq_worker may not call retry_dead');
select throws_ok('select pgq.prune(interval ''1 day'')', '42501', null, 'pgq_worker may not call prune');
reset role;
select is((pgq_test.job(:op_id)).state, 'available', 'the refused calls left the job available');
set local role pgq_admin;
select lives_ok(format('select pgq.cancel(%s)', :op_id), 'pgq_admin may call cancel');
select lives_ok(format('select pgq.retry(%s)', :op_id), 'pgq_admin may call retry');
select lives_ok('select pgq.retry_dead()', 'pgq_admin may call retry_dead');
select lives_ok('select pgq.prune(interval ''1 day'')', 'pgq_admin may call prune');
reset role;
select row_eq(format('select j.state, j.finished_at from pgq.jobs j where j.id = %s', :op_id),
    row('available'::text, null::timestamptz), 'the admin''s cancel and retry took effect');

-- retry clears what the last run left: its result, and a reaped holder's token.
select job_id as rz_id, lease_token as rz_token, queue as rz_queue from pgq_test.running_job('mail', 0) \gset
select pgq_test.backdate_lease(:rz_id);
select count(*) as reaped from pgq.claim('pgtap-reaper', array[:'rz_queue']) \gset
select is((pgq_test.job(:rz_id)).lapsed_lease_token, :'rz_token'::uuid,
    'the reaped job keeps its holder''s token as lapsed');
select pgq.retry(:rz_id);
select row_eq(format('select j.state, j.lease_token, j.lapsed_lease_token, j.result from pgq.jobs j where j.id = %s', :rz_id),
    row('available'::text, null::uuid, null::uuid, null::jsonb),
    'retry leaves no token of an earlier attempt');

select * from finish();
rollback;

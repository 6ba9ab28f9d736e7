-- pgtap_tests/80_views.sql: pgq.queue_stats, pgq.dead_letter, pgq.job_errors,
-- pgq.job_details and who may read them.
begin;
\ir _fixtures.psql
select plan(70);

-- The columns the contract names.
select has_column('pgq', 'queue_stats', c, format('queue_stats has column %s', c))
  from unnest(array['queue', 'available', 'scheduled', 'running', 'succeeded', 'dead',
                    'cancelled', 'oldest_runnable_age', 'paused']) as c;
select has_column('pgq', 'queue_stats', c, format('queue_stats shows the flow limit %s', c))
  from unnest(array['concurrency', 'rate_limit', 'rate_period', 'key_concurrency']) as c;
select is((select array_agg(a.attname::text order by a.attnum) from pg_catalog.pg_attribute a
            where a.attrelid = 'pgq.queue_stats'::regclass and a.attnum > 0),
    array['queue', 'available', 'scheduled', 'running', 'succeeded', 'dead', 'cancelled',
          'oldest_runnable_age', 'paused', 'concurrency', 'rate_limit', 'rate_period', 'key_concurrency'],
    'queue_stats adds the flow limits after its earlier columns');
select pgq_test.fresh_queue('limits') as q_lim \gset
select pgq.configure_queue(:'q_lim');
select row_eq(format('select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency from pgq.queue_stats s where s.queue = %L', :'q_lim'),
    row(0, 0, interval '1 second', 0), 'queue_stats shows 0 (no limit) for a queue without flow limits');
select pgq.configure_queue(:'q_lim', concurrency => 4, rate_limit => 50, rate_period => interval '10 seconds',
                           key_concurrency => 2);
select row_eq(format('select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency from pgq.queue_stats s where s.queue = %L', :'q_lim'),
    row(4, 50, interval '10 seconds', 2), 'queue_stats shows the flow limits configure_queue set');
select has_column('pgq', 'dead_letter', c, format('dead_letter has column %s', c))
  from unnest(array['id', 'queue', 'job_name', 'payload', 'attempt', 'last_error']) as c;
select has_column('pgq', 'job_errors', c, format('job_errors has column %s', c))
  from unnest(array['job_id', 'queue', 'job_name', 'attempt', 'error', 'worker_id', 'failed_at']) as c;
select has_column('pgq', 'job_details', c, format('job_details has column %s', c))
  from unnest(array['id', 'queue', 'job_name', 'state', 'payload', 'attempt', 'run_at',
                    'lease_expires_at', 'last_error']) as c;
select hasnt_column('pgq', v, 'lease_token', format('%s does not expose lease tokens', v))
  from unnest(array['queue_stats', 'dead_letter', 'job_errors', 'job_details']) as v;

-- A queue with jobs in every state.
select pgq_test.fresh_queue('stats') as q \gset
select job_id as dead_id, lease_token as t from pgq_test.running_job('mail', 0, :'q') \gset
select pgq.fail(:dead_id, :'t', 'it broke') as s \gset
select job_id as done_id, lease_token as t from pgq_test.running_job('mail', null, :'q') \gset
select pgq.complete(:done_id, :'t');
select job_id as backoff_id, lease_token as t from pgq_test.running_job('mail', null, :'q') \gset
select pgq.fail(:backoff_id, :'t', 'try later') as s \gset
select job_id as run_id, lease_token as t from pgq_test.running_job('mail', null, :'q') \gset
select pgq.enqueue('mail', '{}', :'q') as cancel_id \gset
select pgq.cancel(:cancel_id) as s \gset
select pgq.enqueue('mail', '{}', :'q', run_at => now() + interval '1 hour') as later_id \gset
select pgq.enqueue('mail', '{}', :'q') as due_id \gset
select pgq.enqueue('mail', '{}', :'q') as old_id \gset
update pgq.jobs set run_at = now() - interval '5 minutes' where id = :old_id;

select row_eq(format('select s.available, s.scheduled, s.running, s.succeeded, s.dead, s.cancelled, s.oldest_runnable_age, s.paused from pgq.queue_stats s where s.queue = %L',
                     :'q'),
    row(2::bigint, 2::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint, interval '5 minutes', false),
    'queue_stats counts each state: due now, scheduled (later run_at or backing off), running, finished');

select pgq_test.make_due(:later_id);
select pgq.pause(:'q');
select row_eq(format('select s.available, s.scheduled, s.paused from pgq.queue_stats s where s.queue = %L', :'q'),
    row(3::bigint, 1::bigint, true),
    'a scheduled job that became due counts as available; a paused queue shows paused');

select pgq_test.fresh_queue('empty') as qe \gset
select pgq.configure_queue(:'qe');
select row_eq(format('select s.available, s.scheduled, s.running, s.succeeded, s.dead, s.cancelled, s.oldest_runnable_age, s.paused from pgq.queue_stats s where s.queue = %L',
                     :'qe'),
    row(0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, null::interval, false),
    'a queue without jobs has one row of zeros');
select is((select count(*)::integer from pgq.queue_stats s where s.queue in (:'q', :'qe')), 2,
    'queue_stats has one row per queue');

-- dead_letter: dead jobs only, with their last error and attempt.
select pgq_test.fresh_queue('dead') as qd \gset
select job_id as d2_id, lease_token as t from pgq_test.running_job('mail', 1, :'qd') \gset
select pgq.fail(:d2_id, :'t', 'first') as s \gset
select pgq_test.make_due(:d2_id);
select c.lease_token as t from pgq.claim('pgtap-worker', array[:'qd']) c \gset
select pgq.fail(:d2_id, :'t', 'second and last') as s \gset

select results_eq(format('select d.id, d.queue, d.job_name, d.payload, d.attempt, d.last_error from pgq.dead_letter d where d.queue = %L',
                         :'q'),
    format('values (%s::bigint, %L::text, %L::text, %L::jsonb, 1, %L::text)',
           :dead_id, :'q', 'mail', '{}', 'it broke'),
    'dead_letter lists a queue''s dead jobs only, with attempt and last error');
select results_eq(format('select d.id, d.attempt, d.last_error from pgq.dead_letter d where d.queue = %L', :'qd'),
    format('values (%s::bigint, 2, %L::text)', :d2_id, 'second and last'),
    'a job dead after two attempts shows attempt 2 and the last error');

-- job_errors: every attempt's error, including an attempt whose lease expired.
select pgq_test.fresh_queue('errs') as qr \gset
select job_id as e_id, lease_token as t from pgq_test.running_job('mail', 5, :'qr') \gset
select pgq.fail(:e_id, :'t', 'e1') as s \gset
select pgq_test.make_due(:e_id);
select c.attempt as a from pgq.claim('pgtap-worker', array[:'qr']) c \gset
select pgq_test.backdate_lease(:e_id);
select count(*) as n from pgq.claim('pgtap-worker', array[:'qr']) c \gset
select pgq_test.make_due(:e_id);
select c.lease_token as t from pgq.claim('pgtap-worker-3', array[:'qr']) c \gset
select pgq.fail(:e_id, :'t', 'e3', retry => false) as s \gset

select results_eq(
    format('select e.job_id, e.queue, e.job_name, e.attempt, e.worker_id from pgq.job_errors e where e.job_id = %s order by e.attempt',
           :e_id),
    format('values (%s::bigint, %L::text, %L::text, 1, %L::text), (%s, %L, %L, 2, %L), (%s, %L, %L, 3, %L)',
           :e_id, :'qr', 'mail', 'pgtap-worker', :e_id, :'qr', 'mail', 'pgtap-worker',
           :e_id, :'qr', 'mail', 'pgtap-worker-3'),
    'job_errors lists every attempt with its number and worker');
select results_eq(format('select e.error from pgq.job_errors e where e.job_id = %s and e.attempt <> 2 order by e.attempt', :e_id),
    array['e1', 'e3'],
    'job_errors shows the error text each failed attempt gave');
select ok((select e.error like 'lease expired%' from pgq.job_errors e where e.job_id = :e_id and e.attempt = 2),
    'the attempt whose lease expired is logged as such');

-- job_details: any job, whatever its state.
select results_eq(
    format('select d.id, d.state from pgq.job_details d where d.queue = %L order by d.id', :'q'),
    format('values (%s::bigint, %L::text), (%s, %L), (%s, %L), (%s, %L), (%s, %L), (%s, %L), (%s, %L), (%s, %L)',
           :dead_id, 'dead', :done_id, 'succeeded', :backoff_id, 'available', :run_id, 'running',
           :cancel_id, 'cancelled', :later_id, 'available', :due_id, 'available', :old_id, 'available'),
    'job_details shows every job of every state');
select row_eq(format('select d.attempt, d.worker_id, d.lease_expires_at, d.last_error, d.finished_at from pgq.job_details d where d.id = %s',
                     :dead_id),
    row(1, 'pgtap-worker'::text, null::timestamptz, 'it broke'::text, now()),
    'job_details shows attempts, worker, lease and last error');

-- Privileges: admins read every view; producers and workers only error_codes.
set local role pgq_admin;
select lives_ok(format('select * from pgq.%I', v), format('pgq_admin may read %s', v))
  from unnest(array['queue_stats', 'dead_letter', 'job_errors', 'job_details', 'error_codes']) as v;
reset role;
set local role pgq_producer;
select throws_ok(format('select * from pgq.%I', v), '42501', null, format('pgq_producer may not read %s', v))
  from unnest(array['queue_stats', 'dead_letter', 'job_errors', 'job_details', 'jobs']) as v;
select lives_ok('select * from pgq.error_codes', 'pgq_producer may read error_codes');
reset role;
set local role pgq_worker;
select throws_ok(format('select * from pgq.%I', v), '42501', null, format('pgq_worker may not read %s', v))
  from unnest(array['queue_stats', 'dead_letter', 'job_errors', 'job_details', 'jobs']) as v;
select lives_ok('select * from pgq.error_codes', 'pgq_worker may read error_codes');
reset role;

select * from finish();
rollback;

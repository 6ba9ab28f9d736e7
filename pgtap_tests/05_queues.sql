-- pgtap_tests/05_queues.sql: configure_queue, pause, resume.
begin;
\ir _fixtures.psql
select plan(82);
select pgq_test.fresh_queue('cfg') as q \gset
select pgq_test.fresh_queue('new') as q_new \gset
select pgq_test.fresh_queue('bad') as q_bad \gset

-- configure_queue creates a queue with the given settings.
select lives_ok(format($$select pgq.configure_queue(%L, 7, interval '2 seconds',
                                                    interval '10 minutes', interval '45 seconds')$$, :'q'),
    'configure_queue creates a new queue');
select row_eq(format($$select s.max_retries, s.backoff_base, s.backoff_max, s.lease, s.paused
                         from pgq_test.queue_settings(%L) s$$, :'q'),
    row(7, interval '2 seconds', interval '10 minutes', interval '45 seconds', false),
    'the new queue has the given settings and is not paused');

-- With only a name, a new queue takes the defaults.
select lives_ok(format('select pgq.configure_queue(%L)', :'q_new'),
    'configure_queue with only a name creates a queue');
select row_eq(format($$select s.max_retries, s.backoff_base, s.backoff_max, s.lease, s.paused
                         from pgq_test.queue_settings(%L) s$$, :'q_new'),
    row(5, interval '1 second', interval '1 hour', interval '30 seconds', false),
    'a queue configured with only a name has the default settings');

-- Updates: NULL keeps the current value.
select lives_ok(format('select pgq.configure_queue(%L, max_retries => 3)', :'q'),
    'configure_queue updates max_retries alone');
select row_eq(format($$select s.max_retries, s.backoff_base, s.backoff_max, s.lease
                         from pgq_test.queue_settings(%L) s$$, :'q'),
    row(3, interval '2 seconds', interval '10 minutes', interval '45 seconds'),
    'only max_retries changed; the other settings were kept');
select lives_ok(format($$select pgq.configure_queue(%L, lease => interval '2 minutes',
                                                    backoff_max => interval '20 minutes')$$, :'q'),
    'configure_queue updates lease and backoff_max');
select row_eq(format($$select s.max_retries, s.backoff_base, s.backoff_max, s.lease
                         from pgq_test.queue_settings(%L) s$$, :'q'),
    row(3, interval '2 seconds', interval '20 minutes', interval '2 minutes'),
    'lease and backoff_max changed, max_retries and backoff_base kept');
select pgq_test.state_digest() as before \gset
select lives_ok(format('select pgq.configure_queue(%L, null, null, null, null)', :'q'),
    'configure_queue with every setting NULL is accepted');
select is(pgq_test.state_digest(), :'before', 'configure_queue with every setting NULL keeps them all');

-- Boundaries that are accepted.
select lives_ok(format($$select pgq.configure_queue(%L, 0, lease => interval '1 second')$$, :'q_new'),
    'max_retries 0 and a lease of 1 second are accepted');
select lives_ok(format($$select pgq.configure_queue(%L, 1000, lease => interval '1 day')$$, :'q_new'),
    'max_retries 1000 and a lease of 1 day are accepted');
select lives_ok(format($$select pgq.configure_queue(%L, backoff_base => interval '1 hour')$$, :'q_new'),
    'backoff_base equal to the current backoff_max is accepted');
select lives_ok(format('select pgq.configure_queue(%L)', repeat('q', 128)),
    'a queue name of 128 characters is accepted');

-- New jobs take the queue's settings; claim uses its lease.
select pgq.enqueue('configured', '{}', :'q') as job_id \gset
select is((pgq_test.job(:job_id)).max_retries, 3, 'a job enqueued afterwards takes the configured max_retries');
select is((select c.lease_expires_at from pgq.claim('w-cfg', array[:'q']) c),
          now() + interval '2 minutes', 'claim leases for the configured lease');

-- Every bad argument: PQ001, and nothing changed (not even the queue created).
select pgq_test.state_digest() as before \gset
select throws_ok('select pgq.configure_queue(null)', 'PQ001', null,
    'a NULL queue name is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL queue name changes nothing');
select throws_ok($$select pgq.configure_queue('')$$, 'PQ001', null,
    'an empty queue name is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused empty queue name changes nothing');
select throws_ok(format('select pgq.configure_queue(%L)', repeat('q', 129)), 'PQ001', null,
    'a queue name of 129 characters is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused oversized queue name changes nothing');
select throws_ok(format('select pgq.configure_queue(%L, -1)', :'q'), 'PQ001', null,
    'a negative max_retries is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused negative max_retries changes nothing');
select throws_ok(format('select pgq.configure_queue(%L, 1001)', :'q'), 'PQ001', null,
    'max_retries above 1000 is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused max_retries above 1000 changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, lease => interval '0')$$, :'q'), 'PQ001', null,
    'a zero lease is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused zero lease changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, lease => interval '500 milliseconds')$$, :'q'),
    'PQ001', null, 'a lease under 1 second is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused short lease changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, lease => interval '1 day 1 second')$$, :'q'),
    'PQ001', null, 'a lease over 1 day is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused long lease changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, backoff_base => interval '0')$$, :'q'),
    'PQ001', null, 'a zero backoff_base is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused zero backoff_base changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, backoff_base => interval '-1 second')$$, :'q'),
    'PQ001', null, 'a negative backoff_base is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused negative backoff_base changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, backoff_base => interval '1 minute',
                                                     backoff_max => interval '30 seconds')$$, :'q'),
    'PQ001', null, 'backoff_max below backoff_base is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused backoff_max below backoff_base changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, backoff_max => interval '1 second')$$, :'q'),
    'PQ001', null, 'backoff_max below the current backoff_base is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused backoff_max below the current base changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, backoff_base => interval '1 hour')$$, :'q'),
    'PQ001', null, 'backoff_base above the current backoff_max is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused backoff_base above the current max changes nothing');
select throws_ok(format($$select pgq.configure_queue(%L, backoff_base => interval '0')$$, :'q_bad'),
    'PQ001', null, 'a bad setting for a new queue is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused new queue is not created');

-- pause / resume.
select pgq.enqueue('paused-job', '{}', :'q_new') as paused_job \gset
select lives_ok(format('select pgq.pause(%L)', :'q_new'), 'pause pauses a known queue');
select is((pgq_test.queue_settings(:'q_new')).paused, true, 'the paused queue is marked paused');
select lives_ok(format('select pgq.pause(%L)', :'q_new'), 'pausing a paused queue again is accepted');
select is_empty(format('select * from pgq.claim(%L, array[%L], 10)', 'w-paused', :'q_new'),
    'nothing is claimed from a paused queue');
select is((pgq_test.job(:paused_job)).state, 'available', 'the job of a paused queue stays available');
select lives_ok(format($$select pgq.enqueue('while-paused', '{}', %L)$$, :'q_new'),
    'enqueue into a paused queue is accepted');
select lives_ok(format('select pgq.resume(%L)', :'q_new'), 'resume resumes a paused queue');
select is((pgq_test.queue_settings(:'q_new')).paused, false, 'the resumed queue is not paused');
select is((select array_agg(c.job_name order by c.id) from pgq.claim('w-resumed', array[:'q_new'], 10) c),
    array['paused-job', 'while-paused'], 'after resume, the queue''s jobs are claimed again');

select pgq_test.state_digest() as before \gset
select throws_ok(format('select pgq.pause(%L)', :'q_bad'), 'PQ203', null,
    'pausing an unknown queue is refused with queue_not_found');
select is(pgq_test.state_digest(), :'before', 'a refused pause changes nothing (no queue is created)');
select throws_ok(format('select pgq.resume(%L)', :'q_bad'), 'PQ203', null,
    'resuming an unknown queue is refused with queue_not_found');
select is(pgq_test.state_digest(), :'before', 'a refused resume changes nothing (no queue is created)');

-- Privileges: configure_queue, pause and resume are operator calls.
set local role pgq_producer;
select throws_ok(format('select pgq.configure_queue(%L, 1)', :'q'), '42501', null,
    'pgq_producer cannot call configure_queue');
select throws_ok(format('select pgq.pause(%L)', :'q'), '42501', null, 'pgq_producer cannot call pause');
reset role;
set local role pgq_worker;
select throws_ok(format('select pgq.configure_queue(%L, 1)', :'q'), '42501', null,
    'pgq_worker cannot call configure_queue');
select throws_ok(format('select pgq.resume(%L)', :'q'), '42501', null, 'pgq_worker cannot call resume');
reset role;
set local role pgq_admin;
select lives_ok(format($$select pgq.configure_queue(%L, 1); select pgq.pause(%L); select pgq.resume(%L)$$,
                       :'q', :'q', :'q'),
    'pgq_admin can call configure_queue, pause and resume');
reset role;

-- Flow limits: set, kept by NULL, removed by 0.
select pgq_test.fresh_queue('flow') as qf \gset
select row_eq(format($$select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency
                         from pgq_test.queue_settings(%L) s$$, :'q_new'),
    row(0, 0, interval '1 second', 0),
    'a queue has no flow limits by default (0) and a rate_period of 1 second');
select lives_ok(format($$select pgq.configure_queue(%L, concurrency => 10, rate_limit => 100,
                                                    rate_period => interval '1 minute',
                                                    key_concurrency => 2)$$, :'qf'),
    'configure_queue sets the flow limits');
select row_eq(format($$select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency, s.max_retries
                         from pgq_test.queue_settings(%L) s$$, :'qf'),
    row(10, 100, interval '1 minute', 2, 5),
    'the queue has the given flow limits and the default other settings');
select lives_ok(format($$select pgq.configure_queue(%L, max_retries => 3)$$, :'qf'),
    'configure_queue with the flow limits NULL');
select row_eq(format($$select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency, s.max_retries
                         from pgq_test.queue_settings(%L) s$$, :'qf'),
    row(10, 100, interval '1 minute', 2, 3),
    'NULL flow limits keep their current values');
select lives_ok(format($$select pgq.configure_queue(%L, concurrency => 0, key_concurrency => 0)$$, :'qf'),
    'configure_queue with concurrency 0 and key_concurrency 0');
select row_eq(format($$select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency
                         from pgq_test.queue_settings(%L) s$$, :'qf'),
    row(0, 100, interval '1 minute', 0),
    '0 removes a limit and leaves the others');

-- Bad flow limits are refused, naming the argument, and change nothing.
select pgq_test.state_digest() as before \gset
select throws_ok(format('select pgq.configure_queue(%L, concurrency => -1)', :'qf'), 'PQ001',
    'invalid concurrency -1: must be between 0 and 1000000 (0 removes the limit)',
    'a negative concurrency is refused with invalid_argument, naming it');
select throws_ok(format('select pgq.configure_queue(%L, rate_limit => -5)', :'qf'), 'PQ001',
    'invalid rate_limit -5: must be between 0 and 1000000 (0 removes the limit)',
    'a negative rate_limit is refused with invalid_argument, naming it');
select throws_ok(format('select pgq.configure_queue(%L, key_concurrency => 1000001)', :'qf'), 'PQ001',
    'invalid key_concurrency 1000001: must be between 0 and 1000000 (0 removes the limit)',
    'a key_concurrency above 1000000 is refused with invalid_argument, naming it');
select throws_ok(format($$select pgq.configure_queue(%L, rate_period => interval '0')$$, :'qf'), 'PQ001',
    'invalid rate_period 00:00:00: must be between 1 millisecond and 1 day',
    'a zero rate_period is refused with invalid_argument, naming it');
select throws_ok(format($$select pgq.configure_queue(%L, rate_limit => 5, rate_period => interval '-1 second')$$, :'qf'),
    'PQ001', null, 'a negative rate_period is refused, also beside a good rate_limit');
select throws_ok(format($$select pgq.configure_queue(%L, rate_period => interval '1 day 1 second')$$, :'qf'),
    'PQ001', null, 'a rate_period above 1 day is refused');
select throws_ok(format($$select pgq.configure_queue(%L, concurrency => 3, key_concurrency => -1)$$, :'qf'),
    'PQ001', null, 'a bad key_concurrency beside a good concurrency is refused');
select is(pgq_test.state_digest(), :'before', 'the refused flow limits changed nothing');
select row_eq(format($$select s.concurrency, s.rate_limit, s.rate_period, s.key_concurrency
                         from pgq_test.queue_settings(%L) s$$, :'qf'),
    row(0, 100, interval '1 minute', 0),
    'the refused calls left the flow limits as they were');

-- Removing the rate limit forgets its window.
insert into pgq.queue_starts (queue, started_at) values (:'qf', now());
select lives_ok(format('select pgq.configure_queue(%L, rate_limit => 0)', :'qf'),
    'configure_queue with rate_limit 0');
select is((select count(*)::integer from pgq.queue_starts s where s.queue = :'qf'), 0,
    'rate_limit 0 drops the queue''s logged starts');

-- Only admins configure limits.
set local role pgq_worker;
select throws_ok(format('select pgq.configure_queue(%L, concurrency => 1)', :'qf'), '42501', null,
    'pgq_worker cannot set flow limits');
reset role;
set local role pgq_admin;
select lives_ok(format('select pgq.configure_queue(%L, concurrency => 1)', :'qf'),
    'pgq_admin can set flow limits');
reset role;

select * from finish();
rollback;

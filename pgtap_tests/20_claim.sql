-- pgtap_tests/20_claim.sql: claim, and the failing of expired leases it does first.
begin;
\ir _fixtures.psql
select plan(122);

-- The result columns.
select is((select array_agg(a.name order by a.ord)
             from pg_catalog.pg_proc p,
                  unnest(p.proargnames, p.proargmodes) with ordinality as a(name, mode, ord)
            where p.oid = 'pgq.claim(text, text[], integer, interval)'::regprocedure
              and a.mode = 't'),
    array['id', 'job_name', 'queue', 'payload', 'attempt', 'max_retries', 'lease_token',
          'lease_expires_at', 'priority', 'run_at', 'created_at', 'lease_duration'],
    'claim returns id, job_name, queue, payload, attempt, max_retries, lease_token, lease_expires_at, priority, run_at, created_at, lease_duration');

-- Order: priority, then run_at, then id; one claim at a time.
select pgq_test.fresh_queue('order') as q \gset
select pgq.enqueue_many(array['a', 'b', 'c', 'd', 'e'], queues => array_fill(:'q'::text, array[5]),
                        run_ats => array[now() - interval '1 hour', now(), now() - interval '2 hours',
                                         now() - interval '1 hour', now() - interval '3 hours'],
                        priorities => array[0, -1, 0, 0, 5]) as ids \gset
select c.job_name as c1 from pgq.claim('w-order', array[:'q']) c \gset
select c.job_name as c2 from pgq.claim('w-order', array[:'q']) c \gset
select c.job_name as c3 from pgq.claim('w-order', array[:'q']) c \gset
select c.job_name as c4 from pgq.claim('w-order', array[:'q']) c \gset
select c.job_name as c5 from pgq.claim('w-order', array[:'q']) c \gset
select is(array[:'c1', :'c2', :'c3', :'c4', :'c5'], array['b', 'c', 'a', 'd', 'e'],
    'claims take the lowest priority first, then the earliest run_at, then the lowest id');
select is_empty(format('select * from pgq.claim(%L, array[%L])', 'w-order', :'q'),
    'a queue whose jobs are all running yields nothing (a held job is never claimed again)');

-- The same order within one batch, and batch limits the count.
select pgq_test.fresh_queue('batch') as q \gset
select pgq.enqueue_many(array['a', 'b', 'c', 'd', 'e'], queues => array_fill(:'q'::text, array[5]),
                        run_ats => array[now() - interval '1 hour', now(), now() - interval '2 hours',
                                         now() - interval '1 hour', now() - interval '3 hours'],
                        priorities => array[0, -1, 0, 0, 5]) as ids \gset
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-batch', array[:'q'], 2) with ordinality as c),
    array['b', 'c'], 'batch 2 claims the two best jobs, in claim order');
select is((select count(*) from pgq.jobs j where j.queue = :'q' and j.state = 'available'), 3::bigint,
    'the jobs beyond the batch stay available');
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-batch', array[:'q'], 10) with ordinality as c),
    array['a', 'd', 'e'], 'a larger batch returns the rest, in claim order');

-- A job not yet due waits.
select pgq_test.fresh_queue('due') as q \gset
select pgq.enqueue('later', '{}', :'q', now() + interval '1 hour') as job_id \gset
select is_empty(format('select * from pgq.claim(%L, array[%L], 10)', 'w-due', :'q'),
    'a job whose run_at is in the future is not claimed');
select is((pgq_test.job(:job_id)).state, 'available', 'the job not yet due stays available');
select pgq_test.make_due(:job_id) as made_due \gset
select is((select c.id from pgq.claim('w-due', array[:'q']) c), :job_id::bigint,
    'once due, the job is claimed');

-- Finished jobs never come back.
select pgq_test.fresh_queue('done') as q \gset
select pgq.enqueue_many(array['ok', 'bad', 'stop', 'drop'], queues => array_fill(:'q'::text, array[4])) as ids \gset
select array_agg(c.id order by c.ordinality) as claimed_ids, array_agg(c.lease_token order by c.ordinality) as tokens
  from pgq.claim('w-done', array[:'q'], 3) with ordinality as c \gset
select pgq.complete((:'claimed_ids'::bigint[])[1], (:'tokens'::uuid[])[1]) as completed \gset
select pgq.fail((:'claimed_ids'::bigint[])[2], (:'tokens'::uuid[])[2], 'boom', retry => false) as failed \gset
select pgq.cancel((:'claimed_ids'::bigint[])[3]) as cancelled_running \gset
select pgq.cancel((:'ids'::bigint[])[4]) as cancelled_available \gset
select is((select array_agg(j.state order by j.id) from pgq.jobs j where j.queue = :'q'),
    array['succeeded', 'dead', 'cancelled', 'cancelled'], 'the queue holds one succeeded, one dead and two cancelled jobs');
select is_empty(format('select * from pgq.claim(%L, array[%L], 10)', 'w-done', :'q'),
    'succeeded, dead and cancelled jobs are never claimed');

-- Several queues in one claim; queues not named are not read.
select pgq_test.fresh_queue('x') as qx \gset
select pgq_test.fresh_queue('y') as qy \gset
select pgq_test.fresh_queue('z') as qz \gset
select pgq.enqueue('in-x', '{}', :'qx', priority => 1) as x_id \gset
select pgq.enqueue('in-y', '{}', :'qy', priority => 0) as y_id \gset
select pgq.enqueue('in-z', '{}', :'qz', priority => -5) as z_id \gset
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-multi', array[:'qx', :'qy'], 10) with ordinality as c),
    array['in-y', 'in-x'], 'one claim takes jobs from every named queue, in priority order across them');
select is((pgq_test.job(:z_id)).state, 'available', 'a queue not named in the claim is not read');

-- A paused queue is skipped.
select pgq_test.fresh_queue('p1') as qp1 \gset
select pgq_test.fresh_queue('p2') as qp2 \gset
select pgq.enqueue('open', '{}', :'qp1') as open_id \gset
select pgq.enqueue('held', '{}', :'qp2', priority => -10) as held_id \gset
select pgq.pause(:'qp2') as paused \gset
select is((select array_agg(c.job_name) from pgq.claim('w-paused', array[:'qp1', :'qp2'], 10) c),
    array['open'], 'a paused queue is skipped, the other named queue is claimed from');
select is((pgq_test.job(:held_id)).state, 'available', 'the paused queue''s job stays available');

-- A queue that was never used yields nothing, and is not created.
select pgq_test.fresh_queue('never') as q \gset
select is_empty(format('select * from pgq.claim(%L, array[%L])', 'w-never', :'q'),
    'claiming from a queue never used returns no rows');
select is(pgq_test.queue_settings(:'q') is null, true, 'claiming from a queue never used does not create it');

-- queues defaults to '{default}'.
select pgq.enqueue('dflt') as dflt_id \gset
select is((select c.id from pgq.claim('w-default') c), :dflt_id::bigint,
    'claim with no queues reads the default queue');

-- The returned row and the job's row after a claim.
select pgq_test.fresh_queue('cols') as q \gset
select pgq.enqueue('cols', '{"k": "v"}', :'q', now() - interval '1 minute', 2, 4) as job_id \gset
select c.* from pgq.claim('worker-7', array[:'q']) c \gset c_
select is(:c_id::bigint, :job_id::bigint, 'claim returns the job''s id');
select row_eq(format($$select c.job_name, c.queue, c.payload, c.attempt, c.max_retries, c.priority,
                              c.run_at, c.created_at
                         from (values (%L, %L, %L::jsonb, %s, %s, %s, %L::timestamptz, %L::timestamptz))
                              as c(job_name, queue, payload, attempt, max_retries, priority, run_at, created_at)$$,
                      :'c_job_name', :'c_queue', :'c_payload', :c_attempt, :c_max_retries, :c_priority,
                      :'c_run_at', :'c_created_at'),
    row('cols'::text, :'q'::text, '{"k": "v"}'::jsonb, 1, 4, 2, now() - interval '1 minute', now()),
    'claim returns the job''s name, queue, payload, attempt 1, max_retries, priority, run_at and created_at');
select is(:'c_lease_token'::uuid, (pgq_test.job(:job_id)).lease_token,
    'the returned lease token is the job''s current one');
select is(:'c_lease_expires_at'::timestamptz, now() + interval '30 seconds',
    'lease_expires_at is now() + the queue''s lease (30 seconds by default)');
select row_eq(format($$select j.state, j.attempt, j.worker_id, j.started_at, j.lease_duration,
                              j.lease_expires_at
                         from pgq.jobs j where j.id = %s$$, :job_id),
    row('running'::text, 1, 'worker-7'::text, now(), interval '30 seconds', now() + interval '30 seconds'),
    'the job is running, attempt 1, with the worker id, start time and lease recorded');

-- The lease: the argument, else the queue's setting.
select pgq_test.fresh_queue('lease') as q \gset
select pgq.enqueue('leased', '{}', :'q') as job_id \gset
select is((select c.lease_expires_at from pgq.claim('w-lease', array[:'q'], 1, interval '5 minutes') c),
    now() + interval '5 minutes', 'a lease argument sets lease_expires_at to now() + lease');
select is((pgq_test.job(:job_id)).lease_duration, interval '5 minutes',
    'the lease argument is kept as the job''s lease duration (for heartbeats)');
select pgq_test.fresh_queue('lease2') as q \gset
select pgq.configure_queue(:'q', lease => interval '2 minutes') as configured \gset
select pgq.enqueue('leased', '{}', :'q') as job_id \gset
select is((select c.lease_expires_at from pgq.claim('w-lease', array[:'q']) c),
    now() + interval '2 minutes', 'without a lease argument the configured queue lease applies');

-- Lease expiry, and bad arguments (which must not even expire leases).
select pgq_test.fresh_queue('crash') as q_crash \gset
select pgq.configure_queue(:'q_crash', max_retries => 3, backoff_base => interval '10 minutes',
                           backoff_max => interval '1 hour') as configured \gset
select job_id as crash_id, lease_token as crash_token
  from pgq_test.running_job('crashy', queue_name => :'q_crash') \gset
select job_id as healthy_id, lease_token as healthy_token from pgq_test.running_job('healthy') \gset
select pgq_test.fresh_queue('bad') as q_bad \gset
select pgq.enqueue('waiting', '{}', :'q_bad') as waiting_id \gset
select pgq_test.backdate_lease(:crash_id) as backdated \gset

select pgq_test.state_digest() as before \gset
select throws_ok(format('select * from pgq.claim(null, array[%L])', :'q_bad'), 'PQ001', null,
    'a NULL worker_id is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL worker_id changes nothing');
select throws_ok(format($$select * from pgq.claim('', array[%L])$$, :'q_bad'), 'PQ001', null,
    'an empty worker_id is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused empty worker_id changes nothing');
select throws_ok(format('select * from pgq.claim(%L, array[%L])', repeat('w', 201), :'q_bad'), 'PQ001', null,
    'a worker_id of 201 characters is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused oversized worker_id changes nothing');
select throws_ok($$select * from pgq.claim('w-bad', null)$$, 'PQ001', null,
    'NULL queues are refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'refused NULL queues change nothing');
select throws_ok($$select * from pgq.claim('w-bad', '{}')$$, 'PQ001', null,
    'an empty queues array is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused empty queues array changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L, null])$$, :'q_bad'), 'PQ001', null,
    'a queues array holding a NULL is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused queues array with a NULL changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L], 0)$$, :'q_bad'), 'PQ001', null,
    'batch 0 is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused batch 0 changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L], 10001)$$, :'q_bad'), 'PQ001', null,
    'batch 10001 is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused batch 10001 changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L], null)$$, :'q_bad'), 'PQ001', null,
    'a NULL batch is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL batch changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L], 1, interval '0')$$, :'q_bad'), 'PQ001', null,
    'a zero lease is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused zero lease changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L], 1, interval '-1 minute')$$, :'q_bad'),
    'PQ001', null, 'a negative lease is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused negative lease changes nothing');
select throws_ok(format($$select * from pgq.claim('w-bad', array[%L], 1, interval '1 day 1 second')$$, :'q_bad'),
    'PQ001', null, 'a lease over 1 day is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused long lease changes nothing (the expired lease is not yet failed)');

-- Boundaries that are accepted; this claim also fails the expired lease.
select is((select array_agg(c.id) from pgq.claim(repeat('w', 200), array[:'q_bad'], 10000, interval '1 day') c),
    array[:waiting_id::bigint], 'a worker_id of 200 characters, batch 10000 and a lease of 1 day are accepted');

select is((pgq_test.job(:crash_id)).state, 'available',
    'the next claim (of any queue) fails a job whose lease expired; with attempts left it is available');
select is((pgq_test.job(:crash_id)).attempt, 1, 'the expired attempt counts: attempt stays 1');
select matches((pgq_test.job(:crash_id)).last_error, '^lease expired',
    'last_error says the lease expired');
select ok((pgq_test.job(:crash_id)).run_at between now() + interval '5 minutes' and now() + interval '10 minutes',
    'the retry is scheduled by the queue''s backoff (in [base/2, base] after the first attempt)');
select ok((pgq_test.job(:crash_id)).lease_token is null and (pgq_test.job(:crash_id)).lease_expires_at is null,
    'the expired lease token and expiry are cleared');
select results_eq(format($$select e.attempt, e.error ~ '^lease expired', e.worker_id
                            from pgq.job_errors e where e.job_id = %s$$, :crash_id),
    $$values (1, true, 'pgtap-worker'::text)$$,
    'pgq.job_errors keeps the expired attempt with its error and worker');
select row_eq(format('select j.state, j.lease_token from pgq.jobs j where j.id = %s', :healthy_id),
    row('running'::text, :'healthy_token'::uuid), 'a job whose lease has not expired keeps running');
select pgq_test.make_due(:crash_id) as made_due \gset
select row_eq(format($$select c.id, c.attempt, c.lease_token = %L from pgq.claim('w-next', array[%L]) c$$,
                     :'crash_token', :'q_crash'),
    row(:crash_id::bigint, 2, false), 'once due, the retry is claimed as attempt 2 with a new lease token');
select throws_ok(format('select pgq.complete(%s, %L)', :crash_id, :'crash_token'), 'PQ101', null,
    'once another attempt claimed the job, the worker whose lease expired can no longer complete it');
select row_eq(format('select j.state, j.worker_id from pgq.jobs j where j.id = %s', :crash_id),
    row('running'::text, 'w-next'::text), 'the refused stale complete changed nothing');

-- At its last attempt, an expired lease dead-letters the job.
select job_id as last_id from pgq_test.running_job('last-chance', 0) \gset
select pgq_test.backdate_lease(:last_id) as backdated \gset
select is_empty(format('select * from pgq.claim(%L, array[%L])', 'w-last', pgq_test.fresh_queue()),
    'a claim from an empty queue returns nothing (and fails expired leases)');
select row_eq(format('select j.state, j.attempt, j.finished_at, j.lease_token from pgq.jobs j where j.id = %s', :last_id),
    row('dead'::text, 1, now(), null::uuid), 'a job whose last attempt''s lease expired is dead');
select matches((select d.last_error from pgq.dead_letter d where d.id = :last_id), '^lease expired',
    'the dead job is in pgq.dead_letter with the lease expiry as its last error');

-- A job that kills its worker every time ends in the dead letter after max_retries + 1 runs.
select pgq_test.fresh_queue('killer') as q_kill \gset
select job_id as kill_id from pgq_test.running_job('killer', 2, :'q_kill') \gset
select pgq_test.backdate_lease(:kill_id) as backdated \gset
select count(*) as n from pgq.claim('w-kill', array[:'q_kill']) \gset
select pgq_test.make_due(:kill_id) as made_due \gset
select c.attempt as second_attempt from pgq.claim('w-kill', array[:'q_kill']) c \gset
select pgq_test.backdate_lease(:kill_id) as backdated \gset
select count(*) as n from pgq.claim('w-kill', array[:'q_kill']) \gset
select pgq_test.make_due(:kill_id) as made_due \gset
select c.attempt as third_attempt from pgq.claim('w-kill', array[:'q_kill']) c \gset
select pgq_test.backdate_lease(:kill_id) as backdated \gset
select count(*) as n from pgq.claim('w-kill', array[:'q_kill']) \gset
select is(array[:second_attempt, :third_attempt], array[2, 3], 'the crashing job was claimed again as attempts 2 and 3');
select row_eq(format('select j.state, j.attempt from pgq.jobs j where j.id = %s', :kill_id),
    row('dead'::text, 3), 'after max_retries + 1 expired leases the job is dead');
select is((select array_agg(e.attempt order by e.attempt) from pgq.job_errors e
            where e.job_id = :kill_id and e.error ~ '^lease expired'),
    array[1, 2, 3], 'every expired attempt is kept in pgq.job_errors');
select pgq_test.make_due(:kill_id) as made_due \gset
select is_empty(format('select * from pgq.claim(%L, array[%L])', 'w-kill', :'q_kill'),
    'the dead job is never claimed again');

-- release_lost_claims: a worker whose claim answer was lost gets back to a clean slate.
select pgq_test.fresh_queue('lost') as q_lost \gset
select pgq.enqueue_many(array['a', 'b', 'c', 'd'], queues => array_fill(:'q_lost'::text, array[4]));
select array_agg(c.id order by c.id) as lost_ids from pgq.claim('w-lost', array[:'q_lost'], 3) c \gset
select (:'lost_ids'::bigint[])[1] as held_id, (:'lost_ids'::bigint[])[2] as orphan_id,
       (:'lost_ids'::bigint[])[3] as expired_id \gset
select id as other_id from pgq.claim('w-other', array[:'q_lost'], 1) \gset
select pgq_test.backdate_lease(:expired_id);
select is(pgq.release_lost_claims('w-lost', array[:held_id]::bigint[]), 1,
    'release_lost_claims releases the one job the worker does not hold');
select is((select row(j.state, j.attempt, j.lease_token is null, j.started_at is null)::text
             from pgq.jobs j where j.id = :orphan_id),
    row('available', 0, true, true)::text,
    'the released job is available again, its attempt not counted');
select is((pgq_test.job(:held_id)).state, 'running', 'a job the worker holds stays running');
select is((pgq_test.job(:other_id)).worker_id, 'w-other', 'another worker''s job is untouched');
select is((pgq_test.job(:expired_id)).state, 'running',
    'a job whose lease expired is left for claim to fail (its attempt did run)');
select is(pgq.release_lost_claims('w-lost', array[:held_id]::bigint[]), 0,
    'releasing again finds nothing');
select pgq_test.state_digest() as before_release \gset
select throws_ok('select pgq.release_lost_claims(null, ''{}'')', 'PQ001', null,
    'release_lost_claims without a worker_id is refused with invalid_argument');
select throws_ok('select pgq.release_lost_claims(''w-lost'', null)', 'PQ001', null,
    'release_lost_claims without held_job_ids is refused with invalid_argument');
set local role pgq_producer;
select throws_ok('select pgq.release_lost_claims(''w-lost'', ''{}'')', '42501', null,
    'pgq_producer cannot call release_lost_claims');
reset role;
select is(pgq_test.state_digest(), :'before_release', 'the refused calls changed nothing');
set local role pgq_worker;
select is(pgq.release_lost_claims('w-nobody', '{}'), 0, 'pgq_worker can call release_lost_claims');
reset role;

-- Flow control: queue concurrency. A claim held back returns fewer rows, not an error.
select pgq_test.fresh_queue('conc') as q \gset
select pgq.configure_queue(:'q', concurrency => 2);
select pgq.enqueue_many(array['a', 'b', 'c', 'd', 'e'], queues => array_fill(:'q'::text, array[5]),
                        priorities => array[3, 1, 2, 5, 4]) as ids \gset
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-conc', array[:'q'], 5) with ordinality as c),
    array['b', 'c'], 'with concurrency 2 a claim of 5 takes the 2 best jobs');
select lives_ok(format('select * from pgq.claim(%L, array[%L], 5)', 'w-conc', :'q'),
    'a claim held back by concurrency is not an error');
select is_empty(format('select * from pgq.claim(%L, array[%L], 5)', 'w-conc', :'q'),
    'a queue at its concurrency yields no job');
select is_empty(format('select * from pgq.claim(%L, array[%L], 1)', 'w-conc', :'q'),
    'a batch of 1 is held back too');
select j.id as done_id, j.lease_token as done_token from pgq.jobs j
 where j.queue = :'q' and j.job_name = 'b' \gset
select pgq.complete(:done_id, :'done_token');
select is((select array_agg(c.job_name) from pgq.claim('w-conc', array[:'q'], 5) c),
    array['a'], 'a finished job frees its place for the next best job');
select is((select count(*)::integer from pgq.jobs j where j.queue = :'q' and j.state = 'running'), 2,
    'the queue runs at most its concurrency');

-- Flow control: the rate limit counts starts in a sliding rate_period.
select pgq_test.fresh_queue('rate') as q \gset
select pgq.configure_queue(:'q', rate_limit => 3, rate_period => interval '1 hour');
select pgq.enqueue_many(array_fill('r'::text, array[8]), queues => array_fill(:'q'::text, array[8])) as ids \gset
select is((select count(*)::integer from pgq.claim('w-rate', array[:'q'], 2)), 2,
    'a rate-limited queue gives jobs up to its rate_limit');
select is((select count(*)::integer from pgq.claim('w-rate', array[:'q'], 5)), 1,
    'the next claim gets only what is left of the rate_limit in the window');
select lives_ok(format('select * from pgq.claim(%L, array[%L], 5)', 'w-rate', :'q'),
    'a claim held back by the rate limit is not an error');
select is_empty(format('select * from pgq.claim(%L, array[%L], 5)', 'w-rate', :'q'),
    'a queue that used its rate_limit in the window yields no job');
select is((select count(*)::integer from pgq.queue_starts s where s.queue = :'q'), 3,
    'each start of a rate-limited queue is logged once');
select pgq.complete(j.id, j.lease_token) from pgq.jobs j where j.queue = :'q' and j.state = 'running';
select is_empty(format('select * from pgq.claim(%L, array[%L], 5)', 'w-rate', :'q'),
    'finishing jobs does not give back starts: the rate counts starts, not running jobs');
update pgq.queue_starts s set started_at = s.started_at - interval '59 minutes 59 seconds'
 where s.queue = :'q' and s.started_at = (select min(m.started_at) from pgq.queue_starts m where m.queue = :'q');
select ok((select count(*) from pgq.claim('w-rate', array[:'q'], 5)) <= 1,
    'starts still inside the window keep counting');
update pgq.queue_starts s set started_at = s.started_at - interval '2 hours' where s.queue = :'q';
select is((select count(*)::integer from pgq.queue_starts s where s.queue = :'q'
             and s.started_at > clock_timestamp() - interval '1 hour'), 0,
    'with every start backdated out of the window');
select is((select count(*)::integer from pgq.claim('w-rate', array[:'q'], 5)), 3,
    'starts that slid out of the window free the rate again');
select is((select count(*)::integer from pgq.queue_starts s where s.queue = :'q'), 3,
    'the starts outside the window are removed as the window slides');

-- Flow control: per-key concurrency; a key at its limit holds back only its own jobs.
select pgq_test.fresh_queue('keys') as q \gset
select pgq.configure_queue(:'q', key_concurrency => 1);
select pgq.enqueue_many(array['a1', 'a2', 'b1', 'n1', 'a3', 'c1', 'b2'],
                        queues => array_fill(:'q'::text, array[7]),
                        concurrency_keys => array['A', 'A', 'B', null, 'A', 'C', 'B']) as ids \gset
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-keys', array[:'q'], 10) with ordinality as c),
    array['a1', 'b1', 'n1', 'c1'],
    'with key_concurrency 1 a batch takes one job per key, skipping the held-back ones, and keyless jobs');
select lives_ok(format('select * from pgq.claim(%L, array[%L], 5)', 'w-keys', :'q'),
    'a claim held back by key_concurrency is not an error');
select is_empty(format('select * from pgq.claim(%L, array[%L], 5)', 'w-keys', :'q'),
    'jobs whose keys are at their limit are not claimed');
select pgq.enqueue('d1', '{}', :'q', concurrency_key => 'D');
select is((select array_agg(c.job_name) from pgq.claim('w-keys', array[:'q'], 5) c),
    array['d1'], 'a job of a free key behind held-back jobs is claimed');
select pgq.complete(j.id, j.lease_token) from pgq.jobs j where j.queue = :'q' and j.job_name = 'a1';
select is((select array_agg(c.job_name) from pgq.claim('w-keys', array[:'q'], 5) c),
    array['a2'], 'a finished job lets the next job of its key run');
select pgq.configure_queue(:'q', key_concurrency => 3);
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-keys', array[:'q'], 5) with ordinality as c),
    array['a3', 'b2'], 'a raised key_concurrency lets more jobs of a key run at once');
select is((select max(n)::integer from (select count(*) as n from pgq.jobs j
             where j.queue = :'q' and j.state = 'running' group by j.concurrency_key) c), 2,
    'no key runs more jobs than its limit');

-- Many jobs of one key in a batch: only key_concurrency of them.
select pgq_test.fresh_queue('keys2') as q \gset
select pgq.configure_queue(:'q', key_concurrency => 2, concurrency => 3);
select pgq.enqueue_many(array_fill('k'::text, array[6]), queues => array_fill(:'q'::text, array[6]),
                        concurrency_keys => array['K', 'K', 'K', 'K', 'L', 'L']) as ids \gset
select is((select array_agg(j.concurrency_key order by c.id)
             from pgq.claim('w-keys2', array[:'q'], 10) c join pgq.jobs j on j.id = c.id),
    array['K', 'K', 'L'], 'key_concurrency and concurrency together: both limits hold');

-- A key that fills up within a batch: its later jobs are passed over, page after page,
-- until a job of another key is found.
select pgq_test.fresh_queue('keys3') as q \gset
select pgq.configure_queue(:'q', key_concurrency => 1);
select pgq.enqueue_many(array_fill('k'::text, array[25]) || array['other'],
                        queues => array_fill(:'q'::text, array[26]),
                        concurrency_keys => array_fill('K'::text, array[25]) || array['L']) as ids \gset
select is((select array_agg(j.concurrency_key order by c.id)
             from pgq.claim('w-keys3', array[:'q'], 10) c join pgq.jobs j on j.id = c.id),
    array['K', 'L'], 'jobs of a key filled in this batch do not hide a free key''s job pages later');

-- Several queues in one claim: a limited queue at its limit does not hold back the others.
select pgq_test.fresh_queue('lim') as q_lim \gset
select pgq_test.fresh_queue('free') as q_free \gset
select pgq.configure_queue(:'q_lim', concurrency => 1);
select pgq.enqueue_many(array['l1', 'l2', 'l3'], queues => array_fill(:'q_lim'::text, array[3]),
                        priorities => array[-1, -1, -1]) as ids \gset
select pgq.enqueue_many(array['f1', 'f2'], queues => array_fill(:'q_free'::text, array[2])) as ids \gset
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-multi', array[:'q_free', :'q_lim'], 10) with ordinality as c),
    array['l1', 'f1', 'f2'], 'a claim over a limited and an unlimited queue takes what each allows, in claim order');
select is((select array_agg(c.job_name order by c.ordinality)
             from pgq.claim('w-multi', array[:'q_free', :'q_lim'], 10) with ordinality as c),
    null, 'then nothing is left to take: the limited queue is at its limit');
select pgq.enqueue('f3', '{}', :'q_free');
select is((select array_agg(c.job_name) from pgq.claim('w-multi', array[:'q_lim', :'q_free'], 2) c),
    array['f3'], 'the unlimited queue is still claimed beside the held-back one');

-- A paused limited queue yields nothing; an explicit lease is used as given.
select pgq_test.fresh_queue('limp') as q \gset
select pgq.configure_queue(:'q', concurrency => 5);
select pgq.enqueue('p', '{}', :'q');
select pgq.pause(:'q');
select is_empty(format('select * from pgq.claim(%L, array[%L])', 'w-limp', :'q'),
    'a paused queue with limits yields nothing');
select pgq.resume(:'q');
select is((select c.lease_duration from pgq.claim('w-limp', array[:'q'], 1, interval '7 seconds') c),
    interval '7 seconds', 'a limited claim takes the lease given');

-- A queue without limits logs no starts.
select pgq_test.fresh_queue('nolim') as q \gset
select pgq.enqueue('n', '{}', :'q');
select is((select count(*)::integer from pgq.claim('w-nolim', array[:'q'], 5)), 1,
    'a queue without limits is claimed as before');
select is((select count(*)::integer from pgq.queue_starts s where s.queue = :'q'), 0,
    'a claim of a queue without a rate limit logs no start');

-- pgq._pick, the one read of the claim order that pgq.claim and pgq._claim_limited share.
select pgq_test.fresh_queue('pick-a') as pa \gset
select pgq_test.fresh_queue('pick-b') as pb \gset
select pgq_test.fresh_queue('pick-p') as pp \gset
select pgq.enqueue_many(array['a1', 'a2', 'a3'], queues => array_fill(:'pa'::text, array[3]),
                        priorities => array[2, 0, 1]) as pick_a \gset
select pgq.enqueue_many(array['b1', 'b2', 'b-later'], queues => array_fill(:'pb'::text, array[3]),
                        priorities => array[1, 3, -5],
                        run_ats => array[now(), now(), now() + interval '1 hour']) as pick_b \gset
select pgq.enqueue('p1', '{}', :'pp', priority => -10);
select pgq.pause(:'pp');
select is((select array_agg(j.job_name order by o.n)
             from unnest(pgq._pick(array[:'pa', :'pb', :'pp'], 4)) with ordinality as o(id, n)
             join pgq.jobs j on j.id = o.id),
    array['a2', 'a3', 'b1', 'a1'],
    '_pick takes the best of several queues in claim order, up to batch, skipping a paused queue and a job not yet due');
select is((select count(*)::integer from pgq.jobs j
            where j.queue in (:'pa', :'pb') and j.state <> 'available'), 0,
    '_pick changes no job: it only locks the ones it returns');
select is(cardinality(pgq._pick(array[:'pa'], 10)), 3, '_pick returns fewer than batch when fewer are due');
select is(pgq._pick(array['pick-no-such-queue'], 5), '{}'::bigint[], '_pick of an unknown queue is empty');
select is(pgq._pick('{}'::text[], 5), '{}'::bigint[], '_pick of no queues is empty');
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'pa', 1, '-infinity', now(), now() + interval '1 minute');
select is((select array_agg(j.job_name order by o.n)
             from unnest(pgq._pick(array[:'pa'], 5)) with ordinality as o(id, n)
             join pgq.jobs j on j.id = o.id),
    array['a3', 'a1'], '_pick reads a queue from its claim floor, not from its front');
delete from pgq.claim_floors f where f.queue = :'pa';
set local role pgq_admin;
select throws_ok(format('select pgq._pick(array[%L], 1)', :'pa'), '42501', null,
    'pgq_admin cannot call _pick (only pgq.claim does)');
reset role;

-- Privileges: workers and admins claim, producers do not.
select pgq_test.fresh_queue('priv') as q \gset
select pgq.enqueue('priv', '{}', :'q') as priv_id \gset
select pgq_test.state_digest() as before \gset
set local role pgq_producer;
select throws_ok(format('select * from pgq.claim(%L, array[%L])', 'w-producer', :'q'), '42501', null,
    'pgq_producer cannot call claim');
reset role;
select is(pgq_test.state_digest(), :'before', 'the refused producer claim changed nothing');
set local role pgq_worker;
select is((select c.id from pgq.claim('w-worker', array[:'q']) c), :priv_id::bigint, 'pgq_worker can call claim');
reset role;
select pgq.enqueue('priv-admin', '{}', :'q') as priv_id \gset
set local role pgq_admin;
select is((select c.id from pgq.claim('w-admin', array[:'q']) c), :priv_id::bigint, 'pgq_admin can call claim');
reset role;

select * from finish();
rollback;

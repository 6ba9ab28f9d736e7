-- pgtap_tests/25_handoff.sql: hand-overs of one-row enqueues to waiting workers.
-- The deferred trigger runs at commit; these tests run it early with SET CONSTRAINTS.
-- A live worker is a wake_key whose advisory lock another session holds: the harness
-- (tests/test_pgtap.py) holds keys 1000001 and 1000002 while this file runs, and
-- nobody holds 1000003.
begin;
\ir _fixtures.psql
\set live_key 1000001
\set live_key2 1000002
\set dead_key 1000003
select plan(82);

-- listen_for_handoffs: a fresh lock and channel for the session.
select l.wake_key as key1, l.channel as chan1 from pgq.listen_for_handoffs() l \gset
select l.wake_key as key2, l.channel as chan2 from pgq.listen_for_handoffs() l \gset
select ok(:key1 > 0, 'listen_for_handoffs returns a positive wake_key');
select matches(:'chan1'::text, '^pgq_handoff_[0-9a-f]{32}$', 'the channel is pgq_handoff_ and 32 hex digits');
select ok(exists (select from pg_locks l
                    where l.locktype = 'advisory' and l.classid = 1885434163 and l.objid = :key1
                      and l.objsubid = 2 and l.pid = pg_backend_pid() and l.granted),
    'the session holds the wake_key''s advisory lock, for the session');
select ok(pgq._is_listening(:live_key), '_is_listening is true for a key another session holds');
select isnt(:key1, :key2, 'each call takes another wake_key');
select isnt(:'chan1'::text, :'chan2'::text, 'each call listens on another channel');
select ok(not pgq._is_listening(:dead_key), '_is_listening is false for a key nobody holds');
select pg_advisory_unlock(1885434163, :key2);
select ok(not pgq._is_listening(:key2), '_is_listening is false for a key this session released');

-- claim_and_wait: bad input is refused and changes nothing.
select pgq_test.fresh_queue('wait') as q \gset
select pgq_test.state_digest() as before \gset
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 5, null, null, %L, 5)', 'w1', :'q', :'chan1'),
    'PQ001', 'invalid wake_key: must not be null', 'a NULL wake_key is PQ001');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 5, null, %s, %L, 5)', 'w1', :'q', :key1, 'pgq_jobs'),
    'PQ001', 'invalid channel: must be the channel that pgq.listen_for_handoffs returned',
    'a channel that is not a hand-over channel is PQ001');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 5, null, %s, null, 5)', 'w1', :'q', :key1),
    'PQ001', 'invalid channel: must be the channel that pgq.listen_for_handoffs returned',
    'a NULL channel is PQ001');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 5, null, %s, %L, -1)', 'w1', :'q', :key1, :'chan1'),
    'PQ001', 'invalid free_slots -1: must be between 0 and 10000', 'negative free_slots is PQ001');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 5, null, %s, %L, 10001)', 'w1', :'q', :key1, :'chan1'),
    'PQ001', 'invalid free_slots 10001: must be between 0 and 10000', 'free_slots above 10000 is PQ001');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 5, null, %s, %L, null)', 'w1', :'q', :key1, :'chan1'),
    'PQ001', 'invalid free_slots NULL: must be between 0 and 10000', 'NULL free_slots is PQ001');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 0, null, %s, %L, 5)', 'w1', :'q', :key1, :'chan1'),
    'PQ001', 'invalid batch 0: must be between 1 and 10000', 'the claim''s own checks apply');
select is(pgq_test.state_digest(), :'before', 'the refused calls changed nothing (no job, no registration)');

-- A short claim registers the slots it left free; a later one updates them; none free
-- or a full claim removes the registration.
select pgq.enqueue('one', '{}', :'q') as one_id \gset
select is((select array_agg(c.id) from pgq.claim_and_wait('w1', array[:'q'], 5, interval '45 seconds',
                                                          :key1, :'chan1', 5) c),
    array[:one_id::bigint], 'claim_and_wait returns what pgq.claim returns');
select is((select row(w.queues, w.slots, w.wake_key, w.channel, w.lease)::text
             from pgq.waiting_workers w where w.worker_id = 'w1'),
    row(array[:'q'], 4, :key1, :'chan1', interval '45 seconds')::text,
    'a claim short of free_slots registers the rest, with the queues, key, channel and lease');
select is((select count(*)::integer from pgq.claim_and_wait('w1', array[:'q'], 3, null, :key1, :'chan1', 3)),
    0, 'an empty claim returns no rows');
select is((select row(w.slots, w.lease)::text from pgq.waiting_workers w where w.worker_id = 'w1'),
    row(3, null::interval)::text, 'the next claim replaces the registration');
select is((select count(*)::integer from pgq.claim_and_wait('w1', array[:'q'], 3, null, :key1, :'chan1', 0)),
    0, 'free_slots 0 claims as asked');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w1'), 0,
    'no free slot left: the worker waits for nothing');
select pgq.enqueue('two', '{}', :'q');
select pgq.enqueue('three', '{}', :'q');
select is((select count(*)::integer from pgq.claim_and_wait('w1', array[:'q'], 2, null, :key1, :'chan1', 2)),
    2, 'a full claim takes its batch');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w1'), 0,
    'a full claim registers nothing');

-- stop_waiting.
select * from pgq.claim_and_wait('w1', array[:'q'], 2, null, :key1, :'chan1', 2);
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w1'), 1,
    '(a registration to remove)');
select lives_ok($$select pgq.stop_waiting('w1')$$, 'stop_waiting runs');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w1'), 0,
    'stop_waiting removes the registration');
select lives_ok($$select pgq.stop_waiting('w-never')$$, 'stop_waiting of a worker that never waited is a no-op');
select throws_ok($$select pgq.stop_waiting(null)$$, 'PQ001', 'invalid worker_id: must be 1 to 200 characters',
    'stop_waiting refuses a NULL worker_id');
select throws_ok($$select pgq.stop_waiting('w1', 'pgq_jobs')$$, 'PQ001',
    'invalid channel: must be NULL or the channel that pgq.listen_for_handoffs returned',
    'stop_waiting refuses a channel that is not a hand-over channel');
select * from pgq.claim_and_wait('w1', array[:'q'], 2, null, :key1, :'chan1', 2);
select lives_ok(format('select pgq.stop_waiting(%L, %L)', 'w1', :'chan1'),
    'stop_waiting with the worker''s channel runs (and notifies it at commit)');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w1'), 0,
    'and removes the registration too');

-- Hand-over: a one-row enqueue to a waiting, live worker is leased to it at commit.
select pgq_test.fresh_queue('hand') as hq \gset
select * from pgq.claim_and_wait('w-hand', array[:'hq'], 2, interval '40 seconds', :live_key, :'chan1', 2);
select pgq.enqueue('handed', '{"n": 1}', :'hq') as h1 \gset
select is((select r.job_id from pgq.handoff_requests r), :h1::bigint,
    'the enqueue asks for a hand-over at commit');
select is((select j.state from pgq.jobs j where j.id = :h1), 'available',
    'until the commit, the job is available');
set constraints pgq.handoff_requests_at_commit immediate;
select is((select row(j.state, j.worker_id, j.attempt, j.lease_duration)::text from pgq.jobs j where j.id = :h1),
    row('running', 'w-hand', 1, interval '40 seconds')::text,
    'at commit the job is leased to the waiting worker: running, attempt 1, its lease');
select ok((select j.lease_token is not null and j.started_at > now()
                  and j.lease_expires_at = j.started_at + interval '40 seconds'
             from pgq.jobs j where j.id = :h1),
    'the lease runs from the hand-over, not from the transaction''s start');
select is((select w.slots from pgq.waiting_workers w where w.worker_id = 'w-hand'), 1,
    'the worker waits for one job fewer');
select is((select count(*)::integer from pgq.handoff_requests), 0, 'the request is gone');
set constraints pgq.handoff_requests_at_commit deferred;
select pgq.enqueue('handed-2', '{}', :'hq') as h2 \gset
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.worker_id from pgq.jobs j where j.id = :h2), 'w-hand', 'its last free slot is handed too');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w-hand'), 0,
    'with no slot left, the registration is gone');
set constraints pgq.handoff_requests_at_commit deferred;
select pgq.enqueue('not-handed', '{}', :'hq') as h3 \gset
select is((select count(*)::integer from pgq.handoff_requests), 0,
    'with no worker waiting, the enqueue asks for no hand-over');
select is((select j.state from pgq.jobs j where j.id = :h3), 'available', 'and the job waits to be claimed');

-- A handed job is held like a claimed one: the worker's calls take its lease token,
-- and release_lost_claims gives it back uncounted when its notification was lost.
select is((select pgq.complete(:h1, j.lease_token) from pgq.jobs j where j.id = :h1), 'succeeded',
    'the worker completes a handed job with the token it was handed');
select is(pgq.release_lost_claims('w-hand', '{}'), 1,
    'release_lost_claims gives back a handed job the worker does not hold');
select is((select row(j.state, j.attempt)::text from pgq.jobs j where j.id = :h2),
    row('available', 0)::text, 'uncounted');

-- The oldest waiting worker gets the job; a worker whose session is gone is forgotten.
select pgq_test.fresh_queue('order') as oq \gset
select * from pgq.claim_and_wait('w-old', array[:'oq'], 1, null, :live_key2, :'chan1', 1);
update pgq.waiting_workers set since = now() - interval '1 minute' where worker_id = 'w-old';
select * from pgq.claim_and_wait('w-new', array[:'oq'], 1, null, :live_key, :'chan1', 1);
select pgq.enqueue('first', '{}', :'oq') as o1 \gset
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.worker_id from pgq.jobs j where j.id = :o1), 'w-old', 'the worker that waited longest gets the job');
set constraints pgq.handoff_requests_at_commit deferred;
select * from pgq.claim_and_wait('w-old', array[:'oq'], 1, null, :dead_key, :'chan1', 1);
update pgq.waiting_workers set since = now() - interval '1 minute' where worker_id = 'w-old';
select pgq.enqueue('second', '{}', :'oq') as o2 \gset
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.worker_id from pgq.jobs j where j.id = :o2), 'w-new',
    'a worker whose listening session is gone is skipped');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w-old'), 0,
    'and its registration removed');
set constraints pgq.handoff_requests_at_commit deferred;
select pgq.enqueue('third', '{}', :'oq') as o3 \gset
update pgq.waiting_workers set wake_key = :dead_key where worker_id = 'w-new';
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.state from pgq.jobs j where j.id = :o3), 'available',
    'with no live worker left at commit, the job stays available (and the workers are woken)');
select is((select count(*)::integer from pgq.waiting_workers), 0, 'every dead registration is gone');
set constraints pgq.handoff_requests_at_commit deferred;

-- What is never handed over: a job not due now, a paused or limited queue, a payload
-- too large for a notification, a bulk enqueue, a job changed before the commit.
select pgq_test.fresh_queue('never') as nq \gset
select pgq_test.fresh_queue('limited') as lq \gset
select pgq.configure_queue(:'lq', concurrency => 2);
select * from pgq.claim_and_wait('w-any', array[:'nq', :'lq'], 1, null, :live_key, :'chan1', 50);
select pgq.enqueue('later', '{}', :'nq', run_at => now() + interval '1 hour');
select is((select count(*)::integer from pgq.handoff_requests), 0, 'a scheduled job is not handed over');
select pgq.enqueue('limited', '{}', :'lq');
select is((select count(*)::integer from pgq.handoff_requests), 0, 'a job of a queue with a flow limit is not');
select pgq.enqueue('big', jsonb_build_object('blob', repeat('x', 6000)), :'nq');
select is((select count(*)::integer from pgq.handoff_requests), 0,
    'a payload over 6000 bytes of JSON is not (it would not fit a notification)');
select repeat(E'\x01', 120) as cq \gset
select * from pgq.claim_and_wait('w-wide', array[:'cq'], 1, null, :live_key, :'chan1', 5);
select pgq.enqueue(repeat(E'\x01', 200), jsonb_build_object('blob', repeat('x', 5900)),
                   :'cq') as wide \gset
select is((select count(*)::integer from pgq.handoff_requests), 1,
    '(a payload under 6000 bytes asks for a hand-over)');
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.state from pgq.jobs j where j.id = :wide), 'available',
    'a job whose notification would not fit NOTIFY''s 8000 bytes (names of escaped characters) is not handed over');
select is((select w.slots from pgq.waiting_workers w where w.worker_id = 'w-wide'), 5,
    '(and its worker still waits)');
set constraints pgq.handoff_requests_at_commit deferred;
select pgq.enqueue_many(array['bulk1', 'bulk2'], queues => array[:'nq', :'nq']);
select is((select count(*)::integer from pgq.handoff_requests), 0, 'enqueue_many hands nothing over');
select pgq.pause(:'nq');
select pgq.enqueue('paused', '{}', :'nq');
select is((select count(*)::integer from pgq.handoff_requests), 0, 'a job of a paused queue is not');
select pgq.resume(:'nq');
select pgq.enqueue('cancel-me', '{}', :'nq') as c1 \gset
select pgq.cancel(:c1);
select pgq.enqueue('pause-me', '{}', :'nq') as c2 \gset
select pgq.pause(:'nq');
select is((select count(*)::integer from pgq.handoff_requests), 2, '(two requests pending)');
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.state from pgq.jobs j where j.id = :c1), 'cancelled',
    'a job cancelled before the commit is not handed over');
select is((select j.state from pgq.jobs j where j.id = :c2), 'available',
    'nor one whose queue was paused before the commit');
select is((select w.slots from pgq.waiting_workers w where w.worker_id = 'w-any'), 50,
    'and the worker still waits for as many');
set constraints pgq.handoff_requests_at_commit deferred;
select pgq.resume(:'nq');
select is(pgq._hand_off(-1, :'nq'), false, '_hand_off of a job that does not exist hands nothing');
select pgq.enqueue('other-queue', '{}', pgq_test.fresh_queue('elsewhere')) as e1 \gset
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.state from pgq.jobs j where j.id = :e1), 'available',
    'a job of a queue no worker waits for stays available');
set constraints pgq.handoff_requests_at_commit deferred;

-- The hand-over reads its job by primary key, from a cached generic plan too: available
-- jobs in any queue (here a backlog no worker waits for) cost it no index scan.
select pgq_test.fresh_queue('backlog') as blq \gset
select pgq_test.fresh_queue('generic') as gq \gset
select pgq.enqueue_many(array(select 'backlog' from generate_series(1, 300)),
                        queues => array(select :'blq' from generate_series(1, 300)));
set local plan_cache_mode = force_generic_plan;
select * from pgq.claim_and_wait('w-generic', array[:'gq'], 1, null, :live_key, :'chan1', 5);
select pg_stat_get_xact_numscans('pgq.jobs_claim_idx'::regclass) as claim_scans \gset
select pgq.enqueue('generic', '{}', :'gq') as g1 \gset
set constraints pgq.handoff_requests_at_commit immediate;
select is((select j.state from pgq.jobs j where j.id = :g1), 'running',
    '(the job is handed over from generic plans)');
select is(pg_stat_get_xact_numscans('pgq.jobs_claim_idx'::regclass), :claim_scans::bigint,
    'a hand-over does not scan jobs_claim_idx, whatever the plan');
set constraints pgq.handoff_requests_at_commit deferred;
reset plan_cache_mode;

-- Who may call: workers and admins wait; producers do not; nobody calls the internals.
select pgq_test.fresh_queue('role') as rq \gset
select pgq_test.state_digest() as before \gset
set local role pgq_producer;
select throws_ok($$select * from pgq.listen_for_handoffs()$$, '42501', null,
    'pgq_producer cannot call listen_for_handoffs');
select throws_ok(format('select * from pgq.claim_and_wait(%L, array[%L], 1, null, %s, %L, 1)', 'w-p', :'nq', :key1, :'chan1'),
    '42501', null, 'pgq_producer cannot call claim_and_wait');
select throws_ok($$select pgq.stop_waiting('w-any')$$, '42501', null, 'pgq_producer cannot call stop_waiting');
reset role;
select is(pgq_test.state_digest(), :'before', 'the refused calls changed nothing');
set local role pgq_worker;
select is((select count(*)::integer from pgq.listen_for_handoffs()), 1, 'pgq_worker can call listen_for_handoffs');
select is((select count(*)::integer from pgq.claim_and_wait('w-role', array[:'rq'], 1, null, :key1, :'chan1', 1)),
    0, 'pgq_worker can call claim_and_wait');
select lives_ok($$select pgq.stop_waiting('w-role')$$, 'pgq_worker can call stop_waiting');
reset role;
set local role pgq_admin;
select lives_ok($$select pgq.stop_waiting('w-role')$$, 'pgq_admin can call stop_waiting');
select throws_ok(format('select pgq._hand_off(1, %L)', :'nq'), '42501', null, 'pgq_admin cannot call _hand_off');
reset role;

-- Hand-overs switch off while pgq.waiting_workers holds over 512 kB (dead row versions
-- vacuum cannot remove yet): enqueues wake and workers stop waiting.
select pgq_test.fresh_queue('bloat') as bq \gset
select * from pgq.claim_and_wait('w-bloat', array[:'bq'], 1, null, :live_key, :'chan1', 3);
select ok(pgq._handoffs_on(), 'hand-overs are on while the table is small');
insert into pgq.waiting_workers (worker_id, queues, slots, wake_key, channel, since)
select 'filler-' || i, array(select md5(i::text || j::text) from generate_series(1, 12) j),
       1, :dead_key, :'chan1', now()
  from generate_series(1, 2500) i;
delete from pgq.waiting_workers where worker_id like 'filler-%';
select ok(pg_relation_size('pgq.waiting_workers') > 524288, '(the table now takes over 512 kB)');
select ok(not pgq._handoffs_on(), 'hand-overs are off while it does');
select pgq.enqueue('bloated', '{}', :'bq') as bl \gset
select is((select count(*)::integer from pgq.handoff_requests), 0,
    'an enqueue asks for no hand-over while they are off');
select is((select j.state from pgq.jobs j where j.id = :bl), 'available', 'its job waits to be claimed');
select is((select count(*)::integer
             from pgq.claim_and_wait('w-bloat', array[pgq_test.fresh_queue('none')], 1, null,
                                     :live_key, :'chan1', 3)),
    0, '(a claim of nothing)');
select is((select count(*)::integer from pgq.waiting_workers w where w.worker_id = 'w-bloat'), 0,
    'a worker that claims while they are off waits for nothing');

select * from finish();
rollback;

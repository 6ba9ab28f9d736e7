-- pgtap_tests/21_claim_floors.sql: claim floors and the lease sweep window, which
-- keep claims fast while the xmin horizon is held. The internal functions take the
-- "slow" threshold as an argument: '0' makes every read slow, '1 hour' none.
begin;
\ir _fixtures.psql
select plan(38);

-- Three due jobs in one queue, in claim order a < b < c.
select pgq_test.fresh_queue('floor') as q \gset
select pgq.enqueue('a', '{}', :'q', run_at => now() - interval '3 minutes') as a_id \gset
select pgq.enqueue('b', '{}', :'q', run_at => now() - interval '2 minutes') as b_id \gset
select pgq.enqueue('c', '{}', :'q', run_at => now() - interval '1 minute') as c_id \gset

-- No floor while the front is fast.
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select is((select count(*)::integer from pgq.claim_floors f where f.queue = :'q'), 0,
    'a claim that was not slow starts no floor');
select pgq._keep_claim_floors(array[:'q'], true, interval '1 hour');
select is((select count(*)::integer from pgq.claim_floors f where f.queue = :'q'), 0,
    'a slow claim starts no floor when the front, read again, is fast');

-- A slow claim and a slow front: a floor at the first job, less the margin.
select pgq._keep_claim_floors(array[:'q'], true, interval '0');
select results_eq(format($$select f.priority, f.run_at, f.moved_at from pgq.claim_floors f where f.queue = %L$$, :'q'),
    $$values (0, now() - interval '3 minutes' - interval '500 milliseconds', now())$$,
    'a slow claim and a slow front start a floor at the first available job, 500 ms before it');
select ok((select f.rewind_at between now() + interval '5 seconds' and now() + interval '60 seconds'
             from pgq.claim_floors f where f.queue = :'q'),
    'the first rewind is due 5 to 60 seconds later');

-- Claims read from the floor: a job that sorts before it waits for the rewind.
update pgq.claim_floors f set run_at = now() - interval '2 minutes' where f.queue = :'q';
select is((select c.id from pgq.claim('w-floor', array[:'q'], 1) c), :b_id::bigint,
    'a claim starts at the floor: the job before it is not read');
select is((pgq_test.job(:a_id)).state, 'available', 'the job before the floor stays available');

-- A floor moves up to the first available job at most every 100 ms, never down.
update pgq.claim_floors f set moved_at = now() where f.queue = :'q';
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select is((select f.run_at from pgq.claim_floors f where f.queue = :'q'), now() - interval '2 minutes',
    'a floor moved less than 100 ms ago stays');
update pgq.claim_floors f set moved_at = now() - interval '1 second' where f.queue = :'q';
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select results_eq(format($$select f.run_at, f.moved_at from pgq.claim_floors f where f.queue = %L$$, :'q'),
    $$values (now() - interval '1 minute' - interval '500 milliseconds', now())$$,
    'a floor moves up to the first available job after it, less the margin');
update pgq.claim_floors f set moved_at = now() - interval '1 second', run_at = now() + interval '1 hour'
 where f.queue = :'q';
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select is((select f.run_at from pgq.claim_floors f where f.queue = :'q'), now() + interval '1 hour',
    'a floor with no available job after it stays where it is');
update pgq.claim_floors f set moved_at = now() - interval '1 second', run_at = now() - interval '1 minute'
 where f.queue = :'q';
update pgq.jobs j set run_at = now() - interval '2 hours' where j.id = :c_id;
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select is((select f.run_at from pgq.claim_floors f where f.queue = :'q'), now() - interval '1 minute',
    'a job more than 10 s below the floor does not lower it: it waits for the rewind');
update pgq.jobs j set run_at = now() - interval '1 minute' where j.id = :c_id;

-- The first move in a second also looks 10 s below the floor: a job whose enqueue
-- committed late, just below the floor, lowers it.
update pgq.jobs j set run_at = now() - interval '65 seconds' where j.id = :c_id;
update pgq.claim_floors f set moved_at = date_trunc('second', now()) - interval '1 second',
                              run_at = now() - interval '1 minute'
 where f.queue = :'q';
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select is((select f.run_at from pgq.claim_floors f where f.queue = :'q'),
    now() - interval '65 seconds' - interval '500 milliseconds',
    'the first move in a second lowers the floor to a job up to 10 s below it');
update pgq.jobs j set run_at = now() - interval '1 minute' where j.id = :c_id;
update pgq.claim_floors f set run_at = now() - interval '1 minute' where f.queue = :'q';

-- A rewind that is due reads the true front: the job before the floor is claimed next.
update pgq.claim_floors f set rewind_at = now() - interval '1 second' where f.queue = :'q';
select pgq._keep_claim_floors(array[:'q'], false, interval '0');
select results_eq(format($$select f.run_at, f.rewind_at > now() from pgq.claim_floors f where f.queue = %L$$, :'q'),
    $$values (now() - interval '3 minutes' - interval '500 milliseconds', true)$$,
    'a due rewind lowers the floor to the true front and sets the next rewind');
select is((select c.id from pgq.claim('w-floor', array[:'q'], 1) c), :a_id::bigint,
    'after the rewind the job that sorted before the floor is claimed');

-- A rewind whose read is fast drops the floor: claims read from the front again.
update pgq.claim_floors f set rewind_at = now() - interval '1 second' where f.queue = :'q';
select pgq._keep_claim_floors(array[:'q'], false, interval '1 hour');
select is((select count(*)::integer from pgq.claim_floors f where f.queue = :'q'), 0,
    'a rewind whose read of the front is fast drops the floor');

-- A slow rewind with nothing due keeps the floor and looks again later.
select pgq_test.fresh_queue('floor-empty') as qe \gset
select pgq.enqueue('later', '{}', :'qe', run_at => now() + interval '1 hour');
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'qe', 0, now() - interval '1 minute', now(), now() - interval '1 second');
select pgq._keep_claim_floors(array[:'qe'], false, interval '0');
select results_eq(format($$select f.run_at, f.rewind_at > now() from pgq.claim_floors f where f.queue = %L$$, :'qe'),
    $$values (now() - interval '1 minute', true)$$,
    'a slow rewind that finds nothing due keeps the floor and sets the next rewind');

-- Paused queues are left alone.
select pgq_test.fresh_queue('floor-paused') as qp \gset
select pgq.enqueue('p', '{}', :'qp');
select pgq.pause(:'qp');
select pgq._keep_claim_floors(array[:'qp'], true, interval '0');
select is((select count(*)::integer from pgq.claim_floors f where f.queue = :'qp'), 0,
    'a paused queue gets no floor');

-- The floor bounds the other claim paths too: several queues and flow-limited ones.
select pgq_test.fresh_queue('floor-multi') as qm \gset
select pgq.enqueue('m1', '{}', :'qm', run_at => now() - interval '2 minutes') as m1_id \gset
select pgq.enqueue('m2', '{}', :'qm', run_at => now() - interval '1 minute') as m2_id \gset
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'qm', 0, now() - interval '90 seconds', now(), now() + interval '1 minute');
select is((select array_agg(c.id) from pgq.claim('w-multi', array[:'qm', :'qe'], 5) c), array[:m2_id::bigint],
    'a claim of several queues starts each at its floor');
select pgq_test.fresh_queue('floor-lim') as ql \gset
select pgq.configure_queue(:'ql', concurrency => 10);
select pgq.enqueue('l1', '{}', :'ql', run_at => now() - interval '2 minutes') as l1_id \gset
select pgq.enqueue('l2', '{}', :'ql', run_at => now() - interval '1 minute') as l2_id \gset
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'ql', 0, now() - interval '90 seconds', now(), now() + interval '1 minute');
select is((select array_agg(c.id) from pgq.claim('w-lim', array[:'ql'], 5) c), array[:l2_id::bigint],
    'a claim of a queue with a concurrency limit starts at its floor');
select pgq_test.fresh_queue('floor-key') as qk \gset
select pgq.configure_queue(:'qk', key_concurrency => 1);
select pgq.enqueue('k1', '{}', :'qk', run_at => now() - interval '2 minutes', concurrency_key => 'x') as k1_id \gset
select pgq.enqueue('k2', '{}', :'qk', run_at => now() - interval '1 minute', concurrency_key => 'y') as k2_id \gset
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'qk', 0, now() - interval '90 seconds', now(), now() + interval '1 minute');
select is((select array_agg(c.id) from pgq.claim('w-key', array[:'qk'], 5) c), array[:k2_id::bigint],
    'a claim of a queue with a key_concurrency limit starts at its floor');

-- A claim keeps the floors of its queues: a floor due to move moves on the claim.
select pgq_test.fresh_queue('floor-claim') as qc \gset
select pgq.enqueue('x1', '{}', :'qc', run_at => now() - interval '2 minutes') as x1_id \gset
select pgq.enqueue('x2', '{}', :'qc', run_at => now() - interval '1 minute') as x2_id \gset
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'qc', 0, now() - interval '1 hour', now() - interval '1 second', now() + interval '1 minute');
select is((select c.id from pgq.claim('w-claim', array[:'qc'], 1) c), :x1_id::bigint,
    'a claim from a low floor takes the first job');
select is((select f.run_at from pgq.claim_floors f where f.queue = :'qc'),
    now() - interval '1 minute' - interval '500 milliseconds',
    'the claim moved its queue''s floor up to the next available job, less the margin');

-- _expire_leases reads only leases that expired after `since`.
select * from pgq_test.running_job('exp-old') \gset old_
select * from pgq_test.running_job('exp-new') \gset new_
update pgq.jobs j set lease_expires_at = now() - interval '10 minutes' where j.id = :old_job_id;
select pgq_test.backdate_lease(:new_job_id);
select is(pgq._expire_leases(100, now() - interval '1 minute'), 1,
    '_expire_leases fails only the leases that expired after since');
select results_eq(format($$select j.state from pgq.jobs j where j.id in (%s, %s) order by j.id$$,
                         :old_job_id, :new_job_id),
    $$values ('running'::text), ('available'::text)$$,
    'the lease that expired before since is still running; the other is failed and available');
select is(pgq._expire_leases(), 1, '_expire_leases with its defaults reads every expired lease');

-- The lease sweep window.
select pgq._sweep_leases(interval '1 hour');
select is((select count(*)::integer from pgq.lease_sweep), 0,
    'no sweep window while reading the front of the expired leases is fast');
select pgq._sweep_leases(interval '0');
select results_eq($$select s.swept_to, s.full_at between now() + interval '5 seconds'
                                                  and now() + interval '60 seconds'
                      from pgq.lease_sweep s$$,
    $$values ('-infinity'::timestamptz, true)$$,
    'a slow front starts a window whose first sweep reads from the start');
select * from pgq_test.running_job('sweep-1') \gset s1_
select pgq_test.backdate_lease(:s1_job_id);
select pgq._sweep_leases(interval '0');
select is((pgq_test.job(:s1_job_id)).state, 'available', 'a sweep fails a lease that expired in its window');
select is((select s.swept_to from pgq.lease_sweep s), now(), 'the window moves up to the sweep');
select * from pgq_test.running_job('sweep-old') \gset s2_
update pgq.jobs j set lease_expires_at = now() - interval '10 seconds' where j.id = :s2_job_id;
select pgq._sweep_leases(interval '0');
select is((pgq_test.job(:s2_job_id)).state, 'running',
    'a lease that expired before the window (less its 2 s margin) is left to the full sweep');
update pgq.lease_sweep set full_at = now() - interval '1 second';
select pgq._sweep_leases(interval '0');
select is((pgq_test.job(:s2_job_id)).state, 'available', 'a due full sweep fails every expired lease');
select ok((select s.full_at > now() from pgq.lease_sweep s),
    'a slow full sweep keeps the window and sets the next full sweep');
update pgq.lease_sweep set full_at = now() - interval '1 second';
select pgq._sweep_leases(interval '1 hour');
select is((select count(*)::integer from pgq.lease_sweep), 0, 'a fast full sweep ends the window');

-- A claim sweeps at most once a second while a window is open.
insert into pgq.lease_sweep (swept_to, full_at) values (now(), now() + interval '1 minute');
select * from pgq_test.running_job('sweep-gated') \gset s3_
select pgq_test.backdate_lease(:s3_job_id);
select pgq_test.fresh_queue('sweep-q') as qs \gset
select count(*) from pgq.claim('w-sweep', array[:'qs'], 1);
select is((pgq_test.job(:s3_job_id)).state, 'running',
    'a claim less than a second after the last sweep does not sweep');
update pgq.lease_sweep set swept_to = now() - interval '2 seconds';
select count(*) from pgq.claim('w-sweep', array[:'qs'], 1);
select is((pgq_test.job(:s3_job_id)).state, 'available',
    'a claim a second or more after the last sweep sweeps the window');
delete from pgq.lease_sweep;

-- Who may call: the internal functions are for no role (02_security checks every
-- pgq._ function); a claim by a worker keeps floors and sweeps through them.
select pgq_test.fresh_queue('floor-role') as qr \gset
select pgq.enqueue('r1', '{}', :'qr') as r1_id \gset
insert into pgq.claim_floors (queue, priority, run_at, moved_at, rewind_at)
values (:'qr', 0, now() - interval '1 hour', now() - interval '1 second', now() + interval '1 minute');
insert into pgq.lease_sweep (swept_to, full_at) values (now() - interval '2 seconds', now() + interval '1 minute');
set local role pgq_worker;
select is((select c.id from pgq.claim('w-role', array[:'qr'], 1) c), :r1_id::bigint,
    'pgq_worker claims through a floor and a sweep window');
select throws_ok($$select pgq._keep_claim_floors(array['x'], true, interval '0')$$, '42501', null,
    'pgq_worker cannot call _keep_claim_floors');
select throws_ok($$select pgq._sweep_leases(interval '0')$$, '42501', null,
    'pgq_worker cannot call _sweep_leases');
reset role;
select is((select s.swept_to from pgq.lease_sweep s), now(), 'the worker''s claim swept the window');

select * from finish();
rollback;

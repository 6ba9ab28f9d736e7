-- Claim: a worker takes up to `batch` runnable jobs and a lease on each. Every
-- later call for a job must present the lease token returned here.
--
-- Claims lock jobs only with SKIP LOCKED, and so never wait for another call, with one
-- exception that is PostgreSQL's: when the row version a claim read is updated by a
-- transaction that commits just as the claim locks it, PostgreSQL follows the update
-- and waits for the newest version's locker, SKIP LOCKED or not. If that locker (a
-- late complete_many, say) waits for a job the claim already picked, the server fails
-- one of them with 40P01 after deadlock_timeout; both calls are safe to retry.

-- Internal: a running job whose lease expired is a failed attempt; its worker
-- died or hung. It is retried with backoff or dead-lettered like any failure, so
-- a job that kills its worker every time ends in the dead letter. Only leases that
-- expired after `since` are read (one range of jobs_lease_expiry_idx).
drop function if exists pgq._expire_leases(integer);
create or replace function pgq._expire_leases(max_jobs integer default 100,
                                              since timestamptz default '-infinity')
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_ids    bigint[];
    v_errors text[];
begin
    select array_agg(e.id), array_agg(e.error)
      into v_ids, v_errors
      from (select j.id,
                   format('lease expired at %s: worker %s stopped heartbeating (crashed, hung or lost its connection)',
                          j.lease_expires_at, coalesce(j.worker_id, '?')) as error
              from pgq.jobs j
             where j.state = 'running'
               and j.lease_expires_at > _expire_leases.since
               and j.lease_expires_at <= now()
             order by j.lease_expires_at
             limit _expire_leases.max_jobs
               for update skip locked) as e;
    if v_ids is null then
        return 0;
    end if;
    perform pgq._fail_jobs(job_ids => v_ids, errors => v_errors, retry => true,
                           clear_lease_token => true);
    return cardinality(v_ids);
end;
$$;
comment on function pgq._expire_leases(integer, timestamptz) is
    'Internal: fail (retry or dead-letter) running jobs whose lease expired after since.';

-- Internal: lease expiry while the front of jobs_lease_expiry_idx is slow to read
-- (slower than `slow_scan`, see pgq.claim). A claim whose probe of that front was
-- slow calls this; with no window yet, the front is read again, up to three times
-- (the first read of a session also plans it, and a busy machine can stall one), and
-- a window starts only if every read is slow. In a window, once a second, one claim at a time fails the leases that
-- expired since the last sweep (less a margin for claims and heartbeats that commit
-- late); every 5 to 60 seconds (50 times what the last full read took) it reads the
-- whole front again, which fails any lease the window missed, and ends the window
-- once that read is fast.
create or replace function pgq._sweep_leases(slow_scan interval)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    c_max_jobs constant integer := 1000;
    c_margin   constant interval := interval '2 seconds';
    v_sweep    pgq.lease_sweep;
    v_started  timestamptz;
    v_took     interval;
    v_failed   integer;
    v_full     boolean;
begin
    -- One sweeping claim at a time; the others go on claiming.
    if not pg_try_advisory_xact_lock(1885434161, 1) then
        return;
    end if;
    select * into v_sweep from pgq.lease_sweep;
    if v_sweep.one is null then
        for i in 1 .. 3 loop
            v_started := clock_timestamp();
            perform from pgq.jobs e
             where e.state = 'running' and e.lease_expires_at <= now()
             limit 1;
            v_took := clock_timestamp() - v_started;
            exit when v_took <= _sweep_leases.slow_scan;
        end loop;
        if v_took <= _sweep_leases.slow_scan then
            return;
        end if;
        -- The first sweep of a window reads from the start.
        insert into pgq.lease_sweep (swept_to, full_at)
        values ('-infinity', now() + least(interval '60 seconds',
                                           greatest(interval '5 seconds', v_took * 50)))
        on conflict (one) do nothing;
        return;
    end if;
    v_full := v_sweep.full_at <= now();
    v_started := clock_timestamp();
    v_failed := pgq._expire_leases(c_max_jobs,
                                   case when v_full then '-infinity'
                                        else v_sweep.swept_to - c_margin end);
    v_took := clock_timestamp() - v_started;
    if v_full and v_failed < c_max_jobs and v_took <= _sweep_leases.slow_scan then
        delete from pgq.lease_sweep;
        return;
    end if;
    -- A sweep that hit its limit leaves the window where it was, so the next claim
    -- sweeps again.
    update pgq.lease_sweep s
       set swept_to = case when v_failed < c_max_jobs then now() else s.swept_to end,
           full_at  = case when v_full
                           then now() + least(interval '60 seconds',
                                              greatest(interval '5 seconds', v_took * 50))
                           else s.full_at end;
end;
$$;
comment on function pgq._sweep_leases(interval) is
    'Internal: lease expiry by windows while the front of jobs_lease_expiry_idx is slow (held xmin horizon).';

-- Internal: after a claim, keep the claim floors of `queues`. A queue has a floor
-- only while reading the front of its claim order is slower than `slow_scan`. `claim_was_slow` starts
-- one. A floor moves up to the first available job (less a margin for enqueues that
-- commit late) at most every 100 ms, so claims read little past it, and once a second
-- it also looks 10 s below itself for jobs committed later still; every 5 to 60
-- seconds (50 times what the last read of the front took) one claim rewinds it to
-- the true front, which picks up any job that sorts before the floor (a higher
-- priority, a run_at in the past, a job released or retried to an earlier run_at, a
-- claim rolled back), and drops the floor once that read is fast.
create or replace function pgq._keep_claim_floors(queues text[], claim_was_slow boolean,
                                                   slow_scan interval)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    c_margin  constant interval := interval '500 milliseconds';
    c_look_back constant interval := interval '10 seconds';
    v_look_back boolean;
    v_queue   text;
    v_floor   pgq.claim_floors;
    v_priority integer;
    v_run_at  timestamptz;
    v_started timestamptz;
    v_took    interval;
begin
    for v_queue in
        select q.queue from pgq.queues q
         where q.queue = any (_keep_claim_floors.queues) and not q.paused
         order by q.queue
    loop
        select * into v_floor from pgq.claim_floors f where f.queue = v_queue;
        if v_floor.queue is null then
            continue when not _keep_claim_floors.claim_was_slow;
        elsif v_floor.rewind_at > now() then
            continue when v_floor.moved_at > now() - interval '100 milliseconds';
            -- The first move in each second reads from 10 s below the floor: an enqueue
            -- whose commit took longer than the margin (a stalled disk, a longer
            -- transaction) sorts just below the floor, and is found here, not at the
            -- next rewind. Other moves only go up.
            v_look_back := date_trunc('second', v_floor.moved_at) < date_trunc('second', now());
            select a.priority, a.run_at into v_priority, v_run_at
              from pgq.jobs a
             where a.queue = v_queue
               and a.state = 'available'
               and a.run_at <= now()
               and (a.priority, a.run_at, a.id)
                   >= (v_floor.priority,
                       v_floor.run_at - case when v_look_back then c_look_back
                                             else interval '0' end,
                       -9223372036854775808)
             order by a.priority, a.run_at, a.id
             limit 1;
            continue when not found;
            update pgq.claim_floors f
               set priority = v_priority, run_at = v_run_at - c_margin, moved_at = now()
             where f.queue = v_queue
               and f.moved_at <= now() - interval '100 milliseconds'
               and (v_look_back or (f.priority, f.run_at) < (v_priority, v_run_at - c_margin));
            continue;
        end if;

        -- A first floor, or a rewind that is due: one claim at a time per queue. Before
        -- a first floor the front is read up to three times, until one read is fast:
        -- the first read of a session also plans it, and a busy machine can stall one.
        -- A rewind reads it once (a slow read only keeps the floor a while longer).
        continue when not pg_try_advisory_xact_lock(1885434162, hashtext(v_queue));
        for i in 1 .. case when v_floor.queue is null then 3 else 1 end loop
            v_started := clock_timestamp();
            v_priority := null;
            v_run_at := null;
            select a.priority, a.run_at into v_priority, v_run_at
              from pgq.jobs a
             where a.queue = v_queue
               and a.state = 'available'
               and a.run_at <= now()
             order by a.priority, a.run_at, a.id
             limit 1;
            v_took := clock_timestamp() - v_started;
            exit when v_took <= _keep_claim_floors.slow_scan;
        end loop;
        if v_took <= _keep_claim_floors.slow_scan then
            delete from pgq.claim_floors f where f.queue = v_queue;
        elsif v_priority is null then
            -- Nothing is due: keep the floor where it was and read the front later.
            update pgq.claim_floors f
               set rewind_at = now() + least(interval '60 seconds',
                                             greatest(interval '5 seconds', v_took * 50))
             where f.queue = v_queue;
        else
            insert into pgq.claim_floors as f (queue, priority, run_at, moved_at, rewind_at)
            values (v_queue, v_priority, v_run_at - c_margin, now(),
                    now() + least(interval '60 seconds', greatest(interval '5 seconds', v_took * 50)))
            on conflict (queue) do update
               set priority = excluded.priority, run_at = excluded.run_at,
                   moved_at = excluded.moved_at, rewind_at = excluded.rewind_at;
        end if;
    end loop;
end;
$$;
comment on function pgq._keep_claim_floors(text[], boolean, interval) is
    'Internal: move, rewind, start or drop the claim floors of queues after a claim (held xmin horizon).';

-- Internal: the best `batch` due jobs of the unpaused `queues`, locked (skip locked),
-- in claim order (priority, run_at, id). Per queue, one ordered range scan of
-- jobs_claim_idx from the queue's claim floor (or its front); jobs not yet due are
-- skipped inside the index (run_at is a key column), without heap visits. The one
-- place the claim order is read: pgq.claim and pgq._claim_limited both pick here.
create or replace function pgq._pick(queues text[], batch integer)
returns bigint[]
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    return array(
        select c.id
          from pgq.queues q
          left join pgq.claim_floors f on f.queue = q.queue
         cross join lateral (
               select a.id, a.priority, a.run_at
                 from pgq.jobs a
                where a.queue = q.queue
                  and a.state = 'available'
                  and a.run_at <= now()
                  and (a.priority, a.run_at, a.id)
                      >= (coalesce(f.priority, -2147483648), coalesce(f.run_at, '-infinity'),
                          -9223372036854775808)
                order by a.priority, a.run_at, a.id
                limit _pick.batch
                  for update skip locked) as c
         where q.queue = any (_pick.queues)
           and not q.paused
         order by c.priority, c.run_at, c.id
         limit _pick.batch);
end;
$$;
comment on function pgq._pick(text[], integer) is
    'Internal: lock and return the ids of up to batch due jobs of the unpaused queues, in claim order.';

-- Internal: up to `max_jobs` available jobs of a key-limited queue, best first,
-- skipping jobs whose concurrency key already has `key_concurrency` running (or
-- picked here): a key at its limit holds back only its own jobs. Jobs without a key
-- are not limited by key. The caller holds the queue row lock, so the running
-- counts cannot change under it; the jobs read are locked (skip locked).
create or replace function pgq._pick_by_key(queue text, key_concurrency integer,
                                            max_jobs integer)
returns bigint[]
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    -- One element per running or picked job that has a key: the keys' use.
    v_used      text[];
    v_full      text[];
    v_ids       bigint[] := '{}';
    v_new_ids   bigint[];
    v_new_keys  text[];
    -- The claim order's position after the last job read: before every job at first.
    v_after_priority integer := -2147483648;
    v_after_run_at   timestamptz := '-infinity';
    v_after_id       bigint := 0;
    -- Each job read is locked: read about as many as are wanted.
    v_page_size      integer := greatest(_pick_by_key.max_jobs, 10);
    v_page_rows      integer;
begin
    v_used := array(select j.concurrency_key
                      from pgq.jobs j
                     where j.queue = _pick_by_key.queue
                       and j.state = 'running'
                       and j.concurrency_key is not null);
    -- Keys already at the limit are dropped inside the scan below (a hashed lookup).
    v_full := array(select u.k from unnest(v_used) as u(k)
                     group by u.k having count(*) >= _pick_by_key.key_concurrency);
    -- Start at the queue's claim floor, if it has one (see pgq._keep_claim_floors).
    select f.priority, f.run_at, -9223372036854775808
      into v_after_priority, v_after_run_at, v_after_id
      from pgq.claim_floors f where f.queue = _pick_by_key.queue;
    if not found then
        v_after_priority := -2147483648;
        v_after_run_at := '-infinity';
        v_after_id := 0;
    end if;

    -- Keyset pages of the claim order, each one ordered range scan of jobs_claim_idx.
    -- In a page, a job is taken when the running and earlier taken jobs of its key
    -- leave room; the pages go on until the batch is full or no due job is left.
    loop
        with page as materialized (
            select a.id, a.concurrency_key, a.priority, a.run_at
              from pgq.jobs a
             where a.queue = _pick_by_key.queue
               and a.state = 'available'
               and a.run_at <= now()
               and (a.priority, a.run_at, a.id) > (v_after_priority, v_after_run_at, v_after_id)
               and (a.concurrency_key is null
                    or not a.concurrency_key in (select f.k from unnest(v_full) as f(k)))
             order by a.priority, a.run_at, a.id
             limit v_page_size
               for update skip locked
        ),
        ranked as (
            select p.id, p.concurrency_key, p.priority, p.run_at,
                   row_number() over (partition by p.concurrency_key
                                      order by p.priority, p.run_at, p.id) as n
              from page p
        ),
        taken as (
            select r.id, r.concurrency_key, r.priority, r.run_at
              from ranked r
              left join (select u.k, count(*) as n from unnest(v_used) as u(k) group by u.k) as c
                on c.k = r.concurrency_key
             where r.concurrency_key is null
                or coalesce(c.n, 0) + r.n <= _pick_by_key.key_concurrency
             order by r.priority, r.run_at, r.id
             limit _pick_by_key.max_jobs - cardinality(v_ids)
        )
        select (select count(*) from page),
               l.priority, l.run_at, l.id,
               array(select t.id from taken t order by t.priority, t.run_at, t.id),
               array(select t.concurrency_key from taken t where t.concurrency_key is not null)
          into v_page_rows, v_after_priority, v_after_run_at, v_after_id, v_new_ids, v_new_keys
          from (select 1) as one
          left join lateral (select p.priority, p.run_at, p.id from page p
                              order by p.priority desc, p.run_at desc, p.id desc
                              limit 1) as l on true;
        v_ids := v_ids || v_new_ids;
        v_used := v_used || v_new_keys;
        exit when cardinality(v_ids) >= _pick_by_key.max_jobs or v_page_rows < v_page_size;
    end loop;
    return v_ids;
end;
$$;
comment on function pgq._pick_by_key(text, integer, integer) is
    'Internal: pick and lock up to max_jobs jobs of a queue whose concurrency keys are below key_concurrency.';

-- Internal: pgq.claim when a named queue has a flow limit (concurrency, rate_limit
-- or key_concurrency). The rows of the limited queues are locked, in name order, so
-- limited claims of a queue take turns, fleet-wide: each counts the running jobs and
-- the starts in the rate window that the claims before it committed, and takes no
-- more than the limits leave. Other claims, completions and enqueues do not wait on
-- that lock. A queue at its limit yields no jobs; the others named are claimed as
-- usual. Starts of rate-limited queues are logged in pgq.queue_starts.
create or replace function pgq._claim_limited(worker_id text, queues text[], batch integer,
                                              lease interval)
returns table (id bigint, job_name text, queue text, payload jsonb, attempt integer,
               max_retries integer, lease_token uuid, lease_expires_at timestamptz,
               priority integer, run_at timestamptz, created_at timestamptz,
               lease_duration interval)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_now         timestamptz;
    v_queue       pgq.queues;
    v_allowed     integer;
    v_ids         bigint[] := '{}';
    v_more        bigint[];
    v_sources     integer := 0;
    v_rate_queues text[] := '{}';
begin
    v_now := clock_timestamp();
    -- Each limited queue's row is locked as the loop reaches it, in name order; what
    -- the loop reads after the lock is what the claims before this one committed.
    for v_queue in
        select * from pgq.queues q
         where q.queue = any (_claim_limited.queues)
           and not q.paused
           and (q.concurrency > 0 or q.rate_limit > 0 or q.key_concurrency > 0)
         order by q.queue
           for no key update of q
    loop
        -- Read after the lock is held: later than any start that a claim before this
        -- one logged for the queue. The last one read is the start time of this claim.
        v_now := clock_timestamp();
        v_allowed := _claim_limited.batch;
        if v_queue.concurrency > 0 then
            select least(v_allowed, v_queue.concurrency - count(*)) into v_allowed
              from pgq.jobs j
             where j.queue = v_queue.queue and j.state = 'running';
        end if;
        if v_queue.rate_limit > 0 then
            delete from pgq.queue_starts s
             where s.queue = v_queue.queue
               and s.started_at <= v_now - v_queue.rate_period;
            select least(v_allowed, v_queue.rate_limit - count(*)) into v_allowed
              from pgq.queue_starts s
             where s.queue = v_queue.queue;
            v_rate_queues := v_rate_queues || v_queue.queue;
        end if;
        continue when v_allowed <= 0;
        if v_queue.key_concurrency > 0 then
            v_more := pgq._pick_by_key(v_queue.queue, v_queue.key_concurrency, v_allowed);
        else
            v_more := pgq._pick(array[v_queue.queue], v_allowed);
        end if;
        if cardinality(v_more) > 0 then
            v_ids := v_ids || v_more;
            v_sources := v_sources + 1;
        end if;
    end loop;

    -- The queues named without a limit, as pgq.claim reads them.
    v_more := pgq._pick(array(select q.queue from pgq.queues q
                               where q.queue = any (_claim_limited.queues)
                                 and not (q.concurrency > 0 or q.rate_limit > 0
                                          or q.key_concurrency > 0)),
                        _claim_limited.batch);
    if cardinality(v_more) > 0 then
        v_ids := v_ids || v_more;
        v_sources := v_sources + 1;
    end if;
    -- Jobs from several queues: the best `batch` of them, in claim order (one queue's
    -- picks are in that order already, and no more than batch).
    if v_sources > 1 then
        v_ids := array(select b.id from pgq.jobs b
                        where b.id = any (v_ids)
                        order by b.priority, b.run_at, b.id
                        limit _claim_limited.batch);
    end if;

    return query
    with claimed as (
        select * from pgq._lease(v_ids, _claim_limited.worker_id, _claim_limited.lease, v_now)
    ),
    logged as (
        insert into pgq.queue_starts (queue, started_at)
        select c.queue, v_now from claimed c where c.queue = any (v_rate_queues)
    )
    select c.id, c.job_name, c.queue, c.payload, c.attempt, c.max_retries,
           c.lease_token, c.lease_expires_at, c.priority, c.run_at, c.created_at,
           c.lease_duration
      from claimed c
     order by c.priority, c.run_at, c.id;
end;
$$;
comment on function pgq._claim_limited(text, text[], integer, interval) is
    'Internal: pgq.claim for queues with flow limits (concurrency, rate_limit, key_concurrency).';

-- Take up to `batch` runnable jobs from `queues`, best first: lower priority, then
-- earlier run_at, then lower id. `lease_duration` tells the worker how often to
-- heartbeat without comparing its clock with the database's. Never waits for a job
-- another worker holds, never reads a paused queue, a job not yet due, or a finished
-- job. A queue with a flow limit goes through pgq._claim_limited, which may return
-- fewer jobs (or none) to keep the limits; a queue without one costs nothing more.
--
-- While the xmin horizon is held, reading the front of a queue's claim order (or of
-- the expired leases) gets slower with every job done. A claim that finds it slow
-- starts a claim floor (or a lease sweep window), and claims read past it until the
-- front is fast again: pgq._keep_claim_floors and pgq._sweep_leases say what that
-- costs (a job that sorts before the floor waits for the next rewind, 5 to 60 s).
create or replace function pgq.claim(worker_id text, queues text[] default '{default}',
                                     batch integer default 1, lease interval default null)
returns table (id bigint, job_name text, queue text, payload jsonb, attempt integer,
               max_retries integer, lease_token uuid, lease_expires_at timestamptz,
               priority integer, run_at timestamptz, created_at timestamptz,
               lease_duration interval)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_lease       interval := claim.lease;
    v_queue_lease interval;
    v_limited     boolean;
    v_floors      boolean;
    v_swept_to    timestamptz;
    v_started     timestamptz;
    -- A read of the front of an index slower than this means a prefix of entries
    -- that vacuum cannot remove (a held xmin horizon): the claim floors and the lease
    -- sweep window then take over.
    c_slow_scan   constant interval := interval '5 milliseconds';
begin
    if claim.worker_id is null or length(claim.worker_id) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid worker_id: must be 1 to 200 characters';
    end if;
    if claim.queues is null or cardinality(claim.queues) = 0
       or array_position(claim.queues, null) is not null then
        raise exception using errcode = 'PQ001',
            message = 'invalid queues: must be a non-empty array of queue names without NULLs';
    end if;
    if claim.batch is null or claim.batch not between 1 and 10000 then
        raise exception using errcode = 'PQ001',
            message = format('invalid batch %s: must be between 1 and 10000', claim.batch);
    end if;
    if claim.lease is not null then
        perform pgq._check_lease(claim.lease);
    end if;

    -- The named queues' leases, flow limits and claim floors, and the lease sweep
    -- window, in one read. One queue (the usual claim): its lease is looked up once,
    -- not per job.
    select case when cardinality(claim.queues) = 1 then min(q.lease) end,
           coalesce(bool_or(q.concurrency > 0 or q.rate_limit > 0 or q.key_concurrency > 0), false),
           coalesce(bool_or(f.queue is not null), false),
           (select s.swept_to from pgq.lease_sweep s)
      into v_queue_lease, v_limited, v_floors, v_swept_to
      from pgq.queues q
      left join pgq.claim_floors f on f.queue = q.queue
     where q.queue = any (claim.queues);
    v_lease := coalesce(claim.lease, v_queue_lease);

    -- Most claims find no expired lease: one probe of jobs_lease_expiry_idx here saves
    -- the call, whose statement PL/pgSQL would plan again on every call. A sweep
    -- window, once one exists, replaces the probe.
    if v_swept_to is null then
        v_started := clock_timestamp();
        if exists (select from pgq.jobs e where e.state = 'running' and e.lease_expires_at <= now()) then
            perform pgq._expire_leases();
        end if;
        if clock_timestamp() - v_started > c_slow_scan then
            perform pgq._sweep_leases(c_slow_scan);
        end if;
    elsif v_swept_to <= now() - interval '1 second'
          or (select s.full_at from pgq.lease_sweep s) <= now() then
        perform pgq._sweep_leases(c_slow_scan);
    end if;

    v_started := clock_timestamp();
    if v_limited then
        return query
        select * from pgq._claim_limited(claim.worker_id, claim.queues, claim.batch, v_lease);
    else
        return query
        select * from pgq._lease(pgq._pick(claim.queues, claim.batch), claim.worker_id, v_lease,
                                 now());
    end if;

    -- A claim slower than reading its batch should be: the front may be the cause.
    if v_floors or clock_timestamp() - v_started
                   > interval '5 milliseconds' + claim.batch * interval '50 microseconds' then
        perform pgq._keep_claim_floors(claim.queues,
            clock_timestamp() - v_started
                > interval '5 milliseconds' + claim.batch * interval '50 microseconds',
            c_slow_scan);
    end if;
end;
$$;
comment on function pgq.claim(text, text[], integer, interval) is
    'Lease up to batch runnable jobs (priority, run_at, id order); fails expired leases first. PQ001 on bad input.';

-- A claim whose answer was lost with its connection leaves jobs running under a
-- worker that never received them. Back online, the worker names the jobs it does
-- hold; its other running jobs with an unexpired lease return to available as if
-- never claimed: no handler ran, so the attempt is not counted. Returns how many.
-- (A job whose lease expired is left to claim, which fails that attempt.)
create or replace function pgq.release_lost_claims(worker_id text, held_job_ids bigint[])
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_queues text[];
begin
    if release_lost_claims.worker_id is null
       or length(release_lost_claims.worker_id) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid worker_id: must be 1 to 200 characters';
    end if;
    if release_lost_claims.held_job_ids is null then
        raise exception using errcode = 'PQ001',
            message = 'invalid held_job_ids: must not be null',
            hint = 'Pass ''{}'' when the worker holds no job.';
    end if;
    with released as (
        update pgq.jobs as j
           set state = 'available', attempt = j.attempt - 1, started_at = null,
               lease_token = null, lease_expires_at = null, lease_duration = null
         where j.state = 'running'
           and j.worker_id = release_lost_claims.worker_id
           and j.lease_expires_at > now()
           and not j.id = any (release_lost_claims.held_job_ids)
        returning j.queue
    )
    select coalesce(array_agg(r.queue), '{}') into v_queues from released r;
    perform pgq._wake(v_queues);
    return cardinality(v_queues);
end;
$$;
comment on function pgq.release_lost_claims(text, bigint[]) is
    'Return to available, uncounted, the running jobs of worker_id not in held_job_ids (a claim whose answer was lost).';

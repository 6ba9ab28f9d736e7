-- Hand-overs: a job that a one-row enqueue commits goes straight to a waiting worker,
-- leased to it as the enqueue's transaction commits and sent in a notification on the
-- worker's own channel, so the worker starts it without claiming it: one commit
-- instead of two between the enqueue and the handler.
--
-- A worker waits by claiming with pgq.claim_and_wait, which records its free slots
-- when the claim comes back short, from a session that called pgq.listen_for_handoffs.
-- Nothing here is needed for a job to run: a job not handed over wakes the workers and
-- is claimed as before. A handed job whose notification never reaches its worker is
-- leased like a claimed job whose answer was lost: pgq.release_lost_claims gives it
-- back, uncounted, or it is retried when its lease expires.

-- The worker's listening session: a fresh advisory lock, held until the session ends
-- (a producer that finds it free knows the worker is gone), and a fresh channel that
-- no other session can guess (a handed job's notification carries its lease token).
-- Call it in autocommit: LISTEN takes effect at commit.
create or replace function pgq.listen_for_handoffs()
returns table (wake_key integer, channel text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_key     integer;
    v_channel text := 'pgq_handoff_' || replace(gen_random_uuid()::text, '-', '');
begin
    -- The server's lock table holds max_locks_per_transaction x max_connections locks
    -- (thousands) against 2^31 keys: a random key is nearly always free at once.
    loop
        v_key := 1 + floor(random() * 2147483646)::integer;
        exit when pg_try_advisory_lock(1885434163, v_key);
    end loop;
    execute format('listen %I', v_channel);
    return query select v_key, v_channel;
end;
$$;
comment on function pgq.listen_for_handoffs() is
    'Lock a fresh wake_key for this session and LISTEN on a fresh channel; returns both for pgq.claim_and_wait.';

-- pgq.claim, then: when fewer than `free_slots` jobs came back, this worker waits for
-- the rest, and one-row enqueues of `queues` hand it up to that many jobs, leased for
-- `lease`; otherwise it waits for none. A producer handing this worker a job right now
-- holds its row: the claim does not wait for it, and the row stays as that producer
-- leaves it.
create or replace function pgq.claim_and_wait(worker_id text, queues text[], batch integer,
                                              lease interval, wake_key integer, channel text,
                                              free_slots integer)
returns table (id bigint, job_name text, queue text, payload jsonb, attempt integer,
               max_retries integer, lease_token uuid, lease_expires_at timestamptz,
               priority integer, run_at timestamptz, created_at timestamptz,
               lease_duration interval)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_claimed integer;
    v_slots   integer;
begin
    if claim_and_wait.wake_key is null then
        raise exception using errcode = 'PQ001', message = 'invalid wake_key: must not be null',
            hint = 'Pass the wake_key that pgq.listen_for_handoffs returned.';
    end if;
    if claim_and_wait.channel is null or claim_and_wait.channel !~ '^pgq_handoff_[0-9a-f]{32}$' then
        raise exception using errcode = 'PQ001',
            message = 'invalid channel: must be the channel that pgq.listen_for_handoffs returned';
    end if;
    if claim_and_wait.free_slots is null or claim_and_wait.free_slots not between 0 and 10000 then
        raise exception using errcode = 'PQ001',
            message = format('invalid free_slots %s: must be between 0 and 10000',
                             coalesce(claim_and_wait.free_slots::text, 'NULL'));
    end if;
    return query
    select * from pgq.claim(claim_and_wait.worker_id, claim_and_wait.queues,
                            claim_and_wait.batch, claim_and_wait.lease);
    get diagnostics v_claimed = row_count;
    v_slots := claim_and_wait.free_slots - v_claimed;
    -- While hand-overs are off, the worker waits for none (and writes no row version);
    -- a claim that filled its slots does not need to ask.
    if v_slots > 0 and not pgq._handoffs_on() then
        v_slots := 0;
    end if;

    perform from pgq.waiting_workers w
      where w.worker_id = claim_and_wait.worker_id
        for update skip locked;
    if found then
        if v_slots > 0 then
            update pgq.waiting_workers w
               set queues = claim_and_wait.queues, slots = v_slots,
                   wake_key = claim_and_wait.wake_key, channel = claim_and_wait.channel,
                   lease = claim_and_wait.lease, since = now()
             where w.worker_id = claim_and_wait.worker_id;
        else
            delete from pgq.waiting_workers w where w.worker_id = claim_and_wait.worker_id;
        end if;
    elsif v_slots > 0 then
        insert into pgq.waiting_workers as w (worker_id, queues, slots, wake_key, channel, lease,
                                              since)
        values (claim_and_wait.worker_id, claim_and_wait.queues, v_slots, claim_and_wait.wake_key,
                claim_and_wait.channel, claim_and_wait.lease, now())
        on conflict on constraint waiting_workers_pkey do nothing;
    end if;
end;
$$;
comment on function pgq.claim_and_wait(text, text[], integer, interval, integer, text, integer) is
    'pgq.claim, then wait for up to free_slots less the jobs claimed: one-row enqueues hand them over. PQ001 on bad input.';

-- The worker waits no more: no job is handed to it after this call. It waits for a
-- hand-over to this worker that is in progress, then sends an empty notification on
-- `channel` (NULL: none), which the worker receives after the notification of every
-- job handed to it: from then on pgq.release_lost_claims cannot give back a job whose
-- notification is still on its way.
create or replace function pgq.stop_waiting(worker_id text, channel text default null)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if stop_waiting.worker_id is null or length(stop_waiting.worker_id) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid worker_id: must be 1 to 200 characters';
    end if;
    if stop_waiting.channel !~ '^pgq_handoff_[0-9a-f]{32}$' then
        raise exception using errcode = 'PQ001',
            message = 'invalid channel: must be NULL or the channel that pgq.listen_for_handoffs returned';
    end if;
    delete from pgq.waiting_workers w where w.worker_id = stop_waiting.worker_id;
    if stop_waiting.channel is not null then
        perform pg_notify(stop_waiting.channel, '');
    end if;
end;
$$;
comment on function pgq.stop_waiting(text, text) is
    'Stop waiting for hand-overs (waits for one in progress), then notify channel with an empty payload. PQ001 on bad input.';

-- Internal: whether the worker that listens with `wake_key` is still connected: its
-- listening session holds the key's advisory lock, so this one cannot take it. (Once
-- taken, the lock is this transaction's until it ends; nobody uses the key then.)
create or replace function pgq._is_listening(wake_key integer)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    return not pg_try_advisory_xact_lock(1885434163, _is_listening.wake_key);
end;
$$;
comment on function pgq._is_listening(integer) is
    'Internal: whether another session holds the advisory lock of wake_key (its worker still listens).';

-- Internal: hand job `job_id` of `queue` to the worker that has waited longest for
-- that queue, if the job may still start now. Skips a worker whose listening session
-- is gone (and forgets it) and one another producer is handing a job to. Returns
-- whether the job was handed over.
create or replace function pgq._hand_off(job_id bigint, queue text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_worker    pgq.waiting_workers;
    v_job       record;
    v_startable boolean;
    v_started   timestamptz := clock_timestamp();
begin
    -- The job as this transaction leaves it: still available and due, its queue
    -- unpaused and without a flow limit (limits are kept by claims alone), and small
    -- enough that its notification stays within NOTIFY's 8000 bytes (the fields not
    -- counted here take fewer than 500). The conditions are read from the row, not put
    -- in the WHERE clause: there, a cached generic plan may take jobs_claim_idx, whose
    -- columns end in id, and scan every available job of every queue.
    select j.state = 'available'
           and j.run_at <= v_started
           and not q.paused
           and q.concurrency = 0 and q.rate_limit = 0 and q.key_concurrency = 0
           and octet_length(json_build_object('job_name', j.job_name, 'queue', j.queue,
                                              'payload', j.payload)::text) <= 7500
      into v_startable
      from pgq.jobs j
      join pgq.queues q on q.queue = j.queue
     where j.id = _hand_off.job_id;
    if v_startable is not true then
        return false;
    end if;
    for v_worker in
        select * from pgq.waiting_workers w
         where _hand_off.queue = any (w.queues)
         order by w.since
           for update skip locked
    loop
        if not pgq._is_listening(v_worker.wake_key) then
            delete from pgq.waiting_workers w where w.worker_id = v_worker.worker_id;
            continue;
        end if;
        select * into v_job
          from pgq._lease(array[_hand_off.job_id], v_worker.worker_id, v_worker.lease, v_started);
        if v_worker.slots > 1 then
            update pgq.waiting_workers w set slots = w.slots - 1
             where w.worker_id = v_worker.worker_id;
        else
            delete from pgq.waiting_workers w where w.worker_id = v_worker.worker_id;
        end if;
        -- Times as microseconds since the epoch: exact, and the same in every client.
        perform pg_notify(v_worker.channel, json_build_object(
            'id', v_job.id, 'job_name', v_job.job_name, 'queue', v_job.queue,
            'payload', v_job.payload, 'attempt', v_job.attempt, 'max_retries', v_job.max_retries,
            'lease_token', v_job.lease_token,
            'lease_expires_at', floor(extract(epoch from v_job.lease_expires_at) * 1000000)::bigint,
            'priority', v_job.priority,
            'run_at', floor(extract(epoch from v_job.run_at) * 1000000)::bigint,
            'created_at', floor(extract(epoch from v_job.created_at) * 1000000)::bigint,
            'lease_duration', floor(extract(epoch from v_job.lease_duration) * 1000000)::bigint
        )::text);
        return true;
    end loop;
    return false;
end;
$$;
comment on function pgq._hand_off(bigint, text) is
    'Internal: lease a job that may start now to the longest-waiting live worker of its queue and notify it; returns whether it did.';

-- Internal: the deferred trigger of pgq.handoff_requests, run as the enqueue's
-- transaction commits: the lease starts then, however long the transaction ran. A job
-- no worker takes wakes the workers, as an enqueue does.
create or replace function pgq._hand_off_at_commit()
returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    delete from pgq.handoff_requests r where r.job_id = new.job_id;
    if not pgq._hand_off(new.job_id, new.queue) then
        perform pgq._wake(array[new.queue]);
    end if;
    return null;
end;
$$;
comment on function pgq._hand_off_at_commit() is
    'Internal: trigger function: hand a job over at commit, or wake the workers.';

drop trigger if exists handoff_requests_at_commit on pgq.handoff_requests;
create constraint trigger handoff_requests_at_commit
    after insert on pgq.handoff_requests
    deferrable initially deferred
    for each row execute function pgq._hand_off_at_commit();

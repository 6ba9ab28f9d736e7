-- Shared internals: the helpers that more than one stage calls, defined here so
-- that every later file only calls what it has already met. Refusals (_lease_lost),
-- batch checks (_check_job_batch, _check_lease), notifications (_wake,
-- _notify_finished), how a failed attempt ends (_backoff, _fail_jobs,
-- _fail_lapsed: the one place the dead-letter rule is decided) and how one starts
-- (_lease, for claims and hand-overs alike).
--
-- Every pgq function, here and in the later files, plans with enable_seqscan and jit
-- off: PL/pgSQL keeps a generic plan for the session, and one made while pgq.jobs was
-- small would scan it whole once it is large (pgtap_tests/04_plans.sql).

-- Internal: refuse a worker call for a job not held under the caller's lease
-- (PQ101), saying plainly why: the lease expired, another attempt holds the job,
-- the job finished or is gone. Called only on the refusal path.
create or replace function pgq._lease_lost(job_id bigint)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_job pgq.jobs;
    v_why text;
begin
    select * into v_job from pgq.jobs j where j.id = _lease_lost.job_id;
    v_why := case
        when v_job.id is null then 'no such job (it may have been pruned)'
        when v_job.state = 'running' and v_job.lease_expires_at <= now()
            then format('its lease expired at %s', v_job.lease_expires_at)
        when v_job.state = 'running'
            then format('attempt %s holds it now (worker %s)', v_job.attempt, v_job.worker_id)
        else format('the job is %s', v_job.state)
        end;
    raise exception using
        errcode = 'PQ101',
        message = format('job %s: lease lost: %s', _lease_lost.job_id, v_why),
        hint = 'Stop working on this job: nothing was recorded for this call.';
end;
$$;
comment on function pgq._lease_lost(bigint) is
    'Internal: raise PQ101 (lease_lost) for a job, saying why the caller no longer holds it.';

-- Internal: wake the workers listening on channel pgq_jobs, one NOTIFY per queue
-- (the payload). PostgreSQL delivers it when the caller's transaction commits and
-- folds identical ones within a transaction.
create or replace function pgq._wake(queues text[])
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    perform pg_notify('pgq_jobs', w.queue)
       from (select distinct u.queue from unnest(_wake.queues) as u(queue)) as w;
end;
$$;
comment on function pgq._wake(text[]) is
    'Internal: NOTIFY pgq_jobs once per queue named, at commit.';

-- Internal: refuse a lease outside the range every call accepts (NULL passes: it
-- means the queue's lease). Long jobs keep a lease by heartbeats, not by a long lease.
create or replace function pgq._check_lease(lease interval)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if _check_lease.lease not between interval '1 second' and interval '1 day' then
        raise exception using errcode = 'PQ001',
            message = format('invalid lease %s: must be between 1 second and 1 day',
                             _check_lease.lease);
    end if;
end;
$$;
comment on function pgq._check_lease(interval) is
    'Internal: PQ001 unless the lease is NULL or between 1 second and 1 day.';

-- Internal: refuse a batch of (job id, lease token) pairs that is not one: arrays
-- NULL or of different lengths, or a job listed twice (its outcome would be ambiguous).
create or replace function pgq._check_job_batch(job_ids bigint[], lease_tokens uuid[])
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_twice bigint;
begin
    if _check_job_batch.job_ids is null or _check_job_batch.lease_tokens is null
       or cardinality(_check_job_batch.job_ids) <> cardinality(_check_job_batch.lease_tokens) then
        raise exception using errcode = 'PQ001',
            message = 'invalid job_ids/lease_tokens: must be non-null arrays of the same length';
    end if;
    select d.job_id into v_twice
      from unnest(_check_job_batch.job_ids) as d(job_id)
     group by d.job_id
    having count(*) > 1
     limit 1;
    if v_twice is not null then
        raise exception using errcode = 'PQ001',
            message = format('invalid job_ids: job %s is listed twice', v_twice),
            hint = 'List each job once, with its current lease token.';
    end if;
end;
$$;
comment on function pgq._check_job_batch(bigint[], uuid[]) is
    'Internal: PQ001 unless job_ids and lease_tokens are paired arrays of distinct jobs.';

-- Internal: tell listeners on channel pgq_finished that jobs finished (succeeded,
-- dead or cancelled), delivered when the caller's transaction commits. The payload
-- is the job ids, comma-separated, at most 390 per notification so that one stays
-- within NOTIFY's 8000-byte payload (an id has at most 19 digits).
create or replace function pgq._notify_finished(job_ids bigint[])
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    perform pg_notify('pgq_finished',
                      array_to_string(_notify_finished.job_ids[c.first : c.first + 389], ','))
       from generate_series(1, cardinality(_notify_finished.job_ids), 390) as c(first);
end;
$$;
comment on function pgq._notify_finished(bigint[]) is
    'Internal: NOTIFY pgq_finished with the finished job ids (comma-separated, 390 per notification), at commit.';

-- Internal: the delay before the retry that follows attempt `attempt` (1-based):
-- base * 2^(attempt-1), capped at backoff_max, with "equal jitter" so that the
-- result lies in [delay/2, delay] and retries of a burst of failures spread out.
create or replace function pgq._backoff(attempt integer, backoff_base interval,
                                        backoff_max interval)
returns interval
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_exponent integer := least(greatest(_backoff.attempt, 1) - 1, 60);
    v_delay    interval;
begin
    -- Compared in seconds before any interval is built, so that a large attempt
    -- or base cannot overflow the interval: past backoff_max the delay is the max.
    if extract(epoch from _backoff.backoff_base)::float8 * power(2::float8, v_exponent)
       >= extract(epoch from _backoff.backoff_max)::float8 then
        v_delay := _backoff.backoff_max;
    else
        v_delay := _backoff.backoff_base * power(2::float8, v_exponent);
    end if;
    return v_delay * (0.5 + random() * 0.5);
end;
$$;
comment on function pgq._backoff(integer, interval, interval) is
    'Internal: exponential backoff with equal jitter, in [d/2, d] for d = min(max, base * 2^(attempt-1)).';

-- Internal: record one failed attempt for each given job (already fenced or
-- found expired by the caller, and locked): keep its error, then schedule the
-- retry, or dead-letter it when retry is false or its attempts are used up.
-- clear_lease_token (claim reaping an expired lease) moves the token to
-- lapsed_lease_token, so that its holder may still record how the attempt ended
-- while nobody claims the job (see 40_complete.sql). Jobs that went to the dead
-- letter are announced on channel pgq_finished.
create or replace function pgq._fail_jobs(job_ids bigint[], errors text[], retry boolean,
                                          clear_lease_token boolean)
returns table (job_id bigint, state text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_ids    bigint[];
    v_states text[];
begin
    with failed as (
        update pgq.jobs as j
           set state = case when f.dead then 'dead' else 'available' end,
               run_at = case when f.dead then j.run_at
                             else now() + pgq._backoff(j.attempt, f.backoff_base, f.backoff_max) end,
               finished_at = case when f.dead then now() end,
               lease_token = case when _fail_jobs.clear_lease_token then null else j.lease_token end,
               lapsed_lease_token = case when _fail_jobs.clear_lease_token then j.lease_token end,
               lease_expires_at = null,
               last_error = f.error
          from (select u.job_id, u.error, q.backoff_base, q.backoff_max,
                       -- The dead-letter rule, decided here only: the handler said not to
                       -- retry, or the job has now run max_retries + 1 times.
                       (not _fail_jobs.retry or d.attempt > d.max_retries) as dead
                  from unnest(_fail_jobs.job_ids, _fail_jobs.errors) as u(job_id, error)
                  join pgq.jobs d on d.id = u.job_id
                  join pgq.queues q on q.queue = d.queue) as f
         where j.id = f.job_id
        returning j.id, j.queue, j.job_name, j.attempt, j.worker_id, j.state, f.error
    ),
    logged as (
        insert into pgq.attempt_errors (job_id, queue, job_name, attempt, error, worker_id)
        select f.id, f.queue, f.job_name, f.attempt, f.error, f.worker_id
          from failed f
    )
    select array_agg(f.id), array_agg(f.state) into v_ids, v_states from failed f;
    perform pgq._notify_finished(array(select d.job_id from unnest(v_ids, v_states) as d(job_id, state)
                                        where d.state = 'dead'));
    return query select u.job_id, u.state from unnest(v_ids, v_states) as u(job_id, state);
end;
$$;
comment on function pgq._fail_jobs(bigint[], text[], boolean, boolean) is
    'Internal: log a failed attempt per job and schedule its retry or dead-letter it.';

-- Internal: a late fail from the holder of a lease that claim reaped (the jobs are
-- available or dead, not claimed since, and locked by the caller). That attempt is
-- already counted as failed, with its "lease expired" row; the handler's own error
-- is logged as a second row for the same attempt and becomes last_error. With
-- retry false an available job goes to the dead letter (the handler's verdict);
-- otherwise the job keeps its state and retry time. The holder's token becomes
-- the job's again, so a resend is recognised as recorded.
create or replace function pgq._fail_lapsed(job_ids bigint[], errors text[], retry boolean)
returns table (job_id bigint, state text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_ids    bigint[];
    v_states text[];
    v_killed bigint[];
begin
    -- The state is tested outside the WHERE clause: there, a cached generic plan may take
    -- jobs_claim_idx and scan every available job.
    select array_agg(j.id) filter (where j.state = 'available' and not _fail_lapsed.retry)
      into v_killed
      from pgq.jobs j
     where j.id = any (_fail_lapsed.job_ids);
    with failed as (
        update pgq.jobs as j
           set state = case when j.id = any (v_killed) then 'dead' else j.state end,
               finished_at = case when j.id = any (v_killed) then now() else j.finished_at end,
               lease_token = j.lapsed_lease_token,
               lapsed_lease_token = null,
               last_error = f.error
          from unnest(_fail_lapsed.job_ids, _fail_lapsed.errors) as f(job_id, error)
         where j.id = f.job_id
        returning j.id, j.queue, j.job_name, j.attempt, j.worker_id, j.state, f.error
    ),
    logged as (
        insert into pgq.attempt_errors (job_id, queue, job_name, attempt, error, worker_id)
        select f.id, f.queue, f.job_name, f.attempt, f.error, f.worker_id
          from failed f
    )
    select array_agg(f.id), array_agg(f.state) into v_ids, v_states from failed f;
    perform pgq._notify_finished(v_killed);
    return query select u.job_id, u.state from unnest(v_ids, v_states) as u(job_id, state);
end;
$$;
comment on function pgq._fail_lapsed(bigint[], text[], boolean) is
    'Internal: log a late fail from the holder of a reaped lease; with retry false an available job goes dead.';

-- Internal: lease the jobs `job_ids` to `worker_id`, the one place an attempt starts:
-- the attempt is counted, a fresh lease token drawn, and the lease (`lease`, NULL: each
-- job's queue's) runs from `started_at`. The caller has locked the jobs and checked
-- that they may start. Returns them as pgq.claim does, in claim order.
create or replace function pgq._lease(job_ids bigint[], worker_id text, lease interval,
                                      started_at timestamptz)
returns table (id bigint, job_name text, queue text, payload jsonb, attempt integer,
               max_retries integer, lease_token uuid, lease_expires_at timestamptz,
               priority integer, run_at timestamptz, created_at timestamptz,
               lease_duration interval)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    return query
    with leased as (
        -- The ids arrive as an array, so the update touches jobs by primary key alone,
        -- without a join.
        update pgq.jobs as j
           set state            = 'running',
               attempt          = j.attempt + 1,
               worker_id        = _lease.worker_id,
               lease_token      = gen_random_uuid(),
               lease_duration   = coalesce(_lease.lease, (select q.lease from pgq.queues q
                                                           where q.queue = j.queue)),
               lease_expires_at = _lease.started_at
                                  + coalesce(_lease.lease, (select q.lease from pgq.queues q
                                                             where q.queue = j.queue)),
               started_at       = _lease.started_at
         where j.id = any (_lease.job_ids)
        returning j.id, j.job_name, j.queue, j.payload, j.attempt, j.max_retries,
                  j.lease_token, j.lease_expires_at, j.priority, j.run_at, j.created_at,
                  j.lease_duration
    )
    select l.id, l.job_name, l.queue, l.payload, l.attempt, l.max_retries,
           l.lease_token, l.lease_expires_at, l.priority, l.run_at, l.created_at,
           l.lease_duration
      from leased l
     order by l.priority, l.run_at, l.id;
end;
$$;
comment on function pgq._lease(bigint[], text, interval, timestamptz) is
    'Internal: start an attempt of each job listed, leased to worker_id from started_at; returns them in claim order.';

-- Internal: whether hand-overs are on (see 25_handoff.sql). They are off while
-- pgq.waiting_workers takes more than 512 kB: its live rows, one per waiting worker,
-- take a few hundred bytes each, so more is dead row versions that vacuum cannot
-- remove yet (a held xmin horizon, or no autovacuum), and every due one-row enqueue
-- would read them. Jobs are then woken and claimed as without hand-overs, and workers
-- stop waiting, until vacuum has cleaned and shrunk the table.
create or replace function pgq._handoffs_on()
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    return pg_relation_size('pgq.waiting_workers') <= 524288;
end;
$$;
comment on function pgq._handoffs_on() is
    'Internal: whether hand-overs are on (pgq.waiting_workers is no larger than 512 kB).';

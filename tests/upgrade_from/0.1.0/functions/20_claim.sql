-- Claim: a worker takes up to `batch` runnable jobs and a lease on each. Every
-- later call for a job must present the lease token returned here.

-- Internal: a running job whose lease expired is a failed attempt; its worker
-- died or hung. It is retried with backoff or dead-lettered like any failure, so
-- a job that kills its worker every time ends in the dead letter.
create or replace function pgq._expire_leases(max_jobs integer default 100)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
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
               and j.lease_expires_at <= now()
             order by j.lease_expires_at
             limit _expire_leases.max_jobs
               for update skip locked) as e;
    if v_ids is null then
        return 0;
    end if;
    perform pgq._fail_jobs(v_ids, v_errors, true, true);
    return cardinality(v_ids);
end;
$$;
comment on function pgq._expire_leases(integer) is
    'Internal: fail (retry or dead-letter) running jobs whose lease expired.';

-- Take up to `batch` runnable jobs from `queues`, best first: lower priority, then
-- earlier run_at, then lower id. `lease_duration` tells the worker how often to
-- heartbeat without comparing its clock with the database's. Never waits for a job another worker holds, never
-- reads a paused queue, a job not yet due, or a finished job.
create or replace function pgq.claim(worker_id text, queues text[] default '{default}',
                                     batch integer default 1, lease interval default null)
returns table (id bigint, job_name text, queue text, payload jsonb, attempt integer,
               max_retries integer, lease_token uuid, lease_expires_at timestamptz,
               priority integer, run_at timestamptz, created_at timestamptz,
               lease_duration interval)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_lease interval := claim.lease;
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
    perform pgq._check_lease(claim.lease);

    perform pgq._expire_leases();

    -- One queue (the usual claim): its lease is looked up once, not per job.
    if v_lease is null and cardinality(claim.queues) = 1 then
        select q.lease into v_lease from pgq.queues q where q.queue = claim.queues[1];
    end if;

    return query
    with claimed as (
        -- The picked ids arrive as an array, so the update touches jobs by primary
        -- key alone, without a join.
        update pgq.jobs as j
           set state            = 'running',
               attempt          = j.attempt + 1,
               worker_id        = claim.worker_id,
               lease_token      = gen_random_uuid(),
               lease_duration   = coalesce(v_lease, (select q.lease from pgq.queues q
                                                      where q.queue = j.queue)),
               lease_expires_at = now() + coalesce(v_lease, (select q.lease from pgq.queues q
                                                              where q.queue = j.queue)),
               started_at       = now()
         where j.id = any (array(
               -- Per unpaused queue, one ordered range scan of jobs_claim_idx; jobs
               -- not yet due are skipped inside the index (run_at is a key column),
               -- without heap visits.
               select c.id
                 from pgq.queues q
                cross join lateral (
                      select a.id, a.priority, a.run_at
                        from pgq.jobs a
                       where a.queue = q.queue
                         and a.state = 'available'
                         and a.run_at <= now()
                       order by a.priority, a.run_at, a.id
                       limit claim.batch
                         for update skip locked) as c
                where q.queue = any (claim.queues)
                  and not q.paused
                order by c.priority, c.run_at, c.id
                limit claim.batch))
        returning j.id, j.job_name, j.queue, j.payload, j.attempt, j.max_retries,
                  j.lease_token, j.lease_expires_at, j.priority, j.run_at, j.created_at,
                  j.lease_duration
    )
    select c.id, c.job_name, c.queue, c.payload, c.attempt, c.max_retries,
           c.lease_token, c.lease_expires_at, c.priority, c.run_at, c.created_at,
           c.lease_duration
      from claimed c
     order by c.priority, c.run_at, c.id;
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
language plpgsql security definer set search_path = pg_catalog, pg_temp
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

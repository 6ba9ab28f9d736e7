-- Operator calls: cancel, retry from the dead letter, prune finished jobs.

-- Cancel an available or running job. A running job's worker loses its lease:
-- its later calls for the job are refused. Returns the new state, cancelled.
create or replace function pgq.cancel(job_id bigint)
returns text
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    perform pgq._lock_job(cancel.job_id, array['available', 'running'], 'cancelled');
    update pgq.jobs as j
       set state = 'cancelled', finished_at = now(),
           lease_token = null, lease_expires_at = null
     where j.id = cancel.job_id;
    return 'cancelled';
end;
$$;
comment on function pgq.cancel(bigint) is
    'Cancel an available or running job; PQ201 unknown job, PQ202 finished job.';

-- Internal: put the given dead or cancelled jobs back to available with fresh
-- attempts (their past errors stay in pgq.attempt_errors), and wake the workers.
create or replace function pgq._requeue(job_ids bigint[])
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_queues text[];
begin
    with requeued as (
        update pgq.jobs as j
           set state = 'available', attempt = 0, run_at = now(), finished_at = null,
               lease_token = null, lease_expires_at = null, lease_duration = null
         where j.id = any (_requeue.job_ids)
           and j.state in ('dead', 'cancelled')
        returning j.queue
    )
    select coalesce(array_agg(r.queue), '{}') into v_queues from requeued r;
    perform pgq._wake(v_queues);
    return cardinality(v_queues);
end;
$$;
comment on function pgq._requeue(bigint[]) is
    'Internal: make dead or cancelled jobs available again with fresh attempts.';

-- Retry one dead or cancelled job now, with a fresh set of attempts.
create or replace function pgq.retry(job_id bigint)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    perform pgq._lock_job(retry.job_id, array['dead', 'cancelled'], 'retried');
    perform pgq._requeue(array[retry.job_id]);
end;
$$;
comment on function pgq.retry(bigint) is
    'Retry a dead or cancelled job now with fresh attempts; PQ201 unknown job, PQ202 other states.';

-- Retry every dead job, of one queue or of all; returns how many.
create or replace function pgq.retry_dead(queue text default null)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    return pgq._requeue(array(
        select j.id from pgq.jobs j
         where j.state = 'dead'
           and (retry_dead.queue is null or j.queue = retry_dead.queue)
           for update));
end;
$$;
comment on function pgq.retry_dead(text) is
    'Retry every dead job (of one queue, or all when NULL) with fresh attempts; returns the count.';

-- Delete finished jobs (succeeded and cancelled; dead too with include_dead)
-- that finished longer ago than older_than, with their errors and run-once
-- markers. Their idempotency keys become free. Returns how many jobs.
create or replace function pgq.prune(older_than interval, include_dead boolean default false)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_ids bigint[];
begin
    if prune.older_than is null or prune.older_than < interval '0' then
        raise exception using errcode = 'PQ001',
            message = format('invalid older_than %s: must be a non-negative interval',
                             coalesce(prune.older_than::text, 'NULL')),
            hint = 'For example interval ''7 days''.';
    end if;
    if prune.include_dead is null then
        raise exception using errcode = 'PQ001', message = 'invalid include_dead: must be true or false';
    end if;
    with pruned as (
        delete from pgq.jobs j
         where j.finished_at < now() - prune.older_than
           and (j.state in ('succeeded', 'cancelled')
                or (prune.include_dead and j.state = 'dead'))
        returning j.id
    )
    select coalesce(array_agg(p.id), '{}') into v_ids from pruned p;
    delete from pgq.attempt_errors e using unnest(v_ids) as p(id) where e.job_id = p.id;
    delete from pgq.once_markers m using unnest(v_ids) as p(id) where m.job_id = p.id;
    return cardinality(v_ids);
end;
$$;
comment on function pgq.prune(interval, boolean) is
    'Delete jobs finished longer ago than older_than (dead ones only with include_dead); returns the count.';

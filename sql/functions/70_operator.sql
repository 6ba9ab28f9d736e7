-- Operator calls: cancel, retry from the dead letter, prune finished jobs; and
-- job_status, with which producers follow the jobs they added.

-- Internal: lock a job for an operator call and return its state; PQ201 when there
-- is no such job, PQ202 when its state is not one of `states` (`action` names the call).
create or replace function pgq._lock_job(job_id bigint, states text[], action text)
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_state text;
begin
    select j.state into v_state from pgq.jobs j where j.id = _lock_job.job_id for update;
    if not found then
        raise exception using errcode = 'PQ201',
            message = format('job %s not found', _lock_job.job_id),
            hint = 'It may have been pruned.';
    end if;
    if not v_state = any (_lock_job.states) then
        raise exception using errcode = 'PQ202',
            message = format('job %s is %s: only %s jobs can be %s', _lock_job.job_id, v_state,
                             array_to_string(_lock_job.states, ' or '), _lock_job.action);
    end if;
    return v_state;
end;
$$;
comment on function pgq._lock_job(bigint, text[], text) is
    'Internal: lock a job for an operator call; PQ201 unknown job, PQ202 state not in states.';

-- Cancel an available or running job. Cooperative for a running one: its worker
-- loses the lease, and the job keeps that lease's token (with no expiry) so that
-- the worker's next heartbeat answers cancelled (heartbeat_many) or PQ103
-- (heartbeat) and it stops the handler; its complete, fail and once_begin are
-- refused with PQ101, saying the job is cancelled (once_finish of an effect it
-- began is still recorded: the effect did run). Announced on channel
-- pgq_finished. Returns the new state, cancelled.
create or replace function pgq.cancel(job_id bigint)
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    perform pgq._lock_job(cancel.job_id, array['available', 'running'], 'cancelled');
    update pgq.jobs as j
       set state = 'cancelled', finished_at = now(),
           lease_token = case when j.state = 'running' then j.lease_token end,
           lapsed_lease_token = null, lease_expires_at = null
     where j.id = cancel.job_id;
    perform pgq._notify_finished(array[cancel.job_id]);
    return 'cancelled';
end;
$$;
comment on function pgq.cancel(bigint) is
    'Cancel an available or running job (its worker''s next heartbeat answers cancelled); PQ201 unknown job, PQ202 finished job.';

-- A job's state for the producer that added it: one row (state, attempt, result,
-- last_error, finished_at). result is what complete stored (succeeded jobs);
-- last_error the latest attempt's error. PQ201 when no job has this id (never
-- added, or pruned).
create or replace function pgq.job_status(job_id bigint)
returns table (state text, attempt integer, result jsonb, last_error text,
               finished_at timestamptz)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    return query
    select j.state, j.attempt, j.result, j.last_error, j.finished_at
      from pgq.jobs j
     where j.id = job_status.job_id;
    if not found then
        raise exception using errcode = 'PQ201',
            message = format('job %s not found', coalesce(job_status.job_id::text, 'NULL')),
            hint = 'No job has this id: it was never added, or it finished and was pruned.';
    end if;
end;
$$;
comment on function pgq.job_status(bigint) is
    'A job''s state, attempt, result, last_error and finished_at; PQ201 when there is no such job.';

-- Internal: put the given dead or cancelled jobs back to available with fresh
-- attempts (their past errors stay in pgq.attempt_errors), and wake the workers.
create or replace function pgq._requeue(job_ids bigint[])
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_queues text[];
begin
    with requeued as (
        update pgq.jobs as j
           set state = 'available', attempt = 0, run_at = now(), finished_at = null,
               lease_token = null, lapsed_lease_token = null, lease_expires_at = null,
               lease_duration = null, result = null
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
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    perform pgq._lock_job(retry.job_id, array['dead', 'cancelled'], 'retried');
    perform pgq._requeue(array[retry.job_id]);
end;
$$;
comment on function pgq.retry(bigint) is
    'Retry a dead or cancelled job now with fresh attempts; PQ201 unknown job, PQ202 other states.';

-- Retry every dead job, of one queue or of all; returns how many. With batch,
-- at most that many (the lowest ids first), so that a client can requeue a huge
-- dead letter in short transactions: call again until it returns 0. NULL retries
-- them all in this one call. The jobs are locked in ascending id order, as every
-- multi-row call does.
create or replace function pgq.retry_dead(queue text default null, batch integer default null)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if retry_dead.batch is not null and retry_dead.batch not between 1 and 100000 then
        raise exception using errcode = 'PQ001',
            message = format('invalid batch %s: must be between 1 and 100000, or NULL for all',
                             retry_dead.batch),
            hint = 'For example 5000, and call again until it returns 0.';
    end if;
    return pgq._requeue(array(
        select j.id from pgq.jobs j
         where j.state = 'dead'
           and (retry_dead.queue is null or j.queue = retry_dead.queue)
         order by j.id
         limit retry_dead.batch
           for update));
end;
$$;
comment on function pgq.retry_dead(text, integer) is
    'Retry the dead jobs (of one queue, or all when NULL; at most batch of them, NULL: all) with fresh attempts; returns the count.';

-- Delete one batch of finished jobs: up to batch jobs (NULL: 5000) that are
-- succeeded or cancelled (dead too with include_dead) and finished longer ago
-- than older_than, lowest ids first, with their errors and run-once markers.
-- Their idempotency keys become free. Returns how many jobs it deleted: a caller
-- prunes everything by calling again, each call its own transaction, until it
-- returns 0 (pgqueue prune does; from psql, a DO block that commits between
-- calls). Short transactions keep the xmin horizon moving, so that VACUUM
-- reclaims each batch while the next one runs and the table does not bloat. The
-- jobs are locked in ascending id order; a job another transaction holds is
-- skipped (a later call takes it), never waited for.
create or replace function pgq.prune(older_than interval, include_dead boolean default false,
                                     batch integer default null)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_batch integer := coalesce(prune.batch, 5000);
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
    if v_batch not between 1 and 100000 then
        raise exception using errcode = 'PQ001',
            message = format('invalid batch %s: must be between 1 and 100000, or NULL for 5000',
                             v_batch),
            hint = 'Call prune again until it returns 0 rather than raising the batch.';
    end if;
    with pruned as (
        delete from pgq.jobs j
         where j.id = any (array(
                   select l.id
                     from pgq.jobs l
                    where l.finished_at < now() - prune.older_than
                      and (l.state in ('succeeded', 'cancelled')
                           or (prune.include_dead and l.state = 'dead'))
                    order by l.id
                    limit v_batch
                      for update skip locked))
           and j.finished_at < now() - prune.older_than
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
comment on function pgq.prune(interval, boolean, integer) is
    'Delete one batch (batch jobs, NULL: 5000) of jobs finished longer ago than older_than (dead ones only with include_dead); returns the count: call again until 0.';

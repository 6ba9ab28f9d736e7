-- Fail: the attempt failed. The database schedules the retry with exponential
-- backoff, or dead-letters the job when its attempts are used up; each attempt's
-- error is kept in pgq.attempt_errors.

-- Internal: the delay before the retry that follows attempt `attempt` (1-based):
-- base * 2^(attempt-1), capped at backoff_max, with "equal jitter" so that the
-- result lies in [delay/2, delay] and retries of a burst of failures spread out.
create or replace function pgq._backoff(attempt integer, backoff_base interval,
                                        backoff_max interval)
returns interval
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
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
create or replace function pgq._fail_jobs(job_ids bigint[], errors text[], retry boolean,
                                          clear_lease_token boolean)
returns table (job_id bigint, state text)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    return query
    with failed as (
        update pgq.jobs as j
           set state = case when not _fail_jobs.retry or j.attempt > j.max_retries
                            then 'dead' else 'available' end,
               run_at = case when not _fail_jobs.retry or j.attempt > j.max_retries
                             then j.run_at
                             else now() + pgq._backoff(j.attempt, q.backoff_base, q.backoff_max) end,
               finished_at = case when not _fail_jobs.retry or j.attempt > j.max_retries
                                  then now() end,
               lease_token = case when _fail_jobs.clear_lease_token then null else j.lease_token end,
               lease_expires_at = null,
               last_error = f.error
          from unnest(_fail_jobs.job_ids, _fail_jobs.errors) as f(job_id, error),
               pgq.queues q
         where j.id = f.job_id
           and q.queue = j.queue
        returning j.id, j.queue, j.job_name, j.attempt, j.worker_id, j.state, f.error
    ),
    logged as (
        insert into pgq.attempt_errors (job_id, queue, job_name, attempt, error, worker_id)
        select f.id, f.queue, f.job_name, f.attempt, f.error, f.worker_id
          from failed f
    )
    select f.id, f.state from failed f;
end;
$$;
comment on function pgq._fail_jobs(bigint[], text[], boolean, boolean) is
    'Internal: log a failed attempt per job and schedule its retry or dead-letter it.';

-- Fail the current attempt of a running job. Fenced by the lease token. The error
-- text is kept (up to 10,000 characters). With retry => false, or when the job has
-- run max_retries + 1 times, it goes to the dead letter. Returns the new state:
-- available (retry scheduled) or dead. Repeating the call with the same token
-- after it was recorded (a worker resending after a lost connection) changes
-- nothing and returns the state again.
create or replace function pgq.fail(job_id bigint, lease_token uuid, error text,
                                    retry boolean default true)
returns text
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_state text;
begin
    if fail.error is null then
        raise exception using errcode = 'PQ001', message = 'invalid error: must not be null',
            hint = 'Pass the error text of the failed attempt.';
    end if;
    if fail.retry is null then
        raise exception using errcode = 'PQ001', message = 'invalid retry: must not be null';
    end if;
    select j.state into v_state
      from pgq.jobs j
     where j.id = fail.job_id
       and j.lease_token = fail.lease_token
       for update;
    if v_state in ('available', 'dead') then
        return v_state;
    end if;
    perform pgq._require_lease(fail.job_id, fail.lease_token);
    select f.state into v_state
      from pgq._fail_jobs(array[fail.job_id], array[left(fail.error, 10000)], fail.retry, false) as f;
    return v_state;
end;
$$;
comment on function pgq.fail(bigint, uuid, text, boolean) is
    'Fail a running job''s attempt: schedule the retry with backoff or dead-letter it; returns available or dead. PQ101 when stale.';

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
-- clear_lease_token (claim reaping an expired lease) moves the token to
-- lapsed_lease_token, so that its holder may still record how the attempt ended
-- while nobody claims the job (see 40_complete.sql). Jobs that went to the dead
-- letter are announced on channel pgq_finished.
create or replace function pgq._fail_jobs(job_ids bigint[], errors text[], retry boolean,
                                          clear_lease_token boolean)
returns table (job_id bigint, state text)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_ids    bigint[];
    v_states text[];
begin
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
               lapsed_lease_token = case when _fail_jobs.clear_lease_token then j.lease_token end,
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
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_ids    bigint[];
    v_states text[];
    v_killed bigint[];
begin
    select array_agg(j.id) into v_killed
      from pgq.jobs j
     where j.id = any (_fail_lapsed.job_ids)
       and j.state = 'available'
       and not _fail_lapsed.retry;
    with failed as (
        update pgq.jobs as j
           set state = case when not _fail_lapsed.retry then 'dead' else j.state end,
               finished_at = case when not _fail_lapsed.retry and j.state = 'available'
                                  then now() else j.finished_at end,
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

-- Fail the current attempt of a running job. Fenced by the lease token. The error
-- text is kept (up to 10,000 characters). With retry => false, or when the job has
-- run max_retries + 1 times, it goes to the dead letter. Returns the new state:
-- available (retry scheduled) or dead. Repeating the call with the same token
-- after it was recorded (a worker resending after a lost connection) changes
-- nothing and returns the state again.
-- Late fails are accepted while no other attempt has claimed the job (see
-- 40_complete.sql): a running job whose lease expired is failed as if in time; a
-- job claim already reaped keeps its state (the attempt was counted then), gets the
-- handler's error as a second row for that attempt, and goes to the dead letter
-- if retry is false. A cancelled job, or one another attempt claimed, is refused
-- with PQ101.
create or replace function pgq.fail(job_id bigint, lease_token uuid, error text,
                                    retry boolean default true)
returns text
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_job pgq.jobs;
begin
    if fail.error is null then
        raise exception using errcode = 'PQ001', message = 'invalid error: must not be null',
            hint = 'Pass the error text of the failed attempt.';
    end if;
    if fail.retry is null then
        raise exception using errcode = 'PQ001', message = 'invalid retry: must not be null';
    end if;
    select * into v_job
      from pgq.jobs j
     where j.id = fail.job_id
       and (j.lease_token = fail.lease_token or j.lapsed_lease_token = fail.lease_token)
       for update;
    if v_job.lease_token = fail.lease_token and v_job.state in ('available', 'dead') then
        return v_job.state;
    end if;
    if v_job.lease_token = fail.lease_token and v_job.state = 'running' then
        return (select f.state
                  from pgq._fail_jobs(job_ids => array[fail.job_id],
                                      errors => array[left(fail.error, 10000)],
                                      retry => fail.retry, clear_lease_token => false) as f);
    end if;
    if v_job.lease_token is null and v_job.lapsed_lease_token = fail.lease_token
       and v_job.state in ('available', 'dead') then
        return (select f.state
                  from pgq._fail_lapsed(job_ids => array[fail.job_id],
                                        errors => array[left(fail.error, 10000)],
                                        retry => fail.retry) as f);
    end if;
    perform pgq._lease_lost(fail.job_id);
    return null;
end;
$$;
comment on function pgq.fail(bigint, uuid, text, boolean) is
    'Fail a running job''s attempt: schedule the retry with backoff or dead-letter it; returns available or dead. Late from an expired lease while unclaimed. PQ101 when stale.';

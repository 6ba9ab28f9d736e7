-- Fail: the attempt failed. The database schedules the retry with exponential
-- backoff, or dead-letters the job when its attempts are used up; each attempt's
-- error is kept in pgq.attempt_errors. The backoff and the dead-letter rule are
-- in 03_shared.sql (_backoff, _fail_jobs), since claim and complete fail attempts too.

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
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
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

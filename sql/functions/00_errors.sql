-- The project's own SQLSTATEs, in one place. Class PQ: PQ0xx bad arguments,
-- PQ1xx worker calls (fencing, run-once), PQ2xx operator calls.
create or replace view pgq.error_codes as
select v.sqlstate, v.name, v.meaning
  from (values
    ('PQ001', 'invalid_argument',
     'An argument is missing, empty, too large or out of range; the message names it. Nothing was changed.'),
    ('PQ101', 'lease_lost',
     'The job is not running under this lease token: the lease expired, the job was cancelled, or another worker holds it. Stop working on the job; nothing was changed.'),
    ('PQ102', 'marker_not_begun',
     'once_finish or once_abort named a run-once marker that this lease did not begin.'),
    ('PQ103', 'job_cancelled',
     'heartbeat of a job that was cancelled while this lease held it: the lease is gone. Stop working on the job (a kind of lease_lost); nothing was changed.'),
    ('PQ201', 'job_not_found',
     'No job has this id (it may have been pruned).'),
    ('PQ202', 'job_state_conflict',
     'The job is not in a state this operation applies to (for example retry of a job that is not dead or cancelled).'),
    ('PQ203', 'queue_not_found',
     'The queue was never configured nor used.'),
    ('PQ204', 'marker_not_found',
     'No run-once marker has this job id and effect key, or it is not in a state the operation applies to.'),
    ('PQ210', 'schedule_not_found',
     'No schedule has this name (see pgq.schedules).')
  ) as v(sqlstate, name, meaning);
comment on view pgq.error_codes is
    'The SQLSTATE codes pgq raises, with their names and meanings.';

-- Internal: refuse a worker call for a job not held under the caller's lease
-- (PQ101), saying plainly why: the lease expired, another attempt holds the job,
-- the job finished or is gone. Called only on the refusal path.
create or replace function pgq._lease_lost(job_id bigint)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
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

-- Internal: refuse a call whose lease token is not the job's current, unexpired one.
create or replace function pgq._require_lease(job_id bigint, lease_token uuid)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_attempt integer;
begin
    select j.attempt into v_attempt
      from pgq.jobs j
     where j.id = _require_lease.job_id
       and j.state = 'running'
       and j.lease_token = _require_lease.lease_token
       and j.lease_expires_at > now();
    if not found then
        perform pgq._lease_lost(_require_lease.job_id);
    end if;
    return v_attempt;
end;
$$;
comment on function pgq._require_lease(bigint, uuid) is
    'Internal: the attempt number of a job held under this token; PQ101 otherwise.';

-- Internal: lock a job for an operator call and return its state; PQ201 when there
-- is no such job, PQ202 when its state is not one of `states` (`action` names the call).
create or replace function pgq._lock_job(job_id bigint, states text[], action text)
returns text
language plpgsql security definer set search_path = pg_catalog, pg_temp
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

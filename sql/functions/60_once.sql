-- Run-once markers: a side effect guarded by a marker runs at most once per job
-- and effect key, across retries, crashes and workers. once_begin records that
-- the effect starts; once_finish records that it ran and its result. A marker
-- begun and never finished means the outcome is unknown: it is reported, never
-- silently repeated.

-- Internal: refuse a call whose lease token is not the job's current, unexpired one.
create or replace function pgq._require_lease(job_id bigint, lease_token uuid)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
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

-- Ask whether to run a side effect. Returns one row (status, result):
--   run     - no attempt began it: the marker is now recorded, run it; or this is a
--             resend of the very request that recorded it (same lease token, same
--             request_id), whose answer was lost with the connection: run it;
--   done    - it ran; result is what once_finish stored;
--   unknown - it was begun and never finished, by an earlier attempt, or by this
--             attempt under another request (an earlier run_once of the same key,
--             whose effect may be under way or may have happened): not run again.
-- A client sends a fresh request_id per run_once and the same one when it resends
-- after a lost connection; without one (NULL) every call is a new request.
-- Fenced strictly by the lease token: a worker whose lease expired, or whose job
-- was cancelled, may not start effects (PQ101).
create or replace function pgq.once_begin(job_id bigint, lease_token uuid, effect_key text,
                                          request_id uuid default null)
returns table (status text, result jsonb)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_attempt integer;
    v_marker  pgq.once_markers;
begin
    if once_begin.effect_key is null or length(once_begin.effect_key) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid effect_key: must be 1 to 200 characters';
    end if;
    v_attempt := pgq._require_lease(once_begin.job_id, once_begin.lease_token);
    insert into pgq.once_markers as m (job_id, effect_key, lease_token, attempt, request_id)
    values (once_begin.job_id, once_begin.effect_key, once_begin.lease_token, v_attempt,
            once_begin.request_id)
    on conflict on constraint once_markers_pkey do nothing;
    if found then
        return query select 'run'::text, null::jsonb;
        return;
    end if;
    select * into v_marker
      from pgq.once_markers m
     where m.job_id = once_begin.job_id
       and m.effect_key = once_begin.effect_key;
    return query
    select case when v_marker.status = 'done' then 'done'
                when v_marker.lease_token = once_begin.lease_token
                     and v_marker.request_id = once_begin.request_id then 'run'
                else 'unknown' end,
           case when v_marker.status = 'done' then v_marker.result end;
end;
$$;
comment on function pgq.once_begin(bigint, uuid, text, uuid) is
    'Begin a run-once effect: run (also to a resend of the same request), done (with stored result) or unknown. PQ101 when the lease is stale.';

-- Record that an effect begun by this lease ran, with its result. Accepted from
-- the attempt that began the marker even if it has since lost its lease: the
-- effect did run, and recording it spares the next attempt an unknown outcome.
-- Repeating the call changes nothing.
create or replace function pgq.once_finish(job_id bigint, lease_token uuid, effect_key text,
                                           result jsonb default null)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_marker pgq.once_markers;
begin
    update pgq.once_markers as m
       set status = 'done', result = once_finish.result, finished_at = now()
     where m.job_id = once_finish.job_id
       and m.effect_key = once_finish.effect_key
       and m.lease_token = once_finish.lease_token
       and m.status = 'started';
    if found then
        return;
    end if;
    select * into v_marker
      from pgq.once_markers m
     where m.job_id = once_finish.job_id
       and m.effect_key = once_finish.effect_key;
    if found and v_marker.status = 'done' and v_marker.lease_token = once_finish.lease_token then
        return;
    end if;
    raise exception using
        errcode = 'PQ102',
        message = format('job %s: run-once marker %L was not begun under this lease',
                         once_finish.job_id, once_finish.effect_key),
        hint = 'Call once_begin first, with the same job id, lease token and effect key.';
end;
$$;
comment on function pgq.once_finish(bigint, uuid, text, jsonb) is
    'Record that a run-once effect begun under this lease ran, with its result; PQ102 if it was not begun so.';

-- Withdraw a marker this lease began, because the effect raised and did not take
-- place: the next attempt runs it again instead of finding it unknown.
create or replace function pgq.once_abort(job_id bigint, lease_token uuid, effect_key text)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    delete from pgq.once_markers m
     where m.job_id = once_abort.job_id
       and m.effect_key = once_abort.effect_key
       and m.lease_token = once_abort.lease_token
       and m.status = 'started';
    if not found then
        raise exception using
            errcode = 'PQ102',
            message = format('job %s: run-once marker %L was not begun under this lease, or it finished',
                             once_abort.job_id, once_abort.effect_key),
            hint = 'Only a marker begun by once_begin under this lease, and not finished, can be withdrawn.';
    end if;
end;
$$;
comment on function pgq.once_abort(bigint, uuid, text) is
    'Withdraw an unfinished run-once marker begun under this lease (the effect failed); PQ102 otherwise.';

-- Operator: settle an unknown outcome after checking the outside world. ran =>
-- true records the effect as done (with result); ran => false removes the marker
-- so that the next attempt runs the effect.
create or replace function pgq.once_resolve(job_id bigint, effect_key text, ran boolean,
                                            result jsonb default null)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if once_resolve.ran is null then
        raise exception using errcode = 'PQ001', message = 'invalid ran: must be true or false';
    end if;
    if once_resolve.ran then
        update pgq.once_markers as m
           set status = 'done', result = once_resolve.result, finished_at = now()
         where m.job_id = once_resolve.job_id
           and m.effect_key = once_resolve.effect_key
           and m.status = 'started';
    else
        delete from pgq.once_markers m
         where m.job_id = once_resolve.job_id
           and m.effect_key = once_resolve.effect_key
           and m.status = 'started';
    end if;
    if not found then
        raise exception using
            errcode = 'PQ204',
            message = format('job %s: no unfinished run-once marker %L',
                             once_resolve.job_id, once_resolve.effect_key),
            hint = 'Only a marker whose outcome is unknown (begun, never finished) can be resolved.';
    end if;
end;
$$;
comment on function pgq.once_resolve(bigint, text, boolean, jsonb) is
    'Operator: settle an unknown run-once outcome (ran => done with result, or removed to run again); PQ204 otherwise.';

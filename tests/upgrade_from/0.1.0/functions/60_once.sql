-- Run-once markers: a side effect guarded by a marker runs at most once per job
-- and effect key, across retries, crashes and workers. once_begin records that
-- the effect starts; once_finish records that it ran and its result. A marker
-- begun and never finished means the outcome is unknown: it is reported, never
-- silently repeated.

-- Ask whether to run a side effect. Returns one row (status, result):
--   run     - no earlier attempt began it; the marker is now recorded, run it;
--   done    - it ran; result is what once_finish stored;
--   unknown - an earlier attempt (or this one) began it and never finished it.
-- Fenced by the lease token: a worker that lost its lease may not start effects.
create or replace function pgq.once_begin(job_id bigint, lease_token uuid, effect_key text)
returns table (status text, result jsonb)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_attempt integer;
begin
    if once_begin.effect_key is null or length(once_begin.effect_key) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid effect_key: must be 1 to 200 characters';
    end if;
    v_attempt := pgq._require_lease(once_begin.job_id, once_begin.lease_token);
    insert into pgq.once_markers as m (job_id, effect_key, lease_token, attempt)
    values (once_begin.job_id, once_begin.effect_key, once_begin.lease_token, v_attempt)
    on conflict on constraint once_markers_pkey do nothing;
    if found then
        return query select 'run'::text, null::jsonb;
        return;
    end if;
    return query
    select case m.status when 'done' then 'done' else 'unknown' end, m.result
      from pgq.once_markers m
     where m.job_id = once_begin.job_id
       and m.effect_key = once_begin.effect_key;
end;
$$;
comment on function pgq.once_begin(bigint, uuid, text) is
    'Begin a run-once effect: run, done (with stored result) or unknown. PQ101 when the lease is stale.';

-- Record that an effect begun by this lease ran, with its result. Accepted from
-- the attempt that began the marker even if it has since lost its lease: the
-- effect did run, and recording it spares the next attempt an unknown outcome.
-- Repeating the call changes nothing.
create or replace function pgq.once_finish(job_id bigint, lease_token uuid, effect_key text,
                                           result jsonb default null)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
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
language plpgsql security definer set search_path = pg_catalog, pg_temp
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
language plpgsql security definer set search_path = pg_catalog, pg_temp
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

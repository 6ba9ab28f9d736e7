-- Heartbeat: a worker extends the leases of the jobs it is running, so that only
-- a worker that stopped (crashed, hung, lost its connection) loses them.

-- Internal: refuse a heartbeat that is not (any longer) the holder's: PQ103
-- (job_cancelled) when the job was cancelled while this token held it, so that the
-- worker can tell an operator's cancel from a lost lease; PQ101 (lease_lost) otherwise.
create or replace function pgq._heartbeat_refused(job_id bigint, lease_token uuid)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if exists (select from pgq.jobs j
                where j.id = _heartbeat_refused.job_id
                  and j.state = 'cancelled'
                  and j.lease_token = _heartbeat_refused.lease_token) then
        raise exception using
            errcode = 'PQ103',
            message = format('job %s: cancelled while this lease held it', _heartbeat_refused.job_id),
            hint = 'Stop working on this job: its lease is gone and nothing more is recorded for it.';
    end if;
    perform pgq._lease_lost(_heartbeat_refused.job_id);
end;
$$;
comment on function pgq._heartbeat_refused(bigint, uuid) is
    'Internal: raise PQ103 (job_cancelled) or PQ101 (lease_lost) for a refused heartbeat.';

-- Extend the lease of a running job. Fenced, strictly: only the holder of the
-- current, unexpired lease token may extend it. An expired lease is not revived,
-- even before claim reaped the job: the holder may still record how its attempt
-- ended (complete, fail), but may not go on as if it held the job. A job cancelled
-- under this token answers PQ103 (job_cancelled); anyone else gets PQ101.
create or replace function pgq.heartbeat(job_id bigint, lease_token uuid,
                                         lease interval default null)
returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_expires_at timestamptz;
begin
    perform pgq._check_lease(heartbeat.lease);
    update pgq.jobs as j
       set lease_expires_at = now() + coalesce(heartbeat.lease, j.lease_duration)
     where j.id = heartbeat.job_id
       and j.state = 'running'
       and j.lease_token = heartbeat.lease_token
       and j.lease_expires_at > now()
    returning j.lease_expires_at into v_expires_at;
    if not found then
        perform pgq._heartbeat_refused(heartbeat.job_id, heartbeat.lease_token);
    end if;
    return v_expires_at;
end;
$$;
comment on function pgq.heartbeat(bigint, uuid, interval) is
    'Extend a running job''s unexpired lease; PQ103 (job_cancelled) when it was cancelled, PQ101 (lease_lost) when the token is stale or expired.';

-- Extend many leases in one call, as a worker does for all the jobs it runs.
-- Per job outcome: extended; cancelled when the job was cancelled while this
-- token held it (the worker should stop the handler); lease_lost for a stale or
-- expired token (that job only). Jobs are found by primary key and their tokens by
-- position, as in complete_many; a job listed twice is refused (PQ001). Rows are
-- locked in ascending id order, as every multi-row call does, so that a worker's
-- heartbeat_many and complete_many over the same jobs cannot deadlock.
create or replace function pgq.heartbeat_many(job_ids bigint[], lease_tokens uuid[],
                                              lease interval default null)
returns table (job_id bigint, outcome text, lease_expires_at timestamptz)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_ids     bigint[];
    v_expires timestamptz[];
begin
    perform pgq._check_job_batch(heartbeat_many.job_ids, heartbeat_many.lease_tokens);
    perform pgq._check_lease(heartbeat_many.lease);
    with extended as (
        update pgq.jobs as j
           set lease_expires_at = now() + coalesce(heartbeat_many.lease, j.lease_duration)
         where j.id = any (array(
                   select l.id
                     from pgq.jobs l
                    where l.id = any (heartbeat_many.job_ids)
                      and l.state = 'running'
                      and l.lease_token = heartbeat_many.lease_tokens[array_position(heartbeat_many.job_ids, l.id)]
                      and l.lease_expires_at > now()
                    order by l.id
                      for update))
        returning j.id, j.lease_expires_at
    )
    select array_agg(e.id), array_agg(e.lease_expires_at) into v_ids, v_expires from extended e;
    return query
    select i.job_id,
           case when e.job_id is not null then 'extended'
                when exists (select from pgq.jobs c
                              where c.id = i.job_id and c.state = 'cancelled'
                                and c.lease_token = i.lease_token) then 'cancelled'
                else 'lease_lost' end,
           e.lease_expires_at
      from unnest(heartbeat_many.job_ids, heartbeat_many.lease_tokens)
           with ordinality as i(job_id, lease_token, ord)
      left join unnest(v_ids, v_expires) as e(job_id, lease_expires_at) on e.job_id = i.job_id
     order by i.ord;
end;
$$;
comment on function pgq.heartbeat_many(bigint[], uuid[], interval) is
    'Extend many leases at once; per job outcome extended, cancelled or lease_lost. PQ001 on mismatched arrays or a job listed twice.';

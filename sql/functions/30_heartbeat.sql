-- Heartbeat: a worker extends the leases of the jobs it is running, so that only
-- a worker that stopped (crashed, hung, lost its connection) loses them.

-- Extend the lease of a running job. Fenced: only the holder of the current,
-- unexpired lease token may extend it; anyone else gets lease_lost and must stop.
create or replace function pgq.heartbeat(job_id bigint, lease_token uuid,
                                         lease interval default null)
returns timestamptz
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_expires_at timestamptz;
begin
    if heartbeat.lease is not null
       and heartbeat.lease not between interval '1 second' and interval '1 day' then
        raise exception using errcode = 'PQ001',
            message = format('invalid lease %s: must be between 1 second and 1 day', heartbeat.lease);
    end if;
    update pgq.jobs as j
       set lease_expires_at = now() + coalesce(heartbeat.lease, j.lease_duration)
     where j.id = heartbeat.job_id
       and j.state = 'running'
       and j.lease_token = heartbeat.lease_token
       and j.lease_expires_at > now()
    returning j.lease_expires_at into v_expires_at;
    if not found then
        raise exception using
            errcode = 'PQ101',
            message = format('job %s: lease lost', heartbeat.job_id),
            hint = 'The lease expired, the job was cancelled, or another worker holds it.';
    end if;
    return v_expires_at;
end;
$$;
comment on function pgq.heartbeat(bigint, uuid, interval) is
    'Extend a running job''s lease; PQ101 (lease_lost) when the token is stale.';

-- Extend many leases in one call, as a worker does for all the jobs it runs.
-- A stale token refuses that job only: its outcome is lease_lost, also when the
-- same job is listed again with its current token.
create or replace function pgq.heartbeat_many(job_ids bigint[], lease_tokens uuid[],
                                              lease interval default null)
returns table (job_id bigint, outcome text, lease_expires_at timestamptz)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if heartbeat_many.job_ids is null or heartbeat_many.lease_tokens is null
       or cardinality(heartbeat_many.job_ids) <> cardinality(heartbeat_many.lease_tokens) then
        raise exception using errcode = 'PQ001',
            message = 'invalid job_ids/lease_tokens: must be non-null arrays of the same length';
    end if;
    if heartbeat_many.lease is not null
       and heartbeat_many.lease not between interval '1 second' and interval '1 day' then
        raise exception using errcode = 'PQ001',
            message = format('invalid lease %s: must be between 1 second and 1 day', heartbeat_many.lease);
    end if;
    return query
    with input as (
        select i.job_id, i.lease_token, i.ord
          from unnest(heartbeat_many.job_ids, heartbeat_many.lease_tokens)
               with ordinality as i(job_id, lease_token, ord)
    ),
    extended as (
        update pgq.jobs as j
           set lease_expires_at = now() + coalesce(heartbeat_many.lease, j.lease_duration)
          from input i
         where j.id = i.job_id
           and j.state = 'running'
           and j.lease_token = i.lease_token
           and j.lease_expires_at > now()
        returning j.id, j.lease_token, j.lease_expires_at
    )
    select i.job_id,
           case when e.id is null then 'lease_lost' else 'extended' end,
           e.lease_expires_at
      from input i
      left join extended e on e.id = i.job_id and e.lease_token = i.lease_token
     order by i.ord;
end;
$$;
comment on function pgq.heartbeat_many(bigint[], uuid[], interval) is
    'Extend many leases at once; per job outcome extended or lease_lost. PQ001 on mismatched arrays.';

-- Heartbeat: a worker extends the leases of the jobs it is running, so that only
-- a worker that stopped (crashed, hung, lost its connection) loses them.

-- Internal: refuse a batch of (job id, lease token) pairs that is not one: arrays
-- NULL or of different lengths, or a job listed twice (its outcome would be ambiguous).
create or replace function pgq._check_job_batch(job_ids bigint[], lease_tokens uuid[])
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_twice bigint;
begin
    if _check_job_batch.job_ids is null or _check_job_batch.lease_tokens is null
       or cardinality(_check_job_batch.job_ids) <> cardinality(_check_job_batch.lease_tokens) then
        raise exception using errcode = 'PQ001',
            message = 'invalid job_ids/lease_tokens: must be non-null arrays of the same length';
    end if;
    select d.job_id into v_twice
      from unnest(_check_job_batch.job_ids) as d(job_id)
     group by d.job_id
    having count(*) > 1
     limit 1;
    if v_twice is not null then
        raise exception using errcode = 'PQ001',
            message = format('invalid job_ids: job %s is listed twice', v_twice),
            hint = 'List each job once, with its current lease token.';
    end if;
end;
$$;
comment on function pgq._check_job_batch(bigint[], uuid[]) is
    'Internal: PQ001 unless job_ids and lease_tokens are paired arrays of distinct jobs.';

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
    perform pgq._check_lease(heartbeat.lease);
    update pgq.jobs as j
       set lease_expires_at = now() + coalesce(heartbeat.lease, j.lease_duration)
     where j.id = heartbeat.job_id
       and j.state = 'running'
       and j.lease_token = heartbeat.lease_token
       and j.lease_expires_at > now()
    returning j.lease_expires_at into v_expires_at;
    if not found then
        perform pgq._lease_lost(heartbeat.job_id);
    end if;
    return v_expires_at;
end;
$$;
comment on function pgq.heartbeat(bigint, uuid, interval) is
    'Extend a running job''s lease; PQ101 (lease_lost) when the token is stale.';

-- Extend many leases in one call, as a worker does for all the jobs it runs.
-- A stale token refuses that job only: its outcome is lease_lost. Jobs are found
-- by primary key and their tokens by position, as in complete_many; a job listed
-- twice is refused (PQ001).
create or replace function pgq.heartbeat_many(job_ids bigint[], lease_tokens uuid[],
                                              lease interval default null)
returns table (job_id bigint, outcome text, lease_expires_at timestamptz)
language plpgsql security definer set search_path = pg_catalog, pg_temp
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
         where j.id = any (heartbeat_many.job_ids)
           and j.state = 'running'
           and j.lease_token = heartbeat_many.lease_tokens[array_position(heartbeat_many.job_ids, j.id)]
           and j.lease_expires_at > now()
        returning j.id, j.lease_expires_at
    )
    select array_agg(e.id), array_agg(e.lease_expires_at) into v_ids, v_expires from extended e;
    return query
    select i.job_id,
           case when e.job_id is null then 'lease_lost' else 'extended' end,
           e.lease_expires_at
      from unnest(heartbeat_many.job_ids) with ordinality as i(job_id, ord)
      left join unnest(v_ids, v_expires) as e(job_id, lease_expires_at) on e.job_id = i.job_id
     order by i.ord;
end;
$$;
comment on function pgq.heartbeat_many(bigint[], uuid[], interval) is
    'Extend many leases at once; per job outcome extended or lease_lost. PQ001 on mismatched arrays or a job listed twice.';

-- Complete: the job succeeded. It stays in pgq.jobs as succeeded (for stats,
-- idempotency and inspection) until pruned, outside every index claim reads.

-- Mark a running job succeeded. Fenced by the lease token. Repeating the call with
-- the same token after it succeeded (a worker resending after a lost connection)
-- is accepted and changes nothing.
create or replace function pgq.complete(job_id bigint, lease_token uuid)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if (select o.outcome
          from pgq.complete_many(array[complete.job_id], array[complete.lease_token]) as o)
       <> 'succeeded' then
        perform pgq._lease_lost(complete.job_id);
    end if;
end;
$$;
comment on function pgq.complete(bigint, uuid) is
    'Mark a running job succeeded; PQ101 (lease_lost) when the token is stale.';

-- Mark many running jobs succeeded in one statement. Returns one row per input
-- job, in input order: succeeded, or lease_lost for a stale token (that job only).
-- Each job's token is found by its position in the arrays, so the update touches
-- jobs by primary key alone: no join, which at batch sizes costs more than the
-- update itself. A job listed twice is refused (PQ001).
create or replace function pgq.complete_many(job_ids bigint[], lease_tokens uuid[])
returns table (job_id bigint, outcome text)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_done bigint[];
begin
    perform pgq._check_job_batch(complete_many.job_ids, complete_many.lease_tokens);
    with done as (
        update pgq.jobs as j
           set state = 'succeeded',
               finished_at = now(),
               lease_expires_at = null
         where j.id = any (complete_many.job_ids)
           and j.state = 'running'
           and j.lease_token = complete_many.lease_tokens[array_position(complete_many.job_ids, j.id)]
           and j.lease_expires_at > now()
        returning j.id
    )
    select array_agg(d.id) into v_done from done d;
    return query
    select i.job_id,
           case when i.job_id = any (v_done)
                  or exists (select from pgq.jobs s
                              where s.id = i.job_id and s.state = 'succeeded'
                                and s.lease_token = i.lease_token)
                then 'succeeded' else 'lease_lost' end
      from unnest(complete_many.job_ids, complete_many.lease_tokens)
           with ordinality as i(job_id, lease_token, ord)
     order by i.ord;
end;
$$;
comment on function pgq.complete_many(bigint[], uuid[]) is
    'Mark many running jobs succeeded; per job outcome succeeded or lease_lost. PQ001 on mismatched arrays or a job listed twice.';

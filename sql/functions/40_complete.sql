-- Complete: the job succeeded. It stays in pgq.jobs as succeeded, with its result
-- (for stats, idempotency, inspection and job_status), until pruned, outside every
-- index claim reads.
--
-- Late completion. A lease that expired is lost for going on (heartbeat, once_begin)
-- but not for telling how the attempt ended: while no other attempt has claimed the
-- job since, nobody else holds it, so fencing still holds. After a database outage
-- the workers whose handlers finished can then record them, and the jobs do not run
-- again. complete (and fail, in 50_fail.sql) accept the holder's token when:
--   - the job is still running under it, its lease expired but claim has not reaped
--     it yet: recorded as if in time;
--   - claim reaped it (the "lease expired" error is logged for that attempt and the
--     job is available for its retry, or dead) and no attempt claimed it since
--     (lease_token is NULL, lapsed_lease_token is the caller's): complete makes it
--     succeeded, from available or dead; the attempt's error row stays.
-- Once another attempt claimed the job, or the job was cancelled, retried or
-- finished otherwise, the old token is refused with PQ101 and nothing changes.

-- Mark a running job succeeded, keeping its result (any JSON, NULL for none).
-- Fenced by the lease token; accepted late from the holder of an expired lease
-- while no other attempt has claimed the job (see above). Returns the outcome:
-- succeeded, or failed when the result is larger than the payload's 1 MiB limit:
-- the attempt is then failed with an error naming the size (retried or
-- dead-lettered like any failure). Repeating the call with the same token after
-- it was recorded (a worker resending after a lost connection) changes nothing
-- and returns the same outcome. PQ101 (lease_lost) otherwise, also for a job that
-- was cancelled.
create or replace function pgq.complete(job_id bigint, lease_token uuid,
                                        result jsonb default null)
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_outcome text;
begin
    select o.outcome into v_outcome
      from pgq.complete_many(array[complete.job_id], array[complete.lease_token],
                             array[complete.result]) as o;
    if v_outcome = 'lease_lost' then
        perform pgq._lease_lost(complete.job_id);
    end if;
    return v_outcome;
end;
$$;
comment on function pgq.complete(bigint, uuid, jsonb) is
    'Mark a running job succeeded with its result; returns succeeded, or failed for a result over 1 MiB. Late from an expired lease while unclaimed. PQ101 (lease_lost) when stale.';

-- Mark many running jobs succeeded in one call, with their results (results NULL,
-- or one per job, NULL for none). Returns one row per input job, in input order:
--   succeeded  - recorded (also on a resend after it was recorded);
--   failed     - its result is over 1 MiB: its attempt failed instead (retry or
--                dead letter), with an error naming the size and the limit;
--   lease_lost - a stale token (that job only).
-- Late completions are accepted as described at the top of this file. Each job's
-- token is found by its position in the arrays, so jobs are touched by primary key
-- alone: no join, which at batch sizes costs more than the update itself. Rows are
-- locked first, in ascending id order, as every multi-row call does, so that a
-- worker's complete_many and heartbeat_many over the same jobs cannot deadlock.
-- The jobs that finished are announced on channel pgq_finished. A job listed twice
-- is refused (PQ001), and so are results of another length than job_ids.
create or replace function pgq.complete_many(job_ids bigint[], lease_tokens uuid[],
                                             results jsonb[] default null)
returns table (job_id bigint, outcome text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_big_ids     bigint[] := '{}';
    v_big_errors  text[] := '{}';
    v_running     bigint[];
    v_lapsed      bigint[];
    v_big_running bigint[];
    v_big_lapsed  bigint[];
    v_fail_ids    bigint[];
    v_fail_errors text[];
begin
    perform pgq._check_job_batch(complete_many.job_ids, complete_many.lease_tokens);
    if complete_many.results is not null then
        if cardinality(complete_many.results) <> cardinality(complete_many.job_ids) then
            raise exception using errcode = 'PQ001',
                message = format('invalid results: %s results for %s jobs',
                                 cardinality(complete_many.results), cardinality(complete_many.job_ids)),
                hint = 'Pass one result per job (NULL for none), or NULL for no results.';
        end if;
        -- A result over the payload's limit fails its job's attempt instead.
        select coalesce(array_agg(r.job_id), '{}'),
               coalesce(array_agg(format('result too large: %s bytes, at most 1048576 allowed',
                                         pg_column_size(r.result))), '{}')
          into v_big_ids, v_big_errors
          from unnest(complete_many.job_ids, complete_many.results) as r(job_id, result)
         where pg_column_size(r.result) > 1048576;
    end if;

    -- Lock, in ascending id order, every job this call records: running under its
    -- token (its lease expired or not), or reaped under it and not claimed since.
    select coalesce(array_agg(l.id) filter (where l.state = 'running' and not l.id = any (v_big_ids)), '{}'),
           coalesce(array_agg(l.id) filter (where l.state <> 'running' and not l.id = any (v_big_ids)), '{}'),
           coalesce(array_agg(l.id) filter (where l.state = 'running' and l.id = any (v_big_ids)), '{}'),
           coalesce(array_agg(l.id) filter (where l.state <> 'running' and l.id = any (v_big_ids)), '{}')
      into v_running, v_lapsed, v_big_running, v_big_lapsed
      from (select l.id, l.state
              from pgq.jobs l
             where l.id = any (complete_many.job_ids)
               and ((l.state = 'running'
                     and l.lease_token = complete_many.lease_tokens[array_position(complete_many.job_ids, l.id)])
                    or (l.state in ('available', 'dead')
                        and l.lease_token is null
                        and l.lapsed_lease_token = complete_many.lease_tokens[array_position(complete_many.job_ids, l.id)]))
             order by l.id
               for update) as l;

    if cardinality(v_running) > 0 then
        update pgq.jobs as j
           set state = 'succeeded',
               finished_at = now(),
               lease_expires_at = null,
               result = complete_many.results[array_position(complete_many.job_ids, j.id)]
         where j.id = any (v_running);
    end if;
    if cardinality(v_lapsed) > 0 then
        -- Reaped, not claimed since: the holder's token becomes the job's again, so
        -- that a resend is recognised; the attempt's "lease expired" row stays.
        update pgq.jobs as j
           set state = 'succeeded',
               finished_at = now(),
               lease_token = j.lapsed_lease_token,
               lapsed_lease_token = null,
               result = complete_many.results[array_position(complete_many.job_ids, j.id)]
         where j.id = any (v_lapsed);
    end if;
    if cardinality(v_big_running) + cardinality(v_big_lapsed) > 0 then
        select array_agg(b.job_id), array_agg(b.error) into v_fail_ids, v_fail_errors
          from unnest(v_big_ids, v_big_errors) as b(job_id, error)
         where b.job_id = any (v_big_running);
        if v_fail_ids is not null then
            perform pgq._fail_jobs(job_ids => v_fail_ids, errors => v_fail_errors,
                                   retry => true, clear_lease_token => false);
        end if;
        select array_agg(b.job_id), array_agg(b.error) into v_fail_ids, v_fail_errors
          from unnest(v_big_ids, v_big_errors) as b(job_id, error)
         where b.job_id = any (v_big_lapsed);
        if v_fail_ids is not null then
            perform pgq._fail_lapsed(job_ids => v_fail_ids, errors => v_fail_errors, retry => true);
        end if;
    end if;
    perform pgq._notify_finished(v_running || v_lapsed);

    return query
    select i.job_id,
           case when i.job_id = any (v_running) or i.job_id = any (v_lapsed) then 'succeeded'
                when i.job_id = any (v_big_running) or i.job_id = any (v_big_lapsed) then 'failed'
                -- A resend of a call already recorded answers as that call did.
                when exists (select from pgq.jobs s
                              where s.id = i.job_id and s.state = 'succeeded'
                                and s.lease_token = i.lease_token) then 'succeeded'
                when i.job_id = any (v_big_ids)
                     and exists (select from pgq.jobs s
                                  where s.id = i.job_id and s.state in ('available', 'dead')
                                    and s.lease_token = i.lease_token) then 'failed'
                else 'lease_lost' end
      from unnest(complete_many.job_ids, complete_many.lease_tokens)
           with ordinality as i(job_id, lease_token, ord)
     order by i.ord;
end;
$$;
comment on function pgq.complete_many(bigint[], uuid[], jsonb[]) is
    'Mark many running jobs succeeded with their results; per job outcome succeeded, failed (result over 1 MiB) or lease_lost. Late from an expired lease while unclaimed. PQ001 on mismatched arrays or a job listed twice.';

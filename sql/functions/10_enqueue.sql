-- Enqueue: a job becomes available (or scheduled, with a later run_at) when the
-- caller's transaction commits. Callable from any SQL, function or trigger.

-- Internal: refuse job `ord` of `total` with `message`: PQ001, nothing enqueued.
create or replace function pgq._reject_job(ord bigint, total integer, message text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    raise exception using errcode = 'PQ001',
        message = case when _reject_job.total = 1 then _reject_job.message
                       else format('%s (job %s of %s)', _reject_job.message, _reject_job.ord,
                                   _reject_job.total) end,
        hint = 'Nothing was enqueued.';
end;
$$;
comment on function pgq._reject_job(bigint, integer, text) is
    'Internal: raise PQ001 for a bad job of an enqueue; called by the checks below.';

-- Internal: every queue named exists afterwards (a NULL name is 'default'), so that
-- pause/resume/stats know a queue from its first job. Most calls name known queues:
-- one lookup settles that, and only new queues are inserted, after their names are
-- checked (PQ001 for the first bad one in input order, not the table's check constraint).
create or replace function pgq._add_queues(queues text[])
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if exists (select from (select distinct coalesce(i.queue, 'default') as queue
                              from unnest(coalesce(_add_queues.queues, '{null}')) as i(queue)) as n
                where not exists (select from pgq.queues q where q.queue = n.queue)) then
        perform pgq._reject_job(b.ord, cardinality(_add_queues.queues),
                                'invalid queue: must be 1 to 128 characters')
           from (select min(i.ord) as ord
                   from unnest(_add_queues.queues) with ordinality as i(queue, ord)
                  where length(i.queue) not between 1 and 128) as b
          where b.ord is not null;
        insert into pgq.queues as q (queue)
        select distinct coalesce(i.queue, 'default')
          from unnest(coalesce(_add_queues.queues, '{null}')) as i(queue)
        on conflict on constraint queues_pkey do nothing;
    end if;
end;
$$;
comment on function pgq._add_queues(text[]) is
    'Internal: create the queues named that do not exist yet; PQ001 for a bad queue name.';

-- Internal: refuse a batch of jobs when one has a bad field: PQ001 for the first such
-- job in input order. The one place the rules for a job's fields live; every array
-- is as long as job_names or NULL (no job sets that field).
create or replace function pgq._check_jobs(job_names text[], payloads jsonb[], max_retries integer[],
                                           idempotency_keys text[], concurrency_keys text[])
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_ord     bigint;
    v_message text;
begin
    select b.ord, b.message into v_ord, v_message
      from (select i.ord,
                   case
                   when i.job_name is null or length(i.job_name) not between 1 and 200
                       then 'invalid job_name: must be 1 to 200 characters'
                   when jsonb_typeof(i.payload) <> 'object'
                       then format('invalid payload: must be a JSON object, not %s', jsonb_typeof(i.payload))
                   when pg_column_size(i.payload) > 1048576
                       then format('invalid payload: %s bytes, at most 1048576 allowed',
                                   pg_column_size(i.payload))
                   when i.max_retries not between 0 and 1000
                       then format('invalid max_retries %s: must be between 0 and 1000', i.max_retries)
                   when length(i.idempotency_key) not between 1 and 512
                       then 'invalid idempotency_key: must be 1 to 512 characters'
                   when length(i.concurrency_key) not between 1 and 512
                       then 'invalid concurrency_key: must be 1 to 512 characters'
                   end as message
              from unnest(_check_jobs.job_names, _check_jobs.payloads, _check_jobs.max_retries,
                          _check_jobs.idempotency_keys, _check_jobs.concurrency_keys)
                   with ordinality as i(job_name, payload, max_retries, idempotency_key,
                                        concurrency_key, ord)) as b
     where b.message is not null
     order by b.ord
     limit 1;
    if v_ord is not null then
        perform pgq._reject_job(v_ord, cardinality(_check_jobs.job_names), v_message);
    end if;
end;
$$;
comment on function pgq._check_jobs(text[], jsonb[], integer[], text[], text[]) is
    'Internal: PQ001 for the first job (in input order) with a bad name, payload, max_retries or key.';

-- Enqueue many jobs in one statement. Each array is NULL (every job takes the
-- default) or as long as job_names; a NULL element takes the default for that job.
-- Returns the job ids in input order; a job whose idempotency key already exists
-- is not inserted and its existing id is returned in its place. Keyed jobs are
-- inserted in key order, whatever the input order, so overlapping keyed batches
-- wait for each other instead of deadlocking. `concurrency_keys` name the group a
-- job's queue key_concurrency counts it in (NULL: no group). Wakes listening
-- workers with one NOTIFY per queue that got jobs due now.
create or replace function pgq.enqueue_many(job_names text[], payloads jsonb[] default null,
                                            queues text[] default null,
                                            run_ats timestamptz[] default null,
                                            priorities integer[] default null,
                                            max_retries integer[] default null,
                                            idempotency_keys text[] default null,
                                            concurrency_keys text[] default null)
returns bigint[]
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_count integer := cardinality(enqueue_many.job_names);
    v_ids   bigint[];
    v_error text;
begin
    if v_count is null then
        raise exception using errcode = 'PQ001',
            message = 'invalid job_names: must not be null',
            hint = 'Pass an array with one job name per job.';
    end if;
    if v_count = 0 then
        return '{}';
    end if;
    if cardinality(enqueue_many.payloads) <> v_count
       or cardinality(enqueue_many.queues) <> v_count
       or cardinality(enqueue_many.run_ats) <> v_count
       or cardinality(enqueue_many.priorities) <> v_count
       or cardinality(enqueue_many.max_retries) <> v_count
       or cardinality(enqueue_many.idempotency_keys) <> v_count
       or cardinality(enqueue_many.concurrency_keys) <> v_count then
        select format('invalid %s: %s has %s elements, job_names has %s', a.name, a.name, a.len, v_count)
          into v_error
          from (values ('payloads', cardinality(enqueue_many.payloads)),
                       ('queues', cardinality(enqueue_many.queues)),
                       ('run_ats', cardinality(enqueue_many.run_ats)),
                       ('priorities', cardinality(enqueue_many.priorities)),
                       ('max_retries', cardinality(enqueue_many.max_retries)),
                       ('idempotency_keys', cardinality(enqueue_many.idempotency_keys)),
                       ('concurrency_keys', cardinality(enqueue_many.concurrency_keys))) as a(name, len)
         where a.len <> v_count
         limit 1;
        raise exception using errcode = 'PQ001', message = v_error,
            hint = 'Each array must be NULL or as long as job_names.';
    end if;

    -- The queues first (a queue exists from its first job), then every job's fields:
    -- a refusal raises before anything is inserted.
    perform pgq._add_queues(enqueue_many.queues);
    perform pgq._check_jobs(enqueue_many.job_names, enqueue_many.payloads, enqueue_many.max_retries,
                            enqueue_many.idempotency_keys, enqueue_many.concurrency_keys);

    -- Ids are taken in input order up front, so the result is in input order.
    v_ids := array(select nextval('pgq.jobs_id_seq'::regclass) from generate_series(1, v_count));

    -- Jobs without an idempotency key skip ON CONFLICT, whose speculative insertion
    -- costs about a tenth of a bulk enqueue.
    with new_jobs as materialized (
        select v_ids[i.ord] as id, q.queue, i.job_name, coalesce(i.payload, '{}') as payload,
               coalesce(i.priority, 0) as priority, coalesce(i.run_at, now()) as run_at,
               coalesce(i.max_retries, q.max_retries) as max_retries, i.idempotency_key,
               i.concurrency_key
          from unnest(enqueue_many.job_names, enqueue_many.payloads, enqueue_many.queues,
                      enqueue_many.run_ats, enqueue_many.priorities, enqueue_many.max_retries,
                      enqueue_many.idempotency_keys, enqueue_many.concurrency_keys)
               with ordinality as i(job_name, payload, queue, run_at, priority, max_retries,
                                    idempotency_key, concurrency_key, ord)
          join pgq.queues q on q.queue = coalesce(i.queue, 'default')
         order by i.ord
    ),
    unkeyed as (
        insert into pgq.jobs (id, queue, job_name, payload, priority, run_at, max_retries,
                              idempotency_key, concurrency_key)
        select * from new_jobs n where n.idempotency_key is null
    )
    -- Keys in one order for every caller (bytewise): a batch waits on another's
    -- uncommitted key only for keys below those it holds, so no cycle can form.
    insert into pgq.jobs (id, queue, job_name, payload, priority, run_at, max_retries,
                          idempotency_key, concurrency_key)
    select * from new_jobs n where n.idempotency_key is not null
     order by n.idempotency_key collate "C"
    on conflict (idempotency_key) where idempotency_key is not null do nothing;

    -- Wake the workers of the queues that got jobs due now (none for later ones).
    perform pgq._wake(array(
        select coalesce(i.queue, 'default')
          from unnest(enqueue_many.job_names, enqueue_many.queues, enqueue_many.run_ats)
               as i(job_name, queue, run_at)
         where i.run_at is null or i.run_at <= now()));

    if enqueue_many.idempotency_keys is null then
        return v_ids;
    end if;
    -- A new statement sees keys committed by a concurrent enqueue that won the race.
    return array(
        select coalesce(k.id, v_ids[i.ord])
          from unnest(enqueue_many.idempotency_keys) with ordinality as i(idempotency_key, ord)
          left join pgq.jobs k on k.idempotency_key = i.idempotency_key
         order by i.ord);
end;
$$;
comment on function pgq.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[], text[],
                                     text[]) is
    'Enqueue many jobs in one statement; returns their ids in input order. PQ001 on bad input (nothing enqueued).';

-- Enqueue one job; returns its id, or with an existing idempotency key that job's id.
-- `concurrency_key` names the group its queue's key_concurrency counts it in. One
-- plain insert after the checks and queue creation enqueue_many makes (the shared
-- helpers above), without its array statement: a producer's single job is the path
-- from enqueue to start.
create or replace function pgq.enqueue(job_name text, payload jsonb default '{}',
                                       queue text default 'default',
                                       run_at timestamptz default null,
                                       priority integer default 0,
                                       max_retries integer default null,
                                       idempotency_key text default null,
                                       concurrency_key text default null)
returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_queue_max_retries integer;
    v_unlimited         boolean;
    v_id                bigint;
begin
    if enqueue.queue is null then
        raise exception using errcode = 'PQ001', message = 'invalid queue: must not be null';
    end if;
    if enqueue.payload is null then
        raise exception using errcode = 'PQ001', message = 'invalid payload: must not be null',
            hint = 'Pass ''{}'' for a job without arguments.';
    end if;
    select q.max_retries,
           not q.paused and q.concurrency = 0 and q.rate_limit = 0 and q.key_concurrency = 0
      into v_queue_max_retries, v_unlimited
      from pgq.queues q where q.queue = enqueue.queue;
    if not found then
        perform pgq._add_queues(array[enqueue.queue]);
        select q.max_retries,
               not q.paused and q.concurrency = 0 and q.rate_limit = 0 and q.key_concurrency = 0
          into v_queue_max_retries, v_unlimited
          from pgq.queues q where q.queue = enqueue.queue;
    end if;
    perform pgq._check_jobs(array[enqueue.job_name], array[enqueue.payload], array[enqueue.max_retries],
                            array[enqueue.idempotency_key], array[enqueue.concurrency_key]);

    if enqueue.idempotency_key is null then
        insert into pgq.jobs (id, queue, job_name, payload, priority, run_at, max_retries,
                              concurrency_key)
        values (nextval('pgq.jobs_id_seq'::regclass), enqueue.queue, enqueue.job_name,
                enqueue.payload, coalesce(enqueue.priority, 0), coalesce(enqueue.run_at, now()),
                coalesce(enqueue.max_retries, v_queue_max_retries), enqueue.concurrency_key)
        returning id into v_id;
    else
        loop
            -- The id is fresh, so the only unique index the job can collide on is the
            -- idempotency key's (no conflict target: its column shares a parameter's name).
            insert into pgq.jobs (id, queue, job_name, payload, priority, run_at, max_retries,
                                  idempotency_key, concurrency_key)
            values (nextval('pgq.jobs_id_seq'::regclass), enqueue.queue, enqueue.job_name,
                    enqueue.payload, coalesce(enqueue.priority, 0), coalesce(enqueue.run_at, now()),
                    coalesce(enqueue.max_retries, v_queue_max_retries), enqueue.idempotency_key,
                    enqueue.concurrency_key)
            on conflict do nothing
            returning id into v_id;
            exit when v_id is not null;
            -- The key exists: a new statement sees it also when a concurrent enqueue that
            -- won the race committed it. Nothing was added, so nothing to wake.
            select j.id into v_id from pgq.jobs j where j.idempotency_key = enqueue.idempotency_key;
            if v_id is not null then
                return v_id;
            end if;
            -- Its job was pruned in between: the key is free again.
        end loop;
    end if;

    -- A job due now: while a worker waits for this queue, the job is handed to it when
    -- this transaction commits (see pgq._hand_off); otherwise the queue's workers are
    -- woken to claim it. A payload too large for a notification is always claimed.
    if enqueue.run_at is null or enqueue.run_at <= now() then
        if v_unlimited and pgq._handoffs_on() and exists (select from pgq.waiting_workers)
           and octet_length(enqueue.payload::text) <= 6000 then
            insert into pgq.handoff_requests (job_id, queue) values (v_id, enqueue.queue);
        else
            perform pgq._wake(array[enqueue.queue]);
        end if;
    end if;
    return v_id;
end;
$$;
comment on function pgq.enqueue(text, jsonb, text, timestamptz, integer, integer, text, text) is
    'Enqueue one job; returns its id (the existing job''s id for a known idempotency key). PQ001 on bad input.';

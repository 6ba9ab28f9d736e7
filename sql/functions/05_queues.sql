-- Queues: settings that jobs take their defaults from. A queue exists from its
-- first enqueue or configure_queue call; until configured it has the defaults.

-- Create or update a queue's settings; NULL keeps the current (or default) value.
-- Flow limits (enforced by pgq.claim, fleet-wide): `concurrency` running jobs in the
-- queue, `rate_limit` starts per sliding `rate_period`, `key_concurrency` running jobs
-- per concurrency key; 0 removes a limit.
create or replace function pgq.configure_queue(queue text, max_retries integer default null,
                                               backoff_base interval default null,
                                               backoff_max interval default null,
                                               lease interval default null,
                                               concurrency integer default null,
                                               rate_limit integer default null,
                                               rate_period interval default null,
                                               key_concurrency integer default null)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_current pgq.queues;
    v_limit   record;
begin
    if configure_queue.queue is null or length(configure_queue.queue) not between 1 and 128 then
        raise exception using errcode = 'PQ001',
            message = 'invalid queue: must be 1 to 128 characters',
            hint = 'Pass a non-empty queue name.';
    end if;
    if configure_queue.max_retries is not null
       and configure_queue.max_retries not between 0 and 1000 then
        raise exception using errcode = 'PQ001',
            message = format('invalid max_retries %s: must be between 0 and 1000',
                             configure_queue.max_retries);
    end if;
    perform pgq._check_lease(configure_queue.lease);
    for v_limit in
        select l.name, l.value
          from (values (1, 'concurrency', configure_queue.concurrency),
                       (2, 'rate_limit', configure_queue.rate_limit),
                       (3, 'key_concurrency', configure_queue.key_concurrency)) as l(ord, name, value)
         where l.value not between 0 and 1000000
         order by l.ord
    loop
        raise exception using errcode = 'PQ001',
            message = format('invalid %s %s: must be between 0 and 1000000 (0 removes the limit)',
                             v_limit.name, v_limit.value),
            hint = 'Pass NULL to keep the current value.';
    end loop;
    if configure_queue.rate_period not between interval '1 millisecond' and interval '1 day' then
        raise exception using errcode = 'PQ001',
            message = format('invalid rate_period %s: must be between 1 millisecond and 1 day',
                             configure_queue.rate_period),
            hint = 'Pass NULL to keep the current value; rate_limit 0 removes the rate limit.';
    end if;

    insert into pgq.queues as q (queue) values (configure_queue.queue)
    on conflict on constraint queues_pkey do nothing;
    select * into strict v_current from pgq.queues q
     where q.queue = configure_queue.queue
       for update;

    if coalesce(configure_queue.backoff_base, v_current.backoff_base) <= interval '0'
       or coalesce(configure_queue.backoff_max, v_current.backoff_max)
          < coalesce(configure_queue.backoff_base, v_current.backoff_base) then
        raise exception using errcode = 'PQ001',
            message = format('invalid backoff: base %s must be positive and max %s at least the base',
                             coalesce(configure_queue.backoff_base, v_current.backoff_base),
                             coalesce(configure_queue.backoff_max, v_current.backoff_max));
    end if;

    update pgq.queues q
       set max_retries     = coalesce(configure_queue.max_retries, q.max_retries),
           backoff_base    = coalesce(configure_queue.backoff_base, q.backoff_base),
           backoff_max     = coalesce(configure_queue.backoff_max, q.backoff_max),
           lease           = coalesce(configure_queue.lease, q.lease),
           concurrency     = coalesce(configure_queue.concurrency, q.concurrency),
           rate_limit      = coalesce(configure_queue.rate_limit, q.rate_limit),
           rate_period     = coalesce(configure_queue.rate_period, q.rate_period),
           key_concurrency = coalesce(configure_queue.key_concurrency, q.key_concurrency),
           updated_at      = now()
     where q.queue = configure_queue.queue;
    -- A rate window no longer counted is forgotten; a new one starts empty.
    if coalesce(configure_queue.rate_limit, v_current.rate_limit) = 0 then
        delete from pgq.queue_starts s where s.queue = configure_queue.queue;
    end if;
    -- Limits raised or removed may let waiting jobs run now.
    perform pgq._wake(array[configure_queue.queue]);
end;
$$;
comment on function pgq.configure_queue(text, integer, interval, interval, interval, integer,
                                        integer, interval, integer) is
    'Create or update a queue''s settings and flow limits (NULL keeps the current value, 0 removes a limit); PQ001 on a bad value.';

-- Internal: set a known queue's paused flag, or refuse an unknown queue.
create or replace function pgq._set_paused(queue text, paused boolean)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    if _set_paused.queue is null then
        raise exception using errcode = 'PQ001', message = 'invalid queue: must not be null';
    end if;
    update pgq.queues q
       set paused = _set_paused.paused, updated_at = now()
     where q.queue = _set_paused.queue;
    if not found then
        raise exception using errcode = 'PQ203',
            message = format('queue %L not found', _set_paused.queue),
            hint = 'A queue exists once a job was enqueued to it or configure_queue created it.';
    end if;
    if not _set_paused.paused then
        -- Resumed jobs are runnable now: wake the workers.
        perform pgq._wake(array[_set_paused.queue]);
    end if;
end;
$$;
comment on function pgq._set_paused(text, boolean) is
    'Internal: set a queue''s paused flag; PQ203 for an unknown queue.';

-- Stop claims from a queue; running jobs go on, enqueue still works.
create or replace function pgq.pause(queue text)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    perform pgq._set_paused(pause.queue, true);
end;
$$;
comment on function pgq.pause(text) is
    'Stop claims from a queue (enqueue goes on); PQ203 for an unknown queue.';

-- Let workers claim from a paused queue again, and wake them.
create or replace function pgq.resume(queue text)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    perform pgq._set_paused(resume.queue, false);
end;
$$;
comment on function pgq.resume(text) is
    'Let workers claim from a paused queue again; PQ203 for an unknown queue.';

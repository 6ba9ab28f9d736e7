-- Queues: settings that jobs take their defaults from. A queue exists from its
-- first enqueue or configure_queue call; until configured it has the defaults.

-- Internal: wake the workers listening on channel pgq_jobs, one NOTIFY per queue
-- (the payload). PostgreSQL delivers it when the caller's transaction commits and
-- folds identical ones within a transaction.
create or replace function pgq._wake(queues text[])
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    perform pg_notify('pgq_jobs', w.queue)
       from (select distinct u.queue from unnest(_wake.queues) as u(queue)) as w;
end;
$$;
comment on function pgq._wake(text[]) is
    'Internal: NOTIFY pgq_jobs once per queue named, at commit.';

-- Internal: refuse a lease outside the range every call accepts (NULL passes: it
-- means the queue's lease). Long jobs keep a lease by heartbeats, not by a long lease.
create or replace function pgq._check_lease(lease interval)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if _check_lease.lease not between interval '1 second' and interval '1 day' then
        raise exception using errcode = 'PQ001',
            message = format('invalid lease %s: must be between 1 second and 1 day',
                             _check_lease.lease);
    end if;
end;
$$;
comment on function pgq._check_lease(interval) is
    'Internal: PQ001 unless the lease is NULL or between 1 second and 1 day.';

-- Create or update a queue's settings; NULL keeps the current (or default) value.
create or replace function pgq.configure_queue(queue text, max_retries integer default null,
                                               backoff_base interval default null,
                                               backoff_max interval default null,
                                               lease interval default null)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_current pgq.queues;
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
       set max_retries  = coalesce(configure_queue.max_retries, q.max_retries),
           backoff_base = coalesce(configure_queue.backoff_base, q.backoff_base),
           backoff_max  = coalesce(configure_queue.backoff_max, q.backoff_max),
           lease        = coalesce(configure_queue.lease, q.lease),
           updated_at   = now()
     where q.queue = configure_queue.queue;
end;
$$;
comment on function pgq.configure_queue(text, integer, interval, interval, interval) is
    'Create or update a queue''s settings (NULL keeps the current value); PQ001 on a bad value.';

-- Internal: set a known queue's paused flag, or refuse an unknown queue.
create or replace function pgq._set_paused(queue text, paused boolean)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
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
language plpgsql security definer set search_path = pg_catalog, pg_temp
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
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    perform pgq._set_paused(resume.queue, false);
end;
$$;
comment on function pgq.resume(text) is
    'Let workers claim from a paused queue again; PQ203 for an unknown queue.';

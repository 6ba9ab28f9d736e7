-- 0004.flow-control.sql
-- Flow control, enforced by pgq.claim: per queue, at most `concurrency` running jobs,
-- at most `rate_limit` starts per sliding `rate_period`, at most `key_concurrency`
-- running jobs per concurrency key (given at enqueue). 0 means no limit.
alter table pgq.queues
    add column if not exists concurrency     integer  not null default 0,
    add column if not exists rate_limit      integer  not null default 0,
    add column if not exists rate_period     interval not null default interval '1 second',
    add column if not exists key_concurrency integer  not null default 0;

do $$
begin
    if not exists (select from pg_catalog.pg_constraint c
                    where c.conrelid = 'pgq.queues'::regclass
                      and c.conname = 'queues_flow_limits_valid') then
        alter table pgq.queues add constraint queues_flow_limits_valid
            check (concurrency between 0 and 1000000
                   and rate_limit between 0 and 1000000
                   and key_concurrency between 0 and 1000000
                   and rate_period between interval '1 millisecond' and interval '1 day');
    end if;
end;
$$;

alter table pgq.jobs add column if not exists concurrency_key text;

-- Running jobs per concurrency key, for key_concurrency. Jobs without a key never
-- enter it, so queues that use no keys pay nothing for it.
create index if not exists jobs_running_key_idx
    on pgq.jobs (queue, concurrency_key)
    where state = 'running' and concurrency_key is not null;

-- The starts of a rate-limited queue within its current rate_period: the sliding
-- window pgq.claim counts. Written only for queues with a rate_limit; claim
-- removes the rows that fell out of the window.
create table if not exists pgq.queue_starts (
    queue      text not null,
    started_at timestamptz not null
);
create index if not exists queue_starts_window_idx on pgq.queue_starts (queue, started_at);

-- New signatures: sql/functions creates them.
drop function if exists pgq.configure_queue(text, integer, interval, interval, interval);
drop function if exists pgq.enqueue(text, jsonb, text, timestamptz, integer, integer, text);
drop function if exists pgq.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[],
                                         integer[], text[]);

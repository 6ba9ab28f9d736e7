-- 0005.schedules.sql
-- Periodic schedules: a cron expression in a time zone, and the job it enqueues at
-- each slot. pgq.tick enqueues the slots that are due; next_run_at is the next slot
-- not yet enqueued, last_run_at the slot enqueued last and last_job_id its job.
create table if not exists pgq.job_schedules (
    schedule_name text primary key,
    cron          text not null,
    timezone      text not null,
    job_name      text not null,
    payload       jsonb not null default '{}',
    queue         text not null,
    priority      integer not null default 0,
    max_retries   integer,
    next_run_at   timestamptz not null,
    last_run_at   timestamptz,
    last_job_id   bigint,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint job_schedules_name_valid check (length(schedule_name) between 1 and 200),
    constraint job_schedules_job_name_valid check (length(job_name) between 1 and 200),
    constraint job_schedules_queue_valid check (length(queue) between 1 and 128),
    constraint job_schedules_payload_is_object check (jsonb_typeof(payload) = 'object'),
    constraint job_schedules_max_retries_valid check (max_retries between 0 and 1000)
);

-- pgq.tick finds the due schedules without reading the others.
create index if not exists job_schedules_due_idx on pgq.job_schedules (next_run_at);

-- The baseline: a bare SKIP LOCKED queue with no leases, attempts or fencing.
drop table if exists bench_bare_jobs;
create table bench_bare_jobs (
    id      bigint generated always as identity primary key,
    payload jsonb not null default '{}'
);

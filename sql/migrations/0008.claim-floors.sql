-- 0008.claim-floors.sql
-- While the xmin horizon is held (a long transaction, a stale replication slot),
-- vacuum cannot remove the index entries that every claim and completion leaves at
-- the front of jobs_claim_idx and jobs_lease_expiry_idx, and scans cannot mark them
-- dead, so every claim would walk all of them. These two small tables let claims
-- start past what is known to be taken (see sql/functions/20_claim.sql). Both are
-- hints, empty while scans are fast: losing a row costs one slow scan, never a job.

-- A queue's claim floor: claims read jobs_claim_idx from (priority, run_at) on, and
-- one claim at a time rewinds to the queue's true front once rewind_at has passed.
create table if not exists pgq.claim_floors (
    queue     text primary key,
    priority  integer not null,
    run_at    timestamptz not null,
    moved_at  timestamptz not null,
    rewind_at timestamptz not null
);

-- The lease sweep window: while this one row exists, lease expiry reads only leases
-- that expired after swept_to (less a margin), once a second, and the whole index
-- once full_at has passed.
create table if not exists pgq.lease_sweep (
    one      boolean primary key default true,
    swept_to timestamptz not null,
    full_at  timestamptz not null,
    constraint lease_sweep_one_row check (one)
);

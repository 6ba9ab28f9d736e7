-- 0009.handoffs.sql
-- Hand-overs: an idle worker that listens says so here, and a one-row enqueue that
-- finds it at commit leases the new job to it at once and sends the job in a
-- notification, so the job starts without a claim (see sql/functions/25_handoff.sql).
-- Both tables are unlogged hints, emptied by a crash restart: losing a row costs a
-- job one claim, never the job.

-- A waiting worker: up to `slots` jobs of `queues` may be handed to it, under `lease`
-- (NULL: the queue's). Its listening session holds advisory lock (1885434163,
-- wake_key) and listens on `channel`; a session that is gone no longer holds the lock.
create unlogged table if not exists pgq.waiting_workers (
    worker_id text primary key,
    queues    text[] not null,
    slots     integer not null check (slots > 0),
    wake_key  integer not null,
    channel   text not null,
    lease     interval,
    since     timestamptz not null
);

-- Jobs enqueued in a transaction that is still open, each to be handed over when it
-- commits (a deferred trigger), so that the lease starts at the commit.
-- Each row is deleted at its own commit; the key keeps that delete one index probe
-- however many dead rows vacuum has not yet removed.
create unlogged table if not exists pgq.handoff_requests (
    job_id bigint primary key,
    queue  text not null
);

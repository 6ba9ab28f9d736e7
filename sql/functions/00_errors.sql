-- The engine, read in file order: no file calls a function defined in a later one.
--
-- States of a job (pgq.jobs.state):
--   available --claim--> running --complete--> succeeded
--   available --hand-over at the enqueue's commit--> running (a claim on behalf of a
--                                  waiting worker, leased the same way)
--                        running --fail, lease expiry--> available (retry, after
--                                  backoff) or dead (retry false, or attempts used up)
--   running --release_lost_claims--> available (the claim's answer was lost; the
--                                  attempt is not counted)
--   available or running --cancel--> cancelled;  dead or cancelled --retry--> available
--   succeeded, dead and cancelled are finished: they stay until prune.
--
-- Who calls what (grants in 90_grants.sql):
--   producers (pgq_producer): enqueue, enqueue_many, job_status
--   workers (pgq_worker): claim, heartbeat(_many), complete(_many), fail, once_begin,
--     once_finish, once_abort, release_lost_claims, tick, job_status, and for
--     hand-overs listen_for_handoffs, claim_and_wait, stop_waiting
--   operators (pgq_admin): all of the above, plus configure_queue, pause, resume,
--     cancel, retry, retry_dead, prune, once_resolve, schedule, unschedule
--   internal pgq._ functions: called only by the functions above, granted to no role.
--
-- Where each promise is kept:
--   00_errors.sql     the project's SQLSTATEs (pgq.error_codes)
--   03_shared.sql     helpers more than one stage calls; how a failed attempt ends:
--                     backoff, and the dead-letter rule, decided once in _fail_jobs;
--                     how one starts (_lease)
--   05_queues.sql     queue settings and flow limits, pause and resume
--   10_enqueue.sql    validation, idempotency keys, wake-up of listening workers
--   15_schedules.sql  cron parsing; tick enqueues each slot once, leader-free
--   20_claim.sql      at most one holder per job (lease token), lease expiry is a
--                     failed attempt, flow limits held fleet-wide
--   25_handoff.sql    a one-row enqueue's job leased at commit to a live waiting worker
--   30_heartbeat.sql  only the current, unexpired lease extends; cancel is reported
--   40_complete.sql   fenced completion with results, late completion while unclaimed
--   50_fail.sql       fenced failure, late failure while unclaimed
--   60_once.sql       a guarded side effect runs at most once per job and effect key
--   70_operator.sql   cancel, retry, prune, job_status
--   80_views.sql      read-only views for operators
--   90_grants.sql     who may call what
--
-- Lock order, followed by every call that locks more than one row:
--   1. queue rows (pgq.queues), in queue name order (claim of flow-limited queues);
--   2. then jobs, in ascending id order (heartbeat_many, complete_many, retry_dead,
--      prune), so two calls over the same jobs wait for each other and never deadlock.
--   A claim must never wait: it locks jobs in claim order with skip locked (as does
--   lease expiry and tick over schedules). Keyed enqueue_many inserts in idempotency
--   key order, so overlapping batches wait instead of deadlocking.
--   A claim's floor row (pgq.claim_floors) is locked last, after its jobs, and the
--   lease sweep window under a try-only advisory lock, so neither adds a wait cycle.
--   A hand-over locks a waiting worker's row (pgq.waiting_workers) with skip locked,
--   then leases a job its own transaction inserted; claim_and_wait locks its own row
--   with skip locked, and stop_waiting, which waits for that row, holds nothing else.

-- The project's own SQLSTATEs, in one place. Class PQ: PQ0xx bad arguments,
-- PQ1xx worker calls (fencing, run-once), PQ2xx operator calls.
create or replace view pgq.error_codes as
select v.sqlstate, v.name, v.meaning
  from (values
    ('PQ001', 'invalid_argument',
     'An argument is missing, empty, too large or out of range; the message names it. Nothing was changed.'),
    ('PQ101', 'lease_lost',
     'The job is not running under this lease token: the lease expired, the job was cancelled, or another worker holds it. Stop working on the job; nothing was changed.'),
    ('PQ102', 'marker_not_begun',
     'once_finish or once_abort named a run-once marker that this lease did not begin.'),
    ('PQ103', 'job_cancelled',
     'heartbeat of a job that was cancelled while this lease held it: the lease is gone. Stop working on the job (a kind of lease_lost); nothing was changed.'),
    ('PQ201', 'job_not_found',
     'No job has this id (it may have been pruned).'),
    ('PQ202', 'job_state_conflict',
     'The job is not in a state this operation applies to (for example retry of a job that is not dead or cancelled).'),
    ('PQ203', 'queue_not_found',
     'The queue was never configured nor used.'),
    ('PQ204', 'marker_not_found',
     'No run-once marker has this job id and effect key, or it is not in a state the operation applies to.'),
    ('PQ210', 'schedule_not_found',
     'No schedule has this name (see pgq.schedules).')
  ) as v(sqlstate, name, meaning);
comment on view pgq.error_codes is
    'The SQLSTATE codes pgq raises, with their names and meanings.';

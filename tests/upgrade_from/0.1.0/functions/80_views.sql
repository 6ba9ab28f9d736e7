-- Views for operators: psql is a first-class console.

-- Per queue: jobs due now, scheduled for later, running, and finished by state
-- (succeeded counts until pruned), and how long the oldest due job has waited.
create or replace view pgq.queue_stats as
select q.queue,
       count(j.id) filter (where j.state = 'available' and j.run_at <= now()) as available,
       count(j.id) filter (where j.state = 'available' and j.run_at > now())  as scheduled,
       count(j.id) filter (where j.state = 'running')                         as running,
       count(j.id) filter (where j.state = 'succeeded')                       as succeeded,
       count(j.id) filter (where j.state = 'dead')                            as dead,
       count(j.id) filter (where j.state = 'cancelled')                       as cancelled,
       now() - min(j.run_at) filter (where j.state = 'available' and j.run_at <= now())
                                                                              as oldest_runnable_age,
       q.paused
  from pgq.queues q
  left join pgq.jobs j on j.queue = q.queue
 group by q.queue, q.paused;
comment on view pgq.queue_stats is
    'Per queue: available (due now), scheduled, running, succeeded, dead, cancelled, oldest_runnable_age, paused.';

-- Jobs that used their attempts (or failed with retry => false), with their last error.
create or replace view pgq.dead_letter as
select j.id, j.queue, j.job_name, j.payload, j.attempt, j.max_retries, j.last_error,
       j.finished_at as died_at, j.created_at, j.idempotency_key
  from pgq.jobs j
 where j.state = 'dead';
comment on view pgq.dead_letter is
    'Dead jobs with their last error; pgq.job_errors has the error of every attempt.';

-- The error of every failed attempt, including attempts whose lease expired.
create or replace view pgq.job_errors as
select e.job_id, e.queue, e.job_name, e.attempt, e.error, e.worker_id, e.failed_at
  from pgq.attempt_errors e;
comment on view pgq.job_errors is
    'The error of every failed attempt of every job (until the job is pruned).';

-- One job as the operator sees it, whatever its state.
create or replace view pgq.job_details as
select j.id, j.queue, j.job_name, j.state, j.payload, j.priority, j.run_at, j.attempt,
       j.max_retries, j.idempotency_key, j.worker_id, j.lease_expires_at, j.last_error,
       j.created_at, j.started_at, j.finished_at
  from pgq.jobs j;
comment on view pgq.job_details is
    'Every job with its state, attempts, lease and last error (lease tokens stay hidden).';

-- Views for operators: psql is a first-class console.

-- Per queue: jobs due now, scheduled for later, running, and finished by state
-- (succeeded counts until pruned), and how long the oldest due job has waited;
-- then the queue's flow limits as configure_queue set them (0: no limit).
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
       q.paused,
       q.concurrency,
       q.rate_limit,
       q.rate_period,
       q.key_concurrency
  from pgq.queues q
  left join pgq.jobs j on j.queue = q.queue
 group by q.queue, q.paused, q.concurrency, q.rate_limit, q.rate_period, q.key_concurrency;
comment on view pgq.queue_stats is
    'Per queue: available (due now), scheduled, running, succeeded, dead, cancelled, oldest_runnable_age, paused, and the flow limits concurrency, rate_limit, rate_period, key_concurrency (0: none).';

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

-- Every schedule: its cron and time zone, the job it enqueues, its next slot and the
-- slot it enqueued last, with that job's id and state.
create or replace view pgq.schedules as
select s.schedule_name, s.cron, s.timezone, s.job_name, s.queue, s.payload, s.priority,
       s.max_retries, s.next_run_at, s.last_run_at, s.last_job_id,
       j.state as last_job_state, s.created_at, s.updated_at
  from pgq.job_schedules s
  left join pgq.jobs j on j.id = s.last_job_id;
comment on view pgq.schedules is
    'Periodic schedules: cron, timezone, job, next_run_at, and the last slot run with its job.';

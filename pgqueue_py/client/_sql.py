"""Every statement pgqueue_py sends: one per pgq function or view, with named arguments.

The texts are constants, so psycopg prepares the hot ones (claim, complete_many,
heartbeat_many) on each connection after a few calls. Parameters carry explicit casts:
a NULL then has its type, and a Python int always reaches the function as the
declared integer type, whatever its size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import LiteralString

# -- producer ------------------------------------------------------------------------------

# `run_at` and `delay` are never both set; a delay counts from the database's clock.
ENQUEUE: LiteralString = (
    "select pgq.enqueue(job_name => %(job_name)s::text, payload => %(payload)s::jsonb,"
    " queue => %(queue)s::text,"
    " run_at => coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval),"
    " priority => %(priority)s::integer, max_retries => %(max_retries)s::integer,"
    " idempotency_key => %(idempotency_key)s::text,"
    " concurrency_key => %(concurrency_key)s::text)"
)

# One job type per call: the settings shared by every job travel once and are spread
# over the batch in the database. The payloads travel as one JSON array, split into
# jsonb[] by the database: one json.dumps in the client instead of one per payload,
# which halves the client's time for a large batch.
ENQUEUE_MANY: LiteralString = (
    "select pgq.enqueue_many("
    "job_names => array_fill(%(job_name)s::text, array[%(count)s::integer]),"
    " payloads => array(select p.payload"
    " from jsonb_array_elements(%(payloads)s::jsonb) with ordinality as p(payload, ord)"
    " order by p.ord),"
    " queues => array_fill(%(queue)s::text, array[%(count)s::integer]),"
    " run_ats => array_fill(coalesce(%(run_at)s::timestamptz, now() + %(delay)s::interval),"
    " array[%(count)s::integer]),"
    " priorities => array_fill(%(priority)s::integer, array[%(count)s::integer]),"
    " max_retries => array_fill(%(max_retries)s::integer, array[%(count)s::integer]),"
    " idempotency_keys => %(idempotency_keys)b::text[],"
    " concurrency_keys => %(concurrency_keys)b::text[])"
)

# -- worker --------------------------------------------------------------------------------

CLAIM: LiteralString = (
    "select c.id, c.job_name, c.queue, c.payload, c.attempt, c.max_retries, c.lease_token,"
    " c.lease_expires_at, c.priority, c.run_at, c.created_at, c.lease_duration"
    " from pgq.claim(worker_id => %(worker_id)s::text, queues => %(queues)s::text[],"
    " batch => %(batch)s::integer, lease => %(lease)s::interval) as c"
)

CLAIM_AND_WAIT: LiteralString = (
    "select c.id, c.job_name, c.queue, c.payload, c.attempt, c.max_retries, c.lease_token,"
    " c.lease_expires_at, c.priority, c.run_at, c.created_at, c.lease_duration"
    " from pgq.claim_and_wait(worker_id => %(worker_id)s::text, queues => %(queues)s::text[],"
    " batch => %(batch)s::integer, lease => %(lease)s::interval,"
    " wake_key => %(wake_key)s::integer, channel => %(channel)s::text,"
    " free_slots => %(free_slots)s::integer) as c"
)

# Run on the worker's listening connection, in autocommit.
LISTEN_FOR_HANDOFFS: LiteralString = (
    "select l.wake_key, l.channel from pgq.listen_for_handoffs() as l"
)

STOP_WAITING: LiteralString = (
    "select pgq.stop_waiting(worker_id => %(worker_id)s::text, channel => %(channel)s::text)"
)

RELEASE_LOST_CLAIMS: LiteralString = (
    "select pgq.release_lost_claims(worker_id => %(worker_id)s::text,"
    " held_job_ids => %(held_job_ids)s::bigint[])"
)

HEARTBEAT: LiteralString = (
    "select pgq.heartbeat(job_id => %(job_id)s::bigint, lease_token => %(lease_token)s::uuid,"
    " lease => %(lease)s::interval)"
)

HEARTBEAT_MANY: LiteralString = (
    "select h.job_id, h.outcome, h.lease_expires_at"
    " from pgq.heartbeat_many(job_ids => %(job_ids)s::bigint[],"
    " lease_tokens => %(lease_tokens)s::uuid[], lease => %(lease)s::interval) as h"
)

COMPLETE: LiteralString = (
    "select pgq.complete(job_id => %(job_id)s::bigint, lease_token => %(lease_token)s::uuid,"
    " result => %(result)s::jsonb)"
)

COMPLETE_MANY: LiteralString = (
    "select c.job_id, c.outcome"
    " from pgq.complete_many(job_ids => %(job_ids)s::bigint[],"
    " lease_tokens => %(lease_tokens)s::uuid[], results => %(results)s::jsonb[]) as c"
)

FAIL: LiteralString = (
    "select pgq.fail(job_id => %(job_id)s::bigint, lease_token => %(lease_token)s::uuid,"
    " error => %(error)s::text, retry => %(retry)s::boolean)"
)

ONCE_BEGIN: LiteralString = (
    "select o.status, o.result"
    " from pgq.once_begin(job_id => %(job_id)s::bigint, lease_token => %(lease_token)s::uuid,"
    " effect_key => %(effect_key)s::text, request_id => %(request_id)s::uuid) as o"
)

ONCE_FINISH: LiteralString = (
    "select pgq.once_finish(job_id => %(job_id)s::bigint,"
    " lease_token => %(lease_token)s::uuid, effect_key => %(effect_key)s::text,"
    " result => %(result)s::jsonb)"
)

ONCE_ABORT: LiteralString = (
    "select pgq.once_abort(job_id => %(job_id)s::bigint,"
    " lease_token => %(lease_token)s::uuid, effect_key => %(effect_key)s::text)"
)

# -- operator ------------------------------------------------------------------------------

# A producer's view of one job; granted to pgq_producer as well.
JOB_STATUS: LiteralString = (
    "select s.state, s.attempt, s.result, s.last_error, s.finished_at"
    " from pgq.job_status(job_id => %(job_id)s::bigint) as s"
)

CONFIGURE_QUEUE: LiteralString = (
    "select pgq.configure_queue(queue => %(queue)s::text,"
    " max_retries => %(max_retries)s::integer, backoff_base => %(backoff_base)s::interval,"
    " backoff_max => %(backoff_max)s::interval, lease => %(lease)s::interval,"
    " concurrency => %(concurrency)s::integer, rate_limit => %(rate_limit)s::integer,"
    " rate_period => %(rate_period)s::interval, key_concurrency => %(key_concurrency)s::integer)"
)

PAUSE: LiteralString = "select pgq.pause(queue => %(queue)s::text)"

RESUME: LiteralString = "select pgq.resume(queue => %(queue)s::text)"

CANCEL: LiteralString = "select pgq.cancel(job_id => %(job_id)s::bigint)"

RETRY: LiteralString = "select pgq.retry(job_id => %(job_id)s::bigint)"

RETRY_DEAD: LiteralString = (
    "select pgq.retry_dead(queue => %(queue)s::text, batch => %(batch)s::integer)"
)

PRUNE: LiteralString = (
    "select pgq.prune(older_than => %(older_than)s::interval,"
    " include_dead => %(include_dead)s::boolean, batch => %(batch)s::integer)"
)

ONCE_RESOLVE: LiteralString = (
    "select pgq.once_resolve(job_id => %(job_id)s::bigint, effect_key => %(effect_key)s::text,"
    " ran => %(ran)s::boolean, result => %(result)s::jsonb)"
)

QUEUE_STATS: LiteralString = (
    "select s.queue, s.available, s.scheduled, s.running, s.succeeded, s.dead, s.cancelled,"
    " s.oldest_runnable_age, s.paused, s.concurrency, s.rate_limit, s.rate_period,"
    " s.key_concurrency"
    " from pgq.queue_stats s order by s.queue"
)

DEAD_LETTER: LiteralString = (
    "select d.id, d.queue, d.job_name, d.payload, d.attempt, d.max_retries, d.last_error,"
    " d.died_at, d.created_at, d.idempotency_key"
    " from pgq.dead_letter d"
    " where %(queue)s::text is null or d.queue = %(queue)s::text"
    " order by d.died_at desc, d.id desc"
    " limit %(limit)s::integer"
)

JOB_ERRORS: LiteralString = (
    "select e.job_id, e.queue, e.job_name, e.attempt, e.error, e.worker_id, e.failed_at"
    " from pgq.job_errors e"
    " where e.job_id = %(job_id)s::bigint"
    " order by e.failed_at, e.attempt"
)

JOB_DETAILS: LiteralString = (
    "select j.id, j.queue, j.job_name, j.state, j.payload, j.priority, j.run_at, j.attempt,"
    " j.max_retries, j.idempotency_key, j.worker_id, j.lease_expires_at, j.last_error,"
    " j.created_at, j.started_at, j.finished_at"
    " from pgq.job_details j"
    " where j.id = %(job_id)s::bigint"
)

# -- read by the dashboard -----------------------------------------------------------------

# Run-once markers with their outcome (done, in_progress, unknown), of one job or all.
ONCE_OUTCOMES: LiteralString = (
    "select o.job_id, o.effect_key, o.outcome, o.result, o.attempt, o.started_at,"
    " o.finished_at, o.queue, o.job_name, o.job_state"
    " from pgq.once_outcomes o"
    " where (%(job_id)s::bigint is null or o.job_id = %(job_id)s::bigint)"
    " and (%(outcome)s::text is null or o.outcome = %(outcome)s::text)"
    " order by o.started_at desc, o.job_id desc, o.effect_key"
    " limit %(limit)s::integer"
)

# -- schedules -----------------------------------------------------------------------------

# Creates or replaces; returns the next slot. NULL payload/queue/timezone/priority take
# the function's defaults here, so a caller passes None for "default".
SCHEDULE: LiteralString = (
    "select pgq.schedule(schedule_name => %(schedule_name)s::text, cron => %(cron)s::text,"
    " job_name => %(job_name)s::text,"
    " payload => coalesce(%(payload)s::jsonb, '{}'::jsonb),"
    " queue => coalesce(%(queue)s::text, 'default'),"
    " timezone => coalesce(%(timezone)s::text, 'UTC'),"
    " priority => coalesce(%(priority)s::integer, 0),"
    " max_retries => %(max_retries)s::integer)"
)

UNSCHEDULE: LiteralString = "select pgq.unschedule(schedule_name => %(schedule_name)s::text)"

SCHEDULES: LiteralString = (
    "select s.schedule_name, s.cron, s.timezone, s.job_name, s.queue, s.payload, s.priority,"
    " s.max_retries, s.next_run_at, s.last_run_at, s.last_job_id, s.last_job_state,"
    " s.created_at, s.updated_at"
    " from pgq.schedules s"
    " order by s.schedule_name"
)

# Workers call it as they poll; returns how many jobs it enqueued.
TICK: LiteralString = "select pgq.tick()"

# -- worker, added by the worker -----------------------------------------------------------

# The worker's listener connection: enqueue, retry and resume notify at commit, with
# the queue's name as payload.
LISTEN_JOBS: LiteralString = "listen pgq_jobs"

# A producer waiting for results: complete, fail (dead), claim reaping an expired
# lease at the last attempt (dead) and cancel notify at commit, with the finished
# job ids, comma-separated, as payload.
LISTEN_FINISHED: LiteralString = "listen pgq_finished"
UNLISTEN_FINISHED: LiteralString = "unlisten pgq_finished"

-- Who may call what. Roles get EXECUTE on functions and SELECT on views, never
-- rights on tables; internal pgq._ functions are granted to no role.

revoke all on all functions in schema pgq from public;
revoke all on all tables in schema pgq from public;

grant execute on function
    pgq.enqueue(text, jsonb, text, timestamptz, integer, integer, text, text),
    pgq.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[], text[], text[])
    to pgq_producer, pgq_admin;

grant execute on function
    pgq.claim(text, text[], integer, interval),
    pgq.release_lost_claims(text, bigint[]),
    pgq.heartbeat(bigint, uuid, interval),
    pgq.heartbeat_many(bigint[], uuid[], interval),
    pgq.complete(bigint, uuid, jsonb),
    pgq.complete_many(bigint[], uuid[], jsonb[]),
    pgq.fail(bigint, uuid, text, boolean),
    pgq.once_begin(bigint, uuid, text, uuid),
    pgq.once_finish(bigint, uuid, text, jsonb),
    pgq.once_abort(bigint, uuid, text),
    pgq.listen_for_handoffs(),
    pgq.claim_and_wait(text, text[], integer, interval, integer, text, integer),
    pgq.stop_waiting(text, text)
    to pgq_worker, pgq_admin;

-- Producers follow the jobs they added; workers and admins may look too.
grant execute on function
    pgq.job_status(bigint)
    to pgq_producer, pgq_worker, pgq_admin;

-- Workers tick as they poll; pg_cron may tick as an admin where no worker runs.
grant execute on function pgq.tick() to pgq_worker, pgq_admin;

grant execute on function
    pgq.configure_queue(text, integer, interval, interval, interval, integer, integer, interval,
                        integer),
    pgq.pause(text),
    pgq.resume(text),
    pgq.cancel(bigint),
    pgq.retry(bigint),
    pgq.retry_dead(text, integer),
    pgq.prune(interval, boolean, integer),
    pgq.once_resolve(bigint, text, boolean, jsonb),
    pgq.schedule(text, text, text, jsonb, text, text, integer, integer),
    pgq.unschedule(text)
    to pgq_admin;

grant select on pgq.error_codes to pgq_producer, pgq_worker, pgq_admin;
grant select on pgq.queue_stats, pgq.dead_letter, pgq.job_errors, pgq.job_details,
    pgq.schedules to pgq_admin;
grant select on pgq.once_outcomes to pgq_admin;

-- pgq_viewer reads: every operator view and job_status, for dashboards with
-- `--read-only` and for monitoring; it can call no producer, worker or operator
-- function.
grant execute on function pgq.job_status(bigint) to pgq_viewer;
grant select on pgq.error_codes, pgq.queue_stats, pgq.dead_letter, pgq.job_errors,
    pgq.job_details, pgq.schedules, pgq.once_outcomes to pgq_viewer;

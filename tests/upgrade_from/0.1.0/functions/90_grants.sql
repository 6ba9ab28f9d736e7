-- Who may call what. Roles get EXECUTE on functions and SELECT on views, never
-- rights on tables; internal pgq._ functions are granted to no role.

revoke all on all functions in schema pgq from public;
revoke all on all tables in schema pgq from public;

grant execute on function
    pgq.enqueue(text, jsonb, text, timestamptz, integer, integer, text),
    pgq.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[], text[])
    to pgq_producer, pgq_admin;

grant execute on function
    pgq.claim(text, text[], integer, interval),
    pgq.release_lost_claims(text, bigint[]),
    pgq.heartbeat(bigint, uuid, interval),
    pgq.heartbeat_many(bigint[], uuid[], interval),
    pgq.complete(bigint, uuid),
    pgq.complete_many(bigint[], uuid[]),
    pgq.fail(bigint, uuid, text, boolean),
    pgq.once_begin(bigint, uuid, text),
    pgq.once_finish(bigint, uuid, text, jsonb),
    pgq.once_abort(bigint, uuid, text)
    to pgq_worker, pgq_admin;

grant execute on function
    pgq.configure_queue(text, integer, interval, interval, interval),
    pgq.pause(text),
    pgq.resume(text),
    pgq.cancel(bigint),
    pgq.retry(bigint),
    pgq.retry_dead(text),
    pgq.prune(interval, boolean),
    pgq.once_resolve(bigint, text, boolean, jsonb)
    to pgq_admin;

grant select on pgq.error_codes to pgq_producer, pgq_worker, pgq_admin;
grant select on pgq.queue_stats, pgq.dead_letter, pgq.job_errors, pgq.job_details to pgq_admin;

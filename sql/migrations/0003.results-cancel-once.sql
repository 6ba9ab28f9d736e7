-- 0003.results-cancel-once.sql
-- Job results, late completion from the holder of an expired lease, cooperative
-- cancellation and run-once requests that settle a lost answer.

-- What a succeeded job returned (complete's result), kept with the job until pruned.
alter table pgq.jobs add column if not exists result jsonb;

-- The lease token of the attempt whose expired lease claim failed (lease_token is
-- then NULL). While no attempt has claimed the job since, that holder may still
-- record how its attempt ended (late complete or fail).
alter table pgq.jobs add column if not exists lapsed_lease_token uuid;

-- The once_begin request that recorded the marker: a resend of the same request
-- (its answer lost with the connection) is told to run again, a new one is not.
alter table pgq.once_markers add column if not exists request_id uuid;

-- New signatures: complete and complete_many take results, once_begin a request id.
drop function if exists pgq.complete(bigint, uuid);
drop function if exists pgq.complete_many(bigint[], uuid[]);
drop function if exists pgq.once_begin(bigint, uuid, text);

-- pgtap_tests/04_plans.sql: plans that stay right as pgq.jobs grows. PL/pgSQL keeps a
-- statement's generic plan for the rest of the session, and a worker's session outlives
-- the table's size: a plan made while pgq.jobs held a few rows scans it whole once it
-- holds a backlog, until an ANALYZE replans it. Every pgq function therefore plans with
-- enable_seqscan off (its statements read rows by key, and each such table has the index)
-- and jit off (the cost a disabled scan adds would make statements look worth compiling).
-- A file of its own: the checks below hold for every function, the day it is added.
-- The harness holds wake_key 1000001, a live worker's (see 25_handoff.sql).
begin;
\ir _fixtures.psql
\set live_key 1000001
select plan(5);

select is_empty($$select p.oid::regprocedure::text from pg_catalog.pg_proc p
                   where p.pronamespace = 'pgq'::regnamespace
                     and not coalesce(p.proconfig @> array['enable_seqscan=off', 'jit=off'], false)$$,
    'every pgq function plans with enable_seqscan and jit off');

-- Sequential scans of pgq.jobs in this transaction so far.
create function pg_temp.jobs_seq_scans() returns bigint language sql
as $$ select pg_catalog.pg_stat_get_xact_numscans('pgq.jobs'::regclass) $$;

-- Generic plans, made now, while pgq.jobs holds the few rows of this file.
set local plan_cache_mode = force_generic_plan;
select pgq_test.fresh_queue('plans') as q \gset
select pgq_test.fresh_queue('plans-handed') as hq \gset
select pgq.enqueue_many(array_fill('p'::text, array[6]), queues => array_fill(:'q'::text, array[6]));
select l.wake_key as key, l.channel as chan from pgq.listen_for_handoffs() l \gset
select pg_temp.jobs_seq_scans() as scans_before \gset

-- A worker's calls: claim, heartbeat, run-once, fail, complete, give back, wait, hand-over.
select array_agg(c.id order by c.id) as ids, array_agg(c.lease_token order by c.id) as tokens
  from pgq.claim('w-plans', array[:'q'], 6) c \gset
select count(*) from pgq.heartbeat_many(:'ids'::bigint[], :'tokens'::uuid[], null);
select pgq.heartbeat((:'ids'::bigint[])[1], (:'tokens'::uuid[])[1]);
select count(*) from pgq.once_begin((:'ids'::bigint[])[1], (:'tokens'::uuid[])[1], 'effect');
select pgq.once_finish((:'ids'::bigint[])[1], (:'tokens'::uuid[])[1], 'effect', '{}');
select pgq.fail((:'ids'::bigint[])[2], (:'tokens'::uuid[])[2], 'boom', retry => true);
select pgq.complete((:'ids'::bigint[])[3], (:'tokens'::uuid[])[3]);
select count(*) from pgq.complete_many((:'ids'::bigint[])[4:5], (:'tokens'::uuid[])[4:5]);
select pgq.release_lost_claims('w-plans', (:'ids'::bigint[])[1:5]);
select count(*) from pgq.claim_and_wait('w-plans-handed', array[:'hq'], 1, null, :live_key, :'chan', 3);
select pgq.enqueue('handed', '{}', :'hq') as handed_id \gset
set constraints pgq.handoff_requests_at_commit immediate;
set constraints pgq.handoff_requests_at_commit deferred;
select pg_temp.jobs_seq_scans() as scans_after \gset

select is((select j.state from pgq.jobs j where j.id = (:'ids'::bigint[])[6]), 'available',
    '(release_lost_claims gave back the job not held)');
select is((select j.state from pgq.jobs j where j.id = :handed_id), 'running', '(the job was handed over)');
select is((select j.state from pgq.jobs j where j.id = (:'ids'::bigint[])[2]), 'available',
    '(the failed job waits for its retry)');
select is(:scans_after::bigint, :scans_before::bigint,
    'a worker''s calls from generic plans made on a small pgq.jobs scan it sequentially not once');

select * from finish();
rollback;

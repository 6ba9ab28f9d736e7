-- pgtap_tests/90_grants.sql: the read-only role pgq_viewer (dashboards with
-- --read-only, monitoring). It reads every operator view and calls job_status, and
-- nothing else: no producer, worker or operator function, no table.
begin;
\ir _fixtures.psql
select plan(31);

select has_role('pgq_viewer', 'role pgq_viewer exists');
select is_empty($$select r.rolname from pg_catalog.pg_roles r
                   where r.rolname = 'pgq_viewer'
                     and (r.rolcanlogin or r.rolsuper or r.rolcreaterole or r.rolcreatedb
                          or r.rolbypassrls)$$,
    'pgq_viewer is a plain group role (no login, no superuser, no create rights)');
select schema_privs_are('pgq', 'pgq_viewer', array['USAGE'],
    'pgq_viewer has USAGE (only) on schema pgq');

-- The catalog: exactly job_status among the functions, every view, no table.
select set_eq($$select p.proname::text from pg_catalog.pg_proc p
                 where p.pronamespace = 'pgq'::regnamespace
                   and has_function_privilege('pgq_viewer', p.oid, 'execute')$$,
    array['job_status'],
    'pgq_viewer can execute exactly job_status');
select is_empty($$select c.relname from pg_catalog.pg_class c
                   where c.relnamespace = 'pgq'::regnamespace and c.relkind in ('v', 'm')
                     and not has_table_privilege('pgq_viewer', c.oid, 'select')$$,
    'pgq_viewer can SELECT every pgq view');
select is_empty($$select c.relname from pg_catalog.pg_class c
                   where c.relnamespace = 'pgq'::regnamespace and c.relkind in ('v', 'm')
                     and has_table_privilege('pgq_viewer', c.oid, 'insert, update, delete, truncate')$$,
    'pgq_viewer cannot write through any pgq view');
select is_empty($$select c.relname from pg_catalog.pg_class c
                   where c.relnamespace = 'pgq'::regnamespace
                     and c.relkind in ('r', 'p', 'S')
                     and (has_table_privilege('pgq_viewer', c.oid,
                              'select, insert, update, delete, truncate, references, trigger')
                          or has_any_column_privilege('pgq_viewer', c.oid, 'select, insert, update, references'))$$,
    'pgq_viewer has no privilege on any pgq table or sequence');

-- Something to read: a dead job with an error, and an unknown run-once outcome.
select job_id as dead_id, lease_token as t from pgq_test.running_job('mail', 0) \gset
select pgq.fail(:dead_id, :'t', 'it broke') as s \gset
select job_id as once_id, lease_token as t, queue as q from pgq_test.running_job('mail', 1) \gset
select status from pgq.once_begin(:once_id, :'t', 'charge') \gset
select pgq.fail(:once_id, :'t', 'crashed mid-effect') as s \gset
select pgq_test.state_digest() as before \gset

-- Called for real under the role.
set local role pgq_viewer;
select lives_ok(format('select * from pgq.%I', v), format('pgq_viewer can read pgq.%s', v))
  from unnest(array['queue_stats', 'dead_letter', 'job_errors', 'job_details',
                    'once_outcomes', 'schedules', 'error_codes']) as v;
select is((select s.state from pgq.job_status(:dead_id) s), 'dead',
    'pgq_viewer can call job_status');
select is((select o.outcome from pgq.once_outcomes o where o.job_id = :once_id), 'unknown',
    'pgq_viewer sees the unknown run-once outcome');
select throws_ok(format('select * from pgq.%I', t), '42501', null,
    format('pgq_viewer cannot read table pgq.%s', t))
  from unnest(array['jobs', 'queues', 'attempt_errors', 'once_markers']) as t;
select throws_ok($$select pgq.enqueue('mail', '{}')$$, '42501', null,
    'pgq_viewer cannot enqueue');
select throws_ok($$select * from pgq.claim('viewer', array['default'], 1)$$, '42501', null,
    'pgq_viewer cannot claim');
select throws_ok(format('select pgq.complete(%s, %L)', :once_id, gen_random_uuid()), '42501', null,
    'pgq_viewer cannot complete');
select throws_ok(format('select pgq.retry(%s)', :dead_id), '42501', null,
    'pgq_viewer cannot retry');
select throws_ok(format('select pgq.cancel(%s)', :once_id), '42501', null,
    'pgq_viewer cannot cancel');
select throws_ok(format('select pgq.pause(%L)', :'q'), '42501', null,
    'pgq_viewer cannot pause');
select throws_ok(format('select pgq.once_resolve(%s, %L, true)', :once_id, 'charge'), '42501', null,
    'pgq_viewer cannot resolve a run-once outcome');
select throws_ok($$select pgq.prune(interval '1 day')$$, '42501', null,
    'pgq_viewer cannot prune');
select throws_ok($$select pgq.schedule('nightly', '@daily', 'mail')$$, '42501', null,
    'pgq_viewer cannot add a schedule');
select throws_ok($$update pgq.jobs set state = 'available'$$, '42501', null,
    'pgq_viewer cannot update pgq.jobs');
reset role;

select is(pgq_test.state_digest(), :'before', 'the refused calls changed nothing');

select * from finish();
rollback;

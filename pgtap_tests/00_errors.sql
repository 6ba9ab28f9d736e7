-- pgtap_tests/00_errors.sql: pgq.error_codes, the one place the project's SQLSTATEs
-- are documented. The catalog checks read every pgq function body, so a new code
-- raised anywhere in the engine fails here until it is documented.
begin;
\ir _fixtures.psql
select plan(24);

-- The view's shape.
select has_view('pgq', 'error_codes', 'pgq.error_codes exists');
select columns_are('pgq', 'error_codes', array['sqlstate', 'name', 'meaning'],
    'pgq.error_codes has the columns sqlstate, name, meaning');

-- Each code once, well formed, named and explained.
select is((select count(*) from pgq.error_codes),
          (select count(distinct e.sqlstate) from pgq.error_codes e),
    'each SQLSTATE is listed once');
select is((select count(*) from pgq.error_codes),
          (select count(distinct e.name) from pgq.error_codes e),
    'each name is used by one SQLSTATE only');
select is_empty($$select e.sqlstate from pgq.error_codes e where e.sqlstate !~ '^PQ[0-9]{3}$'$$,
    'every SQLSTATE is PQ followed by three digits');
select is_empty($$select e.sqlstate from pgq.error_codes e
                   where e.name is null or e.name !~ '^[a-z][a-z_]*[a-z]$'$$,
    'every code has a snake_case name');
select is_empty($$select e.sqlstate from pgq.error_codes e
                   where e.meaning is null or length(e.meaning) < 20$$,
    'every code has a meaning in words');

-- The documented codes, as clients (errors.py) rely on them.
select set_eq($$select e.sqlstate, e.name from pgq.error_codes e$$,
    $$values ('PQ001', 'invalid_argument'), ('PQ101', 'lease_lost'),
             ('PQ102', 'marker_not_begun'), ('PQ103', 'job_cancelled'),
             ('PQ201', 'job_not_found'),
             ('PQ202', 'job_state_conflict'), ('PQ203', 'queue_not_found'),
             ('PQ204', 'marker_not_found'), ('PQ210', 'schedule_not_found')$$,
    'pgq.error_codes lists exactly the documented codes and names');

-- The codes' classes: PQ0xx bad arguments, PQ1xx worker calls, PQ2xx operator calls.
select is_empty($$select e.sqlstate from pgq.error_codes e where substr(e.sqlstate, 3, 1) not in ('0', '1', '2')$$,
    'every code is in class PQ0xx, PQ1xx or PQ2xx');

-- Catalog checks over every function body in schema pgq.
create temp table raised_codes on commit drop as
select distinct p.proname::text as function_name, m[1] as sqlstate
  from pg_catalog.pg_proc p
 cross join lateral regexp_matches(p.prosrc, '''(PQ[^'']*)''', 'g') as m
 where p.pronamespace = 'pgq'::regnamespace;

select isnt_empty($$select * from raised_codes$$,
    'the catalog scan finds the codes the engine raises (the scan itself works)');
select is_empty($$select r.function_name, r.sqlstate from raised_codes r
                   where r.sqlstate !~ '^PQ[0-9]{3}$'$$,
    'every PQ code in a pgq function body is well formed');
select is_empty($$select r.function_name, r.sqlstate from raised_codes r
                   where r.sqlstate not in (select e.sqlstate from pgq.error_codes e)$$,
    'every PQ code raised by a pgq function is listed in pgq.error_codes');
select is_empty($$select e.sqlstate from pgq.error_codes e
                   where e.sqlstate not in (select r.sqlstate from raised_codes r)$$,
    'every listed code is raised by some pgq function (no stale entries)');
select is_empty($$select p.proname
                    from pg_catalog.pg_proc p
                   where p.pronamespace = 'pgq'::regnamespace
                     and (select count(*) from regexp_matches(p.prosrc, '\mraise\s+(exception|using)\M', 'gi'))
                      <> (select count(*) from regexp_matches(p.prosrc,
                              '\mraise\s+(exception\s+)?using\s+errcode\s*=\s*''PQ[0-9]{3}''', 'gi'))$$,
    'every raise in a pgq function uses a project SQLSTATE (none falls back to P0001)');

-- A refused worker call says why the caller no longer holds the job.
select job_id as exp_id, lease_token as exp_token from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:exp_id);
select throws_like(format('select pgq.heartbeat(%s, %L)', :exp_id, :'exp_token'),
    format('job %s: lease lost: its lease expired at %%', :exp_id),
    'an expired lease is named as the reason');
select job_id as held_id, lease_token as held_token, queue as held_queue
  from pgq_test.running_job('mail') \gset
select pgq_test.backdate_lease(:held_id);
select count(*) from pgq.claim('other-worker', array[:'held_queue'], 1) \gset
select pgq_test.make_due(:held_id);
select count(*) from pgq.claim('other-worker', array[:'held_queue'], 1) \gset
select throws_ok(format('select pgq.complete(%s, %L)', :held_id, :'held_token'), 'PQ101',
    format('job %s: lease lost: attempt 2 holds it now (worker other-worker)', :held_id),
    'a job another attempt holds is named as the reason');
select job_id as done_id, lease_token as done_token from pgq_test.running_job('mail') \gset
select pgq.cancel(:done_id);
select throws_ok(format('select pgq.fail(%s, %L, %L)', :done_id, :'done_token', 'x'), 'PQ101',
    format('job %s: lease lost: the job is cancelled', :done_id),
    'a finished job is named as the reason');
select throws_ok('select pgq.heartbeat(-1, gen_random_uuid())', 'PQ101',
    'job -1: lease lost: no such job (it may have been pruned)',
    'an unknown job is named as the reason');

-- Operator calls name the job and the states they apply to.
select throws_ok(format('select pgq.retry(%s)', :exp_id), 'PQ202',
    format('job %s is available: only dead or cancelled jobs can be retried', :exp_id),
    'retry of an available job names the states it applies to');
select throws_ok('select pgq.cancel(-1)', 'PQ201', 'job -1 not found',
    'cancel of an unknown job says it is not found');
select throws_ok(format('select pgq.cancel(%s)', :done_id), 'PQ202',
    format('job %s is cancelled: only available or running jobs can be cancelled', :done_id),
    'cancel of a cancelled job names the states it applies to');
select is((pgq_test.job(:done_id)).state, 'cancelled', 'the refused calls left the job cancelled');

-- Everyone who may call pgq may read what its errors mean.
set local role pgq_producer;
select is((select count(*) from pgq.error_codes), 9::bigint, 'pgq_producer can read pgq.error_codes');
reset role;
set local role pgq_worker;
select is((select count(*) from pgq.error_codes), 9::bigint, 'pgq_worker can read pgq.error_codes');
reset role;

select * from finish();
rollback;

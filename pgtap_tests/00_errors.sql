-- pgtap_tests/00_errors.sql: pgq.error_codes, the one place the project's SQLSTATEs
-- are documented. The catalog checks read every pgq function body, so a new code
-- raised anywhere in the engine fails here until it is documented.
begin;
\ir _fixtures.psql
select plan(16);

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
             ('PQ102', 'marker_not_begun'), ('PQ201', 'job_not_found'),
             ('PQ202', 'job_state_conflict'), ('PQ203', 'queue_not_found'),
             ('PQ204', 'marker_not_found')$$,
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

-- Everyone who may call pgq may read what its errors mean.
set local role pgq_producer;
select is((select count(*) from pgq.error_codes), 7::bigint, 'pgq_producer can read pgq.error_codes');
reset role;
set local role pgq_worker;
select is((select count(*) from pgq.error_codes), 7::bigint, 'pgq_worker can read pgq.error_codes');
reset role;

select * from finish();
rollback;

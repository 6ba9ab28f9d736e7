-- pgtap_tests/02_security.sql: catalog checks over everything in schema pgq, so a
-- new function, table or view is covered the day it is added: security definer with
-- a pinned search_path, nothing for PUBLIC, no rights on tables for any role,
-- internal functions for no role, and each role granted exactly its calls.
begin;
\ir _fixtures.psql
select plan(49);

-- Every pgq function, with its identity arguments, for the checks below.
create temp table pgq_functions on commit drop as
select p.oid, p.proname::text as name, p.oid::regprocedure::text as signature,
       p.prosecdef, p.proconfig, p.proacl, p.proname like '\_%' as internal
  from pg_catalog.pg_proc p
 where p.pronamespace = 'pgq'::regnamespace;

-- The calls each role is meant to have; pgq_admin has every non-internal one.
create temp table role_calls (role name, name text) on commit drop;
insert into role_calls
select 'pgq_producer', unnest(array['enqueue', 'enqueue_many', 'job_status'])
union all
select 'pgq_worker', unnest(array['claim', 'release_lost_claims', 'heartbeat', 'heartbeat_many', 'complete',
                                  'complete_many', 'fail', 'once_begin', 'once_finish',
                                  'once_abort', 'job_status', 'tick', 'listen_for_handoffs',
                                  'claim_and_wait', 'stop_waiting']);

select cmp_ok((select count(*) from pgq_functions where not internal), '>=', 19::bigint,
    'the catalog scan sees the pgq functions (the scan itself works)');

-- Definer rights and a pinned search_path.
select is_empty($$select signature from pgq_functions where not prosecdef$$,
    'every pgq function is security definer');
select is_empty($$select signature from pgq_functions
                   where proconfig is null
                      or not proconfig @> array['search_path=pg_catalog, pg_temp']$$,
    'every pgq function pins search_path = pg_catalog, pg_temp');
select is_empty($$select f.signature from pgq_functions f, unnest(f.proconfig) as c(setting)
                   where c.setting like 'search_path=%'
                     and c.setting <> 'search_path=pg_catalog, pg_temp'$$,
    'no pgq function sets any other search_path');

-- One signature per name.
select is_empty($$select name from pgq_functions group by name having count(*) > 1$$,
    'no pgq function is overloaded (one signature per name)');

-- Nothing for PUBLIC.
select is_empty($$select signature from pgq_functions
                   where has_function_privilege('public', oid, 'execute')$$,
    'no pgq function is executable by PUBLIC');
select is_empty($$select f.signature from pgq_functions f, aclexplode(f.proacl) as a
                   where a.grantee = 0$$,
    'no pgq function has an ACL entry for PUBLIC');
select is_empty($$select f.signature from pgq_functions f where f.proacl is null$$,
    'every pgq function has an explicit ACL (a NULL ACL means EXECUTE for PUBLIC)');
select is_empty($$select c.relname, a.privilege_type
                    from pg_catalog.pg_class c,
                         aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) as a
                   where c.relnamespace = 'pgq'::regnamespace
                     and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
                     and a.grantee = 0$$,
    'no table, view or sequence in pgq grants anything to PUBLIC');
select ok(not has_schema_privilege('public', 'pgq', 'usage')
          and not has_schema_privilege('public', 'pgq', 'create'),
    'PUBLIC has neither USAGE nor CREATE on schema pgq');

-- The roles.
select has_role('pgq_producer', 'role pgq_producer exists');
select has_role('pgq_worker', 'role pgq_worker exists');
select has_role('pgq_admin', 'role pgq_admin exists');
select is_empty($$select r.rolname from pg_catalog.pg_roles r
                   where r.rolname in ('pgq_producer', 'pgq_worker', 'pgq_admin')
                     and (r.rolcanlogin or r.rolsuper or r.rolcreaterole or r.rolcreatedb
                          or r.rolbypassrls)$$,
    'the pgq roles are plain group roles (no login, no superuser, no create rights)');
select schema_privs_are('pgq', 'pgq_producer', array['USAGE'],
    'pgq_producer has USAGE (only) on schema pgq');
select schema_privs_are('pgq', 'pgq_worker', array['USAGE'],
    'pgq_worker has USAGE (only) on schema pgq');
select schema_privs_are('pgq', 'pgq_admin', array['USAGE'],
    'pgq_admin has USAGE (only) on schema pgq');

-- No role has any right on a table or sequence; they go through the functions.
select has_table('pgq', 'jobs', 'table pgq.jobs exists');
select has_table('pgq', 'queues', 'table pgq.queues exists');
select has_table('pgq', 'attempt_errors', 'table pgq.attempt_errors exists');
select has_table('pgq', 'once_markers', 'table pgq.once_markers exists');
select is_empty($$select r.role, c.relname
                    from pg_catalog.pg_class c,
                         unnest(array['pgq_producer', 'pgq_worker', 'pgq_admin']) as r(role)
                   where c.relnamespace = 'pgq'::regnamespace
                     and c.relkind in ('r', 'p')
                     and (has_table_privilege(r.role, c.oid,
                              'select, insert, update, delete, truncate, references, trigger')
                          or has_any_column_privilege(r.role, c.oid, 'select, insert, update, references'))$$,
    'no pgq role has any privilege on a pgq table');
select is_empty($$select r.role, c.relname
                    from pg_catalog.pg_class c,
                         unnest(array['pgq_producer', 'pgq_worker', 'pgq_admin']) as r(role)
                   where c.relnamespace = 'pgq'::regnamespace
                     and c.relkind = 'S'
                     and has_sequence_privilege(r.role, c.oid, 'usage, select, update')$$,
    'no pgq role has any privilege on a pgq sequence');

-- Internal functions are for no role.
select isnt_empty($$select signature from pgq_functions where internal$$,
    'the catalog scan sees the internal pgq._ functions');
select is_empty($$select r.role, f.signature
                    from pgq_functions f,
                         unnest(array['pgq_producer', 'pgq_worker', 'pgq_admin']) as r(role)
                   where f.internal
                     and has_function_privilege(r.role, f.oid, 'execute')$$,
    'no pgq._ internal function is executable by any pgq role');

-- Each role's calls, exactly.
select set_eq($$select name from pgq_functions
                 where has_function_privilege('pgq_producer', oid, 'execute')$$,
    $$select name from role_calls where role = 'pgq_producer'$$,
    'pgq_producer can execute exactly enqueue, enqueue_many and job_status');
select set_eq($$select name from pgq_functions
                 where has_function_privilege('pgq_worker', oid, 'execute')$$,
    $$select name from role_calls where role = 'pgq_worker'$$,
    'pgq_worker can execute exactly claim and the worker calls');
select is_empty($$select signature from pgq_functions
                   where not internal and not has_function_privilege('pgq_admin', oid, 'execute')$$,
    'pgq_admin can execute every non-internal pgq function');
select is_empty($$select name from role_calls
                   where name not in (select f.name from pgq_functions f where not f.internal)$$,
    'every call granted above exists as a pgq function');
select ok(not has_function_privilege('pgq_producer', 'pgq.claim(text, text[], integer, interval)', 'execute'),
    'pgq_producer cannot execute claim');
select ok(not has_function_privilege('pgq_worker', 'pgq.enqueue(text, jsonb, text, timestamptz, integer, integer, text, text)', 'execute')
          and not has_function_privilege('pgq_worker', 'pgq.enqueue_many(text[], jsonb[], text[], timestamptz[], integer[], integer[], text[], text[])', 'execute'),
    'pgq_worker cannot execute enqueue or enqueue_many');
select ok(not has_function_privilege('pgq_worker', 'pgq.retry(bigint)', 'execute')
          and not has_function_privilege('pgq_worker', 'pgq.retry_dead(text, integer)', 'execute'),
    'pgq_worker cannot execute retry or retry_dead');
select is_empty($$select signature from pgq_functions
                   where name = 'prune'
                     and (has_function_privilege('pgq_worker', oid, 'execute')
                          or has_function_privilege('pgq_producer', oid, 'execute'))$$,
    'neither pgq_producer nor pgq_worker can execute prune');

-- Views: error_codes for everyone, the operator views (payloads, errors) for pgq_admin.
select is_empty($$select c.relname from pg_catalog.pg_class c
                   where c.relnamespace = 'pgq'::regnamespace and c.relkind in ('v', 'm')
                     and not has_table_privilege('pgq_admin', c.oid, 'select')$$,
    'pgq_admin can SELECT every pgq view');
select set_eq($$select c.relname::text from pg_catalog.pg_class c
                 where c.relnamespace = 'pgq'::regnamespace and c.relkind in ('v', 'm')
                   and (has_table_privilege('pgq_producer', c.oid, 'select')
                        or has_table_privilege('pgq_worker', c.oid, 'select'))$$,
    array['error_codes'],
    'pgq_producer and pgq_worker can SELECT only pgq.error_codes');
select is_empty($$select r.role, c.relname
                    from pg_catalog.pg_class c,
                         unnest(array['pgq_producer', 'pgq_worker', 'pgq_admin']) as r(role)
                   where c.relnamespace = 'pgq'::regnamespace and c.relkind in ('v', 'm')
                     and has_table_privilege(r.role, c.oid, 'insert, update, delete, truncate')$$,
    'no pgq role can write through a view');
select is_empty($$select c.relname from pg_catalog.pg_class c
                   where c.relnamespace = 'pgq'::regnamespace and c.relkind = 'v'
                     and c.reloptions @> array['security_invoker=true']$$,
    'no pgq view is security_invoker (the roles cannot read the tables beneath)');

-- The same rules, called for real under each role.
set local role pgq_admin;
select lives_ok($$select * from pgq.queue_stats$$, 'pgq_admin can read pgq.queue_stats');
select lives_ok($$select * from pgq.dead_letter$$, 'pgq_admin can read pgq.dead_letter');
select lives_ok($$select * from pgq.job_errors$$, 'pgq_admin can read pgq.job_errors');
select lives_ok($$select * from pgq.job_details$$, 'pgq_admin can read pgq.job_details');
select throws_ok($$select * from pgq.jobs$$, '42501', null, 'pgq_admin cannot read pgq.jobs directly');
select throws_ok($$insert into pgq.queues (queue) values ('x')$$, '42501', null,
    'pgq_admin cannot write pgq.queues directly');
select throws_ok($$select pgq._backoff(1, interval '1 second', interval '1 hour')$$, '42501', null,
    'pgq_admin cannot call an internal function');
reset role;
set local role pgq_producer;
select throws_ok($$select * from pgq.job_details$$, '42501', null,
    'pgq_producer cannot read pgq.job_details');
select throws_ok($$select * from pgq.attempt_errors$$, '42501', null,
    'pgq_producer cannot read pgq.attempt_errors directly');
reset role;
set local role pgq_worker;
select throws_ok($$select * from pgq.dead_letter$$, '42501', null,
    'pgq_worker cannot read pgq.dead_letter');
select throws_ok($$update pgq.jobs set state = 'succeeded'$$, '42501', null,
    'pgq_worker cannot update pgq.jobs directly');
select throws_ok($$select * from pgq.once_markers$$, '42501', null,
    'pgq_worker cannot read pgq.once_markers directly');
reset role;

select * from finish();
rollback;

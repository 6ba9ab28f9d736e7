-- 0002.roles.sql
-- Group roles. Roles are cluster-wide, so another database (or a concurrent
-- migration) may have created them already.
do $$
declare
    v_role text;
begin
    foreach v_role in array array['pgq_producer', 'pgq_worker', 'pgq_admin'] loop
        if not exists (select from pg_catalog.pg_roles r where r.rolname = v_role) then
            begin
                execute format('create role %I nologin', v_role);
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
end;
$$;

grant usage on schema pgq to pgq_producer, pgq_worker, pgq_admin;


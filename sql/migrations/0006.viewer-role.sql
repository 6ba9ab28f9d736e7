-- 0006.viewer-role.sql
-- A read-only group role for dashboards and monitoring: it reads the operator views
-- and calls pgq.job_status, and can change nothing. Roles are cluster-wide, so another
-- database (or a concurrent migration) may have created it already.
do $$
begin
    if not exists (select from pg_catalog.pg_roles r where r.rolname = 'pgq_viewer') then
        begin
            create role pgq_viewer nologin;
        exception when duplicate_object or unique_violation then
            null;
        end;
    end if;
end;
$$;

grant usage on schema pgq to pgq_viewer;

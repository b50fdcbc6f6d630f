-- sql/87_roles.sql: the roles applications and stewards connect as.

-- Why ROLE is not a restricted role, one reason per row; none when every hold and
-- restriction applies to it: it is no superuser, has neither BYPASSRLS nor REPLICATION,
-- is no steward, and neither owns a protected table nor belongs to a role that does
-- (owners bypass row-level security). pyctl roles check and doctor use it.
create or replace function privacy.role_problems(p_role name)
    returns table (problem text)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select x.problem from pg_catalog.pg_roles r
     cross join lateral (values
        (case when r.rolsuper then 'is a superuser: bypasses row-level security and can disable triggers' end),
        (case when r.rolbypassrls then 'has BYPASSRLS: sees restricted rows' end),
        (case when r.rolreplication then 'has REPLICATION: can stream every row' end),
        (case when pg_catalog.pg_has_role(r.oid, privacy.steward_role(), 'MEMBER')
              then 'is a member of the steward role ' || privacy.steward_role() end),
        ((select 'owns or acts as the owner of protected table(s) ' || pg_catalog.string_agg(distinct c.oid::regclass::text, ', ')
                 || ': owners bypass row-level security'
            from privacy.protected_tables p join pg_catalog.pg_class c on c.oid = p.relid
           where pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE')))) x(problem)
     where r.rolname = p_role and x.problem is not null
$$;

-- Creates ROLE, a login role for an application, subject to every hold and
-- restriction: no superuser, BYPASSRLS, REPLICATION, CREATEROLE or CREATEDB; SELECT,
-- INSERT, UPDATE, DELETE on the tables and USAGE on the sequences of SCHEMAS. The
-- password arrives as a SCRAM-SHA-256 verifier computed by the client, never in clear,
-- so no statement the server logs holds it. The toolkit's own schema and the system
-- schemas are refused. (The toolkit's owner only: creating roles needs CREATEROLE.)
create or replace function privacy.create_app_role(p_role name, p_password_verifier text, p_schemas name[])
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_schema name;
begin
    perform privacy.require_text(p_role, 'a role name is required');
    if exists (select 1 from pg_catalog.pg_roles r where r.rolname = p_role) then
        perform privacy.fail(pg_catalog.format('role %s already exists (check it with: pyctl roles check %s)', p_role, p_role));
    end if;
    if p_password_verifier is null
       or p_password_verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*:[A-Za-z0-9+/]+=*$' then
        perform privacy.fail('the password must be given as a SCRAM-SHA-256 verifier (pyctl computes it), never in clear');
    end if;
    if p_schemas is null or pg_catalog.cardinality(p_schemas) = 0 then
        perform privacy.fail('name at least one schema whose tables the application uses');
    end if;
    foreach v_schema in array p_schemas loop
        if v_schema = 'privacy' or v_schema in ('pg_catalog', 'information_schema') or v_schema ~ '^pg_' then
            perform privacy.fail(pg_catalog.format('schema %s is not the application''s: its tables are the toolkit''s or the system''s', v_schema));
        end if;
        if not exists (select 1 from pg_catalog.pg_namespace n where n.nspname = v_schema) then
            perform privacy.fail(pg_catalog.format('schema %s does not exist', v_schema));
        end if;
    end loop;
    execute pg_catalog.format('create role %I login password %L nosuperuser nobypassrls noreplication nocreaterole nocreatedb',
                              p_role, p_password_verifier);
    foreach v_schema in array p_schemas loop
        execute pg_catalog.format('grant usage on schema %I to %I', v_schema, p_role);
        execute pg_catalog.format('grant select, insert, update, delete on all tables in schema %I to %I', v_schema, p_role);
        execute pg_catalog.format('grant usage, select on all sequences in schema %I to %I', v_schema, p_role);
    end loop;
end;
$$;

-- Makes ROLE a steward. (The toolkit's owner only: it administers the steward role.)
create or replace function privacy.add_steward(p_role name)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = p_role) then
        perform privacy.fail(pg_catalog.format('role %s does not exist', p_role));
    end if;
    execute pg_catalog.format('grant %I to %I', privacy.steward_role(), p_role);
end;
$$;

-- sql/50_partitions.sql: partitions and children created, attached or detached later.
--
-- Row triggers of a partitioned table are cloned to every partition by PostgreSQL,
-- but policies, row-level security and TRUNCATE triggers are not, and a query that
-- names a partition directly skips the parent's policies. An event trigger (only a
-- superuser can create one) protects every new partition or child as its parent is,
-- and refuses to detach a partition that holds rows under a legal hold. Without it,
-- status reports the new partition as missing enforcement and install repairs it.

-- Runs as its (superuser) owner: it must protect tables that whoever ran the DDL
-- creates, and read registers that role may not read.
create or replace function privacy.on_ddl_command_end()
    returns event_trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    s record;
    p privacy.protected_tables;
    v_rel oid;
    v_held boolean;
begin
    -- A table that carries our policy but no longer descends from a protected table
    -- was detached (or NO INHERIT): it must not take held rows out of enforcement.
    for v_rel in select pol.polrelid from pg_catalog.pg_policy pol where pol.polname = 'privacy_hide_restricted' loop
        if (privacy.protected_table_of(v_rel)).id is null then
            execute pg_catalog.format('select exists (select 1 from %s where privacy_mark & 1 <> 0)', v_rel::regclass) into v_held;
            if v_held then
                perform privacy.refuse(v_rel::regclass::text, 'DETACH', 1::smallint,
                    (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(r.subject_type, r.subject_key))
                       from privacy.processing_restrictions r where r.kind = 'legal_hold' and r.released_at is null),
                    coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user)::name);
            end if;
        end if;
    end loop;
    if pg_catalog.current_setting('privacy.in_ddl_hook', true) = 'on' then
        return;  -- the toolkit's own DDL
    end if;
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'on', true);
    for s in select * from privacy.enforcement_status() x where x.relation <> x.protected_table and x.state = 'missing' loop
        perform privacy.enforce(pg_catalog.to_regclass(s.protected_table));
        p := privacy.protected_table_of(pg_catalog.to_regclass(s.relation));
        perform privacy.remark_table(p.id, true, pg_catalog.to_regclass(s.relation));
    end loop;
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'off', true);
end;
$$;

do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = current_user and rolsuper) then
        drop event trigger if exists privacy_protect_new_partitions;
        create event trigger privacy_protect_new_partitions on ddl_command_end
            when tag in ('CREATE TABLE', 'ALTER TABLE')
            execute function privacy.on_ddl_command_end();
        comment on event trigger privacy_protect_new_partitions is 'Protects partitions and children created or attached later; refuses to detach held rows.';
    end if;
end;
$$;

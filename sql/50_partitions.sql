-- sql/50_partitions.sql: partitions and children created, attached or detached later.
--
-- Row triggers of a partitioned table are cloned to every partition by PostgreSQL,
-- but policies, row-level security and TRUNCATE triggers are not, and a query that
-- names a partition directly skips the parent's policies. An event trigger (only a
-- superuser can create one) protects every new partition or child as its parent is,
-- and refuses to detach a partition that holds rows under a legal hold. Without it,
-- status reports the new partition as missing enforcement and install repairs it.

-- Refuses DDL that rewrote or removed held data: after an ALTER TABLE of a protected
-- table (or of a partition or child of one), every active legal hold on its subject
-- type must still find its rows as they were (sql/75_digests.sql). A type change that
-- keeps values, or an added column, passes; ALTER COLUMN ... TYPE ... USING that
-- changes values, DROP COLUMN or a rename does not.
create or replace function privacy.check_held_data_after_ddl(p_relid oid)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables := privacy.protected_table_of(p_relid);
    h record;
    v record;
begin
    if p.id is null then
        return;
    end if;
    for h in select r.id from privacy.processing_restrictions r
              where r.kind = 'legal_hold' and r.released_at is null and r.subject_type = p.subject_type
                and exists (select 1 from privacy.hold_digests d where d.hold_id = r.id) loop
        for v in select * from privacy.verify_hold(h.id) x
                  where x.table_name = privacy.qualified(p.table_schema, p.table_name) and x.status = 'violation' loop
            perform privacy.refuse(p_relid::regclass::text, 'ALTER TABLE', 1::smallint,
                (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(r.subject_type, r.subject_key))
                   from privacy.processing_restrictions r where r.id = h.id),
                privacy.session_role());
        end loop;
    end loop;
end;
$$;

-- Refuses DROP of a protected table, partition or child while legal holds could have
-- rows in it: of its subject type where the registry knows it, of any type otherwise
-- (a dropped partition no longer says whose it was).
create or replace function privacy.on_sql_drop()
    returns event_trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    d record;
    v_type text;
    v_holds bigint;
begin
    for d in select * from pg_catalog.pg_event_trigger_dropped_objects() x
              where x.object_type = 'table' and not x.is_temporary and x.schema_name <> 'privacy' loop
        select pt.subject_type into v_type from privacy.protected_tables pt
         where (pt.table_schema, pt.table_name) = (d.schema_name, d.object_name);
        if v_type is null and not exists (
            select 1 from pg_catalog.pg_event_trigger_dropped_objects() o
             where o.object_type = 'policy' and o.object_identity = 'privacy_hide_restricted on ' || d.object_identity) then
            continue;  -- not protected
        end if;
        select pg_catalog.count(*) into v_holds from privacy.processing_restrictions r
         where r.kind = 'legal_hold' and r.released_at is null and (v_type is null or r.subject_type = v_type);
        if v_holds > 0 then
            raise exception using errcode = 'PV001',
                message = pg_catalog.format('privacy: DROP TABLE on %s refused: %s legal hold(s) active on %s', d.object_identity, v_holds,
                                            coalesce('subject type ' || v_type, 'this database')),
                hint = 'A legal hold preserves the data: release the holds first (pyctl hold list).';
        end if;
    end loop;
end;
$$;

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
                    privacy.session_role());
            end if;
        end if;
    end loop;
    -- DDL that rewrote held data (always checked: the toolkit's own DDL changes none).
    for v_rel in select distinct c.objid from pg_catalog.pg_event_trigger_ddl_commands() c
                  where c.classid = 'pg_catalog.pg_class'::regclass and c.command_tag = 'ALTER TABLE' and c.objid is not null loop
        perform privacy.check_held_data_after_ddl(v_rel);
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
    -- A BEFORE UPDATE trigger of the application on a protected table: the enforcement
    -- must then watch every UPDATE, not only those naming the path (sql/20_enforce.sql).
    if exists (select 1 from pg_catalog.pg_event_trigger_ddl_commands() c where c.command_tag = 'CREATE TRIGGER') then
        for s in select * from privacy.enforcement_status() x where x.state = 'outdated' and x.detail like '%BEFORE UPDATE trigger%' loop
            perform privacy.enforce(pg_catalog.to_regclass(s.protected_table));
        end loop;
    end if;
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'off', true);
end;
$$;

do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = current_user and rolsuper) then
        drop event trigger if exists privacy_protect_new_partitions;
        create event trigger privacy_protect_new_partitions on ddl_command_end
            when tag in ('CREATE TABLE', 'ALTER TABLE', 'CREATE TRIGGER')
            execute function privacy.on_ddl_command_end();
        comment on event trigger privacy_protect_new_partitions is 'Protects partitions and children created or attached later; refuses to detach held rows or to rewrite held data; regenerates a table''s enforcement when it gets a BEFORE UPDATE trigger of its own.';
        drop event trigger if exists privacy_refuse_dropping_held_data;
        create event trigger privacy_refuse_dropping_held_data on sql_drop
            execute function privacy.on_sql_drop();
        comment on event trigger privacy_refuse_dropping_held_data is 'Refuses DROP of protected tables, partitions and children while legal holds are active.';
    end if;
end;
$$;

-- sql/50_partitions.sql: healing. Renames, partitions and children created or
-- attached later, generated objects dropped or switched off: privacy.heal() brings the
-- registry and the enforcement back in line, and marks the rows a new partition
-- brought. Every pyctl command that connects as the owner or a steward, and every
-- placement and release, runs it first, in its own transaction; where a superuser
-- installed the toolkit, an event trigger runs it after every DDL command as well, and
-- refuses DDL that would take held data out of enforcement.

-- A digest of everything heal() looks after: the protected tables' names, path
-- columns, partitions and children, and every trigger, policy, view and generated
-- function of theirs. Unchanged since the last heal: nothing to do (this is what a
-- placement pays when nothing changed: one catalog query).
create or replace function privacy.enforcement_fingerprint()
    returns text
    stable
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language sql
as $$
    -- (Every placement runs it, through heal(): the partitions of tables that have some
    -- only, and each relation by its OID, not a hash of all of pg_class.)
    with rels as (
        select p.id, p.relid as root, p.relid from privacy.protected_tables p
        union all
        select p.id, p.relid, d.relid from privacy.protected_tables p
          join pg_catalog.pg_class pc on pc.oid = p.relid and pc.relhassubclass
         cross join lateral privacy.descendants(p.relid) d
    )
    select pg_catalog.md5(pg_catalog.concat_ws('|', privacy.toolkit_version(), privacy.steward_role(),
        (select pg_catalog.string_agg(pg_catalog.concat_ws(':', r.id, r.relid, n.nspname, c.relname, c.relrowsecurity,
                    (select pg_catalog.string_agg(a.attname::text || a.attnum::text || a.atttypid::text, ',' order by a.attnum)
                       from pg_catalog.pg_attribute a where a.attrelid = r.relid and a.attnum > 0 and not a.attisdropped),
                    (select pg_catalog.string_agg(t.tgname::text || t.tgenabled::text || t.tgparentid::text || t.xmin::text, ',' order by t.tgname, t.oid)
                       from pg_catalog.pg_trigger t where t.tgrelid = r.relid and not t.tgisinternal),
                    (select pg_catalog.string_agg(pol.polname::text || pol.xmin::text, ',' order by pol.polname)
                       from pg_catalog.pg_policy pol where pol.polrelid = r.relid)), ';' order by r.id, r.relid)
           from rels r cross join lateral (select x.* from pg_catalog.pg_class x where x.oid = r.relid offset 0) c
           join pg_catalog.pg_namespace n on n.oid = c.relnamespace),
        (select pg_catalog.string_agg(pr.oid::text || pr.xmin::text, ',' order by pr.oid)
           from pg_catalog.pg_proc pr where pr.pronamespace = 'privacy'::regnamespace and pr.proname ~ '^pt_[0-9]+_'),
        (select pg_catalog.string_agg(c.oid::text || c.xmin::text, ',' order by c.oid)
           from pg_catalog.pg_class c where c.relnamespace = 'privacy'::regnamespace and c.relname ~ '^pt_[0-9]+_v$'),
        (select pg_catalog.string_agg(p.id || ':' || coalesce(p.enforcement, ''), ',' order by p.id) from privacy.protected_tables p)))
$$;

-- Records what heal() compares against: called where the toolkit itself has just
-- changed the enforcement (protect, unprotect, regeneration), so that a database as the
-- toolkit left it needs no healing.
create or replace function privacy.remember_fingerprint()
    returns void
    volatile
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language sql
as $$
    -- With it, the statements placement marks each table with (privacy.marking_sql), made
    -- for the catalog as it is now.
    with fingerprint as (select privacy.enforcement_fingerprint() as value),
    statements as (
        update privacy.protected_tables p set marking_sql = privacy.marking_sql(p.id), marking_sql_for = f.value
          from fingerprint f
         where p.marking_sql_for is distinct from f.value or p.marking_sql is distinct from privacy.marking_sql(p.id)
    )
    insert into privacy.settings (name, value) select 'enforcement_fingerprint', f.value from fingerprint f
    on conflict (name) do update set value = excluded.value where privacy.settings.value is distinct from excluded.value
$$;

-- Brings the registry and every protected table's enforcement in line with the
-- catalog: follows renames, regenerates what is missing, disabled, altered or outdated
-- (a partition or child created or attached since included) and marks the rows such a
-- partition brought. Returns what it did. Cheap when nothing changed.
-- (Definer: stewards run it before placing or releasing; it changes nothing but what
-- the toolkit generates, back to what its plan says.)
create or replace function privacy.heal()
    returns jsonb
    volatile
    security definer
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language plpgsql
as $$
declare
    v_count integer;
    v_hook text;
begin
    -- Every placement, release and pyctl command that writes starts here: on a Citus
    -- coordinator, one connection per worker for the rest of the transaction (sql/89_citus.sql).
    perform privacy.citus_session();
    perform privacy.citus_collect_corrections();  -- what Citus shards wrote down, into the ledger (sql/89_citus.sql)
    if privacy.enforcement_fingerprint() is not distinct from (select s.value from privacy.settings s where s.name = 'enforcement_fingerprint')
       or pg_catalog.pg_is_in_recovery() then
        return pg_catalog.jsonb_build_object('changed', false);
    end if;
    v_hook := pg_catalog.current_setting('privacy.in_ddl_hook', true);
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'on', true);
    v_count := privacy.refresh_enforcement();  -- (which remembers the fingerprint)
    perform pg_catalog.set_config('privacy.in_ddl_hook', coalesce(v_hook, 'off'), true);
    return pg_catalog.jsonb_build_object('changed', true, 'tables_regenerated', v_count);
end;
$$;

-- Refuses DDL that rewrote or removed held data: after an ALTER TABLE of a protected
-- table (or of a partition or child of one), every active legal hold on its subject
-- type must still find its rows as they were (sql/75_digests.sql). A type change that
-- keeps values, or an added column, passes; ALTER COLUMN ... TYPE ... USING that
-- changes values, or DROP COLUMN, does not.
create or replace function privacy.check_held_data_after_ddl(p_relid oid)
    returns void
    volatile
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
    for h in select r.id, r.subject_type, r.subject_key from privacy.processing_restrictions r
              where r.kind = 'legal_hold' and r.released_at is null and r.subject_type = p.subject_type
                and exists (select 1 from privacy.hold_digests d where d.hold_id = r.id) loop
        for v in select * from privacy.verify_hold(h.id) x
                  where x.table_name = privacy.relation_of(p)::text and x.status = 'violation' loop
            perform privacy.refuse(p_relid, 'ALTER TABLE', 1::smallint,
                pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(h.subject_type, h.subject_key)));
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
        select pt.subject_type into v_type from privacy.protected_tables pt where pt.relid = d.objid;
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
    v_rel oid;
    v_held boolean;
begin
    if pg_catalog.current_setting('privacy.in_ddl_hook', true) = 'on' then
        return;  -- the toolkit's own DDL (it changes no held value)
    end if;
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'on', true);
    -- A table that carries our policy but no longer descends from a protected table
    -- was detached (or NO INHERIT): it must not take held rows out of enforcement.
    for v_rel in select pol.polrelid from pg_catalog.pg_policy pol where pol.polname = 'privacy_hide_restricted' loop
        if (privacy.protected_table_of(v_rel)).id is null then
            execute pg_catalog.format('select exists (select 1 from %s where privacy_mark & 1 <> 0)', v_rel::regclass) into v_held;
            if v_held then
                perform privacy.refuse(v_rel, 'DETACH', 1::smallint,
                    (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(r.subject_type, r.subject_key))
                       from privacy.processing_restrictions r where r.kind = 'legal_hold' and r.released_at is null));
            end if;
        end if;
    end loop;
    -- DDL that rewrote held data.
    for v_rel in select distinct c.objid from pg_catalog.pg_event_trigger_ddl_commands() c
                  where c.classid = 'pg_catalog.pg_class'::regclass and c.command_tag = 'ALTER TABLE' and c.objid is not null loop
        perform privacy.check_held_data_after_ddl(v_rel);
    end loop;
    perform privacy.heal();
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
        comment on event trigger privacy_protect_new_partitions is 'Heals after DDL: protects partitions and children created or attached later, follows renames, regenerates a table''s enforcement when it gets a BEFORE UPDATE trigger of its own; refuses to detach held rows or to rewrite held data.';
        drop event trigger if exists privacy_refuse_dropping_held_data;
        create event trigger privacy_refuse_dropping_held_data on sql_drop
            execute function privacy.on_sql_drop();
        comment on event trigger privacy_refuse_dropping_held_data is 'Refuses DROP of protected tables, partitions and children while legal holds are active.';
    end if;
end;
$$;

-- sql/88_install.sql: the last step of every install and upgrade.

-- Install, last step (pyctl install and yoyo's post-apply.py both run it, after every
-- file of sql/ was loaded): records where the primary is and what this database is,
-- regenerates every protected table's enforcement, and enters the install in the
-- ledger. Returns what it did.
create or replace function privacy.finish_install(p_migrations jsonb)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_regenerated integer;
begin
    -- Where the primary is, so a follower can say so when it refuses a write.
    insert into privacy.settings (name, value)
    select 'primary_address', pg_catalog.host(pg_catalog.inet_server_addr()) || ':' || pg_catalog.inet_server_port()
     where pg_catalog.inet_server_addr() is not null
    on conflict (name) do update set value = excluded.value;
    -- What this database is, so a restored dump or a fork can tell it is a copy.
    insert into privacy.settings (name, value) values ('database_identity', privacy.database_identity())
    on conflict (name) do nothing;
    perform privacy.citus_setup();  -- on a Citus coordinator: subject_marks on every node (sql/89_citus.sql)
    v_regenerated := privacy.refresh_enforcement();  -- (which records what heal() compares against)
    perform privacy.ledger_append('toolkit_installed', null, null, null,
        pg_catalog.jsonb_build_object('version', privacy.toolkit_version(), 'migrations', coalesce(p_migrations, '[]'::jsonb)));
    return pg_catalog.jsonb_build_object('version', privacy.toolkit_version(), 'steward_role', privacy.steward_role(),
                                         'tables_regenerated', v_regenerated);
end;
$$;

-- Uninstall: removes everything the toolkit made (the generated triggers, policies,
-- marker columns and row-level security it switched on, its event triggers, schema
-- privacy) and leaves user data as it was. Refused while any hold or restriction is
-- active: removing a hold's enforcement destroys preservation. Owner-only (not a
-- definer: it runs with the rights of its caller, who must own what it drops).
-- Returns the tables it stopped protecting. pyctl uninstall calls it.
create or replace function privacy.uninstall()
    returns text[]
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_holds bigint;
    v_restrictions bigint;
    v_tables text[];
begin
    select count(*) filter (where kind = 'legal_hold'), count(*) filter (where kind = 'restriction')
      into v_holds, v_restrictions
      from privacy.processing_restrictions where released_at is null;
    if v_holds > 0 then
        perform privacy.fail(pg_catalog.format('uninstall refused: %s legal hold(s) active; removing their '
            'enforcement would destroy preservation. Release them first (pyctl hold list)', v_holds));
    end if;
    if v_restrictions > 0 then
        perform privacy.fail(pg_catalog.format('uninstall refused: %s processing restriction(s) active; their data '
            'would become visible to applications. Release them first (pyctl restrict list)', v_restrictions));
    end if;
    -- The event triggers go first: they would heal (re-enforce) what is being removed.
    drop event trigger if exists privacy_protect_new_partitions;
    drop event trigger if exists privacy_refuse_dropping_held_data;
    perform privacy.heal_registry();
    select coalesce(pg_catalog.array_agg(privacy.qualified(table_schema, table_name) order by id desc), '{}')
      into v_tables from privacy.protected_tables;
    perform privacy.drop_enforcement(p, true) from privacy.protected_tables p order by p.id desc;
    -- A DBA who ran `yoyo apply` has yoyo's bookkeeping in the default schema instead.
    if pg_catalog.to_regclass('public._yoyo_migration') is not null then
        execute 'delete from public._yoyo_migration where migration_id like ''privacy-%''';
    end if;
    drop schema privacy cascade;
    return v_tables;
end;
$$;

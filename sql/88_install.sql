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
    v_regenerated := privacy.refresh_enforcement();  -- (which records what heal() compares against)
    perform privacy.ledger_append('toolkit_installed', null, null, null,
        pg_catalog.jsonb_build_object('version', privacy.toolkit_version(), 'migrations', coalesce(p_migrations, '[]'::jsonb)));
    return pg_catalog.jsonb_build_object('version', privacy.toolkit_version(), 'steward_role', privacy.steward_role(),
                                         'tables_regenerated', v_regenerated);
end;
$$;

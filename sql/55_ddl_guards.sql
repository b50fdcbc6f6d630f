-- sql/55_ddl_guards.sql: DROP and destructive ALTER of held data, refused without event triggers.
--
-- A non-superuser owner (the managed-platform install) has no event triggers, but
-- PostgreSQL itself refuses to drop a table, drop a column or change a column's type
-- while a view depends on it. So, while a relation (a protected table, one of its
-- partitions or inheritance children) holds rows under an active legal hold, a view in
-- schema privacy selects every column of it; its name names the hold:
--
--   ERROR:  cannot drop table orders_2025 because other objects depend on it
--   DETAIL: view privacy."legal hold 2026-CV-118 (16423)" depends on table orders_2025
--
-- Where the superuser install's event triggers are on, they refuse such DDL themselves,
-- more precisely (by what it changes), and no view is made.
-- The views are reconciled when a hold is placed or released and when enforcement is
-- refreshed (after DDL: heal). DROP ... CASCADE drops the view with the table: that is
-- detected (pyctl hold verify, doctor), and refused outright only by the superuser
-- install's event trigger. Nobody but the toolkit's owner may read the views.

-- The guard views that exist: the relation each guards.
create or replace function privacy.hold_guards()
    returns table (view_name name, guarded oid)
    stable
    set search_path = ''
    language sql
as $$
    select distinct c.relname, d.refobjid
      from pg_catalog.pg_class c
      join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_rewrite'::regclass
                                 and d.objid = (select r.oid from pg_catalog.pg_rewrite r where r.ev_class = c.oid)
                                 and d.refclassid = 'pg_catalog.pg_class'::regclass and d.refobjid <> c.oid
     where c.relnamespace = 'privacy'::regnamespace and c.relkind = 'v'
       and pg_catalog.obj_description(c.oid, 'pg_class') like 'privacy: hold guard%'
$$;

-- The relations that must be guarded: each relation of a protected table of the type
-- (or of every type) holding a row under an active legal hold, with the hold that names
-- its guard (the earliest placed) and how many holds there are.
create or replace function privacy.held_relations(p_subject_type text)
    returns table (relid oid, case_reference text, holds bigint)
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    r record;
    v_held boolean;
begin
    -- A superuser install's event triggers judge each DDL statement by what it changes
    -- (a rename or a widening type change of held data passes); views are for the rest.
    if (select count(*) from pg_catalog.pg_event_trigger e
         where e.evtname in ('privacy_protect_new_partitions', 'privacy_refuse_dropping_held_data') and e.evtenabled <> 'D') = 2 then
        return;
    end if;
    for r in select distinct x.relid, p.subject_type
               from privacy.protected_tables p
               cross join lateral (select p.relid union all select d.relid from privacy.descendants(p.relid) d) x(relid)
               join pg_catalog.pg_class c on c.oid = x.relid and c.relkind = 'r'
              where (p_subject_type is null or p.subject_type = p_subject_type)
                and exists (select 1 from privacy.processing_restrictions h
                             where h.kind = 'legal_hold' and h.released_at is null and h.subject_type = p.subject_type) loop
        execute pg_catalog.format('select exists (select 1 from only %s where privacy_mark & 1 <> 0)', r.relid::regclass)
           into v_held;
        if v_held then
            relid := r.relid;
            select h.case_ref, count(*) over () into case_reference, holds
              from privacy.processing_restrictions h
             where h.kind = 'legal_hold' and h.released_at is null and h.subject_type = r.subject_type
             order by h.placed_at, h.id limit 1;
            return next;
        end if;
    end loop;
end;
$$;

-- Makes the guard views agree with the holds: one per held relation, none elsewhere.
-- P_SUBJECT_TYPE null: every type. Called by place_hold, release_hold and
-- refresh_enforcement (so by heal and install).
create or replace function privacy.guard_held_relations(p_subject_type text)
    returns integer
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    g record;
    v_name text;
    v_count integer := 0;
begin
    -- Drop the guards that no longer fit (released, or their hold is no longer the first).
    for g in select hg.view_name from privacy.hold_guards() hg
              where not exists (select 1 from privacy.held_relations(p_subject_type) h
                                 where h.relid = hg.guarded
                                   and privacy.hold_guard_name(h.case_reference, h.relid) = hg.view_name)
                and (p_subject_type is null
                     or exists (select 1 from privacy.protected_tables p
                                 cross join lateral (select p.relid union all select d.relid from privacy.descendants(p.relid) d) x(relid)
                                 where x.relid = hg.guarded and p.subject_type = p_subject_type)
                     or not exists (select 1 from privacy.protected_tables p
                                     cross join lateral (select p.relid union all select d.relid from privacy.descendants(p.relid) d) x(relid)
                                     where x.relid = hg.guarded)) loop
        execute pg_catalog.format('drop view privacy.%I', g.view_name);
    end loop;
    for g in select * from privacy.held_relations(p_subject_type) loop
        v_name := privacy.hold_guard_name(g.case_reference, g.relid);
        v_count := v_count + 1;
        if pg_catalog.to_regclass(pg_catalog.format('privacy.%I', v_name)) is null then
            begin
                execute pg_catalog.format('create view privacy.%I as select * from only %s', v_name, g.relid::regclass);
                execute pg_catalog.format('revoke all on privacy.%I from public', v_name);
            exception when insufficient_privilege then
                -- The toolkit's owner cannot read this table: no guard (doctor says so).
                raise warning 'privacy: cannot guard % against DROP while held: %', g.relid::regclass, sqlerrm;
                continue;
            end;
        end if;
        execute pg_catalog.format('comment on view privacy.%I is %L', v_name, pg_catalog.format(
            'privacy: hold guard of %s: it holds rows under %s active legal hold(s) (pyctl hold list); '
            'DROP TABLE, DROP COLUMN and ALTER COLUMN TYPE are refused until they are released',
            g.relid::regclass, g.holds));
    end loop;
    return v_count;
end;
$$;

-- A guard view's name: the hold's case reference and the guarded relation's OID.
create or replace function privacy.hold_guard_name(p_case text, p_relid oid)
    returns name
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.format('legal hold %s (%s)',
        pg_catalog.left(pg_catalog.regexp_replace(p_case, '[[:cntrl:]]', ' ', 'g'), 40), p_relid)::name
$$;

-- sql/40_status.sql: is the generated enforcement there, current and switched on?
--
-- What is expected is what privacy.enforcement_plan() (20_enforce.sql) generates:
-- status and the generator read the same plan, so they cannot disagree.

-- One row per relation of protected table P_ID (the table, each partition and child):
-- state is installed, outdated (generated from another plan: another version, a path
-- column renamed, a partition or a table depending on it added since; or altered since:
-- each generated object's comment holds a hash of it), missing (an object or the
-- privacy_mark column is absent) or disabled (a trigger or row-level security off).
-- (Definer: stewards may call it without rights on the catalogs' helpers.)
create or replace function privacy.table_status(p_id integer)
    returns table (protected_table text, relation text, state text, detail text)
    stable
    security definer
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_rel regclass;
    v_plan jsonb;
    v_tag text;
    v_target oid;
    s jsonb;
    v_missing text[];
    v_disabled text[];
    v_outdated text[];
    v_comment text;
    v_hash text;
    v_object text;
    v_oid oid;
    v_enabled "char";
begin
    select * into p from privacy.protected_tables where id = p_id;
    v_rel := privacy.relation_of(p);
    if v_rel is null then
        protected_table := privacy.qualified(p.table_schema, p.table_name); relation := protected_table;
        state := 'missing'; detail := 'the table no longer exists';
        return next;
        return;
    end if;
    protected_table := v_rel::text;
    select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) order by x.step),
           'privacy ' || privacy.toolkit_version() || ' ' || pg_catalog.md5(coalesce(pg_catalog.string_agg(x.shape, E'\n' order by x.step), ''))
      into v_plan, v_tag
      from privacy.enforcement_plan(p_id) x;
    for v_target in select v_rel::oid union all select d.relid from privacy.descendants(v_rel) d loop
        relation := v_target::regclass::text;
        v_missing := '{}'; v_disabled := '{}'; v_outdated := '{}';
        if not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = v_target and a.attname = 'privacy_mark' and not a.attisdropped) then
            v_missing := v_missing || 'column privacy_mark'::text;
        end if;
        for s in select e from pg_catalog.jsonb_array_elements(v_plan) e where (e->>'relid')::oid = v_target loop
            v_oid := null; v_comment := null; v_hash := null; v_enabled := null;
            v_object := (s->>'kind') || ' ' || (s->>'name');
            case s->>'kind'
            when 'view' then
                v_oid := pg_catalog.to_regclass('privacy.' || pg_catalog.quote_ident(s->>'name'));
                if v_oid is not null then
                    v_comment := pg_catalog.obj_description(v_oid, 'pg_class'); v_hash := privacy.object_hash('view', v_oid);
                end if;
            when 'function' then
                v_oid := pg_catalog.to_regprocedure('privacy.' || (s->>'name'));
                if v_oid is not null then
                    v_comment := pg_catalog.obj_description(v_oid, 'pg_proc'); v_hash := privacy.object_hash('function', v_oid);
                end if;
            when 'trigger' then
                select t.oid, t.tgenabled into v_oid, v_enabled from pg_catalog.pg_trigger t
                 where t.tgrelid = v_target and t.tgname = s->>'name' and t.tgparentid = 0;
                if v_oid is not null then
                    v_comment := pg_catalog.obj_description(v_oid, 'pg_trigger'); v_hash := privacy.object_hash('trigger', v_oid);
                end if;
            when 'clone' then
                select t.oid, t.tgenabled into v_oid, v_enabled from pg_catalog.pg_trigger t
                 where t.tgrelid = v_target and t.tgname = s->>'name' and t.tgparentid <> 0;
                v_object := 'trigger ' || (s->>'name');
            when 'policy' then
                select pol.oid into v_oid from pg_catalog.pg_policy pol where pol.polrelid = v_target and pol.polname = s->>'name';
                if v_oid is not null then
                    v_comment := pg_catalog.obj_description(v_oid, 'pg_policy'); v_hash := privacy.object_hash('policy', v_oid);
                end if;
            when 'rls' then
                if not (select c.relrowsecurity from pg_catalog.pg_class c where c.oid = v_target) then
                    v_disabled := v_disabled || 'row level security'::text;
                end if;
                continue;
            else
                continue;  -- grants: pyctl doctor checks them
            end case;
            if v_oid is null then
                v_missing := v_missing || v_object;
            elsif v_enabled = 'D' then
                v_disabled := v_disabled || v_object;
            elsif s->>'kind' <> 'clone' and v_comment is distinct from v_tag || ' ' || v_hash then
                v_outdated := v_outdated || (case when v_comment like v_tag || ' %' then 'altered ' else '' end || v_object);
            end if;
        end loop;
        -- Generated objects the plan no longer has (a table that depended on this one was unprotected).
        v_outdated := v_outdated || coalesce((
            select pg_catalog.array_agg('trigger ' || t.tgname || ' is no longer part of the enforcement' order by t.tgname)
              from pg_catalog.pg_trigger t
             where t.tgrelid = v_target and t.tgparentid = 0 and t.tgname ~* '^(zz_)?privacy_'
               and not exists (select 1 from pg_catalog.jsonb_array_elements(v_plan) e
                                where (e->>'relid')::oid = v_target and e->>'kind' = 'trigger' and e->>'name' = t.tgname)), '{}');
        -- Triggers that fire on UPDATE OF the path were generated for a table without
        -- BEFORE UPDATE triggers of its own (20_enforce.sql, step 8); one added since
        -- could change the path unseen.
        if privacy.has_own_before_update_trigger(v_target)
           and exists (select 1 from pg_catalog.pg_trigger t
                        where t.tgrelid = v_target and t.tgname in ('Privacy_check_update_path', 'zz_privacy_before_update_path') and t.tgattr::text <> '') then
            v_outdated := v_outdated || 'generated before the BEFORE UPDATE trigger of the table (regenerate: pyctl install)'::text;
        end if;
        if v_target = v_rel and p.enforcement is distinct from v_tag and pg_catalog.cardinality(v_outdated) = 0 then
            v_outdated := v_outdated || ('generated by ' || coalesce(p.enforcement, 'nothing') || ', the plan is now ' || v_tag);
        end if;
        if pg_catalog.cardinality(v_missing) > 0 then
            state := 'missing'; detail := 'missing: ' || pg_catalog.array_to_string(v_missing, ', ');
        elsif pg_catalog.cardinality(v_disabled) > 0 then
            state := 'disabled'; detail := 'disabled: ' || pg_catalog.array_to_string(v_disabled, ', ');
        elsif pg_catalog.cardinality(v_outdated) > 0 then
            state := 'outdated'; detail := 'outdated: ' || pg_catalog.array_to_string(v_outdated, ', ');
        else
            state := 'installed'; detail := '';
        end if;
        return next;
    end loop;
end;
$$;

-- table_status() of every protected table, in registry order.
create or replace function privacy.enforcement_status()
    returns table (protected_table text, relation text, state text, detail text)
    stable
    security definer
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language sql
as $$
    select s.* from privacy.protected_tables p cross join lateral privacy.table_status(p.id) s order by p.id
$$;

-- sql/80_discover.sql: where a subject's data lives, and what is not protected yet.

-- The names of a constraint's columns, in constraint order.
create or replace function privacy.constraint_columns(p_rel oid, p_attnums smallint[])
    returns name[]
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.array_agg(a.attname order by k.i)
      from pg_catalog.unnest(p_attnums) with ordinality k(n, i)
      join pg_catalog.pg_attribute a on a.attrelid = p_rel and a.attnum = k.n
$$;

-- A protection plan for SUBJECT_TYPE, walked from its root table through the
-- catalog: every table whose foreign keys lead to the subject at any depth (kind
-- 'via', composite keys and other schemas included), every table the subject's row
-- points at (kind 'referenced_by', noting other tables that share those rows),
-- columns named like the subject's key that have no foreign key (kind 'possible',
-- unconfirmed), and foreign-key cycles met on the way (kind 'cycle', followed once).
-- Rows come in an order in which they can be protected.
create or replace function privacy.discover(p_subject_type text)
    returns table (step integer, kind text, table_name text, columns name[], parent_table text,
                   parent_columns name[], protected boolean, note text)
    stable
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    s privacy.subject_types;
    v_root oid;
    v_queue oid[];
    v_parent_of jsonb := '{}';
    v_visited oid[];
    v_current oid;
    v_chain text[];
    c record;
    v_step integer := 0;
    v_key_names name[];
begin
    select * into s from privacy.subject_types x where x.subject_type = p_subject_type;
    if not found then
        perform privacy.fail(pg_catalog.format('unknown subject type %L', p_subject_type));
    end if;
    v_root := privacy.root_of(s);
    if v_root is null then
        perform privacy.fail(pg_catalog.format('the root table of %s, %s, no longer exists', p_subject_type,
            privacy.qualified(s.table_schema, s.table_name)));
    end if;
    step := v_step; kind := 'root'; table_name := v_root::regclass::text; columns := array[s.key_column];
    parent_table := null; parent_columns := null;
    protected := (privacy.registry_row(v_root::regclass)).id is not null; note := 'the subject''s own row';
    return next;

    -- Tables whose foreign keys lead to the subject, breadth first.
    v_queue := array[v_root];
    v_visited := array[v_root];
    while pg_catalog.cardinality(v_queue) > 0 loop
        v_current := v_queue[1];
        v_queue := v_queue[2:];
        for c in
            select k.conrelid, k.conkey, k.confkey, k.conname
              from pg_catalog.pg_constraint k
              join pg_catalog.pg_class r on r.oid = k.conrelid
              join pg_catalog.pg_namespace n on n.oid = r.relnamespace
             where k.contype = 'f' and k.confrelid = v_current and k.conparentid = 0
               and not r.relispartition and n.nspname <> 'privacy'
             order by n.nspname, r.relname, k.conname
        loop
            if c.conrelid = v_current then
                continue;  -- a table referencing itself (a manager_id) adds no subject
            end if;
            if c.conrelid = any (v_visited) then
                -- A cycle if the referencing table is on the path that led here.
                v_chain := array[v_current::regclass::text];
                declare
                    v_up oid := v_current;
                    v_is_cycle boolean := false;
                begin
                    while v_parent_of ? v_up::text loop
                        v_up := (v_parent_of ->> v_up::text)::oid;
                        v_chain := v_up::regclass::text || v_chain;
                        if v_up = c.conrelid then
                            v_is_cycle := true;
                            exit;
                        end if;
                    end loop;
                    if v_is_cycle or c.conrelid = v_root then
                        v_step := v_step + 1;
                        step := v_step; kind := 'cycle'; table_name := c.conrelid::regclass::text;
                        columns := privacy.constraint_columns(c.conrelid, c.conkey);
                        parent_table := v_current::regclass::text; parent_columns := privacy.constraint_columns(v_current, c.confkey);
                        protected := null;
                        note := pg_catalog.format('foreign-key cycle %s -> %s, followed once',
                                                  pg_catalog.array_to_string(v_chain, ' -> '), c.conrelid::regclass);
                        return next;
                    end if;
                end;
                continue;
            end if;
            v_visited := v_visited || c.conrelid;
            v_queue := v_queue || c.conrelid;
            v_parent_of := v_parent_of || pg_catalog.jsonb_build_object(c.conrelid::text, v_current::text);
            v_step := v_step + 1;
            step := v_step; kind := 'via'; table_name := c.conrelid::regclass::text;
            columns := privacy.constraint_columns(c.conrelid, c.conkey);
            parent_table := v_current::regclass::text; parent_columns := privacy.constraint_columns(v_current, c.confkey);
            protected := (privacy.registry_row(c.conrelid::regclass)).id is not null;
            note := pg_catalog.format('foreign key %I', c.conname);
            return next;
        end loop;
    end loop;

    -- Tables the subject's row points at (its address): its personal data too.
    for c in
        select k.confrelid, k.conkey, k.confkey, k.conname,
               (select pg_catalog.string_agg(pg_catalog.format('%s(%s)', o.conrelid::regclass,
                        pg_catalog.array_to_string(privacy.constraint_columns(o.conrelid, o.conkey), ',')), ', ' order by o.conrelid::regclass::text)
                  from pg_catalog.pg_constraint o
                 where o.contype = 'f' and o.confrelid = k.confrelid and o.conparentid = 0 and o.conrelid <> v_root) as shared
          from pg_catalog.pg_constraint k
         where k.contype = 'f' and k.conrelid = v_root and k.conparentid = 0 and k.confrelid <> v_root
           and not (k.confrelid = any (v_visited))
         order by k.confrelid::regclass::text, k.conname
    loop
        v_visited := v_visited || c.confrelid;
        v_step := v_step + 1;
        step := v_step; kind := 'referenced_by'; table_name := c.confrelid::regclass::text;
        columns := privacy.constraint_columns(c.confrelid, c.confkey);
        parent_table := v_root::regclass::text; parent_columns := privacy.constraint_columns(v_root, c.conkey);
        protected := (privacy.registry_row(c.confrelid::regclass)).id is not null;
        note := case when c.shared is null then 'pointed at by the subject''s row'
                     else 'shared: also pointed at by ' || c.shared || ' (those rows hide and freeze with the subject''s)' end;
        return next;
    end loop;

    -- Columns named like the subject's key, without a foreign key: possible, unconfirmed.
    v_key_names := array[(p_subject_type || '_id')::name,
                         (pg_catalog.regexp_replace(s.table_name, 's$', '') || '_id')::name];
    v_key_names := v_key_names || coalesce((
        select pg_catalog.array_agg(distinct x.col)
          from pg_catalog.pg_constraint k
          cross join lateral pg_catalog.unnest(privacy.constraint_columns(k.conrelid, k.conkey)) x(col)
         where k.contype = 'f' and k.confrelid = v_root and pg_catalog.cardinality(k.conkey) = 1), '{}');
    for c in
        select a.attrelid, a.attname
          from pg_catalog.pg_attribute a
          join pg_catalog.pg_class r on r.oid = a.attrelid and r.relkind in ('r', 'p') and not r.relispartition
          join pg_catalog.pg_namespace n on n.oid = r.relnamespace
         where a.attnum > 0 and not a.attisdropped and a.attname = any (v_key_names)
           and n.nspname not in ('privacy', 'pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
           and not (a.attrelid = any (v_visited))
           and not exists (select 1 from pg_catalog.pg_constraint k
                            where k.conrelid = a.attrelid and k.contype = 'f' and a.attnum = any (k.conkey))
           and not exists (select 1 from pg_catalog.pg_inherits i where i.inhrelid = a.attrelid)
         order by r.oid::regclass::text
    loop
        v_step := v_step + 1;
        step := v_step; kind := 'possible'; table_name := c.attrelid::regclass::text; columns := array[c.attname];
        parent_table := null; parent_columns := null;
        protected := (privacy.registry_row(c.attrelid::regclass)).id is not null;
        note := 'possible, unconfirmed: named like the subject''s key but has no foreign key (protect with --column if it holds it)';
        return next;
    end loop;
end;
$$;

-- Tables reachable from a subject type through foreign keys (or pointed at by its
-- row) that are not protected; empty when coverage is complete.
create or replace function privacy.coverage()
    returns table (subject_type text, table_name text, kind text, columns name[], parent_table text, note text)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select s.subject_type, d.table_name, d.kind, d.columns, d.parent_table, d.note
      from privacy.subject_types s
     cross join lateral privacy.discover(s.subject_type) d
     where d.kind in ('root', 'via', 'referenced_by') and not d.protected
     order by s.subject_type, d.step
$$;

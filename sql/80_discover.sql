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

-- Whether the rows of TARGET that REFERENCING(COLUMNS) points at are the subject's own
-- or shared lookup rows (stores, countries, products), measured in the data: how many
-- referencing rows (subjects, when REFERENCING is a subject type's root) point at the
-- busiest row, whether a unique index makes the reference one-to-one, which other
-- tables point at TARGET and how many of the rows the referencing rows point at they
-- point at too. Shared: two subjects point at one row; or there is no data to measure,
-- the reference is not unique and other tables point at TARGET. Tables come from the
-- caller (the owner, or discover walking the catalog); runs with the caller's rights.
create or replace function privacy.reference_sharing(p_referencing regclass, p_columns name[],
                                                     p_target regclass, p_target_columns name[])
    returns table (shared boolean, one_to_one boolean, measured boolean, referencing_rows bigint, busiest bigint,
                   other_tables text, other_rows bigint, reason text)
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v_q text[] := privacy.quoted(p_columns);
    v_list text := pg_catalog.array_to_string(privacy.quoted(p_columns), ', ');
    v_notnull text := privacy.join_columns('{c} is not null', privacy.quoted(p_columns), ' and ');
    v_unit text;
    o record;
    v_ocols name[];
    v_n bigint;
begin
    v_unit := case when exists (select 1 from privacy.subject_types s where s.relid = p_referencing) then 'subjects'
                   else 'rows of ' || p_referencing::text end;
    one_to_one := exists (
        select 1 from pg_catalog.pg_index i
         where i.indrelid = p_referencing and i.indisunique and i.indpred is null and i.indexprs is null
           and (select pg_catalog.array_agg(a.attname)
                  from pg_catalog.unnest(i.indkey::smallint[]) with ordinality k(n, j)
                  join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n
                 where k.j <= i.indnkeyatts) operator(pg_catalog.<@) p_columns);
    select pg_catalog.string_agg(pg_catalog.format('%s(%s)', f.conrelid::regclass, pg_catalog.array_to_string(f.columns, ',')),
                                 ', ' order by f.conrelid::regclass::text, f.conname)
      into other_tables
      from privacy.foreign_keys() f
     where f.confrelid = p_target and f.conrelid <> p_referencing and f.on_children = f.of_children
       and not exists (select 1 from pg_catalog.pg_inherits i where i.inhrelid = f.conrelid);
    measured := true;
    other_rows := 0;
    begin
        execute pg_catalog.format('select coalesce(sum(n), 0), coalesce(max(n), 0) from (select count(*) as n from %s where %s group by %s) x',
                                  p_referencing, v_notnull, v_list)
           into referencing_rows, busiest;
        -- The rows the subjects point at that other tables' rows point at too.
        for o in select f.conrelid, f.columns, f.target_columns
                   from privacy.foreign_keys() f
                  where f.confrelid = p_target and f.conrelid <> p_referencing and f.on_children = f.of_children
                    and not exists (select 1 from pg_catalog.pg_inherits i where i.inhrelid = f.conrelid)
                    and f.target_columns operator(pg_catalog.<@) p_target_columns
                    and f.target_columns operator(pg_catalog.@>) p_target_columns loop
            select pg_catalog.array_agg(o.columns[pg_catalog.array_position(o.target_columns, t.c)] order by t.i)
              into v_ocols from pg_catalog.unnest(p_target_columns) with ordinality t(c, i);
            -- (IN, not a correlated EXISTS: Citus plans the one, not the other.)
            execute pg_catalog.format('select count(*) from (select distinct %s from %s where %s) s where (%s) in (select %s from %s o)',
                                      v_list, p_referencing, v_notnull, privacy.join_columns('s.{c}', v_q, ', '),
                                      privacy.join_columns('o.{c}', privacy.quoted(v_ocols), ', '), o.conrelid::regclass)
               into v_n;
            other_rows := other_rows + v_n;
        end loop;
    exception when insufficient_privilege then
        measured := false; referencing_rows := null; busiest := null; other_rows := null;
    end;
    if busiest > 1 then
        shared := true;
        reason := pg_catalog.format('%s %s point at the busiest row of %s', busiest, v_unit, p_target);
    elsif one_to_one then
        shared := false;
        reason := pg_catalog.format('one-to-one: a unique index on %s(%s)', p_referencing, pg_catalog.array_to_string(p_columns, ','));
    elsif busiest = 1 then
        shared := false;
        reason := pg_catalog.format('no two %s share a row of %s (busiest row: 1 of %s)', v_unit, p_target, referencing_rows);
    elsif other_tables is not null then
        shared := true;
        reason := pg_catalog.format('%s: the reference is not unique and %s point at it too, so it is taken for a shared lookup',
                                    case when measured then 'no data to measure' else 'not readable to measure' end, other_tables);
    else
        shared := false;
        reason := pg_catalog.format('only %s points at it', p_referencing);
    end if;
    return next;
end;
$$;

-- The dismissal of TABLE for SUBJECT_TYPE, if a person made one: by OID, or by the
-- names it had when dismissed where that OID is gone (a restored dump).
create or replace function privacy.dismissal_of(p_subject_type text, p_table oid)
    returns privacy.discover_dismissals
    stable
    set search_path = ''
    language sql
as $$
    select d.*
      from privacy.discover_dismissals d
      join pg_catalog.pg_class c on c.oid = p_table
     where d.subject_type = p_subject_type
       and (d.relid = p_table
            or (not exists (select 1 from pg_catalog.pg_class g where g.oid = d.relid)
                and (d.table_schema, d.table_name) = (c.relnamespace::regnamespace::name, c.relname)))
     limit 1
$$;

-- A protection plan for SUBJECT_TYPE, walked from its root table through the
-- catalog: every table whose foreign keys lead to the subject at any depth (kind
-- 'via', composite keys, other schemas, and keys declared on every partition or
-- inheritance child included), every table the subject's row points at that is the
-- subject's own (kind 'referenced_by') or shared with others (kind 'shared', never
-- to be protected: privacy.reference_sharing() says why, in "sharing"), columns named
-- like the subject's key without a foreign key and tables whose partitions only partly
-- declare one (kind 'possible', unconfirmed), and foreign-key cycles met on the way
-- (kind 'cycle', followed once). status: protected, to protect, unconfirmed, dismissed
-- (privacy.dismiss()), shared, or '-'. Rows come in an order in which they can be protected.
drop function if exists privacy.discover(text);
create or replace function privacy.discover(p_subject_type text)
    returns table (step integer, kind text, table_name text, columns name[], parent_table text,
                   parent_columns name[], protected boolean, note text, status text, sharing jsonb)
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
    v_fks jsonb;
    v_partial jsonb;
    v_share record;
    v_dismissal privacy.discover_dismissals;
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
    -- The foreign keys of tables that are no partition or inheritance child (theirs are
    -- folded onto the parent), and the parents only some of whose children declare one.
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(f)) filter (where f.on_children = f.of_children), '[]'),
           coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(f)) filter (where f.on_children < f.of_children), '[]')
      into v_fks, v_partial
      from privacy.foreign_keys() f
     where not exists (select 1 from pg_catalog.pg_inherits i where i.inhrelid = f.conrelid);

    step := v_step; kind := 'root'; table_name := v_root::regclass::text; columns := array[s.key_column];
    parent_table := null; parent_columns := null; sharing := null;
    protected := (privacy.registry_row(v_root::regclass)).id is not null; note := 'the subject''s own row';
    status := case when protected then 'protected' else 'to protect' end;
    return next;

    -- Tables whose foreign keys lead to the subject, breadth first.
    v_queue := array[v_root];
    v_visited := array[v_root];
    while pg_catalog.cardinality(v_queue) > 0 loop
        v_current := v_queue[1];
        v_queue := v_queue[2:];
        for c in
            select f.conrelid, f.columns as cols, f.target_columns as tcols, f.conname, f.on_children, r.relkind
              from pg_catalog.jsonb_to_recordset(v_fks) f(conrelid oid, columns name[], confrelid oid, target_columns name[],
                                                          conname name, on_children integer, of_children integer)
              join pg_catalog.pg_class r on r.oid = f.conrelid
              join pg_catalog.pg_namespace n on n.oid = r.relnamespace
             where f.confrelid = v_current
             order by n.nspname, r.relname, f.conname
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
                        columns := c.cols; parent_table := v_current::regclass::text; parent_columns := c.tcols;
                        protected := null; status := '-'; sharing := null;
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
            columns := c.cols; parent_table := v_current::regclass::text; parent_columns := c.tcols; sharing := null;
            protected := (privacy.registry_row(c.conrelid::regclass)).id is not null;
            note := case when c.on_children = 0 then pg_catalog.format('foreign key %I', c.conname)
                         else pg_catalog.format('foreign key %I, declared on each of its %s %s', c.conname, c.on_children,
                                                case when c.relkind = 'p' then 'partitions' else 'inheritance children' end) end;
            v_dismissal := privacy.dismissal_of(p_subject_type, c.conrelid);
            status := case when protected then 'protected' when v_dismissal.relid is not null then 'dismissed' else 'to protect' end;
            if status = 'dismissed' then
                note := note || pg_catalog.format('; dismissed by %s: %s', v_dismissal.dismissed_by, v_dismissal.reason);
            end if;
            return next;
        end loop;
    end loop;

    -- Tables the subject's row points at (its address): its personal data too, unless
    -- other subjects' rows point at the same rows (its store).
    for c in
        select f.confrelid, f.columns as cols, f.target_columns as tcols, f.conname
          from pg_catalog.jsonb_to_recordset(v_fks) f(conrelid oid, columns name[], confrelid oid, target_columns name[], conname name)
         where f.conrelid = v_root and f.confrelid <> v_root and not (f.confrelid = any (v_visited))
         order by f.confrelid::regclass::text, f.conname
    loop
        continue when c.confrelid = any (v_visited);  -- two keys to one table: the first decides
        v_visited := v_visited || c.confrelid;
        select * into v_share from privacy.reference_sharing(v_root::regclass, c.cols, c.confrelid::regclass, c.tcols);
        v_step := v_step + 1;
        step := v_step; kind := case when v_share.shared then 'shared' else 'referenced_by' end;
        table_name := c.confrelid::regclass::text; columns := c.tcols;
        parent_table := v_root::regclass::text; parent_columns := c.cols;
        protected := (privacy.registry_row(c.confrelid::regclass)).id is not null;
        sharing := pg_catalog.to_jsonb(v_share);
        if v_share.shared then
            note := 'shared, not protected: ' || v_share.reason
                    || ' (a restriction would hide it from every subject, a hold freeze it for all)';
            status := case when protected then 'protected' else 'shared' end;
        else
            note := 'the subject''s own: ' || v_share.reason;
            if v_share.other_tables is not null then
                note := note || pg_catalog.format('; table shared: also pointed at by %s (%s of the subjects'' rows also by them: '
                                                  'those hide and freeze with the subject''s)', v_share.other_tables,
                                                  coalesce(v_share.other_rows::text, 'unmeasured'));
            end if;
            v_dismissal := privacy.dismissal_of(p_subject_type, c.confrelid);
            status := case when protected then 'protected' when v_dismissal.relid is not null then 'dismissed' else 'to protect' end;
            if status = 'dismissed' then
                note := note || pg_catalog.format('; dismissed by %s: %s', v_dismissal.dismissed_by, v_dismissal.reason);
            end if;
        end if;
        return next;
    end loop;

    -- Columns named like the subject's key without a foreign key, and tables only some
    -- of whose partitions declare one on the way to the subject: possible, unconfirmed.
    v_key_names := array[(p_subject_type || '_id')::name,
                         (pg_catalog.regexp_replace(s.table_name, 's$', '') || '_id')::name];
    v_key_names := v_key_names || coalesce((
        select pg_catalog.array_agg(distinct f.columns[1])
          from pg_catalog.jsonb_to_recordset(v_fks) f(columns name[], confrelid oid)
         where f.confrelid = v_root and pg_catalog.cardinality(f.columns) = 1), '{}');
    for c in
        select distinct on (x.relid::regclass::text) x.relid, x.cols, x.why
          from (
            select a.attrelid as relid, array[a.attname] as cols, null::text as why
              from pg_catalog.pg_attribute a
              join pg_catalog.pg_class r on r.oid = a.attrelid and r.relkind in ('r', 'p')
              join pg_catalog.pg_namespace n on n.oid = r.relnamespace
             where a.attnum > 0 and not a.attisdropped and a.attname = any (v_key_names)
               and n.nspname not in ('privacy', 'pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
               and not exists (select 1 from pg_catalog.pg_constraint k
                                where k.conrelid = a.attrelid and k.contype = 'f' and a.attnum = any (k.conkey))
            union all
            select f.conrelid, f.columns, pg_catalog.format('foreign key %I to %s on only %s of its %s %s',
                       f.conname, f.confrelid::regclass, f.on_children, f.of_children,
                       case when r.relkind = 'p' then 'partitions' else 'inheritance children' end)
              from pg_catalog.jsonb_to_recordset(v_partial) f(conrelid oid, columns name[], confrelid oid, conname name,
                                                              on_children integer, of_children integer)
              join pg_catalog.pg_class r on r.oid = f.conrelid
             where f.confrelid = any (v_visited)
          ) x
         where not (x.relid = any (v_visited))
           and not exists (select 1 from pg_catalog.pg_inherits i where i.inhrelid = x.relid)
         order by x.relid::regclass::text, x.why nulls last
    loop
        v_step := v_step + 1;
        step := v_step; kind := 'possible'; table_name := c.relid::regclass::text; columns := c.cols;
        parent_table := null; parent_columns := null; sharing := null;
        protected := (privacy.registry_row(c.relid::regclass)).id is not null;
        note := 'possible, unconfirmed: ' || coalesce(c.why, 'named like the subject''s key but has no foreign key')
                || ' (protect with --column if it holds the key, or dismiss it)';
        v_dismissal := privacy.dismissal_of(p_subject_type, c.relid);
        status := case when protected then 'protected' when v_dismissal.relid is not null then 'dismissed' else 'unconfirmed' end;
        if status = 'dismissed' then
            note := note || pg_catalog.format('; dismissed by %s: %s', v_dismissal.dismissed_by, v_dismissal.reason);
        end if;
        return next;
    end loop;
end;
$$;

-- What coverage of every subject type lacks: each table that holds a subject's key
-- (confirmed, or possible) and is neither protected nor dismissed (gap), and, for the
-- record, each dismissed table (who decided and why) and each shared lookup table left
-- unprotected. Complete when no row has gap.
drop function if exists privacy.coverage();
create or replace function privacy.coverage()
    returns table (subject_type text, table_name text, kind text, columns name[], parent_table text, status text,
                   gap boolean, note text, dismissed_by name, dismissed_at timestamptz, reason text)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select s.subject_type, d.table_name, d.kind, d.columns, d.parent_table, d.status,
           d.status in ('to protect', 'unconfirmed'), d.note, m.dismissed_by, m.dismissed_at, m.reason
      from privacy.subject_types s
     cross join lateral privacy.discover(s.subject_type) d
      left join lateral privacy.dismissal_of(s.subject_type, d.table_name::regclass::oid) m on d.status = 'dismissed'
     where d.status in ('to protect', 'unconfirmed', 'dismissed', 'shared')
     order by s.subject_type, d.step
$$;

-- Records that a person (session_user) decided TABLE, which discover lists for
-- SUBJECT_TYPE, needs no protection, and why; coverage then stops counting it. A
-- ledger event. (The toolkit's owner only: it decides what is protected.)
create or replace function privacy.dismiss(p_subject_type text, p_table regclass, p_reason text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    d record;
begin
    perform privacy.require_text(p_reason, 'a dismissal needs a reason: who decided what, and why');
    select * into d from privacy.discover(p_subject_type) x
     where x.table_name = v_rel::text and x.kind in ('via', 'referenced_by', 'possible') order by x.step limit 1;
    if not found then
        perform privacy.fail(pg_catalog.format('discover lists no table %s to protect for %s: nothing to dismiss', v_rel, p_subject_type));
    end if;
    if d.protected then
        perform privacy.fail(pg_catalog.format('%s is protected: unprotect it rather than dismiss it', v_rel));
    end if;
    insert into privacy.discover_dismissals (subject_type, relid, table_schema, table_name, reason, dismissed_by, acting_role, dismissed_at)
    select p_subject_type, c.oid, c.relnamespace::regnamespace::name, c.relname, p_reason, session_user, privacy.acting_role(),
           pg_catalog.now()
      from pg_catalog.pg_class c where c.oid = v_rel
    on conflict on constraint discover_dismissals_pkey do update
       set table_schema = excluded.table_schema, table_name = excluded.table_name, reason = excluded.reason,
           dismissed_by = excluded.dismissed_by, acting_role = excluded.acting_role, dismissed_at = excluded.dismissed_at;
    perform privacy.ledger_append('coverage_dismissed', p_subject_type, null, null,
        pg_catalog.jsonb_build_object('table', v_rel::text, 'kind', d.kind, 'columns', d.columns, 'reason', p_reason));
end;
$$;

-- Withdraws the dismissal of TABLE for SUBJECT_TYPE: coverage counts it again. A ledger
-- event. (The toolkit's owner only.)
create or replace function privacy.undismiss(p_subject_type text, p_table regclass)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    v privacy.discover_dismissals := privacy.dismissal_of(p_subject_type, v_rel);
begin
    if v.relid is null then
        perform privacy.fail(pg_catalog.format('%s is not dismissed for %s', v_rel, p_subject_type));
    end if;
    delete from privacy.discover_dismissals d where d.subject_type = v.subject_type and d.relid = v.relid;
    perform privacy.ledger_append('coverage_undismissed', p_subject_type, null, null,
        pg_catalog.jsonb_build_object('table', v_rel::text, 'dismissed_by', v.dismissed_by, 'reason', v.reason));
end;
$$;

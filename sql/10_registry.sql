-- sql/10_registry.sql: subject types and protected tables, and how the registry
-- follows its tables.
--
-- How enforcement works (see README "How it works"): every protected table gets a
-- column privacy_mark (bit 1 held, bit 2 restricted) that placement and release keep
-- equal to its subject's state. Row-level security hides rows with bit 2 from
-- restricted roles; BEFORE row triggers, gated by WHEN on the mark so that unmarked
-- rows cost nothing, refuse changes to held rows and to restricted rows by
-- non-stewards; a BEFORE INSERT trigger marks every new row from its path. Marks
-- never depend on the caller's row-level security, so indirect paths fail closed.
--
-- The registry knows a table by its OID and its path columns by number
-- (protected_tables.relid, attnums): renaming a table, its schema or a column changes
-- nothing that matters. The names beside them are what was last seen; privacy.heal()
-- refreshes them, and in a restored dump (new OIDs) finds each table again by the
-- marker in the comment of its privacy_mark column.

-- schema.table, quoted where needed.
create or replace function privacy.qualified(p_schema name, p_table name)
    returns text
    immutable
    set search_path = ''
    language sql
as $$ select pg_catalog.format('%I.%I', p_schema, p_table) $$;

-- The marker a protected table carries in the comment of its privacy_mark column, by
-- which privacy.heal() finds it again where its OID changed (a restored dump).
create or replace function privacy.table_marker(p_id integer)
    returns text
    immutable
    set search_path = ''
    language sql
as $$ select 'privacy: protected table ' || p_id || '.' $$;

-- The relation a registry row stands for, or null when it no longer exists. Every
-- lookup of a protected table or a subject's root table goes through these two. By
-- OID, where that relation is still the one registered (its names, or, renamed since,
-- the marker of its privacy_mark column, say so); else by the names last seen: in a
-- restored dump every OID is new, and privacy.heal() has not rebound them yet.
create or replace function privacy.relation_of(p privacy.protected_tables)
    returns regclass
    stable
    set search_path = ''
    language sql
as $$
    select coalesce(
        (select c.oid::regclass from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
          where c.oid = p.relid and c.relkind in ('r', 'p')
            and ((n.nspname, c.relname) = (p.table_schema, p.table_name)
                 or exists (select 1 from pg_catalog.pg_attribute a
                             where a.attrelid = c.oid and a.attname = 'privacy_mark' and not a.attisdropped
                               and pg_catalog.col_description(c.oid, a.attnum) like privacy.table_marker(p.id) || '%'))),
        (select c.oid::regclass from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
          where (n.nspname, c.relname) = (p.table_schema, p.table_name) and c.relkind in ('r', 'p')))
$$;

-- The root table of a subject type: the protected table registered with its OID.
create or replace function privacy.root_of(s privacy.subject_types)
    returns regclass
    stable
    set search_path = ''
    language sql
as $$
    select coalesce((select privacy.relation_of(p) from privacy.protected_tables p where p.relid = s.relid and p.subject_type = s.subject_type),
                    (select c.oid::regclass from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                      where (n.nspname, c.relname) = (s.table_schema, s.table_name) and c.relkind in ('r', 'p')))
$$;

-- The registry row of a protected table (not of its partitions).
create or replace function privacy.registry_row(p_table regclass)
    returns privacy.protected_tables
    stable
    set search_path = ''
    language sql
as $$ select pt.* from privacy.protected_tables pt where pt.relid = p_table $$;

-- The protected table that RELID is, or is a partition or inheritance child of.
create or replace function privacy.protected_table_of(p_relid oid)
    returns privacy.protected_tables
    stable
    set search_path = ''
    language sql
as $$
    with recursive up(relid, depth) as (
        select p_relid, 0
        union all
        select i.inhparent, up.depth + 1 from pg_catalog.pg_inherits i join up on i.inhrelid = up.relid
    )
    select pt.* from up join privacy.protected_tables pt on pt.relid = up.relid order by up.depth limit 1
$$;

-- The partitions and inheritance children of RELID, at any depth.
create or replace function privacy.descendants(p_relid oid)
    returns table (relid oid, is_partition boolean)
    stable
    set search_path = ''
    language sql
as $$
    with recursive down(relid) as (
        select i.inhrelid from pg_catalog.pg_inherits i where i.inhparent = p_relid
        union
        select i.inhrelid from pg_catalog.pg_inherits i join down on i.inhparent = down.relid
    )
    select d.relid, c.relispartition from down d join pg_catalog.pg_class c on c.oid = d.relid
$$;

-- The current names of columns ATTNUMS of RELID, in that order (null where one is gone).
create or replace function privacy.column_names(p_relid oid, p_attnums smallint[])
    returns name[]
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.array_agg(a.attname order by k.i)
      from pg_catalog.unnest(p_attnums) with ordinality k(n, i)
      left join pg_catalog.pg_attribute a on a.attrelid = p_relid and a.attnum = k.n and not a.attisdropped
$$;

-- The numbers of columns NAMES of RELID, in that order (null where one is missing).
create or replace function privacy.column_numbers(p_relid oid, p_names name[])
    returns smallint[]
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.array_agg(a.attnum order by k.i)
      from pg_catalog.unnest(p_names) with ordinality k(n, i)
      left join pg_catalog.pg_attribute a on a.attrelid = p_relid and a.attname = k.n and a.attnum > 0 and not a.attisdropped
$$;

-- Resolves a table argument given as text, with a clear error.
create or replace function privacy.resolve_table(p_table text)
    returns regclass
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v regclass;
begin
    perform privacy.require_text(p_table, 'a table name is required');
    v := pg_catalog.to_regclass(p_table);
    if v is null then
        perform privacy.fail(pg_catalog.format('table %s does not exist (or is not visible to %s)', p_table, current_user));
    end if;
    if not exists (select 1 from pg_catalog.pg_class c where c.oid = v and c.relkind in ('r', 'p')) then
        perform privacy.fail(pg_catalog.format('%s is not a table', p_table));
    end if;
    return v;
end;
$$;

-- The column's format_type(), or a clear error when the table has no such column.
create or replace function privacy.column_type(p_table regclass, p_column name)
    returns text
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v text;
begin
    select pg_catalog.format_type(a.atttypid, a.atttypmod) into v
      from pg_catalog.pg_attribute a
     where a.attrelid = p_table and a.attname = p_column and a.attnum > 0 and not a.attisdropped;
    if v is null then
        perform privacy.fail(pg_catalog.format('table %s has no column %s', p_table, pg_catalog.quote_ident(p_column)));
    end if;
    return v;
end;
$$;

-- Every foreign key outside schema privacy, with those declared on each partition or
-- inheritance child folded onto the parent: a parent none of whose own constraints
-- points at TARGET gets the foreign key when every one of its children (at any depth)
-- declares one with the same columns to the same target columns (on_children =
-- of_children > 0). A parent where only some children do is listed too (on_children <
-- of_children), so discover can say so; such a row is no foreign key of the parent.
-- Declared foreign keys have on_children = of_children = 0. Columns go by name, as a
-- partition's column numbers may differ from its parent's.
create or replace function privacy.foreign_keys()
    returns table (conrelid oid, columns name[], confrelid oid, target_columns name[], conname name,
                   on_children integer, of_children integer)
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v_all jsonb;
    v_new jsonb;
    v_partial jsonb := '[]';
begin
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'rel', k.conrelid, 'cols', privacy.column_names(k.conrelid, k.conkey), 'target', k.confrelid,
               'tcols', privacy.column_names(k.confrelid, k.confkey), 'name', k.conname, 'on', 0, 'of', 0)), '[]')
      into v_all
      from pg_catalog.pg_constraint k
      join pg_catalog.pg_class r on r.oid = k.conrelid
     where k.contype = 'f' and k.conparentid = 0 and r.relnamespace <> 'privacy'::regnamespace;
    -- Fold level by level: a sub-partitioned child has the key once all its own children do.
    loop
        with f as (
            select x.rel, x.cols, x.target, x.tcols, x.name
              from pg_catalog.jsonb_to_recordset(v_all) x(rel oid, cols name[], target oid, tcols name[], name name)
        ), g as (
            select i.inhparent as rel, f.cols, f.target, f.tcols, pg_catalog.min(f.name::text)::name as name,
                   pg_catalog.count(distinct f.rel)::integer as n,
                   (select pg_catalog.count(*) from pg_catalog.pg_inherits j where j.inhparent = i.inhparent)::integer as total
              from f join pg_catalog.pg_inherits i on i.inhrelid = f.rel
             where not exists (select 1 from f p where p.rel = i.inhparent and p.cols = f.cols
                                                  and p.target = f.target and p.tcols = f.tcols)
             group by i.inhparent, f.cols, f.target, f.tcols
        )
        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('rel', g.rel, 'cols', g.cols, 'target', g.target,
                   'tcols', g.tcols, 'name', g.name, 'on', g.n, 'of', g.total)) filter (where g.n = g.total),
               coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('rel', g.rel, 'cols', g.cols, 'target', g.target,
                   'tcols', g.tcols, 'name', g.name, 'on', g.n, 'of', g.total)) filter (where g.n < g.total), '[]')
          into v_new, v_partial
          from g;
        exit when v_new is null;
        v_all := v_all || v_new;
    end loop;
    return query
        select x.rel, x.cols, x.target, x.tcols, x.name, x."on", x."of"
          from pg_catalog.jsonb_to_recordset(v_all || v_partial)
               x(rel oid, cols name[], target oid, tcols name[], name name, "on" integer, "of" integer);
end;
$$;

-- The columns of the foreign key of TABLE whose first column is COLUMN and that points
-- at TARGET (any table when null), with the referenced table and columns; null when
-- there is none. A key declared on every partition (or inheritance child) of TABLE
-- counts as TABLE's own (privacy.foreign_keys()).
create or replace function privacy.foreign_key(p_table regclass, p_column name, p_target regclass)
    returns table (target regclass, columns name[], target_columns name[])
    stable
    set search_path = ''
    language sql
as $$
    select * from (
        select c.confrelid::regclass,
               privacy.column_names(c.conrelid, c.conkey),
               privacy.column_names(c.confrelid, c.confkey)
          from pg_catalog.pg_constraint c
         where c.conrelid = p_table and c.contype = 'f' and c.conparentid = 0
           and (p_target is null or c.confrelid = p_target)
           and c.conkey[1] = (select a.attnum from pg_catalog.pg_attribute a
                               where a.attrelid = p_table and a.attname = p_column and not a.attisdropped)
         order by c.conname
         limit 1) declared
    union all
    select * from (
        select f.confrelid::regclass, f.columns, f.target_columns
          from privacy.foreign_keys() f
         where f.conrelid = p_table and f.on_children > 0 and f.on_children = f.of_children
           and (p_target is null or f.confrelid = p_target) and f.columns[1] = p_column
         order by f.conname
         limit 1) folded
    limit 1
$$;

-- Why column P_COLUMN of P_REL cannot hold subject keys, or null. The toolkit keeps a
-- subject's marks by the text of its key (privacy.subject_marks) and the triggers look a
-- new row's key up by its text: only types whose equal values have one text, whatever the
-- session's settings, qualify (numeric only with a fixed scale: numeric(10,0), not numeric,
-- where 2 = 2.00; no float, date or time types, whose text follows the session's settings;
-- no citext, no nondeterministic collation). Domains are judged by their base type.
create or replace function privacy.key_type_problem(p_rel regclass, p_column name)
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select case when b.oid in ('pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype,
                               'pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.text'::pg_catalog.regtype,
                               'pg_catalog.varchar'::pg_catalog.regtype, 'pg_catalog.bpchar'::pg_catalog.regtype,
                               'pg_catalog.uuid'::pg_catalog.regtype)
                     or (b.oid = 'pg_catalog.numeric'::pg_catalog.regtype and x.typmod >= 0)
                then case when exists (select 1 from pg_catalog.pg_collation c where c.oid = a.attcollation and not c.collisdeterministic)
                          then pg_catalog.format('%s.%s has the nondeterministic collation %s: equal keys (''ABC'', ''abc'') would be '
                                                 'kept as two subjects, and a hold on one could not be released; give the key a '
                                                 'deterministic collation', p_rel, pg_catalog.quote_ident(p_column),
                                                 (select c.collname from pg_catalog.pg_collation c where c.oid = a.attcollation)) end
                else pg_catalog.format('%s.%s is of type %s: subject keys are kept by their text, so a key must be of a type whose '
                                       'equal values are written one way: smallint, integer, bigint, numeric with a scale (numeric(12,0)), '
                                       'text, varchar, char or uuid', p_rel, pg_catalog.quote_ident(p_column),
                                       pg_catalog.format_type(a.atttypid, a.atttypmod)) end
      from pg_catalog.pg_attribute a
      cross join lateral (select case when t.typtype = 'd' then t.typbasetype else t.oid end as base,
                                 case when t.typtype = 'd' and a.atttypmod < 0 then t.typtypmod else a.atttypmod end as typmod
                            from pg_catalog.pg_type t where t.oid = a.atttypid) x
      join pg_catalog.pg_type b on b.oid = x.base
     where a.attrelid = p_rel and a.attname = p_column and not a.attisdropped
$$;

-- Registers a subject type (e.g. customer -> public.customers.id) and protects its root table.
create or replace function privacy.add_subject_type(p_subject_type text, p_table regclass, p_key_column name)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    v_type text;
    v_existing privacy.subject_types;
    v_schema name;
    v_name name;
begin
    if p_subject_type is null or p_subject_type !~ '^[a-z][a-z0-9_]{0,62}$' then
        perform privacy.fail(pg_catalog.format('subject type %L must be lowercase letters, digits and _ (e.g. customer)', p_subject_type));
    end if;
    v_type := privacy.column_type(v_rel, p_key_column);
    if privacy.key_type_problem(v_rel, p_key_column) is not null then
        perform privacy.fail(privacy.key_type_problem(v_rel, p_key_column));
    end if;
    if not exists (
        select 1 from pg_catalog.pg_index i
         where i.indrelid = v_rel and i.indisunique and i.indnkeyatts = 1 and i.indpred is null
           and i.indkey[0] = (select a.attnum from pg_catalog.pg_attribute a where a.attrelid = v_rel and a.attname = p_key_column)) then
        perform privacy.fail(pg_catalog.format('%s.%s must be a primary key or unique: it identifies one subject', v_rel, pg_catalog.quote_ident(p_key_column)));
    end if;
    select n.nspname, c.relname into v_schema, v_name
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_rel;
    select * into v_existing from privacy.subject_types where subject_type = p_subject_type;
    if found then
        if v_existing.relid = v_rel and v_existing.key_attnum = (privacy.column_numbers(v_rel, array[p_key_column]))[1] then
            return;  -- already registered exactly so: idempotent for migrations
        end if;
        perform privacy.fail(pg_catalog.format('subject type %s already exists for %s.%s', p_subject_type,
            privacy.qualified(v_existing.table_schema, v_existing.table_name), pg_catalog.quote_ident(v_existing.key_column)));
    end if;
    insert into privacy.subject_types (subject_type, table_schema, table_name, key_column, key_type, relid, key_attnum)
    values (p_subject_type, v_schema, v_name, p_key_column, v_type, v_rel, (privacy.column_numbers(v_rel, array[p_key_column]))[1]);
    perform privacy.ledger_append('subject_type_added', p_subject_type, null, null,
        pg_catalog.jsonb_build_object('table', v_rel::text, 'key_column', p_key_column));
    perform privacy.protect(v_rel, p_subject_type, p_key_column);
end;
$$;

-- Registers TABLE and generates its enforcement; shared by the three protect forms.
create or replace function privacy.register_protected(
        p_rel regclass, p_subject_type text, p_kind text, p_columns name[],
        p_parent regclass, p_parent_columns name[])
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_schema name;
    v_name name;
    v_parent privacy.protected_tables;
    v_existing privacy.protected_tables;
    v_rls boolean;
    v_id integer;
begin
    select n.nspname, c.relname, c.relrowsecurity into v_schema, v_name, v_rls
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = p_rel;
    if v_schema = 'privacy' then
        perform privacy.fail('the toolkit''s own tables cannot be protected');
    end if;
    if exists (select 1 from pg_catalog.pg_class c where c.oid = p_rel and c.relispartition) then
        perform privacy.fail(pg_catalog.format('%s is a partition: protect its partitioned table, and every partition follows', p_rel));
    end if;
    if not pg_catalog.pg_has_role(current_user, (select c.relowner from pg_catalog.pg_class c where c.oid = p_rel), 'USAGE') then
        perform privacy.fail(pg_catalog.format('%s must own %s (or be a member of its owner) to protect it', current_user, p_rel));
    end if;
    -- On a Citus coordinator: the path a distributed table can be enforced with, or a refusal (sql/89_citus.sql).
    select x.p_kind, x.p_columns, x.p_parent, x.p_parent_columns into p_kind, p_columns, p_parent, p_parent_columns
      from privacy.citus_path(p_rel, p_subject_type, p_kind, p_columns, p_parent, p_parent_columns) x;
    if p_parent is not null then
        v_parent := privacy.registry_row(p_parent);
    end if;
    v_existing := privacy.registry_row(p_rel);
    if v_existing.id is not null then
        if (v_existing.subject_type, v_existing.path_kind, v_existing.attnums, v_existing.parent_id, v_existing.parent_attnums)
           is not distinct from (p_subject_type, p_kind, privacy.column_numbers(p_rel, p_columns), v_parent.id,
                                 privacy.column_numbers(p_parent, p_parent_columns)) then
            perform privacy.enforce(p_rel);  -- same path again: just make sure enforcement is complete
            return;
        end if;
        perform privacy.fail(pg_catalog.format('%s is already protected with another path (%s); unprotect it first', p_rel, privacy.describe_path(v_existing)));
    end if;
    if (privacy.protected_table_of(p_rel)).id is not null then
        perform privacy.fail(pg_catalog.format('%s is a child of a protected table and is already protected through it', p_rel));
    end if;
    insert into privacy.protected_tables (table_schema, table_name, subject_type, path_kind, columns,
                                          parent_schema, parent_table, parent_columns, rls_was_enabled,
                                          relid, attnums, parent_id, parent_attnums)
    values (v_schema, v_name, p_subject_type, p_kind, p_columns, v_parent.table_schema, v_parent.table_name, p_parent_columns, v_rls,
            p_rel, privacy.column_numbers(p_rel, p_columns), v_parent.id, privacy.column_numbers(p_parent, p_parent_columns))
    returning id into v_id;
    if p_parent is not null then
        perform privacy.enforce(p_parent);  -- the parent now exposes and propagates what this table's path needs
    end if;
    perform privacy.enforce(p_rel);
    perform privacy.remark_table(v_id, false);
    perform privacy.ledger_append('table_protected', p_subject_type, null, null,
        pg_catalog.jsonb_build_object('table', p_rel::text,
            'path', privacy.describe_path((select pt from privacy.protected_tables pt where pt.id = v_id))));
    perform privacy.remember_fingerprint();
end;
$$;

-- A readable path, e.g. "customer_id = customer key", "via order_id -> public.orders(id)".
create or replace function privacy.describe_path(p privacy.protected_tables)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select case p.path_kind
        when 'column' then pg_catalog.format('%s = %s key', pg_catalog.array_to_string(p.columns, ','), p.subject_type)
        when 'via' then pg_catalog.format('via %s -> %s(%s)', pg_catalog.array_to_string(p.columns, ','),
                                  privacy.qualified(p.parent_schema, p.parent_table), pg_catalog.array_to_string(p.parent_columns, ','))
        else pg_catalog.format('referenced by %s(%s)', privacy.qualified(p.parent_schema, p.parent_table),
                               pg_catalog.array_to_string(p.parent_columns, ','))
    end
$$;

-- Protects TABLE whose own COLUMN holds the key of SUBJECT_TYPE:
--   select privacy.protect('public.orders', 'customer', 'customer_id');
create or replace function privacy.protect(p_table regclass, p_subject_type text, p_column name)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
begin
    if not exists (select 1 from privacy.subject_types s where s.subject_type = p_subject_type) then
        perform privacy.fail(pg_catalog.format('unknown subject type %L (add it first: privacy.add_subject_type)', p_subject_type));
    end if;
    perform privacy.column_type(v_rel, p_column);
    perform privacy.register_protected(v_rel, p_subject_type, 'column', array[p_column], null, null);
end;
$$;

-- Protects TABLE whose foreign key FK_COLUMN points at an already protected table:
--   select privacy.protect_via('public.order_items', 'order_id');
create or replace function privacy.protect_via(p_table regclass, p_fk_column name)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    v_fk record;
    v_parent privacy.protected_tables;
begin
    perform privacy.column_type(v_rel, p_fk_column);
    select * into v_fk from privacy.foreign_key(v_rel, p_fk_column, null);
    if v_fk.target is null then
        perform privacy.fail(pg_catalog.format('%s.%s is not a foreign key (it must be the first column of one)', v_rel, pg_catalog.quote_ident(p_fk_column)));
    end if;
    v_parent := privacy.registry_row(v_fk.target);
    if v_parent.id is null then
        perform privacy.fail(pg_catalog.format('%s.%s points at %s, which is not protected: protect it first, so the path leads to a subject',
            v_rel, pg_catalog.quote_ident(p_fk_column), v_fk.target));
    end if;
    perform privacy.register_protected(v_rel, v_parent.subject_type, 'via', v_fk.columns, v_fk.target, v_fk.target_columns);
end;
$$;

-- Protects TABLE whose rows the subject's rows point at, through the foreign key
-- REFERENCING_TABLE.COLUMN (customers.address_id -> addresses):
--   select privacy.protect_referenced_by('public.addresses', 'public.customers', 'address_id');
-- Refused when TABLE is a shared lookup (privacy.reference_sharing(): a row several
-- subjects point at, such as a store or a country), since a restriction would hide the
-- row from every subject and a hold freeze it for all, unless SHARED_OK says a person
-- decided so (recorded in the registry).
drop function if exists privacy.protect_referenced_by(regclass, regclass, name);
create or replace function privacy.protect_referenced_by(p_table regclass, p_referencing_table regclass, p_column name,
                                                         p_shared_ok boolean default false)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    v_ref regclass := privacy.resolve_table(p_referencing_table::text);
    v_fk record;
    v_referencing privacy.protected_tables;
    v_sharing record;
begin
    perform privacy.column_type(v_ref, p_column);
    select * into v_fk from privacy.foreign_key(v_ref, p_column, v_rel);
    if v_fk.target is null then
        perform privacy.fail(pg_catalog.format('%s.%s is not a foreign key to %s', v_ref, pg_catalog.quote_ident(p_column), v_rel));
    end if;
    v_referencing := privacy.registry_row(v_ref);
    if v_referencing.id is null then
        perform privacy.fail(pg_catalog.format('%s is not protected: protect it first, so the path leads to a subject', v_ref));
    end if;
    -- On a Citus coordinator, what Citus cannot enforce is refused before anything is read, and
    -- DDL may follow the multi-shard reads below (sql/89_citus.sql).
    perform privacy.citus_session();
    perform privacy.citus_path(v_rel, v_referencing.subject_type, 'referenced_by', v_fk.target_columns, v_ref, v_fk.columns);
    select * into v_sharing from privacy.reference_sharing(v_ref, v_fk.columns, v_rel, v_fk.target_columns);
    if v_sharing.shared and not coalesce(p_shared_ok, false) then
        perform privacy.fail(pg_catalog.format('%s is shared, not the subject''s own (%s): a restriction would hide its rows from '
            'every subject and a hold freeze them for all; pass shared_ok => true (pyctl protect --shared-ok) if that is intended',
            v_rel, v_sharing.reason));
    end if;
    perform privacy.register_protected(v_rel, v_referencing.subject_type, 'referenced_by', v_fk.target_columns, v_ref, v_fk.columns);
    if v_sharing.shared then
        update privacy.protected_tables set shared_ok_by = session_user where relid = v_rel;
    end if;
end;
$$;

-- Removes TABLE's enforcement. Refused while it holds held or restricted rows, or
-- while another protected table's path runs through it.
create or replace function privacy.unprotect(p_table regclass)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    v privacy.protected_tables := privacy.registry_row(v_rel);
    v_dependent text;
    v_marked bigint;
    v_is_root boolean;
begin
    perform privacy.citus_session();  -- on a Citus coordinator: DDL after the multi-shard count below (sql/89_citus.sql)
    if v.id is null then
        perform privacy.fail(pg_catalog.format('%s is not protected', v_rel));
    end if;
    select pg_catalog.string_agg(privacy.qualified(d.table_schema, d.table_name), ', ') into v_dependent
      from privacy.protected_tables d where d.parent_id = v.id;
    if v_dependent is not null then
        perform privacy.fail(pg_catalog.format('%s cannot be unprotected while the paths of %s run through it', v_rel, v_dependent));
    end if;
    v_is_root := exists (select 1 from privacy.subject_types s where s.subject_type = v.subject_type and s.relid = v.relid);
    if v_is_root and exists (select 1 from privacy.protected_tables o where o.subject_type = v.subject_type and o.id <> v.id) then
        perform privacy.fail(pg_catalog.format('%s is the root table of subject type %s: unprotect its other tables first', v_rel, v.subject_type));
    end if;
    execute pg_catalog.format('select count(*) from %s where privacy_mark <> 0', v_rel) into v_marked;
    if v_marked > 0 then
        perform privacy.fail(pg_catalog.format('%s holds %s rows under a legal hold or processing restriction: release them before unprotecting', v_rel, v_marked));
    end if;
    perform privacy.drop_enforcement(v, true);
    delete from privacy.protected_tables where id = v.id;
    if v.parent_id is not null then
        perform privacy.enforce(privacy.relation_of(p)) from privacy.protected_tables p where p.id = v.parent_id;
    end if;
    if v_is_root then
        delete from privacy.subject_types where subject_type = v.subject_type
           and not exists (select 1 from privacy.processing_restrictions r where r.subject_type = v.subject_type);
    end if;
    perform privacy.ledger_append('table_unprotected', v.subject_type, null, null,
        pg_catalog.jsonb_build_object('table', v_rel::text, 'path', privacy.describe_path(v)));
    perform privacy.remember_fingerprint();
end;
$$;

-- Brings the registry in line with the catalog: a table renamed (or moved to another
-- schema), a column renamed, and, in a restored dump or a copy where the OIDs are new,
-- each table found again by its marker (else by its last names). Returns the ids of
-- the protected tables whose names, OID or columns changed.
create or replace function privacy.heal_registry()
    returns integer[]
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    s privacy.subject_types;
    v_rel oid;
    v_changed integer[] := '{}';
    v_rebound integer[] := '{}';
    v_old_relids oid[] := '{}';
    v_new_relids oid[] := '{}';
    v_schema name;
    v_name name;
    v_columns name[];
    v_attnums smallint[];
begin
    for p in select * from privacy.protected_tables order by id loop
        v_rel := null;
        -- Still the same table: it carries this row's marker (or, upgraded from 0.1.0,
        -- no marker yet and the same names).
        select c.oid into v_rel
          from pg_catalog.pg_class c
          join pg_catalog.pg_namespace n on n.oid = c.relnamespace
          join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attname = 'privacy_mark' and not a.attisdropped
         where c.oid = p.relid and c.relkind in ('r', 'p')
           and (coalesce(pg_catalog.col_description(c.oid, a.attnum), '') like privacy.table_marker(p.id) || '%'
                or (coalesce(pg_catalog.col_description(c.oid, a.attnum), '') not like 'privacy: protected table %'
                    and (n.nspname, c.relname) = (p.table_schema, p.table_name)));
        if v_rel is null then
            -- Found anew: by its marker, else by the names it had.
            select a.attrelid into v_rel from pg_catalog.pg_attribute a
             where a.attname = 'privacy_mark' and not a.attisdropped
               and pg_catalog.col_description(a.attrelid, a.attnum) like privacy.table_marker(p.id) || '%'
             limit 1;
            v_rel := coalesce(v_rel, pg_catalog.to_regclass(privacy.qualified(p.table_schema, p.table_name)));
            if v_rel is null then
                continue;  -- gone: enforcement_status() and doctor report it
            end if;
            v_rebound := v_rebound || p.id;
        end if;
        select n.nspname, c.relname into v_schema, v_name
          from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_rel;
        -- Columns: by number on the same table, by name on a table found anew.
        if p.id = any (v_rebound) or p.attnums is null then
            v_attnums := privacy.column_numbers(v_rel, p.columns);
            v_columns := p.columns;
        else
            v_attnums := p.attnums;
            v_columns := privacy.column_names(v_rel, p.attnums);
        end if;
        if (v_rel, v_schema, v_name, v_columns, v_attnums) is distinct from (p.relid, p.table_schema, p.table_name, p.columns, p.attnums) then
            v_old_relids := v_old_relids || p.relid;
            v_new_relids := v_new_relids || v_rel;
            update privacy.protected_tables set relid = null where relid = v_rel and id <> p.id;  -- a stale OID, reused
            update privacy.protected_tables
               set relid = v_rel, table_schema = v_schema, table_name = v_name,
                   columns = coalesce(v_columns, columns), attnums = v_attnums
             where id = p.id;
            v_changed := v_changed || p.id;
        end if;
    end loop;
    -- The parent's names, and the names or numbers of the parent's columns on the path.
    for p in select * from privacy.protected_tables where parent_id is not null order by id loop
        select x.relid, x.table_schema, x.table_name into v_rel, v_schema, v_name from privacy.protected_tables x where x.id = p.parent_id;
        if p.parent_id = any (v_rebound) or p.parent_attnums is null then
            v_attnums := privacy.column_numbers(v_rel, p.parent_columns);
            v_columns := p.parent_columns;
        else
            v_attnums := p.parent_attnums;
            v_columns := privacy.column_names(v_rel, p.parent_attnums);
        end if;
        if (v_schema, v_name, v_columns, v_attnums) is distinct from (p.parent_schema, p.parent_table, p.parent_columns, p.parent_attnums) then
            update privacy.protected_tables
               set parent_schema = v_schema, parent_table = v_name,
                   parent_columns = coalesce(v_columns, parent_columns), parent_attnums = v_attnums
             where id = p.id;
            v_changed := v_changed || p.id;
        end if;
    end loop;
    -- Subject types follow their root tables.
    for s in select * from privacy.subject_types order by subject_type loop
        v_rel := case when s.relid = any (v_old_relids) then v_new_relids[pg_catalog.array_position(v_old_relids, s.relid)] else s.relid end;
        if not exists (select 1 from pg_catalog.pg_class c where c.oid = v_rel) then
            v_rel := pg_catalog.to_regclass(privacy.qualified(s.table_schema, s.table_name));
        end if;
        if v_rel is null then
            continue;
        end if;
        select n.nspname, c.relname into v_schema, v_name
          from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_rel;
        if v_rel is distinct from s.relid or s.key_attnum is null then
            v_attnums := privacy.column_numbers(v_rel, array[s.key_column]);
            v_columns := array[s.key_column];
        else
            v_attnums := array[s.key_attnum];
            v_columns := privacy.column_names(v_rel, array[s.key_attnum]);
        end if;
        if (v_rel, v_schema, v_name, v_columns[1], v_attnums[1]) is distinct from (s.relid, s.table_schema, s.table_name, s.key_column, s.key_attnum) then
            update privacy.subject_types
               set relid = v_rel, table_schema = v_schema, table_name = v_name,
                   key_column = coalesce(v_columns[1], key_column), key_attnum = v_attnums[1]
             where subject_type = s.subject_type;
        end if;
    end loop;
    return v_changed;
end;
$$;

-- Drops the triggers, policies, views and generated functions of one protected table
-- (and of its descendants); with p_drop_column also the privacy_mark column and, where
-- protect turned it on, row-level security.
create or replace function privacy.drop_enforcement(p privacy.protected_tables, p_drop_column boolean)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.relation_of(p);
    v_target oid;
    v_name text;
begin
    perform privacy.citus_session();  -- on a Citus coordinator: triggers of distributed tables (sql/89_citus.sql)
    if v_rel is not null then
        for v_target in select v_rel::oid union all select d.relid from privacy.descendants(v_rel) d loop
            for v_name in select t.tgname from pg_catalog.pg_trigger t
                           where t.tgrelid = v_target and t.tgname ~* '^(zz_)?privacy_' and t.tgparentid = 0 loop
                execute pg_catalog.format('drop trigger %I on %s', v_name, v_target::regclass);
            end loop;
            for v_name in select pol.polname from pg_catalog.pg_policy pol
                           where pol.polrelid = v_target and pol.polname ~ '^privacy_' loop
                execute pg_catalog.format('drop policy %I on %s', v_name, v_target::regclass);
            end loop;
            if p_drop_column and not p.rls_was_enabled then
                execute pg_catalog.format('alter table %s disable row level security', v_target::regclass);
            end if;
        end loop;
    end if;
    for v_name in select pr.oid::regprocedure::text from pg_catalog.pg_proc pr
                   where pr.pronamespace = 'privacy'::regnamespace and pr.proname ~ ('^pt_' || p.id || '_') loop
        execute 'drop function if exists ' || v_name || ' cascade';
    end loop;
    execute pg_catalog.format('drop view if exists privacy.%I', 'pt_' || p.id || '_v');
    if v_rel is not null and p_drop_column then
        execute pg_catalog.format('alter table %s drop column if exists privacy_mark', v_rel);
    end if;
end;
$$;

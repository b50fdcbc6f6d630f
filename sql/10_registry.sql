-- sql/10_registry.sql: subject types, protected tables and the generator of their enforcement.
--
-- How enforcement works (see README "How it works"): every protected table gets a
-- column privacy_mark (bit 1 held, bit 2 restricted) that placement and release keep
-- equal to its subject's state. Row-level security hides rows with bit 2 from
-- restricted roles; BEFORE row triggers, gated by WHEN on the mark so that unmarked
-- rows cost nothing, refuse changes to held rows and to restricted rows by
-- non-stewards; a BEFORE INSERT trigger marks every new row from its path. Marks
-- never depend on the caller's row-level security, so indirect paths fail closed.

-- schema.table, quoted where needed.
create or replace function privacy.qualified(p_schema name, p_table name)
    returns text
    immutable
    set search_path = ''
    language sql
as $$ select pg_catalog.format('%I.%I', p_schema, p_table) $$;

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
    select pt.*
      from up
      join pg_catalog.pg_class c on c.oid = up.relid
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      join privacy.protected_tables pt on pt.table_schema = n.nspname and pt.table_name = c.relname
     order by up.depth
     limit 1
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

-- The relation a registry row stands for, or null when it no longer exists. Every
-- lookup of a protected table or a subject's root table goes through these two (the
-- registry is to follow tables through renames: never compose a name from its columns).
create or replace function privacy.relation_of(p privacy.protected_tables)
    returns regclass
    stable
    set search_path = ''
    language sql
as $$ select pg_catalog.to_regclass(privacy.qualified(p.table_schema, p.table_name)) $$;

create or replace function privacy.root_of(s privacy.subject_types)
    returns regclass
    stable
    set search_path = ''
    language sql
as $$ select pg_catalog.to_regclass(privacy.qualified(s.table_schema, s.table_name)) $$;

create or replace function privacy.registry_row(p_table regclass)
    returns privacy.protected_tables
    stable
    set search_path = ''
    language sql
as $$
    select pt.* from privacy.protected_tables pt
      join pg_catalog.pg_class c on c.relname = pt.table_name
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace and n.nspname = pt.table_schema
     where c.oid = p_table
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
        if (v_existing.table_schema, v_existing.table_name, v_existing.key_column) = (v_schema, v_name, p_key_column) then
            return;  -- already registered exactly so: idempotent for migrations
        end if;
        perform privacy.fail(pg_catalog.format('subject type %s already exists for %s.%s', p_subject_type,
            privacy.qualified(v_existing.table_schema, v_existing.table_name), pg_catalog.quote_ident(v_existing.key_column)));
    end if;
    insert into privacy.subject_types (subject_type, table_schema, table_name, key_column, key_type)
    values (p_subject_type, v_schema, v_name, p_key_column, v_type);
    perform privacy.ledger_append('subject_type_added', p_subject_type, null, null,
        pg_catalog.jsonb_build_object('table', privacy.qualified(v_schema, v_name), 'key_column', p_key_column));
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
    v_parent_schema name;
    v_parent_name name;
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
    if p_parent is not null then
        select n.nspname, c.relname into v_parent_schema, v_parent_name
          from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = p_parent;
    end if;
    select * into v_existing from privacy.protected_tables pt where pt.table_schema = v_schema and pt.table_name = v_name;
    if found then
        if (v_existing.subject_type, v_existing.path_kind, v_existing.columns, v_existing.parent_schema, v_existing.parent_table, v_existing.parent_columns)
           is not distinct from (p_subject_type, p_kind, p_columns, v_parent_schema, v_parent_name, p_parent_columns) then
            perform privacy.enforce(p_rel);  -- same path again: just make sure enforcement is complete
            return;
        end if;
        perform privacy.fail(pg_catalog.format('%s is already protected with another path (%s); unprotect it first', p_rel, privacy.describe_path(v_existing)));
    end if;
    if (privacy.protected_table_of(p_rel)).id is not null then
        perform privacy.fail(pg_catalog.format('%s is a child of a protected table and is already protected through it', p_rel));
    end if;
    insert into privacy.protected_tables (table_schema, table_name, subject_type, path_kind, columns,
                                          parent_schema, parent_table, parent_columns, rls_was_enabled)
    values (v_schema, v_name, p_subject_type, p_kind, p_columns, v_parent_schema, v_parent_name, p_parent_columns, v_rls)
    returning id into v_id;
    perform privacy.enforce(p_rel);
    if p_parent is not null then
        perform privacy.enforce(p_parent);  -- the parent now propagates its marks to this table
    end if;
    perform privacy.remark_table(v_id, false);
    perform privacy.ledger_append('table_protected', p_subject_type, null, null,
        pg_catalog.jsonb_build_object('table', privacy.qualified(v_schema, v_name),
            'path', privacy.describe_path((select pt from privacy.protected_tables pt where pt.id = v_id))));
end;
$$;

-- A readable path, e.g. "customer_id -> customer", "order_id -> public.orders(id)".
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
    v_con record;
    v_parent privacy.protected_tables;
begin
    perform privacy.column_type(v_rel, p_fk_column);
    select c.confrelid::regclass as parent,
           array(select a.attname from pg_catalog.unnest(c.conkey) with ordinality k(n, i)
                  join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) as cols,
           array(select a.attname from pg_catalog.unnest(c.confkey) with ordinality k(n, i)
                  join pg_catalog.pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n order by k.i) as parent_cols
      into v_con
      from pg_catalog.pg_constraint c
     where c.conrelid = v_rel and c.contype = 'f' and c.conparentid = 0
       and c.conkey[1] = (select a.attnum from pg_catalog.pg_attribute a where a.attrelid = v_rel and a.attname = p_fk_column)
     order by c.conname
     limit 1;
    if v_con is null then
        perform privacy.fail(pg_catalog.format('%s.%s is not a foreign key (it must be the first column of one)', v_rel, pg_catalog.quote_ident(p_fk_column)));
    end if;
    v_parent := privacy.registry_row(v_con.parent);
    if v_parent.id is null then
        perform privacy.fail(pg_catalog.format('%s.%s points at %s, which is not protected: protect it first, so the path leads to a subject',
            v_rel, pg_catalog.quote_ident(p_fk_column), v_con.parent));
    end if;
    perform privacy.register_protected(v_rel, v_parent.subject_type, 'via', v_con.cols, v_con.parent, v_con.parent_cols);
end;
$$;

-- Protects TABLE whose rows the subject's rows point at, through the foreign key
-- REFERENCING_TABLE.COLUMN (customers.address_id -> addresses):
--   select privacy.protect_referenced_by('public.addresses', 'public.customers', 'address_id');
create or replace function privacy.protect_referenced_by(p_table regclass, p_referencing_table regclass, p_column name)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := privacy.resolve_table(p_table::text);
    v_ref regclass := privacy.resolve_table(p_referencing_table::text);
    v_con record;
    v_referencing privacy.protected_tables;
begin
    perform privacy.column_type(v_ref, p_column);
    select array(select a.attname from pg_catalog.unnest(c.conkey) with ordinality k(n, i)
                  join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) as cols,
           array(select a.attname from pg_catalog.unnest(c.confkey) with ordinality k(n, i)
                  join pg_catalog.pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n order by k.i) as own_cols
      into v_con
      from pg_catalog.pg_constraint c
     where c.conrelid = v_ref and c.confrelid = v_rel and c.contype = 'f' and c.conparentid = 0
       and c.conkey[1] = (select a.attnum from pg_catalog.pg_attribute a where a.attrelid = v_ref and a.attname = p_column)
     order by c.conname
     limit 1;
    if v_con is null then
        perform privacy.fail(pg_catalog.format('%s.%s is not a foreign key to %s', v_ref, pg_catalog.quote_ident(p_column), v_rel));
    end if;
    v_referencing := privacy.registry_row(v_ref);
    if v_referencing.id is null then
        perform privacy.fail(pg_catalog.format('%s is not protected: protect it first, so the path leads to a subject', v_ref));
    end if;
    perform privacy.register_protected(v_rel, v_referencing.subject_type, 'referenced_by', v_con.own_cols, v_ref, v_con.cols);
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
begin
    if v.id is null then
        perform privacy.fail(pg_catalog.format('%s is not protected', v_rel));
    end if;
    select pg_catalog.string_agg(privacy.qualified(d.table_schema, d.table_name), ', ') into v_dependent
      from privacy.protected_tables d where (d.parent_schema, d.parent_table) = (v.table_schema, v.table_name);
    if v_dependent is not null then
        perform privacy.fail(pg_catalog.format('%s cannot be unprotected while the paths of %s run through it', v_rel, v_dependent));
    end if;
    if (select s.table_schema = v.table_schema and s.table_name = v.table_name from privacy.subject_types s where s.subject_type = v.subject_type)
       and exists (select 1 from privacy.protected_tables o where o.subject_type = v.subject_type and o.id <> v.id) then
        perform privacy.fail(pg_catalog.format('%s is the root table of subject type %s: unprotect its other tables first', v_rel, v.subject_type));
    end if;
    execute pg_catalog.format('select count(*) from %s where privacy_mark <> 0', v_rel) into v_marked;
    if v_marked > 0 then
        perform privacy.fail(pg_catalog.format('%s holds %s rows under a legal hold or processing restriction: release them before unprotecting', v_rel, v_marked));
    end if;
    perform privacy.drop_enforcement(v, true);
    delete from privacy.protected_tables where id = v.id;
    if v.parent_table is not null then
        perform privacy.enforce(pg_catalog.to_regclass(privacy.qualified(v.parent_schema, v.parent_table)));
    end if;
    if (select s.table_schema = v.table_schema and s.table_name = v.table_name from privacy.subject_types s where s.subject_type = v.subject_type) then
        delete from privacy.subject_types where subject_type = v.subject_type
           and not exists (select 1 from privacy.processing_restrictions r where r.subject_type = v.subject_type);
    end if;
    perform privacy.ledger_append('table_unprotected', v.subject_type, null, null,
        pg_catalog.jsonb_build_object('table', privacy.qualified(v.table_schema, v.table_name), 'path', privacy.describe_path(v)));
end;
$$;

-- Drops the triggers, policies and generated functions of one protected table (and
-- its descendants); with p_drop_column also the privacy_mark column and, where
-- protect turned it on, row-level security.
create or replace function privacy.drop_enforcement(p privacy.protected_tables, p_drop_column boolean)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_rel regclass := pg_catalog.to_regclass(privacy.qualified(p.table_schema, p.table_name));
    v_target oid;
    v_name name;
begin
    if v_rel is not null then
        for v_target in select v_rel::oid union all select d.relid from privacy.descendants(v_rel) d loop
            for v_name in select t.tgname from pg_catalog.pg_trigger t
                           where t.tgrelid = v_target and t.tgname ~ '^(zz_)?privacy_' and t.tgparentid = 0 loop
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
        if p_drop_column then
            execute pg_catalog.format('alter table %s drop column if exists privacy_mark', v_rel);
        end if;
    end if;
    execute pg_catalog.format('drop function if exists privacy.%I() cascade', 'pt_' || p.id || '_row');
    execute pg_catalog.format('drop function if exists privacy.%I() cascade', 'pt_' || p.id || '_insert');
    execute pg_catalog.format('drop function if exists privacy.%I() cascade', 'pt_' || p.id || '_propagate');
    for v_name in select pr.oid::regprocedure::text from pg_catalog.pg_proc pr
                   where pr.pronamespace = 'privacy'::regnamespace and pr.proname in ('pt_' || p.id || '_mark', 'pt_' || p.id || '_subjects') loop
        execute 'drop function if exists ' || v_name;
    end loop;
end;
$$;

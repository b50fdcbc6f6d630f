-- sql/70_export.sql: what a preservation export reads, and its record in the ledger.
--
-- pyctl export reads every row of a subject in every protected table, following the
-- registered paths, in one REPEATABLE READ, READ ONLY transaction, and streams each
-- table with COPY; then it appends the sha256 of its manifest to the ledger. These
-- functions compose the queries (the caller runs them under its own rights), check
-- that the caller's row-level security hid nothing, and write the ledger event.

-- The canonical text form of a subject key (as holds and the ledger store it), or
-- PV002 when the subject type is unknown or the key is not a valid value of its key
-- column's type. The subject need not exist: an export may look for rows left behind.
-- (Definer: stewards may call it without rights on the registry's helpers.)
create or replace function privacy.subject_key(p_subject_type text, p_key text)
    returns text
    stable
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    s privacy.subject_types;
    v_key text;
begin
    select * into s from privacy.subject_types x where x.subject_type = p_subject_type;
    if not found then
        perform privacy.fail(pg_catalog.format('unknown subject type %L', p_subject_type));
    end if;
    if p_key is null or p_key = '' then
        perform privacy.fail('a subject key is required');
    end if;
    begin
        execute pg_catalog.format('select ($1::%s)::text', s.key_type) into v_key using p_key;
    exception when data_exception then
        perform privacy.fail(pg_catalog.format('%L is not a valid %s key (%s)', p_key, p_subject_type, s.key_type));
    end;
    return v_key;
end;
$$;

-- The text of a SELECT of a subject's rows in protected table P_TABLE_ID, following
-- its registered path up to the subject's key: every column but privacy_mark, in
-- table order. It only composes text (identifiers quoted, the key a typed literal);
-- whoever runs it reads with its own rights and row-level security.
--   select privacy.subject_rows_sql(3, 'customer', '42');
-- (Definer: stewards may call it without rights on the generator's helpers.)
create or replace function privacy.subject_rows_sql(p_table_id integer, p_subject_type text, p_key text)
    returns text
    stable
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_key text := privacy.subject_key(p_subject_type, p_key);
    v_rel regclass;
    v_columns text;
    v_where text;
    v_cols name[];
    v_parent_rel oid;
begin
    select * into p from privacy.protected_tables x where x.id = p_table_id;
    if not found then
        perform privacy.fail(pg_catalog.format('no protected table has id %s', p_table_id));
    end if;
    if p.subject_type <> p_subject_type then
        perform privacy.fail(pg_catalog.format('%s holds rows of subject type %s, not %s',
            privacy.qualified(p.table_schema, p.table_name), p.subject_type, p_subject_type));
    end if;
    v_rel := privacy.relation_of(p);
    if v_rel is null then
        perform privacy.fail(pg_catalog.format('protected table %s no longer exists', privacy.qualified(p.table_schema, p.table_name)));
    end if;
    select pg_catalog.string_agg(pg_catalog.format('t.%I', a.attname), ', ' order by a.attnum) into v_columns
      from pg_catalog.pg_attribute a
     where a.attrelid = v_rel and a.attnum > 0 and not a.attisdropped and a.attname <> 'privacy_mark';
    -- Names as they are now (the registry follows columns by number).
    v_cols := privacy.column_names(v_rel, p.attnums);
    if p.path_kind = 'column' then
        v_where := pg_catalog.format('t.%I = %L::%s', v_cols[1], v_key, privacy.column_type(v_rel, v_cols[1]));
    else
        -- via: the foreign key points at the parent's rows of the subject; referenced_by:
        -- the parent's rows of the subject point at these rows.
        select x.relid into v_parent_rel from privacy.protected_tables x where x.id = p.parent_id;
        v_where := pg_catalog.format('(%s) in (select %s from (%s) p)',
            privacy.join_columns('t.{c}', privacy.quoted(v_cols), ', '),
            privacy.join_columns('p.{c}', privacy.quoted(privacy.column_names(v_parent_rel, p.parent_attnums)), ', '),
            privacy.subject_rows_sql(p.parent_id, p_subject_type, v_key));
    end if;
    return pg_catalog.format('select %s from %s t where %s', v_columns, v_rel, v_where);
end;
$$;

-- The number of a subject's rows in protected table P_TABLE_ID, counted as the
-- toolkit's owner and so through nobody's row-level security: an export compares it
-- with what it read, and refuses to pass off a filtered export as complete.
create or replace function privacy.subject_row_count(p_table_id integer, p_subject_type text, p_key text)
    returns bigint
    stable
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_count bigint;
begin
    execute 'select pg_catalog.count(*) from (' || privacy.subject_rows_sql(p_table_id, p_subject_type, p_key) || ') s' into v_count;
    return v_count;
end;
$$;

-- Appends the chain-of-custody record of a preservation export to the ledger: the
-- sha256 of its manifest (which lists every file's sha256) and a summary. Returns
-- the ledger position.
create or replace function privacy.record_export(p_subject_type text, p_key text, p_manifest_sha256 text, p_details jsonb)
    returns bigint
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_key text := privacy.subject_key(p_subject_type, p_key);
begin
    if p_manifest_sha256 is null or p_manifest_sha256 !~ '^[0-9a-f]{64}$' then
        perform privacy.fail(pg_catalog.format('%L is not a sha256 digest (64 lowercase hexadecimal digits)', p_manifest_sha256));
    end if;
    if p_details is not null and pg_catalog.jsonb_typeof(p_details) <> 'object' then
        perform privacy.fail('the details of an export must be a JSON object');
    end if;
    -- The steward's own account of the export: a summary, not a place to store data.
    if pg_catalog.octet_length(coalesce(p_details, '{}')::text) > 65536 then
        perform privacy.fail('the details of an export must stay under 64 kB');
    end if;
    return privacy.ledger_append('subject_exported', p_subject_type, v_key, null,
        coalesce(p_details, '{}'::jsonb) || pg_catalog.jsonb_build_object('manifest_sha256', p_manifest_sha256));
end;
$$;

-- Stewards export (the toolkit's owner may anyway); 90_grants.sql revokes them from PUBLIC.
do $$
begin
    execute pg_catalog.format('grant execute on function privacy.subject_key(text, text), '
        'privacy.subject_rows_sql(integer, text, text), privacy.subject_row_count(integer, text, text), '
        'privacy.record_export(text, text, text, jsonb) to %I', privacy.steward_role());
end;
$$;

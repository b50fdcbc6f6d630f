-- sql/75_digests.sql: prove that held data is what it was when the hold began.
--
-- A row's canonical form is its JSON (to_jsonb, privacy_mark removed), with the
-- settings that shape that text pinned, so it is the same after pg_dump/pg_restore,
-- on a follower and across minor versions, whatever the physical row order: JSON
-- keys are sorted, a type change that keeps values (varchar -> text) keeps the text.
-- A table's digest is the sha256 of its rows' sha256s, sorted.

-- The subject's rows of protected table P_TABLE_ID as (identity, sha256 of the
-- canonical row). With P_COLUMNS and P_ATTNUMS (the table's columns when a hold began,
-- by name and number), of those columns only and under those names: a column added
-- since is no change to held data, a column renamed since is none either, a column
-- dropped since is one. With P_COLUMNS alone (digests taken before 0.2.0), by name.
create or replace function privacy.subject_row_hashes(p_table_id integer, p_subject_type text, p_key text,
                                                      p_columns text[] default null, p_attnums smallint[] default null)
    returns table (row_identity jsonb, row_hash text)
    stable
    set search_path = ''
    set timezone = 'UTC'
    set extra_float_digits = 1
    set intervalstyle = 'postgres'
    set bytea_output = 'hex'
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_doc text;
    v_identity text;
    v_pk text;
begin
    select * into p from privacy.protected_tables x where x.id = p_table_id;
    -- privacy.row_identity() spelled out with the primary key's names, not the table's OID:
    -- on Citus the expression runs on the shards, where that OID means nothing (89_citus.sql).
    select 'pg_catalog.jsonb_build_object(' || pg_catalog.string_agg(pg_catalog.format('%L, r.%I', a.attname, a.attname), ', ' order by a.attnum) || ')'
      into v_pk
      from pg_catalog.pg_index x join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = any (x.indkey)
     where x.indrelid = p.relid and x.indisprimary;
    if p_attnums is not null then
        -- Each column under the name it had, by its number; a dropped one is left out.
        select pg_catalog.format('pg_catalog.jsonb_build_object(%s)', coalesce(pg_catalog.string_agg(
                   pg_catalog.format('%L, r.%I', p_columns[i], a.attname), ', ' order by i), '')),
               'pg_catalog.jsonb_build_object(' || pg_catalog.string_agg(
                   pg_catalog.format('%L, r.%I', p_columns[i], a.attname), ', ' order by i)
                   filter (where a.attnum = any (select pg_catalog.unnest(x.indkey) from pg_catalog.pg_index x
                                                  where x.indrelid = p.relid and x.indisprimary)) || ')'
          into v_doc, v_identity
          from pg_catalog.generate_subscripts(p_attnums, 1) i
          join pg_catalog.pg_attribute a on a.attrelid = p.relid and a.attnum = p_attnums[i] and not a.attisdropped;
        v_identity := coalesce(v_identity, v_doc);
    elsif p_columns is not null then
        v_doc := '(select coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), ''{}'') from pg_catalog.jsonb_each(pg_catalog.to_jsonb(r)) e '
                 || 'where e.key = any (' || pg_catalog.quote_literal(p_columns::text) || '::text[]))';
        v_identity := coalesce(v_pk, v_doc);
    else
        v_doc := 'pg_catalog.to_jsonb(r)';
        v_identity := coalesce(v_pk, v_doc);
    end if;
    return query execute pg_catalog.format(
        'select %s, pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(%s::text, ''UTF8'')), ''hex'') from (%s) r',
        v_identity, v_doc, privacy.subject_rows_sql(p_table_id, p_subject_type, p_key));
end;
$$;

-- Records the digests of a hold's subject in every protected table (privacy.prove_hold
-- calls it, in the transaction after the placement's: the rows are marked, so nobody
-- changes them meanwhile; reading takes no lock beyond ACCESS SHARE).
create or replace function privacy.digest_hold(p_hold_id uuid)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions;
    p privacy.protected_tables;
    v_count bigint;
    v_digest text;
    v_columns text[];
    v_tables jsonb := '[]';
begin
    select * into r from privacy.processing_restrictions x where x.id = p_hold_id and x.kind = 'legal_hold';
    for p in select * from privacy.protected_tables x where x.subject_type = r.subject_type order by x.id loop
        -- One statement per table (placing a hold runs this: it is on the clock): the
        -- rows' hashes, their digest, and both inserts (the foreign key from the rows
        -- to the digest is checked at the statement's end).
        with h as materialized (
            select x.row_identity, x.row_hash from privacy.subject_row_hashes(p.id, r.subject_type, r.subject_key) x
        ), digest as (
            insert into privacy.hold_digests (hold_id, table_schema, table_name, row_count, digest, computed_at, columns, attnums, table_id)
            select p_hold_id, p.table_schema, p.table_name, pg_catalog.count(*),
                   pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                       coalesce(pg_catalog.string_agg(h.row_hash, '' order by h.row_hash), ''), 'UTF8')), 'hex'),
                   pg_catalog.clock_timestamp(),
                   (select pg_catalog.array_agg(a.attname::text order by a.attnum) from pg_catalog.pg_attribute a
                     where a.attrelid = p.relid and a.attnum > 0 and not a.attisdropped and a.attname <> 'privacy_mark'),
                   (select pg_catalog.array_agg(a.attnum order by a.attnum) from pg_catalog.pg_attribute a
                     where a.attrelid = p.relid and a.attnum > 0 and not a.attisdropped and a.attname <> 'privacy_mark'),
                   p.id
              from h
            returning row_count, digest, columns
        ), held_rows as (
            insert into privacy.hold_digest_rows (hold_id, table_schema, table_name, row_identity, row_hash)
            select p_hold_id, p.table_schema, p.table_name, h.row_identity, h.row_hash from h
        )
        select digest.row_count, digest.digest, digest.columns into v_count, v_digest, v_columns from digest;
        if v_count >= 10000 then  -- a large subject: pyctl shows these as the placement goes
            raise notice 'privacy: % rows of % marked and digested', v_count, privacy.qualified(p.table_schema, p.table_name);
        end if;
        v_tables := v_tables || pg_catalog.jsonb_build_object('table', privacy.qualified(p.table_schema, p.table_name),
                                                              'rows', v_count, 'sha256', v_digest, 'columns', v_columns);
    end loop;
    return v_tables;  -- prove_hold enters it in the ledger
end;
$$;

-- The preservation proof of a legal hold: its subject's digests in every protected
-- table, recorded and entered in the ledger (hold_digested). A placement commits the
-- hold first (its rows are marked and refuse every change from then on) and the proof
-- is computed after it, in a transaction of its own, so that a large subject's digest
-- keeps nobody waiting: neither the ledger's other writers nor the subject's own.
-- Resumable: a proof interrupted left nothing and is computed again; idempotent: a hold
-- proved already returns its proof unchanged. What it means: the proof records the
-- subject's rows as they are when it is computed; since the hold's commit they could
-- not be changed or deleted (break-glass changes are journaled), so the only possible
-- difference from the moment the hold began is rows added in between, which a hold
-- allows.
-- Who: stewards (pyctl hold place and hold prove; release_hold and verify_hold first
-- complete a pending proof). Trusts: the hold's id only; the subject and its tables come
-- from the record and the registry.
create or replace function privacy.prove_hold(p_hold_id uuid)
    returns jsonb
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions;
    v_tables jsonb;
begin
    -- Two proofs of one hold (or a proof and its release) wait for each other here.
    select * into r from privacy.processing_restrictions x where x.id = p_hold_id and x.kind = 'legal_hold' for update;
    if not found then
        perform privacy.fail(pg_catalog.format('unknown legal hold %s', p_hold_id));
    end if;
    if exists (select 1 from privacy.hold_digests d where d.hold_id = p_hold_id) then
        return coalesce((select l.payload -> 'tables' from privacy.ledger l  -- (by the ledger's subject index)
                          where (l.subject_type, l.subject_key) = (r.subject_type, r.subject_key)
                            and l.restriction_id = p_hold_id and l.event in ('hold_digested', 'synced_hold_digested')
                          order by l.seq desc limit 1), '[]');
    end if;
    if r.released_at is not null then
        perform privacy.fail(pg_catalog.format('legal hold %s was released without a proof (placed before 0.2.0 or synced without one): '
                                               'its rows are no longer held, a proof computed now would prove nothing', p_hold_id));
    end if;
    v_tables := privacy.digest_hold(p_hold_id);
    perform privacy.ledger_append('hold_digested', r.subject_type, r.subject_key, p_hold_id,
        pg_catalog.jsonb_build_object('tables', v_tables));
    return v_tables;
end;
$$;

-- Active legal holds whose proof has not been computed yet (pyctl hold prove --all).
create or replace function privacy.pending_proofs()
    returns table (hold_id uuid, subject_type text, subject_key text, case_ref text, placed_at timestamptz)
    stable
    set search_path = ''
    language sql
as $$
    select r.id, r.subject_type, r.subject_key, r.case_ref, r.placed_at
      from privacy.processing_restrictions r
     where r.kind = 'legal_hold' and r.released_at is null
       and not exists (select 1 from privacy.hold_digests d where d.hold_id = r.id)
     order by r.placed_at, r.id
$$;

-- Compares a hold's subject's rows now with the digests taken when it began, per
-- protected table: 'unchanged', 'rows added' (allowed under a hold), or 'violation'
-- (rows changed or missing, named by identity). Read-only, so it runs on followers,
-- forks and restored backups as well; there a hold whose proof is still pending is one
-- row, status 'proof pending'. On the primary a pending proof is computed first.
create or replace function privacy.verify_hold(p_hold_id uuid)
    returns table (table_name text, status text, rows_at_hold bigint, rows_now bigint,
                   added bigint, changed jsonb, missing jsonb)
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions;
    d privacy.hold_digests;
    p privacy.protected_tables;
begin
    select * into r from privacy.processing_restrictions x where x.id = p_hold_id;
    if not found or r.kind <> 'legal_hold' then
        perform privacy.fail(pg_catalog.format('unknown legal hold %s', p_hold_id));
    end if;
    -- A restored dump knows its tables anew first (a follower needs not, and cannot).
    if not pg_catalog.pg_is_in_recovery() and pg_catalog.current_setting('transaction_read_only') = 'off'
       and coalesce(pg_catalog.current_setting('privacy.in_ddl_hook', true), 'off') <> 'on' then
        perform privacy.heal();
        if r.released_at is null and not exists (select 1 from privacy.hold_digests x where x.hold_id = p_hold_id) then
            perform privacy.prove_hold(p_hold_id);
        end if;
    end if;
    if not exists (select 1 from privacy.hold_digests x where x.hold_id = p_hold_id) then
        if r.released_at is null then
            table_name := null; status := 'proof pending'; rows_at_hold := null; rows_now := null; added := null;
            changed := '[]'; missing := '[]';
            return next;
            return;
        end if;
        perform privacy.fail(pg_catalog.format('legal hold %s has no digests (placed before this version of the toolkit)', p_hold_id));
    end if;
    for d in select * from privacy.hold_digests x where x.hold_id = p_hold_id order by x.table_schema, x.table_name loop
        rows_at_hold := d.row_count;
        -- The table by its registry id (it may have been renamed since), else by the name it had.
        select * into p from privacy.protected_tables x
         where x.id = d.table_id or (d.table_id is null and (x.table_schema, x.table_name) = (d.table_schema, d.table_name));
        table_name := coalesce(privacy.relation_of(p)::text, privacy.qualified(d.table_schema, d.table_name));
        if p.id is null or privacy.relation_of(p) is null then
            status := 'violation'; rows_now := 0; added := 0; changed := '[]';
            missing := (select coalesce(pg_catalog.jsonb_agg(h.row_identity), '[]') from privacy.hold_digest_rows h
                         where (h.hold_id, h.table_schema, h.table_name) = (d.hold_id, d.table_schema, d.table_name));
            return next;
            continue;
        end if;
        with now_rows as (
            select h.row_identity, h.row_hash, pg_catalog.count(*) as n
              from privacy.subject_row_hashes(p.id, r.subject_type, r.subject_key, d.columns, d.attnums) h group by 1, 2
        ), then_rows as (
            select h.row_identity, h.row_hash, pg_catalog.count(*) as n from privacy.hold_digest_rows h
             where (h.hold_id, h.table_schema, h.table_name) = (d.hold_id, d.table_schema, d.table_name)
             group by 1, 2
        ), compared as (
            -- Identical rows (a table without a primary key) are counted, not joined.
            select coalesce(t.row_identity, w.row_identity) as id, coalesce(t.n, 0) as then_n, coalesce(w.n, 0) as now_n,
                   exists (select 1 from then_rows t2 where t2.row_identity = coalesce(t.row_identity, w.row_identity)) as was_there,
                   exists (select 1 from now_rows w2 where w2.row_identity = coalesce(t.row_identity, w.row_identity)) as is_there
              from then_rows t full join now_rows w on w.row_identity = t.row_identity and w.row_hash = t.row_hash
        )
        select coalesce(pg_catalog.sum(now_n), 0)::bigint,
               coalesce(pg_catalog.sum(now_n - then_n) filter (where now_n > then_n and not was_there), 0)::bigint,
               coalesce(pg_catalog.jsonb_agg(distinct id) filter (where then_n > now_n and is_there), '[]'),
               coalesce(pg_catalog.jsonb_agg(distinct id) filter (where then_n > now_n and not is_there), '[]')
          into rows_now, added, changed, missing
          from compared;
        status := case when pg_catalog.jsonb_array_length(changed) + pg_catalog.jsonb_array_length(missing) > 0 then 'violation'
                       when added > 0 then 'rows added' else 'unchanged' end;
        return next;
    end loop;
end;
$$;

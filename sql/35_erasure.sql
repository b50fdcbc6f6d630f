-- sql/35_erasure.sql: after the hold, disposal (GDPR Art. 5(1)(e) and Art. 17).
--
-- privacy.erase() deletes every row of a subject from every protected table, children
-- before parents, in one transaction; it is refused while a legal hold or a
-- legal-claims restriction (Art. 17(3)(e)) is active, or queued until they end. It
-- leaves one 'erasure' ledger event per subject with per-table row counts and the
-- digest of the erased rows (the row hashes hold digests use), and a tombstone
-- (privacy.erasures) that pyctl sync replays onto forks and restored backups, and
-- re-applies on every sync, since a restore brings rows back.
--
-- Trust: erase(), erase_many(), pending_erasures() and erasure_certificate() are for
-- stewards. They take a subject type and key (checked against the registry), a reason
-- and a reference; the tables come from the registry, who acts from the session. The
-- generated triggers let the erasure's own deletes through (neither refused nor
-- journaled) only for rows whose every subject this transaction's erasure is erasing,
-- by a row in privacy.erasure_in_progress that only the toolkit's owner can write.

-- What stands in the way of erasing a subject now: its active legal holds and
-- legal-claims restrictions, oldest first, as [{kind, id, case | basis, placed_at}].
create or replace function privacy.erasure_blockers(p_subject_type text, p_key text)
    returns jsonb
    stable
    set search_path = ''
    language sql
as $$
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'kind', r.kind, 'id', r.id, 'case', r.case_ref, 'basis', r.basis, 'placed_at', r.placed_at)) order by r.placed_at), '[]')
      from privacy.processing_restrictions r
     where r.subject_type = p_subject_type and r.subject_key = p_key and r.released_at is null
       and (r.kind = 'legal_hold' or r.basis = 'legal-claims')
$$;

-- Blockers in words: 'legal hold <id> (case <ref>), restriction <id> (legal-claims, Art. 17(3)(e))'.
create or replace function privacy.describe_blockers(p_blockers jsonb)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.string_agg(case when b->>'kind' = 'legal_hold'
                                      then pg_catalog.format('legal hold %s (case %s)', b->>'id', b->>'case')
                                      else pg_catalog.format('restriction %s (legal-claims, Art. 17(3)(e))', b->>'id') end, ', ')
      from pg_catalog.jsonb_array_elements(coalesce(p_blockers, '[]')) b
$$;

-- The protected tables of a subject type in an order their rows can be deleted in: a
-- table whose foreign key points at another (via) before that one; a table the rows of
-- another point at (referenced_by) after that one.
create or replace function privacy.erasure_order(p_subject_type text)
    returns table (table_id integer, step integer)
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v_all integer[];
    v_done integer[] := '{}';
    v_next integer[];
    v_step integer := 0;
begin
    select coalesce(pg_catalog.array_agg(x.id order by x.id), '{}') into v_all
      from privacy.protected_tables x where x.subject_type = p_subject_type;
    loop
        select pg_catalog.array_agg(t.id order by t.id) into v_next
          from privacy.protected_tables t
         where t.id = any (v_all) and not t.id = any (v_done)
           and not exists (select 1 from privacy.protected_tables c
                            where c.parent_id = t.id and c.path_kind = 'via' and not c.id = any (v_done))
           and (t.path_kind <> 'referenced_by' or t.parent_id = any (v_done));
        exit when v_next is null;
        foreach table_id in array v_next loop
            v_step := v_step + 1;
            step := v_step;
            return next;
        end loop;
        v_done := v_done || v_next;
    end loop;
    if pg_catalog.cardinality(v_done) < pg_catalog.cardinality(v_all) then
        perform privacy.fail(pg_catalog.format('the paths of subject type %s form a cycle: no order to delete its rows in', p_subject_type));
    end if;
end;
$$;

-- Whether this transaction's erasure is erasing every subject of a row (P_SUBJECTS:
-- [[type, key], ...], from the generated pt_<id>_subjects()): the generated triggers
-- then let its DELETE through, neither refused nor journaled. Only the toolkit's own
-- erasure writes privacy.erasure_in_progress (the owner's only).
create or replace function privacy.erasing(p_subjects jsonb)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.jsonb_typeof(p_subjects) = 'array' and pg_catalog.jsonb_array_length(p_subjects) > 0
       and not exists (select 1 from pg_catalog.jsonb_array_elements(p_subjects) s
                        where not exists (select 1 from privacy.erasure_in_progress e
                                           where e.xact = pg_catalog.pg_current_xact_id_if_assigned()
                                             and e.subject_type = s->>0 and e.subject_key = s->>1))
$$;

-- Orders this transaction against placements and writers of the subject, as a
-- placement does (privacy.refresh_subject): a hold placed concurrently either commits
-- first, and the erasure sees it, or waits until the erasure is done.
create or replace function privacy.lock_subject(p_subject_type text, p_key text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        perform privacy.fail('erasures run at READ COMMITTED isolation, so that they see holds placed concurrently');
    end if;
    perform pg_catalog.pg_advisory_xact_lock(privacy.subject_lock_class(), privacy.writer_bucket(p_subject_type, p_key));
    update privacy.subject_guards set generation = generation + 1 where bucket = privacy.guard_bucket(p_subject_type, p_key);
end;
$$;

-- The work of an erasure, on every protected table of the subject type:
--   'dry_run': each table's rows of the subject (count, digest); nothing changes;
--   'erase':   deletes them, children before parents, and records each erased row's
--              hash under erasure P_ERASURE_ID;
--   'check':   the same, but only if every row found has a hash recorded under
--              P_ERASURE_ID (a copy re-applying its source's erasure): otherwise
--              nothing is deleted and 'conflict' names the tables with other rows.
-- Every row is found along its path before anything is deleted (a referenced_by
-- table's rows are found through the parent rows that point at them), by its path
-- columns, and deleted by them. A referenced_by row still needed elsewhere (another
-- subject's row, an unprotected table, another subject's hold) is kept and counted.
-- Returns {tables: [{table, rows, sha256, kept}], conflict}. Hashes as
-- privacy.subject_row_hashes computes them (same settings pinned).
create or replace function privacy.erase_rows(p_subject_type text, p_key text, p_erasure_id uuid, p_mode text)
    returns jsonb
    volatile
    set search_path = ''
    set timezone = 'UTC'
    set extra_float_digits = 1
    set intervalstyle = 'postgres'
    set bytea_output = 'hex'
    language plpgsql
as $$
declare
    o record;
    p privacy.protected_tables;
    v_rel regclass;
    v_cols text[];
    v_found jsonb := '{}';
    v_rows jsonb;
    v_keys jsonb;
    v_kept jsonb;
    v_del text;
    v_count bigint;
    v_n bigint;
    v_expected bigint;
    v_tables jsonb := '[]';
    v_conflict jsonb := '[]';
    v_unknown bigint;
    k jsonb;
begin
    if p_mode not in ('dry_run', 'erase', 'check') then
        perform privacy.fail(pg_catalog.format('unknown erasure mode %L', p_mode));
    end if;
    -- 1. Find: each row's path columns and hash.
    for o in select x.table_id from privacy.erasure_order(p_subject_type) x order by x.step loop
        select * into p from privacy.protected_tables x where x.id = o.table_id;
        v_rel := privacy.relation_of(p);
        if v_rel is null then
            continue;  -- the table is gone (doctor says so); nothing of it to erase
        end if;
        v_cols := privacy.column_names(v_rel, p.attnums);
        execute pg_catalog.format(
            'select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(%s), '
            'pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.to_jsonb(r)::text, ''UTF8'')), ''hex''))), ''[]'') from (%s) r',
            (select pg_catalog.string_agg(pg_catalog.format('%L, r.%I', c, c), ', ' order by i) from pg_catalog.unnest(v_cols) with ordinality u(c, i)),
            privacy.subject_rows_sql(p.id, p_subject_type, p_key))
          into v_rows;
        v_found := v_found || pg_catalog.jsonb_build_object(p.id::text, v_rows);
        if p_mode = 'check' then
            select pg_catalog.count(*) into v_unknown from pg_catalog.jsonb_array_elements(v_rows) e
             where not exists (select 1 from privacy.erasure_rows x where x.erasure_id = p_erasure_id and x.row_hash = e->>1);
            if v_unknown > 0 then
                v_conflict := v_conflict || pg_catalog.jsonb_build_object('table', v_rel::text, 'rows', pg_catalog.jsonb_array_length(v_rows),
                                                                           'unknown_rows', v_unknown);
            end if;
        end if;
    end loop;
    if pg_catalog.jsonb_array_length(v_conflict) > 0 then
        return pg_catalog.jsonb_build_object('tables', '[]'::jsonb, 'conflict', v_conflict);
    end if;
    -- 2. Delete, in order; the triggers let these deletes through for this subject only.
    if p_mode <> 'dry_run' then
        insert into privacy.erasure_in_progress (xact, subject_type, subject_key)
        values (pg_catalog.pg_current_xact_id(), p_subject_type, p_key) on conflict do nothing;
        perform privacy.citus_declare('erasure', true, p_subject_type, array[p_key]);  -- a Citus shard cannot read erasure_in_progress (sql/89_citus.sql)
    end if;
    for o in select x.table_id from privacy.erasure_order(p_subject_type) x order by x.step loop
        select * into p from privacy.protected_tables x where x.id = o.table_id;
        v_rows := v_found -> (p.id::text);
        continue when v_rows is null;
        v_rel := privacy.relation_of(p);
        v_cols := privacy.column_names(v_rel, p.attnums);
        v_kept := '[]';
        v_count := pg_catalog.jsonb_array_length(v_rows);
        if p_mode <> 'dry_run' and v_count > 0 then
            select pg_catalog.jsonb_agg(distinct e->0) into v_keys from pg_catalog.jsonb_array_elements(v_rows) e;
            v_del := pg_catalog.format('delete from %s t where (%s) in (select %s from pg_catalog.jsonb_populate_recordset(null::%s, $1) k)',
                v_rel, privacy.join_columns('t.{c}', privacy.quoted(v_cols), ', '),
                privacy.join_columns('k.{c}', privacy.quoted(v_cols), ', '), v_rel);
            if p.path_kind = 'referenced_by' then
                begin
                    execute v_del using v_keys;
                exception when foreign_key_violation or sqlstate 'PV001' then
                    -- Shared with other data: one row at a time, keep what is still needed.
                    foreach k in array (select pg_catalog.array_agg(x) from pg_catalog.jsonb_array_elements(v_keys) x) loop
                        begin
                            execute v_del using pg_catalog.jsonb_build_array(k);
                        exception when foreign_key_violation or sqlstate 'PV001' then
                            v_kept := v_kept || pg_catalog.jsonb_build_array(k);
                        end;
                    end loop;
                end;
            else
                execute v_del using v_keys;
                get diagnostics v_n = row_count;
                if v_n > v_count then
                    perform privacy.fail(pg_catalog.format('erasure of %s/%s stopped: %s rows of %s were found, %s would be deleted '
                        '(rows added meanwhile?); nothing was erased, run it again', p_subject_type, p_key, v_count, v_rel, v_n));
                end if;
            end if;
            if pg_catalog.jsonb_array_length(v_kept) > 0 then
                select pg_catalog.jsonb_agg(e) into v_rows from pg_catalog.jsonb_array_elements(v_rows) e where not v_kept @> pg_catalog.jsonb_build_array(e->0);
                v_rows := coalesce(v_rows, '[]');
            end if;
            if p_mode = 'erase' then
                insert into privacy.erasure_rows (erasure_id, table_name, row_hash)
                select p_erasure_id, privacy.qualified(p.table_schema, p.table_name), e->>1 from pg_catalog.jsonb_array_elements(v_rows) e;
            end if;
        end if;
        v_expected := pg_catalog.jsonb_array_length(v_rows);
        v_tables := v_tables || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'table', privacy.qualified(p.table_schema, p.table_name),
            'rows', v_expected,
            'sha256', (select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                           coalesce(pg_catalog.string_agg(e->>1, '' order by e->>1), ''), 'UTF8')), 'hex')
                         from pg_catalog.jsonb_array_elements(v_rows) e),
            'kept', nullif(pg_catalog.jsonb_array_length(v_kept), 0)));
    end loop;
    if p_mode <> 'dry_run' then
        delete from privacy.erasure_in_progress x
         where x.xact = pg_catalog.pg_current_xact_id() and x.subject_type = p_subject_type and x.subject_key = p_key;
        perform privacy.citus_declare('erasure', false, null, null);  -- on Citus (sql/89_citus.sql)
    end if;
    return pg_catalog.jsonb_build_object('tables', v_tables, 'conflict', null);
end;
$$;

-- The text of a SELECT of the rows of many subjects in protected table P_TABLE_ID
-- (keys: $1, text[] of canonical keys), following its registered path as
-- privacy.subject_rows_sql does, with the subject's key first as privacy_subject.
create or replace function privacy.subjects_rows_sql(p_table_id integer)
    returns text
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    s privacy.subject_types;
    v_rel regclass;
    v_parent privacy.protected_tables;
    v_columns text;
    v_cols name[];
begin
    select * into p from privacy.protected_tables x where x.id = p_table_id;
    select * into s from privacy.subject_types x where x.subject_type = p.subject_type;
    v_rel := privacy.relation_of(p);
    if v_rel is null then
        perform privacy.fail(pg_catalog.format('protected table %s no longer exists', privacy.qualified(p.table_schema, p.table_name)));
    end if;
    select pg_catalog.string_agg(pg_catalog.format('t.%I', a.attname), ', ' order by a.attnum) into v_columns
      from pg_catalog.pg_attribute a
     where a.attrelid = v_rel and a.attnum > 0 and not a.attisdropped and a.attname <> 'privacy_mark';
    v_cols := privacy.column_names(v_rel, p.attnums);
    if p.path_kind = 'column' then
        return pg_catalog.format('select (t.%1$I::%2$s)::text as privacy_subject, %3$s from %4$s t where t.%1$I = any (($1::text[])::%5$s[])',
            v_cols[1], s.key_type, v_columns, v_rel, privacy.column_type(v_rel, v_cols[1]));
    end if;
    select * into v_parent from privacy.protected_tables x where x.id = p.parent_id;
    return pg_catalog.format('select p.privacy_subject, %s from %s t join (%s) p on %s',
        v_columns, v_rel, privacy.subjects_rows_sql(p.parent_id),
        privacy.join_pairs('t.{a} = p.{b}', privacy.quoted(v_cols),
                           privacy.quoted(privacy.column_names(privacy.relation_of(v_parent), p.parent_attnums)), ' and '));
end;
$$;

-- Erases many subjects at once (erase_many's fast path): for each protected table one
-- statement finds the rows of all of them and one deletes them, children before
-- parents. Returns {key: [{table, rows, sha256}], ...} and records the row hashes
-- under each subject's erasure (P_IDS, parallel to P_KEYS). Raises on anything it does
-- not handle (a shared row, a foreign key of another table): the caller then erases the
-- subjects one by one.
create or replace function privacy.erase_rows_bulk(p_subject_type text, p_keys text[], p_ids uuid[])
    returns jsonb
    volatile
    set search_path = ''
    set timezone = 'UTC'
    set extra_float_digits = 1
    set intervalstyle = 'postgres'
    set bytea_output = 'hex'
    language plpgsql
as $$
declare
    o record;
    p privacy.protected_tables;
    v_rel regclass;
    v_cols text[];
    v_found jsonb := '{}';
    v_rows jsonb;
    v_keys jsonb;
    v_n bigint;
    v_result jsonb;
    v_empty text := pg_catalog.encode(pg_catalog.sha256(''::bytea), 'hex');
begin
    select pg_catalog.jsonb_object_agg(k, '[]'::jsonb) into v_result from pg_catalog.unnest(p_keys) k;
    for o in select x.table_id from privacy.erasure_order(p_subject_type) x order by x.step loop
        select * into p from privacy.protected_tables x where x.id = o.table_id;
        v_rel := privacy.relation_of(p);
        continue when v_rel is null;
        v_cols := privacy.column_names(v_rel, p.attnums);
        execute pg_catalog.format(
            'select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(r.privacy_subject, pg_catalog.jsonb_build_object(%s), '
            'pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to((pg_catalog.to_jsonb(r) - ''privacy_subject'')::text, ''UTF8'')), ''hex''))), ''[]'') '
            'from (%s) r',
            (select pg_catalog.string_agg(pg_catalog.format('%L, r.%I', c, c), ', ' order by i) from pg_catalog.unnest(v_cols) with ordinality u(c, i)),
            privacy.subjects_rows_sql(p.id))
          into v_rows using p_keys;
        v_found := v_found || pg_catalog.jsonb_build_object(p.id::text, v_rows);
    end loop;
    insert into privacy.erasure_in_progress (xact, subject_type, subject_key)
    select pg_catalog.pg_current_xact_id(), p_subject_type, k from pg_catalog.unnest(p_keys) k on conflict do nothing;
    perform privacy.citus_declare('erasure', true, p_subject_type, p_keys);  -- a Citus shard cannot read erasure_in_progress (sql/89_citus.sql)
    for o in select x.table_id from privacy.erasure_order(p_subject_type) x order by x.step loop
        select * into p from privacy.protected_tables x where x.id = o.table_id;
        v_rows := v_found -> (p.id::text);
        continue when v_rows is null;
        v_rel := privacy.relation_of(p);
        v_cols := privacy.column_names(v_rel, p.attnums);
        if pg_catalog.jsonb_array_length(v_rows) > 0 then
            select pg_catalog.jsonb_agg(distinct e->1) into v_keys from pg_catalog.jsonb_array_elements(v_rows) e;
            execute pg_catalog.format('delete from %s t where (%s) in (select %s from pg_catalog.jsonb_populate_recordset(null::%s, $1) k)',
                v_rel, privacy.join_columns('t.{c}', privacy.quoted(v_cols), ', '),
                privacy.join_columns('k.{c}', privacy.quoted(v_cols), ', '), v_rel) using v_keys;
            get diagnostics v_n = row_count;
            if v_n <> pg_catalog.jsonb_array_length(v_rows) then
                perform privacy.fail(pg_catalog.format('bulk erasure: %s rows of %s found, %s deleted', pg_catalog.jsonb_array_length(v_rows), v_rel, v_n));
            end if;
            insert into privacy.erasure_rows (erasure_id, table_name, row_hash)
            select i.id, privacy.qualified(p.table_schema, p.table_name), e->>2
              from pg_catalog.jsonb_array_elements(v_rows) e
              join rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_ids)) i(k, id) on i.k = e->>0;
        end if;
        select pg_catalog.jsonb_object_agg(k.k, (v_result -> k.k) || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                   'table', privacy.qualified(p.table_schema, p.table_name),
                   'rows', coalesce(g.n, 0), 'sha256', coalesce(g.digest, v_empty))))
          into v_result
          from pg_catalog.unnest(p_keys) k(k)
          left join (select e->>0 as s, pg_catalog.count(*) as n,
                            pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.string_agg(e->>2, '' order by e->>2), 'UTF8')), 'hex') as digest
                       from pg_catalog.jsonb_array_elements(v_rows) e group by 1) g on g.s = k.k;
    end loop;
    delete from privacy.erasure_in_progress x where x.xact = pg_catalog.pg_current_xact_id() and x.subject_type = p_subject_type;
    perform privacy.citus_declare('erasure', false, null, null);  -- on Citus (sql/89_citus.sql)
    return v_result;
end;
$$;

-- Whether a subject still has a row in the root table or in a table with its own key
-- column: the tables where rows of an erased subject come back (a restore, a reused key).
create or replace function privacy.subject_exists(p_subject_type text, p_key text)
    returns boolean
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    s privacy.subject_types;
    v_found boolean;
begin
    select * into s from privacy.subject_types x where x.subject_type = p_subject_type;
    if privacy.root_of(s) is not null then
        execute pg_catalog.format('select exists (select 1 from %s where %I = $1::%s)',
            privacy.root_of(s), (privacy.column_names(s.relid, array[s.key_attnum]))[1], s.key_type) into v_found using p_key;
        if v_found then
            return true;
        end if;
    end if;
    for p in select * from privacy.protected_tables x
              where x.subject_type = p_subject_type and x.path_kind = 'column' and privacy.relation_of(x) is not null loop
        execute pg_catalog.format('select exists (select 1 from %s t where t.%I = $1::%s)', privacy.relation_of(p),
            (privacy.column_names(p.relid, p.attnums))[1], s.key_type) into v_found using p_key;
        if v_found then
            return true;
        end if;
    end loop;
    return false;
end;
$$;

-- Carries out erasure P_ID (pending) now: refused while a hold or a legal-claims
-- restriction is active (naming them: the caller is a steward, or the release of a
-- hold by one); P_CHECK (an erasure replayed from a source) erases only rows whose
-- hashes the source recorded, and returns a conflict instead of raising. Appends the
-- 'erasure' event (or 'synced_erasure', vouched for by P_VOUCH) and marks it erased.
create or replace function privacy.perform_erasure(p_id uuid, p_check boolean, p_vouch jsonb)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    e privacy.erasures;
    v_blockers jsonb;
    v_result jsonb;
begin
    select * into e from privacy.erasures x where x.id = p_id for update;
    if not found or e.state <> 'pending' then
        perform privacy.fail(pg_catalog.format('no pending erasure %s', p_id));
    end if;
    perform privacy.lock_subject(e.subject_type, e.subject_key);
    v_blockers := privacy.erasure_blockers(e.subject_type, e.subject_key);
    if pg_catalog.jsonb_array_length(v_blockers) > 0 then
        if p_check then
            return pg_catalog.jsonb_build_object('id', p_id, 'state', 'pending', 'waiting_for', v_blockers,
                'why', 'kept: ' || privacy.describe_blockers(v_blockers) || ' is active here');
        end if;
        raise exception using errcode = 'PV001',
            message = pg_catalog.format('privacy: erasure of %s/%s refused: %s is active', e.subject_type, e.subject_key,
                                        privacy.describe_blockers(v_blockers)),
            hint = 'A legal hold preserves the data, and a legal-claims restriction keeps it for the subject''s claims (Art. 17(3)(e)): '
                   'erase --after-holds queues the erasure until they are released.';
    end if;
    v_result := privacy.erase_rows(e.subject_type, e.subject_key, p_id, case when p_check then 'check' else 'erase' end);
    if v_result->'conflict' <> 'null' then
        return pg_catalog.jsonb_build_object('id', p_id, 'state', 'pending', 'conflict', v_result->'conflict',
            'why', 'rows of the subject here are not the rows erased at the source (changed or added here): left alone');
    end if;
    return privacy.record_erasure(e, v_result->'tables', p_vouch);
end;
$$;

-- Appends erasure E's 'erasure' event (or 'synced_erasure', vouched for by P_VOUCH) with
-- its per-table counts and digests, and marks it erased; returns {id, state, tables, ...}.
create or replace function privacy.record_erasure(e privacy.erasures, p_tables jsonb, p_vouch jsonb)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_seq bigint;
begin
    v_seq := privacy.ledger_append(case when p_vouch is null then 'erasure' else 'synced_erasure' end,
        e.subject_type, e.subject_key, null,
        coalesce(p_vouch, '{}') || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'erasure_id', e.id, 'reason', e.reason, 'reference', e.reference,
            'requested_by', e.requested_role, 'requested_at', e.requested_at,
            'rows', (select coalesce(pg_catalog.sum((t->>'rows')::bigint), 0) from pg_catalog.jsonb_array_elements(p_tables) t),
            'tables', p_tables)));
    update privacy.erasures
       set state = 'erased', erased_at = pg_catalog.now(), ledger_seq = v_seq, tables = p_tables
     where id = e.id;
    return pg_catalog.jsonb_build_object('id', e.id, 'subject_type', e.subject_type, 'subject_key', e.subject_key,
        'state', 'erased', 'ledger_seq', v_seq, 'tables', p_tables);
end;
$$;

-- Erases a subject: every row of it in every protected table, children before parents,
-- in this transaction, with an 'erasure' ledger event (per-table counts and digests).
-- Refused while a legal hold or a legal-claims restriction is active on it, naming
-- them; with P_AFTER_HOLDS the decision is recorded now and the erasure runs in the
-- transaction that releases the last of them. P_DRY_RUN: the per-table counts and what
-- would stand in the way; nothing changes. Returns {id, state, tables, ...}.
-- (Definer: stewards erase without rights on the tables or the record.)
create or replace function privacy.erase(p_subject_type text, p_key text, p_reason text, p_reference text default null,
                                         p_after_holds boolean default false, p_dry_run boolean default false)
    returns jsonb
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_key text := privacy.subject_key(p_subject_type, p_key);
    v_blockers jsonb;
    v_id uuid;
    e privacy.erasures;
begin
    perform privacy.require_text(p_reason, 'an erasure needs a reason');
    if not coalesce(p_dry_run, false) then
        perform privacy.heal();
    end if;
    if not privacy.subject_exists(p_subject_type, v_key) then
        select * into e from privacy.erasures x where x.subject_type = p_subject_type and x.subject_key = v_key and x.state = 'erased'
         order by x.erased_at desc limit 1;
        if found then
            perform privacy.fail(pg_catalog.format('subject %s/%s was already erased (erasure %s at %s)', p_subject_type, v_key, e.id, e.erased_at));
        end if;
        perform privacy.canonical_key(p_subject_type, v_key);  -- the 'unknown subject' error
    end if;
    if coalesce(p_dry_run, false) then
        return pg_catalog.jsonb_build_object('state', 'dry_run', 'subject_type', p_subject_type, 'subject_key', v_key,
            'waiting_for', privacy.erasure_blockers(p_subject_type, v_key),
            'tables', privacy.erase_rows(p_subject_type, v_key, null, 'dry_run')->'tables');
    end if;
    perform privacy.lock_subject(p_subject_type, v_key);
    v_blockers := privacy.erasure_blockers(p_subject_type, v_key);
    select * into e from privacy.erasures x where x.subject_type = p_subject_type and x.subject_key = v_key and x.state = 'pending';
    if e.id is not null and pg_catalog.jsonb_array_length(v_blockers) > 0 then
        perform privacy.fail(pg_catalog.format('an erasure of %s/%s is already queued (%s, waiting for %s)', p_subject_type, v_key, e.id,
            coalesce(privacy.describe_blockers(v_blockers), 'nothing')));
    end if;
    if pg_catalog.jsonb_array_length(v_blockers) > 0 and not coalesce(p_after_holds, false) then
        raise exception using errcode = 'PV001',
            message = pg_catalog.format('privacy: erasure of %s/%s refused: %s is active', p_subject_type, v_key,
                                        privacy.describe_blockers(v_blockers)),
            hint = 'A legal hold preserves the data, and a legal-claims restriction keeps it for the subject''s claims (Art. 17(3)(e)): '
                   'erase --after-holds queues the erasure until they are released.';
    end if;
    if e.id is null then
        insert into privacy.erasures (subject_type, subject_key, state, reason, reference, requested_by, requested_role, requested_at)
        values (p_subject_type, v_key, 'pending', p_reason, p_reference, session_user, privacy.acting_role(), pg_catalog.now())
        returning id into v_id;
    else
        v_id := e.id;  -- queued earlier and free now: the same decision, carried out
    end if;
    if pg_catalog.jsonb_array_length(v_blockers) > 0 then
        perform privacy.ledger_append('erasure_queued', p_subject_type, v_key, null, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'erasure_id', v_id, 'reason', p_reason, 'reference', p_reference, 'waiting_for', v_blockers)));
        return pg_catalog.jsonb_build_object('id', v_id, 'subject_type', p_subject_type, 'subject_key', v_key,
                                             'state', 'pending', 'waiting_for', v_blockers);
    end if;
    return privacy.perform_erasure(v_id, false, null);
end;
$$;

-- Runs the subject's queued erasure if nothing stands in its way any more (called by
-- the release of a hold or a restriction, in its transaction); null if none ran.
create or replace function privacy.run_pending_erasure(p_subject_type text, p_key text)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_id uuid;
    v_source text;
begin
    select x.id, x.source into v_id, v_source from privacy.erasures x
     where x.subject_type = p_subject_type and x.subject_key = p_key and x.state = 'pending';
    if v_id is null or pg_catalog.jsonb_array_length(privacy.erasure_blockers(p_subject_type, p_key)) > 0 then
        return null;
    end if;
    -- One replayed from a source erases only the rows the source erased.
    return privacy.perform_erasure(v_id, v_source is not null,
        case when v_source is not null then pg_catalog.jsonb_build_object('source', v_source, 'queued', true) end);
end;
$$;

-- Erases many subjects in one transaction; per key: 'erased' (with the erasure's id
-- and tables, and batch: whether all at once or, where something stood in the way of
-- that, one by one), 'skipped' (a hold or a legal-claims restriction is active: named),
-- 'unknown' (no such subject, or already erased), or 'failed' (the error; nothing of
-- that subject was changed).
create or replace function privacy.erase_many(p_subject_type text, p_keys text[], p_reason text, p_reference text default null)
    returns table (subject_key text, outcome text, detail jsonb)
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    k text;
    i integer;
    v_key text;
    v_blockers jsonb;
    v_id uuid;
    v_prior uuid;
    v_keys text[] := '{}';         -- the canonical keys to erase, in order, once each
    v_ids uuid[] := '{}';
    v_seen text[] := '{}';
    v_out jsonb[] := '{}';         -- per input key: [key, outcome, detail], detail null while to be erased
    v_slot integer[] := '{}';      -- per key to erase: its place in v_out
    v_bulk jsonb;
    v_new boolean[] := '{}';       -- per key to erase: whether this call queued it
    v_canonical text[] := '{}';    -- per input key: its canonical form, null where invalid
    v_present text[];
    e privacy.erasures;
begin
    perform privacy.require_text(p_reason, 'an erasure needs a reason');
    if not exists (select 1 from privacy.subject_types s where s.subject_type = p_subject_type) then
        perform privacy.fail(pg_catalog.format('unknown subject type %L', p_subject_type));
    end if;
    perform privacy.heal();
    -- 1. Sort the keys: unknown, already erased, held (skipped), or to be erased.
    foreach k in array coalesce(p_keys, '{}') loop
        begin
            v_canonical := v_canonical || privacy.subject_key(p_subject_type, k);
        exception when sqlstate 'PV002' then
            v_canonical := v_canonical || null::text;
        end;
    end loop;
    -- (which of them have rows, in one statement per table with a key column)
    select coalesce(pg_catalog.array_agg(distinct r.subject_key), '{}') into v_present
      from privacy.rows_of_subjects((select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(p_subject_type, c)), '[]')
                                       from pg_catalog.unnest(v_canonical) c where c is not null)) r;
    for i in 1 .. coalesce(pg_catalog.cardinality(p_keys), 0) loop
        k := p_keys[i];
        v_key := v_canonical[i];
        if v_key is null then
            v_out := v_out || pg_catalog.jsonb_build_array(k, 'unknown', pg_catalog.jsonb_build_object('why',
                case when k is null or k = '' then 'a subject key is required' else pg_catalog.format('%L is not a valid %s key', k, p_subject_type) end));
            continue;
        end if;
        if v_key = any (v_seen) or not v_key = any (v_present) then
            select x.id into v_prior from privacy.erasures x
             where x.subject_type = p_subject_type and x.subject_key = v_key and x.state = 'erased' order by x.erased_at desc limit 1;
            v_out := v_out || pg_catalog.jsonb_build_array(k, 'unknown', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('why',
                case when v_key = any (v_seen) then 'already erased (listed twice)' when v_prior is null then 'no such subject' else 'already erased' end,
                'erasure', v_prior)));
            continue;
        end if;
        v_seen := v_seen || v_key;
        perform privacy.lock_subject(p_subject_type, v_key);
        v_blockers := privacy.erasure_blockers(p_subject_type, v_key);
        if pg_catalog.jsonb_array_length(v_blockers) > 0 then
            v_out := v_out || pg_catalog.jsonb_build_array(k, 'skipped',
                pg_catalog.jsonb_build_object('why', privacy.describe_blockers(v_blockers) || ' is active', 'waiting_for', v_blockers));
            continue;
        end if;
        select x.id into v_id from privacy.erasures x
         where x.subject_type = p_subject_type and x.subject_key = v_key and x.state = 'pending';
        v_new := v_new || (v_id is null);
        if v_id is null then
            insert into privacy.erasures (subject_type, subject_key, state, reason, reference, requested_by, requested_role, requested_at)
            values (p_subject_type, v_key, 'pending', p_reason, p_reference, session_user, privacy.acting_role(), pg_catalog.now())
            returning id into v_id;
        end if;
        v_keys := v_keys || v_key;
        v_ids := v_ids || v_id;
        v_out := v_out || pg_catalog.jsonb_build_array(k, 'erased', null);
        v_slot := v_slot || pg_catalog.cardinality(v_out);
    end loop;
    -- 2. All at once, one statement per table; if anything stands in the way (a shared
    --    row, another table's foreign key), one by one, each in its own subtransaction.
    begin
        v_bulk := case when pg_catalog.cardinality(v_keys) > 0 then privacy.erase_rows_bulk(p_subject_type, v_keys, v_ids) end;
        for i in 1 .. pg_catalog.cardinality(v_keys) loop
            select * into e from privacy.erasures x where x.id = v_ids[i];
            v_out[v_slot[i]] := pg_catalog.jsonb_build_array(v_out[v_slot[i]]->>0, 'erased',
                privacy.record_erasure(e, v_bulk -> v_keys[i], null) || '{"batch": true}');
        end loop;
    exception when others then
        for i in 1 .. pg_catalog.cardinality(v_keys) loop
            begin
                v_out[v_slot[i]] := pg_catalog.jsonb_build_array(v_out[v_slot[i]]->>0, 'erased',
                    privacy.perform_erasure(v_ids[i], false, null) || '{"batch": false}');
            exception when others then
                v_out[v_slot[i]] := pg_catalog.jsonb_build_array(v_out[v_slot[i]]->>0, 'failed',
                    pg_catalog.jsonb_build_object('why', pg_catalog.regexp_replace(sqlerrm, '^privacy: ', '')));
                if v_new[i] then
                    delete from privacy.erasures x where x.id = v_ids[i];  -- not queued: it failed
                end if;
            end;
        end loop;
    end;
    return query select x->>0, x->>1, x->2 from pg_catalog.unnest(v_out) with ordinality u(x, n) order by n;
end;
$$;

-- The queued erasures and what each waits for.
create or replace function privacy.pending_erasures()
    returns table (id uuid, subject_type text, subject_key text, reason text, reference text, requested_by name,
                   requested_at timestamptz, source text, waiting_for jsonb, why text)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select e.id, e.subject_type, e.subject_key, e.reason, e.reference, e.requested_role, e.requested_at, e.source,
           privacy.erasure_blockers(e.subject_type, e.subject_key),
           coalesce('waits for ' || privacy.describe_blockers(privacy.erasure_blockers(e.subject_type, e.subject_key)),
                    case when e.source is not null
                         then 'replayed from a source, but rows here are not the rows erased there: see pyctl sync'
                         else 'nothing active: runs at the next erase of this subject' end)
      from privacy.erasures e
     where e.state = 'pending'
     order by e.requested_at, e.id
$$;

-- The certificate of erasure P_ID: what was destroyed (per-table counts and digests),
-- when, by whom and why, and its ledger entry; with the checks that the entry is in
-- the ledger, its hash covers it, the chain verifies, it records what the tombstone
-- says, the recorded row hashes add up to the digests, and no row of the subject is
-- here now.
create or replace function privacy.erasure_certificate(p_id uuid)
    returns jsonb
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    e privacy.erasures;
    l privacy.ledger;
    v_prev bytea;
    v_recorded jsonb;
    v_checks jsonb;
    v_now jsonb;
begin
    select * into e from privacy.erasures x where x.id = p_id;
    if not found then
        perform privacy.fail(pg_catalog.format('unknown erasure %s', p_id));
    end if;
    if e.state <> 'erased' then
        perform privacy.fail(pg_catalog.format('erasure %s has not run yet: it %s', p_id,
            coalesce('waits for ' || privacy.describe_blockers(privacy.erasure_blockers(e.subject_type, e.subject_key)), 'is pending')));
    end if;
    select * into l from privacy.ledger x where x.seq = e.ledger_seq;
    select x.hash into v_prev from privacy.ledger x where x.seq = e.ledger_seq - 1;
    v_recorded := l.payload;  -- (a synced_erasure records what was erased here, and carries the source's entry)
    v_now := privacy.erase_rows(e.subject_type, e.subject_key, null, 'dry_run')->'tables';
    v_checks := pg_catalog.jsonb_build_object(
        'ledger_entry', l.seq is not null and l.event in ('erasure', 'synced_erasure') and l.subject_type = e.subject_type
                        and l.subject_key = e.subject_key,
        'entry_hash', l.seq is not null and l.prev_hash is not distinct from v_prev
                      and l.hash = pg_catalog.sha256(coalesce(l.prev_hash, ''::bytea) || pg_catalog.convert_to(privacy.ledger_content(l), 'UTF8')),
        'ledger_chain', not exists (select 1 from privacy.verify_ledger()),
        'entry_matches', v_recorded->>'erasure_id' = e.id::text and v_recorded->'tables' = e.tables,
        'row_hashes', not exists (
            select 1 from pg_catalog.jsonb_array_elements(e.tables) t
             where (t->>'rows')::bigint <> (select pg_catalog.count(*) from privacy.erasure_rows r where r.erasure_id = e.id and r.table_name = t->>'table')
                or t->>'sha256' <> (select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                                         coalesce(pg_catalog.string_agg(r.row_hash, '' order by r.row_hash), ''), 'UTF8')), 'hex')
                                      from privacy.erasure_rows r where r.erasure_id = e.id and r.table_name = t->>'table')),
        'still_erased', not exists (select 1 from pg_catalog.jsonb_array_elements(v_now) t where (t->>'rows')::bigint > 0));
    return pg_catalog.jsonb_build_object(
        'certificate', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'erasure_id', e.id, 'subject_type', e.subject_type, 'subject_key', e.subject_key,
            'reason', e.reason, 'reference', e.reference, 'requested_by', e.requested_role, 'requested_at', e.requested_at,
            'erased_at', e.erased_at, 'erased_by', l.acting_role, 'source', e.source,
            'rows', (select coalesce(pg_catalog.sum((t->>'rows')::bigint), 0) from pg_catalog.jsonb_array_elements(e.tables) t),
            'tables', e.tables,
            'ledger', pg_catalog.jsonb_build_object('seq', l.seq, 'event', l.event, 'recorded_at', l.recorded_at,
                                                    'hash', pg_catalog.encode(l.hash, 'hex')),
            'toolkit_version', privacy.toolkit_version())),
        'checks', v_checks,
        'rows_now', v_now,
        'valid', not exists (select 1 from pg_catalog.jsonb_each(v_checks) c where c.value <> 'true'::jsonb));
end;
$$;

-- The rows present here of the subjects P_SUBJECTS ([[type, key], ...]), per protected
-- table with a key column of its own (the root, or a table like activity_log): how a
-- copy's rows of subjects erased elsewhere are found. Answers counts only.
create or replace function privacy.rows_of_subjects(p_subjects jsonb)
    returns table (subject_type text, subject_key text, table_name text, rows bigint)
    stable
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    s privacy.subject_types;
    v_rel regclass;
    v_col name;
begin
    if pg_catalog.jsonb_typeof(p_subjects) is distinct from 'array' then
        perform privacy.fail('subjects must be a JSON array of [type, key] pairs');
    end if;
    -- Read-only, so it runs on a restored dump not healed yet: where a table's OID is not
    -- the one registered, its columns go by the names last seen.
    for s in select * from privacy.subject_types x order by x.subject_type loop
        v_rel := privacy.root_of(s);
        if v_rel is not null then
            v_col := case when v_rel = s.relid then (privacy.column_names(s.relid, array[s.key_attnum]))[1] else s.key_column end;
            return query execute pg_catalog.format(
                'select %L::text, t.%I::text, %L::text, pg_catalog.count(*) from %s t '
                'where t.%I in (select (x->>1)::%s from pg_catalog.jsonb_array_elements($1) x where x->>0 = %L) group by 2',
                s.subject_type, v_col, v_rel::text, v_rel, v_col, s.key_type, s.subject_type) using p_subjects;
        end if;
        for p in select * from privacy.protected_tables x
                  where x.subject_type = s.subject_type and x.path_kind = 'column' and privacy.relation_of(x) is not null
                    and privacy.relation_of(x) is distinct from v_rel order by x.id loop
            v_rel := privacy.relation_of(p);
            v_col := case when v_rel = p.relid then (privacy.column_names(p.relid, p.attnums))[1] else p.columns[1] end;
            return query execute pg_catalog.format(
                'select %L::text, t.%I::text, %L::text, pg_catalog.count(*) from %s t '
                'where t.%I in (select (x->>1)::%s from pg_catalog.jsonb_array_elements($1) x where x->>0 = %L) group by 2',
                s.subject_type, v_col, v_rel::text, v_rel, v_col, s.key_type, s.subject_type) using p_subjects;
        end loop;
    end loop;
end;
$$;

-- Rows here of subjects erased here (or at a source and replayed here): a restore, a
-- rollback or a reused key brought them back. doctor reports them; sync re-erases them.
create or replace function privacy.erased_rows_present()
    returns table (erasure_id uuid, subject_type text, subject_key text, table_name text, rows bigint)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select e.id, r.subject_type, r.subject_key, r.table_name, r.rows
      from privacy.rows_of_subjects((select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(x.subject_type, x.subject_key)), '[]')
                                       from privacy.erasures x where x.state = 'erased')) r
      join lateral (select x.id from privacy.erasures x
                     where x.subject_type = r.subject_type and x.subject_key = r.subject_key and x.state = 'erased'
                     order by x.erased_at desc limit 1) e on true
$$;

-- On a copy (pyctl sync): replays a source's 'erasure' entry E. The row hashes the
-- source sent (P_ROWS: [{erasure_id, table_name, row_hash}]) must add up to the
-- digests the entry records; then the subject's rows here are erased if every one of
-- them is a row the source erased. A hold of this copy's own on the subject keeps them
-- (the erasure waits here, and runs when that hold is released); rows that differ are
-- a conflict, left alone. Returns (outcome, detail).
create or replace function privacy.sync_erasure(p_source text, e privacy.ledger, p_rows jsonb, p_vouch jsonb)
    returns table (outcome text, detail jsonb)
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_id uuid := (e.payload->>'erasure_id')::uuid;
    v_mine privacy.erasures;
    v_rows jsonb;
    t jsonb;
    v_result jsonb;
begin
    if v_id is null then
        return query select 'refused'::text, pg_catalog.jsonb_build_object('why', 'the entry names no erasure');
        return;
    end if;
    if not exists (select 1 from privacy.subject_types s where s.subject_type = e.subject_type) then
        return query select 'refused'::text, pg_catalog.jsonb_build_object('erasure', v_id, 'why', 'unknown subject type ' || e.subject_type);
        return;
    end if;
    select * into v_mine from privacy.erasures x where x.id = v_id;
    if v_mine.state = 'erased' then
        return query select 'already'::text, pg_catalog.jsonb_build_object('erasure', v_id);
        return;
    end if;
    if v_mine.id is null then
        select coalesce(pg_catalog.jsonb_agg(x), '[]') into v_rows from pg_catalog.jsonb_array_elements(coalesce(p_rows, '[]')) x
         where x->>'erasure_id' = v_id::text;
        for t in select x from pg_catalog.jsonb_array_elements(coalesce(e.payload->'tables', '[]')) x loop
            if (select pg_catalog.count(*) from pg_catalog.jsonb_array_elements(v_rows) r where r->>'table_name' = t->>'table') <> (t->>'rows')::bigint
               or (select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(pg_catalog.string_agg(r->>'row_hash', '' order by r->>'row_hash'), ''), 'UTF8')), 'hex')
                     from pg_catalog.jsonb_array_elements(v_rows) r where r->>'table_name' = t->>'table') is distinct from t->>'sha256' then
                return query select 'refused'::text, pg_catalog.jsonb_build_object('erasure', v_id, 'table', t->>'table',
                    'why', 'the row hashes sent do not add up to the digest the entry records');
                return;
            end if;
        end loop;
        if exists (select 1 from privacy.erasures x where x.subject_type = e.subject_type and x.subject_key = e.subject_key and x.state = 'pending') then
            -- This copy queued its own erasure of the subject: the source's replaces it.
            delete from privacy.erasures x where x.subject_type = e.subject_type and x.subject_key = e.subject_key and x.state = 'pending';
        end if;
        insert into privacy.erasures (id, subject_type, subject_key, state, reason, reference, requested_by, requested_role, requested_at, source)
        values (v_id, e.subject_type, e.subject_key, 'pending', coalesce(e.payload->>'reason', 'erased at the source'), e.payload->>'reference',
                e.session_role, e.acting_role, e.recorded_at, p_source);
        insert into privacy.erasure_rows (erasure_id, table_name, row_hash)
        select v_id, r->>'table_name', r->>'row_hash' from pg_catalog.jsonb_array_elements(v_rows) r;
    end if;
    v_result := privacy.perform_erasure(v_id, true, p_vouch || pg_catalog.jsonb_build_object('entry_seq', e.seq));
    if v_result->>'state' = 'erased' then
        return query select 'applied'::text, pg_catalog.jsonb_build_object('erasure', v_id, 'subject', e.subject_type || '/' || e.subject_key,
                                                                           'tables', v_result->'tables');
        return;
    end if;
    perform privacy.ledger_append('sync_conflict', e.subject_type, e.subject_key, null,
        p_vouch || pg_catalog.jsonb_build_object('erasure', v_id, 'why', v_result->>'why'));
    return query select 'conflict'::text, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'erasure', v_id, 'subject', e.subject_type || '/' || e.subject_key, 'operation', 'ERASE',
        'why', v_result->>'why', 'waiting_for', v_result->'waiting_for', 'conflict', v_result->'conflict'));
end;
$$;

-- On every sync: the rows of subjects erased here that came back (a restore, a
-- rollback) are erased again, where they are the rows that were erased and no hold of
-- this copy's keeps them. Returns what was found and done, per subject.
create or replace function privacy.reapply_erasures()
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    r record;
    v_blockers jsonb;
    v_result jsonb;
    v_done jsonb := '[]';
    v_seq bigint;
begin
    -- Erasures replayed from a source that waited (a hold here, rows that differed): again.
    for r in select x.id, x.subject_type, x.subject_key, x.source from privacy.erasures x
              where x.state = 'pending' and x.source is not null order by x.requested_at loop
        if pg_catalog.jsonb_array_length(privacy.erasure_blockers(r.subject_type, r.subject_key)) = 0 then
            v_result := privacy.perform_erasure(r.id, true, pg_catalog.jsonb_build_object('source', r.source, 'retried', true));
            v_done := v_done || pg_catalog.jsonb_build_object('erasure', r.id, 'subject', r.subject_type || '/' || r.subject_key,
                'outcome', case when v_result->>'state' = 'erased' then 'erased' else 'conflict' end, 'why', v_result->>'why');
        end if;
    end loop;
    for r in select distinct x.erasure_id, x.subject_type, x.subject_key from privacy.erased_rows_present() x loop
        perform privacy.lock_subject(r.subject_type, r.subject_key);
        v_blockers := privacy.erasure_blockers(r.subject_type, r.subject_key);
        if pg_catalog.jsonb_array_length(v_blockers) > 0 then
            v_done := v_done || pg_catalog.jsonb_build_object('erasure', r.erasure_id, 'subject', r.subject_type || '/' || r.subject_key,
                'outcome', 'kept', 'why', privacy.describe_blockers(v_blockers) || ' is active here');
            continue;
        end if;
        v_result := privacy.erase_rows(r.subject_type, r.subject_key, r.erasure_id, 'check');
        if v_result->'conflict' <> 'null' then
            v_done := v_done || pg_catalog.jsonb_build_object('erasure', r.erasure_id, 'subject', r.subject_type || '/' || r.subject_key,
                'outcome', 'conflict', 'why', 'rows here are not the rows that were erased', 'conflict', v_result->'conflict');
            continue;
        end if;
        v_seq := privacy.ledger_append('erasure_reapplied', r.subject_type, r.subject_key, null,
            pg_catalog.jsonb_build_object('erasure_id', r.erasure_id, 'tables', v_result->'tables'));
        v_done := v_done || pg_catalog.jsonb_build_object('erasure', r.erasure_id, 'subject', r.subject_type || '/' || r.subject_key,
            'outcome', 'erased again', 'ledger_seq', v_seq, 'tables', v_result->'tables');
    end loop;
    return v_done;
end;
$$;

-- sql/89_citus.sql: holds and restrictions on a Citus cluster (issue 20).
--
-- On a Citus coordinator the toolkit protects tables distributed by the subject key and
-- co-located with the subject's root table. Every shard, on every worker, carries the
-- enforcement itself (Citus copies triggers and policies onto the shards), so it holds
-- for a query through the coordinator (router, multi-shard, INSERT ... SELECT, COPY)
-- and for a role that connects straight to a worker and names a shard.
--
-- What the shards can read decides the design:
-- - A shard's trigger runs on its worker, which has none of the toolkit's coordinator
--   tables (registry, restrictions, ledger, settings). privacy.subject_marks is made a
--   Citus reference table, so a copy of it is on every node and a trigger reads it
--   locally; placement writes it on every node in one distributed transaction
--   (two-phase commit), together with the marks of the subject's rows.
-- - Citus recreates a RESTRICTIVE policy as PERMISSIVE on the shards (measured on
--   13.2.2), where the toolkit's restrictive policy would fail open. A distributed table
--   therefore gets the toolkit's condition as its only policy, permissive; protect
--   refuses a distributed table with policies of its own.
-- - A child reads no parent on another shard: a child must be distributed by the column
--   of its path that holds the subject key, co-located with the root, and its rows take
--   their mark from subject_marks by that column (a --via path is registered as the
--   --column path it amounts to). A reference table may be protected --referenced-by the
--   root table only: placement keeps its rows' marks in privacy.referenced_marks, a
--   reference table too (citus_mark_referenced).
-- - The triggers on the shards name nothing only the coordinator knows: the steward role
--   is written into them, and refusals name the subject but not the hold's id or case.
--   A steward's correction of a restricted row is written down on the shard's node and
--   collected into the ledger later (citus_collect_corrections); break-glass is refused.

-- What Citus makes of a relation: kind 'distributed' (hash), 'reference', 'other'
-- (append or range distributed), or null (a plain table, a Citus local table, or no
-- Citus in this database); its distribution column and co-location group.
create or replace function privacy.citus_table(p_relid oid, out kind text, out dist_column name, out colocation integer)
    stable
    set search_path = ''
    language plpgsql
as $$
begin
    if not exists (select 1 from pg_catalog.pg_extension e where e.extname = 'citus') then
        return;
    end if;
    -- (Dynamic: pg_dist_partition exists only where Citus is installed.)
    execute $q$
        select case when p.partmethod = 'h' then 'distributed'
                    when p.partmethod = 'n' and p.repmodel = 't' then 'reference'
                    when p.partmethod = 'n' then null
                    else 'other' end,
               case when p.partmethod = 'h' then pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)::name end,
               p.colocationid
          from pg_catalog.pg_dist_partition p where p.logicalrelid = $1$q$
      into kind, dist_column, colocation using p_relid;
end;
$$;

-- Every transaction that protects, places or releases on a Citus coordinator: one
-- connection per worker (sequential), so that DDL and function propagation may follow
-- a multi-shard statement in the same transaction ("cannot run function command
-- because there was a parallel operation") and a shard's trigger sees this
-- transaction's own writes to subject_marks; and triggers on distributed tables.
create or replace function privacy.citus_session()
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    if not exists (select 1 from pg_catalog.pg_extension e where e.extname = 'citus') then
        return;
    end if;
    if pg_catalog.current_setting('citus.multi_shard_modify_mode', true) is distinct from 'sequential' then
        begin
            perform pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
        exception when others then
            null;  -- a parallel statement came first in this transaction: Citus says so itself if it matters
        end;
    end if;
    perform pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
end;
$$;

-- Install on a Citus coordinator: the subject marks become a reference table (a copy on
-- every node, for the shards' triggers). Needs the coordinator in the metadata
-- (citus_set_coordinator_host): the toolkit's own tables stay on the coordinator and
-- are joined with that copy there.
create or replace function privacy.citus_setup()
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_coordinator boolean;
begin
    if not exists (select 1 from pg_catalog.pg_extension e where e.extname = 'citus') then
        return;
    end if;
    execute 'select exists (select 1 from pg_catalog.pg_dist_node n where n.groupid = 0)' into v_coordinator;
    if not v_coordinator then
        perform privacy.fail('Citus is installed but the coordinator is not in its metadata: run select citus_set_coordinator_host(''<host>'', <port>) on the coordinator first (the toolkit keeps a reference table that its own tables join on the coordinator)');
    end if;
    if (privacy.citus_table('privacy.subject_marks'::regclass)).kind is null then
        perform privacy.citus_session();
        execute 'select pg_catalog.create_reference_table(''privacy.subject_marks'')';
    end if;
    if (privacy.citus_table('privacy.referenced_marks'::regclass)).kind is null then
        perform privacy.citus_session();
        execute 'select pg_catalog.create_reference_table(''privacy.referenced_marks'')';
    end if;
    if (privacy.citus_table('privacy.citus_declared'::regclass)).kind is null then
        perform privacy.citus_session();
        execute 'select pg_catalog.create_reference_table(''privacy.citus_declared'')';
    end if;
end;
$$;

-- The path protect registers for P_REL on a Citus coordinator: unchanged for a plain
-- table; for a distributed table, the --column path on its distribution column (a
-- --via path through a co-located parent becomes that); anything else is refused,
-- saying what to change.
create or replace function privacy.citus_path(p_rel regclass, p_subject_type text, inout p_kind text, inout p_columns name[],
                                              inout p_parent regclass, inout p_parent_columns name[])
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    t record;
    r record;
    v_root regclass;
    v_key name;
    v_parent record;
    i integer;
    v_policies text;
begin
    select * into t from privacy.citus_table(p_rel);
    if t.kind is null then
        if p_kind = 'referenced_by' and (privacy.citus_table(p_parent)).kind is not null then
            perform privacy.fail(pg_catalog.format('%s: --referenced-by from the Citus table %s is not supported on Citus', p_rel, p_parent));
        end if;
        return;  -- a table Citus does not distribute: protected as on one machine
    end if;
    select pg_catalog.string_agg(pg_catalog.quote_ident(pol.polname), ', ') into v_policies
      from pg_catalog.pg_policy pol where pol.polrelid = p_rel and pol.polname !~ '^privacy_';
    if v_policies is not null then
        perform privacy.fail(pg_catalog.format(
            '%s has row-level security policies of its own (%s): Citus recreates every policy as PERMISSIVE on the shards, '
            'so the toolkit''s condition could not be combined with them there and would fail open. '
            'Drop them (or fold their condition into your grants) before protecting it on Citus', p_rel, v_policies));
    end if;
    select s.relid::regclass, (privacy.column_names(s.relid, array[s.key_attnum]))[1] into v_root, v_key
      from privacy.subject_types s where s.subject_type = p_subject_type;
    if t.kind = 'reference' then
        -- --referenced-by from the subject's root table, distributed by its key: placement
        -- writes each pointed-at row's mark into privacy.referenced_marks (a reference table,
        -- on every node), where the reference table's triggers read it. From the root table
        -- only: a root row is its subject's one row, so no row of a held or restricted
        -- subject can come to point at another row later (a held one may not change, a
        -- restricted one only by a steward, and corrections are refused on Citus); a child
        -- could add rows of a held subject pointing at rows not marked yet.
        if p_kind is distinct from 'referenced_by' then
            perform privacy.fail(pg_catalog.format(
                '%s is a Citus reference table: protect it --referenced-by the subject''s root table if the subjects'' rows point at its rows '
                '(an address table), or, if each of its rows belongs to one subject, give it the subject key, distribute it by that key '
                'co-located with the root table (undistribute_table, then create_distributed_table(..., colocate_with => ...)) and protect it with --column. '
                'Lookup data needs no protection', p_rel));
        end if;
        if p_parent is distinct from v_root or (privacy.citus_table(v_root)).kind is distinct from 'distributed' then
            perform privacy.fail(pg_catalog.format(
                '%s: on Citus --referenced-by is supported from the root table of the subject type (%s), distributed by its key, not from %s '
                '(rows of a held subject added to %s later could point at rows of %s not marked yet, on another node). '
                'Point at it from %s, or give %s the subject key and distribute it co-located with %s',
                p_rel, v_root, p_parent, p_parent, p_rel, v_root, p_rel, v_root));
        end if;
        if pg_catalog.cardinality(p_columns) <> 1 then
            perform privacy.fail(pg_catalog.format('%s: on Citus --referenced-by needs a foreign key of one column', p_rel));
        end if;
        -- The marks are kept by the key's text, as subject keys are (privacy.key_type_problem).
        if privacy.key_type_problem(p_rel, p_columns[1]) is not null then
            perform privacy.fail(pg_catalog.format('%s: on Citus --referenced-by needs a key as a subject''s: %s',
                                                   p_rel, privacy.key_type_problem(p_rel, p_columns[1])));
        end if;
        return;
    end if;
    if exists (select 1 from pg_catalog.pg_class c where c.oid = p_rel and c.relkind = 'p') then
        perform privacy.fail(pg_catalog.format('%s is a distributed partitioned table: the toolkit does not protect those on Citus yet (its partitions'' shards were not tried)', p_rel));
    end if;
    if t.kind <> 'distributed' then
        perform privacy.fail(pg_catalog.format('%s is an append- or range-distributed Citus table: distribute it by the subject key (hash) to protect it', p_rel));
    end if;
    if p_kind = 'referenced_by' then
        perform privacy.fail(pg_catalog.format(
            '%s: --referenced-by is not supported on Citus (the mark of a row that the rows of %s point at would have to be kept on another shard). '
            'If each of its rows belongs to one subject, add the subject key to it, distribute it by that key co-located with the root table and protect it with --column',
            p_rel, p_parent));
    end if;
    if v_root = p_rel then
        if t.dist_column is distinct from v_key then
            perform privacy.fail(pg_catalog.format('%s is distributed by %s, not by its key %s: distribute the root table of a subject type by its key',
                p_rel, t.dist_column, v_key));
        end if;
        return;
    end if;
    select * into r from privacy.citus_table(v_root);
    if r.kind is distinct from 'distributed' then
        perform privacy.fail(pg_catalog.format('%s is distributed but the root table of subject type %s, %s, is not: distribute %s by %s first',
            p_rel, p_subject_type, v_root, v_root, v_key));
    end if;
    if t.colocation is distinct from r.colocation then
        perform privacy.fail(pg_catalog.format(
            '%s is not co-located with %s, the root table of subject type %s: on Citus a protected table''s rows must be on the shard of their subject. '
            'Co-locate it: select update_distributed_table_colocation(%L, colocate_with => %L)',
            p_rel, v_root, p_subject_type, p_rel::text, v_root::text));
    end if;
    if p_kind = 'column' then
        if p_columns[1] is distinct from t.dist_column then
            perform privacy.fail(pg_catalog.format(
                '%s is distributed by %s, not by its path column %s: on Citus a protected table must be distributed by the column that holds the subject key. '
                'Redistribute it: select alter_distributed_table(%L, distribution_column => %L, colocate_with => %L)',
                p_rel, t.dist_column, p_columns[1], p_rel::text, p_columns[1], v_root::text));
        end if;
        return;
    end if;
    -- via: the foreign key's column that points at the parent's distribution column holds the subject key.
    select * into v_parent from privacy.citus_table(p_parent);
    i := pg_catalog.array_position(p_parent_columns, v_parent.dist_column);
    if v_parent.kind is distinct from 'distributed' or i is null or p_columns[i] is distinct from t.dist_column then
        perform privacy.fail(pg_catalog.format(
            '%s is distributed by %s, but its path to %s does not run through that column: on Citus a child must be distributed by the column of its foreign key '
            'that holds the subject key%s, co-located with %s',
            p_rel, t.dist_column, p_parent,
            case when i is not null then pg_catalog.format(' (%s)', p_columns[i]) else pg_catalog.format(' (the foreign key must include %s.%s)', p_parent, v_parent.dist_column) end,
            v_root));
    end if;
    p_kind := 'column';
    p_columns := array[t.dist_column];
    p_parent := null;
    p_parent_columns := null;
end;
$$;

-- Corrections on Citus. A shard's trigger cannot write the ledger or privacy.corrections
-- (they are on the coordinator), so a steward's change to a restricted row is written
-- down on the shard's own node, in the same transaction as the change: into a
-- distributed table per subject type, distributed by the subject key and co-located with
-- the root table, so the row goes to the shard of the same node. The next pyctl command
-- that writes (privacy.heal, which every placement and release also runs) moves what is
-- there into the ledger and privacy.corrections, with who made the change and when.

-- The journal table of a subject type, or null where its name would be too long (then
-- corrections stay refused).
create or replace function privacy.citus_journal_name(p_subject_type text)
    returns name
    immutable
    set search_path = ''
    language sql
as $$ select case when pg_catalog.length(p_subject_type) <= 49 then ('citus_journal_' || p_subject_type)::name end $$;

-- Creates the journal table of P_SUBJECT_TYPE where its root table is distributed (enforce
-- calls it before generating a distributed table's triggers). Returns whether it exists.
create or replace function privacy.citus_ensure_journal(p_subject_type text)
    returns boolean
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    s privacy.subject_types;
    v_name name := privacy.citus_journal_name(p_subject_type);
    v_root regclass;
begin
    select * into s from privacy.subject_types x where x.subject_type = p_subject_type;
    v_root := privacy.root_of(s);
    if v_name is null or v_root is null or (privacy.citus_table(v_root)).kind is distinct from 'distributed' then
        return false;
    end if;
    if pg_catalog.to_regclass('privacy.' || pg_catalog.quote_ident(v_name)) is not null then
        return true;
    end if;
    perform privacy.citus_session();
    execute pg_catalog.format(
        'create table privacy.%I (subject_key %s not null, id bigserial, table_id integer not null, operation text not null, '
        'old_row jsonb not null, new_row jsonb, session_role name not null, acting_role name not null, '
        'changed_at timestamptz not null default pg_catalog.clock_timestamp(), primary key (subject_key, id))',
        v_name, (select pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a
                  where a.attrelid = v_root and a.attnum = s.key_attnum));
    execute pg_catalog.format('revoke all on privacy.%I from public', v_name);
    execute pg_catalog.format('comment on table privacy.%I is %L', v_name,
        'On Citus: stewards'' corrections of restricted rows of ' || p_subject_type || ', written by the shards'' triggers, '
        'until privacy.citus_collect_corrections moves them into the ledger and privacy.corrections.');
    execute 'select pg_catalog.create_distributed_table($1, ''subject_key'', colocate_with => $2)'
      using ('privacy.' || pg_catalog.quote_ident(v_name)), v_root::text;
    return true;
end;
$$;

-- Moves the corrections the shards wrote down into the ledger and privacy.corrections
-- (privacy.journal, with who made each and when), oldest first, and deletes them there:
-- one distributed transaction. One collector at a time. Rows of a table no longer
-- registered are left where they are (a warning says so). Returns how many it moved.
create or replace function privacy.citus_collect_corrections()
    returns integer
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    s privacy.subject_types;
    v_name name;
    r record;
    v_table regclass;
    v_ids bigint[];
    v_count integer := 0;
begin
    if not exists (select 1 from pg_catalog.pg_extension e where e.extname = 'citus') or pg_catalog.pg_is_in_recovery() then
        return 0;
    end if;
    for s in select * from privacy.subject_types x order by x.subject_type loop
        v_name := privacy.citus_journal_name(s.subject_type);
        if v_name is null or pg_catalog.to_regclass('privacy.' || pg_catalog.quote_ident(v_name)) is null then
            continue;
        end if;
        -- One collector at a time, by a lock no other role can take (an advisory lock anyone
        -- could hold and stall every heal: found by an outside attack).
        lock table privacy.corrections in share row exclusive mode;
        perform privacy.citus_session();
        v_ids := '{}';
        for r in execute pg_catalog.format('select j.*, (j.subject_key)::pg_catalog.text as key_text from privacy.%I j '
                                           'order by j.changed_at, j.id', v_name) loop
            v_table := (select privacy.relation_of(x) from privacy.protected_tables x where x.id = r.table_id);
            if v_table is null then
                raise warning 'privacy: a correction of % on Citus names protected table % that is no longer registered: left in privacy.%',
                    s.subject_type || '/' || r.key_text, r.table_id, v_name;
                continue;
            end if;
            begin
                perform privacy.journal(r.table_id, 'correction', v_table, r.operation, r.old_row, r.new_row,
                    pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(s.subject_type, r.key_text)),
                    r.session_role, r.acting_role, r.changed_at);
            exception when others then
                -- One entry that cannot be recorded must not stop every command that writes.
                raise warning 'privacy: a correction of % on Citus (% of % by %, %) could not be recorded: %; left in privacy.%',
                    s.subject_type || '/' || r.key_text, r.operation, v_table, r.acting_role, r.changed_at, sqlerrm, v_name;
                continue;
            end;
            v_ids := v_ids || r.id;
        end loop;
        if pg_catalog.cardinality(v_ids) > 0 then
            execute pg_catalog.format('delete from privacy.%I j where j.id = any ($1)', v_name) using v_ids;
            v_count := v_count + pg_catalog.cardinality(v_ids);
        end if;
    end loop;
    return v_count;
end;
$$;

-- Declares (P_ON) or ends the toolkit's own statements of PURPOSE on the rows of subjects
-- P_KEYS in this distributed transaction, for the shards' triggers
-- (privacy.citus_declared): 'erasure' (their rows deleted, not corrections: nothing
-- written down, no values kept) or 'sync' (a source's correction replayed under sync's
-- break-glass: not a correction of this copy). A shard lets through only the rows of
-- those subjects, changed by the toolkit's owner. The toolkit's owner only; nothing on
-- one machine. The rows must not outlive their statements: transaction numbers start
-- again when the coordinator restarts.
drop function if exists privacy.citus_declare(text, boolean);
create or replace function privacy.citus_declare(p_purpose text, p_on boolean, p_subject_type text, p_keys text[])
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    if not exists (select 1 from pg_catalog.pg_extension e where e.extname = 'citus') then
        return;
    end if;
    perform privacy.citus_session();
    perform 1 from privacy.citus_declared limit 1;  -- a distributed read first: the transaction has its number
    if p_on then
        execute 'insert into privacy.citus_declared (txn_initiator, txn, purpose, subject_type, subject_key) '
                'select t.initiator_node_identifier, t.transaction_number, $1, coalesce($2, ''''), coalesce(k, '''') '
                'from pg_catalog.get_current_transaction_id() t cross join pg_catalog.unnest($3::pg_catalog.text[]) k '
                'on conflict do nothing' using p_purpose, p_subject_type, p_keys;
    else
        execute 'delete from privacy.citus_declared d using pg_catalog.get_current_transaction_id() t '
                'where d.txn_initiator = t.initiator_node_identifier and d.txn = t.transaction_number and d.purpose = $1' using p_purpose;
    end if;
end;
$$;

-- A refusal raised on a shard: only what the row and the trigger know (no registry, no
-- restriction ids on a worker). SQLSTATE PV001 and the 'privacy: ' prefix like every
-- refusal; a restricted role is not told whose row it is.
create or replace function privacy.citus_refuse(p_table text, p_operation text, p_mark smallint, p_subject text,
                                                p_privileged boolean, p_reason text)
    returns void
    volatile
    set search_path = ''
    set client_min_messages = 'notice'  -- the LOG line is for the server log only (privacy.refuse)
    language plpgsql
as $$
declare
    v_kind text := case when p_mark & 1 <> 0 then 'legal hold' else 'a processing restriction' end;
    v_full text := case when p_subject is null then pg_catalog.format('it holds rows of a subject under %s', v_kind)
                        else pg_catalog.format('subject %s is under %s', p_subject, v_kind) end;
    v_shown text;
begin
    if p_reason is not null then
        v_shown := p_reason;
    elsif p_mark >= 2 and not p_privileged then
        v_shown := pg_catalog.format('%s under %s',
            case when p_operation = 'TRUNCATE' then 'it holds rows of a subject' else 'the row''s subject is' end, v_kind);
    else
        v_shown := v_full;
    end if;
    raise log 'privacy: refused % on % by % (session %): %', p_operation, p_table, privacy.acting_role(), session_user, v_full;
    raise exception using
        errcode = 'PV001',
        message = pg_catalog.format('privacy: %s on %s refused: %s', p_operation, p_table, v_shown),
        hint = case when p_mark & 1 <> 0
                    then 'A legal hold preserves the data: nobody may change or delete it until the hold is released.'
                    else 'Restricted data may only be stored until the restriction is released.' end;
end;
$$;

-- TRUNCATE of a protected distributed table (on the coordinator, or from a worker
-- through the distributed table): refused while it holds marked rows. Arguments: the
-- table's name and the steward role.
create or replace function privacy.citus_guard_truncate()
    returns trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_mark smallint;
    v_actor name := privacy.acting_role();
begin
    execute pg_catalog.format('select t.privacy_mark from %s t where t.privacy_mark <> 0 order by t.privacy_mark & 1 desc, t.privacy_mark limit 1',
                              tg_relid::regclass)
      into v_mark;
    if v_mark is not null then
        perform privacy.citus_refuse(tg_argv[0], 'TRUNCATE', v_mark, null,
            exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_actor and (r.rolsuper or r.rolbypassrls))
            or pg_catalog.pg_has_role(v_actor, tg_argv[1], 'MEMBER'), null);
    end if;
    return null;
end;
$$;

-- Re-marks a protected distributed table from subject_marks (what remark_table does on
-- one machine): a join with the reference table, which Citus runs on every shard.
create or replace function privacy.citus_remark_table(p_id integer, p_full boolean)
    returns bigint
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_col text;
    v_count bigint;
    v_more bigint := 0;
begin
    select * into p from privacy.protected_tables where id = p_id;
    perform privacy.citus_session();
    if p.path_kind = 'referenced_by' then
        return privacy.citus_mark_referenced(p_id, null);
    end if;
    v_col := pg_catalog.quote_ident((privacy.column_names(p.relid, p.attnums))[1]);
    execute pg_catalog.format(
        'update %s t set privacy_mark = m.mark from privacy.subject_marks m '
        'where m.subject_type = %L and m.subject_key = t.%s::text and t.privacy_mark is distinct from m.mark',
        privacy.relation_of(p), p.subject_type, v_col);
    get diagnostics v_count = row_count;
    if p_full then
        execute pg_catalog.format(
            'update %s t set privacy_mark = 0 where t.privacy_mark <> 0 and (t.%s)::text not in '
            '(select m.subject_key from privacy.subject_marks m where m.subject_type = %L)',
            privacy.relation_of(p), v_col, p.subject_type);
        get diagnostics v_more = row_count;
    end if;
    return v_count + v_more;
end;
$$;

-- Marks the rows of a reference table protected --referenced-by (citus_path) that the
-- root rows of subjects P_KEYS point at, or (P_KEYS null) every row pointed at by a
-- marked root row or marked now: each takes the OR of the marks of every root row
-- pointing at it (a shared row: all of them), written to privacy.referenced_marks first,
-- where its triggers check the marking statement. Placement calls it after the root
-- table's rows are marked, in the same distributed transaction. Returns the rows changed.
create or replace function privacy.citus_mark_referenced(p_id integer, p_keys text[])
    returns bigint
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_parent privacy.protected_tables;
    v_rel regclass;
    v_parent_rel regclass;
    v_own name;
    v_own_type text;
    v_fk name;
    v_path name;
    v_rows text[];
    v_keys text[];
    v_marks smallint[];
    v_count bigint;
begin
    select * into p from privacy.protected_tables x where x.id = p_id;
    select * into v_parent from privacy.protected_tables x where x.id = p.parent_id;
    v_rel := privacy.relation_of(p);
    v_parent_rel := privacy.relation_of(v_parent);
    if v_rel is null or v_parent_rel is null then
        return 0;
    end if;
    perform privacy.citus_session();
    v_own := (privacy.column_names(p.relid, p.attnums))[1];
    v_own_type := privacy.column_type(v_rel, v_own);
    v_fk := (privacy.column_names(v_parent.relid, p.parent_attnums))[1];
    v_path := (privacy.column_names(v_parent.relid, v_parent.attnums))[1];
    -- The rows to look at.
    if p_keys is null then
        execute pg_catalog.format(
            'select pg_catalog.array_agg(distinct k) from ('
            'select ((r.%1$I)::%6$s)::pg_catalog.text as k from %2$s r where r.privacy_mark <> 0 and r.%1$I is not null '
            'union all select (t.%3$I)::pg_catalog.text from %4$s t where t.privacy_mark <> 0 '
            'union all select m.row_key from privacy.referenced_marks m where m.table_id = %5$s) x',
            v_fk, v_parent_rel, v_own, v_rel, p.id, v_own_type) into v_rows;
    else
        execute pg_catalog.format(
            'select pg_catalog.array_agg(distinct ((r.%1$I)::%5$s)::pg_catalog.text) from %2$s r where r.%3$I = any ($1::pg_catalog.text[]::%4$s[]) and r.%1$I is not null',
            v_fk, v_parent_rel, v_path, privacy.column_type(v_parent_rel, v_path), v_own_type) into v_rows using p_keys;
    end if;
    if v_rows is null then
        return 0;
    end if;
    -- Each row's mark, from every root row pointing at it.
    execute pg_catalog.format(
        'select pg_catalog.array_agg(k), pg_catalog.array_agg(m) from ('
        'select ((r.%1$I)::%3$s)::pg_catalog.text as k, pg_catalog.bit_or(r.privacy_mark)::smallint as m from %2$s r '
        'where r.%1$I = any ($1::pg_catalog.text[]::%3$s[]) and r.privacy_mark <> 0 group by 1) x',
        v_fk, v_parent_rel, v_own_type) into v_keys, v_marks using v_rows;
    delete from privacy.referenced_marks m
     where m.table_id = p.id and m.row_key = any (v_rows) and not m.row_key = any (coalesce(v_keys, '{}'));
    insert into privacy.referenced_marks (table_id, row_key, mark)
    select p.id, u.k, u.m from rows from (pg_catalog.unnest(v_keys), pg_catalog.unnest(v_marks)) u(k, m)
    on conflict (table_id, row_key) do update set mark = excluded.mark where privacy.referenced_marks.mark <> excluded.mark;
    execute pg_catalog.format(
        'update %1$s t set privacy_mark = coalesce((select m.mark from privacy.referenced_marks m '
        'where m.table_id = %2$s and m.row_key = (t.%3$I)::pg_catalog.text), 0) '
        'where t.%3$I = any ($1::pg_catalog.text[]::%4$s[]) and t.privacy_mark is distinct from coalesce((select m.mark from privacy.referenced_marks m '
        'where m.table_id = %2$s and m.row_key = (t.%3$I)::pg_catalog.text), 0)',
        v_rel, p.id, v_own, v_own_type) using v_rows;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- The enforcement of a protected distributed table (privacy.enforcement_plan calls this
-- for one): the same objects, by the same names, as on one machine, built from what a
-- shard can read. Its path is a column holding the subject key (citus_path).
create or replace function privacy.citus_enforcement_plan(p_id integer)
    returns table (step integer, kind text, relid oid, name text, ddl text, shape text)
    stable
    set search_path = ''
    language plpgsql
as $gen$
declare
    p privacy.protected_tables;
    v_rel regclass;
    v_subject privacy.subject_types;
    v_fn text;
    v_col text;
    v_type text;
    v_key_type text;
    v_lookup text;
    v_insert_lookup text;
    v_subject_of text;
    v_privileged text;
    v_table text;
    v_owner name;
    v_toolkit_owner name := (select pg_catalog.pg_get_userbyid(n.nspowner) from pg_catalog.pg_namespace n where n.nspname = 'privacy');
    v_steward name := privacy.steward_role();
    v_step integer := 0;
    v_template text;
    v_check text;
    v_correction text := '''corrections of restricted rows are refused on Citus (a shard cannot journal them): correct the data after the restriction is released''';
    v_purpose_binds text;
    v_purpose_sees text;
    v_purpose_hides text;
    v_reference boolean;
    v_pointing text;
    v_pointed_at text;
    v_journal name;
    v_declared text;
    v_corrector text;
    v_correct_delete text;
    v_correct_update text;
begin
    select * into p from privacy.protected_tables x where x.id = p_id;
    v_rel := privacy.relation_of(p);
    if v_rel is null then
        return;
    end if;
    v_reference := p.path_kind = 'referenced_by' and (privacy.citus_table(v_rel)).kind = 'reference';
    if p.path_kind <> 'column' and not v_reference then
        -- (citus_path registers only column paths, and referenced_by for reference tables; a table distributed after it was protected lands here.)
        perform privacy.fail(pg_catalog.format('%s is protected with a %s path but is distributed by Citus: unprotect it and protect it again', v_rel, p.path_kind));
    end if;
    v_fn := 'privacy.pt_' || p.id;
    select * into v_subject from privacy.subject_types s where s.subject_type = p.subject_type;
    v_col := pg_catalog.quote_ident((privacy.column_names(v_rel, p.attnums))[1]);
    v_type := (select privacy.qualified_type(pg_catalog.format_type(a.atttypid, a.atttypmod))
                 from pg_catalog.pg_attribute a where a.attrelid = v_rel and a.attnum = p.attnums[1]);
    v_key_type := privacy.key_cast_type(v_subject.key_type);
    v_owner := (select pg_catalog.pg_get_userbyid(c.relowner) from pg_catalog.pg_class c where c.oid = v_rel);
    v_table := pg_catalog.quote_literal(v_rel::text);
    v_lookup := pg_catalog.format(
        'select s.mark into v_mark from privacy.subject_marks s where s.subject_type operator(pg_catalog.=) %L '
        'and s.subject_key operator(pg_catalog.=) ({k}::%s)::pg_catalog.text;', p.subject_type, v_key_type);
    v_subject_of := pg_catalog.format('%L operator(pg_catalog.||) ''/'' operator(pg_catalog.||) ({k}::%s)::pg_catalog.text', p.subject_type, v_key_type);
    if v_reference then
        -- A row of a reference table protected --referenced-by: its own mark, kept by placement
        -- (citus_mark_referenced) by its referenced column; whose it is, a node cannot tell.
        v_lookup := pg_catalog.format(
            'select s.mark into v_mark from privacy.referenced_marks s where s.table_id operator(pg_catalog.=) %s '
            'and s.row_key operator(pg_catalog.=) ({k})::pg_catalog.text;', p.id);
        v_subject_of := 'null::pg_catalog.text';
    end if;
    -- Superusers and BYPASSRLS roles, stewards, the table's owner (by the shard's owner,
    -- the same role), as privacy.is_privileged says, without the coordinator's tables.
    v_privileged := pg_catalog.format(
        '(exists (select 1 from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) v_actor and (r.rolsuper or r.rolbypassrls)) '
        'or pg_catalog.pg_has_role(v_actor, %L, ''MEMBER'') '
        'or exists (select 1 from pg_catalog.pg_class c where c.oid operator(pg_catalog.=) tg_relid and pg_catalog.pg_has_role(v_actor, c.relowner, ''USAGE'')))',
        v_steward);
    -- Purposes (sql/33_purposes.sql), written into the shards' triggers and policy like the
    -- steward role (a worker has no privacy.purposes): whether a restriction in mark {m}
    -- binds v_actor (mark_binds: an unscoped restriction binds every role, a scoped one the
    -- roles of its purposes), and what the purposes' restrictive policies would add to the
    -- one permissive policy (below). add_purpose regenerates both.
    select pg_catalog.string_agg(pg_catalog.format(' or (({m} operator(pg_catalog.&) %s::smallint) operator(pg_catalog.<>) 0 '
                                                   'and pg_catalog.pg_has_role(v_actor, %L, ''USAGE''))', 1 << x.bit, x.role_name), '' order by x.bit),
           pg_catalog.string_agg(pg_catalog.format(' or pg_catalog.pg_has_role(%L, ''USAGE'')', x.role_name), '' order by x.bit),
           pg_catalog.string_agg(pg_catalog.format(' and ((privacy_mark & %s::smallint) = 0 or not pg_catalog.pg_has_role(%L, ''USAGE''))',
                                                   1 << x.bit, x.role_name), '' order by x.bit)
      into v_purpose_binds, v_purpose_sees, v_purpose_hides
      from privacy.purposes x;
    v_purpose_binds := '(({m} operator(pg_catalog.&) 2::smallint) operator(pg_catalog.<>) 0' || coalesce(v_purpose_binds, '') || ')';
    v_purpose_sees := case when v_purpose_sees is not null
                           then pg_catalog.format(' or (((privacy_mark & 2::smallint) = 0%s)%s)', v_purpose_sees, v_purpose_hides) else '' end;

    -- A root table that reference tables are protected --referenced-by (citus_mark_referenced
    -- marks them at placement only): a marked row may not point elsewhere, nor go, while it
    -- is marked; else its mark could not follow (a restriction scoped to a purpose leaves
    -- other roles free to change the row). Its columns that point, and the tables.
    select pg_catalog.string_agg(pg_catalog.format('new.%1$I is distinct from old.%1$I', n.attname), ' or '),
           pg_catalog.string_agg(distinct privacy.relation_of(dep)::text, ', ')
      into v_pointing, v_pointed_at
      from privacy.protected_tables dep
      cross join lateral pg_catalog.unnest(privacy.column_names(v_rel, dep.parent_attnums)) n(attname)
     where dep.parent_id = p.id and dep.path_kind = 'referenced_by';

    -- The mark of a subject key (placement and status call it on the coordinator).
    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_mark(%s)', p.id, v_type);
    ddl := pg_catalog.format($f$
create function %s_mark(a1 %s)
    returns smallint
    stable
    set search_path = ''
    language plpgsql
as $body$
declare
    v_mark smallint;
begin
    %s
    return coalesce(v_mark, 0);
end;
$body$$f$, v_fn, v_type, pg_catalog.replace(v_lookup, '{k}', 'a1'));
    shape := ddl;
    return next;

    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_subjects(%s)', p.id, v_type);
    ddl := pg_catalog.format($f$
create function %s_subjects(a1 %s)
    returns jsonb
    stable
    set search_path = ''
    language sql
as $body$
    select case when a1 is null or %L then '[]'::pg_catalog.jsonb
                else pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(%L, (a1::%s)::pg_catalog.text)) end
$body$$f$, v_fn, v_type, v_reference, p.subject_type, case when v_reference then 'text' else v_key_type end);
    shape := ddl;
    return next;

    -- INSERT (every shard): the new row's mark; a restricted subject's rows only a steward
    -- (or the owner) may add. A child reads the mark of its subject's row in the root table,
    -- on the same worker (co-located), FOR SHARE: placement updates that row first, so a
    -- writer waits for a placement in progress (and reads its mark), and a placement waits
    -- for a writer that read the mark before it (and then marks the new row). (Advisory
    -- locks, which order them on one machine, are local to each node.) The root table's own
    -- rows read subject_marks: a placement needs the root row to exist already.
    if v_reference then
        -- A new row of a reference table: no root row points at it yet (a row of that key
        -- does not exist), so it is unmarked. (Not looked up: a refusal here would tell an
        -- application which hidden rows are restricted, where the key is taken anyway.)
        v_insert_lookup := '';
    elsif v_rel is distinct from privacy.root_of(v_subject) then
        -- Without its root row (a role a purpose-scoped restriction does not bind may delete
        -- it; a placement needs it, so none is running), the subject's mark as is.
        v_insert_lookup := pg_catalog.format(
            'select c.privacy_mark into v_mark from %s c where c.%I operator(pg_catalog.=) new.%s for share of c;'
            ' if not found then %s end if;',
            privacy.root_of(v_subject), (privacy.column_names(v_subject.relid, array[v_subject.key_attnum]))[1], v_col,
            pg_catalog.replace(v_lookup, '{k}', 'new.' || v_col));
    else
        v_insert_lookup := pg_catalog.replace(v_lookup, '{k}', 'new.' || v_col);
    end if;
    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_insert()', p.id);
    ddl := pg_catalog.format($f$
create function %1$s_insert()
    returns trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $body$
declare
    v_mark smallint;
    v_actor name;
begin
    %2$s
    new.privacy_mark := coalesce(v_mark, 0);
    if new.privacy_mark operator(pg_catalog.>=) 2 then
        v_actor := privacy.acting_role();
        if %6$s and not %3$s then
            perform privacy.citus_refuse(%4$s, 'INSERT', new.privacy_mark, %5$s, false, null);
        end if;
    end if;
    return new;
end;
$body$$f$, v_fn, v_insert_lookup, v_privileged, v_table,
           pg_catalog.replace(v_subject_of, '{k}', 'new.' || v_col), pg_catalog.replace(v_purpose_binds, '{m}', 'new.privacy_mark'));
    shape := ddl;
    return next;

    -- A steward's (or the owner's) change to a restricted row: written down on the shard's
    -- node for the ledger (citus_ensure_journal, citus_collect_corrections); refused where
    -- there is no journal table (a reference table's trigger runs on every node's copy).
    v_journal := privacy.citus_journal_name(p.subject_type);
    -- The toolkit's own erasure or sync replay of this row's subject (citus_declare), run
    -- as the toolkit's owner: a transaction id alone can be set by anyone on a worker.
    v_declared := pg_catalog.format(
        '(v_actor operator(pg_catalog.=) %L and exists (select 1 from privacy.citus_declared d '
        'cross join pg_catalog.get_current_transaction_id() t '
        'where d.txn_initiator operator(pg_catalog.=) t.initiator_node_identifier and d.txn operator(pg_catalog.=) t.transaction_number '
        'and d.purpose operator(pg_catalog.=) ''{purpose}'' and d.subject_type operator(pg_catalog.=) %L '
        'and d.subject_key operator(pg_catalog.=) %s))',
        v_toolkit_owner, p.subject_type, pg_catalog.format('(old.%s::%s)::pg_catalog.text', v_col, v_key_type));
    if v_reference then
        v_declared := 'false';  -- whose a reference table's row is, a node cannot tell
    end if;
    -- Who may correct on a shard: a member of the steward role, a superuser or a BYPASSRLS
    -- role, as the role Citus connects as (the coordinator's current user: inside a
    -- SECURITY DEFINER function, its owner, so not the table's owner as on one machine).
    v_corrector := pg_catalog.format(
        '(exists (select 1 from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) v_actor and (r.rolsuper or r.rolbypassrls)) '
        'or pg_catalog.pg_has_role(v_actor, %L, ''MEMBER''))', v_steward);
    if not v_reference and v_journal is not null and pg_catalog.to_regclass('privacy.' || pg_catalog.quote_ident(v_journal)) is not null then
        -- (A row whose before and after the ledger could not hold in one entry is refused here,
        -- as journal() would refuse it on one machine, rather than left for the collector.)
        v_correct_delete := pg_catalog.format(
            'if pg_catalog.octet_length(pg_catalog.to_jsonb(old)::pg_catalog.text) > 100000000 then '
            'perform privacy.citus_refuse(%3$s, ''DELETE'', old.privacy_mark, %4$s, true, ''the row is too large to be journaled (over 100 MB)''); end if; '
            'insert into privacy.%1$I (subject_key, table_id, operation, old_row, new_row, session_role, acting_role) '
            'values (old.%2$s, %5$s, ''DELETE'', pg_catalog.to_jsonb(old), null, session_user, v_actor);',
            v_journal, v_col, v_table, pg_catalog.replace(v_subject_of, '{k}', 'old.' || v_col), p.id);
        v_correct_update := pg_catalog.format(
            'if pg_catalog.octet_length(pg_catalog.to_jsonb(old)::pg_catalog.text) '
            'operator(pg_catalog.+) pg_catalog.octet_length(pg_catalog.to_jsonb(new)::pg_catalog.text) > 100000000 then '
            'perform privacy.citus_refuse(%3$s, ''UPDATE'', old.privacy_mark, %4$s, true, ''the row is too large to be journaled (over 100 MB)''); end if; '
            'insert into privacy.%1$I (subject_key, table_id, operation, old_row, new_row, session_role, acting_role) '
            'values (old.%2$s, %5$s, ''UPDATE'', pg_catalog.to_jsonb(old), pg_catalog.to_jsonb(new), session_user, v_actor);',
            v_journal, v_col, v_table, pg_catalog.replace(v_subject_of, '{k}', 'old.' || v_col), p.id);
    else
        v_correct_delete := pg_catalog.format('perform privacy.citus_refuse(%s, ''DELETE'', old.privacy_mark, %s, true, %s);',
            v_table, pg_catalog.replace(v_subject_of, '{k}', 'old.' || v_col), v_correction);
        v_correct_update := pg_catalog.replace(v_correct_delete, '''DELETE''', '''UPDATE''');
    end if;

    -- UPDATE and DELETE of marked rows, and marking statements (every shard). Judged AFTER
    -- the change, as on one machine (sql/20_enforce.sql: a BEFORE UPDATE or DELETE row
    -- trigger makes PostgreSQL lock every row first); an error here undoes the statement
    -- all the same. A row's path is its distribution column, which Citus does not let an
    -- UPDATE change (or, in a reference table, its referenced key, which no other row can
    -- have), so the only mark that can differ from what its path gives is one written by
    -- hand: refused (on one machine a written 1 is put back).
    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_row()', p.id);
    ddl := pg_catalog.format($f$
create function %1$s_row()
    returns trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $body$
declare
    v_mark smallint;
    v_actor name := privacy.acting_role();
    v_privileged boolean;
begin
    v_privileged := %2$s;
    if tg_op = 'DELETE' then
        if old.privacy_mark & 1 <> 0 then
            if not %15$s then
                perform privacy.citus_refuse(%3$s, 'DELETE', old.privacy_mark, %4$s, v_privileged, null);
            end if;
        elsif old.privacy_mark >= 2 and (%14$s or %15$s) then
            null;  -- the toolkit's own erasure, or a sync replaying a source's correction: not a correction here
        elsif old.privacy_mark >= 2 and %16$s then
            %12$s
        elsif old.privacy_mark >= 2 and v_privileged then
            perform privacy.citus_refuse(%3$s, 'DELETE', old.privacy_mark, %4$s, true, %17$L);
        elsif old.privacy_mark >= 2 and %7$s then
            -- (A restriction scoped to purposes the role does not serve leaves it alone.)
            perform privacy.citus_refuse(%3$s, 'DELETE', old.privacy_mark, %4$s, false, null);
        end if;
        if old.privacy_mark <> 0 and %9$s then
            perform privacy.citus_refuse(%3$s, 'DELETE', old.privacy_mark, %4$s, v_privileged, %10$L);
        end if;
        return null;
    end if;
    -- The mark the row must have: its subject's state (subject_marks, written by this same
    -- transaction in a placement).
    %5$s
    v_mark := coalesce(v_mark, 0);
    if new.privacy_mark is distinct from old.privacy_mark and new.privacy_mark = v_mark
       and (pg_catalog.to_jsonb(new) operator(pg_catalog.-) 'privacy_mark'::text)
           operator(pg_catalog.=) (pg_catalog.to_jsonb(old) operator(pg_catalog.-) 'privacy_mark'::text) then
        return null;  -- a marking statement (placement, release): the mark alone, to what the state gives
    end if;
    if old.privacy_mark & 1 <> 0 then
        if not %15$s then
            perform privacy.citus_refuse(%3$s, 'UPDATE', old.privacy_mark, %4$s, v_privileged, null);
        end if;
    elsif old.privacy_mark >= 2 and %15$s then
        null;  -- a sync replaying a source's correction
    elsif old.privacy_mark >= 2 and %16$s then
        %13$s
    elsif old.privacy_mark >= 2 and v_privileged then
        perform privacy.citus_refuse(%3$s, 'UPDATE', old.privacy_mark, %4$s, true, %17$L);
    elsif old.privacy_mark >= 2 and %7$s then
        perform privacy.citus_refuse(%3$s, 'UPDATE', old.privacy_mark, %4$s, false, null);
    end if;
    if v_mark >= 2 and %8$s and not v_privileged then
        perform privacy.citus_refuse(%3$s, 'UPDATE', v_mark, %6$s, false, null);
    end if;
    if old.privacy_mark <> 0 and (%11$s) then
        perform privacy.citus_refuse(%3$s, 'UPDATE', old.privacy_mark, %4$s, v_privileged, %10$L);
    end if;
    if new.privacy_mark is distinct from v_mark then
        perform privacy.citus_refuse(%3$s, 'UPDATE', v_mark, %6$s, v_privileged,
            'privacy_mark is set by the toolkit from the subject''s holds and restrictions, not written by hand');
    end if;
    return null;
end;
$body$$f$, v_fn, v_privileged, v_table, pg_catalog.replace(v_subject_of, '{k}', 'old.' || v_col),
           pg_catalog.replace(v_lookup, '{k}', 'new.' || v_col), pg_catalog.replace(v_subject_of, '{k}', 'new.' || v_col),
           pg_catalog.replace(v_purpose_binds, '{m}', 'old.privacy_mark'), pg_catalog.replace(v_purpose_binds, '{m}', 'v_mark'),
           case when v_pointing is not null then 'true' else 'false' end,
           pg_catalog.format('on Citus a row of a subject under a hold or restriction may not point at another row of %s, nor be deleted, '
                             'while it is: the mark of the row it points at is kept by placement', v_pointed_at),
           coalesce(v_pointing, 'false'), v_correct_delete, v_correct_update,
           pg_catalog.replace(v_declared, '{purpose}', 'erasure'), pg_catalog.replace(v_declared, '{purpose}', 'sync'), v_corrector,
           'on Citus a change to a restricted row is a correction of a steward''s: the shard cannot tell the table''s owner '
           'from a SECURITY DEFINER function of the owner''s that an application calls; correct it as a member of the steward role');
    shape := ddl;
    return next;

    if v_owner is distinct from v_toolkit_owner then
        step := v_step + 1; v_step := step; kind := 'grant'; relid := v_rel; name := 'trigger functions to ' || v_owner;
        ddl := pg_catalog.format('grant execute on function %1$s_insert(), %1$s_row() to %2$I', v_fn, v_owner);
        shape := pg_catalog.format('grant execute on function %1$s_insert(), %1$s_row() to the owner of %2$s', v_fn,
                                   privacy.render(privacy.ph_rel(v_rel), false));
        return next;
    end if;

    -- The toolkit's condition is the table's only policy, PERMISSIVE (Citus makes every
    -- policy permissive on the shards): restricted rows are visible to stewards and the
    -- toolkit's owner; with purposes, the one policy is what privacy_hide_restricted and
    -- each purpose's restrictive policy say together on one machine: a row restricted for
    -- purposes only (bit 1 clear) is visible to a general role, an unscoped one to the
    -- roles of the purposes it excepts, and neither to a role serving a purpose whose bit
    -- the row has.
    v_check := pg_catalog.format('privacy_mark < 2 or pg_catalog.pg_has_role(%L, ''MEMBER'') or pg_catalog.pg_has_role(%L, ''USAGE'')',
                                 v_steward, v_toolkit_owner) || v_purpose_sees;
    for kind, name, v_template in
        select 'trigger', 'zz_privacy_before_insert',
               'create trigger zz_privacy_before_insert before insert on {target} for each row execute function ' || v_fn || '_insert()'
        union all
        select 'trigger', 'Privacy_check_update',
               'create trigger "Privacy_check_update" after update on {target} for each row when (old.privacy_mark <> 0) '
               'execute function ' || v_fn || '_row()'
        union all
        select 'trigger', 'Privacy_check_update_path',
               'create trigger "Privacy_check_update_path" after update of privacy_mark, ' || privacy.ph_col(v_rel, p.attnums[1])
               || ' on {target} for each row when (old.privacy_mark = 0 and (new.privacy_mark <> 0 or new.'
               || privacy.ph_col(v_rel, p.attnums[1]) || ' is distinct from old.' || privacy.ph_col(v_rel, p.attnums[1])
               || ')) execute function ' || v_fn || '_row()'
        union all
        select 'trigger', 'Privacy_check_delete',
               'create trigger "Privacy_check_delete" after delete on {target} for each row when (old.privacy_mark <> 0) '
               'execute function ' || v_fn || '_row()'
        union all
        select 'trigger', 'privacy_before_truncate',
               pg_catalog.format('create trigger privacy_before_truncate before truncate on {target} for each statement '
                                 'execute function privacy.citus_guard_truncate(%L, %L)', v_rel::text, v_steward)
        union all
        select 'rls', 'row level security', 'alter table {target} enable row level security'
        union all
        select 'grant', 'schema usage to the steward role',
               pg_catalog.format('grant usage on schema %I to %I',
                   (select n.nspname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_rel),
                   v_steward)
        union all
        select 'grant', 'table privileges to the steward role',
               pg_catalog.format('grant select, insert, update, delete on {target} to %I', v_steward)
        union all
        select 'policy', 'privacy_hide_restricted',
               pg_catalog.format('create policy privacy_hide_restricted on {target} as permissive for all to public using (%s) with check (%s)',
                                 v_check, v_check)
    loop
        step := v_step + 1; v_step := step; relid := v_rel;
        v_template := pg_catalog.replace(v_template, '{target}', privacy.ph_rel(v_rel));
        ddl := privacy.render(v_template, true); shape := privacy.render(v_template, false);
        return next;
    end loop;
end;
$gen$;

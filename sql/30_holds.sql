-- sql/30_holds.sql: placing and releasing legal holds and processing restrictions.

-- The subject key in its canonical text form (privacy.subject_key, sql/70_export.sql),
-- or a clear error when no row of the root table has that key.
create or replace function privacy.canonical_key(p_subject_type text, p_key text)
    returns text
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    s privacy.subject_types;
    v_root regclass;
    v_column name;
    v_key text;
    v_found boolean;
begin
    select * into s from privacy.subject_types x where x.subject_type = p_subject_type;
    if not found then
        perform privacy.fail(pg_catalog.format('unknown subject type %L', p_subject_type));
    end if;
    if p_key is null or p_key = '' then
        perform privacy.fail('a subject key is required');
    end if;
    v_root := privacy.root_of(s);
    if v_root is null then
        perform privacy.fail(pg_catalog.format('the root table of subject type %s, %s, no longer exists', p_subject_type,
            privacy.qualified(s.table_schema, s.table_name)));
    end if;
    v_column := (privacy.column_names(s.relid, array[s.key_attnum]))[1];
    begin  -- (one statement: placing a hold is on the clock)
        execute pg_catalog.format('select ($1::%1$s)::pg_catalog.text, exists (select 1 from %2$s where %3$I = $1::%1$s)',
            s.key_type, v_root, v_column) into v_key, v_found using p_key;
    exception when data_exception then
        perform privacy.fail(pg_catalog.format('%L is not a valid %s key (%s)', p_key, p_subject_type, s.key_type));
    end;
    if not v_found then
        perform privacy.fail(pg_catalog.format('unknown subject %s/%s: no row in %s with %s = %L', p_subject_type, p_key,
            v_root, pg_catalog.quote_ident(v_column), p_key));
    end if;
    return v_key;
end;
$$;

-- Whether placement marks protected table P_ID's rows itself, in one statement for all
-- the subjects of a placement (privacy.refresh_subjects), rather than its parent's
-- propagation trigger row by row: a table on a column path, or on a one-column via
-- path to the one-column primary key of such a table. Its parent then reads it once,
-- whether or not its path column has an index (a trigger would scan it once for every
-- parent row).
create or replace function privacy.marked_in_bulk(p_id integer)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    with recursive up as (
        select x.id, x.path_kind, x.parent_id, x.attnums, x.parent_attnums from privacy.protected_tables x where x.id = p_id
        union all
        select x.id, x.path_kind, x.parent_id, x.attnums, x.parent_attnums
          from privacy.protected_tables x join up on x.id = up.parent_id
         where up.path_kind = 'via'
    )
    select coalesce(pg_catalog.bool_and(case
               when u.path_kind = 'column' then true
               when u.path_kind = 'via' then pg_catalog.cardinality(u.attnums) = 1
                    and exists (select 1 from pg_catalog.pg_index x join privacy.protected_tables p on p.relid = x.indrelid
                                 where p.id = u.parent_id and x.indisprimary and x.indnatts = 1
                                   and pg_catalog.cardinality(u.parent_attnums) = 1 and x.indkey[0] = u.parent_attnums[1])
               else false end), false)
      from up u
$$;

-- The statement by which placement marks the rows of a list of subjects in protected
-- table P_ID, or null where the triggers mark them row by row (not marked_in_bulk). A
-- column path: from the subjects' marks ($1 keys as text, $2 their marks). A via path:
-- from its parent's rows, which are marked already (one join up the path to the column
-- the keys are in). privacy.remember_fingerprint keeps it in the registry with the
-- fingerprint of the catalog it was made for.
create or replace function privacy.marking_sql(p_id integer)
    returns text
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;        -- each table up the path, from P_ID
    v_parent privacy.protected_tables;
    v_rel regclass;
    v_from text := '';
    v_where text;
    i integer := 0;
begin
    select * into p from privacy.protected_tables x where x.id = p_id;
    v_rel := privacy.relation_of(p);
    if v_rel is null or not privacy.marked_in_bulk(p_id) then
        return null;
    end if;
    if p.path_kind = 'column' then
        return pg_catalog.format('update %s t set privacy_mark = u.mark '
                                 'from rows from (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int2[])) u(k, mark) '
                                 'where t.%I = u.k::%s and t.privacy_mark is distinct from u.mark',
            v_rel, (privacy.column_names(p.relid, p.attnums))[1],
            (select pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a where a.attrelid = p.relid and a.attnum = p.attnums[1]));
    end if;
    while p.path_kind = 'via' loop
        -- p's path column = its parent's (one-column) primary key
        i := i + 1;
        select * into v_parent from privacy.protected_tables x where x.id = p.parent_id;
        if privacy.relation_of(v_parent) is null then
            return null;
        end if;
        if i = 1 then
            v_from := pg_catalog.format('from %s p1', privacy.relation_of(v_parent));
            v_where := pg_catalog.format('t.%I = p1.%I', (privacy.column_names(p.relid, p.attnums))[1],
                                         (privacy.column_names(v_parent.relid, p.parent_attnums))[1]);
        else
            v_from := v_from || pg_catalog.format(' join %s p%s on p%s.%I = p%s.%I', privacy.relation_of(v_parent), i,
                                                  i - 1, (privacy.column_names(p.relid, p.attnums))[1],
                                                  i, (privacy.column_names(v_parent.relid, p.parent_attnums))[1]);
        end if;
        p := v_parent;
    end loop;
    return pg_catalog.format('update %s t set privacy_mark = p1.privacy_mark %s where %s and p%s.%I = any ($1::pg_catalog.text[]::%s[]) '
                             'and t.privacy_mark is distinct from p1.privacy_mark',
        v_rel, v_from, v_where, i, (privacy.column_names(p.relid, p.attnums))[1],
        (select pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a where a.attrelid = p.relid and a.attnum = p.attnums[1]));
end;
$$;

-- True while privacy.refresh_subjects marks this transaction's subjects table by table
-- (the propagation triggers leave the marked_in_bulk tables to it).
create or replace function privacy.marking_in_bulk()
    returns boolean
    stable
    set search_path = ''
    language sql
as $$ select exists (select 1 from privacy.marking_in_progress m where m.xact = pg_catalog.pg_current_xact_id_if_assigned()) $$;

-- Brings subjects' marks in line with their active holds and restrictions: updates
-- subject_marks, bumps each subject's guard bucket (so concurrent writers serialize
-- behind this transaction) and re-marks their rows in every protected table, from
-- which the triggers propagate along via and referenced-by paths. One statement per
-- table for all the keys (distinct, canonical): a list of custodians costs what its
-- rows cost, not a planned statement per key and table. Returns the marks, in order.
create or replace function privacy.refresh_subjects(p_subject_type text, p_keys text[])
    returns smallint[]
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_marks smallint[];
    p privacy.protected_tables;
    v_fingerprint text;
    v_bulk boolean;
    v_sql text;
    v_attempt integer;
begin
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        perform privacy.fail('holds and restrictions are placed and released at READ COMMITTED isolation, so that rows written concurrently are marked too');
    end if;
    -- A writer that locked one of the subjects' rows and then waits for the subject's
    -- lock (its trigger) deadlocks with us if we hold that lock and wait for the row:
    -- then everything this attempt took is given back and it starts again.
    for v_attempt in 1 .. 5 loop
        begin
            -- First, so that writers which checked these subjects before us finish first, and
            -- those after us see our marks (privacy.subject_lock_class, sql/20_enforce.sql).
            -- In bucket order: two placements of overlapping lists wait, not deadlock.
            perform pg_catalog.pg_advisory_xact_lock(privacy.subject_lock_class(), b.bucket)
               from (select distinct privacy.writer_bucket(p_subject_type, k) as bucket from pg_catalog.unnest(p_keys) k order by 1) b;
            update privacy.subject_guards set generation = generation + 1
             where bucket in (select privacy.guard_bucket(p_subject_type, k) from pg_catalog.unnest(p_keys) k);
            -- With their purpose bits (sql/33_purposes.sql).
            select pg_catalog.array_agg(privacy.subject_mark(p_subject_type, u.k) order by u.i) into v_marks
              from pg_catalog.unnest(p_keys) with ordinality u(k, i);
            delete from privacy.subject_marks m using rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(v_marks)) u(k, mark)
             where u.mark = 0 and m.subject_type = p_subject_type and m.subject_key = u.k;
            insert into privacy.subject_marks (subject_type, subject_key, mark)
            select p_subject_type, u.k, u.mark from rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(v_marks)) u(k, mark) where u.mark <> 0
            on conflict (subject_type, subject_key) do update set mark = excluded.mark;
            -- One statement per table, the tables whose own column holds the key first, then,
            -- for a list of subjects or where a one-column via table's path column has no
            -- index, each such table below them, parents first (each read once; its triggers
            -- check every mark written; the propagation triggers leave them to us while
            -- marking_in_progress says so). One subject, with indexes: the propagation
            -- triggers mark the rows below (their statements' plans are cached, a statement
            -- here is planned at every call). The statements as the registry keeps them for
            -- the catalog as it is (heal() ran first), else made now.
            v_fingerprint := (select s.value from privacy.settings s where s.name = 'enforcement_fingerprint');
            v_bulk := pg_catalog.cardinality(p_keys) > 1 or exists (
                select 1 from privacy.protected_tables x
                 where x.subject_type = p_subject_type and x.path_kind = 'via'
                   and (x.marking_sql_for is distinct from v_fingerprint
                        or (x.marking_sql is not null
                            and not exists (select 1 from pg_catalog.pg_index i where i.indrelid = x.relid and i.indkey[0] = x.attnums[1]))));
            if v_bulk then
                insert into privacy.marking_in_progress (xact) values (pg_catalog.pg_current_xact_id()) on conflict do nothing;
            end if;
            for p in
                with recursive tree as (
                    select x.id, 0 as depth from privacy.protected_tables x where x.subject_type = p_subject_type and x.path_kind = 'column'
                    union all
                    select x.id, tree.depth + 1 from privacy.protected_tables x join tree on x.parent_id = tree.id where x.path_kind = 'via')
                select x.* from tree join privacy.protected_tables x on x.id = tree.id
                 where v_bulk or tree.depth = 0
                 order by tree.depth, x.id
            loop
                v_sql := case when p.marking_sql_for = v_fingerprint then p.marking_sql else privacy.marking_sql(p.id) end;
                if v_sql is not null then
                    execute v_sql using p_keys, v_marks;
                end if;
            end loop;
            if v_bulk then
                delete from privacy.marking_in_progress m where m.xact = pg_catalog.pg_current_xact_id();
            end if;
            -- On Citus, the reference tables protected --referenced-by the root table, after
            -- it (sql/89_citus.sql; on one machine the root's triggers mark them).
            for p in select x.* from privacy.protected_tables x
                      where x.subject_type = p_subject_type and x.path_kind = 'referenced_by' order by x.id loop
                if (privacy.citus_table(p.relid)).kind = 'reference' then
                    perform privacy.citus_mark_referenced(p.id, p_keys);
                end if;
            end loop;
            return v_marks;
        exception when deadlock_detected then
            if v_attempt = 5 then
                raise;
            end if;
            perform pg_catalog.pg_sleep(0.01 * v_attempt);
        end;
    end loop;
    return v_marks;
end;
$$;

-- The same for one subject.
create or replace function privacy.refresh_subject(p_subject_type text, p_key text)
    returns smallint
    volatile
    set search_path = ''
    language sql
as $$ select (privacy.refresh_subjects(p_subject_type, array[p_key]))[1] $$;

-- The subjects of a list of keys, canonical and without repeats; refuses the whole
-- list if any key is unknown, naming every one (a single key: its own message).
create or replace function privacy.canonical_keys(p_subject_type text, p_keys text[])
    returns text[]
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    k text;
    s privacy.subject_types;
    v_keys text[] := '{}';
    v_unknown text[] := '{}';
    v_message text;
begin
    if p_keys is null or pg_catalog.cardinality(p_keys) = 0 then
        perform privacy.fail('no subject key given');
    end if;
    if pg_catalog.cardinality(p_keys) = 1 then
        return array[privacy.canonical_key(p_subject_type, p_keys[1])];
    end if;
    -- All at once, in one statement; where a key is not of the key's type (or blank), one
    -- by one below, to name every such key.
    select * into s from privacy.subject_types x where x.subject_type = p_subject_type;
    if found and privacy.root_of(s) is not null and pg_catalog.array_position(p_keys, null) is null
       and pg_catalog.array_position(p_keys, '') is null then
        begin
            execute pg_catalog.format('select pg_catalog.array_agg(distinct c.k order by c.k) filter (where c.found), '
                                      '       pg_catalog.array_agg(c.raw order by c.i) filter (where not c.found) '
                                      '  from (select u.raw, u.i, (u.raw::%1$s)::pg_catalog.text as k, '
                                      '               exists (select 1 from %2$s r where r.%3$I = u.raw::%1$s) as found '
                                      '          from pg_catalog.unnest($1::pg_catalog.text[]) with ordinality u(raw, i)) c',
                s.key_type, privacy.root_of(s), (privacy.column_names(s.relid, array[s.key_attnum]))[1])
              into v_keys, v_unknown using p_keys;
            if v_unknown is null then
                return v_keys;
            end if;
            perform privacy.fail(pg_catalog.format('%s of %s keys are not known subjects of type %s, nothing was placed: %s%s',
                pg_catalog.cardinality(v_unknown), pg_catalog.cardinality(p_keys), p_subject_type,
                pg_catalog.array_to_string(v_unknown[1:50], ', '),
                case when pg_catalog.cardinality(v_unknown) > 50 then pg_catalog.format(' (and %s more)', pg_catalog.cardinality(v_unknown) - 50) else '' end));
        exception when data_exception or feature_not_supported then
            -- A key not of the type, or a statement Citus cannot run on a distributed root
            -- table (a correlated subquery beside a set-returning function): one by one.
            v_keys := '{}'; v_unknown := '{}';
        end;
    end if;
    foreach k in array p_keys loop
        begin
            v_keys := v_keys || privacy.canonical_key(p_subject_type, k);
        exception when others then
            if sqlstate not in ('PV002', '22P02', '22003', '22007', '22008') then  -- unknown, or not a key of its type
                raise;
            end if;
            v_unknown := v_unknown || coalesce(k, 'NULL');
            v_message := sqlerrm;
        end;
    end loop;
    if pg_catalog.cardinality(v_unknown) > 0 then
        perform privacy.fail(pg_catalog.format('%s of %s keys are not known subjects of type %s, nothing was placed: %s%s',
            pg_catalog.cardinality(v_unknown), pg_catalog.cardinality(p_keys), p_subject_type,
            pg_catalog.array_to_string(v_unknown[1:50], ', '),
            case when pg_catalog.cardinality(v_unknown) > 50 then pg_catalog.format(' (and %s more)', pg_catalog.cardinality(v_unknown) - 50) else '' end));
    end if;
    return array(select distinct x from pg_catalog.unnest(v_keys) x order by 1);
end;
$$;

-- Places one legal hold per key (a custodian list), in one transaction: every key
-- must be a known subject or nothing is placed. Each hold gets its rows marked and
-- its hold_placed ledger entry, exactly as place_hold. The holds are in force when
-- this commits; each one's preservation proof (its digests, sql/75_digests.sql) is
-- computed next, in a transaction of its own: privacy.prove_hold, which pyctl runs
-- right after, and release_hold and verify_hold run first where it is still pending.
-- Appending takes the ledger's lock until commit (every other placement, release,
-- refusal and export needs it), so the entries come last.
create or replace function privacy.place_holds(p_subject_type text, p_keys text[], p_case text, p_reason text)
    returns table (subject_key text, hold_id uuid)
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_keys text[];
    v_ids uuid[] := '{}';
    v_id uuid;
    i integer;
begin
    perform privacy.heal();  -- a partition attached or a table renamed since: enforced first
    perform privacy.require_text(p_case, 'a legal hold needs a case reference');
    perform privacy.require_text(p_reason, 'a legal hold needs a reason');
    v_keys := privacy.canonical_keys(p_subject_type, p_keys);
    for i in 1 .. pg_catalog.cardinality(v_keys) loop
        insert into privacy.processing_restrictions (kind, subject_type, subject_key, case_ref, reason, placed_by, placed_role)
        values ('legal_hold', p_subject_type, v_keys[i], p_case, p_reason, session_user, privacy.acting_role())
        returning id into v_id;
        v_ids := v_ids || v_id;
    end loop;
    perform privacy.refresh_subjects(p_subject_type, v_keys);
    perform privacy.guard_held_relations(p_subject_type);  -- DROP of what they hold refused (55_ddl_guards.sql)
    for i in 1 .. pg_catalog.cardinality(v_keys) loop
        perform privacy.ledger_append('hold_placed', p_subject_type, v_keys[i], v_ids[i],
            pg_catalog.jsonb_build_object('case', p_case, 'reason', p_reason));
        subject_key := v_keys[i]; hold_id := v_ids[i];
        return next;
    end loop;
end;
$$;

-- Places a legal hold on one subject: until released, none of its rows in any
-- protected table can be changed or deleted, by anyone. Returns the hold's id; its
-- proof is pending until privacy.prove_hold(id) has run (pyctl hold place runs it).
create or replace function privacy.place_hold(p_subject_type text, p_key text, p_case text, p_reason text)
    returns uuid
    volatile
    security definer
    set search_path = ''
    language sql
as $$ select h.hold_id from privacy.place_holds(p_subject_type, array[p_key], p_case, p_reason) h $$;

-- Places one processing restriction (GDPR Art. 18) per key, in one transaction; every
-- key must be a known subject or nothing is placed. Until released, the subjects' rows
-- are invisible to restricted roles, who can neither change them nor add rows.
create or replace function privacy.place_restrictions(p_subject_type text, p_keys text[], p_basis text, p_reason text)
    returns table (subject_key text, restriction_id uuid)
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_keys text[];
    v_ids uuid[] := '{}';
    v_id uuid;
    i integer;
begin
    perform privacy.heal();  -- a partition attached or a table renamed since: enforced first
    if p_basis is null or p_basis not in ('accuracy', 'unlawful', 'legal-claims', 'objection') then
        perform privacy.fail(pg_catalog.format('basis %L is not one of accuracy, unlawful, legal-claims, objection (GDPR Art. 18(1)(a)-(d))', p_basis));
    end if;
    perform privacy.require_text(p_reason, 'a restriction needs a reason');
    v_keys := privacy.canonical_keys(p_subject_type, p_keys);
    for i in 1 .. pg_catalog.cardinality(v_keys) loop
        insert into privacy.processing_restrictions (kind, subject_type, subject_key, basis, reason, placed_by, placed_role)
        values ('restriction', p_subject_type, v_keys[i], p_basis, p_reason, session_user, privacy.acting_role())
        returning id into v_id;
        v_ids := v_ids || v_id;
    end loop;
    perform privacy.refresh_subjects(p_subject_type, v_keys);
    for i in 1 .. pg_catalog.cardinality(v_keys) loop
        perform privacy.ledger_append('restriction_placed', p_subject_type, v_keys[i], v_ids[i],
            pg_catalog.jsonb_build_object('basis', p_basis, 'reason', p_reason));
        subject_key := v_keys[i]; restriction_id := v_ids[i];
        return next;
    end loop;
end;
$$;

-- Places a processing restriction (GDPR Art. 18) on one subject, for every application
-- role. Returns its id. (The form with purposes and exceptions: sql/33_purposes.sql.)
create or replace function privacy.place_restriction(p_subject_type text, p_key text, p_basis text, p_reason text)
    returns uuid
    volatile
    security definer
    set search_path = ''
    language plpgsql  -- (not sql: the form it calls is created later, by 33_purposes.sql)
as $$
begin
    return privacy.place_restriction(p_subject_type, p_key, p_basis, p_reason, null::text[], null::text[]);
end;
$$;

-- The lifecycle steps a restriction's release requires, by basis (GDPR Art. 18):
-- accuracy: verified, subject notified (18(3)), approval recorded; objection:
-- verified, notified; unlawful and legal-claims: notified.
create or replace function privacy.required_steps(p_basis text)
    returns text[]
    immutable
    set search_path = ''
    language sql
as $$
    select case p_basis
        when 'accuracy' then array['verify', 'notify', 'approve']
        when 'objection' then array['verify', 'notify']
        else array['notify']
    end
$$;

-- The required steps a restriction has not been through yet, in order.
create or replace function privacy.missing_steps(r privacy.processing_restrictions)
    returns text[]
    stable
    set search_path = ''
    language sql
as $$
    select coalesce(pg_catalog.array_agg(s order by i), '{}')
      from pg_catalog.unnest(privacy.required_steps(r.basis)) with ordinality u(s, i)
     where (s = 'verify' and r.verified_at is null)
        or (s = 'notify' and r.notified_at is null)
        or (s = 'approve' and r.approved_at is null)
$$;

-- The active hold or restriction P_ID, locked, or a clear error.
create or replace function privacy.active_entry(p_id uuid, p_kind text)
    returns privacy.processing_restrictions
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions;
    v_label text := case p_kind when 'legal_hold' then 'legal hold' else 'restriction' end;
begin
    select * into r from privacy.processing_restrictions x where x.id = p_id for update;
    if not found or r.kind <> p_kind then
        perform privacy.fail(pg_catalog.format('unknown %s %s', v_label, p_id));
    end if;
    if r.released_at is not null then
        perform privacy.fail(pg_catalog.format('%s %s was already released at %s', v_label, p_id, r.released_at));
    end if;
    return r;
end;
$$;

-- Records one lifecycle step of a restriction, in order, once.
create or replace function privacy.restriction_step(p_id uuid, p_step text, p_text text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions := privacy.active_entry(p_id, 'restriction');
    v_actor name := privacy.acting_role();
begin
    perform privacy.require_text(p_text, pg_catalog.format('the %s step needs %s', p_step,
        case p_step when 'verify' then 'a note' when 'notify' then 'the channel the subject was told through' else 'the evidence of approval' end));
    if p_step = 'verify' then
        if r.verified_at is not null then
            perform privacy.fail(pg_catalog.format('restriction %s was already verified at %s', p_id, r.verified_at));
        elsif r.notified_at is not null then
            perform privacy.fail(pg_catalog.format('restriction %s: verify comes before the subject is notified', p_id));
        end if;
        update privacy.processing_restrictions
           set verified_at = pg_catalog.now(), verified_by = v_actor, verification_note = p_text, state = 'verified'
         where id = p_id;
    elsif p_step = 'notify' then
        if r.notified_at is not null then
            perform privacy.fail(pg_catalog.format('the subject of restriction %s was already notified at %s', p_id, r.notified_at));
        elsif r.verified_at is null and 'verify' = any (privacy.required_steps(r.basis)) then
            perform privacy.fail(pg_catalog.format('restriction %s (%s): verify before notifying the subject', p_id, r.basis));
        end if;
        update privacy.processing_restrictions
           set notified_at = pg_catalog.now(), notified_by = v_actor, notified_via = p_text, state = 'notified'
         where id = p_id;
    elsif p_step = 'approve' then
        if r.approved_at is not null then
            perform privacy.fail(pg_catalog.format('approval for restriction %s was already recorded at %s', p_id, r.approved_at));
        elsif r.notified_at is null then
            perform privacy.fail(pg_catalog.format('restriction %s: notify the subject (Art. 18(3)) before recording approval', p_id));
        end if;
        update privacy.processing_restrictions
           set approved_at = pg_catalog.now(), approved_by = v_actor, approval_evidence = p_text, state = 'approved'
         where id = p_id;
    else
        perform privacy.fail(pg_catalog.format('unknown lifecycle step %L', p_step));
    end if;
    perform privacy.ledger_append(
        case p_step when 'verify' then 'restriction_verified' when 'notify' then 'subject_notified' else 'release_approved' end,
        r.subject_type, r.subject_key, p_id,
        pg_catalog.jsonb_build_object(case p_step when 'verify' then 'note' when 'notify' then 'via' else 'evidence' end, p_text));
end;
$$;

-- Art. 18 lifecycle, step 1: accuracy checked, data corrected, or the controller's grounds assessed.
create or replace function privacy.verify_restriction(p_id uuid, p_note text)
    returns void
    volatile
    security definer
    set search_path = ''
    language sql
as $$ select privacy.restriction_step(p_id, 'verify', p_note) $$;

-- Step 2: the subject was informed that the restriction will be lifted (Art. 18(3)).
create or replace function privacy.notify_subject(p_id uuid, p_via text)
    returns void
    volatile
    security definer
    set search_path = ''
    language sql
as $$ select privacy.restriction_step(p_id, 'notify', p_via) $$;

-- Step 3: the subject's approval to resume processing is recorded.
create or replace function privacy.approve_release(p_id uuid, p_evidence text)
    returns void
    volatile
    security definer
    set search_path = ''
    language sql
as $$ select privacy.restriction_step(p_id, 'approve', p_evidence) $$;

-- Releases a legal hold, with the reason and the reference (case closed, counsel's
-- instruction); other holds on the subject stay in force.
create or replace function privacy.release_hold(p_id uuid, p_reason text, p_reference text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions := privacy.active_entry(p_id, 'legal_hold');
begin
    perform privacy.heal();
    perform privacy.require_text(p_reason, 'releasing a legal hold needs a reason');
    perform privacy.require_text(p_reference, 'releasing a legal hold needs a reference (the order, counsel''s instruction, the closing of the case)');
    -- A hold whose proof is still pending gets it now, while its rows are still held.
    if not exists (select 1 from privacy.hold_digests d where d.hold_id = p_id) then
        perform privacy.prove_hold(p_id);
    end if;
    update privacy.processing_restrictions
       set state = 'released', released_at = pg_catalog.now(), released_by = session_user,
           released_role = privacy.acting_role(),
           release_reason = p_reason, release_reference = p_reference
     where id = p_id;
    perform privacy.refresh_subject(r.subject_type, r.subject_key);
    perform privacy.guard_held_relations(r.subject_type);
    perform privacy.ledger_append('hold_released', r.subject_type, r.subject_key, p_id,
        pg_catalog.jsonb_build_object('reason', p_reason, 'reference', p_reference));
    -- The last hold gone: an erasure queued with --after-holds runs now, in this transaction.
    perform privacy.run_pending_erasure(r.subject_type, r.subject_key);
end;
$$;

-- Releases a processing restriction once every step its basis requires is done;
-- with p_force and a reason, releases it anyway and records that it was forced.
create or replace function privacy.release_restriction(p_id uuid, p_reason text default null, p_force boolean default false)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions := privacy.active_entry(p_id, 'restriction');
    v_missing text[] := privacy.missing_steps(r);
begin
    perform privacy.heal();
    if pg_catalog.cardinality(v_missing) > 0 and not coalesce(p_force, false) then
        perform privacy.fail(pg_catalog.format(
            'release of restriction %s (%s) refused: missing step(s) %s; complete them, or force the release with a reason',
            p_id, r.basis, pg_catalog.array_to_string(v_missing, ', ')));
    end if;
    if coalesce(p_force, false) and (p_reason is null or pg_catalog.btrim(p_reason) = '') then
        perform privacy.fail('a forced release needs a reason');
    end if;
    update privacy.processing_restrictions
       set state = 'released', released_at = pg_catalog.now(), released_by = session_user,
           released_role = privacy.acting_role(),
           release_reason = coalesce(p_reason, 'lifecycle complete'),
           release_forced = coalesce(p_force, false) and pg_catalog.cardinality(v_missing) > 0
     where id = p_id;
    perform privacy.refresh_subject(r.subject_type, r.subject_key);
    perform privacy.ledger_append('restriction_released', r.subject_type, r.subject_key, p_id,
        pg_catalog.jsonb_build_object('reason', coalesce(p_reason, 'lifecycle complete'),
            'forced', coalesce(p_force, false) and pg_catalog.cardinality(v_missing) > 0,
            'missing_steps', pg_catalog.to_jsonb(v_missing)));
    -- A legal-claims restriction kept a queued erasure waiting (Art. 17(3)(e)).
    perform privacy.run_pending_erasure(r.subject_type, r.subject_key);
end;
$$;

-- Break-glass: lets the calling steward change rows under legal hold, in this
-- transaction only (a court-ordered correction). Every row it touches is journaled.
create or replace function privacy.break_glass(p_reason text)
    returns bigint
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_seq bigint;
begin
    perform privacy.require_text(p_reason, 'break-glass needs a reason');
    if not pg_catalog.pg_has_role(privacy.acting_role(), privacy.steward_role(), 'MEMBER') then
        perform privacy.fail('break-glass is for stewards only');
    end if;
    select b.ledger_seq into v_seq from privacy.break_glass b where b.xact = pg_catalog.pg_current_xact_id();
    if found then
        return v_seq;
    end if;
    v_seq := privacy.ledger_append('break_glass', null, null, null, pg_catalog.jsonb_build_object('reason', p_reason));
    insert into privacy.break_glass (xact, session_role, acting_role, reason, declared_at, ledger_seq)
    values (pg_catalog.pg_current_xact_id(), session_user, privacy.acting_role(), p_reason, pg_catalog.now(), v_seq);
    return v_seq;
end;
$$;

-- The break-glass reason in force in this transaction for whoever is acting, if it
-- was declared by a steward (who must still be one) or by pyctl sync.
create or replace function privacy.break_glass_reason()
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select b.reason from privacy.break_glass b
     where b.xact = pg_catalog.pg_current_xact_id_if_assigned()
       and (b.for_sync or pg_catalog.pg_has_role(privacy.acting_role(), privacy.steward_role(), 'MEMBER'))
$$;

-- The ledger payload's own keys without the nulls, but the values as they are: a
-- column set to NULL is a change the record must keep (jsonb_strip_nulls would drop it).
create or replace function privacy.strip_null_keys(p jsonb)
    returns jsonb
    immutable
    set search_path = ''
    language sql
as $$ select coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), '{}') from pg_catalog.jsonb_each(p) e where e.value <> 'null'::jsonb $$;

-- Journals a steward's change to a restricted subject's row (a correction) or a
-- change under break-glass: row identity, changed columns before and after, the
-- restrictions or holds in force; in privacy.corrections and the ledger. Only the
-- generated trigger functions call it (the owner's only): the row comes from the
-- statement being run, the table from the registry, who acts from the session; or
-- privacy.citus_collect_corrections, with who and when as a Citus shard's trigger wrote
-- them down (sql/89_citus.sql).
drop function if exists privacy.journal(integer, text, oid, text, jsonb, jsonb, jsonb);
create or replace function privacy.journal(
        p_table_id integer, p_kind text, p_relid oid, p_operation text, p_old jsonb, p_new jsonb, p_subjects jsonb,
        p_session_role name default null, p_acting_role name default null, p_changed_at timestamptz default null)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_old jsonb := p_old - 'privacy_mark';
    v_new jsonb := p_new - 'privacy_mark';
    v_before jsonb;
    v_after jsonb;
    v_ids uuid[];
    v_seq bigint;
    v_reason text;
    v_identity jsonb;
begin
    select * into p from privacy.protected_tables x where x.id = p_table_id;
    if p.id is null then
        perform privacy.fail(pg_catalog.format('protected table %s is not registered', p_table_id));
    end if;
    if p_operation = 'DELETE' and privacy.erasing(p_subjects) then
        return;  -- the toolkit's erasure: its ledger event records counts and digests, never the values
    end if;
    if p_operation = 'UPDATE' then
        select pg_catalog.jsonb_object_agg(o.key, o.value), pg_catalog.jsonb_object_agg(o.key, v_new -> o.key)
          into v_before, v_after
          from pg_catalog.jsonb_each(v_old) o
         where o.value is distinct from v_new -> o.key;
        if v_before is null then
            return;  -- nothing but the mark changed
        end if;
    else
        v_before := v_old;
    end if;
    -- The protected table, not the partition: a replay goes through the parent.
    v_identity := privacy.row_identity(p.relid, v_old);
    select pg_catalog.array_agg(r.id order by r.placed_at) into v_ids
      from privacy.processing_restrictions r
      join pg_catalog.jsonb_array_elements(coalesce(p_subjects, '[]')) s on r.subject_type = s->>0 and r.subject_key = s->>1
     where r.released_at is null and r.kind = case p_kind when 'correction' then 'restriction' else 'legal_hold' end;
    if p_kind = 'break_glass' then
        v_reason := privacy.break_glass_reason();
    end if;
    v_seq := privacy.ledger_append(case p_kind when 'correction' then 'correction' else 'break_glass_change' end,
        p_subjects->0->>0, p_subjects->0->>1, v_ids[1],
        privacy.strip_null_keys(pg_catalog.jsonb_build_object(
            'table', privacy.relation_of(p)::text, 'operation', p_operation, 'row', v_identity,
            'before', v_before, 'after', v_after, 'under', pg_catalog.to_jsonb(coalesce(v_ids, '{}')), 'reason', v_reason,
            'changed_at', p_changed_at,
            'changed_by', case when p_acting_role is not null
                               then pg_catalog.jsonb_build_object('session_role', p_session_role, 'acting_role', p_acting_role) end)));
    insert into privacy.corrections (recorded_at, kind, table_schema, table_name, operation, row_identity,
                                     before_values, after_values, subject_type, subject_key, restriction_ids,
                                     session_role, acting_role, ledger_seq)
    values (coalesce(p_changed_at, pg_catalog.clock_timestamp()), p_kind, p.table_schema, p.table_name, p_operation, v_identity, v_before, v_after,
            p_subjects->0->>0, p_subjects->0->>1, coalesce(v_ids, '{}'), coalesce(p_session_role, session_user),
            coalesce(p_acting_role, privacy.acting_role()), v_seq);
end;
$$;

-- Cheap predicates for the application's own jobs, e.g. a retention purge:
--   delete from orders where created_at < now() - interval '7 years'
--      and not privacy.is_held('customer', customer_id);
create or replace function privacy.is_held(p_subject_type text, p_key text)
    returns boolean
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select exists (select 1 from privacy.subject_marks s
                    where s.subject_type = p_subject_type and s.subject_key = p_key and s.mark & 1 <> 0)
$$;

create or replace function privacy.is_held(p_subject_type text, p_key bigint)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$ select privacy.is_held(p_subject_type, p_key::text) $$;

create or replace function privacy.is_held(p_subject_type text, p_key uuid)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$ select privacy.is_held(p_subject_type, p_key::text) $$;

create or replace function privacy.is_restricted(p_subject_type text, p_key text)
    returns boolean
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select exists (select 1 from privacy.subject_marks s
                    where s.subject_type = p_subject_type and s.subject_key = p_key and s.mark >= 2)
$$;

create or replace function privacy.is_restricted(p_subject_type text, p_key bigint)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$ select privacy.is_restricted(p_subject_type, p_key::text) $$;

create or replace function privacy.is_restricted(p_subject_type text, p_key uuid)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$ select privacy.is_restricted(p_subject_type, p_key::text) $$;


-- sql/20_enforce.sql: the generator of one protected table's enforcement.
--
-- privacy.enforcement_plan() says what a protected table's enforcement consists of:
-- every view, function, trigger, policy and grant, in order, with its DDL. enforce()
-- carries it out; enforcement_status() (40_status.sql) checks the catalog against the
-- same plan, so what is generated and what is expected cannot disagree.
--
-- What survives a rename: every reference one protected table's enforcement makes to
-- another table goes through that table's view privacy.pt_<id>_v, whose columns are
-- named c<column number>; views follow their tables by OID and their columns by number.
-- So renaming a protected table, its schema or a column of another table changes
-- nothing. The trigger functions of a table name its own path columns (NEW.customer_id):
-- renaming one of those makes the plan differ, status says so, and privacy.heal()
-- (which every pyctl command and every placement runs first) regenerates it.
--
-- Trust: the trigger functions are SECURITY DEFINER. Nobody can call a trigger
-- function directly, and nobody but the toolkit's owner and the owner of the table (who
-- needs it to create partitions) may attach it to a trigger; what they act on comes from
-- the row being written (NEW, OLD, TG_RELID) and the registry, and who acts from the
-- session (privacy.acting_role()). The helpers they call are the owner's only.

-- How a writer adding a row of a subject is ordered against a placement for that
-- subject (privacy.refresh_subject), so that the new row is either seen and marked by
-- the placement or marked by its writer from the placement's result:
-- - at READ COMMITTED, the writer takes a shared transaction-level advisory lock on
--   the subject's bucket (class privacy.subject_lock_class(), one of 256 buckets) and
--   then reads the subject's mark with a new snapshot; placement takes the same lock
--   exclusively before it changes anything. An advisory lock is held in memory: no
--   WAL, no dirtied page, on the path every INSERT takes.
-- - at REPEATABLE READ and SERIALIZABLE, a snapshot taken before the placement would
--   miss its marks, so the writer locks the bucket's row in privacy.subject_guards
--   FOR SHARE instead, which placement updates: the writer then waits for the
--   placement or fails to serialize.
create or replace function privacy.subject_lock_class()
    returns integer
    immutable
    set search_path = ''
    language sql
as $$ select 1886549625 $$;  -- 'prvy' in ASCII

-- A subject's writer-lock bucket (of 256) and guard row (of 1,024). No SET clause: the
-- planner inlines them into the INSERT path; every name in them is qualified.
create or replace function privacy.writer_bucket(p_subject_type text, p_key text)
    returns integer
    immutable
    language sql
as $$ select pg_catalog.hashtext(p_subject_type operator(pg_catalog.||) '/' operator(pg_catalog.||) p_key) operator(pg_catalog.&) 255 $$;

create or replace function privacy.guard_bucket(p_subject_type text, p_key text)
    returns integer
    immutable
    language sql
as $$ select pg_catalog.hashtext(p_subject_type operator(pg_catalog.||) '/' operator(pg_catalog.||) p_key) operator(pg_catalog.&) 1023 $$;

comment on table privacy.subject_guards is
    'Placement updates the bucket of its subject; writers at REPEATABLE READ or SERIALIZABLE lock it FOR SHARE before they read the subject''s mark, so one whose snapshot predates a placement waits or fails to serialize instead of adding an unmarked row (READ COMMITTED writers take an advisory lock instead: privacy.subject_lock_class()).';

create or replace function privacy.lock_subject_guard(p_subject_type text, p_key text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    perform 1 from privacy.subject_guards g where g.bucket = privacy.guard_bucket(p_subject_type, p_key) for share;
end;
$$;

-- A type name that means the same whatever the search_path: "pg_catalog.text", not
-- "text" (the INSERT trigger functions have no SET search_path).
create or replace function privacy.qualified_type(p_type text)
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.format('%I.%I', n.nspname, t.typname)
      from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
     where t.oid = p_type::pg_catalog.regtype
$$;

-- The type a subject key is cast to before its text is taken: the key column's type,
-- qualified, with a numeric's scale (numeric(12,0): 2.0 and 2 are both '2'; see
-- privacy.key_type_problem).
create or replace function privacy.key_cast_type(p_type text)
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select privacy.qualified_type(p_type) || coalesce(pg_catalog.substring(p_type, '^numeric(\([0-9]+,-?[0-9]+\))$'), '')
$$;

-- Whether the relation has a BEFORE UPDATE row trigger of its own (not the
-- toolkit's): it could change a row's path without the UPDATE naming the column.
create or replace function privacy.has_own_before_update_trigger(p_relid oid)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    select exists (select 1 from pg_catalog.pg_trigger t
                    where t.tgrelid = p_relid and not t.tgisinternal and t.tgname !~* '^(zz_)?privacy_'
                      and t.tgtype::integer & 19 = 19)  -- ROW (1) | BEFORE (2) | UPDATE (16)
$$;

-- Column list helpers for the generator: "p.a = $1 and p.b = $2" and friends.
create or replace function privacy.join_columns(p_template text, p_columns text[], p_sep text)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.string_agg(pg_catalog.replace(pg_catalog.replace(p_template, '{c}', c), '{i}', i::text), p_sep order by i)
      from pg_catalog.unnest(p_columns) with ordinality u(c, i)
$$;

-- The same for two parallel lists: "c.{a} = new.{b}".
create or replace function privacy.join_pairs(p_template text, p_a text[], p_b text[], p_sep text)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.string_agg(pg_catalog.replace(pg_catalog.replace(p_template, '{a}', p_a[i]), '{b}', p_b[i]), p_sep order by i)
      from pg_catalog.generate_subscripts(p_a, 1) i
$$;

-- Quoted identifiers of names, e.g. for "new.{c}".
create or replace function privacy.quoted(p_names name[])
    returns text[]
    immutable
    set search_path = ''
    language sql
as $$ select pg_catalog.array_agg(pg_catalog.quote_ident(n) order by i) from pg_catalog.unnest(p_names) with ordinality u(n, i) $$;

-- The view columns standing for column numbers ATTNUMS: c5, c7.
create or replace function privacy.view_columns(p_attnums smallint[])
    returns text[]
    immutable
    set search_path = ''
    language sql
as $$ select pg_catalog.array_agg('c' || n order by i) from pg_catalog.unnest(p_attnums) with ordinality u(n, i) $$;

-- Placeholders in generated DDL for a relation and a column: rendered with names to
-- run it, and with registry ids and column numbers to hash it, so that renaming a
-- protected table or a column changes no hash.
create or replace function privacy.ph_rel(p_relid oid)
    returns text
    immutable
    set search_path = ''
    language sql
as $$ select '{rel:' || p_relid || '}' $$;

create or replace function privacy.ph_col(p_relid oid, p_attnum smallint)
    returns text
    immutable
    set search_path = ''
    language sql
as $$ select '{col:' || p_relid || ':' || p_attnum || '}' $$;

create or replace function privacy.render(p_template text, p_names boolean)
    returns text
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    m text[];
    v text := p_template;
begin
    for m in select distinct x from pg_catalog.regexp_matches(p_template, '\{(rel|col):([0-9]+)(?::([0-9]+))?\}', 'g') x loop
        v := pg_catalog.replace(v, '{' || m[1] || ':' || m[2] || coalesce(':' || m[3], '') || '}',
            -- For the hash: a protected table by its registry id (the same in every database
            -- built alike, whatever it is called), a partition or child by its name.
            case when not p_names then coalesce((select 'protected table ' || x.id from privacy.protected_tables x where x.relid = m[2]::oid),
                                                m[2]::oid::regclass::text) || coalesce(' column ' || m[3], '')
                 when m[1] = 'rel' then m[2]::oid::regclass::text
                 else (select pg_catalog.quote_ident(a.attname) from pg_catalog.pg_attribute a
                        where a.attrelid = m[2]::oid and a.attnum = m[3]::smallint) end);
    end loop;
    return v;
end;
$$;

-- md5 of a generated object as it stands in the catalog, unchanged by renames.
create or replace function privacy.object_hash(p_kind text, p_oid oid)
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.md5(case p_kind
        when 'trigger' then (select pg_catalog.concat_ws('|', t.tgtype, t.tgfoid::regprocedure::text, t.tgattr::text, t.tgqual, t.tgargs::text)
                               from pg_catalog.pg_trigger t where t.oid = p_oid)
        when 'policy' then (select pg_catalog.concat_ws('|', pol.polcmd, pol.polpermissive, pol.polroles::text, pol.polqual, pol.polwithcheck)
                              from pg_catalog.pg_policy pol where pol.oid = p_oid)
        when 'function' then (select pg_catalog.concat_ws('|', pr.prosrc, pr.prosecdef, pr.proconfig::text, pr.proowner)
                                from pg_catalog.pg_proc pr where pr.oid = p_oid)
        -- (The view's query tree, but for the OIDs of the table it reads, which differ between databases.)
        when 'view' then (select pg_catalog.concat_ws('|', pg_catalog.regexp_replace(w.ev_action, ':(relid|resorigtbl) [0-9]+', ':\1', 'g'),
                                                      c.relowner) from pg_catalog.pg_rewrite w
                            join pg_catalog.pg_class c on c.oid = w.ev_class where w.ev_class = p_oid and w.rulename = '_RETURN')
    end)
$$;

-- The key of a row for the corrections journal and the hold digests: the primary key
-- of the protected table RELID (its columns and values), or, where it has none, the
-- whole row but for privacy_mark.
create or replace function privacy.row_identity(p_relid oid, p_row jsonb)
    returns jsonb
    stable
    set search_path = ''
    language sql
as $$
    select coalesce((select pg_catalog.jsonb_object_agg(a.attname, p_row -> a.attname::text)
                       from pg_catalog.pg_index x
                       cross join lateral pg_catalog.unnest(x.indkey) k(attnum)
                       join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
                      where x.indrelid = p_relid and x.indisprimary),
                    p_row - 'privacy_mark')
$$;

-- The columns of a protected table its view exposes: its own path columns, and the
-- columns of it that the paths of the tables depending on it use.
create or replace function privacy.exposed_columns(p privacy.protected_tables)
    returns smallint[]
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.array_agg(distinct n order by n)
      from (select pg_catalog.unnest(p.attnums) n
            union
            select pg_catalog.unnest(d.parent_attnums) from privacy.protected_tables d where d.parent_id = p.id) x
     where n is not null
$$;

-- What the enforcement of protected table P_ID is, in the order it is created: one row
-- per object (kind view, function, trigger, clone (a trigger PostgreSQL copies from the
-- partitioned table), policy, rls, column, grant), with its DDL, and the text its hash
-- covers (DDL with numbers for names, except in function bodies, which name the
-- table's own path columns).
create or replace function privacy.enforcement_plan(p_id integer)
    returns table (step integer, kind text, relid oid, name text, ddl text, shape text)
    stable
    set search_path = ''
    language plpgsql
as $gen$
declare
    p privacy.protected_tables;
    v_rel regclass;
    v_parent privacy.protected_tables;
    v_subject privacy.subject_types;
    d privacy.protected_tables;
    v_fn text;
    v_cols text[];            -- quoted names of the table's own path columns
    v_params text;
    v_types text[];
    v_body text;
    v_lookup text;
    v_prop text := '';
    v_refby_changed text := '';
    v_watched smallint[];
    v_update_of text;
    v_app_before_update boolean;
    v_has_refby boolean := false;
    v_has_deps boolean := false;
    v_steward text := pg_catalog.quote_literal(privacy.steward_role());
    v_policy_check text;
    v_toolkit_owner name;
    v_purpose_arms text;
    v_target oid;
    v_is_partition boolean;
    v_owner name;
    v_path_changed text;
    v_step integer := 0;
    v_exposed smallint[];
    v_template text;
begin
    select * into p from privacy.protected_tables x where x.id = p_id;
    v_rel := privacy.relation_of(p);
    if v_rel is null then
        return;
    end if;
    if (privacy.citus_table(v_rel)).kind is not null then
        return query select * from privacy.citus_enforcement_plan(p_id);  -- distributed by Citus: sql/89_citus.sql
        return;
    end if;
    v_fn := 'privacy.pt_' || p.id;
    select * into v_subject from privacy.subject_types s where s.subject_type = p.subject_type;
    if p.parent_id is not null then
        select * into v_parent from privacy.protected_tables x where x.id = p.parent_id;
    end if;
    v_cols := privacy.quoted(privacy.column_names(v_rel, p.attnums));
    select pg_catalog.array_agg(privacy.qualified_type(pg_catalog.format_type(a.atttypid, a.atttypmod)) order by k.i) into v_types
      from pg_catalog.unnest(p.attnums) with ordinality k(n, i)
      join pg_catalog.pg_attribute a on a.attrelid = v_rel and a.attnum = k.n;
    select pg_catalog.string_agg(pg_catalog.format('a%s %s', i, v_types[i]), ', ' order by i) into v_params
      from pg_catalog.generate_subscripts(v_types, 1) i;
    v_owner := (select pg_catalog.pg_get_userbyid(c.relowner) from pg_catalog.pg_class c where c.oid = v_rel);

    -- 1. The view the enforcement of the tables whose paths run through this one reads it
    --    through (by OID). A table nothing depends on has none, so nothing of the
    --    toolkit's stands in the way of dropping it (where no hold forbids it).
    if exists (select 1 from privacy.protected_tables x where x.parent_id = p.id) then
        v_exposed := privacy.exposed_columns(p);
        step := (v_step + 1); v_step := step; kind := 'view'; relid := v_rel; name := 'pt_' || p.id || '_v';
        v_template := pg_catalog.format('create view privacy.%I as select %s t.privacy_mark from %s t', name,
            coalesce((select pg_catalog.string_agg(pg_catalog.format('t.%s as c%s,', privacy.ph_col(v_rel, n), n), ' ' order by n)
                        from pg_catalog.unnest(v_exposed) n), ''),
            privacy.ph_rel(v_rel));
        ddl := privacy.render(v_template, true); shape := privacy.render(v_template, false);
        return next;
        step := (v_step + 1); v_step := step; kind := 'grant'; relid := v_rel; name := 'view to nobody';
        ddl := pg_catalog.format('revoke all on privacy.%I from public', 'pt_' || p.id || '_v'); shape := ddl;
        return next;
    end if;

    -- 2. The mark of a row from its path, as the toolkit's owner (never through the
    --    caller's row-level security, so an indirect path cannot fail open). The lookup
    --    reads the parent through its view; a column path first takes the subject's
    --    writer lock, then reads its mark in a statement of its own (new snapshot).
    if p.path_kind = 'column' then
        -- (The lock is an assignment, not a PERFORM: PL/pgSQL evaluates a simple expression
        -- without starting an executor, 2 us less on every INSERT.)
        v_lookup := pg_catalog.format($f$
    v_mark := case when (case when pg_catalog.current_setting('transaction_isolation') operator(pg_catalog.=) 'read committed'
                              then pg_catalog.pg_advisory_xact_lock_shared(%1$s, privacy.writer_bucket(%2$L, ({k}::%3$s)::pg_catalog.text))
                              else privacy.lock_subject_guard(%2$L, ({k}::%3$s)::pg_catalog.text) end) is null then 0 else 0 end;
    select s.mark into v_mark from privacy.subject_marks s
     where s.subject_type operator(pg_catalog.=) %2$L and s.subject_key operator(pg_catalog.=) ({k}::%3$s)::pg_catalog.text;$f$,
            privacy.subject_lock_class(), p.subject_type, privacy.key_cast_type(v_subject.key_type));
    elsif p.path_kind = 'via' then
        v_lookup := pg_catalog.format($f$
    select p.privacy_mark into v_mark from privacy.%I p where %s for share of p;$f$,
            'pt_' || v_parent.id || '_v',
            privacy.join_pairs('p.{a} operator(pg_catalog.=) {b}', privacy.view_columns(p.parent_attnums),
                               (select pg_catalog.array_agg('{k' || i || '}' order by i) from pg_catalog.generate_subscripts(p.attnums, 1) i), ' and '));
    else
        v_lookup := pg_catalog.format($f$
    select pg_catalog.bit_or(r.privacy_mark) into v_mark from privacy.%I r where %s;$f$,
            'pt_' || v_parent.id || '_v',
            privacy.join_pairs('r.{a} operator(pg_catalog.=) {b}', privacy.view_columns(p.parent_attnums),
                               (select pg_catalog.array_agg('{k' || i || '}' order by i) from pg_catalog.generate_subscripts(p.attnums, 1) i), ' and '));
    end if;
    -- The mark function: placement and marking statements call it (no SET clause: it
    -- runs once per row a placement marks; every name in it is qualified).
    v_body := pg_catalog.replace(v_lookup, '{k}', 'a1');
    for i in 1 .. pg_catalog.cardinality(p.attnums) loop
        v_body := pg_catalog.replace(v_body, '{k' || i || '}', 'a' || i);
    end loop;
    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_mark(%s)', p.id, pg_catalog.array_to_string(v_types, ','));
    ddl := pg_catalog.format($f$
create function %s_mark(%s)
    returns smallint
    volatile
    language plpgsql
as $body$
declare
    v_mark smallint;
begin%s
    return coalesce(v_mark, 0);
end;
$body$$f$, v_fn, v_params, v_body);
    shape := ddl;
    return next;

    -- 3. The subjects of a row, for refusal messages and the journal: [[type, key], ...].
    if p.path_kind = 'column' then
        v_body := pg_catalog.format($f$
    select case when a1 is null then '[]'::pg_catalog.jsonb
                else pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(%L, (a1::%s)::pg_catalog.text)) end$f$,
            p.subject_type, privacy.key_cast_type(v_subject.key_type));
    else
        v_body := pg_catalog.format($f$
    select coalesce(pg_catalog.jsonb_agg(e), '[]'::pg_catalog.jsonb)
      from privacy.%I r cross join lateral pg_catalog.jsonb_array_elements(privacy.pt_%s_subjects(%s)) e
     where %s$f$,
            'pt_' || v_parent.id || '_v', v_parent.id,
            privacy.join_columns('r.{c}', privacy.view_columns(v_parent.attnums), ', '),
            privacy.join_pairs('r.{a} operator(pg_catalog.=) {b}', privacy.view_columns(p.parent_attnums),
                               (select pg_catalog.array_agg('a' || i order by i) from pg_catalog.generate_subscripts(p.attnums, 1) i), ' and '));
    end if;
    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_subjects(%s)', p.id, pg_catalog.array_to_string(v_types, ','));
    ddl := pg_catalog.format($f$
create function %s_subjects(%s)
    returns jsonb
    stable
    set search_path = ''
    language sql
as $body$%s
$body$$f$, v_fn, v_params, v_body);
    shape := ddl;
    return next;

    -- 4. The INSERT trigger: every new row takes its mark from its path, whatever the
    --    writer put there; a restricted subject's rows only a steward (or the owner) may
    --    add. It runs on every INSERT: the lookup is inline, no SET clause, every name
    --    qualified (the caller's search_path cannot change what it means).
    v_body := pg_catalog.replace(v_lookup, '{k}', 'new.' || v_cols[1]);
    for i in 1 .. pg_catalog.cardinality(v_cols) loop
        v_body := pg_catalog.replace(v_body, '{k' || i || '}', 'new.' || v_cols[i]);
    end loop;
    step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_insert()', p.id);
    ddl := pg_catalog.format($f$
create function %1$s_insert()
    returns trigger
    volatile
    security definer
    language plpgsql
as $body$
declare
    v_mark smallint;
begin%2$s
    new.privacy_mark := coalesce(v_mark, 0);
    -- (Nested, so that the common case evaluates one small expression.)
    if new.privacy_mark operator(pg_catalog.>=) 2 then
        if privacy.mark_binds(privacy.acting_role(), new.privacy_mark)
           and not privacy.is_privileged(privacy.acting_role(), tg_relid) then
            perform privacy.refuse(tg_relid, 'INSERT', new.privacy_mark, %1$s_subjects(%3$s));
        end if;
    end if;
    return new;
end;
$body$$f$, v_fn, v_body, privacy.join_columns('new.{c}', v_cols, ', '));
    shape := ddl;
    return next;

    -- 5. The UPDATE and DELETE trigger, for marked rows and for changes of a row's path
    --    or mark. It runs AFTER the row changed: a BEFORE UPDATE or DELETE row trigger,
    --    whatever its WHEN, makes PostgreSQL lock every row the statement changes first
    --    (a tuple lock and its WAL record, 56 bytes a row), which cost unmarked rows 13%
    --    of a single-row UPDATE. An error here undoes the statement all the same. A row
    --    whose mark is not the one its path gives (it moved to another subject, or the
    --    mark was written) is marked by a statement of its own, as a placement would.
    --    Changes a steward makes to restricted rows, and changes under break-glass, are
    --    journaled. On a partition it also exists as the partition's own trigger
    --    (argument 'detached'), which acts only once the partition is detached:
    --    PostgreSQL drops the copies of the parent's triggers then.
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
begin
    if tg_nargs > 0 and tg_argv[0] = 'detached' and (privacy.protected_table_of(tg_relid)).id is not null then
        return null;  -- attached: the parent's trigger judges it
    end if;
    if tg_op = 'DELETE' then
        if exists (select 1 from privacy.erasure_in_progress e where e.xact = pg_catalog.pg_current_xact_id_if_assigned())
           and privacy.erasing(%1$s_subjects(%2$s)) then
            return null;  -- the toolkit's erasure of every subject of the row (sql/35_erasure.sql): not a correction
        end if;
        if old.privacy_mark & 1 <> 0 then
            if privacy.break_glass_reason() is null then
                perform privacy.refuse(tg_relid, 'DELETE', old.privacy_mark, %1$s_subjects(%2$s));
            end if;
            perform privacy.journal(%4$s, 'break_glass', tg_relid, 'DELETE', pg_catalog.to_jsonb(old), null, %1$s_subjects(%2$s));
        elsif old.privacy_mark >= 2 then
            -- (A restriction scoped to purposes the role does not serve leaves it alone.)
            if privacy.is_privileged(v_actor, tg_relid) then
                perform privacy.journal(%4$s, 'correction', tg_relid, 'DELETE', pg_catalog.to_jsonb(old), null, %1$s_subjects(%2$s));
            elsif privacy.mark_binds(v_actor, old.privacy_mark) then
                perform privacy.refuse(tg_relid, 'DELETE', old.privacy_mark, %1$s_subjects(%2$s));
            end if;
        end if;
        return null;
    end if;
    -- The mark the row must have now: its subject's state, through its (new) path.
    v_mark := %1$s_mark(%3$s);
    if new.privacy_mark is distinct from old.privacy_mark and old.privacy_mark <> 0 and new.privacy_mark = v_mark
       and (pg_catalog.to_jsonb(new) operator(pg_catalog.-) 'privacy_mark'::text)
           operator(pg_catalog.=) (pg_catalog.to_jsonb(old) operator(pg_catalog.-) 'privacy_mark'::text) then
        return null;  -- a marking statement (placement, release, propagation): the mark alone, to what the state gives
    end if;
    -- An UPDATE of a marked row, or one that changes the row's path or writes its mark.
    if old.privacy_mark & 1 <> 0 then
        if privacy.break_glass_reason() is null then
            perform privacy.refuse(tg_relid, 'UPDATE', old.privacy_mark, %1$s_subjects(%2$s));
        end if;
        perform privacy.journal(%4$s, 'break_glass', tg_relid, 'UPDATE', pg_catalog.to_jsonb(old), pg_catalog.to_jsonb(new), %1$s_subjects(%2$s));
    elsif old.privacy_mark >= 2 then
        if privacy.is_privileged(v_actor, tg_relid) then
            perform privacy.journal(%4$s, 'correction', tg_relid, 'UPDATE', pg_catalog.to_jsonb(old), pg_catalog.to_jsonb(new), %1$s_subjects(%2$s));
        elsif privacy.mark_binds(v_actor, old.privacy_mark) then
            perform privacy.refuse(tg_relid, 'UPDATE', old.privacy_mark, %1$s_subjects(%2$s));
        end if;
    end if;
    if v_mark >= 2 and privacy.mark_binds(v_actor, v_mark) and not privacy.is_privileged(v_actor, tg_relid) then
        perform privacy.refuse(tg_relid, 'UPDATE', v_mark, %1$s_subjects(%3$s));
    end if;
    if new.privacy_mark is distinct from v_mark then
        -- Every row on this path takes the mark the path gives (the others have it already).
        if pg_catalog.num_nulls(%3$s) = 0 then
            execute pg_catalog.format(%5$L, tg_relid::pg_catalog.regclass) using v_mark, %3$s;
        else
            execute pg_catalog.format(%6$L, tg_relid::pg_catalog.regclass) using v_mark, %3$s;
        end if;
    end if;
    return null;
end;
$body$$f$, v_fn, privacy.join_columns('old.{c}', v_cols, ', '), privacy.join_columns('new.{c}', v_cols, ', '), p.id,
        'update only %s c set privacy_mark = $1 where ' || pg_catalog.replace(privacy.join_pairs('c.{a} = {b}', v_cols,
            (select pg_catalog.array_agg('$' || (i + 1) order by i) from pg_catalog.generate_subscripts(v_cols, 1) i), ' and '), '%', '%%')
            || ' and c.privacy_mark is distinct from $1',
        'update only %s c set privacy_mark = $1 where ' || pg_catalog.replace(privacy.join_pairs('c.{a} is not distinct from {b}', v_cols,
            (select pg_catalog.array_agg('$' || (i + 1) order by i) from pg_catalog.generate_subscripts(v_cols, 1) i), ' and '), '%', '%%')
            || ' and c.privacy_mark is distinct from $1');
    shape := ddl;
    return next;

    -- 6. Propagation to the tables whose marks derive from this one's rows. It names
    --    them as they are now (their renames change this plan, and heal() regenerates
    --    it); it runs only when a row's mark changes (placement, release) or a marked
    --    row changes what it points at.
    for d in select * from privacy.protected_tables x where x.parent_id = p.id and privacy.relation_of(x) is not null order by x.id loop
        v_has_deps := true;
        if d.path_kind = 'via' then
            -- (A placement marks a marked_in_bulk table itself, in one statement: 30_holds.sql.)
            -- The new mark only if the row still has it: a mark someone wrote that the
            -- row's own check put back (step 8's "Privacy_check_update_path" fires first)
            -- must not reach the rows below, which this function writes as the toolkit's
            -- owner (whose marks on unmarked rows are not checked again).
            v_prop := v_prop || pg_catalog.format($f$
    if tg_op = 'UPDATE' and new.privacy_mark is distinct from old.privacy_mark%s
       and exists (select from %s p where %s and p.privacy_mark operator(pg_catalog.=) new.privacy_mark) then
        update %s c set privacy_mark = new.privacy_mark
         where %s and c.privacy_mark is distinct from new.privacy_mark;
    end if;$f$, case when privacy.marked_in_bulk(d.id) then ' and not privacy.marking_in_bulk()' else '' end,
                v_rel,
                privacy.join_pairs('p.{a} operator(pg_catalog.=) new.{a}', privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)),
                                   privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)), ' and '),
                privacy.relation_of(d),
                privacy.join_pairs('c.{a} = new.{b}', privacy.quoted(privacy.column_names(d.relid, d.attnums)),
                                   privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)), ' and '));
        else
            v_has_refby := true;
            v_refby_changed := v_refby_changed || pg_catalog.format(' or (%s) is distinct from (%s)',
                privacy.join_columns('new.{c}', (select pg_catalog.array_agg(privacy.ph_col(v_rel, n) order by i)
                                                   from pg_catalog.unnest(d.parent_attnums) with ordinality u(n, i)), ', '),
                privacy.join_columns('old.{c}', (select pg_catalog.array_agg(privacy.ph_col(v_rel, n) order by i)
                                                   from pg_catalog.unnest(d.parent_attnums) with ordinality u(n, i)), ', '));
            v_prop := v_prop || pg_catalog.format($f$
    if tg_op in ('UPDATE', 'DELETE') and (%1$s) is not null then
        v_mark := privacy.pt_%2$s_mark(%1$s);
        update %3$s c set privacy_mark = v_mark where %4$s and c.privacy_mark is distinct from v_mark;
    end if;
    if tg_op in ('INSERT', 'UPDATE') and (%5$s) is not null then
        v_mark := privacy.pt_%2$s_mark(%5$s);
        update %3$s c set privacy_mark = v_mark where %6$s and c.privacy_mark is distinct from v_mark;
    end if;$f$,
                privacy.join_columns('old.{c}', privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)), ', '), d.id,
                privacy.relation_of(d),
                privacy.join_pairs('c.{a} = old.{b}', privacy.quoted(privacy.column_names(d.relid, d.attnums)),
                                   privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)), ' and '),
                privacy.join_columns('new.{c}', privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)), ', '),
                privacy.join_pairs('c.{a} = new.{b}', privacy.quoted(privacy.column_names(d.relid, d.attnums)),
                                   privacy.quoted(privacy.column_names(v_rel, d.parent_attnums)), ' and '));
        end if;
    end loop;
    if v_has_deps then
        step := v_step + 1; v_step := step; kind := 'function'; relid := v_rel; name := pg_catalog.format('pt_%s_propagate()', p.id);
        ddl := pg_catalog.format($f$
create function %s_propagate()
    returns trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $body$
declare
    v_mark smallint;
begin%s
    return null;
end;
$body$$f$, v_fn, v_prop);
        shape := ddl;
        return next;
    end if;

    -- 7. Who may use the trigger functions: the toolkit's owner (whoever runs this), and the table's owner,
    --    whom PostgreSQL checks when it copies row triggers onto a new partition. The
    --    helpers are the owner's only.
    if v_owner is distinct from (select pg_catalog.pg_get_userbyid(n.nspowner) from pg_catalog.pg_namespace n where n.nspname = 'privacy') then
        step := v_step + 1; v_step := step; kind := 'grant'; relid := v_rel; name := 'trigger functions to ' || v_owner;
        ddl := pg_catalog.format('grant execute on function %1$s_insert(), %1$s_row()%2$s to %3$I', v_fn,
                                 case when v_has_deps then ', ' || v_fn || '_propagate()' else '' end, v_owner);
        shape := pg_catalog.format('grant execute on function %1$s_insert(), %1$s_row()%2$s to the owner of %3$s', v_fn,
                                   case when v_has_deps then ', ' || v_fn || '_propagate()' else '' end, privacy.render(privacy.ph_rel(v_rel), false));
        return next;
    end if;

    -- 8. Triggers and policies, on the table and on every partition and child. The
    --    INSERT trigger is named zz_privacy_* so that PostgreSQL (alphabetical order)
    --    fires it after the application's own BEFORE triggers; UPDATE and DELETE are
    --    judged AFTER the change (step 5), when the row is final. What an UPDATE of an
    --    unmarked row costs is what PostgreSQL does per statement for each row
    --    trigger's WHEN clause (it compiles it), so the UPDATE triggers are split: one
    --    for marked rows with the smallest WHEN there is, one for changes of the path or
    --    the mark that fires only when the statement names those columns (UPDATE OF).
    --    An application BEFORE UPDATE trigger could change them without the statement
    --    naming them: where a table has one, the second trigger (and the propagation)
    --    fire on every UPDATE and test the values.
    --    A positive mark written on an unmarked row is judged unless the toolkit's owner
    --    writes it: placement marks a subject's rows as the owner (a million of them for a
    --    large subject, where judging each cost half the placement's time), and the owner
    --    can only add protection that way (a marked row's every change, the owner's too, is
    --    judged by the first trigger; a changed path and a negative mark, which the
    --    policies' `< 2` would let through, by this one, whoever writes them). Step 6's
    --    propagation passes on only a mark the row kept, so one put back never reaches
    --    the rows below.
    -- The toolkit's owner reads restricted rows too, also where the table is FORCEd
    -- under row-level security: its lookups (a child's parent's mark) must not fail open.
    v_toolkit_owner := (select pg_catalog.pg_get_userbyid(n.nspowner) from pg_catalog.pg_namespace n where n.nspname = 'privacy');
    v_policy_check := pg_catalog.format('privacy_mark < 2 or pg_catalog.pg_has_role(%s, ''MEMBER'') or pg_catalog.pg_has_role(%L, ''USAGE'')',
        v_steward, v_toolkit_owner);
    -- Purposes (sql/33_purposes.sql): the policy for every role lets purpose-scoped rows
    -- through, and each purpose's own policy hides the rows restricted for it.
    v_purpose_arms := privacy.purpose_policy_arms();
    select pg_catalog.array_agg(distinct n order by n) into v_watched
      from (select pg_catalog.unnest(p.attnums) as n
            union select pg_catalog.unnest(dep.parent_attnums) from privacy.protected_tables dep where dep.parent_id = p.id and dep.path_kind = 'referenced_by') w
     where n is not null;
    select pg_catalog.bool_or(privacy.has_own_before_update_trigger(r.relid))
      from (select v_rel::oid as relid union all select x.relid from privacy.descendants(v_rel) x) r
      into v_app_before_update;
    v_update_of := case when v_app_before_update then ''
                        else ' of privacy_mark, ' || (select pg_catalog.string_agg(privacy.ph_col(v_rel, n), ', ' order by n)
                                                        from pg_catalog.unnest(v_watched) n) end;
    v_path_changed := pg_catalog.format('(%s) is distinct from (%s)',
        privacy.join_columns('new.{c}', (select pg_catalog.array_agg(privacy.ph_col(v_rel, n) order by i) from pg_catalog.unnest(p.attnums) with ordinality u(n, i)), ', '),
        privacy.join_columns('old.{c}', (select pg_catalog.array_agg(privacy.ph_col(v_rel, n) order by i) from pg_catalog.unnest(p.attnums) with ordinality u(n, i)), ', '));
    for v_target, v_is_partition in
        select y.relid, y.is_partition from (
            select v_rel::oid as relid, false as is_partition, 0 as depth
            union all
            select x.relid, x.is_partition, 1 from privacy.descendants(v_rel) x) y
         order by y.depth, y.relid::regclass::text  -- a stable order: the hash must not vary
    loop
        for kind, name, v_template in
            select 'trigger', 'zz_privacy_before_insert',
                   'create trigger zz_privacy_before_insert before insert on {target} for each row execute function ' || v_fn || '_insert()'
            union all
            select 'trigger', 'Privacy_check_update',
                   'create trigger "Privacy_check_update" after update on {target} for each row when (old.privacy_mark <> 0) '
                   'execute function ' || v_fn || '_row()'
            union all
            select 'trigger', 'Privacy_check_update_path',
                   'create trigger "Privacy_check_update_path" after update' || v_update_of || ' on {target} for each row when '
                   '(old.privacy_mark = 0 and (' || v_path_changed || ' or new.privacy_mark < 0 or (new.privacy_mark > 0 and current_user <> '
                   || pg_catalog.quote_literal(v_toolkit_owner) || '::name))) execute function ' || v_fn || '_row()'
            union all
            select 'trigger', 'Privacy_check_delete',
                   'create trigger "Privacy_check_delete" after delete on {target} for each row when (old.privacy_mark <> 0) '
                   'execute function ' || v_fn || '_row()'
            union all
            select 'trigger', 'privacy_after_update',
                   'create trigger privacy_after_update after update' || v_update_of || ' on {target} for each row when '
                   '(new.privacy_mark is distinct from old.privacy_mark or (old.privacy_mark <> 0 and (false' || v_refby_changed || '))) '
                   'execute function ' || v_fn || '_propagate()'
             where v_has_deps
            union all
            select 'trigger', 'privacy_after_insert',
                   'create trigger privacy_after_insert after insert on {target} for each row when (new.privacy_mark <> 0) '
                   'execute function ' || v_fn || '_propagate()'
             where v_has_refby
            union all
            select 'trigger', 'privacy_after_delete',
                   'create trigger privacy_after_delete after delete on {target} for each row when (old.privacy_mark <> 0) '
                   'execute function ' || v_fn || '_propagate()'
             where v_has_refby
        loop
            -- PostgreSQL copies the partitioned table's row triggers onto its partitions.
            step := v_step + 1; v_step := step; relid := v_target;
            if v_target <> v_rel and v_is_partition then
                kind := 'clone'; ddl := null;
                shape := kind || ' ' || name || ' on ' || privacy.render(privacy.ph_rel(v_target), false);
            else
                v_template := pg_catalog.replace(v_template, '{target}', privacy.ph_rel(v_target));
                ddl := privacy.render(v_template, true); shape := privacy.render(v_template, false);
            end if;
            return next;
        end loop;
        if v_target <> v_rel and v_is_partition
           and (select c.relkind from pg_catalog.pg_class c where c.oid = v_target) <> 'p' then
            -- The partition's own triggers for held and restricted rows: they outlive a DETACH.
            -- Only on the partitions that hold rows: one created on a sub-partitioned
            -- partition would be copied onto its own partitions, which get theirs here.
            for name, v_template in
                select 'Privacy_check_detached_update',
                       'create trigger "Privacy_check_detached_update" after update on {target} for each row when (old.privacy_mark <> 0) '
                       'execute function ' || v_fn || '_row(''detached'')'
                union all
                select 'Privacy_check_detached_delete',
                       'create trigger "Privacy_check_detached_delete" after delete on {target} for each row when (old.privacy_mark <> 0) '
                       'execute function ' || v_fn || '_row(''detached'')'
            loop
                step := v_step + 1; v_step := step; kind := 'trigger'; relid := v_target;
                v_template := pg_catalog.replace(v_template, '{target}', privacy.ph_rel(v_target));
                ddl := privacy.render(v_template, true); shape := privacy.render(v_template, false);
                return next;
            end loop;
        end if;
        for kind, name, v_template in
            select 'trigger', 'privacy_before_truncate',
                   'create trigger privacy_before_truncate before truncate on {target} for each statement execute function privacy.guard_truncate()'
            union all
            select 'rls', 'row level security', 'alter table {target} enable row level security'
            union all
            -- Stewards read and correct restricted data (and are refused by holds like everyone).
            select 'grant', 'schema usage to the steward role',
                   pg_catalog.format('grant usage on schema %I to %I',
                       (select n.nspname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_target),
                       privacy.steward_role())
            union all
            select 'grant', 'table privileges to the steward role',
                   pg_catalog.format('grant select, insert, update, delete on {target} to %I', privacy.steward_role())
            union all
            select 'policy', 'privacy_hide_restricted',
                   pg_catalog.format('create policy privacy_hide_restricted on {target} as restrictive for all to public using (%s) with check (%s)',
                                     v_policy_check || v_purpose_arms, v_policy_check || v_purpose_arms)
            union all
            select 'policy', x.name, x.ddl from privacy.purpose_policies(v_policy_check) x
            union all
            -- Restrictive policies grant nothing by themselves; where the table has no
            -- permissive policy of its own, add one that allows what grants allow.
            select 'policy', 'privacy_permit_all',
                   'create policy privacy_permit_all on {target} as permissive for all to public using (true) with check (true)'
             where not exists (select 1 from pg_catalog.pg_policy pol
                                where pol.polrelid = v_target and pol.polpermissive and pol.polname !~ '^privacy_')
        loop
            step := v_step + 1; v_step := step; relid := v_target;
            v_template := pg_catalog.replace(v_template, '{target}', privacy.ph_rel(v_target));
            ddl := privacy.render(v_template, true); shape := privacy.render(v_template, false);
            return next;
        end loop;
    end loop;
end;
$gen$;

-- The tag of a plan: 'privacy <version> <md5 of the shapes of its objects>'.
create or replace function privacy.plan_tag(p_id integer)
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select 'privacy ' || privacy.toolkit_version() || ' '
        || pg_catalog.md5(coalesce(pg_catalog.string_agg(x.shape, E'\n' order by x.step), ''))
      from privacy.enforcement_plan(p_id) x
$$;

-- Generates, idempotently, the enforcement of a protected table, its partitions and
-- its inheritance children, as its plan says. Every object is commented
-- '<plan tag> <hash of the object>' so status can tell outdated or altered ones.
-- Returns whether anything had to be (re)generated.
create or replace function privacy.enforce(p_table regclass)
    returns boolean
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables := privacy.registry_row(p_table);
    v_tag text;
    s record;
    v_hook text;
    v_stmt text;
    v_new oid[];
    v_detached oid[];
    v_toolkit_owner name := (select pg_catalog.pg_get_userbyid(n.nspowner) from pg_catalog.pg_namespace n where n.nspname = 'privacy');
    v_target oid;
begin
    if p.id is null then
        perform privacy.fail(pg_catalog.format('%s is not protected', p_table));
    end if;
    if (privacy.citus_table(p_table)).kind = 'distributed' then
        perform privacy.citus_ensure_journal(p.subject_type);  -- where its triggers write corrections down (sql/89_citus.sql)
    end if;
    v_tag := privacy.plan_tag(p.id);
    if p.enforcement is not distinct from v_tag
       and not exists (select 1 from privacy.table_status(p.id) x where x.state <> 'installed') then
        return false;  -- complete and current: leave the tables alone (no locks taken)
    end if;
    -- Partitions and children without enforcement yet (created or attached since): the
    -- rows they brought are marked once it is there.
    select pg_catalog.array_agg(x.relid) into v_new
      from privacy.descendants(p_table) x
     where not exists (select 1 from pg_catalog.pg_policy pol where pol.polrelid = x.relid and pol.polname = 'privacy_hide_restricted');
    perform privacy.citus_session();  -- on a Citus coordinator: DDL after multi-shard statements (sql/89_citus.sql)
    -- Our own DDL must not send the DDL hooks (50_partitions.sql) back in here.
    v_hook := pg_catalog.current_setting('privacy.in_ddl_hook', true);
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'on', true);
    execute pg_catalog.format('alter table %s add column if not exists privacy_mark smallint not null default 0', p_table);
    execute pg_catalog.format('comment on column %s.privacy_mark is %L', p_table,
        privacy.table_marker(p.id) || ' Maintained by the privacy toolkit (bit 1: legal hold, bit 2: processing restriction, 4 and up: restricted for a purpose). Do not write.');
    -- Tables detached from this one keep their own triggers on held and restricted rows
    -- (the functions are dropped with CASCADE below): they are put back afterwards.
    select pg_catalog.array_agg(distinct t.tgrelid) into v_detached
      from pg_catalog.pg_trigger t join pg_catalog.pg_proc f on f.oid = t.tgfoid
     where t.tgname in ('Privacy_check_detached_update', 'Privacy_check_detached_delete',
                        'zz_privacy_detached_update', 'zz_privacy_detached_delete')  -- (their names before 0.2.0)
       and f.pronamespace = 'privacy'::regnamespace and f.proname = 'pt_' || p.id || '_row'
       and t.tgrelid <> p_table and t.tgrelid not in (select d.relid from privacy.descendants(p_table) d);
    perform privacy.drop_enforcement(p, false);
    for s in select * from privacy.enforcement_plan(p.id) x where x.ddl is not null order by x.step loop
        execute s.ddl;
        -- A superuser regenerating an owner's install: what it makes belongs to the toolkit's owner.
        if s.kind in ('function', 'view') and current_user is distinct from v_toolkit_owner then
            execute pg_catalog.format(case s.kind when 'view' then 'alter view privacy.%I owner to %I'
                                                  else 'alter function privacy.%s owner to %I' end,
                                      s.name, v_toolkit_owner);
        end if;
        -- Mark what was generated, so drift is detectable.
        v_stmt := case s.kind
            when 'view' then pg_catalog.format('comment on view privacy.%I is %L', s.name,
                                               v_tag || ' ' || privacy.object_hash('view', ('privacy.' || pg_catalog.quote_ident(s.name))::regclass))
            when 'function' then pg_catalog.format('comment on function privacy.%s is %L', s.name,
                                                   v_tag || ' ' || privacy.object_hash('function', ('privacy.' || s.name)::regprocedure))
            when 'trigger' then (select pg_catalog.format('comment on trigger %I on %s is %L', t.tgname, t.tgrelid::regclass,
                                                          v_tag || ' ' || privacy.object_hash('trigger', t.oid))
                                   from pg_catalog.pg_trigger t where t.tgrelid = s.relid and t.tgname = s.name)
            when 'policy' then (select pg_catalog.format('comment on policy %I on %s is %L', pol.polname, pol.polrelid::regclass,
                                                         v_tag || ' ' || privacy.object_hash('policy', pol.oid))
                                  from pg_catalog.pg_policy pol where pol.polrelid = s.relid and pol.polname = s.name)
        end;
        if v_stmt is not null then
            execute v_stmt;
        end if;
        if s.kind = 'function' then
            execute pg_catalog.format('revoke all on function privacy.%s from public', s.name);
        end if;
    end loop;
    foreach v_target in array coalesce(v_detached, '{}') loop
        execute pg_catalog.format('create trigger "Privacy_check_detached_update" after update on %s for each row '
            'when (old.privacy_mark <> 0) execute function privacy.%I(''detached'')', v_target::regclass, 'pt_' || p.id || '_row');
        execute pg_catalog.format('create trigger "Privacy_check_detached_delete" after delete on %s for each row '
            'when (old.privacy_mark <> 0) execute function privacy.%I(''detached'')', v_target::regclass, 'pt_' || p.id || '_row');
    end loop;
    update privacy.protected_tables set enforcement = v_tag where id = p.id;
    foreach v_target in array coalesce(v_new, '{}') loop
        perform privacy.remark_table(p.id, true, v_target::regclass);
    end loop;
    perform pg_catalog.set_config('privacy.in_ddl_hook', coalesce(v_hook, 'off'), true);
    return true;
end;
$$;

-- Sets the privacy_mark of a protected table's rows to what their subjects' state
-- gives. p_full re-checks every marked row too (after an attach, restore or sync);
-- otherwise only rows on a path from a marked subject are touched. p_relation narrows
-- the work to one partition or child.
create or replace function privacy.remark_table(p_id integer, p_full boolean, p_relation regclass default null)
    returns bigint
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_key_type text;
    v_cols text;
    v_set text;
    v_marked text;
    v_count bigint;
begin
    select * into p from privacy.protected_tables where id = p_id;
    if (privacy.citus_table(p.relid)).kind is not null then
        return privacy.citus_remark_table(p_id, p_full);  -- distributed by Citus: sql/89_citus.sql
    end if;
    select s.key_type into v_key_type from privacy.subject_types s where s.subject_type = p.subject_type;
    v_cols := privacy.join_columns('t.{c}', privacy.quoted(privacy.column_names(p.relid, p.attnums)), ', ');
    if p.path_kind = 'column' then
        v_set := pg_catalog.format('select s.subject_key::%s from privacy.subject_marks s where s.subject_type = %L',
            (select pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a
              where a.attrelid = p.relid and a.attnum = p.attnums[1]), p.subject_type);
    else
        v_set := pg_catalog.format('select %s from privacy.%I r where r.privacy_mark <> 0',
            privacy.join_columns('r.{c}', privacy.view_columns(p.parent_attnums), ', '), 'pt_' || p.parent_id || '_v');
    end if;
    v_marked := pg_catalog.format('(%s) in (%s)', v_cols, v_set);
    if p_full then
        v_marked := '(t.privacy_mark <> 0 or ' || v_marked || ')';
    end if;
    execute pg_catalog.format(
        'update %s t set privacy_mark = privacy.pt_%s_mark(%s) where %s and t.privacy_mark is distinct from privacy.pt_%s_mark(%s)',
        coalesce(p_relation, privacy.relation_of(p))::text, p.id, v_cols, v_marked, p.id, v_cols);
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Refuses TRUNCATE of a protected table, partition or child (or of a partition
-- detached from one) while it holds rows of a held or restricted subject: TRUNCATE
-- bypasses row triggers. Names a subject only where the caller may see its rows.
create or replace function privacy.guard_truncate()
    returns trigger
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables := privacy.protected_table_of(tg_relid);
    v_mark smallint;
    v_subjects jsonb;
begin
    execute pg_catalog.format('select t.privacy_mark from %s t where t.privacy_mark <> 0 order by t.privacy_mark & 1 desc, t.privacy_mark limit 1',
                              tg_relid::regclass)
      into v_mark;
    if v_mark is null then
        return null;
    end if;
    if p.id is not null then
        execute pg_catalog.format('select privacy.pt_%s_subjects(%s) from %s t where t.privacy_mark = $1 limit 1', p.id,
                                  privacy.join_columns('t.{c}', privacy.quoted(privacy.column_names(p.relid, p.attnums)), ', '), tg_relid::regclass)
          into v_subjects using v_mark;
    end if;
    perform privacy.refuse(tg_relid, 'TRUNCATE', v_mark, v_subjects);
    return null;
end;
$$;

-- Regenerates the enforcement of every protected table that is missing, disabled,
-- altered or outdated (after an upgrade of the toolkit, a change of steward role, a
-- rename, a new partition); returns how many tables were regenerated.
create or replace function privacy.refresh_enforcement()
    returns integer
    volatile
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_rel regclass;
    v_count integer := 0;
begin
    perform privacy.heal_registry();
    -- Parents before the tables whose paths read their views.
    for p in with recursive ordered(id, depth) as (
                 select x.id, 0 from privacy.protected_tables x where x.parent_id is null
                 union all
                 select x.id, o.depth + 1 from privacy.protected_tables x join ordered o on x.parent_id = o.id)
             select t.* from privacy.protected_tables t join ordered o on o.id = t.id order by o.depth, t.id loop
        v_rel := privacy.relation_of(p);
        if v_rel is null then
            raise warning 'privacy: protected table % no longer exists', privacy.qualified(p.table_schema, p.table_name);
            continue;
        end if;
        if privacy.enforce(v_rel) then
            v_count := v_count + 1;
        end if;
    end loop;
    perform privacy.guard_held_relations(null);  -- a partition attached with held rows is guarded too
    perform privacy.remember_fingerprint();
    return v_count;
end;
$$;

-- sql/20_enforce.sql: generates the enforcement of one protected table.

-- Superseded in 0.1.0 by the lookup each generated pt_<n>_mark function does itself
-- (no nested call: it runs on every INSERT).
drop function if exists privacy.subject_mark_for_write(text, text);

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

comment on table privacy.subject_guards is
    'Placement updates the bucket of its subject; writers at REPEATABLE READ or SERIALIZABLE lock it FOR SHARE before they read the subject''s mark, so one whose snapshot predates a placement waits or fails to serialize instead of adding an unmarked row (READ COMMITTED writers take an advisory lock instead: privacy.subject_lock_class()).';

create or replace function privacy.lock_subject_guard(p_subject_type text, p_key text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
begin
    perform 1 from privacy.subject_guards g
      where g.bucket = pg_catalog.hashtext(p_subject_type || '/' || p_key) & 1023 for share;
end;
$$;

-- A type name that means the same whatever the search_path: "pg_catalog.text", not
-- "text" (the generated functions that run on every write have no SET search_path).
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

-- Whether the relation has a BEFORE UPDATE row trigger of its own (not the
-- toolkit's): it could change a row's path without the UPDATE naming the column.
create or replace function privacy.has_own_before_update_trigger(p_relid oid)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    select exists (select 1 from pg_catalog.pg_trigger t
                    where t.tgrelid = p_relid and not t.tgisinternal and t.tgname !~ '^(zz_)?privacy_'
                      and t.tgtype::integer & 19 = 19)  -- ROW (1) | BEFORE (2) | UPDATE (16)
$$;

-- Column list helpers for the generator: "p.a = $1 and p.b = $2" and friends.
create or replace function privacy.join_columns(p_template text, p_columns name[], p_sep text)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.string_agg(pg_catalog.replace(pg_catalog.replace(p_template, '{c}', pg_catalog.quote_ident(c)), '{i}', i::text), p_sep order by i)
      from pg_catalog.unnest(p_columns) with ordinality u(c, i)
$$;

-- md5 of a generated trigger, policy or function as it stands in the catalog.
create or replace function privacy.object_hash(p_kind text, p_oid oid)
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.md5(case p_kind
        when 'trigger' then (select pg_catalog.pg_get_triggerdef(t.oid) from pg_catalog.pg_trigger t where t.oid = p_oid)
        when 'policy' then (select pg_catalog.concat_ws('|', pol.polcmd, pol.polpermissive, pol.polroles::text,
                                   pg_catalog.pg_get_expr(pol.polqual, pol.polrelid), pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid))
                              from pg_catalog.pg_policy pol where pol.oid = p_oid)
        when 'function' then (select pg_catalog.concat_ws('|', pr.prosrc, pr.prosecdef, pr.proconfig::text, pr.proowner)
                                from pg_catalog.pg_proc pr where pr.oid = p_oid)
    end)
$$;

-- The same for two parallel column lists: "c.{a} = new.{b}".
create or replace function privacy.join_pairs(p_template text, p_a name[], p_b name[], p_sep text)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.string_agg(pg_catalog.replace(pg_catalog.replace(p_template, '{a}', pg_catalog.quote_ident(p_a[i])),
                                                    '{b}', pg_catalog.quote_ident(p_b[i])), p_sep order by i)
      from pg_catalog.generate_subscripts(p_a, 1) i
$$;

-- Generates, idempotently, the enforcement of a protected table, its partitions and
-- its inheritance children: the privacy_mark column, the generated functions, the
-- row and TRUNCATE triggers and the row-level security policies. Every object is
-- commented 'privacy <version> <hash>' so status can tell outdated or altered ones.
create or replace function privacy.enforce(p_table regclass)
    returns boolean
    volatile
    set search_path = ''
    language plpgsql
as $gen$
declare
    p privacy.protected_tables := privacy.registry_row(p_table);
    v_parent privacy.protected_tables;
    v_subject privacy.subject_types;
    d privacy.protected_tables;
    v_t text;
    v_fn text;
    v_params text;
    v_new_args text;
    v_old_args text;
    v_types text[];
    v_body text;
    v_prop text := '';
    v_refby_changed text := '';
    v_refby_columns name[] := '{}';
    v_watched text;
    v_update_of text;
    v_app_before_update boolean;
    v_has_refby boolean := false;
    v_has_deps boolean := false;
    v_steward text := pg_catalog.quote_literal(privacy.steward_role());
    v_policy_check text;
    v_ddl text[] := '{}';
    v_functions text[] := '{}';
    v_tag text;
    v_target oid;
    v_is_partition boolean;
    v_stmt text;
    v_own_permissive boolean;
    v_hook text;
    v_identity text;
begin
    if p.id is null then
        perform privacy.fail(pg_catalog.format('%s is not protected', p_table));
    end if;
    v_t := p_table::text;
    v_fn := 'privacy.pt_' || p.id;
    select * into v_subject from privacy.subject_types s where s.subject_type = p.subject_type;
    select pg_catalog.array_agg(privacy.column_type(p_table, c) order by i) into v_types
      from pg_catalog.unnest(p.columns) with ordinality u(c, i);
    select pg_catalog.string_agg(pg_catalog.format('a%s %s', i, v_types[i]), ', ' order by i) into v_params
      from pg_catalog.generate_subscripts(p.columns, 1) i;
    v_new_args := privacy.join_columns('new.{c}', p.columns, ', ');
    v_old_args := privacy.join_columns('old.{c}', p.columns, ', ');
    if p.parent_table is not null then
        select * into v_parent from privacy.protected_tables x
         where (x.table_schema, x.table_name) = (p.parent_schema, p.parent_table);
    end if;

    -- 1. The mark of a row, from its path (as definer: never filtered by the caller's
    --    row-level security, so an indirect path cannot fail open). It runs on every
    --    INSERT, so it is one query and has no SET clause (which costs a GUC save and
    --    restore per call): every name in it is schema-qualified, operators and types
    --    included, so the caller's search_path cannot change what it means.
    if p.path_kind = 'column' then
        -- First the subject's writer lock (see privacy.subject_lock_class), then, in a
        -- statement of its own and so with a snapshot taken after the lock, its mark.
        v_body := pg_catalog.format($f$
declare
    v_mark smallint;
begin
    perform case when pg_catalog.current_setting('transaction_isolation') operator(pg_catalog.=) 'read committed'
                 then pg_catalog.pg_advisory_xact_lock_shared(%1$s, pg_catalog.hashtext(%2$L operator(pg_catalog.||) (a1::%3$s)::pg_catalog.text) operator(pg_catalog.&) 255)
                 else privacy.lock_subject_guard(%4$L, (a1::%3$s)::pg_catalog.text) end;
    select s.mark into v_mark from privacy.subject_marks s
     where s.subject_type operator(pg_catalog.=) %4$L and s.subject_key operator(pg_catalog.=) (a1::%3$s)::pg_catalog.text;
    return coalesce(v_mark, 0);
end;$f$, privacy.subject_lock_class(), p.subject_type || '/', privacy.qualified_type(v_subject.key_type), p.subject_type);
    elsif p.path_kind = 'via' then
        v_body := pg_catalog.format($f$
declare
    v_mark smallint;
begin
    select p.privacy_mark into v_mark from %s p where %s for share of p;
    return coalesce(v_mark, 0);
end;$f$, privacy.qualified(p.parent_schema, p.parent_table), privacy.join_columns('p.{c} operator(pg_catalog.=) a{i}', p.parent_columns, ' and '));
    else
        v_body := pg_catalog.format($f$
begin
    return coalesce((select pg_catalog.bit_or(r.privacy_mark) from %s r where %s), 0)::smallint;
end;$f$, privacy.qualified(p.parent_schema, p.parent_table), privacy.join_columns('r.{c} operator(pg_catalog.=) a{i}', p.parent_columns, ' and '));
    end if;
    v_functions := v_functions || pg_catalog.format($f$
create or replace function %s_mark(%s)
    returns smallint
    volatile
    security definer
    language plpgsql
as $body$%s
$body$$f$, v_fn, v_params, v_body);

    -- 2. The subjects of a row, for refusal messages: [[type, key], ...].
    if p.path_kind = 'column' then
        v_body := pg_catalog.format($f$
    select case when a1 is null then '[]'::jsonb
                else pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(%L, (a1::%s)::text)) end$f$,
            p.subject_type, v_subject.key_type);
    else
        v_body := pg_catalog.format($f$
    select coalesce(pg_catalog.jsonb_agg(e), '[]'::jsonb)
      from %s r cross join lateral pg_catalog.jsonb_array_elements(privacy.pt_%s_subjects(%s)) e
     where %s$f$,
            privacy.qualified(p.parent_schema, p.parent_table), v_parent.id,
            privacy.join_columns('r.{c}', v_parent.columns, ', '),
            privacy.join_columns('r.{c} = a{i}', p.parent_columns, ' and '));
    end if;
    v_functions := v_functions || pg_catalog.format($f$
create or replace function %s_subjects(%s)
    returns jsonb
    stable
    security definer
    set search_path = ''
    language sql
as $body$%s
$body$$f$, v_fn, v_params, v_body);

    -- 3. The UPDATE and DELETE trigger: runs as the caller, so it knows who is acting.
    --    It fires only for marked rows and for changes of a row's path or mark. Changes a
    --    steward makes to restricted rows, and changes under break-glass, are journaled
    --    with the row's identity: its primary key, or the whole row where it has none.
    select coalesce('pg_catalog.jsonb_build_object(' || pg_catalog.string_agg(
               pg_catalog.format('%L, old.%I', a.attname, a.attname), ', ' order by k.i) || ')',
           'pg_catalog.to_jsonb(old) - ''privacy_mark''')
      into v_identity
      from pg_catalog.pg_index x
      cross join lateral pg_catalog.unnest(x.indkey) with ordinality k(attnum, i)
      join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
     where x.indrelid = p_table and x.indisprimary;
    v_functions := v_functions || pg_catalog.format($f$
create or replace function %1$s_row()
    returns trigger
    volatile
    set search_path = ''
    language plpgsql
as $body$
declare
    v_table text := pg_catalog.format('%%I.%%I', tg_table_schema, tg_table_name);
    v_mark smallint;
begin
    if tg_op = 'DELETE' then
        if old.privacy_mark & 1 <> 0 then
            if privacy.break_glass_reason(privacy.acting_role()) is null then
                perform privacy.refuse(v_table, 'DELETE', 1::smallint, %1$s_subjects(%2$s), privacy.acting_role());
            end if;
            perform privacy.journal('break_glass', tg_relid, 'DELETE', %4$s, pg_catalog.to_jsonb(old), null, %1$s_subjects(%2$s), privacy.acting_role());
        elsif old.privacy_mark & 2 <> 0 then
            if not privacy.is_privileged(privacy.acting_role(), tg_relid) then
                perform privacy.refuse(v_table, 'DELETE', 2::smallint, %1$s_subjects(%2$s), privacy.acting_role());
            end if;
            perform privacy.journal('correction', tg_relid, 'DELETE', %4$s, pg_catalog.to_jsonb(old), null, %1$s_subjects(%2$s), privacy.acting_role());
        end if;
        return old;
    end if;
    if tg_op = 'UPDATE' and new.privacy_mark is distinct from old.privacy_mark then
        -- A marking statement (placement, release, propagation): it changes nothing
        -- but the mark, and only to the value the subject's state gives.
        v_mark := %1$s_mark(%2$s);
        if v_mark = old.privacy_mark and old.privacy_mark & 1 <> 0 then
            perform privacy.refuse(v_table, 'UPDATE', 1::smallint, %1$s_subjects(%2$s), privacy.acting_role());
        end if;
        new := old;
        new.privacy_mark := v_mark;
        return new;
    end if;
    -- An UPDATE of a marked row, or one that changes the row's path.
    v_mark := %1$s_mark(%3$s);
    if old.privacy_mark & 1 <> 0 then
        if privacy.break_glass_reason(privacy.acting_role()) is null then
            perform privacy.refuse(v_table, 'UPDATE', 1::smallint, %1$s_subjects(%2$s), privacy.acting_role());
        end if;
        perform privacy.journal('break_glass', tg_relid, 'UPDATE', %4$s, pg_catalog.to_jsonb(old), pg_catalog.to_jsonb(new), %1$s_subjects(%2$s), privacy.acting_role());
    elsif old.privacy_mark & 2 <> 0 then
        if not privacy.is_privileged(privacy.acting_role(), tg_relid) then
            perform privacy.refuse(v_table, 'UPDATE', 2::smallint, %1$s_subjects(%2$s), privacy.acting_role());
        end if;
        perform privacy.journal('correction', tg_relid, 'UPDATE', %4$s, pg_catalog.to_jsonb(old), pg_catalog.to_jsonb(new), %1$s_subjects(%2$s), privacy.acting_role());
    elsif v_mark & 2 <> 0 and not privacy.is_privileged(privacy.acting_role(), tg_relid) then
        perform privacy.refuse(v_table, 'UPDATE', 2::smallint, %1$s_subjects(%3$s), privacy.acting_role());
    end if;
    new.privacy_mark := v_mark;
    return new;
end;
$body$$f$, v_fn, v_old_args, v_new_args, v_identity);

    -- 3b. The INSERT trigger: every new row takes its mark from its path, whatever the
    --     writer put there; a restricted subject's rows only a steward (or the owner)
    --     may add. It runs on every INSERT: no SET clause, every name qualified.
    v_functions := v_functions || pg_catalog.format($f$
create or replace function %1$s_insert()
    returns trigger
    volatile
    language plpgsql
as $body$
begin
    new.privacy_mark := %1$s_mark(%2$s);
    -- (Nested, so that the common case evaluates one small expression.)
    if new.privacy_mark operator(pg_catalog.>=) 2 then
        if not privacy.is_privileged(privacy.acting_role(), tg_relid) then
            perform privacy.refuse(pg_catalog.format('%%I.%%I', tg_table_schema, tg_table_name), 'INSERT', 2::smallint,
                                   %1$s_subjects(%2$s), privacy.acting_role());
        end if;
    end if;
    return new;
end;
$body$$f$, v_fn, v_new_args);

    -- 4. Propagation to the tables whose marks derive from this one's rows.
    for d in select * from privacy.protected_tables x
              where (x.parent_schema, x.parent_table) = (p.table_schema, p.table_name) order by x.id loop
        v_has_deps := true;
        if d.path_kind = 'via' then
            v_prop := v_prop || pg_catalog.format($f$
    if tg_op = 'UPDATE' and new.privacy_mark is distinct from old.privacy_mark then
        update %s c set privacy_mark = new.privacy_mark
         where %s and c.privacy_mark is distinct from new.privacy_mark;
    end if;$f$, privacy.qualified(d.table_schema, d.table_name),
                privacy.join_pairs('c.{a} = new.{b}', d.columns, d.parent_columns, ' and '));
        else
            v_has_refby := true;
            v_refby_columns := v_refby_columns || d.parent_columns;
            v_refby_changed := v_refby_changed || pg_catalog.format(' or (%s) is distinct from (%s)',
                privacy.join_columns('new.{c}', d.parent_columns, ', '), privacy.join_columns('old.{c}', d.parent_columns, ', '));
            v_prop := v_prop || pg_catalog.format($f$
    if tg_op in ('UPDATE', 'DELETE') and (%1$s) is not null then
        v_mark := privacy.pt_%2$s_mark(%1$s);
        update %3$s c set privacy_mark = v_mark where %4$s and c.privacy_mark is distinct from v_mark;
    end if;
    if tg_op in ('INSERT', 'UPDATE') and (%5$s) is not null then
        v_mark := privacy.pt_%2$s_mark(%5$s);
        update %3$s c set privacy_mark = v_mark where %6$s and c.privacy_mark is distinct from v_mark;
    end if;$f$, privacy.join_columns('old.{c}', d.parent_columns, ', '), d.id,
                privacy.qualified(d.table_schema, d.table_name),
                privacy.join_pairs('c.{a} = old.{b}', d.columns, d.parent_columns, ' and '),
                privacy.join_columns('new.{c}', d.parent_columns, ', '),
                privacy.join_pairs('c.{a} = new.{b}', d.columns, d.parent_columns, ' and '));
        end if;
    end loop;
    if v_has_deps then
        -- Runs as definer: it re-marks rows the caller may not see.
        v_functions := v_functions || pg_catalog.format($f$
create or replace function %s_propagate()
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
    end if;

    -- 5. Triggers and policies. BEFORE row triggers are named zz_privacy_* so that
    --    PostgreSQL (alphabetical order) fires them after the application's own
    --    BEFORE triggers and they judge the row as it will be written.
    --    What an ordinary UPDATE of an unmarked row costs is what PostgreSQL does per
    --    statement for each row trigger's WHEN clause (it compiles it), so the UPDATE
    --    triggers are split: one for marked rows with the smallest WHEN there is, one
    --    for changes of the path or the mark that fires only when the statement names
    --    those columns (UPDATE OF). An application BEFORE UPDATE trigger could change
    --    them without the statement naming them: where a table has one, the second
    --    trigger (and the propagation) fire on every UPDATE and test the values.
    v_policy_check := pg_catalog.format('privacy_mark < 2 or pg_catalog.pg_has_role(%s, ''MEMBER'')', v_steward);
    select pg_catalog.string_agg(pg_catalog.quote_ident(c), ', ' order by c) into v_watched
      from (select distinct c from pg_catalog.unnest(array['privacy_mark'::name] || p.columns || v_refby_columns) c) w;
    select pg_catalog.bool_or(privacy.has_own_before_update_trigger(r.relid))
      from (select p_table::oid as relid union all select x.relid from privacy.descendants(p_table) x) r
      into v_app_before_update;
    v_update_of := case when v_app_before_update then '' else ' of ' || v_watched end;
    for v_target, v_is_partition in
        select y.relid, y.is_partition from (
            select p_table::oid as relid, false as is_partition, 0 as depth
            union all
            select x.relid, x.is_partition, 1 from privacy.descendants(p_table) x) y
         order by y.depth, y.relid::regclass::text  -- a stable order: the hash of the DDL must not vary
    loop
        if v_target = p_table::oid or not v_is_partition then
            v_ddl := v_ddl || pg_catalog.format(
                'create trigger zz_privacy_before_insert before insert on %s for each row execute function %s_insert()',
                v_target::regclass, v_fn);
            v_ddl := v_ddl || pg_catalog.format(
                'create trigger zz_privacy_before_update before update on %s for each row when (old.privacy_mark <> 0) '
                'execute function %s_row()', v_target::regclass, v_fn);
            v_ddl := v_ddl || pg_catalog.format(
                'create trigger zz_privacy_before_update_path before update%s on %s for each row when '
                '(old.privacy_mark = 0 and (new.privacy_mark <> 0 or (%s) is distinct from (%s))) '
                'execute function %s_row()', v_update_of, v_target::regclass, v_new_args, v_old_args, v_fn);
            v_ddl := v_ddl || pg_catalog.format(
                'create trigger zz_privacy_before_delete before delete on %s for each row when (old.privacy_mark <> 0) '
                'execute function %s_row()', v_target::regclass, v_fn);
            if v_has_deps then
                v_ddl := v_ddl || pg_catalog.format(
                    'create trigger privacy_after_update after update%s on %s for each row when '
                    '(new.privacy_mark is distinct from old.privacy_mark or (old.privacy_mark <> 0 and (false%s))) '
                    'execute function %s_propagate()', v_update_of, v_target::regclass, v_refby_changed, v_fn);
            end if;
            if v_has_refby then
                v_ddl := v_ddl || pg_catalog.format(
                    'create trigger privacy_after_insert after insert on %s for each row when (new.privacy_mark <> 0) '
                    'execute function %s_propagate()', v_target::regclass, v_fn);
                v_ddl := v_ddl || pg_catalog.format(
                    'create trigger privacy_after_delete after delete on %s for each row when (old.privacy_mark <> 0) '
                    'execute function %s_propagate()', v_target::regclass, v_fn);
            end if;
        end if;
        v_ddl := v_ddl || pg_catalog.format(
            'create trigger privacy_before_truncate before truncate on %s for each statement execute function privacy.guard_truncate()',
            v_target::regclass);
        v_ddl := v_ddl || pg_catalog.format('alter table %s enable row level security', v_target::regclass);
        -- Stewards read and correct restricted data (and are refused by holds like everyone).
        v_ddl := v_ddl || pg_catalog.format('grant usage on schema %I to %I',
            (select n.nspname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = v_target),
            privacy.steward_role());
        v_ddl := v_ddl || pg_catalog.format('grant select, insert, update, delete on %s to %I', v_target::regclass, privacy.steward_role());
        v_ddl := v_ddl || pg_catalog.format(
            'create policy privacy_hide_restricted on %s as restrictive for all to public using (%s) with check (%s)',
            v_target::regclass, v_policy_check, v_policy_check);
        -- Restrictive policies grant nothing by themselves; where the table has no
        -- permissive policy of its own, add one that allows what grants allow.
        select exists (select 1 from pg_catalog.pg_policy pol
                        where pol.polrelid = v_target and pol.polpermissive and pol.polname !~ '^privacy_')
          into v_own_permissive;
        if not v_own_permissive then
            v_ddl := v_ddl || pg_catalog.format(
                'create policy privacy_permit_all on %s as permissive for all to public using (true) with check (true)',
                v_target::regclass);
        end if;
    end loop;

    v_tag := 'privacy ' || privacy.toolkit_version() || ' '
          || pg_catalog.md5(pg_catalog.array_to_string(v_functions || v_ddl, E'\n'));
    if p.enforcement is not distinct from v_tag
       and not exists (select 1 from privacy.enforcement_status() s where s.protected_table = v_t and s.state <> 'installed') then
        return false;  -- complete and current: leave the tables alone (no locks taken)
    end if;

    -- Our own DDL must not send the partition hook (50_partitions.sql) back in here.
    v_hook := pg_catalog.current_setting('privacy.in_ddl_hook', true);
    perform pg_catalog.set_config('privacy.in_ddl_hook', 'on', true);
    execute pg_catalog.format('alter table %s add column if not exists privacy_mark smallint not null default 0', v_t);
    execute pg_catalog.format($c$comment on column %s.privacy_mark is 'Maintained by the privacy toolkit (bit 1: legal hold, bit 2: processing restriction). Do not write.'$c$, v_t);
    perform privacy.drop_enforcement(p, false);
    foreach v_stmt in array v_functions loop
        execute v_stmt;
    end loop;
    foreach v_stmt in array v_ddl loop
        execute v_stmt;
    end loop;
    -- Mark what was generated, so drift is detectable: the generation's tag, then a
    -- hash of the object as it stands (an ALTER POLICY or CREATE OR REPLACE changes it).
    for v_stmt in
        select pg_catalog.format('comment on trigger %I on %s is %L', t.tgname, t.tgrelid::regclass,
                                 v_tag || ' ' || privacy.object_hash('trigger', t.oid))
          from pg_catalog.pg_trigger t
         where t.tgparentid = 0 and t.tgname ~ '^(zz_)?privacy_'
           and t.tgrelid in (select p_table::oid union all select x.relid from privacy.descendants(p_table) x)
        union all
        select pg_catalog.format('comment on policy %I on %s is %L', pol.polname, pol.polrelid::regclass,
                                 v_tag || ' ' || privacy.object_hash('policy', pol.oid))
          from pg_catalog.pg_policy pol
         where pol.polname ~ '^privacy_'
           and pol.polrelid in (select p_table::oid union all select x.relid from privacy.descendants(p_table) x)
        union all
        select pg_catalog.format('comment on function %s is %L', pr.oid::regprocedure,
                                 v_tag || ' ' || privacy.object_hash('function', pr.oid))
          from pg_catalog.pg_proc pr
         where pr.pronamespace = 'privacy'::regnamespace and pr.proname ~ ('^pt_' || p.id || '_')
    loop
        execute v_stmt;
    end loop;
    -- Applications call the generated functions through the triggers; nothing else.
    for v_stmt in select pr.oid::regprocedure::text from pg_catalog.pg_proc pr
                   where pr.pronamespace = 'privacy'::regnamespace and pr.proname ~ ('^pt_' || p.id || '_') loop
        execute 'revoke all on function ' || v_stmt || ' from public';
    end loop;
    -- (Trigger functions cannot be called directly; PostgreSQL checks them when it
    -- clones row triggers onto a new partition, as whoever creates the partition.)
    execute pg_catalog.format('grant execute on function %s_mark(%s), %s_subjects(%s), %s_row(), %s_insert() to public',
        v_fn, pg_catalog.array_to_string(v_types, ','), v_fn, pg_catalog.array_to_string(v_types, ','), v_fn, v_fn);
    if v_has_deps then
        execute pg_catalog.format('grant execute on function %s_propagate() to public', v_fn);
    end if;
    update privacy.protected_tables set enforcement = v_tag where id = p.id;
    perform pg_catalog.set_config('privacy.in_ddl_hook', coalesce(v_hook, 'off'), true);
    return true;
end;
$gen$;

-- Sets the privacy_mark of a protected table's rows to what their subjects' state
-- gives. p_full re-checks every marked row too (after an attach, restore or sync);
-- otherwise only rows on a path from a marked subject are touched. p_relation
-- narrows the work to one partition or child.
create or replace function privacy.remark_table(p_id integer, p_full boolean, p_relation regclass default null)
    returns bigint
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_key_type text;
    v_set text;
    v_marked text;
    v_count bigint;
begin
    select * into p from privacy.protected_tables where id = p_id;
    select s.key_type into v_key_type from privacy.subject_types s where s.subject_type = p.subject_type;
    if p.path_kind = 'column' then
        v_set := pg_catalog.format('select s.subject_key::%s from privacy.subject_marks s where s.subject_type = %L',
            privacy.column_type(privacy.qualified(p.table_schema, p.table_name)::regclass, p.columns[1]), p.subject_type);
    else
        v_set := pg_catalog.format('select %s from %s r where r.privacy_mark <> 0',
            privacy.join_columns('r.{c}', p.parent_columns, ', '), privacy.qualified(p.parent_schema, p.parent_table));
    end if;
    v_marked := pg_catalog.format('(%s) in (%s)', privacy.join_columns('t.{c}', p.columns, ', '), v_set);
    if p_full then
        v_marked := '(t.privacy_mark <> 0 or ' || v_marked || ')';
    end if;
    execute pg_catalog.format(
        'update %s t set privacy_mark = privacy.pt_%s_mark(%s) where %s and t.privacy_mark is distinct from privacy.pt_%s_mark(%s)',
        coalesce(p_relation::text, privacy.qualified(p.table_schema, p.table_name)), p.id, privacy.join_columns('t.{c}', p.columns, ', '),
        v_marked, p.id, privacy.join_columns('t.{c}', p.columns, ', '));
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Refuses TRUNCATE of a protected table, partition or child while it holds rows of a
-- held or restricted subject (TRUNCATE bypasses row triggers).
create or replace function privacy.guard_truncate()
    returns trigger
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    perform privacy.check_truncate(tg_relid, privacy.acting_role());
    return null;
end;
$$;

create or replace function privacy.check_truncate(p_relid oid, p_actor name)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables := privacy.protected_table_of(p_relid);
    v_mark smallint;
    v_subjects jsonb;
begin
    if p.id is null then
        return;
    end if;
    execute pg_catalog.format(
        'select t.privacy_mark, privacy.pt_%s_subjects(%s) from %s t where t.privacy_mark <> 0 order by t.privacy_mark & 1 desc limit 1',
        p.id, privacy.join_columns('t.{c}', p.columns, ', '), p_relid::regclass)
      into v_mark, v_subjects;
    if v_mark is not null then
        perform privacy.refuse(p_relid::regclass::text, 'TRUNCATE',
            case when v_mark & 1 <> 0 then 1 else 2 end::smallint, v_subjects, p_actor);
    end if;
end;
$$;

-- Regenerates the enforcement of every protected table (after an upgrade of the
-- toolkit or a change of steward role); returns how many tables were regenerated.
create or replace function privacy.refresh_enforcement()
    returns integer
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    p privacy.protected_tables;
    v_rel regclass;
    v_count integer := 0;
begin
    for p in select * from privacy.protected_tables order by id loop
        v_rel := pg_catalog.to_regclass(privacy.qualified(p.table_schema, p.table_name));
        if v_rel is null then
            raise warning 'privacy: protected table % no longer exists', privacy.qualified(p.table_schema, p.table_name);
            continue;
        end if;
        if privacy.enforce(v_rel) then
            v_count := v_count + 1;
        end if;
    end loop;
    return v_count;
end;
$$;

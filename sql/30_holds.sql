-- sql/30_holds.sql: placing and releasing legal holds and processing restrictions.

-- The subject key in its canonical text form, or a clear error when the subject
-- type is unknown or no row of the root table has that key.
create or replace function privacy.canonical_key(p_subject_type text, p_key text)
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
        execute pg_catalog.format('select (%I)::text from %s where %I = $1::%s',
            s.key_column, privacy.qualified(s.table_schema, s.table_name), s.key_column, s.key_type)
          into v_key using p_key;
    exception when data_exception then
        perform privacy.fail(pg_catalog.format('%L is not a valid %s key (%s)', p_key, p_subject_type, s.key_type));
    end;
    if v_key is null then
        perform privacy.fail(pg_catalog.format('unknown subject %s/%s: no row in %s with %s = %L', p_subject_type, p_key,
            privacy.qualified(s.table_schema, s.table_name), pg_catalog.quote_ident(s.key_column), p_key));
    end if;
    return v_key;
end;
$$;

-- Brings a subject's marks in line with its active holds and restrictions: updates
-- subject_marks, bumps the subject's guard bucket (so concurrent writers serialize
-- behind this transaction) and re-marks its rows in every protected table, from
-- which the triggers propagate along via and referenced-by paths.
create or replace function privacy.refresh_subject(p_subject_type text, p_key text)
    returns smallint
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_mark smallint;
    p privacy.protected_tables;
begin
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        perform privacy.fail('holds and restrictions are placed and released at READ COMMITTED isolation, so that rows written concurrently are marked too');
    end if;
    -- First, so that writers which checked this subject before us finish first, and
    -- those after us see our marks.
    update privacy.subject_guards set generation = generation + 1
     where bucket = pg_catalog.hashtext(p_subject_type || '/' || p_key) & 1023;
    select (case when pg_catalog.bool_or(r.kind = 'legal_hold') then 1 else 0 end
          | case when pg_catalog.bool_or(r.kind = 'restriction') then 2 else 0 end)::smallint
      into v_mark
      from privacy.processing_restrictions r
     where r.subject_type = p_subject_type and r.subject_key = p_key and r.released_at is null;
    v_mark := coalesce(v_mark, 0);
    if v_mark = 0 then
        delete from privacy.subject_marks where subject_type = p_subject_type and subject_key = p_key;
    else
        insert into privacy.subject_marks (subject_type, subject_key, mark) values (p_subject_type, p_key, v_mark)
        on conflict (subject_type, subject_key) do update set mark = excluded.mark;
    end if;
    for p in select * from privacy.protected_tables x where x.subject_type = p_subject_type and x.path_kind = 'column' order by x.id loop
        execute pg_catalog.format('update %s t set privacy_mark = $1 where t.%I = $2::%s and t.privacy_mark is distinct from $1',
            privacy.qualified(p.table_schema, p.table_name), p.columns[1],
            privacy.column_type(privacy.qualified(p.table_schema, p.table_name)::regclass, p.columns[1]))
          using v_mark, p_key;
    end loop;
    return v_mark;
end;
$$;

-- Places a legal hold: until released, nobody may change or delete the subject's
-- rows in any protected table. Returns the hold's id.
create or replace function privacy.place_hold(p_subject_type text, p_key text, p_case text, p_reason text)
    returns uuid
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_key text := privacy.canonical_key(p_subject_type, p_key);
    v_id uuid;
begin
    if p_case is null or pg_catalog.btrim(p_case) = '' then
        perform privacy.fail('a legal hold needs a case reference');
    end if;
    if p_reason is null or pg_catalog.btrim(p_reason) = '' then
        perform privacy.fail('a legal hold needs a reason');
    end if;
    insert into privacy.processing_restrictions (kind, subject_type, subject_key, case_ref, reason, placed_by, placed_role)
    values ('legal_hold', p_subject_type, v_key, p_case, p_reason, session_user,
            coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user))
    returning id into v_id;
    perform privacy.refresh_subject(p_subject_type, v_key);
    perform privacy.ledger_append('hold_placed', p_subject_type, v_key, v_id,
        pg_catalog.jsonb_build_object('case', p_case, 'reason', p_reason));
    return v_id;
end;
$$;

-- Places a processing restriction (GDPR Art. 18): until released, the subject's
-- rows are invisible to restricted roles, who can neither change them nor add rows.
create or replace function privacy.place_restriction(p_subject_type text, p_key text, p_basis text, p_reason text)
    returns uuid
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_key text := privacy.canonical_key(p_subject_type, p_key);
    v_id uuid;
begin
    if p_basis is null or p_basis not in ('accuracy', 'unlawful', 'legal-claims', 'objection') then
        perform privacy.fail(pg_catalog.format('basis %L is not one of accuracy, unlawful, legal-claims, objection (GDPR Art. 18(1)(a)-(d))', p_basis));
    end if;
    if p_reason is null or pg_catalog.btrim(p_reason) = '' then
        perform privacy.fail('a restriction needs a reason');
    end if;
    insert into privacy.processing_restrictions (kind, subject_type, subject_key, basis, reason, placed_by, placed_role)
    values ('restriction', p_subject_type, v_key, p_basis, p_reason, session_user,
            coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user))
    returning id into v_id;
    perform privacy.refresh_subject(p_subject_type, v_key);
    perform privacy.ledger_append('restriction_placed', p_subject_type, v_key, v_id,
        pg_catalog.jsonb_build_object('basis', p_basis, 'reason', p_reason));
    return v_id;
end;
$$;

-- Releases one hold or restriction; the subject stays marked while any other is active.
create or replace function privacy.release(p_id uuid, p_kind text, p_reason text, p_reference text)
    returns void
    volatile
    security definer
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
    if p_reason is null or pg_catalog.btrim(p_reason) = '' then
        perform privacy.fail(pg_catalog.format('releasing a %s needs a reason', v_label));
    end if;
    update privacy.processing_restrictions
       set state = 'released', released_at = pg_catalog.now(), released_by = session_user,
           released_role = coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user),
           release_reason = p_reason, release_reference = p_reference
     where id = p_id;
    perform privacy.refresh_subject(r.subject_type, r.subject_key);
    perform privacy.ledger_append(case p_kind when 'legal_hold' then 'hold_released' else 'restriction_released' end,
        r.subject_type, r.subject_key, p_id,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('reason', p_reason, 'reference', p_reference)));
end;
$$;

-- Releases a legal hold, with the reason and the reference (case closed, counsel's instruction).
create or replace function privacy.release_hold(p_id uuid, p_reason text, p_reference text default null)
    returns void
    volatile
    security definer
    set search_path = ''
    language sql
as $$ select privacy.release(p_id, 'legal_hold', p_reason, p_reference) $$;

-- Releases a processing restriction.
create or replace function privacy.release_restriction(p_id uuid, p_reason text)
    returns void
    volatile
    security definer
    set search_path = ''
    language sql
as $$ select privacy.release(p_id, 'restriction', p_reason, null) $$;

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
                    where s.subject_type = p_subject_type and s.subject_key = p_key and s.mark & 2 <> 0)
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


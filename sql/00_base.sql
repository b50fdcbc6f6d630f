-- sql/00_base.sql: version, roles, refusals and the ledger.
-- Every file in sql/ is the current truth and re-runnable: pyctl install (and the
-- yoyo post-apply hook) executes them in name order, in one transaction.

-- On a Citus coordinator, one connection per worker for the whole reload: the revokes
-- below reach a distributed table's shards (the corrections journal, sql/89_citus.sql),
-- and Citus refuses the function DDL that follows a parallel operation.
select pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true)
 where exists (select 1 from pg_catalog.pg_extension e where e.extname = 'citus');

-- Lock the schema down again on every reload; later files grant what is needed.
revoke all on schema privacy from public;
revoke all on all tables in schema privacy from public;
revoke all on all sequences in schema privacy from public;
-- (Functions are granted to PUBLIC on creation whatever the schema's default
-- privileges say, so 90_grants.sql and the generator revoke them explicitly.)

-- The toolkit version that generated what is installed.
create or replace function privacy.toolkit_version()
    returns text
    immutable
    set search_path = ''
    language sql
as $$ select '0.2.0' $$;

-- The role whose members are stewards (configurable at install).
create or replace function privacy.steward_role()
    returns name
    stable
    set search_path = ''
    language sql
as $$
    select coalesce((select value from privacy.settings where name = 'steward_role'), 'privacy_steward')::name
$$;

-- Install, first step (run right after this file is loaded, before the others grant
-- anything to the steward role): the steward role exists and is the one recorded.
-- P_ROLE null keeps the recorded one (privacy_steward the first time). Creating the
-- role needs CREATEROLE. pyctl install and yoyo's post-apply.py both call it.
create or replace function privacy.ensure_steward_role(p_role name)
    returns name
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_role name := coalesce(p_role, (select s.value from privacy.settings s where s.name = 'steward_role'), 'privacy_steward');
begin
    if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_role) then
        begin
            execute pg_catalog.format('create role %I nologin', v_role);
        exception when insufficient_privilege then
            perform privacy.fail(pg_catalog.format('role %s does not exist and %s may not create roles: create it '
                '(CREATE ROLE %s NOLOGIN) or pass --steward-role with an existing role', v_role, current_user, pg_catalog.quote_ident(v_role)));
        end;
    end if;
    insert into privacy.settings (name, value) values ('steward_role', v_role)
    on conflict (name) do update set value = excluded.value;
    return v_role;
end;
$$;

-- True when ROLE may act on restricted rows of TABLE: a steward, a member of the
-- table's owner (who bypasses row-level security anyway), or a superuser.
create or replace function privacy.is_privileged(p_role name, p_table oid)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    select exists (select 1 from pg_catalog.pg_roles r where r.rolname = p_role and (r.rolsuper or r.rolbypassrls))
        or pg_catalog.pg_has_role(p_role, privacy.steward_role(), 'MEMBER')
        or exists (select 1 from pg_catalog.pg_class c
                    where c.oid = p_table and pg_catalog.pg_has_role(p_role, c.relowner, 'USAGE'))
$$;

-- Who is acting, from the session alone: the role it SET ROLE to, else its login
-- (session_user). It is the same inside the toolkit's SECURITY DEFINER functions and
-- triggers, inside a referential cascade (which PostgreSQL runs as the table owner)
-- and inside anybody's SECURITY DEFINER function, so no argument can claim another
-- identity. The ledger records it as acting_role, and session_user as session_role.
create or replace function privacy.acting_role()
    returns name
    stable
    set search_path = ''
    language sql
as $$
    select coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user)::name
$$;

-- Raises the toolkit's refusal of OPERATION on RELID: SQLSTATE PV001, message prefix
-- 'privacy: '. The message names the subject, the hold and its case only to a role
-- that may see the row: whoever is refused because of a processing restriction (or of
-- a hold on a restricted subject) and is not privileged learns that the row is
-- restricted, not whose it is. The server log gets everything (LOG), the client never
-- does: client_min_messages is the function's own.
create or replace function privacy.refuse(p_relid oid, p_operation text, p_mark smallint, p_subjects jsonb)
    returns void
    volatile
    set search_path = ''
    set client_min_messages = 'notice'  -- the LOG line below is for the server log: a role that lowered it must not get it
    language plpgsql
as $$
declare
    v_actor name := privacy.acting_role();
    v_kind text := case when p_mark & 1 <> 0 then 'legal_hold' else 'restriction' end;
    v_table text := coalesce(p_relid::regclass::text, '(unknown table)');
    v_row privacy.processing_restrictions;
    v_subject text;
    v_full text;
    v_shown text;
begin
    -- p_subjects: [[type, key], ...]; name the first one under the blocking kind.
    select r.* into v_row
      from pg_catalog.jsonb_array_elements(coalesce(p_subjects, '[]')) s
      join privacy.processing_restrictions r on r.subject_type = s->>0 and r.subject_key = s->>1
     where r.released_at is null and r.kind = v_kind
     order by r.placed_at
     limit 1;
    v_subject := coalesce(v_row.subject_type || '/' || v_row.subject_key,
                          (select (s->>0) || '/' || (s->>1) from pg_catalog.jsonb_array_elements(coalesce(p_subjects, '[]')) s limit 1),
                          '(unknown)');
    v_full := case when v_kind = 'legal_hold' and v_row.id is not null
                   then pg_catalog.format('subject %s is under legal hold %s (case %s)', v_subject, v_row.id, v_row.case_ref)
                   when v_kind = 'legal_hold' then pg_catalog.format('subject %s is under legal hold', v_subject)
                   when v_row.id is not null then pg_catalog.format('subject %s is under processing restriction %s', v_subject, v_row.id)
                   else pg_catalog.format('subject %s is under a processing restriction', v_subject) end;
    if p_mark >= 2 and not privacy.is_privileged(v_actor, p_relid) then  -- (2 and up: some restriction)
        v_shown := pg_catalog.format('%s under %s',
            case when p_operation = 'TRUNCATE' then 'it holds rows of a subject' else 'the row''s subject is' end,
            case when v_kind = 'legal_hold' then 'legal hold' else 'a processing restriction' end);
    else
        v_shown := v_full;
    end if;
    -- The refused statement rolls back, so its trace goes to the server log.
    raise log 'privacy: refused % on % by % (session %): %', p_operation, v_table, v_actor, session_user, v_full;
    raise exception using
        errcode = 'PV001',
        message = pg_catalog.format('privacy: %s on %s refused: %s', p_operation, v_table, v_shown),
        hint = case when v_kind = 'legal_hold'
                    then 'A legal hold preserves the data: nobody may change or delete it until the hold is released.'
                    else 'Restricted data may only be stored: only stewards may correct it until the restriction is released.' end;
end;
$$;

-- Raises a usage error of the SQL API: SQLSTATE PV002, message prefix 'privacy: '.
create or replace function privacy.fail(p_message text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    raise exception using errcode = 'PV002', message = 'privacy: ' || p_message;
end;
$$;

-- Raises PV002 with P_MESSAGE unless P_VALUE has something besides blanks in it.
create or replace function privacy.require_text(p_value text, p_message text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    if p_value is null or pg_catalog.btrim(p_value) = '' then
        perform privacy.fail(p_message);
    end if;
end;
$$;

-- The text whose sha256 (after the previous hash) is an entry's hash.
create or replace function privacy.ledger_content(p privacy.ledger)
    returns text
    immutable
    set search_path = ''
    language sql
as $$
    select pg_catalog.jsonb_build_object(
        'seq', p.seq,
        'recorded_at', pg_catalog.to_char(p.recorded_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'session_role', p.session_role,
        'acting_role', p.acting_role,
        'event', p.event,
        'subject_type', p.subject_type,
        'subject_key', p.subject_key,
        'restriction_id', p.restriction_id,
        'payload', p.payload)::text
$$;

-- Appends one event to the ledger, chained to the previous one; serialised by a
-- lock on the ledger so the chain follows commit order. Also NOTIFYs privacy_events.
create or replace function privacy.ledger_append(
        p_event text, p_subject_type text, p_subject_key text, p_restriction_id uuid, p_payload jsonb)
    returns bigint
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v privacy.ledger;
    v_last privacy.ledger;
begin
    lock table privacy.ledger in share row exclusive mode;
    select * into v_last from privacy.ledger order by seq desc limit 1;
    v.seq := coalesce(v_last.seq, 0) + 1;
    v.recorded_at := pg_catalog.clock_timestamp();
    v.session_role := session_user;
    v.acting_role := privacy.acting_role();
    v.event := p_event;
    v.subject_type := p_subject_type;
    v.subject_key := p_subject_key;
    v.restriction_id := p_restriction_id;
    v.payload := coalesce(p_payload, '{}');
    v.prev_hash := v_last.hash;
    v.hash := pg_catalog.sha256(coalesce(v.prev_hash, ''::bytea) || pg_catalog.convert_to(privacy.ledger_content(v), 'UTF8'));
    insert into privacy.ledger values (v.*);
    -- Art. 19: every recipient must be told of each placement and release of a restriction.
    if p_event in ('restriction_placed', 'restriction_released') then
        insert into privacy.recipient_notices (recipient, ledger_seq) select r.name, v.seq from privacy.recipients r;
    end if;
    perform pg_catalog.pg_notify('privacy_events', pg_catalog.jsonb_build_object(
        'seq', v.seq, 'event', v.event, 'subject_type', v.subject_type,
        'subject_key', v.subject_key, 'id', v.restriction_id)::text);
    return v.seq;
end;
$$;

-- Refuses every change to the ledger: it is append-only for every role, the owner included.
create or replace function privacy.ledger_is_append_only()
    returns trigger
    volatile
    set search_path = ''
    language plpgsql
as $$
begin
    raise exception using errcode = 'PV001',
        message = pg_catalog.format('privacy: %s on privacy.ledger refused: the ledger is append-only', tg_op);
end;
$$;

drop trigger if exists privacy_append_only on privacy.ledger;
create trigger privacy_append_only before update or delete on privacy.ledger
    for each row execute function privacy.ledger_is_append_only();
drop trigger if exists privacy_no_truncate on privacy.ledger;
create trigger privacy_no_truncate before truncate on privacy.ledger
    for each statement execute function privacy.ledger_is_append_only();

-- The first entry whose hash does not match its content and predecessor, or a gap
-- in the sequence; no row when the whole chain verifies.
create or replace function privacy.verify_ledger()
    returns table (seq bigint, problem text)
    stable
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v privacy.ledger;
    v_prev bytea;
    v_expected bigint := 1;
begin
    for v in select * from privacy.ledger l order by l.seq loop
        if v.seq <> v_expected then
            seq := v_expected; problem := pg_catalog.format('entry %s is missing (next entry is %s)', v_expected, v.seq);
            return next; return;
        end if;
        if v.prev_hash is distinct from v_prev then
            seq := v.seq; problem := 'prev_hash does not match the previous entry''s hash';
            return next; return;
        end if;
        if v.hash <> pg_catalog.sha256(coalesce(v_prev, ''::bytea) || pg_catalog.convert_to(privacy.ledger_content(v), 'UTF8')) then
            seq := v.seq; problem := 'content does not match its hash (entry altered)';
            return next; return;
        end if;
        v_prev := v.hash;
        v_expected := v.seq + 1;
    end loop;
    -- Entries removed from the end leave the chain intact: every hold, restriction and
    -- correction must still find its own events.
    for seq, problem in
        select null::bigint, pg_catalog.format('%s %s has no %s event', pg_catalog.replace(r.kind, '_', ' '), r.id, e.event)
          from privacy.processing_restrictions r
          cross join lateral (values (case r.kind when 'legal_hold' then 'hold_placed' else 'restriction_placed' end, true),
                                     (case r.kind when 'legal_hold' then 'hold_released' else 'restriction_released' end,
                                      r.released_at is not null)) e(event, expected)
         where e.expected
           and not exists (select 1 from privacy.ledger l where l.restriction_id = r.id
                            and (l.event = e.event
                                 -- brought in by pyctl sync: one event per state it arrived in
                                 or (l.event = 'synced_' || r.kind and (e.event like '%_placed' or l.payload->>'state' = 'released'))))
        union all
        select null::bigint, pg_catalog.format('legal hold %s has no hold_digested event', h.hold_id)
          from (select distinct d.hold_id from privacy.hold_digests d) h
         where not exists (select 1 from privacy.ledger l where l.restriction_id = h.hold_id
                            and l.event in ('hold_digested', 'synced_legal_hold'))
        union all
        select c.ledger_seq, pg_catalog.format('correction %s has no ledger entry', c.id)
          from privacy.corrections c
         where not exists (select 1 from privacy.ledger l where l.seq = c.ledger_seq)
        union all
        select e.ledger_seq, pg_catalog.format('erasure %s has no ledger entry', e.id)
          from privacy.erasures e
         where e.state = 'erased'
           and not exists (select 1 from privacy.ledger l where l.seq = e.ledger_seq and l.event in ('erasure', 'synced_erasure'))
    loop
        return next;
        return;
    end loop;
end;
$$;

-- sql/33_purposes.sql: purpose-scoped restrictions and their exceptions (issue 19).
--
-- A purpose is a kind of processing (marketing, billing, legal-claims). Application
-- roles serve it by being members of its NOLOGIN group role (privacy_purpose_<name>);
-- a role that serves no purpose is "general". Each purpose owns one bit of the rows'
-- privacy_mark (privacy.purposes.bit), so that reading stays a comparison on the row's
-- own mark, with no lookup and no function call per row:
--
--   bit 0 (1)        a legal hold
--   bit 1 (2)        a restriction that applies to every application role (no --purpose)
--   bits 2-14        restricted for the purpose with that bit: set by a restriction scoped
--                    to it, and by every unscoped restriction that does not except it
--
-- Row-level security: the policy for every role (privacy_hide_restricted, sql/20_enforce.sql)
-- lets a marked row through when bit 1 is clear (only purpose-scoped restrictions) or when
-- the role serves some purpose; each purpose has a restrictive policy of its own, TO its
-- role, that hides the rows whose mark has that purpose's bit. PostgreSQL picks the
-- policies that apply to a role when it plans the query, so a general role's plan is the
-- one it had before purposes existed, and a purpose role pays one more integer comparison.
--
-- Writes: a role may change or add a subject's rows only when no restriction applies to
-- it: mark_binds() says one does when bit 1 is set (an unscoped restriction binds every
-- role, also the roles of the purposes it excepts: an exception is read-only) or when a
-- bit of one of the role's purposes is. The generated triggers ask it of marked rows only.
--
-- The mark is a smallint and keeps its sign bit clear (privacy_mark < 2 stays "no
-- restriction"): hence at most 13 purposes.

-- The bits of the purposes ROLE serves (has the privileges of: the way PostgreSQL decides
-- which policies apply to a role), or 0.
create or replace function privacy.role_mask(p_role name)
    returns smallint
    stable
    set search_path = ''
    language sql
as $$
    select coalesce(pg_catalog.bit_or(1 operator(pg_catalog.<<) p.bit), 0)::smallint
      from privacy.purposes p join pg_catalog.pg_roles r on r.rolname = p.role_name
     where pg_catalog.pg_has_role(p_role, r.oid, 'USAGE')
$$;

-- Whether a restriction in MARK applies to ROLE, so that it may not change or add such
-- rows: an unscoped restriction (bit 1) applies to every role, the roles of excepted
-- purposes included; a scoped one to the roles of its purposes. (Privilege, i.e. the
-- steward and the owner, is the caller's to test.)
create or replace function privacy.mark_binds(p_role name, p_mark smallint)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    select (p_mark operator(pg_catalog.&) 2::smallint) operator(pg_catalog.<>) 0::smallint
        or (p_mark operator(pg_catalog.&) privacy.role_mask(p_role)) operator(pg_catalog.<>) 0::smallint
$$;

-- The mark of a subject's rows from its active holds and restrictions (see above).
-- One small indexed query per active hold or restriction of the subject: placement
-- pays it once per subject (a single statement with correlated sub-selects was planned,
-- on the toolkit's unanalyzed tables, expensive enough to be JIT-compiled every time).
create or replace function privacy.subject_mark(p_subject_type text, p_key text)
    returns smallint
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v_mark integer := 0;
    r record;
begin
    for r in select x.id, x.kind from privacy.processing_restrictions x
              where x.subject_type = p_subject_type and x.subject_key = p_key and x.released_at is null loop
        if r.kind = 'legal_hold' then
            v_mark := v_mark | 1;
        elsif exists (select 1 from privacy.restriction_purposes s where s.restriction_id = r.id and s.kind = 'scope') then
            v_mark := v_mark | coalesce((select pg_catalog.bit_or(1 << p.bit) from privacy.restriction_purposes s
                                           join privacy.purposes p on p.name = s.purpose
                                          where s.restriction_id = r.id and s.kind = 'scope'), 0);
        else
            v_mark := v_mark | 2 | coalesce((select pg_catalog.bit_or(1 << p.bit) from privacy.purposes p
                                               where not exists (select 1 from privacy.restriction_purposes e
                                                                  where e.restriction_id = r.id and e.kind = 'exception'
                                                                    and e.purpose = p.name and e.withdrawn_at is null)), 0);
        end if;
    end loop;
    return v_mark::smallint;
end;
$$;

-- What privacy_hide_restricted adds to its test once purposes exist: a row restricted for
-- purposes only (bit 1 clear) is no business of a general role, and a role that serves a
-- purpose is judged by that purpose's own policy. Empty without purposes.
create or replace function privacy.purpose_policy_arms()
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select coalesce(' or (privacy_mark & 2::smallint) = 0' || pg_catalog.string_agg(
               pg_catalog.format(' or pg_catalog.pg_has_role(%L, ''USAGE'')', p.role_name), '' order by p.bit), '')
      from privacy.purposes p
$$;

-- One restrictive policy per purpose, TO its role: the rows restricted for it are hidden
-- (BASE is the test of privacy_hide_restricted without purposes: stewards and the
-- toolkit's owner still see them). '{target}' stands for the table.
create or replace function privacy.purpose_policies(p_base text)
    returns table (name text, ddl text)
    stable
    set search_path = ''
    language sql
as $$
    select p.role_name::text,
           pg_catalog.format('create policy %I on {target} as restrictive for all to %I using (%s) with check (%s)',
               p.role_name, p.role_name, x.test, x.test)
      from privacy.purposes p
     cross join lateral (select pg_catalog.replace(p_base, 'privacy_mark < 2',
                                    pg_catalog.format('privacy_mark < 2 or (privacy_mark & %s::smallint) = 0', 1 << p.bit)) as test) x
     order by p.bit
$$;

-- Registers a purpose and creates its NOLOGIN group role (privacy_purpose_<name>; an
-- existing role of that name is adopted if it is NOLOGIN and bypasses nothing, as where
-- several databases of one cluster share purposes). Regenerates every protected table's
-- policies and re-marks the subjects under unscoped restrictions, which now bind the new
-- purpose too. Returns the role's name. (The toolkit's owner only: it creates a role and
-- changes what every restriction means; stewards then scope restrictions to it.)
create or replace function privacy.add_purpose(p_name text, p_description text)
    returns name
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_role name;
    v_bit smallint;
    r pg_catalog.pg_roles;
    s record;
begin
    if p_name is null or p_name !~ '^[a-z][a-z0-9]*(-[a-z0-9]+)*$' or pg_catalog.length(p_name) > 40 then
        perform privacy.fail(pg_catalog.format('purpose name %L must be lower-case letters and digits, words joined by "-", '
                                               'at most 40 characters (e.g. marketing, legal-claims)', p_name));
    end if;
    if exists (select 1 from privacy.purposes p where p.name = p_name) then
        perform privacy.fail(pg_catalog.format('purpose %s already exists', p_name));
    end if;
    select g into v_bit from pg_catalog.generate_series(2, 14) g
     where not exists (select 1 from privacy.purposes p where p.bit = g) order by g limit 1;
    if v_bit is null then
        perform privacy.fail('at most 13 purposes: each owns one bit of the rows'' smallint privacy_mark, '
                             'beside the legal hold, the unscoped restriction and the sign');
    end if;
    v_role := ('privacy_purpose_' || pg_catalog.replace(p_name, '-', '_'))::name;
    select * into r from pg_catalog.pg_roles x where x.rolname = v_role;
    if found then
        if r.rolcanlogin or r.rolsuper or r.rolbypassrls or r.rolreplication then
            perform privacy.fail(pg_catalog.format('role %s exists and is not a plain NOLOGIN group role: drop or rename it first', v_role));
        end if;
    else
        execute pg_catalog.format('create role %I nologin', v_role);
    end if;
    execute pg_catalog.format('comment on role %I is %L', v_role,
        pg_catalog.format('privacy purpose %s: application roles that are members serve it (pyctl purpose list)', p_name));
    insert into privacy.purposes (name, role_name, bit, description)
    values (p_name, v_role, v_bit, coalesce(p_description, ''));
    perform privacy.ledger_append('purpose_added', null, null, null,
        pg_catalog.jsonb_build_object('purpose', p_name, 'role', v_role, 'bit', v_bit));
    perform privacy.refresh_enforcement();
    for s in select distinct r2.subject_type, r2.subject_key from privacy.processing_restrictions r2
              where r2.kind = 'restriction' and r2.released_at is null
                and not exists (select 1 from privacy.restriction_purposes x where x.restriction_id = r2.id and x.kind = 'scope') loop
        perform privacy.refresh_subject(s.subject_type, s.subject_key);
    end loop;
    return v_role;
end;
$$;

-- Makes ROLE serve PURPOSE (a member of its role, with its privileges: PostgreSQL then
-- applies the purpose's policies to it; a NOINHERIT role would not get them, and is
-- refused). (The toolkit's owner only, like create_app_role.)
create or replace function privacy.grant_purpose(p_role name, p_purpose text)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_group name := (select p.role_name from privacy.purposes p where p.name = p_purpose);
begin
    if v_group is null then
        perform privacy.fail(pg_catalog.format('unknown purpose %s (pyctl purpose list)', p_purpose));
    end if;
    if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = p_role) then
        perform privacy.fail(pg_catalog.format('role %s does not exist', p_role));
    end if;
    if not (select r.rolinherit from pg_catalog.pg_roles r where r.rolname = p_role) then
        perform privacy.fail(pg_catalog.format('role %s is NOINHERIT: PostgreSQL would not apply the policies of purpose %s to it '
                                               '(ALTER ROLE %I INHERIT first)', p_role, p_purpose, p_role));
    end if;
    execute pg_catalog.format('grant %I to %I', v_group, p_role);
    perform privacy.ledger_append('purpose_granted', null, null, null,
        pg_catalog.jsonb_build_object('purpose', p_purpose, 'role', p_role));
end;
$$;

-- The purposes P_NAMES as a checked, de-duplicated, sorted list (PV002 for an unknown one).
create or replace function privacy.checked_purposes(p_names text[])
    returns text[]
    stable
    set search_path = ''
    language plpgsql
as $$
declare
    v_name text;
begin
    foreach v_name in array coalesce(p_names, '{}') loop
        if v_name is null or not exists (select 1 from privacy.purposes p where p.name = v_name) then
            perform privacy.fail(pg_catalog.format('unknown purpose %L (pyctl purpose list)', v_name));
        end if;
    end loop;
    return (select coalesce(pg_catalog.array_agg(distinct n order by n), '{}') from pg_catalog.unnest(p_names) n);
end;
$$;

-- Places a processing restriction (GDPR Art. 18, or an Art. 21 objection): with
-- P_PURPOSES, only the roles serving those purposes lose sight of the subject's rows
-- (an objection to marketing: billing goes on); without, every application role does,
-- except that the roles of P_EXCEPTIONS keep reading them (Art. 18(2): legal claims, the
-- subject's consent, another's rights, public interest), never writing. Returns its id.
create or replace function privacy.place_restriction(p_subject_type text, p_key text, p_basis text, p_reason text,
                                                     p_purposes text[], p_exceptions text[])
    returns uuid
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_key text := privacy.canonical_key(p_subject_type, p_key);
    v_purposes text[] := privacy.checked_purposes(p_purposes);
    v_exceptions text[] := privacy.checked_purposes(p_exceptions);
    v_id uuid;
    v_payload jsonb;
begin
    perform privacy.heal();  -- a partition attached or a table renamed since: enforced first
    if p_basis is null or p_basis not in ('accuracy', 'unlawful', 'legal-claims', 'objection') then
        perform privacy.fail(pg_catalog.format('basis %L is not one of accuracy, unlawful, legal-claims, objection (GDPR Art. 18(1)(a)-(d))', p_basis));
    end if;
    perform privacy.require_text(p_reason, 'a restriction needs a reason');
    if pg_catalog.cardinality(v_purposes) > 0 and pg_catalog.cardinality(v_exceptions) > 0 then
        perform privacy.fail('a restriction scoped to purposes already leaves every other purpose alone: '
                             'exceptions are for restrictions without purposes');
    end if;
    insert into privacy.processing_restrictions (kind, subject_type, subject_key, basis, reason, placed_by, placed_role)
    values ('restriction', p_subject_type, v_key, p_basis, p_reason, session_user, privacy.acting_role())
    returning id into v_id;
    insert into privacy.restriction_purposes (restriction_id, purpose, kind, granted_by, granted_role, reason)
    select v_id, n, 'scope', session_user, privacy.acting_role(), null from pg_catalog.unnest(v_purposes) n
    union all
    select v_id, n, 'exception', session_user, privacy.acting_role(), 'granted with the restriction'
      from pg_catalog.unnest(v_exceptions) n;
    perform privacy.refresh_subject(p_subject_type, v_key);
    v_payload := pg_catalog.jsonb_build_object('basis', p_basis, 'reason', p_reason);
    if pg_catalog.cardinality(v_purposes) > 0 then
        v_payload := v_payload || pg_catalog.jsonb_build_object('purposes', pg_catalog.to_jsonb(v_purposes));
    end if;
    if pg_catalog.cardinality(v_exceptions) > 0 then
        v_payload := v_payload || pg_catalog.jsonb_build_object('except', pg_catalog.to_jsonb(v_exceptions));
    end if;
    perform privacy.ledger_append('restriction_placed', p_subject_type, v_key, v_id, v_payload);
    return v_id;
end;
$$;

-- Lets the roles of PURPOSE keep reading, not writing, the rows of restriction P_ID's
-- subject (Art. 18(2)), for REASON. Only for an unscoped restriction.
create or replace function privacy.add_exception(p_id uuid, p_purpose text, p_reason text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions := privacy.active_entry(p_id, 'restriction');
    v_purpose text := (privacy.checked_purposes(array[p_purpose]))[1];
begin
    perform privacy.heal();
    perform privacy.require_text(p_reason, 'an exception needs a reason (its ground under GDPR Art. 18(2))');
    if exists (select 1 from privacy.restriction_purposes s where s.restriction_id = p_id and s.kind = 'scope') then
        perform privacy.fail(pg_catalog.format('restriction %s is scoped to purposes: it already leaves %s alone unless scoped to it',
                                               p_id, v_purpose));
    end if;
    if exists (select 1 from privacy.restriction_purposes s where s.restriction_id = p_id and s.kind = 'exception'
                  and s.purpose = v_purpose and s.withdrawn_at is null) then
        perform privacy.fail(pg_catalog.format('restriction %s already excepts %s', p_id, v_purpose));
    end if;
    insert into privacy.restriction_purposes (restriction_id, purpose, kind, granted_by, granted_role, reason)
    values (p_id, v_purpose, 'exception', session_user, privacy.acting_role(), p_reason);
    perform privacy.refresh_subject(r.subject_type, r.subject_key);
    perform privacy.ledger_append('exception_granted', r.subject_type, r.subject_key, p_id,
        pg_catalog.jsonb_build_object('purpose', v_purpose, 'reason', p_reason));
end;
$$;

-- Withdraws the exception of PURPOSE from restriction P_ID, for REASON: its roles lose
-- sight of the subject's rows again.
create or replace function privacy.withdraw_exception(p_id uuid, p_purpose text, p_reason text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    r privacy.processing_restrictions := privacy.active_entry(p_id, 'restriction');
begin
    perform privacy.heal();
    perform privacy.require_text(p_reason, 'withdrawing an exception needs a reason');
    update privacy.restriction_purposes
       set withdrawn_at = pg_catalog.now(), withdrawn_by = session_user, withdrawn_role = privacy.acting_role(),
           withdraw_reason = p_reason
     where restriction_id = p_id and kind = 'exception' and purpose = p_purpose and withdrawn_at is null;
    if not found then
        perform privacy.fail(pg_catalog.format('restriction %s has no exception for purpose %L', p_id, p_purpose));
    end if;
    perform privacy.refresh_subject(r.subject_type, r.subject_key);
    perform privacy.ledger_append('exception_withdrawn', r.subject_type, r.subject_key, p_id,
        pg_catalog.jsonb_build_object('purpose', p_purpose, 'reason', p_reason));
end;
$$;

-- Stewards read the purposes and the scopes and exceptions of restrictions.
do $$
begin
    execute pg_catalog.format('grant select on privacy.purposes, privacy.restriction_purposes to %I', privacy.steward_role());
end;
$$;

-- Sync (sql/65_fleet.sql): the purposes and exceptions a replayed restriction_placed entry
-- records. A purpose unknown here is an error: the restriction would mean something else.
create or replace function privacy.sync_restriction_purposes(e privacy.ledger)
    returns void
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_purposes text[] := array(select pg_catalog.jsonb_array_elements_text(coalesce(e.payload->'purposes', '[]')));
    v_exceptions text[] := array(select pg_catalog.jsonb_array_elements_text(coalesce(e.payload->'except', '[]')));
begin
    perform privacy.checked_purposes(v_purposes || v_exceptions);
    insert into privacy.restriction_purposes (restriction_id, purpose, kind, granted_at, granted_by, granted_role, reason)
    select e.restriction_id, n, 'scope', e.recorded_at, e.session_role, e.acting_role, null from pg_catalog.unnest(v_purposes) n
    union all
    select e.restriction_id, n, 'exception', e.recorded_at, e.session_role, e.acting_role, 'granted with the restriction'
      from pg_catalog.unnest(v_exceptions) n;
end;
$$;

-- Sync: replays a purpose_added, exception_granted or exception_withdrawn entry of a
-- source's verified ledger (VOUCH says which). A purpose is added here as the source added
-- it (its bit is this database's own); an exception only to a restriction replayed here.
create or replace function privacy.sync_replay_purpose_entry(e privacy.ledger, p_vouch jsonb)
    returns table (outcome text, detail jsonb)
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_purpose text := e.payload->>'purpose';
begin
    if e.event = 'purpose_added' then
        if exists (select 1 from privacy.purposes p where p.name = v_purpose) then
            return query select 'already'::text, pg_catalog.jsonb_build_object('purpose', v_purpose);
            return;
        end if;
        perform privacy.add_purpose(v_purpose, '');
        perform privacy.ledger_append('synced_purpose', null, null, null, p_vouch);
        return query select 'applied'::text, pg_catalog.jsonb_build_object('purpose', v_purpose);
        return;
    end if;
    if not exists (select 1 from privacy.processing_restrictions r where r.id = e.restriction_id and r.released_at is null) then
        return query select 'refused'::text, pg_catalog.jsonb_build_object('id', e.restriction_id,
            'why', 'its restriction was never replayed here, or is released');
        return;
    end if;
    if e.event = 'exception_granted' then
        if exists (select 1 from privacy.restriction_purposes s where s.restriction_id = e.restriction_id and s.kind = 'exception'
                      and s.purpose = v_purpose and s.withdrawn_at is null) then
            return query select 'already'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'purpose', v_purpose);
            return;
        end if;
        perform privacy.checked_purposes(array[v_purpose]);
        insert into privacy.restriction_purposes (restriction_id, purpose, kind, granted_at, granted_by, granted_role, reason)
        values (e.restriction_id, v_purpose, 'exception', e.recorded_at, e.session_role, e.acting_role, e.payload->>'reason');
    else
        update privacy.restriction_purposes
           set withdrawn_at = e.recorded_at, withdrawn_by = e.session_role, withdrawn_role = e.acting_role,
               withdraw_reason = e.payload->>'reason'
         where restriction_id = e.restriction_id and kind = 'exception' and purpose = v_purpose and withdrawn_at is null;
        if not found then
            return query select 'already'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'purpose', v_purpose);
            return;
        end if;
    end if;
    perform privacy.refresh_subject(e.subject_type, e.subject_key);
    perform privacy.ledger_append('synced_exception', e.subject_type, e.subject_key, e.restriction_id, p_vouch);
    return query select 'applied'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'purpose', v_purpose);
end;
$$;

-- Doctor's findings about purposes (sql/85_doctor.sql), where any are registered: an
-- application login role (may read a protected table, sees restricted rows by no other
-- right) that serves no purpose, as a warning: restrictions scoped to a purpose do not
-- bind it; and a member of a purpose role that does not get its privileges (NOINHERIT), as
-- an error: PostgreSQL does not apply the purpose's policy to it.
create or replace function privacy.purpose_findings(p_protected oid[])
    returns table (severity text, category text, object text, finding text, fix text, fix_sql text)
    stable
    set search_path = ''
    language sql
as $$
    select 'warning', 'role without purpose', x.rolname::text,
           pg_catalog.format('application role %s serves no purpose: restrictions scoped to a purpose (%s) do not bind it',
                             x.rolname, (select pg_catalog.string_agg(p.name, ', ' order by p.bit) from privacy.purposes p)),
           pg_catalog.format('if it processes for one of them: pyctl purpose grant %s PURPOSE', x.rolname), null::text
      from pg_catalog.pg_roles x
     where exists (select 1 from privacy.purposes)
       and x.rolcanlogin and not x.rolsuper and not x.rolbypassrls
       and not pg_catalog.pg_has_role(x.oid, privacy.steward_role(), 'MEMBER')
       and exists (select 1 from pg_catalog.pg_class c where c.oid = any (p_protected)
                      and pg_catalog.has_table_privilege(x.oid, c.oid, 'SELECT')
                      and not pg_catalog.pg_has_role(x.oid, c.relowner, 'USAGE'))
       and privacy.role_mask(x.rolname) = 0
    union all
    select 'error', 'purpose not inherited', x.rolname::text,
           pg_catalog.format('role %s is a member of %s but NOINHERIT: PostgreSQL does not apply the policy of purpose %s to it',
                             x.rolname, p.role_name, p.name),
           pg_catalog.format('ALTER ROLE %I INHERIT', x.rolname), pg_catalog.format('ALTER ROLE %I INHERIT', x.rolname)
      from privacy.purposes p join pg_catalog.pg_roles g on g.rolname = p.role_name
      join pg_catalog.pg_roles x on pg_catalog.pg_has_role(x.oid, g.oid, 'MEMBER') and not pg_catalog.pg_has_role(x.oid, g.oid, 'USAGE')
     order by 1, 3
$$;

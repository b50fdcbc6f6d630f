-- sql/65_fleet.sql: followers, forks and restored backups.
--
-- A follower replays the primary's WAL and needs nothing. A fork, a rollback or a
-- restored dump is frozen at its moment; pyctl sync (or ledger import) brings it to
-- the primary's state through these functions, run on the copy.

-- This database's identity: system identifier, timeline and database oid. A
-- restored dump, a fork (a promoted copy starts a new timeline) or a rollback has
-- another identity than the database the toolkit was installed in.
create or replace function privacy.database_identity()
    returns text
    stable
    set search_path = ''
    language sql
as $$
    select pg_catalog.concat_ws(':',
        (select s.system_identifier from pg_catalog.pg_control_system() s),
        case when pg_catalog.pg_is_in_recovery()
             then (select c.timeline_id from pg_catalog.pg_control_checkpoint() c)::bigint
             else ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::bigint end,
        (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()))
$$;

-- Whether this database is a copy not synced since it became one: its identity
-- differs from the one recorded at install (or at its last sync).
create or replace function privacy.copy_status()
    returns table (is_copy boolean, recorded_identity text, current_identity text, last_synced_at timestamptz)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select (select value from privacy.settings where name = 'database_identity') is distinct from privacy.database_identity()
           and not pg_catalog.pg_is_in_recovery(),
           (select value from privacy.settings where name = 'database_identity'),
           privacy.database_identity(),
           (select pg_catalog.max(s.last_synced_at) from privacy.sync_sources s)
$$;

-- Registers a copy of this database (DSN, or the name of the environment variable holding it).
create or replace function privacy.fleet_add(p_name text, p_kind text, p_dsn text, p_dsn_env text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
begin
    if exists (select 1 from privacy.fleet f where f.name = p_name) then
        perform privacy.fail(pg_catalog.format('a copy named %s is already registered', p_name));
    end if;
    if p_kind is null or p_kind not in ('follower', 'fork', 'backup') then
        perform privacy.fail(pg_catalog.format('kind %L is not one of follower, fork, backup', p_kind));
    end if;
    if p_name is null or p_name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$' then
        perform privacy.fail(pg_catalog.format('copy name %L: use letters, digits, _ . -', p_name));
    end if;
    insert into privacy.fleet (name, kind, dsn, dsn_env) values (p_name, p_kind, p_dsn, p_dsn_env);
    perform privacy.ledger_append('fleet_added', null, null, null, pg_catalog.jsonb_strip_nulls(
        pg_catalog.jsonb_build_object('name', p_name, 'kind', p_kind, 'dsn_env', p_dsn_env)));
end;
$$;

create or replace function privacy.fleet_remove(p_name text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
begin
    delete from privacy.fleet where name = p_name;
    if not found then
        perform privacy.fail(pg_catalog.format('unknown copy %s', p_name));
    end if;
    perform privacy.ledger_append('fleet_removed', null, null, null, pg_catalog.jsonb_build_object('name', p_name));
end;
$$;

-- Everything a copy needs to reach this database's state, as one JSON document:
-- its identity, ledger head, subject types, protected tables, holds and
-- restrictions with their digests, corrections, and (p_with_ledger) the ledger.
create or replace function privacy.source_state(p_with_ledger boolean default false)
    returns jsonb
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select pg_catalog.jsonb_build_object(
        'format', 'pyctl-state/1',
        'identity', privacy.database_identity(),
        'database', pg_catalog.current_database(),
        'toolkit_version', privacy.toolkit_version(),
        'ledger_head', (select pg_catalog.jsonb_build_object('seq', l.seq, 'hash', pg_catalog.encode(l.hash, 'hex'))
                          from privacy.ledger l order by l.seq desc limit 1),
        'subject_types', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) order by s.created_at), '[]') from privacy.subject_types s),
        'protected_tables', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(p) - 'enforcement' order by p.id), '[]')
                               from privacy.protected_tables p),
        'restrictions', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r) order by r.placed_at, r.id), '[]')
                           from privacy.processing_restrictions r),
        'digests', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(d)), '[]') from privacy.hold_digests d),
        'digest_rows', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(d)), '[]') from privacy.hold_digest_rows d),
        'corrections', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.id), '[]') from privacy.corrections c),
        'ledger', case when p_with_ledger then
            (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(l) - 'prev_hash' - 'hash'
                        || pg_catalog.jsonb_build_object('prev_hash', pg_catalog.encode(l.prev_hash, 'hex'), 'hash', pg_catalog.encode(l.hash, 'hex'))
                        order by l.seq), '[]') from privacy.ledger l) end)
$$;

-- Brings one hold or restriction of a source to this copy: inserted when missing
-- (with the digests taken at the source when a hold began), its lifecycle and
-- release copied when the source is further along; never rolled back. Marks follow.
create or replace function privacy.sync_restriction(p_source text, p_row jsonb, p_digests jsonb, p_digest_rows jsonb)
    returns text
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_new privacy.processing_restrictions := pg_catalog.jsonb_populate_record(null::privacy.processing_restrictions, p_row);
    v_old privacy.processing_restrictions;
    v_outcome text;
begin
    select * into v_old from privacy.processing_restrictions r where r.id = v_new.id for update;
    if not found then
        insert into privacy.processing_restrictions values (v_new.*);
        insert into privacy.hold_digests
        select (pg_catalog.jsonb_populate_record(null::privacy.hold_digests, d)).*
          from pg_catalog.jsonb_array_elements(coalesce(p_digests, '[]')) d where (d->>'hold_id')::uuid = v_new.id;
        insert into privacy.hold_digest_rows
        select (pg_catalog.jsonb_populate_record(null::privacy.hold_digest_rows, d)).*
          from pg_catalog.jsonb_array_elements(coalesce(p_digest_rows, '[]')) d where (d->>'hold_id')::uuid = v_new.id;
        v_outcome := 'inserted';
    elsif pg_catalog.to_jsonb(v_old) = pg_catalog.to_jsonb(v_new) then
        return 'unchanged';
    elsif v_old.released_at is not null and v_new.released_at is null then
        return 'unchanged';  -- released here already: a source never un-releases
    else
        update privacy.processing_restrictions r set
            state = v_new.state, verified_at = v_new.verified_at, verified_by = v_new.verified_by,
            verification_note = v_new.verification_note, notified_at = v_new.notified_at, notified_by = v_new.notified_by,
            notified_via = v_new.notified_via, approved_at = v_new.approved_at, approved_by = v_new.approved_by,
            approval_evidence = v_new.approval_evidence, released_at = v_new.released_at, released_by = v_new.released_by,
            released_role = v_new.released_role, release_reason = v_new.release_reason,
            release_reference = v_new.release_reference, release_forced = v_new.release_forced
         where r.id = v_new.id;
        v_outcome := 'updated';
    end if;
    perform privacy.refresh_subject(v_new.subject_type, v_new.subject_key);
    perform privacy.ledger_append('synced_' || v_new.kind, v_new.subject_type, v_new.subject_key, v_new.id,
        pg_catalog.jsonb_build_object('source', p_source, 'outcome', v_outcome, 'state', v_new.state));
    return v_outcome;
end;
$$;

-- Replays one correction of a source onto this copy, only where the row still holds
-- the values the correction started from; otherwise records a conflict and leaves
-- the row alone. Idempotent: a correction is looked at once per source.
create or replace function privacy.sync_correction(p_source text, p_correction jsonb)
    returns text
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    c privacy.corrections := pg_catalog.jsonb_populate_record(null::privacy.corrections, p_correction);
    v_item text := 'correction:' || (p_correction->>'id');
    v_rel regclass := pg_catalog.to_regclass(privacy.qualified(c.table_schema, c.table_name));
    v_match text;
    v_set text;
    v_count bigint;
    v_outcome text;
    v_seq bigint;
begin
    if exists (select 1 from privacy.sync_applied a where a.source_identity = p_source and a.item = v_item) then
        return 'already';
    end if;
    if v_rel is null then
        perform privacy.fail(pg_catalog.format('table %s of correction %s does not exist here', privacy.qualified(c.table_schema, c.table_name), p_correction->>'id'));
    end if;
    -- The row: its identity and, for the columns the correction changed, their old values.
    select pg_catalog.string_agg(pg_catalog.format('t.%I is not distinct from (pg_catalog.jsonb_populate_record(null::%s, $1)).%I', k, v_rel, k), ' and ')
      into v_match
      from (select pg_catalog.jsonb_object_keys(c.row_identity || c.before_values) k) x;
    if c.operation = 'UPDATE' then
        select pg_catalog.string_agg(pg_catalog.format('%I = (pg_catalog.jsonb_populate_record(null::%s, $2)).%I', k, v_rel, k), ', ')
          into v_set from (select pg_catalog.jsonb_object_keys(c.after_values) k) x;
    end if;
    -- The copy's own holds bind it too: replay under a declared, journaled break-glass.
    if not exists (select 1 from privacy.break_glass b where b.xact = pg_catalog.pg_current_xact_id()) then
        v_seq := privacy.ledger_append('break_glass', null, null, null,
            pg_catalog.jsonb_build_object('reason', 'sync: replaying corrections from ' || p_source));
        insert into privacy.break_glass (xact, session_role, acting_role, reason, declared_at, ledger_seq, for_sync)
        values (pg_catalog.pg_current_xact_id(), session_user, current_user, 'sync: replaying corrections from ' || p_source,
                pg_catalog.now(), v_seq, true);
    end if;
    if c.operation = 'UPDATE' then
        execute pg_catalog.format('update %s t set %s where %s', v_rel, v_set, v_match)
          using c.row_identity || c.before_values, c.after_values;
    else
        execute pg_catalog.format('delete from %s t where %s', v_rel, v_match) using c.row_identity || c.before_values;
    end if;
    get diagnostics v_count = row_count;
    v_outcome := case when v_count = 1 then 'applied' else 'conflict' end;
    if v_count > 1 then
        raise exception using errcode = 'PV002', message = pg_catalog.format(
            'privacy: correction %s matches %s rows of %s here; not applied', p_correction->>'id', v_count, v_rel);
    end if;
    insert into privacy.sync_applied (source_identity, item, outcome, detail, applied_at)
    values (p_source, v_item, v_outcome, pg_catalog.jsonb_build_object('table', v_rel::text, 'operation', c.operation,
            'row', c.row_identity, 'before', c.before_values, 'after', c.after_values), pg_catalog.now());
    perform privacy.ledger_append(case v_outcome when 'applied' then 'synced_correction' else 'sync_conflict' end,
        c.subject_type, c.subject_key, null,
        pg_catalog.jsonb_build_object('source', p_source, 'correction', p_correction->>'id', 'table', v_rel::text,
                                      'operation', c.operation, 'row', c.row_identity));
    return v_outcome;
end;
$$;

-- Ends a sync: on the first sync from a source, re-marks every protected table in
-- full (a restored dump may carry marks its triggers recomputed in load order);
-- records the source's position and acknowledges this copy's identity.
create or replace function privacy.sync_finish(p_source text, p_source_name text, p_last_seq bigint)
    returns jsonb
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_first boolean := not exists (select 1 from privacy.sync_sources s where s.source_identity = p_source);
    p privacy.protected_tables;
    v_remarked bigint := 0;
    v_summary jsonb;
begin
    if v_first then
        for p in select * from privacy.protected_tables order by id loop
            v_remarked := v_remarked + privacy.remark_table(p.id, true);
        end loop;
    end if;
    insert into privacy.sync_sources (source_identity, source_name, last_seq, first_synced_at, last_synced_at)
    values (p_source, p_source_name, p_last_seq, pg_catalog.now(), pg_catalog.now())
    on conflict (source_identity) do update set source_name = excluded.source_name, last_seq = excluded.last_seq,
                                                last_synced_at = excluded.last_synced_at;
    insert into privacy.settings (name, value) values ('database_identity', privacy.database_identity())
    on conflict (name) do update set value = excluded.value;
    select pg_catalog.jsonb_build_object('source', p_source, 'source_name', p_source_name, 'up_to_seq', p_last_seq,
           'rows_remarked', v_remarked,
           'conflicts', (select pg_catalog.count(*) from privacy.sync_applied a where a.source_identity = p_source and a.outcome = 'conflict'))
      into v_summary;
    perform privacy.ledger_append('sync_completed', null, null, null, v_summary);
    return v_summary;
end;
$$;

do $$
begin
    execute pg_catalog.format('grant select on privacy.fleet, privacy.sync_sources, privacy.sync_applied to %I', privacy.steward_role());
    execute pg_catalog.format('grant execute on function privacy.copy_status(), privacy.database_identity(), '
        'privacy.fleet_add(text, text, text, text), privacy.fleet_remove(text), privacy.source_state(boolean), '
        'privacy.sync_restriction(text, jsonb, jsonb, jsonb), privacy.sync_correction(text, jsonb), '
        'privacy.sync_finish(text, text, bigint) to %I', privacy.steward_role());
end;
$$;

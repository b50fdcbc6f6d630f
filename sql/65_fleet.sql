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
        -- The hashes of erased rows (never the rows): a copy erases only rows among them.
        'erasure_rows', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r)), '[]') from privacy.erasure_rows r
                           join privacy.erasures e on e.id = r.erasure_id where e.state = 'erased'),
        'ledger', case when p_with_ledger then
            (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(l) - 'prev_hash' - 'hash'
                        || pg_catalog.jsonb_build_object('prev_hash', pg_catalog.encode(l.prev_hash, 'hex'), 'hash', pg_catalog.encode(l.hash, 'hex'))
                        order by l.seq), '[]') from privacy.ledger l) end)
$$;

-- A ledger entry as a source sent it (JSON, hashes in hex) as a privacy.ledger row.
create or replace function privacy.ledger_entry_of(p_entry jsonb)
    returns privacy.ledger
    immutable
    set search_path = ''
    language plpgsql
as $$
declare
    v privacy.ledger := pg_catalog.jsonb_populate_record(null::privacy.ledger, p_entry - 'prev_hash' - 'hash');
begin
    v.prev_hash := pg_catalog.decode(p_entry->>'prev_hash', 'hex');
    v.hash := pg_catalog.decode(p_entry->>'hash', 'hex');
    return v;
end;
$$;

-- Replays one entry of a source's verified ledger onto this copy and returns its
-- outcome ('applied', 'already', 'conflict', 'refused', 'skipped') and detail. Only
-- what the entry itself records is used: a hold or restriction and each step of its
-- lifecycle, a correction (only on a table protected here and at the source), hold
-- digests (the rows' hashes only where they add up to the digest the entry records).
-- P_SEQ and P_HASH place it in the source's chain; synced_* entries of a source that
-- is itself a copy carry the original entry, which is replayed.
create or replace function privacy.sync_replay_entry(p_source text, p_seq bigint, p_hash bytea, p_entry jsonb,
                                                     p_digests jsonb, p_digest_rows jsonb, p_source_tables jsonb)
    returns table (outcome text, detail jsonb)
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    e privacy.ledger := privacy.ledger_entry_of(p_entry);
    r privacy.processing_restrictions;
    v_kind text;
    v_state text;
    v_payload jsonb;
    v_rel regclass;
    v_registry privacy.protected_tables;
    v_match text;
    v_set text;
    v_count bigint;
    v_seq bigint;
    t jsonb;
    d jsonb;
    v_rows jsonb;
    v_vouch jsonb := pg_catalog.jsonb_build_object('source', p_source, 'source_seq', p_seq, 'source_hash', pg_catalog.encode(p_hash, 'hex'));
begin
    if e.event like 'synced\_%' and p_entry->'payload' ? 'entry' then
        -- The source is itself a copy: the original entry is inside, and vouched for by this one.
        return query select * from privacy.sync_replay_entry(p_source, p_seq, p_hash, p_entry->'payload'->'entry',
                                                            p_digests, p_digest_rows, p_source_tables);
        return;
    end if;
    v_payload := e.payload;
    if e.event in ('hold_placed', 'restriction_placed') then
        v_kind := case e.event when 'hold_placed' then 'legal_hold' else 'restriction' end;
        if exists (select 1 from privacy.processing_restrictions x where x.id = e.restriction_id) then
            return query select 'already'::text, pg_catalog.jsonb_build_object('id', e.restriction_id);
            return;
        end if;
        if not exists (select 1 from privacy.subject_types s where s.subject_type = e.subject_type) then
            return query select 'refused'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'why', 'unknown subject type ' || e.subject_type);
            return;
        end if;
        insert into privacy.processing_restrictions (id, kind, subject_type, subject_key, basis, case_ref, reason,
                                                     placed_by, placed_role, placed_at)
        values (e.restriction_id, v_kind, e.subject_type, e.subject_key, v_payload->>'basis', v_payload->>'case', v_payload->>'reason',
                e.session_role, e.acting_role, e.recorded_at);
        perform privacy.sync_restriction_purposes(e);  -- its purposes and exceptions (sql/33_purposes.sql)
        v_state := 'placed';
    elsif e.event in ('restriction_verified', 'subject_notified', 'release_approved', 'hold_released', 'restriction_released') then
        select * into r from privacy.processing_restrictions x where x.id = e.restriction_id for update;
        if not found then
            return query select 'refused'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'why', 'its placement was never replayed here');
            return;
        end if;
        v_kind := r.kind;
        if r.released_at is not null
           or (e.event = 'restriction_verified' and r.verified_at is not null)
           or (e.event = 'subject_notified' and r.notified_at is not null)
           or (e.event = 'release_approved' and r.approved_at is not null) then
            return query select 'already'::text, pg_catalog.jsonb_build_object('id', e.restriction_id);
            return;
        end if;
        if e.event = 'restriction_verified' then
            update privacy.processing_restrictions set verified_at = e.recorded_at, verified_by = e.acting_role,
                   verification_note = v_payload->>'note', state = 'verified' where id = r.id;
        elsif e.event = 'subject_notified' then
            update privacy.processing_restrictions set notified_at = e.recorded_at, notified_by = e.acting_role,
                   notified_via = v_payload->>'via', state = 'notified' where id = r.id;
        elsif e.event = 'release_approved' then
            update privacy.processing_restrictions set approved_at = e.recorded_at, approved_by = e.acting_role,
                   approval_evidence = v_payload->>'evidence', state = 'approved' where id = r.id;
        else
            update privacy.processing_restrictions
               set state = 'released', released_at = e.recorded_at, released_by = e.session_role, released_role = e.acting_role,
                   release_reason = v_payload->>'reason', release_reference = v_payload->>'reference',
                   release_forced = coalesce((v_payload->>'forced')::boolean, false)
             where id = r.id;
        end if;
        v_state := case e.event when 'restriction_verified' then 'verified' when 'subject_notified' then 'notified'
                                when 'release_approved' then 'approved' else 'released' end;
    elsif e.event = 'hold_digested' then
        if exists (select 1 from privacy.hold_digests x where x.hold_id = e.restriction_id) then
            return query select 'already'::text, pg_catalog.jsonb_build_object('id', e.restriction_id);
            return;
        end if;
        if not exists (select 1 from privacy.processing_restrictions x where x.id = e.restriction_id and x.kind = 'legal_hold') then
            return query select 'refused'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'why', 'its hold was never replayed here');
            return;
        end if;
        -- Every table's digest as the entry records it; its rows' hashes must add up to it.
        for t in select x from pg_catalog.jsonb_array_elements(coalesce(v_payload->'tables', '[]')) x loop
            select x into d from pg_catalog.jsonb_array_elements(coalesce(p_digests, '[]')) x
             where (x->>'hold_id')::uuid = e.restriction_id and privacy.qualified(x->>'table_schema', x->>'table_name') = t->>'table';
            select coalesce(pg_catalog.jsonb_agg(x), '[]') into v_rows from pg_catalog.jsonb_array_elements(coalesce(p_digest_rows, '[]')) x
             where (x->>'hold_id')::uuid = e.restriction_id and privacy.qualified(x->>'table_schema', x->>'table_name') = t->>'table';
            if d is null or (d->>'row_count')::bigint is distinct from (t->>'rows')::bigint or d->>'digest' is distinct from t->>'sha256'
               or pg_catalog.jsonb_array_length(v_rows) <> (t->>'rows')::bigint
               or (select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(pg_catalog.string_agg(x->>'row_hash', '' order by x->>'row_hash'), ''), 'UTF8')), 'hex')
                     from pg_catalog.jsonb_array_elements(v_rows) x) is distinct from t->>'sha256'
               or (t ? 'columns' and d->'columns' is distinct from t->'columns') then
                delete from privacy.hold_digests x where x.hold_id = e.restriction_id;  -- nothing half-vouched
                return query select 'refused'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'table', t->>'table',
                    'why', 'the digest rows sent do not add up to the digest the entry records');
                return;
            end if;
            v_registry := privacy.registry_row(pg_catalog.to_regclass(t->>'table'));
            insert into privacy.hold_digests (hold_id, table_schema, table_name, row_count, digest, computed_at, columns, table_id, attnums)
            values (e.restriction_id, d->>'table_schema', d->>'table_name', (t->>'rows')::bigint, t->>'sha256', e.recorded_at,
                    case when d ? 'columns' and d->'columns' <> 'null' then array(select pg_catalog.jsonb_array_elements_text(d->'columns')) end,
                    v_registry.id,
                    case when d ? 'columns' and d->'columns' <> 'null' and v_registry.id is not null
                         then (select pg_catalog.array_agg(a.attnum order by u.i)
                                 from pg_catalog.jsonb_array_elements_text(d->'columns') with ordinality u(col, i)
                                 left join pg_catalog.pg_attribute a on a.attrelid = v_registry.relid and a.attname = u.col and not a.attisdropped) end);
            insert into privacy.hold_digest_rows (hold_id, table_schema, table_name, row_identity, row_hash)
            select e.restriction_id, d->>'table_schema', d->>'table_name', x->'row_identity', x->>'row_hash'
              from pg_catalog.jsonb_array_elements(v_rows) x;
        end loop;
        perform privacy.ledger_append('synced_hold_digested', e.subject_type, e.subject_key, e.restriction_id,
            v_vouch || pg_catalog.jsonb_build_object('entry', p_entry));
        return query select 'applied'::text, pg_catalog.jsonb_build_object('id', e.restriction_id);
        return;
    elsif e.event = 'erasure' then
        -- The erased rows' hashes come with the hold digests' rows (p_digest_rows), by erasure_id.
        return query select * from privacy.sync_erasure(p_source, e, p_digest_rows, v_vouch || pg_catalog.jsonb_build_object('entry', p_entry));
        return;
    elsif e.event in ('correction', 'break_glass_change') then
        v_rel := pg_catalog.to_regclass(v_payload->>'table');
        v_registry := privacy.registry_row(v_rel);
        if v_rel is null or v_registry.id is null or not (p_source_tables ? (v_payload->>'table')) then
            return query select 'refused'::text, pg_catalog.jsonb_build_object('table', v_payload->>'table',
                'why', 'a correction is replayed only on a table protected here and at the source');
            return;
        end if;
        -- The row: its identity and, for the columns the correction changed, their old values.
        select pg_catalog.string_agg(pg_catalog.format('t.%I is not distinct from (pg_catalog.jsonb_populate_record(null::%s, $1)).%I', k, v_rel, k), ' and ')
          into v_match
          from (select pg_catalog.jsonb_object_keys(coalesce(v_payload->'row', '{}') || coalesce(v_payload->'before', '{}')) k) x;
        if v_payload->>'operation' = 'UPDATE' then
            select pg_catalog.string_agg(pg_catalog.format('%I = (pg_catalog.jsonb_populate_record(null::%s, $2)).%I', k, v_rel, k), ', ')
              into v_set from (select pg_catalog.jsonb_object_keys(v_payload->'after') k) x;
        end if;
        if v_match is null or (v_payload->>'operation' = 'UPDATE' and v_set is null) or v_payload->>'operation' not in ('UPDATE', 'DELETE') then
            return query select 'refused'::text, pg_catalog.jsonb_build_object('table', v_rel::text, 'why', 'the entry does not say which row and what');
            return;
        end if;
        -- The copy's own holds bind it too: replay under a declared, journaled break-glass.
        if not exists (select 1 from privacy.break_glass b where b.xact = pg_catalog.pg_current_xact_id()) then
            v_seq := privacy.ledger_append('break_glass', null, null, null,
                pg_catalog.jsonb_build_object('reason', 'sync: replaying corrections from ' || p_source));
            insert into privacy.break_glass (xact, session_role, acting_role, reason, declared_at, ledger_seq, for_sync)
            values (pg_catalog.pg_current_xact_id(), session_user, privacy.acting_role(), 'sync: replaying corrections from ' || p_source,
                    pg_catalog.now(), v_seq, true);
        end if;
        perform privacy.citus_declare('sync', true, e.subject_type, array[e.subject_key]);  -- a Citus shard cannot read the break-glass (sql/89_citus.sql)
        if v_payload->>'operation' = 'UPDATE' then
            execute pg_catalog.format('update %s t set %s where %s', v_rel, v_set, v_match)
              using coalesce(v_payload->'row', '{}') || coalesce(v_payload->'before', '{}'), v_payload->'after';
        else
            execute pg_catalog.format('delete from %s t where %s', v_rel, v_match) using coalesce(v_payload->'row', '{}') || coalesce(v_payload->'before', '{}');
        end if;
        get diagnostics v_count = row_count;
        perform privacy.citus_declare('sync', false, null, null);
        if v_count > 1 then
            raise exception using errcode = 'PV002', message = pg_catalog.format(
                'privacy: correction at %s of the source matches %s rows of %s here; not applied', p_seq, v_count, v_rel);
        end if;
        perform privacy.ledger_append(case when v_count = 1 then 'synced_correction' else 'sync_conflict' end,
            e.subject_type, e.subject_key, null,
            v_vouch || pg_catalog.jsonb_build_object('table', v_rel::text, 'operation', v_payload->>'operation', 'row', v_payload->'row',
                                                    'entry', p_entry));
        return query select case when v_count = 1 then 'applied' else 'conflict' end::text,
            pg_catalog.jsonb_build_object('table', v_rel::text, 'operation', v_payload->>'operation', 'row', v_payload->'row',
                                          'before', v_payload->'before', 'after', v_payload->'after');
        return;
    elsif e.event in ('purpose_added', 'exception_granted', 'exception_withdrawn') then
        return query select * from privacy.sync_replay_purpose_entry(e, v_vouch || pg_catalog.jsonb_build_object('entry', p_entry));
        return;
    else
        return query select 'skipped'::text, '{}'::jsonb;
        return;
    end if;
    perform privacy.refresh_subject(e.subject_type, e.subject_key);
    perform privacy.ledger_append('synced_' || v_kind, e.subject_type, e.subject_key, e.restriction_id,
        v_vouch || pg_catalog.jsonb_build_object('state', v_state, 'event', e.event, 'entry', p_entry));
    return query select 'applied'::text, pg_catalog.jsonb_build_object('id', e.restriction_id, 'state', v_state);
end;
$$;

-- Replays consecutive entries of a source's ledger onto this copy, after checking
-- that they are a verified continuation of what this copy already holds: the first
-- one follows the last entry replayed from this source, or, on the first sync, this
-- copy's own entry P_PREFIX (the last one the two share); every entry's hash covers
-- its content and its predecessor's hash. Anything that does not verify is refused
-- and nothing of the batch is replayed. Returns the outcome of each entry.
-- (The toolkit's owner only: pyctl sync connects to the copy as its owner.)
create or replace function privacy.sync_replay(p_source text, p_prefix bigint, p_entries jsonb,
                                               p_digests jsonb, p_digest_rows jsonb, p_source_tables jsonb)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_anchor_seq bigint;
    v_anchor_hash bytea;
    v_entry jsonb;
    e privacy.ledger;
    v_prev bytea;
    v_expected bigint;
    v_results jsonb := '[]';
    o record;
begin
    if pg_catalog.jsonb_typeof(p_entries) is distinct from 'array' or pg_catalog.jsonb_array_length(p_entries) = 0 then
        perform privacy.fail('sync: no ledger entries to replay');
    end if;
    select x.source_seq, x.source_hash into v_anchor_seq, v_anchor_hash from privacy.sync_replayed x
     where x.source_identity = p_source order by x.source_seq desc limit 1;
    if v_anchor_seq is null then
        select l.seq, l.hash into v_anchor_seq, v_anchor_hash from privacy.ledger l where l.seq = p_prefix;
        if v_anchor_seq is null then
            perform privacy.fail(pg_catalog.format('sync: this copy has no ledger entry %s to continue from', p_prefix));
        end if;
    end if;
    v_prev := v_anchor_hash;
    v_expected := v_anchor_seq + 1;
    for v_entry in select x from pg_catalog.jsonb_array_elements(p_entries) x loop
        e := privacy.ledger_entry_of(v_entry);
        if e.seq is distinct from v_expected or e.prev_hash is distinct from v_prev
           or e.hash is distinct from pg_catalog.sha256(coalesce(e.prev_hash, ''::bytea) || pg_catalog.convert_to(privacy.ledger_content(e), 'UTF8')) then
            perform privacy.fail(pg_catalog.format(
                'sync: the source''s ledger does not verify at entry %s (it must follow entry %s, hash %s): nothing was replayed',
                coalesce(e.seq::text, '?'), v_expected - 1, pg_catalog.encode(v_prev, 'hex')));
        end if;
        v_prev := e.hash;
        v_expected := e.seq + 1;
    end loop;
    for v_entry in select x from pg_catalog.jsonb_array_elements(p_entries) x loop
        e := privacy.ledger_entry_of(v_entry);
        select * into o from privacy.sync_replay_entry(p_source, e.seq, e.hash, v_entry, p_digests, p_digest_rows, p_source_tables);
        insert into privacy.sync_replayed (source_identity, source_seq, source_hash, event, outcome, detail, replayed_at)
        values (p_source, e.seq, e.hash, e.event, o.outcome, o.detail, pg_catalog.clock_timestamp());
        if o.outcome = 'refused' then
            perform privacy.ledger_append('sync_refused', e.subject_type, e.subject_key, e.restriction_id,
                pg_catalog.jsonb_build_object('source', p_source, 'source_seq', e.seq, 'event', e.event) || o.detail);
        end if;
        v_results := v_results || pg_catalog.jsonb_build_object('seq', e.seq, 'event', e.event, 'outcome', o.outcome, 'detail', o.detail);
    end loop;
    return v_results;
end;
$$;

-- Ends a sync: on the first sync from a source, re-marks every protected table in
-- full (a restored dump may carry marks its triggers recomputed in load order);
-- records the source's position and acknowledges this copy's identity.
-- (The toolkit's owner only, like sync_replay.)
create or replace function privacy.sync_finish(p_source text, p_source_name text, p_last_seq bigint)
    returns jsonb
    volatile
    set search_path = ''
    language plpgsql
as $$
declare
    v_first boolean := not exists (select 1 from privacy.sync_sources s where s.source_identity = p_source);
    p privacy.protected_tables;
    v_remarked bigint := 0;
    v_summary jsonb;
    v_erasures jsonb;
begin
    if v_first then
        for p in select * from privacy.protected_tables order by id loop
            if privacy.relation_of(p) is not null then
                v_remarked := v_remarked + privacy.remark_table(p.id, true);
            end if;
        end loop;
    end if;
    -- Erasures stay erased: rows of erased subjects that a restore or rollback brought back go again.
    v_erasures := privacy.reapply_erasures();
    insert into privacy.sync_sources (source_identity, source_name, last_seq, first_synced_at, last_synced_at)
    values (p_source, p_source_name, p_last_seq, pg_catalog.now(), pg_catalog.now())
    on conflict (source_identity) do update set source_name = excluded.source_name, last_seq = excluded.last_seq,
                                                last_synced_at = excluded.last_synced_at;
    insert into privacy.settings (name, value) values ('database_identity', privacy.database_identity())
    on conflict (name) do update set value = excluded.value;
    select pg_catalog.jsonb_build_object('source', p_source, 'source_name', p_source_name, 'up_to_seq', p_last_seq,
           'rows_remarked', v_remarked, 'erasures_reapplied', v_erasures,
           'conflicts', (select pg_catalog.count(*) from privacy.sync_replayed a where a.source_identity = p_source and a.outcome = 'conflict'),
           'refused', (select pg_catalog.count(*) from privacy.sync_replayed a where a.source_identity = p_source and a.outcome = 'refused'))
      into v_summary;
    perform privacy.ledger_append('sync_completed', null, null, null, v_summary);
    return v_summary;
end;
$$;

do $$
begin
    execute pg_catalog.format('grant select on privacy.fleet, privacy.sync_sources, privacy.sync_applied, privacy.sync_replayed to %I', privacy.steward_role());
    execute pg_catalog.format('grant execute on function privacy.copy_status(), privacy.database_identity(), '
        'privacy.fleet_add(text, text, text, text), privacy.fleet_remove(text), privacy.source_state(boolean) to %I',
        privacy.steward_role());
end;
$$;

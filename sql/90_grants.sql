-- sql/90_grants.sql: who may execute what, after 00_base.sql revoked everything.
--
-- The privilege model: every function in schema privacy is classified here, and only
-- here. 'public': anyone (the cheap predicates and pure formatting); 'steward': members
-- of the steward role (placement, release, lifecycle, reading the record); 'owner':
-- the toolkit's owner alone (everything the triggers and the lifecycle functions use
-- inside, and sync). The generated functions of each protected table are classified by
-- pattern: its trigger functions also to the table's owner (PostgreSQL checks it when it
-- copies row triggers onto a new partition), the rest 'owner'. A reload applies the
-- model (revoking every other grant), drops any function of the schema the model does
-- not know (so nothing unclassified survives an upgrade), and pyctl doctor reports any
-- difference found later. README "Roles" explains each function; tests/test_trust.py
-- keeps its own copy of this table, so a new function fails until it is classified.

create or replace function privacy.function_audiences()
    returns table (function_name text, audience text)
    immutable
    set search_path = ''
    language sql
as $$
    values
        -- anyone: the predicates applications use, and pure formatting
        ('privacy.is_held(text,text)', 'public'), ('privacy.is_held(text,bigint)', 'public'), ('privacy.is_held(text,uuid)', 'public'),
        ('privacy.is_restricted(text,text)', 'public'), ('privacy.is_restricted(text,bigint)', 'public'),
        ('privacy.is_restricted(text,uuid)', 'public'),
        ('privacy.toolkit_version()', 'public'), ('privacy.qualified(name,name)', 'public'),
        ('privacy.describe_path(privacy.protected_tables)', 'public'), ('privacy.required_steps(text)', 'public'),
        -- stewards: placement, release, the lifecycle, recipients, reading the record
        ('privacy.place_hold(text,text,text,text)', 'steward'), ('privacy.place_holds(text,text[],text,text)', 'steward'),
        ('privacy.place_restrictions(text,text[],text,text)', 'steward'), ('privacy.release_hold(uuid,text,text)', 'steward'),
        ('privacy.place_restriction(text,text,text,text)', 'steward'), ('privacy.release_restriction(uuid,text,boolean)', 'steward'),
        ('privacy.verify_restriction(uuid,text)', 'steward'), ('privacy.notify_subject(uuid,text)', 'steward'),
        ('privacy.approve_release(uuid,text)', 'steward'), ('privacy.break_glass(text)', 'steward'),
        ('privacy.add_recipient(text,text)', 'steward'), ('privacy.remove_recipient(text)', 'steward'),
        ('privacy.ack_notice(text,bigint)', 'steward'), ('privacy.pending_notices()', 'steward'),
        ('privacy.events_since(bigint,integer)', 'steward'), ('privacy.missing_steps(privacy.processing_restrictions)', 'steward'),
        ('privacy.discover(text)', 'steward'), ('privacy.coverage()', 'steward'), ('privacy.doctor()', 'steward'),
        ('privacy.verify_hold(uuid)', 'steward'), ('privacy.verify_ledger()', 'steward'),
        ('privacy.prove_hold(uuid)', 'steward'), ('privacy.pending_proofs()', 'steward'),
        ('privacy.enforcement_status()', 'steward'), ('privacy.table_status(integer)', 'steward'),
        ('privacy.subject_key(text,text)', 'steward'), ('privacy.subject_rows_sql(integer,text,text)', 'steward'),
        ('privacy.subject_row_count(integer,text,text)', 'steward'), ('privacy.record_export(text,text,text,jsonb)', 'steward'),
        ('privacy.copy_status()', 'steward'), ('privacy.database_identity()', 'steward'),
        ('privacy.fleet_add(text,text,text,text)', 'steward'), ('privacy.fleet_remove(text)', 'steward'),
        ('privacy.source_state(boolean)', 'steward'), ('privacy.steward_role()', 'steward'), ('privacy.heal()', 'steward'),
        ('privacy.role_problems(name)', 'steward'),
        ('privacy.place_restriction(text,text,text,text,text[],text[])', 'steward'),
        ('privacy.add_exception(uuid,text,text)', 'steward'), ('privacy.withdraw_exception(uuid,text,text)', 'steward'),
        ('privacy.erase(text,text,text,text,boolean,boolean)', 'steward'), ('privacy.erase_many(text,text[],text,text)', 'steward'),
        ('privacy.pending_erasures()', 'steward'), ('privacy.erasure_certificate(uuid)', 'steward'),
        ('privacy.rows_of_subjects(jsonb)', 'steward'), ('privacy.erased_rows_present()', 'steward'),
        -- the toolkit's owner: what the triggers and lifecycle functions use inside,
        -- registering tables, generating enforcement, and sync
        ('privacy.acting_role()', 'owner'), ('privacy.is_privileged(name,oid)', 'owner'),
        ('privacy.refuse(oid,text,smallint,jsonb)', 'owner'), ('privacy.fail(text)', 'owner'),
        ('privacy.require_text(text,text)', 'owner'), ('privacy.ledger_content(privacy.ledger)', 'owner'),
        ('privacy.ledger_append(text,text,text,uuid,jsonb)', 'owner'), ('privacy.ledger_is_append_only()', 'owner'),
        ('privacy.relation_of(privacy.protected_tables)', 'owner'), ('privacy.root_of(privacy.subject_types)', 'owner'),
        ('privacy.registry_row(regclass)', 'owner'), ('privacy.protected_table_of(oid)', 'owner'),
        ('privacy.descendants(oid)', 'owner'), ('privacy.column_names(oid,smallint[])', 'owner'),
        ('privacy.column_numbers(oid,name[])', 'owner'), ('privacy.resolve_table(text)', 'owner'),
        ('privacy.column_type(regclass,name)', 'owner'), ('privacy.foreign_key(regclass,name,regclass)', 'owner'),
        ('privacy.add_subject_type(text,regclass,name)', 'owner'),
        ('privacy.key_type_problem(regclass,name)', 'owner'),
        ('privacy.register_protected(regclass,text,text,name[],regclass,name[])', 'owner'),
        ('privacy.protect(regclass,text,name)', 'owner'), ('privacy.protect_via(regclass,name)', 'owner'),
        ('privacy.protect_referenced_by(regclass,regclass,name,boolean)', 'owner'), ('privacy.unprotect(regclass)', 'owner'),
        ('privacy.table_marker(integer)', 'owner'), ('privacy.heal_registry()', 'owner'),
        ('privacy.drop_enforcement(privacy.protected_tables,boolean)', 'owner'),
        ('privacy.subject_lock_class()', 'owner'), ('privacy.writer_bucket(text,text)', 'owner'),
        ('privacy.guard_bucket(text,text)', 'owner'), ('privacy.lock_subject_guard(text,text)', 'owner'),
        ('privacy.qualified_type(text)', 'owner'), ('privacy.key_cast_type(text)', 'owner'), ('privacy.has_own_before_update_trigger(oid)', 'owner'),
        ('privacy.join_columns(text,text[],text)', 'owner'), ('privacy.join_pairs(text,text[],text[],text)', 'owner'),
        ('privacy.quoted(name[])', 'owner'), ('privacy.view_columns(smallint[])', 'owner'),
        ('privacy.ph_rel(oid)', 'owner'), ('privacy.ph_col(oid,smallint)', 'owner'), ('privacy.render(text,boolean)', 'owner'),
        ('privacy.object_hash(text,oid)', 'owner'), ('privacy.row_identity(oid,jsonb)', 'owner'),
        ('privacy.exposed_columns(privacy.protected_tables)', 'owner'), ('privacy.enforcement_plan(integer)', 'owner'),
        ('privacy.plan_tag(integer)', 'owner'), ('privacy.enforce(regclass)', 'owner'),
        ('privacy.remark_table(integer,boolean,regclass)', 'owner'), ('privacy.guard_truncate()', 'owner'),
        ('privacy.refresh_enforcement()', 'owner'), ('privacy.canonical_key(text,text)', 'owner'),
        ('privacy.refresh_subject(text,text)', 'owner'), ('privacy.refresh_subjects(text,text[])', 'owner'), ('privacy.marked_in_bulk(integer)', 'owner'), ('privacy.marking_sql(integer)', 'owner'),
        ('privacy.marking_in_bulk()', 'owner'), ('privacy.active_entry(uuid,text)', 'owner'),
        ('privacy.restriction_step(uuid,text,text)', 'owner'), ('privacy.break_glass_reason()', 'owner'),
        ('privacy.strip_null_keys(jsonb)', 'owner'),
        ('privacy.journal(integer,text,oid,text,jsonb,jsonb,jsonb,name,name,timestamp with time zone)', 'owner'),
        ('privacy.enforcement_fingerprint()', 'owner'), ('privacy.remember_fingerprint()', 'owner'), ('privacy.check_held_data_after_ddl(oid)', 'owner'),
        ('privacy.on_sql_drop()', 'owner'), ('privacy.on_ddl_command_end()', 'owner'),
        ('privacy.ledger_entry_of(jsonb)', 'owner'), ('privacy.canonical_keys(text,text[])', 'owner'),
        ('privacy.hold_guards()', 'owner'), ('privacy.held_relations(text)', 'owner'),
        ('privacy.guard_held_relations(text)', 'owner'), ('privacy.hold_guard_name(text,oid)', 'owner'), ('privacy.uninstall()', 'owner'),
        ('privacy.sync_replay_entry(text,bigint,bytea,jsonb,jsonb,jsonb,jsonb)', 'owner'),
        ('privacy.sync_replay(text,bigint,jsonb,jsonb,jsonb,jsonb)', 'owner'),
        ('privacy.sync_finish(text,text,bigint)', 'owner'),
        ('privacy.subject_row_hashes(integer,text,text,text[],smallint[])', 'owner'), ('privacy.digest_hold(uuid)', 'owner'),
        ('privacy.constraint_columns(oid,smallint[])', 'owner'), ('privacy.foreign_keys()', 'owner'),
        ('privacy.reference_sharing(regclass,name[],regclass,name[])', 'owner'), ('privacy.dismissal_of(text,oid)', 'owner'),
        ('privacy.dismiss(text,regclass,text)', 'owner'), ('privacy.undismiss(text,regclass)', 'owner'), ('privacy.rls_cves()', 'owner'),
        ('privacy.sees_everything(oid)', 'owner'), ('privacy.function_audiences()', 'owner'),
        ('privacy.expected_grantees(regprocedure)', 'owner'), ('privacy.ensure_steward_role(name)', 'owner'),
        ('privacy.finish_install(jsonb)', 'owner'), ('privacy.create_app_role(name,text,name[])', 'owner'),
        ('privacy.add_steward(name)', 'owner'),
        -- purposes (sql/33_purposes.sql)
        ('privacy.role_mask(name)', 'owner'), ('privacy.mark_binds(name,smallint)', 'owner'),
        ('privacy.subject_mark(text,text)', 'owner'), ('privacy.purpose_policy_arms()', 'owner'),
        ('privacy.purpose_policies(text)', 'owner'), ('privacy.add_purpose(text,text)', 'owner'),
        ('privacy.grant_purpose(name,text)', 'owner'), ('privacy.checked_purposes(text[])', 'owner'),
        ('privacy.sync_restriction_purposes(privacy.ledger)', 'owner'),
        ('privacy.sync_replay_purpose_entry(privacy.ledger,jsonb)', 'owner'), ('privacy.purpose_findings(oid[])', 'owner'),
        ('privacy.erasure_blockers(text,text)', 'owner'), ('privacy.describe_blockers(jsonb)', 'owner'),
        ('privacy.erasure_order(text)', 'owner'), ('privacy.erasing(jsonb)', 'owner'), ('privacy.lock_subject(text,text)', 'owner'),
        ('privacy.erase_rows(text,text,uuid,text)', 'owner'), ('privacy.subject_exists(text,text)', 'owner'),
        ('privacy.perform_erasure(uuid,boolean,jsonb)', 'owner'), ('privacy.run_pending_erasure(text,text)', 'owner'),
        ('privacy.sync_erasure(text,privacy.ledger,jsonb,jsonb)', 'owner'), ('privacy.reapply_erasures()', 'owner'),
        ('privacy.subjects_rows_sql(integer)', 'owner'), ('privacy.erase_rows_bulk(text,text[],uuid[])', 'owner'),
        ('privacy.record_erasure(privacy.erasures,jsonb,jsonb)', 'owner'),
        -- Citus (sql/89_citus.sql)
        ('privacy.citus_table(oid)', 'owner'), ('privacy.citus_session()', 'owner'), ('privacy.citus_setup()', 'owner'),
        ('privacy.citus_path(regclass,text,text,name[],regclass,name[])', 'owner'),
        ('privacy.citus_refuse(text,text,smallint,text,boolean,text)', 'owner'), ('privacy.citus_guard_truncate()', 'owner'),
        ('privacy.citus_remark_table(integer,boolean)', 'owner'), ('privacy.citus_mark_referenced(integer,text[])', 'owner'), ('privacy.citus_journal_name(text)', 'owner'), ('privacy.citus_ensure_journal(text)', 'owner'),
        ('privacy.citus_collect_corrections()', 'owner'), ('privacy.citus_declare(text,boolean,text,text[])', 'owner'), ('privacy.citus_enforcement_plan(integer)', 'owner')
$$;

-- Who the model says may execute FUNCTION besides its owner: 'PUBLIC', the steward
-- role, the owner of a protected table (its trigger functions), or nobody; null for a
-- function the model does not know.
create or replace function privacy.expected_grantees(p_function regprocedure)
    returns text[]
    stable
    set search_path = ''
    language sql
as $$
    select case
        when pr.proname ~ '^pt_[0-9]+_(insert|row|propagate)$' then
            coalesce((select array[pg_catalog.pg_get_userbyid(c.relowner)::text] from privacy.protected_tables p
                        join pg_catalog.pg_class c on c.oid = p.relid
                       where p.id = pg_catalog.substring(pr.proname, '^pt_([0-9]+)_')::integer and c.relowner <> pr.proowner), '{}')
        when pr.proname ~ '^pt_[0-9]+_' then '{}'::text[]
        else (select case m.audience when 'public' then array['PUBLIC'] when 'steward' then array[privacy.steward_role()::text] else '{}'::text[] end
                from privacy.function_audiences() m where m.function_name = p_function::text)
    end
      from pg_catalog.pg_proc pr where pr.oid = p_function
$$;

-- Apply the model: every grant of every function back to what it says.
do $$
declare
    f regprocedure;
    g text;
    v_expected text[];
begin
    for f in select p.oid from pg_catalog.pg_proc p where p.pronamespace = 'privacy'::regnamespace loop
        v_expected := privacy.expected_grantees(f);
        if v_expected is null then
            -- Not in the model: a function of an earlier version (or someone's). Nothing may
            -- run it: drop it.
            execute pg_catalog.format('drop function %s', f);
            continue;
        end if;
        execute pg_catalog.format('revoke all on function %s from public', f);
        for g in select distinct pg_catalog.pg_get_userbyid(e.grantee)::text
                   from pg_catalog.pg_proc p cross join lateral pg_catalog.aclexplode(p.proacl) e
                  where p.oid = f and e.grantee <> 0 and e.grantee <> p.proowner loop
            if not g = any (v_expected) then
                execute pg_catalog.format('revoke all on function %s from %I', f, g);
            end if;
        end loop;
        foreach g in array v_expected loop
            execute pg_catalog.format('grant execute on function %s to %s', f, case when g = 'PUBLIC' then 'public' else pg_catalog.quote_ident(g) end);
        end loop;
    end loop;
end;
$$;

-- Everyone may name the schema (to call the predicates); nothing else of it.
grant usage on schema privacy to public;

-- Stewards read the registers and the record.
do $$
begin
    execute pg_catalog.format('grant select on privacy.processing_restrictions, privacy.subject_types, '
        'privacy.protected_tables, privacy.ledger, privacy.subject_marks, privacy.settings, privacy.corrections, '
        'privacy.recipients, privacy.recipient_notices, privacy.break_glass, privacy.hold_digests, '
        'privacy.hold_digest_rows, privacy.discover_dismissals, privacy.erasures, privacy.erasure_rows to %I', privacy.steward_role());
end;
$$;

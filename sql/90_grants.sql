-- sql/90_grants.sql: exactly what each role needs, after 00_base.sql revoked everything.

-- Every function but the generated pt_<id>_* ones (the generator grants those).
do $$
declare
    v regprocedure;
begin
    for v in select p.oid from pg_catalog.pg_proc p
              where p.pronamespace = 'privacy'::regnamespace and p.proname !~ '^pt_[0-9]+_' loop
        execute pg_catalog.format('revoke all on function %s from public', v);
    end loop;
end;
$$;

-- Everyone: the schema (so triggers can name their helpers) and the cheap predicates.
grant usage on schema privacy to public;
grant execute on function
    privacy.is_held(text, text), privacy.is_held(text, bigint), privacy.is_held(text, uuid),
    privacy.is_restricted(text, text), privacy.is_restricted(text, bigint), privacy.is_restricted(text, uuid),
    -- called by the row and TRUNCATE triggers, which run as the writing role
    privacy.refuse(text, text, smallint, jsonb, name), privacy.is_privileged(name, oid), privacy.acting_role(), privacy.session_role(),
    privacy.check_truncate(oid, name), privacy.steward_role(), privacy.guard_truncate(),
    privacy.break_glass_reason(name),
    privacy.journal(text, oid, text, jsonb, jsonb, jsonb, jsonb, name), privacy.toolkit_version(),
    -- harmless formatting helpers the CLI's queries use
    privacy.qualified(name, name), privacy.describe_path(privacy.protected_tables), privacy.required_steps(text)
to public;

-- Event trigger functions are checked at every firing, for whoever runs the DDL.
do $$
begin
    if pg_catalog.to_regprocedure('privacy.on_ddl_command_end()') is not null then
        grant execute on function privacy.on_ddl_command_end(), privacy.on_sql_drop() to public;
    end if;
end;
$$;

-- Stewards: place and release, read the registers and the ledger.
do $$
declare
    v_steward name := privacy.steward_role();
begin
    execute pg_catalog.format('grant execute on function privacy.place_hold(text, text, text, text), '
        'privacy.place_restriction(text, text, text, text), privacy.release_hold(uuid, text, text), '
        'privacy.verify_restriction(uuid, text), privacy.notify_subject(uuid, text), privacy.approve_release(uuid, text), '
        'privacy.release_restriction(uuid, text, boolean), privacy.break_glass(text), '
        'privacy.add_recipient(text, text), privacy.remove_recipient(text), privacy.ack_notice(text, bigint), '
        'privacy.pending_notices(), privacy.events_since(bigint, integer), '
        'privacy.missing_steps(privacy.processing_restrictions), '
        'privacy.discover(text), privacy.coverage(), privacy.doctor(), privacy.verify_hold(uuid), '
        'privacy.verify_ledger(), privacy.enforcement_status() to %I', v_steward);
    execute pg_catalog.format('grant select on privacy.processing_restrictions, privacy.subject_types, '
        'privacy.protected_tables, privacy.ledger, privacy.subject_marks, privacy.settings, privacy.corrections, '
        'privacy.recipients, privacy.recipient_notices, privacy.break_glass, privacy.hold_digests, '
        'privacy.hold_digest_rows to %I', v_steward);
end;
$$;

-- privacy-0001: the toolkit's tables. Released migrations are never edited;
-- change tables in a new numbered migration. Functions, triggers and policies
-- live in sql/ and are reloaded by post-apply.py.

create schema if not exists privacy;
comment on schema privacy is 'Restriction of processing (GDPR Art. 18) and legal holds, enforced by PostgreSQL. Managed by pyctl.';

-- Security first: nobody but the owner touches anything here until sql/ grants it.
revoke all on schema privacy from public;

create table privacy.settings (
    name  text primary key,
    value text not null
);
comment on table privacy.settings is 'Installation settings: steward_role, the database identity recorded at install.';

create table privacy.subject_types (
    subject_type text primary key
        check (subject_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    table_schema name not null,
    table_name   name not null,
    key_column   name not null,
    key_type     text not null,
    created_at   timestamptz not null default pg_catalog.now(),
    created_by   name not null default session_user
);
comment on table privacy.subject_types is 'A kind of person whose data is held, and the root table and key column that identify one.';
comment on column privacy.subject_types.key_type is 'format_type() of the key column; keys are stored as that type''s text form.';

create table privacy.protected_tables (
    id              integer generated always as identity primary key,
    table_schema    name not null,
    table_name      name not null,
    subject_type    text not null references privacy.subject_types,
    path_kind       text not null check (path_kind in ('column', 'via', 'referenced_by')),
    columns         name[] not null check (pg_catalog.cardinality(columns) > 0),
    parent_schema   name,
    parent_table    name,
    parent_columns  name[],
    rls_was_enabled boolean not null,
    enforcement     text,
    protected_at    timestamptz not null default pg_catalog.now(),
    protected_by    name not null default session_user,
    unique (table_schema, table_name),
    check ((path_kind = 'column') = (parent_table is null)),
    check (parent_columns is null or pg_catalog.cardinality(parent_columns) = pg_catalog.cardinality(columns))
);
comment on table privacy.protected_tables is 'Tables holding subject data and the path from each row to its subject.';
comment on column privacy.protected_tables.id is 'Stable number used in the names of the functions generated for this table.';
comment on column privacy.protected_tables.columns is 'column: the column holding the subject key; via: the foreign-key columns; referenced_by: this table''s referenced key columns.';
comment on column privacy.protected_tables.parent_table is 'via: the protected table the foreign key points at; referenced_by: the protected table whose rows point at this one.';
comment on column privacy.protected_tables.parent_columns is 'via: the referenced columns in parent_table; referenced_by: the referencing columns in parent_table.';
comment on column privacy.protected_tables.rls_was_enabled is 'Row-level security was already on before protect: unprotect leaves it on.';
comment on column privacy.protected_tables.enforcement is 'privacy <version> <md5 of the generated DDL>, also written as the comment of every generated trigger and policy.';

create table privacy.processing_restrictions (
    id              uuid primary key default pg_catalog.gen_random_uuid(),
    kind            text not null check (kind in ('legal_hold', 'restriction')),
    subject_type    text not null references privacy.subject_types,
    subject_key     text not null,
    basis           text check (basis in ('accuracy', 'unlawful', 'legal-claims', 'objection')),
    case_ref        text,
    reason          text not null check (pg_catalog.btrim(reason) <> ''),
    state           text not null default 'placed' check (state in ('placed', 'verified', 'notified', 'approved', 'released')),
    placed_by       name not null,
    placed_role     name not null,
    placed_at       timestamptz not null default pg_catalog.now(),
    released_by     name,
    released_role   name,
    released_at     timestamptz,
    release_reason  text,
    release_reference text,
    release_forced  boolean not null default false,
    check ((kind = 'legal_hold') = (case_ref is not null)),
    check ((kind = 'restriction') = (basis is not null)),
    check ((state = 'released') = (released_at is not null))
);
comment on table privacy.processing_restrictions is 'One row per legal hold or processing restriction. Never readable by restricted roles: it names cases and reasons.';
comment on column privacy.processing_restrictions.basis is 'GDPR Art. 18(1): accuracy (a), unlawful (b), legal-claims (c), objection (d).';
comment on column privacy.processing_restrictions.case_ref is 'The matter a legal hold preserves data for, e.g. 2026-CV-118.';
comment on column privacy.processing_restrictions.placed_role is 'The role in effect (SET ROLE) when placed; placed_by is the login.';
create index processing_restrictions_active
    on privacy.processing_restrictions (subject_type, subject_key) where released_at is null;

create table privacy.subject_marks (
    subject_type text not null,
    subject_key  text not null,
    mark         smallint not null check (mark between 1 and 3),
    primary key (subject_type, subject_key)
);
comment on table privacy.subject_marks is 'Derived from processing_restrictions: the mark rows of a subject carry. Absent means 0.';
comment on column privacy.subject_marks.mark is 'Bit 1: under at least one legal hold. Bit 2: under at least one processing restriction.';

create table privacy.subject_guards (
    bucket     integer primary key check (bucket between 0 and 1023),
    generation bigint not null default 0
);
comment on table privacy.subject_guards is 'Placement updates the bucket of its subject; writers that add rows lock it FOR SHARE, so a writer whose snapshot predates a placement waits or fails to serialize instead of adding an unmarked row.';
insert into privacy.subject_guards (bucket) select g from pg_catalog.generate_series(0, 1023) g;

create table privacy.ledger (
    seq          bigint primary key,
    recorded_at  timestamptz not null,
    session_role name not null,
    acting_role  name not null,
    event        text not null,
    subject_type text,
    subject_key  text,
    restriction_id uuid,
    payload      jsonb not null default '{}',
    prev_hash    bytea,
    hash         bytea not null
);
comment on table privacy.ledger is 'Append-only, hash-chained record of every hold, restriction and change to what is protected.';
comment on column privacy.ledger.hash is 'sha256(prev_hash || privacy.ledger_content(entry)); privacy.verify_ledger() recomputes the chain.';
create index ledger_subject on privacy.ledger (subject_type, subject_key, seq);

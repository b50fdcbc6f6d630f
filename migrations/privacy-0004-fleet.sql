-- privacy-0004: the fleet (followers, forks, restored backups) and what was synced into this database.
-- depends: privacy-0003-hold-digests

create table privacy.fleet (
    name     text primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$'),
    kind     text not null check (kind in ('follower', 'fork', 'backup')),
    dsn      text,
    dsn_env  text check (dsn_env ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    added_at timestamptz not null default pg_catalog.now(),
    added_by name not null default session_user,
    check ((dsn is null) <> (dsn_env is null))
);
comment on table privacy.fleet is 'The copies of this database the primary knows of.';
comment on column privacy.fleet.dsn_env is 'The name of the environment variable that holds the copy''s connection string, so that no secret is stored here.';

create table privacy.sync_sources (
    source_identity text primary key,
    source_name     text not null,
    last_seq        bigint not null,
    first_synced_at timestamptz not null,
    last_synced_at  timestamptz not null
);
comment on table privacy.sync_sources is 'On a fork or restored backup: the primaries (or ledger files) it was synced from, and up to which of their ledger positions.';

create table privacy.sync_applied (
    source_identity text not null,
    item            text not null,
    outcome         text not null check (outcome in ('applied', 'conflict')),
    detail          jsonb not null default '{}',
    applied_at      timestamptz not null,
    primary key (source_identity, item)
);
comment on table privacy.sync_applied is 'Corrections replayed from a source, or left alone because the row no longer held the value the correction started from.';

alter table privacy.break_glass add column for_sync boolean not null default false;
comment on column privacy.break_glass.for_sync is 'Declared by pyctl sync to replay a source''s corrections onto held rows; journaled like a steward''s.';

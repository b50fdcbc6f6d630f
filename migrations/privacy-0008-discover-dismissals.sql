-- privacy-0008: a table that holds a subject's key but is deliberately left unprotected
-- is a decision a person made, with a name and a reason: pyctl discover --dismiss.
-- coverage lists each dismissal and stops counting the table as a gap.
-- depends: privacy-0007-sync-replays-the-ledger

create table privacy.discover_dismissals (
    subject_type  text not null references privacy.subject_types (subject_type) on delete cascade,
    relid         oid not null,
    table_schema  name not null,
    table_name    name not null,
    reason        text not null check (pg_catalog.btrim(reason) <> ''),
    dismissed_by  name not null,
    acting_role   name not null,
    dismissed_at  timestamptz not null,
    primary key (subject_type, relid)
);
comment on table privacy.discover_dismissals is 'Tables discover lists for a subject type (confirmed or possible) that a person decided not to protect; coverage does not count them as gaps.';
comment on column privacy.discover_dismissals.relid is 'The table (pg_class OID); table_schema and table_name are its names when dismissed (to find it again in a restored dump).';
comment on column privacy.discover_dismissals.dismissed_by is 'session_user of the dismissal: the person (login) who decided.';
comment on column privacy.discover_dismissals.acting_role is 'The role in effect after SET ROLE when the dismissal was made.';

-- A shared lookup table (a store, a country) protected --referenced-by on purpose.
alter table privacy.protected_tables add column shared_ok_by name;
comment on column privacy.protected_tables.shared_ok_by is 'referenced_by: session_user who protected this table although other subjects share its rows (protect --shared-ok); doctor warns about shared tables protected without it.';

-- privacy-0002: the Art. 18 lifecycle, break-glass, the corrections journal and
-- the register of recipients (Art. 19).
-- depends: privacy-0001-initial

alter table privacy.processing_restrictions
    add column verified_at       timestamptz,
    add column verified_by       name,
    add column verification_note text,
    add column notified_at       timestamptz,
    add column notified_by       name,
    add column notified_via      text,
    add column approved_at       timestamptz,
    add column approved_by       name,
    add column approval_evidence text;
comment on column privacy.processing_restrictions.verification_note is 'Accuracy checked, data corrected, or the controller''s grounds assessed.';
comment on column privacy.processing_restrictions.notified_via is 'How the subject was told the restriction will be lifted (Art. 18(3)), e.g. email to the address on file.';
comment on column privacy.processing_restrictions.approval_evidence is 'Where the subject''s approval to resume processing is recorded.';
comment on column privacy.processing_restrictions.release_forced is 'Released without every step its basis requires; release_reason says why.';

create table privacy.break_glass (
    xact         xid8 primary key,
    session_role name not null,
    acting_role  name not null,
    reason       text not null check (pg_catalog.btrim(reason) <> ''),
    declared_at  timestamptz not null,
    ledger_seq   bigint not null
);
comment on table privacy.break_glass is 'Transactions in which a steward declared a reason to change rows under legal hold. The row applies to its own transaction id only.';

create table privacy.corrections (
    id              bigint generated always as identity primary key,
    recorded_at     timestamptz not null,
    kind            text not null check (kind in ('correction', 'break_glass')),
    table_schema    name not null,
    table_name      name not null,
    operation       text not null check (operation in ('UPDATE', 'DELETE')),
    row_identity    jsonb not null,
    before_values   jsonb not null,
    after_values    jsonb,
    subject_type    text,
    subject_key     text,
    restriction_ids uuid[] not null default '{}',
    session_role    name not null,
    acting_role     name not null,
    ledger_seq      bigint not null
);
comment on table privacy.corrections is 'Every change a steward made to rows of a restricted subject (and every change under break-glass), so that it can be replayed on forks and restored backups.';
comment on column privacy.corrections.row_identity is 'The primary key columns and values; for a table without one, every column of the row as it was.';
comment on column privacy.corrections.before_values is 'UPDATE: the changed columns before; DELETE: the whole row.';
comment on column privacy.corrections.after_values is 'UPDATE: the changed columns after; DELETE: null.';
create index corrections_subject on privacy.corrections (subject_type, subject_key);

create table privacy.recipients (
    name        text primary key check (pg_catalog.btrim(name) <> ''),
    description text not null default '',
    added_at    timestamptz not null default pg_catalog.now(),
    added_by    name not null default session_user
);
comment on table privacy.recipients is 'Systems and organisations the data is disclosed to, who must be told of restrictions (GDPR Art. 19).';

create table privacy.recipient_notices (
    recipient  text not null references privacy.recipients on delete cascade,
    ledger_seq bigint not null references privacy.ledger (seq),
    created_at timestamptz not null default pg_catalog.now(),
    acked_at   timestamptz,
    acked_by   name,
    primary key (recipient, ledger_seq)
);
comment on table privacy.recipient_notices is 'One per recipient for every placement and release of a restriction; acked when the recipient was told.';
create index recipient_notices_pending on privacy.recipient_notices (recipient) where acked_at is null;

-- privacy-0010: erasure after the hold (issue 16). One row per decision to erase a
-- subject: queued until its holds end, or done (the tombstone every copy re-applies);
-- the sha256 of each erased row (proof without the data); and the marker by which the
-- toolkit's own erasure lets its deletes through its triggers, for its subject only.
-- depends: privacy-0007-sync-replays-the-ledger

create table privacy.erasures (
    id             uuid primary key default pg_catalog.gen_random_uuid(),
    subject_type   text not null references privacy.subject_types,
    subject_key    text not null,
    state          text not null check (state in ('pending', 'erased')),
    reason         text not null check (pg_catalog.btrim(reason) <> ''),
    reference      text,
    requested_by   name not null,
    requested_role name not null,
    requested_at   timestamptz not null,
    erased_at      timestamptz,
    ledger_seq     bigint,
    tables         jsonb,
    source         text,
    check ((state = 'erased') = (erased_at is not null))
);
comment on table privacy.erasures is 'Erasures of subjects (GDPR Art. 17): pending (waiting for holds or a legal-claims restriction to end) or erased (a tombstone: sync re-applies it on every copy).';
comment on column privacy.erasures.tables is 'Per protected table: rows erased, the sha256 of their sorted row hashes (as hold digests), rows kept (shared with other data).';
comment on column privacy.erasures.source is 'On a copy: the identity of the source whose ledger entry this erasure replays; null where it was decided here.';
comment on column privacy.erasures.ledger_seq is 'The erasure (or synced_erasure) event in this database''s ledger.';
create unique index erasures_one_pending on privacy.erasures (subject_type, subject_key) where state = 'pending';
create index erasures_subject on privacy.erasures (subject_type, subject_key);

create table privacy.erasure_rows (
    erasure_id uuid not null references privacy.erasures on delete cascade,
    table_name text not null,
    row_hash   text not null
);
comment on table privacy.erasure_rows is 'The sha256 of each erased row''s canonical JSON (as privacy.subject_row_hashes computes it): a copy erases only rows whose hash is here, and reports any other row of the subject as a conflict.';
create index erasure_rows_erasure on privacy.erasure_rows (erasure_id);

create table privacy.erasure_in_progress (
    xact         xid8 not null,
    subject_type text not null,
    subject_key  text not null,
    primary key (xact, subject_type, subject_key)
);
comment on table privacy.erasure_in_progress is 'Written only by the toolkit''s erasure (as the owner), for the length of one erasure: the triggers let that transaction delete rows of that subject alone without refusing or journaling them.';

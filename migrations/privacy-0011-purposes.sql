-- privacy-0011: purposes (issue 19). A purpose is a kind of processing (marketing,
-- billing, legal-claims) served by application roles that are members of its NOLOGIN
-- group role; a restriction may be scoped to some purposes, and an unscoped one may
-- except some purposes (read-only, GDPR Art. 18(2)). Each purpose owns one bit of the
-- rows' privacy_mark, so reading stays a comparison on the row's own mark.
-- depends: privacy-0007-sync-replays-the-ledger

create table privacy.purposes (
    name        text primary key
        check (name ~ '^[a-z][a-z0-9]*(-[a-z0-9]+)*$' and pg_catalog.length(name) <= 40),
    role_name   name not null unique,
    bit         smallint not null unique check (bit between 2 and 14),
    description text not null default '',
    created_at  timestamptz not null default pg_catalog.now(),
    created_by  name not null default session_user
);
comment on table privacy.purposes is 'Kinds of processing (GDPR Art. 21(3), 18(2)): application roles serve a purpose by being members of its role.';
comment on column privacy.purposes.role_name is 'The NOLOGIN group role whose members serve this purpose (privacy_purpose_<name>, "-" as "_").';
comment on column privacy.purposes.bit is 'The bit of privacy_mark (value 2^bit) set on rows of subjects restricted for this purpose; 0 is the legal hold, 1 a restriction for every application role, 15 the sign: hence at most 13 purposes.';

create table privacy.restriction_purposes (
    id              bigint generated always as identity primary key,
    restriction_id  uuid not null references privacy.processing_restrictions,
    purpose         text not null references privacy.purposes,
    kind            text not null check (kind in ('scope', 'exception')),
    granted_at      timestamptz not null default pg_catalog.now(),
    granted_by      name not null,
    granted_role    name not null,
    reason          text,
    withdrawn_at    timestamptz,
    withdrawn_by    name,
    withdrawn_role  name,
    withdraw_reason text,
    check (kind = 'exception' or withdrawn_at is null),
    check ((withdrawn_at is null) = (withdrawn_by is null))
);
comment on table privacy.restriction_purposes is 'The purposes a restriction is scoped to (kind scope: it applies to roles of those purposes only), and the purposes excepted from an unscoped restriction (kind exception: their roles keep reading, not writing, GDPR Art. 18(2)).';
comment on column privacy.restriction_purposes.reason is 'Why an exception was granted (the legal ground of Art. 18(2)); null for a scope.';
create unique index restriction_purposes_active
    on privacy.restriction_purposes (restriction_id, purpose, kind) where withdrawn_at is null;
create index restriction_purposes_restriction on privacy.restriction_purposes (restriction_id);

-- Marks now carry purpose bits: up to 2^15 - 1.
alter table privacy.subject_marks drop constraint subject_marks_mark_check;
alter table privacy.subject_marks add constraint subject_marks_mark_check check (mark between 1 and 32767);
comment on column privacy.subject_marks.mark is 'Bit 0 (1): under a legal hold. Bit 1 (2): under a restriction that applies to every application role. Bits 2-14: restricted for the purpose with that bit (privacy.purposes).';

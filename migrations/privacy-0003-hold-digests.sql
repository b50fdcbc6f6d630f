-- privacy-0003: the preservation proof: what each legal hold's data was when it began.
-- depends: privacy-0002-lifecycle

create table privacy.hold_digests (
    hold_id      uuid not null references privacy.processing_restrictions (id),
    table_schema name not null,
    table_name   name not null,
    row_count    bigint not null,
    digest       text not null,
    computed_at  timestamptz not null,
    primary key (hold_id, table_schema, table_name)
);
comment on table privacy.hold_digests is 'Per protected table, the subject''s rows when a legal hold was placed: their count and a sha256 over the sorted sha256 of each row''s canonical JSON.';

create table privacy.hold_digest_rows (
    hold_id      uuid not null,
    table_schema name not null,
    table_name   name not null,
    row_identity jsonb not null,
    row_hash     text not null,
    foreign key (hold_id, table_schema, table_name) references privacy.hold_digests
);
comment on table privacy.hold_digest_rows is 'The sha256 of each held row at the hold''s start, by row identity (primary key, or the whole row), so a verification can name the rows that changed.';
create index hold_digest_rows_hold on privacy.hold_digest_rows (hold_id, table_schema, table_name);

-- privacy-0007: a copy replays only what its source's ledger vouches for. Every entry
-- of a source's ledger that a copy has looked at, with its hash (so the next sync
-- continues the same chain) and what came of it.
-- depends: privacy-0006-registry-follows-tables

create table privacy.sync_replayed (
    source_identity text not null,
    source_seq      bigint not null,
    source_hash     bytea not null,
    event           text not null,
    outcome         text not null check (outcome in ('applied', 'already', 'conflict', 'refused', 'skipped')),
    detail          jsonb not null default '{}',
    replayed_at     timestamptz not null,
    primary key (source_identity, source_seq)
);
comment on table privacy.sync_replayed is 'On a fork or restored backup: each entry of a source''s verified ledger chain that sync looked at, and its outcome (applied, already here, conflict: left alone, refused: not vouched for or not allowed, skipped: nothing to replay).';
comment on column privacy.sync_replayed.source_hash is 'The entry''s hash in the source''s chain: the next sync must continue from it.';

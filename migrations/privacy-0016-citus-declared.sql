-- privacy-0016: what the toolkit's own statements of a transaction are, for a Citus
-- shard's trigger (issue 20): a sync replaying corrections, an erasure deleting a
-- subject's rows. The toolkit's owner writes a row for the distributed transaction
-- (get_current_transaction_id()) before those statements and deletes it after them; a
-- reference table on Citus (privacy.citus_setup), read by the shards' triggers on every
-- node. Unused on one machine.
-- depends: privacy-0015-referenced-marks

create table if not exists privacy.citus_declared (
    txn_initiator integer not null,
    txn           bigint  not null,
    purpose       text    not null check (purpose in ('erasure', 'sync')),
    primary key (txn_initiator, txn, purpose)
);
revoke all on privacy.citus_declared from public;
comment on table privacy.citus_declared is 'On Citus: a distributed transaction in which the toolkit itself replays corrections (sync) or erases a subject, for the shards'' triggers; a row lives only inside its transaction.';

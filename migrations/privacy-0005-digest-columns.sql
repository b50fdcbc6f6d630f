-- privacy-0005: remember which columns a hold's digest covered, so that adding a
-- column later (which changes no held value) is not taken for a change.
-- depends: privacy-0004-fleet

alter table privacy.hold_digests add column columns text[];
comment on column privacy.hold_digests.columns is 'The table''s columns when the hold began; verification hashes these only. Null: every column.';

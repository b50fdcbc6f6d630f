-- privacy-0017: a declaration in privacy.citus_declared (0016) names the subject whose
-- rows the toolkit's statement touches: a shard's trigger lets only that subject's rows
-- through (found by an outside attack: an owner's trigger firing during an erasure
-- deleted another subject's restricted rows unjournaled).
-- depends: privacy-0016-citus-declared

alter table privacy.citus_declared add column if not exists subject_type text not null default '',
                                   add column if not exists subject_key text not null default '';
alter table privacy.citus_declared drop constraint if exists citus_declared_pkey;
alter table privacy.citus_declared add primary key (txn_initiator, txn, purpose, subject_type, subject_key);

-- privacy-0013: placement marks a list of subjects' rows one table at a time (issue 15).
-- The marker by which refresh_subjects tells the tables' propagation triggers that it
-- marks the tables below them itself, in one statement per table, for this transaction
-- only. Only the toolkit's owner writes it.
-- depends: privacy-0011-purposes

create table privacy.marking_in_progress (
    xact xid8 primary key
);
comment on table privacy.marking_in_progress is 'Written only by privacy.refresh_subjects (as the owner), for the length of its marking: the propagation triggers of that transaction leave the one-column via tables to it, which marks each in one statement.';

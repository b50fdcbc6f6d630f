-- privacy-0015: the marks of rows protected --referenced-by in a Citus reference table
-- (issue 20). A reference table's rows take their mark from the subject rows that point
-- at them, which are on other shards: placement writes each such row's mark here, a
-- reference table itself on Citus (privacy.citus_setup), so the triggers on every node
-- read it locally. Unused on one machine.
-- depends: privacy-0014-marking-statements

create table if not exists privacy.referenced_marks (
    table_id integer not null,  -- privacy.protected_tables.id (no foreign key: a Citus reference table cannot have one to a coordinator table)
    row_key  text    not null,
    mark     smallint not null check (mark between 1 and 32767),
    primary key (table_id, row_key)
);
revoke all on privacy.referenced_marks from public;
comment on table privacy.referenced_marks is 'On Citus: the mark of each row of a reference table protected --referenced-by (by its referenced column, as text), from every subject row pointing at it. Absent means 0.';

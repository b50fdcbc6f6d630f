-- privacy-0014: the statements by which placement marks a table's rows of a list of
-- subjects, kept with the enforcement fingerprint they were made for (issue 15;
-- privacy.marking_sql, privacy.remember_fingerprint). 0013 carried these columns for a
-- while on main before release: a database migrated then has them, hence IF NOT EXISTS.
-- depends: privacy-0013-marking-in-bulk

alter table privacy.protected_tables add column if not exists marking_sql text, add column if not exists marking_sql_for text;
comment on column privacy.protected_tables.marking_sql is 'The statement by which placement marks this table''s rows of a list of subjects (privacy.marking_sql); null where the triggers mark them row by row. Kept with the enforcement fingerprint it was made for (marking_sql_for), so a rename since is never run.';

-- Single-row DELETE of an existing order (and, by ON DELETE CASCADE, its 2 items)
-- of a customer with neither hold nor restriction. The transaction rolls back, so
-- every transaction deletes a row that exists and the data set does not shrink;
-- all the work of the DELETE (row-level security, BEFORE DELETE triggers on both
-- tables, the cascade) is done before the ROLLBACK.
\set o random(1, :norders - 2)
\set m ((:o - 1) % :ncust + 1) % 100
\set o :o + case when :m = 1 or :m = 2 then 2 else 0 end
BEGIN;
DELETE FROM orders WHERE id = :o;
ROLLBACK;

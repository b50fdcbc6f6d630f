-- Primary-key read on a directly protected table (orders), any order: 1% of them
-- belong to restricted customers and are invisible to the application role.
\set o random(1, :norders)
SELECT id, customer_id, placed_on, total, status FROM orders WHERE id = :o;

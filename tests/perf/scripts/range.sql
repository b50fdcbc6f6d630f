-- Index range read: one customer's orders (about 10), through orders_customer_id_idx.
\set c random(1, :ncust)
SELECT id, placed_on, total, status FROM orders WHERE customer_id = :c;

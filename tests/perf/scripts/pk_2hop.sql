-- Primary-key read on a 2-hop table (order_items -> orders -> customers).
\set i random(1, :nitems)
SELECT id, order_id, product_id, quantity, price FROM order_items WHERE id = :i;

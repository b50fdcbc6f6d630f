-- Full scan and aggregate over the 2-hop table.
SELECT count(*), sum(quantity * price) FROM order_items;

-- Full-table aggregate over a directly protected table.
SELECT count(*), sum(total) FROM orders;

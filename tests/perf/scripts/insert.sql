-- Single-row INSERT of an order for a customer with neither hold nor restriction.
\set c random(1, :ncust - 2)
\set m :c % 100
\set c :c + case when :m = 1 or :m = 2 then 2 else 0 end
\set t random(100, 50000)
INSERT INTO orders (customer_id, placed_on, total, status) VALUES (:c, CURRENT_DATE, :t, 'new');

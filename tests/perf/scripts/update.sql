-- Single-row UPDATE of an order of a customer with neither hold nor restriction
-- (customers with id % 100 = 1 are held, = 2 restricted: step over them).
\set o random(1, :norders - 2)
\set m ((:o - 1) % :ncust + 1) % 100
\set o :o + case when :m = 1 or :m = 2 then 2 else 0 end
UPDATE orders SET total = total + 1 WHERE id = :o;

-- The schema the tests protect: a shop with a partitioned table, a composite
-- foreign key, a table without a primary key, a shared address table, a second
-- schema and identifiers that need quoting.
create table addresses (
    id      integer primary key,
    street  text not null
);
create table customers (
    id         integer primary key,
    name       text not null,
    address_id integer references addresses (id)
);
create index on customers (address_id);
create table staff (
    id         integer primary key,
    name       text not null,
    address_id integer references addresses (id)
);
create table products (
    id   integer primary key,
    name text not null
);
create table orders (
    id          integer not null,
    customer_id integer not null references customers (id) on delete cascade,
    placed_on   date not null,
    total       integer not null,
    primary key (id, placed_on)
) partition by range (placed_on);
create table orders_2025 partition of orders for values from ('2025-01-01') to ('2026-01-01');
create table orders_2026 partition of orders for values from ('2026-01-01') to ('2027-01-01');
create index on orders (customer_id);
create table order_items (
    id         integer primary key,
    order_id   integer not null,
    placed_on  date not null,
    product_id integer not null references products (id) on delete cascade,
    quantity   integer not null,
    foreign key (order_id, placed_on) references orders (id, placed_on) on delete cascade on update cascade
);
create index on order_items (order_id, placed_on);
-- No primary key, no foreign key: holds and restrictions must not need either.
create table activity_log (
    customer_id integer,
    happened_at timestamptz not null default now(),
    what        text not null
);
create schema "crm data";
create table "crm data"."Support; Tickets" (
    "Ticket Id"   integer primary key,
    "Customer ""Ref""" integer not null references customers (id) on delete cascade,
    body          text not null
);

insert into addresses values (1, '1 Ada Lane'), (2, '2 Ben Road'), (3, '3 Cy Street'), (4, '4 Shared Court');
insert into customers values (1, 'Ada', 1), (2, 'Ben', 2), (3, 'Cy', 3), (4, 'Dee', 4);
insert into staff values (1, 'Sam', 4);
insert into products values (1, 'tea'), (2, 'mug');
insert into orders values
    (10, 1, '2026-01-10', 100), (11, 1, '2025-05-01', 110),
    (20, 2, '2026-02-20', 200), (21, 2, '2025-06-01', 210),
    (30, 3, '2026-03-30', 300), (31, 3, '2025-07-01', 310),
    (40, 4, '2026-04-01', 400);
insert into order_items values
    (100, 10, '2026-01-10', 1, 1), (110, 11, '2025-05-01', 2, 1),
    (200, 20, '2026-02-20', 1, 2), (210, 21, '2025-06-01', 2, 2),
    (300, 30, '2026-03-30', 1, 3), (310, 31, '2025-07-01', 2, 3),
    (400, 40, '2026-04-01', 1, 4);
insert into activity_log (customer_id, what) values (1, 'login'), (2, 'login'), (3, 'login'), (2, 'logout');
insert into "crm data"."Support; Tickets" values (1, 1, 'hello'), (2, 2, 'wrong address'), (3, 3, 'refund');

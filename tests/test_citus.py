"""Holds and restrictions on a Citus cluster (issue 20): a coordinator and two workers,
started by the suite when Citus is installed (.ci/run installs it), with `customers`
distributed by its key and the subject's other tables distributed by the subject key,
co-located with it. Every query shape an application sends through the coordinator,
and a role that connects straight to a worker and names a shard, against real nodes."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import Db, hold, restrict
from pyctl import install
from pyctl.cli import main
from pyctl.cluster import CitusCluster, Cluster, citus_installed, start_citus_cluster

# .ci/run installs Citus and sets PYCTL_REQUIRE_CITUS: there, a missing Citus fails instead of skipping.
pytestmark = pytest.mark.skipif(
    not citus_installed() and not os.environ.get("PYCTL_REQUIRE_CITUS"),
    reason="Citus is not installed for this PostgreSQL: ../shared/citus/build installs it (.ci/run does)")

ROLES = """
create role shop_owner login createrole;
create role app login;
create role steward_user login;
"""

# Tables are created, then distributed, then linked by foreign keys (Citus cannot
# distribute a table that a local table's foreign key already ties to a reference table).
SCHEMA = """
set citus.multi_shard_modify_mode = 'sequential';
create table countries (code text primary key, name text not null);
create table addresses (id integer primary key, street text not null);
create table customers (id integer primary key, name text not null, country text, address_id integer);
create table orders (id integer not null, customer_id integer not null, total integer not null,
                     primary key (customer_id, id));
create table order_items (id integer not null, order_id integer not null, customer_id integer not null,
                          quantity integer not null, primary key (customer_id, id));
create table activity (customer_id integer, what text not null);
create table notes (id integer primary key, customer_id integer not null, body text);
create table tickets (id integer not null, customer_id integer not null, body text, primary key (customer_id, id));
create table ruled (id integer not null, customer_id integer not null, primary key (customer_id, id));
select create_reference_table('countries');
select create_reference_table('addresses');
select create_distributed_table('customers', 'id');
select create_distributed_table('orders', 'customer_id', colocate_with => 'customers');
select create_distributed_table('order_items', 'customer_id', colocate_with => 'customers');
select create_distributed_table('activity', 'customer_id', colocate_with => 'customers');
select create_distributed_table('notes', 'id', colocate_with => 'customers');
select create_distributed_table('tickets', 'customer_id', colocate_with => 'none');
select create_distributed_table('ruled', 'customer_id', colocate_with => 'customers');
alter table customers add foreign key (country) references countries (code);
alter table customers add foreign key (address_id) references addresses (id);
alter table orders add foreign key (customer_id) references customers (id) on delete cascade;
alter table orders add column ship_to integer references addresses (id);
alter table order_items add foreign key (order_id, customer_id) references orders (id, customer_id) on delete cascade;
alter table ruled enable row level security;
create policy own_rule on ruled using (id > 0);
insert into countries values ('DE', 'Germany'), ('FR', 'France');
insert into addresses select g, 'street ' || g from generate_series(1, 8) g;
insert into customers select g, 'customer ' || g, 'DE', g from generate_series(1, 8) g;
insert into orders select c * 10 + j, c, 100 * c + j from generate_series(1, 8) c, generate_series(0, 1) j;
insert into order_items select o.id * 10, o.id, o.customer_id, 1 from orders o;
insert into activity select c, 'login' from generate_series(1, 8) c;
grant select, insert, update, delete on all tables in schema public to app;
reset citus.multi_shard_modify_mode;
"""

PROTECT = """
select privacy.add_subject_type('customer', 'public.customers', 'id');
select privacy.protect_via('public.orders', 'customer_id');
select privacy.protect_via('public.order_items', 'order_id');
select privacy.protect('public.activity', 'customer', 'customer_id');
"""

PROTECTED = ("customers", "orders", "order_items", "activity")
_counter = itertools.count()


@pytest.fixture(scope="module")
def citus() -> Iterator[CitusCluster]:
    c = start_citus_cluster()
    try:
        c.sql_all(ROLES)
        yield c
    finally:
        c.destroy()


class CitusDb(Db):
    """A database on the coordinator, with connections to its workers too."""

    def __init__(self, citus: CitusCluster, name: str) -> None:
        super().__init__(citus.coordinator, name)
        self.citus = citus
        self.workers = [Db(w, name) for w in citus.workers]

    def worker_of(self, table: str, key: int) -> tuple[Db, str]:
        """The worker that holds KEY's shard of TABLE, and the shard's name."""
        row = self.su.execute(
            "select s.shard_name, s.nodeport from citus_shards s "
            "where s.table_name = %s::regclass and s.shardid = get_shard_id_for_distribution_column(%s::regclass, %s)",
            (table, table, key)).fetchone()
        assert row is not None
        worker = next(w for w in self.workers if w.cluster.port == row[1])
        return worker, str(row[0])

    def close(self) -> None:
        for w in self.workers:
            w.close()
        super().close()


def _build(citus: CitusCluster, protect: bool = True) -> CitusDb:
    name = f"c{next(_counter)}"
    citus.create_database(name, owner="shop_owner")
    db = CitusDb(citus, name)
    with db.connect("shop_owner") as conn:  # one statement at a time, as Citus wants DDL
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                conn.execute(statement.encode())
    install.install(db.dsn("shop_owner"))
    if protect:
        db.owner.execute(PROTECT)
    # (Roles made on each node by hand, as here, are not Citus's to propagate: grant on every node.)
    citus.sql_all("grant privacy_steward to steward_user")
    return db


@pytest.fixture
def cdb(citus: CitusCluster) -> Iterator[CitusDb]:
    db = _build(citus)
    try:
        yield db
    finally:
        db.close()
        citus.drop_database(db.name)


def cli(db: Db, *args: str, user: str = "shop_owner") -> Result:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def refused(conn: psycopg.Connection, statement: str, params: Any = None, sqlstate: str = "PV001") -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params)
    err = info.value
    assert err.sqlstate == sqlstate, f"expected {sqlstate}, got {err.sqlstate}: {err}"
    if sqlstate == "PV001":
        assert str(err.diag.message_primary).startswith("privacy: ")
    return err


def rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(query, params).fetchall()]


def marks(db: Db, table: str, key: int) -> list[int]:
    return [r[0] for r in rows(db.su, f"select privacy_mark from {table} where customer_id = %s order by 1", (key,))]


# -- 1. install, subject add, protect, and the paths Citus cannot enforce ---------------

def test_install_subject_add_and_protect_with_the_cli(citus: CitusCluster) -> None:
    db = _build(citus, protect=False)
    try:
        assert cli(db, "subject", "add", "customer", "--table", "public.customers", "--key", "id").exit_code == 0
        assert cli(db, "protect", "public.orders", "--via", "customer_id").exit_code == 0
        assert cli(db, "protect", "public.order_items", "--via", "order_id").exit_code == 0
        assert cli(db, "protect", "public.activity", "--column", "customer_id").exit_code == 0
        tables = json.loads(cli(db, "--json", "tables").stdout)
        assert {t["table"]: t["enforcement"] for t in tables} == {f"public.{t}": "installed" for t in PROTECTED}
        # A --via child distributed by the subject key is enforced by that key: its path says so.
        assert {t["table"]: t["path"] for t in tables}["public.order_items"] == "customer_id = customer key"
        assert cli(db, "install").exit_code == 0  # a reinstall regenerates nothing
        assert json.loads(cli(db, "--json", "tables").stdout) == tables
        # The shards on the workers carry the triggers and the (permissive) policy.
        for worker in db.workers:
            worker.su.execute("set citus.override_table_visibility = off")
            found = rows(worker.su, "select c.relname, count(*) filter (where t.tgname ~ '^(zz_privacy_before_insert|Privacy_check_update"
                                    "|Privacy_check_update_path|Privacy_check_delete)_[0-9]+$'), "
                                    "bool_and(c.relrowsecurity), (select count(*) from pg_policy p where p.polrelid = c.oid and p.polpermissive) "
                                    "from pg_class c join pg_trigger t on t.tgrelid = c.oid "
                                    "where c.relname ~ '^orders_[0-9]+$' group by c.oid, c.relname")
            assert found and all(n == 4 and rls and pols == 1 for _, n, rls, pols in found), found
    finally:
        db.close()
        citus.drop_database(db.name)


@pytest.mark.parametrize(("args", "says"), [
    (["protect", "public.notes", "--column", "customer_id"],
     "public.notes is distributed by id, not by its path column customer_id"),
    (["protect", "public.tickets", "--column", "customer_id"],
     "public.tickets is not co-located with public.customers"),
    (["protect", "public.addresses", "--referenced-by", "public.orders.ship_to"],
     "on Citus --referenced-by is supported from the root table of the subject type (public.customers)"),
    (["protect", "public.countries", "--column", "code", "--subject", "customer"],
     "public.countries is a Citus reference table"),
    (["protect", "public.ruled", "--column", "customer_id"],
     "public.ruled has row-level security policies of its own (own_rule)"),
])
def test_protect_refuses_what_citus_cannot_enforce(cdb: CitusDb, args: list[str], says: str) -> None:
    before = rows(cdb.su, "select count(*), (select count(*) from privacy.ledger) from privacy.protected_tables")
    result = cli(cdb, *args)
    assert result.exit_code == 1
    assert says in result.stderr
    # ... and says what to change
    assert any(w in result.stderr for w in ("alter_distributed_table", "update_distributed_table_colocation",
                                            "protect it with --column", "Drop them", "Point at it from")), result.stderr
    assert rows(cdb.su, "select count(*), (select count(*) from privacy.ledger) from privacy.protected_tables") == before
    table = args[1].split(".")[1]
    assert cdb.scalar("select count(*) from pg_attribute where attrelid = %s::regclass and attname = 'privacy_mark'",
                      (f"public.{table}",)) == 0


def test_reference_tables_for_lookup_data_work_beside_protected_tables(cdb: CitusDb) -> None:
    h = hold(cdb, 2)
    # Lookup data (a reference table the subject's rows point at) is read and written as before.
    assert rows(cdb.app, "select c.id, k.name from customers c join countries k on k.code = c.country where c.id = 2") == [(2, "Germany")]
    cdb.owner.execute("insert into countries values ('IT', 'Italy')")
    cdb.app.execute("update customers set country = 'FR' where id = 3")
    refused(cdb.app, "update customers set country = 'FR' where id = 2")
    assert cdb.scalar("select country from customers where id = 2") == "DE"
    assert cdb.scalar("select count(*) from privacy.processing_restrictions where id = %s", (h,)) == 1


def test_a_reference_table_pointed_at_by_the_root_table_is_protected(cdb: CitusDb, tmp_path: Path) -> None:
    """--referenced-by from the root table onto a reference table (each customer's address):
    placement marks the addresses its subjects' rows point at, on every node; a held
    address is not changed or deleted, a restricted one is invisible, through the
    coordinator and on a worker; release lifts it; the hold's proof and export include it."""
    result = cli(cdb, "protect", "public.addresses", "--referenced-by", "public.customers.address_id")
    assert result.exit_code == 0, result.output
    h = hold(cdb, 2)
    r = restrict(cdb, 3)

    def mark_on_every_node(address: int) -> set[int]:
        found = {int(cdb.scalar("select privacy_mark from addresses where id = %s", (address,)))}
        for w in cdb.workers:
            found.add(int(w.scalar("select privacy_mark from addresses where id = %s", (address,))))
        return found

    assert mark_on_every_node(2) == {1} and mark_on_every_node(3) == {2} and mark_on_every_node(4) == {0}
    before = rows(cdb.su, "select * from addresses order by id")
    for conn in (cdb.app, cdb.steward, cdb.owner):
        err = refused(conn, "update addresses set street = 'elsewhere' where id = 2")
        assert "UPDATE on public.addresses refused" in str(err) and "legal hold" in str(err)
        refused(conn, "delete from addresses where id = 2")
    refused(cdb.app, "update addresses set privacy_mark = 0 where id = 2")  # unmarking by hand
    refused(cdb.owner, "truncate addresses cascade")
    assert rows(cdb.app, "select * from addresses where id = 3") == []
    assert cdb.app.execute("update addresses set street = 'x' where id = 3").rowcount == 0
    assert len(rows(cdb.steward, "select * from addresses where id = 3")) == 1
    # Other rows as before: written, added (unmarked, whatever the writer says), pointed at
    assert cdb.app.execute("update addresses set street = 'moved' where id = 4").rowcount == 1
    cdb.app.execute("insert into addresses (id, street, privacy_mark) values (10, 'new', 1)")
    assert mark_on_every_node(10) == {0}
    cdb.app.execute("update customers set address_id = 2 where id = 5")  # now shared with the held subject
    assert mark_on_every_node(2) == {1}
    # On a worker, the reference table's own placement there
    shard = cdb.scalar("select shard_name from citus_shards where table_name = 'addresses'::regclass limit 1")
    for w in cdb.workers:
        app = w.connect("app")
        assert rows(app, "select * from addresses where id = 3") == []
        app.execute("set citus.enable_manual_changes_to_shards = on")
        assert rows(app, f"select * from {shard} where id = 3") == []
        refused(app, f"update {shard} set street = 'x' where id = 2")
        refused(app, f"update {shard} set privacy_mark = 0 where id = 2")
    assert rows(cdb.su, "select * from addresses where id in (2, 3) order by id") == [x for x in before if x[0] in (2, 3)]
    # The proof and the export of the hold include the address
    result = cli(cdb, "hold", "verify", "--all", user="steward_user")
    assert result.exit_code == 0, result.output
    out = tmp_path / "export"
    result = cli(cdb, "export", "2", "--out", str(out), "--format", "json", user="steward_user")
    assert result.exit_code == 0, result.output
    counts = {f["table"]: f["rows"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert counts["public.addresses"] == 1
    # Release: the address takes what every customer pointing at it says (now nobody held)
    cdb.steward.execute("select privacy.release_hold(%s, 'case settled', 'order 1')", (h,))
    cdb.steward.execute("select privacy.release_restriction(%s, 'resolved', true)", (r,))
    assert mark_on_every_node(2) == {0} and mark_on_every_node(3) == {0}
    assert cdb.app.execute("update addresses set street = 'free' where id in (2, 3)").rowcount == 2
    assert cdb.scalar("select count(*) from privacy.referenced_marks") == 0
    # Erasure takes the subject's own address, and keeps one another customer still points at
    for key in ("4", "2"):
        result = cli(cdb, "erase", key, "--reason", "retention ended")
        assert result.exit_code == 0, result.output
    assert rows(cdb.su, "select id from addresses where id in (2, 4)") == [(2,)]


def test_a_marked_subject_keeps_pointing_at_its_marked_reference_row(cdb: CitusDb) -> None:
    """Found by an outside attack. A restriction scoped to a purpose leaves general roles free
    to change the subject's root row, and the reference table's marks are kept by
    placement only: a marked root row may not point elsewhere nor go (else the mark stays
    behind and the new row is unmarked). An INSERT of a taken key says 23505 whether the
    row is restricted or not. A key type whose equal values have several texts is refused."""
    assert cli(cdb, "protect", "public.addresses", "--referenced-by", "public.customers.address_id").exit_code == 0
    cdb.owner.execute("select privacy.add_purpose('marketing', 'newsletters')")
    cdb.steward.execute("select privacy.place_restriction('customer', '6', 'objection', 'no newsletters', "
                        "array['marketing']::text[], null::text[])")
    restrict(cdb, 3)
    before = rows(cdb.su, "select * from customers order by id")
    err = refused(cdb.app, "update customers set address_id = 7 where id = 6")
    assert "may not point at another row of public.addresses" in str(err)
    cdb.app.execute("delete from order_items where customer_id = 6")
    cdb.app.execute("delete from orders where customer_id = 6")
    cdb.app.execute("delete from activity where customer_id = 6")
    refused(cdb.app, "delete from customers where id = 6")
    assert rows(cdb.su, "select * from customers order by id") == before
    assert cdb.app.execute("update customers set name = 'renamed' where id = 6").rowcount == 1  # the rest is the app's
    assert int(cdb.scalar("select privacy_mark from addresses where id = 6")) == 4
    # An unmarked customer moves freely
    assert cdb.app.execute("update customers set address_id = 8 where id = 7").rowcount == 1
    # No oracle: a taken key is a unique violation, restricted row or not
    for key in (3, 4):
        refused(cdb.app, "insert into addresses values (%s, 'probe')", (key,), sqlstate="23505")
    # Keys kept by their text: numeric (2 = 2.00) refused
    cdb.owner.execute("create table addr_n (id numeric primary key, street text)")
    cdb.owner.execute("select create_reference_table('addr_n')")
    cdb.owner.execute("alter table customers add column addr_n numeric references addr_n (id)")
    result = cli(cdb, "protect", "public.addr_n", "--referenced-by", "public.customers.addr_n")
    assert result.exit_code == 1 and "public.addr_n.id is of type numeric: subject keys are kept by their text" in result.stderr


# -- 2. enforcement through the coordinator ---------------------------------------------

def test_restricted_rows_invisible_to_the_app_in_every_query_shape(cdb: CitusDb) -> None:
    restrict(cdb, 3)
    for table in PROTECTED:
        key = "id" if table == "customers" else "customer_id"
        # router query
        assert rows(cdb.app, f"select * from {table} where {key} = 3") == []
        # multi-shard query and aggregate
        assert 3 not in [r[0] for r in rows(cdb.app, f"select {key} from {table}")]
        assert cdb.scalar(f"select count(*) from {table}", user="app") == cdb.scalar(f"select count(*) from {table} where {key} <> 3")
        # the steward and the owner still see them
        assert cdb.scalar(f"select count(*) from {table} where {key} = 3", user="steward_user") >= 1
        assert cdb.scalar(f"select count(*) from {table} where {key} = 3", user="shop_owner") >= 1
    # a join across co-located tables
    assert rows(cdb.app, "select c.id from customers c join orders o on o.customer_id = c.id where c.id = 3") == []
    # UPDATE and DELETE match nothing; a cascade from nothing deletes nothing
    cdb.app.execute("update orders set total = 0 where customer_id = 3")
    cdb.app.execute("delete from orders where customer_id = 3")
    cdb.app.execute("delete from customers where id = 3")
    assert cdb.scalar("select count(*) from orders where customer_id = 3 and total <> 0") == 2
    assert cdb.scalar("select count(*) from customers where id = 3") == 1


def test_held_rows_refuse_update_and_delete_and_stay(cdb: CitusDb) -> None:
    hold(cdb, 2)
    before = rows(cdb.su, "select * from orders order by customer_id, id")
    for user in ("app", "steward_user", "shop_owner"):
        conn = cdb.connect(user)
        err = refused(conn, "update orders set total = 0 where customer_id = 2")  # router
        assert "UPDATE on public.orders refused" in str(err) and "legal hold" in str(err)
        refused(conn, "update orders set total = total + 1")  # multi-shard: all or nothing
        refused(conn, "delete from orders where customer_id = 2 and id = 20")
        refused(conn, "delete from order_items where customer_id = 2")
        refused(conn, "delete from customers where id = 2")  # and the cascade
        refused(conn, "update orders set privacy_mark = 0 where customer_id = 2")  # unmarking by hand
        err = refused(conn, "update orders set privacy_mark = 1 where customer_id = 1")  # marking by hand (put back on one machine)
        assert "privacy_mark is set by the toolkit" in str(err) and marks(cdb, "orders", 1) == [0, 0]
        refused(conn, "delete from activity")
    # break-glass opens nothing on a shard (it could not be journaled there)
    glass = cdb.connect("steward_user", autocommit=False)
    glass.execute("select privacy.break_glass('court order 2026-55')")
    refused(glass, "update orders set total = 1 where customer_id = 2 and id = 20")
    glass.rollback()
    refused(cdb.owner, "truncate activity")
    refused(cdb.owner, "truncate order_items")
    refused(cdb.owner, "truncate orders cascade")
    refused(cdb.owner, "truncate customers cascade")
    assert rows(cdb.su, "select * from orders order by customer_id, id") == before
    assert marks(cdb, "order_items", 2) == [1, 1]
    # reads and new rows are allowed under a hold, and the new row is held too
    assert cdb.scalar("select count(*) from orders where customer_id = 2", user="app") == 2
    cdb.app.execute("insert into orders values (29, 2, 1)")
    assert marks(cdb, "orders", 2) == [1, 1, 1]
    refused(cdb.app, "update orders set total = 5 where customer_id = 2 and id = 29")


def test_inserts_for_a_restricted_subject_are_refused_in_every_shape(cdb: CitusDb) -> None:
    restrict(cdb, 3)
    hold(cdb, 2)
    count = cdb.scalar("select count(*) from orders")
    refused(cdb.app, "insert into orders values (39, 3, 1)")  # router INSERT
    refused(cdb.app, "insert into orders values (91, 1, 1), (39, 3, 1)")  # multi-row, multi-shard
    # INSERT ... SELECT pushed down to the shards: the app reads no restricted row to copy
    cdb.app.execute("insert into orders select id + 1000, customer_id, total from orders")
    assert cdb.scalar("select count(*) from orders where id > 1000 and customer_id = 3") == 0
    assert marks(cdb, "orders", 2) == [1, 1, 1, 1]  # the copies of a held subject's rows are held
    # INSERT ... SELECT that Citus runs through the coordinator (COPY into the shards):
    # PostgreSQL refuses COPY under row-level security
    refused(cdb.app, "insert into orders values (30, 3, 9) on conflict (customer_id, id) do update set total = 9")  # upsert
    refused(cdb.app, "insert into orders values (20, 2, 9) on conflict (customer_id, id) do update set total = 9")  # onto a held row
    refused(cdb.app, "with d as (delete from orders where customer_id = 2 returning *) select count(*) from d")
    refused(cdb.app, "insert into orders select 2000, 3, 5 from generate_series(1, 1)", sqlstate="0A000")
    refused(cdb.app, "insert into orders select 2000 + g, 3, 5 from generate_series(1, 3) g", sqlstate="0A000")
    # COPY: an application role may not COPY into a table under row-level security at all
    with pytest.raises(psycopg.Error) as info:
        with cdb.app.cursor().copy("copy orders (id, customer_id, total) from stdin") as copy:
            copy.write_row((3000, 3, 1))
    assert info.value.sqlstate == "0A000"
    # the owner may COPY (it sees everything); the rows take their subject's marks
    with cdb.owner.cursor().copy("copy orders (id, customer_id, total, privacy_mark) from stdin") as copy:
        copy.write_row((3001, 3, 1, 0))
        copy.write_row((3002, 2, 1, 0))
        copy.write_row((3003, 1, 1, 3))
    assert rows(cdb.su, "select id, privacy_mark from orders where id > 3000 order by id") == [(3001, 2), (3002, 1), (3003, 0)]
    assert cdb.scalar("select count(*) from orders") == count + (count - 2) + 3
    assert cdb.scalar("select count(*) from orders where customer_id = 3 and id > 1000 and id < 3000") == 0


def test_steward_corrections_on_citus_are_journaled(cdb: CitusDb) -> None:
    """The matrix's "steward: allowed, journaled as a correction" on the cluster: the shard's
    trigger writes the change down on its node, in the change's transaction; the next
    command that writes (privacy.heal) moves it into privacy.corrections and the ledger,
    with who made it and when (in the entry's payload: the collector appends it). Through
    the coordinator and straight on a worker; a rolled-back correction leaves nothing; the
    app is still refused."""
    rid = restrict(cdb, 3)
    assert cdb.scalar("select count(*) from orders where customer_id = 3", user="steward_user") == 2
    assert cdb.steward.execute("update orders set total = 1 where customer_id = 3 and id = 30").rowcount == 1
    assert cdb.steward.execute("delete from order_items where customer_id = 3 and id = 310").rowcount == 1
    rolled = cdb.connect("steward_user", autocommit=False)
    rolled.execute("update orders set total = 999 where customer_id = 3 and id = 31")
    rolled.rollback()
    worker, shard = cdb.worker_of("activity", 3)
    on_worker = worker.connect("steward_user")
    on_worker.execute("set citus.enable_manual_changes_to_shards = on")
    assert on_worker.execute(f"update {shard} set what = 'signin' where customer_id = 3").rowcount == 1
    # Written down on the shards, not yet in the record
    assert cdb.scalar("select count(*) from privacy.citus_journal_customer") == 3
    assert cdb.scalar("select count(*) from privacy.corrections") == 0
    cdb.owner.execute("select privacy.heal()")  # collected by another role than the one who corrected
    assert cdb.scalar("select count(*) from privacy.citus_journal_customer") == 0
    got = rows(cdb.su, "select table_name, operation, row_identity, before_values, after_values, restriction_ids, "
                       "subject_type, subject_key, session_role, acting_role from privacy.corrections order by recorded_at, id")
    assert [g[:2] for g in got] == [("orders", "UPDATE"), ("order_items", "DELETE"), ("activity", "UPDATE")]
    import uuid
    assert got[0][2:] == ({"customer_id": 3, "id": 30}, {"total": 300}, {"total": 1}, [uuid.UUID(rid)],
                          "customer", "3", "steward_user", "steward_user")
    assert got[1][4] is None
    assert got[2][3:5] == ({"what": "login"}, {"what": "signin"})
    events = rows(cdb.su, "select event, subject_key, payload ? 'changed_at', payload->'changed_by'->>'acting_role' "
                          "from privacy.ledger where event = 'correction' order by seq")
    assert events == [("correction", "3", True, "steward_user")] * 3
    assert cdb.scalar("select count(*) from privacy.verify_ledger()") == 0
    # The application is refused as before; the rows stay restricted
    assert cdb.app.execute("update orders set total = 5 where customer_id = 3").rowcount == 0
    assert rows(cdb.app, "select * from orders where customer_id = 3") == []
    assert marks(cdb, "orders", 3) == [2, 2]


def test_no_correction_on_citus_through_the_owner_or_its_definer_functions(cdb: CitusDb) -> None:
    """Found by an outside attack: Citus runs a statement on the workers as the coordinator's
    current user, so inside a SECURITY DEFINER function of the table's owner an application's
    change reached the shard as the owner's and was journaled as a correction. On Citus only
    a steward (or a superuser) corrects; the owner, and its functions, are refused."""
    restrict(cdb, 3)
    before = rows(cdb.su, "select * from orders where customer_id = 3 order by id")
    cdb.owner.execute("create function public.set_total(k integer) returns bigint language plpgsql security definer "
                      "as $$ declare n bigint; begin update public.orders set total = -1 where customer_id = k; "
                      "get diagnostics n = row_count; return n; end $$")
    cdb.owner.execute("grant execute on function public.set_total(integer) to app")
    err = refused(cdb.app, "select public.set_total(3)")
    assert "correct it as a member of the steward role" in str(err)
    refused(cdb.owner, "update orders set total = -1 where customer_id = 3")
    refused(cdb.owner, "delete from orders where customer_id = 3")
    assert rows(cdb.su, "select * from orders where customer_id = 3 order by id") == before
    assert cdb.scalar("select count(*) from privacy.citus_journal_customer") == 0


def test_one_correction_that_cannot_be_recorded_does_not_stop_the_others(cdb: CitusDb) -> None:
    """Found by an outside attack: a journal entry the ledger cannot take (there: before and
    after together over jsonb's limit) made every heal(), and so every placement and erasure,
    fail. It is left where it is with a warning; the others are recorded."""
    restrict(cdb, 3)
    cdb.steward.execute("update orders set total = 7 where customer_id = 3 and id = 30")
    cdb.su.execute("insert into privacy.citus_journal_customer (subject_key, table_id, operation, old_row, new_row, session_role, acting_role) "
                   "select 3, id, 'UPDATE', '\"not a row\"', '{}', 'steward_user', 'steward_user' from privacy.protected_tables "
                   "where table_name = 'orders'")
    cdb.steward.execute("select privacy.heal()")
    assert cdb.scalar("select count(*) from privacy.corrections") == 1
    assert cdb.scalar("select count(*) from privacy.citus_journal_customer") == 1
    hold(cdb, 5)  # placements go on


def test_a_correction_too_large_to_journal_is_refused(cdb: CitusDb) -> None:
    """Before and after of one row must fit one ledger entry (jsonb's 256 MB): over 100 MB
    together the shard refuses the correction, as journal() would on one machine."""
    restrict(cdb, 3)
    cdb.steward.execute("update customers set name = repeat('a', 60000000) where id = 3")  # 60 MB: journaled
    err = refused(cdb.steward, "update customers set name = repeat('b', 60000000) where id = 3")
    assert "too large to be journaled" in str(err)
    assert cdb.scalar("select left(name, 1) from customers where id = 3") == "a"
    cdb.steward.execute("select privacy.heal()")
    assert cdb.scalar("select count(*) from privacy.corrections") == 1


def test_an_erasure_lets_through_only_its_own_subject_done_by_the_toolkit(cdb: CitusDb) -> None:
    """Found by an outside attack. (1) The erasure's declaration let a trigger of the table
    owner's, firing during the erasure, delete another restricted subject's rows on the
    same shard, unjournaled: a declaration names its subjects now. (2) Any login may set
    its distributed transaction id on a worker (assign_distributed_transaction_id): a
    declaration also needs the toolkit's owner as the actor. (3) An advisory lock any role
    could hold stalled every heal(): the collector locks a table of the toolkit's."""
    restrict(cdb, 3)
    _, shard3 = cdb.worker_of("orders", 3)
    other = next(k for k in range(1, 9) if k != 3 and cdb.worker_of("orders", k)[1] == shard3)
    restrict(cdb, other)
    before = rows(cdb.su, "select * from orders where customer_id = %s order by id", (other,))
    cdb.owner.execute("set citus.enable_unsafe_triggers = on")
    cdb.owner.execute(f"""create function public.rider() returns trigger language plpgsql
        set citus.enable_manual_changes_to_shards = on as $$
        begin
          if old.customer_id <> {other} then
            execute format('delete from %I.%I where customer_id = {other}', tg_table_schema, tg_table_name);
          end if;
          return null;
        end $$""")
    cdb.owner.execute("create trigger rider after delete on public.orders for each row execute function public.rider()")
    result = cli(cdb, "erase", "3", "--reason", "retention ended")
    assert result.exit_code == 1 and "privacy: DELETE on public.orders refused" in result.stderr, result.output
    assert rows(cdb.su, "select * from orders where customer_id = %s order by id", (other,)) == before
    assert cdb.scalar("select count(*) from orders where customer_id = 3") == 2
    cdb.owner.execute("drop trigger rider on public.orders")
    # (2) a declaration left behind (simulated), and an app that takes its transaction id on a worker
    hold(cdb, 2)
    cdb.su.execute("insert into privacy.citus_declared values (0, 999999, 'sync', 'customer', '2')")
    worker, shard2 = cdb.worker_of("orders", 2)
    app = worker.connect("app", autocommit=False)
    app.execute("set citus.enable_manual_changes_to_shards = on")
    app.execute("select assign_distributed_transaction_id(0, 999999, now())")
    refused(app, f"delete from {shard2} where customer_id = 2")
    app.rollback()
    cdb.su.execute("delete from privacy.citus_declared")
    assert cdb.scalar("select count(*) from orders where customer_id = 2") == 2
    # (3) the app holding the collector's old advisory lock changes nothing; the table lock is not the app's
    cdb.app.execute("select pg_advisory_lock(hashtext('privacy.citus_collect_corrections'))")
    steward = cdb.connect("steward_user")
    steward.execute("set statement_timeout = '10s'")
    steward.execute("select privacy.heal()")
    refused(cdb.connect("app", autocommit=False), "lock table privacy.corrections in share row exclusive mode", sqlstate="42501")


def test_an_erasure_leaves_a_correction_committed_while_it_waited(cdb: CitusDb) -> None:
    """Found by an outside attack: the erasure deleted what the shards had written down of its
    subject, also a steward's correction that committed while the erasure waited for its
    row. The erasure now declares itself to the shards (privacy.citus_declared), which write
    nothing down for its deletes; the correction is recorded."""
    restrict(cdb, 3)
    steward = cdb.connect("steward_user", autocommit=False)
    steward.execute("update orders set total = 4242 where customer_id = 3 and id = 30")
    done: dict[str, Any] = {}

    def erase() -> None:
        done["result"] = cli(cdb, "erase", "3", "--reason", "retention ended")

    thread = threading.Thread(target=erase)
    thread.start()
    _wait_for_lock(cdb)
    steward.commit()
    thread.join(60)
    assert done["result"].exit_code == 0, done["result"].output
    assert cdb.scalar("select count(*) from orders where customer_id = 3") == 0
    cdb.steward.execute("select privacy.heal()")
    got = rows(cdb.su, "select table_name, operation, after_values from privacy.corrections")
    assert got == [("orders", "UPDATE", {"total": 4242})]
    assert cdb.scalar("select count(*) from privacy.citus_declared") == 0


def test_release_lifts_enforcement_on_every_shard(cdb: CitusDb) -> None:
    h = hold(cdb, 2)
    r = restrict(cdb, 3)
    cdb.steward.execute("select privacy.release_hold(%s, 'case settled', 'order 1')", (h,))
    cdb.steward.execute("select privacy.release_restriction(%s, 'resolved', true)", (r,))
    for table in PROTECTED:
        key = "id" if table == "customers" else "customer_id"
        assert cdb.scalar(f"select count(*) from {table} where privacy_mark <> 0") == 0
        assert cdb.scalar(f"select count(*) from {table} where {key} = 3", user="app") >= 1
    cdb.app.execute("update orders set total = 7 where customer_id in (2, 3)")
    assert cdb.scalar("select count(*) from orders where total = 7") == 4
    assert cdb.scalar("select count(*) from privacy.subject_marks") == 0


# -- 2b. straight on a worker, naming a shard -------------------------------------------

def test_a_role_on_a_worker_naming_a_shard_is_bound_too(cdb: CitusDb) -> None:
    hold(cdb, 2)
    restrict(cdb, 3)
    # the restricted subject's shard: invisible to the app, visible to the steward, no new rows
    worker, shard = cdb.worker_of("orders", 3)
    app = worker.connect("app")
    assert rows(app, f"select * from {shard} where customer_id = 3") == []
    assert rows(app, "select * from orders where customer_id = 3") == []  # the distributed table, from a worker
    assert len(rows(worker.connect("steward_user"), f"select * from {shard} where customer_id = 3")) == 2
    # Citus refuses changes to a shard unless the session says otherwise; any role may say so.
    app.execute("set citus.enable_manual_changes_to_shards = on")
    refused(app, f"insert into {shard} (id, customer_id, total) values (99, 3, 1)")
    refused(app, f"insert into {shard} (id, customer_id, total, privacy_mark) values (98, 3, 1, 0)")
    app.execute(f"update {shard} set total = 0 where customer_id = 3")  # nothing matches
    app.execute(f"delete from {shard} where customer_id = 3")
    # the held subject's shard: visible, but nobody changes or deletes its rows
    worker, shard = cdb.worker_of("orders", 2)
    app = worker.connect("app")
    assert len(rows(app, f"select * from {shard} where customer_id = 2")) == 2
    owner = worker.connect("shop_owner")
    for conn in (app, owner):
        conn.execute("set citus.enable_manual_changes_to_shards = on")
        refused(conn, f"update {shard} set total = 0 where customer_id = 2")
        refused(conn, f"delete from {shard} where customer_id = 2")
        refused(conn, f"update {shard} set privacy_mark = 0 where customer_id = 2")
    with pytest.raises(psycopg.Error):
        app.execute(f"alter table {shard} disable trigger all")
    # nor may it read which subjects are marked, on any node
    shard_of_marks = cdb.scalar("select shard_name from citus_shards where table_name = 'privacy.subject_marks'::regclass limit 1")
    for w in cdb.workers:
        refused(w.connect("app"), "select * from privacy.subject_marks", sqlstate="42501")
        refused(w.connect("app"), f"select * from {shard_of_marks}", sqlstate="42501")
    worker, items = cdb.worker_of("order_items", 2)
    app = worker.connect("app")
    refused(app, "delete from order_items where customer_id = 2")
    app.execute("set citus.enable_manual_changes_to_shards = on")
    refused(app, f"delete from {items} where customer_id = 2")
    assert rows(cdb.su, "select customer_id, count(*), min(total) from orders where customer_id in (2, 3) group by 1 order by 1") == [
        (2, 2, 200), (3, 2, 300)]


def _held_2_and_restricted_3_still_enforced(cdb: CitusDb) -> None:
    """After the shards of subjects 2 (held) and 3 (restricted) were rebuilt elsewhere: through
    the coordinator and straight on the shards' workers, enforced as before, rows unchanged."""
    for conn in (cdb.app, cdb.owner, cdb.steward):
        refused(conn, "update orders set total = 0 where customer_id = 2")
        refused(conn, "delete from order_items where customer_id = 2")
    assert rows(cdb.app, "select * from orders where customer_id = 3") == []
    assert cdb.scalar("select count(*) from orders where customer_id = 3", user="steward_user") == 2
    refused(cdb.app, "insert into orders values (39, 3, 1)")
    for key, table in ((2, "orders"), (2, "order_items"), (3, "orders")):
        worker, shard = cdb.worker_of(table, key)
        app = worker.connect("app")
        app.execute("set citus.enable_manual_changes_to_shards = on")
        if key == 2:
            refused(app, f"delete from {shard} where customer_id = 2")
        else:
            assert rows(app, f"select * from {shard} where customer_id = 3") == []
            refused(app, f"insert into {shard} (id, customer_id, total) values (38, 3, 1)")
    assert rows(cdb.su, "select customer_id, count(*), min(privacy_mark) from orders where customer_id in (2, 3) group by 1 order by 1") == [
        (2, 2, 1), (3, 2, 2)]
    result = cli(cdb, "hold", "verify", "--all", user="steward_user")  # the held rows moved, unchanged
    assert result.exit_code == 0, result.output


def test_a_moved_shard_keeps_its_enforcement_on_its_new_worker(cdb: CitusDb) -> None:
    """The rebalancer moves shards between workers: the shard it builds on the other worker
    must carry the triggers and the policy (and the rows their marks)."""
    hold(cdb, 2)
    restrict(cdb, 3)
    for key in (2, 3):
        source, shard = cdb.worker_of("orders", key)
        target = next(w for w in cdb.workers if w is not source)
        shard_id = int(shard.rsplit("_", 1)[1])
        # block_writes: the move copies with COPY, no logical replication (wal_level stays replica)
        cdb.su.execute("select citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s, shard_transfer_mode => 'block_writes')",
                       (shard_id, source.cluster.port, target.cluster.port))
        assert cdb.worker_of("orders", key)[0] is target
    _held_2_and_restricted_3_still_enforced(cdb)


def test_a_split_shard_keeps_its_enforcement_in_both_halves(cdb: CitusDb) -> None:
    """Splitting a shard (citus_split_shard_by_split_points) builds new shards for the whole
    co-location group: each must carry the triggers and the policy."""
    hold(cdb, 2)
    restrict(cdb, 3)
    for key in (2, 3):
        worker, shard = cdb.worker_of("orders", key)
        shard_id = int(shard.rsplit("_", 1)[1])
        low, high = rows(cdb.su, "select shardminvalue::bigint, shardmaxvalue::bigint from pg_dist_shard where shardid = %s", (shard_id,))[0]
        hashed = int(cdb.scalar("select worker_hash(%s::integer)", (key,)))
        point = hashed - 1 if hashed > low else hashed  # the key's rows land in one of the halves, next to the cut
        node = cdb.scalar("select nodeid from pg_dist_node where nodeport = %s", (worker.cluster.port,))
        cdb.su.execute("select citus_split_shard_by_split_points(%s, array[%s::text], array[%s, %s]::integer[], "
                       "shard_transfer_mode => 'block_writes')", (shard_id, str(point), node, node))
        assert cdb.worker_of("orders", key)[1] != shard and low <= point < high
    _held_2_and_restricted_3_still_enforced(cdb)


# -- 3. atomic placement with a worker killed, verify, export ---------------------------

def _marks_everywhere(db: CitusDb, key: int) -> dict[str, Any]:
    """The subject's marks as each node stores them (the coordinator's view of the shards,
    and each node's own copy of subject_marks)."""
    out: dict[str, Any] = {t: marks(db, t, key) if t != "customers" else
                           [r[0] for r in rows(db.su, "select privacy_mark from customers where id = %s", (key,))]
                           for t in PROTECTED}
    for i, w in enumerate(db.workers):
        with psycopg.connect(w.dsn("postgres"), autocommit=True) as conn:
            conn.execute("set citus.override_table_visibility = off")
            out[f"worker{i}"] = rows(conn, "select subject_key, mark from privacy.subject_marks where subject_key = %s", (str(key),))
    return out


def _key_on(db: CitusDb, worker: Db) -> int:
    for key in range(1, 9):
        if db.worker_of("orders", key)[0] is worker:
            return key
    raise AssertionError("no subject on that worker")


def _restart(node: Cluster) -> None:
    node.start()
    node.wait_ready()


def test_a_worker_killed_before_commit_leaves_the_subject_unmarked(cdb: CitusDb) -> None:
    worker = cdb.workers[1]
    key = _key_on(cdb, worker)
    steward = cdb.connect("steward_user", autocommit=False)
    steward.execute("select privacy.place_hold('customer', %s, 'CASE-K', 'preserve')", (str(key),))
    worker.close()
    worker.cluster.stop("immediate")
    try:
        with pytest.raises(psycopg.Error):
            steward.commit()
    finally:
        steward.close()
        _restart(worker.cluster)
    cdb.su.execute("select recover_prepared_transactions()")
    state = _marks_everywhere(cdb, key)
    assert all(v == ([] if k.startswith("worker") else [0] * len(v)) for k, v in state.items()), state
    assert cdb.scalar("select count(*) from privacy.processing_restrictions") == 0
    cdb.app.execute("update orders set total = 1 where customer_id = %s", (key,))  # not held


def test_a_worker_killed_after_prepare_is_wholly_marked_after_recovery(cdb: CitusDb) -> None:
    """The coordinator's commit waits (synchronous replication to nobody) after every
    worker prepared; a worker dies then; the coordinator commits; recovery finishes it."""
    worker = cdb.workers[1]
    key = _key_on(cdb, worker)
    coord = cdb.citus.coordinator
    cdb.su.execute("alter system set synchronous_standby_names = 'nobody'")
    cdb.su.execute("alter system set citus.recover_2pc_interval = -1")  # the test runs the recovery itself
    cdb.su.execute("select pg_reload_conf()")
    done: dict[str, Any] = {}

    def place() -> None:
        try:
            with psycopg.connect(cdb.dsn("steward_user"), autocommit=True) as conn:
                done["id"] = conn.execute("select privacy.place_hold('customer', %s, 'CASE-K', 'preserve')",
                                          (str(key),)).fetchone()
        except psycopg.Error as exc:  # pragma: no cover - reported below
            done["error"] = exc

    thread = threading.Thread(target=place)
    thread.start()
    try:
        with psycopg.connect(coord.dsn(cdb.name), autocommit=True) as watch:
            watch.execute("set synchronous_commit = local")
            deadline = time.monotonic() + 60
            while watch.execute("select count(*) from pg_stat_activity where wait_event = 'SyncRep' "
                                "and usename = 'steward_user'").fetchone() != (1,):
                assert time.monotonic() < deadline, "the placement never reached its commit"
                time.sleep(0.05)
        with psycopg.connect(worker.cluster.dsn(cdb.name), autocommit=True) as w:
            assert w.execute("select count(*) from pg_prepared_xacts").fetchone() == (1,)
        worker.close()
        worker.cluster.stop("immediate")
    finally:
        with psycopg.connect(coord.dsn(cdb.name), autocommit=True) as su:
            su.execute("set synchronous_commit = local")
            su.execute("alter system reset synchronous_standby_names")
            su.execute("select pg_reload_conf()")
        thread.join(60)
    try:
        assert "error" not in done, done
        assert cdb.scalar("select count(*) from privacy.processing_restrictions where kind = 'legal_hold'") == 1
    finally:
        _restart(worker.cluster)
    # The worker came back with the placement prepared, neither committed nor rolled back.
    try:
        with psycopg.connect(worker.cluster.dsn(cdb.name), autocommit=True) as w:
            assert w.execute("select count(*) from pg_prepared_xacts").fetchone() == (1,)
        cdb.su.execute("select recover_prepared_transactions()")
    finally:
        cdb.su.execute("alter system reset citus.recover_2pc_interval")
        cdb.su.execute("select pg_reload_conf()")
    state = _marks_everywhere(cdb, key)
    assert all(v == ([(str(key), 1)] if k.startswith("worker") else [1] * len(v)) for k, v in state.items()), state
    refused(cdb.app, "delete from orders where customer_id = %s", (key,))


def test_hold_verify_and_export_on_the_cluster(cdb: CitusDb, tmp_path: Path) -> None:
    hold(cdb, 4)
    result = cli(cdb, "hold", "verify", "--all", user="steward_user")
    assert result.exit_code == 0, result.output
    out = tmp_path / "export"
    result = cli(cdb, "export", "4", "--out", str(out), "--format", "json", user="steward_user")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    counts = {f["table"]: f["rows"] for f in manifest["files"]}
    assert counts == {"public.customers": 1, "public.orders": 2, "public.order_items": 2, "public.activity": 1}
    assert cli(cdb, "export", "verify", str(out), user="steward_user").exit_code == 0
    # a held row changed behind the toolkit's back (a superuser, triggers off on a shard) is found
    worker, shard = cdb.worker_of("orders", 4)
    with psycopg.connect(worker.cluster.dsn(cdb.name), autocommit=True) as su:
        su.execute("set citus.enable_manual_changes_to_shards = on")
        su.execute("set session_replication_role = replica")
        su.execute(f"update {shard} set total = 0 where customer_id = 4")
    assert cli(cdb, "hold", "verify", "--all", user="steward_user").exit_code == 1


def test_the_report_on_the_cluster(cdb: CitusDb, tmp_path: Path) -> None:
    """`pyctl report` reads the coordinator's record and verifies each hold against the
    shards: unchanged, then a violation once a held row is changed on a shard."""
    cdb.su.execute("update privacy.settings set value = privacy.database_identity() where name = 'database_identity'")
    h = hold(cdb, 4)
    r = restrict(cdb, 3)

    def facts() -> dict[str, Any]:
        result = cli(cdb, "report", "--out", "-", "--format", "json", user="steward_user")
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    before = facts()
    (held,) = before["holds"]
    assert held["id"] == h and held["subject_key"] == "4" and held["verification"]["verdict"] == "unchanged"
    assert {d["table"] for d in held["digests"]} == {f"public.{t}" for t in PROTECTED}
    assert [x["id"] for x in before["restrictions"]] == [r]
    assert before["ledger"]["verifies"] is True
    worker, shard = cdb.worker_of("orders", 4)
    with psycopg.connect(worker.cluster.dsn(cdb.name), autocommit=True) as su:
        su.execute("set citus.enable_manual_changes_to_shards = on")
        su.execute("set session_replication_role = replica")
        su.execute(f"delete from {shard} where customer_id = 4 and id = 40")
    after = facts()
    assert after["holds"][0]["verification"]["verdict"] == "violation"
    assert after["summary"]["holds_violated"] == 1
    out = tmp_path / "report.html"
    result = cli(cdb, "report", "--out", str(out), user="steward_user")
    assert result.exit_code == 0, result.output
    assert "VIOLATION" in out.read_text(encoding="utf-8")


def _wait_for_lock(db: CitusDb, conns: int = 1) -> None:
    """Until some session on any node waits for a lock (the writer, or the placement's
    statement on a worker)."""
    deadline = time.monotonic() + 30
    while True:
        waiting = 0
        for node in [db, *db.workers]:
            with psycopg.connect(node.cluster.dsn(db.name), autocommit=True) as conn:
                row = conn.execute("select count(*) from pg_stat_activity where wait_event_type = 'Lock'").fetchone()
                waiting += int(row[0]) if row else 0
        if waiting >= conns:
            return
        assert time.monotonic() < deadline, "nobody waited"
        time.sleep(0.05)


@pytest.mark.parametrize("first", ["placement", "writer"])
def test_a_row_written_during_a_placement_is_marked(cdb: CitusDb, first: str) -> None:
    """Advisory locks are local to a node: on Citus a writer and a placement are ordered
    by the subject's row in the root table (co-located), whichever comes first."""
    steward = cdb.connect("steward_user", autocommit=False)
    writer = cdb.connect("app", autocommit=False)
    result: dict[str, Any] = {}

    def second() -> None:
        try:
            if first == "placement":
                writer.execute("insert into orders values (55, 5, 1)")
                writer.commit()
            else:
                steward.execute("select privacy.place_restriction('customer', '5', 'accuracy', 'contested')")
                steward.commit()
        except psycopg.Error as exc:
            result["error"] = exc

    if first == "placement":
        steward.execute("select privacy.place_restriction('customer', '5', 'accuracy', 'contested')")
    else:
        writer.execute("insert into orders values (55, 5, 1)")
    thread = threading.Thread(target=second)
    thread.start()
    _wait_for_lock(cdb)
    time.sleep(0.2)
    (steward if first == "placement" else writer).commit()
    thread.join(30)
    assert not thread.is_alive()
    if first == "placement":
        # the writer waited for the placement, then saw the restriction: refused, nothing added
        assert isinstance(result.get("error"), psycopg.Error) and result["error"].sqlstate == "PV001", result
        assert cdb.scalar("select count(*) from orders where id = 55") == 0
    else:
        assert "error" not in result, result
        assert marks(cdb, "orders", 5) == [2, 2, 2]  # the writer's row was marked by the placement
        assert rows(cdb.app, "select * from orders where customer_id = 5") == []


def test_sync_brings_a_restored_copy_of_the_cluster_up_to_date(cdb: CitusDb) -> None:
    """A restored backup of the whole cluster (every node's database copied at one moment,
    before the hold) is brought to the primary's state by pyctl sync through its coordinator."""
    copy = f"{cdb.name}_copy"
    cdb.close()
    for node in cdb.citus.nodes:
        with psycopg.connect(node.dsn("postgres"), autocommit=True) as su:
            for _ in range(20):  # (Citus's maintenance daemon reconnects: try again)
                su.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                           (cdb.name,))
                try:
                    su.execute(f'create database "{copy}" template "{cdb.name}"'.encode())
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
            else:
                raise AssertionError("could not copy the database")
    try:
        hold(cdb, 2)
        restrict(cdb, 3)
        cdb.steward.execute("update orders set total = 333 where customer_id = 3 and id = 30")  # a correction, replayed
        cdb.steward.execute("select privacy.heal()")
        result = cli(cdb, "fleet", "add", "restored", "--dsn", cdb.citus.coordinator.dsn(copy, user="shop_owner"),
                     "--kind", "backup")
        assert result.exit_code == 0, result.output
        result = cli(cdb, "sync", "restored")
        assert result.exit_code == 0, result.output
        restored = Db(cdb.citus.coordinator, copy)
        try:
            refused(restored.app, "delete from orders where customer_id = 2")
            assert rows(restored.app, "select * from orders where customer_id = 3") == []
            assert restored.scalar("select count(*) from orders where customer_id = 3", user="steward_user") == 2
            assert restored.scalar("select count(*) from privacy.verify_ledger()") == 0
            assert [r[0] for r in rows(restored.su, "select subject_key from privacy.subject_marks order by 1")] == ["2", "3"]
            # The correction replayed (found by an outside attack: the copy's shards journaled the
            # replay as a correction of the copy's own, recorded twice at its next heal)
            assert restored.scalar("select total from orders where customer_id = 3 and id = 30") == 333
            restored.connect("shop_owner").execute("select privacy.heal()")
            assert rows(restored.su, "select event from privacy.ledger where event in ('correction', 'synced_correction')") == [
                ("synced_correction",)]
            assert restored.scalar("select count(*) from privacy.corrections") == 0
            # on the copy's workers too
            worker, shard = cdb.worker_of("orders", 3)
            with psycopg.connect(worker.cluster.dsn(copy, user="app"), autocommit=True) as app:
                assert rows(app, f"select * from {shard} where customer_id = 3") == []
        finally:
            restored.close()
        assert json.loads(cli(cdb, "--json", "fleet", "status").stdout)[0]["behind"] == 0
    finally:
        cdb.citus.drop_database(copy)


def test_purposes_on_citus_as_on_one_machine(cdb: CitusDb) -> None:
    """The purposes' restrictive policies, folded into the shards' one permissive policy,
    and mark_binds written into the shards' triggers: a restriction scoped to marketing
    hides a subject's rows from the marketing role only (a general role reads and writes
    them); an unscoped one with a legal-claims exception lets the claims role read, never
    write. Through the coordinator and on a worker naming a shard."""
    cdb.owner.execute("select privacy.add_purpose('marketing', 'newsletters'), privacy.add_purpose('legal-claims', 'claims')")
    for role, purpose in (("mkt_app", "marketing"), ("claims_app", "legal-claims")):
        # Made through the coordinator: Citus creates the role, and grants to it, on every node.
        if not cdb.scalar("select count(*) from pg_roles where rolname = %s", (role,)):
            cdb.su.execute(f"create role {role} login")
        cdb.su.execute(f"grant select, insert, update, delete on all tables in schema public to {role}")
        cdb.owner.execute("select privacy.grant_purpose(%s, %s)", (role, purpose))
    mkt, claims = cdb.connect("mkt_app", autocommit=True), cdb.connect("claims_app", autocommit=True)
    try:
        scoped = cdb.steward.execute("select privacy.place_restriction('customer', '6', 'objection', 'no newsletters', "
                                     "array['marketing']::text[], null::text[])").fetchone()[0]
        cdb.steward.execute("select privacy.place_restriction('customer', '5', 'accuracy', 'disputed', "
                            "null::text[], array['legal-claims']::text[])")
        assert marks(cdb, "orders", 6)[0] >= 4 and marks(cdb, "orders", 5)[0] & 2
        before5 = csnapshot(cdb, CPATHS[1], 5)

        # Scoped to marketing: invisible to marketing, its new rows refused; a general role is not bound.
        for path in CPATHS:
            assert ccount(cdb, path, 6, "mkt_app") == 0 < ccount(cdb, path, 6, "app") == ccount(cdb, path, 6)
        refused(mkt, "insert into orders values (69, 6, 1)")
        assert mkt.execute("update orders set total = 0 where customer_id = 6").rowcount == 0
        assert cdb.app.execute("update orders set total = total + 1 where customer_id = 6").rowcount == 2
        cdb.app.execute("insert into orders values (68, 6, 1)")
        assert ccount(cdb, CPATHS[1], 6) == 3 and ccount(cdb, CPATHS[1], 6, "mkt_app") == 0
        assert min(marks(cdb, "orders", 6)) >= 4  # the new row took the subject's mark

        # Unscoped, legal-claims excepted: claims reads, nobody but the steward writes.
        assert ccount(cdb, CPATHS[1], 5, "app") == 0 == ccount(cdb, CPATHS[1], 5, "mkt_app")
        for path in CPATHS:
            assert ccount(cdb, path, 5, "claims_app") == ccount(cdb, path, 5) > 0
        refused(claims, "update orders set total = 0 where customer_id = 5")
        refused(claims, "delete from orders where customer_id = 5")
        refused(claims, "insert into orders values (59, 5, 1)")
        assert csnapshot(cdb, CPATHS[1], 5) == before5
        assert ccount(cdb, CPATHS[1], 6, "claims_app") == 3  # marketing's restriction is no business of claims

        # On a worker, naming a shard: the same policy and triggers.
        worker, shard = cdb.worker_of("orders", 6)
        wmkt = worker.connect("mkt_app", autocommit=True)
        try:
            wmkt.execute("set citus.enable_manual_changes_to_shards = on")
            assert rows(wmkt, f"select * from {shard} where customer_id = 6") == []
            refused(wmkt, f"insert into {shard} (id, customer_id, total) values (67, 6, 1)")
        finally:
            wmkt.close()

        # Released: marketing sees and writes again.
        cdb.steward.execute("select privacy.release_restriction(%s, 'objection withdrawn', true)", (scoped,))
        assert ccount(cdb, CPATHS[1], 6, "mkt_app") == 3
        assert mkt.execute("update orders set total = 1 where customer_id = 6").rowcount == 3
    finally:
        mkt.close()
        claims.close()


def test_a_new_row_of_a_subject_whose_root_row_is_gone_takes_its_mark(cdb: CitusDb) -> None:
    """A child's INSERT reads its mark from the root row (FOR SHARE, ordering it with
    placement); a general role may delete the root row of a subject restricted for a purpose
    only, and a new row then took mark 0 (found by an outside attack): it takes the
    subject's mark from subject_marks, as on one machine."""
    cdb.owner.execute("select privacy.add_purpose('marketing', 'newsletters')")
    cdb.steward.execute("select privacy.place_restriction('customer', '6', 'objection', 'no newsletters', "
                        "array['marketing']::text[], null::text[])")
    for table in ("order_items", "orders", "activity"):
        cdb.app.execute(f"delete from {table} where customer_id = 6")
    assert cdb.app.execute("delete from customers where id = 6").rowcount == 1
    cdb.app.execute("insert into activity values (6, 'after the root row went')")
    assert marks(cdb, "activity", 6) == [4]


# -- the enforcement matrix (tests/test_matrix.py), the cells that apply, on the cluster ---

class CPath:
    def __init__(self, table: str, rows_of: str, change: str, insert: str | None) -> None:
        self.table, self.rows_of, self.change, self.insert = table, rows_of, change, insert

    def where(self, k: int) -> str:
        return self.rows_of.format(k=k)


CPATHS = [
    CPath("public.customers", "id = {k}", "name = name || '!'", None),
    CPath("public.orders", "customer_id = {k}", "total = total + 1", "insert into public.orders values (9{k}, {k}, 1)"),
    CPath("public.order_items", "customer_id = {k}", "quantity = quantity + 1",
          "insert into public.order_items values (9{k}0, {k}0, {k}, 1)"),
    CPath("public.activity", "customer_id = {k}", "what = what || '!'", "insert into public.activity values ({k}, 'new')"),
]


def ccount(db: Db, path: CPath, k: int, user: str = "postgres") -> int:
    return int(db.scalar(f"select count(*) from {path.table} where {path.where(k)}", user=user))


def csnapshot(db: Db, path: CPath, k: int) -> list[tuple[Any, ...]]:
    return rows(db.su, f"select to_jsonb(t) - 'privacy_mark' from {path.table} t where {path.where(k)} order by 1::text")


def test_matrix_unrestricted_subject_is_fully_usable_by_the_app(cdb: CitusDb) -> None:
    for path in CPATHS:
        assert ccount(cdb, path, 1, "app") == ccount(cdb, path, 1) > 0
        assert cdb.app.execute(f"update {path.table} set {path.change} where {path.where(1)}").rowcount == ccount(cdb, path, 1)
        if path.insert:
            cdb.app.execute(path.insert.format(k=1))
    for path in reversed(CPATHS[1:]):
        assert cdb.app.execute(f"delete from {path.table} where {path.where(1)}").rowcount > 0
        assert ccount(cdb, path, 1) == 0


def test_matrix_hold_refuses_update_and_delete_for_every_role_and_allows_new_rows(cdb: CitusDb) -> None:
    hold(cdb, 3)
    for user in ("app", "steward_user", "shop_owner"):
        conn = cdb.connect(user)
        for path in CPATHS:
            before = csnapshot(cdb, path, 3)
            err = refused(conn, f"update {path.table} set {path.change} where {path.where(3)}")
            assert "UPDATE on" in str(err.diag.message_primary) and "customer/3" in str(err.diag.message_primary)
            refused(conn, f"delete from {path.table} where {path.where(3)}")
            assert csnapshot(cdb, path, 3) == before
            assert ccount(cdb, path, 3, user) == len(before)  # reads stay allowed
    for path in CPATHS:
        if path.insert:
            before = ccount(cdb, path, 3)
            cdb.app.execute(path.insert.format(k=3))
            assert ccount(cdb, path, 3) == before + 1
            refused(cdb.app, f"delete from {path.table} where {path.where(3)}")
            assert ccount(cdb, path, 3) == before + 1


def test_matrix_restricted_rows_invisible_unchangeable_and_closed_to_new_rows(cdb: CitusDb) -> None:
    before = {p.table: csnapshot(cdb, p, 2) for p in CPATHS}
    restrict(cdb, 2)
    for path in CPATHS:
        assert ccount(cdb, path, 2, "app") == 0
        assert ccount(cdb, path, 2, "steward_user") == ccount(cdb, path, 2, "shop_owner") == len(before[path.table]) > 0
        assert ccount(cdb, path, 1, "app") == ccount(cdb, path, 1)  # other subjects untouched
        assert cdb.app.execute(f"update {path.table} set {path.change} where {path.where(2)}").rowcount == 0
        assert cdb.app.execute(f"delete from {path.table} where {path.where(2)}").rowcount == 0
        if path.insert:
            err = refused(cdb.app, path.insert.format(k=2))
            message = str(err.diag.message_primary)
            assert "INSERT on" in message and "processing restriction" in message and "customer/2" not in message
            # the worker's server log has the subject, for the DBA
            assert any(f"privacy: refused INSERT on {path.table}" in w.cluster.log_text() for w in cdb.workers)
            # a steward may add rows for the subject; they stay hidden
            cdb.steward.execute(path.insert.format(k=2))
            assert ccount(cdb, path, 2, "app") == 0
        assert csnapshot(cdb, path, 2)[:len(before[path.table])] == before[path.table] or path.insert
    cdb.app.execute("delete from customers where id = 2")  # invisible: nothing
    assert ccount(cdb, CPATHS[0], 2) == 1


def test_matrix_steward_may_correct_restricted_rows_journaled_and_the_owner_not(cdb: CitusDb) -> None:
    restrict(cdb, 2)
    changed = 0
    for path in CPATHS:
        before = csnapshot(cdb, path, 2)
        refused(cdb.owner, f"update {path.table} set {path.change} where {path.where(2)}")  # (see the test above)
        assert csnapshot(cdb, path, 2) == before
        cur = cdb.steward.execute(f"update {path.table} set {path.change} where {path.where(2)}")
        assert cur.rowcount == len(before) > 0
        changed += cur.rowcount
        assert csnapshot(cdb, path, 2) != before
        assert ccount(cdb, path, 2, "app") == 0  # still restricted after the correction
    assert cdb.steward.execute("delete from order_items where customer_id = 2").rowcount == 2
    cdb.steward.execute("select privacy.heal()")
    assert rows(cdb.su, "select acting_role, operation, count(*) from privacy.corrections group by 1, 2 order by 1, 2") == [
        ("steward_user", "DELETE", 2), ("steward_user", "UPDATE", changed)]
    assert cdb.scalar("select count(*) from privacy.ledger where event = 'correction'") == changed + 2
    assert cdb.scalar("select count(*) from privacy.verify_ledger()") == 0


def test_matrix_hold_and_restriction_together_and_the_predicates(cdb: CitusDb) -> None:
    hold(cdb, 4)
    restrict(cdb, 4)
    hold(cdb, 3)
    restrict(cdb, 2)
    for path in CPATHS:
        assert ccount(cdb, path, 4, "app") == 0
        err = refused(cdb.steward, f"update {path.table} set {path.change} where {path.where(4)}")
        assert "legal hold" in str(err.diag.message_primary)
    assert cdb.app.execute("select privacy.is_held('customer', 3), privacy.is_held('customer', '3'), "
                           "privacy.is_held('customer', 1)").fetchone() == (True, True, False)
    assert cdb.app.execute("select privacy.is_restricted('customer', 2), privacy.is_restricted('customer', 3)").fetchone() == (True, False)
    # Citus runs neither a STABLE function of a column in a multi-shard DELETE nor the
    # predicate's own read of subject_marks from inside a shard query: per row, the
    # predicates are refused (fail closed) ...
    with pytest.raises(psycopg.Error):
        cdb.app.execute("delete from activity where not privacy.is_held('customer', customer_id)")
    with pytest.raises(psycopg.Error):
        cdb.app.execute("select customer_id from activity where privacy.is_held('customer', customer_id)")
    assert cdb.scalar("select count(*) from activity") == 8
    # ... and a retention purge that skips held subjects reads the row's own mark (bit 1: held)
    cur = cdb.app.execute("delete from activity where privacy_mark & 1 = 0")
    assert cur.rowcount == 5  # 1, 5, 6, 7, 8: 2 and 4 are invisible, 3 held
    assert cdb.scalar("select count(*) from activity") == 3


def test_unprotect_removes_the_enforcement_from_every_shard(cdb: CitusDb) -> None:
    h = hold(cdb, 1)
    result = cli(cdb, "unprotect", "public.activity")
    assert result.exit_code == 1 and "under a legal hold" in result.stderr
    cdb.steward.execute("select privacy.release_hold(%s, 'case settled', 'order 1')", (h,))
    result = cli(cdb, "unprotect", "public.activity")
    assert result.exit_code == 0, result.output
    for worker in cdb.workers:
        with psycopg.connect(worker.cluster.dsn(cdb.name), autocommit=True) as su:
            su.execute("set citus.override_table_visibility = off")
            assert su.execute("select count(*) from pg_trigger t join pg_class c on c.oid = t.tgrelid "
                              "where c.relname ~ '^activity' and t.tgname ~ 'privacy'").fetchone() == (0,)
            assert su.execute("select count(*) from pg_policy p join pg_class c on c.oid = p.polrelid "
                              "where c.relname ~ '^activity'").fetchone() == (0,)
            assert su.execute("select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid "
                              "where c.relname ~ '^activity' and a.attname = 'privacy_mark' and not a.attisdropped").fetchone() == (0,)
    cdb.app.execute("delete from activity where customer_id = 1")


def test_uninstall_is_refused_under_a_hold_and_then_removes_everything_from_every_node(cdb: CitusDb) -> None:
    h = hold(cdb, 1)
    assert cli(cdb, "uninstall", "--yes").exit_code == 1
    cdb.steward.execute("select privacy.release_hold(%s, 'case settled', 'order 1')", (h,))
    result = cli(cdb, "uninstall", "--yes")
    assert result.exit_code == 0, result.output
    for node in [cdb, *cdb.workers]:
        with psycopg.connect(node.cluster.dsn(cdb.name), autocommit=True) as su:
            su.execute("set citus.override_table_visibility = off")
            assert su.execute("select count(*) from pg_namespace where nspname = 'privacy'").fetchone() == (0,)
            assert su.execute("select count(*) from pg_trigger where tgname ~ 'privacy'").fetchone() == (0,)
            assert su.execute("select count(*) from pg_policy where polname ~ '^privacy_'").fetchone() == (0,)
            assert su.execute("select count(*) from pg_attribute where attname = 'privacy_mark' and not attisdropped").fetchone() == (0,)
    assert cdb.scalar("select count(*) from orders") == 16


def test_erasure_of_an_unmarked_subject_and_of_a_restricted_one(cdb: CitusDb) -> None:
    result = cli(cdb, "erase", "7", "--reason", "retention ended")
    assert result.exit_code == 0, result.output
    for table in PROTECTED:
        key = "id" if table == "customers" else "customer_id"
        assert cdb.scalar(f"select count(*) from {table} where {key} = 7") == 0
    assert cli(cdb, "erase", "certificate", result.output.split("certificate: pyctl erase certificate ")[1].split()[0]).exit_code == 0
    # A restricted subject (a basis that allows erasure): its rows' deletes are the erasure's,
    # not corrections with their values in the record. The shards wrote them down as a
    # steward's would be; the erasure deletes that in its own transaction.
    restrict(cdb, 3)
    result = cli(cdb, "erase", "3", "--reason", "retention ended")
    assert result.exit_code == 0, result.output
    for table in PROTECTED:
        key = "id" if table == "customers" else "customer_id"
        assert cdb.scalar(f"select count(*) from {table} where {key} = 3") == 0
    assert cdb.scalar("select count(*) from privacy.erasures") == 2
    assert cdb.scalar("select count(*) from privacy.citus_journal_customer") == 0
    cdb.steward.execute("select privacy.heal()")
    assert cdb.scalar("select count(*) from privacy.corrections") == 0
    assert cdb.scalar("select count(*) from privacy.ledger where event = 'correction'") == 0


def test_a_list_of_holds_and_of_restrictions_in_one_call_on_the_cluster(cdb: CitusDb, tmp_path: Path) -> None:
    keys = tmp_path / "custodians.txt"
    keys.write_text("2\n4\n")
    result = cli(cdb, "hold", "place", "--from-file", str(keys), "--case", "2026-CV-9", "--reason", "custodians", user="steward_user")
    assert result.exit_code == 0, result.output
    for key in (2, 4):
        assert set(marks(cdb, "order_items", key)) == {1}
        refused(cdb.app, f"delete from orders where customer_id = {key}")
    assert cdb.scalar("select count(*) from privacy.pending_proofs()", user="steward_user") == 0
    # One unknown key refuses the whole list, naming it; nothing is placed.
    before = cdb.scalar("select count(*) from privacy.processing_restrictions")
    with pytest.raises(psycopg.Error) as info:
        cdb.steward.execute("select * from privacy.place_restrictions('customer', %s, 'accuracy', 'x')", (["1", "999"],))
    assert info.value.sqlstate == "PV002" and "999" in str(info.value)
    assert cdb.scalar("select count(*) from privacy.processing_restrictions") == before
    rows = cdb.steward.execute("select * from privacy.place_restrictions('customer', %s, 'accuracy', 'x')", (["1", "3"],)).fetchall()
    assert len(rows) == 2
    assert cdb.scalar("select count(*) from orders where customer_id in (1, 3)", user="app") == 0
    assert cdb.scalar("select count(*) from orders where customer_id in (1, 3)", user="steward_user") > 0

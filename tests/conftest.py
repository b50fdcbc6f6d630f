"""Real PostgreSQL for every test: one throwaway cluster per session, a template
database with the shop schema and the toolkit installed, and a fresh clone of it
(pytest-postgresql's DatabaseJanitor) for each test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from pyctl import install
from pyctl.cluster import Cluster, start_cluster

HERE = Path(__file__).resolve().parent
SHOP_SQL = (HERE / "shop.sql").read_text(encoding="utf-8")

# What a DBA's migration would run to protect the shop.
PROTECT_SQL = """
select privacy.add_subject_type('customer', 'public.customers', 'id');
select privacy.protect_via('public.orders', 'customer_id');
select privacy.protect_via('public.order_items', 'order_id');
select privacy.protect('public.activity_log', 'customer', 'customer_id');
select privacy.protect_via('"crm data"."Support; Tickets"', 'Customer "Ref"');
select privacy.protect_referenced_by('public.addresses', 'public.customers', 'address_id');
"""

APP_GRANTS = """
grant usage on schema public, "crm data" to app;
grant select, insert, update, delete on all tables in schema public, "crm data" to app;
-- as many applications do: new tables (and partitions) are the app's too
alter default privileges in schema public, "crm data" grant select, insert, update, delete on tables to app;
"""

ROLES = """
create role shop_owner login createrole;
create role app login;
create role steward_user login;
create role outsider login;
create role app2 login;
create role weak login;
create role sneaky login;
"""

_counter = itertools.count()


class Db:
    """A test database and connections to it as each kind of role."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self._conns: list[psycopg.Connection] = []

    def dsn(self, user: str = "shop_owner") -> str:
        return self.cluster.dsn(self.name, user=user)

    def connect(self, user: str = "shop_owner", **kwargs: Any) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn(user), autocommit=kwargs.pop("autocommit", True), **kwargs)
        self._conns.append(conn)
        return conn

    @property
    def owner(self) -> psycopg.Connection:
        """The tables' owner (not a superuser, like a managed platform's credential)."""
        return self._cached("shop_owner")

    @property
    def app(self) -> psycopg.Connection:
        return self._cached("app")

    @property
    def steward(self) -> psycopg.Connection:
        return self._cached("steward_user")

    @property
    def su(self) -> psycopg.Connection:
        return self._cached("postgres")

    def _cached(self, user: str) -> psycopg.Connection:
        attr = f"_conn_{user}"
        conn = getattr(self, attr, None)
        if conn is None or conn.closed:
            conn = self.connect(user)
            setattr(self, attr, conn)
        return conn

    def scalar(self, query: str, params: Any = None, user: str = "postgres") -> Any:
        row = self._cached(user).execute(query, params).fetchone()
        return row[0] if row else None

    def ids(self, table: str, user: str, column: str = "id") -> list[Any]:
        rows = self._cached(user).execute(f"select {column} from {table} order by 1").fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        for conn in self._conns:
            conn.close()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = start_cluster()
    try:
        yield c
    finally:
        c.destroy()


def _janitor(cluster: Cluster, dbname: str, template: str | None = None) -> DatabaseJanitor:
    return DatabaseJanitor(user="postgres", host="127.0.0.1", port=cluster.port, dbname=dbname,
                           template_dbname=template)


def _build_template(cluster: Cluster, name: str, installer: str) -> None:
    _janitor(cluster, name).init()
    with psycopg.connect(cluster.dsn(name), autocommit=True) as su:
        su.execute(f"alter database {name} owner to shop_owner")
        su.execute("alter schema public owner to shop_owner")
    with psycopg.connect(cluster.dsn(name, user="shop_owner"), autocommit=True) as owner:
        owner.execute(SHOP_SQL)
    install.install(cluster.dsn(name, user=installer))
    with psycopg.connect(cluster.dsn(name, user=installer), autocommit=True) as dba:
        dba.execute(PROTECT_SQL)
        dba.execute("grant privacy_steward to steward_user")
    with psycopg.connect(cluster.dsn(name, user="shop_owner"), autocommit=True) as owner:
        owner.execute(APP_GRANTS)


@pytest.fixture(scope="session")
def templates(cluster: Cluster) -> dict[str, str]:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
        su.execute(ROLES)
    # Installed by the tables' owner, a non-superuser with CREATEROLE (managed PostgreSQL).
    _build_template(cluster, "tmpl_owner", "shop_owner")
    # Installed by a superuser: also gets the event trigger for later partitions.
    _build_template(cluster, "tmpl_super", "postgres")
    return {"owner": "tmpl_owner", "super": "tmpl_super"}


def _clone(cluster: Cluster, template: str) -> Iterator[Db]:
    name = f"t{next(_counter)}"
    janitor = _janitor(cluster, name, template)
    janitor.init()
    with psycopg.connect(cluster.dsn(name), autocommit=True) as su:
        su.execute(f"alter database {name} owner to shop_owner")
    db = Db(cluster, name)
    try:
        yield db
    finally:
        db.close()
        janitor.drop()


@pytest.fixture
def db(cluster: Cluster, templates: dict[str, str]) -> Iterator[Db]:
    """A database with the shop protected, installed by its (non-superuser) owner."""
    yield from _clone(cluster, templates["owner"])


@pytest.fixture
def sudb(cluster: Cluster, templates: dict[str, str]) -> Iterator[Db]:
    """The same, installed by a superuser (with the partition event trigger)."""
    yield from _clone(cluster, templates["super"])


@pytest.fixture
def empty_db(cluster: Cluster, templates: dict[str, str]) -> Iterator[Db]:
    """An empty database owned by shop_owner, without the toolkit."""
    name = f"e{next(_counter)}"
    janitor = _janitor(cluster, name)
    janitor.init()
    with psycopg.connect(cluster.dsn(name), autocommit=True) as su:
        su.execute(f"alter database {name} owner to shop_owner")
        su.execute("alter schema public owner to shop_owner")
    db = Db(cluster, name)
    try:
        yield db
    finally:
        db.close()
        janitor.drop()


def hold(db: Db, key: int | str, case: str = "2026-CV-118") -> str:
    """Place a legal hold and compute its proof next, as pyctl hold place does."""
    hold_id = str(db.scalar("select privacy.place_hold('customer', %s, %s, 'preserve')", (str(key), case),
                            user="steward_user"))
    db.scalar("select privacy.prove_hold(%s)", (hold_id,), user="steward_user")
    return hold_id


def restrict(db: Db, key: int | str, basis: str = "accuracy") -> str:
    return str(db.scalar("select privacy.place_restriction('customer', %s, %s, 'contested')", (str(key), basis),
                         user="steward_user"))


def refused(conn: psycopg.Connection, statement: str, params: Any = None) -> psycopg.Error:
    """Run a statement that must be refused by the toolkit; return the error."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params)
    err = info.value
    assert err.sqlstate == "PV001", f"expected a privacy refusal, got {err.sqlstate}: {err}"
    assert str(err.diag.message_primary).startswith("privacy: ")
    return err

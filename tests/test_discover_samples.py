"""The whole flow a new user tries, on public sample schemas we did not write (excerpts
vendored in tests/samples/): subject add, discover, discover --apply, coverage, doctor,
then a restriction and a hold, installed by the tables' owner (a non-superuser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from conftest import Db, hold, restrict
from pyctl import install
from pyctl.cli import main

SAMPLES = Path(__file__).resolve().parent / "samples"


def cli(db: Db, *args: str, user: str = "shop_owner") -> Any:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


def load(db: Db, sample: str, root: str, key: str) -> Db:
    db.owner.execute((SAMPLES / sample).read_text(encoding="utf-8"))
    db.owner.execute("grant select, insert, update, delete on all tables in schema public to app")
    install.install(db.dsn("shop_owner"))
    assert cli(db, "subject", "add", "customer", "--table", root, "--key", key).exit_code == 0
    db.owner.execute("grant privacy_steward to steward_user")
    return db


def plan(db: Db) -> list[tuple[str, str, str, str]]:
    rows = db.owner.execute("select kind, table_name, array_to_string(columns, ','), status "
                            "from privacy.discover('customer') order by step").fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def doctor_categories(db: Db) -> set[str]:
    return {r[0] for r in db.su.execute("select category from privacy.doctor()").fetchall()}


@pytest.fixture
def pagila(empty_db: Db) -> Db:
    return load(empty_db, "pagila.sql", "public.customer", "customer_id")


@pytest.fixture
def chinook(empty_db: Db) -> Db:
    return load(empty_db, "chinook.sql", 'public."Customer"', "CustomerId")


def test_pagila(pagila: Db) -> None:
    # Payments carry their foreign keys on each monthly partition; the stores are shared by
    # every customer of the shop; each customer's address is their own (the stores' and
    # staff's addresses are other rows of the same table).
    assert plan(pagila) == [
        ("root", "public.customer", "customer_id", "protected"),
        ("via", "public.payment", "customer_id", "to protect"),
        ("via", "public.rental", "customer_id", "to protect"),
        ("referenced_by", "public.address", "address_id", "to protect"),
        ("shared", "public.store", "store_id", "shared"),
    ]
    store = pagila.scalar("select sharing from privacy.discover('customer') where table_name = 'public.store'", user="shop_owner")
    assert store["busiest"] == 10 and store["reason"] == "10 subjects point at the busiest row of public.store"
    address = pagila.scalar("select sharing from privacy.discover('customer') where table_name = 'public.address'",
                            user="shop_owner")
    assert address["busiest"] == 1 and address["other_rows"] == 0
    assert address["other_tables"] == "public.staff(address_id), public.store(address_id)"
    assert cli(pagila, "coverage").exit_code == 1
    assert "unprotected table" in doctor_categories(pagila)

    applied = cli(pagila, "discover", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "protected 3 table(s): public.payment, public.rental, public.address" in applied.stderr
    covered = cli(pagila, "coverage")
    assert covered.exit_code == 0, covered.output
    assert "public.store" in covered.stdout and "shared" in covered.stdout
    found = doctor_categories(pagila)
    assert not found & {"unprotected table", "unconfirmed table", "shared table protected", "enforcement missing"}, found

    # One restricted customer: their rentals, payments (in every partition) and address are
    # hidden from the application; both stores, the staff and the other customers are not.
    restrict(pagila, 1)
    app = pagila.app
    assert app.execute("select count(*) from public.rental where customer_id = 1").fetchone() == (0,)
    assert app.execute("select count(*) from public.payment where customer_id = 1").fetchone() == (0,)
    assert app.execute("select count(*) from public.payment_p2022_01 where customer_id = 1").fetchone() == (0,)
    assert app.execute("select count(*) from public.address where address_id = 5").fetchone() == (0,)
    assert app.execute("select count(*) from public.store").fetchone() == (2,)
    assert app.execute("select count(*) from public.address").fetchone() == (23,)
    # A hold freezes a customer's payments, not the store the whole shop uses.
    hold(pagila, 2)
    with pytest.raises(psycopg.Error, match="privacy: DELETE"):
        pagila.owner.execute("delete from public.payment where customer_id = 2")
    app.execute("update public.store set last_update = now() where store_id = 1")


def test_chinook(chinook: Db) -> None:
    # A customer's support representative is an employee, shared by many customers: not
    # the customer's data. Invoices and their lines are.
    assert plan(chinook) == [
        ("root", 'public."Customer"', "CustomerId", "protected"),
        ("via", 'public."Invoice"', "CustomerId", "to protect"),
        ("via", 'public."InvoiceLine"', "InvoiceId", "to protect"),
        ("shared", 'public."Employee"', "EmployeeId", "shared"),
    ]
    rep = chinook.scalar("""select sharing from privacy.discover('customer') where table_name = 'public."Employee"'""",
                         user="shop_owner")
    assert rep["busiest"] == 3 and rep["shared"] is True
    applied = cli(chinook, "discover", "--apply")
    assert applied.exit_code == 0, applied.output
    assert 'protected 2 table(s): public."Invoice", public."InvoiceLine"' in applied.stderr
    assert cli(chinook, "coverage").exit_code == 0
    refused = cli(chinook, "protect", 'public."Employee"', "--referenced-by", 'public."Customer".SupportRepId')
    assert refused.exit_code == 1 and "--shared-ok" in refused.stderr
    restrict(chinook, 2)
    app = chinook.app
    assert app.execute('select count(*) from "InvoiceLine"').fetchone() == (6,)  # invoice 1 (2 lines), 4 (1 line) hidden
    assert app.execute('select count(*) from "Employee"').fetchone() == (5,)
    assert app.execute('select count(*) from "Customer"').fetchone() == (6,)

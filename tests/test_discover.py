"""discover, coverage and doctor on a schema they have never seen."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from conftest import Db
from pyctl import install
from pyctl.cli import main

SCHEMA = """
create schema sales;
create schema support;
create table public.addresses (id int primary key, street text);
create table public.customers (id int primary key, name text, address_id int references public.addresses);
create index on public.customers (address_id);
create table public.staff (id int primary key, address_id int references public.addresses);
create table sales.orders (id int, region text, customer_id int references public.customers, primary key (id, region))
    partition by list (region);
create table sales.orders_eu partition of sales.orders for values in ('eu');
create table sales.orders_us partition of sales.orders for values in ('us');
create table sales.order_lines (order_id int, region text, line int, foreign key (order_id, region) references sales.orders);
create table support.tickets (id int primary key, customer_id int references public.customers);
create table support.ticket_notes (id int primary key, ticket_id int references support.tickets);
alter table support.tickets add column last_note_id int references support.ticket_notes (id);
create table public.newsletter (email text, customer_id int);
create table public.products (id int primary key);
create table public.product_tags (product_id int references public.products);
create table public.audit (customer_id int references public.customers, what text);
create table public.audit_2020 () inherits (public.audit);
create table public.employees (id int primary key, manager_id int references public.employees);
insert into public.addresses values (1, 'a'), (2, 'b');
insert into public.customers values (1, 'Ann', 1), (2, 'Bo', 2);
insert into sales.orders values (1, 'eu', 1), (2, 'us', 2);
insert into support.tickets values (1, 1, null);
"""


def cli(db: Db, *args: str, user: str = "postgres") -> object:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


@pytest.fixture
def unseen(empty_db: Db) -> Db:
    empty_db.owner.execute(SCHEMA)
    install.install(empty_db.dsn("postgres"))
    empty_db.su.execute("select privacy.add_subject_type('customer', 'public.customers', 'id')")
    return empty_db


def plan(db: Db) -> list[tuple[str, str, str]]:
    rows = db.su.execute("select kind, table_name, array_to_string(columns, ',') from privacy.discover('customer') order by step")
    return [tuple(r) for r in rows.fetchall()]  # type: ignore[misc]


def test_discover_finds_exactly_what_it_should(unseen: Db) -> None:
    found = plan(unseen)
    assert found == [
        ("root", "public.customers", "id"),
        ("via", "public.audit", "customer_id"),
        ("via", "sales.orders", "customer_id"),
        ("via", "support.tickets", "customer_id"),
        ("via", "sales.order_lines", "order_id,region"),
        ("via", "support.ticket_notes", "ticket_id"),
        ("cycle", "support.tickets", "last_note_id"),
        ("referenced_by", "public.addresses", "id"),
        ("possible", "public.newsletter", "customer_id"),
    ]
    note = unseen.scalar("select note from privacy.discover('customer') where kind = 'referenced_by'")
    assert "shared: also pointed at by public.staff(address_id)" in note
    cycle = unseen.scalar("select note from privacy.discover('customer') where kind = 'cycle'")
    assert "support.tickets -> support.ticket_notes -> support.tickets" in cycle


def test_apply_then_coverage_passes(unseen: Db) -> None:
    assert cli(unseen, "coverage").exit_code == 1  # type: ignore[attr-defined]
    result = cli(unseen, "discover", "--subject", "customer", "--apply")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "protected 6 table(s)" in result.stderr  # type: ignore[attr-defined]
    # (issue 21) the unconfirmed newsletter.customer_id is a gap until a person decides about it
    result = cli(unseen, "coverage")
    assert result.exit_code == 1 and "public.newsletter" in result.stdout  # type: ignore[attr-defined]
    assert cli(unseen, "discover", "--dismiss", "public.newsletter", "--reason", "holds e-mail sign-ups, no customer ids"
               ).exit_code == 0  # type: ignore[attr-defined]
    result = cli(unseen, "coverage")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "every reachable table is protected" in result.stdout  # type: ignore[attr-defined]
    states = {r[0]: r[1] for r in unseen.su.execute("select relation, state from privacy.enforcement_status()").fetchall()}
    assert states["sales.orders_eu"] == states["public.audit_2020"] == "installed"
    # the plan is enforced: a restriction now reaches two hops down in another schema
    unseen.su.execute("insert into support.ticket_notes values (7, 1)")
    unseen.su.execute("select privacy.place_restriction('customer', '1', 'objection', 'objects')")
    assert unseen.scalar("select privacy_mark from support.ticket_notes where id = 7") == 2
    assert unseen.scalar("select privacy_mark from sales.order_lines where order_id = 1") is None  # no lines; nothing to mark
    assert unseen.scalar("select privacy_mark from public.addresses where id = 1") == 2


def test_apply_is_all_or_nothing(unseen: Db) -> None:
    unseen.su.execute("alter table support.ticket_notes owner to outsider")  # the installer may still protect it (superuser)
    unseen.su.execute("grant create on database " + unseen.name + " to weak")
    before = unseen.scalar("select count(*) from privacy.protected_tables")
    result = CliRunner().invoke(main, ["--dsn", unseen.dsn("weak"), "discover", "--subject", "customer", "--apply"])
    assert result.exit_code == 1
    assert unseen.scalar("select count(*) from privacy.protected_tables") == before


def test_emit_migration_writes_a_reviewable_yoyo_migration(unseen: Db, tmp_path: Path) -> None:
    result = cli(unseen, "discover", "--subject", "customer", "--emit-migration", str(tmp_path))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    [migration] = list(tmp_path.glob("*-protect-customer.sql"))
    text = migration.read_text()
    assert "select privacy.protect_via('sales.order_lines', 'order_id');" in text
    assert "select privacy.protect_referenced_by('public.addresses', 'public.customers', 'address_id');" in text
    assert "-- select privacy.protect('public.newsletter', 'customer', 'customer_id');" in text
    # applying it is the same as --apply
    with psycopg.connect(unseen.dsn("postgres"), autocommit=True) as conn:
        conn.execute(text)
    assert cli(unseen, "coverage").exit_code == 1  # type: ignore[attr-defined]  # newsletter: unconfirmed (issue 21)
    unseen.su.execute("select privacy.dismiss('customer', 'public.newsletter', 'e-mail sign-ups only')")
    assert cli(unseen, "coverage").exit_code == 0  # type: ignore[attr-defined]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_emit_migration_to_an_unwritable_directory(unseen: Db, tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    result = cli(unseen, "discover", "--subject", "customer", "--emit-migration", str(tmp_path))
    assert result.exit_code == 1 and "cannot write" in result.stderr  # type: ignore[attr-defined]


def test_emit_migration_to_a_missing_directory_and_unknown_subject(unseen: Db, tmp_path: Path) -> None:
    result = cli(unseen, "discover", "--subject", "customer", "--emit-migration", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "is not a directory" in result.stderr  # type: ignore[attr-defined]
    result = cli(unseen, "discover", "--subject", "martian")
    assert result.exit_code == 1 and "unknown subject type" in result.stderr  # type: ignore[attr-defined]
    assert unseen.scalar("select count(*) from privacy.protected_tables") == 1


# -- doctor ---------------------------------------------------------------------------------------


def findings(db: Db) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in db.su.execute("select category, object from privacy.doctor()").fetchall()}


@pytest.fixture
def protected(unseen: Db) -> Db:
    assert cli(unseen, "discover", "--subject", "customer", "--apply").exit_code == 0  # type: ignore[attr-defined]
    unseen.su.execute("grant usage on schema sales, support to app2; grant select on all tables in schema public, sales, support to app2")
    unseen.su.execute("create index on public.audit (customer_id); create index on sales.orders (customer_id); "
                      "create index on sales.order_lines (order_id, region); create index on support.tickets (customer_id); "
                      "create index on support.ticket_notes (ticket_id)")
    return unseen


CAUSES_AND_FIXES = [
    ("definer view", "public.customer_names",
     "create view public.customer_names as select id, name from public.customers; grant select on public.customer_names to app2",
     None),
    ("materialized view", "public.order_counts",
     "create materialized view public.order_counts as select customer_id, count(*) from sales.orders group by 1",
     "drop materialized view public.order_counts"),
    ("definer function", "lookup(integer)",
     "create function public.lookup(int) returns text security definer language sql as 'select name from public.customers where id = $1'",
     "alter function public.lookup(int) security invoker"),
    ("rule", "public.products.log_product_delete",
     "create rule log_product_delete as on delete to public.products do also insert into public.audit values (null, 'x')",
     "drop rule log_product_delete on public.products"),
    ("publication", "everything_out", "create publication everything_out for table public.customers",
     "drop publication everything_out"),
    # (Where a superuser installed the toolkit, its event trigger re-enables a trigger switched off at once:
    # the superuser switches that off first.)
    ("enforcement disabled", "support.tickets", "alter event trigger privacy_protect_new_partitions disable; "
     "alter table support.tickets disable trigger \"Privacy_check_delete\"", None),
    ("ddl guard disabled", "privacy_protect_new_partitions", "alter event trigger privacy_protect_new_partitions disable",
     "alter event trigger privacy_protect_new_partitions enable"),
    ("enforcement outdated", "public.customers", "alter policy privacy_hide_restricted on public.customers using (true)", None),
    ("widening policy", "public.customers",
     "create policy tenant_only on public.customers as permissive for select to public using (id < 100)", None),
    ("parameter grant", "app2", "grant set on parameter session_replication_role to app2",
     "revoke set on parameter session_replication_role from app2"),
    ("privileged login", "sneaky", "alter role sneaky bypassrls", "alter role sneaky nobypassrls"),
    ("unindexed path", "public.newsletter", "select privacy.protect('public.newsletter', 'customer', 'customer_id')",
     "create index on public.newsletter (customer_id)"),
    # (Found by an outside attack: such a trigger could move a new row to another subject after it was marked.)
    ("trigger after the mark", "audit.zzz_retarget",
     "create function public.retarget() returns trigger language plpgsql as 'begin return new; end'; "
     "create trigger zzz_retarget before insert on public.audit for each row execute function public.retarget()",
     "alter trigger zzz_retarget on public.audit rename to retarget"),
]


@pytest.mark.parametrize("category,obj,cause,fix", CAUSES_AND_FIXES, ids=[c[0] for c in CAUSES_AND_FIXES])
def test_each_doctor_finding_is_raised_by_its_cause_and_cleared_by_its_fix(
        protected: Db, category: str, obj: str, cause: str, fix: str | None) -> None:
    baseline = findings(protected)
    assert not any(c == category and o.endswith(obj) for c, o in baseline), baseline
    protected.su.execute(cause)
    raised = findings(protected) - baseline
    assert any(c == category and o.endswith(obj) for c, o in raised), raised
    if fix is None:  # a safe fix: doctor --fix applies it
        result = cli(protected, "doctor", "--fix")
        assert "applied" in result.stderr  # type: ignore[attr-defined]
    else:
        protected.su.execute(fix)
    assert not any(c == category and o.endswith(obj) for c, o in findings(protected) - baseline)
    if category == "enforcement outdated":
        assert protected.scalar("select state from privacy.enforcement_status() where relation = 'public.customers'") == "installed"


def test_doctor_exit_codes_and_json(protected: Db) -> None:
    result = cli(protected, "--json", "doctor")
    rows = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert {r["severity"] for r in rows} == {"warning"}  # the owner and steward logins, nothing broken
    assert result.exit_code == 0  # type: ignore[attr-defined]
    assert cli(protected, "doctor", "--strict").exit_code == 1  # type: ignore[attr-defined]
    protected.su.execute("create view public.v as select * from public.customers; grant select on public.v to app2")
    assert cli(protected, "doctor").exit_code == 1  # type: ignore[attr-defined]


def test_known_rls_cves_by_version(protected: Db) -> None:
    assert protected.su.execute("select cve from privacy.rls_cves() where major = 15 and 14 < fixed_in").fetchall() == []
    assert protected.su.execute("select fixed_in from privacy.rls_cves() where cve = 'CVE-2024-10976' and major = 15").fetchone() == (10,)
    assert not any(c == "server version" for c, _ in findings(protected))  # this server is 15.18

"""discover, --apply, coverage and doctor on the shapes real schemas have (issue 21):
foreign keys declared on each partition only (also two levels down) or on each
inheritance child only, on some partitions only, a lookup table every subject shares,
a true one-to-one reference, a reference with no data to measure, composite keys, and a
column named like the key with no foreign key. Installed by the tables' owner, a
non-superuser, as on a managed platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from conftest import Db, restrict
from pyctl import install
from pyctl.cli import main

SCHEMA = """
create table public.store (id int primary key, name text not null);
create table public.address (id int primary key, street text not null);
create table public.country (id int primary key, name text not null);
create table public.profile (id int primary key, bio text);
create table public.customer (
    id int primary key, name text not null,
    store_id int not null references public.store, address_id int references public.address,
    country_id int references public.country, profile_id int unique references public.profile);
create index on public.customer (store_id);
create index on public.customer (address_id);
create table public.staff (id int primary key, store_id int references public.store, address_id int references public.address);
create table public.inventory (id int primary key, store_id int not null references public.store);
create table public.supplier (id int primary key, country_id int references public.country);
create table public.moderator (id int primary key, profile_id int references public.profile);

-- payments by month, the foreign key to customer on each partition (as pg_dump of many schemas has it)
create table public.payment (id int not null, customer_id int not null, amount numeric not null, paid_on date not null,
                             primary key (id, paid_on)) partition by range (paid_on);
create table public.payment_2026_01 partition of public.payment for values from ('2026-01-01') to ('2026-02-01');
create table public.payment_2026_02 partition of public.payment for values from ('2026-02-01') to ('2026-03-01');
alter table public.payment_2026_01 add constraint payment_2026_01_customer_fk foreign key (customer_id) references public.customer;
alter table public.payment_2026_02 add constraint payment_2026_02_customer_fk foreign key (customer_id) references public.customer;
-- a composite key to the partitioned table, declared on the parent
create table public.refund (id int primary key, payment_id int not null, paid_on date not null,
                            foreign key (payment_id, paid_on) references public.payment (id, paid_on));
-- two levels of partitions, the foreign keys on the leaves only
create table public.visit (customer_id int not null, at date not null) partition by range (at);
create table public.visit_2026 partition of public.visit for values from ('2026-01-01') to ('2027-01-01') partition by range (at);
create table public.visit_2026_h1 partition of public.visit_2026 for values from ('2026-01-01') to ('2026-07-01');
create table public.visit_2026_h2 partition of public.visit_2026 for values from ('2026-07-01') to ('2027-01-01');
alter table public.visit_2026_h1 add foreign key (customer_id) references public.customer;
alter table public.visit_2026_h2 add foreign key (customer_id) references public.customer;
-- inheritance children, each with its own foreign key (children inherit none)
create table public.audit (customer_id int, what text);
create table public.audit_2025 () inherits (public.audit);
create table public.audit_2026 () inherits (public.audit);
alter table public.audit_2025 add foreign key (customer_id) references public.customer;
alter table public.audit_2026 add foreign key (customer_id) references public.customer;
-- a foreign key on one partition of two: unconfirmed
create table public.booking (customer_ref int not null, booked date not null) partition by range (booked);
create table public.booking_old partition of public.booking for values from ('2000-01-01') to ('2026-01-01');
create table public.booking_new partition of public.booking for values from ('2026-01-01') to ('2100-01-01');
alter table public.booking_new add constraint booking_new_customer_fk foreign key (customer_ref) references public.customer;
-- named like the key, no foreign key
create table public.newsletter (customer_id int, email text);

insert into public.store values (1, 'North'), (2, 'South');
insert into public.address values (1, '1 Ada Lane'), (2, '2 Ben Road'), (3, '3 Cy Street'), (4, '4 Dee Court'), (5, 'staff flat');
insert into public.country values (1, 'Utopia');
insert into public.profile values (1, 'Ada''s bio');
insert into public.customer values (1, 'Ada', 1, 1, null, 1), (2, 'Ben', 1, 2, null, null),
                                   (3, 'Cy', 2, 3, null, null), (4, 'Dee', 2, 4, null, null);
insert into public.staff values (1, 1, 5);
insert into public.inventory values (1, 1), (2, 2);
insert into public.payment values (1, 1, 9.5, '2026-01-03'), (2, 1, 3, '2026-02-03'), (3, 2, 4, '2026-02-04');
insert into public.refund values (1, 2, '2026-02-03');
insert into public.visit values (1, '2026-03-01'), (1, '2026-09-01'), (3, '2026-09-02');
insert into public.audit_2026 values (1, 'login');
insert into public.booking values (1, '2020-01-01'), (1, '2026-05-01');
grant select, insert, update, delete on all tables in schema public to app;
"""


def cli(db: Db, *args: str, user: str = "shop_owner") -> Any:
    return CliRunner().invoke(main, ["--dsn", db.dsn(user), *args], catch_exceptions=False)


@pytest.fixture
def shapes(empty_db: Db) -> Db:
    empty_db.owner.execute(SCHEMA)
    install.install(empty_db.dsn("shop_owner"))
    empty_db.owner.execute("select privacy.add_subject_type('customer', 'public.customer', 'id')")
    empty_db.owner.execute("grant privacy_steward to steward_user")
    return empty_db


def plan(db: Db) -> list[tuple[str, str, str, str]]:
    rows = db.owner.execute("select kind, table_name, array_to_string(columns, ','), status "
                            "from privacy.discover('customer') order by step").fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def note(db: Db, table: str) -> str:
    return str(db.scalar("select note from privacy.discover('customer') where table_name = %s", (table,), user="shop_owner"))


def categories(db: Db) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for category, obj, severity in db.su.execute("select category, object, severity from privacy.doctor()").fetchall():
        found.setdefault(category, set()).add(f"{obj}:{severity}")
    return found


def test_discover_reads_real_shapes(shapes: Db) -> None:
    assert plan(shapes) == [
        ("root", "public.customer", "id", "protected"),
        ("via", "public.audit", "customer_id", "to protect"),
        ("via", "public.payment", "customer_id", "to protect"),
        ("via", "public.visit", "customer_id", "to protect"),
        ("via", "public.refund", "payment_id,paid_on", "to protect"),
        ("referenced_by", "public.address", "id", "to protect"),
        ("shared", "public.country", "id", "shared"),
        ("referenced_by", "public.profile", "id", "to protect"),
        ("shared", "public.store", "id", "shared"),
        ("possible", "public.booking", "customer_ref", "unconfirmed"),
        ("possible", "public.newsletter", "customer_id", "unconfirmed"),
    ]
    assert "declared on each of its 2 partitions" in note(shapes, "public.payment")
    assert "declared on each of its 1 partitions" in note(shapes, "public.visit")  # folded twice: h1, h2 -> 2026 -> visit
    assert "declared on each of its 2 inheritance children" in note(shapes, "public.audit")
    assert "on only 1 of its 2 partitions" in note(shapes, "public.booking")
    # the sharing, measured
    store = shapes.scalar("select sharing from privacy.discover('customer') where table_name = 'public.store'", user="shop_owner")
    assert store["shared"] is True and store["busiest"] == 2 and store["referencing_rows"] == 4
    assert store["reason"] == "2 subjects point at the busiest row of public.store"
    assert "public.inventory(store_id)" in store["other_tables"] and "public.staff(store_id)" in store["other_tables"]
    address = shapes.scalar("select sharing from privacy.discover('customer') where table_name = 'public.address'", user="shop_owner")
    assert address["shared"] is False and address["busiest"] == 1 and address["other_rows"] == 0
    assert "no two subjects share a row of public.address" in note(shapes, "public.address")
    assert "one-to-one: a unique index on public.customer(profile_id)" in note(shapes, "public.profile")
    country = note(shapes, "public.country")
    assert country.startswith("shared, not protected: no data to measure") and "public.supplier(country_id)" in country


def test_apply_protects_partitions_never_shared_rows_and_coverage_tells_the_rest(shapes: Db) -> None:
    before = cli(shapes, "coverage")
    assert before.exit_code == 1 and "public.payment" in before.stdout
    assert "public.payment:error" in categories(shapes)["unprotected table"]
    result = cli(shapes, "discover", "--subject", "customer", "--apply")
    assert result.exit_code == 0, result.output
    assert "shared, not protected: public.store (2 subjects point at the busiest row of public.store; busiest row: 2 subject(s))" \
        in result.stderr
    assert "protected 6 table(s): public.audit, public.payment, public.visit, public.refund, public.address, public.profile" \
        in result.stderr
    protected = {r[0] for r in shapes.su.execute("select relation from privacy.enforcement_status()").fetchall()}
    assert {"public.payment_2026_01", "public.visit_2026_h2", "public.audit_2025"} <= protected
    assert not {"public.store", "public.country", "public.booking", "public.newsletter"} & protected
    # Still undecided: the partly declared booking and the newsletter. Doctor warns, coverage fails.
    after = cli(shapes, "coverage")
    assert after.exit_code == 1 and "public.booking" in after.stdout and "public.newsletter" in after.stdout
    assert "unprotected table" not in categories(shapes)
    assert categories(shapes)["unconfirmed table"] == {"public.booking:warning", "public.newsletter:warning"}
    # A person decides: the booking holds customer refs (protect it), the newsletter does not (dismiss it).
    assert cli(shapes, "protect", "public.booking", "--column", "customer_ref").exit_code == 0
    dismissed = cli(shapes, "discover", "--dismiss", "public.newsletter", "--reason", "sign-ups; customer_id is always null")
    assert dismissed.exit_code == 0, dismissed.output
    final = cli(shapes, "coverage")
    assert final.exit_code == 0, final.output
    assert "every reachable table is protected (1 dismissed)" in final.stdout
    listed = json.loads(cli(shapes, "--json", "coverage").stdout)
    assert {(r["table"], r["status"], r["dismissed_by"]) for r in listed} == {
        ("public.newsletter", "dismissed", "shop_owner"), ("public.store", "shared", None), ("public.country", "shared", None)}
    assert "unconfirmed table" not in categories(shapes)

    # Enforced: one restricted customer disappears from payments (parent and partition), visits
    # two levels down, the audit child; the application still sees both stores.
    restrict(shapes, 1)
    app = shapes.app
    assert app.execute("select count(*) from public.payment where customer_id = 1").fetchone() == (0,)
    assert app.execute("select count(*) from public.payment_2026_02").fetchone() == (1,)
    assert app.execute("select count(*) from public.visit_2026_h2").fetchone() == (1,)
    assert app.execute("select count(*) from public.audit_2026").fetchone() == (0,)
    assert app.execute("select count(*) from public.refund").fetchone() == (0,)
    assert app.execute("select count(*) from public.store").fetchone() == (2,)
    assert app.execute("select count(*) from public.address").fetchone() == (4,)
    # ... and a hold freezes no store for anyone
    shapes.steward.execute("select privacy.place_hold('customer', '2', 'CASE-1', 'preserve')")
    app.execute("update public.store set name = 'North (new)' where id = 1")
    with pytest.raises(psycopg.Error, match="privacy: UPDATE"):
        shapes.owner.execute("update public.payment set amount = 0 where customer_id = 2")


def test_protect_referenced_by_a_shared_table_asks_for_shared_ok(shapes: Db) -> None:
    refused = cli(shapes, "protect", "public.store", "--referenced-by", "public.customer.store_id")
    assert refused.exit_code == 1
    assert "public.store is shared" in refused.stderr and "--shared-ok" in refused.stderr
    assert "2 subjects point at the busiest row" in refused.stderr
    with pytest.raises(psycopg.Error, match="is shared"):
        shapes.owner.execute("select privacy.protect_referenced_by('public.store', 'public.customer', 'store_id')")
    assert cli(shapes, "protect", "public.store", "--shared-ok", "--column", "id").exit_code == 2
    ok = cli(shapes, "protect", "public.store", "--referenced-by", "public.customer.store_id", "--shared-ok")
    assert ok.exit_code == 0, ok.output
    assert shapes.scalar("select shared_ok_by from privacy.protected_tables where table_name = 'store'") == "shop_owner"
    assert "shared table protected" not in categories(shapes)  # a person said so


def test_doctor_warns_when_a_protected_referenced_table_becomes_shared(shapes: Db) -> None:
    shapes.owner.execute("insert into public.store values (3, 'East'), (4, 'West'); "
                         "update public.customer set store_id = id")
    assert ("referenced_by", "public.store", "id", "to protect") in plan(shapes)  # every customer its own store, for now
    assert cli(shapes, "protect", "public.store", "--referenced-by", "public.customer.store_id").exit_code == 0
    assert "shared table protected" not in categories(shapes)
    shapes.owner.execute("update public.customer set store_id = 1 where id = 2")
    assert ("shared", "public.store", "id", "protected") in plan(shapes)
    assert categories(shapes)["shared table protected"] == {"public.store:warning"}
    shown = cli(shapes, "discover")
    assert "warning: public.store is protected but shared" in shown.stderr


def test_a_foreign_key_on_every_partition_at_last_confirms_the_table(shapes: Db) -> None:
    shapes.owner.execute("alter table public.booking_old add foreign key (customer_ref) references public.customer")
    assert ("via", "public.booking", "customer_ref", "to protect") in plan(shapes)
    # protect_via takes the folded key as the table's own
    shapes.owner.execute("select privacy.protect_via('public.booking', 'customer_ref')")
    assert ("via", "public.booking", "customer_ref", "protected") in plan(shapes)


def test_dismissals_are_decisions_with_a_name_and_a_reason(shapes: Db) -> None:
    def dismiss(*args: str, user: str = "shop_owner") -> Any:
        return cli(shapes, "discover", *args, user=user)

    assert dismiss("--dismiss", "public.newsletter").exit_code == 2  # no reason
    blank = dismiss("--dismiss", "public.newsletter", "--reason", " ")
    assert blank.exit_code == 2
    with pytest.raises(psycopg.Error, match="needs a reason"):
        shapes.owner.execute("select privacy.dismiss('customer', 'public.newsletter', ' ')")
    assert "nothing to dismiss" in dismiss("--dismiss", "public.store", "--reason", "shared").stderr
    assert "nothing to dismiss" in dismiss("--dismiss", "public.inventory", "--reason", "x").stderr
    assert "nothing to dismiss" in dismiss("--dismiss", "public.customer", "--reason", "the root").stderr
    assert cli(shapes, "protect", "public.booking", "--column", "customer_ref").exit_code == 0
    assert "is protected" in dismiss("--dismiss", "public.booking", "--reason", "x").stderr
    assert "does not exist" in dismiss("--dismiss", "public.x; drop table public.customer", "--reason", "x").stderr
    # only the toolkit's owner decides what is protected: not the application, not a steward
    for user in ("app", "steward_user"):
        denied = dismiss("--dismiss", "public.newsletter", "--reason", "x", user=user)
        assert denied.exit_code == 1 and "permission denied" in denied.stderr, denied.output
    assert dismiss("--dismiss", "public.payment", "--reason", "test data only").exit_code == 0
    # a confirmed table dismissed: --apply leaves it and the table whose path runs through it
    applied = cli(shapes, "discover", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "public.payment" not in applied.stderr.split("protected", 1)[1] and "public.refund" not in applied.stderr
    states = {r[1]: r[3] for r in plan(shapes)}
    assert states["public.payment"] == "dismissed" and states["public.refund"] == "to protect"
    assert "dismissed by shop_owner: test data only" in note(shapes, "public.payment")
    ledger = shapes.su.execute("select event, session_role, payload->>'table', payload->>'reason' from privacy.ledger "
                               "where event like 'coverage%' order by seq").fetchall()
    assert ledger == [("coverage_dismissed", "shop_owner", "public.payment", "test data only")]
    assert dismiss("--undismiss", "public.payment").exit_code == 0
    assert "is not dismissed" in dismiss("--undismiss", "public.payment").stderr
    assert {r[1]: r[3] for r in plan(shapes)}["public.payment"] == "to protect"
    assert shapes.scalar("select count(*) from privacy.ledger where event = 'coverage_undismissed'") == 1
    assert shapes.scalar("select count(*) from privacy.verify_ledger()") == 0
    # a dismissal follows its table through a rename
    assert dismiss("--dismiss", "public.newsletter", "--reason", "no ids").exit_code == 0
    shapes.owner.execute("alter table public.newsletter rename to mailing")
    assert ("possible", "public.mailing", "customer_id", "dismissed") in plan(shapes)


def test_emit_migration_and_json_leave_shared_tables_out(shapes: Db, tmp_path: Path) -> None:
    assert cli(shapes, "discover", "--emit-migration", str(tmp_path)).exit_code == 0
    [migration] = list(tmp_path.glob("*-protect-customer.sql"))
    text = migration.read_text()
    assert "select privacy.protect_via('public.payment', 'customer_id');" in text
    assert "select privacy.protect_via('public.refund', 'payment_id');" in text
    assert "select privacy.protect_referenced_by('public.address', 'public.customer', 'address_id');" in text
    assert "-- shared, not protected: public.store (2 subjects point at the busiest row of public.store)" in text
    assert "'public.store'" not in text.replace("-- shared", "")
    assert "-- select privacy.protect('public.booking', 'customer', 'customer_ref');" in text
    with psycopg.connect(shapes.dsn("shop_owner"), autocommit=True) as conn:
        conn.execute(text)
    assert {r[1]: r[3] for r in plan(shapes)}["public.payment"] == "protected"
    steps = json.loads(cli(shapes, "--json", "discover").stdout)
    store = next(s for s in steps if s["table_name"] == "public.store")
    assert store["kind"] == "shared" and store["status"] == "shared" and store["sharing"]["busiest"] == 2

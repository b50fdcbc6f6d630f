"""`pyctl demo`: a legal hold, a processing restriction and an erasure after the hold, on a throwaway shop."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import psycopg

from .cluster import start_cluster

SHOP_SCHEMA = """
create table addresses (
    id      integer primary key,
    street  text not null,
    city    text not null
);
create table customers (
    id         integer primary key,
    name       text not null,
    email      text not null,
    address_id integer references addresses (id)
);
create index on customers (address_id);
create table orders (
    id          integer not null,
    customer_id integer not null references customers (id) on delete cascade,
    placed_on   date not null,
    total_cents integer not null,
    primary key (id, placed_on)
) partition by range (placed_on);
create table orders_2025 partition of orders for values from ('2025-01-01') to ('2026-01-01');
create table orders_2026 partition of orders for values from ('2026-01-01') to ('2027-01-01');
create index on orders (customer_id);
create table order_items (
    id         integer primary key,
    order_id   integer not null,
    placed_on  date not null,
    sku        text not null,
    quantity   integer not null,
    foreign key (order_id, placed_on) references orders (id, placed_on) on delete cascade
);
create index on order_items (order_id, placed_on);
create table support_tickets (
    id          integer primary key,
    customer_id integer not null references customers (id) on delete cascade,
    subject     text not null
);
create index on support_tickets (customer_id);

insert into addresses values (1, '1 Elm St', 'Springfield'), (2, '2 Oak Ave', 'Shelbyville'), (3, '3 Pine Rd', 'Ogdenville');
insert into customers values
    (1, 'Ada Active', 'ada@example.com', 1),
    (2, 'Ben Contests', 'ben@example.com', 2),
    (3, 'Cy Former', 'cy@example.com', 3);
insert into orders values (10, 1, '2026-02-01', 1200), (20, 2, '2026-03-05', 4500), (30, 3, '2025-06-30', 9900),
                          (31, 3, '2025-07-02', 150);
insert into order_items values (100, 10, '2026-02-01', 'TEA-01', 2), (200, 20, '2026-03-05', 'MUG-02', 1),
                               (300, 30, '2025-06-30', 'KETTLE-9', 1), (301, 31, '2025-07-02', 'TEA-01', 1);
insert into support_tickets values (1000, 3, 'Refund for kettle'), (1001, 2, 'Wrong address on invoice');
"""


def _say(text: str = "") -> None:
    click.echo(text)


def _pyctl(pyctl: click.Command, dsn: str, *args: str, expect_failure: bool = False) -> str:
    """Run a pyctl command as a user would, echoing it; returns what it printed."""
    from click.testing import CliRunner

    _say(click.style("$ pyctl " + " ".join(a if " " not in a else repr(a) for a in args), bold=True))
    result = CliRunner().invoke(pyctl, ["--dsn", dsn, *args], catch_exceptions=False)
    out = result.output.rstrip()
    if out:
        _say("  " + out.replace("\n", "\n  "))
    if (result.exit_code != 0) != expect_failure:
        raise click.ClickException(f"pyctl {' '.join(args)} {'failed' if result.exit_code else 'should have been refused'}: {out}")
    return result.stdout.strip()


def _as_app(app_dsn: str, title: str, query: str, who: str = "app") -> None:
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        rows = conn.execute(query).fetchall()
    _say(f"  {who} sees {title}: " + (", ".join(str(r[0]) for r in rows) or "(nothing)"))


def _try_as_app(app_dsn: str, statement: str, who: str = "app") -> None:
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        try:
            cur = conn.execute(statement)
            _say(f"  {who}> {statement}\n       allowed ({cur.rowcount} row(s))")
        except psycopg.Error as exc:
            message = exc.diag.message_primary or str(exc)
            _say(f"  {who}> {statement}\n       refused [{exc.sqlstate}] {message}")


def run_demo(pyctl: click.Command, keep: bool = False) -> None:
    started = time.monotonic()
    # What the demo leaves for the reader (the export and the report) outlives the throwaway cluster.
    out_dir = Path(tempfile.mkdtemp(prefix="pyctl-demo-"))
    _say("Starting a throwaway PostgreSQL cluster ...")
    cluster = start_cluster()
    try:
        owner_dsn = cluster.dsn("postgres")
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            conn.execute("create database shop")
        dsn = cluster.dsn("shop")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SHOP_SCHEMA)
        _say("Created database shop: customers, addresses, orders (partitioned), order_items, support_tickets.\n")

        _say("1. Install the toolkit and tell it where customer data lives.")
        _pyctl(pyctl, dsn, "install")
        _pyctl(pyctl, dsn, "subject", "add", "customer", "--table", "customers", "--key", "id")
        _pyctl(pyctl, dsn, "protect", "orders", "--via", "customer_id")
        _pyctl(pyctl, dsn, "protect", "order_items", "--via", "order_id")
        _pyctl(pyctl, dsn, "protect", "support_tickets", "--via", "customer_id")
        _pyctl(pyctl, dsn, "protect", "addresses", "--referenced-by", "customers.address_id")
        password = _pyctl(pyctl, dsn, "roles", "create-app", "shop_app")
        app_dsn = cluster.dsn("shop", user="shop_app") + f" password={password}"
        _pyctl(pyctl, dsn, "roles", "check", "shop_app")
        _pyctl(pyctl, dsn, "tables")
        _say()

        _say("2. Cy (customer 3) left, but is suing the shop: a legal hold preserves Cy's data.")
        hold_id = _pyctl(pyctl, dsn, "hold", "place", "3", "--case", "2026-CV-118", "--reason", "Cy v. Shop: preserve all records")
        _as_app(app_dsn, "customers", "select name from customers order by id")
        _try_as_app(app_dsn, "delete from customers where id = 3")
        _try_as_app(app_dsn, "update orders set total_cents = 0 where id = 30")
        _try_as_app(app_dsn, "delete from order_items where id = 301")
        _try_as_app(app_dsn, "update addresses set street = 'unknown' where id = 3")
        _try_as_app(app_dsn, "delete from orders_2025 where customer_id = 3")
        _say("  The nightly retention purge skips held customers with privacy.is_held():")
        _try_as_app(app_dsn, "delete from support_tickets where not privacy.is_held('customer', customer_id)")
        _as_app(app_dsn, "support tickets", "select subject from support_tickets order by id")
        _say("  Counsel gets a preservation export of Cy's data, its manifest's hash recorded in the ledger:")
        _pyctl(pyctl, dsn, "export", "3", "--out", str(out_dir / "customer-3"))
        _say()

        _say("3. Ben (customer 2) contests the accuracy of his address (GDPR Art. 18(1)(a)):")
        _say("   until it is verified, his data is stored only, and the application cannot process it.")
        restriction_id = _pyctl(pyctl, dsn, "restrict", "place", "2", "--basis", "accuracy",
                                "--reason", "Ben says his address is wrong")
        _as_app(app_dsn, "customers", "select name from customers order by id")
        _as_app(app_dsn, "orders", "select id from orders order by id")
        _as_app(app_dsn, "addresses", "select street from addresses order by id")
        _try_as_app(app_dsn, "update customers set email = 'spam@example.com' where id = 2")
        _try_as_app(app_dsn, "insert into orders values (21, 2, '2026-04-01', 100)")
        _try_as_app(app_dsn, "select * from orders_2026 where customer_id = 2")
        _say("   A steward still sees Ben's data and corrects it:")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create role dpo_alice login")
        _pyctl(pyctl, dsn, "roles", "steward", "dpo_alice")
        with psycopg.connect(cluster.dsn("shop", user="dpo_alice"), autocommit=True) as conn:
            conn.execute("update addresses set street = '22 Oak Ave' where id = 2")
            street = conn.execute("select street from addresses where id = 2").fetchone()
        _say(f"  steward> update addresses set street = '22 Oak Ave' where id = 2  -> now {street[0] if street else '?'}")
        _say("   Before processing resumes, the Art. 18 lifecycle: verified, subject told (18(3)), approval recorded.")
        _pyctl(pyctl, dsn, "restrict", "release", restriction_id, expect_failure=True)
        _pyctl(pyctl, dsn, "restrict", "verify", restriction_id, "--note", "address checked against a utility bill; corrected")
        _pyctl(pyctl, dsn, "restrict", "notify", restriction_id, "--via", "email to ben@example.com")
        _pyctl(pyctl, dsn, "restrict", "approve", restriction_id, "--evidence", "Ben's reply of 2026-12-01")
        _pyctl(pyctl, dsn, "restrict", "release", restriction_id)
        _as_app(app_dsn, "customers", "select name from customers order by id")
        _say()

        _say("4. Ada (customer 1) objects to direct marketing (GDPR Art. 21(3)): the newsletter must stop,")
        _say("   billing and support go on. A restriction scoped to the purpose 'marketing' does that.")
        _pyctl(pyctl, dsn, "purpose", "add", "marketing", "--description", "newsletters and offers")
        news_password = _pyctl(pyctl, dsn, "roles", "create-app", "newsletter_app", "--purpose", "marketing")
        news_dsn = cluster.dsn("shop", user="newsletter_app") + f" password={news_password}"
        _pyctl(pyctl, dsn, "restrict", "place", "1", "--basis", "objection", "--purpose", "marketing",
               "--reason", "Ada objects to marketing, email of 2026-12-01")
        _as_app(news_dsn, "customers", "select name from customers order by id", who="newsletter")
        _try_as_app(news_dsn, "insert into orders values (11, 1, '2026-04-01', 100)", who="newsletter")
        _as_app(app_dsn, "customers", "select name from customers order by id")
        _try_as_app(app_dsn, "update orders set total_cents = 1250 where id = 10")
        _say()

        _say("5. Cy's account is closed and the shop no longer needs the data, but the hold keeps it:")
        _say("   the erasure (GDPR Art. 17) is refused now, so it is decided now and queued until the hold ends.")
        _pyctl(pyctl, dsn, "erase", "3", "--reason", "account closed; retention ended", expect_failure=True)
        erasure_id = _pyctl(pyctl, dsn, "erase", "3", "--reason", "account closed; retention ended", "--reference", "DPO ticket 88",
                            "--after-holds")
        _pyctl(pyctl, dsn, "erase", "pending")
        _say("   The case is settled: counsel releases the hold, and the queued erasure runs in the same transaction,")
        _say("   children before parents; the ledger keeps counts and digests of what was destroyed, never the data.")
        _pyctl(pyctl, dsn, "hold", "release", hold_id, "--reason", "case settled", "--reference", "dismissal order 2027-01-15")
        _as_app(app_dsn, "customers", "select name from customers order by id")
        _pyctl(pyctl, dsn, "erase", "certificate", erasure_id)
        _pyctl(pyctl, dsn, "history", "2")
        _pyctl(pyctl, dsn, "ledger", "verify")
        _say()

        _say("6. What counsel and the DPO read: one report, printable, with every digest and how to check it.")
        report = out_dir / "report.html"
        _pyctl(pyctl, dsn, "report", "--out", str(report))
        _say(f"Report: {report} (open it in a browser, or print it)\nExport: {out_dir / 'customer-3'}")
        _say(f"\nDone in {time.monotonic() - started:.1f}s.")
        if keep:
            _say(f"The cluster keeps running. Connect with:\n  {dsn}\nStop it with: "
                 f"{cluster.bin('pg_ctl')} -D {cluster.datadir} stop"
                 + (f"  (as OS user {cluster.os_user})" if cluster.os_user else ""))
    finally:
        if not keep:
            cluster.destroy()

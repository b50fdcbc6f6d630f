"""Crashes: `kill -9` of the server in the middle of install/upgrade, placement and release,
export and sync, then PostgreSQL's own crash recovery. Enforcement is complete or absent per
table, never half; a subject's rows are all marked or none; the ledger verifies; running the
command again completes.

Every test has a throwaway cluster of its own, so killing it disturbs nobody. The command runs
as a real `pyctl` process. To stop it at a chosen point in the middle, the test holds a lock
the command needs next from another session (a "tripwire": an advisory lock taken by an
application trigger on the Nth row, a table lock, a row lock); once pg_stat_activity shows the
command's statement waiting for it, the whole server — postmaster and every backend — gets
SIGKILL, as from the OOM killer or a power cut. Nothing is removed by hand; `pg_ctl start`
runs crash recovery.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from yoyo.backends.base import DatabaseBackend

from conftest import APP_GRANTS, PROTECT_SQL, ROLES, SHOP_SQL, Db
from pyctl import install
from pyctl.cli import main
from pyctl.cluster import Cluster, copy_of, start_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills and reaps server processes through /proc"),
]

PYCTL = str(Path(sys.executable).with_name("pyctl"))
DB = "shop"
BIG = 5  # the customer with many rows
N = 12_000  # its orders, order items and activity_log rows, each
MIDDLE_ITEM = 1000 + N // 2  # the order item at which placement and release are stopped


# -- killing and restarting a server -------------------------------------------------------------


def _subreaper(on: bool) -> None:
    """Become the parent of the servers we start (pg_ctl leaves them orphans), so that a killed
    postmaster is reaped at once: PostgreSQL refuses to start while the pid in postmaster.pid
    still exists, and an init that reaps slowly (or never) would leave it a zombie."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _postmaster(cluster: Cluster) -> int | None:
    try:
        return int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _reap(pids: list[int], timeout: float = 30.0) -> None:
    """Wait until every pid is gone for good (reaped, not a zombie)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists():
                break
            assert time.monotonic() < deadline, f"process {pid} did not go away"
            time.sleep(0.02)


def kill_server(cluster: Cluster) -> None:
    """SIGKILL the postmaster and every backend, as a crash would."""
    postmaster = _postmaster(cluster)
    assert postmaster is not None, "the server is not running"
    pids = [postmaster, *_children(postmaster)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(pids)


def restart(cluster: Cluster) -> None:
    """Start the killed server again: PostgreSQL recovers from its WAL."""
    cluster.start()
    cluster.wait_ready()
    assert "not properly shut down; automatic recovery in progress" in cluster.log_text()


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    _subreaper(True)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        pid = _postmaster(cluster)
        cluster.destroy()
        if pid is not None:
            _reap([pid])
        _subreaper(False)


# -- the shop ------------------------------------------------------------------------------------


def connect(cluster: Cluster, user: str = "postgres", db: str = DB, **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(db, user=user), autocommit=kwargs.pop("autocommit", True), **kwargs)


@contextlib.contextmanager
def blocker(cluster: Cluster) -> Iterator[psycopg.Connection]:
    """A session whose transaction holds the tripwire; it is simply dropped at the end (the server
    it ran on is usually dead by then)."""
    conn = psycopg.connect(cluster.dsn(DB), autocommit=False)
    try:
        yield conn
    finally:
        conn.close()


def query(cluster: Cluster, statement: str, params: Any = None, user: str = "postgres") -> list[tuple[Any, ...]]:
    with connect(cluster, user) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def scalar(cluster: Cluster, statement: str, params: Any = None, user: str = "postgres") -> Any:
    rows = query(cluster, statement, params, user)
    return rows[0][0] if rows else None


def create_shop(cluster: Cluster) -> None:
    with connect(cluster, db="postgres") as su:
        su.execute(ROLES)
        su.execute(f"create database {DB} owner shop_owner")
    with connect(cluster) as su:
        su.execute("alter schema public owner to shop_owner")
    with connect(cluster, "shop_owner") as owner:
        owner.execute(SHOP_SQL)


def protect_shop(cluster: Cluster) -> None:
    install.install(cluster.dsn(DB, user="shop_owner"))
    with connect(cluster, "shop_owner") as owner:
        owner.execute(PROTECT_SQL)
        owner.execute(APP_GRANTS)
        owner.execute("grant privacy_steward to steward_user")


def add_big_subject(cluster: Cluster) -> None:
    """Customer 5: N orders over both partitions, N order items, N activity_log rows."""
    with connect(cluster, "shop_owner") as owner:
        owner.execute("insert into customers values (%s, 'Eve', 4)", (BIG,))
        owner.execute("insert into orders select 1000 + g, %s, date '2025-01-01' + (g %% 700), g from generate_series(1, %s) g", (BIG, N))
        owner.execute("insert into order_items select 1000 + g, 1000 + g, date '2025-01-01' + (g %% 700), 1 + g %% 2, 1 "
                      "from generate_series(1, %s) g", (N,))
        owner.execute("insert into activity_log (customer_id, what) select %s, 'click ' || g from generate_series(1, %s) g", (BIG, N))
        owner.execute("insert into \"crm data\".\"Support; Tickets\" values (50, %s, 'lost parcel')", (BIG,))
        owner.execute("analyze")


def steward(cluster: Cluster, statement: str, params: Any = None) -> Any:
    return scalar(cluster, statement, params, user="steward_user")


# Rows whose privacy_mark is not what the active holds and restrictions of their subject give:
# none means every subject is marked everywhere or nowhere, never half.
MARK_MISMATCHES = """
with m as (
    select subject_key::int as k,
           pg_catalog.bit_or(case kind when 'legal_hold' then 1 else 2 end)::smallint as mark
      from privacy.processing_restrictions where released_at is null and subject_type = 'customer' group by 1)
select t, count(*) from (
    select 'customers' as t from customers c left join m on m.k = c.id where c.privacy_mark <> coalesce(m.mark, 0)
    union all
    select 'orders' from orders o left join m on m.k = o.customer_id where o.privacy_mark <> coalesce(m.mark, 0)
    union all
    select 'order_items' from order_items i join orders o on (o.id, o.placed_on) = (i.order_id, i.placed_on)
      left join m on m.k = o.customer_id where i.privacy_mark <> coalesce(m.mark, 0)
    union all
    select 'activity_log' from activity_log a left join m on m.k = a.customer_id where a.privacy_mark <> coalesce(m.mark, 0)
    union all
    select 'tickets' from "crm data"."Support; Tickets" s left join m on m.k = s.\"Customer \"\"Ref\"\"\"
     where s.privacy_mark <> coalesce(m.mark, 0)
    union all
    select 'addresses' from addresses a
     where a.privacy_mark <> coalesce((select pg_catalog.bit_or(coalesce(m.mark, 0)) from customers c left join m on m.k = c.id
                                        where c.address_id = a.id), 0)
    union all
    select 'subject_marks' from m full join privacy.subject_marks s on s.subject_key::int = m.k and s.subject_type = 'customer'
     where m.mark is distinct from s.mark
) x group by t order by t
"""


def assert_consistent(cluster: Cluster) -> None:
    """Marks follow the committed holds and restrictions exactly, and the ledger verifies."""
    assert query(cluster, MARK_MISMATCHES) == []
    assert query(cluster, "select * from privacy.verify_ledger()") == []


def subject_marks(cluster: Cluster, key: int) -> dict[str, set[int]]:
    """The distinct privacy_mark values of one subject's rows, per table."""
    rows = query(cluster, """
        select 'customers', privacy_mark from customers where id = %(k)s
        union select 'orders', privacy_mark from orders where customer_id = %(k)s
        union select 'order_items', i.privacy_mark from order_items i join orders o on (o.id, o.placed_on) = (i.order_id, i.placed_on)
               where o.customer_id = %(k)s
        union select 'activity_log', privacy_mark from activity_log where customer_id = %(k)s
        union select 'tickets', privacy_mark from "crm data"."Support; Tickets" where \"Customer \"\"Ref\"\"\" = %(k)s""", {"k": key})
    marks: dict[str, set[int]] = {}
    for table, mark in rows:
        marks.setdefault(table, set()).add(mark)
    return marks


# Per table and partition: which of the generated pieces it has.
CENSUS = """
select c.oid::regclass::text,
       array(select t.tgname::text from pg_catalog.pg_trigger t where t.tgrelid = c.oid and t.tgname ~* '^(zz_)?privacy_' order by 1),
       array(select p.polname::text from pg_catalog.pg_policy p where p.polrelid = c.oid and p.polname ~ '^privacy_' order by 1),
       exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = c.oid and a.attname = 'privacy_mark' and not a.attisdropped),
       c.relrowsecurity
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and n.nspname in ('public', 'crm data') and c.relname !~ '^(_yoyo|yoyo)'
 order by 1
"""
COMPLETE_TRIGGERS = {"zz_privacy_before_insert", "Privacy_check_update", "Privacy_check_delete", "privacy_before_truncate"}


def census(cluster: Cluster) -> dict[str, str]:
    """'complete', 'absent' or 'HALF (...)' for every table and partition of the shop."""
    result = {}
    for rel, triggers, policies, mark_column, rls in query(cluster, CENSUS):
        complete = COMPLETE_TRIGGERS <= set(triggers) and "privacy_hide_restricted" in policies and mark_column and rls
        absent = not triggers and not policies and not mark_column
        result[rel] = "complete" if complete else "absent" if absent else f"HALF {triggers} {policies} column={mark_column} rls={rls}"
    return result


def assert_never_half(cluster: Cluster) -> dict[str, str]:
    found = census(cluster)
    half = {rel: state for rel, state in found.items() if state not in ("complete", "absent")}
    assert half == {}, f"half-enforced tables: {half}"
    return found


# -- running a command and stopping it at a tripwire --------------------------------------------------


def start_pyctl(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PYCTL, "--dsn", dsn, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_pyctl(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYCTL, "--dsn", dsn, *args], capture_output=True, text=True, check=False, timeout=300)


def wait_until_blocked(cluster: Cluster, proc: subprocess.Popen[str], statement: str, wait_event: str | None = None,
                       db: str = DB, timeout: float = 60.0) -> int:
    """The backend pid running STATEMENT (a substring) once it waits for a lock held by the test."""
    deadline = time.monotonic() + timeout
    with connect(cluster, db=db) as monitor:
        while True:
            row = monitor.execute(
                "select pid from pg_catalog.pg_stat_activity where datname = %s and wait_event_type = 'Lock' "
                "and (%s::text is null or wait_event = %s) and strpos(query, %s) > 0",
                (db, wait_event, wait_event, statement)).fetchone()
            if row:
                return int(row[0])
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the command ended before reaching the tripwire ({proc.returncode}): {out} {err}")
            assert time.monotonic() < deadline, f"{statement} never blocked"
            time.sleep(0.02)


def assert_failed_cleanly(proc: subprocess.Popen[str]) -> str:
    """The command saw its server die: one line 'Error: ...', exit 1, no traceback."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in out + err
    return lines[0]


@pytest.fixture
def server() -> Iterator[Cluster]:
    with throwaway_cluster() as cluster:
        create_shop(cluster)
        yield cluster


# -- install and upgrade --------------------------------------------------------------------------------


def test_first_install_killed_during_the_migrations_leaves_no_toolkit_and_runs_again(server: Cluster) -> None:
    # The DBA made the schema beforehand; a session of ours holds its comment, which the
    # first migration sets: the install stops inside it, with yoyo's lock row committed.
    with connect(server, "shop_owner") as owner:
        owner.execute("create schema privacy")
    with blocker(server) as blocking:
        blocking.execute("comment on schema privacy is 'tripwire'")
        proc = start_pyctl(server.dsn(DB, user="shop_owner"), "install")
        wait_until_blocked(server, proc, "comment on schema privacy")
        kill_server(server)
    assert "migration failed" in assert_failed_cleanly(proc)
    restart(server)

    # Nothing of the toolkit but yoyo's bookkeeping, and the lock the killed install held.
    assert scalar(server, "select to_regclass('privacy.settings')") is None
    assert scalar(server, "select count(*) from privacy._yoyo_migration") == 0
    assert scalar(server, "select count(*) from privacy.yoyo_lock") == 1
    assert set(assert_never_half(server).values()) == {"absent"}

    started = time.monotonic()
    again = run_pyctl(server.dsn(DB, user="shop_owner"), "install")
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 10, "install waited for the dead install's lock"
    assert scalar(server, "select count(*) from privacy.yoyo_lock") == 0
    with connect(server, "shop_owner") as owner:
        owner.execute(PROTECT_SQL)
    assert set(assert_never_half(server).values()) == {"complete", "absent"}
    assert {s for _, s in query(server, "select protected_table, state from privacy.enforcement_status()")} == {"installed"}
    assert query(server, "select * from privacy.verify_ledger()") == []


EXTRA_TABLES = 60


def test_upgrade_killed_while_regenerating_many_tables_leaves_every_table_complete(server: Cluster) -> None:
    protect_shop(server)
    with connect(server, "shop_owner") as owner, owner.transaction():
        for i in range(EXTRA_TABLES):
            owner.execute(f"create table t_{i:03d} (id int primary key, customer_id int not null references customers (id))")
            owner.execute(f"insert into t_{i:03d} values (1, 3), (2, 1)")
            owner.execute(f"select privacy.protect_via('t_{i:03d}', 'customer_id')")
    hold3 = steward(server, "select privacy.place_hold('customer', '3', 'CASE-3', 'preserve')")
    restriction2 = steward(server, "select privacy.place_restriction('customer', '2', 'accuracy', 'contested')")
    assert_consistent(server)

    # Changing the steward role regenerates every table, in one transaction; a lock on the
    # 41st extra table stops it there, 40 tables in.
    with blocker(server) as blocking:
        blocking.execute("lock table t_040 in share mode")
        proc = start_pyctl(server.dsn(DB, user="shop_owner"), "install", "--steward-role", "privacy_team")
        pid = wait_until_blocked(server, proc, "finish_install")
        regenerated = scalar(server, "select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
                                     "where l.pid = %s and l.granted and l.mode = 'AccessExclusiveLock' and c.relname ~ '^t_0'", (pid,))
        assert regenerated >= 40
        kill_server(server)
    assert_failed_cleanly(proc)
    restart(server)

    # All of it or none of it: every table keeps its complete enforcement, for the old steward role.
    found = assert_never_half(server)
    assert sum(1 for s in found.values() if s == "complete") == 6 + 2 + EXTRA_TABLES  # tables, partitions, extra tables
    assert {s for _, s in query(server, "select protected_table, state from privacy.enforcement_status()")} == {"installed"}
    assert scalar(server, "select value from privacy.settings where name = 'steward_role'") == "privacy_steward"
    policies = [q for (q,) in query(server, "select qual from pg_policies where policyname = 'privacy_hide_restricted'")]
    assert len(policies) == 6 + 2 + EXTRA_TABLES and all("privacy_steward" in q and "privacy_team" not in q for q in policies)
    assert_consistent(server)
    with connect(server, "app") as app, pytest.raises(psycopg.Error, match="privacy: DELETE"):
        app.execute("delete from t_059 where id = 1")  # the hold on customer 3 still holds

    again = run_pyctl(server.dsn(DB, user="shop_owner"), "install", "--steward-role", "privacy_team")
    assert again.returncode == 0, again.stderr
    assert assert_never_half(server) == found
    assert {s for _, s in query(server, "select protected_table, state from privacy.enforcement_status()")} == {"installed"}
    assert scalar(server, "select value from privacy.settings where name = 'steward_role'") == "privacy_team"
    policies = [q for (q,) in query(server, "select qual from pg_policies where policyname = 'privacy_hide_restricted'")]
    assert len(policies) == 6 + 2 + EXTRA_TABLES and all("privacy_team" in q and "privacy_steward" not in q for q in policies)
    assert_consistent(server)
    assert {s for _, s in query(server, "select table_name, status from privacy.verify_hold(%s)", (hold3,))} == {"unchanged"}
    assert scalar(server, "select released_at is null from privacy.processing_restrictions where id = %s", (restriction2,))


# -- placing and releasing a legal hold -------------------------------------------------------------------

TRIPWIRE = f"""
create function public.tripwire() returns trigger language plpgsql as $$
begin
    if new.id = {MIDDLE_ITEM} then
        perform pg_catalog.pg_advisory_xact_lock(4242);
    end if;
    return new;
end $$;
create trigger aa_tripwire before update on order_items for each row execute function public.tripwire();
"""


@contextlib.contextmanager
def tripwire(cluster: Cluster, point: str) -> Iterator[str]:
    """Hold what the command needs at POINT; yields the wait event to look for."""
    with blocker(cluster) as blocking:
        if point == "marking":  # half of the subject's order items are marked: the application's trigger waits
            blocking.execute("select pg_advisory_lock(4242)")
            yield "advisory"
        elif point == "ledger":  # every row is marked and digested; the ledger entries are next
            blocking.execute("lock table privacy.ledger in share row exclusive mode")
            yield "relation"
        elif point == "proof":  # the hold is committed; its proof (digests) is computed in the next transaction
            blocking.execute("lock table privacy.hold_digests in share mode")
            yield "relation"
        else:
            raise AssertionError(point)


@pytest.fixture
def big(server: Cluster) -> Cluster:
    protect_shop(server)
    add_big_subject(server)
    with connect(server, "shop_owner") as owner:
        owner.execute(TRIPWIRE)
    return server


@pytest.mark.parametrize("point", ["marking", "ledger"])
def test_hold_placement_killed_half_way_leaves_the_subject_wholly_unheld(big: Cluster, point: str) -> None:
    server = big
    hold3 = steward(server, "select privacy.place_hold('customer', '3', 'CASE-3', 'preserve')")
    steward(server, "select privacy.place_restriction('customer', '2', 'accuracy', 'contested')")
    ledger_before = scalar(server, "select count(*) from privacy.ledger")
    steward_dsn = server.dsn(DB, user="steward_user")

    with tripwire(server, point) as event:
        proc = start_pyctl(steward_dsn, "hold", "place", str(BIG), "--case", "2026-CV-7", "--reason", "preserve")
        wait_until_blocked(server, proc, "place_hold", event)
        kill_server(server)
    assert_failed_cleanly(proc)
    restart(server)

    # The placement never committed: no hold, no mark on any of the subject's rows, no ledger entry.
    assert scalar(server, "select count(*) from privacy.processing_restrictions where subject_key = %s", (str(BIG),)) == 0
    assert subject_marks(server, BIG) == {t: {0} for t in ("customers", "orders", "order_items", "activity_log", "tickets")}
    assert scalar(server, "select count(*) from privacy.ledger") == ledger_before
    assert scalar(server, "select count(*) from privacy.hold_digests where hold_id not in (%s)", (hold3,)) == 0
    assert_consistent(server)
    assert {s for (s,) in query(server, "select status from privacy.verify_hold(%s)", (hold3,))} == {"unchanged"}
    with connect(server, "app") as app:  # the subject is not held: the application may change its rows
        with app.transaction():
            app.execute("update activity_log set what = what where customer_id = %s", (BIG,))
        assert app.execute("select count(*) from customers").fetchone() == (4,)  # customer 2 stays hidden

    again = run_pyctl(steward_dsn, "hold", "place", str(BIG), "--case", "2026-CV-7", "--reason", "preserve")
    assert again.returncode == 0, again.stderr
    hold_id = again.stdout.strip()
    assert subject_marks(server, BIG) == {t: {1} for t in ("customers", "orders", "order_items", "activity_log", "tickets")}
    assert_consistent(server)
    assert {s for (s,) in query(server, "select status from privacy.verify_hold(%s)", (hold_id,))} == {"unchanged"}
    assert scalar(server, "select row_count from privacy.hold_digests where hold_id = %s and table_name = 'order_items'", (hold_id,)) == N


def test_a_proof_killed_half_way_leaves_the_hold_in_force_and_is_computed_again(big: Cluster) -> None:
    server = big
    ledger_before = scalar(server, "select count(*) from privacy.ledger")
    steward_dsn = server.dsn(DB, user="steward_user")

    with tripwire(server, "proof") as event:
        proc = start_pyctl(steward_dsn, "hold", "place", str(BIG), "--case", "2026-CV-7", "--reason", "preserve")
        wait_until_blocked(server, proc, "prove_hold", event)
        kill_server(server)
    error = assert_failed_cleanly(proc)
    assert "in force" in error and "pyctl hold prove --all" in error
    restart(server)

    # The hold committed before its proof began: in force on every row, its proof pending.
    (hold_id,) = [str(r[0]) for r in query(server, "select id from privacy.processing_restrictions where subject_key = %s", (str(BIG),))]
    assert subject_marks(server, BIG) == {t: {1} for t in ("customers", "orders", "order_items", "activity_log", "tickets")}
    assert [r[0] for r in query(server, "select event from privacy.ledger order by seq")][ledger_before:] == ["hold_placed"]
    assert scalar(server, "select count(*) from privacy.hold_digests where hold_id = %s", (hold_id,)) == 0
    assert_consistent(server)
    assert query(server, "select category from privacy.doctor() where object = %s", (hold_id,)) == [("hold proof pending",)]
    with connect(server, "app") as app:
        with pytest.raises(psycopg.Error) as info:
            app.execute("delete from order_items where order_id in (select id from orders where customer_id = %s)", (BIG,))
        assert info.value.sqlstate == "PV001"

    done = run_pyctl(steward_dsn, "hold", "prove", "--all")
    assert done.returncode == 0, done.stderr
    assert scalar(server, "select row_count from privacy.hold_digests where hold_id = %s and table_name = 'order_items'", (hold_id,)) == N
    assert {s for (s,) in query(server, "select status from privacy.verify_hold(%s)", (hold_id,))} == {"unchanged"}
    assert_consistent(server)


def test_hold_release_killed_half_way_leaves_the_subject_wholly_held(big: Cluster) -> None:
    server = big
    hold_id = steward(server, "select privacy.place_hold('customer', %s, '2026-CV-7', 'preserve')", (str(BIG),))
    assert subject_marks(server, BIG) == {t: {1} for t in ("customers", "orders", "order_items", "activity_log", "tickets")}
    ledger_before = scalar(server, "select count(*) from privacy.ledger")
    steward_dsn = server.dsn(DB, user="steward_user")

    with tripwire(server, "marking") as event:
        proc = start_pyctl(steward_dsn, "hold", "release", str(hold_id), "--reason", "settled", "--reference", "order 12")
        wait_until_blocked(server, proc, "release_hold", event)
        kill_server(server)
    assert_failed_cleanly(proc)
    restart(server)

    assert scalar(server, "select released_at from privacy.processing_restrictions where id = %s", (hold_id,)) is None
    assert subject_marks(server, BIG) == {t: {1} for t in ("customers", "orders", "order_items", "activity_log", "tickets")}
    assert scalar(server, "select count(*) from privacy.ledger") == ledger_before
    assert_consistent(server)
    with connect(server, "app") as app, pytest.raises(psycopg.Error, match="privacy: DELETE"):
        app.execute("delete from order_items where id = %s", (MIDDLE_ITEM + 1,))

    again = run_pyctl(steward_dsn, "hold", "release", str(hold_id), "--reason", "settled", "--reference", "order 12")
    assert again.returncode == 0, again.stderr
    assert subject_marks(server, BIG) == {t: {0} for t in ("customers", "orders", "order_items", "activity_log", "tickets")}
    assert_consistent(server)


# -- export --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["copying", "ledger"])
def test_export_killed_half_way_leaves_nothing_that_looks_finished(big: Cluster, tmp_path: Path, point: str) -> None:
    server = big
    out = tmp_path / "customer-5"
    steward_dsn = server.dsn(DB, user="steward_user")
    ledger_before = scalar(server, "select count(*) from privacy.ledger")
    with blocker(server) as blocking:
        if point == "copying":
            # The tickets come last: every other table's file is written when the export waits.
            blocking.execute('lock table "crm data"."Support; Tickets" in access exclusive mode')
        else:
            blocking.execute("lock table privacy.ledger in share row exclusive mode")
        proc = start_pyctl(steward_dsn, "export", str(BIG), "--out", str(out))
        wait_until_blocked(server, proc, "record_export" if point == "ledger" else "COPY", "relation")
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".customer-5.partial-")]
        assert len(partial) == 1
        written = {f.name: f.stat().st_size for f in partial[0].iterdir()}
        assert written[next(n for n in written if n.endswith("public.order_items.csv"))] > 0
        # Copying: the last table's COPY waits, no manifest yet. Ledger: every file and the
        # manifest are written; the ledger entry, then the rename onto PATH, are next.
        assert ("manifest.json" in written) == (point == "ledger")
        if point == "copying":
            proc.kill()  # the machine goes down: the export's process dies with the server
        kill_server(server)
    if point == "copying":
        proc.communicate()
        # Only the hidden partial directory is left, without a manifest: nothing at PATH.
        assert [p.name for p in tmp_path.iterdir()] == [partial[0].name]
        assert not (partial[0] / "manifest.json").exists()
    else:
        assert "server closed the connection" in assert_failed_cleanly(proc)
        assert list(tmp_path.iterdir()) == []  # the export removed its partial files itself
    assert not out.exists()
    restart(server)
    assert scalar(server, "select count(*) from privacy.ledger") == ledger_before
    assert scalar(server, "select count(*) from privacy.ledger where event = 'subject_exported'") == 0
    assert_consistent(server)

    again = run_pyctl(steward_dsn, "export", str(BIG), "--out", str(out))
    assert again.returncode == 0, again.stderr
    checked = run_pyctl(steward_dsn, "--json", "export", "verify", str(out), "--ledger")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout)
    assert result["ok"] and result["rows"] == 3 * N + 1 + 1 + 1  # orders, items, activity; customer, address, ticket
    assert query(server, "select * from privacy.verify_ledger()") == []


# -- sync of a fork ----------------------------------------------------------------------------------


def test_sync_killed_half_way_keeps_whole_items_and_completes_when_run_again(server: Cluster) -> None:
    protect_shop(server)
    with connect(server, "shop_owner") as owner:
        owner.execute("insert into customers select g, 'c' || g, null from generate_series(100, 129) g")
        owner.execute("insert into orders select g, g, date '2026-05-01', g from generate_series(100, 129) g")
        owner.execute("insert into order_items select 2000 + g, g, date '2026-05-01', 1, 1 from generate_series(100, 129) g")
        owner.execute("insert into activity_log (customer_id, what) select g, 'login' from generate_series(100, 129) g")
    hold2 = steward(server, "select privacy.place_hold('customer', '2', 'OLD', 'before the fork')")
    fork = copy_of(server, follower=True)
    try:
        fork.promote()
        deadline = time.monotonic() + 30
        while scalar(fork, "select pg_is_in_recovery()"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # After the fork: thirty holds, a restriction with a correction, a release.
        for key in range(100, 130):
            steward(server, "select privacy.place_hold('customer', %s, 'CASE', 'preserve')", (str(key),))
        steward(server, "select privacy.place_restriction('customer', '3', 'accuracy', 'contested')")
        with connect(server, "steward_user") as st:
            st.execute("update addresses set street = '3 Corrected Street' where id = 3")
        steward(server, "select privacy.release_hold(%s, 'settled', 'order 1')", (hold2,))
        owner_dsn = server.dsn(DB, user="shop_owner")
        added = run_pyctl(owner_dsn, "fleet", "add", "staging", "--dsn", fork.dsn(DB), "--kind", "fork")
        assert added.returncode == 0, added.stderr

        # A session on the fork holds customer 115's row: the sync stops at that hold.
        with blocker(fork) as blocking:
            blocking.execute("select 1 from customers where id = 115 for update")
            proc = start_pyctl(owner_dsn, "sync", "staging")
            wait_until_blocked(fork, proc, "sync_replay")
            kill_server(fork)
        assert "sync of staging stopped" in assert_failed_cleanly(proc)
        restart(fork)

        # Each item is whole or absent: the holds before 115 with every row marked, 115 and after not at all.
        held = {int(k) for (k,) in query(fork, "select subject_key from privacy.processing_restrictions "
                                               "where kind = 'legal_hold' and released_at is null")}
        assert held == {2, *range(100, 115)}  # in the source's ledger order: hold 2's release comes after hold 129
        assert_consistent(fork)
        assert scalar(fork, "select count(*) from privacy.sync_sources") == 0
        assert scalar(fork, "select is_copy from privacy.copy_status()") is True

        again = run_pyctl(owner_dsn, "--json", "sync", "staging")
        assert again.returncode == 0, again.stderr
        active = "select kind, subject_key from privacy.processing_restrictions where released_at is null order by 1, 2"
        assert query(fork, active) == query(server, active)
        assert_consistent(fork)
        assert scalar(fork, "select street from addresses where id = 3") == "3 Corrected Street"
        assert scalar(fork, "select is_copy from privacy.copy_status()") is False
        assert scalar(fork, "select count(*) from privacy.ledger where event = 'sync_completed'") == 1
        report = json.loads(run_pyctl(owner_dsn, "--json", "sync", "staging").stdout)[0]
        assert report["entries"] == {}  # nothing left to replay
    finally:
        pid = _postmaster(fork)
        fork.destroy()
        if pid is not None:
            _reap([pid])


# -- yoyo's migration lock ---------------------------------------------------------------------------


def test_a_live_migration_lock_is_one_clear_line_and_a_stale_one_is_cleared(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock row an install holds while it migrates: one taken since the server started may
    belong to a running install (wait, then say so in one line); one from before is a dead one's."""
    monkeypatch.setattr(DatabaseBackend, "lock", functools.partialmethod(DatabaseBackend.lock, timeout=0.5))
    db.su.execute("insert into privacy.yoyo_lock (locked, ctime, pid) values (1, now() at time zone 'UTC', 4242)")
    result = CliRunner().invoke(main, ["--dsn", db.dsn("shop_owner"), "install"], catch_exceptions=True)
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: migration failed: Process 4242 has locked this database")
    db.su.execute("update privacy.yoyo_lock set ctime = pg_postmaster_start_time() at time zone 'UTC' - interval '1 minute'")
    result = CliRunner().invoke(main, ["--dsn", db.dsn("shop_owner"), "install"], catch_exceptions=True)
    assert result.exit_code == 0, result.output
    assert db.scalar("select count(*) from privacy.yoyo_lock") == 0

"""Through PgBouncer in transaction mode, as Heroku pools connections: the application
obeys holds and restrictions as on a direct connection, prepared statements included;
each pyctl command works through it or says in one line that it needs a direct one."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from conftest import Db, hold, refused, restrict
from pyctl.cli import main
from pyctl.cluster import free_port

USERS = ("app", "steward_user", "shop_owner", "postgres")


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)
    assert found, "pgbouncer is not installed (.ci/run installs the Debian package)"
    return found


class Bouncer:
    def __init__(self, db: Db) -> None:
        self.db = db
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="pyctl-bouncer-", dir="/tmp"))
        (self.base / "users.txt").write_text("".join(f'"{u}" ""\n' for u in USERS))
        (self.base / "pgbouncer.ini").write_text(f"""
[databases]
{db.name} = host=127.0.0.1 port={db.cluster.port} dbname={db.name}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.base}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
logfile = {self.base}/pgbouncer.log
pidfile = {self.base}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits,options
""")
        args = [pgbouncer_binary(), "-d", str(self.base / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer will not run as root
            pw = pwd.getpwnam(db.cluster.os_user or "postgres")
            for path in (self.base, *self.base.iterdir()):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            args = ["runuser", "-u", pw.pw_name, "--", *args]
        subprocess.run(args, check=True, capture_output=True, cwd="/")
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(self.dsn("app"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def dsn(self, user: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={self.db.name} user={user}"

    def stop(self) -> None:
        pid = self.base / "pgbouncer.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
            time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def bouncer(db: Db) -> Iterator[Bouncer]:
    b = Bouncer(db)
    try:
        yield b
    finally:
        b.stop()


def through(bouncer: Bouncer, *args: str, user: str = "steward_user") -> Result:
    return CliRunner().invoke(main, ["--dsn", bouncer.dsn(user), *args], catch_exceptions=False)


def test_the_application_through_pgbouncer_obeys_holds_and_restrictions(db: Db, bouncer: Bouncer) -> None:
    # prepare_threshold=0: every statement is a named, protocol-level prepared statement
    with psycopg.connect(bouncer.dsn("app"), autocommit=True, prepare_threshold=0) as app:
        query = "select id from customers where id = any(%s) order by id"
        assert [r[0] for r in app.execute(query, ([1, 2, 3],))] == [1, 2, 3]
        restrict(db, 2)
        hold(db, 3)
        for _ in range(3):  # the same prepared statement, after the restriction, on whichever server connection
            assert [r[0] for r in app.execute(query, ([1, 2, 3],))] == [1, 3]
        assert [r[0] for r in app.execute("select customer_id from orders where customer_id = any(%s) order by 1", ([2, 3],))] == [3, 3]
        refused(app, "delete from orders where customer_id = %s", (3,))
        refused(app, "update customers set name = %s where id = %s", ("x", 3))
        refused(app, "insert into orders values (%s, %s, %s, %s)", (99, 2, "2026-05-05", 1))
        with app.transaction():  # an explicit transaction, pinned to one server connection
            assert app.execute("select count(*) from customers").fetchone() == (3,)
    assert db.scalar("select count(*) from orders where customer_id = 3") == 2
    assert db.scalar("select name from customers where id = 3") == "Cy"
    assert db.scalar("select count(*) from orders where id = 99") == 0


def test_pyctl_through_pgbouncer_works_or_says_it_needs_a_direct_connection(db: Db, bouncer: Bouncer) -> None:
    placed = through(bouncer, "hold", "place", "3", "--case", "2026-CV-118", "--reason", "preserve")
    assert placed.exit_code == 0, placed.output
    hold_id = placed.stdout.strip()
    for args in (("status",), ("hold", "list"), ("hold", "verify", hold_id), ("ledger", "verify"), ("doctor",),
                 ("history", "3"), ("tables",)):
        result = through(bouncer, *args)
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, (args, result.output)
        assert "connection" not in result.output.lower() or "direct connection" in result.output, (args, result.output)
    assert through(bouncer, "status").exit_code == 0
    assert through(bouncer, "ledger", "verify").exit_code == 0
    installed = through(bouncer, "install", user="shop_owner")
    assert installed.exit_code == 0, installed.output
    released = through(bouncer, "hold", "release", hold_id, "--reason", "settled", "--reference", "order 7")
    assert released.exit_code == 0, released.output
    assert db.scalar("select count(*) from privacy.processing_restrictions where released_at is null") == 0
    watch = through(bouncer, "watch", "--idle-timeout", "1")
    assert watch.exit_code == 1
    lines = [line for line in watch.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "needs a direct connection" in lines[0], watch.output
    # ... and directly, watch works.
    direct = CliRunner().invoke(main, ["--dsn", db.dsn("steward_user"), "watch", "--idle-timeout", "1", "--limit", "1"],
                                catch_exceptions=False)
    assert direct.exit_code == 0, direct.output

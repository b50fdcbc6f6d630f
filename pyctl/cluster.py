"""Throwaway PostgreSQL clusters for `pyctl demo` and the test suite.

initdb refuses to run as root, so when we are root the server runs as an
unprivileged OS user (``postgres`` by default) in a directory under /tmp that
it owns; clients (this process, pg_dump, psql) connect over TCP on 127.0.0.1.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


class ClusterError(RuntimeError):
    """A throwaway cluster could not be created or started."""


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries: PATH, pg_config, then Debian's place."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if debian:
        return Path(debian[-1]).parent
    raise ClusterError(
        "PostgreSQL server binaries not found: put initdb on PATH, install pg_config, "
        "or install the Debian package postgresql"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """The OS user to run the server as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("PYCTL_SERVER_OS_USER", "postgres")


class Cluster:
    """A PostgreSQL cluster in a temporary directory, removed by :meth:`destroy`."""

    def __init__(self, bindir: Path | None = None, *, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.os_user = _server_user()
        self.base = Path(tempfile.mkdtemp(prefix="pyctl-pg-", dir="/tmp"))
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        self.port = free_port()
        self.superuser = "postgres"
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "off",
            "max_connections": "100",
        }
        if settings:
            self.settings.update(settings)
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o755)

    # -- running commands as the server's OS user -------------------------------
    def _cmd(self, args: list[str]) -> list[str]:
        if self.os_user:
            return ["runuser", "-u", self.os_user, "--", *args]
        return args

    def run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._cmd(args), capture_output=True, text=True, check=False, cwd="/")
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    # -- lifecycle -----------------------------------------------------------------
    def init(self) -> Cluster:
        self.run([self.bin("initdb"), "-D", str(self.datadir), "-U", self.superuser, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync"])
        with open(self.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")
        return self

    def start(self) -> Cluster:
        self.run([self.bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", f"-p {self.port}", "start"])
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self.run([self.bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"], check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def promote(self) -> None:
        """Promote a follower: it leaves recovery on a new timeline, a fork from then on."""
        self.run([self.bin("pg_ctl"), "-D", str(self.datadir), "-w", "promote"])

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user or self.superuser}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.run([self.bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                  capture_output=True, check=False)
            if proc.returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError(f"server on port {self.port} did not become ready; see {self.logfile}")

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def start_cluster(settings: dict[str, str] | None = None) -> Cluster:
    """Create and start a throwaway cluster; destroy it again if it fails to start."""
    cluster = Cluster(settings=settings)
    try:
        cluster.init().start()
        cluster.wait_ready()
    except BaseException:
        log = cluster.log_text()
        cluster.destroy()
        if log:
            raise ClusterError(f"server failed to start:\n{log[-2000:]}") from None
        raise
    return cluster


def copy_of(primary: Cluster, *, follower: bool = True) -> Cluster:
    """A base backup of PRIMARY (pg_basebackup), started as a streaming follower
    (follower=True, with -R) or as an independent primary: a fork."""
    copy = Cluster(primary.bindir, settings=dict(primary.settings))
    try:
        args = [copy.bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", primary.superuser,
                "-D", str(copy.datadir), "-X", "stream", "--no-sync", "-c", "fast"]
        copy.run([*args, "-R"] if follower else args)
        with open(copy.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write(f"unix_socket_directories = '{copy.base}'\n")
        copy.start()
        copy.wait_ready()
    except BaseException:
        copy.destroy()
        raise
    return copy


CITUS_SETTINGS = {
    "shared_preload_libraries": "'citus'",
    # Multi-node writes commit with two-phase commit: every node needs prepared transactions.
    "max_prepared_transactions": "100",
    "max_connections": "200",
    # Shards hold little in tests and benchmarks: fewer of them keep DDL fast.
    "citus.shard_count": "4",
}


def citus_installed(bindir: Path | None = None) -> bool:
    """Whether the Citus extension is installed for the PostgreSQL of BINDIR."""
    bindir = bindir or find_bindir()
    pg_config = bindir / "pg_config"
    sharedir = None
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=False)
        sharedir = Path(out.stdout.strip()) if out.returncode == 0 else None
    if sharedir is None:
        sharedir = Path("/usr/share/postgresql") / bindir.parent.name
    return (sharedir / "extension" / "citus.control").exists()


class CitusCluster:
    """A Citus cluster on one machine: a coordinator and WORKERS workers, each a
    throwaway :class:`Cluster` with Citus preloaded; removed by :meth:`destroy`."""

    def __init__(self, workers: int = 2, settings: dict[str, str] | None = None) -> None:
        conf = dict(CITUS_SETTINGS)
        if settings:
            conf.update(settings)
        self.nodes: list[Cluster] = []
        try:
            for _ in range(workers + 1):
                self.nodes.append(start_cluster(dict(conf)))
        except BaseException:
            self.destroy()
            raise

    @property
    def coordinator(self) -> Cluster:
        return self.nodes[0]

    @property
    def workers(self) -> list[Cluster]:
        return self.nodes[1:]

    def sql_all(self, statement: str, dbname: str = "postgres") -> None:
        """Run STATEMENT as the superuser on every node (roles are per node)."""
        for node in self.nodes:
            with psycopg.connect(node.dsn(dbname), autocommit=True) as conn:
                conn.execute(statement.encode())

    def create_database(self, name: str, owner: str = "postgres") -> None:
        """A database on every node with Citus in it, the workers added to the
        coordinator's metadata (Citus does not propagate CREATE DATABASE)."""
        for node in self.nodes:
            with psycopg.connect(node.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'create database "{name}" owner "{owner}"'.encode())
            with psycopg.connect(node.dsn(name), autocommit=True) as conn:
                conn.execute("create extension citus")
                conn.execute(f'alter schema public owner to "{owner}"'.encode())
        with psycopg.connect(self.coordinator.dsn(name), autocommit=True) as conn:
            conn.execute("select citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,))
            for worker in self.workers:
                conn.execute("select citus_add_node('127.0.0.1', %s)", (worker.port,))

    def drop_database(self, name: str) -> None:
        for node in self.nodes:
            with psycopg.connect(node.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)'.encode())

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


def start_citus_cluster(workers: int = 2, settings: dict[str, str] | None = None) -> CitusCluster:
    """Start a coordinator and WORKERS workers with Citus (see :class:`CitusCluster`)."""
    if not citus_installed():
        raise ClusterError("Citus is not installed for this PostgreSQL (../shared/citus/build installs it)")
    return CitusCluster(workers, settings)

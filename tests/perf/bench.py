#!/usr/bin/env python3
"""What the privacy toolkit costs (issue 7): pgbench against the same data with and without it.

    .venv/bin/python tests/perf/bench.py                 # full scale, about 20 minutes
    .venv/bin/python tests/perf/bench.py --scale small   # smoke test, under 2 minutes

Starts a throwaway PostgreSQL cluster (pyctl.cluster), loads the same shop into a
baseline database and, by CREATE DATABASE ... TEMPLATE, into a toolkit database
where it is protected; runs every workload with pgbench as the application role,
toolkit and baseline alternating; times placement and release of holds and
restrictions at two table sizes; prints the result table and writes it, with the
EXPLAIN ANALYZE profiles, to tests/perf/results/latest.json. See tests/perf/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import attribution  # tests/perf/attribution.py, next to this file
import psycopg

import pyctl
from pyctl import install
from pyctl.cluster import Cluster, start_cluster
from pyctl.resources import migrations_dir, sql_files

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
RESULTS = HERE / "results"

APP = "app"  # the application's login role: subject to every rule
STEWARD = "steward_user"  # places and releases holds and restrictions
CLIENTS = 2
NOISY = 0.10  # share of the machine's CPU other processes may take during a run before it is repeated
MAX_RETRIES = 1
PERF_WORKLOADS = ("pk_direct", "update", "insert", "delete", "tpcb")  # not the scans: parallel workers are not sampled
QUIET_WAIT = 10.0  # seconds to wait, before a pair, for other processes to go quiet

BASE, TK = "bench_base", "bench_tk"  # the two databases every workload compares
R_LOW, R_HIGH = "bench_r_low", "bench_r_high"  # toolkit, few and many active restrictions
TENTH = "bench_tenth"  # toolkit, a tenth of the rows: placement must not care

PROTECT_SHOP = """
select privacy.add_subject_type('customer', 'public.customers', 'id');
select privacy.protect_via('public.orders', 'customer_id');
select privacy.protect_via('public.order_items', 'order_id');
"""
PROTECT_PGBENCH = """
select privacy.add_subject_type('account', 'public.pgbench_accounts', 'aid');
select privacy.protect('public.pgbench_history', 'account', 'aid');
"""
GRANTS = f"""
grant select, insert, update, delete on all tables in schema public to {APP};
grant usage, select on all sequences in schema public to {APP};
"""


@dataclass(frozen=True)
class Scale:
    customers: int
    pgbench_scale: int
    runs: int
    duration: int  # seconds per pgbench run
    restrictions_low: int
    restrictions_high: int
    placements: int  # subjects whose hold and restriction placement/release are timed, per database
    shared_buffers: str
    slices: int = 1  # each run is this many interleaved pgbench runs per database

    @property
    def orders(self) -> int:
        return self.customers * 10

    @property
    def items(self) -> int:
        return self.orders * 2


SCALES = {
    "full": Scale(customers=100_000, pgbench_scale=10, runs=3, duration=10, restrictions_low=100,
                  restrictions_high=10_000, placements=500, shared_buffers="2GB", slices=5),
    "small": Scale(customers=10_000, pgbench_scale=2, runs=3, duration=1, restrictions_low=10,
                   restrictions_high=1_000, placements=100, shared_buffers="512MB"),
}


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    budget: float | None  # minimum median ratio toolkit/baseline
    explain: str = ""  # a representative statement ({o}: an unmarked order, {c}: an unmarked customer, {i}: an item)
    vacuum: tuple[str, ...] = ()  # tables to vacuum after each run (writes); not timed
    dml: bool = False


WORKLOADS = [
    Workload("pk_direct", "PK read, orders (direct)", 0.96,
             "select id, customer_id, placed_on, total, status from orders where id = {o}"),
    Workload("pk_2hop", "PK read, order_items (2-hop)", 0.92,
             "select id, order_id, product_id, quantity, price from order_items where id = {i}"),
    Workload("range", "index range, one customer's orders", None,
             "select id, placed_on, total, status from orders where customer_id = {c}"),
    Workload("agg", "full aggregate, orders", 0.60, "select count(*), sum(total) from orders"),
    Workload("agg_2hop", "full scan 2-hop, order_items", 0.50, "select count(*), sum(quantity * price) from order_items"),
    Workload("update", "single-row UPDATE, orders", 0.88, "update orders set total = total + 1 where id = {o}",
             ("orders",), dml=True),
    Workload("insert", "single-row INSERT, orders", None,  # budget: 0.97 x bench_floor.py's floor
             "insert into orders (customer_id, placed_on, total, status) values ({c}, current_date, 1234, 'new')",
             ("orders",), dml=True),
    Workload("delete", "single-row DELETE (+2 items cascade)", 0.92, "delete from orders where id = {o}",
             ("orders", "order_items"), dml=True),
    Workload("tpcb", "pgbench TPC-B-like", 0.82,
             "insert into pgbench_history (tid, bid, aid, delta, mtime) values (1, 1, {a}, 7, current_timestamp)",
             ("pgbench_accounts", "pgbench_tellers", "pgbench_branches"), dml=True),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CpuMeter:
    """CPU time of our cluster (postmaster and its children), pgbench and this process, against
    the whole machine's: what other processes took during a run shows up as foreign CPU."""

    def __init__(self, cluster: Cluster) -> None:
        self.postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        self.tick = float(os.sysconf("SC_CLK_TCK"))

    def _cluster_ticks(self) -> int:
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rindex(")") + 2:].split()
            if int(entry) == self.postmaster or int(fields[1]) == self.postmaster:
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total

    def children(self) -> int:
        n = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                        data = f.read()
                except OSError:
                    continue
                if int(data[data.rindex(")") + 2:].split()[1]) == self.postmaster:
                    n += 1
        return n

    def wait_children(self, count: int, timeout: float = 3.0) -> None:
        """Waits until the postmaster is back to COUNT children: the backends of a finished
        pgbench have exited and been reaped, so their CPU time is in the postmaster's."""
        deadline = time.monotonic() + timeout
        while self.children() > count and time.monotonic() < deadline:
            time.sleep(0.05)

    def sample(self) -> dict[str, float]:
        with open("/proc/stat", encoding="ascii") as f:
            cpu = [int(x) for x in f.readline().split()[1:9]]
        t = os.times()
        return {"wall": time.monotonic(), "busy": (cpu[0] + cpu[1] + cpu[2]) / self.tick, "steal": cpu[7] / self.tick,
                "server": self._cluster_ticks() / self.tick, "client": t.children_user + t.children_system,
                "self": t.user + t.system}

    def wait_quiet(self, max_wait: float) -> float:
        """Waits (up to MAX_WAIT seconds) until other processes leave the machine alone for a
        second; returns the share of the CPU they took in the last second measured."""
        deadline = time.monotonic() + max_wait
        while True:
            before = self.sample()
            time.sleep(1.0)
            share = self.delta(before, self.sample())["foreign_share"]
            if share <= NOISY / 2 or time.monotonic() > deadline:
                return share
            time.sleep(1.0)

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in before}
        ours = d["server"] + d["client"] + d["self"]
        cores = os.cpu_count() or 1
        return {"wall_s": d["wall"], "server_cpu_s": d["server"], "pgbench_cpu_s": d["client"],
                "foreign_cpu_s": max(0.0, d["busy"] - ours), "foreign_share": max(0.0, d["busy"] - ours) / (d["wall"] * cores),
                "steal_share": d["steal"] / (d["wall"] * cores)}


def held(key: int) -> bool:
    return key % 100 == 1


def restricted(key: int) -> bool:
    return key % 100 == 2


@dataclass
class Run:
    db: str
    tps: float
    transactions: int
    failed: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_us_per_tx(self) -> float:
        """Server plus pgbench CPU per transaction: what the work costs, whoever else runs."""
        return (self.cpu["server_cpu_s"] + self.cpu["pgbench_cpu_s"]) * 1e6 / max(1, self.transactions)


@dataclass
class Result:
    workload: str
    label: str
    budget: float | None
    toolkit: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    toolkit_cpu_us: list[float] = field(default_factory=list)  # CPU per transaction, server + pgbench
    baseline_cpu_us: list[float] = field(default_factory=list)
    retried: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(self.toolkit) / statistics.median(self.baseline)

    @property
    def run_ratios(self) -> list[float]:
        return [t / b for t, b in zip(self.toolkit, self.baseline, strict=True)]

    @property
    def cpu_ratio(self) -> float:
        """Baseline CPU per transaction / toolkit CPU per transaction: the ratio with other load on the machine factored out."""
        return statistics.median(self.baseline_cpu_us) / statistics.median(self.toolkit_cpu_us)

    @property
    def met(self) -> bool | None:
        return None if self.budget is None else self.ratio >= self.budget


class Bench:
    def __init__(self, cluster: Cluster, scale: Scale, protocol: str, workdir: Path) -> None:
        self.cluster = cluster
        self.scale = scale
        self.protocol = protocol
        self.workdir = workdir
        self.out: dict[str, Any] = {}
        self.meter = CpuMeter(cluster)
        self.retry_deadline = float("inf")

    # -- connections ----------------------------------------------------------------
    @contextmanager
    def conn(self, db: str, user: str = "postgres") -> Iterator[psycopg.Connection]:
        with psycopg.connect(self.cluster.dsn(db, user=user), autocommit=True) as conn:
            yield conn

    def sql(self, db: str, statement: str, user: str = "postgres") -> list[tuple[Any, ...]]:
        with self.conn(db, user) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    # -- building the databases -------------------------------------------------------
    def load_shop(self, db: str, customers: int) -> None:
        orders, items = customers * 10, customers * 20
        text = (HERE / "schema.sql").read_text(encoding="utf-8")
        for name, value in (("customers", customers), ("orders", orders), ("items", items)):
            text = text.replace("{" + name + "}", str(value))
        self.sql("postgres", f"create database {db}")
        self.sql(db, text)

    def pgbench_init(self, db: str) -> None:
        self.pgbench_cmd(["-i", "-q", "-I", "dtGvp", "-s", str(self.scale.pgbench_scale), db], user="postgres")

    def install(self, db: str, *, pgbench_tables: bool) -> None:
        install.install(self.cluster.dsn(db))
        self.sql(db, PROTECT_SHOP + (PROTECT_PGBENCH if pgbench_tables else ""))

    def place_many(self, db: str, kind: str, subject_type: str, keys: Iterable[int]) -> int:
        """Places a hold or restriction on each subject, 500 to a transaction, as the steward."""
        call = ("privacy.place_hold({t}, k::text, 'BENCH-HOLD', 'benchmark data set')" if kind == "hold"
                else "privacy.place_restriction({t}, k::text, 'accuracy', 'benchmark data set')").format(t=f"'{subject_type}'")
        keys = list(keys)
        with self.conn(db, STEWARD) as conn:
            for start in range(0, len(keys), 500):
                chunk = ",".join(str(k) for k in keys[start:start + 500])
                conn.execute(f"do $$ declare k bigint; begin foreach k in array array[{chunk}]::bigint[] loop "
                             f"perform {call}; end loop; end $$".encode())
        return len(keys)

    def active(self, db: str) -> dict[str, int]:
        rows = self.sql(db, "select subject_type || ' ' || kind, count(*) from privacy.processing_restrictions "
                            "where released_at is null group by 1 order by 1")
        return {k: int(v) for k, v in rows}

    def setup(self) -> None:
        s = self.scale
        t0 = time.monotonic()
        self.sql("postgres", f"create role {APP} login; create role {STEWARD} login")
        log(f"loading {s.customers:,} customers, {s.orders:,} orders, {s.items:,} order items, pgbench scale {s.pgbench_scale}")
        self.load_shop(BASE, s.customers)
        self.pgbench_init(BASE)
        self.sql(BASE, GRANTS)
        self.sql(BASE, "vacuum analyze")
        self.sql("postgres", f"create database {TK} template {BASE}")
        log(f"installing the toolkit into {TK} and protecting customers, orders, order_items, pgbench_accounts, pgbench_history")
        self.install(TK, pgbench_tables=True)
        self.sql("postgres", f"grant privacy_steward to {STEWARD}")
        customers = range(1, s.customers + 1)
        log(f"placing {s.customers // 100:,} customer holds")
        self.place_many(TK, "hold", "customer", [k for k in customers if held(k)])
        # The restriction-count variant: clones that differ only in how many
        # customers are restricted (same 1% held).
        for db in (R_LOW, R_HIGH):
            self.sql("postgres", f"create database {db} template {TK}")
        ordered = sorted((k for k in customers if 2 <= k % 100 <= 11), key=lambda k: (k % 100, k))
        log(f"placing {s.restrictions_low:,} restrictions in {R_LOW} and {s.restrictions_high:,} in {R_HIGH}")
        self.place_many(R_LOW, "restriction", "customer", ordered[:s.restrictions_low])
        self.place_many(R_HIGH, "restriction", "customer", ordered[:s.restrictions_high])
        accounts = range(1, 100_000 * s.pgbench_scale + 1)
        log(f"placing {s.customers // 100:,} customer restrictions and {len(accounts) // 50:,} account holds/restrictions in {TK}")
        self.place_many(TK, "restriction", "customer", [k for k in customers if restricted(k)])
        self.place_many(TK, "hold", "account", [k for k in accounts if held(k)])
        self.place_many(TK, "restriction", "account", [k for k in accounts if restricted(k)])
        tenth = s.customers // 10
        log(f"building {TENTH}: {tenth:,} customers, {tenth * 10:,} orders, {tenth * 20:,} order items, 1% held, 1% restricted")
        self.load_shop(TENTH, tenth)
        self.sql(TENTH, GRANTS)
        self.install(TENTH, pgbench_tables=False)
        self.place_many(TENTH, "hold", "customer", [k for k in range(1, tenth + 1) if held(k)])
        self.place_many(TENTH, "restriction", "customer", [k for k in range(1, tenth + 1) if restricted(k)])
        for db in (BASE, TK, R_LOW, R_HIGH, TENTH):
            self.sql(db, "vacuum analyze")
        self.sql("postgres", "checkpoint")
        sizes = {db: self.sql(db, "select pg_size_pretty(pg_database_size(current_database()))")[0][0]
                 for db in (BASE, TK, R_LOW, R_HIGH, TENTH)}
        self.out["databases"] = {
            db: {"size": sizes[db], "active": self.active(db) if db != BASE else {},
                 "rows": dict(self.sql(db, "select relname, reltuples::bigint from pg_class "
                                           "where relnamespace = 'public'::regnamespace and relkind = 'r' order by 1"))}
            for db in sizes
        }
        self.out["setup_seconds"] = round(time.monotonic() - t0, 1)
        log(f"setup done in {self.out['setup_seconds']} s: " + ", ".join(f"{db} {size}" for db, size in sizes.items()))

    def prewarm(self, *dbs: str) -> None:
        for db in dbs:
            self.sql(db, "create extension if not exists pg_prewarm; "
                         "select pg_prewarm(c.oid) from pg_class c "
                         "where c.relnamespace in (select oid from pg_namespace where nspname in ('public', 'privacy')) "
                         "and c.relkind in ('r', 'i')")

    # -- pgbench ------------------------------------------------------------------------
    def pgbench_cmd(self, args: list[str], user: str = APP) -> str:
        cmd = [self.cluster.bin("pgbench"), "-h", "127.0.0.1", "-p", str(self.cluster.port), "-U", user, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def script(self, workload: str) -> Path:
        if workload != "tpcb":
            return SCRIPTS / f"{workload}.sql"
        path = self.workdir / "tpcb.sql"
        if not path.exists():
            builtin = subprocess.run([self.cluster.bin("pgbench"), "--show-script=tpcb-like"], capture_output=True,
                                     text=True, check=True).stderr
            lines = [ln for ln in builtin.splitlines() if not ln.startswith("--")]
            aid = next(i for i, ln in enumerate(lines) if ln.startswith("\\set aid "))
            # Accounts with aid % 100 = 1 are held and = 2 restricted: step over them, in both
            # databases, so that every transaction does the same work (a held account's
            # UPDATE is refused, a restricted one's history INSERT too).
            lines[aid + 1:aid + 1] = ["\\set m :aid % 100", "\\set aid :aid + case when :m = 1 or :m = 2 then 2 else 0 end"]
            path.write_text("-- pgbench --show-script=tpcb-like, stepping over held and restricted accounts\n"
                            + "\n".join(lines) + "\n", encoding="utf-8")
        return path

    def pgbench_args(self, db: str, workload: str, duration: int) -> list[str]:
        s = self.scale
        variables = {"ncust": s.customers, "norders": s.orders, "nitems": s.items, "scale": s.pgbench_scale}
        args = [self.cluster.bin("pgbench"), "-h", "127.0.0.1", "-p", str(self.cluster.port), "-U", APP,
                "-n", "-c", str(CLIENTS), "-j", str(CLIENTS), "-T", str(duration), "-M", self.protocol, "-f", str(self.script(workload))]
        for k, v in variables.items():
            args += ["-D", f"{k}={v}"]
        return [*args, db]

    def parse_pgbench(self, db: str, workload: str, text: str, cpu: dict[str, float]) -> Run:
        tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", text, re.M)
        done = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
        failed = re.search(r"^number of failed transactions: (\d+)", text, re.M)
        if not tps or not done:
            raise RuntimeError(f"cannot read pgbench's output for {workload} on {db}:\n{text}")
        run = Run(db, float(tps.group(1)), int(done.group(1)), int(failed.group(1)) if failed else 0, cpu)
        if run.failed:
            raise RuntimeError(f"{run.failed} failed transactions in {workload} on {db}:\n{text}")
        return run

    def pgbench(self, db: str, workload: str, duration: int) -> Run:
        idle = self.meter.children()
        before = self.meter.sample()
        proc = subprocess.run(self.pgbench_args(db, workload, duration), capture_output=True, text=True, check=False)
        self.meter.wait_children(idle)
        cpu = self.meter.delta(before, self.meter.sample())
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed ({proc.returncode}) for {workload} on {db}:\n{proc.stdout}\n{proc.stderr}")
        return self.parse_pgbench(db, workload, proc.stdout + proc.stderr, cpu)

    def after_run(self, db: str, w: Workload) -> None:
        if w.key == "insert":
            self.sql(db, f"delete from orders where id > {self.scale.orders}")
        if w.key == "tpcb":
            self.sql(db, "truncate pgbench_history")
        if w.vacuum:
            self.sql(db, "vacuum " + ", ".join(w.vacuum))

    def pair(self, w: Workload, first: str, second: str, label: str) -> tuple[Run, Run, int]:
        """One run in each database: SLICES short pgbench runs per database, interleaved
        first, second, second, first, ... so that whatever else loads the machine meanwhile
        (and any drift) falls on both alike; the run's TPS is its transactions over its
        measured time. Repeated (up to MAX_RETRIES times, within the time budget) while other
        processes took more than NOISY of the CPU, keeping the quietest attempt."""
        attempts: list[tuple[Run, Run]] = []
        slices = self.scale.slices
        while True:
            if time.monotonic() < self.retry_deadline:
                self.meter.wait_quiet(QUIET_WAIT)
            parts: dict[str, list[Run]] = {first: [], second: []}
            for i in range(slices):
                for db in ((first, second) if i % 2 == 0 else (second, first)):
                    parts[db].append(self.pgbench(db, w.key, max(1, self.scale.duration // slices)))
            for db in (first, second):
                self.after_run(db, w)
            a, b = (self.merge(parts[db]) for db in (first, second))
            attempts.append((a, b))
            noise = max(a.cpu["foreign_share"], b.cpu["foreign_share"])
            if noise <= NOISY or len(attempts) > MAX_RETRIES or time.monotonic() > self.retry_deadline:
                break
            log(f"{label}: other processes took {noise:.0%} of the CPU during the pair; running it again")
        best = min(attempts, key=lambda ab: max(ab[0].cpu["foreign_share"], ab[1].cpu["foreign_share"]))
        return best[0], best[1], len(attempts) - 1

    @staticmethod
    def merge(parts: list[Run]) -> Run:
        """Slices of one run as one: transactions over the time pgbench measured them in."""
        tx = sum(r.transactions for r in parts)
        seconds = sum(r.transactions / r.tps for r in parts if r.tps > 0)
        cpu = {k: sum(r.cpu[k] for r in parts) for k in ("wall_s", "server_cpu_s", "pgbench_cpu_s", "foreign_cpu_s")}
        cores = os.cpu_count() or 1
        cpu["foreign_share"] = cpu["foreign_cpu_s"] / (cpu["wall_s"] * cores)
        cpu["steal_share"] = sum(r.cpu["steal_share"] * r.cpu["wall_s"] for r in parts) / cpu["wall_s"]
        return Run(parts[0].db, tx / seconds if seconds else 0.0, tx, sum(r.failed for r in parts), cpu)

    def compare(self, workloads: list[Workload]) -> list[Result]:
        results = {w.key: Result(w.key, w.label, w.budget) for w in workloads}
        runs: list[dict[str, Any]] = []
        for n in range(self.scale.runs):
            for w in workloads:
                # Alternate which database goes first, so drift cancels out.
                order = (TK, BASE) if n % 2 == 0 else (BASE, TK)
                first, second, retried = self.pair(w, *order, f"run {n + 1} {w.key}")
                r = results[w.key]
                r.retried += retried
                for run in (first, second):
                    (r.toolkit if run.db == TK else r.baseline).append(run.tps)
                    (r.toolkit_cpu_us if run.db == TK else r.baseline_cpu_us).append(run.cpu_us_per_tx)
                    runs.append({"run": n + 1, "workload": w.key, **asdict(run), "cpu_us_per_tx": run.cpu_us_per_tx})
                log(f"run {n + 1}/{self.scale.runs} {w.key:10} toolkit {r.toolkit[-1]:10.1f} tps   "
                    f"baseline {r.baseline[-1]:10.1f} tps   ratio {r.toolkit[-1] / r.baseline[-1]:.3f}   "
                    f"cpu/tx ratio {r.baseline_cpu_us[-1] / r.toolkit_cpu_us[-1]:.3f}   "
                    f"foreign cpu {max(first.cpu['foreign_share'], second.cpu['foreign_share']):.0%}")
        self.out["runs"] = runs
        return list(results.values())

    def restriction_count(self) -> dict[str, Any]:
        w = next(x for x in WORKLOADS if x.key == "pk_direct")
        low: list[Run] = []
        high: list[Run] = []
        retried = 0
        for n in range(self.scale.runs):
            first, second, r = self.pair(w, *((R_LOW, R_HIGH) if n % 2 == 0 else (R_HIGH, R_LOW)), f"run {n + 1} restrictions")
            retried += r
            for run in (first, second):
                (low if run.db == R_LOW else high).append(run)
            log(f"run {n + 1}/{self.scale.runs} pk_direct  {self.scale.restrictions_low:,} restrictions {low[-1].tps:10.1f} tps   "
                f"{self.scale.restrictions_high:,} restrictions {high[-1].tps:10.1f} tps")
        ratio = statistics.median(r.tps for r in high) / statistics.median(r.tps for r in low)
        cpu_ratio = statistics.median(r.cpu_us_per_tx for r in low) / statistics.median(r.cpu_us_per_tx for r in high)
        return {"restrictions_low": self.scale.restrictions_low, "restrictions_high": self.scale.restrictions_high,
                "tps_low": [r.tps for r in low], "tps_high": [r.tps for r in high],
                "cpu_us_low": [r.cpu_us_per_tx for r in low], "cpu_us_high": [r.cpu_us_per_tx for r in high],
                "ratio_high_low": ratio, "cpu_ratio_high_low": cpu_ratio, "retried": retried,
                "budget": "within 5%", "met": abs(ratio - 1) <= 0.05,
                "active_low": self.active(R_LOW), "active_high": self.active(R_HIGH)}

    # -- placement and release -------------------------------------------------------------
    def placement(self) -> dict[str, Any]:
        """Times place/release of a hold and of a restriction on the same subjects' positions in
        a database with all rows and one with a tenth of them, interleaved; each call is its own
        transaction (autocommit), timed at the client, commit included."""
        n = self.scale.placements
        sizes = {TK: self.scale.customers, TENTH: self.scale.customers // 10}
        ops = ("place_hold", "prove_hold", "release_hold", "place_restriction", "release_restriction")
        times: dict[str, dict[str, list[float]]] = {db: {op: [] for op in ops} for db in sizes}
        steps: dict[str, list[float]] = {db: [] for db in sizes}
        conns = {db: psycopg.connect(self.cluster.dsn(db, user=STEWARD), autocommit=True) for db in sizes}
        row = conns[TK].execute("select to_regprocedure('privacy.approve_release(uuid, text)') is not null").fetchone()
        lifecycle = bool(row and row[0])
        row = conns[TK].execute("select to_regprocedure('privacy.prove_hold(uuid)') is not null").fetchone()
        prove = bool(row and row[0])
        if not prove:
            ops = tuple(op for op in ops if op != "prove_hold")
        try:
            for i in range(n):
                for db, customers in sizes.items():
                    # Customers with id % 100 >= 50 have neither; spread over the whole table.
                    block = (i * (customers // 100)) // n
                    key = str(block * 100 + 50 + i % 50)
                    conn = conns[db]

                    def timed(op: str, statement: str, params: tuple[Any, ...], conn: psycopg.Connection = conn,
                              db: str = db) -> Any:
                        t = time.perf_counter()
                        row = conn.execute(statement, params, prepare=True).fetchone()
                        times[db][op].append((time.perf_counter() - t) * 1000)
                        return row[0] if row else None

                    hid = timed("place_hold", "select privacy.place_hold('customer', %s, 'BENCH-T', 'timing')", (key,))
                    # The hold's proof, in the transaction after (where the toolkit has prove_hold).
                    if prove:
                        timed("prove_hold", "select privacy.prove_hold(%s)", (hid,))
                    timed("release_hold", "select privacy.release_hold(%s, 'timing done', 'case closed')", (hid,))
                    rid = timed("place_restriction", "select privacy.place_restriction('customer', %s, 'accuracy', 'timing')", (key,))
                    if lifecycle:
                        # An accuracy restriction is released once verified, the subject notified
                        # and the approval recorded (Art. 18 lifecycle): bookkeeping, timed apart.
                        t = time.perf_counter()
                        with conn.transaction():
                            conn.execute("select privacy.verify_restriction(%s, 'address checked')", (rid,), prepare=True)
                            conn.execute("select privacy.notify_subject(%s, 'email')", (rid,), prepare=True)
                            conn.execute("select privacy.approve_release(%s, 'signed form')", (rid,), prepare=True)
                        steps[db].append((time.perf_counter() - t) * 1000)
                    timed("release_restriction", "select privacy.release_restriction(%s, 'timing done')", (rid,))
        finally:
            for conn in conns.values():
                conn.close()
        out: dict[str, Any] = {"subjects": n, "rows_per_subject": {"customers": 1, "orders": 10, "order_items": 20},
                               "databases": {db: {"orders": sizes[db] * 10} for db in sizes}}
        for db in sizes:
            for op in ops:
                xs = sorted(times[db][op])
                out["databases"][db][op] = {"p50_ms": statistics.median(xs), "p99_ms": xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))],
                                            "max_ms": xs[-1]}
            if steps[db]:
                xs = sorted(steps[db])
                out["databases"][db]["restriction_lifecycle_steps"] = {
                    "p50_ms": statistics.median(xs), "p99_ms": xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))], "max_ms": xs[-1],
                    "note": "verify + notify + approve, one transaction, before each release_restriction; not part of the budget"}
        out["met"] = all(out["databases"][db][op]["p50_ms"] <= 5 for db in sizes for op in ops if op != "prove_hold")
        out["growth_p50"] = {op: out["databases"][TK][op]["p50_ms"] / out["databases"][TENTH][op]["p50_ms"] for op in ops}
        return out

    def placement_profile(self, subjects: int = 50) -> dict[str, Any]:
        """What placement and release spend their time in: the same cycle on SUBJECTS more
        subjects with track_functions = 'pl', per call of each toolkit function."""
        self.sql("postgres", f"alter database {TK} set track_functions = 'pl'")
        try:
            self.sql(TK, "select pg_stat_reset()")
            n = self.scale.customers // 100
            with self.conn(TK, STEWARD) as conn:
                lifecycle = conn.execute("select to_regprocedure('privacy.approve_release(uuid, text)') is not null").fetchone()
                for i in range(subjects):
                    key = str((i * n // subjects) * 100 + 75)
                    row = conn.execute("select privacy.place_hold('customer', %s, 'BENCH-P', 'profile')", (key,)).fetchone()
                    assert row
                    conn.execute("select privacy.release_hold(%s, 'profile done', 'case closed')", (row[0],))
                    row = conn.execute("select privacy.place_restriction('customer', %s, 'accuracy', 'profile')", (key,)).fetchone()
                    assert row
                    if lifecycle and lifecycle[0]:
                        with conn.transaction():
                            conn.execute("select privacy.verify_restriction(%s, 'checked')", (row[0],))
                            conn.execute("select privacy.notify_subject(%s, 'email')", (row[0],))
                            conn.execute("select privacy.approve_release(%s, 'signed')", (row[0],))
                    conn.execute("select privacy.release_restriction(%s, 'profile done')", (row[0],))
            time.sleep(1.0)
            rows = self.sql(TK, "select funcname, calls, total_time, self_time from pg_stat_user_functions "
                                "where schemaname = 'privacy' and calls > 0 order by total_time desc")
        finally:
            self.sql("postgres", f"alter database {TK} reset track_functions")
        return {"subjects": subjects, "functions": [
            {"function": f"privacy.{f}", "calls": c, "total_ms_per_call": tt / c, "self_ms_per_call": st / c,
             "total_ms_per_subject": tt / subjects} for f, c, tt, st in rows]}

    # -- profiles -------------------------------------------------------------------------------
    def perf_attribution(self, workloads: list[Workload], seconds: int = 4) -> dict[str, Any]:
        """perf samples of the pgbench backends, by what PostgreSQL was doing (attribution.py)."""
        out: dict[str, Any] = {}
        for w in workloads:
            if w.key not in PERF_WORKLOADS:
                continue
            out[w.key] = {}
            for db in (TK, BASE):
                state: dict[str, Any] = {}

                def start(duration: int, db: str = db, w: Workload = w, state: dict[str, Any] = state) -> subprocess.Popen[str]:
                    state["idle"] = self.meter.children()
                    state["before"] = self.meter.sample()
                    return subprocess.Popen(self.pgbench_args(db, w.key, duration), stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)

                def pids(db: str = db) -> list[int]:
                    return [r[0] for r in self.sql("postgres", "select pid from pg_stat_activity where application_name = 'pgbench' "
                                                               f"and datname = '{db}'")]

                def finish(proc: subprocess.Popen[str], db: str = db, w: Workload = w,
                           state: dict[str, Any] = state) -> tuple[float, float]:
                    text, _ = proc.communicate()
                    self.meter.wait_children(state["idle"])
                    run = self.parse_pgbench(db, w.key, text, self.meter.delta(state["before"], self.meter.sample()))
                    self.after_run(db, w)
                    return run.tps, run.cpu["server_cpu_s"] * 1e6 / max(1, run.transactions)

                self.meter.wait_quiet(QUIET_WAIT)
                out[w.key][db] = attribution.profile(start, pids, seconds, finish)
        return out

    def params(self) -> dict[str, int]:
        s = self.scale
        o = s.orders // 2 + 5
        while held((o - 1) % s.customers + 1) or restricted((o - 1) % s.customers + 1):
            o += 1
        c = s.customers // 2 + 5
        a = 50_000 * s.pgbench_scale + 5
        return {"o": o, "c": c, "i": s.items // 2 + 5, "a": a}

    def explain(self, workloads: list[Workload]) -> dict[str, dict[str, str]]:
        """EXPLAIN (ANALYZE, BUFFERS) of each workload's statement as the application, in both
        databases; DML inside a transaction that rolls back."""
        params = self.params()
        out: dict[str, dict[str, str]] = {}
        for w in workloads:
            statement = w.explain.format(**params)
            out[w.key] = {"statement": statement}
            for db in (TK, BASE):
                with self.conn(db, APP) as conn:
                    for _ in range(3):  # warm the caches and the plan, like the runs
                        with conn.transaction(force_rollback=True):
                            conn.execute(statement.encode())
                    with conn.transaction(force_rollback=True):
                        rows = conn.execute(f"explain (analyze, buffers) {statement}".encode()).fetchall()
                out[w.key][db] = "\n".join(r[0] for r in rows)
        return out

    def function_profile(self, workloads: list[Workload]) -> dict[str, Any]:
        """Which toolkit function costs what per transaction: a short extra pgbench run per DML
        workload with track_functions = 'pl' (not part of the timed runs)."""
        out: dict[str, Any] = {}
        self.sql("postgres", f"alter database {TK} set track_functions = 'pl'")
        try:
            for w in workloads:
                if not w.dml:
                    continue
                self.sql(TK, "select pg_stat_reset()")
                run = self.pgbench(TK, w.key, 3 if self.scale.duration >= 5 else 1)
                time.sleep(1.0)  # let the pgbench backends' statistics arrive
                rows = self.sql(TK, "select schemaname || '.' || funcname, calls, total_time, self_time "
                                    "from pg_stat_user_functions where calls > 0 order by total_time desc")
                scans = self.sql(TK, "select relname, seq_scan, coalesce(idx_scan, 0) from pg_stat_user_tables "
                                     "where schemaname = 'privacy' and (seq_scan > 0 or idx_scan > 0) order by 1")
                self.after_run(TK, w)
                out[w.key] = {"transactions": run.transactions, "tps": run.tps, "functions": [
                    {"function": f, "calls_per_tx": c / run.transactions, "total_us_per_tx": tt * 1000 / run.transactions,
                     "self_us_per_tx": st * 1000 / run.transactions} for f, c, tt, st in rows],
                    "privacy_table_scans_per_tx": {r: {"seq": sq / run.transactions, "index": ix / run.transactions}
                                                   for r, sq, ix in scans}}
        finally:
            self.sql("postgres", f"alter database {TK} reset track_functions")
        return out


# -- reporting ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
        info["cpu"] = model.group(1).strip() if model else "unknown"
    except OSError:
        info["cpu"] = "unknown"
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


def toolkit_source() -> dict[str, Any]:
    """Which toolkit was measured: the installed package's version and a hash of its sql/ and
    migrations/, and the repository's commit (the working tree may differ from it)."""
    digest = hashlib.sha256()
    for path in [*sql_files(), *sorted(Path(migrations_dir()).glob("*"))]:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    git = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False)
    return {"version": pyctl.__version__, "sql_sha256": digest.hexdigest()[:16], "repository": git.stdout.strip() or None}


def fmt_runs(xs: list[float]) -> str:
    return " ".join(f"{x:.0f}" if x >= 100 else f"{x:.1f}" for x in xs)


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def report(out: dict[str, Any]) -> str:
    lines: list[str] = []
    m, s = out["machine"], out["scale"]
    lines.append(f"pyctl benchmark, scale {out['scale_name']}: {s['customers']:,} customers, {s['customers'] * 10:,} orders, "
                 f"{s['customers'] * 20:,} order items, pgbench scale {s['pgbench_scale']}; 1% of customers held, 1% restricted")
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gb', '?')} GB; {out['postgres']}")
    lines.append(f"pgbench -c {CLIENTS} -j {CLIENTS} -M {out['protocol']} over TCP as the application role; per workload {s['runs']} runs "
                 f"of {s['duration']} s in each database, each run {s.get('slices', 1)} interleaved slices (toolkit, baseline, baseline, "
                 "toolkit, ...)")
    lines.append(f"toolkit {out['toolkit']['version']} (sql {out['toolkit']['sql_sha256']}, repository {out['toolkit']['repository']}); "
                 f"settings {', '.join(f'{k}={v}' for k, v in out['settings'].items())}")
    lines.append("")
    header = (f"| {'workload':38} | {'budget':>6} | {'toolkit TPS (runs)':>24} | {'baseline TPS (runs)':>24} | {'ratio':>5} | "
              f"{'verdict':7} | {'CPU/tx ratio':>12} |")
    lines += [header, "|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|"]
    for r in out["workloads"]:
        budget = f">={r['budget']:.2f}" if r["budget"] is not None else "-"
        lines.append(f"| {r['label']:38} | {budget:>6} | {fmt_runs(r['toolkit']):>24} | {fmt_runs(r['baseline']):>24} | "
                     f"{r['ratio']:5.3f} | {verdict(r['met']):7} | {r['cpu_ratio']:12.3f} |")
    rc = out.get("restriction_count")
    if rc:
        label = f"PK read, {rc['restrictions_high']:,} vs {rc['restrictions_low']:,} restrictions"
        lines.append(f"| {label:38} | {'+-5%':>6} | {fmt_runs(rc['tps_high']):>24} | {fmt_runs(rc['tps_low']):>24} | "
                     f"{rc['ratio_high_low']:5.3f} | {verdict(rc['met']):7} | {rc['cpu_ratio_high_low']:12.3f} |")
    lines.append("")
    lines.append("ratio: median toolkit TPS / median baseline TPS (the budget). CPU/tx ratio: median baseline / median toolkit CPU "
                 "time (server + pgbench) per transaction, a cross-check that other load on the machine does not move.")
    noisy = [(r["workload"], r["retried"]) for r in out["workloads"] if r["retried"]]
    if noisy:
        lines.append("pairs repeated because other processes took over " + f"{NOISY:.0%} of the CPU: "
                     + ", ".join(f"{k} {n}x" for k, n in noisy))
    pl = out.get("placement")
    if pl:
        lines.append("")
        lines.append(f"placement and release, {pl['subjects']} subjects per database (each with 1 customer, 10 orders, 20 items), "
                     "one transaction per call, timed at the client; budget p50 <= 5 ms, not growing with table size")
        lines.append("")
        dbs = list(pl["databases"])
        head = "| operation           | " + " | ".join(f"{pl['databases'][db]['orders']:>9,} orders p50 / p99 ms" for db in dbs) + \
            " | p50 growth | verdict |"
        lines += [head, "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"]
        for op in ("place_hold", "prove_hold", "release_hold", "place_restriction", "release_restriction"):
            if op not in pl["growth_p50"]:
                continue
            cells = " | ".join(f"{pl['databases'][db][op]['p50_ms']:>15.2f} / {pl['databases'][db][op]['p99_ms']:>7.2f}" for db in dbs)
            ok = all(pl["databases"][db][op]["p50_ms"] <= 5 for db in dbs)
            # (The proof runs after the hold is in force, in its own transaction: reported, not budgeted.)
            lines.append(f"| {op:19} | {cells} | {pl['growth_p50'][op]:>9.2f}x | {'-' if op == 'prove_hold' else verdict(ok):7} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--runs", type=int, help="alternating runs per workload (default: the scale's)")
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default: the scale's)")
    parser.add_argument("--protocol", choices=("simple", "extended", "prepared"), default="prepared",
                        help="pgbench query protocol (default: prepared, as most drivers and pools run)")
    parser.add_argument("--only", help="comma-separated workload keys to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: restrictions,placement,explain,profile")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--perf", action="store_true", help="also attribute the server's CPU per transaction with perf (needs root)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running and print how to reach it")
    args = parser.parse_args(argv)

    scale = SCALES[args.scale]
    scale = Scale(**{**asdict(scale), **{k: v for k, v in (("runs", args.runs), ("duration", args.duration)) if v}})
    workloads = [w for w in WORKLOADS if not args.only or w.key in args.only.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    started = time.monotonic()
    cluster = start_cluster(settings={
        "shared_buffers": scale.shared_buffers,
        "autovacuum": "off",  # the benchmark vacuums both databases itself, between runs
        "max_wal_size": "'8GB'",
        "checkpoint_timeout": "'1h'",
    })
    try:
        with tempfile.TemporaryDirectory(prefix="pyctl-bench-") as workdir:
            bench = Bench(cluster, scale, args.protocol, Path(workdir))
            # Noisy pairs are repeated only while the whole benchmark stays within its time budget.
            bench.retry_deadline = started + 17 * 60 if args.scale == "full" else 0.0  # the smoke test never waits
            out = bench.out
            out.update({"scale_name": args.scale, "scale": asdict(scale), "protocol": args.protocol, "clients": CLIENTS,
                        "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            out["postgres"] = bench.sql("postgres", "select version()")[0][0].split(" on ")[0]
            out["toolkit"] = toolkit_source()
            out["settings"] = dict(bench.sql("postgres", "select name, setting || coalesce(unit, '') from pg_settings where name in "
                                                         "('shared_buffers', 'fsync', 'synchronous_commit', 'autovacuum', 'jit', "
                                                         "'max_parallel_workers_per_gather', 'work_mem') order by 1"))
            bench.setup()
            bench.prewarm(BASE, TK)
            log(f"comparing {len(workloads)} workloads: {scale.runs} runs x 2 databases x {scale.duration} s")
            results = bench.compare(workloads)
            out["workloads"] = [{**asdict(r), "ratio": r.ratio, "run_ratios": r.run_ratios, "cpu_ratio": r.cpu_ratio, "met": r.met}
                                for r in results]
            if "restrictions" not in skip:
                bench.prewarm(R_LOW, R_HIGH)
                log("PK read with few and with many active restrictions")
                out["restriction_count"] = bench.restriction_count()
            if "placement" not in skip:
                log(f"timing placement and release on {scale.placements} subjects in {TK} and {TENTH}")
                out["placement"] = bench.placement()
                out["placement_profile"] = bench.placement_profile()
            if "explain" not in skip:
                log("EXPLAIN ANALYZE of every workload in both databases")
                out["explain"] = bench.explain(workloads)
            if "profile" not in skip:
                log("per-function profile of the DML workloads (track_functions)")
                out["function_profile"] = bench.function_profile(workloads)
            if args.perf:
                why = attribution.available()
                if why:
                    log(f"no perf attribution: {why}")
                else:
                    log("perf attribution of the server's CPU per transaction")
                    out["perf"] = bench.perf_attribution(workloads)
            out["total_seconds"] = round(time.monotonic() - started, 1)
    except BaseException:
        if args.keep:
            print(f"cluster kept: psql 'host=127.0.0.1 port={cluster.port} user=postgres dbname={TK}'", file=sys.stderr)
        else:
            cluster.destroy()
        raise
    if args.keep:
        print(f"cluster kept: psql 'host=127.0.0.1 port={cluster.port} user=postgres dbname={TK}'; "
              f"stop it with: runuser -u postgres -- {cluster.bin('pg_ctl')} -D {cluster.datadir} stop", file=sys.stderr)
    else:
        cluster.destroy()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(report(out))
    print_details(out)
    print(f"\n(total {out['total_seconds']} s; JSON written to {args.output})")
    missed = [r["workload"] for r in out["workloads"] if r["met"] is False]
    if out.get("restriction_count", {}).get("met") is False:
        missed.append("restriction_count")
    if out.get("placement", {}).get("met") is False:
        missed.append("placement")
    return 1 if missed else 0


def print_details(out: dict[str, Any]) -> None:
    """Everything else in the JSON, readable: the profiles behind the ratios."""
    pp = out.get("placement_profile")
    if pp:
        print(f"\nplacement and release, by toolkit function (track_functions = 'pl', {pp['subjects']} more subjects in {TK}; "
              "place + release of a hold and of a restriction per subject)")
        print(f"    {'function':40} {'calls':>6} {'total ms/call':>14} {'self ms/call':>13} {'total ms/subject':>17}")
        for f in pp["functions"][:25]:
            print(f"    {f['function']:40} {f['calls']:6} {f['total_ms_per_call']:14.3f} {f['self_ms_per_call']:13.3f} "
                  f"{f['total_ms_per_subject']:17.3f}")
    prof = out.get("function_profile")
    if prof:
        print("\nper-transaction cost of toolkit functions (track_functions = 'pl', extra 3 s runs of the DML workloads)")
        for key, p in prof.items():
            print(f"  {key}: {p['tps']:.0f} tps")
            for f in p["functions"]:
                print(f"    {f['function']:40} {f['calls_per_tx']:6.2f} calls/tx  total {f['total_us_per_tx']:8.1f} us/tx  "
                      f"self {f['self_us_per_tx']:8.1f} us/tx")
            if not p["functions"]:
                print("    (no toolkit function called)")
            for rel, sc in p.get("privacy_table_scans_per_tx", {}).items():
                print(f"    privacy.{rel:32} {sc['seq']:6.2f} sequential and {sc['index']:6.2f} index scans per transaction")
    perf = out.get("perf")
    if perf:
        print("\nwhere the server's CPU goes, per transaction (perf samples of the pgbench backends, attribution.py; "
              "us/tx = share of samples x server CPU per transaction in that run, perf overhead included)")
        for key, dbs in perf.items():
            tk, base = dbs[TK], dbs[BASE]
            print(f"\n  {key}: server CPU {tk['server_cpu_us_per_tx']:.1f} us/tx with the toolkit, {base['server_cpu_us_per_tx']:.1f} without")
            print(f"    {'category':66} {'toolkit':>8} {'baseline':>8} {'extra':>8}")
            names = sorted(set(tk["categories"]) | set(base["categories"]),
                           key=lambda n: -(tk["categories"].get(n, {}).get("us_per_tx", 0) - base["categories"].get(n, {}).get("us_per_tx", 0)))
            for name in names:
                a = tk["categories"].get(name, {}).get("us_per_tx", 0.0)
                b = base["categories"].get(name, {}).get("us_per_tx", 0.0)
                if max(a, b) >= 0.05:
                    mark = "*" if name in attribution.TOOLKIT else " "
                    print(f"   {mark}{name:66} {a:8.1f} {b:8.1f} {a - b:+8.1f}")
        print("  (* the toolkit's own work: its triggers and functions)")
    ex = out.get("explain")
    if ex:
        print("\nEXPLAIN (ANALYZE, BUFFERS) as the application role")
        for key, e in ex.items():
            print(f"\n== {key}: {e['statement']}")
            for db in (TK, BASE):
                print(f"-- {db}")
                print(e[db])


if __name__ == "__main__":
    sys.exit(main())

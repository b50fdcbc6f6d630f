#!/usr/bin/env python3
"""What purposes cost the read path (issue 19): three purposes and 1,000 scoped restrictions.

    .venv/bin/python tests/perf/bench_purposes.py                    # 100,000 customers, 1M orders, 2M items
    .venv/bin/python tests/perf/bench_purposes.py --customers 10000  # smoke test

The same shop (tests/perf/schema.sql) in four databases, with bench.py's machinery
(interleaved pgbench runs, CPU per transaction measured beside TPS):

- bench_base: without the toolkit;
- bench_today: the toolkit as it was before purposes: 1,000 customers restricted for
  every application role, no purpose defined;
- bench_purposes: the toolkit with three purposes (marketing, billing, legal-claims),
  and the same 1,000 customers restricted *for marketing only*; read
  by the general application role `app`, whose plan carries the one policy;
- bench_purposes_mkt: a copy of it, read by `mkt_app`, which serves marketing: its plan
  carries the marketing policy too, and the 1,000 customers are hidden from it.

Each toolkit database is compared with bench_base on the PK reads and the full scans;
the ratios are toolkit/baseline TPS (1.0 = free) and baseline/toolkit CPU per
transaction (the same with other load on the machine factored out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import bench  # tests/perf/bench.py, next to this file
from bench import APP, BASE, GRANTS, STEWARD, WORKLOADS, Bench, Result, Scale, log

from pyctl.cluster import start_cluster

TODAY, PURP, PURP_MKT = "bench_today", "bench_purposes", "bench_purposes_mkt"
MKT = "mkt_app"
USERS = {PURP_MKT: MKT}
READS = ("pk_direct", "pk_2hop", "agg", "agg_2hop")
PURPOSES = ("marketing", "billing", "legal-claims")
RESTRICTED = 1000


class PurposeBench(Bench):
    def pgbench_args(self, db: str, workload: str, duration: int) -> list[str]:
        args = super().pgbench_args(db, workload, duration)
        args[args.index("-U") + 1] = USERS.get(db, APP)
        return args

    def restrict_many(self, db: str, keys: list[int], purposes: list[str] | None) -> None:
        array = "null" if purposes is None else "array[" + ",".join(f"'{p}'" for p in purposes) + "]"
        with self.conn(db, STEWARD) as conn:
            for start in range(0, len(keys), 500):
                chunk = ",".join(str(k) for k in keys[start:start + 500])
                conn.execute(f"do $$ declare k bigint; begin foreach k in array array[{chunk}]::bigint[] loop "
                             f"perform privacy.place_restriction('customer', k::text, 'objection', 'bench', {array}, null); "
                             f"end loop; end $$".encode())

    def setup_purposes(self) -> None:
        s = self.scale
        t0 = time.monotonic()
        self.sql("postgres", f"create role {APP} login; create role {STEWARD} login; create role {MKT} login")
        # Placement runs privacy.heal(), whose catalog query PostgreSQL JIT-compiles (about 1 s a
        # call instead of 5 ms): not what is measured here, so the steward placing runs without JIT.
        self.sql("postgres", f"alter role {STEWARD} set jit = off")
        log(f"loading {s.customers:,} customers, {s.orders:,} orders, {s.items:,} order items")
        self.load_shop(BASE, s.customers)
        self.sql(BASE, GRANTS + GRANTS.replace(APP, MKT))
        self.sql(BASE, "vacuum analyze")
        keys = [k for k in range(1, s.customers + 1) if k % 100 == 2][:RESTRICTED]
        for db, purposes in ((TODAY, None), (PURP, ["marketing"])):
            self.sql("postgres", f"create database {db} template {BASE}")
            self.install(db, pgbench_tables=False)
            self.sql("postgres", f"grant privacy_steward to {STEWARD}")
            if purposes:
                for name in PURPOSES:
                    self.sql(db, f"select privacy.add_purpose('{name}', '')")
                self.sql(db, f"select privacy.grant_purpose('{MKT}', 'marketing')")
            log(f"{db}: placing {len(keys):,} restrictions"
                + (f" for {', '.join(purposes)}" if purposes else " for every application role"))
            self.restrict_many(db, keys, purposes)
            self.sql(db, "vacuum analyze")
        self.sql("postgres", f"create database {PURP_MKT} template {PURP}")
        self.sql("postgres", "checkpoint")
        self.out["databases"] = {db: self.active(db) for db in (TODAY, PURP, PURP_MKT)}
        self.out["visible_orders"] = {
            db: self.sql(db, "select count(*) from orders", user=USERS.get(db, APP))[0][0] for db in (BASE, TODAY, PURP, PURP_MKT)}
        self.out["setup_seconds"] = round(time.monotonic() - t0, 1)
        log(f"setup done in {self.out['setup_seconds']} s; orders visible: {self.out['visible_orders']}")

    def compare_with_base(self, db: str) -> list[Result]:
        workloads = [w for w in WORKLOADS if w.key in READS]
        results = {w.key: Result(w.key, w.label, w.budget) for w in workloads}
        for n in range(self.scale.runs):
            for w in workloads:
                order = (db, BASE) if n % 2 == 0 else (BASE, db)
                first, second, _ = self.pair(w, *order, f"{db} run {n + 1} {w.key}")
                r = results[w.key]
                for run in (first, second):
                    (r.toolkit if run.db == db else r.baseline).append(run.tps)
                    (r.toolkit_cpu_us if run.db == db else r.baseline_cpu_us).append(run.cpu_us_per_tx)
                log(f"{db:20} run {n + 1}/{self.scale.runs} {w.key:10} ratio {r.toolkit[-1] / r.baseline[-1]:.3f}   "
                    f"cpu/tx ratio {r.baseline_cpu_us[-1] / r.toolkit_cpu_us[-1]:.3f}")
        return list(results.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per database per run")
    parser.add_argument("--output", type=Path, default=bench.RESULTS / "purposes.json")
    args = parser.parse_args(argv)
    scale = Scale(customers=args.customers, pgbench_scale=1, runs=args.runs, duration=args.duration, restrictions_low=0,
                  restrictions_high=RESTRICTED, placements=0, shared_buffers="2GB", slices=2)
    cluster = start_cluster(settings={"shared_buffers": scale.shared_buffers, "autovacuum": "off",
                                      "max_wal_size": "'8GB'", "checkpoint_timeout": "'1h'"})
    try:
        with tempfile.TemporaryDirectory(prefix="pyctl-bench-") as workdir:
            b = PurposeBench(cluster, scale, "prepared", Path(workdir))
            b.retry_deadline = 0.0  # report the noise instead of waiting for quiet
            b.out.update({"scale": asdict(scale), "machine": bench.machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "toolkit": bench.toolkit_source()})
            b.setup_purposes()
            b.prewarm(BASE, TODAY, PURP, PURP_MKT)
            b.out["explain"] = {db: "\n".join(r[0] for r in b.sql(db, "explain (costs off) select count(*) from orders",
                                                                  user=USERS.get(db, APP)))
                                for db in (TODAY, PURP, PURP_MKT)}
            table = {}
            for db in (TODAY, PURP, PURP_MKT):
                table[db] = [{**asdict(r), "ratio": r.ratio, "cpu_ratio": r.cpu_ratio} for r in b.compare_with_base(db)]
            b.out["results"] = table
    finally:
        cluster.destroy()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(b.out, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\n{'workload':32} " + " ".join(f"{db:>28}" for db in table))
    print(f"{'(toolkit/baseline: tps, cpu)':32} " + " ".join(f"{'':>28}" for _ in table))
    for i, key in enumerate(READS):
        label = table[TODAY][i]["label"]
        cells = [f"{t[i]['ratio']:.3f} ({statistics.median(t[i]['toolkit']):.0f} tps), {t[i]['cpu_ratio']:.3f}" for t in table.values()]
        print(f"{label:32} " + " ".join(f"{c:>28}" for c in cells) + f"   [{key}]")
    print(f"\nJSON written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

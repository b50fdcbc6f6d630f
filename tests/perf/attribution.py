"""Where the server's CPU goes, per transaction: perf samples of the pgbench backends,
attributed to what PostgreSQL was doing by the frames on their stacks.

Used by `bench.py --perf` (needs `perf` and root, or perf_event_paranoid <= 0). The
share of samples is a robust measure even while other processes load the machine;
the microseconds per transaction are the share times the CPU time per transaction
measured during the same window (perf's own overhead inflates them somewhat, for
both databases alike).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# (category, any of these frames on the stack, [only when one of these is on it too]);
# the first rule that matches a sample gets it. Toolkit-specific work first.
RULES: list[tuple[str, set[str], set[str] | None]] = [
    ("BEFORE ROW trigger: lock of the row (GetTupleForTrigger)", {"heap_lock_tuple"},
     {"ExecBRUpdateTriggersNew", "ExecBRDeleteTriggersNew", "ExecBRUpdateTriggers", "ExecBRDeleteTriggers"}),
    ("trigger WHEN clause: parsed per statement (stringToNode)", {"stringToNode"},
     {"ExecBRUpdateTriggersNew", "ExecBRUpdateTriggers", "ExecARUpdateTriggers", "ExecBRDeleteTriggersNew", "ExecBRDeleteTriggers",
      "ExecARDeleteTriggers", "ExecBRInsertTriggers", "ExecARInsertTriggers", "AfterTriggerSaveEvent"}),
    ("trigger WHEN clause: compiled per statement", {"ExecPrepareQual", "ExecPrepareExpr", "ExecInitQual"},
     {"ExecBRUpdateTriggersNew", "ExecBRUpdateTriggers", "ExecARUpdateTriggers", "ExecBRDeleteTriggersNew", "ExecBRDeleteTriggers",
      "ExecARDeleteTriggers", "AfterTriggerSaveEvent"}),
    ("foreign-key checks and cascades (RI)", {"RI_FKey_check", "RI_FKey_check_ins", "ri_PerformCheck", "RI_FKey_cascade_del",
                                              "RI_FKey_noaction_del", "RI_FKey_pk_upd_check_required", "RI_FKey_fk_upd_check_required"}, None),
    ("toolkit functions: SET search_path push/pop", {"set_config_option", "set_config_option_ext", "AtEOXact_GUC", "NewGUCNestLevel",
                                                      "ProcessGUCArray", "recomputeNamespacePath", "assign_search_path", "check_search_path"},
     {"fmgr_security_definer"}),
    ("toolkit functions: row lock FOR SHARE (parent row / guard bucket)", {"heap_lock_tuple"}, {"ExecLockRows"}),
    ("toolkit functions: their SQL (SPI: plan, executor, index scan)",
     {"_SPI_execute_plan", "SPI_execute_plan_with_paramlist", "exec_stmt_execsql", "exec_run_select", "SPI_cursor_open_with_paramlist"}, None),
    ("toolkit functions: PL/pgSQL interpreter", {"plpgsql_exec_trigger", "plpgsql_call_handler", "plpgsql_exec_function",
                                                 "fmgr_security_definer", "plpgsql_compile"}, None),
    ("row triggers: other machinery", {"ExecBRUpdateTriggersNew", "ExecBRUpdateTriggers", "ExecBRDeleteTriggersNew",
                                       "ExecBRDeleteTriggers", "ExecBRInsertTriggers", "ExecARUpdateTriggers", "ExecARDeleteTriggers",
                                       "ExecARInsertTriggers", "AfterTriggerSaveEvent"}, None),
    ("RLS: WITH CHECK on written rows", {"ExecWithCheckOptions"}, None),
    ("executor start: ModifyTable, result relations, triggers", {"ExecInitModifyTable", "CopyTriggerDesc", "InitResultRelInfo"}, None),
    ("executor start: plan nodes, quals, InitPlans", {"standard_ExecutorStart"}, None),
    ("executor end", {"standard_ExecutorEnd", "ExecEndNode"}, None),
    ("commit (WAL flush, locks)", {"CommitTransactionCommand", "CommitTransaction"}, None),
    ("plan cache revalidation", {"GetCachedPlan", "RevalidateCachedQuery", "CheckCachedPlan"}, None),
    ("scan: index lookup, heap fetch, pruning", {"index_getnext_slot", "heap_page_prune_opt", "ExecScan", "heap_getnextslot",
                                                 "ExecAgg", "heapgettup_pagemode"}, None),
    ("heap insert/update/delete, index inserts", {"heap_update", "heap_delete", "heap_insert", "ExecInsertIndexTuples"}, None),
    # One category: the kernel's loopback processing lands on whichever side is running,
    # so what moves between sending and receiving is not the server's work.
    ("network (loopback TCP send and receive), waiting for the client",
     {"secure_write", "__send", "internal_flush", "secure_read", "pq_getbyte", "WaitEventSetWait", "epoll_wait", "pq_getmessage"}, None),
]
TOOLKIT = [name for name, _, _ in RULES[:3]] + [name for name, _, _ in RULES[4:11]]


def available() -> str | None:
    """None when perf can sample here, else why not."""
    if not shutil.which("perf"):
        return "perf is not installed"
    proc = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"], capture_output=True, text=True,
                          check=False)
    return None if proc.returncode == 0 else f"perf cannot record: {proc.stderr.strip()[:200]}"


def categorize(perf_data: Path) -> tuple[int, collections.Counter[str]]:
    text = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "comm,ip,sym"], capture_output=True, text=True,
                          check=False).stdout
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for sample in text.split("\n\n"):
        lines = sample.strip().split("\n")
        if len(lines) < 2:
            continue
        frames = set()
        for line in lines[1:]:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                frames.add(re.sub(r"\+0x[0-9a-f]+$", "", parts[1].split(" (")[0]))
        total += 1
        for name, needles, within in RULES:
            if needles & frames and (within is None or within & frames):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    return total, counts


def profile(start_pgbench: Callable[[int], subprocess.Popen[str]], backend_pids: Callable[[], list[int]], seconds: int,
            cpu_us_per_tx: Callable[[subprocess.Popen[str]], tuple[float, float]]) -> dict[str, object]:
    """Runs pgbench (start_pgbench(duration)) and samples its backends for SECONDS; returns the
    share and microseconds per transaction of each category."""
    with tempfile.TemporaryDirectory(prefix="pyctl-perf-") as tmp:
        data = Path(tmp) / "perf.data"
        proc = start_pgbench(seconds + 2)
        pids: list[int] = []
        deadline = time.monotonic() + 5
        while len(pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = backend_pids()
        time.sleep(0.5)
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "500", "--call-graph", "dwarf,8192", "-p",
                        ",".join(map(str, pids)), "-o", str(data), "--", "sleep", str(seconds)],
                       capture_output=True, check=False)
        tps, cpu_us = cpu_us_per_tx(proc)
        total, counts = categorize(data)
    shares = {k: v / max(1, total) for k, v in counts.most_common()}
    return {"samples": total, "tps": tps, "server_cpu_us_per_tx": cpu_us,
            "categories": {k: {"share": s, "us_per_tx": s * cpu_us} for k, s in shares.items()}}

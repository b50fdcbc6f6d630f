"""`pyctl demo`, the README's main job, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

PYCTL = str(Path(sys.executable).with_name("pyctl"))


def test_demo_runs_under_a_minute_and_shows_refusals() -> None:
    started = time.monotonic()
    proc = subprocess.run([PYCTL, "demo"], capture_output=True, text=True, check=False, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 60
    out = proc.stdout
    assert "refused [PV001] privacy: DELETE on public.customers refused: subject customer/3 is under legal hold" in out
    # the application is told its row's subject is restricted, not whose it is
    assert "refused [PV001] privacy: INSERT on public.orders_2026 refused: the row's subject is under a processing restriction" in out
    assert "app sees customers: Ada Active, Cy Former" in out  # Ben hidden while restricted
    assert "app sees customers: Ada Active, Ben Contests, Cy Former" in out  # and back after release
    # Art. 21(3): the marketing role loses Ada, the shop keeps her
    assert "newsletter sees customers: Ben Contests" in out
    assert "app sees customers: Ada Active, Ben Contests" in out
    assert "ledger verifies" in out
    assert "Traceback" not in proc.stderr
    # it ends with the report, and says where it is
    line = next(x for x in out.splitlines() if x.startswith("Report: "))
    report = Path(line.removeprefix("Report: ").split(" (open it")[0])
    try:
        html = report.read_text(encoding="utf-8")
        assert "2026-CV-118" in html and "Art. 18(1)(a)" in html and "the hash chain verifies" in html
        assert (report.parent / "customer-3" / "SHA256SUMS").exists()
    finally:
        shutil.rmtree(report.parent, ignore_errors=True)


def test_demo_keep_leaves_a_usable_cluster() -> None:
    proc = subprocess.run([PYCTL, "demo", "--keep"], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    dsn = lines[lines.index("The cluster keeps running. Connect with:") + 1].strip()
    stop = next(line for line in lines if line.startswith("Stop it with: "))
    try:
        status = subprocess.run([PYCTL, "--dsn", dsn, "--json", "status"], capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stderr
        assert '"active_holds": 0' in status.stdout
    finally:
        command = stop.removeprefix("Stop it with: ").split("  (as OS user")[0].split()
        if "(as OS user" in stop:
            command = ["runuser", "-u", stop.split("(as OS user ")[1].rstrip(")"), "--", *command]
        subprocess.run(command, capture_output=True, check=False)
        data_dir = Path(command[command.index("-D") + 1])
        subprocess.run(["rm", "-rf", str(data_dir.parent)], check=False)
        for line in lines:
            if line.startswith("Report: "):
                shutil.rmtree(Path(line.removeprefix("Report: ").split(" (open it")[0]).parent, ignore_errors=True)

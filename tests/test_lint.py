"""ruff and mypy, as configured in pyproject.toml, are part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff() -> None:
    proc = subprocess.run([str(BIN / "ruff"), "check", "pyctl", "tests"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_version_in_sql_matches_the_package() -> None:
    from pyctl import __version__

    assert f"as $$ select '{__version__}' $$;" in (ROOT / "sql" / "00_base.sql").read_text()


def _imports_within_pyctl() -> dict[str, set[str]]:
    """Each module of pyctl/ and the modules of pyctl/ it imports (at any depth of its code)."""
    import ast

    package = ROOT / "pyctl"
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        here = module.split(".") if is_package else module.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - (node.level - 1)]
                if node.module:
                    found.add(".".join([*base, node.module]))
                else:
                    found.update(".".join([*base, alias.name]) for alias in node.names)
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                found.update(n for n in names if n and n.startswith("pyctl"))
        graph[module] = found
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_pyctl_modules_import_each_other_without_cycles() -> None:
    graph = _imports_within_pyctl()
    assert {"pyctl.commands", "pyctl.export"} <= graph["pyctl.cli"]  # the walk sees the imports
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in graph[module]:
            if dep in path:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []
    assert "pyctl.cli" not in graph["pyctl.export.command"] and "pyctl.cli" not in graph["pyctl.demo"]


def test_no_fault_injection_in_shipped_code() -> None:
    """The crash tests kill real processes; nothing in pyctl/ exits on their behalf."""
    for path in (ROOT / "pyctl").rglob("*.py"):
        assert "os._exit" not in path.read_text(), path

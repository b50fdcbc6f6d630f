"""Locate the SQL that ships with the package (sql/ and migrations/)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _data_dir(name: str) -> Path:
    # In a wheel, sql/ and migrations/ are installed inside the package; in a
    # source checkout they sit next to it at the top of the repository.
    packaged = Path(str(resources.files("pyctl"))) / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"pyctl's {name}/ directory is missing from the installation")


def sql_dir() -> Path:
    return _data_dir("sql")


def migrations_dir() -> Path:
    return _data_dir("migrations")


def sql_files() -> list[Path]:
    """The files of sql/, in the order they are loaded."""
    return sorted(sql_dir().glob("*.sql"))

"""Upgrades from a release: its sql/ and migrations/ taken from git, holds, restrictions and
corrections in place, then this version's install over it (as procrastinate tests its migrations)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from test_install import fingerprint

from conftest import APP_GRANTS, PROTECT_SQL, SHOP_SQL, Db, _janitor, refused, restrict
from pyctl import install

REPOSITORY = Path(__file__).resolve().parent.parent
# Each release this version must upgrade from: its tag, and the commit the tag names (a
# clone that did not fetch tags still has the commit).
RELEASES = {"v0.1.0": "f7d894f9324e7e6954b23a0d1f433dc48ef9e957"}


def release_tree(tag: str, into: Path) -> Path:
    """pyctl/, sql/ and migrations/ of a release, from git, as a source checkout of it."""
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--format=tar", RELEASES[tag],
                              "pyctl", "sql", "migrations"], capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def install_release(tree: Path, dsn: str) -> None:
    """The release's own installer, its pyctl imported ahead of this one."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = ("import sys, pyctl; from pyctl import install; "
            f"assert pyctl.__file__.startswith({str(tree)!r}), pyctl.__file__; install.install(sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", code, dsn], env=env, cwd=tree, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def _second_database(db: Db, prefix: str) -> Db:
    name = prefix + db.name
    _janitor(db.cluster, name).init()
    with psycopg.connect(db.cluster.dsn(name), autocommit=True) as su:
        su.execute(f"alter database {name} owner to shop_owner")
        su.execute("alter schema public owner to shop_owner")
    return Db(db.cluster, name)


def _protect(db: Db, installer: str) -> None:
    db.connect(installer).execute(PROTECT_SQL)
    db.su.execute("grant privacy_steward to steward_user")
    db.owner.execute(APP_GRANTS)


def test_upgrade_from_0_1_0_keeps_every_hold_restriction_and_correction(empty_db: Db, tmp_path: Path) -> None:
    old = release_tree("v0.1.0", tmp_path / "v0.1.0")
    empty_db.owner.execute(SHOP_SQL)
    install_release(old, empty_db.dsn("shop_owner"))
    assert empty_db.scalar("select privacy.toolkit_version()") == "0.1.0"
    _protect(empty_db, "shop_owner")
    # (0.1.0 computed a hold's proof in its placement: no prove_hold there.)
    held = str(empty_db.scalar("select privacy.place_hold('customer', '3', '2026-CV-118', 'preserve')", user="steward_user"))
    restricted = restrict(empty_db, 4)
    with empty_db.connect("steward_user", autocommit=False) as steward, steward.transaction():
        steward.execute("select privacy.break_glass('court-ordered correction, order 2026-55')")
        steward.execute("update orders set total = 301 where id = 30")
    ledger_before = empty_db.su.execute("select seq, event, hash from privacy.ledger order by seq").fetchall()

    install.install(empty_db.dsn("shop_owner"))

    # The same catalog as this version installed fresh over the same schema.
    fresh = _second_database(empty_db, "fresh_")
    try:
        fresh.owner.execute(SHOP_SQL)
        install.install(fresh.dsn("shop_owner"))
        _protect(fresh, "shop_owner")
        # (but the hold's guard views: they exist while a hold does, sql/55_ddl_guards.sql)
        upgraded = [x for x in fingerprint(empty_db.dsn("postgres")) if not x[1].startswith("legal hold 2026-CV-118 (")]
        expected = fingerprint(fresh.dsn("postgres"))
        assert len(upgraded) < len(fingerprint(empty_db.dsn("postgres")))  # the hold has its guard
        assert [x[:2] for x in upgraded] == [x[:2] for x in expected]
        assert upgraded == expected
    finally:
        fresh.close()
        _janitor(fresh.cluster, fresh.name).drop()
    assert empty_db.scalar("select privacy.toolkit_version()") != "0.1.0"

    # The record is the one the release wrote, still a valid chain ...
    assert empty_db.su.execute("select seq, event, hash from privacy.ledger order by seq").fetchall()[:len(ledger_before)] \
        == ledger_before
    assert empty_db.su.execute("select * from privacy.verify_ledger()").fetchall() == []
    assert empty_db.scalar("select count(*) from privacy.corrections where table_name = 'orders'") == 1
    # ... every hold and restriction is still in force ...
    assert empty_db.scalar("select count(*) from privacy.processing_restrictions where released_at is null") == 2
    assert {r[0] for r in empty_db.su.execute("select id::text from privacy.processing_restrictions")} == {held, restricted}
    refused(empty_db.app, "delete from orders where customer_id = 3")
    assert empty_db.scalar("select count(*) from orders where customer_id = 3") > 0
    assert empty_db.ids("orders", "app", "customer_id").count(4) == 0
    assert empty_db.scalar("select count(*) from orders where customer_id = 4") > 0  # the steward's view: still there
    # ... and the toolkit says so.
    assert {r[0] for r in empty_db.su.execute("select state from privacy.enforcement_status()")} == {"installed"}
    assert [r for r in empty_db.su.execute("select severity, category, object, finding from privacy.doctor()").fetchall()
            if r[0] == "error"] == []

"""Purpose-scoped restrictions (issue 19), under real roles.

Four application roles: p_mkt_app serves marketing, p_billing_app billing, p_legal_app
legal-claims, p_plain_app no purpose ("general"). Subjects as in tests/shop.sql.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from test_matrix import IDS, PATHS, Path, count, snapshot

from conftest import Db, refused
from pyctl.cli import main

APPS = {"p_mkt_app": "marketing", "p_billing_app": "billing", "p_legal_app": "legal-claims", "p_plain_app": None}
GRANTS = """
grant usage on schema public, "crm data" to {r};
grant select, insert, update, delete on all tables in schema public, "crm data" to {r};
"""


def ensure_role(db: Db, role: str) -> None:
    """Roles belong to the cluster, which every test database shares: create each once."""
    if not db.scalar("select 1 from pg_roles where rolname = %s", (role,)):
        db.su.execute(f"create role {role} login")


@pytest.fixture
def pdb(db: Db) -> Iterator[Db]:
    for name, description in (("marketing", "direct marketing"), ("billing", "invoices"), ("legal-claims", "Art. 18(2)")):
        db.owner.execute("select privacy.add_purpose(%s, %s)", (name, description))
    for role, purpose in APPS.items():
        ensure_role(db, role)
        db.owner.execute(GRANTS.format(r=role))
        if purpose:
            db.owner.execute("select privacy.grant_purpose(%s, %s)", (role, purpose))
    yield db


def place(db: Db, key: int, basis: str = "objection", purposes: list[str] | None = None,
          exceptions: list[str] | None = None) -> str:
    return str(db.scalar("select privacy.place_restriction('customer', %s, %s, 'objects', %s::text[], %s::text[])",
                         (str(key), basis, purposes, exceptions), user="steward_user"))


def conn(db: Db, role: str) -> psycopg.Connection:
    return db._cached(role)


def cli(db: Db, *args: str) -> object:
    return CliRunner().invoke(main, ["--dsn", db.dsn("shop_owner"), *args])


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_a_marketing_restriction_hides_the_rows_from_marketing_only(pdb: Db, path: Path) -> None:
    place(pdb, 2, purposes=["marketing"])
    total = count(pdb, path, 2)
    assert total > 0
    assert count(pdb, path, 2, "p_mkt_app") == 0
    for role in ("p_billing_app", "p_legal_app", "p_plain_app", "steward_user", "shop_owner"):
        assert count(pdb, path, 2, role) == total, role
    # Other subjects are untouched for marketing too.
    assert count(pdb, path, 1, "p_mkt_app") == count(pdb, path, 1)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_a_restriction_without_purpose_hides_the_rows_from_every_application_role(pdb: Db, path: Path) -> None:
    place(pdb, 2, basis="accuracy")
    for role in APPS:
        assert count(pdb, path, 2, role) == 0, role
    assert count(pdb, path, 2, "steward_user") == count(pdb, path, 2) > 0


def test_a_role_serving_two_purposes_is_bound_by_either(pdb: Db) -> None:
    ensure_role(pdb, "crm_app")
    pdb.owner.execute(GRANTS.format(r="crm_app"))
    pdb.owner.execute("select privacy.grant_purpose('crm_app', 'billing'), privacy.grant_purpose('crm_app', 'marketing')")
    place(pdb, 2, purposes=["marketing"])
    assert pdb.scalar("select count(*) from orders where customer_id = 2", user="crm_app") == 0
    assert pdb.scalar("select count(*) from orders where customer_id = 1", user="crm_app") == 2


def test_release_of_a_scoped_restriction_gives_the_rows_back(pdb: Db) -> None:
    rid = place(pdb, 2, purposes=["marketing", "billing"])
    assert pdb.scalar("select count(*) from orders where customer_id = 2", user="p_billing_app") == 0
    pdb.steward.execute("select privacy.release_restriction(%s, 'objection withdrawn', true)", (rid,))
    for role in APPS:
        assert pdb.scalar("select count(*) from orders where customer_id = 2", user=role) == 2, role
    assert pdb.scalar("select privacy_mark from customers where id = 2") == 0


# -- writing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_the_marketing_role_cannot_change_or_add_rows_of_a_subject_restricted_for_marketing(pdb: Db, path: Path) -> None:
    place(pdb, 2, purposes=["marketing"])
    before = snapshot(pdb, path, 2)
    mkt = conn(pdb, "p_mkt_app")
    assert mkt.execute(f"update {path.table} set {path.change} where {path.where(2)}").rowcount == 0
    assert mkt.execute(f"delete from {path.table} where {path.where(2)}").rowcount == 0
    if path.insert:
        err = refused(mkt, path.insert.format(k=2))
        assert "customer/2" not in str(err.diag.message_primary)
    assert snapshot(pdb, path, 2) == before


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_the_billing_role_still_processes_a_subject_restricted_for_marketing(pdb: Db, path: Path) -> None:
    place(pdb, 2, purposes=["marketing"])
    billing = conn(pdb, "p_billing_app")
    assert billing.execute(f"update {path.table} set {path.change} where {path.where(2)}").rowcount == count(pdb, path, 2)
    if path.insert:
        billing.execute(path.insert.format(k=2))
    # Ordinary processing, not a steward's correction: nothing is journaled.
    assert pdb.scalar("select count(*) from privacy.corrections") == 0
    # The new rows carry the subject's mark: marketing does not see them either.
    assert count(pdb, path, 2, "p_mkt_app") == 0


def test_a_cascade_from_a_row_marketing_sees_into_rows_restricted_for_it_is_refused(pdb: Db) -> None:
    place(pdb, 2, purposes=["marketing"])
    err = refused(conn(pdb, "p_mkt_app"), "delete from products where id = 2")  # product 2 cascades to Ben's items
    assert "customer/2" not in str(err.diag.message_primary)
    assert pdb.scalar("select count(*) from order_items") == 7


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_an_exception_lets_its_role_read_but_not_write(pdb: Db, path: Path) -> None:
    place(pdb, 2, basis="accuracy", exceptions=["legal-claims"])
    total = count(pdb, path, 2)
    legal = conn(pdb, "p_legal_app")
    assert count(pdb, path, 2, "p_legal_app") == total > 0
    for role in ("p_mkt_app", "p_billing_app", "p_plain_app"):
        assert count(pdb, path, 2, role) == 0, role
    before = snapshot(pdb, path, 2)
    err = refused(legal, f"update {path.table} set {path.change} where {path.where(2)}")
    assert "processing restriction" in str(err.diag.message_primary)
    refused(legal, f"delete from {path.table} where {path.where(2)}")
    if path.insert:
        refused(legal, path.insert.format(k=2))
    assert snapshot(pdb, path, 2) == before
    # The steward still sees and corrects everything.
    assert count(pdb, path, 2, "steward_user") == total


def test_an_exception_added_later_and_withdrawn_is_in_the_ledger_and_history(pdb: Db) -> None:
    rid = place(pdb, 2, basis="accuracy")
    legal = "select count(*) from orders where customer_id = 2"
    assert pdb.scalar(legal, user="p_legal_app") == 0
    pdb.steward.execute("select privacy.add_exception(%s, 'legal-claims', 'defence of claim 2026-CV-204')", (rid,))
    assert pdb.scalar(legal, user="p_legal_app") == 2
    assert pdb.scalar(legal, user="p_plain_app") == 0
    pdb.steward.execute("select privacy.withdraw_exception(%s, 'legal-claims', 'claim settled')", (rid,))
    assert pdb.scalar(legal, user="p_legal_app") == 0
    events = pdb.su.execute("select event, payload from privacy.ledger where restriction_id = %s order by seq", (rid,)).fetchall()
    assert [e for e, _ in events] == ["restriction_placed", "exception_granted", "exception_withdrawn"]
    assert events[1][1] == {"purpose": "legal-claims", "reason": "defence of claim 2026-CV-204"}
    assert events[2][1] == {"purpose": "legal-claims", "reason": "claim settled"}
    assert pdb.scalar("select count(*) from privacy.verify_ledger()") == 0
    result = cli(pdb, "--json", "history", "2")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    shown = [e["event"] for e in json.loads(result.stdout)]  # type: ignore[attr-defined]
    assert shown[-3:] == ["restriction_placed", "exception_granted", "exception_withdrawn"]


def test_scoped_placement_is_a_ledger_event_with_its_purposes(pdb: Db) -> None:
    rid = place(pdb, 2, purposes=["marketing"])
    rid2 = place(pdb, 3, basis="accuracy", exceptions=["legal-claims"])
    payloads = dict(pdb.su.execute("select restriction_id::text, payload from privacy.ledger where event = 'restriction_placed'").fetchall())
    assert payloads[rid] == {"basis": "objection", "reason": "objects", "purposes": ["marketing"]}
    assert payloads[rid2] == {"basis": "accuracy", "reason": "objects", "except": ["legal-claims"]}
    # The purposes themselves were recorded as they were added and granted.
    added = [r[0] for r in pdb.su.execute("select payload->>'purpose' from privacy.ledger where event = 'purpose_added' order by seq")]
    assert added == ["marketing", "billing", "legal-claims"]
    assert pdb.scalar("select count(*) from privacy.ledger where event = 'purpose_granted'") == 3


def test_only_stewards_place_exceptions_and_identity_comes_from_the_session(pdb: Db) -> None:
    rid = place(pdb, 2, basis="accuracy")
    for role in ("p_mkt_app", "p_legal_app"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn(pdb, role).execute("select privacy.add_exception(%s, 'legal-claims', 'I need it')", (rid,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn(pdb, role).execute("select privacy.add_purpose('spying', '')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn(pdb, role).execute("select privacy.grant_purpose(%s, 'billing')", (role,))
    pdb.steward.execute("select privacy.add_exception(%s, 'legal-claims', 'claim')", (rid,))
    assert pdb.scalar("select granted_by || '/' || granted_role from privacy.restriction_purposes where kind = 'exception'") == \
        "steward_user/steward_user"


def test_a_purpose_added_later_is_bound_by_the_unscoped_restrictions_in_force(pdb: Db) -> None:
    place(pdb, 2, basis="accuracy")
    pdb.owner.execute("select privacy.add_purpose('support', '')")
    ensure_role(pdb, "support_app")
    pdb.owner.execute(GRANTS.format(r="support_app"))
    pdb.owner.execute("select privacy.grant_purpose('support_app', 'support')")
    assert pdb.scalar("select count(*) from orders where customer_id = 2", user="support_app") == 0
    assert pdb.scalar("select count(*) from orders where customer_id = 1", user="support_app") == 2
    status = pdb.su.execute("select state, count(*) from privacy.enforcement_status() group by 1").fetchall()
    assert [s for s, _ in status] == ["installed"], status


def test_misuse_is_a_clear_error(pdb: Db) -> None:
    def error(sql: str, params: object = None, user: str = "steward_user") -> str:
        with pytest.raises(psycopg.Error) as info:
            conn(pdb, user).execute(sql, params)  # type: ignore[arg-type]
        assert info.value.sqlstate == "PV002", info.value
        return str(info.value)

    assert "unknown purpose" in error("select privacy.place_restriction('customer', '2', 'objection', 'x', '{sales}', null)")
    assert "exceptions are for restrictions without purposes" in error(
        "select privacy.place_restriction('customer', '2', 'objection', 'x', '{marketing}', '{legal-claims}')")
    rid = place(pdb, 2, purposes=["marketing"])
    assert "scoped to purposes" in error("select privacy.add_exception(%s, 'legal-claims', 'x')", (rid,))
    rid = place(pdb, 3, basis="accuracy")
    assert "needs a reason" in error("select privacy.add_exception(%s, 'legal-claims', ' ')", (rid,))
    assert "no exception" in error("select privacy.withdraw_exception(%s, 'legal-claims', 'x')", (rid,))
    assert "already exists" in error("select privacy.add_purpose('marketing', '')", user="shop_owner")
    assert "must be lower-case" in error("select privacy.add_purpose('a; drop table x', '')", user="shop_owner")
    # Nothing was placed by the refused calls.
    assert pdb.scalar("select count(*) from privacy.processing_restrictions") == 2


def test_at_most_13_purposes(pdb: Db) -> None:
    for i in range(10):
        pdb.owner.execute("select privacy.add_purpose(%s, '')", (f"extra{i}",))
    with pytest.raises(psycopg.Error) as info:
        pdb.owner.execute("select privacy.add_purpose('one-too-many', '')")
    assert info.value.sqlstate == "PV002" and "at most 13 purposes" in str(info.value)


# -- cost: the read path is a comparison on the row's own mark ------------------------------------


def _plan(db: Db, role: str, statement: str) -> str:
    c = conn(db, role)
    with c.transaction(force_rollback=True):
        return "\n".join(r[0] for r in c.execute(f"explain (costs off) {statement}").fetchall())


def test_the_read_path_has_no_lookup_and_no_subplan(pdb: Db) -> None:
    place(pdb, 2, purposes=["marketing"])
    for role in APPS:
        text = _plan(pdb, role, "select * from public.orders where customer_id = 3")
        assert "SubPlan" not in text and "InitPlan" not in text, text
        assert "privacy." not in text, text  # no function of the toolkit
        filters = re.findall(r"Filter: (.*)", text)
        # Each policy's test starts with the comparison that decides for every unmarked row.
        assert filters and all(re.fullmatch(r"\(\(privacy_mark < 2\) OR .*\)|\(\(\(privacy_mark < 2\) OR .*\) AND "
                                            r"\(\(privacy_mark < 2\) OR .*\)\)", f) for f in filters), text
    # A general role's plan has only the one policy; a purpose role's has its purpose's too.
    assert "privacy_mark & '4'" not in _plan(pdb, "p_plain_app", "select * from public.orders")
    assert "((privacy_mark & '4'::smallint) = 0)" in _plan(pdb, "p_mkt_app", "select * from public.orders")


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_purposes_roles_and_scoped_restrictions(db: Db) -> None:
    result = cli(db, "purpose", "add", "marketing", "--description", "newsletters")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert result.stdout.strip() == "privacy_purpose_marketing"  # type: ignore[attr-defined]
    assert cli(db, "purpose", "add", "legal-claims").exit_code == 0  # type: ignore[attr-defined]
    name = "news_app_cli"
    if db.scalar("select 1 from pg_roles where rolname = %s", (name,)):
        db.su.execute(f"drop owned by {name}; drop role {name}")
    result = cli(db, "--json", "roles", "create-app", name, "--purpose", "marketing", "--password", "pw")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert json.loads(result.stdout)["purposes"] == ["marketing"]  # type: ignore[attr-defined]
    listed = json.loads(cli(db, "--json", "purpose", "list").stdout)  # type: ignore[attr-defined]
    # (Roles and memberships belong to the cluster, which other tests share.)
    assert [(p["name"], p["mark_bit"]) for p in listed] == [("marketing", 4), ("legal-claims", 8)]
    assert name in listed[0]["members"].split(", ") and name not in listed[1]["members"].split(", ")
    steward = ["--dsn", db.dsn("steward_user")]
    result = CliRunner().invoke(main, [*steward, "restrict", "place", "2", "--basis", "objection", "--purpose", "marketing",
                                       "--reason", "Art. 21(3)"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*steward, "restrict", "place", "3", "--basis", "accuracy", "--except", "legal-claims",
                                       "--reason", "contests"])
    assert result.exit_code == 0, result.output
    rid = result.stdout.strip()
    result = CliRunner().invoke(main, [*steward, "restrict", "place", "1", "--basis", "accuracy", "--purpose", "marketing",
                                       "--except", "legal-claims", "--reason", "x"])
    assert result.exit_code == 2
    rows = {r["subject"]: r for r in json.loads(CliRunner().invoke(main, [*steward, "--json", "restrict", "list"]).stdout)}
    assert (rows["customer/2"]["purposes"], rows["customer/2"]["except"]) == ("marketing", "")
    assert (rows["customer/3"]["purposes"], rows["customer/3"]["except"]) == ("all", "legal-claims")
    result = CliRunner().invoke(main, [*steward, "restrict", "exception", "withdraw", rid, "legal-claims", "--reason", "done"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*steward, "restrict", "exception", "add", rid, "legal-claims", "--reason", "claim"])
    assert result.exit_code == 0, result.output
    assert db.scalar("select count(*) from orders where customer_id = 2", user=name) == 0
    assert db.scalar("select count(*) from orders where customer_id = 1", user=name) == 2
    result = CliRunner().invoke(main, [*steward, "purpose", "add", "sales"])
    assert result.exit_code == 1 and "permission denied" in result.output


# -- copies ---------------------------------------------------------------------------------------


def test_a_restored_backup_replays_purposes_scopes_and_exceptions(db: Db, tmp_path: object) -> None:
    """A dump taken before the purposes existed, restored beside the primary (same cluster, so the
    roles exist), brought up to date from a ledger file."""
    import subprocess
    from pathlib import Path

    cluster = db.cluster
    dump = subprocess.run([cluster.bin("pg_dump"), "-Fc", "-d", db.dsn("postgres")], capture_output=True, check=True).stdout
    for name, description in (("marketing", ""), ("legal-claims", "")):
        db.owner.execute("select privacy.add_purpose(%s, %s)", (name, description))
    for role, purpose in (("p_mkt_app", "marketing"), ("p_legal_app", "legal-claims")):
        ensure_role(db, role)
        db.owner.execute(GRANTS.format(r=role))
        db.owner.execute("select privacy.grant_purpose(%s, %s)", (role, purpose))
    place(db, 2, purposes=["marketing"])
    rid = place(db, 3, basis="accuracy")
    db.steward.execute("select privacy.add_exception(%s, 'legal-claims', 'claim 2026-CV-204')", (rid,))
    ledger_file = Path(str(tmp_path)) / "ledger.json"
    result = CliRunner().invoke(main, ["--dsn", db.dsn("steward_user"), "ledger", "export", str(ledger_file)])
    assert result.exit_code == 0, result.output
    copy = f"{db.name}_restored"
    db.su.execute(f"create database {copy} owner shop_owner")
    try:
        proc = subprocess.run([cluster.bin("pg_restore"), "-d", cluster.dsn(copy)], input=dump, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        result = CliRunner().invoke(main, ["--dsn", cluster.dsn(copy, user="shop_owner"), "ledger", "import", str(ledger_file)])
        assert result.exit_code == 0, result.output
        for role in ("p_mkt_app", "p_legal_app"):
            with psycopg.connect(cluster.dsn(copy, user="postgres"), autocommit=True) as su:
                su.execute(GRANTS.format(r=role))
        def visible(role: str, key: int) -> int:
            with psycopg.connect(cluster.dsn(copy, user=role), autocommit=True) as c:
                return int(c.execute("select count(*) from orders where customer_id = %s", (key,)).fetchone()[0])  # type: ignore[index]
        assert (visible("p_mkt_app", 2), visible("p_legal_app", 2), visible("app", 2)) == (0, 2, 2)   # scoped to marketing
        assert (visible("p_mkt_app", 3), visible("p_legal_app", 3), visible("app", 3)) == (0, 2, 0)   # legal-claims excepted
        with psycopg.connect(cluster.dsn(copy, user="p_legal_app"), autocommit=True) as c:
            refused(c, "update orders set total = 1 where customer_id = 3")
        with psycopg.connect(cluster.dsn(copy), autocommit=True) as su:
            assert su.execute("select * from privacy.verify_ledger()").fetchall() == []
            assert su.execute("select count(*) from privacy.restriction_purposes").fetchone() == (2,)
    finally:
        db.su.execute(f"drop database {copy} with (force)")


def test_an_export_manifest_records_scopes_and_exceptions(pdb: Db, tmp_path: object) -> None:
    from pathlib import Path

    scoped = place(pdb, 2, purposes=["marketing"])
    excepted = place(pdb, 2, basis="accuracy", exceptions=["legal-claims"])
    out = Path(str(tmp_path)) / "customer-2"
    result = CliRunner().invoke(main, ["--dsn", pdb.dsn("steward_user"), "export", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    restrictions = {r["id"]: r for r in manifest["subject"]["restrictions"]}
    assert restrictions[scoped]["purposes"] == ["marketing"] and "except" not in restrictions[scoped]
    assert restrictions[excepted]["except"] == ["legal-claims"] and "purposes" not in restrictions[excepted]


def test_doctor_warns_of_an_application_role_that_serves_no_purpose(pdb: Db) -> None:
    findings = pdb.su.execute("select severity, category, object from privacy.doctor() "
                              "where category in ('role without purpose', 'purpose not inherited')").fetchall()
    assert ("warning", "role without purpose", "p_plain_app") in findings
    assert not [f for f in findings if f[2] in APPS and APPS[f[2]]]  # the roles that serve a purpose
    assert not [f for f in findings if f[2] in ("steward_user", "shop_owner", "postgres")]
    ensure_role(pdb, "lazy_app")
    pdb.su.execute("alter role lazy_app noinherit")
    with pytest.raises(psycopg.Error) as info:
        pdb.owner.execute("select privacy.grant_purpose('lazy_app', 'marketing')")
    assert info.value.sqlstate == "PV002" and "NOINHERIT" in str(info.value)

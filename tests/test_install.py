"""Install, upgrade, status and uninstall, through pyctl and through plain yoyo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from conftest import PROTECT_SQL, SHOP_SQL, Db, hold, refused, restrict
from pyctl import install
from pyctl.db import PyctlError
from pyctl.resources import migrations_dir

FINGERPRINT = """
select 'relation' as kind, c.relname::text as name,
       concat_ws(' ', c.relkind, c.relrowsecurity, c.relacl::text, obj_description(c.oid, 'pg_class'),
                 (select string_agg(concat_ws(':', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                              pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum)), ',' order by a.attnum)
                    from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                   where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)) as definition
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname in ('privacy', 'public', 'crm data') and c.relname !~ 'yoyo' and c.relkind in ('r', 'p', 'v', 'S', 'i')
union all
select 'function', p.oid::regprocedure::text, concat_ws(' ', pg_get_functiondef(p.oid), p.proacl::text, obj_description(p.oid, 'pg_proc'))
  from pg_proc p where p.pronamespace = 'privacy'::regnamespace
union all
select 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
  from pg_constraint where connamespace in ('privacy'::regnamespace, 'public'::regnamespace)
   and conrelid::regclass::text !~ 'yoyo'
union all
select 'trigger', tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid) || coalesce(obj_description(oid, 'pg_trigger'), '')
  from pg_trigger where not tgisinternal
union all
select 'policy', polrelid::regclass::text || '.' || polname,
       concat_ws(' ', polcmd, polpermissive, pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid), obj_description(oid, 'pg_policy'))
  from pg_policy
union all
select 'event trigger', evtname, concat_ws(' ', evtevent, evttags::text, evtfoid::regproc::text) from pg_event_trigger
order by 1, 2
"""

ALL_MIGRATIONS = sorted(p.stem for p in migrations_dir().glob("privacy-*.sql"))


def fingerprint(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(FINGERPRINT).fetchall()]  # type: ignore[misc]


def _prepare_shop(db: Db) -> None:
    db.owner.execute(SHOP_SQL)


def test_install_is_idempotent(db: Db) -> None:
    before = fingerprint(db.dsn("postgres"))
    result = install.install(db.dsn("shop_owner"))
    assert result["migrations_applied"] == []
    assert result["tables_regenerated"] == 0
    assert fingerprint(db.dsn("postgres")) == before


def test_yoyo_apply_and_pyctl_install_build_identical_catalogs(empty_db: Db, cluster: object) -> None:
    from conftest import _janitor  # a second empty database, same cluster

    other = "yoyo_" + empty_db.name
    janitor = _janitor(empty_db.cluster, other)
    janitor.init()
    try:
        with psycopg.connect(empty_db.cluster.dsn(other), autocommit=True) as su:
            su.execute(f"alter database {other} owner to shop_owner")
            su.execute("alter schema public owner to shop_owner")
        yoyo_db = Db(empty_db.cluster, other)
        for target in (empty_db, yoyo_db):
            _prepare_shop(target)
        # A DBA's way: yoyo on the packaged migrations (post-apply.py reloads sql/).
        yoyo = Path(sys.executable).with_name("yoyo")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{empty_db.cluster.port}/{other}"
        proc = subprocess.run([str(yoyo), "apply", "--batch", "--no-config-file", "--database", url,
                               str(migrations_dir())], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        # pyctl's way.
        install.install(empty_db.dsn("postgres"))
        for target in (empty_db, yoyo_db):
            target.su.execute(PROTECT_SQL)
        a, b = fingerprint(empty_db.dsn("postgres")), fingerprint(yoyo_db.dsn("postgres"))
        assert [x[:2] for x in a] == [x[:2] for x in b]
        assert a == b
        # ... the same settings recorded (but what names this database and its tables' OIDs) ...
        settings = ("select name, case when name in ('database_identity', 'enforcement_fingerprint') then '' else value end "
                    "from privacy.settings order by 1")
        assert empty_db.su.execute(settings).fetchall() == yoyo_db.su.execute(settings).fetchall()
        recorded = {r[0] for r in yoyo_db.su.execute("select name from privacy.settings")}
        assert recorded >= {"database_identity", "steward_role", "enforcement_fingerprint"}
        # ... and what status and doctor say (neither thinks the yoyo database is a copy).
        from pyctl.cli import main

        def said(db: Db, *args: str) -> tuple[int, str]:
            result = CliRunner().invoke(main, ["--dsn", db.dsn("postgres"), *args], catch_exceptions=False)
            return result.exit_code, result.output.replace(db.name, "DB")

        for args in (("status",), ("--json", "doctor")):
            assert said(empty_db, *args) == said(yoyo_db, *args), args
        status = said(yoyo_db, "status")
        assert status[0] == 0 and "installed" in status[1] and "COPY" not in status[1], status
        assert "unsynced copy" not in said(yoyo_db, "doctor")[1]
        # An upgrade (sql/ reloaded over an installed database) changes nothing either.
        install.install(empty_db.dsn("postgres"))
        assert fingerprint(empty_db.dsn("postgres")) == a
        yoyo_db.close()
    finally:
        janitor.drop()


def test_non_superuser_owner_installs_without_superuser_features(empty_db: Db) -> None:
    _prepare_shop(empty_db)
    result = install.install(empty_db.dsn("shop_owner"))
    assert result["migrations_applied"] == ALL_MIGRATIONS
    empty_db.owner.execute(PROTECT_SQL)
    assert empty_db.scalar("select count(*) from pg_event_trigger") == 0
    states = {r[0] for r in empty_db.su.execute("select state from privacy.enforcement_status()").fetchall()}
    assert states == {"installed"}


def test_steward_role_is_configurable_for_roles_made_elsewhere(empty_db: Db) -> None:
    empty_db.su.execute("create role limited_owner login; create role dpo_team nologin")
    empty_db.su.execute(f"alter database {empty_db.name} owner to limited_owner")
    with pytest.raises(PyctlError, match="may not create roles"):
        install.install(empty_db.dsn("limited_owner"), steward_role="no_such_role")
    assert empty_db.scalar("select to_regclass('privacy.processing_restrictions')") is None
    install.install(empty_db.dsn("limited_owner"), steward_role="dpo_team")
    assert empty_db.scalar("select privacy.steward_role()") == "dpo_team"


def test_status_tells_missing_disabled_and_outdated_and_install_repairs(db: Db) -> None:
    def state(table: str) -> str:
        return str(db.scalar("select state from privacy.enforcement_status() where relation = %s", (table,)))

    db.su.execute("alter table activity_log disable trigger \"Privacy_check_delete\"")
    db.su.execute("drop policy privacy_hide_restricted on public.orders_2025")
    db.su.execute("comment on trigger zz_privacy_before_insert on public.addresses is 'hand-edited'")
    db.su.execute("alter table public.order_items disable row level security")
    assert state("public.activity_log") == "disabled"
    assert state("public.orders_2025") == "missing"
    assert state("public.addresses") == "outdated"
    assert state("public.order_items") == "disabled"
    result = install.install(db.dsn("shop_owner"))
    assert result["tables_regenerated"] == 4
    assert {r[0] for r in db.su.execute("select state from privacy.enforcement_status()").fetchall()} == {"installed"}


def test_uninstall_is_refused_while_a_hold_is_active(db: Db) -> None:
    hold_id = hold(db, 3)
    with pytest.raises(PyctlError, match="legal hold"):
        install.uninstall(db.dsn("shop_owner"))
    refused(db.app, "delete from order_items where id = 300")
    db.steward.execute("select privacy.release_hold(%s, 'closed', 'ref')", (hold_id,))
    restriction_id = restrict(db, 2)
    with pytest.raises(PyctlError, match="processing restriction"):
        install.uninstall(db.dsn("shop_owner"))
    db.steward.execute("select privacy.release_restriction(%s, 'verified', true)", (restriction_id,))
    db.close()
    snapshot = "select to_jsonb(t) - 'privacy_mark' from {} t order by 1::text"
    tables = ["customers", "orders", "order_items", "activity_log", "addresses", '"crm data"."Support; Tickets"']
    with psycopg.connect(db.dsn("postgres")) as su:
        before = {t: su.execute(snapshot.format(t)).fetchall() for t in tables}
    install.uninstall(db.dsn("shop_owner"))
    with psycopg.connect(db.dsn("postgres")) as su:
        after = {t: su.execute(snapshot.format(t)).fetchall() for t in tables}
        assert after == before
        assert su.execute("select to_regnamespace('privacy')").fetchone() == (None,)
        assert su.execute("select count(*) from pg_trigger where tgname ~* 'privacy_'").fetchone() == (0,)
        assert su.execute("select count(*) from pg_policy").fetchone() == (0,)
        assert su.execute("select count(*) from pg_attribute where attname = 'privacy_mark'").fetchone() == (0,)
        assert su.execute("select count(*) from pg_class where relrowsecurity").fetchone() == (0,)
    # and it can come back
    install.install(db.dsn("shop_owner"))


def test_a_migration_can_uninstall_with_sql_alone(sudb: Db) -> None:
    """privacy.uninstall() is the whole of pyctl uninstall: a DBA's migration can call it."""
    hold_id = hold(sudb, 3)
    err = refused_sql(sudb, "select privacy.uninstall()")
    assert err.sqlstate == "PV002" and "1 legal hold(s) active" in str(err)
    assert sudb.scalar("select count(*) from pg_event_trigger") == 2  # nothing was removed
    assert sudb.scalar("select to_regnamespace('privacy') is not null") is True
    sudb.steward.execute("select privacy.release_hold(%s, 'closed', 'ref')", (hold_id,))
    released = sudb.scalar("select privacy.uninstall()")
    assert set(released) == {"public.customers", "public.orders", "public.order_items", "public.activity_log",
                             "public.addresses", '"crm data"."Support; Tickets"'}
    assert sudb.scalar("select to_regnamespace('privacy')") is None
    assert sudb.scalar("select count(*) from pg_event_trigger") == 0
    assert sudb.scalar("select count(*) from pg_trigger where tgname ~* 'privacy_'") == 0


def refused_sql(db: Db, statement: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        db.su.execute(statement)
    return info.value


def _drop_statement(kind: str, name: str, relation: str) -> str:
    return {
        "view": f"drop view privacy.{name} cascade",
        "function": f"drop function privacy.{name} cascade",
        "trigger": f'drop trigger "{name}" on {relation}',
        "policy": f'drop policy "{name}" on {relation}',
        "rls": f"alter table {relation} disable row level security",
    }[kind]


def test_each_generated_object_dropped_is_named_by_status_and_restored(db: Db) -> None:
    """What status expects is what the generator makes (enforcement_plan): drop each object
    the plan lists, in turn; status names it, and what install runs puts it back."""
    plan = db.su.execute(
        "select x.kind, x.name, x.relid::regclass::text from privacy.protected_tables p "
        "cross join lateral privacy.enforcement_plan(p.id) x where x.kind in ('view', 'function', 'trigger', 'policy', 'rls') "
        "order by p.id, x.step").fetchall()
    kinds = {k for k, _, _ in plan}
    assert kinds == {"view", "function", "trigger", "policy", "rls"} and len(plan) > 40, (kinds, len(plan))
    with psycopg.connect(db.dsn("postgres")) as conn:
        for kind, name, relation in plan:
            with conn.transaction(force_rollback=True):
                conn.execute(_drop_statement(kind, name, relation))
                details = " | ".join(f"{r[0]}: {r[1]} {r[2]}" for r in conn.execute(
                    "select relation, state, detail from privacy.enforcement_status() where state <> 'installed'"))
                expected = "row level security" if kind == "rls" else f"{kind} {name}"
                assert expected in details, (kind, name, relation, details)
                conn.execute("select privacy.refresh_enforcement()")  # what pyctl install runs
                after = conn.execute("select relation, state, detail from privacy.enforcement_status() where state <> 'installed'").fetchall()
                assert after == [], (kind, name, after)
    # The defect reported: the referencing table's triggers of --referenced-by, dropped for good,
    # are named by status and restored by pyctl install itself.
    db.su.execute("drop trigger privacy_after_delete on public.customers")
    db.su.execute("drop trigger privacy_after_insert on public.customers")
    detail = db.scalar("select detail from privacy.enforcement_status() where relation = 'public.customers'")
    assert "trigger privacy_after_delete" in detail and "trigger privacy_after_insert" in detail, detail
    install.install(db.dsn("shop_owner"))
    assert {r[0] for r in db.su.execute("select state from privacy.enforcement_status()").fetchall()} == {"installed"}

"""The trust boundary: no role reaches past its rights through the toolkit's own functions.

Every function in schema privacy is classified below (who may execute it, and whether it
runs as its owner). The table is kept here, apart from the model in sql/90_grants.sql, so
that a function added or regranted without being classified fails this test. Then every
function the application role and a steward may execute is called with hostile arguments
(hypothesis): nothing changes but what the function documents, and nothing the caller may
not see shows in its output or its errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_input import NAMES, SHOP_DATA, SQL_FRAGMENTS, UUIDS, WEIRD_TEXT, hostile_text, snapshot

from conftest import Db, hold, refused, restrict

PUBLIC, STEWARD, OWNER = "public", "steward", "owner"

# function -> (who may execute it, runs as its owner (SECURITY DEFINER))
MODEL: dict[str, tuple[str, bool]] = {
    # anyone: the predicates applications use, and pure formatting
    "privacy.is_held(text,text)": (PUBLIC, True),
    "privacy.is_held(text,bigint)": (PUBLIC, False),
    "privacy.is_held(text,uuid)": (PUBLIC, False),
    "privacy.is_restricted(text,text)": (PUBLIC, True),
    "privacy.is_restricted(text,bigint)": (PUBLIC, False),
    "privacy.is_restricted(text,uuid)": (PUBLIC, False),
    "privacy.toolkit_version()": (PUBLIC, False),
    "privacy.qualified(name,name)": (PUBLIC, False),
    "privacy.describe_path(privacy.protected_tables)": (PUBLIC, False),
    "privacy.required_steps(text)": (PUBLIC, False),
    # stewards
    "privacy.place_hold(text,text,text,text)": (STEWARD, True),
    "privacy.release_hold(uuid,text,text)": (STEWARD, True),
    "privacy.place_restriction(text,text,text,text)": (STEWARD, True),
    "privacy.release_restriction(uuid,text,boolean)": (STEWARD, True),
    "privacy.verify_restriction(uuid,text)": (STEWARD, True),
    "privacy.notify_subject(uuid,text)": (STEWARD, True),
    "privacy.approve_release(uuid,text)": (STEWARD, True),
    "privacy.break_glass(text)": (STEWARD, True),
    "privacy.add_recipient(text,text)": (STEWARD, True),
    "privacy.remove_recipient(text)": (STEWARD, True),
    "privacy.ack_notice(text,bigint)": (STEWARD, True),
    "privacy.pending_notices()": (STEWARD, True),
    "privacy.events_since(bigint,integer)": (STEWARD, True),
    "privacy.missing_steps(privacy.processing_restrictions)": (STEWARD, False),
    "privacy.discover(text)": (STEWARD, True),
    "privacy.coverage()": (STEWARD, True),
    "privacy.doctor()": (STEWARD, True),
    "privacy.verify_hold(uuid)": (STEWARD, True),
    "privacy.prove_hold(uuid)": (STEWARD, True),
    "privacy.pending_proofs()": (STEWARD, False),
    "privacy.verify_ledger()": (STEWARD, True),
    "privacy.enforcement_status()": (STEWARD, True),
    "privacy.table_status(integer)": (STEWARD, True),
    "privacy.subject_key(text,text)": (STEWARD, True),
    "privacy.subject_rows_sql(integer,text,text)": (STEWARD, True),
    "privacy.subject_row_count(integer,text,text)": (STEWARD, True),
    "privacy.record_export(text,text,text,jsonb)": (STEWARD, True),
    "privacy.copy_status()": (STEWARD, True),
    "privacy.database_identity()": (STEWARD, False),
    "privacy.fleet_add(text,text,text,text)": (STEWARD, True),
    "privacy.fleet_remove(text)": (STEWARD, True),
    "privacy.source_state(boolean)": (STEWARD, True),
    "privacy.steward_role()": (STEWARD, False),
    "privacy.heal()": (STEWARD, True),
    "privacy.role_problems(name)": (STEWARD, True),
    "privacy.place_restriction(text,text,text,text,text[],text[])": (STEWARD, True),
    "privacy.add_exception(uuid,text,text)": (STEWARD, True),
    "privacy.withdraw_exception(uuid,text,text)": (STEWARD, True),
    "privacy.erase(text,text,text,text,boolean,boolean)": (STEWARD, True),
    "privacy.erase_many(text,text[],text,text)": (STEWARD, True),
    "privacy.pending_erasures()": (STEWARD, True),
    "privacy.erasure_certificate(uuid)": (STEWARD, True),
    "privacy.rows_of_subjects(jsonb)": (STEWARD, True),
    "privacy.erased_rows_present()": (STEWARD, True),
    # the toolkit's owner only
    "privacy.acting_role()": (OWNER, False),
    "privacy.is_privileged(name,oid)": (OWNER, False),
    "privacy.refuse(oid,text,smallint,jsonb)": (OWNER, False),
    "privacy.fail(text)": (OWNER, False),
    "privacy.require_text(text,text)": (OWNER, False),
    "privacy.ensure_steward_role(name)": (OWNER, False),
    "privacy.ledger_content(privacy.ledger)": (OWNER, False),
    "privacy.ledger_append(text,text,text,uuid,jsonb)": (OWNER, False),
    "privacy.ledger_is_append_only()": (OWNER, False),
    "privacy.relation_of(privacy.protected_tables)": (OWNER, False),
    "privacy.root_of(privacy.subject_types)": (OWNER, False),
    "privacy.registry_row(regclass)": (OWNER, False),
    "privacy.protected_table_of(oid)": (OWNER, False),
    "privacy.descendants(oid)": (OWNER, False),
    "privacy.column_names(oid,smallint[])": (OWNER, False),
    "privacy.column_numbers(oid,name[])": (OWNER, False),
    "privacy.resolve_table(text)": (OWNER, False),
    "privacy.column_type(regclass,name)": (OWNER, False),
    "privacy.foreign_key(regclass,name,regclass)": (OWNER, False),
    "privacy.add_subject_type(text,regclass,name)": (OWNER, False),
    "privacy.register_protected(regclass,text,text,name[],regclass,name[])": (OWNER, False),
    "privacy.protect(regclass,text,name)": (OWNER, False),
    "privacy.protect_via(regclass,name)": (OWNER, False),
    "privacy.protect_referenced_by(regclass,regclass,name,boolean)": (OWNER, False),
    "privacy.unprotect(regclass)": (OWNER, False),
    "privacy.table_marker(integer)": (OWNER, False),
    "privacy.heal_registry()": (OWNER, False),
    "privacy.drop_enforcement(privacy.protected_tables,boolean)": (OWNER, False),
    "privacy.subject_lock_class()": (OWNER, False),
    "privacy.writer_bucket(text,text)": (OWNER, False),
    "privacy.guard_bucket(text,text)": (OWNER, False),
    "privacy.lock_subject_guard(text,text)": (OWNER, False),
    "privacy.qualified_type(text)": (OWNER, False),
    "privacy.has_own_before_update_trigger(oid)": (OWNER, False),
    "privacy.join_columns(text,text[],text)": (OWNER, False),
    "privacy.join_pairs(text,text[],text[],text)": (OWNER, False),
    "privacy.quoted(name[])": (OWNER, False),
    "privacy.view_columns(smallint[])": (OWNER, False),
    "privacy.ph_rel(oid)": (OWNER, False),
    "privacy.ph_col(oid,smallint)": (OWNER, False),
    "privacy.render(text,boolean)": (OWNER, False),
    "privacy.object_hash(text,oid)": (OWNER, False),
    "privacy.row_identity(oid,jsonb)": (OWNER, False),
    "privacy.exposed_columns(privacy.protected_tables)": (OWNER, False),
    "privacy.enforcement_plan(integer)": (OWNER, False),
    "privacy.plan_tag(integer)": (OWNER, False),
    "privacy.enforce(regclass)": (OWNER, False),
    "privacy.remark_table(integer,boolean,regclass)": (OWNER, False),
    "privacy.guard_truncate()": (OWNER, True),
    # Citus (sql/89_citus.sql)
    "privacy.citus_table(oid)": (OWNER, False),
    "privacy.citus_session()": (OWNER, False),
    "privacy.citus_setup()": (OWNER, False),
    "privacy.citus_path(regclass,text,text,name[],regclass,name[])": (OWNER, False),
    "privacy.citus_refuse(text,text,smallint,text,boolean,text)": (OWNER, False),
    "privacy.citus_guard_truncate()": (OWNER, True),
    "privacy.citus_remark_table(integer,boolean)": (OWNER, False),
    "privacy.citus_mark_referenced(integer,text[])": (OWNER, False),
    "privacy.citus_journal_name(text)": (OWNER, False),
    "privacy.citus_ensure_journal(text)": (OWNER, False),
    "privacy.citus_collect_corrections()": (OWNER, False),
    "privacy.citus_declare(text,boolean,text,text[])": (OWNER, False),
    "privacy.key_type_problem(regclass,name)": (OWNER, False),
    "privacy.key_cast_type(text)": (OWNER, False),
    "privacy.citus_enforcement_plan(integer)": (OWNER, False),
    "privacy.refresh_enforcement()": (OWNER, False),
    "privacy.canonical_key(text,text)": (OWNER, False),
    "privacy.refresh_subject(text,text)": (OWNER, False),
    "privacy.refresh_subjects(text,text[])": (OWNER, False),
    "privacy.marked_in_bulk(integer)": (OWNER, False),
    "privacy.marking_sql(integer)": (OWNER, False),
    "privacy.marking_in_bulk()": (OWNER, False),
    "privacy.active_entry(uuid,text)": (OWNER, False),
    "privacy.restriction_step(uuid,text,text)": (OWNER, False),
    "privacy.break_glass_reason()": (OWNER, False),
    "privacy.strip_null_keys(jsonb)": (OWNER, False),
    "privacy.journal(integer,text,oid,text,jsonb,jsonb,jsonb,name,name,timestamp with time zone)": (OWNER, False),
    "privacy.enforcement_fingerprint()": (OWNER, False),
    "privacy.remember_fingerprint()": (OWNER, False),
    "privacy.check_held_data_after_ddl(oid)": (OWNER, False),
    "privacy.on_sql_drop()": (OWNER, True),
    "privacy.on_ddl_command_end()": (OWNER, True),
    "privacy.ledger_entry_of(jsonb)": (OWNER, False),
    "privacy.sync_replay_entry(text,bigint,bytea,jsonb,jsonb,jsonb,jsonb)": (OWNER, False),
    "privacy.sync_replay(text,bigint,jsonb,jsonb,jsonb,jsonb)": (OWNER, False),
    "privacy.sync_finish(text,text,bigint)": (OWNER, False),
    "privacy.subject_row_hashes(integer,text,text,text[],smallint[])": (OWNER, False),
    "privacy.digest_hold(uuid)": (OWNER, False),
    "privacy.constraint_columns(oid,smallint[])": (OWNER, False),
    "privacy.foreign_keys()": (OWNER, False),
    "privacy.reference_sharing(regclass,name[],regclass,name[])": (OWNER, False),
    "privacy.dismissal_of(text,oid)": (OWNER, False),
    "privacy.dismiss(text,regclass,text)": (OWNER, False),
    "privacy.undismiss(text,regclass)": (OWNER, False),
    "privacy.rls_cves()": (OWNER, False),
    "privacy.sees_everything(oid)": (OWNER, False),
    "privacy.function_audiences()": (OWNER, False),
    "privacy.expected_grantees(regprocedure)": (OWNER, False),
    "privacy.finish_install(jsonb)": (OWNER, False),
    "privacy.uninstall()": (OWNER, False),
    "privacy.canonical_keys(text,text[])": (OWNER, False),
    "privacy.place_holds(text,text[],text,text)": (STEWARD, True),
    "privacy.place_restrictions(text,text[],text,text)": (STEWARD, True),
    "privacy.hold_guards()": (OWNER, False),
    "privacy.held_relations(text)": (OWNER, False),
    "privacy.guard_held_relations(text)": (OWNER, False),
    "privacy.hold_guard_name(text,oid)": (OWNER, False),
    "privacy.create_app_role(name,text,name[])": (OWNER, False),
    "privacy.add_steward(name)": (OWNER, False),
    # purposes (issue 19)
    "privacy.role_mask(name)": (OWNER, False),
    "privacy.mark_binds(name,smallint)": (OWNER, False),
    "privacy.subject_mark(text,text)": (OWNER, False),
    "privacy.purpose_policy_arms()": (OWNER, False),
    "privacy.purpose_policies(text)": (OWNER, False),
    "privacy.add_purpose(text,text)": (OWNER, False),
    "privacy.grant_purpose(name,text)": (OWNER, False),
    "privacy.checked_purposes(text[])": (OWNER, False),
    "privacy.sync_restriction_purposes(privacy.ledger)": (OWNER, False),
    "privacy.sync_replay_purpose_entry(privacy.ledger,jsonb)": (OWNER, False),
    "privacy.purpose_findings(oid[])": (OWNER, False),
    "privacy.erasure_blockers(text,text)": (OWNER, False),
    "privacy.describe_blockers(jsonb)": (OWNER, False),
    "privacy.erasure_order(text)": (OWNER, False),
    "privacy.erasing(jsonb)": (OWNER, False),
    "privacy.lock_subject(text,text)": (OWNER, False),
    "privacy.erase_rows(text,text,uuid,text)": (OWNER, False),
    "privacy.subject_exists(text,text)": (OWNER, False),
    "privacy.perform_erasure(uuid,boolean,jsonb)": (OWNER, False),
    "privacy.run_pending_erasure(text,text)": (OWNER, False),
    "privacy.sync_erasure(text,privacy.ledger,jsonb,jsonb)": (OWNER, False),
    "privacy.reapply_erasures()": (OWNER, False),
    "privacy.subjects_rows_sql(integer)": (OWNER, False),
    "privacy.erase_rows_bulk(text,text[],uuid[])": (OWNER, False),
    "privacy.record_erasure(privacy.erasures,jsonb,jsonb)": (OWNER, False),
}
# The functions generated for each protected table <n>: the trigger functions run as the
# toolkit's owner, and only it and the table's owner may attach them to a trigger.
GENERATED = {"insert": True, "row": True, "propagate": True, "mark": False, "subjects": False}

CATALOG = """
select p.oid::regprocedure::text, p.prosecdef,
       coalesce((select array_agg(g order by g) from (
                     select distinct case when e.grantee = 0 then 'PUBLIC' else pg_get_userbyid(e.grantee)::text end as g
                       from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) e
                      where e.privilege_type = 'EXECUTE' and e.grantee <> p.proowner) x), '{}')
  from pg_proc p where p.pronamespace = 'privacy'::regnamespace order by 1
"""


def audience(grantees: list[str]) -> str:
    return PUBLIC if "PUBLIC" in grantees else STEWARD if "privacy_steward" in grantees else OWNER


@pytest.mark.parametrize("fixture", ["db", "sudb"])
def test_every_function_is_classified_and_granted_as_the_model_says(fixture: str, request: pytest.FixtureRequest) -> None:
    d: Db = request.getfixturevalue(fixture)
    owner_of_tables = "shop_owner" if fixture == "sudb" else None  # installed by postgres: the tables' owner differs
    seen = set()
    for signature, definer, grantees in d.su.execute(CATALOG).fetchall():
        generated = re.fullmatch(r"privacy\.pt_\d+_(\w+)\(.*\)", signature)
        if generated:
            kind = generated.group(1)
            assert kind in GENERATED, f"unclassified generated function {signature}"
            assert definer is GENERATED[kind], signature
            expected = [owner_of_tables] if owner_of_tables and GENERATED[kind] else []
            assert grantees == expected, f"{signature} may be executed by {grantees}"
            continue
        assert signature in MODEL, f"{signature} is not classified in tests/test_trust.py (and sql/90_grants.sql)"
        seen.add(signature)
        who, runs_as_owner = MODEL[signature]
        assert definer is runs_as_owner, f"{signature}: SECURITY DEFINER is {definer}, the model says {runs_as_owner}"
        assert grantees == {PUBLIC: ["PUBLIC"], STEWARD: ["privacy_steward"], OWNER: []}[who], f"{signature}: {grantees}"
    assert seen == set(MODEL), f"classified but missing: {set(MODEL) - seen}"
    # ... and the shipped model agrees, so doctor judges by the same table.
    shipped = dict(d.su.execute("select function_name, audience from privacy.function_audiences()").fetchall())
    assert shipped == {k: v[0] for k, v in MODEL.items()}
    assert not [r for r in d.su.execute("select category from privacy.doctor()").fetchall() if r[0] in ("function grants", "unclassified function")]


def test_doctor_reports_a_grant_made_by_hand_with_its_fix(db: Db) -> None:
    db.owner.execute("grant execute on function privacy.ledger_append(text, text, text, uuid, jsonb) to app")
    db.owner.execute("create function privacy.helper() returns int language sql as 'select 1'")
    findings = {r[0]: r for r in db.su.execute("select category, object, finding, fix, fix_sql from privacy.doctor() "
                                               "where category in ('function grants', 'unclassified function')").fetchall()}
    grants = findings["function grants"]
    assert grants[1] == "privacy.ledger_append(text,text,text,uuid,jsonb)" and "app" in grants[2]
    assert grants[3] == "REVOKE EXECUTE ON FUNCTION privacy.ledger_append(text,text,text,uuid,jsonb) FROM app"
    assert findings["unclassified function"][1] == "privacy.helper()"
    db.owner.execute(grants[4])  # the fix works
    from pyctl import install

    install.install(db.dsn("shop_owner"))  # and a reinstall restores the model, dropping what it does not know
    assert not db.su.execute("select 1 from privacy.doctor() where category in ('function grants', 'unclassified function')").fetchall()
    assert db.scalar("select to_regprocedure('privacy.helper()')") is None


# -- the attacks of issue 13, each by name ---------------------------------------------------------


def test_the_application_cannot_write_the_record(db: Db) -> None:
    """It once called privacy.journal() and wrote a correction, attributed to a steward, into the ledger."""
    restrict(db, 2)
    before = snapshot(db)
    for call in ("select privacy.journal(2, 'correction', 'public.orders'::regclass, 'UPDATE', '{\"id\": 20}', '{\"id\": 21}', "
                 "'[[\"customer\", \"2\"]]')",
                 "select privacy.ledger_append('correction', 'customer', '2', null, '{}')",
                 "select privacy.break_glass('I say so')",
                 "select privacy.refuse('public.orders'::regclass, 'DELETE', 1::smallint, '[[\"customer\", \"2\"]]')",
                 "select privacy.check_truncate('public.orders'::regclass, 'app')",
                 "select privacy.pt_2_subjects(20)", "select privacy.pt_2_mark(2)", "select privacy.pt_1_mark(2)",
                 "select privacy.sync_replay('x', 0, '[]', '[]', '[]', '[]')", "select privacy.heal()"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) if "check_truncate" not in call else \
                pytest.raises(psycopg.errors.UndefinedFunction):
            db.app.execute(call)
    assert snapshot(db) == before


def test_a_steward_cannot_delete_restrictions_or_write_any_table_through_sync(db: Db) -> None:
    """A steward once called privacy.sync_correction() on privacy.processing_restrictions: the restriction was gone."""
    restriction_id = restrict(db, 2)
    before = snapshot(db)
    for call in ("select privacy.sync_replay('x', 1, '[]', '[]', '[]', '[\"privacy.processing_restrictions\"]')",
                 "select privacy.sync_replay_entry('x', 1, '\\x00', '{}', '[]', '[]', '[]')",
                 "select privacy.sync_finish('x', 'x', 1)", "select privacy.remark_table(1, true)",
                 "select privacy.refresh_subject('customer', '2')", "select privacy.digest_hold(%s)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.steward.execute(call, (restriction_id,) if "%s" in call else None)
    for gone in ("sync_correction", "sync_restriction", "check_truncate", "session_role", "subject_mark_for_write"):
        assert db.scalar("select count(*) from pg_proc where proname = %s and pronamespace = 'privacy'::regnamespace", (gone,)) == 0
    assert snapshot(db) == before
    assert db.scalar("select released_at is null from privacy.processing_restrictions where id = %s", (restriction_id,)) is True


def test_refusals_name_no_subject_the_role_cannot_see(db: Db) -> None:
    """TRUNCATE and a cascade from a visible row once named a restricted subject the application cannot see."""
    restriction_id = restrict(db, 2)
    db.owner.execute("grant truncate on order_items to app")
    for statement in ("truncate order_items", "delete from products where id = 2"):  # product 2 cascades to Ben's items
        err = refused(db.app, statement)
        message = str(err.diag.message_primary)
        assert "processing restriction" in message and "customer/2" not in message and restriction_id not in message, message
    assert db.scalar("select count(*) from order_items") == 7 and db.scalar("select count(*) from products") == 2
    # A steward or the owner gets the whole message.
    err = refused(db.owner, "truncate order_items")
    assert "customer/2" in str(err.diag.message_primary) and restriction_id in str(err.diag.message_primary)


def test_a_trigger_function_cannot_be_attached_to_the_applications_own_table(db: Db) -> None:
    db.owner.execute("grant create on schema public to app")
    db.app.execute("create table public.forged (order_id int, placed_on date, privacy_mark smallint default 2)")
    for function in ("privacy.pt_3_row()", "privacy.pt_3_insert()", "privacy.pt_2_propagate()", "privacy.guard_truncate()"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.app.execute(f"create trigger t before delete on public.forged for each row execute function {function}")
    assert db.scalar("select count(*) from privacy.corrections") == 0


def test_identity_comes_from_the_session_not_from_a_definer_function_of_the_owner(db: Db) -> None:
    """A SECURITY DEFINER function of the owner, run by the application, acts as the application."""
    restrict(db, 2)
    db.owner.execute("create function public.purge(k int) returns bigint security definer language sql "
                     "as 'with d as (delete from public.orders where customer_id = k returning 1) select count(*) from d'")
    db.owner.execute("grant execute on function public.purge(int) to app")
    refused(db.app, "select public.purge(2)")
    assert db.scalar("select count(*) from orders where customer_id = 2") == 2
    db.steward.execute("update orders set total = total + 1 where id = 20")  # a correction: journaled as the steward
    assert db.scalar("select session_role || '/' || acting_role from privacy.corrections order by id desc limit 1") == \
        "steward_user/steward_user"


# -- every function a role may execute, with hostile arguments ----------------------------------------

RESTRICTED_KEY = "987654"  # a subject the application role cannot see: its key must never show to it

def sendable(text: str) -> bool:
    """What a client can send at all: no NUL, no lone surrogate (bytes that were not UTF-8)."""
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


VALUES: dict[str, list[Any]] = {
    "text": [*SQL_FRAGMENTS, *filter(sendable, WEIRD_TEXT), *NAMES, "customer",
             RESTRICTED_KEY, "2", "3", "privacy.processing_restrictions", "pg_catalog.pg_authid", None],
    "name": [*NAMES, "app", "steward_user", "privacy_steward", "postgres", "x" * 100, None],
    "uuid": [*UUIDS[:2], None],
    "bigint": [0, -1, 1, 2**62, -(2**62), None],
    "integer": [0, -1, 1, 2, 3, 6, 2**31 - 1, None],
    "boolean": [True, False, None],
    "jsonb": ['{"a": 1}', "[]", "[[\"customer\", \"2\"]]", '{"id": "' + "x" * 70000 + '"}', "null", '"\\u0000"', None],
    "privacy.processing_restrictions": [None],
}


def _param_types(db: Db, signature: str) -> list[str]:
    types = db.scalar("select array(select format_type(t, null) from unnest(proargtypes::oid[]) t) "
                      "from pg_proc where oid = %s::regprocedure", (signature,))
    return list(types)


@st.composite
def call(draw: st.DrawFn, functions: list[tuple[str, list[str]]], known: list[str]) -> tuple[str, list[Any]]:
    signature, types = draw(st.sampled_from(functions))
    args = []
    for t in types:
        pool = VALUES.get(t, [None])
        if t in ("text", "uuid"):
            args.append(draw(st.one_of(st.sampled_from(pool + known), hostile_text().filter(sendable))))
        else:
            args.append(draw(st.sampled_from(pool)))
    return signature, args


def _hostile_setup(db: Db) -> list[str]:
    db.owner.execute(f"insert into customers values ({RESTRICTED_KEY}, 'Zed Hidden', 2)")
    db.owner.execute(f"insert into orders values ({RESTRICTED_KEY}, {RESTRICTED_KEY}, '2026-06-01', 5)")
    restricted = restrict(db, int(RESTRICTED_KEY))
    held = hold(db, 3)
    return [held, restricted]


def _callable_by(db: Db, role: str) -> list[tuple[str, list[str]]]:
    rows = db.su.execute("select oid::regprocedure::text from pg_proc where pronamespace = 'privacy'::regnamespace "
                         "and has_function_privilege(%s, oid, 'execute') order by 1", (role,)).fetchall()
    return [(r[0], _param_types(db, r[0])) for r in rows]


def _run(conn: psycopg.Connection, signature: str, args: list[Any]) -> str:
    name = signature.split("(")[0]
    placeholders = ", ".join("%s" for _ in args)
    returns_set = conn.execute("select proretset from pg_proc where oid = %s::regprocedure", (signature,)).fetchone()[0]  # type: ignore[index]
    query = f"select * from {name}({placeholders})" if returns_set else f"select {name}({placeholders})"
    typed = ", ".join(f"%s::{t}" for t in conn.execute(
        "select array(select format_type(t, null) from unnest(proargtypes::oid[]) t) from pg_proc where oid = %s::regprocedure",
        (signature,)).fetchone()[0])  # type: ignore[index]
    query = query.replace(f"({placeholders})", f"({typed})")
    try:
        with conn.transaction():
            rows = conn.execute(query, args).fetchall()
        return json.dumps(rows, default=str)
    except psycopg.Error as exc:
        return f"{exc.sqlstate}: {exc}"


# What each function may change when it succeeds: (part of the snapshot) -> allowed.
WRITERS = {"place_hold", "release_hold", "place_restriction", "release_restriction", "verify_restriction", "notify_subject",
           "approve_release", "break_glass", "add_recipient", "remove_recipient", "ack_notice", "record_export", "fleet_add",
           "fleet_remove", "heal", "add_exception", "withdraw_exception", "erase", "erase_many",
           "prove_hold", "verify_hold"}  # (verify_hold: computes a pending proof first)


# The functions that re-mark a subject's rows, and the shop's rows without their marks.
MARKERS = {"place_hold", "release_hold", "place_restriction", "release_restriction", "place_holds", "place_restrictions", "heal",
           "add_exception", "withdraw_exception"}
SHOP_DATA_UNMARKED = SHOP_DATA.replace("to_jsonb(x)::text", "(to_jsonb(x) - 'privacy_mark')::text")


@pytest.mark.parametrize("role", ["app", "steward_user"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_callable_function_survives_hostile_arguments(db: Db, role: str, data: st.DataObject) -> None:
    if db.scalar("select count(*) from customers where id = %s", (int(RESTRICTED_KEY),)) == 0:
        db.known = _hostile_setup(db)  # type: ignore[attr-defined]
        db.callable = {r: _callable_by(db, r) for r in ("app", "steward_user")}  # type: ignore[attr-defined]
    functions = db.callable[role]  # type: ignore[attr-defined]
    if role == "app":
        assert {s for s, _ in functions} == {k for k, v in MODEL.items() if v[0] == PUBLIC}
    signature, args = data.draw(call(functions, db.known))  # type: ignore[attr-defined]
    conn = db.app if role == "app" else db.steward
    before = snapshot(db)
    shop_before = before[1]
    shop_unmarked = db.scalar(SHOP_DATA_UNMARKED)
    out = _run(conn, signature, args)
    after = snapshot(db)
    name = signature.split("(")[0].removeprefix("privacy.")
    # The shop's rows are never changed by a function call, whoever calls what, but by a
    # steward's erasure (erase, or the release of the last hold of a queued one), which
    # the ledger records.
    erased = role == "steward_user" and db.scalar(
        "select count(*) from privacy.ledger where event = 'erasure' and seq > %s", (before[0][1] or 0,)) > 0
    # Placing and releasing holds and restrictions re-marks the subject's rows (privacy_mark,
    # the toolkit's own column): nothing else of them may change.
    remarked = role == "steward_user" and name in MARKERS and db.scalar(SHOP_DATA_UNMARKED) == shop_unmarked
    assert after[1] == shop_before or erased or remarked, f"{signature}{args} changed the shop's data"
    if name not in WRITERS or role == "app":
        assert after == before, f"{signature}{args} changed the toolkit's records: {out[:300]}"
    if role == "app":
        assert RESTRICTED_KEY not in out or any(RESTRICTED_KEY in str(a) for a in args), f"{signature}{args} -> {out[:300]}"
        assert "Zed Hidden" not in out

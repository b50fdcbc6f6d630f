"""Post-apply hook for DBAs who run `yoyo apply` on these migrations directly.

After the table migrations, reload every function, trigger function and policy
generator from sql/ (shipped beside this directory) and regenerate the
enforcement of every protected table. `pyctl install` does the same itself.
"""

from pathlib import Path

from yoyo import step

_SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def reload_sql(conn):  # noqa: ANN001, ANN201 - yoyo passes a DB-API connection
    cursor = conn.cursor()
    cursor.execute(
        "insert into privacy.settings (name, value) values ('steward_role', 'privacy_steward') "
        "on conflict (name) do nothing"
    )
    cursor.execute(
        "do $$ begin if not exists (select 1 from pg_catalog.pg_roles where rolname = "
        "(select value from privacy.settings where name = 'steward_role')) then "
        "execute format('create role %I nologin', (select value from privacy.settings where name = 'steward_role')); "
        "end if; end $$"
    )
    for path in sorted(_SQL_DIR.glob("*.sql")):
        cursor.execute(path.read_text(encoding="utf-8"))
    cursor.execute("select privacy.refresh_enforcement()")


steps = [step(reload_sql)]

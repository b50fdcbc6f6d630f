"""Post-apply hook for DBAs who run `yoyo apply` on these migrations directly.

After the table migrations, load every function, trigger function and policy
generator from sql/ (shipped beside this directory) and finish the install, with the
same SQL functions `pyctl install` calls: privacy.ensure_steward_role() right after
00_base.sql, privacy.finish_install() at the end.
"""

from pathlib import Path

from yoyo import step

_SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def reload_sql(conn):  # noqa: ANN001, ANN201 - yoyo passes a DB-API connection
    cursor = conn.cursor()
    for i, path in enumerate(sorted(_SQL_DIR.glob("*.sql"))):
        cursor.execute(path.read_text(encoding="utf-8"))
        if i == 0:
            cursor.execute("select privacy.ensure_steward_role(null)")
    cursor.execute("select privacy.finish_install('[]')")


steps = [step(reload_sql)]

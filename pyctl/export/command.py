"""`pyctl export` and `pyctl export verify` on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..commands import settings, use_json
from ..db import PyctlError
from ..output import emit_json
from .copy import _terminate_cleanly, export
from .manifest import FORMATS
from .plan import _human
from .verify import check_ledger, verify


@click.command("export")
@click.argument("key", required=False)
@click.option("--subject", "subject_type", metavar="TYPE", help="Subject type (default: the only one).")
@click.option("--out", required=True, metavar="PATH", type=click.Path(path_type=Path),
              help="Where the export goes: a directory (a .zip file with --zip; a directory of exports with --all-held).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True,
              help="csv (with a header), json (an array per table), ndjson (an object per line) or sql (INSERT statements).")
@click.option("--zip", "as_zip", is_flag=True, help="Write one zip file instead of a directory (with --all-held: one zip per subject).")
@click.option("--all-held", is_flag=True, help="Export every subject under an active legal hold, one export each, from one snapshot.")
@click.option("--overwrite", is_flag=True, help="Replace PATH if it exists and is not empty.")
@click.option("--allow-empty", is_flag=True,
              help="Write an empty export, labelled as such, for a subject with no row anywhere (default: an error).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the export's path.")
def export_subject(key: str | None, subject_type: str | None, out: Path, fmt: str, as_zip: bool, all_held: bool,
                   overwrite: bool, allow_empty: bool, as_json: bool) -> None:
    """Export every row of a subject in every protected table, with a verifiable manifest.

    One REPEATABLE READ, READ ONLY transaction: all files are one consistent
    snapshot. One file per table, manifest.json (source, snapshot, ledger head,
    subject, every file's rows, bytes and sha256) and SHA256SUMS. The manifest's
    sha256 is recorded in the ledger. Prints the export's path.

    \b
    Example:
        pyctl export 42 --out ./customer-42
        pyctl export 42 --format sql --zip --out ./customer-42.zip
        pyctl export --all-held --out ./preserved-2026-06-30
    """
    as_json = use_json(as_json)
    if key is None and not all_held:
        raise click.UsageError("give the subject's KEY, or --all-held")
    if key is not None and all_held:
        raise click.UsageError("give either a KEY or --all-held, not both")
    with _terminate_cleanly():
        result = export(settings().dsn, out, key=key, subject_type=subject_type, all_held=all_held, fmt=fmt, as_zip=as_zip,
                        overwrite=overwrite, allow_empty=allow_empty, progress=True)
    for r in result["exports"]:
        label = " (empty: no row anywhere)" if r["empty"] else ""
        click.echo(f"exported {r['subject_type']}/{r['key']}{label}: {r['files']} files, {r['rows']:,} rows, {_human(r['bytes'])} "
                   f"to {r['path']}; manifest sha256 {r['manifest_sha256']}, ledger entry {r['ledger_seq']}", err=True)
    if all_held and not result["exports"]:
        click.echo(f"no subject is under an active legal hold: {out} is empty", err=True)
    if as_json:
        emit_json(result)
    elif all_held:
        for r in result["exports"]:
            click.echo(r["path"])
    else:
        click.echo(result["path"])


@click.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--ledger", is_flag=True, help="Also find the manifest's sha256 in the ledger of the database (--dsn).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_command(path: Path, ledger: bool, as_json: bool) -> None:
    """Recompute every digest and row count of an export; exit 1 on any mismatch.

    Fails on a changed, missing or extra file, and on a manifest or SHA256SUMS
    that does not match. Works offline; --ledger also checks that the database's
    ledger recorded this manifest.

    \b
    Example:
        pyctl export verify ./customer-42
        pyctl --dsn "$DATABASE_URL" export verify ./customer-42.zip --ledger
    """
    as_json = use_json(as_json)
    result = verify(path)
    if ledger:
        found = check_ledger(settings().dsn, result)
        result["ledger"] = [{"seq": e["seq"], "recorded_at": e["recorded_at"], "session_role": e["session_role"]}
                            for e in found["entries"]]
        result["problems"] += found["problems"]
        result["ok"] = not result["problems"]
    if as_json:
        emit_json(result)
    elif result["ok"]:
        subject = result["subject"]
        recorded = f"; ledger entry {result['ledger'][0]['seq']}" if result.get("ledger") else ""
        click.echo(f"export verifies: {subject.get('type')}/{subject.get('key')}, {result['files']} files, {result['rows']:,} rows, "
                   f"manifest sha256 {result['manifest_sha256']}{recorded}")
    else:
        for problem in result["problems"]:
            click.echo(f"{path}: {problem}")
    if result["problems"]:
        n = len(result["problems"])
        raise PyctlError(f"export {path} does not verify: {result['problems'][0]}" + (f" (and {n - 1} more)" if n > 1 else ""))

_DEFAULT_ARGS = "pyctl.export.default_args"


class ExportGroup(click.Group):
    """`pyctl export KEY ...` and `pyctl export verify PATH`: a first argument that is not
    a subcommand belongs to the export itself."""

    def __init__(self, *args: Any, default: click.Command, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and (args[0] in self.commands or args[0] in ctx.help_option_names):
            return super().parse_args(ctx, args)
        ctx.meta[_DEFAULT_ARGS] = list(args)
        return []

    def invoke(self, ctx: click.Context) -> Any:
        args = ctx.meta.pop(_DEFAULT_ARGS, None)
        if args is None:
            return super().invoke(ctx)
        sub = self.default.make_context(ctx.info_name, args, parent=ctx.parent)
        with sub:
            return sub.command.invoke(sub)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "KEY --out PATH [OPTIONS]")
        formatter.write_usage(ctx.command_path, "--all-held --out DIR [OPTIONS]", prefix="       ")
        formatter.write_usage(ctx.command_path, "verify PATH [--ledger]", prefix="       ")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.default.format_options(ctx, formatter)
        self.format_commands(ctx, formatter)

export_command = ExportGroup(
    "export",
    default=export_subject,
    commands={"verify": verify_command},
    help="""Export everything held about a subject, with a verifiable manifest.

    `pyctl export KEY --out PATH` writes every row of the subject in every
    protected table, from one consistent snapshot, one file per table, with
    manifest.json and SHA256SUMS, and records the manifest's sha256 in the
    ledger. `pyctl export verify PATH` checks an export.

    \b
    Example:
        pyctl export 42 --out ./customer-42
        pyctl export verify ./customer-42
    """,
)

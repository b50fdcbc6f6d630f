"""`pyctl export`: everything about one subject, in one consistent snapshot (work in progress)."""

from __future__ import annotations

import click


@click.group("export", invoke_without_command=True)
@click.pass_context
def export_command(ctx: click.Context) -> None:
    """Export everything held about a subject, with a verifiable manifest.

    \b
    Example:
        pyctl export 42 --out ./customer-42
    """
    if ctx.invoked_subcommand is None:
        raise click.UsageError("not implemented yet")

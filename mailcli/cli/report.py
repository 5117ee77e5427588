"""`mailcli report`: the analysis as one self-contained HTML page (mailcli.report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mailcli.cli.common import EXIT_USAGE, CliError, DebugOpt, JsonOpt, console, handle_errors, settings


def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the page here.")] = Path("report.html"),
    since: Annotated[
        str | None, typer.Option("--since", help="Only emails dated on or after this day (YYYY-MM-DD).")
    ] = None,
    priority: Annotated[
        str | None, typer.Option("--priority", "-p", help="Only conversations of this priority.")
    ] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write the analysis as one HTML file: overview, what needs attention, charts, entities, the LLM run.

    The file is self-contained (scripts, styles and data inside): it opens offline in any current
    browser and fetches nothing. It holds email text: share it as you would the database.
    """
    from mailcli.report.data import ReportError, Scope
    from mailcli.report.render import write_report
    from mailcli.store.db import Store

    try:
        scope = Scope.parse(since, priority)
    except ReportError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if output.exists() and output.is_dir():
        raise CliError(f"{output} is a directory: give a file name, e.g. -o {output / 'report.html'}", EXIT_USAGE)
    with Store.open(settings().db, readonly=True) as store:
        summary = write_report(store, output, scope)
    if json_out:
        print(json.dumps({"path": str(summary.path), "bytes": summary.bytes, "emails": summary.emails,
                          "conversations": summary.conversations, "attention": summary.attention}))  # fmt: skip
    else:
        console().print(summary.line(), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(
        "report",
        epilog="Examples:\n\n  mailcli report -o report.html\n\n"
        "  mailcli report --since 2025-03-01 --priority critical -o critical.html",
    )(handle_errors(report))

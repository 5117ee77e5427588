"""`mailcli test-loading`: the smoke check that a real worker process can load and run the task code."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from mailcli.cli.common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    DebugOpt,
    JsonOpt,
    console,
    handle_errors,
    settings,
)


def test_loading(json_out: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Check that a real worker process loads and runs the task code; check Redis, SQLite and Ollama."""
    from mailcli.pool.checks import run_checks

    checks, redis_ok = run_checks(settings())
    passed = all(c.ok for c in checks if c.required)
    if json_out:
        print(json.dumps({"ok": passed, "checks": [asdict(c) for c in checks]}, ensure_ascii=False))
    else:
        _render(checks, passed)
    if not redis_ok:
        raise typer.Exit(EXIT_UNREACHABLE)
    if not passed:
        raise typer.Exit(EXIT_FAILED)


def _render(checks: list, passed: bool) -> None:
    from rich.table import Table

    table = Table(title="mailcli test-loading")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[yellow]warning[/]" if not c.required else "[red]FAILED[/]")
        table.add_row(c.name, mark, c.detail)
    console().print(table)
    console().print("[green]all required checks passed[/]" if passed else "[red]a required check failed[/]")


def register(app: typer.Typer) -> None:
    app.command(
        "test-loading",
        epilog="Examples:\n\n  mailcli test-loading\n\n  mailcli test-loading --json",
    )(handle_errors(test_loading))

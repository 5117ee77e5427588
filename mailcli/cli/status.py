"""`mailcli status`: one snapshot of pool, queues, progress and Ollama, drawn, as JSON or for Prometheus."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from mailcli.choices import spoken, unknown_choice
from mailcli.cli.common import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    DebugOpt,
    JsonOpt,
    console,
    err_console,
    escape,
    handle_errors,
    settings,
)

FORMATS = ("text", "json", "prometheus")

EPILOG = (
    "Examples:\n\n"
    "  mailcli status\n\n"
    "  mailcli status --watch              # redrawn every second; Ctrl-C to leave\n\n"
    "  mailcli status --watch --interval 5\n\n"
    "  mailcli status --json | jq .progress\n\n"
    "  mailcli status --format prometheus > mailcli.prom.tmp; mv mailcli.prom.tmp mailcli.prom\n\n"
    "Exit code 4 when Redis is unreachable (what SQLite knows is still shown)."
)


def status(
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Redraw in place every --interval until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.1, help="Seconds between redraws with --watch.")
    ] = 1.0,
    json_out: JsonOpt = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"{spoken(FORMATS)} (the text exposition format).")
    ] = "text",
    debug: DebugOpt = False,
) -> None:
    """Pool health: workers, queues, progress per phase, throughput, Ollama and the last failures."""
    from mailcli.status.snapshot import StatusReader

    if fmt not in FORMATS:
        raise CliError(unknown_choice("--format", fmt, FORMATS), EXIT_USAGE)
    if json_out:
        if fmt not in ("text", "json"):
            raise CliError("--json and --format prometheus exclude each other: give one", EXIT_USAGE)
        fmt = "json"
    if watch and fmt == "prometheus":
        raise CliError(
            "--watch draws text or JSON lines; scrape `--format prometheus` without --watch", EXIT_USAGE
        )

    with StatusReader(settings()) as reader:
        if watch and fmt == "text":
            unreachable = _watch(reader, interval)
        elif watch:
            unreachable = _watch_json(reader, interval)
        else:
            snap = reader.snapshot()
            _print(snap, fmt)
            unreachable = snap.redis_unreachable
    if unreachable:
        raise typer.Exit(EXIT_UNREACHABLE)


def _print(snap, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(snap.to_dict(), ensure_ascii=False), flush=True)
    elif fmt == "prometheus":
        from mailcli.status.prometheus import exposition

        print(exposition(snap), end="", flush=True)
    else:
        from mailcli.status.render import StatusView

        console().print(StatusView(snap))
    if fmt != "text" and snap.redis_unreachable:
        err_console().print(f"[bold red]error:[/] {escape(snap.redis.error)}", highlight=False, soft_wrap=True)


def _watch(reader, interval: float) -> bool:
    """Rich Live without auto refresh: one redraw per interval, in place, no flicker. True if Redis
    was unreachable at the last redraw. Ctrl-C is the way out, so it ends the watch with no fuss."""
    from rich.live import Live

    from mailcli.status.render import StatusView

    unreachable = False
    if not console().is_terminal:
        # piped or redirected: no cursor to redraw in place with, so each frame is printed in turn
        try:
            for snap in _ticks(reader, interval):
                unreachable = snap.redis_unreachable
                console().print(StatusView(snap))
                console().file.flush()
        except (KeyboardInterrupt, BrokenPipeError):
            pass
        return unreachable
    try:
        with Live(console=console(), screen=False, auto_refresh=False, transient=False,
                  redirect_stdout=False, redirect_stderr=False) as live:  # fmt: skip
            for snap in _ticks(reader, interval):
                unreachable = snap.redis_unreachable
                live.update(StatusView(snap), refresh=True)
    except KeyboardInterrupt:
        pass
    return unreachable


def _watch_json(reader, interval: float) -> bool:
    """--watch --json: one JSON object per line per interval, for a script to follow."""
    unreachable = False
    try:
        for snap in _ticks(reader, interval):
            unreachable = snap.redis_unreachable
            print(json.dumps(snap.to_dict(), ensure_ascii=False), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return unreachable


def _ticks(reader, interval: float):
    """A snapshot every `interval` seconds, start to start; a slow snapshot delays, never piles up."""
    next_at = time.monotonic()
    while True:
        yield reader.snapshot()
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()


def register(app: typer.Typer) -> None:
    app.command("status", epilog=EPILOG)(handle_errors(status))

"""The `mailcli` command line: a thin Typer layer over the library."""

from __future__ import annotations

import gc
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mailcli import __version__
from mailcli.choices import INPUT_FORMATS, PRIORITIES, spoken, unknown_choice
from mailcli.cli.common import (
    EXIT_REJECTS,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    DebugOpt,
    JsonOpt,
    check_llm_once,
    console,
    err_console,
    escape,
    handle_errors,
    settings,
)

app = typer.Typer(
    name="mailcli",
    help="Turn email exports into structured business analysis.\n\n"
    "Quick start:  mailcli ingest samples/graph.jsonl && mailcli analyze --inline && mailcli results",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXPORT_FORMATS = ("jsonl", "csv")


def _check_choice(option: str, value: str | None, values: tuple[str, ...]) -> None:
    if value is not None and value not in values:
        raise CliError(unknown_choice(option, value, values), EXIT_USAGE)


def _no_conversation(conversation_id: str) -> CliError:
    return CliError(f"no conversation {conversation_id!r}: see `mailcli results` for ids", EXIT_USAGE)


def _version(value: bool) -> None:
    if value:
        console().print(f"mailcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Verbose logs for any command (as MAILCLI_DEBUG=1, or --debug after it)."
        ),
    ] = False,
) -> None:
    """mailcli: ingest email exports, analyse them in three phases, read the results."""
    if debug:  # every command reads MAILCLI_DEBUG, and so do the workers it starts
        os.environ["MAILCLI_DEBUG"] = "1"


def _open_store(readonly: bool = False):
    from mailcli.store.db import Store

    return Store.open(settings().db, readonly=readonly)


def _enqueue_after_ingest(cfg, summary, conn=None) -> str:
    """Hand pending conversations to the queues; a note for the summary line."""
    from mailcli.dispatch.feeder import feed_once
    from mailcli.redis_conn import connect

    with _open_store() as store:
        queued = feed_once(store, conn if conn is not None else connect(cfg), cfg)
    return f"{queued} jobs enqueued"


@app.command(
    epilog="Examples:\n\n  mailcli ingest samples/graph.jsonl\n\n  mailcli ingest export.mbox --format mbox\n\n"
    "  cat emails.jsonl | mailcli ingest -\n\n  mailcli ingest Maildir/ --strict --no-enqueue"
)
@handle_errors
def ingest(
    paths: Annotated[
        list[str], typer.Argument(help="Export files or directories; - reads JSONL from stdin.")
    ],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"{spoken(INPUT_FORMATS)}.", show_default=True)
    ] = "auto",
    priority: Annotated[
        str | None, typer.Option("--priority", "-p", help="Queue every conversation at this priority.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when any record was rejected.")] = False,
    no_enqueue: Annotated[
        bool, typer.Option("--no-enqueue", help="Store and mark pending, but do not enqueue jobs.")
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Parse exports, store emails and conversations in SQLite, and queue them for analysis."""
    from mailcli.ingest.run import IngestSummary, ingest_paths, input_bytes

    _check_choice("--format", fmt, INPUT_FORMATS)
    _check_choice("--priority", priority, PRIORITIES)
    cfg = settings()
    from mailcli.ingest.run import check_paths

    check_paths(paths)
    started = time.monotonic()
    with _open_store() as store:
        if sys.stderr.isatty() and not json_out:
            summary = _ingest_with_progress(store, paths, fmt, priority, input_bytes(paths))
        else:
            summary = ingest_paths(store, paths, fmt=fmt, queue_priority=priority)
    assert isinstance(summary, IngestSummary)
    elapsed = time.monotonic() - started
    note = ""
    unreachable = None
    if summary.touched and not no_enqueue:
        from mailcli.redis_conn import RedisUnavailable

        try:
            note = _enqueue_after_ingest(cfg, summary)
        except RedisUnavailable as exc:
            # the emails are stored and their conversations pending: say so, then why none was enqueued
            unreachable = str(exc)
            note = "none enqueued: Redis is unreachable (below); `mailcli workers start` or `mailcli analyze --inline` takes them"
    if json_out:
        print(
            json.dumps(
                {
                    "ingested": summary.ingested,
                    "duplicates": summary.duplicates,
                    "variants": summary.variants,
                    "rejected": summary.rejected,
                    "conversations": summary.conversations,
                    "seconds": round(elapsed, 3),
                    "rejects": [_reject_dict(r) for r in summary.rejects],
                    "skipped": summary.skipped,  # bookkeeping and empty files passed over: not rejects
                    "skipped_paths": [r.source for r in summary.skipped_first],
                    "enqueue_error": unreachable,
                }
            )
        )
    else:
        for r in summary.rejects[:10]:
            err_console().print(
                f"[yellow]rejected[/] {escape(f'{r.source}, {r.locator}: {r.reason}')}", highlight=False
            )
        if summary.rejected > 10:
            err_console().print(f"[yellow]… {summary.rejected - 10} more in the rejects table[/]")
        if summary.skipped:
            named = [f"{r.source} ({r.reason})" for r in summary.skipped_first[:3]]
            shown = ", ".join(named) + (", …" if summary.skipped > 3 else "")
            err_console().print(f"passed over (not mail): {escape(shown)}", highlight=False)
        rate = summary.seen / elapsed if elapsed > 0 else 0
        console().print(f"{summary.line()} ({elapsed:.1f}s, {rate:,.0f} records/s){'; ' + note if note else ''}",
                      highlight=False)  # fmt: skip
    if unreachable:
        raise CliError(unreachable, EXIT_UNREACHABLE)
    if strict and summary.rejected:
        raise typer.Exit(EXIT_REJECTS)


def _reject_dict(r) -> dict:
    return {"source": r.source, "locator": r.locator, "reason": r.reason}


def _ingest_with_progress(store, paths, fmt, priority, total_bytes):
    """A Rich progress bar: counts, rate and an ETA from the bytes read so far."""
    import psutil
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mailcli.ingest.run import ingest_paths

    proc = psutil.Process()
    roots = [str(Path(p).resolve()) for p in paths if p != "-"]
    done_files: dict[str, int] = {}

    def bytes_read() -> int:
        # positions of the input files this process holds open, plus the size of those finished
        pos = 0
        try:
            for f in proc.open_files():
                if any(f.path.startswith(r) for r in roots):
                    pos += getattr(f, "position", 0)
                    done_files.setdefault(f.path, 0)
        except psutil.Error:
            pass
        return pos

    with Progress(
        TextColumn("[bold]ingest[/]"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("ingest", total=total_bytes or None, counts="", rate="")
        started = time.monotonic()
        finished_bytes = 0
        last_open: set[str] = set()

        def on_batch(s) -> None:
            nonlocal finished_bytes, last_open
            pos = bytes_read()
            current = set(done_files)
            for gone in last_open - current:
                try:
                    finished_bytes += Path(gone).stat().st_size
                except OSError:
                    pass
            last_open = current
            done_files.clear()
            rate = s.seen / max(time.monotonic() - started, 1e-6)
            progress.update(
                task,
                completed=min(finished_bytes + pos, total_bytes) if total_bytes else None,
                counts=f"{s.ingested:,} ok {s.duplicates:,} dup {s.rejected:,} rej",
                rate=f"{rate:,.0f}/s",
            )

        return ingest_paths(store, paths, fmt=fmt, queue_priority=priority, on_batch=on_batch)


@app.command(
    epilog="Examples:\n\n  mailcli analyze --inline\n\n  mailcli analyze --phase 2          # finish what Ollama owed\n\n"
    "  MAILCLI_PHASE2_MODEL=qwen2.5:7b mailcli analyze   # phase 2 again with another model, nothing else\n\n"
    "  mailcli analyze --conversation CID --reanalyze --all-phases"
)
@handle_errors
def analyze(
    phase: Annotated[
        int | None, typer.Option("--phase", min=1, max=3, help="Run phases up to N only.")
    ] = None,
    all_phases: Annotated[
        bool, typer.Option("--all-phases", help="Run all three phases whatever the tier.")
    ] = False,
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Only this conversation.")
    ] = None,
    inline: Annotated[
        bool, typer.Option("--inline", help="Run here, in this process: no Redis, no workers.")
    ] = False,
    reanalyze: Annotated[
        bool,
        typer.Option("--reanalyze", help="Analyse again even what is done, ignoring cached LLM answers."),
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """(Re)queue conversations for analysis, or analyse them right here with --inline.

    Requeues what is pending, partial or failed, and analysed conversations that lack an LLM answer
    this run owes them or hold one from another model or prompt version. Unchanged emails are not
    sent to the LLM again (their answers are cached by model, prompt version and text) unless
    --reanalyze is given.

    Before the work, every Ollama host is asked whether phases 2 and 3 can run: a model pulled on
    no host, or Ollama not reachable, is said once with its fix. Phase 1 still runs and is kept;
    a missing model makes the exit code 4.
    """
    from mailcli.analysis.llm_phases import key_prefixes
    from mailcli.llm.preflight import missing_model
    from mailcli.store import lifecycle
    from mailcli.store.lifecycle import mark_for_analysis

    cfg = settings()
    max_phase = phase or 3
    with _open_store() as store:
        if conversation and not lifecycle.exists(store, conversation):
            raise _no_conversation(conversation)
        # the queues are reached before anything is marked: an analyze that cannot hand the work on
        # leaves every conversation as it was (a partial one keeps its reason)
        conn = None if inline else _connect_for_analyze(cfg)
        if inline:
            # inline takes back what ingest handed to the queues and no worker has started
            _take_back_queued(cfg, store)
        marked = mark_for_analysis(
            store,
            conversation_id=conversation,
            reanalyze=reanalyze,
            all_phases=all_phases,
            max_phase=max_phase,
            llm_keys=key_prefixes(cfg.phase2_model, cfg.phase3_model),
        )
        problems = check_llm_once(cfg, tuple(range(2, max_phase + 1))) if marked else []
        exit_code = EXIT_UNREACHABLE if missing_model(problems) else 0
        if inline:
            from mailcli.dispatch.inline import analyze_inline

            llm = _inline_llm(cfg, phase)
            try:
                summary = analyze_inline(store, cfg, llm=llm)
            finally:
                if llm is not None:
                    llm.close()
            if json_out:
                print(json.dumps({**summary.__dict__, "llm_problems": [p.to_dict() for p in problems]}))
            else:
                console().print(summary.line(), highlight=False)
            raise typer.Exit(exit_code)
    note = _enqueue_after_ingest(cfg, None, conn)
    if json_out:
        print(json.dumps({"pending": marked, "note": note, "llm_problems": [p.to_dict() for p in problems]}))
    else:
        console().print(f"{marked} conversations pending; {note}", highlight=False)
    raise typer.Exit(exit_code)


def _connect_for_analyze(cfg):
    from mailcli.redis_conn import RedisUnavailable, connect

    try:
        return connect(cfg)
    except RedisUnavailable as exc:
        raise CliError(
            f"{exc}. Nothing was changed; or analyse here without Redis: mailcli analyze --inline",
            EXIT_UNREACHABLE,
        ) from None


def _take_back_queued(cfg, store) -> None:
    from mailcli.dispatch.feeder import take_back_queued
    from mailcli.redis_conn import RedisUnavailable, connect
    from mailcli.store import lifecycle

    if not lifecycle.queued_jobs(store):
        return
    try:
        conn = connect(cfg)
    except RedisUnavailable as exc:
        err_console().print(
            f"[yellow]{exc}: conversations queued for workers stay theirs; `mailcli workers start` runs them[/]"
        )
        conn = None
    take_back_queued(store, conn)


def _inline_llm(cfg, phase: int | None):
    """The LLM seam for `analyze --inline` (None when capped at phase 1: Ollama is never asked)."""
    if phase == 1:
        return None
    from mailcli.analysis.llm_phases import make_llm_phases

    return make_llm_phases(cfg)


@app.command(
    epilog="Examples:\n\n  mailcli results\n\n  mailcli results --priority critical --limit 20 --json"
)
@handle_errors
def results(
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Only this conversation.")
    ] = None,
    priority: Annotated[str | None, typer.Option("--priority", "-p", help="Only this priority.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N conversations.")] = 50,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Conversations with their priority, completeness and status, most urgent first."""
    from mailcli.cli.tables import results_table
    from mailcli.store.read import conversation_rows, partial_summary

    _check_choice("--priority", priority, PRIORITIES)
    with _open_store(readonly=True) as store:
        rows = conversation_rows(store, priority=priority, conversation_id=conversation, limit=limit)
        partial = partial_summary(store)
    if json_out:
        print(json.dumps(rows, ensure_ascii=False))
    elif not rows and conversation:
        raise _no_conversation(conversation)
    elif not rows and priority:
        console().print(f"no {priority} conversations")
    elif not rows:
        console().print("no conversations yet; ingest an export first: mailcli ingest FILE")
    else:
        console().print(results_table(rows, width=console().width))
        if partial[0]:
            console().print(
                _partial_note(partial[0], partial[1] or "", settings()), highlight=False, markup=False
            )


def _partial_note(n: int, error: str, cfg) -> str:
    """Why `n` conversations are partial (from their most common stored reason) and what completes them."""
    import re

    pull = f"`ollama pull {cfg.phase2_model}` and `ollama pull {cfg.phase3_model}`"
    then = "then `mailcli analyze` and `mailcli workers start --burst` (or `mailcli analyze --inline`)"
    missing = re.search(r'model "([^"]+)" not found on (\S+?):?(?:\s|$)', error)
    if missing:
        why = f'model "{missing[1]}" is not pulled on {missing[2]}'
        fix = f"run `ollama pull {missing[1]}` on that host"
    elif any(s in error for s in ("Ollama unavailable", "could not connect", "circuit breaker", "timed out")):
        why = f"Ollama was not reachable at {cfg.ollama_host}"
        fix = (
            f"start Ollama (`ollama serve`) or set OLLAMA_HOST to a running server, pull the models ({pull})"
        )
    elif "no LLM configured" in error:
        why = "they were analysed without an LLM"
        fix = f"start Ollama (`ollama serve`) or set OLLAMA_HOST, pull the models ({pull})"
    else:
        why = error[:200] or "an LLM phase did not complete"
        fix = "see `mailcli show ID` for each"
    what = "conversation is" if n == 1 else "conversations are"
    return (
        f"{n} {what} partial: phase 1 is done, but phases 2 and 3 are owed because {why}.\n"
        f"To give them phases 2 and 3: {fix}, {then}."
    )


@app.command(epilog="Example:\n\n  mailcli show AAQkAGI2TG93AAA=")
@handle_errors
def show(
    conversation_id: Annotated[str, typer.Argument(help="A conversation id from `mailcli results`.")],
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """One conversation: its emails, phase 1 facts, phase 2 and 3 answers."""
    from mailcli.cli.tables import conversation_view
    from mailcli.store.read import AmbiguousId, conversation_detail, resolve_conversation_id

    with _open_store(readonly=True) as store:
        try:
            full_id = resolve_conversation_id(store, conversation_id)
        except AmbiguousId as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        detail = conversation_detail(store, full_id) if full_id else None
    if detail is None:
        raise _no_conversation(conversation_id)
    if json_out:
        print(json.dumps(detail, ensure_ascii=False))
    else:
        console().print(conversation_view(detail))


@app.command(
    epilog="Examples:\n\n  mailcli export -o results.jsonl\n\n  mailcli export --format csv -o results.csv"
)
@handle_errors
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"{spoken(EXPORT_FORMATS)}.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout (- is stdout).")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """One record per email: phase 1 facts, phase 2 answer, the conversation's phase 3 (docs/export.md)."""
    from mailcli.store.read import write_export

    _check_choice("--format", fmt, EXPORT_FORMATS)
    with _open_store(readonly=True) as store:
        if output is None or str(output) == "-":
            write_export(store, sys.stdout, fmt)
            sys.stdout.flush()
        else:
            from mailcli.private import write_private

            n = write_private(output, lambda fh: write_export(store, fh, fmt), newline="")  # holds email text
            err_console().print(f"{n} records written to {output}", highlight=False)


def _register_subcommands() -> None:
    """Commands that live in their own modules (workers, status, test-loading, failed, redis, report)."""
    import importlib

    modules = (
        "mailcli.cli.workers",
        "mailcli.cli.status",
        "mailcli.cli.checks",
        "mailcli.cli.redis_cmd",
        "mailcli.cli.report",
    )
    for module in modules:
        importlib.import_module(module).register(app)


_register_subcommands()


def _flow(text: str) -> str:
    """A docstring as help text: the lines of a paragraph joined, so the terminal wraps them at its
    own width (Rich help keeps a docstring's line breaks, and at 80 columns a sentence broke twice).
    Lines that open a list item or are indented keep their break."""
    out = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.split("\n")
        joined = lines[0]
        for line in lines[1:]:
            starts_item = line[:1].isspace() or line.lstrip().startswith(("- ", "* ")) or not line.strip()
            joined += ("\n" if starts_item else " ") + line
        out.append(joined)
    return "\n\n".join(out)


def _flow_help(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        text = command.help or (command.callback.__doc__ if command.callback else None)
        if text:
            command.help = _flow(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _flow_help(group.typer_instance)


_flow_help(app)


def main() -> None:
    try:
        app()
    finally:
        # The command is done and the process about to exit. The interpreter's last act would be a
        # full garbage collection over every object the imports made (redis-py, rq, typer): 40-60 ms
        # of CPU (measured on `status --json`), for memory the OS takes back anyway. Freezing the
        # heap makes that pass skip it. Nothing runs in this process after a command.
        gc.freeze()

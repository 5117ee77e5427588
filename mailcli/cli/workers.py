"""`mailcli workers start|scale|stop` and `mailcli failed`."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from mailcli.cli.common import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    DebugOpt,
    JsonOpt,
    check_llm_once,
    console,
    err_console,
    handle_errors,
    settings,
)

workers_app = typer.Typer(help="Run and control the supervised worker pool.", no_args_is_help=True)


@workers_app.command(
    "start",
    epilog="Examples:\n\n  mailcli workers start --min 2 --max 10\n\n  mailcli workers start --burst      # exit when all work is done\n\n"
    "  REDIS_URL=redis://coordinator:6379 mailcli workers start --remote --max 8",
)
@handle_errors
def start(
    min_workers: Annotated[
        int | None, typer.Option("--min", min=0, help="Never fewer workers than this (default 2, at most --max).")
    ] = None,
    max_workers: Annotated[
        int, typer.Option("--max", min=0, help="Never more workers than this (0: coordinator only).")
    ] = 10,
    burst: Annotated[bool, typer.Option("--burst", help="Exit 0 once all pending work is done.")] = False,
    max_memory: Annotated[
        float | None, typer.Option("--max-memory", min=1, help="MB per worker (with children): recycle above, kill above 1.5x.")
    ] = None,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", min=1, help="Recycle a worker after K jobs.")] = None,
    reload: Annotated[bool, typer.Option("--reload", help="Restart workers when mailcli's source changes.")] = False,
    remote: Annotated[
        bool, typer.Option("--remote", help="Workers only: no feeder, sink or SQLite on this host (needs REDIS_URL).")
    ] = False,
    window: Annotated[
        int | None, typer.Option("--window", min=1, help="Most conversations held in Redis at once (default 10000).")
    ] = None,
    cooldown: Annotated[float, typer.Option("--cooldown", min=0, help="Seconds idle before scaling down.")] = 30.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds running jobs get to finish on stop.")] = 60.0,
    debug: DebugOpt = False,
) -> None:
    """Run the supervised, autoscaled pool in the foreground until Ctrl-C (or, with --burst, until done).

    At start every Ollama host is asked whether phases 2 and 3 can run; a model pulled on no host,
    or Ollama not reachable, is said once with its fix. Phase 1 work goes on and is kept; a missing
    model makes the exit code 4.
    """
    from mailcli.llm.preflight import missing_model
    from mailcli.pool.supervisor import PoolConfig, Supervisor
    from mailcli.redis_conn import connect

    if min_workers is None:
        min_workers = min(2, max_workers)
    if min_workers > max_workers:
        raise CliError(f"--min {min_workers} is above --max {max_workers}: make --min <= --max", EXIT_USAGE)
    cfg_settings = settings()
    if remote and not cfg_settings.redis_url:
        raise CliError("--remote needs REDIS_URL pointing at the coordinator's Redis", EXIT_USAGE)
    if not remote:
        from mailcli.store.db import Store

        Store.open(cfg_settings.db).close()  # schema ready, writable: fail now rather than in a thread
    logging.getLogger("mailcli.pool").setLevel(logging.DEBUG if debug else logging.INFO)
    _pool_log_handler()
    conn = connect(cfg_settings)
    problems = check_llm_once(cfg_settings, (2, 3) if max_workers > 0 else ())
    sup = Supervisor(
        cfg_settings,
        PoolConfig(
            min_workers=min_workers,
            max_workers=max_workers,
            burst=burst,
            max_memory_mb=max_memory,
            max_jobs=max_jobs,
            cooldown=cooldown,
            timeout=timeout,
            reload=reload,
            remote=remote,
            window=window,
            heartbeat_timeout=cfg_settings.heartbeat_timeout,
            debug=debug,
        ),
        conn,
    )
    code = sup.run()
    raise typer.Exit(EXIT_UNREACHABLE if code == 0 and missing_model(problems) else code)


def _pool_log_handler() -> None:
    from rich.logging import RichHandler

    logger = logging.getLogger("mailcli.pool")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(console=err_console(), show_path=False, markup=False, rich_tracebacks=False)
        logger.addHandler(handler)
        logger.propagate = False


@workers_app.command("scale", epilog="Example:\n\n  mailcli workers scale 6")
@handle_errors
def scale(
    n: Annotated[int, typer.Argument(min=0, help="Workers per pool (sets both --min and --max).")],
    debug: DebugOpt = False,
) -> None:
    """Resize running pools (from any terminal or host sharing the Redis)."""
    _tell_pools("scale", f"run {n} workers", n=n)


@workers_app.command("stop", epilog="Example:\n\n  mailcli workers stop --timeout 30")
@handle_errors
def stop(
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds running jobs get to finish.")] = 60.0,
    debug: DebugOpt = False,
) -> None:
    """Stop running pools gracefully: jobs in hand finish (up to --timeout), the rest are requeued."""
    _tell_pools("stop", "stop", timeout=timeout)


def _tell_pools(command: str, what: str, **args: object) -> None:
    """Send a control command to every pool running on this Redis, and say how many were asked."""
    from mailcli.pool.state import read_pools, send_control
    from mailcli.redis_conn import connect

    conn = connect(settings())
    pools = read_pools(conn)
    send_control(conn, command, **args)
    if pools:
        console().print(f"asked {len(pools)} pool(s) to {what}", highlight=False)
    else:
        console().print("no pool is running on this Redis: nothing to do (`mailcli workers start` starts one)")


def failed(
    requeue: Annotated[bool, typer.Option("--requeue", help="Requeue every failed job.")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List failed jobs with their errors; --requeue puts them back on their queues."""
    from rich.table import Table

    from mailcli.dispatch.feeder import failed_job_rows, requeue_failed
    from mailcli.redis_conn import connect

    cfg = settings()
    conn = connect(cfg)
    rows = failed_job_rows(conn)
    n = 0
    if requeue:
        from mailcli.store.db import Store

        # a --remote host has no database: the coordinator's reconciler then sees the jobs queued again
        store = Store.open(cfg.db) if not cfg.redis_url or cfg.db.exists() else None
        try:
            n = requeue_failed(conn, store)
        finally:
            if store is not None:
                store.close()
    if json_out:
        print(json.dumps({"failed": rows, "requeued": n}))
        return
    if not rows:
        console().print("no failed jobs")
        return
    table = Table(title="Failed jobs")
    for col in ("job", "queue", "conversations", "ended", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["job_id"], r["queue"], str(len(r["conversations"])), (r["ended_at"] or "")[:19], r["error"]
        )
    console().print(table)
    if requeue:
        console().print(f"{n} jobs requeued", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(workers_app, name="workers")
    app.command(
        "failed", epilog="Examples:\n\n  mailcli failed\n\n  mailcli failed --requeue"
    )(handle_errors(failed))

"""`mailcli redis status|stop`: the embedded Redis server, which runs in the background between commands.

mailcli starts it on first use (under `<data>/redis/`, a unix socket only) and leaves it running so
that the next command, and every worker, finds the queues at once. It persists to an append-only
file, so stopping it loses nothing: queued jobs come back when it next starts.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from mailcli.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    DebugOpt,
    JsonOpt,
    console,
    handle_errors,
    settings,
)

redis_app = typer.Typer(
    help="The embedded Redis server mailcli starts in the background: see it, stop it.", no_args_is_help=True
)

AOF_DIR = "appendonlydir"  # where redis-server 7 keeps the append-only files, under its --dir


def _aof_bytes(directory) -> int:
    total = 0
    for root, _, files in os.walk(directory / AOF_DIR):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    legacy = directory / "appendonly.aof"  # redis-server before 7: one file beside the socket
    if legacy.exists():
        total += legacy.stat().st_size
    return total


def _facts(cfg) -> dict[str, Any]:
    """What `redis status` shows: the server, its data, the work it holds and the pools using it."""
    from mailcli.pool.state import read_pools
    from mailcli.queue.names import queue_depths
    from mailcli.queue.redis_server import EmbeddedRedis
    from mailcli.redis_conn import connect, server_info

    server = EmbeddedRedis(cfg.redis_dir)
    facts: dict[str, Any] = {
        "embedded": True,
        "directory": str(server.dir),
        "socket": str(server.socket_path),
        "running": server.is_running(),
        "pid": server.pid(),
        "aof_bytes": _aof_bytes(server.dir) if server.dir.is_dir() else 0,
    }
    if facts["running"]:
        conn = connect(cfg)
        info = server_info(conn)
        depths = queue_depths(conn)
        facts.update(
            version=info["version"],
            uptime_s=info["uptime_seconds"],
            used_memory=info["used_memory"],
            persistence_ok=info["persistence_ok"],
            jobs_queued=sum(d["queued"] + d["started"] + d["retrying"] for d in depths.values()),
            pools=[{"id": p.get("id", p["name"]), "host": p.get("host", ""), "pid": p.get("pid", "")}
                   for p in read_pools(conn) if p.get("state") != "stopped"],  # fmt: skip
        )
        conn.close()
    return facts


def _mb(n: int | None) -> str:
    n = n or 0
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


@redis_app.command("status", epilog="Examples:\n\n  mailcli redis status\n\n  mailcli redis status --json")
@handle_errors
def status(json_out: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Is the embedded Redis running (pid, memory, jobs it holds, pools using it), and where its data is."""
    from mailcli.redis_conn import describe

    cfg = settings()
    if cfg.redis_url:
        facts: dict[str, Any] = {"embedded": False, "redis_url": describe(cfg)}
        if json_out:
            print(json.dumps(facts))
        else:
            console().print(f"REDIS_URL is set: mailcli uses the Redis at {facts['redis_url']}, not an embedded "
                          "server (start and stop that one as you run it)", highlight=False)  # fmt: skip
        return
    facts = _facts(cfg)
    if json_out:
        print(json.dumps(facts))
        return
    if not facts["running"]:
        console().print(
            f"the embedded Redis is not running; it starts on the next command that needs it. "
            f"Its data: {facts['directory']} ({_mb(facts['aof_bytes'])} append-only file)",
            highlight=False,
        )
        return
    pools = facts["pools"]
    console().print(
        f"the embedded Redis is running in the background: pid {facts['pid']}, Redis {facts['version']}, "
        f"up {facts['uptime_s']}s, {_mb(facts['used_memory'])} in memory, socket {facts['socket']}\n"
        f"it holds {facts['jobs_queued']} jobs (queued, running or retrying); "
        f"append-only file {_mb(facts['aof_bytes'])}{'' if facts['persistence_ok'] else ' (LAST WRITE FAILED)'}\n"
        + (f"used by {len(pools)} running pool(s): " + ", ".join(f"pid {p['pid']} on {p['host']}" for p in pools)
           if pools else "no pool is running")  # fmt: skip
        + "\nstop it with `mailcli redis stop` (queued work is kept on disk)",
        highlight=False,
    )


@redis_app.command(
    "stop", epilog="Examples:\n\n  mailcli redis stop\n\n  mailcli workers stop && mailcli redis stop"
)
@handle_errors
def stop(
    force: Annotated[
        bool, typer.Option("--force", help="Stop it even while a pool on this host's Redis is running.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Stop the embedded Redis. Safe with work queued: it is saved on disk and back at the next start."""
    from mailcli.queue.redis_server import EmbeddedRedis

    cfg = settings()
    if cfg.redis_url:
        raise CliError("REDIS_URL is set: mailcli did not start that Redis and does not stop it; "
                       "unset REDIS_URL to manage the embedded server", EXIT_USAGE)  # fmt: skip
    server = EmbeddedRedis(cfg.redis_dir)
    if not server.is_running() and server.pid() is None:
        console().print("the embedded Redis is not running", highlight=False)
        return
    facts = _facts(cfg) if server.is_running() else {"pools": [], "jobs_queued": 0, "pid": server.pid()}
    if facts["pools"] and not force:
        p = facts["pools"][0]
        raise CliError(
            f"a pool is using the embedded Redis (pid {p['pid']} on {p['host']}) and would start it again: "
            "stop the pool first (`mailcli workers stop`), or pass --force",
            EXIT_FAILED,
        )
    server.stop()
    kept = f"; its {facts['jobs_queued']} queued jobs are kept on disk" if facts["jobs_queued"] else ""
    console().print(
        f"stopped the embedded Redis (pid {facts['pid']}){kept}; it starts again on the next command that needs it",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(redis_app, name="redis")

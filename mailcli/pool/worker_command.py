"""How a pool worker process is started: one command line and environment, for the supervisor and
for `mailcli test-loading` (which must start a worker exactly as a pool does)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from mailcli.config import Settings


def worker_command(
    name: str,
    *,
    pool_id: str = "",
    queues: Sequence[str] = (),
    burst: bool = False,
    max_jobs: int | None = None,
    debug: bool = False,
) -> list[str]:
    # -P: the working directory is not put on sys.path, so a folder named "mailcli" there (a clone
    # of this repository, say) can never stand in for the installed package
    cmd = [sys.executable, "-P", "-m", "mailcli.pool.worker", "--name", name]
    if pool_id:
        cmd += ["--pool", pool_id]
    if queues:
        cmd += ["--queues", ",".join(queues)]
    if burst:
        cmd.append("--burst")
    if max_jobs:
        cmd += ["--max-jobs", str(max_jobs)]
    if debug:
        cmd.append("--debug")
    return cmd


def worker_env(settings: Settings) -> dict[str, str]:
    """This process's environment, with the data directory made absolute (a worker may start
    elsewhere) and the Redis URL of these settings (a flag or mailcli.toml may have set it)."""
    env = dict(os.environ)
    env["MAILCLI_HOME"] = str(settings.home.resolve())
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env

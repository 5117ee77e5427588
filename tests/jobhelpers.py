"""Job functions for pool tests, importable by worker processes (tests/ is on their PYTHONPATH).

Jobs block on a Redis key instead of sleeping, so a test decides exactly when a job ends."""

from __future__ import annotations

import time

from rq import get_current_job


def _conn():
    return get_current_job().connection


def blocked(payload: dict) -> str:
    """Count the start, wait until the test releases `payload['id']`, count the finish."""
    conn = _conn()
    key = payload["id"]
    conn.incr(f"test:started:{key}")
    deadline = time.monotonic() + payload.get("max_seconds", 60)
    while time.monotonic() < deadline:
        if conn.blpop([f"test:release:{key}"], timeout=1):
            break
    conn.incr(f"test:done:{key}")
    return key


def hog(payload: dict) -> str:
    """Hold `mb` megabytes (touched, so they count in RSS) until released."""
    _conn().incr(f"test:attempts:{payload['id']}")
    block = bytearray(payload["mb"] * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    result = blocked(payload)
    del block
    return result


def stuck_once(payload: dict) -> str:
    """The first attempt hangs (past any job timeout); a retry finishes at once."""
    conn = _conn()
    attempt = conn.incr(f"test:attempts:{payload['id']}")
    if attempt == 1:
        conn.blpop([f"test:never:{payload['id']}"], timeout=payload.get("hang", 60))
    conn.incr(f"test:done:{payload['id']}")
    return payload["id"]


def spin(payload: dict) -> str:
    """Pure-Python CPU work for `seconds`: busy, but the worker's heartbeat thread still beats."""
    conn = _conn()
    conn.incr(f"test:started:{payload['id']}")
    deadline = time.monotonic() + payload["seconds"]
    n = 0
    while time.monotonic() < deadline:
        n += sum(i * i for i in range(1000))
    conn.incr(f"test:done:{payload['id']}")
    return payload["id"]


def touch_marker(*args, **kwargs) -> None:
    """A callback that must never run: it leaves a file where MAILCLI_TEST_MARKER says."""
    import os
    from pathlib import Path

    Path(os.environ["MAILCLI_TEST_MARKER"]).touch()


def boom(payload: dict) -> str:
    """A job that fails: raises at once."""
    raise ValueError(f"boom {payload.get('id')}")

"""What the supervisor decides about a worker, as pure functions of what it observed.

Each function takes a frozen record of facts and returns a verdict; the supervisor gathers the
facts (Redis, /proc) and carries the verdicts out (signals, spawns). They are tested by tables of
cases (tests/test_verdicts.py), as `autoscale.decide` is: a case that must *not* lead to a kill is
one row of a table, not a test that waits to see that nothing happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IDLE_RSS_HEADROOM = 1.25  # a --max-memory below an idle worker is raised to its RSS times this
KILL_OVER = 1.5  # over this many times --max-memory a worker is killed at once, not recycled
CRASH_WINDOW = 10.0  # a worker that dies this soon after starting, having done nothing, is crashing
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 60.0
MB = 2**20


# -- a living worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """One look at a living worker."""

    mode: str  # the supervisor's word for it: running | recycling | stopping | killed
    state: str  # the worker's own: starting | idle | busy | stopped
    holds_job: bool  # it has said which job it holds
    jobs_done: int
    heartbeat_age: float  # seconds since its last beat (since its start, before the first)
    heartbeat_timeout: float
    heartbeats_trusted: bool  # false for a full timeout after Redis was away (the beats were unreadable)
    rss: int | None  # bytes, the worker and its children; None when not measured
    max_memory_mb: float | None


@dataclass(frozen=True)
class Verdict:
    action: str  # keep | kill | recycle | raise_limit
    reason: str = ""
    new_limit_mb: float | None = None  # with raise_limit


KEEP = Verdict("keep")


def judge(h: Health) -> Verdict:
    """Kill a worker whose heartbeat stopped or whose memory is far over the limit; recycle one over
    the limit after its job; raise a limit that even an idle worker exceeds (a replacement would too,
    and be recycled for ever)."""
    if h.mode == "killed":
        return KEEP
    if h.heartbeats_trusted and h.heartbeat_age > h.heartbeat_timeout:
        return Verdict("kill", f"no heartbeat for {h.heartbeat_age:.0f}s")
    if not h.max_memory_mb or h.rss is None:
        return KEEP
    limit = h.max_memory_mb * MB
    idle_fresh = h.jobs_done == 0 and h.state != "busy" and not h.holds_job
    if idle_fresh and h.rss > limit:
        return Verdict("raise_limit", "an idle worker takes more", new_limit_mb=math.ceil(h.rss / MB * IDLE_RSS_HEADROOM))
    if h.rss > KILL_OVER * limit:
        return Verdict("kill", f"RSS {h.rss / MB:.0f} MB over {KILL_OVER} x the {h.max_memory_mb:.0f} MB limit")
    if h.rss > limit and h.mode == "running":
        return Verdict("recycle", f"RSS {h.rss / MB:.0f} MB over {h.max_memory_mb:.0f} MB")
    return KEEP


def at_shutdown(mode: str, now: float, deadline: float | None) -> str:
    """While the pool stops: ``stop`` a worker not asked yet (a warm stop: it finishes its job),
    ``kill`` any still there once the deadline has passed (its job is requeued), else ``keep``."""
    if mode == "killed":
        return "keep"
    if deadline is not None and now >= deadline:
        return "kill"
    return "keep" if mode in ("stopping", "recycling") else "stop"


# -- a dead worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Death:
    """How a worker ended."""

    mode: str  # what the supervisor had asked of it: running | recycling | stopping | killed
    exit_code: int
    lived: float  # seconds
    did_nothing: bool  # no job done or failed
    job_requeued: bool  # it held a job, now back in its queue
    stops_by_itself: bool  # --max-jobs or --burst: a worker that exits 0 has done its share
    crashes: int  # consecutive crashes on start before this one


@dataclass(frozen=True)
class Obituary:
    kind: str  # expected | killed | crashed | died
    crashes: int  # the crash count from now on
    backoff: float = 0.0  # seconds before the next spawn (crashed)
    replaced: bool = True  # counts as a replacement (not when the pool shrank or stops)


def bury(d: Death) -> Obituary:
    expected = d.mode in ("stopping", "recycling") or (d.exit_code == 0 and d.stops_by_itself)
    if d.mode == "killed":
        return Obituary("killed", d.crashes)
    if expected:
        return Obituary("expected", 0, replaced=d.mode != "stopping")
    if d.lived < CRASH_WINDOW and d.did_nothing and not d.job_requeued:
        crashes = d.crashes + 1
        return Obituary("crashed", crashes, backoff=backoff(crashes))
    return Obituary("died", 0)


def backoff(crashes: int) -> float:
    """Seconds before the next spawn after ``crashes`` crashes on start in a row: 0.5, 1, 2 … 60."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (crashes - 1)) if crashes > 0 else 0.0


# -- a burst run --------------------------------------------------------------------------------

IDLE_EVIDENCE = 3  # ticks in a row a remote burst pool must see no work before it trusts it


def burst_evidence(evidence: int, *, remote: bool, coordinator_done: bool, work_seen: bool) -> int:
    """How many ticks in a row show a burst run done. A coordinator's word (SQLite owes nothing and
    every result is in it) is final at once; a remote pool judges from Redis alone, where a job
    between two lists looks like no job for a moment, so it waits for IDLE_EVIDENCE ticks."""
    if not remote:
        return IDLE_EVIDENCE if coordinator_done else 0
    return 0 if work_seen else evidence + 1

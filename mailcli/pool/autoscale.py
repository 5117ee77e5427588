"""Autoscaling as a pure decision: `decide(view) -> Decision`, tested with a table of cases."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolView:
    backlog: int  # jobs waiting in Redis, plus pending work in SQLite counted as jobs
    busy: int  # workers running a job, or still starting (not stoppable)
    idle: int  # workers up and waiting for a job
    idle_long: int  # idle workers that have been idle for at least the cooldown
    min_workers: int
    max_workers: int


@dataclass(frozen=True)
class Decision:
    target: int
    reason: str
    start: int = 0  # workers to spawn now
    stop_idle: int = 0  # idle workers to stop now

    @property
    def changes(self) -> bool:
        return bool(self.start or self.stop_idle)


def decide(v: PoolView) -> Decision:
    current = v.busy + v.idle
    lo, hi = v.min_workers, max(v.min_workers, v.max_workers)
    if current < lo:
        return Decision(lo, f"below minimum {lo}", start=lo - current)
    if current > hi:
        stop = min(v.idle, current - hi)
        return Decision(hi, f"above maximum {hi}", stop_idle=stop)
    if v.backlog > 0:
        # one worker per waiting job, up to the maximum; never stop anyone while work waits
        wanted = min(hi, v.busy + v.backlog)
        if wanted > current:
            return Decision(wanted, f"backlog of {v.backlog} jobs with {v.busy}/{current} busy", start=wanted - current)
        return Decision(current, f"backlog of {v.backlog} jobs, {current} workers")
    if v.idle_long > 0 and current > lo:
        stop = min(v.idle_long, current - max(lo, v.busy))
        if stop > 0:
            return Decision(current - stop, f"{v.idle_long} workers idle past the cooldown", stop_idle=stop)
    return Decision(current, "steady")

"""The autoscaler is a pure decision: a table of pool states and what it must do."""

from __future__ import annotations

import pytest

from mailcli.pool.autoscale import Decision, PoolView, decide


def view(backlog=0, busy=0, idle=0, idle_long=0, lo=2, hi=10) -> PoolView:
    return PoolView(backlog=backlog, busy=busy, idle=idle, idle_long=idle_long, min_workers=lo, max_workers=hi)


@pytest.mark.parametrize(
    "v, target, start, stop",
    [
        # start-up and the floor
        (view(lo=2), 2, 2, 0),
        (view(idle=1, lo=2), 2, 1, 0),
        # a backlog: one worker per waiting job, all at once, capped at max
        (view(backlog=5, busy=2, lo=2, hi=10), 7, 5, 0),
        (view(backlog=50, busy=2, lo=2, hi=10), 10, 8, 0),
        (view(backlog=50, busy=10, lo=2, hi=10), 10, 0, 0),
        # idle workers will take the backlog: no new ones
        (view(backlog=1, busy=1, idle=2, lo=2, hi=10), 3, 0, 0),
        # never stop anyone while work waits, even past the cooldown
        (view(backlog=3, busy=2, idle=1, idle_long=1, lo=1, hi=3), 3, 0, 0),
        # cooled down: stop only the long-idle ones, never below min, never a busy one
        (view(busy=1, idle=4, idle_long=4, lo=2, hi=10), 2, 0, 3),
        (view(busy=3, idle=2, idle_long=2, lo=2, hi=10), 3, 0, 2),
        (view(busy=0, idle=5, idle_long=2, lo=2, hi=10), 3, 0, 2),
        (view(busy=0, idle=2, idle_long=2, lo=2, hi=10), 2, 0, 0),
        # idle but not yet for the cooldown: hold
        (view(busy=1, idle=4, idle_long=0, lo=2, hi=10), 5, 0, 0),
        # above max after `workers scale` lowered it: stop idle ones only
        (view(busy=3, idle=2, lo=2, hi=4), 4, 0, 1),
        (view(busy=6, idle=0, lo=2, hi=4), 4, 0, 0),
        # min 0: a coordinator-only pool
        (view(lo=0, hi=0), 0, 0, 0),
        (view(backlog=9, lo=0, hi=0), 0, 0, 0),
    ],
)
def test_decide_table(v, target, start, stop):
    d = decide(v)
    assert (d.target, d.start, d.stop_idle) == (target, start, stop), d.reason
    assert v.min_workers <= d.target <= max(v.min_workers, v.max_workers)


def test_every_decision_says_why():
    for v in (view(), view(backlog=3, busy=2), view(idle=4, idle_long=4, busy=0)):
        assert decide(v).reason


def test_decision_reports_whether_it_changes_anything():
    assert Decision(3, "steady").changes is False
    assert Decision(4, "up", start=1).changes is True

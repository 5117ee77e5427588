"""The supervisor's verdicts about a worker, case by case (mailcli.pool.verdicts)."""

from __future__ import annotations

import pytest

from mailcli.pool.verdicts import (
    IDLE_EVIDENCE,
    Death,
    Health,
    at_shutdown,
    backoff,
    burst_evidence,
    bury,
    judge,
)

MB = 2**20


def health(**kw) -> Health:
    base = dict(
        mode="running", state="busy", holds_job=True, jobs_done=3, heartbeat_age=0.5, heartbeat_timeout=15.0,
        heartbeats_trusted=True, rss=100 * MB, max_memory_mb=200.0,
    )  # fmt: skip
    return Health(**{**base, **kw})


@pytest.mark.parametrize(
    ("facts", "action", "reason_has"),
    [
        # heartbeats
        ({}, "keep", ""),
        ({"heartbeat_age": 16.0}, "kill", "no heartbeat for 16s"),
        ({"heartbeat_age": 14.9}, "keep", ""),
        # a long CPU-bound job beats from its own thread: a busy worker with a fresh beat is kept
        ({"state": "busy", "heartbeat_age": 1.0}, "keep", ""),
        # beats unreadable while Redis was away are not held against the worker
        ({"heartbeat_age": 40.0, "heartbeats_trusted": False}, "keep", ""),
        ({"mode": "killed", "heartbeat_age": 99.0}, "keep", ""),
        # memory
        ({"rss": 210 * MB}, "recycle", "RSS 210 MB over 200 MB"),
        ({"rss": 210 * MB, "mode": "recycling"}, "keep", ""),  # asked already: finishing its job
        ({"rss": 299 * MB}, "recycle", ""),  # up to 1.5 x the limit: recycled after its job, never killed mid-job
        ({"rss": 299 * MB, "mode": "recycling"}, "keep", ""),  # and kept, look after look, until the job ends
        ({"rss": 210 * MB, "mode": "stopping"}, "keep", ""),  # the pool stops: it finishes its job, then exits
        ({"mode": "stopping"}, "keep", ""),
        ({"rss": 301 * MB}, "kill", "over 1.5 x the 200 MB limit"),
        ({"rss": 301 * MB, "mode": "recycling"}, "kill", "1.5 x"),
        ({"rss": 199 * MB}, "keep", ""),
        ({"rss": None}, "keep", ""),
        ({"max_memory_mb": None, "rss": 10_000 * MB}, "keep", ""),
        # an idle worker that never ran a job and is already over the limit: raise the limit, never recycle
        ({"state": "idle", "holds_job": False, "jobs_done": 0, "rss": 40 * MB, "max_memory_mb": 30.0}, "raise_limit", ""),
        ({"state": "starting", "holds_job": False, "jobs_done": 0, "rss": 90 * MB, "max_memory_mb": 30.0}, "raise_limit", ""),
        # one that has run jobs, or holds one, is judged on memory as usual
        ({"state": "idle", "holds_job": False, "jobs_done": 1, "rss": 40 * MB, "max_memory_mb": 30.0}, "recycle", ""),
        ({"state": "idle", "holds_job": True, "jobs_done": 0, "rss": 46 * MB, "max_memory_mb": 30.0}, "kill", ""),
        # the heartbeat verdict comes first
        ({"heartbeat_age": 20.0, "rss": 210 * MB}, "kill", "no heartbeat"),
    ],
)
def test_judge(facts, action, reason_has):
    v = judge(health(**facts))
    assert v.action == action
    assert reason_has in v.reason


def test_a_raised_limit_is_an_idle_workers_rss_plus_a_quarter():
    v = judge(health(state="idle", holds_job=False, jobs_done=0, rss=36 * MB, max_memory_mb=20.0))
    assert v.new_limit_mb == 45  # ceil(36 * 1.25)


@pytest.mark.parametrize(
    ("mode", "now", "deadline", "action"),
    [
        ("running", 0.0, 30.0, "stop"),  # the pool was asked to stop: a warm stop, the job may finish
        ("stopping", 29.9, 30.0, "keep"),  # finishing its job before the deadline: never killed
        ("recycling", 29.9, 30.0, "keep"),  # already leaving after its job
        ("stopping", 30.0, 30.0, "kill"),  # the deadline passed (or a second Ctrl-C made it now)
        ("recycling", 31.0, 30.0, "kill"),
        ("running", 31.0, 30.0, "kill"),
        ("killed", 31.0, 30.0, "keep"),  # killed already: waiting for it to be reaped
        ("stopping", 1e9, None, "keep"),  # no deadline set: never killed for one
    ],
)
def test_at_shutdown(mode, now, deadline, action):
    assert at_shutdown(mode, now, deadline) == action


def death(**kw) -> Death:
    base = dict(mode="running", exit_code=1, lived=60.0, did_nothing=False, job_requeued=False,
                stops_by_itself=False, crashes=0)  # fmt: skip
    return Death(**{**base, **kw})


@pytest.mark.parametrize(
    ("facts", "kind", "crashes", "wait", "replaced"),
    [
        ({"mode": "stopping", "exit_code": 0}, "expected", 0, 0.0, False),  # scaled down or pool stopping
        ({"mode": "recycling", "exit_code": 0}, "expected", 0, 0.0, True),
        ({"exit_code": 0, "stops_by_itself": True}, "expected", 0, 0.0, True),  # --max-jobs reached
        ({"mode": "killed", "exit_code": -9, "crashes": 2}, "killed", 2, 0.0, True),
        ({"lived": 60.0}, "died", 0, 0.0, True),
        ({"lived": 1.0, "did_nothing": True}, "crashed", 1, 0.5, True),
        ({"lived": 1.0, "did_nothing": True, "crashes": 1}, "crashed", 2, 1.0, True),
        ({"lived": 1.0, "did_nothing": True, "crashes": 7}, "crashed", 8, 60.0, True),
        # it ran jobs, or died holding one (now requeued): a death, not a crash loop
        ({"lived": 1.0, "did_nothing": False, "crashes": 3}, "died", 0, 0.0, True),
        ({"lived": 1.0, "did_nothing": True, "job_requeued": True}, "died", 0, 0.0, True),
        ({"lived": 11.0, "did_nothing": True}, "died", 0, 0.0, True),
        ({"exit_code": 0, "stops_by_itself": False, "lived": 1.0, "did_nothing": True}, "crashed", 1, 0.5, True),
    ],
)
def test_bury(facts, kind, crashes, wait, replaced):
    ob = bury(death(**facts))
    assert (ob.kind, ob.crashes, ob.backoff, ob.replaced) == (kind, crashes, wait, replaced)


def test_backoff_doubles_from_half_a_second_to_a_minute():
    assert [backoff(n) for n in range(0, 10)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


@pytest.mark.parametrize(
    ("evidence", "remote", "done", "seen", "after"),
    [
        (0, False, True, False, IDLE_EVIDENCE),  # the coordinator's word is final at once
        (2, False, False, False, 0),
        (0, True, False, False, 1),  # a remote pool counts ticks that show nothing
        (2, True, False, False, 3),
        (2, True, False, True, 0),  # any work seen starts the count again
    ],
)
def test_burst_evidence(evidence, remote, done, seen, after):
    assert burst_evidence(evidence, remote=remote, coordinator_done=done, work_seen=seen) == after


def test_a_command_written_after_its_counter_is_read_on_the_next_look():
    """`workers scale` increments the counter, then writes the command. A pool that looks in
    between sees the counter ahead of every command: it must not take the counter as read."""
    from mailcli.pool.state import unread_commands

    old = {"stop": {"seq": 1, "timeout": 5}}
    assert unread_commands(old, 1) == ([], 1)  # counter 2 already, the scale command not yet written
    now = {**old, "scale": {"seq": 2, "n": 3}}
    assert unread_commands(now, 1) == ([("scale", {"seq": 2, "n": 3})], 2)
    assert unread_commands(now, 2) == ([], 2)
    both = {"scale": {"seq": 4, "n": 3}, "stop": {"seq": 3, "timeout": 5}}
    assert [name for name, _ in unread_commands(both, 2)[0]] == ["stop", "scale"]  # oldest first

"""Stopping: a worker process leaves promptly once told to or once a burst finds no work, and a
pool told to stop starts no worker after that.

RQ's command-listener thread blocks up to 60 s in one read of its channel; a worker that waits for
that thread on the way out stays alive for up to a minute after its last job (seen with redis-py
8.2, whose PubSubWorkerThread.stop() joins with no time limit). The bounds below are a third of
that minute: wide for a loaded machine, and far below what the bug costs.
"""

from __future__ import annotations

import signal
import subprocess
import time

from conftest import wait_for

from mailcli.pool.worker_command import worker_command

EXIT_BOUND = 20.0  # seconds; the bug took 45-60 s


def _start(home, *extra: str) -> subprocess.Popen:
    home.redis().ping()  # the embedded server is up before the worker's clock starts
    cmd = worker_command("exit-test-" + str(time.monotonic_ns()), **dict(extra))
    return subprocess.Popen(
        cmd, cwd=home.path, env=home.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_burst_worker_with_no_work_exits_promptly(any_home):
    proc = _start(any_home, ("burst", True))
    try:
        assert proc.wait(timeout=EXIT_BOUND) == 0, proc.stdout.read()
    finally:
        proc.kill()


def test_idle_worker_leaves_promptly_on_sigterm(any_home):
    proc = _start(any_home)
    try:
        name = proc.args[proc.args.index("--name") + 1]
        # the worker has subscribed to its command channel (the thread that used to hold it back)
        wait_for(
            lambda: any_home.redis().pubsub_numsub(f"rq:pubsub:{name}")[0][1] >= 1,
            30,
            "the worker's subscription",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_BOUND) is not None
    finally:
        proc.kill()


def test_test_loading_says_one_line_when_its_worker_does_not_finish(home, monkeypatch):
    """The worker of its check that overruns test-loading's limit is a failed check naming the limit, not a
    traceback, and leaves no queue or worker entry behind for `status` to show."""
    from mailcli.pool import checks
    from mailcli.pool.state import read_workers

    monkeypatch.setattr(checks, "WORKER_CHECK_TIMEOUT", 0.05)  # no worker starts that fast
    conn = home.redis()
    [check] = checks.check_worker(home.settings(), conn)
    assert not check.ok and "had not finished two jobs after 0s" in check.detail, check
    assert not [q for q in conn.smembers("rq:queues") if b"mailcli-check-" in q]
    assert not [w for w in read_workers(conn) if w.get("name", "").startswith("mailcli-check-")]


def test_a_pool_told_to_stop_starts_no_worker(home):
    """`workers stop` marks every worker stopping; the same supervisor round must not then see a
    pool below its minimum and start replacements (it did: two new workers, started and stopped)."""
    from mailcli.pool import state

    proc = home.popen("workers", "start", "--min", "2", "--max", "3")
    try:
        conn = home.redis()
        wait_for(
            lambda: sum(w.get("state") == "idle" for w in state.read_workers(conn)) == 2,
            60,
            "two idle workers",
        )
        assert home.run("workers", "stop", "--timeout", "10").returncode == 0
        assert proc.wait(timeout=EXIT_BOUND) == 0
    finally:
        proc.kill()
    log = proc.stderr.read()
    after_stop = log[log.index("stop requested") :]
    assert " started" not in after_stop, after_stop

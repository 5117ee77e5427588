"""`mailcli status` against a real running pool: what it shows is what the pool is doing."""

from __future__ import annotations

import json
import signal
import time

import pytest
from conftest import SAMPLES, wait_for
from rq import Queue
from rq.serializers import JSONSerializer

from mailcli.queue.names import queue_name


def status(home) -> dict:
    proc = home.run("status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_status_shows_a_running_pool_its_busy_worker_and_the_backlog(home):
    assert home.run("ingest", str(SAMPLES / "graph.jsonl"), "--no-enqueue").returncode == 0
    conn = home.redis()
    q = Queue(queue_name("high"), connection=conn, serializer=JSONSerializer)
    job = q.enqueue("jobhelpers.blocked", {"id": "st1"}, job_timeout=120)
    q.enqueue("jobhelpers.blocked", {"id": "st2"}, job_timeout=120)
    pool = home.popen(
        "workers", "start", "--min", "1", "--max", "1", "--window", "1", "--max-memory", "500", "--timeout", "5"
    )
    try:
        def busy():
            snap = status(home)
            return snap if any(w["state"] == "busy" for w in snap["workers"]) else None

        snap = wait_for(busy, timeout=30, what="status to show a busy worker")
        assert snap["pool_running"] is True
        (p,) = snap["pools"]
        assert p["pid"] == pool.pid and p["min"] == 1 and p["max"] == 1 and p["current"] == 1 and p["decision"]
        (w,) = snap["workers"]
        assert w["job_id"] == job.id and w["job_age_s"] >= 0 and w["rss_bytes"] > 0
        assert w["rss_limit_bytes"] == 500 * 2**20 and not w["stale"]
        depth = {d["priority"]: d for d in snap["queues"]["priorities"]}
        assert depth["high"]["queued"] >= 1 and depth["high"]["started"] == 1
        assert snap["queues"]["window"] == 1
        assert snap["progress"]["emails"] > 0
        # the table rendering of the same snapshot, in 80 columns
        table = home.run("status", env={"COLUMNS": "80"})
        assert table.returncode == 0 and max(len(x) for x in table.stdout.splitlines()) <= 80
        assert job.id[:8] in table.stdout or "busy" in table.stdout
    finally:
        conn.rpush("test:release:st1", 1)
        conn.rpush("test:release:st2", 1)
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0
    snap = status(home)
    assert snap["pool_running"] is False and not snap["pools"]


def _emails_per_second(home) -> dict[int, int]:
    """The truth, counted from the store itself: emails whose analysis was written in each second."""
    from datetime import datetime

    with home.store() as store:
        rows = store.conn.execute("SELECT analyzed_at, count(*) FROM email_analysis GROUP BY analyzed_at").fetchall()
    return {int(datetime.fromisoformat(at).timestamp()): n for at, n in rows}


def test_every_figure_status_shows_is_what_a_real_pool_did(home):
    """A pool works a known number of emails: the jobs each worker says it did add up to the jobs that
    ran, emails/min is the emails counted per second over the interval status says it observed, and
    the ETA is the same order as the time the rest really took."""
    from synth import write_jsonl

    from mailcli.status.snapshot import StatusReader

    n_emails = 30_000
    export = write_jsonl(home.path / "synth.jsonl", n_emails, body_bytes=200)
    assert home.run("ingest", str(export), "--no-enqueue").returncode == 0
    with home.store() as store:
        total = store.conn.execute("SELECT count(*) FROM emails").fetchone()[0]
    conn = home.redis()
    failing = Queue(queue_name("low"), connection=conn, serializer=JSONSerializer)
    failing.enqueue("jobhelpers.boom", {"id": "f1"}, job_timeout=60)
    assert home.run("analyze", "--phase", "1").returncode == 0  # phase 1 jobs: no LLM, fast
    before_pool = time.time()
    pool = home.popen("workers", "start", "--min", "2", "--max", "2", "--window", "1000", "--timeout", "5")
    clock_at: list[float] = []

    def clock() -> float:
        clock_at.append(time.time())
        return clock_at[-1]

    mid_run = []
    try:
        with StatusReader(home.settings(), clock=clock, store_load_share=1.0) as reader:
            def finished():
                # what the store held just before and just after the snapshot read it brackets what it saw
                before = _emails_per_second(home)
                snap = reader.snapshot()
                after = _emails_per_second(home)
                if snap.progress.remaining and snap.progress.rate_observed_s and snap.progress.eta_s:
                    mid_run.append((clock_at[-1], snap, before, after))
                return snap if snap.progress.remaining == 0 and snap.queues.unsaved_results == 0 else None

            wait_for(finished, timeout=120, interval=0.3, what="the pool to analyse every email")
            ended = time.time()
            with home.store() as store:
                jobs_run = store.conn.execute(
                    "SELECT count(DISTINCT job_id) FROM conversation_analysis"
                ).fetchone()[0]

            def counted():
                snap = reader.snapshot()
                done = sum(w.jobs_done for w in snap.workers)
                return snap if done >= jobs_run and sum(w.jobs_failed for w in snap.workers) >= 1 else None

            snap = wait_for(counted, timeout=15, what="the workers' heartbeats to count every job")
    finally:
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0
    assert "Traceback" not in pool.stderr.read()

    # jobs done per worker add up to the jobs that ran (and the one failing job is counted as failed)
    assert len(snap.workers) == 2
    assert sum(w.jobs_done for w in snap.workers) == jobs_run > 1
    assert sum(w.jobs_failed for w in snap.workers) == 1
    assert snap.progress.phases[0].done == total

    # emails/min against the emails counted per second over the interval status observed
    assert mid_run, "no snapshot was taken while the pool worked"
    checked_eta = 0
    for now, mid, before, after in mid_run:
        observed = mid.progress.rate_observed_s
        start = now - observed
        # the run began after the pool was started (a rate is never taken over less than a second)
        # and no later than its first result
        assert start >= min(before_pool, now - 1.0) - 0.1, (start - before_pool, observed)
        assert start <= min(after) + 1
        shown = mid.progress.rate_per_min * observed / 60  # the emails the rate stands for
        # results are stamped to the second, and the pool's start to a tenth: a second at the very
        # edge of the interval may fall either way
        low = sum(n for sec, n in before.items() if start - 1 + 0.1 < sec <= now)
        high = sum(n for sec, n in after.items() if start - 1 - 0.1 < sec <= now)
        assert low - 0.01 <= shown <= high + 0.01, (shown, low, high, observed)
        # the ETA is the remaining emails at that rate, and once a few seconds are observed (the
        # first includes the pool's start-up) the same order as the time the rest really took
        assert mid.progress.eta_s == pytest.approx(mid.progress.remaining / mid.progress.rate_per_min * 60, abs=0.1)
        took = ended - now
        if observed >= 3:
            checked_eta += 1
            assert mid.progress.eta_s <= 4 * took + 5 and took <= 4 * mid.progress.eta_s + 5, (mid.progress.eta_s, took)
    assert checked_eta, "no snapshot was taken 3 s or more into the run"

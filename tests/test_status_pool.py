"""`mailcli status` against a real running pool: what it shows is what the pool is doing."""

from __future__ import annotations

import json
import signal

from conftest import SAMPLES, wait_for
from rq import Queue
from rq.serializers import JSONSerializer

from mailcli.queue.jobs import queue_name


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

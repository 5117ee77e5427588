"""`mailcli status`: one snapshot of Redis, SQLite and Ollama, drawn as text (once or --watch), JSON and
Prometheus text. Real processes throughout: an embedded redis-server, SQLite files filled by the ingest
code, the Ollama stand-in over HTTP, the CLI in a subprocess and in a pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from conftest import ROOT, SAMPLES, TESTS, wait_for
from ollama_standin import OllamaStandin
from rich.cells import cell_len
from rich.console import Console
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from mailcli.config import Settings
from mailcli.llm.client import OllamaClient
from mailcli.pool.state import publish_pool, publish_worker
from mailcli.queue.jobs import queue_for
from mailcli.queue.redis_server import EmbeddedRedis
from mailcli.status.prometheus import exposition
from mailcli.status.render import StatusView
from mailcli.status.snapshot import (
    PENDING_KEY,
    Failure,
    StatusReader,
    WorkerInfo,
    breaker_state,
    percentile,
    run_started,
    sparkline,
    sqlite_due,
    take_snapshot,
    throughput,
)
from mailcli.store.db import Store

POOL_ID = "coord-4242-abc123"
DOWN_OLLAMA = "http://127.0.0.1:9"  # a closed port
LEDGER_ONLY = "http://gpu9:11434"  # a host the pool's workers used, not in this host's OLLAMA_HOST
SECRET = "s3cr3t-pw-do-not-print"
TOP_KEYS = {"taken_at", "observer", "took_ms", "redis", "database", "pools", "workers", "queues", "progress",
            "ollama", "failures", "notes", "pool_running"}  # fmt: skip


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def redis_sock() -> Iterator[str]:
    directory = tempfile.mkdtemp(dir="/tmp", prefix="mc")
    server = EmbeddedRedis(directory)
    try:
        yield server.ensure()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def conn(redis_sock: str) -> Iterator[redis.Redis]:
    c = redis.Redis(unix_socket_path=redis_sock)
    c.flushall()
    yield c
    c.flushall()
    c.close()


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaStandin]:
    with OllamaStandin() as standin:
        with OllamaClient(standin.url) as client:
            client.warm("llama3.2:3b")
        yield standin


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mc"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def filled(home: Path, ollama: OllamaStandin) -> dict:
    """The samples ingested for real, then analysis results written as the sink writes them."""
    return fill_store(home / "mailcli.db", ollama.url)


def settings_for(home: Path, redis_sock: str | None, ollama_url: str, **kw) -> Settings:
    values = {
        "home": home,
        "redis_url": f"unix://{redis_sock}" if redis_sock else None,
        "ollama_host": f"{ollama_url},{DOWN_OLLAMA}",
    }
    return Settings(**(values | kw))


def cli_env(home: Path, redis_url: str | None, ollama_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MAILCLI_DEBUG", "NO_COLOR")}
    env.update(
        MAILCLI_HOME=str(home),
        MAILCLI_DB=str(home / "mailcli.db"),
        OLLAMA_HOST=f"{ollama_url},{DOWN_OLLAMA}",
        PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]),
        COLUMNS="100",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def run_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailcli", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def fill_store(db: Path, ollama_url: str) -> dict:
    """Ingest samples/*, then analyse some conversations by writing rows directly. Returns what a
    snapshot must count."""
    from mailcli.ingest.run import ingest_paths

    now = datetime.now(UTC)
    with Store.open(db) as store:
        summary = ingest_paths(
            store, [str(SAMPLES / p) for p in ("graph.jsonl", "flat.jsonl", "mbox", "eml")]
        )
        assert summary.ingested > 20
        c = store.conn
        convs = c.execute("SELECT id, email_count FROM conversations ORDER BY id").fetchall()
        analysed, failed, pending = convs[:9], convs[9], convs[10:]
        expect = {"phase1": 0, "phase2": 0, "fallback2": 0, "phase3": 0, "tiers": {}, "per_minute": [0] * 15}
        with c:
            for i, (cid, n) in enumerate(analysed):
                tier = 3 - i % 3
                at = now - timedelta(seconds=30 + 60 * (i % 4))  # minutes 0..3 ago
                expect["per_minute"][14 - i % 4] += n
                expect["tiers"][str(tier)] = expect["tiers"].get(str(tier), 0) + 1
                rowids = [
                    r[0] for r in c.execute("SELECT rowid FROM emails WHERE conversation_id = ?", (cid,))
                ]
                for k, rowid in enumerate(rowids):
                    phase2 = None
                    if tier >= 2:
                        source = "fallback" if (i, k) == (0, 0) else "model"
                        phase2 = json.dumps({"summary": "s", "source": source, "model": "llama3.2:3b"})
                        expect["phase2"] += 1
                        expect["fallback2"] += source == "fallback"
                    c.execute(
                        "INSERT INTO email_analysis (email_rowid, conversation_id, phase1, priority, phase2,"
                        " analyzed_at) VALUES (?, ?, '{}', 'low', ?, ?)",
                        (rowid, cid, phase2, iso(at)),
                    )
                    expect["phase1"] += 1
                phase3 = json.dumps({"executive_summary": "x", "source": "model"}) if tier == 3 else None
                expect["phase3"] += n if tier == 3 else 0
                c.execute(
                    "INSERT INTO conversation_analysis (conversation_id, completeness, is_complete, tier, detail,"
                    " phase3, status, analyzed_at) VALUES (?, 50, 0, ?, '{}', ?, 'analyzed', ?)",
                    (cid, tier, phase3, iso(at)),
                )
                c.execute("UPDATE conversations SET status = 'analyzed' WHERE id = ?", (cid,))
            c.execute(
                "UPDATE conversations SET status = 'failed', error = ?, updated_at = ? WHERE id = ?",
                (
                    "Traceback (most recent call last):\n  ...\nValueError: conversation blew up",
                    iso(now),
                    failed[0],
                ),
            )
            # the ledger: the stand-in answers (latency 100..2000 ms), the closed port failed five times
            # in a row just now (its breaker is open), a host only the workers know answered once
            calls = [(ollama_url, "ok", 200, 100.0 * (j + 1), now - timedelta(seconds=60)) for j in range(20)]
            calls += [(DOWN_OLLAMA, "retry" if j < 4 else "error", None, 5.0, now - timedelta(seconds=2))
                      for j in range(5)]  # fmt: skip
            calls.append((LEDGER_ONLY, "ok", 200, 700.0, now - timedelta(seconds=5)))
            calls.append((ollama_url, "ok", 200, 9999.0, now - timedelta(minutes=30)))  # outside the window
            for j, (host, outcome, status, ms, at) in enumerate(calls):
                c.execute(
                    "INSERT INTO llm_calls (call_key, phase, model, prompt_version, input_hash, host, duration_ms,"
                    " http_status, attempt, outcome, created_at) VALUES (?, 2, 'llama3.2:3b', 'v1', 'h', ?, ?, ?,"
                    " 1, ?, ?)",
                    (f"k{j}", host, ms, status, outcome, at.isoformat(timespec="milliseconds")),
                )
        expect.update(
            emails=c.execute("SELECT count(*) FROM emails").fetchone()[0],
            failed_id=failed[0],
            pending=len(pending),
            remaining=sum(n for _, n in pending),
        )
    return expect


def publish_running_pool(conn: redis.Redis, *, host: str = "coordinator", now: float | None = None) -> None:
    now = time.time() if now is None else now
    publish_pool(conn, POOL_ID, {
        "id": POOL_ID, "host": host, "pid": 4242, "started": now - 3725, "heartbeat": now,
        "min": 2, "max": 10, "target": 3, "current": 3, "decision": "backlog of 7 jobs with 2/3 busy",
        "remote": False, "burst": False, "window": 10000, "max_memory_mb": 512, "state": "running",
        "recovered": 2, "replaced": 1, "crash_reason": "",
    })  # fmt: skip
    for n, (state, job, beat_age) in enumerate(
        [
            ("busy", "mailcli-aaaaaaaaaaaaaaaaaaaaaaaa", 0.5),
            ("idle", "", 1.0),
            ("busy", "mailcli-bbbb", 60.0),
        ],
        1,
    ):
        name = f"mailcli.{host}.4242.{n}"
        publish_worker(conn, name, {
            "name": name, "pool": POOL_ID, "host": host, "pid": 5000 + n, "state": state, "job_id": job,
            "job_started": now - 12 if job else "", "jobs_done": 10 * n, "jobs_failed": n - 1,
            "rss": (200 + 200 * n) * 2**20, "cpu": 25.0 * n, "heartbeat": now - beat_age,
        })  # fmt: skip


def fail_one_job(conn: redis.Redis) -> str:
    """A real RQ failure: a worker runs a job whose function raises."""
    q = queue_for(conn, "low")
    job = q.enqueue("json.loads", "{not json", job_id="mailcli-failing-job")
    SimpleWorker([q], connection=conn, serializer=JSONSerializer).work(burst=True)
    wait_for(lambda: q.failed_job_registry.count == 1, timeout=10, what="the job to fail")
    return job.id


# ------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ""),
        ([0, 0, 0], "▁▁▁"),
        ([0, 1, 2, 4, 8], "▁▂▃▅█"),  # any work at all rises above the floor
        ([1, 1000], "▂█"),
        ([5, 5], "██"),
    ],
)
def test_sparkline_scales_to_the_largest_minute(values, expected):
    assert sparkline(values) == expected


def test_throughput_is_over_the_time_observed_since_the_run_began():
    now = 1_000_000.0
    # the case: 12 s into a run that does 1,000 emails a second
    recent = {int(now) - k: 1000 for k in range(1, 13)}
    rate, observed = throughput(recent, now, run_started=now - 12)
    assert observed == 12.0 and rate == pytest.approx(12_000 / 12 * 60)  # 60,000/min, not a fifth of it
    # a run longer than the window is measured over the window only
    recent = {int(now) - k: 10 for k in range(1, 1000)}
    rate, observed = throughput(recent, now, run_started=now - 3600)
    assert observed == 300.0 and rate == pytest.approx(10 * 60)
    # no pool to say when the run began: from the window's first result
    rate, observed = throughput({int(now) - 30: 50, int(now) - 10: 50}, now, run_started=None)
    assert observed == 30.0 and rate == pytest.approx(100 / 30 * 60)
    # nothing yet: no rate, and never a division by (almost) nothing
    assert throughput({}, now, run_started=None) == (0.0, None)
    assert throughput({}, now, run_started=now - 0.2) == (0.0, 1.0)


def test_no_eta_once_nothing_works_any_more():
    """A pool stopped 30 s ago: the past rate is still a fact, but the remaining work has no end in
    sight; with no pool, results still arriving (an `analyze --inline`) keep an ETA."""
    from mailcli.status.snapshot import ProgressInfo, set_throughput

    now = 1_000_000.0
    past = {int(now) - 40 - k: 100 for k in range(60)}
    pr = ProgressInfo(known=True, remaining=5000)
    set_throughput(pr, past, now, started=None)
    assert pr.rate_per_min > 0 and pr.eta_s is None
    set_throughput(pr, past, now, started=now - 100)  # a pool is running: it will go on
    assert pr.eta_s is not None
    fresh = {int(now) - 1 - k: 100 for k in range(20)}
    set_throughput(pr, fresh, now, started=None)  # no pool, but results arrive: inline at work
    assert pr.eta_s is not None


def test_the_run_begins_when_a_pools_current_work_began_else_when_it_started():
    from mailcli.status.snapshot import pool_info

    now = 1_000_000.0
    idle = pool_info({"id": "a", "started": str(now - 3600), "heartbeat": str(now)}, now, "h")
    working = pool_info({"id": "b", "started": str(now - 7200), "heartbeat": str(now), "work_since": str(now - 12)},
                        now, "h")  # fmt: skip
    gone = pool_info({"id": "c", "started": str(now - 60), "heartbeat": str(now - 600), "work_since": str(now - 5)},
                     now, "h")  # fmt: skip
    assert run_started([idle, working, gone], now) == now - 12
    assert run_started([idle, gone], now) == now - 3600
    assert run_started([gone], now) is None


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([], 0.5) is None


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([], None),
        ([("ok", 200, 0)], "closed"),
        ([("retry", None, 99)] * 4, "closed"),  # below the threshold
        ([("retry", None, 99)] * 5, "open"),
        ([("retry", None, 50)] * 5, "half-open"),  # the cooldown has passed: the next call probes
        ([("retry", None, 99)] * 5 + [("ok", 200, 99)], "closed"),
        ([("error", 404, 99)] * 6, "closed"),  # a 4xx is the request's fault, not the host's
        ([("error", 301, 99)] * 6, "closed"),  # as is any other answer the client rejects the request on
        ([("retry", 408, 99)] * 5, "open"),  # a timeout the host reported is the host's
        ([("retry", 200, 99)] * 5, "open"),  # an answer whose body was unusable
        ([("error", 500, 99)] * 5, "open"),
        (
            [("retry", 503, 99)] * 6,
            "closed",
        ),  # busy (queue full): the host answered; its limit shrinks instead
        ([("retry", None, 99)] * 4 + [("retry", 429, 99)] + [("retry", None, 99)], "closed"),
        ([("invalid", 200, 99)] * 6, "closed"),  # answers the schema check rejected: the host is fine
    ],
)
def test_breaker_is_derived_from_consecutive_failed_attempts(attempts, expected):
    assert breaker_state(attempts, now=100.0) == expected


def test_pending_key_is_the_feeders():
    from mailcli.dispatch import feeder

    assert feeder.PENDING_KEY == PENDING_KEY


def test_queues_and_their_depths_are_the_queue_modules(conn):
    # status and the pool read the names from mailcli.queue.names: one definition, and a snapshot
    # without failed jobs never imports rq (mailcli.queue.jobs, which names its RQ queues by them, does)
    from mailcli.queue import jobs, names
    from mailcli.status import snapshot

    assert (snapshot.PENDING_KEY, snapshot.RESULTS_STREAM) == (names.PENDING_KEY, names.RESULTS_STREAM)
    assert snapshot.queue_name is names.queue_name is jobs.queue_name
    assert snapshot.queue_depths is names.queue_depths
    assert names.QUEUES is jobs.QUEUES
    assert [q.name for q in jobs.queues(conn)] == [snapshot.queue_name(q) for q in names.QUEUES]
    for _ in range(2):
        queue_for(conn, "high").enqueue("json.loads", "[]")
    queue_for(conn, "low").enqueue_in(timedelta(minutes=5), "json.loads", "[]")
    fail_one_job(conn)
    depths = snapshot.queue_depths(conn)
    assert (depths["high"]["queued"], depths["low"]["retrying"], depths["low"]["failed"]) == (2, 1, 1)


# ------------------------------------------------------------------------------------------ the snapshot


def test_snapshot_reads_published_pool_workers_queues_and_failures(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn)
    for _ in range(2):
        queue_for(conn, "high").enqueue("json.loads", "[]")
    failed_job = fail_one_job(conn)

    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))

    assert snap.redis.state == "ok" and snap.redis.version
    assert snap.pool_running
    [pool] = snap.pools
    assert (pool.host, pool.pid, pool.min, pool.max, pool.target, pool.current) == (
        "coordinator",
        4242,
        2,
        10,
        3,
        3,
    )
    assert pool.decision == "backlog of 7 jobs with 2/3 busy"
    assert 3700 < pool.uptime_s < 3800 and not pool.stale and pool.remote_host
    assert (pool.recovered, pool.replaced, pool.window) == (2, 1, 10000)

    workers = {w.name.rsplit(".", 1)[1]: w for w in snap.workers}
    assert set(workers) == {"1", "2", "3"}
    assert workers["1"].state == "busy" and workers["1"].job_id.startswith("mailcli-aaa")
    assert 10 <= workers["1"].job_age_s < 60
    assert workers["2"].job_age_s is None
    assert [w.stale for w in (workers["1"], workers["2"], workers["3"])] == [False, False, True]
    assert workers["2"].rss_bytes == 600 * 2**20 and workers["2"].rss_limit_bytes == 512 * 2**20
    assert workers["3"].cpu_percent == 75.0 and workers["3"].jobs_failed == 2

    depths = {d.priority: d for d in snap.queues.priorities}
    # every queue workers listen to, in their order: phase1 (jobs that need no LLM), then the priorities
    assert [d.priority for d in snap.queues.priorities] == ["phase1", "critical", "high", "medium", "low"]
    assert depths["high"].queued == 2 and depths["low"].failed == 1
    assert snap.queues.pending == filled["pending"] and snap.queues.pending_from == "sqlite"
    assert snap.queues.window == 10000

    by_kind = {f.kind: f for f in snap.failures}
    assert by_kind["job"].id == failed_job and "JSONDecodeError" in by_kind["job"].message
    assert by_kind["conversation"].id == filled["failed_id"]
    assert by_kind["conversation"].message == "ValueError: conversation blew up"  # the last line only


def test_snapshot_counts_progress_per_phase_tier_and_minute(conn, redis_sock, home, filled, ollama):
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    pr = snap.progress

    assert pr.known and pr.emails == filled["emails"]
    assert [(p.phase, p.done, p.total) for p in pr.phases] == [
        (1, filled["phase1"], filled["emails"]),
        (2, filled["phase2"], filled["emails"]),
        (3, filled["phase3"], filled["emails"]),
    ]
    assert pr.phases[1].fallbacks == filled["fallback2"] == 1
    assert snap.ollama.fallbacks == {"2": 1, "3": 0}
    assert pr.tiers == filled["tiers"]
    assert pr.conversations["failed"] == 1 and pr.conversations["pending"] == filled["pending"]
    assert pr.per_minute == filled["per_minute"]
    # no pool: the rate is over the time since the window's first result (3.5 minutes ago), not 5 minutes
    assert 210 <= pr.rate_observed_s <= 212
    assert pr.rate_per_min == pytest.approx(
        sum(filled["per_minute"][-5:]) / pr.rate_observed_s * 60, rel=1e-3
    )
    assert pr.remaining == filled["remaining"]
    # no pool, and no result in the last 10 s: nothing is working, so no ETA (see test_no_eta_once_nothing_works_any_more)
    assert pr.eta_s is None
    assert len(pr.sparkline) == 15 and set(pr.sparkline) <= set("▁▂▃▄▅▆▇█")


def test_ollama_hosts_are_probed_at_once_and_judged_from_the_ledger(conn, redis_sock, home, filled, ollama):
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))

    hosts = {h.url: h for h in snap.ollama.hosts}
    assert list(hosts) == [ollama.url, DOWN_OLLAMA, LEDGER_ONLY]
    up = hosts[ollama.url]
    assert up.reachable and up.loaded_models == ["llama3.2:3b"] and up.error is None
    assert (up.p50_ms, up.p95_ms) == (1000.0, 1900.0)  # the call outside the window is left out
    assert up.calls_per_min == pytest.approx(20 / 5) and up.breaker == "closed"
    down = hosts[DOWN_OLLAMA]
    assert down.reachable is False and "127.0.0.1:9" in down.error
    assert down.breaker == "open" and down.errors == 5 and down.p50_ms is None
    only = hosts[LEDGER_ONLY]
    assert only.configured is False and only.reachable is None and only.p50_ms == 700.0


def test_ollama_hosts_show_their_shared_limit_queueing_and_tokens(conn, redis_sock, home, filled, ollama):
    from mailcli.llm.limiter import RedisLimiter, host_key

    worker = RedisLimiter(conn, 8)
    done = worker.try_acquire(ollama.url)
    held = worker.try_acquire(ollama.url)  # a request in flight now
    assert done and held
    # the tokens window started 20 s ago (Redis's clock, which the release script reads)
    conn.hset(host_key(ollama.url), "win_start", str(time.time() - 20))
    worker.release(done, "ok", rtt=1.5, service=1.0, tokens=1200)
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    hosts = {h.url: h for h in snap.ollama.hosts}
    up = hosts[ollama.url]
    assert up.in_flight == 1 and up.limit == pytest.approx(2.0 + 0.2 * (2 * (1 / 1.5) + 1 - 2), abs=0.01)
    assert up.wait_ms == 500.0 and up.busy == 0 and up.timeouts == 0
    assert up.tokens_per_s == pytest.approx(1200 / 20, rel=0.05)  # prompt + answer tokens per second
    assert hosts[DOWN_OLLAMA].limit is None  # no worker has used it
    families = parse_exposition(exposition(snap))
    assert families["mailcli_ollama_in_flight"] == [(f'host="{ollama.url}"', 1.0)]
    assert families["mailcli_ollama_wait_seconds"] == [(f'host="{ollama.url}"', 0.5)]
    documented = set(re.findall(r"`(mailcli_[a-z0-9_]+)`", (ROOT / "docs" / "metrics.md").read_text()))
    assert {"mailcli_ollama_limit", "mailcli_ollama_in_flight", "mailcli_ollama_tokens_per_second"} <= set(
        families
    )
    assert set(families) <= documented
    text = draw(snap, 160)
    assert "limit" in text and "1/2.1" in text


def test_no_pool_running_is_said_and_the_backlog_shown(conn, redis_sock, home, filled, ollama):
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    assert not snap.pools and not snap.pool_running
    assert any("no pool running" in n for n in snap.notes)
    text = draw(snap, 80)
    assert "no pool running" in text
    assert f"{filled['pending']} conversations pending" in text


def test_a_dead_pools_last_words_are_flagged_stale(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn, now=time.time() - 120)
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    assert snap.pools[0].stale and all(w.stale for w in snap.workers)
    assert not snap.pool_running
    assert "STALE" in draw(snap, 80)


def test_status_does_not_start_the_embedded_redis(home, filled, ollama):
    snap = take_snapshot(settings_for(home, None, ollama.url))
    assert snap.redis.state == "not running"
    assert not (home / "redis" / "redis.sock").exists()
    assert snap.progress.known and snap.queues.pending == filled["pending"]


def test_a_host_without_the_database_shows_what_redis_knows(conn, redis_sock, home, ollama):
    # a workers-only host (`workers start --remote`): the backlog comes from the coordinator's count
    publish_running_pool(conn)
    conn.set(PENDING_KEY, 42)
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    assert not snap.database.available and not snap.progress.known
    assert (snap.queues.pending, snap.queues.pending_from) == (42, "redis")
    assert len(snap.workers) == 3
    text = draw(snap, 80)
    assert "42 conversations pending" in text and "no database" in text
    assert all(cell_len(line) <= 80 for line in text.splitlines())


@pytest.mark.parametrize(
    ("since", "cost", "due"),
    [(1.0, 0.005, True), (1.0, 0.15, False), (1.5, 0.15, True), (0.0, 0.0, True)],
)
def test_watch_rereads_sqlite_only_as_often_as_keeps_it_under_a_tenth_of_a_core(since, cost, due):
    assert sqlite_due(since, cost, 0.1) is due


def test_watch_reuses_a_recent_sqlite_reading_and_rereads_redis(conn, redis_sock, home, filled, ollama):
    with StatusReader(settings_for(home, redis_sock, ollama.url), store_load_share=1e-9) as reader:
        first = reader.snapshot()
        publish_running_pool(conn)
        second = reader.snapshot()
    assert second.progress is first.progress  # SQLite: the reading is reused
    assert not first.pools and second.pools  # Redis: read on every refresh


# ------------------------------------------------------------------------------------------ rendering


def draw(snap, width: int) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(StatusView(snap))
    return console.export_text()


LABELS = ("mailcli status", "redis", "database", "Pool", "supervisor", "last scaling", "Workers", "Queues",
          "priority", "Progress", "throughput", "ETA", "tiers", "Ollama", "breaker", "Last failures")  # fmt: skip


@pytest.mark.parametrize("width", [80, 160])
def test_render_fits_the_terminal_width(conn, redis_sock, home, filled, ollama, width):
    publish_running_pool(conn)
    fail_one_job(conn)
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    # the worst a field can hold: long names, hosts, reasons and errors
    snap.workers.append(WorkerInfo(
        name="mailcli." + "a-very-long-host-name-indeed" * 3 + ".123456.99", pool=POOL_ID, host="h" * 60,
        pid=123456, state="busy", stale=False, job_id="mailcli-" + "f" * 24, job_age_s=123456.0,
        jobs_done=123456789, jobs_failed=98765, rss_bytes=123 * 2**30, rss_limit_bytes=2**40, cpu_percent=399.9,
        heartbeat_age_s=0.1,
    ))  # fmt: skip
    snap.pools[0].decision = "backlog of 123456 jobs with 10/10 busy " * 4
    snap.failures.append(Failure("job", "mailcli-" + "e" * 24, snap.taken_at, "RuntimeError: " + "x" * 300))

    text = draw(snap, width)
    lines = text.splitlines()
    too_long = [line for line in lines if cell_len(line) > width]
    assert not too_long, too_long
    for label in LABELS:
        assert label in text, label
    assert "4242.1" in text and "llama3.2:3b" in text and "JSONDecodeError" in text
    rows = [line for line in lines if line.startswith(("4242.", "a-very-long"))]
    assert len(rows) == 4, "one line per worker"
    if width >= 120:
        assert "coordinator" in rows[0] and "mailcli-aaaa" in rows[0] and ollama.url in text


@pytest.mark.parametrize("width", [80, 160])
def test_render_without_redis_or_database_fits_too(home, width, ollama):
    snap = take_snapshot(settings_for(home, None, ollama.url, redis_url=f"redis://:{SECRET}@127.0.0.1:1/0"))
    text = draw(snap, width)
    assert all(cell_len(line) <= width for line in text.splitlines())
    assert "unreachable" in text and SECRET not in text


def test_an_unusable_ollama_host_is_a_note_not_a_crash(home, filled, ollama):
    snap = take_snapshot(settings_for(home, None, ollama.url, ollama_host="gpu1:notaport"))
    assert any("OLLAMA_HOST is not usable" in n and "gpu1:notaport" in n for n in snap.notes)
    assert snap.progress.known and not any(h.configured for h in snap.ollama.hosts)  # the ledger's are kept


def test_phase_2_is_counted_from_its_partial_index(home, filled):
    # schema migration 2: the phase 2 count reads the index of phase 2 rows, not every analysis
    with Store.open(home / "mailcli.db", readonly=True) as store:
        plan = " ".join(
            row[3]
            for row in store.conn.execute(
                "EXPLAIN QUERY PLAN SELECT count(*), coalesce(sum(json_extract(phase2, '$.source') = 'fallback'), 0)"
                " FROM email_analysis WHERE phase2 IS NOT NULL"
            )
        )
    assert "email_analysis_phase2_source" in plan


HEAVY = ("httpx", "sqlite_utils", "pydantic", "rq", "psutil", "rich.console", "mailcli.llm.client")


def test_status_imports_stay_light(conn, redis_sock, home, filled, ollama):
    # What a snapshot and `status --json` import, in a fresh interpreter: no httpx (the Ollama probe is
    # http.client), no sqlite_utils (plain sqlite3), no pydantic (typer < 0.29), no rq (no failed job
    # here), no psutil, no rich (JSON output).
    publish_running_pool(conn)
    env = cli_env(home, f"unix://{redis_sock}", ollama.url)
    code = (
        "import sys\n"
        "import mailcli.status.snapshot as s\n"
        "from mailcli.config import load_settings\n"
        "snap = s.take_snapshot(load_settings())\n"
        "assert snap.progress.known and snap.pools and snap.ollama.hosts[0].reachable, snap\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    code = (
        "import sys, atexit\n"
        f"atexit.register(lambda: print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
        "sys.argv = ['mailcli', 'status', '--json']\n"
        "from mailcli.cli.app import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["progress"]["known"] is True
    assert out.stderr.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------------------ the command


def test_status_json_parses_with_every_top_level_key(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn)
    out = run_status(cli_env(home, f"unix://{redis_sock}", ollama.url), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == TOP_KEYS
    assert data["pool_running"] is True and len(data["workers"]) == 3
    assert data["progress"]["phases"][0]["done"] == filled["phase1"]
    assert [q["priority"] for q in data["queues"]["priorities"]][1:3] == ["critical", "high"]


def test_status_prints_the_table_once(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn)
    out = run_status(cli_env(home, f"unix://{redis_sock}", ollama.url))
    assert out.returncode == 0, out.stderr
    for label in LABELS:
        assert label in out.stdout, label
    assert all(cell_len(line) <= 100 for line in out.stdout.splitlines())


@pytest.mark.parametrize("args", [(), ("--json",), ("--format", "prometheus")])
def test_unreachable_redis_shows_sqlite_exits_4_and_never_prints_the_password(home, filled, ollama, args):
    url = f"redis://user:{SECRET}@127.0.0.1:1/0"
    out = run_status(cli_env(home, url, ollama.url), *args)
    both = out.stdout + out.stderr
    assert out.returncode == 4, both
    assert SECRET not in both and "Traceback" not in both
    assert "unreachable" in both or "cannot connect" in both
    if not args:
        assert "Progress" in out.stdout and f"{filled['phase1']:,}" in out.stdout
    elif args == ("--json",):
        data = json.loads(out.stdout)
        assert data["redis"]["state"] == "unreachable" and data["progress"]["emails"] == filled["emails"]
    else:
        assert 'mailcli_up{source="redis"} 0' in out.stdout


def test_a_password_that_works_is_never_printed_either(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn)
    conn.config_set("requirepass", SECRET)
    try:
        authed = redis.Redis(unix_socket_path=redis_sock, password=SECRET)
        authed.ping()
        env = cli_env(home, f"unix://{redis_sock}?password={SECRET}", ollama.url)
        for args in ((), ("--json",), ("--format", "prometheus")):
            out = run_status(env, *args)
            assert out.returncode == 0, out.stderr
            assert SECRET not in out.stdout + out.stderr
        assert json.loads(run_status(env, "--json").stdout)["redis"]["where"].endswith("password=***")
    finally:
        authed.config_set("requirepass", "")


def test_bad_flags_are_usage_errors(home, ollama):
    env = cli_env(home, None, ollama.url)
    for args in (
        ("--format", "xml"),
        ("--watch", "--format", "prometheus"),
        ("--json", "--format", "prometheus"),
    ):
        out = run_status(env, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)
    assert "Examples" in run_status(env, "--help").stdout


# ------------------------------------------------------------------------------------------ prometheus

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)\})?'
    r" (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))$"
)


def parse_exposition(text: str) -> dict[str, list[tuple[str, float]]]:
    """name -> [(labels, value)]; fails on any line that is not HELP, TYPE or a sample."""
    families: dict[str, list[tuple[str, float]]] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("gauge", "counter")
            assert kind == "gauge" or name.endswith("_total")
            typed.add(name)
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        assert m["name"] in typed, f"{m['name']} has no # TYPE before it"
        families.setdefault(m["name"], []).append((m["labels"] or "", float(m["value"])))
    return families


def test_prometheus_exposition_parses_and_is_documented(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn)
    queue_for(conn, "high").enqueue("json.loads", "[]")
    snap = take_snapshot(settings_for(home, redis_sock, ollama.url))
    families = parse_exposition(exposition(snap))

    assert all(name.startswith("mailcli_") for name in families)
    assert ('priority="high",state="queued"', 1.0) in families["mailcli_queue_jobs"]
    assert any(
        'worker="mailcli.coordinator.4242.1"' in labels for labels, _ in families["mailcli_worker_rss_bytes"]
    )
    assert (f'host="{DOWN_OLLAMA}",state="open"', 1.0) in families["mailcli_ollama_breaker"]
    assert ('phase="1"', float(filled["phase1"])) in families["mailcli_emails_analyzed"]
    documented = set(re.findall(r"`(mailcli_[a-z0-9_]+)`", (ROOT / "docs" / "metrics.md").read_text()))
    assert set(families) <= documented, set(families) - documented


def test_prometheus_label_values_are_escaped():
    from mailcli.status.prometheus import escape

    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


# ------------------------------------------------------------------------------------------ --watch


def test_watch_redraws_in_a_terminal_and_ctrl_c_ends_it_cleanly(conn, redis_sock, home, filled, ollama):
    publish_running_pool(conn)
    env = cli_env(home, f"unix://{redis_sock}", ollama.url)
    env.pop("COLUMNS")
    env["TERM"] = "xterm-256color"
    pid, fd = pty.fork()
    if pid == 0:  # the child: an 80x60 terminal, then mailcli
        try:
            import fcntl

            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 80, 0, 0))
            os.execve(
                sys.executable,
                [sys.executable, "-m", "mailcli", "status", "--watch", "--interval", "0.2"],
                env,
            )
        finally:
            os._exit(127)
    output = bytearray()

    def read_some(timeout: float = 0.1) -> None:
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                output.extend(os.read(fd, 65536))
            except OSError:  # EIO: the child closed the terminal
                pass

    status = None
    try:
        wait_for(lambda: read_some() or output.count(b"mailcli status") >= 3, timeout=30, interval=0,
                 what="three draws of the status")  # fmt: skip
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline

        def exited() -> bool:
            nonlocal status
            read_some(0.05)
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            return bool(done)

        wait_for(exited, timeout=15, interval=0, what="the watch to exit after Ctrl-C")
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) in (0, 130), text[-2000:]
    assert "Traceback" not in text
    assert "\x1b[2J" not in text  # no clearing of the screen: redrawn in place (no flicker)
    assert "Workers" in text and "4242.1" in text


def test_watch_json_prints_one_object_per_interval(conn, redis_sock, home, filled, ollama):
    env = cli_env(home, f"unix://{redis_sock}", ollama.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcli", "status", "--watch", "--json", "--interval", "0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(set(json.loads(line)) == TOP_KEYS for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err


def test_watch_piped_prints_each_frame_as_it_comes(conn, redis_sock, home, filled, ollama):
    """Piped, there is no cursor to redraw with: each frame is printed in turn, the first at once
    (it printed nothing until Ctrl-C, then one frame)."""
    env = cli_env(home, f"unix://{redis_sock}", ollama.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcli", "status", "--watch", "--interval", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        seen = []
        while sum("Workers" in line for line in seen) < 2:
            line = proc.stdout.readline()
            assert line, "the watch ended before two frames"
            seen.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err


# ------------------------------------------------------------------------------------------ cost


def fill_synthetic(db: Path, n_emails: int = 100_000, per_conversation: int = 4) -> None:
    """n emails with realistic JSON sizes: 90% analysed, phase 2 on 60%, phase 3 on a fifth of the
    conversations, a ledger row per phase 2 email."""
    now = datetime.now(UTC)
    body = "Please find PO 4500012345 for part AB-1234 and the quote below. " * 16
    p1 = json.dumps(
        {
            "po_numbers": ["4500012345"],
            "part_numbers": ["AB-1234"],
            "amounts": [1234.5],
            "workflow_state": "ORDER_MANAGEMENT",
            "urgency_score": 3,
            "priority": "high",
            "detected_patterns": [],
            "sender_category": "standard",
        }
        | {f"k{i}": "v" * 20 for i in range(12)}
    )
    p2 = {
        "summary": "The customer asks for a quote and confirms the order. " * 5,
        "confidence": 0.8,
        "action_items": [{"task": "send quote", "owner": "sales", "deadline": "2025-03-10"}] * 3,
        "missed_entities": {"company_names": ["Globex", "Initech"], "people": ["Ann", "Bob"]},
        "risk_assessment": "low " * 30,
        "initial_response": "Thanks, on it. " * 10,
        "model": "llama3.2:3b",
    }
    p3 = json.dumps({"executive_summary": "A steady customer. " * 30, "source": "model", "model": "phi4:14b"})
    with Store.open(db) as store:
        c = store.conn
        convs, emails, analyses, conv_analyses, calls = [], [], [], [], []
        for ci in range(n_emails // per_conversation):
            cid = f"conv-{ci:07d}"
            analysed = ci % 10 != 0
            tier = (3, 2, 2, 1, 1)[ci % 5]
            at = iso(now - timedelta(seconds=ci % 7200))
            convs.append((cid, per_conversation, "analyzed" if analysed else "pending", at))
            for k in range(per_conversation):
                rowid = ci * per_conversation + k + 1
                emails.append((rowid, f"id{rowid}", f"dk{rowid}", cid, body, at))
                if analysed:
                    phase2 = (
                        json.dumps(p2 | {"source": "fallback" if rowid % 20 == 0 else "model"})
                        if tier > 1
                        else None
                    )
                    analyses.append((rowid, cid, p1, phase2, at))
                    if phase2:
                        calls.append((f"c{rowid}", rowid, 300.0 + rowid % 2000, at))
            if analysed:
                conv_analyses.append(
                    (cid, tier, json.dumps({"plan": {"phase3": tier == 3}}), p3 if tier == 3 else None, at)
                )
        with c:
            c.executemany(
                "INSERT INTO conversations (id, email_count, status, updated_at) VALUES (?, ?, ?, ?)", convs
            )
            c.executemany(
                "INSERT INTO emails (rowid, id, dedupe_key, conversation_id, body, source, locator,"
                " ingested_at) VALUES (?, ?, ?, ?, ?, 'synthetic', 'x', ?)",
                emails,
            )
            c.executemany(
                "INSERT INTO email_analysis (email_rowid, conversation_id, phase1, priority, phase2,"
                " analyzed_at) VALUES (?, ?, ?, 'high', ?, ?)",
                analyses,
            )
            c.executemany(
                "INSERT INTO conversation_analysis (conversation_id, completeness, is_complete, tier,"
                " detail, phase3, status, analyzed_at) VALUES (?, 50, 0, ?, ?, ?, 'analyzed', ?)",
                conv_analyses,
            )
            c.executemany("INSERT INTO llm_calls (call_key, email_rowid, phase, model, prompt_version, input_hash,"
                          " host, duration_ms, attempt, outcome, created_at) VALUES (?, ?, 2, 'llama3.2:3b', 'v1',"
                          " 'h', 'http://127.0.0.1:11434', ?, 1, 'ok', ?)", calls)  # fmt: skip


@pytest.mark.slow
def test_status_snapshot_is_cheap_on_100k_emails_and_10_workers(conn, redis_sock, home, ollama):
    fill_synthetic(home / "mailcli.db")
    now = time.time()
    publish_running_pool(conn)
    for n in range(4, 11):
        name = f"mailcli.coordinator.4242.{n}"
        publish_worker(conn, name, {"name": name, "pool": POOL_ID, "host": "coordinator", "pid": n, "state": "idle",
                                    "heartbeat": now, "rss": 2**28, "cpu": 1.0})  # fmt: skip
    st = settings_for(home, redis_sock, ollama.url)
    take_snapshot(st)  # the OS page cache warm, as on a machine where the pool is writing
    took = []
    for _ in range(3):
        snap = take_snapshot(st)
        took.append(snap.took_ms)
    assert len(snap.workers) == 10 and snap.progress.emails == 100_000
    assert min(took) < 300, took

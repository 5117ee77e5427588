"""Phase 1 through the pool (2 workers) against the in-process loop on one core, and against plain RQ.

Setup, not timed: `mailcli ingest --no-enqueue` of N generated emails, once; every run starts from a
fresh copy of that database, marked phase 1 only (what `mailcli analyze --phase 1` marks).

- candidate: `mailcli workers start --min 2 --max 2 --burst`, launch to exit (embedded Redis start,
  feeder, workers, sink, shutdown: enqueue to results in SQLite);
- baseline 1: `mailcli analyze --inline --phase 1` on an identical copy, launch to exit;
- baseline 2: plain `rq worker --burst -w rq.worker.SimpleWorker` x 2 processes with one job per email
  (benchmarks.trivial.phase1_email, JSON serializer), enqueue of the jobs plus the burst timed; the
  results stay in Redis, nothing is written to SQLite. M emails (fewer than N in quick mode): its
  rate is emails/s, compared with the pool's emails/s.
Candidate and baseline 1 run interleaved, alternating which goes first, so load changes hit both.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time

from benchmarks.common import (
    ARTEFACTS,
    Figure,
    Home,
    analysis_done,
    checkpoint,
    ingested,
    mark_phase1_only,
    median,
    redis_memory,
    scratch,
)


def _inline(db) -> tuple[float, int]:
    with Home() as home:
        home.use_db(db)
        t0 = time.perf_counter()
        home.run("analyze", "--inline", "--phase", "1")
        elapsed = time.perf_counter() - t0
        emails, _ = analysis_done(home.db)
    return elapsed, emails


def _pool(db, keep_as: str | None = None) -> tuple[float, int, dict]:
    with Home() as home:
        home.use_db(db)
        mark_phase1_only(home.db)
        elapsed = home.burst_pool(1800)
        emails, _ = analysis_done(home.db)
        memory = redis_memory(home.redis())
        if keep_as:
            out = scratch() / f"{keep_as}.db"
            shutil.copyfile(checkpoint(home.db), out)
            ARTEFACTS[keep_as] = out
    return elapsed, emails, memory


def _plain_rq(db, m: int, workers: int = 2) -> tuple[float, float, int]:
    """(enqueue seconds, burst seconds, jobs) for one job per email on plain `rq worker`s."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT subject, body, from_addr, importance FROM emails ORDER BY rowid LIMIT ?", (m,)
    ).fetchall()
    conn.close()
    with Home() as home:
        r = home.redis()
        q = Queue("bench-plain", connection=r, serializer=JSONSerializer)
        t0 = time.perf_counter()
        for i in range(0, len(rows), 1000):  # pipelined, 1000 jobs a round trip
            datas = [
                Queue.prepare_data(
                    "benchmarks.trivial.phase1_email",
                    ({"subject": s, "body": b, "from": f, "importance": imp},),
                    timeout=120,
                )
                for s, b, f, imp in rows[i : i + 1000]
            ]
            with r.pipeline() as pipe:
                q.enqueue_many(datas, pipeline=pipe)
                pipe.execute()
        t1 = time.perf_counter()
        procs = [home.rq_worker(q.name, burst=True) for _ in range(workers)]
        for p in procs:
            if p.wait(3600) != 0:
                raise RuntimeError(f"rq worker exited {p.returncode}: {home.log_tail(p)}")
        t2 = time.perf_counter()
        done = q.finished_job_registry.count
        if q.count or done != len(rows):
            raise RuntimeError(f"plain rq: {q.count} jobs left, {done}/{len(rows)} finished")
    return t1 - t0, t2 - t1, len(rows)


def run(n: int = 100_000, repeats: int = 3, rq_emails: int = 20_000) -> list[Figure]:
    db = ingested(n)
    pool_s, inline_s, peaks = [], [], []
    emails = 0
    for i in range(repeats):
        keep = f"analysed-{n}" if i == repeats - 1 else None
        order = ("pool", "inline") if i % 2 else ("inline", "pool")
        for side in order:
            if side == "inline":
                t, e = _inline(db)
                inline_s.append(t)
            else:
                t, e, mem = _pool(db, keep_as=keep)
                pool_s.append(t)
                peaks.append(mem.get("used_memory_peak", 0))
            emails = e
        print(f"#   run {i + 1}: inline {inline_s[-1]:.1f}s, pool {pool_s[-1]:.1f}s", file=sys.stderr, flush=True)
    pool_rate, inline_rate = emails / median(pool_s), emails / median(inline_s)
    ratio = pool_rate / inline_rate
    figures = [
        Figure(
            scenario=f"phase 1 through the pool, 2 workers, {emails:,} emails (enqueue to results in SQLite)",
            metric="emails/s",
            value=round(pool_rate),
            baseline_name="analyze --inline --phase 1, one core",
            baseline=round(inline_rate),
            ratio=round(ratio, 2),
            target=">= 1.5x",
            met=ratio >= 1.5,
            runs=repeats,
            note=(
                f"`workers start --min 2 --max 2 --burst` launch to exit (Redis start, feeder, sink, shutdown "
                f"included; the store marked phase 1 only, as `analyze --phase 1` marks, before the clock starts) "
                f"against `analyze --inline --phase 1` on an identical fresh copy, interleaved; "
                f"{n:,} generated records ({emails:,} unique emails); Redis used_memory_peak of the pool runs "
                f"{median(peaks) / 2**20:.0f} MB"
            ),
            samples=[round(emails / t) for t in pool_s],
            baseline_samples=[round(emails / t) for t in inline_s],
        )
    ]
    if rq_emails:
        enq, burst, m = _plain_rq(db, min(rq_emails, emails))
        rq_rate = m / (enq + burst)
        figures.append(
            Figure(
                scenario=f"phase 1 through the pool, 2 workers, {emails:,} emails, against plain RQ",
                metric="emails/s",
                value=round(pool_rate),
                baseline_name=f"plain `rq worker` x2, one job per email ({m:,} jobs)",
                baseline=round(rq_rate),
                ratio=round(pool_rate / rq_rate, 2),
                target="report the factor",
                met=None,
                runs=1,
                note=(
                    f"baseline: {m:,} jobs (benchmarks.trivial.phase1_email, JSON serializer) enqueued in "
                    f"{enq:.1f}s (pipelined, 1000 a round trip), then `rq worker --burst -w rq.worker.SimpleWorker` "
                    f"x2 in {burst:.1f}s; results left in Redis, NOTHING written to SQLite (the pool's figure "
                    f"includes its SQLite reads and writes); rate scaled: emails/s over {m:,} emails"
                ),
                baseline_samples=[round(rq_rate)],
            )
        )
    return figures

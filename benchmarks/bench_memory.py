"""Memory: RSS of an idle pool worker and of the supervisor against a plain `rq worker`, idle.

One embedded Redis; a mailcli pool (`workers start --min 1 --max 1`) and a plain
`rq worker -w rq.worker.SimpleWorker -S json` on a queue of its own, started together. Once both are up
and idle (the pool's worker publishes `idle`; the plain worker is registered with RQ) and a moment has
passed, psutil RSS of each process is sampled 5 times, 0.2 s apart (median). Fresh processes each round.
"""

from __future__ import annotations

import time

import psutil

from benchmarks.common import Figure, Home, median, stop_process, wait_for


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def run(repeats: int = 2, settle: float = 1.0) -> list[Figure]:
    from rq import Worker

    from mailcli.pool import state

    worker_mb, sup_mb, plain_mb = [], [], []
    for _ in range(repeats):
        with Home() as home:
            conn = home.redis()
            pool = home.mailcli("workers", "start", "--min", "1", "--max", "1")
            plain = home.rq_worker("bench-plain", name="bench-plain-worker")
            try:
                ours = wait_for(lambda conn=conn: [w for w in state.read_workers(conn) if w.get("state") == "idle"],
                                timeout=60, what="the pool's worker idle")[0]  # fmt: skip
                wait_for(lambda conn=conn: any(w.name == "bench-plain-worker" for w in Worker.all(connection=conn)),
                         timeout=60, what="the plain rq worker")  # fmt: skip
                time.sleep(settle)
                w, s, p = [], [], []
                for _ in range(5):
                    w.append(_rss(int(ours["pid"])))
                    s.append(_rss(pool.pid))
                    p.append(_rss(plain.pid))
                    time.sleep(0.2)
            finally:
                stop_process(pool)
                stop_process(plain)
        worker_mb.append(median(w) / 2**20)
        sup_mb.append(median(s) / 2**20)
        plain_mb.append(median(p) / 2**20)
    base = median(plain_mb)
    figures = []
    for label, values, what in (
        ("pool worker", worker_mb, "`python -m mailcli.pool.worker` (MailcliWorker, a SimpleWorker), idle"),
        ("supervisor", sup_mb, "`mailcli workers start` (supervisor, feeder, sink), idle pool, empty store"),
    ):
        v = median(values)
        figures.append(
            Figure(
                scenario=f"memory: idle {label} RSS",
                metric="MB",
                value=round(v, 1),
                baseline_name="plain `rq worker` (SimpleWorker), idle",
                baseline=round(base, 1),
                ratio=round(base / v, 2),
                target="report the factor",
                met=None,
                runs=repeats,
                note=f"{what}; psutil RSS after start-up; ratio = baseline / value (< 1: uses more)",
                samples=[round(x, 1) for x in values],
                baseline_samples=[round(x, 1) for x in plain_mb],
            )
        )
    return figures

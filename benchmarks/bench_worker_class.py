"""Fork-per-job (RQ's Worker) against in-process (SimpleWorker): per-job cost with trivial jobs.

The pool runs jobs in-process; this is the measurement behind that choice (README, workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.common import BIN, ROOT, Figure, Home, median


def _per_job_ms(home: Home, worker_class: str, jobs: int) -> float:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from mailcli.redis_conn import connect

    conn = connect(home.settings())
    q = Queue(f"bench-{worker_class.rsplit('.', 1)[-1].lower()}", connection=conn, serializer=JSONSerializer)
    with conn.pipeline() as pipe:
        for i in range(jobs):
            q.enqueue("trivial.noop", i, result_ttl=60, pipeline=pipe)
        pipe.execute()
    sock = home.data / "redis" / "redis.sock"
    env = {**home.env, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])}
    t0 = time.perf_counter()
    subprocess.run(
        [str(BIN / "rq"), "worker", "--burst", "-q", "--url", f"unix://{sock}", "-w", worker_class,
         "--serializer", "rq.serializers.JSONSerializer", q.name],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    assert q.count == 0, f"{q.count} jobs left"
    return elapsed * 1000 / jobs


def run(jobs: int = 400, repeats: int = 3) -> list[Figure]:
    fork, simple = [], []
    with Home() as home:
        from mailcli.redis_conn import connect

        connect(home.settings())  # start the embedded Redis
        for _ in range(repeats):  # interleaved, so load changes hit both alike
            fork.append(_per_job_ms(home, "rq.worker.Worker", jobs))
            simple.append(_per_job_ms(home, "rq.worker.SimpleWorker", jobs))
    f, s = median(fork), median(simple)
    return [
        Figure(
            scenario=f"RQ per-job cost, {jobs} trivial jobs: in-process (SimpleWorker, what the pool uses)",
            metric="ms/job",
            value=round(s, 2),
            baseline_name="fork per job (rq Worker)",
            baseline=round(f, 2),
            ratio=round(f / s, 2),
            target="informs the choice",
            met=None,
            runs=repeats,
            note=f"python {sys.version.split()[0]}; includes worker start-up amortised over {jobs} jobs",
        )
    ]

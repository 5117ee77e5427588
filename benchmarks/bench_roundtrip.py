"""Job round trip: a mailcli pool worker against a plain `rq worker`, on the same Redis.

One embedded Redis; a mailcli pool (`workers start --min 1 --max 1`) and a plain
`rq worker -w rq.worker.SimpleWorker -S json` on a queue of its own. Round trips alternate between the two:
enqueue `mailcli.queue.tasks.echo_check` (a small JSON payload) on the pool's critical queue, or
`benchmarks.trivial.noop` on the plain worker's queue, and wait for the result (RQ's blocking
`latest_result`, an XREAD on the job's results stream: no polling interval in the figure). Time from just
before the enqueue to the result being readable.
"""

from __future__ import annotations

import time
import uuid

from benchmarks.common import Figure, Home, percentile, stop_process, wait_for

PAYLOAD = {"hello": "mailcli", "n": 42, "text": "x" * 200}


def _round_trip(q, func: str) -> float:
    t0 = time.perf_counter()
    job = q.enqueue(func, PAYLOAD, job_id=f"bench-{uuid.uuid4().hex[:12]}", result_ttl=60)
    result = job.latest_result(timeout=30)
    elapsed = time.perf_counter() - t0
    if result is None or result.type != result.Type.SUCCESSFUL:
        raise RuntimeError(f"{func}: no successful result within 30s ({result and result.exc_string})")
    return elapsed


def run(n: int = 200, warmup: int = 10) -> list[Figure]:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from mailcli.pool import state
    from mailcli.queue.jobs import ECHO_CHECK_TASK, queue_for

    with Home() as home:
        conn = home.redis()
        pool = home.mailcli("workers", "start", "--min", "1", "--max", "1")
        plain = home.rq_worker("bench-plain", name="bench-plain-worker")
        try:
            wait_for(lambda: any(w.get("state") == "idle" for w in state.read_workers(conn)), timeout=30,
                     what="the pool's worker")  # fmt: skip
            ours_q = queue_for(conn, "critical")
            plain_q = Queue("bench-plain", connection=conn, serializer=JSONSerializer)
            for _ in range(warmup):  # first imports, connections
                _round_trip(ours_q, ECHO_CHECK_TASK)
                _round_trip(plain_q, "benchmarks.trivial.noop")
            ours, base = [], []
            for i in range(n):  # interleaved, alternating which goes first
                pair = [(ours, ours_q, ECHO_CHECK_TASK), (base, plain_q, "benchmarks.trivial.noop")]
                for sink, q, func in pair if i % 2 else pair[::-1]:
                    sink.append(_round_trip(q, func) * 1000)
        finally:
            stop_process(pool)
            stop_process(plain)
    figures = []
    for label, q in (("p50", 0.50), ("p95", 0.95)):
        v, b = percentile(ours, q), percentile(base, q)
        figures.append(
            Figure(
                scenario=f"echo_check job round trip {label} (enqueue to result), {n} round trips",
                metric="ms",
                value=round(v, 2),
                baseline_name="plain `rq worker` (SimpleWorker), trivial function, same Redis",
                baseline=round(b, 2),
                ratio=round(b / v, 2),
                target="report the factor",
                met=None,
                runs=n,
                note=(
                    "mailcli.queue.tasks.echo_check on a pool worker (MailcliWorker: publishes its state before and "
                    "after each job) vs benchmarks.trivial.noop on a plain rq worker; ratio = baseline / ours "
                    "(< 1: the pool's round trip is slower)"
                ),
            )
        )
    return figures

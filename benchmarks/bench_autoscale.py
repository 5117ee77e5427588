"""Autoscaling: from a backlog appearing to max workers busy, and from the backlog draining back to min.

`mailcli workers start --min 1 --max 4 --cooldown C`; each round enqueues 4 blocked jobs (tests/jobhelpers.py:
they wait on a Redis key) at once and polls the pool's published worker states (mailcli.pool.state.read_workers,
every 10 ms) until 4 workers are busy; then releases the jobs and polls until only 1 worker is left that
is not stopped. Baselines are the documented targets: 2 s up; the cooldown plus one supervisor tick down.
"""

from __future__ import annotations

import time
import uuid

from benchmarks.common import Figure, Home, median, stop_process, wait_for


def _live(conn):
    from mailcli.pool import state

    return [w for w in state.read_workers(conn) if w.get("state") != "stopped"]


def run(repeats: int = 3, max_workers: int = 4, cooldown: float = 2.0) -> list[Figure]:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from mailcli.pool.supervisor import TICK
    from mailcli.queue.names import queue_name

    up, down = [], []
    with Home() as home:
        conn = home.redis()
        pool = home.mailcli("workers", "start", "--min", "1", "--max", str(max_workers), "--cooldown", str(cooldown))
        try:
            q = Queue(queue_name("high"), connection=conn, serializer=JSONSerializer)
            for _ in range(repeats):
                wait_for(lambda: len(_live(conn)) == 1 and _live(conn)[0].get("state") == "idle", timeout=60,
                         what="the pool at its minimum, idle")  # fmt: skip
                keys = [uuid.uuid4().hex[:10] for _ in range(max_workers)]
                t0 = time.perf_counter()
                with conn.pipeline() as pipe:
                    for k in keys:
                        q.enqueue("jobhelpers.blocked", {"id": k, "max_seconds": 60}, job_timeout=120,
                                  result_ttl=60, pipeline=pipe)  # fmt: skip
                    pipe.execute()
                wait_for(lambda: sum(w.get("state") == "busy" for w in _live(conn)) >= max_workers, timeout=60,
                         what=f"{max_workers} busy workers")  # fmt: skip
                up.append(time.perf_counter() - t0)
                t1 = time.perf_counter()
                with conn.pipeline() as pipe:
                    for k in keys:
                        pipe.rpush(f"test:release:{k}", 1)
                    pipe.execute()
                wait_for(lambda: len(_live(conn)) == 1, timeout=60, what="the pool back at its minimum")
                down.append(time.perf_counter() - t1)
        finally:
            stop_process(pool)
    up_target, down_target = 2.0, cooldown + TICK
    u, d = median(up), median(down)
    return [
        Figure(
            scenario=f"autoscaling up: backlog of {max_workers} jobs to {max_workers} workers busy (--min 1 --max {max_workers})",
            metric="s",
            value=round(u, 3),
            baseline_name="documented target",
            baseline=up_target,
            ratio=round(up_target / u, 2),
            target=f"<= {up_target:g} s",
            met=u <= up_target,
            runs=repeats,
            note="enqueue of the blocked jobs to the pool publishing them all busy: spawn of 3 workers included; ratio = target / value",
            samples=[round(x, 3) for x in up],
        ),
        Figure(
            scenario=f"autoscaling down: drained backlog to --min 1 (--cooldown {cooldown:g})",
            metric="s",
            value=round(d, 3),
            baseline_name=f"documented target: cooldown + 1 tick ({TICK:g} s)",
            baseline=round(down_target, 2),
            ratio=round(down_target / d, 2),
            target=f"<= {down_target:g} s",
            met=d <= down_target,
            runs=repeats,
            note=(
                f"release of the jobs to 1 worker left: {d - cooldown:.2f} s beyond the cooldown (median); "
                "ratio = target / value"
            ),
            samples=[round(x, 3) for x in down],
        ),
    ]

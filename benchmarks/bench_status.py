"""`mailcli status --json` at N analysed emails and 10 workers, against `rq info` on the same Redis.

The store: the database the pool scenario analysed (N emails, phase 1 through the pool), or, when that
scenario did not run at this size, the same ingest analysed by `analyze --inline --phase 1` (the same rows).
Redis: the home's embedded server with 10 worker states (mailcli.pool.state.publish_worker) and a pool
(publish_pool) published as a live pool would, plus 10 workers registered with RQ so that `rq info` has as
many to list. Timed, interleaved, median of R each:
- take_snapshot(settings) in this process (mailcli.status.snapshot), against rq's `info` command run in
  this process (click's CliRunner on rq.cli.cli.main: the same code path, no interpreter start-up);
- the whole `mailcli status --json` command, against the whole `rq info` command. Their CPU time (user +
  system, from the children's rusage) goes in the note too: on a shared 2-core machine the wall time
  also measures the other processes' load, the CPU time much less so.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import time

from benchmarks.common import ARTEFACTS, BIN, Figure, Home, checkpoint, ingested, median, scratch


def _analysed(n: int) -> tuple[object, str]:
    key = f"analysed-{n}"
    if key in ARTEFACTS:
        return ARTEFACTS[key], "analysed by the pool scenario (`workers start --burst`, phase 1)"
    import shutil

    with Home() as home:
        home.use_db(ingested(n))
        home.run("analyze", "--inline", "--phase", "1")
        out = scratch() / f"{key}.db"
        shutil.copyfile(checkpoint(home.db), out)
    ARTEFACTS[key] = out
    return out, "analysed by `analyze --inline --phase 1` (the pool scenario did not run at this size)"


def _register_rq_workers(conn, workers: int) -> None:
    from rq.serializers import JSONSerializer
    from rq.worker import SimpleWorker

    from mailcli.queue.jobs import queues

    for i in range(workers):
        SimpleWorker(queues(conn), name=f"mailcli.bench.{i + 1}", connection=conn, serializer=JSONSerializer).register_birth()


def _publish(conn, workers: int) -> None:
    from mailcli.pool import state

    now = time.time()
    pool_id = f"{socket.gethostname()}-bench"
    state.publish_pool(conn, pool_id, {
        "id": pool_id, "host": socket.gethostname(), "pid": os.getpid(), "started": now - 600, "heartbeat": now,
        "min": workers, "max": workers, "target": workers, "current": workers, "decision": "steady",
        "remote": False, "burst": False, "window": 10_000, "max_memory_mb": "", "state": "running",
        "recovered": 0, "replaced": 0, "crash_reason": "",
    })  # fmt: skip
    for i in range(workers):
        name = f"mailcli.bench.{i + 1}"
        state.publish_worker(conn, name, {
            "name": name, "pool": pool_id, "host": socket.gethostname(), "pid": 100000 + i,
            "state": "busy" if i % 2 else "idle", "job_id": f"mailcli-bench-job-{i}" if i % 2 else "",
            "job_started": now - 3 if i % 2 else "", "jobs_done": 100 + i, "jobs_failed": 0,
            "rss": 60 * 2**20, "cpu": 50.0, "heartbeat": now,
        })  # fmt: skip


def run(n: int = 100_000, workers: int = 10, repeats: int = 10) -> list[Figure]:
    from click.testing import CliRunner
    from rq.cli.cli import main as rq_main

    from mailcli.status.snapshot import take_snapshot

    db, origin = _analysed(n)
    snap_ms, cmd_ms, rq_in_ms, rq_cmd_ms = [], [], [], []
    cpu_ms: dict[int, list[float]] = {id(cmd_ms): [], id(rq_cmd_ms): []}  # the whole commands' user + sys
    with Home() as home:
        home.use_db(db)
        conn = home.redis()
        _register_rq_workers(conn, workers)
        settings = home.settings()
        url = home.redis_url_for_rq
        runner = CliRunner()
        rq_cmd = [str(BIN / "rq"), "info", "-u", url]
        take_snapshot(settings)  # warm: imports, page cache
        subprocess.run(rq_cmd, env=home.env, capture_output=True, check=True)
        emails = None
        for i in range(repeats):
            _publish(conn, workers)  # fresh heartbeats: never stale
            steps = [
                (snap_ms, lambda: take_snapshot(settings)),
                (rq_in_ms, lambda: runner.invoke(rq_main, ["info", "-u", url], catch_exceptions=False)),
                (cmd_ms, lambda: home.run("status", "--json")),
                (rq_cmd_ms, lambda: subprocess.run(rq_cmd, env=home.env, capture_output=True, check=True)),
            ]
            for sink, fn in steps if i % 2 else steps[::-1]:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                out = fn()
                sink.append((time.perf_counter() - t0) * 1000)
                if id(sink) in cpu_ms:
                    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu_ms[id(sink)].append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
                if sink is snap_ms:
                    snap = out
                    if len(snap.workers) != workers or snap.progress.emails == 0:
                        raise RuntimeError(f"status saw {len(snap.workers)} workers, {snap.progress.emails} emails")
                    emails = snap.progress.emails
    figures = []
    for label, ours, base, base_name, what in (
        ("snapshot in-process (take_snapshot)", snap_ms, rq_in_ms, "`rq info` in-process (CliRunner)",
         "mailcli.status.snapshot.take_snapshot: Redis (3 pipelined round trips), SQLite counts, Ollama probe"),
        ("`mailcli status --json`, whole command", cmd_ms, rq_cmd_ms, "`rq info`, whole command",
         "launch to exit, Python start-up and imports included"),
    ):  # fmt: skip
        v, b = median(ours), median(base)
        cpu = ""
        if id(ours) in cpu_ms:
            cpu = (f"; CPU (user + sys) median {median(cpu_ms[id(ours)]):.0f} ms against"
                   f" {median(cpu_ms[id(base)]):.0f} ms for the baseline")  # fmt: skip
        figures.append(
            Figure(
                scenario=f"status at {emails:,} emails and {workers} workers: {label}",
                metric="ms",
                value=round(v, 1),
                baseline_name=f"{base_name}, same Redis",
                baseline=round(b, 1),
                ratio=round(b / v, 2),
                target="<= 300 ms",
                met=v <= 300,
                runs=repeats,
                note=f"{what}; store {origin}; ratio = baseline / value{cpu}",
                samples=[round(x, 1) for x in ours],
                baseline_samples=[round(x, 1) for x in base],
            )
        )
    return figures

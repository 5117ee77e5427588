"""A pool worker: a real RQ worker (visible to `rq info`) that runs jobs in its own process.

Jobs run in-process (RQ's SimpleWorker) rather than in a fork per job: measured on 2 cores, a fork
costs ~12 ms a job against ~4 ms in-process, and in-process the Ollama client's connection pool,
breakers and warmed models live across jobs. Isolation is the supervisor's: it watches each
worker's memory and heartbeat and replaces the whole process when a job misbehaves.

Run as `python -m mailcli.pool.worker --name NAME --pool POOL` (the supervisor does this).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time

import psutil
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from mailcli.pool.state import publish_worker

HEARTBEAT_INTERVAL = float(os.environ.get("MAILCLI_HEARTBEAT_INTERVAL", "1.0"))


def rss_with_children(proc: psutil.Process) -> int:
    total = 0
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


class MailcliWorker(SimpleWorker):
    """SimpleWorker that publishes its state (job, age, counts, RSS, CPU) every second."""

    def __init__(self, *args, pool_id: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.pool_id = pool_id
        self.current_job_id: str | None = None
        self.current_job_started: float | None = None
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self._parent = os.getppid()
        self._beat_stop = threading.Event()
        self._beat = threading.Thread(target=self._beat_loop, name="mailcli-heartbeat", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------

    def work(self, *args, **kwargs):
        self.publish("starting")
        self._beat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._beat_stop.set()
            self.publish("stopped")

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.current_job_id = job.id
        self.current_job_started = time.time()
        self.publish("busy")  # before the work: a crash mid-job must leave the job's id behind
        try:
            super().execute_job(job, queue)
        finally:
            self.current_job_id = None
            self.current_job_started = None
            self.publish("idle")

    # -- heartbeat ------------------------------------------------------------------------

    def publish(self, state: str | None = None) -> None:
        fields = {
            "name": self.name,
            "pool": self.pool_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": state or ("busy" if self.current_job_id else "idle"),
            "job_id": self.current_job_id or "",
            "job_started": self.current_job_started or "",
            "jobs_done": self.successful_job_count,
            "jobs_failed": self.failed_job_count,
            "rss": rss_with_children(self._proc),
            "cpu": round(self._proc.cpu_percent(None), 1),
            "heartbeat": time.time(),
        }
        try:
            publish_worker(self.connection, self.name, fields)
        except Exception as exc:  # Redis restarting: the next beat will tell
            self.log.debug("heartbeat failed: %s", exc)

    def _beat_loop(self) -> None:
        warned = False
        while not self._beat_stop.wait(HEARTBEAT_INTERVAL):
            self.publish()
            if os.getppid() != self._parent and not warned:
                # our supervisor is gone: finish the job in hand, then leave (warm shutdown)
                warned = True
                os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailcli-worker")
    parser.add_argument("--name", required=True)
    parser.add_argument("--pool", default="")
    parser.add_argument("--queues", default="", help="comma-separated; default: every priority queue")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--max-jobs", type=int, default=None)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    from mailcli.config import load_settings
    from mailcli.queue.jobs import queues as all_queues
    from mailcli.queue.redis_server import connect

    level = "DEBUG" if args.debug or os.environ.get("MAILCLI_DEBUG") else "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    conn = connect(load_settings())
    if args.queues:
        qs = [Queue(q, connection=conn, serializer=JSONSerializer) for q in args.queues.split(",")]
    else:
        qs = all_queues(conn)
    worker = MailcliWorker(qs, name=args.name, connection=conn, serializer=JSONSerializer, pool_id=args.pool)
    worker.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=level, with_scheduler=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A pool worker: a real RQ worker (visible to `rq info`) that runs jobs in its own process.

Jobs run in-process (RQ's SimpleWorker) rather than in a fork per job: measured on 2 cores, a fork
costs ~12 ms a job against ~4 ms in-process, and in-process the Ollama client's connection pool,
breakers and warmed models live across jobs. Isolation is the supervisor's: it watches each
worker's memory and heartbeat and replaces the whole process when a job misbehaves.

Run as `python -m mailcli.pool.worker --name NAME --pool POOL` (the supervisor does this).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time

import psutil
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from mailcli import contract
from mailcli.pool.state import publish_worker
from mailcli.queue.jobs import TASK, PayloadJob

# Whoever can write to Redis can put a job on our queues. A job names its function by dotted path, so
# workers run functions of mailcli's task module only (plus modules a test names), never callbacks.
# (main() adds Settings.task_modules, which tests use for their own job functions)
TASK_MODULES: tuple[str, ...] = ("mailcli.queue.tasks",)


EXIT_WIRE_VERSION = 5  # this worker's mailcli speaks another wire version than the job's


class RefusedJob(Exception):
    """A job that is not one of mailcli's tasks: failed without importing or running anything."""


def _is_task(func_name: str | None) -> bool:
    module, _, attr = (func_name or "").rpartition(".")
    return bool(attr) and module in TASK_MODULES


class MailcliJob(PayloadJob):
    """An RQ job that can only run a mailcli task: no other function, no instance, no callbacks, no webhooks."""

    @property
    def func(self):
        name = self.func_name  # JSON only: a pickled job fails here with DeserializationError
        if self.instance is not None or not _is_task(name):
            raise RefusedJob(f"refused job {self.id}: {name!r} is not a mailcli task")
        return super().func

    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None

    def send_webhooks(self, *args, **kwargs) -> None:
        return None


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

    def __init__(self, *args, pool_id: str = "", heartbeat_interval: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool_id = pool_id
        self.heartbeat_interval = heartbeat_interval
        self.current_job_id: str | None = None
        self.current_job_started: float | None = None
        # jobs this process finished, counted here: RQ adds its own counts to the worker's hash in
        # Redis but never to these attributes, which stay 0 in the process that runs the jobs
        self.jobs_done = 0
        self.jobs_failed = 0
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self._parent = os.getppid()
        self._beat_stop = threading.Event()
        self._beat = threading.Thread(target=self._beat_loop, name="mailcli-heartbeat", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        while True:
            try:
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except Exception as exc:
                job_id = getattr(exc, "job_id", None)
                if job_id is None:
                    raise
                # popped, but RQ can not even read it (a malformed or foreign hash): drop it and
                # listen on, rather than let one bad entry end the worker
                self.log.error("dropped job %s: unreadable (%s)", job_id, type(exc).__name__)
                continue
            if result is not None:
                self._refuse_other_versions(*result)
                # say which job we hold at once: if we die before RQ marks it started, the supervisor
                # still knows which job to put back
                self.current_job_id = result[0].id
                self.current_job_started = time.time()
                self.publish("busy")
            return result

    def _refuse_other_versions(self, job: PayloadJob, queue: Queue) -> None:
        """A job built by a mailcli of another wire version (a coordinator upgraded before this
        host, or after it) goes back to the front of its queue for a worker that speaks it, and this
        worker stops with one line naming the fix: a KeyError half-way through would fail the job."""
        try:
            payload = job.args[0] if job.args else None
        except Exception:  # unreadable data: RQ fails it when it runs, as before
            return
        if not isinstance(payload, dict) or job.func_name != TASK:
            return
        try:
            contract.check(payload, f"job {job.id}")
        except contract.WireVersionError as exc:
            self.connection.lpush(queue.key, job.id)
            self.log.error("refused %s; the job is back in %s for another worker", exc, queue.name)
            raise SystemExit(EXIT_WIRE_VERSION) from None

    def work(self, *args, **kwargs):
        self.publish("starting", full=True)
        self._beat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._beat_stop.set()
            self.publish("stopped")

    def unsubscribe(self) -> None:
        """RQ joins its command-listener thread for up to a second on the way out; ours is a daemon
        thread that dies with the process, so a stopping worker leaves at once (faster scale-down).

        The thread blocks up to 60 s (RQ's poll interval) in one read of the command channel.
        redis-py 8.2's ``stop()`` joins it with no time limit unless given one, which kept every
        stopping worker alive for up to a minute; ``timeout=0`` only trips its flag. Older
        redis-py's ``stop()`` takes no argument and never waited."""
        thread, self.pubsub_thread = self.pubsub_thread, None
        if thread is None:
            return
        if "timeout" in inspect.signature(thread.stop).parameters:
            thread.stop(timeout=0)
        else:
            thread.stop()

    def handle_job_success(self, job, queue, started_job_registry, execution):
        super().handle_job_success(job, queue, started_job_registry, execution)
        self.jobs_done += 1  # the job returned and RQ recorded it finished

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        self.jobs_failed += 1  # the job raised (or timed out); RQ may retry it elsewhere

    def execute_job(self, job: PayloadJob, queue: Queue) -> None:
        self.current_job_id = job.id
        self.current_job_started = time.time()
        try:
            super().execute_job(job, queue)
        finally:
            self.current_job_id = None
            self.current_job_started = None
            self.publish("idle")

    # -- heartbeat ------------------------------------------------------------------------

    def publish(self, state: str | None = None, *, full: bool = False) -> None:
        """State changes publish a few fields; the heartbeat thread adds RSS and CPU once a second
        (finding children scans /proc: ~2 ms, too dear twice per job)."""
        fields = {
            "state": state or ("busy" if self.current_job_id else "idle"),
            "job_id": self.current_job_id or "",
            "job_started": self.current_job_started or "",
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "heartbeat": time.time(),
        }
        if full:
            fields.update(
                name=self.name,
                pool=self.pool_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                # while a job runs, its own RSS only: finding children scans all of /proc, and against a
                # CPU-bound job every file read costs this thread a GIL switch interval (seconds in all),
                # which starved the heartbeat; the supervisor measures children itself for --max-memory
                rss=self._proc.memory_info().rss if self.current_job_id else rss_with_children(self._proc),
                cpu=round(self._proc.cpu_percent(None), 1),
            )
        try:
            publish_worker(self.connection, self.name, fields)
        except Exception as exc:  # Redis restarting: the next beat will tell
            self.log.debug("heartbeat failed: %s", exc)

    def _beat_loop(self) -> None:
        warned = False
        while not self._beat_stop.wait(self.heartbeat_interval):
            self.publish(full=True)
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
    from mailcli.redis_conn import connect

    global TASK_MODULES
    level = "DEBUG" if args.debug or os.environ.get("MAILCLI_DEBUG") else "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    settings = load_settings()
    TASK_MODULES = ("mailcli.queue.tasks", *settings.task_modules)
    conn = connect(settings)
    if args.queues:
        qs = [Queue(q, connection=conn, serializer=JSONSerializer) for q in args.queues.split(",")]
    else:
        qs = all_queues(conn)
    worker = MailcliWorker(
        qs, name=args.name, connection=conn, serializer=JSONSerializer, job_class=MailcliJob, pool_id=args.pool,
        heartbeat_interval=settings.heartbeat_interval,
    )  # fmt: skip
    worker.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=level, with_scheduler=False)
    gc.freeze()  # exit without the final collection over everything imported: a pool stops sooner
    return 0


if __name__ == "__main__":
    sys.exit(main())

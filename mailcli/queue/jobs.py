"""RQ queues and jobs as mailcli uses them: JSON payloads, deterministic ids, priorities, requeue.

Everything here is a standard RQ citizen (queues `mailcli-phase1`, `mailcli-critical` … `mailcli-low`),
so `rq info` and rq-dashboard see our queues, jobs and workers too.

Queue and key names and the queue depths live in mailcli.queue.names (no rq there, for `mailcli status`).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from mailcli.contract import WIRE_VERSION
from mailcli.queue.names import QUEUES, needs_llm, queue_name

TASK = "mailcli.queue.tasks.analyze_job"
ECHO_CHECK_TASK = "mailcli.queue.tasks.echo_check"

# A job's emails: small conversations of one priority share a job so RQ's per-job cost (~4 ms
# in-process) stays a small fraction of the work; a large conversation has a job of its own.
JOB_MAX_EMAILS = 40
JOB_MAX_CONVERSATIONS = 40
PHASE1_JOB_MAX_EMAILS = 400
# LLM phases take seconds per email: the timeout grows with the job, with a floor.
JOB_TIMEOUT_BASE = 120
JOB_TIMEOUT_PER_EMAIL = 60
RETRY = Retry(max=3, interval=[2, 8, 30])  # exponential backoff, in seconds
# what Job.fetch raises for a job hash that is not there, or not one RQ can read; a Redis error is
# neither (Redis away is not "no such job") and propagates
UNREADABLE = (DeserializationError, ValueError, TypeError, KeyError, UnicodeDecodeError)
NO_JOB = (NoSuchJobError, *UNREADABLE)
RESULT_TTL = 30  # results travel by the results stream; a finished job need not linger in Redis
FAILURE_TTL = 7 * 24 * 3600


class PayloadJob(Job):
    """An RQ job whose data (the payload: every email of its conversations) is packed cheaply, once.

    RQ writes a job's data zlib-compressed at level 6 whenever it saves the whole job: on enqueue, and
    again when the job ends. Level 1 packs text 2.5x faster for ~30 % more bytes (measured on a
    200-email payload: 1.4 ms against 3.7 ms), and a job read back from Redis writes back the bytes
    it read, since a payload never changes once enqueued. Any zlib level reads back the same.
    """

    _packed: tuple[bytes, bytes] | None = None  # (data as read, its compressed bytes)

    def restore(self, raw_data) -> None:
        super().restore(raw_data)
        packed = raw_data.get(b"data", raw_data.get("data"))
        self._packed = (self._data, packed) if isinstance(packed, bytes) and packed != self._data else None

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict:
        data = self.data
        packed = (
            self._packed[1]
            if self._packed is not None and self._packed[0] is data
            else zlib.compress(data, 1)
        )
        self._data = b""  # RQ would compress the data again inside
        try:
            obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        finally:
            self._data = data
        obj["data"] = packed
        return obj


def queues(conn: redis.Redis) -> list[Queue]:
    return [Queue(queue_name(p), connection=conn, serializer=JSONSerializer) for p in QUEUES]


def queue_for(conn: redis.Redis, priority: str) -> Queue:
    return Queue(queue_name(priority), connection=conn, serializer=JSONSerializer, job_class=PayloadJob)


def job_id_for(conversations: Sequence[dict[str, Any]]) -> str:
    """Same conversations at the same revisions -> same id: a re-ingest never duplicates work."""
    h = hashlib.sha1()
    for c in sorted(conversations, key=lambda c: c["conversation_id"]):
        h.update(f"{c['conversation_id']}\x00{c.get('revision', 0)}\x00".encode())
    opts = conversations[0].get("options", {}) if conversations else {}
    h.update(f"{opts.get('max_phase')}{opts.get('all_phases')}{opts.get('force')}".encode())
    return "mailcli-" + h.hexdigest()[:24]


def group_into_jobs(
    conversations: Sequence[dict[str, Any]], max_emails: int | None = None
) -> list[list[dict[str, Any]]]:
    """Pack conversations (already of one priority) into jobs of at most `max_emails` emails.

    Conversations capped at phase 1 (`analyze --phase 1`) cost well under a millisecond an email,
    so they share larger jobs; any that may owe LLM work keep jobs small enough to spread.
    """
    if max_emails is None:
        max_emails = JOB_MAX_EMAILS if any(needs_llm(c) for c in conversations) else PHASE1_JOB_MAX_EMAILS
    max_convs = max(JOB_MAX_CONVERSATIONS, max_emails)
    jobs: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for conv in conversations:
        n = len(conv["emails"])
        if current and (size + n > max_emails or len(current) >= max_convs):
            jobs.append(current)
            current, size = [], 0
        current.append(conv)
        size += n
    if current:
        jobs.append(current)
    return jobs


def job_timeout(n_emails: int) -> int:
    return JOB_TIMEOUT_BASE + JOB_TIMEOUT_PER_EMAIL * n_emails


def enqueue_conversations(
    conn: redis.Redis, priority: str, conversations: list[dict[str, Any]]
) -> Job | None:
    """Enqueue one job for these conversations; None when that very job is already waiting or running."""
    job = stage_conversations(conn, priority, conversations)
    if job is not None:
        publish_staged(conn, [job])
    return job


def stage_conversations(conn: redis.Redis, priority: str, conversations: list[dict[str, Any]]) -> Job | None:
    """Save one job for these conversations in Redis as queued, but in no queue's list yet: no worker
    can take it until :func:`publish_staged` pushes it, and :func:`withdraw_staged` deletes it
    unseen. None when that very job is already waiting or running.

    The feeder stages its jobs inside the claim's SQLite transaction and publishes them after the
    commit: a claim that does not commit (a full disk) leaves no job behind that a worker could run
    beside the job of the claim that later does. A staged job that is never published (the process
    died after the commit) is one in none of its queue's lists, which the reconciler requeues as
    stranded."""
    job_id = job_id_for(conversations)
    q = queue_for(conn, priority)
    try:
        existing = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        existing = None
    except UNREADABLE:  # an unreadable leftover under our id
        conn.delete(Job.key_for(job_id))
        existing = None
    if existing is not None:
        status = existing.get_status(refresh=False)
        # waiting, popped by a live worker, running: that very job will answer. (One popped by a
        # worker that died is the supervisor's or the reconciler's to requeue, not a feeder's: a
        # feeder cannot tell it from one a live worker is starting.)
        if status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            return None
        existing.delete()
    n_emails = sum(len(c["emails"]) for c in conversations)
    job = q.create_job(
        TASK,
        args=({"version": WIRE_VERSION, "conversations": conversations},),
        job_id=job_id,
        timeout=job_timeout(n_emails),
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        retry=RETRY,
        description=f"analyse {len(conversations)} conversations ({n_emails} emails)",
        meta={"conversations": [c["conversation_id"] for c in conversations], "emails": n_emails},
    )
    # what RQ's enqueue does, but the push onto the queue's list (RQ 3's Queue internals)
    q._prepare_for_queue(job)
    with conn.pipeline() as pipe:
        pipe.sadd(q.redis_queues_keys, q.key)
        q._persist_job(job, pipe)
        pipe.execute()
    return job


def publish_staged(conn: redis.Redis, jobs: Sequence[Job]) -> None:
    """Push staged jobs onto their queues' lists, where workers take them."""
    with conn.pipeline() as pipe:
        for job in jobs:
            Queue(job.origin, connection=conn, serializer=JSONSerializer).push_job_id(job.id, pipeline=pipe)
        pipe.execute()


def withdraw_staged(conn: redis.Redis, jobs: Sequence[Job]) -> None:
    """Delete staged jobs no worker has seen (they were never on a queue's list)."""
    for job in jobs:
        job.delete(remove_from_queue=False)


def requeue_started(conn: redis.Redis, job_id: str) -> bool:
    """Put a job whose worker died back at the front of its queue, at once, without using a retry.

    RQ itself notices an abandoned job only when its execution's TTL lapses (minutes); the
    supervisor knows the worker is dead now.
    """
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NO_JOB:
        return False
    q = Queue(job.origin, connection=conn, serializer=JSONSerializer)
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        # dequeued but the worker died before marking it started
        return requeue_stranded(conn, job)
    if status != JobStatus.STARTED:
        return False
    registry = StartedJobRegistry(job.origin, connection=conn, serializer=JSONSerializer)
    job.started_at = None
    job.ended_at = None
    with conn.pipeline() as pipe:
        registry.remove_executions(job, pipeline=pipe)
        q._enqueue_job(job, pipeline=pipe, at_front=True)
        pipe.execute()
    return True


def is_popped(conn: redis.Redis, job: Job) -> bool:
    """A queued job in none of its queue's lists: a worker popped it (and is starting it, or died)."""
    q = Queue(job.origin, connection=conn, serializer=JSONSerializer)
    return conn.lpos(q.key, job.id) is None and conn.lpos(q.intermediate_queue_key, job.id) is None


def take_unstarted(conn: redis.Redis, job_id: str) -> bool | None:
    """Take a job back from Redis before any worker starts it: True when it was still waiting in
    its queue (now removed from it and deleted, atomically against workers' pops), False when a
    worker has it or has done it, None when Redis has no such job (or it failed or was cancelled)."""
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    status = job.get_status(refresh=False)
    if status == JobStatus.FINISHED:
        return False  # done by a worker: its results are on the stream, for a pool's sink to write
    if status in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
        return None
    q = Queue(job.origin, connection=conn, serializer=JSONSerializer)
    if status != JobStatus.QUEUED or not conn.lrem(q.key, 0, job.id):  # LREM is the compare-and-set
        return False
    job.delete(remove_from_queue=False)
    return True


def requeue_stranded(conn: redis.Redis, job: Job) -> bool:
    """A queued job that is in none of its queue's lists goes back to the front; True when it was stranded.

    A worker that pops a job and dies before marking it started leaves it so: RQ pops from several
    queues with BLPOP, which keeps no copy anywhere (BLMOVE, for one queue, keeps one in the
    intermediate list). An execution it may have registered already is dropped with it.
    """
    q = Queue(job.origin, connection=conn, serializer=JSONSerializer)
    conn.lrem(q.intermediate_queue_key, 0, job.id)
    if conn.lpos(q.key, job.id) is not None:
        return False
    if job.get_status(refresh=True) != JobStatus.QUEUED:
        return False  # started meanwhile: a live worker had it
    registry = StartedJobRegistry(job.origin, connection=conn, serializer=JSONSerializer)
    with conn.pipeline() as pipe:
        registry.remove_executions(job, pipeline=pipe)
        pipe.lpush(q.key, job.id)
        pipe.execute()
    return True


MAX_KILLS = 3  # a job whose worker is killed this often (memory, hang) fails instead of looping


def recover_job(conn: redis.Redis, job_id: str, *, killed_for: str | None = None) -> str:
    """A dead worker held `job_id`: requeue it, or fail it when it has now killed MAX_KILLS workers.

    Returns "requeued", "failed" or "" (nothing to do: the job had finished or was not ours).
    """
    if killed_for:
        key = f"mailcli:job-kills:{job_id}"
        kills = int(conn.incr(key))
        conn.expire(key, FAILURE_TTL)
        if kills >= MAX_KILLS:
            return (
                "failed" if fail_started(conn, job_id, f"worker killed {kills} times: {killed_for}") else ""
            )
    return "requeued" if requeue_started(conn, job_id) else ""


def fail_started(conn: redis.Redis, job_id: str, reason: str) -> bool:
    from rq.job_lifecycle import record_job_failure

    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except NO_JOB:
        return False
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return False
    registry = StartedJobRegistry(job.origin, connection=conn, serializer=JSONSerializer)
    with conn.pipeline() as pipe:
        registry.remove_executions(job, pipeline=pipe)
        record_job_failure(job, reason, pipe)
        pipe.execute()
    return True


def failed_jobs(conn: redis.Redis, limit: int = 100) -> list[Job]:
    jobs = []
    for p in QUEUES:
        reg = FailedJobRegistry(queue_name(p), connection=conn, serializer=JSONSerializer)
        for job_id in reg.get_job_ids(0, limit - 1):
            try:
                jobs.append(Job.fetch(job_id, connection=conn, serializer=JSONSerializer))
            except NO_JOB:
                continue
    return jobs

"""The feeder: keeps at most `window` conversations in Redis and tops the queues up from SQLite.

A 10-million-email export stays in SQLite as `pending`; Redis only ever holds the window, so its
memory is bounded whatever the export's size. Runs in the coordinator (supervisor or ingest).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from mailcli.analysis.conversations import highest_priority
from mailcli.analysis.phase1 import priority_of
from mailcli.config import Settings
from mailcli.dispatch.payloads import conversation_payloads, pending_ids
from mailcli.queue.jobs import (
    failed_jobs,
    group_into_jobs,
    is_popped,
    job_id_for,
    publish_staged,
    requeue_stranded,
    stage_conversations,
    take_unstarted,
    withdraw_staged,
)
from mailcli.queue.names import PENDING_KEY, PHASE1_QUEUE, PRIORITIES, QUEUES, needs_llm
from mailcli.store import lifecycle
from mailcli.store.db import Store
from mailcli.store.lifecycle import Claim, claim_pending

log = logging.getLogger("mailcli.feeder")

FEED_CHUNK = 1000  # conversations read from SQLite per round trip
FAILED_SEEN = "mailcli:failed-seen"


# An email's phase 1 priority by its text: (subject, body, importance) -> priority
EmailPriorities = Mapping[tuple[str, str, str], str]


def route(conv: dict[str, Any], known: EmailPriorities | None = None) -> str:
    """The queue of a conversation's job: `phase1` when it needs no LLM, else its priority."""
    return queue_priority(conv, known) if needs_llm(conv) else PHASE1_QUEUE


def queue_priority(conv: dict[str, Any], known: EmailPriorities | None = None) -> str:
    """Forced by `ingest --priority`, else the highest phase 1 priority of its emails (taken from
    ``known`` when it holds the email's text, else computed)."""
    if conv.get("queue_priority") in PRIORITIES:
        return conv["queue_priority"]
    if conv.get("priority") in PRIORITIES:  # known from an earlier analysis
        return conv["priority"]
    known = known or {}
    return highest_priority(
        [
            known.get((e["subject"], e["body"], e["importance"]))
            or priority_of(e["subject"], e["body"], importance=e["importance"])
            for e in conv["emails"]
        ]
    )


def email_priorities(store: Store, limit: int) -> dict[tuple[str, str, str], str]:
    """The phase 1 priorities of the emails the next claim of ``limit`` conversations will route.

    Computed before the claim's write transaction, from a read outside it: the priority is a
    function of an email's text alone, so the same text routes the same way inside the claim, and
    the scan (most of a claim's time) no longer holds the write lock. Emails that joined in between
    are not here and are computed inside; the claim still reads which conversations and revisions
    it takes, and their payloads, in its transaction.
    """
    ids = pending_ids(store, limit)
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = store.conn.execute(
        f"SELECT e.subject, e.body, e.importance FROM emails e JOIN conversations c ON c.id = e.conversation_id"
        f" WHERE e.conversation_id IN ({marks}) AND c.queue_priority IS NULL AND c.priority IS NULL"
        f" AND c.max_phase >= 2",
        ids,
    )
    return {(subject, body, imp): priority_of(subject, body, importance=imp) for subject, body, imp in rows}


def in_flight(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM conversations WHERE status = 'queued'").fetchone()[0]


def plan_jobs(payloads: list[dict[str, Any]], known: EmailPriorities | None = None) -> list[Claim]:
    """Route conversations to queues and pack each queue's into jobs: (job id, queue, conversations)."""
    by_queue: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for conv in payloads:
        by_queue[route(conv, known)].append(conv)
    return [
        (job_id_for(group), queue, group)
        for queue in QUEUES
        for group in group_into_jobs(by_queue.get(queue, []))
    ]


def feed_once(store: Store, conn: redis.Redis, settings: Settings, window: int | None = None) -> int:
    """Claim pending conversations and enqueue their jobs until `window` are in Redis. Returns jobs enqueued.

    Each round claims conversations and saves their jobs in Redis in one SQLite transaction, and
    pushes the jobs to their queues after the commit (lifecycle.claim_pending): a conversation
    revision is in one job only, however many feeders run (two pools, an ingest beside a pool), and
    no claim is ever seen without its job.
    """
    window = window or settings.window
    room = window - in_flight(store)
    jobs = 0

    def enqueue(claims: list[Claim]) -> StagedJobs:
        nonlocal jobs
        staged = StagedJobs(
            conn, [j for _, queue, group in claims if (j := stage_conversations(conn, queue, group))]
        )
        jobs += len(staged.jobs)
        return staged

    while room > 0:
        limit = min(room, FEED_CHUNK)
        known = email_priorities(store, limit)
        claims = claim_pending(
            store,
            limit,
            lambda ids: conversation_payloads(store, ids, settings),
            partial(plan_jobs, known=known),
            enqueue,
        )
        if not claims:
            break
        room -= sum(len(group) for _, _, group in claims)
    try:
        conn.set(PENDING_KEY, pending_count(store))
    except redis.RedisError:
        pass
    return jobs


class StagedJobs:
    """A claim's jobs, saved in Redis inside its transaction and pushed to their queues after the
    commit (lifecycle.Delivery)."""

    def __init__(self, conn: redis.Redis, jobs: list):
        self.conn, self.jobs = conn, jobs

    def publish(self) -> None:
        publish_staged(self.conn, self.jobs)

    def withdraw(self) -> None:
        withdraw_staged(self.conn, self.jobs)


def pending_count(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM conversations WHERE status = 'pending'").fetchone()[0]


def mark_failed_jobs(store: Store, conn: redis.Redis) -> int:
    """Conversations of jobs that exhausted their retries become `failed`, once per job."""
    n = 0
    for job in failed_jobs(conn, limit=1000):
        if conn.sismember(FAILED_SEEN, job.id):
            continue
        convs = (job.meta or {}).get("conversations", [])
        reason = (job.latest_result().exc_string if job.latest_result() else "") or "job failed"
        reason = reason.strip().splitlines()[-1] if reason.strip() else "job failed"
        lifecycle.mark_failed(store, convs, reason, job_id=job.id)
        conn.sadd(FAILED_SEEN, job.id)
        n += 1
    return n


STRANDED_AFTER = 10.0  # seconds a popped-but-unstarted job must stay so before it is called stranded


class Reconciler:
    """Finds work SQLite holds as `queued` that Redis no longer has, and gives it back.

    That happens when a Redis without persistence restarts, or when a worker dies between popping a
    job and starting it. Neither may be mistaken for the normal life of a job, which a running
    pool's workers move along meanwhile:

    - a finished job is not lost: its results are in the stream, and the sink applies them;
    - a missing job is released only after ``drain`` (the sink) has applied every result already
      in the stream, and only where it still holds its conversations (a guarded UPDATE);
    - a queued job in none of its queue's lists (popped) is requeued only when it is still so
      STRANDED_AFTER seconds later: a live worker marks a popped job started within milliseconds.
    - an `analyze --inline` claim is released only when its process is gone.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._popped: dict[str, float] = {}  # job id -> when it was first seen popped and not started

    def run(self, store: Store, conn: redis.Redis, drain: Callable[[], object] | None = None) -> int:
        lost: list[str] = []
        popped_now: set[str] = set()
        for job_id in lifecycle.queued_jobs(store):
            if job_id.startswith(lifecycle.INLINE_PREFIX):
                if not lifecycle.inline_claim_alive(job_id):
                    lost.append(job_id)
                continue
            try:
                job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            except NoSuchJobError:
                lost.append(job_id)
                continue
            status = job.get_status(refresh=False)
            if status in (JobStatus.CANCELED, JobStatus.STOPPED) or status is None:
                lost.append(job_id)
            elif status == JobStatus.QUEUED and is_popped(conn, job):
                popped_now.add(job_id)
                first = self._popped.setdefault(job_id, self.clock())
                if self.clock() - first >= STRANDED_AFTER and requeue_stranded(conn, job):
                    log.warning("requeued job %s: popped by a worker that died before starting it", job_id)
                    popped_now.discard(job_id)
        self._popped = {j: t for j, t in self._popped.items() if j in popped_now}
        if not lost:
            return 0
        if drain is not None:
            drain()  # results already in the stream land first; the release below then skips them
        n = lifecycle.release(store, lost)
        if n:
            log.warning("requeued %d conversations whose jobs Redis lost", n)
        return n


def failed_job_rows(conn: redis.Redis, limit: int = 1000) -> list[dict[str, Any]]:
    """`mailcli failed`: each failed job with its queue, conversations, end time and last error line."""
    rows = []
    for job in failed_jobs(conn, limit=limit):
        res = job.latest_result()
        exc = (res.exc_string if res else "") or ""
        rows.append(
            {
                "job_id": job.id,
                "queue": job.origin,
                "conversations": (job.meta or {}).get("conversations", []),
                "ended_at": job.ended_at.isoformat() if job.ended_at else None,
                "error": exc.strip().splitlines()[-1] if exc.strip() else "",
            }
        )
    return rows


def requeue_failed(conn: redis.Redis, store: Store | None, limit: int = 1000) -> int:
    """`mailcli failed --requeue`: every failed job back on its queue, its conversations its own again
    in SQLite (when this host has the database). Returns how many jobs."""
    jobs = failed_jobs(conn, limit=limit)
    for job in jobs:
        job.requeue()
        conn.srem(FAILED_SEEN, job.id)
        if store is not None:
            lifecycle.requeued(store, job.id, (job.meta or {}).get("conversations", []))
    return len(jobs)


def take_back_queued(store: Store, conn: redis.Redis | None) -> int:
    """`analyze --inline`: conversations handed to the queues whose jobs no worker has started come
    back to this process (pending again). A job is taken from its Redis queue atomically against
    the workers' pops, so a conversation is never analysed both here and by a worker; one a worker
    already has is left to it. With no Redis to ask (``conn`` None), only claims whose holder is
    known to be gone come back."""
    taken: list[str] = []
    for job_id in lifecycle.queued_jobs(store):
        if job_id.startswith(lifecycle.INLINE_PREFIX):
            if not lifecycle.inline_claim_alive(job_id):
                taken.append(job_id)
        elif conn is not None and take_unstarted(conn, job_id) is not False:
            taken.append(job_id)
    return lifecycle.release(store, taken)

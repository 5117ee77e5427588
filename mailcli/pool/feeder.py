"""The feeder: keeps at most `window` conversations in Redis and tops the queues up from SQLite.

A 10-million-email export stays in SQLite as `pending`; Redis only ever holds the window, so its
memory is bounded whatever the export's size. Runs in the coordinator (supervisor or ingest).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from mailcli.analysis.phase1 import priority_of
from mailcli.analysis.pipeline import highest_priority
from mailcli.config import Settings
from mailcli.pool.state import read_workers
from mailcli.queue.jobs import (
    PENDING_KEY,
    PHASE1_QUEUE,
    PRIORITIES,
    QUEUES,
    enqueue_conversations,
    failed_jobs,
    group_into_jobs,
    job_id_for,
    needs_llm,
    requeue_stranded,
)
from mailcli.store.db import Store, now_iso
from mailcli.store.jobs import conversation_payloads, mark_failed, pending_ids

log = logging.getLogger("mailcli.feeder")

FEED_CHUNK = 1000  # conversations read from SQLite per round trip
FAILED_SEEN = "mailcli:failed-seen"
HELD_FRESH = 15.0  # seconds: a worker whose heartbeat is younger is alive


def route(conv: dict[str, Any]) -> str:
    """The queue of a conversation's job: `phase1` when it needs no LLM, else its priority."""
    return queue_priority(conv) if needs_llm(conv) else PHASE1_QUEUE


def queue_priority(conv: dict[str, Any]) -> str:
    """Forced by `ingest --priority`, else the highest phase 1 priority of its emails."""
    if conv.get("queue_priority") in PRIORITIES:
        return conv["queue_priority"]
    if conv.get("priority") in PRIORITIES:  # known from an earlier analysis
        return conv["priority"]
    return highest_priority([priority_of(e["subject"], e["body"], importance=e["importance"]) for e in conv["emails"]])


def in_flight(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM conversations WHERE status = 'queued'").fetchone()[0]


def feed_once(store: Store, conn: redis.Redis, settings: Settings, window: int | None = None) -> int:
    """Enqueue pending conversations until `window` are in Redis. Returns jobs enqueued."""
    window = window or settings.window
    room = window - in_flight(store)
    jobs = 0
    while room > 0:
        ids = pending_ids(store, min(room, FEED_CHUNK))
        if not ids:
            break
        payloads = conversation_payloads(store, ids, settings)
        by_priority: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for conv in payloads:
            by_priority[route(conv)].append(conv)
        updates = []
        for queue in QUEUES:
            for group in group_into_jobs(by_priority.get(queue, [])):
                job = enqueue_conversations(conn, queue, group)
                job_id = job.id if job is not None else job_id_for(group)
                jobs += job is not None
                # the priority a job was routed by sticks (`ingest --priority` sets it up front)
                routed = queue if queue in PRIORITIES else None
                updates.extend((job_id, routed, c["conversation_id"]) for c in group)
        ts = now_iso()
        with store.conn:
            store.conn.executemany(
                "UPDATE conversations SET status = 'queued', job_id = ?, queue_priority = coalesce(queue_priority, ?),"
                f" queued_at = '{ts}', updated_at = '{ts}' WHERE id = ? AND status = 'pending'",
                updates,
            )
        # merged-away ids vanish from payloads; never loop on them
        gone = set(ids) - {c["conversation_id"] for c in payloads}
        if gone:
            break
        room -= len(ids)
    try:
        conn.set(PENDING_KEY, pending_count(store))
    except redis.RedisError:
        pass
    return jobs


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
        mark_failed(store, convs, reason.strip().splitlines()[-1] if reason.strip() else "job failed")
        conn.sadd(FAILED_SEEN, job.id)
        n += 1
    return n


def reconcile(store: Store, conn: redis.Redis) -> int:
    """Conversations SQLite thinks are queued but whose job Redis no longer has go back to pending.

    Happens when an external Redis without persistence restarts. Call only when the results
    stream is drained, so a finished job's results are already in SQLite.
    """
    rows = store.conn.execute(
        "SELECT DISTINCT job_id FROM conversations WHERE status = 'queued' AND job_id IS NOT NULL"
    ).fetchall()
    if not rows:
        return 0
    # a job a live worker has just popped is in no list for a moment: it is not stranded
    held = {
        w.get("job_id")
        for w in read_workers(conn)
        if w.get("state") == "busy" and time.time() - float(w.get("heartbeat") or 0) < HELD_FRESH
    }
    lost = []
    for (job_id,) in rows:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
        except redis.RedisError:
            raise  # Redis away is not Redis lost
        except Exception:
            lost.append(job_id)
            continue
        if status in (JobStatus.FINISHED, JobStatus.CANCELED, JobStatus.STOPPED) or status is None:
            lost.append(job_id)
        elif status == JobStatus.QUEUED and job_id not in held and requeue_stranded(conn, job):
            log.warning("requeued job %s: popped by a worker that died before starting it", job_id)
    if not lost:
        return 0
    ts = now_iso()
    with store.conn:
        cur = store.conn.executemany(
            "UPDATE conversations SET status = 'pending', job_id = NULL, updated_at = ? WHERE job_id = ?"
            " AND status = 'queued'",
            [(ts, j) for j in lost],
        )
    log.warning("requeued %d conversations whose jobs Redis lost", cur.rowcount)
    return cur.rowcount

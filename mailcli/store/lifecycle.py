"""The conversation lifecycle: every write of ``conversations.status`` happens here.

    pending ──claim──▶ queued ──results──▶ analyzed | partial
       ▲                 │  └──job failed──▶ failed
       │                 └──job lost / released──┐
       └──── emails joined, asked again ◀────────┘ (also from analyzed, partial, failed)

A conversation carries a ``revision``, bumped by every transition back to ``pending`` (emails
joined it, `analyze` asked for it again). A job is claimed for one revision; its result is
current only if the revision is still the same when the result is written, else it is stale:
its rows are kept as cache but the conversation's status is left alone (whoever bumped the
revision made it pending, and a newer job will answer).

Each transition is one BEGIN IMMEDIATE transaction (:meth:`Store.write`) whose guard (status,
revision or job id) is read inside it, or one guarded UPDATE: two processes deciding on the same
conversation take turns, and the second sees what the first wrote.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mailcli.choices import PRIORITIES
from mailcli.contract import Status
from mailcli.store.db import Store, now_iso

log = logging.getLogger("mailcli.lifecycle")

# -- pending: emails joined, asked again ---------------------------------------------------

# Ingest's refresh of a conversation its emails joined (or started): the aggregates, and owed again
# at a new revision. Runs inside the ingest batch's write transaction.
EMAILS_JOINED = (
    "INSERT INTO conversations (id, subject, email_count, first_date, last_date, status, queue_priority,"
    " revision, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, 1, ?)"
    " ON CONFLICT (id) DO UPDATE SET subject = excluded.subject, email_count = excluded.email_count,"
    " first_date = excluded.first_date, last_date = excluded.last_date, status = 'pending',"
    " queue_priority = coalesce(excluded.queue_priority, conversations.queue_priority),"
    " revision = conversations.revision + 1, updated_at = excluded.updated_at"
)


def emails_joined(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    """(id, subject, email_count, first_date, last_date, queue_priority, updated_at) per conversation."""
    conn.executemany(EMAILS_JOINED, rows)


def mark_for_analysis(
    store: Store,
    *,
    conversation_id: str | None = None,
    statuses: Sequence[str] = (Status.PENDING, Status.PARTIAL, Status.FAILED),
    reanalyze: bool = False,
    all_phases: bool = False,
    max_phase: int = 3,
    llm_keys: tuple[str, str] | None = None,
) -> int:
    """`mailcli analyze`: make conversations owed again, at a new revision. Returns how many.

    ``llm_keys`` (the current ``model|prompt_version|`` prefixes of phase 2 and 3 keys, see
    mailcli.analysis.llm_phases.key_prefixes) also makes owed the `analyzed` conversations that lack
    an LLM answer this run owes them (a run capped by `--phase` left it out), or hold one made by
    another model or prompt version. Their jobs ask the LLM only for those: unchanged answers are
    cached by key. A conversation that is `queued` is left to its job unless named or --reanalyze.
    """
    where: list[str] = []
    params: list[Any] = []
    if conversation_id is not None:
        where.append("id = ?")
        params.append(conversation_id)
    elif not reanalyze:
        cond = f"status IN ({','.join('?' * len(statuses))})"
        params.extend(str(s) for s in statuses)
        if llm_keys is not None and max_phase >= 2:
            stale, stale_params = _stale_llm_sql(llm_keys, all_phases=all_phases, max_phase=max_phase)
            cond = f"({cond} OR (status = 'analyzed' AND id IN ({stale})))"
            params.extend(stale_params)
        where.append(cond)
    sql = (
        "UPDATE conversations SET status = 'pending', want_all_phases = ?, force = ?, max_phase = ?,"
        " revision = revision + 1, job_id = NULL, updated_at = ?"
        + (" WHERE " + " AND ".join(where) if where else "")
    )
    with store.write():
        cur = store.conn.execute(sql, [int(all_phases), int(reanalyze), max_phase, now_iso(), *params])
    return cur.rowcount


def _stale_llm_sql(llm_keys: tuple[str, str], *, all_phases: bool, max_phase: int) -> tuple[str, list[Any]]:
    """Ids of analysed conversations owed an LLM answer they lack or hold from another model/prompt.

    Owed as completeness.plan_phases decides, from the same table of tiers and priority; everything
    with --all-phases; nothing above --phase (the caller asks only when max_phase >= 2).
    """
    # imported here: ingest imports this module, and has no use for the analysis package
    from mailcli.analysis.completeness import PHASE2_PRIORITY, PHASE2_TIER, PHASE3_TIER

    p2, p3 = llm_keys
    allp = int(all_phases)
    parts = [
        "SELECT ea.conversation_id FROM email_analysis ea"
        " JOIN conversation_analysis ca ON ca.conversation_id = ea.conversation_id"
        " WHERE (ca.tier >= ? OR ea.priority = ? OR ?)"
        " AND (ea.phase2 IS NULL OR ea.phase2_key IS NULL OR substr(ea.phase2_key, 1, ?) != ?)"
    ]
    params: list[Any] = [PHASE2_TIER, PHASE2_PRIORITY, allp, len(p2), p2]
    if max_phase >= 3:
        parts.append(
            "SELECT ca.conversation_id FROM conversation_analysis ca WHERE (ca.tier >= ? OR ?)"
            " AND (ca.phase3 IS NULL OR ca.phase3_key IS NULL OR substr(ca.phase3_key, 1, ?) != ?)"
        )
        params += [PHASE3_TIER, allp, len(p3), p3]
    return " UNION ".join(parts), params


# -- queued: claimed by one job ---------------------------------------------------------------

# A claim: the job id, the queue it goes to, and the conversation payloads it carries (each with
# its "conversation_id" and the "revision" it was claimed at).
Claim = tuple[str, str, list[dict[str, Any]]]
Planner = Callable[[list[dict[str, Any]]], list[Claim]]


class Delivery(Protocol):
    """Jobs made ready inside a claim's transaction, for no one to run until ``publish``."""

    def publish(self) -> None: ...  # after the commit: workers may take the jobs

    def withdraw(self) -> None: ...  # the claim did not commit: the jobs go, never seen


def claim_pending(
    store: Store,
    limit: int,
    payloads: Callable[[list[str]], list[dict[str, Any]]],
    plan: Planner,
    deliver: Callable[[list[Claim]], Delivery] | None = None,
) -> list[Claim]:
    """Claim up to ``limit`` pending conversations for jobs, in one transaction.

    ``payloads`` reads the chosen conversations' payloads and ``plan`` groups them into jobs; each
    conversation moves to `queued` under its job's id, guarded by the status and revision read in
    the same transaction: two feeders (two pools, an ingest beside a pool, `analyze --inline`) can
    never put one revision in two jobs. ``deliver`` (the feeder's) saves the jobs in Redis before
    the commit, where no worker takes them yet: no other process ever sees a claim whose job is not
    in Redis. After the commit the delivery is published (workers take the jobs); when the commit
    fails (a full disk) the claims roll back and the delivery is withdrawn, so no job of a claim
    that never was can run beside the job of the claim made later.
    """
    delivery: Delivery | None = None
    try:
        with store.write():
            ids = [
                r[0]
                for r in store.conn.execute(
                    "SELECT id FROM conversations WHERE status = 'pending' ORDER BY first_date, id LIMIT ?",
                    (int(limit),),
                )
            ]
            if not ids:
                return []
            claims = plan(payloads(ids))
            ts = now_iso()
            # a job routed by priority keeps that priority (the feeder routes LLM work by it)
            store.conn.executemany(
                "UPDATE conversations SET status = 'queued', job_id = ?, queue_priority = coalesce(queue_priority, ?),"
                " queued_at = ?, updated_at = ? WHERE id = ? AND status = 'pending' AND revision = ?",
                [
                    (
                        job_id,
                        queue if queue in PRIORITIES else None,
                        ts,
                        ts,
                        c["conversation_id"],
                        c["revision"],
                    )
                    for job_id, queue, group in claims
                    for c in group
                ],
            )
            if deliver is not None:
                delivery = deliver(claims)
    except BaseException:
        if delivery is not None:
            try:
                delivery.withdraw()
            except Exception:  # Redis away too: the jobs stay unpublished, and no claim names them
                log.warning("could not withdraw the jobs of a claim that did not commit", exc_info=True)
        raise
    if delivery is not None:
        delivery.publish()
    return claims


def release(store: Store, job_ids: Sequence[str]) -> int:
    """Conversations claimed by these jobs go back to pending (the jobs never reached Redis, or
    Redis lost them). Only those still queued under that very job: one that a result has moved on
    is left alone."""
    if not job_ids:
        return 0
    ts = now_iso()
    with store.write():
        cur = store.conn.executemany(
            "UPDATE conversations SET status = 'pending', job_id = NULL, updated_at = ?"
            " WHERE job_id = ? AND status = 'queued'",
            [(ts, j) for j in job_ids],
        )
    return cur.rowcount


def requeued(store: Store, job_id: str, conversation_ids: Sequence[str]) -> int:
    """`mailcli failed --requeue`: the failed job runs again, and its conversations are its once more."""
    ts = now_iso()
    with store.write():
        cur = store.conn.executemany(
            "UPDATE conversations SET status = 'queued', job_id = ?, error = NULL, queued_at = ?, updated_at = ?"
            " WHERE id = ? AND status IN ('failed', 'queued')",
            [(job_id, ts, ts, c) for c in conversation_ids],
        )
    return cur.rowcount


def exists(store: Store, conversation_id: str) -> bool:
    return (
        store.conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        is not None
    )


def queued_jobs(store: Store) -> list[str]:
    """The ids of the jobs that hold conversations."""
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT DISTINCT job_id FROM conversations WHERE status = 'queued' AND job_id IS NOT NULL"
        )
    ]


# -- inline claims: `analyze --inline` is a job of its own ------------------------------------

INLINE_PREFIX = "inline:"


def inline_job_id() -> str:
    """The job id an `analyze --inline` process claims under: host, pid and start time, so another
    process can tell whether the claimant still runs (:func:`inline_claim_alive`)."""
    return f"{INLINE_PREFIX}{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def inline_claim_alive(job_id: str) -> bool:
    """Whether the `analyze --inline` process that claimed under ``job_id`` still runs (on this host)."""
    try:
        host, pid, started = job_id[len(INLINE_PREFIX) :].rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another host's claim: not ours to judge (SQLite is local, so this is rare)
    return _process_start(int(pid)) == started


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc), or "" when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        try:
            import psutil

            return str(int(psutil.Process(pid).create_time() * 100))
        except Exception:
            return ""


# -- analyzed, partial, failed ----------------------------------------------------------------


def current_revision(conn: sqlite3.Connection, conversation_id: str) -> int | None:
    """Inside the writer's transaction: the conversation's revision, or None when it was merged away."""
    row = conn.execute("SELECT revision FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    return None if row is None else int(row[0])


def analysed(
    conn: sqlite3.Connection,
    conversation_id: str,
    status: str,
    priority: str | None,
    error: str | None,
    ts: str,
) -> None:
    """A current result was written (inside the same transaction that read the revision)."""
    conn.execute(
        "UPDATE conversations SET status = ?, priority = ?, error = ?, force = 0, updated_at = ? WHERE id = ?",
        (str(status), priority, error, ts, conversation_id),
    )


def mark_failed(
    store: Store, conversation_ids: Sequence[str], error: str, *, job_id: str | None = None
) -> int:
    """Conversations of a job that exhausted its retries. With ``job_id``, only those that job still
    holds (a conversation since re-owed or answered by another job is not failed by this one)."""
    ts = now_iso()
    guard = " AND status = 'queued' AND job_id = ?" if job_id else ""
    with store.write():
        cur = store.conn.executemany(
            f"UPDATE conversations SET status = 'failed', error = ?, updated_at = ? WHERE id = ?{guard}",
            [(error[:500], ts, cid, *([job_id] if job_id else [])) for cid in conversation_ids],
        )
    return cur.rowcount

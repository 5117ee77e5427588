"""Payloads out: what a job carries for each conversation, read from SQLite (the types are in
mailcli.contract). Only coordinators build payloads; workers see nothing else of SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailcli.config import Settings
from mailcli.contract import ConversationIn
from mailcli.store.db import Store


def analysis_options(settings: Settings, *, all_phases: bool = False, max_phase: int = 3, force: bool = False) -> dict:
    return {
        "own_domains": list(settings.own_domains),
        "partner_domains": list(settings.partner_domains),
        "key_senders": list(settings.key_senders),
        "phase2_model": settings.phase2_model,
        "phase3_model": settings.phase3_model,
        "all_phases": all_phases,
        "max_phase": max_phase,
        "force": force,
    }


def pending_ids(store: Store, limit: int | None = None, *, status: str = "pending") -> list[str]:
    sql = "SELECT id FROM conversations WHERE status = ? ORDER BY first_date, id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [r[0] for r in store.conn.execute(sql, (status,))]


def conversation_payloads(store: Store, ids: Sequence[str], settings: Settings) -> list[ConversationIn]:
    """Everything a worker needs to analyse these conversations, in the order given."""
    if not ids:
        return []
    c = store.conn
    marks = ",".join("?" * len(ids))
    convs = {
        row[0]: row
        for row in c.execute(
            f"SELECT c.id, c.revision, c.want_all_phases, c.force, c.max_phase, c.queue_priority, c.priority,"
            f" ca.phase3_key FROM conversations c LEFT JOIN conversation_analysis ca ON ca.conversation_id = c.id"
            f" WHERE c.id IN ({marks})",
            list(ids),
        )
    }
    emails: dict[str, list[dict[str, Any]]] = {cid: [] for cid in ids}
    for row in c.execute(
        f"SELECT e.rowid, e.id, e.conversation_id, e.subject, e.body, e.from_addr, e.importance, e.date,"
        f" ea.phase2_key FROM emails e LEFT JOIN email_analysis ea ON ea.email_rowid = e.rowid"
        f" WHERE e.conversation_id IN ({marks}) ORDER BY e.date IS NULL, e.date, e.rowid",
        list(ids),
    ):
        emails[row[2]].append(
            {
                "rowid": row[0],
                "id": row[1],
                "subject": row[3],
                "body": row[4],
                "from": row[5],
                "importance": row[6],
                "date": row[7],
                "phase2_key": row[8],
            }
        )
    out = []
    options: dict[tuple[bool, int, bool], dict[str, Any]] = {}
    for cid in ids:
        conv = convs.get(cid)
        if conv is None:
            continue  # merged into another conversation since it was chosen
        _, revision, all_phases, force, max_phase, queue_priority, priority, phase3_key = conv
        out.append(
            {
                "conversation_id": cid,
                "revision": revision,
                "queue_priority": queue_priority,
                "priority": priority,
                "phase3_key": phase3_key,
                "emails": emails[cid],
                "options": _options(options, settings, bool(all_phases), int(max_phase), bool(force)),
            }
        )
    return out


def _options(cache: dict, settings: Settings, all_phases: bool, max_phase: int, force: bool) -> dict[str, Any]:
    """analysis_options, made once per combination: thousands of conversations share a handful."""
    key = (all_phases, max_phase, force)
    if key not in cache:
        cache[key] = analysis_options(settings, all_phases=all_phases, max_phase=max_phase, force=force)
    return cache[key]

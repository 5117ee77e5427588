"""Reading results: the export record (docs/export.md), and the rows behind `results` and `show`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from mailcli.choices import PRIORITIES
from mailcli.contract import Status
from mailcli.store.db import Store

_EXPORT_SQL = """
SELECT e.rowid, e.id, e.message_id, e.conversation_id, e.subject, e.from_addr, e.from_name, e.date,
       ea.phase1, ea.phase2, c.status, ca.completeness, ca.is_complete, ca.tier, ca.phase3
FROM emails e
JOIN conversations c ON c.id = e.conversation_id
LEFT JOIN email_analysis ea ON ea.email_rowid = e.rowid
LEFT JOIN conversation_analysis ca ON ca.conversation_id = e.conversation_id
{where}
ORDER BY e.conversation_id, e.date IS NULL, e.date, e.rowid
"""


def email_status(conversation_status: str, has_phase1: bool) -> str:
    if conversation_status in (Status.ANALYZED, Status.PARTIAL, Status.FAILED):
        if conversation_status == Status.FAILED or not has_phase1:
            return Status.FAILED if conversation_status == Status.FAILED else Status.PENDING
        return conversation_status
    return Status.PENDING  # pending or queued


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def export_records(store: Store, *, conversation_id: str | None = None) -> Iterator[dict[str, Any]]:
    """One export record per email, streamed (no full result set in memory)."""
    where, params = "", ()
    if conversation_id:
        where, params = "WHERE e.conversation_id = ?", (conversation_id,)
    cur = store.conn.execute(_EXPORT_SQL.format(where=where), params)
    for (
        _rowid,
        eid,
        mid,
        cid,
        subject,
        from_addr,
        from_name,
        date,
        p1,
        p2,
        cstatus,
        score,
        complete,
        tier,
        p3,
    ) in cur:
        has_p1 = p1 is not None
        yield {
            "id": eid,
            "message_id": mid,
            "conversation_id": cid,
            "subject": subject,
            "from": f"{from_name} <{from_addr}>" if from_name and from_addr else from_addr,
            "date": date,
            "phase1": _loads(p1),
            "phase2": _loads(p2),
            "conversation": {
                "completeness": score,
                "is_complete": bool(complete) if complete is not None else None,
                "tier": tier,
                "phase3": _loads(p3),
            },
            "status": email_status(cstatus, has_p1),
        }


CSV_COLUMNS = [
    "id", "message_id", "conversation_id", "subject", "from", "date", "status",
    "priority", "workflow_state", "urgency_score", "financial_impact", "sender_category",
    "po_numbers", "quote_numbers", "case_numbers", "part_numbers", "amounts", "dates",
    "emails", "phones", "detected_patterns",
    "completeness", "is_complete", "tier", "phase2_source", "phase2_summary", "phase3_source",
    "phase3_executive_summary",
]  # fmt: skip


def csv_row(rec: dict[str, Any]) -> dict[str, Any]:
    p1 = rec["phase1"] or {}
    p2 = rec["phase2"] or {}
    conv = rec["conversation"]
    p3 = conv["phase3"] or {}
    row = {k: rec[k] for k in ("id", "message_id", "conversation_id", "subject", "from", "date", "status")}
    for k in ("priority", "workflow_state", "urgency_score", "financial_impact", "sender_category"):
        row[k] = p1.get(k, "")
    for k in ("po_numbers", "quote_numbers", "case_numbers", "part_numbers", "amounts", "dates", "emails",
              "phones", "detected_patterns"):  # fmt: skip
        row[k] = ";".join(str(v) for v in p1.get(k, []))
    row["completeness"] = conv["completeness"] if conv["completeness"] is not None else ""
    row["is_complete"] = "" if conv["is_complete"] is None else str(conv["is_complete"]).lower()
    row["tier"] = conv["tier"] if conv["tier"] is not None else ""
    row["phase2_source"] = p2.get("source", "")
    row["phase2_summary"] = p2.get("summary", "")
    row["phase3_source"] = p3.get("source", "")
    row["phase3_executive_summary"] = p3.get("executive_summary", "")
    return row


def write_export(store: Store, out: io.TextIOBase, fmt: str = "jsonl") -> int:
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for rec in export_records(store):
            writer.writerow(csv_row(rec))
            n += 1
    else:
        for rec in export_records(store):
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


# most urgent first, then conversations phase 1 has not prioritised yet
_PRIORITY_ORDER = (
    "CASE c.priority "
    + " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PRIORITIES))
    + f" ELSE {len(PRIORITIES)} END"
)


def conversation_rows(
    store: Store, *, priority: str | None = None, conversation_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Rows for `mailcli results`: one per conversation, most urgent first."""
    where, params = [], []
    if priority:
        where.append("c.priority = ?")
        params.append(priority)
    if conversation_id:
        where.append("c.id = ?")
        params.append(conversation_id)
    sql = (
        "SELECT c.id, c.subject, c.email_count, c.status, c.priority, ca.completeness, ca.is_complete, ca.tier,"
        " c.last_date, c.error,"
        " (SELECT count(*) FROM email_analysis ea WHERE ea.conversation_id = c.id AND ea.phase2 IS NOT NULL),"
        " json_extract(ca.phase3, '$.source'), json_extract(ca.phase3, '$.executive_summary')"
        " FROM conversations c"
        " LEFT JOIN conversation_analysis ca ON ca.conversation_id = c.id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY {_PRIORITY_ORDER}, c.last_date DESC, c.id LIMIT ?"
    )
    keys = ["id", "subject", "emails", "status", "priority", "completeness", "is_complete", "tier", "last_date",
            "error", "phase2_emails", "phase3_source", "summary"]  # fmt: skip
    rows = []
    for r in store.conn.execute(sql, [*params, limit]):
        d = dict(zip(keys, r, strict=True))
        d["is_complete"] = None if d["is_complete"] is None else bool(d["is_complete"])
        rows.append(d)
    return rows


def conversation_detail(store: Store, conversation_id: str) -> dict[str, Any] | None:
    """Everything `mailcli show` prints about one conversation."""
    rows = conversation_rows(store, conversation_id=conversation_id, limit=1)
    if not rows:
        return None
    conv = rows[0]
    ca = store.conn.execute(
        "SELECT detail, phase3 FROM conversation_analysis WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    conv["detail"] = _loads(ca[0]) if ca else None
    conv["phase3"] = _loads(ca[1]) if ca else None
    conv["messages"] = list(export_records(store, conversation_id=conversation_id))
    return conv


def rejects(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    cur = store.conn.execute("SELECT source, locator, reason FROM rejects ORDER BY id DESC LIMIT ?", (limit,))
    return [{"source": s, "locator": loc, "reason": r} for s, loc, r in cur]


class AmbiguousId(Exception):
    """Several conversations match the part of an id the user gave."""


def resolve_conversation_id(store: Store, given: str) -> str | None:
    """The conversation `given` names: its full id, or a part of one (what `results` shows) if unique."""
    given = given.strip("…")  # as `results` shows it: "…tail" or "…local-part@…"
    if store.conn.execute("SELECT 1 FROM conversations WHERE id = ?", (given,)).fetchone():
        return given
    rows = store.conn.execute(
        "SELECT id FROM conversations WHERE instr(id, ?) > 0 LIMIT 6", (given,)
    ).fetchall()
    if len(rows) > 1:
        raise AmbiguousId(
            f"{given!r} matches several conversations ({', '.join(r[0] for r in rows[:3])}, …): give more of the id"
        )
    return rows[0][0] if rows else None


def partial_summary(store: Store) -> tuple[int, str | None]:
    """How many conversations are partial, and the reason most of them give."""
    n, error = store.conn.execute(
        "SELECT count(*), (SELECT error FROM conversations WHERE status = 'partial' AND error IS NOT NULL"
        " GROUP BY error ORDER BY count(*) DESC LIMIT 1) FROM conversations WHERE status = 'partial'"
    ).fetchone()
    return int(n), error

"""Rich renderings of plain data: the commands build data, these draw it."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

PRIORITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "green"}
STATUS_STYLE = {"analyzed": "green", "partial": "yellow", "failed": "red", "pending": "dim", "queued": "cyan"}


def _styled(value: Any, styles: dict[str, str]) -> Text:
    s = "" if value is None else str(value)
    return Text(s, style=styles.get(s, ""))


def results_table(rows: list[dict[str, Any]], width: int = 120) -> Table:
    table = Table(title="Conversations", expand=False, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("conversation", no_wrap=True)
    # the subject takes what the fixed columns leave (Rich never shrinks a no_wrap column itself)
    table.add_column("subject", overflow="ellipsis", no_wrap=True, max_width=max(12, min(60, width - 68)))
    table.add_column("emails", justify="right", min_width=6)
    table.add_column("priority", min_width=8)
    table.add_column("complete", justify="right", min_width=8)
    table.add_column("tier", justify="right", min_width=4)
    table.add_column("status", min_width=8)
    for r in rows:
        table.add_row(
            short_id(r["id"]),
            r["subject"] or "",
            str(r["emails"]),
            _styled(r["priority"], PRIORITY_STYLE),
            "" if r["completeness"] is None else f"{r['completeness']}{'✓' if r['is_complete'] else ''}",
            "" if r["tier"] is None else str(r["tier"]),
            _styled(r["status"], STATUS_STYLE),
        )
    return table


SHORT_ID = 14


def short_id(cid: str) -> str:
    """Long source ids (Graph's are 44 characters) shown by their tail, which `show` accepts."""
    return cid if len(cid) <= SHORT_ID else "…" + cid[-(SHORT_ID - 1) :]


def _entities(p1: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("po_numbers", "PO"),
        ("quote_numbers", "quote"),
        ("case_numbers", "case"),
        ("part_numbers", "parts"),
        ("amounts", "amounts"),
        ("dates", "dates"),
    ):
        if p1.get(key):
            parts.append(f"{label}: {', '.join(str(v) for v in p1[key])}")
    return "; ".join(parts)


def conversation_view(detail: dict[str, Any]) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("conversation", detail["id"])
    head.add_row("subject", detail["subject"] or "")
    head.add_row("status", _styled(detail["status"], STATUS_STYLE))
    head.add_row("priority", _styled(detail["priority"], PRIORITY_STYLE))
    if detail["completeness"] is not None:
        head.add_row(
            "completeness",
            f"{detail['completeness']}/100, tier {detail['tier']}, {'complete' if detail['is_complete'] else 'incomplete'}",
        )
    if detail.get("error"):
        head.add_row("owed", Text(detail["error"], style="yellow"))
    emails = Table(title="Emails", show_lines=True)
    emails.add_column("date", no_wrap=True)
    emails.add_column("from", overflow="fold", max_width=26)
    emails.add_column("priority")
    emails.add_column("state")
    emails.add_column("urgency", justify="right")
    emails.add_column("entities", overflow="fold")
    emails.add_column("phase 2", overflow="fold", max_width=40)
    for m in detail["messages"]:
        p1 = m["phase1"] or {}
        p2 = m["phase2"]
        p2_text = ""
        if p2:
            p2_text = f"[{p2.get('source', '')}] {p2.get('summary', '')}"
        emails.add_row(
            (m["date"] or "")[:16].replace("T", " "),
            m["from"] or "",
            _styled(p1.get("priority"), PRIORITY_STYLE),
            p1.get("workflow_state", ""),
            str(p1.get("urgency_score", "")),
            _entities(p1),
            p2_text,
        )
    parts: list[Any] = [Panel(head, title="mailcli show", expand=False), emails]
    p3 = detail.get("phase3")
    if p3:
        parts.append(Panel(json.dumps(p3, indent=2, ensure_ascii=False), title=f"phase 3 ({p3.get('source', '')})"))
    return Group(*parts)

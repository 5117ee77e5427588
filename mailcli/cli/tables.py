"""Rich renderings of plain data: the commands build data, these draw it."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table as _RichTable
from rich.text import Text

from mailcli.contract import Status


class Table(_RichTable):
    """A Rich table whose str cells are plain text: email text such as "[notmuch] [PATCH]" or a
    stray "[/foo]" is shown as written, never read as Rich markup (which would drop it, make it a
    link, or raise a MarkupError)."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **kwargs)


PRIORITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "green"}
STATUS_STYLE = {
    Status.ANALYZED: "green", Status.PARTIAL: "yellow", Status.FAILED: "red", Status.PENDING: "dim", Status.QUEUED: "cyan",
}  # fmt: skip


def _styled(value: Any, styles: dict[str, str]) -> Text:
    s = "" if value is None else str(value)
    return Text(s, style=styles.get(s, ""))


def results_table(rows: list[dict[str, Any]], width: int = 120) -> Table:
    # the LLM answers get columns where the terminal has room (`--json` and `show` always have them)
    with_llm = width >= 68 + LLM_COST + 24
    with_summary = width >= 68 + LLM_COST + 40 + 2 + 24
    room = width - 68 - (LLM_COST if with_llm else 0)
    table = Table(title="Conversations", expand=False, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("conversation", no_wrap=True)
    # the subject takes what the fixed columns leave (Rich never shrinks a no_wrap column itself)
    table.add_column(
        "subject",
        overflow="ellipsis",
        no_wrap=True,
        max_width=max(12, min(60 if not with_summary else 40, room)),
    )
    table.add_column("emails", justify="right", min_width=6)
    table.add_column("priority", min_width=8)
    table.add_column("complete", justify="right", min_width=8)
    table.add_column("tier", justify="right", min_width=4)
    table.add_column("status", min_width=8)
    if with_llm:
        table.add_column("LLM", no_wrap=True, min_width=LLM_WIDTH, max_width=LLM_WIDTH)
    if with_summary:
        table.add_column(
            "phase 3 summary", overflow="ellipsis", no_wrap=True, max_width=min(80, room - 40 - 2)
        )
    for r in rows:
        cells: list[Any] = [
            short_id(r["id"]),
            r["subject"] or "",
            str(r["emails"]),
            _styled(r["priority"], PRIORITY_STYLE),
            "" if r["completeness"] is None else f"{r['completeness']}{'✓' if r['is_complete'] else ''}",
            "" if r["tier"] is None else str(r["tier"]),
            _styled(r["status"], STATUS_STYLE),
        ]
        if with_llm:
            cells.append(_llm_cell(r))
        if with_summary:
            cells.append(_one_line(r.get("summary")))
        table.add_row(*cells)
    return table


LLM_WIDTH = 18  # "2:12/12 3:fallback"
LLM_COST = LLM_WIDTH + 2  # with the padding


def _llm_cell(r: dict[str, Any]) -> Text:
    """Which LLM answers a conversation holds: ``2:3/4`` emails with phase 2, ``3:model`` (or fallback)."""
    parts = []
    if r.get("phase2_emails"):
        parts.append(f"2:{r['phase2_emails']}/{r['emails']}")
    if r.get("phase3_source"):
        parts.append(f"3:{r['phase3_source']}")
    text = " ".join(parts)
    return Text(text, style="yellow" if "fallback" in text else "")


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


SHORT_ID = 14


def short_id(cid: str) -> str:
    """A long id shown by a part of it that `show` accepts (any unique part of an id names it).

    Source ids (Graph's are 44 characters) are shown by their tail. A Message-ID's tail is its
    domain, which every thread from one mail server shares, so it is shown by the end of its
    local part instead: ``…4f2a9c1b7e@…``.
    """
    if len(cid) <= SHORT_ID:
        return cid
    local, at, _ = cid.rpartition("@")
    if at and len(local) >= 4:
        return "…" + local[-(SHORT_ID - 3) :] + "@…"
    return "…" + cid[-(SHORT_ID - 1) :]


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


def _grid() -> Table:
    """Label and value: the labels never wrap, the values wrap at spaces (a word longer than the line folds)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def conversation_view(detail: dict[str, Any]) -> Group:
    """The conversation's head, then one panel per email stacked (phase 1 facts and its phase 2
    answer), then phase 3: panels of label/value rows read well at any width, 80 columns included."""
    head = _grid()
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
    parts: list[Any] = [Panel(head, title="mailcli show", expand=False)]
    messages = detail["messages"]
    for i, m in enumerate(messages, 1):
        parts.append(_email_panel(m, i, len(messages)))
    p3 = detail.get("phase3")
    if p3:
        parts.append(_phase3_panel(p3))
    return Group(*parts)


def _email_panel(m: dict[str, Any], i: int, n: int) -> Panel:
    p1 = m["phase1"] or {}
    grid = _grid()
    grid.add_row("from", m["from"] or "")
    if m.get("subject"):
        grid.add_row("subject", m["subject"])
    if p1:
        grid.add_row(
            "phase 1",
            Text.assemble(
                _styled(p1.get("priority"), PRIORITY_STYLE),
                f" · urgency {p1.get('urgency_score', 0)} · {p1.get('workflow_state', '')}"
                f" · sender {p1.get('sender_category', '')}",
            ),
        )
        entities = _entities(p1)
        if entities:
            grid.add_row("entities", entities)
        if p1.get("detected_patterns"):
            grid.add_row("patterns", ", ".join(map(str, p1["detected_patterns"])))
    p2 = m.get("phase2")
    if p2:
        fallback = p2.get("source") == "fallback"
        grid.add_row("phase 2", Text(_source(p2), style="yellow" if fallback else "dim"))
        grid.add_row("summary", _one_line(p2.get("summary")))
        actions = []
        for item in p2.get("action_items") or []:
            extra = ", ".join(str(x) for x in (item.get("owner"), item.get("deadline")) if x)
            actions.append(_one_line(item.get("task")) + (f" ({extra})" if extra else ""))
        if actions:
            grid.add_row("actions", "\n".join(f"• {a}" for a in actions))
        if p2.get("risk_assessment"):
            grid.add_row("risk", _one_line(p2.get("risk_assessment")))
        missed = "; ".join(
            f"{kind.replace('_', ' ')}: {', '.join(map(str, values))}"
            for kind, values in (p2.get("missed_entities") or {}).items()
            if values
        )
        if missed:
            grid.add_row("missed", missed)
        conf = p2.get("confidence")
        if isinstance(conf, int | float):
            grid.add_row("confidence", f"{conf:.2f}")
        if p2.get("fallback_reason"):
            grid.add_row("fallback", Text(_one_line(p2["fallback_reason"]), style="yellow"))
    date = (m["date"] or "no date")[:16].replace("T", " ")
    return Panel(grid, title=f"email {i} of {n} · {date}", title_align="left")


def _source(answer: dict[str, Any]) -> str:
    return ", ".join(str(x) for x in (answer.get("source"), answer.get("model")) if x)


def _bullets(items: Any, limit: int = 10) -> str:
    return "\n".join(f"• {_one_line(i)}" for i in list(items or [])[:limit])


def _phase3_panel(p3: dict[str, Any]) -> Panel:
    grid = _grid()
    grid.add_row("summary", _one_line(p3.get("executive_summary")))
    grid.add_row(
        "escalation", Text("needed", style="bold red") if p3.get("escalation_needed") else Text("no")
    )
    if p3.get("revenue_impact"):
        grid.add_row("revenue impact", _one_line(p3.get("revenue_impact")))
    for key in ("opportunity", "risk", "relationship"):
        value = (p3.get("strategic_insights") or {}).get(key)
        if value:
            grid.add_row(key, _one_line(value))
    if p3.get("cross_email_patterns"):
        grid.add_row("patterns", _bullets(p3["cross_email_patterns"]))
    wi = p3.get("workflow_intelligence") or {}
    for key, label in (("predicted_next_steps", "next steps"), ("bottleneck_risks", "bottlenecks"),
                       ("optimization_opportunities", "optimizations")):  # fmt: skip
        if wi.get(key):
            grid.add_row(label, _bullets(wi[key]))
    if p3.get("fallback_reason"):
        grid.add_row("fallback", Text(_one_line(p3["fallback_reason"]), style="yellow"))
    fallback = p3.get("source") == "fallback"
    return Panel(
        grid, title=f"phase 3 ({_source(p3)})", title_align="left", border_style="yellow" if fallback else ""
    )

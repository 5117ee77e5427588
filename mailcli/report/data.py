"""What `mailcli report` shows, read from the SQLite store in a few streamed passes.

Everything here is plain data (dicts, lists, numbers, strings); mailcli.report.render turns it into the
page. Big collections are bounded here, not in the page: the entity index keeps the entities with the
largest amounts (ENTITY_LIMIT per kind) and says how many it left out, the needs-attention list keeps the
ATTENTION_LIMIT most urgent conversations, and every chart's series is aggregated (per week, per bucket,
top N), so the file stays a few MB whatever the mailbox's size.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from mailcli.choices import PRIORITIES, unknown_choice
from mailcli.store.db import Store

PRIORITY_RANK = {p: i for i, p in enumerate(PRIORITIES)}
ATTENTION_LIMIT = 60  # needs-attention conversations shown in full
ATTENTION_EMAILS = 20  # emails listed per needs-attention conversation
ENTITY_KINDS = (("po_numbers", "PO"), ("quote_numbers", "Quote"), ("case_numbers", "Case"), ("part_numbers", "Part"))
ENTITY_LIMIT = 2500  # per kind, the largest amounts first
TOP_SENDERS = 15
# the workflow funnel's stages: phase 1's workflow states grouped into start, in progress and completion
STAGE = {"START_POINT": 0, "COMPLETION": 2}  # every other state is "in progress"


class ReportError(ValueError):
    """A report option the store cannot be filtered by (an unparsable --since, an unknown --priority)."""


@dataclass(frozen=True)
class Scope:
    """Which part of the store the report covers: conversations of one priority, emails from a date on."""

    since: str | None = None  # YYYY-MM-DD: emails dated on or after it, and their conversations
    priority: str | None = None

    @classmethod
    def parse(cls, since: str | None, priority: str | None) -> Scope:
        if priority is not None and priority not in PRIORITIES:
            raise ReportError(unknown_choice("--priority", priority, PRIORITIES))
        if since is not None:
            try:
                since = date.fromisoformat(since.strip()[:10]).isoformat()
            except ValueError:
                raise ReportError(f"--since {since!r} is not a date: give it as YYYY-MM-DD, e.g. 2025-03-01") from None
        return cls(since=since, priority=priority)

    def conversation_where(self, alias: str = "c") -> tuple[str, list[Any]]:
        where, params = [], []
        if self.priority:
            where.append(f"{alias}.priority = ?")
            params.append(self.priority)
        if self.since:
            where.append(f"{alias}.last_date >= ?")
            params.append(self.since)
        return (" AND ".join(where), params)

    @property
    def filtered(self) -> bool:
        return bool(self.since or self.priority)

    def describe(self) -> str:
        parts = []
        if self.priority:
            parts.append(f"{self.priority} conversations")
        if self.since:
            parts.append(f"emails dated {self.since} or later")
        return ", ".join(parts) if parts else "the whole store"


_POSITION = re.compile(r"\b(character|char|line|column|col|position|offset|in) \d+")


def reason_group(text: str | None) -> str:
    """A fallback or error reason with its varying positions and waits taken out ("at character 379",
    "next probe in 30s"), so that alike reasons count as one."""
    if not text:
        return "(no reason given)"
    return _POSITION.sub(r"\1 N", " ".join(text.split()))[:300]


def _week(day: str, cache: dict[str, str]) -> str | None:
    """The Monday (YYYY-MM-DD) of the week holding an ISO date or timestamp."""
    key = day[:10]
    week = cache.get(key)
    if week is None:
        try:
            d = date.fromisoformat(key)
        except ValueError:
            return None
        week = cache[key] = (d - timedelta(days=d.weekday())).isoformat()
    return week


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _dedupe(items: Iterable[Any], limit: int) -> list[Any]:
    out, seen = [], set()
    for item in items:
        key = json.dumps(item, sort_keys=True) if isinstance(item, dict) else item
        if item in (None, "", [], {}) or key in seen:
            continue
        seen.add(key)
        out.append(item)
        if len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------------------------------ the passes


def build(store: Store, scope: Scope | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data."""
    scope = scope or Scope()
    conn = store.conn
    cwhere, cparams = scope.conversation_where("c")
    convs = _conversations(conn, cwhere, cparams)
    emails = _email_pass(conn, scope, cwhere, cparams, convs)
    attention = _attention(conn, convs, emails.pop("conv_urgency"))
    overview = _overview(conn, scope, convs, emails)
    run = _run(conn, cwhere, cparams, scope.filtered)
    return {
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "db": str(store.path),
        "scope": scope.describe(),
        "overview": overview,
        "attention": attention,
        "charts": emails["charts"],
        "entities": emails["entities"],
        "run": run,
    }


def _conversations(conn, cwhere: str, cparams: list[Any]) -> dict[str, dict[str, Any]]:
    sql = (
        "SELECT c.id, c.subject, c.email_count, c.status, c.priority, c.first_date, c.last_date, c.error,"
        " ca.tier, ca.completeness, ca.phase3 IS NOT NULL, json_extract(ca.phase3, '$.source'),"
        " json_extract(ca.phase3, '$.fallback_reason')"
        " FROM conversations c LEFT JOIN conversation_analysis ca ON ca.conversation_id = c.id"
        + (f" WHERE {cwhere}" if cwhere else "")
    )
    out = {}
    for cid, subject, n, status, prio, first, last, error, tier, score, has_p3, p3_source, p3_reason in conn.execute(
        sql, cparams
    ):
        out[cid] = {
            "id": cid, "subject": subject, "emails": n, "status": status, "priority": prio, "first_date": first,
            "last_date": last, "error": error, "tier": tier, "completeness": score,
            "phase3": (p3_source or "model") if has_p3 else None, "phase3_reason": p3_reason,
        }  # fmt: skip
    return out


def _email_pass(conn, scope: Scope, cwhere: str, cparams: list[Any], convs: dict[str, dict]) -> dict[str, Any]:
    """One streamed pass over the emails in scope: every chart's series and the entity index.

    SQLite extracts the phase 1 fields the page uses (cheaper than parsing each whole phase 1 object in
    Python); the entity lists arrive as JSON text, mostly "[]", and only the others are parsed. The rows
    come in conversation order (the emails_conversation index), so an entity's conversations are counted
    exactly by noticing when the conversation changes."""
    where = [cwhere] if cwhere else []
    params = list(cparams)
    if scope.since:
        where.append("e.date >= ?")
        params.append(scope.since)
    p1 = "ea.phase1"
    sql = (
        "SELECT e.conversation_id, e.date, e.from_addr, ea.phase1 IS NOT NULL,"
        f" json_extract({p1}, '$.priority'), json_extract({p1}, '$.urgency_score'),"
        f" json_extract({p1}, '$.workflow_state'), json_extract({p1}, '$.financial_impact'),"
        # the entity lists in one JSON array of arrays: one parse per email, none for "[[],[],[],[]]"
        + f" json_extract({p1}, " + ", ".join(f"'$.{kind}'" for kind, _ in ENTITY_KINDS) + ")"
        + " FROM emails e"
        + (" JOIN conversations c ON c.id = e.conversation_id" if cwhere else "")
        + " LEFT JOIN email_analysis ea ON ea.email_rowid = e.rowid"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY e.conversation_id"
    )
    week_cache: dict[str, str] = {}
    n = undated = analysed = 0
    first = last = None
    weeks: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0])  # emails, urgency sum, critical, high
    states: Counter[str] = Counter()
    email_priorities: Counter[str] = Counter()
    senders: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])  # impact, emails
    domains: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    conv_stage: dict[str, int] = {}
    conv_urgency: dict[str, int] = {}
    # per kind: value -> [largest amount, emails, first 3 conversation ids, conversations, last conversation]
    entities: list[dict[str, list[Any]]] = [{} for _ in ENTITY_KINDS]
    loads = json.loads
    no_entities = "[" + ",".join("[]" for _ in ENTITY_KINDS) + "]"
    for row in conn.execute(sql, params):
        cid, when, sender, has_p1, prio, urgency, state, impact = row[:8]
        n += 1
        week = None
        if when:
            if first is None or when < first:
                first = when
            if last is None or when > last:
                last = when
            week = _week(when, week_cache)
        else:
            undated += 1
        if not has_p1:
            continue
        analysed += 1
        urgency = int(urgency or 0)
        prio = prio or "low"
        state = state or "START_POINT"
        impact = float(impact or 0.0)
        email_priorities[prio] += 1
        states[state] += 1
        if week is not None:
            w = weeks[week]
            w[0] += 1
            w[1] += urgency
            if prio == "critical":
                w[2] += 1
            elif prio == "high":
                w[3] += 1
        addr = (sender or "").lower()
        if addr:
            s = senders[addr]
            s[0] += impact
            s[1] += 1
            d = domains[addr.rpartition("@")[2] or addr]
            d[0] += impact
            d[1] += 1
        stage = STAGE.get(state, 1)
        if conv_stage.get(cid, -1) < stage:
            conv_stage[cid] = stage
        if conv_urgency.get(cid, -1) < urgency:
            conv_urgency[cid] = urgency
        lists = row[8]
        if not lists or lists == no_entities:
            continue
        for table, values in zip(entities, loads(lists), strict=True):
            for value in values or ():
                ent = table.get(value)
                if ent is None:
                    table[value] = [impact, 1, [cid], 1, cid]
                    continue
                if impact > ent[0]:
                    ent[0] = impact
                ent[1] += 1
                if ent[4] != cid:
                    ent[4] = cid
                    ent[3] += 1
                    if len(ent[2]) < 3:
                        ent[2].append(cid)
    return {
        "emails": n,
        "undated": undated,
        "analysed": analysed,
        "first": first,
        "last": last,
        **_phase2_counts(conn, where, params),
        "conv_urgency": conv_urgency,
        "charts": _charts(convs, weeks, states, email_priorities, senders, domains, conv_stage, week_cache),
        "entities": _entity_index(entities, convs),
    }


def _phase2_counts(conn, where: list[str], params: list[Any]) -> dict[str, Any]:
    """Phase 2 answers by source, and the fallbacks' reasons. Unfiltered, both come from the partial
    index on the answer's source (milliseconds, where parsing every answer in the email pass took
    ~0.4 s at 100,000 emails); filtered, from the emails in scope."""
    src = "json_extract(ea.phase2, '$.source')"
    if where:
        frm = (" FROM email_analysis ea JOIN emails e ON e.rowid = ea.email_rowid"
               " JOIN conversations c ON c.id = e.conversation_id WHERE ea.phase2 IS NOT NULL AND "
               + " AND ".join(where))  # fmt: skip
    else:
        frm = " FROM email_analysis ea WHERE ea.phase2 IS NOT NULL"
    sources = dict(conn.execute(f"SELECT {src}, count(*){frm} GROUP BY 1", params).fetchall())
    reasons: Counter[str] = Counter()
    for (reason,) in conn.execute(
        f"SELECT json_extract(ea.phase2, '$.fallback_reason'){frm} AND {src} = 'fallback'", params
    ):
        reasons[reason_group(reason)] += 1
    return {"phase2_sources": {k or "(none)": v for k, v in sources.items()}, "phase2_reasons": reasons.most_common(10)}


def _charts(convs, weeks, states, email_priorities, senders, domains, conv_stage, week_cache) -> dict[str, Any]:
    conv_priorities = Counter(c["priority"] or "not analysed" for c in convs.values())
    order = [*PRIORITIES, "not analysed"]
    week_keys = _fill_weeks(sorted(weeks))
    # the funnel: conversations by the week of their first email, and how far their emails got
    funnel: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for cid, stage in conv_stage.items():
        first = convs[cid]["first_date"] if cid in convs else None
        week = _week(first, week_cache) if first else None
        if week is None:
            continue
        f = funnel[week]
        f[0] += 1
        if stage >= 1:
            f[1] += 1
        if stage >= 2:
            f[2] += 1
    funnel_keys = _fill_weeks(sorted(funnel))

    def top(table: dict[str, list[float]]) -> list[list[Any]]:
        rows = sorted(table.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:TOP_SENDERS]
        return [[k, round(v[0], 2), int(v[1])] for k, v in rows]

    return {
        "priority": {"labels": [p for p in order if conv_priorities.get(p)],
                     "conversations": [conv_priorities[p] for p in order if conv_priorities.get(p)],
                     "emails": [email_priorities.get(p, 0) for p in order if conv_priorities.get(p)]},
        "workflow": {"labels": [s for s, _ in states.most_common()], "emails": [c for _, c in states.most_common()]},
        "volume": {
            "weeks": week_keys,
            "emails": [int(weeks[w][0]) if w in weeks else 0 for w in week_keys],
            "critical": [int(weeks[w][2]) if w in weeks else 0 for w in week_keys],
            "high": [int(weeks[w][3]) if w in weeks else 0 for w in week_keys],
            "urgency": [round(weeks[w][1] / weeks[w][0], 2) if w in weeks and weeks[w][0] else None for w in week_keys],
        },
        "senders": top(senders),
        "domains": top(domains),
        "funnel": {
            "weeks": funnel_keys,
            "started": [funnel[w][0] if w in funnel else 0 for w in funnel_keys],
            "in_progress": [funnel[w][1] if w in funnel else 0 for w in funnel_keys],
            "completed": [funnel[w][2] if w in funnel else 0 for w in funnel_keys],
        },
    }


def _fill_weeks(weeks: list[str], limit: int = 520) -> list[str]:
    """Every week from the first to the last (a quiet week is a zero, not a gap); at most `limit` (the latest)."""
    if not weeks:
        return []
    start, end = date.fromisoformat(weeks[0]), date.fromisoformat(weeks[-1])
    span = (end - start).days // 7 + 1
    if span > limit:
        start = end - timedelta(weeks=limit - 1)
    return [(start + timedelta(weeks=i)).isoformat() for i in range(min(span, limit))]


def _entity_index(entities: list[dict[str, list[Any]]], convs: dict[str, dict]) -> dict[str, Any]:
    """The entities with the largest amounts (ENTITY_LIMIT per kind), in a compact shape for the page:
    rows [kind, value, largest amount, emails, conversations, [conversation indexes]] and a conversation
    table [id, subject] they point into."""
    rows: list[list[Any]] = []
    conv_index: dict[str, int] = {}
    conv_table: list[list[str]] = []
    totals, left_out = [], []
    for ki, table in enumerate(entities):
        totals.append(len(table))
        kept = heapq.nsmallest(ENTITY_LIMIT, table.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        left_out.append(len(table) - len(kept))
        for value, (amount, n_emails, cids, n_convs, _) in kept:
            refs = []
            for cid in cids:
                if cid not in conv_index:
                    conv_index[cid] = len(conv_table)
                    conv_table.append([cid, (convs.get(cid) or {}).get("subject", "")[:120]])
                refs.append(conv_index[cid])
            rows.append([ki, value, round(amount, 2), n_emails, n_convs, refs])
    return {
        "kinds": [label for _, label in ENTITY_KINDS],
        "rows": rows,
        "conversations": conv_table,
        "totals": totals,
        "left_out": left_out,
        "limit": ENTITY_LIMIT,
    }


def _attention(conn, convs: dict[str, dict], conv_urgency: dict[str, int]) -> dict[str, Any]:
    """Critical and high conversations, most urgent first, with what each phase found."""
    urgent = [c for c in convs.values() if c["priority"] in ("critical", "high")]
    # most urgent first: priority, then urgency score, then the latest email (two stable sorts)
    urgent.sort(key=lambda c: (c["last_date"] or "", c["id"]), reverse=True)
    urgent.sort(key=lambda c: (PRIORITY_RANK[c["priority"]], -conv_urgency.get(c["id"], 0)))
    shown = urgent[:ATTENTION_LIMIT]
    cards = []
    for i, conv in enumerate(shown):
        cards.append(_card(conn, conv, i, conv_urgency.get(conv["id"], 0)))
    return {
        "total": len(urgent),
        "critical": sum(c["priority"] == "critical" for c in urgent),
        "high": sum(c["priority"] == "high" for c in urgent),
        "cards": cards,
        "limit": ATTENTION_LIMIT,
    }


def _card(conn, conv: dict[str, Any], index: int, urgency: int) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT e.date, e.from_name, e.from_addr, e.subject, substr(e.body, 1, 400), ea.phase1, ea.phase2"
        " FROM emails e LEFT JOIN email_analysis ea ON ea.email_rowid = e.rowid"
        " WHERE e.conversation_id = ? ORDER BY e.date IS NULL, e.date, e.rowid",
        (conv["id"],),
    ).fetchall()
    p3_row = conn.execute(
        "SELECT phase3 FROM conversation_analysis WHERE conversation_id = ?", (conv["id"],)
    ).fetchone()
    p3 = _loads(p3_row[0]) if p3_row else None
    facts: dict[str, list[Any]] = {k: [] for k in ("po_numbers", "quote_numbers", "case_numbers", "amounts")}
    impact = 0.0
    state = None
    actions, risks, summaries = [], [], []
    emails = []
    for when, name, addr, subject, snippet, p1_text, p2_text in rows:
        p1 = _loads(p1_text) or {}
        p2 = _loads(p2_text) or {}
        for k in facts:
            facts[k].extend(p1.get(k) or ())
        impact = max(impact, float(p1.get("financial_impact") or 0.0))
        state = p1.get("workflow_state") or state
        actions.extend(p2.get("action_items") or ())
        if p2.get("source") == "model":
            risks.append(p2.get("risk_assessment"))
            summaries.append(p2.get("summary"))
        if len(emails) < ATTENTION_EMAILS:
            emails.append({
                "date": when, "from": f"{name} <{addr}>" if name and addr else addr, "subject": subject,
                "snippet": " ".join((snippet or "").split())[:240], "priority": p1.get("priority"),
                "state": p1.get("workflow_state"), "phase2": p2.get("source"),
            })  # fmt: skip
    wi = (p3 or {}).get("workflow_intelligence") or {}
    return {
        **conv,
        "anchor": f"conv-{index + 1}",
        "urgency": urgency,
        "state": state,
        "po_numbers": _dedupe(facts["po_numbers"], 12),
        "quote_numbers": _dedupe(facts["quote_numbers"], 12),
        "case_numbers": _dedupe(facts["case_numbers"], 12),
        "amounts": sorted(set(facts["amounts"]), reverse=True)[:8],
        "impact": impact,
        "actions": _dedupe(actions, 10),
        "risks": _dedupe(risks, 4),
        "phase2_summary": summaries[-1] if summaries else None,
        "p3": None if p3 is None else {
            "source": p3.get("source"), "summary": p3.get("executive_summary"),
            "next_steps": _dedupe(wi.get("predicted_next_steps") or (), 8),
            "bottlenecks": _dedupe(wi.get("bottleneck_risks") or (), 8),
            "escalation": bool(p3.get("escalation_needed")), "revenue": p3.get("revenue_impact"),
            "reason": p3.get("fallback_reason"),
        },  # fmt: skip
        "email_list": emails,
        "emails_left_out": max(0, len(rows) - len(emails)),
    }


def _overview(conn, scope: Scope, convs: dict[str, dict], emails: dict[str, Any]) -> dict[str, Any]:
    statuses = Counter(c["status"] for c in convs.values())
    tiers = Counter(c["tier"] for c in convs.values() if c["tier"] is not None)
    p3_sources = Counter(c["phase3"] for c in convs.values() if c["phase3"])
    p3_reasons = Counter(reason_group(c["phase3_reason"]) for c in convs.values() if c["phase3"] == "fallback")
    errors = Counter(reason_group(c["error"]) for c in convs.values() if c["error"])
    rejects = conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
    reject_reasons = conn.execute(
        "SELECT reason, count(*) AS n FROM rejects GROUP BY reason ORDER BY n DESC, reason LIMIT 10"
    ).fetchall()
    latest_rejects = conn.execute(
        "SELECT source, locator, reason FROM rejects ORDER BY id DESC LIMIT 10"
    ).fetchall()
    return {
        "emails": emails["emails"],
        "analysed_emails": emails["analysed"],
        "undated": emails["undated"],
        "conversations": len(convs),
        "first": emails["first"],
        "last": emails["last"],
        "statuses": sorted(statuses.items(), key=lambda kv: -kv[1]),
        "tiers": sorted(tiers.items()),
        "phase2": {"total": sum(emails["phase2_sources"].values()), "sources": emails["phase2_sources"],
                   "reasons": emails["phase2_reasons"]},
        "phase3": {"total": sum(p3_sources.values()), "sources": dict(p3_sources),
                   "reasons": p3_reasons.most_common(10)},
        "errors": errors.most_common(10),
        "rejects": rejects,
        "reject_reasons": [(r, n) for r, n in reject_reasons],
        "latest_rejects": [{"source": s, "locator": loc, "reason": r} for s, loc, r in latest_rejects],
    }


def _run(conn, cwhere: str, cparams: list[Any], filtered: bool) -> dict[str, Any]:
    """The call ledger: throughput over time, latency per model and host, tokens, fallbacks and failures."""
    where, params = "", []
    if filtered:
        where = f" WHERE conversation_id IN (SELECT c.id FROM conversations c WHERE {cwhere})"
        params = list(cparams)
    q = conn.execute
    span = q(f"SELECT count(*), min(created_at), max(created_at) FROM llm_calls{where}", params).fetchone()
    calls, start, end = span
    out: dict[str, Any] = {"calls": calls, "first": start, "last": end}
    if not calls:
        return out
    # throughput: calls per time bucket, the bucket chosen so that the run spans at most ~120 of them
    t0, t1 = _parse_ts(start), _parse_ts(end)
    seconds = max(1.0, (t1 - t0).total_seconds()) if t0 and t1 else 1.0
    bucket = next((b for b in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 21600, 86400) if seconds / b <= 120), 604800)
    series: dict[int, Counter[int]] = defaultdict(Counter)
    tokens_by_bucket: Counter[int] = Counter()
    # bucketed by SQLite (julianday of the ISO timestamps), not by parsing every timestamp in Python
    for b, phase, n, evals in q(
        f"SELECT CAST((julianday(created_at) - julianday(?)) * 86400.0 / {bucket} AS INTEGER) AS b,"
        f" phase, count(*), sum(eval_count) FROM llm_calls{where}{' AND' if where else ' WHERE'}"
        " julianday(created_at) IS NOT NULL GROUP BY 1, 2",
        [start, *params],
    ):
        series[phase][b] += n
        tokens_by_bucket[b] += evals or 0
    n_buckets = int(seconds // bucket) + 1
    labels = [_bucket_label(t0, i * bucket, bucket) for i in range(n_buckets)] if t0 else []
    out["throughput"] = {
        "bucket_seconds": bucket,
        "labels": labels,
        "phases": {str(p): [series[p].get(i, 0) for i in range(n_buckets)] for p in sorted(series)},
        "tokens": [tokens_by_bucket.get(i, 0) for i in range(n_buckets)],
    }
    # latency histogram per model and host, on 1-2-5 steps spanning the durations recorded
    lo, hi = q(f"SELECT min(duration_ms), max(duration_ms) FROM llm_calls{where}", params).fetchone()
    edges = latency_edges(lo or 0.0, hi or 0.0)
    case = " ".join(f"WHEN duration_ms < {e} THEN {i}" for i, e in enumerate(edges))
    hist: dict[str, list[int]] = {}
    for model, host, b, n in q(
        f"SELECT model, coalesce(host, '(no host)'), CASE {case} ELSE {len(edges)} END AS b, count(*)"
        f" FROM llm_calls{where}{' AND' if where else ' WHERE'} duration_ms IS NOT NULL GROUP BY 1, 2, 3",
        params,
    ):
        hist.setdefault(f"{model} @ {host}", [0] * (len(edges) + 1))[b] = n
    labels_ms = [f"< {_ms(edges[0])}"] + [f"{_ms(a)}–{_ms(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    out["latency"] = {"labels": [*labels_ms, f"≥ {_ms(edges[-1])}"], "series": hist}
    out["models"] = [
        {"phase": phase, "model": model, "host": host, "calls": n, "ok": ok, "fallback": fb, "failed": failed,
         "retried": retried, "prompt_tokens": pt or 0, "output_tokens": et or 0,
         "mean_ms": round(mean, 1) if mean is not None else None, "max_ms": round(mx, 1) if mx is not None else None}
        for phase, model, host, n, ok, fb, failed, retried, pt, et, mean, mx in q(
            "SELECT phase, model, coalesce(host, ''), count(*), sum(outcome IN ('ok', 'repair')),"
            " sum(outcome = 'fallback'), sum(outcome NOT IN ('ok', 'repair', 'fallback', 'retry', 'invalid')),"
            " sum(outcome IN ('retry', 'invalid')), sum(prompt_eval_count), sum(eval_count), avg(duration_ms),"
            f" max(duration_ms) FROM llm_calls{where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            params,
        )
    ]  # fmt: skip
    out["outcomes"] = [
        list(r) for r in q(f"SELECT outcome, count(*) AS n FROM llm_calls{where} GROUP BY 1 ORDER BY n DESC", params)
    ]
    errors: Counter[tuple[str, str]] = Counter()
    for outcome, error, n in q(
        f"SELECT outcome, error, count(*) FROM llm_calls{where}{' AND' if where else ' WHERE'}"
        " outcome NOT IN ('ok') AND error IS NOT NULL GROUP BY 1, 2",
        params,
    ):
        errors[(outcome, reason_group(error))] += n
    out["errors"] = [[o, e, n] for (o, e), n in errors.most_common(12)]
    out["tokens"] = {
        "prompt": sum(m["prompt_tokens"] for m in out["models"]),
        "output": sum(m["output_tokens"] for m in out["models"]),
    }
    return out


def latency_edges(lo: float, hi: float, most: int = 14) -> list[float]:
    """Bucket edges in ms on a 1-2-5 scale from about `lo` to about `hi`: at most `most` of them."""
    steps = [m * 10**e for e in range(-1, 7) for m in (1, 2, 5)]
    inside = [s for s in steps if lo < s <= hi] or [next((s for s in steps if s > hi), steps[-1])]
    start = max(0, steps.index(inside[0]) - 1)
    end = steps.index(inside[-1]) + 1
    edges = steps[start:end + 1]
    while len(edges) > most:  # a wide spread: every other edge
        edges = edges[::2]
    return edges


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _bucket_label(t0: datetime, offset: float, bucket: int) -> str:
    t = t0 + timedelta(seconds=offset)
    if bucket >= 86400:
        return t.strftime("%Y-%m-%d")
    if bucket >= 60:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%H:%M:%S")


def _ms(value: float) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"

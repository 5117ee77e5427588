"""Results in: analysis results written to SQLite, idempotently (the sink's and `analyze --inline`'s
one write path). A worker never calls this; it returns results on the Redis stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mailcli.contract import ConversationResult, LLMCall
from mailcli.store import lifecycle
from mailcli.store.db import Store, now_iso


def apply_results(
    store: Store, results: Iterable[ConversationResult], *, job_id: str | None = None, commit: bool = True
) -> int:
    """Write analysis results in one write transaction. Applying the same result twice changes nothing.

    The revision each result is checked against is read inside that transaction, so an ingest that
    adds emails (or merges the conversation away) is either wholly before the check or wholly after
    the write. With commit=False the caller holds the transaction (the sink batches several jobs in one).
    """
    if commit:
        with store.write():
            return _apply(store.conn, results, job_id)
    if not store.conn.in_transaction:
        raise RuntimeError("apply_results(commit=False) needs the caller's write transaction")
    return _apply(store.conn, results, job_id)


def _apply(c, results: Iterable[ConversationResult], job_id: str | None) -> int:
    ts = now_iso()
    n = 0
    for r in results:
        cid = r["conversation_id"]
        revision = lifecycle.current_revision(c, cid)
        if revision is None:
            continue  # merged away while the job ran; the survivor is pending and will be analysed
        stale = int(r.get("revision", 0)) < revision
        c.execute(
            "INSERT OR IGNORE INTO analysis_runs (conversation_id, revision, job_id, stale, applied_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (cid, int(r.get("revision", 0)), job_id or "", int(stale), ts),
        )
        if stale:
            # emails joined (or `analyze` asked again) while the job ran: the conversation is pending
            # at a newer revision that another job will answer. What this one learnt is kept only
            # where nothing is stored yet (the LLM answers then serve as cache), and the calls it
            # made go to the ledger; the conversation's rows and status are the newer job's.
            _keep_as_cache(c, r, cid, ts)
            n += 1
            continue
        for e in r["emails"]:
            p2 = e.get("phase2")
            if p2 is not None and p2.get("cached"):
                c.execute(
                    "INSERT INTO email_analysis (email_rowid, conversation_id, phase1, priority, analyzed_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (email_rowid) DO UPDATE SET"
                    " conversation_id = excluded.conversation_id, phase1 = excluded.phase1,"
                    " priority = excluded.priority, analyzed_at = excluded.analyzed_at",
                    (e["rowid"], cid, _json_text(e["phase1"]), e["priority"], ts),
                )
                continue
            c.execute(
                "INSERT INTO email_analysis (email_rowid, conversation_id, phase1, priority, phase2, phase2_key,"
                " analyzed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email_rowid) DO UPDATE SET"
                " conversation_id = excluded.conversation_id, phase1 = excluded.phase1,"
                " priority = excluded.priority,"
                # a phase 2 answer owed but not obtained keeps the previous one, if any
                " phase2 = coalesce(excluded.phase2, email_analysis.phase2),"
                " phase2_key = coalesce(excluded.phase2_key, email_analysis.phase2_key),"
                " analyzed_at = excluded.analyzed_at",
                (
                    e["rowid"],
                    cid,
                    _json_text(e["phase1"]),
                    e["priority"],
                    json.dumps(p2) if p2 is not None else None,
                    e.get("phase2_key"),
                    ts,
                ),
            )
        p3 = r.get("phase3")
        comp = r["completeness"]
        detail = json.dumps({"completeness": comp, "plan": r.get("plan"), "missing": r.get("missing", [])})
        keep3 = p3 is None or p3.get("cached")
        c.execute(
            "INSERT INTO conversation_analysis (conversation_id, completeness, is_complete, tier, detail,"
            " phase3, phase3_key, status, job_id, analyzed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (conversation_id) DO UPDATE SET completeness = excluded.completeness,"
            " is_complete = excluded.is_complete, tier = excluded.tier, detail = excluded.detail,"
            + (
                " phase3 = conversation_analysis.phase3, phase3_key = conversation_analysis.phase3_key,"
                if keep3
                else " phase3 = excluded.phase3, phase3_key = excluded.phase3_key,"
            )
            + " status = excluded.status, job_id = excluded.job_id, analyzed_at = excluded.analyzed_at",
            (
                cid,
                comp["score"],
                int(comp["is_complete"]),
                comp["tier"],
                detail,
                None if keep3 else json.dumps(p3),
                None if keep3 else r.get("phase3_key"),
                r["status"],
                job_id,
                ts,
            ),
        )
        for call in r.get("llm_calls", []):
            record_call(c, call, cid, ts)
        lifecycle.analysed(c, cid, r["status"], r["priority"], "; ".join(r.get("missing", [])) or None, ts)
        n += 1
    return n


def _keep_as_cache(c, r: ConversationResult, cid: str, ts: str) -> None:
    """A stale result's email rows where an email has none yet, and its ledger entries."""
    c.executemany(
        "INSERT INTO email_analysis (email_rowid, conversation_id, phase1, priority, phase2, phase2_key, analyzed_at)"
        " SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM emails WHERE rowid = ? AND conversation_id = ?)"
        " ON CONFLICT (email_rowid) DO NOTHING",
        [
            (
                e["rowid"], cid, _json_text(e["phase1"]), e["priority"],
                json.dumps(e["phase2"]) if e.get("phase2") is not None and not e["phase2"].get("cached") else None,
                e.get("phase2_key") if e.get("phase2") is not None and not e["phase2"].get("cached") else None,
                ts, e["rowid"], cid,
            )
            for e in r["emails"]
        ],
    )  # fmt: skip
    for call in r.get("llm_calls", []):
        record_call(c, call, cid, ts)


def _json_text(value: Any) -> str:
    """A JSON column's text: workers send phase 1 already serialized (mailcli.queue.tasks)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def record_call(c, call: LLMCall, conversation_id: str, ts: str) -> None:
    c.execute(
        "INSERT OR IGNORE INTO llm_calls (call_key, conversation_id, email_rowid, phase, model, prompt_version,"
        " input_hash, host, duration_ms, prompt_eval_count, eval_count, done_reason, http_status, attempt,"
        " outcome, error, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            call["call_key"],
            conversation_id,
            call.get("email_rowid"),
            call["phase"],
            call["model"],
            call["prompt_version"],
            call["input_hash"],
            call.get("host"),
            call.get("duration_ms"),
            call.get("prompt_eval_count"),
            call.get("eval_count"),
            call.get("done_reason"),
            call.get("http_status"),
            call.get("attempt", 1),
            call["outcome"],
            call.get("error"),
            call.get("created_at", ts),
        ),
    )

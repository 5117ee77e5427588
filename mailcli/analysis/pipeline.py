"""One conversation in, its analysis out: phase 1, completeness, then the LLM phases its tier owes.

`analyze_conversation` is a function of the job payload (plain JSON data) and an optional LLM
seam, so the same code runs inline (`mailcli analyze --inline`) and in an RQ worker that has no
SQLite. The result is plain JSON data that the single writer applies idempotently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mailcli.analysis.completeness import assess, plan_phases
from mailcli.analysis.phase1 import SenderLists, analyze_email

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
PAYLOAD_VERSION = 1


class LLMUnavailable(Exception):
    """The LLM phases could not run now (Ollama down, breakers open): the conversation stays partial."""


class LLMPhases(Protocol):
    """The seam to phases 2 and 3 (mailcli.analysis.llm_phases implements it on the Ollama client)."""

    def phase2_key(self, email: dict[str, Any]) -> str: ...

    def phase3_key(self, emails: list[dict[str, Any]]) -> str: ...

    def run_phase2(
        self, emails: list[dict[str, Any]], phase1: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]: ...

    def run_phase3(
        self,
        emails: list[dict[str, Any]],
        phase1: list[dict[str, Any]],
        phase2: list[dict[str, Any] | None],
        completeness: dict[str, Any],
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]: ...


def highest_priority(priorities: list[str]) -> str:
    return max(priorities, key=lambda p: PRIORITY_RANK.get(p, 0), default="low")


def analyze_conversation(conv: dict[str, Any], llm: LLMPhases | None = None) -> dict[str, Any]:
    """Analyse one conversation payload (see mailcli.store.jobs.conversation_payload)."""
    opts = conv.get("options", {})
    senders = SenderLists(
        own_domains=tuple(opts.get("own_domains", ())),
        partner_domains=tuple(opts.get("partner_domains", ())),
        key_senders=tuple(opts.get("key_senders", ())),
    )
    emails: list[dict[str, Any]] = conv["emails"]
    phase1 = [
        analyze_email(
            e.get("subject", ""),
            e.get("body", ""),
            importance=e.get("importance", "normal"),
            sender=e.get("from", ""),
            senders=senders,
        ).to_dict()
        for e in emails
    ]
    priorities = [p["priority"] for p in phase1]
    completeness = assess([(e.get("subject", ""), e.get("body", "")) for e in emails])
    plan = plan_phases(completeness.tier, priorities, all_phases=bool(opts.get("all_phases")))
    max_phase = int(opts.get("max_phase", 3))
    force = bool(opts.get("force"))

    owed2 = [i for i in plan.phase2_emails if max_phase >= 2]
    owed3 = plan.phase3 and max_phase >= 3
    phase2: list[dict[str, Any] | None] = [None] * len(emails)
    phase2_keys: list[str | None] = [None] * len(emails)
    phase3: dict[str, Any] | None = None
    phase3_key: str | None = None
    calls: list[dict[str, Any]] = []
    missing: list[str] = []

    if (owed2 or owed3) and llm is None:
        missing.append("no LLM configured for this run")
    elif owed2 or owed3:
        assert llm is not None
        # phase 2: only emails whose cached answer is for other text, model or prompt version
        todo = []
        for i in owed2:
            key = llm.phase2_key(emails[i])
            phase2_keys[i] = key
            if not force and emails[i].get("phase2_key") == key:
                phase2[i] = {"cached": True}
            else:
                todo.append(i)
        if todo:
            try:
                answers, new_calls = llm.run_phase2([emails[i] for i in todo], [phase1[i] for i in todo])
                calls.extend(new_calls)
                for i, answer in zip(todo, answers, strict=True):
                    phase2[i] = answer
                    if answer is None:
                        phase2_keys[i] = None
                        missing.append(f"phase 2 for email {emails[i].get('id')}")
            except LLMUnavailable as exc:
                for i in todo:
                    phase2_keys[i] = None
                missing.append(f"phase 2: {exc}")
        if owed3 and not missing:
            phase3_key = llm.phase3_key(emails)
            if not force and conv.get("phase3_key") == phase3_key:
                phase3 = {"cached": True}
            else:
                try:
                    phase3, new_calls = llm.run_phase3(emails, phase1, phase2, completeness.to_dict())
                    calls.extend(new_calls)
                    if phase3 is None:
                        phase3_key = None
                        missing.append("phase 3")
                except LLMUnavailable as exc:
                    phase3_key = None
                    missing.append(f"phase 3: {exc}")
        elif owed3:
            missing.append("phase 3 waits for phase 2")

    return {
        "conversation_id": conv["conversation_id"],
        "revision": conv.get("revision", 0),
        "emails": [
            {
                "rowid": e["rowid"],
                "phase1": p1,
                "priority": p1["priority"],
                "phase2": p2,
                "phase2_key": k2,
            }
            for e, p1, p2, k2 in zip(emails, phase1, phase2, phase2_keys, strict=True)
        ],
        "priority": highest_priority(priorities),
        "completeness": completeness.to_dict(),
        "plan": {"phase2_emails": list(owed2), "phase3": bool(owed3)},
        "phase3": phase3,
        "phase3_key": phase3_key,
        "status": "partial" if missing else "analyzed",
        "missing": missing,
        "llm_calls": calls,
    }


def analyze_batch(
    payload: dict[str, Any], llm: LLMPhases | None = None, on_result: Callable[[dict], None] | None = None
) -> list[dict[str, Any]]:
    """A job: several small conversations of one priority share it, to keep per-job overhead small."""
    results = []
    for conv in payload["conversations"]:
        result = analyze_conversation(conv, llm)
        if on_result:
            on_result(result)
        results.append(result)
    return results

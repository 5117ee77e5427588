"""One conversation in, its analysis out: phase 1, completeness, then the LLM phases its tier owes.

`analyze_conversation` is a function of the job payload (plain JSON data) and an optional LLM
seam, so the same code runs inline (`mailcli analyze --inline`) and in an RQ worker that has no
SQLite. The result is plain JSON data that the single writer applies idempotently.

An answer whose key (model, prompt version, input hash) equals the stored one is not asked again:
the result carries ``{"cached": True}`` in its place and the writer keeps the stored answer. Failed
LLM attempts (``LLMUnavailable.calls``) are part of the result's ``llm_calls`` like the others.
`analyze_batch` runs the LLM phases of a job's conversations side by side, as many as the seam's
``max_in_flight`` (the client bounds what is really in flight).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol

from mailcli.analysis.completeness import Completeness, assess, plan_phases
from mailcli.analysis.phase1 import SenderLists, analyze_email
from mailcli.contract import WIRE_VERSION, ConversationIn, ConversationResult, JobPayload, Status

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class LLMUnavailable(Exception):
    """The LLM phases could not run now (Ollama down, breakers open): the conversation stays partial.

    ``calls`` holds the ledger records of the attempts that were made (analyze_conversation records them).
    """

    def __init__(self, message: str = "", calls: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.calls: list[dict[str, Any]] = list(calls or [])


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


@dataclass
class _Prepared:
    """A conversation after phase 1 and completeness: what its LLM phases owe, before any is run."""

    conv: ConversationIn
    phase1: list[dict[str, Any]]
    completeness: Completeness
    owed2: list[int]
    owed3: bool
    force: bool

    @property
    def owes_llm(self) -> bool:
        return bool(self.owed2) or self.owed3


def _prepare(conv: ConversationIn) -> _Prepared:
    """Phase 1 for every email, completeness and the plan of the LLM phases: pure and fast."""
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
    completeness = assess([(e.get("subject", ""), e.get("body", "")) for e in emails])
    plan = plan_phases(completeness.tier, [p["priority"] for p in phase1], all_phases=bool(opts.get("all_phases")))
    # `--phase N` caps what this run owes: a phase above N is not run, and not owed by this run
    max_phase = int(opts.get("max_phase", 3))
    return _Prepared(
        conv=conv,
        phase1=phase1,
        completeness=completeness,
        owed2=list(plan.phase2_emails) if max_phase >= 2 else [],
        owed3=bool(plan.phase3) and max_phase >= 3,
        force=bool(opts.get("force")),
    )


def _finish(prep: _Prepared, llm: LLMPhases | None) -> ConversationResult:
    """Run the LLM phases the plan owes (skipping unchanged cached answers) and build the result."""
    conv, phase1, owed2, owed3, force = prep.conv, prep.phase1, prep.owed2, prep.owed3, prep.force
    emails: list[dict[str, Any]] = conv["emails"]
    phase2: list[dict[str, Any] | None] = [None] * len(emails)
    phase2_keys: list[str | None] = [None] * len(emails)
    phase3: dict[str, Any] | None = None
    phase3_key: str | None = None
    calls: list[dict[str, Any]] = []
    missing: list[str] = []

    if prep.owes_llm and llm is None:
        missing.append("no LLM configured for this run")
    elif prep.owes_llm:
        assert llm is not None
        # phase 2: only emails whose cached answer is for other text, model or prompt version
        todo = []
        for i in owed2:
            key = llm.phase2_key(emails[i])
            phase2_keys[i] = key
            if not force and emails[i].get("phase2_key") == key:
                phase2[i] = {"cached": True}  # the stored answer stands (apply_results keeps it)
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
                calls.extend(getattr(exc, "calls", None) or [])  # the failed attempts belong in the ledger
                for i in todo:
                    phase2_keys[i] = None
                missing.append(f"phase 2: {exc}")
        if owed3 and not missing:
            phase3_key = llm.phase3_key(emails)
            if not force and conv.get("phase3_key") == phase3_key:
                phase3 = {"cached": True}
            else:
                try:
                    phase3, new_calls = llm.run_phase3(emails, phase1, phase2, prep.completeness.to_dict())
                    calls.extend(new_calls)
                    if phase3 is None:
                        phase3_key = None
                        missing.append("phase 3")
                except LLMUnavailable as exc:
                    calls.extend(getattr(exc, "calls", None) or [])
                    phase3_key = None
                    missing.append(f"phase 3: {exc}")
        elif owed3:
            missing.append("phase 3 waits for phase 2")

    priorities = [p["priority"] for p in phase1]
    return {
        "version": WIRE_VERSION,
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
        "completeness": prep.completeness.to_dict(),
        "plan": {"phase2_emails": list(owed2), "phase3": bool(owed3)},
        "phase3": phase3,
        "phase3_key": phase3_key,
        "status": Status.PARTIAL if missing else Status.ANALYZED,
        "missing": missing,
        "llm_calls": calls,
    }


def analyze_conversation(conv: ConversationIn, llm: LLMPhases | None = None) -> ConversationResult:
    """Analyse one conversation of a job's payload (the types are in mailcli.contract)."""
    return _finish(_prepare(conv), llm)


def analyze_batch(
    payload: JobPayload,
    llm: LLMPhases | None = None,
    on_result: Callable[[ConversationResult], None] | None = None,
    *,
    concurrency: int | None = None,
) -> list[ConversationResult]:
    """A job: several small conversations of one priority share it, to keep per-job overhead small.

    Phase 1 runs first for every conversation (fast, pure). The conversations that owe LLM phases
    then run side by side, ``concurrency`` at a time (default: the seam's ``max_in_flight``), so the
    LLM requests of the whole job, not of one conversation, fill the client's in-flight slots; the
    client's limit still bounds what is in flight. ``on_result`` is called in the calling thread, as
    each conversation finishes; the returned list keeps the payload's order.
    """
    prepared = [_prepare(conv) for conv in payload["conversations"]]
    results: list[ConversationResult | None] = [None] * len(prepared)

    def done(i: int, result: ConversationResult) -> None:
        results[i] = result
        if on_result:
            on_result(result)

    waiting = []
    for i, prep in enumerate(prepared):
        if llm is None or not prep.owes_llm:
            done(i, _finish(prep, llm))
        else:
            waiting.append(i)
    width = min(len(waiting), max(1, concurrency or int(getattr(llm, "max_in_flight", 1) or 1)))
    if width <= 1:
        for i in waiting:
            done(i, _finish(prepared[i], llm))
    elif waiting:
        pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="mailcli-conversation")
        finished = False
        try:
            futures = {pool.submit(_finish, prepared[i], llm): i for i in waiting}
            for future in as_completed(futures):
                done(futures[future], future.result())
            finished = True
        finally:
            # on an error (or RQ's job timeout) do not wait for the requests still under way
            pool.shutdown(wait=finished, cancel_futures=True)
    return [r for r in results if r is not None]

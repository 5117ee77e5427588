"""The wire contract between the coordinator and the workers: what a job carries and what it returns.

A job's payload is JSON (RQ's JSONSerializer): the coordinator builds it from SQLite
(:func:`mailcli.dispatch.payloads.conversation_payloads`), a worker on any host analyses it
(:func:`mailcli.analysis.conversations.analyze_batch`) and sends one :class:`ConversationResult` per
conversation on the results stream, which the sink writes to SQLite
(:func:`mailcli.store.results.apply_results`). These types name every key of that exchange.

``WIRE_VERSION`` changes whenever a key is added, removed or changes meaning. The payload and each
result carry it; a worker refuses a job of another version (it puts the job back for a worker that
speaks it, says so in one line, and stops), and the sink drops a result of another version with a
line naming the fix, instead of failing on a missing key. A payload without a version is version 1.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

WIRE_VERSION = 1


class Status(StrEnum):
    """A conversation's status (``conversations.status``); a result carries ANALYZED or PARTIAL.
    Its transitions are in mailcli.store.lifecycle."""

    PENDING = "pending"  # owed an analysis of its current revision, not yet in a job
    QUEUED = "queued"  # claimed by one job (job_id), in Redis or being analysed
    ANALYZED = "analyzed"  # every phase it was owed answered
    PARTIAL = "partial"  # phase 1 done, an LLM phase owed but not obtained (see error)
    FAILED = "failed"  # its job exhausted its retries (see error)


class WireVersionError(Exception):
    """A payload or result of a wire version this mailcli does not speak."""


# "from" is a Python keyword: these two are spelled in TypedDict's functional form.
EmailIn = TypedDict(
    "EmailIn",
    {
        "rowid": int,  # emails.rowid: the key every result row is written under
        "id": str,  # the input's id, else the Message-ID
        "subject": str,
        "body": str,
        "from": str,  # the sender's address
        "importance": str,  # low | normal | high
        "date": str | None,  # ISO 8601
        "phase2_key": str | None,  # the key of the stored phase 2 answer: equal key, no new LLM call
    },
)


class Options(TypedDict):
    """How to analyse: the run's settings and `analyze` flags."""

    own_domains: list[str]
    partner_domains: list[str]
    key_senders: list[str]
    phase2_model: str
    phase3_model: str
    all_phases: bool  # every phase whatever the tier (`analyze --all-phases`)
    max_phase: int  # phases above it are neither run nor owed (`analyze --phase N`)
    force: bool  # ignore cached LLM answers (`analyze --reanalyze`)


class ConversationIn(TypedDict):
    conversation_id: str
    revision: int  # the revision claimed: a result for an older one is stale
    queue_priority: str | None  # forced by `ingest --priority`, or the priority it was routed by
    priority: str | None  # from an earlier analysis
    phase3_key: str | None  # the key of the stored phase 3 answer
    emails: list[EmailIn]  # in date order
    options: Options


class JobPayload(TypedDict):
    version: NotRequired[int]  # WIRE_VERSION; absent means 1
    conversations: list[ConversationIn]


class LLMCall(TypedDict):
    """One attempt at an LLM request, successful or not: a row of the `llm_calls` ledger."""

    call_key: str  # unique per attempt: a result delivered twice records it once
    phase: int
    model: str
    prompt_version: str
    input_hash: str
    outcome: str  # ok | repaired | fallback | error | timeout | ...
    attempt: int
    email_rowid: NotRequired[int | None]
    host: NotRequired[str | None]
    duration_ms: NotRequired[float | None]
    prompt_eval_count: NotRequired[int | None]
    eval_count: NotRequired[int | None]
    done_reason: NotRequired[str | None]
    http_status: NotRequired[int | None]
    error: NotRequired[str | None]
    created_at: NotRequired[str]


class EmailResult(TypedDict):
    rowid: int
    phase1: dict[str, Any] | str  # the phase 1 record; workers send it as its JSON text
    priority: str
    phase2: dict[str, Any] | None  # the answer, {"cached": True} to keep the stored one, None if not obtained
    phase2_key: str | None


class ConversationResult(TypedDict):
    version: NotRequired[int]  # WIRE_VERSION; absent means 1
    conversation_id: str
    revision: int  # the payload's: compared with the conversation's when written
    emails: list[EmailResult]
    priority: str  # the highest phase 1 priority of its emails
    completeness: dict[str, Any]  # score, is_complete, tier, reasons
    plan: dict[str, Any]  # phase2_emails (indexes), phase3 (bool): what this run owed
    phase3: dict[str, Any] | None  # as phase2
    phase3_key: str | None
    status: Status  # ANALYZED or PARTIAL
    missing: list[str]  # why partial: the owed answers not obtained
    llm_calls: list[LLMCall]


def version_of(data: dict[str, Any]) -> int:
    """A payload's or result's wire version (1 when it says none)."""
    v = data.get("version", 1)
    return v if isinstance(v, int) else -1


def check(data: dict[str, Any], what: str) -> None:
    """Raise WireVersionError, naming the fix, when ``data`` is not of this mailcli's wire version."""
    v = version_of(data)
    if v != WIRE_VERSION:
        raise WireVersionError(
            f"{what} has wire version {v}, this mailcli speaks {WIRE_VERSION}: run the same mailcli"
            " version on the coordinator and every worker host (pip install the coordinator's version)"
        )

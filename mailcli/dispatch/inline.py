"""`mailcli analyze --inline`: the whole analysis in this process, no Redis, no workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailcli.analysis.conversations import LLMPhases, analyze_batch
from mailcli.config import Settings
from mailcli.contract import Status
from mailcli.dispatch.payloads import conversation_payloads
from mailcli.store.db import Store
from mailcli.store.lifecycle import claim_pending, inline_job_id, release
from mailcli.store.results import apply_results


@dataclass
class InlineSummary:
    conversations: int = 0
    emails: int = 0
    analyzed: int = 0
    partial: int = 0

    def line(self) -> str:
        return (
            f"{self.conversations} conversations ({self.emails} emails) analysed:"
            f" {self.analyzed} analyzed, {self.partial} partial"
        )


def analyze_inline(
    store: Store,
    settings: Settings,
    *,
    llm: LLMPhases | None = None,
    batch: int = 500,
    on_progress: Callable[[InlineSummary], None] | None = None,
) -> InlineSummary:
    """Analyse every pending conversation here, committing after each batch, until none is pending.

    Each batch is claimed first (queued under this process's own job id, so a pool's feeder skips
    it), then analysed and written. A conversation that emails join meanwhile is pending again at
    its new revision when the batch is written, and a later batch takes it; so does one an ingest
    adds while this runs. With an LLM the batches are small, so a long run keeps what it has done;
    the conversations of a batch run side by side as in a worker's job (`analyze_batch`), bounded
    by the client's in-flight limit.
    """
    summary = InlineSummary()
    if llm is not None:
        batch = min(batch, 8 * max(1, int(getattr(llm, "max_in_flight", 1) or 1)))
    job_id = inline_job_id()
    try:
        while True:
            claims = claim_pending(
                store, batch, lambda ids: conversation_payloads(store, ids, settings), lambda ps: [(job_id, "inline", ps)]
            )
            payloads = claims[0][2] if claims else []
            if not payloads:
                break
            results = analyze_batch({"conversations": payloads}, llm)
            apply_results(store, results, job_id=job_id)
            for r in results:
                summary.conversations += 1
                summary.emails += len(r["emails"])
                if r["status"] == Status.PARTIAL:
                    summary.partial += 1
                else:
                    summary.analyzed += 1
            if on_progress:
                on_progress(summary)
    finally:
        # a batch cut short (Ctrl-C, an error) is owed again, at once rather than after a reconcile
        release(store, [job_id])
    return summary

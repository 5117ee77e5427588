"""`mailcli analyze --inline`: the whole analysis in this process, no Redis, no workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailcli.analysis.pipeline import LLMPhases, analyze_batch
from mailcli.config import Settings
from mailcli.store.db import Store
from mailcli.store.jobs import apply_results, conversation_payloads, pending_ids


@dataclass
class InlineSummary:
    conversations: int = 0
    emails: int = 0
    analyzed: int = 0
    partial: int = 0

    def line(self) -> str:
        return (
            f"{self.conversations} conversations ({self.emails} emails) analysed:"
            f" {self.analyzed} complete, {self.partial} partial"
        )


def analyze_inline(
    store: Store,
    settings: Settings,
    *,
    llm: LLMPhases | None = None,
    batch: int = 500,
    on_progress: Callable[[InlineSummary], None] | None = None,
) -> InlineSummary:
    """Analyse every pending conversation here, committing after each batch.

    With an LLM the batches are small, so a long run keeps what it has done; the conversations of a
    batch run side by side as in a worker's job (`analyze_batch`), bounded by the client's in-flight limit.
    """
    summary = InlineSummary()
    done: set[str] = set()
    if llm is not None:
        batch = min(batch, 8 * max(1, int(getattr(llm, "max_in_flight", 1) or 1)))
    while True:
        ids = [cid for cid in pending_ids(store, batch) if cid not in done]  # done: never loop on one
        if not ids:
            break
        results = analyze_batch({"conversations": conversation_payloads(store, ids, settings)}, llm)
        apply_results(store, results, job_id="inline")
        done.update(ids)
        for r in results:
            summary.conversations += 1
            summary.emails += len(r["emails"])
            if r["status"] == "partial":
                summary.partial += 1
            else:
                summary.analyzed += 1
        if on_progress:
            on_progress(summary)
    return summary

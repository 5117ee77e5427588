"""`mailcli ingest` as a library call: readers -> batches -> the ingest writer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailcli.ingest.model import Email, InputError, Reject
from mailcli.store.db import Store
from mailcli.store.ingest import IngestWriter

BATCH = 5000
BATCH_CHARS = 8_000_000  # and at most this much body text per batch: memory stays bounded


@dataclass
class IngestSummary:
    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0
    conversations: int = 0  # conversations created or changed by this ingest
    merged: int = 0
    rejects: list[Reject] = field(default_factory=list)  # the first few, to show the user
    touched: set[str] = field(default_factory=set, repr=False)

    @property
    def seen(self) -> int:
        return self.ingested + self.duplicates + self.rejected

    def line(self) -> str:
        return (
            f"{self.ingested} ingested, {self.duplicates} duplicates, {self.rejected} rejected;"
            f" {self.conversations} conversations queued for analysis"
        )


def check_paths(paths: Sequence[str]) -> None:
    """Fail before writing anything when a path is missing: one line naming it and the fix."""
    for p in paths:
        if p == "-":
            continue
        path = Path(p)
        if not path.exists():
            raise InputError(f"{p}: no such file or directory; check the path")
        if not os.access(path, os.R_OK):
            raise InputError(f"{p}: permission denied; make it readable (chmod u+r) or run as its owner")


def input_bytes(paths: Sequence[str]) -> int:
    total = 0
    for p in paths:
        if p == "-":
            continue
        path = Path(p)
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            for root, _dirs, files in os.walk(path):
                for f in files:
                    try:
                        total += os.stat(os.path.join(root, f)).st_size
                    except OSError:
                        pass
    return total


def ingest_paths(
    store: Store,
    paths: Sequence[str],
    *,
    fmt: str = "auto",
    queue_priority: str | None = None,
    batch_size: int = BATCH,
    on_batch: Callable[[IngestSummary], None] | None = None,
) -> IngestSummary:
    from mailcli.ingest.readers import iter_many

    check_paths(paths)
    writer = IngestWriter(store, queue_priority=queue_priority)
    summary = IngestSummary()
    emails: list[Email] = []
    rejects: list[Reject] = []

    def flush() -> None:
        writer.add_rejects(rejects)
        writer.add_emails(emails)
        if len(summary.rejects) < 20:
            summary.rejects.extend(rejects[: 20 - len(summary.rejects)])
        emails.clear()
        rejects.clear()
        c = writer.counts
        summary.ingested, summary.duplicates, summary.rejected = c.ingested, c.duplicates, c.rejected
        summary.merged = c.merged
        if on_batch:
            on_batch(summary)

    batch_chars = 0
    for rec in iter_many(paths, fmt):
        if isinstance(rec, Reject):
            rejects.append(rec)
        else:
            emails.append(rec)
            batch_chars += len(rec.body)
        if len(emails) + len(rejects) >= batch_size or batch_chars >= BATCH_CHARS:
            flush()
            batch_chars = 0
    flush()
    # a conversation merged away later in the run no longer exists
    touched = writer.counts.touched
    if touched:
        existing = set()
        ids = sorted(touched)
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            existing.update(
                r[0]
                for r in store.conn.execute(
                    f"SELECT id FROM conversations WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
            )
        touched = existing
    summary.touched = touched
    summary.conversations = len(touched)
    return summary

"""`mailcli ingest` as a library call: readers -> batches -> the ingest writer.

The main process reads the input and owns SQLite. For a large JSONL input, parsing moves to a
second process so that it runs while the main process writes: the readers hand over JSONL as
unparsed chunks of lines (:class:`~mailcli.ingest.jsonl.LineChunk`), the parse process turns
each chunk into prepared rows (:mod:`mailcli.ingest.rows`) and rejects, and the writer applies
the results strictly in input order. Line numbers, which copy of a duplicate wins, threading and
the batches (one transaction each) are therefore the same as when everything runs here, which
is what happens for small inputs (one chunk), on one core, and for mbox, .eml and Maildir input
(parsed as they are read).

Memory stays bounded: a batch holds at most ``batch_size`` records and about ``BATCH_CHARS``
characters of text (JSONL: bytes of lines), and at most ``AHEAD`` chunks are handed to the parse
process before their results are written.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailcli.ingest.jsonl import LineChunk
from mailcli.ingest.model import Email, InputError, Reject, Skipped
from mailcli.ingest.rows import PreparedBatch, prepare_batch
from mailcli.ingest.writer import BackgroundCheckpoints, IngestWriter
from mailcli.store.db import Store

if TYPE_CHECKING:
    from mailcli.ingest.parse_process import ParseProcess

log = logging.getLogger(__name__)

BATCH = 5000
BATCH_CHARS = 8_000_000  # and at most this much body text per batch: memory stays bounded
AHEAD = 2  # chunks handed to the parse process before the oldest result is waited for

Parsed = tuple[PreparedBatch, list[Reject | Skipped]]  # a batch as the writer takes it


@dataclass
class IngestSummary:
    ingested: int = 0
    duplicates: int = 0
    variants: int = 0  # of the ingested: copies of a Message-ID whose content differs from the first
    rejected: int = 0
    conversations: int = 0  # conversations created or changed by this ingest
    merged: int = 0
    rejects: list[Reject] = field(default_factory=list)  # the first few, to show the user
    skipped: int = 0  # files and folders passed over: bookkeeping, empty (not read, not rejects)
    skipped_first: list[Skipped] = field(default_factory=list)  # the first few, to show the user
    touched: set[str] = field(default_factory=set, repr=False)

    @property
    def seen(self) -> int:
        return self.ingested + self.duplicates + self.rejected

    def line(self) -> str:
        variants = f" ({self.variants} kept as variants of an existing Message-ID)" if self.variants else ""
        return (
            f"{self.seen} read: {self.ingested} ingested{variants}, {self.duplicates} duplicates,"
            f" {self.rejected} rejected{self._skipped()}; {self.conversations} conversations owed analysis"
        )

    def _skipped(self) -> str:
        if not self.skipped:
            return ""
        return f", {self.skipped} {'file' if self.skipped == 1 else 'files'} passed over (not mail)"


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
    parallel: bool | None = None,
) -> IngestSummary:
    """Ingest ``paths``. ``parallel``: parse a large JSONL input in a second process (None: when
    this machine has a core to spare)."""
    from mailcli.ingest.readers import iter_units

    check_paths(paths)
    units = iter_units(paths, fmt, (batch_size, BATCH_CHARS))
    if parallel is None:
        parallel = _cores() > 1
    writer = IngestWriter(store, queue_priority=queue_priority)
    summary = IngestSummary()
    parsed = _parsed(_batches(units, batch_size), parallel, batch_size)
    with BackgroundCheckpoints(store) as checkpoints, closing(parsed):  # closing: stops the parse process
        for prepared, records in parsed:
            rejects = [r for r in records if isinstance(r, Reject)]
            if len(rejects) < len(records):
                skipped = [r for r in records if isinstance(r, Skipped)]
                summary.skipped += len(skipped)
                summary.skipped_first.extend(skipped[: 20 - len(summary.skipped_first)])
            writer.add_rejects(rejects)
            writer.add_batch(prepared)
            checkpoints.nudge()
            if len(summary.rejects) < 20:
                summary.rejects.extend(rejects[: 20 - len(summary.rejects)])
            c = writer.counts
            summary.ingested, summary.duplicates, summary.rejected = c.ingested, c.duplicates, c.rejected
            summary.variants = c.variants
            summary.merged = c.merged
            if on_batch:
                on_batch(summary)
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


# --------------------------------------------------------------------------------------------
# Batches, parsed here or in parse processes
# --------------------------------------------------------------------------------------------


def _batches(
    units: Iterable[Email | Reject | Skipped | LineChunk], batch_size: int
) -> Iterator[LineChunk | list]:
    """One write batch each: a chunk of JSONL lines, or records the readers already parsed,
    grouped by count and body size."""
    records: list[Email | Reject | Skipped] = []
    chars = 0
    for unit in units:
        if isinstance(unit, LineChunk):
            if records:
                yield records
                records, chars = [], 0
            yield unit
            continue
        records.append(unit)
        if isinstance(unit, Email):
            chars += len(unit.body)
        if len(records) >= batch_size or chars >= BATCH_CHARS:
            yield records
            records, chars = [], 0
    if records:
        yield records


def parse_batch(batch: LineChunk | list[Email | Reject]) -> Parsed:
    """A batch as the writer takes it: prepared emails, and rejects (with the files passed over).
    Runs in a parse process too."""
    rejects: list[Reject | Skipped] = []

    def emails() -> Iterator[Email]:  # prepared one by one: no batch of Email objects held
        for record in batch.records() if isinstance(batch, LineChunk) else batch:
            if isinstance(record, Reject | Skipped):
                rejects.append(record)
            else:
                yield record

    return prepare_batch(emails()), rejects


def _parsed(batches: Iterable[LineChunk | list], parallel: bool, batch_size: int) -> Iterator[Parsed]:
    """parse_batch of every batch, in order.

    When a chunk of JSONL comes full (more will follow; a smaller input is not worth a process),
    a parse process starts, and chunks go to it, at most AHEAD ahead of the writer. While it
    starts (a fresh interpreter, 0.1-0.3 s), chunks are parsed here rather than waited for.
    """
    from mailcli.ingest.parse_process import ParseProcess

    child: ParseProcess | None = None
    pending: deque[Parsed | None] = deque()  # None: a result the parse process owes
    try:
        for batch in batches:
            if parallel and child is None and isinstance(batch, LineChunk) and _full(batch, batch_size):
                child = _start(ParseProcess)
                parallel = child is not None
            if child is not None and isinstance(batch, LineChunk) and child.ready():
                child.submit(batch)
                pending.append(None)
            else:
                pending.append(parse_batch(batch))
            while pending and (len(pending) > AHEAD or pending[0] is not None):
                yield _next(pending, child)
        while pending:
            yield _next(pending, child)
    finally:
        if child is not None:
            child.close()


def _start(process: type[ParseProcess]) -> ParseProcess | None:
    try:
        return process()
    except OSError as exc:  # no interpreter to start, out of processes: parse here then
        log.debug("no parse process (%s): parsing in this process", exc)
        return None


def _full(chunk: LineChunk, batch_size: int) -> bool:
    return len(chunk.lines) >= batch_size or sum(map(len, chunk.lines)) >= BATCH_CHARS


def _next(pending: deque[Parsed | None], child: ParseProcess | None) -> Parsed:
    done = pending.popleft()
    if done is None:
        assert child is not None
        return child.result()
    return done


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1

"""Writing ingested emails: dedupe, threading into conversations, rejects.

Threading is JWZ's id table without its subject heuristics: every Message-ID, In-Reply-To and
References entry is a container key, and so is the source's own conversation/thread id; emails that
share any key are one conversation. The key -> conversation map is persisted in `thread_keys`, so
a reply ingested next week, from another export with another source conversation id, still joins
its thread, and two conversations that a new email links are merged.

What needs no database (each email's row and keys, the batch's own duplicates and threads) is done
by :mod:`mailcli.ingest.rows`, possibly in a parse process; this module does the rest.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailcli.ingest.model import Email, Reject
from mailcli.ingest.rows import (
    COLUMNS,
    DATE,
    FINGERPRINT_COLUMNS,
    SUBJECT,
    PreparedBatch,
    Row,
    against_stored,
    is_variant,
    prepare_batch,
    without,
)  # fmt: skip
from mailcli.store.db import Store, now_iso
from mailcli.store.lifecycle import emails_joined

log = logging.getLogger(__name__)

_PARAMS = 900  # SQLite's bound-parameter limit is 999 on old builds
_FINGERPRINT_SQL = ", ".join(FINGERPRINT_COLUMNS)  # what rows.fingerprint() reads of a stored email
_SUBJECT_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|sv|wg)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def base_subject(subject: str) -> str:
    return _SUBJECT_PREFIX.sub("", subject or "").strip()


@dataclass
class IngestCounts:
    ingested: int = 0
    duplicates: int = 0
    variants: int = 0  # of the ingested: copies of a Message-ID whose content differs (rows.py)
    rejected: int = 0
    merged: int = 0
    touched: set[str] = field(default_factory=set)


def _chunks(seq: Sequence[str], n: int = _PARAMS) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class IngestWriter:
    """Takes batches of Emails (or of emails prepared elsewhere, :class:`PreparedBatch`) and
    Rejects; each batch is one transaction."""

    def __init__(self, store: Store, *, queue_priority: str | None = None):
        self.store = store
        self.conn: sqlite3.Connection = store.conn
        self.queue_priority = queue_priority
        self.counts = IngestCounts()

    # -- public ---------------------------------------------------------------------------

    def add_rejects(self, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        ts = now_iso()
        with self.store.write():
            self.conn.executemany(
                "INSERT OR IGNORE INTO rejects (source, locator, reason, created_at) VALUES (?, ?, ?, ?)",
                [(r.source, r.locator, r.reason, ts) for r in rejects],
            )
        self.counts.rejected += len(rejects)

    def add_emails(self, emails: Sequence[Email]) -> None:
        self.add_batch(prepare_batch(emails))

    def add_batch(self, batch: PreparedBatch) -> None:
        """Store a batch of prepared emails: dedupe, thread, insert, refresh their conversations."""
        # one write transaction from the dedupe lookup to the last row: another ingest (or the sink)
        # either wrote before it, and is seen by every lookup here, or writes after it
        with self.store.write():
            stored = self._stored(batch.rows)
            fresh, (row_threads, key_threads) = (
                without(batch, stored) if stored else (batch.rows, batch.threads)
            )
            if fresh:
                conv_of, new = self._thread(fresh, row_threads, key_threads)
                self._insert(fresh, conv_of)
                touched = set(conv_of)
                self._refresh_conversations(touched, _new_conversations(new, fresh, conv_of))
        self.counts.duplicates += batch.duplicates + len(stored)
        if fresh:
            self.counts.ingested += len(fresh)
            self.counts.touched |= touched

    # -- steps ----------------------------------------------------------------------------

    def _stored(self, rows: list[Row]) -> set[str]:
        """The dedupe keys of these rows that are stored already: duplicates, to drop.

        A row that is a copy of a stored Message-ID with other content is not one: it is replaced
        in ``rows`` by its variant (its own dedupe key, same thread keys: rows.against_stored).
        Every variant among the rows kept is counted.
        """
        drop, variants = against_stored(rows, self._stored_values)
        if variants:
            rows[:] = [variants.get(row[0], row) for row in rows]
        self.counts.variants += sum(1 for row in rows if is_variant(row[0]) and row[0] not in drop)
        return drop

    def _stored_values(self, keys: list[str]) -> dict[str, tuple[str | None, list]]:
        """Of these dedupe keys, those stored already, each with its email's source id and what its
        fingerprint is made of (rows.against_stored compares a copy of a Message-ID with them)."""
        stored: dict[str, tuple[str | None, list]] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, source_id, *values in self.conn.execute(
                f"SELECT dedupe_key, source_id, {_FINGERPRINT_SQL} FROM emails WHERE dedupe_key IN ({marks})",
                chunk,
            ):
                stored[key] = (source_id, values)
        return stored

    def _thread(
        self, rows: list[Row], row_threads: list[int], key_threads: dict[str, int]
    ) -> tuple[list[str], set[str]]:
        """Conversation id for each row, and the ids of conversations this batch starts (none of
        them stored before); merges conversations that this batch links. ``row_threads`` and
        ``key_threads`` are the rows' threads within the batch (:func:`threads`)."""
        known: dict[str, str] = {}
        for chunk in _chunks(list(key_threads)):
            marks = ",".join("?" * len(chunk))
            known.update(
                self.conn.execute(
                    f"SELECT key, conversation_id FROM thread_keys WHERE key IN ({marks})", chunk
                ).fetchall()
            )
        # thread -> stored conversation ids it touches
        existing: dict[int, set[str]] = {}
        for key, conv in known.items():
            existing.setdefault(key_threads[key], set()).add(conv)
        chosen: dict[int, str] = {}
        fresh: dict[int, str] = {}  # thread -> proposed new conversation id (its first row's)
        # Two threads of the batch may touch one stored conversation, and a later one may merge it
        # away: every conversation is read through what it was merged into.
        merged_into: dict[str, str] = {}

        def current(conv: str) -> str:
            while conv in merged_into:
                conv = merged_into[conv]
            return conv

        for i, thread in enumerate(row_threads):
            if thread in chosen or thread in fresh:
                continue
            convs = {current(c) for c in existing.get(thread, ())}
            if not convs:
                fresh[thread] = rows[i][2]
            elif len(convs) == 1:
                chosen[thread] = next(iter(convs))
            else:
                chosen[thread] = survivor = min(convs)
                self._merge(survivor, sorted(convs - {survivor}))
                merged_into.update(dict.fromkeys(convs - {survivor}, survivor))
        chosen = {thread: current(conv) for thread, conv in chosen.items()}
        # a fresh id may collide with an unrelated conversation's id, stored or new in this batch
        taken = set(chosen.values())
        proposed = list(set(fresh.values()))
        for chunk in _chunks(proposed):
            marks = ",".join("?" * len(chunk))
            taken.update(
                r[0] for r in self.conn.execute(f"SELECT id FROM conversations WHERE id IN ({marks})", chunk)
            )
        new: set[str] = set()
        for i, thread in enumerate(row_threads):
            if thread in fresh and thread not in chosen:
                conv = fresh[thread]
                if conv in taken:
                    conv = f"{conv}#{rows[i][0][-12:]}"  # not looked up: may be stored after all
                else:
                    new.add(conv)
                taken.add(conv)
                chosen[thread] = conv
        self.conn.executemany(
            "INSERT OR IGNORE INTO thread_keys (key, conversation_id) VALUES (?, ?)",
            [(key, chosen[thread]) for key, thread in key_threads.items() if key not in known],
        )
        return [chosen[thread] for thread in row_threads], new

    def _merge(self, survivor: str, others: list[str]) -> None:
        marks = ",".join("?" * len(others))
        c = self.conn
        c.execute(
            f"UPDATE emails SET conversation_id = ? WHERE conversation_id IN ({marks})", [survivor, *others]
        )
        c.execute(
            f"UPDATE thread_keys SET conversation_id = ? WHERE conversation_id IN ({marks})",
            [survivor, *others],
        )
        c.execute(
            f"UPDATE email_analysis SET conversation_id = ? WHERE conversation_id IN ({marks})",
            [survivor, *others],
        )
        c.execute(f"DELETE FROM conversation_analysis WHERE conversation_id IN ({marks})", others)
        c.execute(f"DELETE FROM conversations WHERE id IN ({marks})", others)
        self.counts.merged += len(others)

    def _insert(self, rows: list[Row], conv_of: list[str]) -> None:
        ts = now_iso()
        c = self.conn
        # the single writer numbers the rows itself: no read-back of rowids for the recipients
        first = c.execute("SELECT coalesce(max(rowid), 0) FROM emails").fetchone()[0] + 1
        rowids = range(first, first + len(rows))
        c.executemany(
            _INSERT_EMAIL,
            [(rowid, conv, ts, *row[3]) for rowid, conv, row in zip(rowids, conv_of, rows, strict=True)],
        )
        recipients = [
            (rowid, kind, address)
            for rowid, row in zip(rowids, rows, strict=True)
            for kind, address in row[4]
        ]
        if recipients:
            c.executemany("INSERT INTO recipients (email_rowid, kind, address) VALUES (?, ?, ?)", recipients)

    def _refresh_conversations(self, touched: set[str], new: dict[str, tuple]) -> None:
        """Recompute aggregates of the touched conversations and mark them owed analysis.

        ``new`` holds the aggregates of conversations that only this batch's emails belong to;
        the others are read back from the emails table.
        """
        ts = now_iso()
        c = self.conn
        if new:
            emails_joined(c, [(cid, *stats, self.queue_priority, ts) for cid, stats in new.items()])
        ids = sorted(touched - new.keys())
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            stats = c.execute(
                f"SELECT conversation_id, count(*), min(date), max(date) FROM emails"
                f" WHERE conversation_id IN ({marks}) GROUP BY conversation_id",
                chunk,
            ).fetchall()
            firsts = dict(
                c.execute(
                    f"SELECT conversation_id, subject FROM emails WHERE conversation_id IN ({marks})"
                    " ORDER BY date IS NOT NULL, date DESC, rowid DESC",
                    chunk,
                ).fetchall()
            )  # later rows win in dict(): the earliest email's subject remains
            emails_joined(
                c,
                [
                    (cid, base_subject(firsts.get(cid, "")), n, first, last, self.queue_priority, ts)
                    for cid, n, first, last in stats
                ],
            )


class BackgroundCheckpoints:
    """While a long ingest writes, copy the WAL into the database from a thread with its own
    connection, rather than in the writer's commits.

    By default SQLite checkpoints in the committing connection, here after every batch: about a
    tenth of the writer's time. The copy is SQLite's C code, which releases the GIL, so on a
    second core it runs beside the writer's Python work. Durability and readers are unchanged (the
    commits and the WAL are the same); the writer's connection gets its own setting back on close.

        with BackgroundCheckpoints(store) as checkpoints:
            for batch in batches:
                writer.add_batch(batch)
                checkpoints.nudge()
    """

    def __init__(self, store: Store):
        self._writer = store.conn
        self._saved = self._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        self._conn = sqlite3.connect(store.path, check_same_thread=False)
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Say that a batch was committed: checkpoint what the WAL holds."""
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
        self._conn.close()
        self._writer.execute(f"PRAGMA wal_autocheckpoint={int(self._saved)}")

    def __enter__(self) -> BackgroundCheckpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # nothing is lost: the WAL keeps it for the next checkpoint
                log.debug("background checkpoint failed: %s", exc)


def _new_conversations(new: set[str], rows: list[Row], conv_of: list[str]) -> dict[str, tuple]:
    """(subject, email_count, first_date, last_date) of each conversation in ``new``, from the
    batch alone: what the emails table would say (the earliest dated email's subject, the first
    one's when none is dated)."""
    stats: dict[str, list] = {}
    for conv, row in zip(conv_of, rows, strict=True):
        if conv not in new:
            continue
        date = row[3][DATE]
        s = stats.get(conv)
        if s is None:
            stats[conv] = [row[3][SUBJECT], 1, date, date]
            continue
        s[1] += 1
        if date is not None:
            if s[2] is None or date < s[2]:
                s[0], s[2] = row[3][SUBJECT], date
            if s[3] is None or date > s[3]:
                s[3] = date
    return {
        conv: (base_subject(subject), n, first, last) for conv, (subject, n, first, last) in stats.items()
    }


_INSERT_EMAIL = (
    f"INSERT INTO emails (rowid, conversation_id, ingested_at, {', '.join(COLUMNS)})"
    f" VALUES ({', '.join('?' * (3 + len(COLUMNS)))})"
)

"""Writing ingested emails: dedupe, threading into conversations, rejects.

Threading is JWZ's id table without its subject heuristics: every Message-ID, In-Reply-To and
References entry is a container key, and so is the source's own conversation/thread id; emails that
share any key are one conversation (union-find). The key -> conversation map is persisted in
`thread_keys`, so a reply ingested next week, from another export with another source conversation
id, still joins its thread, and two conversations that a new email links are merged.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailcli.ingest.model import Email, Reject
from mailcli.store.db import Store, now_iso

_PARAMS = 900  # SQLite's bound-parameter limit is 999 on old builds
_SUBJECT_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|sv|wg)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def base_subject(subject: str) -> str:
    return _SUBJECT_PREFIX.sub("", subject or "").strip()


def thread_keys(email: Email) -> list[str]:
    keys = []
    if email.source_conversation_id:
        keys.append("cid:" + email.source_conversation_id)
    if email.message_id:
        keys.append("mid:" + email.message_id)
    for ref in email.references:
        keys.append("mid:" + ref)
    if email.in_reply_to:
        keys.append("mid:" + email.in_reply_to)
    if not keys:
        keys.append(email.dedupe_key)
    return keys


def new_conversation_id(email: Email) -> str:
    """Readable and stable: the source's conversation id, else the thread root's Message-ID."""
    if email.source_conversation_id:
        return email.source_conversation_id
    if email.references:
        return email.references[0]
    if email.in_reply_to:
        return email.in_reply_to
    return email.message_id or email.public_id


@dataclass
class IngestCounts:
    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0
    merged: int = 0
    touched: set[str] = field(default_factory=set)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _chunks(seq: Sequence[str], n: int = _PARAMS) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class IngestWriter:
    """Takes batches of Emails and Rejects; each batch is one transaction."""

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
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO rejects (source, locator, reason, created_at) VALUES (?, ?, ?, ?)",
                [(r.source, r.locator, r.reason, ts) for r in rejects],
            )
        self.counts.rejected += len(rejects)

    def add_emails(self, emails: Sequence[Email]) -> None:
        if not emails:
            return
        fresh = self._drop_duplicates(emails)
        if not fresh:
            return
        with self.conn:
            conv_of = self._thread(fresh)
            self._insert(fresh, conv_of)
            touched = set(conv_of.values())
            self._refresh_conversations(touched)
        self.counts.ingested += len(fresh)
        self.counts.touched |= touched

    # -- steps ----------------------------------------------------------------------------

    def _drop_duplicates(self, emails: Sequence[Email]) -> list[Email]:
        by_key: dict[str, Email] = {}
        for e in emails:
            by_key.setdefault(e.dedupe_key, e)
        existing: set[str] = set()
        keys = list(by_key)
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            existing.update(
                r[0] for r in self.conn.execute(f"SELECT dedupe_key FROM emails WHERE dedupe_key IN ({marks})", chunk)
            )
        fresh = [e for k, e in by_key.items() if k not in existing]
        self.counts.duplicates += len(emails) - len(fresh)
        return fresh

    def _thread(self, emails: list[Email]) -> dict[int, str]:
        """Conversation id for each email (by index); merges conversations that this batch links."""
        uf = _UnionFind()
        keys_of = []
        for e in emails:
            keys = thread_keys(e)
            keys_of.append(keys)
            first = keys[0]
            uf.find(first)
            for k in keys[1:]:
                uf.union(first, k)
        all_keys = list(uf.parent)
        known: dict[str, str] = {}
        for chunk in _chunks(all_keys):
            marks = ",".join("?" * len(chunk))
            known.update(
                self.conn.execute(
                    f"SELECT key, conversation_id FROM thread_keys WHERE key IN ({marks})", chunk
                ).fetchall()
            )
        # component root -> existing conversation ids it touches
        existing: dict[str, set[str]] = {}
        for key, conv in known.items():
            existing.setdefault(uf.find(key), set()).add(conv)
        roots = [uf.find(keys[0]) for keys in keys_of]
        chosen: dict[str, str] = {}
        fresh: dict[str, str] = {}  # root -> proposed new conversation id
        for i, root in enumerate(roots):
            if root in chosen or root in fresh:
                continue
            convs = existing.get(root)
            if not convs:
                fresh[root] = new_conversation_id(emails[i])
            elif len(convs) == 1:
                chosen[root] = next(iter(convs))
            else:
                chosen[root] = min(convs)
                self._merge(chosen[root], sorted(convs - {chosen[root]}))
        # a fresh id may collide with an unrelated conversation's id, stored or new in this batch
        taken = set(chosen.values())
        proposed = list(set(fresh.values()))
        for chunk in _chunks(proposed):
            marks = ",".join("?" * len(chunk))
            taken.update(r[0] for r in self.conn.execute(f"SELECT id FROM conversations WHERE id IN ({marks})", chunk))
        for i, root in enumerate(roots):
            if root in fresh and root not in chosen:
                conv = fresh[root]
                if conv in taken:
                    conv = f"{conv}#{emails[i].dedupe_key[-12:]}"
                taken.add(conv)
                chosen[root] = conv
        result = {i: chosen[root] for i, root in enumerate(roots)}
        rows = [(k, chosen[uf.find(k)]) for k in all_keys if k not in known]
        self.conn.executemany("INSERT OR IGNORE INTO thread_keys (key, conversation_id) VALUES (?, ?)", rows)
        return result

    def _merge(self, survivor: str, others: list[str]) -> None:
        marks = ",".join("?" * len(others))
        c = self.conn
        c.execute(f"UPDATE emails SET conversation_id = ? WHERE conversation_id IN ({marks})", [survivor, *others])
        c.execute(f"UPDATE thread_keys SET conversation_id = ? WHERE conversation_id IN ({marks})", [survivor, *others])
        c.execute(
            f"UPDATE email_analysis SET conversation_id = ? WHERE conversation_id IN ({marks})", [survivor, *others]
        )
        c.execute(f"DELETE FROM conversation_analysis WHERE conversation_id IN ({marks})", others)
        c.execute(f"DELETE FROM conversations WHERE id IN ({marks})", others)
        self.counts.merged += len(others)

    def _insert(self, emails: list[Email], conv_of: dict[int, str]) -> None:
        ts = now_iso()
        c = self.conn
        # the single writer numbers the rows itself: no read-back of rowids for the recipients
        base = c.execute("SELECT coalesce(max(rowid), 0) FROM emails").fetchone()[0]
        rows = []
        for i, e in enumerate(emails):
            rows.append(
                (
                    base + i + 1,
                    e.public_id,
                    e.dedupe_key,
                    e.message_id,
                    e.source_id,
                    e.source_conversation_id,
                    conv_of[i],
                    e.subject,
                    e.body,
                    e.from_addr,
                    e.from_name,
                    e.date,
                    e.in_reply_to,
                    json.dumps(e.references) if e.references else None,
                    e.importance,
                    int(e.has_attachments),
                    json.dumps(e.notes) if e.notes else None,
                    e.source,
                    e.locator,
                    ts,
                )
            )
        c.executemany(
            "INSERT INTO emails (rowid, id, dedupe_key, message_id, source_id, source_conversation_id,"
            " conversation_id, subject, body, from_addr, from_name, date, in_reply_to, refs, importance,"
            " has_attachments, notes, source, locator, ingested_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        recips = []
        for i, e in enumerate(emails):
            rid = base + i + 1
            recips.extend((rid, "to", a) for a in e.to)
            recips.extend((rid, "cc", a) for a in e.cc)
            recips.extend((rid, "bcc", a) for a in e.bcc)
        if recips:
            c.executemany("INSERT INTO recipients (email_rowid, kind, address) VALUES (?, ?, ?)", recips)

    def _refresh_conversations(self, touched: set[str]) -> None:
        """Recompute aggregates of the touched conversations and mark them owed analysis."""
        ts = now_iso()
        ids = sorted(touched)
        c = self.conn
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
            c.executemany(
                "INSERT INTO conversations (id, subject, email_count, first_date, last_date, status, queue_priority,"
                " revision, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, 1, ?)"
                " ON CONFLICT (id) DO UPDATE SET subject = excluded.subject, email_count = excluded.email_count,"
                " first_date = excluded.first_date, last_date = excluded.last_date, status = 'pending',"
                " queue_priority = coalesce(excluded.queue_priority, conversations.queue_priority),"
                " revision = conversations.revision + 1, updated_at = excluded.updated_at",
                [
                    (cid, base_subject(firsts.get(cid, "")), n, first, last, self.queue_priority, ts)
                    for cid, n, first, last in stats
                ],
            )

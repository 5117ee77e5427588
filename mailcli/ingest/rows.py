"""What the store needs from a batch of emails, worked out without the database.

:func:`prepare` turns an :class:`Email` into a plain tuple: its dedupe key, its thread keys, the
conversation id it would start, the ``emails`` columns and its recipients. :func:`prepare_batch`
does that for a batch, drops the batch's own duplicates (the first copy wins) and groups the rest
into threads. Nothing here reads the database, so this work can run in a parse process while the
main process writes (see :mod:`mailcli.ingest.run`); what is left for the writer
(:mod:`mailcli.ingest.writer`) is the part that needs the database: dropping stored duplicates,
joining stored threads, inserting.

Rows are plain tuples rather than a class because they cross a process boundary in batches of
thousands: tuples of strings are what pickle handles fastest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mailcli.ingest.model import Email

# The ``emails`` columns a prepared row carries, in this order. The writer adds rowid,
# conversation_id and ingested_at.
COLUMNS = (
    "id", "dedupe_key", "message_id", "source_id", "source_conversation_id", "subject", "body",
    "from_addr", "from_name", "date", "in_reply_to", "refs", "importance", "has_attachments", "notes",
    "source", "locator",
)  # fmt: skip
SUBJECT, DATE = COLUMNS.index("subject"), COLUMNS.index("date")
ID, DEDUPE_KEY, MESSAGE_ID = COLUMNS.index("id"), COLUMNS.index("dedupe_key"), COLUMNS.index("message_id")
SOURCE_ID = COLUMNS.index("source_id")
# What makes two emails with one Message-ID the same email (see fingerprint()).
FINGERPRINT_COLUMNS = ("from_addr", "date", "subject", "body", "in_reply_to", "refs")
_FINGERPRINTED = tuple(COLUMNS.index(c) for c in FINGERPRINT_COLUMNS)

# A prepared row: (dedupe_key, thread_keys, proposed_conversation_id, columns, recipients), where
# recipients is a tuple of (kind, address) pairs, kind being "to", "cc" or "bcc".
Row = tuple[str, tuple[str, ...], str, tuple, tuple[tuple[str, str], ...]]


def thread_keys(email: Email) -> list[str]:
    """The email's keys in the thread id table (JWZ): its source conversation id, its Message-ID
    and every id it refers to. An email with none of these is a thread of its own."""
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


def prepare(email: Email) -> Row:
    key = email.dedupe_key
    columns = (
        email.public_id,
        key,
        email.message_id,
        email.source_id,
        email.source_conversation_id,
        email.subject,
        email.body,
        email.from_addr,
        email.from_name,
        email.date,
        email.in_reply_to,
        _json_list(email.references) if email.references else None,
        email.importance,
        int(email.has_attachments),
        json.dumps(email.notes) if email.notes else None,
        email.source,
        email.locator,
    )
    recipients = (
        *[("to", a) for a in email.to],
        *[("cc", a) for a in email.cc],
        *[("bcc", a) for a in email.bcc],
    )
    return key, tuple(thread_keys(email)), new_conversation_id(email), columns, recipients


def _json_list(items: list[str]) -> str:
    """json.dumps(items), without its overhead (half of prepare's time) for the usual list of
    plain ASCII Message-IDs: nothing in them that JSON escapes."""
    joined = "".join(items)
    if joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
        return '["' + '", "'.join(items) + '"]'
    return json.dumps(items)


# --------------------------------------------------------------------------------------------
# Copies of one Message-ID: duplicates when identical, variants when not
# --------------------------------------------------------------------------------------------
#
# An email's dedupe key is its Message-ID ("mid:..."). Copies of one Message-ID are the same email
# when their fingerprints are equal: same sender, date, subject, body text (line endings and
# trailing white space aside), In-Reply-To and References. What mail servers add on the way
# (Received, Delivered-To, list headers) is not read, so two deliveries of one mail are duplicates.
# A copy that differs (a bug tracker's resend with its own subject and References, a list's copy
# with a footer) is kept as a variant: an email of its own under the key "var:<fingerprint>:<id>",
# threaded by the same Message-ID into the same conversation. The first copy stored keeps "mid:".


def fingerprint(values: Sequence) -> str:
    """Hash of the FINGERPRINT_COLUMNS values (as stored in ``emails``, in that order)."""
    h = hashlib.sha256()
    for name, value in zip(FINGERPRINT_COLUMNS, values, strict=True):
        if value is None:
            value = ""
        elif name == "body":
            value = "\n".join(line.rstrip() for line in value.replace("\r\n", "\n").split("\n")).strip()
        h.update(str(value).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def fingerprint_values(row: Row) -> list:
    """The row's FINGERPRINT_COLUMNS values, as ``emails`` stores them."""
    columns = row[3]
    return [columns[i] for i in _FINGERPRINTED]


def row_fingerprint(row: Row) -> str:
    return fingerprint(fingerprint_values(row))


def same_source_email(row: Row, source_id: str | None) -> bool:
    """A copy carrying the source id of the email it copies is that email, whatever else differs
    (the first copy is kept): a source id names one email in its mailbox."""
    return bool(source_id) and row[3][SOURCE_ID] == source_id


def is_variant(key: str) -> bool:
    return key.startswith("var:")


def as_variant(row: Row, fp: str) -> Row:
    """``row`` as a variant of its Message-ID: its own dedupe key, and its own id when the id was
    the Message-ID (ids stay unique per email)."""
    columns = list(row[3])
    key = f"var:{fp}:{columns[MESSAGE_ID]}"
    columns[DEDUPE_KEY] = key
    if columns[ID] == columns[MESSAGE_ID]:
        columns[ID] = f"{columns[ID]}#{fp[:8]}"
    return key, row[1], row[2], tuple(columns), row[4]


def against_stored(
    rows: Sequence[Row], lookup: Callable[[list[str]], dict[str, tuple[str | None, list]]]
) -> tuple[set[str], dict[str, Row]]:
    """Which rows are copies of stored emails, and which become variants of a stored Message-ID.

    ``lookup(keys)`` gives, for each of ``keys`` that is stored, that stored email's source id and
    its FINGERPRINT_COLUMNS values. Returns the keys to drop as duplicates and, by key, the rows to
    store as variants instead. A copy equal to the stored email value for value (the usual
    duplicate) is found without hashing.
    """
    need = {row[0] for row in rows}
    need.update("mid:" + row[3][MESSAGE_ID] for row in rows if is_variant(row[0]))
    stored = lookup(sorted(need))
    if not stored:
        return set(), {}
    drop: set[str] = set()
    ask: dict[str, Row] = {}  # variant key -> the row that would become it
    for row in rows:
        key = row[0]
        if is_variant(key):  # a variant within the batch: a copy of the stored first one?
            base = stored.get("mid:" + row[3][MESSAGE_ID])
            if key in stored or (
                base is not None and (same_source_email(row, base[0]) or fingerprint(base[1]) == key[4:20])
            ):
                drop.add(key)
            continue
        if key not in stored:
            continue
        if not key.startswith("mid:"):
            drop.add(key)  # the same source id or content hash: the same email
            continue
        source_id, stored_values = stored[key]
        values = fingerprint_values(row)
        if values == stored_values or same_source_email(row, source_id):
            drop.add(key)
            continue
        fp = fingerprint(values)
        if fingerprint(stored_values) == fp:
            drop.add(key)
            continue
        variant = as_variant(row, fp)
        ask[variant[0]] = variant
    rekeyed: dict[str, Row] = {}
    if ask:
        present = lookup(list(ask))
        for vkey, variant in ask.items():
            base_key = "mid:" + variant[3][MESSAGE_ID]
            if vkey in present:
                drop.add(base_key)
            else:
                rekeyed[base_key] = variant
    return drop, rekeyed


# Each row's thread, and each thread key's: (thread per row, {key: thread}). Threads are numbers
# that mean nothing but "the same thread".
Threads = tuple[list[int], dict[str, int]]


@dataclass(slots=True)
class PreparedBatch:
    """A batch of emails as the writer takes it."""

    rows: list[Row]  # the first email of each dedupe key in the batch, variants included, in input order
    duplicates: int  # later identical copies in the batch, dropped
    threads: Threads  # threads(rows)


def prepare_batch(emails: Iterable[Email]) -> PreparedBatch:
    """Rows of ``emails``; an identical later copy of a Message-ID is dropped, one that differs
    becomes a variant (fingerprints are computed only when a Message-ID comes twice)."""
    first: dict[str, Row] = {}
    kept: dict[str, set[str]] = {}  # Message-ID key -> fingerprints of its copies kept
    n = 0
    for email in emails:
        row = prepare(email)
        n += 1
        key = row[0]
        if key not in first:
            first[key] = row
            continue
        if not key.startswith("mid:"):
            continue  # the same source id or content hash: the same email
        values = fingerprint_values(row)
        if values == fingerprint_values(first[key]) or same_source_email(row, first[key][3][SOURCE_ID]):
            continue  # the usual duplicate: equal value for value, no hashing; or the same source id
        fps = kept.get(key)
        if fps is None:
            fps = kept[key] = {row_fingerprint(first[key])}
        fp = fingerprint(values)
        if fp not in fps:
            fps.add(fp)
            variant = as_variant(row, fp)
            first[variant[0]] = variant
    rows = list(first.values())
    return PreparedBatch(rows, n - len(rows), threads(rows))


def threads(rows: Sequence[Row]) -> Threads:
    """Rows that share a thread key, directly or through other rows, are one thread (JWZ's id
    table: the connected components of rows and keys).

    A new thread takes the number of the row that starts it; when a row links two threads, the
    keys of the smaller one are relabelled, so that no key moves more than log2(n) times.
    """
    thread_of: dict[str, int] = {}
    members: dict[int, list[str]] = {}
    for i, row in enumerate(rows):
        keys = row[1]
        found = {thread_of[k] for k in keys if k in thread_of}
        if not found:
            thread_of.update(dict.fromkeys(keys, i))
            members[i] = list(keys)
            continue
        thread = found.pop() if len(found) == 1 else max(found, key=lambda t: len(members[t]))
        for other in found - {thread}:
            moved = members.pop(other)
            thread_of.update(dict.fromkeys(moved, thread))
            members[thread] += moved
        new = [k for k in keys if k not in thread_of]
        if new:
            thread_of.update(dict.fromkeys(new, thread))
            members[thread] += new
    return [thread_of[row[1][0]] for row in rows], thread_of


def without(batch: PreparedBatch, drop: set[str]) -> tuple[list[Row], Threads]:
    """The batch's rows minus those whose dedupe key is in ``drop``, and their threads.

    Only the threads that lost a row are grouped again (a dropped row may have been what linked
    the others); the rest keep theirs, so this costs little when a few rows go.
    """
    row_threads, key_threads = batch.threads
    hit = {t for row, t in zip(batch.rows, row_threads, strict=True) if row[0] in drop}
    rows: list[Row] = []
    kept_threads: list[int] = []
    again: list[int] = []  # positions in rows of the rows whose thread lost one
    for row, t in zip(batch.rows, row_threads, strict=True):
        if row[0] in drop:
            continue
        if t in hit:
            again.append(len(rows))
        rows.append(row)
        kept_threads.append(t)
    if not hit:
        return rows, (kept_threads, key_threads)
    sub_rows, sub_keys = threads([rows[i] for i in again])
    for i, t in zip(again, sub_rows, strict=True):
        kept_threads[i] = -1 - t  # numbers no untouched thread has
    keys = {k: t for k, t in key_threads.items() if t not in hit}
    keys.update((k, -1 - t) for k, t in sub_keys.items())
    return rows, (kept_threads, keys)

"""The one normalized record every reader produces, and the reject it produces instead."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Bodies longer than this are kept but trimmed, with a note on the email (an email is never rejected for its size).
MAX_BODY_CHARS = 1_000_000


@dataclass(slots=True)
class Email:
    """One email as every reader hands it to the store, whatever the export format.

    Addresses are lower-cased bare addresses; ``date`` is ISO 8601 in UTC or None;
    ``message_id``/``in_reply_to``/``references`` are normalized with :func:`normalize_message_id`.
    """

    source: str  # file path, or "-" for stdin
    locator: str  # "line 12", "message 3", or a file name inside a directory
    source_id: str | None = None  # the id the input gave (Graph/Gmail/flat `id`)
    message_id: str | None = None
    source_conversation_id: str | None = None  # Graph conversationId, Gmail threadId, flat conversation_id
    subject: str = ""
    body: str = ""  # plain text (HTML already converted)
    from_addr: str = ""
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    date: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    importance: str = "normal"  # low | normal | high
    has_attachments: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. "body trimmed from 20971520 to 1000000 characters"

    @property
    def public_id(self) -> str:
        """The export record's `id`: the id the input gave, else the Message-ID, else the content hash."""
        return self.source_id or self.message_id or self.content_hash

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.from_addr, self.date or "", self.subject, self.body):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()[:32]

    @property
    def dedupe_key(self) -> str:
        """Duplicates share this key: normalized Message-ID, else source id, else a hash of sender, date, subject, body."""
        if self.message_id:
            return "mid:" + self.message_id
        if self.source_id:
            return "sid:" + self.source_id
        return "hash:" + self.content_hash


@dataclass(slots=True, frozen=True)
class Reject:
    """A record that could not be used: stored in the rejects table, never fatal to the file."""

    source: str
    locator: str  # "line 7", "message 3", "file foo.eml", or "file" for the whole input
    reason: str


@dataclass(slots=True, frozen=True)
class Skipped:
    """A file or folder passed over on purpose: a mail tool's bookkeeping (hidden files such as
    .DS_Store or mbsync's .uidvalidity, Dovecot's dovecot-uidlist), never mail. Not a reject (it
    does not fail ``--strict``), but counted and named in the ingest summary."""

    source: str  # its path
    reason: str


class InputError(Exception):
    """A whole input cannot be read (missing path, unreadable): one line, names the path and the fix."""


def normalize_message_id(value: object) -> str | None:
    """`<ABC@x.com>` -> `abc@x.com`; empty or non-string -> None."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if v.startswith("<"):
        end = v.find(">")
        v = v[1:end] if end > 0 else v[1:]
    v = v.strip().lower()
    return v or None

"""RFC 822/MIME messages: mbox files, single .eml files, Maildirs, and the MIME body walk.

Parsing uses ``email.policy.compat32`` on purpose. Tested against broken headers, the modern
``email.policy.default`` raises lazily (IndexError on a mangled address list, LookupError on a
bogus charset when reading the body); compat32 hands back raw strings and never raises, and we
decode those ourselves with fallbacks (:mod:`mailcli.ingest.text`).

The body walk works on a small neutral :class:`Part` tree so the same rules serve parsed MIME
messages here and Gmail API ``payload`` JSON in :mod:`mailcli.ingest.jsonl`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from mailcli.ingest.model import Email, Reject
from mailcli.ingest.text import (
    decode_bytes,
    decode_header_value,
    html_to_text,
    normalize_importance,
    parse_date,
    parse_message_ids,
    parse_mime_addresses,
    trim_body,
)

# A message needs at least one of these to count as an email (a text file whose first line
# happens to contain a colon does not).
KNOWN_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "received", "return-path",
    "mime-version", "content-type", "sender", "reply-to", "delivered-to", "in-reply-to",
    "references", "x-gm-thrid",
})  # fmt: skip
# Detached signatures are part of signing, not attachments a user sent.
_SIGNATURE_TYPES = frozenset({"application/pgp-signature", "application/pkcs7-signature",
                              "application/x-pkcs7-signature"})  # fmt: skip
_MAX_DEPTH = 50  # nested multiparts deeper than this are a MIME bomb, not mail

_parser = BytesParser(policy=compat32)


# --------------------------------------------------------------------------------------------
# Body walk over a neutral part tree
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Part:
    """One MIME part, whatever it came from. ``load`` decodes the transfer encoding lazily so
    attachments are never decoded just to be skipped."""

    ctype: str
    disposition: str = ""
    filename: str = ""
    charset: str | None = None
    children: list[Part] = field(default_factory=list)
    load: Callable[[], bytes] = bytes


@dataclass(slots=True)
class _Body:
    texts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    has_attachments: bool = False


def _leaf_text(part: Part, out: _Body) -> str:
    text, note = decode_bytes(part.load(), part.charset)
    if note and note not in out.notes:
        out.notes.append(note)
    return html_to_text(text) if part.ctype == "text/html" else text


def _walk(part: Part, parent: str, out: _Body, depth: int) -> None:
    if depth > _MAX_DEPTH:
        out.notes.append("MIME nesting too deep; inner parts skipped")
        return
    if part.children:
        if part.ctype == "multipart/alternative":
            _walk_alternative(part, out, depth)
        else:  # mixed, related, signed, report, ...: every inline part in order
            for child in part.children:
                _walk(child, part.ctype, out, depth + 1)
        return
    ctype = part.ctype
    if ctype in _SIGNATURE_TYPES:
        return
    main = ctype.partition("/")[0]
    in_related = parent == "multipart/related"
    if (
        part.disposition == "attachment"
        or ctype == "message/rfc822"  # a forwarded email
        # A file name marks an attachment, except on a message that is nothing but one text part.
        or (not in_related and (main not in ("text", "multipart") or (part.filename and parent)))
    ):
        out.has_attachments = True
        return
    if main != "text" and main != "multipart":
        return  # an image embedded in HTML (multipart/related): not text, not an attachment
    if ctype in ("text/plain", "text/html") or main == "multipart":
        # A "multipart" leaf is a multipart without a usable boundary: its raw text is all we have.
        out.texts.append(_leaf_text(part, out))
    # Other inline text/* (calendar, vcard) is neither body nor attachment.


def _walk_alternative(part: Part, out: _Body, depth: int) -> None:
    """Use the first alternative that yields text, trying text/plain before richer versions."""
    rank = {"text/plain": 0, "text/html": 2}

    def order(child: Part) -> int:
        return rank.get(child.ctype, 1 if child.children else 3)

    for child in sorted(part.children, key=order):  # sorted() is stable: sender order breaks ties
        trial = _Body()
        _walk(child, part.ctype, trial, depth + 1)
        if any(t.strip() for t in trial.texts):
            out.texts.extend(trial.texts)
            out.notes.extend(n for n in trial.notes if n not in out.notes)
            out.has_attachments |= trial.has_attachments
            return


def extract_body(root: Part) -> tuple[str, bool, list[str]]:
    """(plain-text body, has_attachments, notes) from a part tree."""
    out = _Body()
    _walk(root, "", out, 0)
    body = "\n\n".join(t.strip("\r\n") for t in out.texts if t.strip())
    if "\r" in body:
        body = body.replace("\r\n", "\n")
    return body, out.has_attachments, out.notes


def _part_from_message(msg: Message, depth: int = 0) -> Part:
    """Adapt a compat32 Message (and its sub-parts) to :class:`Part`, defensively."""
    try:
        ctype = msg.get_content_type()
    except Exception:  # noqa: BLE001 - header parsing on hostile input
        ctype = "text/plain"
    try:
        disposition = msg.get_content_disposition() or ""
    except Exception:  # noqa: BLE001
        disposition = ""
    try:
        filename = decode_header_value(msg.get_filename() or "")
    except Exception:  # noqa: BLE001
        filename = ""
    try:
        charset = msg.get_content_charset()
    except Exception:  # noqa: BLE001
        charset = None
    children: list[Part] = []
    if msg.is_multipart() and ctype != "message/rfc822" and depth <= _MAX_DEPTH:
        payload = msg.get_payload()
        if isinstance(payload, list):
            children = [_part_from_message(m, depth + 1) for m in payload if isinstance(m, Message)]

    def load() -> bytes:
        try:
            data = msg.get_payload(decode=True)
        except Exception:  # noqa: BLE001
            data = None
        return data if isinstance(data, bytes) else b""

    return Part(ctype, disposition, filename, charset, children, load)


# --------------------------------------------------------------------------------------------
# One message -> Email
# --------------------------------------------------------------------------------------------


def _first_message_id(value: str | None) -> str | None:
    """First plausible id in a Message-ID header; None for junk such as ``<>``."""
    ids = parse_message_ids(value)
    return ids[0] if ids else None


def _gmail_thread_id(value: str | None) -> str | None:
    """Takeout's X-GM-THRID is decimal; the Gmail API's threadId is the same number in hex, so
    converting lets a Takeout mbox and a Gmail API export of one thread share a conversation id."""
    value = (value or "").strip()
    return format(int(value), "x") if value.isdigit() else (value or None)


def _storable(value: str) -> str:
    """Raw 8-bit bytes in a header come out of the compat32 parser as lone surrogates, which SQLite
    cannot store: turn them back into bytes and decode those as UTF-8, replacing what is not."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


def headers_to_email(headers: dict[str, list[str]], root: Part, source: str, locator: str) -> Email:
    """Build the Email from raw header values (name lower-cased) and a body part tree."""

    def first(name: str) -> str | None:
        values = headers.get(name)
        return values[0] if values else None

    def first_id(name: str) -> str | None:
        value = first(name)
        return _storable(value) if value is not None else None

    def addresses(name: str) -> list[str]:
        return [a for v in headers.get(name, ()) for _, a in parse_mime_addresses(v)]

    notes: list[str] = []
    senders = parse_mime_addresses(first("from")) or parse_mime_addresses(first("sender"))
    from_name, from_addr = senders[0] if senders else ("", "")
    raw_date = first("date")
    date, note = parse_date(decode_header_value(raw_date)) if raw_date else (None, None)
    if note:
        notes.append(note)
    importance = "normal"
    for name in ("importance", "x-priority", "priority", "x-msmail-priority"):
        if name in headers:
            importance = normalize_importance(decode_header_value(first(name))) or "normal"
            break
    body, has_attachments, body_notes = extract_body(root)
    notes.extend(body_notes)
    in_reply_to = parse_message_ids(first_id("in-reply-to"))
    return Email(
        source=source,
        locator=locator,
        message_id=_first_message_id(first_id("message-id")),
        source_conversation_id=_gmail_thread_id(first_id("x-gm-thrid")),
        subject=decode_header_value(first("subject")),
        body=trim_body(body, notes),
        from_addr=from_addr,
        from_name=from_name,
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        date=date,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=parse_message_ids(_storable(" ".join(headers.get("references", ())))),
        importance=importance,
        has_attachments=has_attachments,
        notes=notes,
    )


def email_from_bytes(data: bytes, source: str, locator: str) -> Email | Reject:
    """Parse one RFC 822 message. Broken headers degrade; only a header-less blob is rejected."""
    if not data.strip():
        return Reject(source, locator, "empty message")
    try:
        msg = _parser.parsebytes(data)
    except RecursionError:  # the stdlib parser recurses once per nested multipart
        return Reject(source, locator, "MIME parts nested too deeply to parse (a MIME bomb?)")
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.strip().lower(), []).append(value if isinstance(value, str) else str(value))
    if not headers.keys() & KNOWN_HEADERS:
        return Reject(
            source,
            locator,
            "no email headers found (expected From:, To:, Subject:, Date: …): not an RFC 822 message",
        )
    return headers_to_email(headers, _part_from_message(msg), source, locator)


# --------------------------------------------------------------------------------------------
# Containers: mbox, .eml, Maildir
# --------------------------------------------------------------------------------------------

# The asctime From_ line every mbox writer uses (Gmail Takeout, Thunderbird, mutt, Python):
# "From 1797...@xxx Wed Mar 06 16:13:04 +0000 2024". Unescaped "From " lines in bodies do not
# look like this, so a strict match splits even where the writer forgot the blank line.
_FROM_STRICT_RE = re.compile(
    rb"From \S+\s+(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+"
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+\d{1,2}:\d\d"
)
# Any other From_ line must follow a blank line and at least carry a time.
_FROM_LOOSE_RE = re.compile(rb"From \S+ .*\d{1,2}:\d\d")
_ESCAPED_FROM_RE = re.compile(rb">+From ")


def iter_mbox(stream: Iterable[bytes], source: str) -> Iterator[Email | Reject]:
    """Stream an mbox (binary, line by line): one message's lines in memory at a time.

    ``>From `` lines are unescaped one level (mboxrd; for mboxo this is the only sane reading).
    Text before the first From_ line is read as a message too (a lone message saved as .mbox).
    """
    index = 0
    lines: list[bytes] | None = None
    prev_blank = True
    line = b"\n"
    for line in stream:
        if line.startswith(b"From ") and (
            lines is None or _FROM_STRICT_RE.match(line) or (prev_blank and _FROM_LOOSE_RE.match(line))
        ):
            if lines is not None:  # two From_ lines in a row: an empty message, say so
                yield _finish_mbox_message(lines, source, index)
            index += 1
            lines = []
            prev_blank = False
            continue
        if lines is None:
            if not line.strip():
                continue  # blank lines before the first message
            index, lines = 1, []
        if line[:1] == b">" and _ESCAPED_FROM_RE.match(line):
            line = line[1:]
        lines.append(line)
        prev_blank = line in (b"\n", b"\r\n")
    if lines is not None:
        # a file that ends inside a line was cut off (a copy interrupted, a disk that filled up): its
        # last message is kept, with a note that says so, rather than passed off as whole
        yield _finish_mbox_message(lines, source, index, cut=not line.endswith(b"\n"))


CUT_NOTE = (
    "the mbox ends inside this message (no final newline): it may be cut off;"
    " ingest a complete copy and it is kept beside this one as a variant"
)


def _finish_mbox_message(lines: list[bytes], source: str, index: int, *, cut: bool = False) -> Email | Reject:
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines.pop()  # the blank line the mbox format puts before the next From_ line
    record = email_from_bytes(b"".join(lines), source, f"message {index}")
    if cut and isinstance(record, Email):
        record.notes.append(CUT_NOTE)
    return record


def read_eml(path: Path, source: str, locator: str) -> Email | Reject:
    """One .eml file (a single message is bounded, so reading it whole is fine)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Reject(source, locator, f"cannot read file: {exc.strerror or exc}")
    return email_from_bytes(data, source, locator)


def is_maildir(path: Path) -> bool:
    """cur/ or new/ makes a Maildir. Copies often lack the others (git drops empty folders, a
    mailbox that was never read has no cur/ yet), and a Maildir++ folder such as .Sent may hold
    cur/ alone: each is still a Maildir, and its tmp/ is not mail."""
    return (path / "cur").is_dir() or (path / "new").is_dir()

"""JSON Lines exports: one email object a line, in one of three shapes.

* flat: ``subject``, ``body``, ``from``, ``to`` ... as a user would write them;
* Microsoft Graph ``message`` resources (also PascalCase, as PowerShell's ConvertTo-Json writes
  them, and whole ``{"@odata.context": ..., "value": [...]}`` pages on one line);
* Gmail API ``users.messages.get`` results, ``format=full`` (``payload``) or ``format=raw``, and
  whole ``users.threads.get`` threads (``{"id", "historyId", "messages": [...]}``) on one line.

The shape is decided per line, so one file may mix them.

Field-type policy (one rule for every shape): fields that carry the email's identity or content
(ids, subject, body, sender, recipients, message ids) must have the right JSON type, or the
record is rejected with a reason naming the field; an id given as a number is coerced to a
string. Fields that only refine a record (date, importance, has_attachments) never reject it:
a bad value becomes the default and the record gets a note.

This is the hot path of ``mailcli ingest``: one ``json.loads`` per line, dictionary lookups,
no regex compiled per record, HTML conversion only for HTML bodies.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mailcli.ingest.mime import Part, email_from_bytes, headers_to_email
from mailcli.ingest.model import Email, Reject
from mailcli.ingest.text import (
    clean_message_id,
    html_to_text,
    looks_like_html,
    normalize_importance,
    parse_address,
    parse_date,
    parse_message_ids,
    split_addresses,
    trim_body,
)

_JSON_TYPE = {dict: "object", list: "list", str: "string", int: "int", float: "float", bool: "bool",
              type(None): "null"}  # fmt: skip
# Any of these keys means a Graph message (flat exports use snake_case).
_GRAPH_KEYS = frozenset({
    "internetMessageId", "conversationId", "toRecipients", "ccRecipients", "bccRecipients",
    "receivedDateTime", "sentDateTime", "bodyPreview", "uniqueBody", "hasAttachments",
    "internetMessageHeaders", "parentFolderId", "@odata.etag", "@odata.type",
})  # fmt: skip
_CHARSET_PARAM_RE = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
_MISSING = "missing subject and body"
_SURROGATE_RE = re.compile("[\ud800-\udfff]")  # json has already paired the valid ones
# A \uD800-\uDFFF escape in the raw line (a regex: 4x faster than two `in` tests on bytes full
# of "\n" escapes).
_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")


class _FieldError(Exception):
    """A field with the wrong JSON type: becomes a Reject naming the field."""

    def __init__(self, name: str, expected: str, value: object, *, item: bool = False) -> None:
        got = _JSON_TYPE.get(type(value), type(value).__name__)
        super().__init__(
            f"field '{name}' must be {expected}, got " + (f"a list containing {got}" if item else got)
        )


# --------------------------------------------------------------------------------------------
# The line loop
# --------------------------------------------------------------------------------------------


_scan_once = json.JSONDecoder().scan_once  # the C scanner json.loads ends up calling


def _loads(line: str) -> Any:
    """json.loads minus its two Python-level wrapper layers (a tenth of the per-line cost).

    Anything unusual (leading whitespace, trailing data, an error) goes through json.loads
    itself, so errors and edge cases behave exactly as the standard library's.
    """
    try:
        obj, end = _scan_once(line, 0)
    except StopIteration:
        return json.loads(line)
    if end == len(line) or line[end:].isspace():
        return obj
    return json.loads(line)


def iter_jsonl(
    stream: Iterable[bytes], source: str, *, first_line: int = 1, seen_content: bool = False
) -> Iterator[Email | Reject]:
    """Stream JSONL from binary lines. Bad lines become Rejects; the rest of the file goes on.

    ``first_line`` and ``seen_content`` let a :class:`LineChunk` from the middle of a file be
    read as that file would be: its line numbers, and whether a line before it was not blank.
    """
    loads = _loads
    for n, raw in enumerate(stream, first_line):
        notes: list[str] | None = None
        try:
            # Decoding first is faster than handing json.loads bytes (its encoding sniffing
            # runs in Python).
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Keep the record: a stray Latin-1 byte in one field should not lose the email.
            notes = ["invalid UTF-8 bytes replaced with U+FFFD"]
            line = raw.decode("utf-8", "replace")
        if n == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a UTF-8 byte order mark (Windows tools write one)
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            if raw.isspace():
                continue  # blank lines are allowed and silent
            if not seen_content and _is_pretty_printed_start(raw):
                yield Reject(
                    source,
                    f"line {n}",
                    "this is pretty-printed JSON, not JSON Lines (one object per line): convert it first, "
                    "e.g. `jq -c '.[]' FILE` for an array or `jq -c '.value[]' FILE` for a Graph response",
                )
                return
            yield _invalid_json(source, n, line, exc)
            seen_content = True
            continue
        seen_content = True
        if _SURROGATE_ESCAPE_RE.search(raw):
            # "\ud800" escapes decode to lone surrogates, which cannot be stored as UTF-8 later.
            # Checking the raw bytes first keeps this off the path of ordinary lines.
            obj, fixed = _replace_lone_surrogates(obj)
            if fixed:
                notes = (notes or []) + ["invalid \\u escapes (lone surrogates) replaced with U+FFFD"]
        locator = f"line {n}"
        if type(obj) is dict and (_wrapped(obj) is not None or "historyId" in obj):
            yield from _unwrap(obj, source, locator, notes)
            continue
        yield record_from_json(obj, source, locator, notes)


# API responses that hold messages rather than being one (see _wrapped). Keys beyond these make
# the object something else, read as one record.
_GMAIL_THREAD_KEYS = frozenset({"id", "historyId", "snippet", "messages", "nextPageToken", "resultSizeEstimate"})
_GMAIL_THREAD_LIST_KEYS = frozenset({"threads", "nextPageToken", "resultSizeEstimate"})
_GMAIL_THREAD_STUB_KEYS = frozenset({"id", "historyId", "snippet"})


def _wrapped(obj: dict) -> tuple[str, list] | None:
    """The messages an API response on one line holds, with the word their locators use:

    * a Microsoft Graph list page: ``{"@odata.context": ..., "value": [message, ...]}`` (only
      ``value`` and ``@odata.*`` keys) -> "item";
    * a Gmail thread (``users.threads.get``): ``{"id", "historyId", "messages": [message, ...]}``,
      or a ``users.messages.list`` page, whose stubs are then rejected one by one -> "message";
    * a Gmail ``users.threads.list`` page: ``{"threads": [thread, ...], "nextPageToken"}`` -> "thread".
    """
    value = obj.get("value")
    if type(value) is list and all(type(k) is str and (k == "value" or k.startswith("@odata.")) for k in obj):
        return "item", value
    messages = obj.get("messages")
    if type(messages) is list and obj.keys() <= _GMAIL_THREAD_KEYS:
        return "message", messages
    threads = obj.get("threads")
    if type(threads) is list and obj.keys() <= _GMAIL_THREAD_LIST_KEYS:
        return "thread", threads
    return None


def _unwrap(obj: Any, source: str, locator: str, notes: list[str] | None) -> Iterator[Email | Reject]:
    """Every message inside an API response (a thread inside a list of threads too), each with
    its place in the line: "line 3 message 2", "line 1 thread 4 message 1"."""
    wrapped = _wrapped(obj) if type(obj) is dict else None
    if wrapped is None:
        if type(obj) is dict and "historyId" in obj and obj.keys() <= _GMAIL_THREAD_STUB_KEYS:
            yield Reject(
                source, locator,
                "a Gmail thread without its messages (users.threads.list): fetch it with users.threads.get",
            )  # fmt: skip
        else:
            yield record_from_json(obj, source, locator, list(notes or ()))
        return
    word, items = wrapped
    for k, item in enumerate(items, 1):
        yield from _unwrap(item, source, f"{locator} {word} {k}", notes)


def _is_pretty_printed_start(raw: bytes) -> bool:
    """A line that opens pretty-printed JSON, when it is the first line with content."""
    return raw.strip() in (b"{", b"[")


@dataclass(slots=True)
class LineChunk:
    """Consecutive lines of one JSONL input, read now and parsed later, maybe in another process.

    ``seen_content`` says whether a line before ``first_line`` was not blank (iter_jsonl tells a
    pretty-printed file by its first line with content).
    """

    source: str
    first_line: int
    seen_content: bool
    lines: list[bytes]

    def records(self) -> Iterator[Email | Reject]:
        return iter_jsonl(self.lines, self.source, first_line=self.first_line, seen_content=self.seen_content)


def iter_line_chunks(stream: Iterable[bytes], source: str, max_lines: int, max_bytes: int) -> Iterator[LineChunk]:
    """Split a JSONL stream into chunks of at most ``max_lines`` lines and about ``max_bytes``
    bytes, without parsing it. Parsing the chunks in order gives what iter_jsonl(stream) gives:
    reading stops, as iter_jsonl does, after a first line of content that opens pretty-printed JSON.
    """
    first, seen_before, seen = 1, False, False
    lines: list[bytes] = []
    size = 0
    for raw in stream:
        lines.append(raw)
        size += len(raw)
        if not seen and not raw.isspace():
            seen = True
            if _is_pretty_printed_start(raw):
                break
        if len(lines) >= max_lines or size >= max_bytes:
            yield LineChunk(source, first, seen_before, lines)
            first, seen_before = first + len(lines), seen
            lines, size = [], 0
    if lines:
        yield LineChunk(source, first, seen_before, lines)


def _replace_lone_surrogates(value: Any) -> tuple[Any, bool]:
    if type(value) is str:
        fixed = _SURROGATE_RE.sub("\ufffd", value)
        return fixed, fixed != value
    if type(value) is dict:
        pairs = [(k, _replace_lone_surrogates(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, any(f for _, (_, f) in pairs)
    if type(value) is list:
        items = [_replace_lone_surrogates(v) for v in value]
        return [v for v, _ in items], any(f for _, f in items)
    return value, False


def _invalid_json(source: str, n: int, line: str, exc: json.JSONDecodeError) -> Reject:
    if exc.pos >= len(line.rstrip("\r\n")):
        problem = "the line ends before the JSON value does (truncated?)"
    else:  # json's messages read "Expecting ',' delimiter", "Invalid control character at"
        problem = f"{exc.msg.removesuffix(' at')} at column {exc.colno}"
    return Reject(source, f"line {n}", f"invalid JSON: {problem} — fix the line or remove it")


def record_from_json(obj: Any, source: str, locator: str, notes: list[str] | None = None) -> Email | Reject:
    """One decoded JSON value -> Email, or a Reject saying why not. Detects the shape."""
    if type(obj) is not dict:
        got = _JSON_TYPE.get(type(obj), type(obj).__name__)
        hint = ": a JSON array is not JSON Lines; convert it with `jq -c '.[]' FILE`" if type(obj) is list else ""
        return Reject(source, locator, f"expected a JSON object, got {got}{hint}")
    if notes is None:
        notes = []
    try:
        if "subject" not in obj and "body" not in obj and any(k[:1].isupper() for k in obj):
            obj = _camel_keys(obj)  # PowerShell's Graph objects: "Subject", "ToRecipients", ...
        if "payload" in obj or "raw" in obj or "threadId" in obj or "internalDate" in obj:
            return _gmail(obj, source, locator, notes)
        if type(obj.get("body")) is dict or not obj.keys().isdisjoint(_GRAPH_KEYS):
            return _graph(obj, source, locator, notes)
        return _flat(obj, source, locator, notes)
    except _FieldError as exc:
        return Reject(source, locator, str(exc))


def _camel_keys(value: Any) -> Any:
    if type(value) is dict:
        return {(k[:1].lower() + k[1:] if type(k) is str else k): _camel_keys(v) for k, v in value.items()}
    if type(value) is list:
        return [_camel_keys(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Typed field access shared by the shapes
# --------------------------------------------------------------------------------------------


def _str(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is None or type(value) is str:
        return value
    raise _FieldError(name, "a string", value)


def _id(obj: dict, name: str) -> str | None:
    """Ids may arrive as numbers (harmless: coerce); anything else is a wrong type."""
    value = obj.get(name)
    if type(value) is str:
        return value or None
    if value is None:
        return None
    if type(value) is int or (type(value) is float and value.is_integer()):
        return str(int(value))
    raise _FieldError(name, "a string", value)


def _address_object(value: dict, name: str) -> tuple[str, str]:
    """Graph's ``{"emailAddress": {"name", "address"}}`` (or the inner object) -> (name, addr)."""
    inner = value.get("emailAddress", value)
    if type(inner) is dict:
        addr = inner.get("address") or inner.get("email") or ""
        display = inner.get("name") or ""
        if type(addr) is str and type(display) is str:
            return display, addr.strip().lower()
    raise _FieldError(name, "an address or an {emailAddress: {name, address}} object", value)


def _sender(value: object, name: str) -> tuple[str, str]:
    """A sender in either shape's spelling: "Name <addr>", "addr" or a Graph address object."""
    if type(value) is str:
        return parse_address(value)
    if value is None:
        return "", ""
    if type(value) is dict:
        return _address_object(value, name)
    raise _FieldError(name, "an address or an {emailAddress: {name, address}} object", value)


def _recipients(obj: dict, name: str) -> list[str]:
    """Recipients as a list (of address strings or Graph address objects) or a comma-separated
    string. A single object where a list belongs is a wrong type, not a guess."""
    value = obj.get(name)
    if value is None:
        return []
    if type(value) is str:
        return split_addresses(value) if value else []
    if type(value) is not list:
        raise _FieldError(name, "a list of addresses or a comma-separated string", value)
    out = []
    for item in value:
        if type(item) is str:
            addr = parse_address(item)[1]
        elif type(item) is dict:
            addr = _address_object(item, name)[1]
        else:
            raise _FieldError(name, "a list of addresses or a comma-separated string", item, item=True)
        if addr:
            out.append(addr)
    return out


def _blank(text: str | None) -> bool:
    return not text or text.isspace()


def _note_date(value: object, notes: list[str]) -> str | None:
    date, note = parse_date(value)
    if note:
        notes.append(note)
    return date


def _note_importance(value: object, notes: list[str]) -> str:
    if value is None or value == "":
        return "normal"
    level = normalize_importance(value)
    if level is None:
        notes.append(f"importance {value!r} not understood; using normal")
        return "normal"
    return level


def _finish_body(body: str, notes: list[str]) -> str:
    if "\r" in body:
        body = body.replace("\r\n", "\n")
    return trim_body(body, notes)


# --------------------------------------------------------------------------------------------
# flat
# --------------------------------------------------------------------------------------------


def _flat(obj: dict, source: str, locator: str, notes: list[str]) -> Email | Reject:
    subject = _str(obj, "subject")
    body = _str(obj, "body")
    body_html = _str(obj, "body_html")
    has_attachments = obj.get("has_attachments")
    if type(has_attachments) is not bool:
        attachments = obj.get("attachments")
        has_attachments = bool(attachments) if type(attachments) is list else False
    if _blank(subject) and _blank(body) and _blank(body_html) and not has_attachments:
        return Reject(source, locator, _MISSING)  # nothing to analyse (empty strings count)
    if body:
        if looks_like_html(body):  # some exporters put the HTML part in "body"
            body = html_to_text(body)
    elif body_html:
        body = html_to_text(body_html)
    else:
        body = ""

    from_name, from_addr = _sender(obj.get("from"), "from")

    refs = obj.get("references")
    if refs is not None and type(refs) is not str and type(refs) is not list:
        raise _FieldError("references", "a list or a space-separated string", refs)
    if type(refs) is list:
        for ref in refs:
            if type(ref) is not str:
                raise _FieldError("references", "a list of strings", ref, item=True)
    in_reply_to = obj.get("in_reply_to")
    if type(in_reply_to) is list:  # harmless: a one-element list
        in_reply_to = next((v for v in in_reply_to if type(v) is str), None)
    elif in_reply_to is not None and type(in_reply_to) is not str:
        raise _FieldError("in_reply_to", "a string", in_reply_to)

    return Email(
        source=source,
        locator=locator,
        source_id=_id(obj, "id"),
        message_id=clean_message_id(_str(obj, "message_id")),
        source_conversation_id=_id(obj, "conversation_id"),
        subject=subject or "",
        body=_finish_body(body, notes),
        from_addr=from_addr,
        from_name=from_name,
        to=_recipients(obj, "to"),
        cc=_recipients(obj, "cc"),
        bcc=_recipients(obj, "bcc"),
        date=_note_date(obj.get("date"), notes),
        in_reply_to=clean_message_id(in_reply_to),
        references=parse_message_ids(refs) if refs else [],
        importance=_note_importance(obj.get("importance"), notes),
        has_attachments=has_attachments,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Microsoft Graph
# --------------------------------------------------------------------------------------------


def _graph_body(value: object, name: str) -> str | None:
    """``{"contentType": "html"|"text", "content": ...}`` -> text; None when absent."""
    if value is None or type(value) is str:
        return value
    if type(value) is not dict:
        raise _FieldError(name, "a {contentType, content} object", value)
    content = value.get("content")
    if content is None:
        return None
    if type(content) is not str:
        raise _FieldError(f"{name}.content", "a string", content)
    kind = value.get("contentType")
    if type(kind) is str and kind.lower() == "html":
        return html_to_text(content)
    return content


def _graph(obj: dict, source: str, locator: str, notes: list[str]) -> Email | Reject:
    subject = _str(obj, "subject")
    body = _graph_body(obj.get("body"), "body")
    if not body:
        body = _graph_body(obj.get("uniqueBody"), "uniqueBody") or body
    if not body:
        preview = _str(obj, "bodyPreview")
        if preview:
            body = preview
            notes.append("body missing; used bodyPreview (may be truncated)")
    has_attachments = obj.get("hasAttachments") is True
    if _blank(subject) and _blank(body) and not has_attachments:
        return Reject(source, locator, _MISSING)  # e.g. an export made with $select=id,from

    from_name, from_addr = _sender(obj.get("from") or obj.get("sender"), "from")

    headers = _header_map(obj.get("internetMessageHeaders"), "internetMessageHeaders")
    in_reply_to = parse_message_ids(headers.get("in-reply-to", [None])[0])
    date_value = obj.get("sentDateTime") or obj.get("receivedDateTime")
    return Email(
        source=source,
        locator=locator,
        source_id=_id(obj, "id"),
        message_id=clean_message_id(_str(obj, "internetMessageId")),
        source_conversation_id=_id(obj, "conversationId"),
        subject=subject or "",
        body=_finish_body(body or "", notes),
        from_addr=from_addr,
        from_name=from_name,
        to=_recipients(obj, "toRecipients"),
        cc=_recipients(obj, "ccRecipients"),
        bcc=_recipients(obj, "bccRecipients"),
        date=_note_date(date_value, notes),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=parse_message_ids(" ".join(headers.get("references", ()))),
        importance=_note_importance(obj.get("importance"), notes),
        has_attachments=has_attachments,
        notes=notes,
    )


def _header_map(value: object, name: str) -> dict[str, list[str]]:
    """``[{"name": "References", "value": "..."}]`` -> {"references": ["..."]}."""
    if value is None:
        return {}
    if type(value) is not list:
        raise _FieldError(name, "a list of {name, value} objects", value)
    out: dict[str, list[str]] = {}
    for item in value:
        if type(item) is dict and type(item.get("name")) is str and type(item.get("value")) is str:
            out.setdefault(item["name"].strip().lower(), []).append(item["value"])
    return out


# --------------------------------------------------------------------------------------------
# Gmail API
# --------------------------------------------------------------------------------------------


def _b64url(data: str) -> bytes:
    """Gmail's base64url, which omits padding."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _gmail_part(value: dict, depth: int = 0) -> Part:
    """A Gmail ``payload`` (or one of its ``parts``) as a neutral MIME :class:`Part`."""
    headers = _header_map(value.get("headers"), "payload.headers")
    mime_type = value.get("mimeType")
    ctype = mime_type.strip().lower() if type(mime_type) is str and mime_type else "text/plain"
    content_type = headers.get("content-type", [""])[0]
    charset_match = _CHARSET_PARAM_RE.search(content_type)
    disposition = headers.get("content-disposition", [""])[0].partition(";")[0].strip().lower()
    filename = value.get("filename") if type(value.get("filename")) is str else ""
    body = value.get("body") if type(value.get("body")) is dict else {}
    data = body.get("data")
    if body.get("attachmentId") and not filename and not disposition:
        disposition = "attachment"  # stored separately by Gmail: certainly not inline text
    parts = value.get("parts")
    children = (
        [_gmail_part(p, depth + 1) for p in parts if type(p) is dict]
        if type(parts) is list and depth < 50
        else []
    )

    def load() -> bytes:
        if type(data) is not str:
            return b""
        try:
            return _b64url(data)
        except (binascii.Error, ValueError):
            return data.encode("utf-8", "replace")  # not base64 after all: keep what is there

    return Part(
        ctype, disposition, filename, charset_match.group(1) if charset_match else None, children, load
    )


def _gmail(obj: dict, source: str, locator: str, notes: list[str]) -> Email | Reject:
    source_id = _id(obj, "id")
    thread_id = _id(obj, "threadId")
    raw = obj.get("raw")
    payload = obj.get("payload")
    if raw is not None:
        if type(raw) is not str:
            raise _FieldError("raw", "a base64url string", raw)
        try:
            data = _b64url(raw)
        except (binascii.Error, ValueError):
            return Reject(source, locator, "field 'raw' is not valid base64url")
        result = email_from_bytes(data, source, locator)
        if isinstance(result, Reject):
            return result
        email = result
    elif payload is not None:
        if type(payload) is not dict:
            raise _FieldError("payload", "an object", payload)
        headers = _header_map(payload.get("headers"), "payload.headers")
        email = headers_to_email(headers, _gmail_part(payload), source, locator)
        if not email.subject and not email.body and not email.has_attachments and not obj.get("snippet"):
            return Reject(source, locator, _MISSING)
    else:
        # users.messages.list only returns {id, threadId}: say how to get the real messages.
        return Reject(source, locator, f"{_MISSING} (fetch Gmail messages with format=full or format=raw)")

    email.source_id = source_id
    email.source_conversation_id = thread_id or email.source_conversation_id
    if not email.body:
        snippet = obj.get("snippet")
        if type(snippet) is str and snippet:
            email.body = html.unescape(snippet)  # the API HTML-escapes snippets
            notes.append("body missing; used the Gmail snippet (truncated)")
    if email.date is None:
        internal = obj.get("internalDate")  # ms since the epoch, as a string
        if type(internal) is str and internal.isdigit():
            internal = int(internal)
        if internal is not None:
            email.date = _note_date(internal, notes)
    email.notes = notes + email.notes
    return email

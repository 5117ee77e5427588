"""Text helpers shared by every reader: HTML to text, charsets, headers, dates, addresses.

Everything here is total: bad input gives a best-effort value (and, where it matters, a note for
``Email.notes``), never an exception. Regexes are compiled once at import because the JSONL path
runs these helpers hundreds of thousands of times.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache

from mailcli.ingest.model import MAX_BODY_CHARS, normalize_message_id

# --------------------------------------------------------------------------------------------
# HTML -> text
# --------------------------------------------------------------------------------------------

# Private-use code points mark line breaks in the parsed tree. They survive selectolax's text
# extraction and are not whitespace, so the source's own whitespace (which HTML ignores) can be
# collapsed without losing the breaks the markup asked for.
_SOFT = "\ue000"  # block boundary: start a new line unless we are already at one
_BREAK = "\ue001"  # <br>: always a line break
_NBSP = "\ue002"  # &nbsp;: content for the rule above, a space in the result
_MARKERS = (_SOFT, _BREAK, _NBSP)
_SOFT_RUN_RE = re.compile(f"{_SOFT}[ {_SOFT}]*")  # starts with a literal, so re scans fast
_BLANK_LINES_RE = re.compile(r"\n\n\n+")
_BLOCK_TAGS = frozenset(
    "p div tr li h1 h2 h3 h4 h5 h6 table ul ol blockquote pre hr section article header footer "
    "address dl dt dd center form fieldset figure figcaption main nav aside".split()
)
_DROP_TAGS = frozenset({"script", "style", "noscript", "template", "title", "svg", "object", "iframe"})
# Cheap test for "this 'plain' body is actually an HTML document" (some flat exports do that).
_LOOKS_HTML_RE = re.compile(
    r"\s*<(?:!doctype|html|head|body|meta|div|p|table|span|br|font|center|style)\b", re.IGNORECASE
)


def looks_like_html(text: str) -> bool:
    """True when a body that claims to be plain text starts like an HTML document."""
    # An anchored match gives up at the first character of an ordinary plain-text body.
    return _LOOKS_HTML_RE.match(text) is not None


def html_to_text(html: str) -> str:
    """Readable text from an HTML body: no head/script/style, line breaks where blocks end.

    selectolax (lexbor) does the parsing and entity decoding; we only mark where lines break
    (marker text nodes) and then tidy the whitespace.
    """
    from selectolax.lexbor import LexborHTMLParser  # imported lazily: only HTML bodies need it

    if any(m in html for m in _MARKERS):  # the markers must not occur in the content
        for m in _MARKERS:
            html = html.replace(m, "")
    root = LexborHTMLParser(html).body  # the head (title, style, meta) is never body text
    if root is None:
        return ""
    # One walk over the elements: lexbor re-parses a CSS selector on every css() call, which
    # made a 30-tag selector the slowest step. Mutate only after the walk.
    drop, blocks, breaks, cells = [], [], [], []
    for node in root.traverse():
        tag = node.tag
        if tag in _BLOCK_TAGS:
            blocks.append(node)
        elif tag == "br":
            breaks.append(node)
        elif tag == "td" or tag == "th":
            cells.append(node)
        elif tag in _DROP_TAGS:
            drop.append(node)
    for node in blocks:
        node.insert_before(_SOFT)
        node.insert_after(_SOFT)
    for node in breaks:
        node.insert_after(_BREAK)
    for node in cells:
        node.insert_after(" ")  # keep the cells of one row apart
    for node in reversed(drop):  # innermost first: never touch a node whose ancestor is gone
        node.decompose()
    # Everything below is C-speed string work; regexes that start with " *" were the slowest
    # part of this function.
    text = root.text(deep=True, separator="")
    if "\xa0" in text:
        text = text.replace("\xa0", _NBSP)
    text = " ".join(text.split())  # HTML whitespace collapsing (also folds other Unicode spaces)
    text = text.replace(_BREAK, "\n")
    # A block boundary only ends a line that has something on it. &nbsp; counts as something,
    # so Outlook's "<p>&nbsp;</p>" blank lines survive.
    text = _SOFT_RUN_RE.sub(_SOFT, text).replace(f"\n {_SOFT}", "\n").replace(f"\n{_SOFT}", "\n")
    text = text.lstrip(f" {_SOFT}").replace(_SOFT, "\n").replace(_NBSP, " ")
    text = "\n".join(line.strip() for line in text.split("\n"))
    if "\n\n\n" in text:
        text = _BLANK_LINES_RE.sub("\n\n", text)
    return text.strip()


# --------------------------------------------------------------------------------------------
# Charsets
# --------------------------------------------------------------------------------------------

# Labels that mean "Windows-1252" in practice (the WHATWG encoding standard does the same):
# mail clients routinely label cp1252 text (curly quotes, euro sign) as latin-1.
_CP1252_ALIASES = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso_8859-1", "8859-1"})
# Below this many bytes charset detection is unreliable (see decode_bytes).
_MIN_DETECT_BYTES = 40
# Mail text is never UTF-16/32/7 without saying so; charset_normalizer otherwise "finds" UTF-16
# in any even-length run of 8-bit bytes.
_NEVER_GUESS = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le", "utf_7"]


def _codec_for(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when the label is unknown/bogus."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower().split("*", 1)[0]  # RFC 2231: utf-8*en
    if label in _CP1252_ALIASES:
        return "cp1252"
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # Refuse bytes-to-bytes/str-to-str codecs ("base64", "rot13") a hostile label could name.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None = None) -> tuple[str, str | None]:
    """Decode body/header bytes; returns (text, note-or-None). Never raises.

    Order: the declared charset, then UTF-8, then charset_normalizer's guess, then UTF-8 with
    replacement characters. The note says when we had to guess.
    """
    if not data:
        return "", None
    codec = _codec_for(charset)
    if codec:
        try:
            return data.decode(codec), None
        except (UnicodeDecodeError, LookupError):
            pass
    if codec != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if not charset or data.isascii():
                return text, None  # the label did not matter
            if codec:
                return text, f"text is not {charset!r} as declared; read as UTF-8"
            return text, f"unknown charset {charset!r}; read as UTF-8"
    label = f"charset {charset!r}" if charset else "undeclared charset"
    if len(data) < _MIN_DETECT_BYTES:
        # Detection on a few bytes is a coin toss (a 6-byte "Jérôme" comes out as Big5 or
        # UTF-16); Western 8-bit is by far the most common unlabelled short text in mail.
        try:
            return data.decode("cp1252"), f"{label} could not decode the text; read as cp1252"
        except UnicodeDecodeError:
            return data.decode("latin-1"), f"{label} could not decode the text; read as latin-1"
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data, cp_exclusion=_NEVER_GUESS).best()
    except Exception:  # noqa: BLE001 - a detector bug must not stop an ingest
        best = None
    if best is not None:
        try:
            return str(best), f"{label} could not decode the text; detected {best.encoding}"
        except Exception:  # noqa: BLE001
            pass
    return data.decode("utf-8", "replace"), f"{label} could not decode the text; undecodable bytes replaced"


# --------------------------------------------------------------------------------------------
# Headers (RFC 2047 encoded words, raw 8-bit bytes)
# --------------------------------------------------------------------------------------------

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
# Whitespace between two adjacent encoded words is not part of the text (RFC 2047 §6.2).
_BETWEEN_WORDS_RE = re.compile(r"(\?=)\s+(=\?)")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


def _decode_word(match: re.Match[str]) -> str:
    charset, kind, payload = match.group(1), match.group(2).lower(), match.group(3)
    try:
        if kind == "b":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            data = quopri.decodestring(payload.encode("ascii", "replace"), header=True)  # "_" is a space
    except (binascii.Error, ValueError):
        return match.group(0)  # not really an encoded word: keep it literally
    return decode_bytes(data, charset)[0]


def decode_header_value(value: str | None) -> str:
    """A header value as readable text: unfolded, 8-bit bytes and encoded words decoded.

    ``value`` is what compat32 gives us: raw bytes above 0x7F arrive as surrogate escapes.
    Unterminated or malformed encoded words are left as they are.
    """
    if not value:
        return ""
    if not value.isascii():
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = None
        if raw is not None:
            value = decode_bytes(raw, None)[0]
    value = _FOLD_RE.sub("", value)
    if "=?" in value:
        value = _ENCODED_WORD_RE.sub(_decode_word, _BETWEEN_WORDS_RE.sub(r"\1\2", value))
    return value.strip()


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


def _clean_addr(addr: str) -> str:
    addr = addr.strip().strip("<>").strip()
    if " " in addr or "<" in addr:  # "unterminated <b@x": keep the part that looks like an address
        for token in reversed(addr.replace("<", " ").replace(">", " ").split()):
            if "@" in token:
                return token.lower()
        return ""
    return addr.lower()


def _parse_address(value: str) -> tuple[str, str]:
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        addr = value[lt + 1 : gt] if gt > 0 else value[lt + 1 :]
        name = value[:lt].strip().strip('"').strip()
        return name, addr.strip().lower()
    return "", value.lower()


def _split_addresses(value: str) -> tuple[str, ...]:
    if '"' in value or "(" in value:
        # A quoted display name may contain commas: let the stdlib parser handle it.
        return tuple(a for _, raw in getaddresses([value]) if (a := _clean_addr(raw)))
    return tuple(addr for item in value.split(",") if (addr := _parse_address(item)[1]))


# Mailboxes repeat the same correspondents, so most lookups are cache hits. Only short strings
# are cached, which keeps the caches' memory bounded whatever the input holds.
_CACHE_MAX_LEN = 256
_parse_address_cached = lru_cache(maxsize=8192)(_parse_address)
_split_addresses_cached = lru_cache(maxsize=4096)(_split_addresses)


def parse_address(value: str) -> tuple[str, str]:
    """``Name <Addr@X>`` or ``addr@x`` -> (name, lower-cased address). Fast path, no email.utils."""
    return (_parse_address_cached if len(value) <= _CACHE_MAX_LEN else _parse_address)(value)


def split_addresses(value: str) -> list[str]:
    """A comma-separated recipient string -> bare lower-cased addresses (a new list)."""
    return list((_split_addresses_cached if len(value) <= _CACHE_MAX_LEN else _split_addresses)(value))


def parse_mime_addresses(raw: str | None) -> list[tuple[str, str]]:
    """A raw (compat32) address header -> [(decoded name, lower-cased address)]."""
    if not raw:
        return []
    raw = _FOLD_RE.sub("", raw)
    try:
        pairs = getaddresses([raw])
    except Exception:  # noqa: BLE001 - the stdlib parser has raised on hostile input before
        pairs = [parse_address(item) for item in raw.split(",")]
    out = []
    for name, addr in pairs:
        addr = _clean_addr(decode_header_value(addr))
        if addr:
            out.append((decode_header_value(name).strip('"').strip(), addr))
    return out


# --------------------------------------------------------------------------------------------
# Dates, ids, importance, body length
# --------------------------------------------------------------------------------------------


def _to_utc_iso(dt: datetime) -> str:
    """Seconds-precision UTC in one fixed form. Naive datetimes are taken as UTC.

    Hand-formatted because astimezone()/isoformat() were a fifth of the JSONL per-record cost.
    Raises OverflowError for offsets that push the date out of range (year 1 or 9999).
    """
    if dt.tzinfo is not None:
        offset = dt.utcoffset()
        if offset:
            dt = dt - offset  # wall-clock arithmetic: the fields are now UTC
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}+00:00"


def parse_date(value: object) -> tuple[str | None, str | None]:
    """ISO 8601 / RFC 2822 / Unix epoch -> ("YYYY-MM-DDTHH:MM:SS+00:00", None), or (None, note)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text)  # the common, fast case
            if len(text) in (20, 25) and text[10] == "T" and text[19:] in ("Z", "+00:00"):
                return text[:19] + "+00:00", None  # already UTC to the second: no re-formatting
            return _to_utc_iso(dt), None
        except ValueError:
            pass
        except OverflowError:
            return None, f"date unparseable: {value[:80]!r}"
        try:
            return _to_utc_iso(parsedate_to_datetime(text)), None
        except (TypeError, ValueError, IndexError, OverflowError):
            return None, f"date unparseable: {value[:80]!r}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) > 100_000_000_000 else value  # epoch ms vs s
        try:
            return _to_utc_iso(datetime.fromtimestamp(seconds, UTC)), None
        except (ValueError, OverflowError, OSError):
            return None, f"date unparseable: {value!r}"
    return None, f"date unparseable: expected a string, got {type(value).__name__}"


_ANGLE_ID_RE = re.compile(r"<([^<>\s]+)>")
_ONE_ID_RE = re.compile(r"\s*<([^<>\s]+)>\s*")
_BAD_ID_RE = re.compile(r"[<>\s]")


def clean_message_id(value: object) -> str | None:
    """normalize_message_id, but None for junk such as ``<<>>`` or ``a b``: a bogus id would
    make unrelated emails duplicates of each other."""
    if type(value) is str and (match := _ONE_ID_RE.fullmatch(value)):
        return match.group(1).lower()  # the usual "<id@host>", same result, one C call
    mid = normalize_message_id(value)
    return None if mid is None or _BAD_ID_RE.search(mid) else mid


def parse_message_ids(value: object) -> list[str]:
    """References/In-Reply-To: a list or a string of ``<id>`` tokens -> normalized ids, in order."""
    if isinstance(value, str):
        found = _ANGLE_ID_RE.findall(value.lower())
        if found:  # the usual "<a@x> <b@y>": the regex already stripped brackets and spaces
            return list(dict.fromkeys(found)) if len(found) > 1 else found
        items = value.split()
    elif isinstance(value, list):
        items = [v for v in value if isinstance(v, str)]
        found = _ANGLE_ID_RE.findall(" ".join(items).lower())
        if len(found) == len(items):  # every item a plain "<id>": done in C
            return list(dict.fromkeys(found)) if len(found) > 1 else found
    else:
        return []
    return list(dict.fromkeys(mid for item in items if (mid := clean_message_id(item))))


_IMPORTANCE = {
    "low": "low", "normal": "normal", "high": "high", "medium": "normal", "urgent": "high",
    "non-urgent": "low", "1": "high", "2": "high", "3": "normal", "4": "low", "5": "low",
}  # fmt: skip


def normalize_importance(value: object) -> str | None:
    """low|normal|high from Importance/Priority values and X-Priority digits; None if unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    if v in _IMPORTANCE:
        return _IMPORTANCE[v]
    head = v[:1]  # X-Priority "1 (Highest)", "5 (Lowest)"
    if head.isdigit():
        return _IMPORTANCE.get(head)
    return None


def trim_body(body: str, notes: list[str]) -> str:
    """Keep over-long bodies but cut them to MAX_BODY_CHARS, saying so in the notes."""
    if len(body) > MAX_BODY_CHARS:
        notes.append(f"body trimmed from {len(body)} to {MAX_BODY_CHARS} characters")
        return body[:MAX_BODY_CHARS]
    return body

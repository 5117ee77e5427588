"""Entry point for reading exports: paths in, a stream of ``Email`` / ``Reject`` records out
(and, walking a folder, a :class:`Skipped` for each bookkeeping file passed over).

    for record in iter_records("export.jsonl"):       # or .mbox, a .eml folder, a Maildir, "-"
        ...

Everything streams: files are read line by line (JSONL, mbox) or one message at a time (.eml,
Maildir), so a 2 GB export needs no more memory than its largest message. Problems with one
record become a :class:`Reject` and reading goes on; only a path that cannot be read at all
raises :class:`InputError` (one line, naming the path and the fix).

:func:`iter_units` reads the same paths for ``mailcli ingest``, leaving JSONL unparsed in chunks of
lines (:class:`LineChunk`) so that a second process can parse them (:mod:`mailcli.ingest.run`).

The format readers live next door: :mod:`mailcli.ingest.jsonl` (flat, Graph and Gmail JSON),
:mod:`mailcli.ingest.mime` (mbox, .eml, Maildir) and :mod:`mailcli.ingest.text` (HTML,
charsets, headers, dates).
"""

from __future__ import annotations

import io
import itertools
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from mailcli.choices import INPUT_FORMATS
from mailcli.ingest.jsonl import LineChunk, iter_jsonl, iter_line_chunks
from mailcli.ingest.mime import KNOWN_HEADERS, email_from_bytes, is_maildir, iter_mbox, read_eml
from mailcli.ingest.model import Email, InputError, Reject, Skipped

__all__ = [
    "FORMATS", "Chunking", "Email", "InputError", "LineChunk", "Reject", "Skipped", "detect_format", "iter_many",
    "iter_records", "iter_units",
]  # fmt: skip

FORMATS = INPUT_FORMATS
UNSUPPORTED = "not a supported export (expected .jsonl, .mbox, .eml or a Maildir)"

_JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
_SNIFF_BYTES = 4096
_BUFFER = 1 << 20  # large reads: the JSONL path is CPU-bound, not syscall-bound
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # Windows PowerShell writes UTF-16 by default
_HEADER_LINE_RE = re.compile(rb"([!-9;-~]+)[ \t]*:")  # RFC 5322 field name, then a colon
# Bytes that do not occur in text: C0 controls other than \t \n \f \r and ESC, plus DEL.
_TEXT_BYTES = bytes([7, 8, 9, 10, 12, 13, 27]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

# JSONL read in chunks of at most (lines, bytes), left unparsed; None: parse as it is read.
Chunking = tuple[int, int] | None
Unit = Email | Reject | Skipped | LineChunk


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _is_binary(head: bytes) -> bool:
    """NUL bytes, or undecodable noise with many control bytes: not an email export."""
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:
            return False  # only a multi-byte character cut off by the sniff window
    control = len(head.translate(None, _TEXT_BYTES))
    return control > len(head) // 20  # legacy 8-bit text has next to none


def _looks_like_headers(head: bytes) -> bool:
    """The first lines are ``Name: value`` headers and include one that every email has.

    ``head`` is what the reader has buffered (up to 1 MiB), not a fixed prefix: the header block is
    read to its end or to the end of ``head``, whose last line, cut off there, is left out.
    """
    names = set()
    lines = head.splitlines()
    if len(lines) > 1 and not head.endswith((b"\n", b"\r")):
        lines.pop()  # cut off by the end of the buffer, maybe inside a header name
    for line in lines:
        if not line.strip():
            break  # end of the header block
        if line[:1] in (b" ", b"\t"):
            continue  # folded continuation
        match = _HEADER_LINE_RE.match(line)
        if not match:
            return False
        names.add(match.group(1).decode("ascii").lower())
    return bool(names & KNOWN_HEADERS)


def _sniff(name: str, head: bytes) -> str:
    """Format from a file name and its first bytes: a format name, "unsupported" or "binary"."""
    suffix = os.path.splitext(name)[1].lower()
    if head.startswith(_UTF16_BOMS):  # only JSONL is ever written as UTF-16 (by PowerShell)
        text16 = head[: len(head) // 2 * 2].decode("utf-16", "replace").lstrip("\ufeff \r\n\t")
        return "jsonl" if suffix in _JSONL_SUFFIXES or text16.startswith("{") else "unsupported"
    if _is_binary(head[:_SNIFF_BYTES]):
        return "binary"
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in (".mbox", ".mbx"):
        return "mbox"
    if suffix == ".eml":
        return "eml"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not text or text.startswith(b"{"):
        return "jsonl"  # an empty file yields nothing whichever reader gets it
    if text.startswith(b"From "):
        return "mbox"
    if _looks_like_headers(text):
        return "eml"
    return "unsupported"


def detect_format(path: str | Path) -> str:
    """What ``auto`` would read ``path`` as.

    Returns ``"maildir"`` (a directory with cur/ or new/), ``"dir"`` (any other directory: each
    file is detected on its own), ``"jsonl"``, ``"mbox"``, ``"eml"``, or for a file that is none
    of these ``"unsupported"`` / ``"binary"`` (reading it yields one Reject, never an exception).
    Raises InputError when the path is missing or unreadable.
    """
    path = Path(path)
    _check_readable(path)
    if path.is_dir():
        return "maildir" if is_maildir(path) else "dir"
    with _open(path) as f:
        return _sniff(path.name, _peek(f))


# --------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------


def _check_readable(path: Path) -> None:
    """Raise a one-line InputError for a path we cannot read at all."""
    try:
        if path.is_dir():
            os.scandir(path).close()
        else:
            open(path, "rb").close()  # also works for /dev/stdin and <(process substitution)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: check the path") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied: check its permissions") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}: check the path") from None


def _open(path: Path) -> BinaryIO:
    return open(path, "rb", buffering=_BUFFER)


def _peekable(f: BinaryIO) -> BinaryIO:
    """A stream whose first bytes can be looked at without consuming them (pipes included)."""
    return f if hasattr(f, "peek") else io.BufferedReader(f, _BUFFER)  # type: ignore[arg-type]


def _peek(f: BinaryIO) -> bytes:
    """What the stream has buffered, without consuming it: at least the first _SNIFF_BYTES of a
    file (when it has them), up to _BUFFER; a pipe gives what has arrived so far."""
    head = f.peek(_SNIFF_BYTES)  # type: ignore[attr-defined]
    return head[:_BUFFER]


def _utf16_lines(f: BinaryIO) -> Iterator[bytes]:
    """UTF-16 JSONL (PowerShell's Out-File) re-encoded as UTF-8 lines, still streaming."""
    for line in io.TextIOWrapper(f, encoding="utf-16", errors="replace", newline=None):
        yield line.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------------------------
# One readable stream / file / directory
# --------------------------------------------------------------------------------------------


def _iter_stream(f: BinaryIO, source: str, name: str, fmt: str, chunking: Chunking) -> Iterator[Unit]:
    """Read one open file in ``fmt`` ("auto" sniffs it). ``name`` is the .eml locator."""
    head = _peek(f)
    if not head:
        yield Skipped(source, "an empty file")  # nothing to read, but said: the user may expect mail in it
        return
    sniffed = _sniff(name, head)
    if sniffed == "binary":
        yield Reject(source, "file", f"binary data, {UNSUPPORTED}")
        return
    if fmt == "auto":
        fmt = sniffed
    if fmt == "unsupported":
        yield Reject(source, "file", UNSUPPORTED)
    elif fmt == "jsonl":
        lines = _utf16_lines(f) if head.startswith(_UTF16_BOMS) else f
        if chunking:
            yield from iter_line_chunks(lines, source, *chunking)
        else:
            yield from iter_jsonl(lines, source)
    elif fmt == "mbox":
        yield from iter_mbox(f, source)
    else:  # eml: one message, bounded in size
        data = f.read()
        if sniffed == "mbox" and b"\n\nFrom " in data:
            # --format eml on an mbox: read as one message, its messages would be one email's body
            yield Reject(source, "file", "several messages, each after a 'From ' line: this is an mbox;"
                         " read it with --format mbox (or auto)")  # fmt: skip
            return
        yield email_from_bytes(data, source, name)


def _iter_file(path: Path, fmt: str, chunking: Chunking) -> Iterator[Unit]:
    source = str(path)
    try:
        f = _open(path)
    except OSError as exc:  # inside a directory: one unreadable file must not stop the rest
        yield Reject(source, "file", f"cannot read file: {exc.strerror or exc}")
        return
    with f:
        yield from _iter_stream(f, source, path.name, fmt, chunking)


# Files a mail server keeps inside a Maildir: named as what they are when rejected.
_MAILDIR_BOOKKEEPING = ("dovecot", "courierimap", "maildirfolder", "maildirsize", "subscriptions")


def _iter_dir(root: Path, fmt: str, chunking: Chunking) -> Iterator[Unit]:
    """Every file under ``root``, depth first in name order.

    A folder with cur/ or new/ is a Maildir: the files in cur/ and new/ are messages (one that
    is not becomes a Reject saying why), a file in tmp/ is a delivery still in progress (a Reject
    that names it); everything else in that folder is walked like any folder, so Maildir++
    sub-folders (``.Sent``), plain sub-folders holding their own Maildirs and loose message files
    beside cur/ are all read. Other files are detected one by one (``fmt`` "auto") or read as
    ``fmt``. Mail tools' bookkeeping is passed over, one :class:`Skipped` each: hidden files
    (.DS_Store, mbsync's .uidvalidity), hidden folders that are not Maildirs (.git, .notmuch), and
    a mail server's files and folders in a Maildir (dovecot-uidlist, courierimapkeywords/).
    """
    anything = False
    for unit in _walk(root, root, fmt, chunking, set()):
        anything = True
        yield unit
    if not anything:
        yield Skipped(str(root), "an empty folder")


def _walk(top: Path, folder: Path, fmt: str, chunking: Chunking, seen: set[str]) -> Iterator[Unit]:
    """One folder of _iter_dir; messages in a Maildir are named by ``top`` and their path from it."""
    real = os.path.realpath(folder)
    if real in seen:  # a symlink back up the tree
        return
    seen.add(real)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Reject(str(folder), "folder", f"cannot read folder: {exc.strerror or exc}")
        return
    maildir = is_maildir(folder)
    if maildir:  # the Maildir's own messages first, then what sits beside and below them
        entries.sort(key=lambda e: (e.name not in ("cur", "new"), e.name))
    file_fmt = "auto" if fmt == "maildir" else fmt  # loose files beside cur/ are detected
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if maildir and entry.name in ("cur", "new"):
                yield from _iter_messages(top, path)
            elif maildir and entry.name == "tmp":
                yield from _iter_tmp(top, path)
            elif maildir and entry.name.lower().startswith(_MAILDIR_BOOKKEEPING):  # courierimapkeywords/
                yield Skipped(str(path), "a mail server's Maildir bookkeeping folder")
            elif not entry.name.startswith(".") or is_maildir(path):
                yield from _walk(top, path, fmt, chunking, seen)
            else:
                yield Skipped(str(path), "a hidden folder that is not a Maildir")
        elif entry.name.startswith("."):
            yield Skipped(str(path), "a hidden file")
        elif maildir and entry.name.lower().startswith(_MAILDIR_BOOKKEEPING):
            yield Skipped(str(path), "a mail server's Maildir bookkeeping file")
        else:
            yield from _iter_file(path, file_fmt, chunking)


def _iter_messages(top: Path, folder: Path) -> Iterator[Email | Reject | Skipped]:
    """The files of a Maildir's cur/ or new/: one message each."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        yield Reject(
            str(top), folder.relative_to(top).as_posix(), f"cannot read folder: {exc.strerror or exc}"
        )
        return
    for name in names:
        path = folder / name
        if name.startswith("."):
            yield Skipped(str(path), "a hidden file")
        elif not path.is_file():
            yield Skipped(str(path), "not a file (a Maildir's cur/ and new/ hold one file per message)")
        else:
            yield read_eml(path, str(top), path.relative_to(top).as_posix())


def _iter_tmp(top: Path, folder: Path) -> Iterator[Reject]:
    """A Maildir's tmp/ holds deliveries in progress: not read, but each one is named."""
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError:
        return
    for name in names:
        yield Reject(
            str(top), (folder / name).relative_to(top).as_posix(),
            "in a Maildir's tmp/ (a delivery still in progress), not read: move it to new/ to ingest it",
        )  # fmt: skip


def _iter_stdin(fmt: str, chunking: Chunking) -> Iterator[Unit]:
    stdin = _peekable(sys.stdin.buffer)
    if fmt == "auto":
        # "-" is JSONL (the documented stdin format). Piped mbox/.eml text is recognised too rather than producing one
        # "invalid JSON" reject per line.
        sniffed = _sniff("", _peek(stdin))
        fmt = sniffed if sniffed in ("mbox", "eml") else "jsonl"
    yield from _iter_stream(stdin, "-", "-", fmt, chunking)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def iter_records(path: str | Path, fmt: str = "auto") -> Iterator[Email | Reject | Skipped]:
    """Records from one path ("-" = stdin). Checks the path now, reads lazily.

    Raises InputError right away (not on first ``next()``) for an unknown format, a missing or
    unreadable path, or ``--format maildir`` on something that is not a Maildir.
    """
    return _open_units(path, fmt, None)  # type: ignore[return-value]  # no chunking: records only


def iter_many(paths: Iterable[str | Path], fmt: str = "auto") -> Iterator[Email | Reject | Skipped]:
    """Records from several paths in order. Every path is checked before the first is read,
    so a typo in the last path fails fast instead of after a long ingest."""
    readers = [iter_records(p, fmt) for p in paths]
    return itertools.chain.from_iterable(readers)


def iter_units(paths: Iterable[str | Path], fmt: str, chunking: tuple[int, int]) -> Iterator[Unit]:
    """What iter_many reads, with JSONL left unparsed in :class:`LineChunk` units (at most
    ``chunking`` = (lines, bytes) each): reading stays here, parsing can go to another process.
    Records of the other formats are parsed as they are read."""
    readers = [_open_units(p, fmt, chunking) for p in paths]
    return itertools.chain.from_iterable(readers)


def _open_units(path: str | Path, fmt: str, chunking: Chunking) -> Iterator[Unit]:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if str(path) == "-":
        if fmt == "maildir":
            raise InputError("a Maildir cannot be read from stdin: pass its directory instead")
        return _iter_stdin(fmt, chunking)
    p = Path(path)
    _check_readable(p)
    if p.is_dir():
        if fmt == "maildir" and not is_maildir(p):
            raise InputError(
                f"{p} is not a Maildir (no cur/ or new/ folder): check the path or use --format auto"
            )
        return _iter_dir(p, fmt, chunking)
    if fmt == "maildir":
        raise InputError(f"{p} is a file, not a Maildir: use --format auto")
    return _iter_file(p, fmt, chunking)

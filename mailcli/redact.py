"""Hiding the Redis password: in REDIS_URL itself, and in any text that may quote it.

Standard library only: `mailcli status` uses it without importing redis-py.

- :func:`redact_url` rewrites a URL to print or log, hiding its user info and any ``password=``
  parameter, even when the URL is malformed.
- :func:`url_passwords` lists the password a URL carries in every spelling an error message may
  quote (as written, percent-decoded); :func:`hide` replaces them in a text.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

MASK = "***"

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)(.*)$", re.S)
_HOST = r"(?:\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9.\-_~%]*)(?::\d*)?"
_NAMED_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~%]+)(?::\d*)?"
_SECRET_PARAM_RE = re.compile(r"(?i)([?&;](?:password|pass|passwd|pwd|auth|requirepass)=)[^&;#]*")


def redact_url(url: str) -> str:
    """``url`` with any password (or ``user:password``) replaced by ``***``, safe to print or log.

    >>> redact_url("redis://user:secret@host:6379/0")
    'redis://***@host:6379/0'
    >>> redact_url("unix:///run/redis.sock?db=0&password=secret")
    'unix:///run/redis.sock?db=0&password=***'

    Errs on the side of hiding: any user-info part is replaced, even a bare user name, and a malformed URL
    (an unencoded ``@``, ``/`` or ``?`` inside the password) still never shows the password.
    """
    if not url:
        return url
    url = _SECRET_PARAM_RE.sub(rf"\1{MASK}", url)
    m = _SCHEME_RE.match(url)
    if not m:
        return url
    scheme, rest = m.groups()
    if rest.startswith("/"):  # unix:///path: no authority, so no user info
        return url
    path = r"(?:/[^?#@]*)?" if scheme.lower().startswith("unix") else r"(?:/\d*)?"
    after_userinfo = re.compile(_HOST + path + r"(?:[?#].*)?", re.S)
    in_query = re.compile(_NAMED_HOST + path + r"[?#].*", re.S)
    # '@'s that are not inside a query value (?client_name=a@b); the user info ends at one of them
    ats = [i for i, ch in enumerate(rest) if ch == "@" and not in_query.fullmatch(rest[:i])]
    if not ats:
        return url
    # the rightmost '@' followed by a well-formed host[:port][/db][?query] (hides the most)
    at = next((i for i in reversed(ats) if after_userinfo.fullmatch(rest[i + 1 :])), ats[-1])
    return f"{scheme}{MASK}{rest[at:]}"


def url_passwords(url: str | None) -> list[str]:
    """The password in ``url`` (user info or ``?password=``) in every spelling an error message may
    quote it, longest first (so that hiding one spelling never leaves part of a longer one)."""
    found = []
    try:
        parts = urlsplit(url or "")
        if parts.password:
            found.append(parts.password)
        found.extend(parse_qs(parts.query).get("password", []))
    except ValueError:
        pass
    spellings = set()
    for s in found:
        if s:
            spellings.update({s, unquote(s)})
    return sorted(spellings, key=len, reverse=True)


def hide(text: str, passwords: list[str]) -> str:
    """``text`` with every one of ``passwords`` (from :func:`url_passwords`) replaced by ``***``."""
    for s in passwords:
        text = text.replace(s, MASK)
    return text

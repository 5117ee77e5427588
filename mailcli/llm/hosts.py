"""Reading OLLAMA_HOST values, on the standard library only.

Its own module so that `mailcli status`, which only needs the host list, does not import httpx (about
65-100 ms of start-up) through mailcli.llm.client.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORT = 11434
# the ports a URL of that scheme has when it names none (what httpx.URL.port leaves out)
_SCHEME_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}


def parse_hosts(hosts: str | Iterable[str]) -> list[str]:
    """Base URLs from OLLAMA_HOST-style values, comma-separated or as a list, read as Ollama reads them.

    ``gpu1`` and ``gpu1:11500`` get ``http://`` (port 11434 by default); an explicit ``http://`` or
    ``https://`` without a port means 80 or 443, as in Ollama's envconfig. Duplicates are dropped.
    A port that is not a number from 0 to 65535 is a ValueError.
    """
    items = (
        hosts.split(",") if isinstance(hosts, str) else [h for part in hosts for h in str(part).split(",")]
    )
    out: list[str] = []
    for item in items:
        raw = item.strip().strip("\"'").strip()
        if not raw:
            continue
        scheme, sep, rest = raw.partition("://")
        if not sep:
            scheme, rest, port = "http", raw, DEFAULT_PORT
        else:
            scheme = scheme.lower()
            port = 443 if scheme == "https" else 80
        hostport, _, path = rest.partition("/")
        host, given = _host_port(scheme, hostport)
        base = f"{scheme}://{_host_text(host)}:{given or port}"
        path = path.strip("/")
        if path:
            base += "/" + path
        if base not in out:
            out.append(base)
    if not out:
        raise ValueError(f"no Ollama host in {hosts!r}: give a URL such as http://127.0.0.1:11434")
    return out


def _host_port(scheme: str, hostport: str) -> tuple[str, int | None]:
    """The host (lower case, IPv6 without brackets) and the port of ``scheme://hostport``, the port None
    when absent or the scheme's own (the reading parse_hosts has always had, from httpx.URL)."""
    parts = urlsplit(f"{scheme}://{hostport}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in Ollama host {hostport!r}: give a number such as 11434") from None
    if port == _SCHEME_PORTS.get(scheme):
        port = None
    return parts.hostname or "", port


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""Is each Ollama host up, and which models has it loaded? One GET /api/ps per host, every host in its
own thread, on the standard library only.

    probe = OllamaProbe(["http://gpu1:11434", "http://gpu2:11434"], timeout=0.3)
    pending = probe.start()             # returns at once; the requests run while status reads the stores
    pending.results()                   # {url: ProbeResult(reachable, error, models)}, within 3 timeouts
    probe.close()

Why not the OllamaClient: it imports httpx (65-100 ms) and builds an SSL context (~50 ms), for one
small GET per host; http.client keeps the probe in the standard library. The timeout bounds the
connect and every read, like the client's connect and read timeouts; no retry, no proxy
(HTTP(S)_PROXY is ignored, as the client ignores it). An answer is read, and a failure worded, by the
rules the client applies (mailcli.llm.wire): "could not connect to URL (reason)", "URL timed out
(ReadTimeout)", "URL answered 500: <Ollama's error>".

One connection per host is kept open between rounds (--watch), as a client's pool keeps it; a
connection the server closed in between is reopened once, silently.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mailcli.llm.wire import (
    BadAnswer,
    answer_error,
    connect_failed,
    dropped,
    json_object,
    server_message,
    timed_out,
    transport_failed,
)

PATH = "/api/ps"
MAX_BODY = 1 << 20  # /api/ps lists a handful of models; a bigger body is not Ollama
# a kept connection the server closed while idle fails like this on reuse: open a new one, once
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ProbeError(Exception):
    """The host did not answer /api/ps usably; the message is one line naming the host and why."""


@dataclass
class ProbeResult:
    reachable: bool
    error: str | None = None
    models: list[str] = field(default_factory=list)


def model_names(data: Any) -> list[str]:
    """The loaded models' names from an /api/ps answer ({"models": [{"name": ...}, ...]})."""
    models = data.get("models") if isinstance(data, dict) else None
    return [m.get("name") or m.get("model", "") for m in models or [] if isinstance(m, dict)]


class HostProbe:
    """GET /api/ps on one host; keeps its connection between calls. Not for two threads at once."""

    def __init__(self, url: str, timeout: float):
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = parts.path.rstrip("/") + PATH
        self.lock = threading.Lock()  # held while a request runs
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def ps(self) -> list[str]:
        """Names of the models the host has loaded; ProbeError when it does not answer usably."""
        if self.scheme not in ("http", "https"):
            raise ProbeError(f"{self.url}: unsupported scheme {self.scheme!r}: use http:// or https://")
        reused = self._conn is not None and self._conn.sock is not None
        try:
            status, body = self._get()
        except _STALE as exc:
            if not reused:
                raise self._dropped(exc) from None
            try:  # the kept connection had gone stale while idle: once more, on a new one
                status, body = self._get()
            except _STALE as again:
                raise self._dropped(again) from None
        return self._judge(status, body)

    def _dropped(self, exc: BaseException) -> ProbeError:
        self.close()
        return ProbeError(dropped(self.url, exc))

    def _get(self) -> tuple[int, bytes]:
        """One GET; raises ProbeError with the client's wording for network failures."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._new_connection()
        try:
            if conn.sock is None:
                conn.connect()
        except TimeoutError:
            self.close()
            raise ProbeError(timed_out(self.url, "ConnectTimeout")) from None
        except OSError as exc:  # refused, no route, unknown name, TLS handshake
            self.close()
            raise ProbeError(connect_failed(self.url, exc)) from None
        try:
            conn.request("GET", self.path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(MAX_BODY)
            if not response.isclosed():  # more than MAX_BODY: this connection cannot be reused
                self.close()
            return response.status, body
        except _STALE:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise ProbeError(timed_out(self.url, "ReadTimeout")) from None
        except (OSError, http.client.IncompleteRead, http.client.BadStatusLine) as exc:
            raise self._dropped(exc) from None
        except http.client.HTTPException as exc:
            self.close()
            raise ProbeError(transport_failed(self.url, exc)) from None

    def _new_connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port or 443, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port or 80, timeout=self.timeout)

    def _judge(self, status: int, body: bytes) -> list[str]:
        """The answer, read as mailcli.llm.client reads one (same messages)."""
        if status != 200:
            raise ProbeError(answer_error(self.url, status, server_message(body), PATH))
        try:
            return model_names(json_object(self.url, PATH, body))
        except BadAnswer as exc:
            raise ProbeError(str(exc)) from None


class ProbeRound:
    """The probes of one snapshot, running, one thread per host."""

    def __init__(self, probes: list[HostProbe], wait: float):
        self.wait = wait
        self.deadline = time.monotonic() + wait
        self._results: dict[str, ProbeResult] = {}
        self._threads: list[tuple[str, threading.Thread]] = []
        for probe in probes:
            thread = threading.Thread(target=self._run, args=(probe,), name=f"mailcli-status-probe {probe.url}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._threads.append((probe.url, thread))

    def _run(self, probe: HostProbe) -> None:
        if probe.lock.acquire(blocking=False):
            try:
                self._results[probe.url] = self._ask(probe)
            finally:
                probe.lock.release()
            return
        # the last round's request to this host is still running (a --watch refresh outran it):
        # ask on a connection of our own rather than wait behind it
        spare = HostProbe(probe.url, probe.timeout)
        try:
            self._results[probe.url] = self._ask(spare)
        finally:
            spare.close()

    @staticmethod
    def _ask(probe: HostProbe) -> ProbeResult:
        try:
            return ProbeResult(True, None, probe.ps())
        except ProbeError as exc:
            return ProbeResult(False, str(exc))
        except Exception as exc:  # a probe must never take the snapshot down
            probe.close()
            return ProbeResult(False, transport_failed(probe.url, exc))

    def results(self) -> dict[str, ProbeResult]:
        """Every host's result; a host still silent `wait` seconds after the round started is unreachable."""
        out = {}
        for url, thread in self._threads:
            thread.join(max(0.0, self.deadline - time.monotonic()))
            result = self._results.get(url)
            out[url] = (
                result if result is not None else ProbeResult(False, f"no answer within {self.wait:.1f}s")
            )
        return out


class OllamaProbe:
    """The hosts to probe, with their kept connections."""

    def __init__(self, hosts: list[str], timeout: float, wait: float | None = None):
        self.timeout = timeout
        self.wait = timeout * 3 if wait is None else wait  # a connect and a read fit, with room to spare
        self._probes = [HostProbe(url, timeout) for url in hosts]

    def start(self) -> ProbeRound:
        return ProbeRound(self._probes, self.wait)

    def close(self) -> None:
        for probe in self._probes:
            # a request still running past the round's wait keeps its connection until this object goes
            if probe.lock.acquire(blocking=False):
                try:
                    probe.close()
                finally:
                    probe.lock.release()

"""The Ollama probe of `mailcli status` (mailcli.status.probe): GET /api/ps per host on the standard
library, each host in its own thread, against the Ollama stand-in over real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import ollama_standin
import pytest
from ollama_standin import RUNNER_ERROR, OllamaStandin

from mailcli.llm.client import OllamaClient
from mailcli.status.probe import OllamaProbe

MODEL = "llama3.2:3b"


@pytest.fixture
def standin() -> Iterator[OllamaStandin]:
    with OllamaStandin() as s:
        yield s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_once(urls: list[str], timeout: float = 0.3, wait: float | None = None) -> dict:
    probe = OllamaProbe(urls, timeout, wait)
    try:
        return probe.start().results()
    finally:
        probe.close()


def slow_ps(monkeypatch: pytest.MonkeyPatch, seconds: float) -> threading.Event:
    """Make the stand-in's /api/ps answer after `seconds` (or when the returned event is set)."""
    release = threading.Event()
    original = ollama_standin._Handler.route_api_ps

    def route(self, method, raw):
        release.wait(seconds)
        original(self, method, raw)

    monkeypatch.setattr(ollama_standin._Handler, "route_api_ps", route)
    return release


def test_a_reachable_host_lists_its_loaded_models(standin):
    with OllamaClient(standin.url) as client:
        client.warm(MODEL)
    [(url, result)] = probe_once([standin.url]).items()
    assert url == standin.url
    assert (result.reachable, result.error, result.models) == (True, None, [MODEL])
    assert standin.requests["/api/ps"] == 1


def test_a_host_with_nothing_loaded_is_reachable_with_no_models(standin):
    result = probe_once([standin.url])[standin.url]
    assert (result.reachable, result.error, result.models) == (True, None, [])


def test_a_refused_connection_is_one_line_naming_the_host():
    url = f"http://127.0.0.1:{closed_port()}"
    result = probe_once([url])[url]
    assert result.reachable is False and result.models == []
    assert result.error.startswith(f"could not connect to {url} (") and "refused" in result.error.lower()
    assert "\n" not in result.error


def test_a_host_slower_than_the_timeout_is_unreachable_in_bounded_time(standin, monkeypatch):
    release = slow_ps(monkeypatch, 5.0)
    try:
        result = probe_once([standin.url], timeout=0.2)[standin.url]
    finally:
        release.set()
    assert result.reachable is False
    assert result.error == f"{standin.url} timed out (ReadTimeout)"  # the answer comes after 5 s


def test_the_round_waits_no_longer_than_its_wait_whatever_the_timeouts(standin, monkeypatch):
    release = slow_ps(monkeypatch, 5.0)
    try:
        result = probe_once([standin.url], timeout=2.0, wait=0.2)[standin.url]
    finally:
        release.set()
    # the round's wait, not the 2 s read timeout (that would say "timed out"), nor the 5 s answer
    assert (result.reachable, result.error) == (False, "no answer within 0.2s")


def test_a_500_carries_ollamas_error_message(standin, monkeypatch):
    monkeypatch.setattr(ollama_standin._Handler, "route_api_ps",
                        lambda self, method, raw: self._json(500, {"error": RUNNER_ERROR}))  # fmt: skip
    result = probe_once([standin.url])[standin.url]
    assert result.reachable is False
    assert result.error == f"{standin.url} answered 500: {RUNNER_ERROR}"


def test_a_4xx_is_the_request_rejected_and_a_non_json_body_is_said(standin, monkeypatch):
    monkeypatch.setattr(ollama_standin._Handler, "route_api_ps",
                        lambda self, method, raw: self._text(404, "404 page not found"))  # fmt: skip
    result = probe_once([standin.url])[standin.url]
    assert (
        result.error == f"Ollama at {standin.url} rejected the request for /api/ps (404): 404 page not found"
    )
    monkeypatch.setattr(ollama_standin._Handler, "route_api_ps",
                        lambda self, method, raw: self._text(200, "<html>a proxy page</html>"))  # fmt: skip
    result = probe_once([standin.url])[standin.url]
    assert result.error == f"{standin.url} sent a body that is not JSON on /api/ps"


def test_hosts_are_probed_at_once_each_in_its_own_thread(monkeypatch):
    # Each host answers only once both requests are in flight: one host at a time would leave the
    # first request waiting at the barrier until it breaks (no answer within the timeout).
    both_in_flight = threading.Barrier(2, timeout=5.0)
    original = ollama_standin._Handler.route_api_ps

    def route(self, method, raw):
        both_in_flight.wait()
        original(self, method, raw)

    monkeypatch.setattr(ollama_standin._Handler, "route_api_ps", route)
    with OllamaStandin() as a, OllamaStandin() as b:
        urls = [a.url, b.url]
        results = probe_once(urls, timeout=8.0, wait=8.0)
    assert [results[u].reachable for u in urls] == [True, True]
    assert not both_in_flight.broken


def test_a_kept_connection_is_reused_and_reopened_once_the_server_closed_it(standin, monkeypatch):
    accepted = []
    original = ollama_standin._Handler.setup

    def setup(self):
        accepted.append(self.client_address)
        original(self)

    monkeypatch.setattr(ollama_standin._Handler, "setup", setup)
    probe = OllamaProbe([standin.url], 0.5)
    try:
        assert probe.start().results()[standin.url].reachable
        assert probe.start().results()[standin.url].reachable
        assert len(accepted) == 1 and standin.requests["/api/ps"] == 2  # --watch: one connection
        with standin._lock:
            server_side = list(standin._connections)
        for conn in server_side:  # the server drops idle connections (a restart, an idle timeout)
            conn.shutdown(socket.SHUT_RDWR)
        time.sleep(0.05)
        result = probe.start().results()[standin.url]
    finally:
        probe.close()
    assert (result.reachable, result.error) == (True, None)
    assert len(accepted) == 2 and standin.requests["/api/ps"] == 3

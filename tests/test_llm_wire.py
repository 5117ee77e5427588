"""The Ollama wire rules the client and `mailcli status` share (mailcli.llm.wire)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailcli.llm import wire
from mailcli.llm.wire import (
    BREAKER_COOLDOWN,
    BREAKER_THRESHOLD,
    answer_error,
    breaker_state,
    clip,
    counts_against_breaker,
    server_message,
)


@pytest.mark.parametrize(
    ("failures", "last_failure_at", "now", "expected"),
    [
        (0, None, 100.0, "closed"),
        (BREAKER_THRESHOLD - 1, 99.0, 100.0, "closed"),  # one short of the threshold
        (BREAKER_THRESHOLD, 99.0, 100.0, "open"),
        (BREAKER_THRESHOLD + 3, 99.0, 100.0, "open"),  # failures past the threshold keep it open
        (BREAKER_THRESHOLD, 100.0 - BREAKER_COOLDOWN + 0.5, 100.0, "open"),  # cooldown not over yet
        (BREAKER_THRESHOLD, 100.0 - BREAKER_COOLDOWN, 100.0, "half-open"),  # cooldown just over: probe
        (BREAKER_THRESHOLD, 0.0, 100.0, "half-open"),
        (BREAKER_THRESHOLD, None, 100.0, "closed"),  # no failure time: nothing to be open since
    ],
)
def test_breaker_state_by_the_default_rule(failures, last_failure_at, now, expected):
    assert breaker_state(failures, last_failure_at, now) == expected


@pytest.mark.parametrize(
    ("failures", "threshold", "cooldown", "expected"),
    [(1, 1, 10.0, "open"), (2, 3, 10.0, "closed"), (3, 3, 5.0, "half-open"), (3, 3, 10.0, "open")],
)
def test_breaker_state_with_a_clients_own_threshold_and_cooldown(failures, threshold, cooldown, expected):
    assert breaker_state(failures, 92.0, 100.0, threshold, cooldown) == expected


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        (None, True),  # no answer: refused, timed out, dropped
        (200, True),  # an answer whose body was unusable (not JSON, cut short, an in-band error)
        (408, True),
        (500, True),
        (502, True),
        (429, False),  # busy: the host is up, its queue is full
        (503, False),
        (400, False),  # the request was wrong, not the host
        (404, False),
        (301, False),  # the client rejects any other answer as a bad request, not a failing host
    ],
)
def test_which_failed_attempts_count_against_the_breaker(status, counts):
    assert counts_against_breaker(status) is counts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":"model \\"llama3.2:3b\\" not found, try pulling it first"}',
         'model "llama3.2:3b" not found, try pulling it first'),
        ('{"error": "llama runner process has terminated: exit status 2"}\n',
         "llama runner process has terminated: exit status 2"),  # str as well as bytes
        (b"404 page not found", "404 page not found"),  # Ollama's router answers plain text
        (b"  Internal Server Error\n", "Internal Server Error"),
        (b"", ""),
        (b"   \n", ""),
        (b'{"status": "busy"}', '{"status": "busy"}'),  # JSON without "error": the body as it is
        (b'["error"]', '["error"]'),
        (b'{"error": {"code": 500}}', "{'code': 500}"),
        (b"caf\xe9 \xff down", "caf\ufffd \ufffd down"),  # not UTF-8: replaced, never raised
        (b'{"error": "caf\xe9"}', "caf\ufffd"),
    ],
)
def test_server_message_reads_ollamas_error_bodies(body, message):
    assert server_message(body) == message


def test_long_messages_are_clipped():
    assert clip("x" * wire.ERROR_TEXT_LIMIT) == "x" * wire.ERROR_TEXT_LIMIT
    assert clip("x" * (wire.ERROR_TEXT_LIMIT + 1)) == "x" * wire.ERROR_TEXT_LIMIT + "..."
    assert server_message(b"y" * 5000) == "y" * wire.ERROR_TEXT_LIMIT + "..."
    assert server_message(('{"error": "%s"}' % ("z" * 5000)).encode()) == "z" * wire.ERROR_TEXT_LIMIT + "..."
    assert clip(ValueError("boom")) == "boom"


def test_answer_error_says_who_is_at_fault():
    assert answer_error("http://a:11434", 503, "busy", "/api/ps") == "http://a:11434 answered 503: busy"
    assert answer_error("http://a:11434", 408, "slow", "/api/ps") == "http://a:11434 answered 408: slow"
    assert (
        answer_error("http://a:11434", 400, "bad schema", "model 'm:1'")
        == "Ollama at http://a:11434 rejected the request for model 'm:1' (400): bad schema"
    )


def test_wire_needs_only_the_standard_library():
    code = "import sys, mailcli.llm.wire; print(sorted(m for m in ('httpx', 'rq', 'redis', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_clients_breaker_defaults_are_the_shared_ones():
    import inspect

    from mailcli.llm.client import OllamaClient

    params = inspect.signature(OllamaClient).parameters
    assert params["breaker_threshold"].default == BREAKER_THRESHOLD
    assert params["breaker_cooldown"].default == BREAKER_COOLDOWN


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>proxy error</html>", "http://a:11434 sent a body that is not JSON on /api/ps"),
        (b"", "http://a:11434 sent a body that is not JSON on /api/ps"),
        (b"[1, 2]", "http://a:11434 sent unexpected JSON on /api/ps"),
        (b'{"error": "out of memory"}', "http://a:11434: out of memory"),  # an error in a 200 answer
    ],
)
def test_a_200_body_that_is_not_the_object_asked_for(body, problem):
    with pytest.raises(wire.BadAnswer) as caught:
        wire.json_object("http://a:11434", "/api/ps", body)
    assert str(caught.value) == problem


def test_a_200_body_that_is_a_json_object():
    assert wire.json_object("http://a:11434", "/api/ps", b'{"models": []}') == {"models": []}


def test_transport_failures_are_worded_once_for_every_transport():
    host = "http://a:11434"
    assert wire.timed_out(host, "ReadTimeout") == "http://a:11434 timed out (ReadTimeout)"
    assert wire.connect_failed(host, ConnectionRefusedError(111, "Connection refused")) == (
        "could not connect to http://a:11434 ([Errno 111] Connection refused)"
    )
    assert wire.connect_failed(host, OSError()) == "could not connect to http://a:11434 (OSError)"
    assert wire.dropped(host, ConnectionResetError("reset")) == (
        "http://a:11434 dropped the connection mid-answer (ConnectionResetError: reset)"
    )
    assert wire.transport_failed(host, RuntimeError("x" * 400)) == f"http://a:11434: RuntimeError: {'x' * 300}..."

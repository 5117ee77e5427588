"""The Ollama client: retries, fail-fast errors, breakers, routing and concurrency, over real HTTP and mocks."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailcli.llm.client import CallRecord, OllamaClient
from mailcli.llm.errors import IncompleteResponse, ModelNotFound, OllamaBadRequest, OllamaUnavailable
from mailcli.llm.hosts import parse_hosts

sys.path.insert(0, str(Path(__file__).parent))
from ollama_standin import OllamaStandin  # noqa: E402

MODEL = "llama3.2:3b"
SECRET = "Confidential: ACME merger price 9,870,000 USD"
MESSAGES = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": SECRET}]
SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["summary", "confidence"],
}


class Sleeps(list):
    """Records the backoff sleeps instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chat_reply(content: str = '{"summary": "ok", "confidence": 0.5}', **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL, "created_at": "2025-01-01T00:00:00.000000Z",
        "message": {"role": "assistant", "content": content}, "done_reason": "stop", "done": True,
        "total_duration": 5_000_000, "load_duration": 100_000, "prompt_eval_count": 12,
        "prompt_eval_duration": 1_000_000, "eval_count": 9, "eval_duration": 3_000_000, **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ollama():
    with OllamaStandin() as standin:
        yield standin


# --- hosts


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1", ["http://127.0.0.1:11434"]),
        ("gpu1:11500", ["http://gpu1:11500"]),
        ("http://gpu1", ["http://gpu1:80"]),  # as Ollama's envconfig reads an explicit scheme
        ("https://ollama.example.com/", ["https://ollama.example.com:443"]),
        ("http://a:1, 'http://b:2/' ,http://a:1", ["http://a:1", "http://b:2"]),
        (["gpu1", "gpu2:1"], ["http://gpu1:11434", "http://gpu2:1"]),
        ("[::1]:11434", ["http://[::1]:11434"]),
    ],
)
def test_hosts_are_read_like_ollama_host(given, expected):
    assert parse_hosts(given) == expected


def test_no_host_is_a_clear_error():
    with pytest.raises(ValueError, match="no Ollama host"):
        OllamaClient(" , ")


# --- against the stand-in, over HTTP


def test_chat_returns_content_and_ollamas_metrics(ollama):
    records: list[CallRecord] = []
    with OllamaClient(ollama.url, on_call=records.append) as client:
        result = client.chat(MODEL, MESSAGES, format=SCHEMA, options={"temperature": 0.1, "seed": 7, "num_ctx": 4096})
    assert set(json.loads(result.content)) == {"summary", "confidence"}
    assert (result.model, result.host, result.status, result.attempts) == (MODEL, ollama.url, 200, 1)
    assert result.done_reason == "stop" and result.eval_count and result.prompt_eval_count
    assert isinstance(result.total_duration_ns, int) and result.duration_s > 0
    sent = ollama.log[-1]["body"]
    assert sent["stream"] is False and sent["format"] == SCHEMA and sent["options"]["seed"] == 7
    (record,) = records
    assert (record.outcome, record.status, record.attempt, record.path) == ("ok", 200, 1, "/api/chat")
    assert record.eval_count == result.eval_count and record.done_reason == "stop"


def test_chat_stream_assembles_the_same_content_as_chat(ollama):
    tokens: list[str] = []
    with OllamaClient(ollama.url) as client:
        whole = client.chat(MODEL, MESSAGES, format=SCHEMA)
        streamed = client.chat_stream(MODEL, MESSAGES, format=SCHEMA, on_token=tokens.append)
    assert streamed.content == whole.content == "".join(tokens)
    assert len(tokens) > 1 and streamed.done_reason == "stop" and streamed.eval_count == whole.eval_count
    assert ollama.log[-1]["body"]["stream"] is True


def test_503_busy_is_retried_with_backoff_and_every_attempt_is_recorded(ollama):
    ollama.inject("busy", "busy")
    records: list[CallRecord] = []
    sleeps = Sleeps()
    with OllamaClient(ollama.url, sleep=sleeps, backoff_base=0.5) as client:
        result = client.chat(MODEL, MESSAGES, on_call=records.append)
    assert result.attempts == 3
    assert [(r.attempt, r.outcome, r.status) for r in records] == [(1, "retry", 503), (2, "retry", 503), (3, "ok", 200)]
    assert "server busy" in (records[0].error or "")
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0
    assert ollama.requests["/api/chat"] == 3


def test_missing_model_fails_fast_with_the_ollama_pull_fix(ollama):
    records: list[CallRecord] = []
    sleeps = Sleeps()
    with OllamaClient(ollama.url, sleep=sleeps, on_call=records.append) as client:
        with pytest.raises(ModelNotFound) as caught:
            client.chat("mistral:7b", MESSAGES)
    assert str(caught.value) == (
        f'model "mistral:7b" not found on {ollama.url}: run `ollama pull mistral:7b` on that host'
    )
    assert (caught.value.host, caught.value.model, caught.value.status) == (ollama.url, "mistral:7b", 404)
    assert "try pulling it first" in caught.value.server_message
    assert ollama.requests["/api/chat"] == 1 and sleeps == []
    assert [(r.outcome, r.status) for r in records] == [("error", 404)]


def test_bad_request_fails_fast_with_the_servers_reason(ollama):
    sleeps = Sleeps()
    with OllamaClient(ollama.url, sleep=sleeps) as client:
        with pytest.raises(OllamaBadRequest, match=r"\(400\): invalid format") as caught:
            client.chat(MODEL, MESSAGES, format="yaml")
    assert caught.value.status == 400 and sleeps == [] and ollama.requests["/api/chat"] == 1


def test_at_most_max_in_flight_requests_reach_ollama_from_ten_threads():
    # 8 slots that never queue: the host's adaptive limit grows from 2 to the ceiling (max_in_flight), no further
    with OllamaStandin(slots=8, latency=0.15) as ollama, OllamaClient(ollama.url, max_in_flight=3) as client:
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda i: client.chat(MODEL, [{"role": "user", "content": f"email {i}"}]),
                                    range(30)))
        assert len({r.content for r in results}) == 30
        assert ollama.max_concurrency == 3
        assert client.host_states()[ollama.url].limit >= 2.5  # 3 permits


def test_read_timeout_is_retried(ollama):
    ollama.hang_seconds = 3.0
    ollama.inject("hang")
    records: list[CallRecord] = []
    with OllamaClient(ollama.url, sleep=Sleeps(), on_call=records.append) as client:
        result = client.chat(MODEL, MESSAGES, timeout=0.3)
    assert result.attempts == 2
    assert records[0].outcome == "retry" and records[0].status is None and "timed out" in (records[0].error or "")


@pytest.mark.parametrize("stream", [True, False])
def test_answer_cut_short_is_retried(ollama, stream):
    ollama.inject("cut")
    records: list[CallRecord] = []
    with OllamaClient(ollama.url, sleep=Sleeps(), on_call=records.append) as client:
        call = client.chat_stream if stream else client.chat
        result = call(MODEL, MESSAGES, format=SCHEMA)
    assert result.attempts == 2 and json.loads(result.content)
    assert records[0].outcome == "retry" and "dropped the connection" in (records[0].error or "")


def test_dead_host_is_skipped_at_once_and_its_breaker_opens(ollama):
    dead = f"http://127.0.0.1:{free_port()}"
    sleeps = Sleeps()
    with OllamaClient([dead, ollama.url], breaker_threshold=2, sleep=sleeps) as client:
        results = [client.chat(MODEL, [{"role": "user", "content": str(i)}]) for i in range(6)]
        states = client.breaker_states()
    assert {r.host for r in results} == {ollama.url}
    assert [r.attempts for r in results][:2] == [2, 2] and all(r.attempts == 1 for r in results[2:])
    assert states == {dead: "open", ollama.url: "closed"}
    assert sleeps == []  # failing over to a fresh host needs no backoff


def test_routing_prefers_the_host_with_fewer_calls_in_flight():
    a_started, release = threading.Event(), threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            a_started.set()
            release.wait(5)
        return httpx.Response(200, json=chat_reply())

    with OllamaClient("http://a:11434,http://b:11434", transport=httpx.MockTransport(handler)) as client:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(client.chat, MODEL, MESSAGES)
            assert a_started.wait(5)
            hosts = [client.chat(MODEL, MESSAGES).host for _ in range(3)]
            release.set()
            assert slow.result(5).host == "http://a:11434"
    assert hosts == ["http://b:11434"] * 3


def test_ties_are_broken_round_robin():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=chat_reply()))
    with OllamaClient("a,b,c", transport=transport) as client:
        hosts = [client.chat(MODEL, MESSAGES).host for _ in range(6)]
    assert hosts == ["http://a:11434", "http://b:11434", "http://c:11434"] * 2


# --- breaker, with an injected clock


class Flaky:
    """A MockTransport handler failing with 500 while ``failing`` is set; optionally blocking."""

    def __init__(self) -> None:
        self.failing = True
        self.requests = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.failing:
            return httpx.Response(500, json={"error": "llama runner process has terminated: signal: killed"})
        return httpx.Response(200, json=chat_reply())


def test_breaker_opens_after_threshold_failures_then_half_opens_after_cooldown():
    flaky, clock = Flaky(), Clock()
    with OllamaClient("http://a:11434", retries=0, breaker_threshold=3, breaker_cooldown=30, clock=clock,
                      transport=httpx.MockTransport(flaky)) as client:
        for _ in range(3):
            assert client.breaker_states() == {"http://a:11434": "closed"}
            with pytest.raises(OllamaUnavailable):
                client.chat(MODEL, MESSAGES)
        assert client.breaker_states() == {"http://a:11434": "open"}
        with pytest.raises(OllamaUnavailable, match=r"circuit breaker open for .*next probe in 30s") as caught:
            client.chat(MODEL, MESSAGES)
        assert flaky.requests == 3 and caught.value.attempts == 0  # open: no request sent
        assert "500" in str(caught.value)  # and it says why it opened
        clock.now += 29.9
        assert client.breaker_states() == {"http://a:11434": "open"}
        clock.now += 0.1
        assert client.breaker_states() == {"http://a:11434": "half-open"}
        flaky.failing = False
        assert client.chat(MODEL, MESSAGES).attempts == 1  # the probe succeeds ...
        assert client.breaker_states() == {"http://a:11434": "closed"}  # ... and closes the breaker


def test_half_open_lets_one_probe_through_and_a_failed_probe_reopens():
    flaky, clock = Flaky(), Clock()
    with OllamaClient("http://a:11434", retries=0, breaker_threshold=1, breaker_cooldown=10, clock=clock,
                      transport=httpx.MockTransport(flaky), max_in_flight=4) as client:
        with pytest.raises(OllamaUnavailable):
            client.chat(MODEL, MESSAGES)
        clock.now += 10
        flaky.gate, flaky.entered = threading.Event(), threading.Event()
        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(client.chat, MODEL, MESSAGES)
            assert flaky.entered.wait(5)
            assert client.breaker_states() == {"http://a:11434": "half-open"}
            with pytest.raises(OllamaUnavailable, match="circuit breaker open"):
                client.chat(MODEL, MESSAGES)  # only one probe at a time
            flaky.gate.set()
            with pytest.raises(OllamaUnavailable):
                probe.result(5)
        assert client.breaker_states() == {"http://a:11434": "open"}  # cooldown starts again
        assert flaky.requests == 2


def test_backoff_is_exponential_with_full_jitter_and_capped():
    sleeps = Sleeps()
    transport = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": "server busy, please try again."}))
    with OllamaClient("a", retries=6, backoff_base=0.5, backoff_max=2.0, breaker_threshold=100, sleep=sleeps,
                      transport=transport) as client:
        with pytest.raises(OllamaUnavailable) as caught:
            client.chat(MODEL, MESSAGES)
    assert len(sleeps) == 6
    for k, slept in enumerate(sleeps):
        assert 0 <= slept <= min(2.0, 0.5 * 2**k)
    assert caught.value.attempts == 7 and caught.value.status == 503
    assert "server busy" in str(caught.value) and caught.value.__cause__ is caught.value.last_error


# --- edge cases of the wire, with MockTransport


def ndjson_response(*chunks: dict[str, Any]) -> httpx.Response:
    body = "".join(json.dumps(c) + "\n" for c in chunks)
    return httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/x-ndjson"})


def piece(text: str) -> dict[str, Any]:
    return {"model": MODEL, "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": text},
            "done": False}


def test_stream_ending_without_done_is_a_clear_error():
    transport = httpx.MockTransport(lambda r: ndjson_response(piece('{"summ'), piece('ary": ')))
    with OllamaClient("a", retries=0, transport=transport) as client:
        with pytest.raises(OllamaUnavailable, match="ended without done:true after 2 chunk") as caught:
            client.chat_stream(MODEL, MESSAGES)
    assert isinstance(caught.value.last_error, IncompleteResponse)


def test_error_line_in_a_stream_is_retried():
    replies = iter([
        ndjson_response(piece("Hel"), {"error": "an error was encountered while running the model"}),
        ndjson_response(piece("Hel"), piece("lo"), {**chat_reply(""), "message": {"role": "assistant", "content": ""}}),
    ])
    records: list[CallRecord] = []
    with OllamaClient("a", transport=httpx.MockTransport(lambda r: next(replies)), sleep=Sleeps(),
                      on_call=records.append) as client:
        result = client.chat_stream(MODEL, MESSAGES)
    assert result.content == "Hello" and result.attempts == 2
    assert "failed mid-stream" in (records[0].error or "")


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={**chat_reply(), "done": False}),
    ],
)
def test_transient_failures_are_retried(failure):
    replies = iter([failure, httpx.Response(200, json=chat_reply())])

    def handler(request: httpx.Request) -> httpx.Response:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    with OllamaClient("a", transport=httpx.MockTransport(handler), sleep=Sleeps()) as client:
        assert client.chat(MODEL, MESSAGES).attempts == 2


def test_errors_and_records_never_carry_the_prompt(caplog):
    caplog.set_level(logging.DEBUG, logger="mailcli.llm")
    replies = iter([
        httpx.Response(503, json={"error": "server busy, please try again.  maximum pending requests exceeded"}),
        httpx.ReadTimeout("timed out"),
        ndjson_response(piece("partial")),
        httpx.Response(404, json={"error": f'model "{MODEL}" not found, try pulling it first'}),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    records: list[CallRecord] = []
    with OllamaClient("a", retries=2, transport=httpx.MockTransport(handler), sleep=Sleeps(),
                      on_call=records.append) as client:
        with pytest.raises(OllamaUnavailable) as unavailable:
            client.chat_stream(MODEL, MESSAGES)
        with pytest.raises(ModelNotFound) as missing:
            client.chat(MODEL, MESSAGES)
    texts = [str(unavailable.value), str(missing.value), caplog.text, *(repr(r) for r in records)]
    assert len(records) == 4
    for text in texts:
        assert "ACME" not in text and "9,870,000" not in text


# --- discovery


def test_tags_version_ps_check_models_and_warm_across_hosts():
    dead = f"http://127.0.0.1:{free_port()}"
    with OllamaStandin(models=["llama3.2:3b"]) as small, OllamaStandin() as big:
        with OllamaClient([small.url, big.url, dead], sleep=Sleeps(), retries=1) as client:
            assert client.tags(small.url) == ["llama3.2:3b"]
            assert client.tags(big.url) == ["llama3.2:3b", "phi4:14b"]
            assert client.version(big.url) == big.version
            assert client.check_models(["llama3.2:3b", "phi4:14b", "llama3.2"]) == {
                "llama3.2:3b": [small.url, big.url], "phi4:14b": [big.url], "llama3.2": [],
            }
            assert client.warm("llama3.2:3b", keep_alive="1h") == [small.url, big.url]
            (loaded,) = client.ps(small.url)
            assert loaded["name"] == "llama3.2:3b" and "expires_at" in loaded
            assert small.log[-2]["body"] == {"model": "llama3.2:3b", "keep_alive": "1h", "stream": False}
            with pytest.raises(ModelNotFound, match=f"not found on {small.url}"):
                client.warm("phi4:14b")
            with pytest.raises(ValueError, match="not one of this client's hosts"):
                client.tags("http://elsewhere:11434")


def test_a_failing_on_token_callback_leaves_the_client_usable(ollama):
    def explode(_: str) -> None:
        raise RuntimeError("caller bug")

    with OllamaClient(ollama.url, max_in_flight=1, breaker_threshold=1) as client:
        with pytest.raises(RuntimeError, match="caller bug"):
            client.chat_stream(MODEL, MESSAGES, on_token=explode)
        assert client.breaker_states() == {ollama.url: "closed"}
        assert client.chat(MODEL, MESSAGES).attempts == 1  # its one slot was given back

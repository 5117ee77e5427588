"""The Ollama stand-in speaks Ollama's API faithfully enough to test and benchmark the real client against."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ollama_standin import (  # noqa: E402
    BUSY_ERROR,
    OllamaStandin,
    SchemaFaker,
    parse_keep_alive,
)

CHAT = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "Where is PO 4500012345?"}]}
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration")

PHASE2_LIKE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 1},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "risk": {"enum": ["low", "medium", "high"]},
        "escalation_needed": {"type": "boolean"},
        "priority_rank": {"type": "integer", "minimum": 1, "maximum": 3},
        "missed_entities": {
            "type": "object",
            "properties": {"people": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
            "required": ["people"],
        },
        "action_items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/ActionItem"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["summary", "confidence", "risk", "escalation_needed", "missed_entities", "action_items"],
    "$defs": {
        "ActionItem": {
            "type": "object",
            "properties": {
                "task": {"type": "string"},
                "owner": {"type": "string"},
                "deadline": {"type": ["string", "null"], "format": "date"},
            },
            "required": ["task", "owner", "deadline"],
        }
    },
}


def conforms(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """A small JSON-schema check, enough for the schemas used here."""
    if "$ref" in schema:
        return conforms(value, root["$defs"][schema["$ref"].rsplit("/", 1)[-1]], root)
    if "enum" in schema:
        return value in schema["enum"]
    if "anyOf" in schema:
        return any(conforms(value, s, root) for s in schema["anyOf"])
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    checks = {
        "object": lambda v: isinstance(v, dict)
        and all(k in v for k in schema.get("required", []))
        and all(conforms(v[k], s, root) for k, s in schema.get("properties", {}).items() if k in v),
        "array": lambda v: isinstance(v, list)
        and schema.get("minItems", 0) <= len(v) <= schema.get("maxItems", math.inf)
        and all(conforms(i, schema.get("items", {}), root) for i in v),
        "string": lambda v: isinstance(v, str) and len(v) >= schema.get("minLength", 0),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool)
        and schema.get("minimum", -math.inf) <= v <= schema.get("maximum", math.inf),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)
        and schema.get("minimum", -math.inf) <= v <= schema.get("maximum", math.inf),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return any(checks[k](value) for k in kinds if k in checks)


HTTP = httpx.Client(timeout=10, trust_env=False)  # one pool: a fresh client per request costs ~40 ms


def teardown_module() -> None:
    HTTP.close()


@pytest.fixture
def ollama():
    with OllamaStandin() as standin:
        yield standin


def post(standin: OllamaStandin, path: str, body: Any, **kw: Any) -> httpx.Response:
    return HTTP.post(standin.url + path, json=body, timeout=10, **kw)


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_non_streaming_chat_answer_has_every_field_with_ollamas_types(ollama):
    r = post(ollama, "/api/chat", {**CHAT, "stream": False})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert body["model"] == "llama3.2:3b"
    datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    assert body["message"]["role"] == "assistant" and isinstance(body["message"]["content"], str)
    assert body["done"] is True and body["done_reason"] == "stop"
    for key in METRICS:
        assert type(body[key]) is int and body[key] > 0, key  # durations are ints in nanoseconds
    assert body["total_duration"] >= body["load_duration"]


def test_chat_streams_ndjson_by_default_ending_with_a_done_chunk_carrying_the_stats(ollama):
    ollama.latency = 0.05
    r = post(ollama, "/api/chat", CHAT)  # no "stream": Ollama streams by default
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["transfer-encoding"] == "chunked"
    chunks = ndjson(r)
    assert len(chunks) >= 3
    assert all(c["done"] is False and "total_duration" not in c for c in chunks[:-1])
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert all(type(final[k]) is int for k in METRICS)
    streamed = "".join(c["message"]["content"] for c in chunks)
    whole = post(ollama, "/api/chat", {**CHAT, "stream": False}).json()["message"]["content"]
    assert streamed == whole


def test_generate_answers_in_response_and_its_final_chunk_carries_context(ollama):
    r = post(ollama, "/api/generate", {"model": "phi4:14b", "prompt": "Summarise the thread."})
    chunks = ndjson(r)
    assert all("response" in c and "message" not in c for c in chunks)
    assert chunks[-1]["done"] is True and isinstance(chunks[-1]["context"], list)
    single = post(ollama, "/api/generate", {"model": "phi4", "prompt": "x", "stream": False})
    assert single.status_code == 404  # "phi4" means phi4:latest, which is not pulled
    single = post(ollama, "/api/generate", {"model": "phi4:14b", "prompt": "x", "stream": False}).json()
    assert single["done"] is True and isinstance(single["response"], str) and type(single["eval_count"]) is int


def test_unknown_model_is_404_with_ollamas_pull_hint(ollama):
    r = post(ollama, "/api/chat", {**CHAT, "model": "mistral:7b", "stream": False})
    assert r.status_code == 404
    assert r.json() == {"error": 'model "mistral:7b" not found, try pulling it first'}
    r = post(ollama, "/api/chat", {**CHAT, "model": "mistral:7b"})  # streaming asked: still one JSON error
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "missing request body"),
        (b"{not json", "invalid character 'n' looking for beginning of value"),
        (b'{"messages": []}', "model is required"),
        (b'{"model": "llama3.2:3b", "messages": "hi"}', None),
        (b'{"model": "llama3.2:3b", "messages": [], "format": "yaml"}', None),
        (b'{"model": "llama3.2:3b", "messages": [], "keep_alive": "5 minutes"}', 'time: invalid duration "5 minutes"'),
    ],
)
def test_malformed_requests_are_400_with_an_error_body(ollama, raw, error):
    r = HTTP.post(ollama.url + "/api/chat", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)
    if error:
        assert r.json()["error"] == error


def test_unknown_paths_and_methods_answer_like_gin(ollama):
    r = HTTP.get(ollama.url + "/api/nope")
    assert (r.status_code, r.text) == (404, "404 page not found")
    r = HTTP.get(ollama.url + "/api/chat")
    assert (r.status_code, r.text) == (405, "405 method not allowed")
    assert HTTP.get(ollama.url + "/").text == "Ollama is running"
    assert HTTP.head(ollama.url + "/api/version").status_code == 200


def test_tags_version_show_and_ps_describe_models_as_ollama_does(ollama):
    tags = HTTP.get(ollama.url + "/api/tags").json()["models"]
    assert [m["name"] for m in tags] == ["llama3.2:3b", "phi4:14b"]
    for m in tags:
        assert m["model"] == m["name"] and type(m["size"]) is int and len(m["digest"]) == 64
        datetime.fromisoformat(m["modified_at"][:26] + "+00:00")
        assert set(m["details"]) == {"parent_model", "format", "family", "families", "parameter_size",
                                     "quantization_level"}
    assert HTTP.get(ollama.url + "/api/version").json() == {"version": ollama.version}
    assert post(ollama, "/api/show", {"model": "phi4:14b"}).json()["details"]["parameter_size"] == "14B"
    assert post(ollama, "/api/show", {"model": "nope:1b"}).status_code == 404

    assert HTTP.get(ollama.url + "/api/ps").json() == {"models": []}
    post(ollama, "/api/chat", {**CHAT, "stream": False, "keep_alive": "10m"})
    (loaded,) = HTTP.get(ollama.url + "/api/ps").json()["models"]
    assert loaded["name"] == "llama3.2:3b" and type(loaded["size_vram"]) is int
    expires = datetime.fromisoformat(loaded["expires_at"].replace("Z", "+00:00"))
    assert 9 * 60 < (expires - datetime.now(expires.tzinfo)).total_seconds() <= 10 * 60


def test_empty_messages_load_the_model_and_keep_alive_zero_unloads_it(ollama):
    r = post(ollama, "/api/chat", {"model": "phi4:14b", "messages": [], "keep_alive": -1}).json()
    assert r["done"] is True and r["done_reason"] == "load" and r["message"] == {"role": "assistant", "content": ""}
    (loaded,) = HTTP.get(ollama.url + "/api/ps").json()["models"]
    assert loaded["expires_at"].startswith("2318")  # negative keep_alive: loaded for ever
    r = post(ollama, "/api/generate", {"model": "phi4:14b", "keep_alive": 0}).json()
    assert r["done_reason"] == "unload"
    assert HTTP.get(ollama.url + "/api/ps").json() == {"models": []}


def test_503_server_busy_once_every_slot_and_the_queue_are_taken():
    with OllamaStandin(slots=2, max_queue=1, latency=0.5) as ollama:
        statuses: list[int] = []
        results: list[httpx.Response] = []

        def ask() -> None:
            r = post(ollama, "/api/chat", {**CHAT, "stream": False})
            results.append(r)
            statuses.append(r.status_code)

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for n, t in enumerate(threads):  # two serving, one queued, deterministically
            t.start()
            if n < 2:
                assert ollama.wait_for(lambda s, n=n: s["active"] == n + 1)
            else:
                assert ollama.wait_for(lambda s: s["waiting"] == 1)
        overflow = post(ollama, "/api/chat", {**CHAT, "stream": False})
        assert overflow.status_code == 503
        assert overflow.json() == {"error": BUSY_ERROR}
        assert overflow.json()["error"] == "server busy, please try again.  maximum pending requests exceeded"
        for t in threads:
            t.join(10)
        assert statuses == [200, 200, 200]  # the queued one was served once a slot freed
        assert ollama.max_active == 2 and ollama.busy_rejections == 1


def test_concurrent_burst_beyond_slots_plus_queue_gets_exactly_the_excess_rejected():
    with OllamaStandin(slots=2, max_queue=2, latency=0.6) as ollama:
        barrier = threading.Barrier(7)
        statuses: list[int] = []

        def ask() -> None:
            barrier.wait()
            statuses.append(post(ollama, "/api/chat", {**CHAT, "stream": False}).status_code)

        threads = [threading.Thread(target=ask) for _ in range(7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(statuses) == [200] * 4 + [503] * 3
        assert ollama.max_active == 2


def test_schema_answers_conform_to_the_schema_and_repeat_for_the_same_prompt(ollama):
    body = {**CHAT, "stream": False, "format": PHASE2_LIKE_SCHEMA, "options": {"temperature": 0.1, "seed": 7}}
    first = post(ollama, "/api/chat", body).json()["message"]["content"]
    value = json.loads(first)
    assert conforms(value, PHASE2_LIKE_SCHEMA, PHASE2_LIKE_SCHEMA)
    assert 0 <= value["confidence"] <= 1 and value["risk"] in ("low", "medium", "high")
    assert post(ollama, "/api/chat", body).json()["message"]["content"] == first
    other = {**body, "messages": [{"role": "user", "content": "A different email"}]}
    assert post(ollama, "/api/chat", other).json()["message"]["content"] != first


@pytest.mark.parametrize("seed", range(25))
def test_schema_faker_satisfies_bounds_for_many_prompts(seed):
    value = SchemaFaker(PHASE2_LIKE_SCHEMA, str(seed).encode()).value(PHASE2_LIKE_SCHEMA)
    assert conforms(value, PHASE2_LIKE_SCHEMA, PHASE2_LIKE_SCHEMA)
    assert 1 <= value["priority_rank"] <= 3


def test_schema_answers_validate_against_a_pydantic_model(ollama):
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        task: str
        owner: str | None = None

    class Answer(pydantic.BaseModel):
        summary: str
        confidence: float = pydantic.Field(ge=0, le=1)
        items: list[Item]
        escalate: bool

    schema = Answer.model_json_schema()  # $defs, $ref and anyOf-with-null, as pydantic writes them
    content = post(ollama, "/api/chat", {**CHAT, "stream": False, "format": schema}).json()["message"]["content"]
    Answer.model_validate_json(content)


def test_json_mode_answers_a_json_object(ollama):
    content = post(ollama, "/api/chat", {**CHAT, "stream": False, "format": "json"}).json()["message"]["content"]
    assert isinstance(json.loads(content), dict)


def test_invalid_output_rate_gives_content_that_is_not_json_or_misses_the_schema(ollama):
    ollama.invalid_output_rate = 1.0
    kinds = set()
    for i in range(12):
        body = {**CHAT, "stream": False, "format": PHASE2_LIKE_SCHEMA,
                "messages": [{"role": "user", "content": f"email {i}"}]}
        content = post(ollama, "/api/chat", body).json()["message"]["content"]
        try:
            value = json.loads(content)
        except ValueError:
            kinds.add("not json")
            continue
        assert not conforms(value, PHASE2_LIKE_SCHEMA, PHASE2_LIKE_SCHEMA)
        kinds.add("misses schema")
    assert kinds == {"not json", "misses schema"}
    assert ollama.faults["invalid"] == 12


def failure_pattern(seed: int) -> list[int]:
    with OllamaStandin(failure_rate=0.5, seed=seed) as ollama:
        answers = [post(ollama, "/api/chat", {**CHAT, "stream": False}) for _ in range(16)]
    for r in answers:
        if r.status_code == 500:
            assert r.json() == {"error": "llama runner process has terminated: signal: killed"}
    return [r.status_code for r in answers]


def test_failure_rate_answers_500_reproducibly_for_a_given_seed():
    first = failure_pattern(seed=3)
    assert set(first) == {200, 500}
    assert failure_pattern(seed=3) == first
    assert failure_pattern(seed=4) != first


def test_cut_stream_closes_the_connection_before_the_done_chunk(ollama):
    ollama.cut_stream = 1.0
    lines: list[dict[str, Any]] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with HTTP.stream("POST", ollama.url + "/api/chat", json=CHAT, timeout=5) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(json.loads(line))
    assert lines and not any(c["done"] for c in lines)
    with pytest.raises(httpx.RemoteProtocolError):  # a single JSON body is cut short too
        post(ollama, "/api/chat", {**CHAT, "stream": False})


def test_hang_stalls_past_the_client_timeout_and_injected_faults_apply_once_in_order(ollama):
    ollama.hang_seconds = 2.0
    ollama.inject("hang", "error", "busy")
    with pytest.raises(httpx.ReadTimeout):
        HTTP.post(ollama.url + "/api/chat", json={**CHAT, "stream": False}, timeout=httpx.Timeout(5, read=0.2))
    assert post(ollama, "/api/chat", {**CHAT, "stream": False}).status_code == 500
    assert post(ollama, "/api/chat", {**CHAT, "stream": False}).status_code == 503
    assert post(ollama, "/api/chat", {**CHAT, "stream": False}).status_code == 200
    with pytest.raises(ValueError):
        ollama.inject("explode")


def test_counters_log_and_reset():
    with OllamaStandin(log_limit=3) as ollama:
        counters_log_and_reset(ollama)


def counters_log_and_reset(ollama: OllamaStandin) -> None:
    for i in range(5):
        post(ollama, "/api/chat", {**CHAT, "stream": False, "messages": [{"role": "user", "content": str(i)}]})
    post(ollama, "/api/generate", {"model": "phi4:14b", "prompt": "p", "stream": False})
    HTTP.get(ollama.url + "/api/tags")
    stats = ollama.stats()
    assert stats["requests"] == {"/api/chat": 5, "/api/generate": 1, "/api/tags": 1}
    assert stats["by_model"] == {"llama3.2:3b": 5, "phi4:14b": 1}
    assert stats["max_concurrency"] == 1
    assert [e["path"] for e in ollama.log] == ["/api/chat", "/api/generate", "/api/tags"]
    assert ollama.log[0]["body"]["messages"][0]["content"] == "4"
    ollama.reset()
    assert ollama.stats()["requests"] == {} and not ollama.log


def test_knobs_change_while_running(ollama):
    ollama.configure(models=["qwen2.5:7b"], slots=1, max_queue=2, latency={"qwen2.5:7b": 0.3, "*": 0.0})
    assert post(ollama, "/api/chat", {**CHAT, "stream": False}).status_code == 404
    threads = [threading.Thread(target=post, args=(ollama, "/api/chat", {**CHAT, "model": "qwen2.5:7b",
                                                                         "stream": False})) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert ollama.max_active == 1 and ollama.max_concurrency == 3  # one slot, three waiting their turn
    with pytest.raises(ValueError):
        ollama.configure(failure_rate=2)
    with pytest.raises(ValueError):
        ollama.configure(colour="red")


def test_stats_and_config_are_reachable_over_http_for_a_separate_process(ollama):
    assert HTTP.post(ollama.url + "/_standin/config", json={"latency": 0.01, "slots": 2}).status_code == 200
    assert ollama.slots == 2
    assert HTTP.post(ollama.url + "/_standin/config", json={"slots": 0}).status_code == 400
    post(ollama, "/api/chat", {**CHAT, "stream": False})
    assert HTTP.get(ollama.url + "/_standin/stats").json()["by_model"] == {"llama3.2:3b": 1}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3), (0, 0.0), ("0", 0.0), (90, 90.0),
     (-1, math.inf), ("-1m", math.inf)],
)
def test_keep_alive_is_read_as_ollama_reads_it(value, seconds):
    assert parse_keep_alive(value) == seconds


def test_runs_standalone_from_the_command_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).parent / "ollama_standin.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--latency", "0.01", "--slots", "2", "--queue", "1"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert HTTP.get(url + "/api/version").status_code == 200
        r = HTTP.post(url + "/api/chat", json={**CHAT, "stream": False})
        assert r.json()["done"] is True
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# ------------------------------------------------------------------- capacity knobs and counters


def test_latency_grows_with_the_prompt_and_the_answer_and_is_counted_as_busy_slot_time():
    with OllamaStandin(latency=0.01, prefill=0.0005, per_token=0.0) as ollama:
        short = post(ollama, "/api/chat", {**CHAT, "stream": False}).json()
        long_body = {**CHAT, "stream": False, "messages": [{"role": "user", "content": "word " * 400}]}
        long = post(ollama, "/api/chat", long_body).json()
        # the stand-in counts an answer once it is written, which may be just after the client has it
        assert ollama.wait_for(lambda s: s["served"] == 2)
        stats = ollama.stats()
    assert long["prompt_eval_count"] > 10 * short["prompt_eval_count"]
    # served time = latency + prefill x prompt tokens (what the benchmarks' utilisation counts)
    expected = 2 * 0.01 + 0.0005 * (short["prompt_eval_count"] + long["prompt_eval_count"])
    assert stats["served"] == 2 and stats["busy_seconds"] == pytest.approx(expected)
    # prompt evaluation and generation are reported apart from the waiting: the client's service time
    assert long["prompt_eval_duration"] + long["eval_duration"] <= long["total_duration"]


def test_queue_length_is_tracked_and_loads_take_no_slot():
    with OllamaStandin(latency=0.3, slots=1, max_queue=4) as ollama:
        threads = [threading.Thread(target=post, args=(ollama, "/api/chat", {**CHAT, "stream": False}))
                   for _ in range(3)]
        for t in threads:
            t.start()
        assert ollama.wait_for(lambda s: s["waiting"] == 2)
        # a load (empty messages) is answered while the slot is busy and two requests wait
        loaded = post(ollama, "/api/generate", {"model": "phi4:14b", "stream": False}).json()
        assert loaded["done_reason"] == "load" and ollama.stats()["waiting"] == 2
        for t in threads:
            t.join()
        ollama.wait_for(lambda s: s["served"] == 3)
        stats = ollama.stats()
    assert stats["max_waiting"] == 2 and stats["served"] == 3 and stats["wait_area"] > 0


def test_an_answer_whose_client_gave_up_is_counted_abandoned():
    with OllamaStandin(latency=0.5) as ollama:
        with pytest.raises(httpx.ReadTimeout):
            HTTP.post(ollama.url + "/api/chat", json={**CHAT, "stream": False}, timeout=httpx.Timeout(5, read=0.1))
        assert ollama.wait_for(lambda s: s["abandoned"] == 1, timeout=5)


def test_parallel_slots_are_per_model_and_the_queue_is_shared():
    with OllamaStandin(latency=0.3, slots=1, max_queue=1) as ollama:
        small = {**CHAT, "stream": False}
        big = {**CHAT, "stream": False, "model": "phi4:14b"}
        threads = [threading.Thread(target=post, args=(ollama, "/api/chat", body)) for body in (small, big)]
        for t in threads:
            t.start()
        assert ollama.wait_for(lambda s: s["active"] == 2)  # one slot each: neither waits
        assert ollama.stats()["waiting"] == 0
        third = threading.Thread(target=post, args=(ollama, "/api/chat", small))
        third.start()
        assert ollama.wait_for(lambda s: s["waiting"] == 1)  # llama's slot is taken: it queues
        assert post(ollama, "/api/chat", big).status_code == 503  # phi4's slot taken and the queue (1) full
        for t in [*threads, third]:
            t.join()

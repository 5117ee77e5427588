#!/usr/bin/env python3
"""A stand-in for an Ollama server: its HTTP API, on the standard library only, for tests and benchmarks.

    with OllamaStandin(latency=0.2, slots=2, max_queue=1) as ollama:
        client = OllamaClient(ollama.url)
        ...
        assert ollama.max_concurrency <= 3

    python tests/ollama_standin.py --port 11434 --latency 0.5 --slots 4 --queue 8

What it copies from Ollama (ollama/ollama docs/api.md, server/routes.go, server/sched.go):
- POST /api/chat and /api/generate, streaming NDJSON by default (``"stream": false`` for one JSON object),
  the final object carrying done_reason and the metrics (durations in nanoseconds, as ints);
  an empty ``messages``/``prompt`` loads the model (done_reason "load"), with keep_alive 0 it unloads it;
- ``format`` as "json" or as a JSON schema object: answers are JSON that fit the schema;
- GET /api/tags, /api/ps, /api/version, POST /api/show, GET/HEAD / ("Ollama is running");
- errors as ``{"error": "..."}``: 400 "missing request body" / "model is required", 404
  ``model "x" not found, try pulling it first``, 503 "server busy, please try again.  maximum pending
  requests exceeded" once the parallel slots (OLLAMA_NUM_PARALLEL) and the queue (OLLAMA_MAX_QUEUE) are full,
  gin's plain-text "404 page not found" for unknown paths.

What it adds, for tests: knobs (constructor arguments, settable while it runs), one-shot faults
(``inject("busy", "cut")``), counters, and a bounded log of request bodies. Fault draws are a hash of
(seed, request, how many times that request was seen), so a run is reproducible whatever the thread
interleaving, and a retried request gets a fresh draw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODELS = ("llama3.2:3b", "phi4:14b")
VERSION = "0.5.7"
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"  # server/sched.go ErrMaxQueue
RUNNER_ERROR = "llama runner process has terminated: signal: killed"
FAULTS = ("busy", "error", "invalid", "cut", "hang")
RATE_KNOBS = ("failure_rate", "invalid_output_rate", "cut_stream", "hang")
KNOBS = ("models", "latency", "prefill", "per_token", "load_latency", "slots", "max_queue", "hang_seconds", "seed", "version", *RATE_KNOBS)
FOREVER = datetime(2318, 1, 1, tzinfo=UTC)  # where Go's max Duration lands: keep_alive < 0


# --------------------------------------------------------------------------------------------- helpers


def canonical(name: str) -> str:
    """Ollama's model names: a missing tag means ``latest``."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def timestamp(when: datetime | None = None) -> str:
    """RFC 3339 in UTC with a Z, the way Go marshals time.Time."""
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """Seconds (``math.inf`` = forever), None when absent; ValueError with Go's text when unparsable."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("json: cannot unmarshal bool into Go struct field .keep_alive of type api.Duration")
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        if body and body.replace(".", "", 1).isdigit():
            raise ValueError(f'time: missing unit in duration "{text}"')
        raise ValueError(f'time: invalid duration "{text}"')
    seconds = sign * sum(float(n) * _UNIT_S[u] for n, u in parts)
    return math.inf if seconds < 0 else seconds


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def _fraction(*parts: Any) -> float:
    return int.from_bytes(_digest(*parts)[:8], "big") / 2**64


# --------------------------------------------------------------------------------- schema-driven answers


class SchemaFaker:
    """A deterministic JSON value that satisfies a JSON schema (the subset structured outputs use)."""

    def __init__(self, root: Mapping[str, Any], seed: bytes):
        self.root = root
        self.seed = seed

    def _n(self, path: str) -> int:
        return int.from_bytes(hashlib.sha256(self.seed + path.encode()).digest()[:8], "big")

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref.lstrip("#").split("/"):
            if part:
                node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
        return node

    def value(self, schema: Any, path: str = "$", depth: int = 0) -> Any:
        if depth > 24 or not isinstance(schema, Mapping):
            return f"{path.rsplit('.', 1)[-1]} {self._n(path) & 0xFFFFFF:06x}"
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), path, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            options = list(schema["enum"])
            return options[self._n(path) % len(options)]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [s for s in schema[key] if not (isinstance(s, Mapping) and s.get("type") == "null")]
                return self.value((options or schema[key])[0], path, depth + 1)
        if schema.get("allOf"):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self._resolve(part["$ref"]) if isinstance(part, Mapping) and "$ref" in part else part
                if isinstance(part, Mapping):
                    merged.setdefault("properties", {}).update(part.get("properties", {}))
                    merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                    merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
            return self.value(merged, path, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            props = schema.get("properties") or {}
            out = {k: self.value(v, f"{path}.{k}", depth + 1) for k, v in props.items()}
            for k in schema.get("required") or []:
                out.setdefault(k, self.value({}, f"{path}.{k}", depth + 1))
            return out
        if kind == "array":
            low = int(schema.get("minItems", 0))
            high = schema.get("maxItems")
            n = max(low, 1 + self._n(path) % 2)
            if high is not None:
                n = min(n, int(high))
            items = schema.get("items", {})
            prefix = schema.get("prefixItems") or []
            return [
                self.value(prefix[i] if i < len(prefix) else items, f"{path}[{i}]", depth + 1) for i in range(n)
            ]
        if kind == "integer":
            low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
            high = schema.get("maximum", schema.get("exclusiveMaximum", low + 101) - 1)
            low, high = math.ceil(low), math.floor(high)
            return low + self._n(path) % max(1, high - low + 1)
        if kind == "number":
            low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
            high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 100.0)))
            span = high - low
            value = round(low + span * (1 + self._n(path) % 9998) / 10000, 4)
            return min(max(value, low), high)
        if kind == "boolean":
            return bool(self._n(path) & 1)
        if kind == "null":
            return None
        return self._string(schema, path)

    def _string(self, schema: Mapping[str, Any], path: str) -> str:
        n = self._n(path)
        fmt = schema.get("format")
        if fmt == "date":
            text = f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}"
        elif fmt == "date-time":
            text = f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z"
        elif fmt == "email":
            text = f"user{n % 10000}@example.com"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{n & 0xFFFFFF:06x}"
        else:
            label = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1]).replace("_", " ").strip("$") or "text"
            text = f"{label} {n & 0xFFFFFF:06x}"
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(text) < low:
            text += "x" * (low - len(text))
        if high is not None:
            text = text[: int(high)]
        return text


def break_answer(schema: Any, good: Any, text: str, digest: bytes) -> str:
    """An answer a real model might give on a bad day: cut off mid-JSON, or JSON that misses the schema."""
    if digest[0] % 2 == 0 or not isinstance(good, dict):
        return text[: max(1, len(text) // 2)]
    required = list(schema.get("required") or []) if isinstance(schema, Mapping) else []
    if required:
        broken = dict(good)
        broken.pop(required[0], None)
        return json.dumps(broken)
    return json.dumps([good])


# ----------------------------------------------------------------------------------------- the server


class OllamaStandin:
    """An Ollama-speaking HTTP server on 127.0.0.1 (port 0 by default) in a background thread.

    Knobs (constructor arguments; assign or ``configure(...)`` while it runs):
      models               model names it has "pulled" (default llama3.2:3b, phi4:14b)
      latency              seconds per answer, or {model: seconds, "*": default}
      prefill              more seconds per prompt token (prompt evaluation grows with the prompt)
      per_token            more seconds per answer token (generation)
      load_latency         extra seconds the first time a model is used (reported as load_duration)
      slots                requests served at once per model (OLLAMA_NUM_PARALLEL); the rest wait in the queue
      max_queue            requests that may wait (OLLAMA_MAX_QUEUE); beyond slots + queue: 503
      failure_rate         fraction answered 500 {"error": ...}
      invalid_output_rate  fraction whose content is cut-off JSON or JSON that misses the schema
      cut_stream           fraction whose connection is closed half way through the body
      hang                 fraction that stall for hang_seconds before answering
      hang_seconds         how long a hung request stalls (pick more than the client's read timeout)
      seed                 seeds the fault draws
    """

    def __init__(
        self,
        models: Iterable[str] = DEFAULT_MODELS,
        *,
        latency: float | Mapping[str, float] = 0.0,
        prefill: float = 0.0,
        per_token: float = 0.0,
        load_latency: float = 0.0,
        slots: int = 4,
        max_queue: int = 0,
        failure_rate: float = 0.0,
        invalid_output_rate: float = 0.0,
        cut_stream: float = 0.0,
        hang: float = 0.0,
        hang_seconds: float = 30.0,
        seed: int = 0,
        version: str = VERSION,
        host: str = "127.0.0.1",
        port: int = 0,
        log_limit: int = 1000,
        verbose: bool = False,
    ):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._bind = (host, port)
        self.verbose = verbose
        self._log_limit = log_limit
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._slots = 1
        self._max_queue = 0
        self._models: list[str] = []
        self.reset()
        self.configure(
            models=models,
            latency=latency,
            prefill=prefill,
            per_token=per_token,
            load_latency=load_latency,
            slots=slots,
            max_queue=max_queue,
            failure_rate=failure_rate,
            invalid_output_rate=invalid_output_rate,
            cut_stream=cut_stream,
            hang=hang,
            hang_seconds=hang_seconds,
            seed=seed,
            version=version,
        )

    # --- lifecycle

    def start(self) -> OllamaStandin:
        server = ThreadingHTTPServer(self._bind, _Handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.request_queue_size = 256
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        server.standin = self  # type: ignore[attr-defined]
        self._server = server
        self._stop.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ollama-standin", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; requests in progress (hung ones included) are woken and their connections closed."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OllamaStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running: call start() or use it as a context manager")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._bind[0]}:{self.port}"

    # --- knobs

    def configure(self, **knobs: Any) -> None:
        """Set several knobs at once (validated); unknown names raise."""
        unknown = set(knobs) - set(KNOBS)
        if unknown:
            raise ValueError(f"unknown stand-in knobs: {sorted(unknown)}; known: {list(KNOBS)}")
        for name, value in knobs.items():
            setattr(self, name, value)

    @property
    def models(self) -> list[str]:
        with self._lock:
            return list(self._models)

    @models.setter
    def models(self, names: Iterable[str]) -> None:
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        with self._lock:
            self._models = [canonical(n) for n in names]

    @property
    def slots(self) -> int:
        return self._slots

    @slots.setter
    def slots(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("slots must be at least 1")
        with self._cond:
            self._slots = int(n)
            self._cond.notify_all()

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @max_queue.setter
    def max_queue(self, n: int) -> None:
        if int(n) < 0:
            raise ValueError("max_queue must be 0 or more")
        with self._cond:
            self._max_queue = int(n)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in RATE_KNOBS:
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a fraction of requests, between 0 and 1; got {value}")
        elif name in ("latency", "prefill", "per_token", "load_latency", "hang_seconds"):
            values = value.values() if isinstance(value, Mapping) else [value]
            if any(float(v) < 0 for v in values):
                raise ValueError(f"{name} is in seconds and can not be negative; got {value}")
            value = dict(value) if isinstance(value, Mapping) else float(value)
        super().__setattr__(name, value)

    def latency_for(self, model: str) -> float:
        latency = self.latency
        if isinstance(latency, Mapping):
            for key in (model, canonical(model), "*"):
                if key in latency:
                    return float(latency[key])
            return 0.0
        return float(latency)

    def has_model(self, name: str) -> bool:
        return canonical(name) in self.models

    def inject(self, *faults: str) -> None:
        """Queue one-shot faults, taken in order by the next chat/generate requests."""
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        with self._lock:
            self._injected.extend(faults)

    # --- counters

    def reset(self) -> None:
        """Clear counters, the request log, one-shot faults, loaded models and the fault draws."""
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.responses: Counter[int] = Counter()
            self.by_model: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.log: deque[dict[str, Any]] = deque(maxlen=self._log_limit)
            self.max_concurrency = 0
            self.max_active = 0
            self._in_progress = 0
            self._active = 0
            self._active_by_model: Counter[str] = Counter()
            self._waiting = 0
            self.max_waiting = 0
            self.served = 0  # inference answers sent whole (not loads, not errors)
            self.busy_seconds = 0.0  # slot-seconds spent serving answers: utilisation = busy / (slots x time)
            self.abandoned = 0  # answers whose client had gone (its read timeout) before they were sent
            self._wait_area = 0.0  # integral of the queue length over time: mean waiting = area / time
            self._wait_since = time.monotonic()
            self._injected: deque[str] = deque()
            self._seen: Counter[bytes] = Counter()
            self._loaded: dict[str, tuple[datetime, int]] = {}

    @property
    def busy_rejections(self) -> int:
        return self.responses[503]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot()

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Block until ``predicate(stats())`` holds (re-checked whenever a counter moves) or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._snapshot()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def _snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "by_model": dict(self.by_model),
            "faults": dict(self.faults),
            "max_concurrency": self.max_concurrency,
            "max_active": self.max_active,
            "in_progress": self._in_progress,
            "active": self._active,
            "waiting": self._waiting,
            "max_waiting": self.max_waiting,
            "wait_area": self._wait_area + self._waiting * (time.monotonic() - self._wait_since),
            "served": self.served,
            "busy_seconds": self.busy_seconds,
            "abandoned": self.abandoned,
            "busy_rejections": self.responses[503],
        }

    def _count_waiting(self, delta: int) -> None:
        """Change the queue length (lock held), keeping its integral over time."""
        now = time.monotonic()
        self._wait_area += self._waiting * (now - self._wait_since)
        self._wait_since = now
        self._waiting += delta
        self.max_waiting = max(self.max_waiting, self._waiting)

    def _served(self, seconds: float) -> None:
        with self._cond:
            self.served += 1
            self.busy_seconds += seconds
            self._cond.notify_all()

    def _abandoned(self) -> None:
        with self._cond:
            self.abandoned += 1
            self._cond.notify_all()

    # --- used by the handler

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _received(self, path: str, body: Any) -> None:
        with self._cond:
            self.requests[path] += 1
            self.log.append({"path": path, "body": body, "at": time.time()})
            self._cond.notify_all()

    def _answered(self, status: int) -> None:
        with self._cond:
            self.responses[status] += 1
            self._cond.notify_all()

    def _enter(self, model: str) -> None:
        with self._cond:
            self.by_model[canonical(model)] += 1
            self._in_progress += 1
            self.max_concurrency = max(self.max_concurrency, self._in_progress)
            self._cond.notify_all()

    def _leave(self) -> None:
        with self._cond:
            self._in_progress -= 1
            self._cond.notify_all()

    def _admit(self, model: str) -> bool:
        """Take one of the model's parallel slots (OLLAMA_NUM_PARALLEL is per loaded model), waiting in the
        queue (shared by all models, as OLLAMA_MAX_QUEUE) if there is room in it; False means 503."""
        name = canonical(model)
        with self._cond:
            if self._active_by_model[name] >= self._slots:
                if self._waiting >= self._max_queue:
                    return False
                self._count_waiting(1)
                self._cond.notify_all()
                try:
                    while self._active_by_model[name] >= self._slots:
                        if self._stop.is_set():
                            return False
                        self._cond.wait(0.1)
                finally:
                    self._count_waiting(-1)
            self._active_by_model[name] += 1
            self._active += 1
            self.max_active = max(self.max_active, self._active)
            self._cond.notify_all()
            return True

    def _release(self, model: str) -> None:
        with self._cond:
            self._active_by_model[canonical(model)] -= 1
            self._active -= 1
            self._cond.notify_all()

    def _fault_for(self, key: bytes) -> str | None:
        with self._lock:
            if self._injected:
                fault: str | None = self._injected.popleft()
            else:
                self._seen[key] += 1
                seen = self._seen[key]
                fault = None
                for name, knob in (("hang", "hang"), ("error", "failure_rate"), ("cut", "cut_stream"),
                                   ("invalid", "invalid_output_rate")):
                    if _fraction(self.seed, name, key.hex(), seen) < getattr(self, knob):
                        fault = name
                        break
            if fault:
                self.faults[fault] += 1
            return fault

    def _load(self, model: str, keep_alive: float | None, num_ctx: int) -> None:
        """Mark the model loaded until keep_alive runs out; a cold model first takes load_latency."""
        now = datetime.now(UTC)
        name = canonical(model)
        with self._lock:
            entry = self._loaded.get(name)
            cold = entry is None or entry[0] <= now
            if keep_alive is None:
                keep_alive = 300.0
            expires = FOREVER if math.isinf(keep_alive) else now + timedelta(seconds=keep_alive)
            if keep_alive == 0:
                self._loaded.pop(name, None)
            else:
                self._loaded[name] = (expires, num_ctx)
        if cold and self.load_latency > 0:
            self._stop.wait(self.load_latency)

    def _unload(self, model: str) -> None:
        with self._lock:
            self._loaded.pop(canonical(model), None)

    def loaded(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        with self._lock:
            live = sorted(((n, e) for n, e in self._loaded.items() if e[0] > now), key=lambda x: x[1][0], reverse=True)
        out = []
        for name, (expires, num_ctx) in live:
            info = model_info(name)
            out.append({
                **{k: info[k] for k in ("name", "model", "size", "digest", "details")},
                "expires_at": timestamp(expires),
                "size_vram": info["size"],
                "context_length": num_ctx,
            })
        return out

    def compose(self, model: str, body: Mapping[str, Any], *, invalid: bool = False) -> str:
        """The deterministic answer: a function of the model, options.seed and the last user message."""
        if "messages" in body:
            users = [m.get("content") or "" for m in body.get("messages") or [] if m.get("role") == "user"]
            text = users[-1] if users else ""
        else:
            text = body.get("prompt", "")
        options = body.get("options") or {}
        digest = _digest(canonical(model), options.get("seed"), text)
        tag = digest.hex()[:12]
        fmt = body.get("format")
        if isinstance(fmt, Mapping):
            good = SchemaFaker(fmt, digest).value(fmt)
            answer = json.dumps(good)
            return break_answer(fmt, good, answer, digest) if invalid else answer
        if fmt == "json":
            answer = json.dumps({"response": f"stand-in reply {tag}"})
            return answer[: len(answer) // 2] if invalid else answer
        return f"Stand-in reply {tag} from {model}."


_MODEL_FAMILIES = {"phi": "phi3", "llama": "llama", "qwen": "qwen2", "mistral": "llama", "gemma": "gemma2"}


def model_info(name: str) -> dict[str, Any]:
    """What /api/tags says about a model: derived from its name, stable across runs."""
    name = canonical(name)
    base, tag = name.rsplit(":", 1)
    match = re.search(r"(\d+(?:\.\d+)?)b", tag.lower())
    billions = float(match.group(1)) if match else 7.0
    stem = re.match(r"[a-z]+", base.rsplit("/", 1)[-1].lower())
    family = _MODEL_FAMILIES.get(stem.group(0) if stem else "", stem.group(0) if stem else "llama")
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-15T10:20:30.123456789Z",
        "size": int(billions * 0.62e9),
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": f"{billions:g}B",
            "quantization_level": "Q4_K_M",
        },
    }


# ---------------------------------------------------------------------------------------- the handler


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-standin"
    sys_version = ""

    ROUTES = {
        "/": ("GET", "HEAD"),
        "/api/version": ("GET", "HEAD"),
        "/api/tags": ("GET", "HEAD"),
        "/api/ps": ("GET",),
        "/api/chat": ("POST",),
        "/api/generate": ("POST",),
        "/api/show": ("POST",),
        "/_standin/stats": ("GET",),
        "/_standin/config": ("POST",),
        "/_standin/reset": ("POST",),
    }

    @property
    def standin(self) -> OllamaStandin:
        return self.server.standin  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        # Go's net/http sets TCP_NODELAY; without it a small body waits ~40 ms on Nagle and delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.standin._track(self.connection, True)

    def finish(self) -> None:
        self.standin._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        if self.standin.verbose:
            sys.stderr.write(f"standin {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        methods = self.ROUTES.get(path)
        if methods is None:
            self._text(404, "404 page not found")
            return
        if method not in methods:
            self._text(405, "405 method not allowed")
            return
        if not path.startswith("/_standin/"):
            self.standin._received(path, self._loggable(raw))
        try:
            getattr(self, "route_" + (path.strip("/").replace("/", "_") or "root"))(method, raw)
        except _BadRequest as exc:
            self._json(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a stand-in bug must show up as a 500, not as a hung client
            self.close_connection = True
            try:
                self._json(500, {"error": f"stand-in failure: {type(exc).__name__}: {exc}"})
            except OSError:
                pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _loggable(raw: bytes) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        if not raw.strip():
            raise _BadRequest("missing request body")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            text = raw.decode("utf-8", "replace")
            pos = min(getattr(exc, "pos", 0), max(len(text) - 1, 0))
            char = text[pos] if text else ""
            if char and char.strip():
                raise _BadRequest(f"invalid character '{char}' looking for beginning of value") from None
            raise _BadRequest("unexpected EOF") from None
        if not isinstance(body, dict):
            raise _BadRequest(f"json: cannot unmarshal {type(body).__name__} into Go value of type api.Request")
        return body

    def _send_head(self, status: int, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Date", self.date_time_string())
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.standin._answered(status)

    def send_response(self, code: int, message: str | None = None) -> None:
        # BaseHTTPRequestHandler adds Server and Date; Ollama (Go net/http) sends no Server header.
        self.log_request(code)
        self.send_response_only(code, message)

    def _text(self, status: int, text: str) -> None:
        data = text.encode()
        self._send_head(status, "text/plain; charset=utf-8", len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, status: int, obj: Any, *, cut: bool = False) -> None:
        data = json.dumps(obj).encode()
        self._send_head(status, "application/json; charset=utf-8", len(data))
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self._abort()
            return
        self.wfile.write(data)

    def _chunk(self, obj: Any) -> None:
        line = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """True when the client closed its end (it gave up waiting: its read timeout)."""
        try:
            ready, _, _ = select.select([self.connection], [], [], 0)
            return bool(ready) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- Ollama's routes

    def route_root(self, method: str, raw: bytes) -> None:
        self._text(200, "Ollama is running")

    def route_api_version(self, method: str, raw: bytes) -> None:
        self._json(200, {"version": self.standin.version})

    def route_api_tags(self, method: str, raw: bytes) -> None:
        self._json(200, {"models": [model_info(m) for m in self.standin.models]})

    def route_api_ps(self, method: str, raw: bytes) -> None:
        self._json(200, {"models": self.standin.loaded()})

    def route_api_show(self, method: str, raw: bytes) -> None:
        body = self._parse(raw)
        name = body.get("model") or body.get("name")
        if not name:
            raise _BadRequest("model is required")
        if not self.standin.has_model(name):
            self._json(404, {"error": f"model '{name}' not found"})
            return
        info = model_info(name)
        self._json(200, {
            "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {info['name']}\n",
            "parameters": "num_ctx                        4096",
            "template": "{{ .Prompt }}",
            "details": info["details"],
            "model_info": {"general.architecture": info["details"]["family"], "general.parameter_count": info["size"]},
            "capabilities": ["completion"],
            "modified_at": info["modified_at"],
        })

    def route_api_chat(self, method: str, raw: bytes) -> None:
        self._inference("chat", raw)

    def route_api_generate(self, method: str, raw: bytes) -> None:
        self._inference("generate", raw)

    # --- the stand-in's own routes, for benchmarks that run it as a separate process

    def route__standin_stats(self, method: str, raw: bytes) -> None:
        self._json(200, self.standin.stats())

    def route__standin_config(self, method: str, raw: bytes) -> None:
        try:
            self.standin.configure(**self._parse(raw))
        except (TypeError, ValueError) as exc:
            raise _BadRequest(str(exc)) from None
        self._json(200, {"ok": True})

    def route__standin_reset(self, method: str, raw: bytes) -> None:
        self.standin.reset()
        self._json(200, {"ok": True})

    # --- inference

    def _validate(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "chat":
            messages = body.get("messages")
            if messages is not None and not (
                isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
            ):
                raise _BadRequest(
                    "json: cannot unmarshal into Go struct field ChatRequest.messages of type []api.Message"
                )
            for m in messages or []:
                if not isinstance(m.get("content") or "", str) or not isinstance(m.get("role") or "", str):
                    raise _BadRequest("json: cannot unmarshal into Go struct field Message.messages.content of type string")
        elif not isinstance(body.get("prompt", ""), str):
            raise _BadRequest("json: cannot unmarshal into Go struct field GenerateRequest.prompt of type string")
        if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
            raise _BadRequest("json: cannot unmarshal into Go struct field .stream of type bool")
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            raise _BadRequest(f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema')
        options = body.get("options")
        if options is not None and not isinstance(options, dict):
            raise _BadRequest("json: cannot unmarshal into Go struct field .options of type map[string]interface {}")
        for key in ("num_ctx", "seed", "num_predict"):
            value = (options or {}).get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise _BadRequest(f'option "{key}" must be of type integer')

    def _inference(self, kind: str, raw: bytes) -> None:
        st = self.standin
        started = time.monotonic()
        body = self._parse(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise _BadRequest("model is required")
        self._validate(kind, body)
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        if not st.has_model(model):
            self._json(404, {"error": f'model "{model}" not found, try pulling it first'})
            return
        st._enter(model)
        try:
            self._serve(kind, body, model, keep_alive, started)
        finally:
            st._leave()

    def _serve(self, kind: str, body: dict[str, Any], model: str, keep_alive: float | None, started: float) -> None:
        st = self.standin
        empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        # as in Ollama, loading (or unloading) a model goes through the scheduler, not a parallel slot
        if not empty and not st._admit(model):
            self._json(503, {"error": BUSY_ERROR})
            return
        try:
            fault = None if empty else st._fault_for(_digest(kind, canonical(model), json.dumps(body, sort_keys=True)))
            if fault == "busy":
                self._json(503, {"error": BUSY_ERROR})
                return
            options = body.get("options") or {}
            num_ctx = int(options.get("num_ctx") or 4096)
            if empty:
                if keep_alive == 0:
                    st._unload(model)
                    reason = "unload"
                else:
                    st._load(model, keep_alive, num_ctx)
                    reason = "load"
                self._json(200, self._frame(kind, model, "", done=True, done_reason=reason))
                return
            if fault == "hang":
                st._stop.wait(st.hang_seconds)
            if fault == "error":
                self._json(500, {"error": RUNNER_ERROR})
                return
            st._load(model, keep_alive, num_ctx)
            loaded = time.monotonic()
            content = st.compose(model, body, invalid=fault == "invalid")
            prompt_tokens = max(1, len(json.dumps(body.get("messages") or body.get("prompt") or "")) // 4)
            stats = {"prompt_eval_count": prompt_tokens, "eval_count": max(1, len(content) // 4)}
            # prefill grows with the prompt, generation with the answer
            latency = st.latency_for(model) + st.prefill * prompt_tokens + st.per_token * stats["eval_count"]
            if body.get("stream", True) is False:
                st._stop.wait(latency)
                if self._client_gone():
                    st._abandoned()
                final = self._frame(kind, model, content, done=True, done_reason="stop")
                final.update(self._metrics(started, loaded, stats))
                self._json(200, final, cut=fault == "cut")
                if fault != "cut":
                    st._served(latency)
                return
            self._stream(kind, model, content, latency, started, loaded, stats, cut=fault == "cut")
            if fault != "cut":
                st._served(latency)
        finally:
            if not empty:
                st._release(model)

    def _frame(self, kind: str, model: str, text: str, *, done: bool, done_reason: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"model": model, "created_at": timestamp()}
        if kind == "chat":
            frame["message"] = {"role": "assistant", "content": text}
            if done_reason:
                frame["done_reason"] = done_reason
            frame["done"] = done
        else:
            frame["response"] = text
            frame["done"] = done
            if done_reason:
                frame["done_reason"] = done_reason
        return frame

    @staticmethod
    def _metrics(started: float, loaded: float, stats: dict[str, int]) -> dict[str, Any]:
        # As in Ollama, load_duration runs from the request's arrival to a loaded model: queueing included.
        total = max(2, int((time.monotonic() - started) * 1e9))
        load = max(1, min(total - 1, int((loaded - started) * 1e9)))
        work = max(2, total - load)
        prompt_eval = max(1, work // 5)
        return {
            "total_duration": total,
            "load_duration": load,
            "prompt_eval_count": stats["prompt_eval_count"],
            "prompt_eval_duration": prompt_eval,
            "eval_count": stats["eval_count"],
            "eval_duration": max(1, work - prompt_eval),
        }

    def _stream(
        self, kind: str, model: str, content: str, latency: float, started: float, loaded: float,
        stats: dict[str, int], *, cut: bool,
    ) -> None:
        st = self.standin
        pieces = re.findall(r"\s*\S{1,6}", content)
        rest = content[len("".join(pieces)):]
        if rest:
            pieces.append(rest)
        self._send_head(200, "application/x-ndjson", None)
        st._stop.wait(latency * 0.2)
        gap = latency * 0.8 / max(1, len(pieces))
        stop_after = max(1, len(pieces) // 2) if cut else None
        for i, piece in enumerate(pieces):
            if stop_after is not None and i >= stop_after:
                self._abort()
                return
            self._chunk(self._frame(kind, model, piece, done=False))
            if gap > 0:
                st._stop.wait(gap)
        if cut:
            self._abort()
            return
        final = self._frame(kind, model, "", done=True, done_reason="stop")
        if kind == "generate":
            final["context"] = list(range(1, min(stats["prompt_eval_count"], 16) + 1))
        final.update(self._metrics(started, loaded, stats))
        self._chunk(final)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An Ollama stand-in server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--prefill", type=float, default=0.0, help="more seconds per prompt token")
    parser.add_argument("--per-token", type=float, default=0.0, help="more seconds per answer token")
    parser.add_argument("--load-latency", type=float, default=0.0, help="extra seconds on a model's first use")
    parser.add_argument("--slots", type=int, default=4, help="parallel requests (OLLAMA_NUM_PARALLEL)")
    parser.add_argument("--queue", type=int, default=0, help="requests that may wait (OLLAMA_MAX_QUEUE)")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--invalid-output-rate", type=float, default=0.0)
    parser.add_argument("--cut-stream", type=float, default=0.0)
    parser.add_argument("--hang", type=float, default=0.0, help="fraction of requests that stall")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    standin = OllamaStandin(
        args.models.split(","),
        latency=args.latency,
        prefill=args.prefill,
        per_token=args.per_token,
        load_latency=args.load_latency,
        slots=args.slots,
        max_queue=args.queue,
        failure_rate=args.failure_rate,
        invalid_output_rate=args.invalid_output_rate,
        cut_stream=args.cut_stream,
        hang=args.hang,
        hang_seconds=args.hang_seconds,
        seed=args.seed,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    )
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with standin:
        print(f"ollama stand-in listening on {standin.url}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

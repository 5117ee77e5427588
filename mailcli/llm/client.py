"""The one Ollama client: bounded concurrency, retries with backoff, a breaker and routing per host.

    client = OllamaClient("http://gpu1:11434,http://gpu2:11434", max_in_flight=3)
    result = client.chat("llama3.2:3b", [{"role": "user", "content": "..."}], format=SCHEMA,
                         options={"temperature": 0.1, "seed": 7, "num_ctx": 8192})
    result.content, result.attempts, result.eval_count

One call is one or more HTTP attempts. Busy (503) and other 5xx answers, timeouts, refused or dropped
connections and answers cut short are retried, on another host when one is free, else after an
exponential backoff with full jitter. 400 and 404 are final: the request or the host's setup is wrong.
Every attempt is reported to ``on_call`` so the caller can keep the ledger of LLM calls.

The client is thread-safe: a job may run its phase 2 calls from a thread pool. Each inference request
first takes a permit of its host's adaptive limit (mailcli.llm.limiter): ``limiter`` is a RedisLimiter
shared by every worker, or by default a LocalLimiter of this client; ``max_in_flight`` is the ceiling of
each host's limit. A busy answer shrinks the limit and does not count against the host's breaker.
``transport`` is the test seam (httpx.MockTransport).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from mailcli.llm.errors import (
    IncompleteResponse,
    ModelNotFound,
    OllamaBadRequest,
    OllamaError,
    OllamaUnavailable,
)
from mailcli.llm.hosts import parse_hosts
from mailcli.llm.limiter import HostState, LocalLimiter, Permit, RedisLimiter, Signal
from mailcli.llm.wire import (
    BREAKER_COOLDOWN,
    BREAKER_THRESHOLD,
    BUSY_STATUSES,
    BadAnswer,
    BreakerState,
    answer_error,
    breaker_state,
    clip,
    connect_failed,
    dropped,
    is_retryable_status,
    json_object,
    server_message,
    timed_out,
    transport_failed,
)

Limiter = LocalLimiter | RedisLimiter

log = logging.getLogger("mailcli.llm")

Outcome = Literal["ok", "retry", "error"]
_PERMIT_WAIT = 2.0  # seconds between two looks at the breakers while waiting for a permit


@dataclass(frozen=True)
class CallRecord:
    """One HTTP attempt, as the call ledger needs it (never the prompt or the answer)."""

    host: str
    model: str | None
    path: str
    attempt: int
    outcome: Outcome  # ok | retry (failed, another attempt follows) | error (failed, final)
    status: int | None  # HTTP status; None when no answer came (refused, timeout, dropped)
    duration_s: float
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    done_reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ChatResult:
    """A successful chat: the assistant's content and what Ollama reported about producing it."""

    content: str
    model: str
    host: str
    status: int
    attempts: int
    duration_s: float  # the whole call, retries and backoff included
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration_ns: int | None = None
    load_duration_ns: int | None = None
    prompt_eval_duration_ns: int | None = None
    eval_duration_ns: int | None = None
    created_at: str | None = None


OnCall = Callable[[CallRecord], None]


class Cancelled(OllamaError):
    """The caller cancelled the call while it waited for a permit: nothing was sent."""


class _Retryable(OllamaError):
    """An attempt failed in a way another attempt may not (busy, 5xx, network, cut short)."""

    timed_out = False


class _TimedOut(_Retryable):
    """No answer within the read timeout."""

    timed_out = True


_RETRYABLE = (_Retryable, IncompleteResponse)


class _Host:
    """Routing and circuit-breaker state of one Ollama host; guarded by the client's lock."""

    def __init__(self, url: str):
        self.url = url
        self.in_flight = 0
        self.failures = 0  # consecutive attempts that count against the breaker
        self.last_failure_at: float | None = None  # the client's clock
        self.probing = False  # the one request of a half-open breaker is in flight
        self.last_error: str | None = None

    def state(self, now: float, threshold: int, cooldown: float) -> BreakerState:
        """The breaker by the rule status applies too (mailcli.llm.wire); while its probe runs, a
        breaker stays half-open, even if another request's failure has just restarted the cooldown."""
        state = breaker_state(self.failures, self.last_failure_at, now, threshold, cooldown)
        return "half-open" if state == "open" and self.probing else state


class OllamaClient:
    """A thread-safe client for one or several Ollama hosts (see the module docstring)."""

    def __init__(
        self,
        hosts: str | Sequence[str],
        *,
        max_in_flight: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        breaker_threshold: int = BREAKER_THRESHOLD,
        breaker_cooldown: float = BREAKER_COOLDOWN,
        on_call: OnCall | None = None,
        limiter: Limiter | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if retries < 0 or breaker_threshold < 1:
            raise ValueError("retries must be 0 or more and breaker_threshold at least 1")
        self._hosts = [_Host(url) for url in parse_hosts(hosts)]
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self.on_call = on_call
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random()
        self._lock = threading.Lock()
        # each host's adaptive limit of requests in flight, ``max_in_flight`` its ceiling (mailcli.llm.limiter)
        self.limiter: Limiter = limiter if limiter is not None else LocalLimiter(max_in_flight)
        self._next = 0  # round-robin tie-break
        self._local_fallback: LocalLimiter | None = None
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                      pool=connect_timeout)
        connections = max_in_flight * len(self._hosts) + 2
        self._http = httpx.Client(
            transport=transport,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            # Ollama lives on loopback or the LAN: an HTTP(S)_PROXY meant for the internet must not intercept it.
            trust_env=False,
        )

    # --- lifecycle

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hosts(self) -> list[str]:
        return [h.url for h in self._hosts]

    def breaker_states(self) -> dict[str, BreakerState]:
        now = self._clock()
        with self._lock:
            return {h.url: h.state(now, self.breaker_threshold, self.breaker_cooldown) for h in self._hosts}

    # --- inference

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        format: str | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        timeout: float | None = None,
        on_call: OnCall | None = None,
        cancel: threading.Event | None = None,
    ) -> ChatResult:
        """POST /api/chat with ``stream: false``; ``format`` is "json" or a JSON schema.

        ``cancel``, once set, stops a call still waiting for a permit (`Cancelled`): nothing is sent.
        """
        payload = self._chat_payload(model, messages, format, options, keep_alive, stream=False)
        return self._chat(model, payload, timeout, on_call, stream=False, on_token=None, cancel=cancel)

    def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        format: str | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        timeout: float | None = None,
        on_call: OnCall | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> ChatResult:
        """POST /api/chat streaming NDJSON, assembled into one result.

        ``timeout`` bounds the silence between two chunks, not the whole answer. A stream that ends
        without ``done: true`` is retried from the start (``on_token`` then sees the pieces again).
        """
        payload = self._chat_payload(model, messages, format, options, keep_alive, stream=True)
        return self._chat(model, payload, timeout, on_call, stream=True, on_token=on_token)

    def warm(self, model: str, *, keep_alive: str | float = "5m", timeout: float | None = None,
             hosts: Iterable[str] | None = None) -> list[str]:
        """Load ``model`` on every reachable host (of ``hosts``, when given) and keep it loaded (an empty
        /api/generate).

        Returns the hosts that loaded it; raises ModelNotFound if a host lacks it, OllamaUnavailable
        if no host could load it.
        """
        warmed: list[str] = []
        last: OllamaUnavailable | None = None
        payload = {"model": model, "keep_alive": keep_alive, "stream": False}
        wanted = None if hosts is None else set(parse_hosts(list(hosts))) if hosts else set()
        for host in self._routable_hosts():
            if wanted is not None and host not in wanted:
                continue
            try:
                self._call("POST", "/api/generate", payload, model=model, only=host, timeout=timeout)
                warmed.append(host)
            except OllamaUnavailable as exc:
                last = exc
        if not warmed:
            raise last or OllamaUnavailable(f"no Ollama host is reachable to load {model!r}", model=model)
        return warmed

    # --- discovery

    def version(self, host: str | None = None) -> str:
        return str(self._call("GET", "/api/version", None, only=self._one(host))[0].get("version", ""))

    def tags(self, host: str | None = None) -> list[str]:
        """Names of the models pulled on ``host`` (any reachable host when None)."""
        data, _ = self._call("GET", "/api/tags", None, only=self._one(host))
        return [m.get("name") or m.get("model", "") for m in data.get("models") or []]

    def ps(self, host: str | None = None) -> list[dict[str, Any]]:
        """Models loaded in memory on ``host``, as /api/ps describes them (name, expires_at, size_vram...)."""
        data, _ = self._call("GET", "/api/ps", None, only=self._one(host))
        return list(data.get("models") or [])

    def check_models(self, models: Iterable[str]) -> dict[str, list[str]]:
        """For each model, the hosts that have it pulled; a host that does not answer has none."""
        wanted = {m: _canonical(m) for m in models}
        found: dict[str, list[str]] = {m: [] for m in wanted}
        for host in self.hosts:
            try:
                data, _ = self._call("GET", "/api/tags", None, only=host, retries=0)
            except OllamaError:
                continue
            have = {_canonical(m.get("name") or m.get("model", "")) for m in data.get("models") or []}
            for model, name in wanted.items():
                if name in have:
                    found[model].append(host)
        return found

    # --- the call engine

    @staticmethod
    def _chat_payload(
        model: str,
        messages: Sequence[Mapping[str, Any]],
        format: str | Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
        keep_alive: str | float | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages], "stream": stream}
        if format is not None:
            payload["format"] = format if isinstance(format, str) else dict(format)
        if options:
            payload["options"] = dict(options)
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        return payload

    def _chat(
        self,
        model: str,
        payload: dict[str, Any],
        timeout: float | None,
        on_call: OnCall | None,
        *,
        stream: bool,
        on_token: Callable[[str], None] | None,
        cancel: threading.Event | None = None,
    ) -> ChatResult:
        started = time.perf_counter()
        data, (host, attempts) = self._call(
            "POST", "/api/chat", payload, model=model, timeout=timeout, on_call=on_call,
            stream=stream, on_token=on_token, cancel=cancel,
        )
        message = data.get("message") or {}
        return ChatResult(
            content=message.get("content") or "",
            model=data.get("model") or model,
            host=host,
            status=200,
            attempts=attempts,
            duration_s=time.perf_counter() - started,
            done_reason=data.get("done_reason"),
            prompt_eval_count=data.get("prompt_eval_count"),
            eval_count=data.get("eval_count"),
            total_duration_ns=data.get("total_duration"),
            load_duration_ns=data.get("load_duration"),
            prompt_eval_duration_ns=data.get("prompt_eval_duration"),
            eval_duration_ns=data.get("eval_duration"),
            created_at=data.get("created_at"),
        )

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        model: str | None = None,
        only: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        on_call: OnCall | None = None,
        stream: bool = False,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[dict[str, Any], tuple[str, int]]:
        """Send with retries; return (final JSON object, (host, attempts)) or raise an OllamaError."""
        budget = 1 + (self.retries if retries is None else retries)
        tried: set[str] = set()
        backoffs = 0
        last: OllamaError | None = None
        # inference takes a permit of the host's adaptive limit; listing and loading models do not
        limited = path in ("/api/chat", "/api/generate") and bool(
            payload and (payload.get("messages") or payload.get("prompt"))
        )
        for attempt in range(1, budget + 1):
            host, permit = self._checkout(tried, only, limited)
            if host is None:
                raise self._breakers_open(model, only, attempt - 1, last)
            if cancel is not None and cancel.is_set():
                self._checkin(host, failed=False)
                if permit is not None:
                    self._give_back(permit, "failed", 0.0, None, 0)
                raise Cancelled(f"call to {model!r} cancelled before it was sent", model=model)
            t0 = time.perf_counter()
            signal: Signal = "failed"
            service: float | None = None
            tokens = 0
            try:
                data = self._send(host.url, method, path, payload, model, timeout, stream, on_token)
            except _RETRYABLE as exc:
                busy = exc.status in BUSY_STATUSES  # Ollama's queue is full (OLLAMA_MAX_QUEUE)
                signal = "busy" if busy else "timeout" if getattr(exc, "timed_out", False) else "failed"
                # a busy host answered: it is up, only full; its limit shrinks, its breaker does not count it
                self._checkin(host, failed=not busy, error=str(exc))
                last = exc
                tried.add(host.url)
                outcome: Outcome = "error" if attempt == budget else "retry"
                self._report(on_call, host.url, model, path, attempt, outcome, exc.status, t0, error=str(exc))
                log.debug("ollama %s %s on %s: attempt %d failed: %s", path, model, host.url, attempt, exc)
            except OllamaError as exc:
                self._checkin(host, failed=False)  # the host answered: it is healthy, the request is not
                self._report(on_call, host.url, model, path, attempt, "error", exc.status, t0, error=str(exc))
                raise
            except BaseException:  # a caller's on_token raised, or an interrupt: keep the books straight
                self._checkin(host, failed=False)
                raise
            else:
                self._checkin(host, failed=False)
                signal = "ok"
                service = _service_seconds(data)
                tokens = int(data.get("prompt_eval_count") or 0) + int(data.get("eval_count") or 0)
                self._report(on_call, host.url, model, path, attempt, "ok", 200, t0,
                             prompt_eval_count=data.get("prompt_eval_count"),
                             eval_count=data.get("eval_count"), done_reason=data.get("done_reason"))
                return data, (host.url, attempt)
            finally:
                if permit is not None:
                    self._give_back(permit, signal, time.perf_counter() - t0, service, tokens)
            if attempt < budget and not self._fresh_host(tried, only):
                # Nowhere new to go: wait before asking the same host(s) again (exponential, full jitter).
                self._sleep(self._random.uniform(0, min(self.backoff_max, self.backoff_base * 2**backoffs)))
                backoffs += 1
        assert last is not None
        where = only or ", ".join(self.hosts)
        raise OllamaUnavailable(
            f"Ollama unavailable for model {model!r} on {where}: {budget} attempt(s) failed; last: {last}",
            model=model, host=last.host, status=last.status, attempts=budget, last_error=last,
        ) from last

    def _send(
        self,
        host: str,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        model: str | None,
        timeout: float | None,
        stream: bool,
        on_token: Callable[[str], None] | None,
    ) -> dict[str, Any]:
        url = host + path
        t = self._timeout
        if timeout is not None:
            t = httpx.Timeout(connect=t.connect, read=timeout, write=t.write, pool=t.pool)
        try:
            if not stream:
                response = self._http.request(method, url, json=payload, timeout=t)
                _check_status(response, host, model, path)
                try:
                    data = json_object(host, path, response.content)
                except BadAnswer as exc:
                    raise _Retryable(str(exc), host=host, model=model, status=200) from None
                if path in ("/api/chat", "/api/generate") and data.get("done") is not True:
                    raise IncompleteResponse(f"{host} answered {path} without done:true", host=host, model=model,
                                             status=200)
                return data
            with self._http.stream(method, url, json=payload, timeout=t) as response:
                if response.status_code != 200:
                    response.read()
                _check_status(response, host, model, path)
                return _assemble(response.iter_lines(), host, model, path, on_token)
        except httpx.TimeoutException as exc:
            raise _TimedOut(timed_out(host, type(exc).__name__), host=host, model=model) from None
        except httpx.ConnectError as exc:
            raise _Retryable(connect_failed(host, exc), host=host, model=model) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _Retryable(dropped(host, exc), host=host, model=model) from None
        except httpx.TransportError as exc:
            raise _Retryable(transport_failed(host, exc), host=host, model=model) from None

    # --- routing and breakers

    def _one(self, host: str | None) -> str | None:
        if host is None:
            return None
        url = parse_hosts(host)[0]
        if url not in self.hosts:
            raise ValueError(f"{host!r} is not one of this client's hosts: {', '.join(self.hosts)}")
        return url

    def _routable_hosts(self) -> list[str]:
        states = self.breaker_states()
        return [url for url, state in states.items() if state != "open"]

    def _rank(self, tried: set[str], only: str | None) -> list[_Host]:
        """The hosts an attempt may go to, best first; empty when every breaker is open.

        Preference: a half-open host due for its probe, then hosts this call has not tried yet, then the
        fewest requests in flight from this client, then round robin.
        """
        now = self._clock()
        with self._lock:
            n = len(self._hosts)
            ranked = []
            for i, h in enumerate(self._hosts):
                if only is not None and h.url != only:
                    continue
                state = h.state(now, self.breaker_threshold, self.breaker_cooldown)
                if state == "open" or (state == "half-open" and h.probing):
                    continue
                ranked.append(((state != "half-open", h.url in tried, h.in_flight, (i - self._next) % n), h))
            return [h for _, h in sorted(ranked, key=lambda r: r[0])]

    def _checkout(self, tried: set[str], only: str | None, limited: bool) -> tuple[_Host | None, Permit | None]:
        """Pick the host for the next attempt and count it in flight; (None, None) when every breaker is open.

        An inference request (``limited``) first waits for a permit of the host's adaptive limit, on the
        best-ranked host that has room; the ranking is looked at again every few seconds meanwhile.
        """
        permit: Permit | None = None
        while True:
            ranked = self._rank(tried, only)
            if not ranked:
                return None, None
            if not limited:
                host = ranked[0]
                break
            # a retry waits for room on a host this call has not tried, while there is one: a host
            # that refuses connections answers at once, so it always has room, and would otherwise
            # take every retry of the request until its breaker opens
            candidates = [h for h in ranked if h.url not in tried] or ranked
            permit = self._take_permit([h.url for h in candidates])
            if permit is None:
                continue
            host = next(h for h in candidates if h.url == permit.host)
            with self._lock:
                state = host.state(self._clock(), self.breaker_threshold, self.breaker_cooldown)
                routable = state == "closed" or (state == "half-open" and not host.probing)
            if routable:
                break
            # the host's breaker opened while this call waited for its permit: hand it back, rank again
            self._give_back(permit, "failed", 0.0, None, 0)
            permit = None
        with self._lock:
            self._next = (self._hosts.index(host) + 1) % len(self._hosts)
            if host.failures >= self.breaker_threshold:  # breaker half-open: this request is its probe
                host.probing = True
            host.in_flight += 1
        return host, permit

    def _take_permit(self, hosts: list[str]) -> Permit | None:
        try:
            return self.limiter.acquire(hosts, timeout=_PERMIT_WAIT)
        except Exception as exc:  # Redis went away: this process keeps its own limit until it is back
            return self._fallback_limiter(exc).acquire(hosts, timeout=_PERMIT_WAIT)

    def _give_back(self, permit: Permit, signal: Signal, rtt: float, service: float | None, tokens: int) -> None:
        limiter = self._local_fallback if getattr(permit, "local", False) else self.limiter
        try:
            limiter.release(permit, signal, rtt=rtt, service=service, tokens=tokens)
        except Exception as exc:  # the lease expires in Redis on its own
            log.warning("ollama limiter: could not give back a permit for %s: %s", permit.host, exc)

    def _fallback_limiter(self, exc: Exception) -> LocalLimiter:
        with self._lock:
            if self._local_fallback is None:
                log.warning("ollama limiter: the shared limit in Redis is unreachable (%s); this process "
                            "limits its own requests until Redis is back", exc)
                self._local_fallback = _MarkedLocalLimiter(self.max_in_flight)
            return self._local_fallback

    def host_states(self) -> dict[str, HostState | None]:
        """Each host's adaptive limit, requests in flight, queueing and tokens/s, as the limiter holds them."""
        out: dict[str, HostState | None] = {}
        for url in self.hosts:
            try:
                out[url] = self.limiter.state(url)
            except Exception:
                out[url] = None
        return out

    def _checkin(self, host: _Host, *, failed: bool, error: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            host.in_flight -= 1
            was_probe = host.probing
            host.probing = False
            if not failed:
                host.failures = 0
                return
            # a failed probe opens the breaker again, even after another request's answer closed it
            # while the probe was in flight
            host.failures = max(host.failures + 1, self.breaker_threshold) if was_probe else host.failures + 1
            host.last_failure_at = now
            host.last_error = error
            if was_probe or host.failures == self.breaker_threshold:
                log.warning("ollama host %s: circuit breaker open after %d failure(s): %s",
                            host.url, host.failures, error)

    def _fresh_host(self, tried: set[str], only: str | None) -> bool:
        now = self._clock()
        with self._lock:
            return any(
                h.url not in tried and h.state(now, self.breaker_threshold, self.breaker_cooldown) != "open"
                for h in self._hosts
                if only is None or h.url == only
            )

    def _breakers_open(self, model: str | None, only: str | None, attempts: int,
                       last: OllamaError | None) -> OllamaUnavailable:
        now = self._clock()
        with self._lock:
            hosts = [h for h in self._hosts if only is None or h.url == only]
            waits = [max(0.0, self.breaker_cooldown - (now - h.last_failure_at)) for h in hosts
                     if h.failures >= self.breaker_threshold and h.last_failure_at is not None]
            cause = last.args[0] if last else next((h.last_error for h in hosts if h.last_error), None)
        names = ", ".join(h.url for h in hosts)
        message = f"Ollama unavailable for model {model!r}: circuit breaker open for {names}"
        if waits:
            message += f" (next probe in {min(waits):.0f}s)"
        if cause:
            message += f"; last error: {cause}"
        return OllamaUnavailable(message, model=model, attempts=attempts, last_error=last)

    def _report(
        self, on_call: OnCall | None, host: str, model: str | None, path: str, attempt: int, outcome: Outcome,
        status: int | None, t0: float, **fields: Any,
    ) -> None:
        record = CallRecord(host=host, model=model, path=path, attempt=attempt, outcome=outcome, status=status,
                            duration_s=time.perf_counter() - t0, **fields)
        for callback in (self.on_call, on_call):
            if callback is not None:
                callback(record)


# --- helpers


class _MarkedLocalLimiter(LocalLimiter):
    """The stand-in limiter while Redis is unreachable; its permits say so, to come back to it."""

    def try_acquire(self, host: str) -> Permit | None:
        permit = super().try_acquire(host)
        if permit is not None:
            permit.local = True  # type: ignore[attr-defined]
        return permit


def _service_seconds(data: Mapping[str, Any]) -> float | None:
    """How long the server worked on an answer (prompt evaluation + generation), from its metrics."""
    prompt, answer = data.get("prompt_eval_duration"), data.get("eval_duration")
    if not isinstance(prompt, int | float) and not isinstance(answer, int | float):
        return None
    return (float(prompt or 0) + float(answer or 0)) / 1e9


def _canonical(name: str) -> str:
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _check_status(response: httpx.Response, host: str, model: str | None, path: str) -> None:
    status = response.status_code
    if status == 200:
        return
    message = server_message(response.content)
    if status == 404 and model is not None and path in ("/api/chat", "/api/generate", "/api/show"):
        raise ModelNotFound(model, host, message)
    text = answer_error(host, status, message, f"model {model!r}" if model else path)
    if is_retryable_status(status):
        raise _Retryable(text, host=host, model=model, status=status)
    raise OllamaBadRequest(text, host=host, model=model, status=status)


def _assemble(
    lines: Iterable[str], host: str, model: str | None, path: str, on_token: Callable[[str], None] | None
) -> dict[str, Any]:
    """Fold an NDJSON stream into the final object, its ``message.content``/``response`` filled in."""
    parts: list[str] = []
    final: dict[str, Any] | None = None
    chunks = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            chunk = json.loads(line)
        except ValueError:
            raise _Retryable(f"{host} sent a stream line that is not JSON on {path}", host=host, model=model,
                             status=200) from None
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:  # Ollama reports failures after the first chunk in-band
            raise _Retryable(f"{host} failed mid-stream: {clip(chunk['error'])}", host=host, model=model,
                             status=200)
        chunks += 1
        piece = (chunk.get("message") or {}).get("content") if "message" in chunk else chunk.get("response")
        if piece:
            parts.append(piece)
            if on_token is not None:
                on_token(piece)
        if chunk.get("done") is True:
            final = chunk
    if final is None:
        raise IncompleteResponse(
            f"stream from {host} ended without done:true after {chunks} chunk(s)", host=host, model=model, status=200
        )
    content = "".join(parts)
    if "message" in final or path == "/api/chat":
        final["message"] = {**(final.get("message") or {"role": "assistant"}), "content": content}
    else:
        final["response"] = content
    return final

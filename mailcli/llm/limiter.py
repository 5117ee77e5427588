"""Adaptive concurrency per Ollama host: how many requests may be in flight to it, learnt from its answers.

An Ollama host serves ``OLLAMA_NUM_PARALLEL`` requests at once and queues the rest (up to
``OLLAMA_MAX_QUEUE``, then 503). Its queue gives no back-pressure: requests sent beyond its slots just
wait there, until the client's read timeout gives up on them. So each host gets a *limit* of requests
in flight, shared by every worker on every machine, and found from the answers:

* every answer says how long the server worked on it (``prompt_eval_duration + eval_duration``); the rest
  of the round trip is time spent waiting (in the server's queue, or on the way). With ``n`` requests in
  flight, ``n x service / round trip`` of them were being served: an estimate of the slots in use;
* the limit moves a fifth of the way, at each answer, towards that estimate plus a little headroom
  (a third of it, at least one request): with no queueing the estimate is every request in flight,
  so the limit grows; once requests queue, it settles at the slots the server really has plus that
  headroom, so a freed slot is refilled at once: one request waits at a 1-slot host, a third of a request
  per slot at larger ones (client-side delays, which look like waiting, then still leave it above the slots);
* a busy answer (503 "maximum pending requests exceeded", 429) or a read timeout halves the limit.

A slow server is not a failing one: its slowness shrinks the limit and never counts against the
client's circuit breaker, which is for refused connections, 5xx and timeouts.

``MAILCLI_LLM_MAX_IN_FLIGHT`` is the ceiling of each host's limit. Two backends hold the state:

* `RedisLimiter`: the limit and statistics in a hash, the requests in flight as leases in a sorted set
  (expiring, so the permits of a worker that died come back), updated by Lua scripts (atomic); a waiting
  worker blocks on a wake-up list that each release pushes to, so nobody polls. Used by pool workers.
* `LocalLimiter`: the same rule in this process (`analyze --inline`, tests, a client without Redis).

Redis keys (all expire a day after their last use): ``mailcli:llm:host:<url>`` (hash: limit,
wait_ms, rtt_ms, tok_s, calls, busy, timeouts...), ``mailcli:llm:leases:<url>`` (sorted set),
``mailcli:llm:wake:<url>`` (list). `mailcli status` reads the hash and the lease count.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("mailcli.llm")

Signal = Literal["ok", "busy", "timeout", "failed"]

KEY_PREFIX = "mailcli:llm:"
INITIAL_LIMIT = 2.0
SMOOTHING = 0.2  # the share of the way to the target the limit moves at each answer
HEADROOM = 1 / 3  # target = slots in use x (1 + HEADROOM), at least one more
BACKOFF = 0.5  # the limit is multiplied by this on a busy answer or a timeout
TOKENS_WINDOW = 10.0  # seconds over which tokens/s is counted
KEY_TTL = 86_400  # seconds: the state of a host nobody used for a day goes away
WAKE_KEEP = 64  # wake-up tokens kept when nobody waits


def host_key(url: str) -> str:
    return f"{KEY_PREFIX}host:{url}"


def leases_key(url: str) -> str:
    return f"{KEY_PREFIX}leases:{url}"


def wake_key(url: str) -> str:
    return f"{KEY_PREFIX}wake:{url}"


def lease_owner(pid: int | None = None, hostname: str | None = None) -> str:
    """The prefix of the leases a process holds (host and pid): a supervisor that buries a worker
    gives its leases back at once (`release_dead`) rather than waiting for them to lapse."""
    return f"{hostname or socket.gethostname()}:{os.getpid() if pid is None else pid}:"


def release_dead(conn: Any, pid: int, hostname: str | None = None) -> int:
    """Give back every lease a dead process held, on every host, and wake the waiters. Returns how many."""
    owner = lease_owner(pid, hostname)
    freed = 0
    for key in conn.scan_iter(match=f"{KEY_PREFIX}leases:*", count=100):
        key = key.decode() if isinstance(key, bytes) else key
        mine = [m for m, _ in conn.zscan_iter(key, match=f"{owner}*")]
        if not mine:
            continue
        n = int(conn.zrem(key, *mine))
        if n:
            url = key[len(f"{KEY_PREFIX}leases:"):]
            conn.rpush(wake_key(url), *["1"] * n)
            conn.ltrim(wake_key(url), -WAKE_KEEP, -1)
        freed += n
    return freed


def permits(limit: float) -> int:
    """Requests that may be in flight under ``limit`` (the limit moves in fractions, permits are whole)."""
    return max(1, math.floor(limit + 0.5))


def next_limit(limit: float, signal: Signal, in_flight: int, rtt: float, service: float | None,
               ceiling: int) -> float:
    """The host's new limit after one answer (see the module docstring). ``in_flight`` counts this request.

    The Lua release script below is this function, line for line.
    """
    if signal in ("busy", "timeout"):
        new = limit * BACKOFF
    elif signal == "ok" and service is not None and service > 0 and rtt > 0:
        in_use = in_flight * min(1.0, service / rtt)
        target = in_use + max(1.0, HEADROOM * in_use)
        new = limit + SMOOTHING * (target - limit)
    else:
        new = limit
    return min(float(ceiling), max(1.0, new))


@dataclass
class Permit:
    """The right to send one request to ``host``; give it back with `release`."""

    host: str
    token: str
    started: float  # time.monotonic() when granted


@dataclass(frozen=True)
class HostState:
    """What a limiter knows of one host (`mailcli status` shows it)."""

    limit: float
    in_flight: int
    wait_ms: float | None = None  # average time an answer spent waiting (queue + transport), recent answers
    rtt_ms: float | None = None
    tokens_per_s: float | None = None  # prompt + answer tokens the host processed per second, last window
    calls: int = 0
    busy: int = 0
    timeouts: int = 0


class _Stats:
    """Running figures of one host (the local backend's copy of the Redis hash)."""

    def __init__(self) -> None:
        self.limit = INITIAL_LIMIT
        self.in_flight = 0
        self.wait_ms: float | None = None
        self.rtt_ms: float | None = None
        self.tok_s: float | None = None
        self.calls = self.busy = self.timeouts = 0
        self.win_start: float | None = None
        self.win_tokens = 0

    def note(self, signal: Signal, rtt: float, service: float | None, tokens: int, now: float) -> None:
        if signal == "ok":
            self.calls += 1
            self.rtt_ms = _ewma(self.rtt_ms, rtt * 1000.0)
            if service is not None:
                self.wait_ms = _ewma(self.wait_ms, max(0.0, rtt - service) * 1000.0)
        elif signal == "busy":
            self.busy += 1
        elif signal == "timeout":
            self.timeouts += 1
        if self.win_start is None:
            self.win_start = now
        self.win_tokens += tokens
        if now - self.win_start >= TOKENS_WINDOW:
            self.tok_s = self.win_tokens / (now - self.win_start)
            self.win_start, self.win_tokens = now, 0


def _ewma(old: float | None, value: float, alpha: float = SMOOTHING) -> float:
    return value if old is None else old + alpha * (value - old)


def first_with_room(
    hosts: Sequence[str],
    timeout: float | None,
    try_acquire: Callable[[str], Permit | None],
    wait: Callable[[float | None], object],
) -> Permit | None:
    """The wait loop both limiters share: a permit from the first of ``hosts`` that ``try_acquire``
    grants one on; when none has room, ``wait(remaining)`` (seconds left, None without a timeout)
    and try them all again; None once ``timeout`` has passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for host in hosts:
            permit = try_acquire(host)
            if permit is not None:
                return permit
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        wait(remaining)


class LocalLimiter:
    """The adaptive limit of each host, in this process only (thread-safe)."""

    shared = False

    def __init__(self, ceiling: int):
        if ceiling < 1:
            raise ValueError("the ceiling must be at least 1")
        self.ceiling = ceiling
        self._cond = threading.Condition()
        self._hosts: dict[str, _Stats] = {}

    def _stats(self, host: str) -> _Stats:
        stats = self._hosts.get(host)
        if stats is None:
            stats = self._hosts[host] = _Stats()
            stats.limit = min(stats.limit, float(self.ceiling))
        return stats

    def try_acquire(self, host: str) -> Permit | None:
        with self._cond:
            stats = self._stats(host)
            if stats.in_flight >= permits(stats.limit):
                return None
            stats.in_flight += 1
            return Permit(host, uuid.uuid4().hex, time.monotonic())

    def acquire(self, hosts: Sequence[str], timeout: float | None = None) -> Permit | None:
        """A permit on the first of ``hosts`` with room, waiting until one has; None after ``timeout``."""
        with self._cond:
            # a release notifies the condition: the wait ends as soon as a permit may be free
            return first_with_room(hosts, timeout, self.try_acquire, self._cond.wait)

    def release(self, permit: Permit, signal: Signal, *, rtt: float, service: float | None = None,
                tokens: int = 0) -> float:
        """Give the permit back and learn from the answer; returns the host's new limit."""
        with self._cond:
            stats = self._stats(permit.host)
            in_flight = stats.in_flight
            stats.in_flight = max(0, stats.in_flight - 1)
            stats.limit = next_limit(stats.limit, signal, in_flight, rtt, service, self.ceiling)
            stats.note(signal, rtt, service, tokens, time.monotonic())
            self._cond.notify_all()
            return stats.limit

    def state(self, host: str) -> HostState:
        with self._cond:
            s = self._stats(host)
            return HostState(s.limit, s.in_flight, s.wait_ms, s.rtt_ms, s.tok_s, s.calls, s.busy, s.timeouts)


# ---------------------------------------------------------------------------------------------- Redis

# KEYS: host hash, leases; ARGV: token, lease seconds, ceiling, initial limit
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local ceiling = tonumber(ARGV[3])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or ARGV[4])
if limit > ceiling then limit = ceiling end
local permits = math.max(1, math.floor(limit + 0.5))
local n = redis.call('ZCARD', KEYS[2])
if n >= permits then return {0, n} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[2], %(ttl)d)
return {1, n + 1}
"""

# KEYS: host hash, leases, wake list; ARGV: token, signal, rtt, service (or ''), tokens, ceiling,
# initial limit. next_limit() and _Stats.note() in Lua.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local held = redis.call('ZREM', KEYS[2], ARGV[1])
local in_flight = redis.call('ZCARD', KEYS[2]) + 1
local signal = ARGV[2]
local rtt = tonumber(ARGV[3])
local service = tonumber(ARGV[4])
local ceiling = tonumber(ARGV[6])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or ARGV[7])
if limit > ceiling then limit = ceiling end
local before = math.max(1, math.floor(limit + 0.5))
local new = limit
if signal == 'busy' or signal == 'timeout' then
  new = limit * %(backoff)s
elseif signal == 'ok' and service and service > 0 and rtt > 0 then
  local in_use = in_flight * math.min(1.0, service / rtt)
  local target = in_use + math.max(1.0, %(headroom)s * in_use)
  new = limit + %(smoothing)s * (target - limit)
end
new = math.min(ceiling, math.max(1.0, new))
redis.call('HSET', KEYS[1], 'limit', tostring(new))
local function ewma(field, value)
  local old = tonumber(redis.call('HGET', KEYS[1], field))
  if old then value = old + %(smoothing)s * (value - old) end
  redis.call('HSET', KEYS[1], field, tostring(value))
end
if signal == 'ok' then
  redis.call('HINCRBY', KEYS[1], 'calls', 1)
  ewma('rtt_ms', rtt * 1000.0)
  if service then ewma('wait_ms', math.max(0, rtt - service) * 1000.0) end
elseif signal == 'busy' then
  redis.call('HINCRBY', KEYS[1], 'busy', 1)
elseif signal == 'timeout' then
  redis.call('HINCRBY', KEYS[1], 'timeouts', 1)
end
local win_start = tonumber(redis.call('HGET', KEYS[1], 'win_start'))
local win_tokens = tonumber(redis.call('HGET', KEYS[1], 'win_tokens') or '0') + tonumber(ARGV[5])
if not win_start then win_start = now end
if now - win_start >= %(window)s then
  redis.call('HSET', KEYS[1], 'tok_s', tostring(win_tokens / (now - win_start)))
  win_start = now
  win_tokens = 0
end
redis.call('HSET', KEYS[1], 'win_start', tostring(win_start), 'win_tokens', tostring(win_tokens),
           'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], %(ttl)d)
-- one wake-up for the permit given back, and one per permit the new limit adds
local wakes = held + math.max(0, math.max(1, math.floor(new + 0.5)) - before)
for i = 1, wakes do redis.call('RPUSH', KEYS[3], '1') end
if wakes > 0 then
  redis.call('LTRIM', KEYS[3], -%(wake_keep)d, -1)
  redis.call('EXPIRE', KEYS[3], %(ttl)d)
end
return tostring(new)
"""

# KEYS: leases; ARGV: lease seconds, tokens...: the leases this process still holds, extended
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
return 1
"""

_PARAMS = {"backoff": repr(BACKOFF), "headroom": repr(HEADROOM), "smoothing": repr(SMOOTHING),
           "window": repr(TOKENS_WINDOW), "ttl": KEY_TTL, "wake_keep": WAKE_KEEP}


class RedisLimiter:
    """The adaptive limit of each host, shared through Redis by every process that uses the same Redis.

    ``redis`` is a redis-py client (bytes or str responses). A permit is a lease that this process extends
    every ``lease / 3`` seconds while it holds it; one whose holder died (a worker killed mid-request) is
    counted no longer than ``lease``. A release that could not reach Redis (an outage) is sent again at
    each renewal until it does. Within one process only one thread at a time blocks on Redis for a
    wake-up; the others wait here.
    """

    shared = True

    def __init__(self, redis: Any, ceiling: int, *, lease: float = 30.0, wait_step: float = 1.0):
        if ceiling < 1:
            raise ValueError("the ceiling must be at least 1")
        self.ceiling = ceiling
        self.lease = lease
        self.wait_step = wait_step  # longest single block on the wake-up list (below the socket timeout)
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE % _PARAMS)
        self._release = redis.register_script(_RELEASE % _PARAMS)
        self._renew = redis.register_script(_RENEW)
        self._cond = threading.Condition()
        self._blocking = False  # one thread of this process waits on Redis; the rest on self._cond
        self._held: dict[str, str] = {}  # token -> host: the leases to extend
        self._unreleased: list[Permit] = []  # releases Redis did not get: sent again by the renewer
        self._renewer: threading.Thread | None = None

    def try_acquire(self, host: str) -> Permit | None:
        token = f"{lease_owner()}{uuid.uuid4().hex}"
        granted, _ = self._acquire(keys=[host_key(host), leases_key(host)],
                                   args=[token, self.lease, self.ceiling, INITIAL_LIMIT])
        if not int(granted):
            return None
        with self._cond:
            self._held[token] = host
            self._start_renewer()
        return Permit(host, token, time.monotonic())

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_loop, name="mailcli-llm-leases", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        """Extend the leases held; send again the releases that failed; end when nothing is left to do."""
        while True:
            time.sleep(self.lease / 3)
            with self._cond:
                by_host: dict[str, list[str]] = {}
                for token, host in self._held.items():
                    by_host.setdefault(host, []).append(token)
                retry, self._unreleased = self._unreleased, []
                if not by_host and not retry:
                    self._renewer = None
                    return
            for host, tokens in by_host.items():
                try:
                    self._renew(keys=[leases_key(host)], args=[self.lease, *tokens])
                except Exception as exc:  # Redis is away: the leases may lapse, and are taken again after
                    log.debug("ollama limiter: could not extend the leases on %s: %s", host, exc)
            for permit in retry:
                self.release(permit, "failed", rtt=0.0)

    def acquire(self, hosts: Sequence[str], timeout: float | None = None) -> Permit | None:
        """A permit on the first of ``hosts`` with room, waiting until one has; None after ``timeout``."""
        with self._cond:
            permit = first_with_room(
                hosts, timeout, self.try_acquire, lambda remaining: self._wait(hosts, remaining)
            )
            if permit is not None:
                self._cond.notify()  # the next local waiter takes over the wait on Redis
            return permit

    def _wait(self, hosts: Sequence[str], remaining: float | None) -> None:
        """One wait of at most ``wait_step`` (called holding ``self._cond``): on a wake-up from Redis by
        the one thread that blocks there, on ``self._cond`` by the others."""
        step = self.wait_step if remaining is None else min(self.wait_step, remaining)
        if self._blocking:
            self._cond.wait(step)
            return
        self._blocking = True
        self._cond.release()
        try:
            # whole seconds (fractions need Redis 6); a wake-up is only a hint to try again
            self._redis.blpop([wake_key(h) for h in hosts], timeout=max(1, math.ceil(step)))
        finally:
            self._cond.acquire()
            self._blocking = False

    def release(self, permit: Permit, signal: Signal, *, rtt: float, service: float | None = None,
                tokens: int = 0) -> float | None:
        """Give the permit back and learn from the answer; the host's new limit, None if Redis was away
        (the release is then sent again by the renewer, as a plain release)."""
        host = permit.host
        with self._cond:
            self._held.pop(permit.token, None)
        try:
            new = self._release(
                keys=[host_key(host), leases_key(host), wake_key(host)],
                args=[permit.token, signal, repr(float(rtt)), "" if service is None else repr(float(service)),
                      int(tokens), self.ceiling, INITIAL_LIMIT],
            )
        except Exception as exc:
            log.debug("ollama limiter: could not give back a permit on %s (sent again later): %s", host, exc)
            with self._cond:
                self._unreleased.append(permit)
                self._start_renewer()
            return None
        with self._cond:
            self._cond.notify_all()  # a local waiter may take the permit before the wake-up reaches Redis
        return float(new)

    def state(self, host: str) -> HostState:
        return read_state(self._redis, host, ceiling=self.ceiling)


def read_state(redis: Any, host: str, *, ceiling: int | None = None) -> HostState | None | Any:
    """A host's shared state as `mailcli status` shows it; None when no worker has used the host."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(host_key(host))
        pipe.zcount(leases_key(host), time.time(), "+inf")
        raw, in_flight = pipe.execute()
    return state_from_hash(raw, int(in_flight or 0), ceiling)


def state_from_hash(raw: dict[Any, Any], in_flight: int, ceiling: int | None = None) -> HostState | None:
    """`HostState` from the fields of a host's hash (bytes or str), None when it is empty."""
    if not raw and not in_flight:
        return None
    data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}

    def num(name: str) -> float | None:
        try:
            return float(data[name])
        except (KeyError, ValueError):
            return None

    limit = num("limit") or INITIAL_LIMIT
    if ceiling is not None:
        limit = min(limit, float(ceiling))
    return HostState(limit=limit, in_flight=in_flight, wait_ms=num("wait_ms"), rtt_ms=num("rtt_ms"),
                     tokens_per_s=num("tok_s"), calls=int(num("calls") or 0), busy=int(num("busy") or 0),
                     timeouts=int(num("timeouts") or 0))

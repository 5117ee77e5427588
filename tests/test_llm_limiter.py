"""The adaptive limit per Ollama host (mailcli.llm.limiter): the rule, both backends, sharing through real Redis,
leases of dead holders, and the client holding a 1-slot stand-in at its capacity without piling requests up."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import redis
from conftest import ROOT, wait_for
from ollama_standin import OllamaStandin

from mailcli.llm.client import OllamaClient
from mailcli.llm.limiter import (
    INITIAL_LIMIT,
    LocalLimiter,
    RedisLimiter,
    leases_key,
    next_limit,
    permits,
    read_state,
)

HOST = "http://gpu1:11434"


@pytest.fixture
def redis_conn(home):
    conn = home.redis()
    yield conn
    conn.close()


# ------------------------------------------------------------------------------------------- the rule


def test_the_limit_grows_while_answers_do_not_queue():
    limit = INITIAL_LIMIT
    for _ in range(40):  # every request in flight is served at once: round trip == service time
        limit = next_limit(limit, "ok", permits(limit), rtt=1.0, service=1.0, ceiling=16)
    assert limit == 16  # up to the ceiling, never past it


@pytest.mark.parametrize("slots", [1, 2, 4, 8])
def test_the_limit_settles_at_the_slots_plus_about_one_waiting_per_slot(slots):
    """A server with ``slots`` slots: n in flight beyond them wait, so each round trip is n/slots services."""
    limit = INITIAL_LIMIT
    for _ in range(300):
        n = permits(limit)
        rtt = max(1.0, n / slots)
        limit = next_limit(limit, "ok", n, rtt=rtt, service=1.0, ceiling=64)
    assert slots + 0.5 <= limit <= slots + max(1.0, slots / 3) + 0.5
    assert permits(limit) - slots <= max(1, slots // 3 + 1)  # waiting at the server: well under one per slot


def test_busy_and_timeouts_halve_the_limit_and_failures_leave_it():
    assert next_limit(8.0, "busy", 8, rtt=0.1, service=None, ceiling=16) == 4.0
    assert next_limit(8.0, "timeout", 8, rtt=120.0, service=None, ceiling=16) == 4.0
    assert next_limit(8.0, "failed", 8, rtt=0.1, service=None, ceiling=16) == 8.0
    assert next_limit(1.0, "busy", 1, rtt=0.1, service=None, ceiling=16) == 1.0  # never below one request
    assert next_limit(8.0, "ok", 8, rtt=1.0, service=None, ceiling=16) == 8.0  # no metrics: nothing learnt


def test_redis_runs_the_same_rule_as_this_process(redis_conn):
    """The Lua release script and next_limit() give the same limits for the same answers."""
    local, shared = LocalLimiter(12), RedisLimiter(redis_conn, 12)
    samples = [("ok", 1.0, 1.0)] * 6 + [("ok", 2.5, 1.0)] * 5 + [("busy", 0.01, None), ("ok", 1.2, 1.0),
                                                                  ("timeout", 30.0, None), ("failed", 0.1, None)]
    for signal, rtt, service in samples:
        a, b = local.try_acquire(HOST), shared.try_acquire(HOST)
        assert a is not None and b is not None
        got_local = local.release(a, signal, rtt=rtt, service=service, tokens=100)
        got_shared = shared.release(b, signal, rtt=rtt, service=service, tokens=100)
        assert got_shared == pytest.approx(got_local, abs=1e-9)
    state = shared.state(HOST)
    assert state.calls == 12 and state.busy == 1 and state.timeouts == 1 and state.in_flight == 0
    assert state.wait_ms is not None and state.rtt_ms is not None


# ------------------------------------------------------------------------------------ sharing in Redis


def test_workers_share_one_limit_per_host(redis_conn):
    """Three limiters (three workers) on one Redis: together they hold no more permits than the host's limit."""
    workers = [RedisLimiter(redis_conn, 8) for _ in range(3)]
    held = [p for w in workers for p in (w.try_acquire(HOST), w.try_acquire(HOST)) if p is not None]
    assert len(held) == permits(INITIAL_LIMIT) == 2
    assert read_state(redis_conn, HOST).in_flight == 2
    # another host has a limit of its own
    assert workers[2].try_acquire("http://gpu2:11434") is not None


def test_a_waiting_worker_is_woken_by_a_release_elsewhere(redis_conn):
    a, b = RedisLimiter(redis_conn, 2), RedisLimiter(redis_conn, 2, wait_step=5.0)
    held = [a.try_acquire(HOST), a.try_acquire(HOST)]
    assert all(held)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire([HOST], timeout=10)))
    waiter.start()
    # the waiter blocks on the wake-up list: its connection shows in Redis's client list as a BLPOP
    wait_for(lambda: any(c.get("cmd") == "blpop" for c in redis_conn.client_list()), timeout=5,
             what="the waiter to block on the wake-up list")  # fmt: skip
    assert not got
    a.release(held[0], "failed", rtt=0.1)
    waiter.join(timeout=5)
    assert got and got[0] is not None and got[0].host == HOST  # woken well before its 5 s wait step
    assert b.acquire([HOST], timeout=0.05) is None  # the limit is full again


HOLDER = """
import os, sys, redis
from mailcli.llm.limiter import RedisLimiter
limiter = RedisLimiter(redis.Redis(unix_socket_path=sys.argv[1]), 4, lease=float(sys.argv[2]))
held = [limiter.try_acquire(sys.argv[3]) for _ in range(2)]
print(sum(p is not None for p in held), flush=True)
sys.stdin.read()  # hold them until killed
"""


def _holder(redis_conn, lease: float) -> subprocess.Popen:
    """Another process that takes two permits (leases of ``lease`` seconds) and holds them until killed."""
    path = redis_conn.connection_pool.connection_kwargs["path"]
    return subprocess.Popen([sys.executable, "-c", HOLDER, path, str(lease), HOST], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_permits_of_a_killed_worker_come_back_and_a_live_ones_stay(redis_conn):
    holder = _holder(redis_conn, lease=0.6)
    try:
        assert holder.stdout.readline().strip() == "2"
        alive = RedisLimiter(redis_conn, 4)
        assert alive.try_acquire(HOST) is None  # the limit (2) is held by the other process

        # its renewer extends them while it lives: never free while it lives, up to the moment both
        # leases reach 2.5 leases (1.5 s) past their first expiry
        def lease_ends() -> list[float]:
            return [score for _, score in redis_conn.zrange(leases_key(HOST), 0, -1, withscores=True)]

        first = max(lease_ends())

        def renewed() -> bool:
            assert alive.try_acquire(HOST) is None
            ends = lease_ends()
            return len(ends) == 2 and min(ends) >= first + 1.5

        wait_for(renewed, timeout=10, what="the holder's renewer to extend its leases")
        assert alive.try_acquire(HOST) is None and read_state(redis_conn, HOST).in_flight == 2
        holder.kill()  # kill -9: nothing is given back
        holder.wait(10)
        assert wait_for(lambda: alive.try_acquire(HOST), timeout=5, what="the killed worker's leases to lapse")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert redis_conn.zcard(leases_key(HOST)) == 1


def test_a_release_redis_did_not_get_is_sent_again(redis_conn, monkeypatch):
    limiter = RedisLimiter(redis_conn, 4, lease=0.3)
    permits_ = [limiter.try_acquire(HOST), limiter.try_acquire(HOST)]
    script = limiter._release
    calls = {"n": 0}

    def outage_once(**kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("Connection refused (Redis restarting)")
        return script(**kw)

    monkeypatch.setattr(limiter, "_release", outage_once)
    assert limiter.release(permits_[0], "ok", rtt=1.0, service=1.0) is None  # Redis away: kept to send again
    assert limiter.release(permits_[1], "ok", rtt=1.0, service=1.0) is not None
    assert wait_for(lambda: redis_conn.zcard(leases_key(HOST)) == 0, timeout=5, what="the release sent again")


# ------------------------------------------------------------------------------- the client on a server


def _hammer(clients: list[OllamaClient], threads_each: int, calls_each: int) -> None:
    def work(client: OllamaClient) -> None:
        for i in range(calls_each):
            client.chat("llama3.2:3b", [{"role": "user", "content": f"email {i} " + "text " * 200}], format="json")

    threads = [threading.Thread(target=work, args=(c,)) for c in clients for _ in range(threads_each)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_workers_hold_a_one_slot_server_at_one_waiting_request(redis_conn):
    """Four 'workers' of 4 threads each (16 requests ready at all times) against OLLAMA_NUM_PARALLEL=1:
    the shared limit keeps about one request waiting at the server, no 503, no timeout."""
    with OllamaStandin(latency=0.03, prefill=0.00002, slots=1, max_queue=512) as server:
        clients = [OllamaClient(server.url, max_in_flight=8, limiter=RedisLimiter(redis_conn, 8))
                   for _ in range(4)]
        try:
            _hammer(clients, threads_each=4, calls_each=5)
        finally:
            for c in clients:
                c.close()
        server.wait_for(lambda s: s["served"] == 80)  # an answer is counted just after its client has it
        stats = server.stats()
        state = read_state(redis_conn, server.url)
    assert stats["served"] == 80 and stats["busy_rejections"] == 0 and stats["abandoned"] == 0
    assert stats["max_waiting"] <= 2  # the limit settles at 2 (1 slot + 1 waiting); a release may overlap
    assert 1.5 <= state.limit <= 2.5 and state.in_flight == 0 and state.calls == 80


def test_a_busy_server_shrinks_the_limit_and_never_opens_the_breaker():
    with OllamaStandin(latency=0.05, slots=1, max_queue=0) as server:
        limiter = LocalLimiter(8)
        with OllamaClient(server.url, max_in_flight=8, limiter=limiter, retries=8, breaker_threshold=2,
                          backoff_base=0.01, backoff_max=0.05) as client:
            server.inject("busy", "busy", "busy")  # three 503 "maximum pending requests exceeded" in a row
            result = client.chat("llama3.2:3b", [{"role": "user", "content": "hello"}], format="json")
            assert result.attempts == 4
            assert client.breaker_states() == {server.url: "closed"}
        state = limiter.state(server.url)
    assert state.busy == 3 and state.limit < INITIAL_LIMIT


def test_inline_limit_is_the_same_rule_in_process():
    """Without Redis (analyze --inline) the client runs a LocalLimiter: same bound, same learning."""
    with OllamaStandin(latency=0.03, slots=1, max_queue=512) as server:
        with OllamaClient(server.url, max_in_flight=8) as client:
            assert isinstance(client.limiter, LocalLimiter)
            _hammer([client], threads_each=8, calls_each=5)
            state = client.host_states()[server.url]
        server.wait_for(lambda s: s["served"] == 40)
        stats = server.stats()
    assert stats["served"] == 40 and stats["max_waiting"] <= 2
    assert state is not None and 1.5 <= state.limit <= 2.5


def test_a_buried_worker_gives_its_permits_back_at_once(redis_conn):
    """The supervisor knows a worker died: its leases (30 s by default) are given back when it is
    buried, and a waiter is woken, instead of every host's capacity shrinking until they lapse."""
    from mailcli.llm.limiter import release_dead

    holder = _holder(redis_conn, lease=30)
    try:
        assert holder.stdout.readline().strip() == "2"
        alive = RedisLimiter(redis_conn, 4)
        assert alive.try_acquire(HOST) is None
        holder.kill()
        holder.wait(10)
        assert alive.try_acquire(HOST) is None  # 30 s leases: nothing lapses by itself yet
        assert release_dead(redis_conn, holder.pid) == 2
        assert release_dead(redis_conn, os.getpid()) == 0  # nothing of ours was touched
        assert alive.try_acquire(HOST) is not None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)

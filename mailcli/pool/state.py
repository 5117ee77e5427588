"""Pool and worker state in Redis: what `status` reads and how `workers scale/stop` reach a pool
running in another terminal or on another host."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from mailcli.queue.names import as_text, decode_hash

POOLS = "mailcli:pools"
WORKERS = "mailcli:workers"
CONTROL = "mailcli:control"  # hash: scale -> {"n", "seq"}, stop -> {"timeout", "seq"}
CONTROL_SEQ = "mailcli:control:seq"
STATE_TTL = 3600  # a dead pool's or worker's last words stay visible (flagged stale) for an hour


def pool_key(pool_id: str) -> str:
    return f"mailcli:pool:{pool_id}"


def worker_key(name: str) -> str:
    return f"mailcli:worker:{name}"


def publish_pool(conn: redis.Redis, pool_id: str, fields: dict[str, Any]) -> None:
    _publish(conn, POOLS, pool_id, pool_key(pool_id), fields)


def publish_worker(conn: redis.Redis, name: str, fields: dict[str, Any]) -> None:
    _publish(conn, WORKERS, name, worker_key(name), fields)


def forget_worker(conn: redis.Redis, name: str) -> None:
    _forget(conn, WORKERS, name, worker_key(name))


def forget_pool(conn: redis.Redis, pool_id: str) -> None:
    _forget(conn, POOLS, pool_id, pool_key(pool_id))


def _publish(conn: redis.Redis, set_key: str, member: str, key: str, fields: dict[str, Any]) -> None:
    """Add ``member`` to its set and update its hash, which expires STATE_TTL after its last update."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.sadd(set_key, member)
        pipe.hset(key, mapping={k: _str(v) for k, v in fields.items()})
        pipe.expire(key, STATE_TTL)
        pipe.execute()


def _forget(conn: redis.Redis, set_key: str, member: str, key: str) -> None:
    with conn.pipeline(transaction=False) as pipe:
        pipe.srem(set_key, member)
        pipe.delete(key)
        pipe.execute()


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def read_all(conn: redis.Redis, set_key: str, key_of) -> list[dict[str, Any]]:
    names = sorted(as_text(n) for n in conn.smembers(set_key))
    if not names:
        return []
    with conn.pipeline(transaction=False) as pipe:
        for n in names:
            pipe.hgetall(key_of(n))
        hashes = pipe.execute()
    out, gone = [], []
    for n, h in zip(names, hashes, strict=True):
        if not h:
            gone.append(n)
            continue
        # the name from the key: a hash recreated by a partial update (Redis restarted) may lack it
        out.append({"name": n, **decode_hash(h)})
    if gone:
        conn.srem(set_key, *gone)
    return out


def read_pools(conn: redis.Redis) -> list[dict[str, Any]]:
    return read_all(conn, POOLS, pool_key)


def read_workers(conn: redis.Redis) -> list[dict[str, Any]]:
    return read_all(conn, WORKERS, worker_key)


def send_control(conn: redis.Redis, command: str, **args: Any) -> int:
    """`workers scale N` / `workers stop`: every running pool picks it up within a second."""
    seq = int(conn.incr(CONTROL_SEQ))
    conn.hset(CONTROL, command, json.dumps({**args, "seq": seq, "at": time.time()}))
    return seq


def unread_commands(
    commands: dict[str, dict[str, Any]], read_up_to: int
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The commands newer than ``read_up_to``, oldest first, and the newest seq among them.

    A sender increments the counter, then writes its command: between the two the counter is ahead
    of every command there is. Only the commands seen count as read, so one that lands a moment
    later is taken on the next read (taking the counter as read would lose it for good)."""
    fresh = sorted(
        ((name, cmd) for name, cmd in commands.items() if int(cmd.get("seq", 0)) > read_up_to),
        key=lambda kv: int(kv[1].get("seq", 0)),
    )
    return fresh, max([read_up_to, *(int(cmd["seq"]) for _, cmd in fresh)])


def read_control(conn: redis.Redis) -> tuple[int, dict[str, dict[str, Any]]]:
    with conn.pipeline(transaction=False) as pipe:
        pipe.get(CONTROL_SEQ)
        pipe.hgetall(CONTROL)
        seq, raw = pipe.execute()
    commands = {}
    for k, v in decode_hash(raw).items():
        try:
            commands[k] = json.loads(v)
        except ValueError:
            continue
    return int(seq or 0), commands

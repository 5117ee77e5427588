"""The one Redis connection factory of mailcli: every package (the command line, the pool, its workers,
status) gets its Redis client from ``connect`` here.

``connect(settings)`` returns a ``redis.Redis``:

- ``settings.redis_url`` set (``redis://``, ``rediss://``, ``unix://``): that server, with socket
  timeouts, a periodic health check and a bounded exponential-backoff retry on connection errors, so a
  restarted server is reconnected to without the caller noticing;
- unset: the embedded server under ``settings.redis_dir`` (``mailcli.queue.redis_server``), started on
  first use and shared by every mailcli process on the host.

Every failure to reach Redis is a ``RedisUnavailable`` whose message is one line that names the fix and
never contains a password; ``describe`` and ``redact_url`` say where Redis is without its password, and
``server_info`` reads the server facts that status and test-loading show.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from mailcli.config import ConfigError, Settings
from mailcli.redact import hide, redact_url, url_passwords

__all__ = [
    "RedisUnavailable",
    "connect",
    "describe",
    "redact_url",
    "server_info",
]

# client defaults (RQ workers raise socket_timeout themselves above their blocking dequeue timeout)
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 10.0
HEALTH_CHECK_INTERVAL = 30
# waits 0.2, 0.4, 0.8, 1.6 s between attempts: rides over a server restart of a few seconds
RETRY_ATTEMPTS = 4
RETRY_BASE = 0.1
RETRY_CAP = 2.0

_URL_FIX = "start it or unset REDIS_URL to use the embedded server"


class RedisUnavailable(Exception):
    """Redis cannot be reached or started. ``str(exc)`` is one line naming the problem and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


# --------------------------------------------------------------------------------------------------
# URLs


def describe(settings: Settings) -> str:
    """A safe human description of where mailcli's Redis is, for status and logs."""
    if settings.redis_url:
        return redact_url(settings.redis_url)
    # imported here, not at the top: mailcli.queue.redis_server imports RedisUnavailable from this module
    from mailcli.queue.redis_server import SOCKET_NAME

    return f"embedded redis at {settings.redis_dir / SOCKET_NAME}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------------
# connecting


def _retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE),
        RETRY_ATTEMPTS,
        # BusyLoadingError is a ConnectionError too: a server that is reloading its AOF is waited for.
        # Timeouts are not retried: a hung server should fail after one socket_timeout, not five.
        supported_errors=(redis.exceptions.ConnectionError,),
    )


def _client_options(decode_responses: bool, socket_timeout: float | None) -> dict[str, Any]:
    return {
        "decode_responses": decode_responses,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": _retry(),
    }


def connect(
    settings: Settings, *, decode_responses: bool = False, socket_timeout: float | None = SOCKET_TIMEOUT
) -> redis.Redis:
    """A verified (PING) client for mailcli's Redis: ``settings.redis_url``, else the embedded server.

    ``socket_timeout`` bounds every command; a caller issuing blocking commands (BLPOP, XREAD BLOCK)
    longer than it must pass a larger value (RQ workers raise it on their own).
    Raises ``RedisUnavailable`` (one line, with the fix) when Redis cannot be reached.
    """
    options = _client_options(decode_responses, socket_timeout)
    if settings.redis_url:
        return _connect_url(settings.redis_url, options)
    # imported here, not at the top: mailcli.queue.redis_server imports RedisUnavailable from this module
    from mailcli.queue.redis_server import EmbeddedRedis

    socket_path = EmbeddedRedis(settings.redis_dir).ensure()  # PINGs the server before returning
    return redis.Redis(unix_socket_path=socket_path, **options)


def _connect_url(url: str, options: dict[str, Any]) -> redis.Redis:
    safe = redact_url(url)
    if url.lower().startswith(("redis://", "rediss://")):
        options = {**options, "socket_keepalive": True}  # TCP only: unix connections reject it
    try:
        client = redis.Redis.from_url(url, **options)
        # The check uses its own client with a single quick retry, so that a server that is down is
        # reported in about a second, not after the full backoff of the long-lived client.
        check = redis.Redis.from_url(url, **{**options, "retry": Retry(NoBackoff(), 1)})
    except ValueError as exc:
        raise ConfigError(
            f"REDIS_URL {safe} is not a usable Redis URL ({_scrub(str(exc), url)}); "
            "use redis://host:port/db, rediss://host:port/db or unix:///path/to/redis.sock"
        ) from None
    try:
        check.ping()
    except redis.exceptions.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {safe} refused the credentials ({_scrub(str(exc), url)}); fix the password in REDIS_URL"
        ) from None
    except redis.exceptions.ResponseError as exc:
        reason = _scrub(str(exc), url)
        if "NOAUTH" in reason or "WRONGPASS" in reason:
            raise RedisUnavailable(
                f"Redis at {safe} requires a password ({reason}); add it to REDIS_URL "
                "(redis://:PASSWORD@host:port/0)"
            ) from None
        raise RedisUnavailable(f"Redis at {safe} answered PING with an error: {reason}") from None
    except (redis.exceptions.RedisError, OSError) as exc:
        raise RedisUnavailable(
            f"cannot connect to Redis at {safe} ({_scrub(str(exc), url)}): "
            f"is Redis running at {safe}? {_URL_FIX}"
        ) from None
    finally:
        check.close()
    return client


def _scrub(text: str, url: str) -> str:
    return hide(_one_line(text), url_passwords(url))


def server_info(conn: redis.Redis) -> dict[str, Any]:
    """Facts about the server behind ``conn``, for ``status`` and ``test-loading``."""
    info = conn.info()

    def get(key: str, default: Any = None) -> Any:
        return info.get(key, default)

    aof_enabled = bool(int(get("aof_enabled", 0) or 0))
    rdb_status = get("rdb_last_bgsave_status")
    aof_status = get("aof_last_write_status")
    return {
        "version": str(get("redis_version", "")),
        "mode": get("redis_mode"),
        "process_id": get("process_id"),
        "executable": get("executable"),
        "uptime_seconds": get("uptime_in_seconds"),
        "connected_clients": get("connected_clients"),
        "blocked_clients": get("blocked_clients"),
        "used_memory": get("used_memory"),
        "used_memory_human": get("used_memory_human"),
        "used_memory_peak": get("used_memory_peak"),
        "used_memory_peak_human": get("used_memory_peak_human"),
        "maxmemory": get("maxmemory"),
        "maxmemory_policy": get("maxmemory_policy"),
        "loading": bool(get("loading", 0)),
        "aof_enabled": aof_enabled,
        "aof_rewrite_in_progress": bool(get("aof_rewrite_in_progress", 0)),
        "aof_last_write_status": aof_status,
        "aof_last_bgrewrite_status": get("aof_last_bgrewrite_status"),
        "rdb_last_bgsave_status": rdb_status,
        "rdb_changes_since_last_save": get("rdb_changes_since_last_save"),
        "rdb_last_save_time": get("rdb_last_save_time"),
        # False when the last AOF write or RDB save failed: the server is not persisting what it gets
        "persistence_ok": (rdb_status in (None, "ok")) and (not aof_enabled or aof_status in (None, "ok")),
    }

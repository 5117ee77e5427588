"""The coordinator: a pool's one link to SQLite, in a thread of the supervisor.

Each round (`step`) it
  writes results   the sink applies what workers put on the results stream (every round);
  feeds            the feeder claims pending conversations and enqueues their jobs (FEED_EVERY);
  marks failures   conversations of jobs that exhausted their retries become `failed` (FAILED_EVERY);
  checks Redis     an embedded server whose socket was removed is restarted (FAILED_EVERY);
  heals            when Redis holds no work but SQLite still owes some: jobs Redis lost come back
                   from SQLite (HEAL_EVERY, only on rounds that wrote nothing);
and says whether the work is `done` (SQLite owes nothing and every result is written), which ends a
burst run. Outages (Redis away, SQLite not writable) are said once each, with the fix, and retried.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from mailcli.config import Settings
from mailcli.dispatch.feeder import Reconciler, feed_once, mark_failed_jobs, pending_count
from mailcli.pool.sink import Sink
from mailcli.queue.names import queue_depths
from mailcli.queue.redis_server import EmbeddedRedis
from mailcli.redis_conn import RedisUnavailable, connect, describe
from mailcli.store.db import Store

log = logging.getLogger("mailcli.pool")

FEED_EVERY = 0.3
FAILED_EVERY = 2.0
HEAL_EVERY = 2.0
DB_ERROR_REPEAT = 30.0  # seconds between two lines about a database that still cannot be written


@dataclass
class Every:
    """A named timer: ``due(now)`` is true at most once every ``seconds`` (and on first asking)."""

    seconds: float
    last: float = field(default=-1e18)

    def due(self, now: float) -> bool:
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class Coordinator:
    """Runs until ``stop`` is set and a round writes nothing. ``feeding`` off (the pool is stopping)
    stops the feeder only; ``done_event`` is set while `done` holds (burst runs only)."""

    def __init__(
        self,
        settings: Settings,
        *,
        window: int | None,
        burst: bool,
        stop: threading.Event,
        feeding: threading.Event,
        done_event: threading.Event,
        on_give_up: Callable[[str], None],
    ):
        self.settings = settings
        self.window = window
        self.burst = burst
        self.stop = stop
        self.feeding = feeding
        self.done_event = done_event
        self.on_give_up = on_give_up
        self.pending = 0  # conversations SQLite owes that no job holds yet (the autoscaler's backlog)
        self.feeds = 0  # feeder rounds done (the pool publishes it: a test waits for rounds, not time)
        self.feed = Every(FEED_EVERY)
        self.failed = Every(FAILED_EVERY)
        self.heal_timer = Every(HEAL_EVERY)
        self.reconciler = Reconciler()
        self.reconciled = False  # the first feed reconciles what an earlier run left queued
        self.redis_down_since: float | None = None
        self.db_error_since: float | None = None
        self.embedded = None if settings.redis_url else EmbeddedRedis(settings.redis_dir)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        store = Store.open(self.settings.db)
        try:
            self.store = store
            self.conn = connect(self.settings)
            self.sink = Sink(store, self.conn)
            while True:
                stopping = self.stop.is_set()
                try:
                    wrote = self.step(block_ms=None if stopping else 100)
                    self._recovered(wrote)
                    if stopping and not wrote:
                        return
                except redis.RedisError as exc:
                    if self._redis_down(exc) and stopping:
                        return
                except sqlite3.Error as exc:
                    self._db_error(exc)
                    if stopping:
                        return
                    time.sleep(1.0)
        finally:
            store.close()

    def step(self, block_ms: int | None = 100) -> int:
        """One round; returns how many results it wrote to SQLite."""
        wrote = self.sink.drain(block_ms=block_ms)
        now = time.monotonic()
        if self.feeding.is_set() and self.feed.due(now):
            if not self.reconciled and self.sink.pending() == 0:
                self.reconcile()  # jobs an earlier run left in SQLite as queued but Redis no longer has
                self.reconciled = True
            feed_once(self.store, self.conn, self.settings, self.window)
            self.feeds += 1
        if self.failed.due(now):
            mark_failed_jobs(self.store, self.conn)
            self._check_embedded_socket()
        self.pending = pending_count(self.store)
        if not wrote:
            if self.burst:
                done = self.done()
                self.done_event.set() if done else self.done_event.clear()
            if self.heal_timer.due(now) and not self.done_event.is_set():
                self.heal()
        return wrote

    # -- decisions ----------------------------------------------------------------------------

    def done(self) -> bool:
        """SQLite owes nothing (no conversation pending or queued) and no result waits in Redis."""
        owed = self.store.conn.execute(
            "SELECT count(*) FROM conversations WHERE status IN ('pending', 'queued')"
        ).fetchone()[0]
        return owed == 0 and self.sink.pending() == 0

    def heal(self) -> None:
        """SQLite owes work that Redis holds no job for: mark failed jobs, give back lost ones.

        Only when Redis is idle (nothing queued, started, retrying or waiting to be written), so
        that nothing a worker is moving along right now is judged."""
        depths = queue_depths(self.conn)
        if any(d["queued"] or d["started"] or d["retrying"] for d in depths.values()) or self.sink.pending():
            return
        if self.store.conn.execute(
            "SELECT 1 FROM conversations WHERE status IN ('pending', 'queued') LIMIT 1"
        ).fetchone() is None:
            return
        mark_failed_jobs(self.store, self.conn)
        self.reconcile()

    def reconcile(self) -> None:
        self.reconciler.run(self.store, self.conn, drain=self.drain_all)

    def drain_all(self) -> None:
        """Write every result already in the stream (before the reconciler releases anything). The
        first drain may only finish the backlog of unacknowledged entries, hence two rounds."""
        for _ in range(2):
            while self.sink.drain():
                pass

    # -- outages ------------------------------------------------------------------------------

    def _check_embedded_socket(self) -> None:
        if self.embedded is not None and self.embedded.socket_lost() is not None:
            # connections made before still work, new ones fail: restart it now rather than let
            # workers fail one by one (ensure() says so in one line)
            self.embedded.ensure()
            raise redis.ConnectionError("the embedded Redis was restarted on a new socket")

    def _redis_down(self, exc: redis.RedisError) -> bool:
        """Say an outage once, retry quietly, give up past the limit. True once given up."""
        now = time.monotonic()
        gave_up = False
        if self.redis_down_since is None:
            log.error(
                "Redis (%s) is unreachable: %s; %s. The pool waits and resumes when it answers",
                describe(self.settings), exc,
                "start it again or fix REDIS_URL" if self.settings.redis_url else "restarting the embedded server",
            )  # fmt: skip
            self.redis_down_since = now
        else:
            log.debug("redis still unavailable (%s); retrying", exc)
            if now - self.redis_down_since > self.settings.redis_outage_limit:
                self.on_give_up(
                    f"Redis ({describe(self.settings)}) has been unreachable for {self.settings.redis_outage_limit} s:"
                    f" stopping the pool (exit 4). Start Redis{' or fix REDIS_URL' if self.settings.redis_url else ''}"
                    " and run `mailcli workers start` again; nothing acknowledged is lost"
                )
                gave_up = True
        time.sleep(0.5)
        if self.embedded is not None:
            # the embedded server is this host's to keep: one that crashed or was stopped is started
            # again (from its append-only file)
            try:
                self.embedded.ensure()
            except RedisUnavailable as exc2:
                log.error("%s", exc2)
        try:
            self.sink.ensure_group()
        except redis.RedisError:
            pass
        return gave_up

    def _db_error(self, exc: sqlite3.Error) -> None:
        # disk full, database locked past its timeout, I/O error: the batch was rolled back and not
        # acknowledged, so it stays in Redis and is applied once SQLite can take it
        now = time.monotonic()
        if self.db_error_since is None or now - self.db_error_since > DB_ERROR_REPEAT:
            log.error(
                "cannot write %s (%s): results wait in Redis until it can be written; %s",
                self.settings.db, exc, db_fix(exc),
            )  # fmt: skip
            self.db_error_since = now

    def _recovered(self, wrote: int) -> None:
        if self.redis_down_since is not None:
            log.warning("Redis answers again after %.0f s; the pool resumes", time.monotonic() - self.redis_down_since)
            self.redis_down_since = None
        if self.db_error_since is not None and wrote:
            log.warning("the database is writable again; results flow from Redis to SQLite")
            self.db_error_since = None


def db_fix(exc: Exception) -> str:
    text = str(exc).lower()
    if "full" in text:
        return "free disk space (nothing acknowledged is lost)"
    if "locked" in text or "busy" in text:
        return "another process holds a long write lock on the database; stop it"
    return "check the disk and the file's permissions"

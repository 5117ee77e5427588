"""The sink: the one SQLite writer of a running pool. Reads the results stream in batches and
applies them in one transaction each, acknowledging only after the commit: a crash between the two
redelivers the batch, and applying it again changes nothing (idempotent upserts)."""

from __future__ import annotations

import json
import logging
import sqlite3

import redis

from mailcli import contract
from mailcli.queue.names import RESULTS_STREAM, SINK_GROUP
from mailcli.store.db import Store
from mailcli.store.results import apply_results

log = logging.getLogger("mailcli.sink")
# what applying a malformed result raises (a missing key, a wrong type, a row it does not fit), as opposed
# to the OperationalErrors of a full disk or a lock, after which the same batch is tried again
_MALFORMED = (
    KeyError, TypeError, ValueError, AttributeError, IndexError,
    sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
)  # fmt: skip
CONSUMER = "coordinator"  # one fixed name: a restarted sink picks up what its predecessor left unacked


class Sink:
    def __init__(self, store: Store, conn: redis.Redis, batch: int = 500):
        self.store = store
        self.conn = conn
        self.batch = batch
        self._backlog_done = False  # first drain what a previous sink read but never acknowledged
        self.applied = 0
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            self.conn.xgroup_create(RESULTS_STREAM, SINK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._backlog_done = False

    def drain(self, block_ms: int | None = None) -> int:
        """Apply one batch; returns how many results were applied (0 when none came)."""
        try:
            return self._drain(block_ms)
        except BaseException:
            # a batch read but not acknowledged (SQLite could not take it, Redis went away before the
            # XACK) stays pending in the group, and only a read from "0" delivers it again: ">" would
            # skip it for good
            self._backlog_done = False
            raise

    def _drain(self, block_ms: int | None) -> int:
        start = ">" if self._backlog_done else "0"
        try:
            resp = self.conn.xreadgroup(
                SINK_GROUP, CONSUMER, {RESULTS_STREAM: start}, count=self.batch,
                block=block_ms if start == ">" else None,
            )  # fmt: skip
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream vanished (Redis restarted without persistence)
                self.ensure_group()
                return 0
            raise
        entries = resp[0][1] if resp else []
        if start == "0" and not entries:
            self._backlog_done = True
            return 0
        if not entries:
            return 0
        results, ids = [], []
        for entry_id, fields in entries:
            ids.append(entry_id)
            raw = fields.get(b"result") or fields.get("result")
            if raw is None:
                continue
            try:
                result = json.loads(raw)
            except ValueError:
                log.error("dropping an unreadable result entry %s", entry_id)
                continue
            try:
                contract.check(result if isinstance(result, dict) else {}, f"a result of job {fields.get(b'job')!r}")
            except contract.WireVersionError as exc:
                # its conversation stays queued under that job; `mailcli analyze` makes it owed again
                log.error("dropping %s", exc)
                continue
            results.append((fields.get(b"job") or fields.get("job") or b"", result))
        applied = len(results)
        try:
            self._apply(results)
        except _MALFORMED:
            # not a result our workers write (someone else's entry on our stream): apply the good ones
            # one by one and drop the bad, so one foreign entry can not stall every result behind it
            applied = 0
            for one in results:
                try:
                    self._apply([one])
                    applied += 1
                except _MALFORMED as exc:
                    log.error("dropping a result entry that is not a mailcli result (%s)", type(exc).__name__)
        with self.conn.pipeline(transaction=True) as pipe:
            # acknowledged and deleted together or not at all: an acked entry left in the stream
            # would count as a result not yet in SQLite for ever
            pipe.xack(RESULTS_STREAM, SINK_GROUP, *ids)
            pipe.xdel(RESULTS_STREAM, *ids)
            pipe.execute()
        self.applied += applied
        return applied

    def _apply(self, results: list) -> None:
        by_job: dict[str, list] = {}
        for job, result in results:
            by_job.setdefault(job.decode() if isinstance(job, bytes) else job, []).append(result)
        with self.store.write():  # one transaction for the batch; rolled back (and not acked) on error
            for job_id, rs in by_job.items():
                apply_results(self.store, rs, job_id=job_id or None, commit=False)

    def pending(self) -> int:
        """Results written by workers but not yet in SQLite."""
        try:
            length = self.conn.xlen(RESULTS_STREAM)
        except redis.RedisError:
            return 0
        return int(length)

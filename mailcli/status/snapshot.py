"""`mailcli status` as data: one read-only snapshot of Redis, SQLite and Ollama, as plain dataclasses.

    with StatusReader(settings) as reader:      # keeps its connections between refreshes (--watch)
        snap = reader.snapshot()
    snap.to_dict()                              # --json; mailcli.status.render draws it, prometheus formats it

Reading never writes: Redis is read in three pipelined round trips (sets, every hash, queue depths), SQLite
through a read-only connection with COUNT queries, Ollama with one short GET /api/ps per host, all
hosts at once. Nothing here talks to the supervisor; it publishes, status reads what it published.
"""

from __future__ import annotations

import contextlib
import math
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from mailcli.config import Settings
from mailcli.llm import wire
from mailcli.llm.hosts import parse_hosts
from mailcli.queue.names import (  # no rq
    PENDING_KEY,
    RESULTS_STREAM,
    as_text,
    decode_hash,
    queue_depths,
    queue_name,
)
from mailcli.redact import hide, url_passwords

# Imported where they are used, not here: redis-py (~100-125 ms of imports, which the SQLite read
# overlaps), rq (only to read failed jobs), http.client (the Ollama probe, mailcli.status.probe).
# test_status_imports_stay_light guards what a snapshot imports.

STALE_AFTER = 10.0  # seconds without a heartbeat: the pool or worker is flagged stale
RATE_MINUTES = 5  # "throughput now" and the ETA: emails per minute over at most this many minutes
MIN_OBSERVED_S = 1.0  # a rate is never taken over less than this (results are stamped to the second)
SPARK_MINUTES = 15  # bars in the throughput sparkline, one per minute, oldest first
LEDGER_MINUTES = 5  # latency percentiles and calls/min from the llm_calls of this many minutes
FAILURES_SHOWN = 5
MMAP_SIZE = 1 << 30  # address space only; SQLite caps it at its compile-time maximum
PROBE_TIMEOUT = 0.3  # seconds for each Ollama host to answer /api/ps
REDIS_SOCKET_TIMEOUT = 2.0
STORE_LOAD_SHARE = 0.1  # --watch: SQLite reads take at most this share of one core
SPARK_CHARS = "▁▂▃▄▅▆▇█"
# ledger outcomes of an attempt that got no usable HTTP answer (mailcli.analysis.llm_phases); the
# others (ok, invalid, repair, fallback) are answers, whose duration is the latency
FAILED_OUTCOMES = ("retry", "error")


# --------------------------------------------------------------------------------------------------
# the snapshot


class _Data:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class RedisInfo(_Data):
    where: str  # describe(settings): never holds a password
    state: str  # ok | unreachable | not running (embedded server not started: nothing is queued in memory)
    error: str | None = None
    version: str | None = None
    used_memory: int | None = None


@dataclass
class DatabaseInfo(_Data):
    path: str
    available: bool
    error: str | None = None


@dataclass
class PoolInfo(_Data):
    id: str
    host: str
    pid: int | None
    remote_host: bool  # the supervisor runs on another host than this status
    state: str  # running | stopping, as published
    stale: bool  # no heartbeat for STALE_AFTER seconds: the supervisor is gone or wedged
    uptime_s: float | None
    heartbeat_age_s: float | None
    min: int | None
    max: int | None
    target: int | None
    current: int | None
    decision: str  # the reason of the last scaling decision
    workers_only: bool  # started with --remote: no feeder, sink or SQLite on its host
    burst: bool
    window: int | None
    max_memory_mb: float | None
    recovered: int  # jobs requeued from dead workers
    replaced: int  # workers replaced after dying, recycling or being killed
    crash_reason: str
    work_age_s: float | None = None  # seconds since its current work began (a backlog or a busy worker); None: idle


@dataclass
class WorkerInfo(_Data):
    name: str
    pool: str
    host: str
    pid: int | None
    state: str  # starting | idle | busy | stopped
    stale: bool
    job_id: str
    job_age_s: float | None
    jobs_done: int
    jobs_failed: int
    rss_bytes: int | None
    rss_limit_bytes: int | None  # the pool's --max-memory; None without a limit
    cpu_percent: float | None
    heartbeat_age_s: float | None


@dataclass
class QueueDepth(_Data):
    priority: str
    queued: int
    started: int
    failed: int
    retrying: int


@dataclass
class QueuesInfo(_Data):
    known: bool  # False when Redis could not be read
    priorities: list[QueueDepth] = field(default_factory=list)
    pending: int | None = None  # conversations waiting in SQLite, not yet in Redis
    pending_from: str | None = None  # sqlite | redis (the count a coordinator publishes)
    in_flight: int | None = None  # conversations SQLite has handed to Redis (status queued)
    window: int | None = None  # the feeder's bound on in_flight
    unsaved_results: int | None = None  # results computed by workers, not yet written to SQLite


@dataclass
class PhaseProgress(_Data):
    phase: int
    done: int  # emails with this phase's result
    total: int  # emails in the store
    fallbacks: int = 0  # results stored as source "fallback" (phases 2 and 3)


@dataclass
class ProgressInfo(_Data):
    known: bool
    emails: int = 0
    conversations: dict[str, int] = field(default_factory=dict)  # by status
    phases: list[PhaseProgress] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)  # analysed conversations per tier ("1", "2", "3")
    tier_emails: dict[str, int] = field(default_factory=dict)  # their emails: tier 3 owes phase 3, 2 and 3 phase 2
    remaining: int = 0  # emails of pending or queued conversations
    rate_per_min: float = 0.0  # emails analysed per minute over rate_observed_s (see `throughput`)
    rate_observed_s: float | None = None  # the seconds the rate is taken over: since the run began, at most RATE_MINUTES
    per_minute: list[int] = field(default_factory=list)  # last SPARK_MINUTES minutes, oldest first
    sparkline: str = ""
    eta_s: float | None = None
    rejects: int = 0
    as_of: str | None = None  # when SQLite was read (--watch may reuse a recent reading)
    read_ms: float | None = None  # what reading it cost


@dataclass
class OllamaHost(_Data):
    url: str
    configured: bool  # in this host's OLLAMA_HOST (only those are probed)
    reachable: bool | None  # None: not probed
    error: str | None
    loaded_models: list[str]
    calls_per_min: float
    p50_ms: float | None
    p95_ms: float | None
    errors: int  # failed attempts in the ledger window
    breaker: str | None  # closed | open | half-open, derived from the ledger; None without recent calls
    # the host's adaptive limit as the workers share it in Redis (mailcli.llm.limiter); None: no worker used it
    limit: float | None = None  # requests the workers may have in flight to the host now
    in_flight: int | None = None  # requests in flight to it now, from every worker
    wait_ms: float | None = None  # recent answers' time spent waiting (server queue + transport), average
    tokens_per_s: float | None = None  # prompt + answer tokens it processed per second, last 10 s window
    busy: int | None = None  # busy answers (503, queue full) since the state was created
    timeouts: int | None = None  # answers that did not come within the read timeout, same


@dataclass
class OllamaInfo(_Data):
    hosts: list[OllamaHost] = field(default_factory=list)
    window_min: int = LEDGER_MINUTES
    fallbacks: dict[str, int] = field(default_factory=dict)  # phase ("2", "3") -> results stored as fallback


@dataclass
class Failure(_Data):
    kind: str  # conversation | job
    id: str
    at: str | None  # ISO 8601
    message: str  # one line


@dataclass
class Snapshot(_Data):
    taken_at: str
    observer: str  # the host status ran on
    took_ms: float
    redis: RedisInfo
    database: DatabaseInfo
    pools: list[PoolInfo]
    workers: list[WorkerInfo]
    queues: QueuesInfo
    progress: ProgressInfo
    ollama: OllamaInfo
    failures: list[Failure]
    notes: list[str]

    @property
    def pool_running(self) -> bool:
        return any(not p.stale for p in self.pools)

    @property
    def redis_unreachable(self) -> bool:
        return self.redis.state == "unreachable"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pool_running"] = self.pool_running
        return d


# --------------------------------------------------------------------------------------------------
# pure helpers


def sparkline(values: list[int]) -> str:
    """One character per value, ▁ (zero or least) to █ (the largest)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARK_CHARS[0] * len(values)
    return "".join(SPARK_CHARS[min(7, math.ceil(v / top * 7))] if v > 0 else SPARK_CHARS[0] for v in values)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def is_host_failure(outcome: str, http_status: int | None) -> bool:
    """A failed attempt that is the host's doing: no answer, a retryable answer (busy included), an
    unusable body; not a request the host rejected (a 4xx) nor an answer the schema check rejected
    (ok, invalid, repair, fallback)."""
    if outcome not in FAILED_OUTCOMES:
        return False
    return http_status in (None, 200) or wire.is_retryable_status(http_status)


def breaker_state(attempts: list[tuple[str, int | None, float]], now: float) -> str | None:
    """A host's breaker as its clients hold it, from its attempts (outcome, http status, epoch), oldest
    first. The breakers live in the worker processes; this applies their rule (mailcli.llm.wire) to
    the ledger. None without attempts."""
    if not attempts:
        return None
    trailing = 0
    for outcome, status, _ in reversed(attempts):
        if not counts_for_breaker(outcome, status):
            break
        trailing += 1
    return wire.breaker_state(trailing, attempts[-1][2], now)


def throughput(
    recent: dict[int, int], now: float, run_started: float | None
) -> tuple[float, float | None]:
    """Emails analysed per minute over the time actually observed, and that time in seconds.

    ``recent`` maps the epoch second results were stamped with to the emails they analysed. The
    interval ends now and starts at the later of RATE_MINUTES ago and ``run_started`` (when the
    running pools' current work began); with no pool to say, at the first result of the window. So
    12 s into a run the rate is what those 12 s did, not a fifth of it; a run longer than the window
    is measured over the window's last minutes. A result's second counts when it overlaps the interval.
    """
    window_start = now - RATE_MINUTES * 60
    if run_started is None:
        seen = [sec for sec, n in recent.items() if n > 0 and sec + 1 > window_start]
        if not seen:
            return 0.0, None
        run_started = min(seen)
    start = max(window_start, run_started)
    observed = max(MIN_OBSERVED_S, now - start)
    emails = sum(n for sec, n in recent.items() if sec + 1 > start and sec <= now)
    return emails / observed * 60.0, observed


def run_started(pools: list[PoolInfo], now: float) -> float | None:
    """When the work the running pools do began: the earliest `work_since` of a working pool, else
    the earliest start of an idle one; None with no pool running."""
    live = [p for p in pools if not p.stale]
    working = [now - p.work_age_s for p in live if p.work_age_s is not None]
    if working:
        return min(working)
    started = [now - p.uptime_s for p in live if p.uptime_s is not None]
    return min(started) if started else None


IDLE_AFTER_S = 10.0  # with no pool running, no result for this long: nothing is working, no ETA


def set_throughput(progress: ProgressInfo, recent: dict[int, int], now: float, started: float | None) -> None:
    """The rate and ETA of `progress` over the time observed since `started` (see `throughput`).

    With no pool running (``started`` None) an ETA is given only while results still arrive (an
    `analyze --inline` at work): after a pool stops, the remaining work has no end in sight."""
    rate, observed = throughput(recent, now, started)
    progress.rate_per_min = rate
    progress.rate_observed_s = observed
    last = max((sec for sec, n in recent.items() if n > 0), default=None)
    working = started is not None or (last is not None and now - (last + 1) < IDLE_AFTER_S)
    progress.eta_s = (
        round(progress.remaining / rate * 60, 1) if working and rate > 0 and progress.remaining > 0 else None
    )
def counts_for_breaker(outcome: str, http_status: int | None) -> bool:
    """A failure that opens the client's breaker: a busy answer (429, 503 queue full) does not, the
    host answered; it shrinks the host's limit instead."""
    return outcome in FAILED_OUTCOMES and wire.counts_against_breaker(http_status)


def sqlite_due(since_last_read: float, last_cost: float, load_share: float = STORE_LOAD_SHARE) -> bool:
    """Read SQLite again? Only when doing so keeps the reads under `load_share` of one core."""
    return since_last_read >= last_cost / load_share


def one_line(text: str | None, limit: int = 300) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _age(now: float, epoch: Any) -> float | None:
    t = _float(epoch)
    if not t:
        return None
    return round(max(0.0, now - t), 1)  # another host's clock may run ahead


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def pool_info(h: dict[str, str], now: float, observer: str) -> PoolInfo:
    beat = _age(now, h.get("heartbeat"))
    return PoolInfo(
        id=h.get("id", ""),
        host=h.get("host", ""),
        pid=_int(h.get("pid")),
        remote_host=bool(h.get("host")) and h.get("host") != observer,
        state=h.get("state", ""),
        stale=beat is None or beat > STALE_AFTER,
        uptime_s=_age(now, h.get("started")),
        heartbeat_age_s=beat,
        min=_int(h.get("min")),
        max=_int(h.get("max")),
        target=_int(h.get("target")),
        current=_int(h.get("current")),
        decision=h.get("decision", ""),
        workers_only=h.get("remote") == "1",
        burst=h.get("burst") == "1",
        window=_int(h.get("window")),
        max_memory_mb=_float(h.get("max_memory_mb")),
        recovered=_int(h.get("recovered")) or 0,
        replaced=_int(h.get("replaced")) or 0,
        crash_reason=one_line(h.get("crash_reason")),
        work_age_s=_age(now, h.get("work_since")),
    )


def worker_info(h: dict[str, str], now: float, limits: dict[str, float]) -> WorkerInfo:
    beat = _age(now, h.get("heartbeat"))
    limit_mb = limits.get(h.get("pool", ""))
    job_id = h.get("job_id", "")
    return WorkerInfo(
        name=h.get("name", ""),
        pool=h.get("pool", ""),
        host=h.get("host", ""),
        pid=_int(h.get("pid")),
        state=h.get("state", ""),
        stale=beat is None or beat > STALE_AFTER,
        job_id=job_id,
        job_age_s=_age(now, h.get("job_started")) if job_id else None,
        jobs_done=_int(h.get("jobs_done")) or 0,
        jobs_failed=_int(h.get("jobs_failed")) or 0,
        rss_bytes=_int(h.get("rss")),
        rss_limit_bytes=int(limit_mb * 2**20) if limit_mb else None,
        cpu_percent=_float(h.get("cpu")),
        heartbeat_age_s=beat,
    )


def scrub(obj: Any, secrets: list[str]) -> Any:
    """Replace every secret in every string of a dataclass tree, in place; returns obj."""
    if not secrets:
        return obj

    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return hide(v, secrets)
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        if is_dataclass(v) and not isinstance(v, type):
            for f in fields(v):
                setattr(v, f.name, clean(getattr(v, f.name)))
            return v
        return v

    return clean(obj)


# --------------------------------------------------------------------------------------------------
# SQLite


def read_progress(
    conn: sqlite3.Connection, now: float
) -> tuple[ProgressInfo, list[Failure], dict[str, int], dict[int, int]]:
    """Counts from the store: COUNTs over indexes, the phase 2 count from the partial index
    email_analysis_phase2_source (schema migration 2), and one pass over conversation_analysis (tiers,
    phase 3, throughput). docs/metrics.md ("Cost") has the measurements.
    """
    q = conn.execute
    conversations = dict(q("SELECT status, count(*) FROM conversations GROUP BY status").fetchall())
    remaining = q(
        "SELECT coalesce(sum(email_count), 0) FROM conversations WHERE status IN ('pending', 'queued')"
    ).fetchone()[0]
    total = q("SELECT count(*) FROM emails").fetchone()[0]
    rejects = q("SELECT count(*) FROM rejects").fetchone()[0]
    phase1 = q("SELECT count(*) FROM email_analysis").fetchone()[0]
    # Answered by the partial index email_analysis_phase2_source, ON email_analysis
    # (json_extract(phase2, '$.source')) WHERE phase2 IS NOT NULL: it holds only the phase 2 rows.
    phase2, fallback2 = q(
        "SELECT count(*), coalesce(sum(json_extract(phase2, '$.source') = 'fallback'), 0)"
        " FROM email_analysis WHERE phase2 IS NOT NULL"
    ).fetchone()
    tiers: dict[str, int] = {}
    tier_emails: dict[str, int] = {}
    phase3 = fallback3 = 0
    per_minute = [0] * SPARK_MINUTES
    recent: dict[int, int] = {}  # epoch second -> emails analysed then, over the rate's window
    # One pass over the analyses for the tiers, phase 3 and the emails analysed per second of the last
    # SPARK_MINUTES (NULL for older ones). CROSS JOIN keeps this order: a primary-key lookup per
    # analysis. A job's results are written with one timestamp for the conversation and its emails,
    # so the conversation's analyzed_at times its email count is email_analysis.analyzed_at counted,
    # at a quarter of the rows to read (~30 ms at 100,000 emails).
    for tier, sec, n, emails, p3_emails, f3 in q(
        "SELECT ca.tier,"
        " CASE WHEN ca.analyzed_at >= ? THEN CAST(strftime('%s', ca.analyzed_at) AS INTEGER) END AS sec,"
        " count(*), coalesce(sum(c.email_count), 0),"
        " coalesce(sum(CASE WHEN ca.phase3 IS NOT NULL THEN c.email_count END), 0),"
        " coalesce(sum(json_extract(ca.phase3, '$.source') = 'fallback'), 0)"
        " FROM conversation_analysis ca CROSS JOIN conversations c ON c.id = ca.conversation_id"
        " GROUP BY ca.tier, sec",
        (_iso(now - SPARK_MINUTES * 60),),
    ):
        key = str(tier)
        tiers[key] = tiers.get(key, 0) + n
        tier_emails[key] = tier_emails.get(key, 0) + emails
        phase3 += p3_emails
        fallback3 += f3
        if sec is None:
            continue
        ago = max(0, int((now - sec) // 60))  # whole minutes since; another host's clock may run ahead
        if ago < SPARK_MINUTES:
            per_minute[SPARK_MINUTES - 1 - ago] += emails
        if sec + 1 > now - RATE_MINUTES * 60:
            recent[sec] = recent.get(sec, 0) + emails
    rate, observed = throughput(recent, now, None)
    eta = remaining / rate * 60 if rate > 0 and remaining > 0 else None
    progress = ProgressInfo(
        known=True,
        emails=total,
        conversations=conversations,
        phases=[
            PhaseProgress(1, phase1, total),
            PhaseProgress(2, phase2, total, fallback2),
            PhaseProgress(3, phase3, total, fallback3),
        ],
        tiers=dict(sorted(tiers.items())),
        tier_emails=dict(sorted(tier_emails.items())),
        remaining=remaining,
        rate_per_min=rate,
        rate_observed_s=observed,
        per_minute=per_minute,
        sparkline=sparkline(per_minute),
        eta_s=round(eta, 1) if eta is not None else None,
        rejects=rejects,
    )
    failures = [
        Failure("conversation", cid, at, one_line(error) or "failed")
        for cid, error, at in q(
            "SELECT id, error, updated_at FROM conversations WHERE status = 'failed'"
            " ORDER BY updated_at DESC LIMIT ?",
            (FAILURES_SHOWN,),
        )
    ]
    return progress, failures, {"2": fallback2, "3": fallback3}, recent


def read_ledger(conn: sqlite3.Connection, now: float) -> dict[str, dict[str, Any]]:
    """Per host: calls/min, p50/p95 of the attempts that got an answer (ms), failures, the derived breaker."""
    rows = conn.execute(
        "SELECT host, outcome, http_status, duration_ms, created_at FROM llm_calls"
        " WHERE created_at >= ? ORDER BY created_at, id",
        (_iso(now - LEDGER_MINUTES * 60),),
    ).fetchall()
    by_host: dict[str, list[tuple[str, int | None, float | None, float]]] = {}
    for host, outcome, status, duration, created in rows:
        by_host.setdefault(host or "", []).append((outcome, status, duration, _parse_iso(created) or now))
    out = {}
    for host, calls in by_host.items():
        ok = sorted(d for o, _, d, _ in calls if o not in FAILED_OUTCOMES and d is not None)
        out[host] = {
            "calls_per_min": len(calls) / LEDGER_MINUTES,
            "p50_ms": percentile(ok, 0.50),
            "p95_ms": percentile(ok, 0.95),
            "errors": sum(is_host_failure(o, s) for o, s, _, _ in calls),
            "breaker": breaker_state([(o, s, t) for o, s, _, t in calls], now),
        }
    return out


# --------------------------------------------------------------------------------------------------
# the reader


class StatusReader:
    """Builds snapshots; keeps its Redis, SQLite and HTTP connections open between them (--watch).

    A snapshot reads SQLite in a thread of its own while this thread imports redis (the first time)
    and reads Redis: SQLite's queries release the GIL, so on two cores the counting and the imports
    overlap instead of adding up. The Ollama probes run in threads too, all three waits at once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        probe_timeout: float = PROBE_TIMEOUT,
        store_load_share: float = STORE_LOAD_SHARE,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.probe_timeout = probe_timeout
        self.store_load_share = store_load_share
        self._clock = clock
        self._secrets = url_passwords(settings.redis_url)
        self._observer = socket.gethostname()
        self._conn: Any = None
        self._store: Any = None
        self._store_thread: threading.Thread | None = None
        self._probe: Any = None  # mailcli.status.probe.OllamaProbe, made by the first snapshot
        self._ollama_hosts: list[str] = []
        self._ollama_error: str | None = None
        self._store_cache: tuple | None = None
        self._store_read_at = 0.0
        self._store_cost = 0.0
        self._init_ollama()

    # -- lifecycle

    def close(self) -> None:
        thread = self._store_thread
        if thread is not None and thread.is_alive():  # Ctrl-C in the middle of a reading: cut it short
            with contextlib.suppress(Exception):
                self._store.conn.interrupt()
            thread.join(1.0)
        for closer in (
            lambda: self._probe and self._probe.close(),
            lambda: self._store and not (thread and thread.is_alive()) and self._store.close(),
            lambda: self._conn and self._conn.close(),
        ):
            try:
                closer()
            except Exception:  # closing is best effort
                pass

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the snapshot

    def snapshot(self) -> Snapshot:
        started = time.perf_counter()
        now = self._clock()
        store = self._start_store_read(now)  # first: the longest wait, and it frees the GIL
        probes = self._start_probes()  # network waits overlap the reads below
        redis_notes: list[str] = []
        redis_info, pools, workers, queues, job_failures = self._read_redis(now, redis_notes)
        (database, progress, db_failures, fallbacks, ledger, recent, read_at), notes = self._finish_store_read(store)
        notes += redis_notes
        if progress.known:
            set_throughput(progress, recent, read_at, run_started(pools, now))
        if progress.known:  # SQLite knows the backlog even when Redis is down or not started
            queues.pending = progress.conversations.get("pending", 0)
            queues.in_flight = progress.conversations.get("queued", 0)
            queues.pending_from = "sqlite"
        ollama = self._ollama_info(probes, ledger, fallbacks, notes)
        failures = sorted(db_failures + job_failures, key=lambda f: f.at or "", reverse=True)[:FAILURES_SHOWN]
        if redis_info.state == "ok" and not any(not p.stale for p in pools):
            notes.append("no pool running: start one with `mailcli workers start`")
        snap = Snapshot(
            taken_at=_iso(now),
            observer=self._observer,
            took_ms=0.0,
            redis=redis_info,
            database=database,
            pools=pools,
            workers=workers,
            queues=queues,
            progress=progress,
            ollama=ollama,
            failures=failures,
            notes=notes,
        )
        scrub(snap, self._secrets)
        snap.took_ms = round((time.perf_counter() - started) * 1000, 1)
        return snap

    # -- SQLite

    def _start_store_read(self, now: float) -> dict[str, Any]:
        """_read_store in a thread; _finish_store_read waits for it."""
        import mailcli.store.db  # noqa: F401 - here, so that the thread itself imports nothing

        box: dict[str, Any] = {"notes": []}

        def run() -> None:
            try:
                box["result"] = self._read_store(now, box["notes"])
            except BaseException as exc:  # handed to the snapshot's thread, raised there
                box["error"] = exc

        thread = threading.Thread(target=run, name="mailcli-status-sqlite", daemon=True)
        box["thread"] = self._store_thread = thread
        thread.start()
        return box

    def _finish_store_read(self, box: dict[str, Any]) -> tuple[tuple, list[str]]:
        box["thread"].join()
        if "error" in box:
            raise box["error"]
        return box["result"], box["notes"]

    def _open_store(self) -> Any:
        if self._store is None:
            from mailcli.store.db import Store

            self._store = Store.open(self.settings.db, readonly=True)
            # the passes over email_analysis read pages straight from the OS cache: 2-3x faster
            self._store.conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
        return self._store

    def _read_store(self, now: float, notes: list[str]):
        """What SQLite knows. Under --watch it is re-read only as often as keeps its cost under
        STORE_LOAD_SHARE of one core: the sink writing to the same file must not feel the watcher."""
        from mailcli.store.db import StoreError

        path = str(self.settings.db)
        empty = ProgressInfo(known=False)
        if not self.settings.db.exists():
            notes.append(f"no database at {path} on this host: run `mailcli ingest FILE` first")
            return DatabaseInfo(path, False, "no database"), empty, [], {}, {}, {}, now
        mono = time.monotonic()
        if self._store_cache is not None and not sqlite_due(
            mono - self._store_read_at, self._store_cost, self.store_load_share
        ):
            return self._store_cache
        started = time.perf_counter()
        try:
            conn = self._open_store().conn
            conn.execute("BEGIN")  # one read transaction: every count from the same moment
            try:
                progress, failures, fallbacks, recent = read_progress(conn, now)
                ledger = read_ledger(conn, now)
            finally:
                conn.execute("COMMIT")
        except (StoreError, sqlite3.Error) as exc:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._store_cache = None
            return DatabaseInfo(path, False, one_line(str(exc))), empty, [], {}, {}, {}, now
        self._store_cost = time.perf_counter() - started
        self._store_read_at = mono
        progress.read_ms = round(self._store_cost * 1000, 1)
        progress.as_of = _iso(now)
        self._store_cache = (DatabaseInfo(path, True), progress, failures, fallbacks, ledger, recent, now)
        return self._store_cache

    # -- Redis (redis-py is imported here, not at the top: ~100 ms that the SQLite thread overlaps)

    def _connect_redis(self) -> Any:
        """A client, or None when the embedded server is not running (status does not start it)."""
        from mailcli.queue.redis_server import EmbeddedRedis
        from mailcli.redis_conn import connect

        if self._conn is not None:
            return self._conn
        if not self.settings.redis_url and not EmbeddedRedis(self.settings.redis_dir).is_running():
            return None
        self._conn = connect(self.settings, socket_timeout=REDIS_SOCKET_TIMEOUT)
        return self._conn

    def _embedded_socket_lost(self) -> int | None:
        from mailcli.queue.redis_server import EmbeddedRedis

        try:
            return EmbeddedRedis(self.settings.redis_dir).socket_lost()
        except Exception:  # psutil's scan failing must not fail status
            return None

    def _read_redis(self, now: float, notes: list[str]):
        import redis

        from mailcli.redis_conn import RedisUnavailable, describe

        where = describe(self.settings)
        unknown = QueuesInfo(known=False)
        try:
            conn = self._connect_redis()
            if conn is None:
                lost = self._embedded_socket_lost()
                if lost is not None:
                    error = (
                        f"the embedded Redis (pid {lost}) runs but its socket {where.split(' at ', 1)[-1]} was"
                        " removed: nothing can reach it; a running pool restarts it within seconds, else"
                        " `mailcli workers start` (or any command that needs Redis) does"
                    )
                    return RedisInfo(where, "unreachable", error), [], [], unknown, []
                notes.append("the embedded Redis is not running: no pool on this host and nothing in memory")
                return RedisInfo(where, "not running"), [], [], unknown, []
            version, memory, *rest = self._read_redis_state(conn, now)
            return (RedisInfo(where, "ok", version=version, used_memory=memory), *rest)
        except RedisUnavailable as exc:
            return RedisInfo(where, "unreachable", str(exc)), [], [], unknown, []
        except (redis.RedisError, OSError) as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            error = f"lost Redis at {where}: {one_line(str(exc)) or type(exc).__name__}"
            return RedisInfo(where, "unreachable", error), [], [], unknown, []

    def _read_redis_state(self, conn: Any, now: float):
        from mailcli.pool import state

        with conn.pipeline(transaction=False) as pipe:
            pipe.smembers(state.POOLS)
            pipe.smembers(state.WORKERS)
            pipe.get(PENDING_KEY)
            pipe.xlen(RESULTS_STREAM)
            pipe.info("server")
            pipe.info("memory")
            pool_ids, worker_names, pending, unsaved, server, memory = pipe.execute()
        pool_ids = sorted(as_text(x) for x in pool_ids)
        worker_names = sorted(as_text(x) for x in worker_names)
        with conn.pipeline(transaction=False) as pipe:  # every hash in one round trip
            for p in pool_ids:
                pipe.hgetall(state.pool_key(p))
            for w in worker_names:
                pipe.hgetall(state.worker_key(w))
            hashes = [decode_hash(h) for h in pipe.execute()]
        pools = [pool_info(h, now, self._observer) for h in hashes[: len(pool_ids)] if h]
        limits = {p.id: p.max_memory_mb for p in pools if p.max_memory_mb}
        workers = [worker_info(h, now, limits) for h in hashes[len(pool_ids) :] if h]
        depths = queue_depths(conn)
        queues = QueuesInfo(
            known=True,
            priorities=[
                QueueDepth(p, d.get("queued", 0), d.get("started", 0), d.get("failed", 0), d.get("retrying", 0))
                for p, d in depths.items()
            ],
            pending=_int(pending),
            pending_from="redis" if pending is not None else None,
            window=next((p.window for p in pools if not p.stale and not p.workers_only and p.window), None),
            unsaved_results=int(unsaved or 0),
        )
        failed = [d.priority for d in queues.priorities if d.failed]
        failures = self._failed_jobs(conn, failed) if failed else []
        return server.get("redis_version"), _int(memory.get("used_memory")), pools, workers, queues, failures

    def _failed_jobs(self, conn: Any, queues: list[str]) -> list[Failure]:
        """The latest failed RQ jobs of these queues, newest first; read without RQ's cleanup (which writes)."""
        from rq.job import Job
        from rq.registry import FailedJobRegistry
        from rq.results import Result
        from rq.serializers import JSONSerializer

        ids: list[str] = []
        for p in queues:
            reg = FailedJobRegistry(queue_name(p), connection=conn, serializer=JSONSerializer)
            ids.extend(reg.get_job_ids(0, FAILURES_SHOWN - 1, desc=True, cleanup=False))
        out = []
        for job in Job.fetch_many(ids, connection=conn, serializer=JSONSerializer):
            if job is None:
                continue
            result = job.latest_result()
            text = result.exc_string if result is not None and result.type == Result.Type.FAILED else None
            ended = job.ended_at.replace(tzinfo=UTC).isoformat(timespec="seconds") if job.ended_at else None
            out.append(Failure("job", job.id, ended, one_line(text) or "job failed"))
        return out

    # -- Ollama

    def _init_ollama(self) -> None:
        try:
            self._ollama_hosts = parse_hosts(self.settings.ollama_host)
        except ValueError as exc:
            self._ollama_error = f"OLLAMA_HOST is not usable: {exc}"

    def _read_llm_limits(self, urls: list[str], notes: list[str]) -> dict[str, Any]:
        """Each host's shared limit from Redis (one pipelined round trip), on the connection the Redis
        read opened; {} when Redis is not there."""
        conn = self._conn
        if conn is None or not urls:
            return {}
        from mailcli.llm.limiter import host_key, leases_key, state_from_hash

        try:
            now = time.time()
            with conn.pipeline(transaction=False) as pipe:
                for url in urls:
                    pipe.hgetall(host_key(url))
                    pipe.zcount(leases_key(url), now, "+inf")
                raw = pipe.execute()
        except Exception as exc:  # the Redis section already says what is wrong with Redis
            notes.append(f"could not read the Ollama hosts' limits: {one_line(str(exc)) or type(exc).__name__}")
            return {}
        out = {}
        for i, url in enumerate(urls):
            state = state_from_hash(raw[2 * i], int(raw[2 * i + 1] or 0))
            if state is not None:
                out[url] = state
        return out

    def _start_probes(self) -> Any:
        if not self._ollama_hosts:
            return None
        if self._probe is None:
            from mailcli.status.probe import OllamaProbe

            self._probe = OllamaProbe(self._ollama_hosts, self.probe_timeout)
        return self._probe.start()

    def _ollama_info(self, probes, ledger, fallbacks, notes) -> OllamaInfo:
        if self._ollama_error:
            notes.append(self._ollama_error)
        results = probes.results() if probes is not None else {}
        hosts = []
        urls = [*self._ollama_hosts, *sorted(set(ledger) - set(self._ollama_hosts))]
        limits = self._read_llm_limits(urls, notes)
        for url in urls:
            reachable: bool | None = None  # None: not probed (a host only the ledger knows)
            error = None
            models: list[str] = []
            probed = results.get(url)
            if probed is not None:
                reachable, error, models = probed.reachable, one_line(probed.error) or None, probed.models
            stats = ledger.get(url, {})
            shared = limits.get(url)
            hosts.append(
                OllamaHost(
                    url=url,
                    configured=url in self._ollama_hosts,
                    reachable=reachable,
                    error=error,
                    loaded_models=models,
                    calls_per_min=stats.get("calls_per_min", 0.0),
                    p50_ms=stats.get("p50_ms"),
                    p95_ms=stats.get("p95_ms"),
                    errors=stats.get("errors", 0),
                    breaker=stats.get("breaker"),
                    **({} if shared is None else {
                        "limit": round(shared.limit, 2), "in_flight": shared.in_flight,
                        "wait_ms": None if shared.wait_ms is None else round(shared.wait_ms, 1),
                        "tokens_per_s": None if shared.tokens_per_s is None else round(shared.tokens_per_s, 1),
                        "busy": shared.busy, "timeouts": shared.timeouts,
                    }),
                )
            )
        return OllamaInfo(hosts=hosts, fallbacks={k: int(v) for k, v in fallbacks.items()})




def take_snapshot(settings: Settings, **kwargs: Any) -> Snapshot:
    """One snapshot, connections closed after."""
    with StatusReader(settings, **kwargs) as reader:
        return reader.snapshot()


__all__ = [
    "DatabaseInfo",
    "Failure",
    "OllamaHost",
    "OllamaInfo",
    "PhaseProgress",
    "PoolInfo",
    "ProgressInfo",
    "QueueDepth",
    "QueuesInfo",
    "RedisInfo",
    "Snapshot",
    "StatusReader",
    "WorkerInfo",
    "take_snapshot",
]

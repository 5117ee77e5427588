"""A status Snapshot in the Prometheus text exposition format (version 0.0.4).

For node_exporter's textfile collector or any scraper of a file or a command's output:

    mailcli status --format prometheus > /var/lib/node_exporter/mailcli.prom.tmp; \\
        mv /var/lib/node_exporter/mailcli.prom.tmp /var/lib/node_exporter/mailcli.prom

Gauges for what is read at one moment (depths, ages, memory); counters (``_total``) for what one
supervisor or worker process counts since it started, labelled with that process's pool id or worker
name, so a restart is a new series. docs/metrics.md lists them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from mailcli.status.snapshot import Snapshot

Labels = dict[str, str]
Sample = tuple[Labels, float]

BREAKER_STATES = ("closed", "half-open", "open")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _series(name: str, labels: Labels) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, samples: Iterable[Sample], kind: str = "gauge") -> None:
        """One metric family; a family without samples is left out, as client libraries do."""
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.extend(f"{_series(name, labels)} {_number(value)}" for labels, value in rows)

    def counter(self, name: str, help_text: str, samples: Iterable[Sample]) -> None:
        """Counts kept by one process: its series (labelled by pool or worker name) starts anew with it."""
        self.gauge(name, help_text, samples, kind="counter")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(snap: Snapshot) -> str:
    out = _Exposition()
    g = out.gauge
    g(
        "mailcli_up",
        "1 when each source of status could be read (redis, database), else 0.",
        [
            ({"source": "redis"}, float(snap.redis.state == "ok")),
            ({"source": "database"}, float(snap.database.available)),
        ],
    )
    g(
        "mailcli_status_duration_seconds",
        "Time taken to build this status snapshot.",
        [({}, round(snap.took_ms / 1000, 4))],
    )

    # pools
    def pool_labels(p) -> Labels:
        return {"pool": p.id, "host": p.host}

    pools = snap.pools
    if snap.redis.state == "ok":
        g(
            "mailcli_pools_running",
            "Pools whose supervisor heartbeat is fresh.",
            [({}, sum(not p.stale for p in pools))],
        )
    g(
        "mailcli_pool_up",
        "1 while the pool's supervisor heartbeat is fresh, 0 when stale.",
        [(pool_labels(p), float(not p.stale)) for p in pools],
    )
    g(
        "mailcli_pool_uptime_seconds",
        "Seconds since the supervisor started.",
        [(pool_labels(p), p.uptime_s) for p in pools],
    )
    g(
        "mailcli_pool_heartbeat_age_seconds",
        "Seconds since the supervisor last published its state.",
        [(pool_labels(p), p.heartbeat_age_s) for p in pools],
    )
    for key, what in (
        ("current", "Workers the pool runs now."),
        ("target", "Workers the last scaling decision wants."),
        ("min", "The pool's --min."),
        ("max", "The pool's --max."),
    ):
        g(f"mailcli_pool_workers_{key}", what, [(pool_labels(p), getattr(p, key)) for p in pools])
    out.counter(
        "mailcli_pool_jobs_recovered_total",
        "Jobs requeued from workers that died, since the supervisor started.",
        [(pool_labels(p), p.recovered) for p in pools],
    )
    out.counter(
        "mailcli_pool_workers_replaced_total",
        "Workers replaced (died, recycled, killed), since the supervisor started.",
        [(pool_labels(p), p.replaced) for p in pools],
    )

    # workers
    def worker_labels(w) -> Labels:
        return {"worker": w.name, "host": w.host, "pool": w.pool}

    ws = snap.workers
    g(
        "mailcli_worker_up",
        "1 while the worker's heartbeat is fresh, 0 when stale.",
        [(worker_labels(w), float(not w.stale)) for w in ws],
    )
    g(
        "mailcli_worker_busy",
        "1 while the worker runs a job.",
        [(worker_labels(w), float(bool(w.job_id))) for w in ws],
    )
    g(
        "mailcli_worker_job_age_seconds",
        "Seconds the current job has been running.",
        [(worker_labels(w), w.job_age_s) for w in ws if w.job_id],
    )
    out.counter(
        "mailcli_worker_jobs_done_total",
        "Jobs the worker process finished successfully.",
        [(worker_labels(w), w.jobs_done) for w in ws],
    )
    out.counter(
        "mailcli_worker_jobs_failed_total",
        "Jobs that failed in the worker process.",
        [(worker_labels(w), w.jobs_failed) for w in ws],
    )
    for name, what, attr in (
        ("mailcli_worker_rss_bytes", "Resident memory of the worker and its children.", "rss_bytes"),
        ("mailcli_worker_rss_limit_bytes", "The pool's --max-memory per worker.", "rss_limit_bytes"),
        ("mailcli_worker_cpu_percent", "CPU use of the worker process, percent of one core.", "cpu_percent"),
        ("mailcli_worker_heartbeat_age_seconds", "Seconds since the worker last published its state.", "heartbeat_age_s"),
    ):
        g(name, what, [(worker_labels(w), getattr(w, attr)) for w in ws])

    # queues
    q = snap.queues
    g(
        "mailcli_queue_jobs",
        "RQ jobs per priority queue and state (queued, started, failed, retrying).",
        [
            ({"priority": d.priority, "state": state}, getattr(d, state))
            for d in q.priorities
            for state in ("queued", "started", "failed", "retrying")
        ],
    )
    g(
        "mailcli_conversations_pending",
        "Conversations waiting in SQLite, not yet handed to Redis.",
        [({}, q.pending)],
    )
    g(
        "mailcli_conversations_in_flight",
        "Conversations handed to Redis and not yet analysed.",
        [({}, q.in_flight)],
    )
    g("mailcli_feeder_window", "Most conversations the feeder keeps in Redis at once.", [({}, q.window)])
    g(
        "mailcli_results_unsaved",
        "Results computed by workers, not yet written to SQLite.",
        [({}, q.unsaved_results)],
    )

    # progress
    pr = snap.progress
    if pr.known:
        g("mailcli_emails", "Emails in the store.", [({}, pr.emails)])
        g(
            "mailcli_conversations",
            "Conversations per status.",
            [({"status": s}, n) for s, n in sorted(pr.conversations.items())],
        )
        g(
            "mailcli_conversations_tier",
            "Analysed conversations per completeness tier.",
            [({"tier": t}, n) for t, n in pr.tiers.items()],
        )
        g(
            "mailcli_emails_analyzed",
            "Emails with a result for the phase.",
            [({"phase": str(p.phase)}, p.done) for p in pr.phases],
        )
        g(
            "mailcli_emails_tier",
            "Emails of the analysed conversations per completeness tier.",
            [({"tier": t}, n) for t, n in pr.tier_emails.items()],
        )
        g("mailcli_emails_remaining", "Emails of conversations pending or in flight.", [({}, pr.remaining)])
        g(
            "mailcli_throughput_emails_per_minute",
            "Emails analysed per minute over the time observed: since the run began, at most 5 minutes.",
            [({}, pr.rate_per_min)],
        )
        g(
            "mailcli_throughput_observed_seconds",
            "The seconds the throughput is taken over: since the run began, at most 300.",
            [({}, pr.rate_observed_s)],
        )
        g("mailcli_eta_seconds", "Remaining emails divided by the recent rate.", [({}, pr.eta_s)])
        g("mailcli_rejects", "Input records rejected at ingest.", [({}, pr.rejects)])

    # Ollama
    o = snap.ollama
    g(
        "mailcli_ollama_up",
        "1 when the host answered /api/ps just now, 0 when not (probed hosts only).",
        [({"host": h.url}, float(h.reachable)) for h in o.hosts if h.reachable is not None],
    )
    g(
        "mailcli_ollama_models_loaded",
        "Models loaded in memory on the host (/api/ps).",
        [({"host": h.url, "model": m}, 1) for h in o.hosts for m in h.loaded_models],
    )
    g(
        "mailcli_ollama_latency_seconds",
        "Duration percentiles of LLM call attempts that got an answer, over the ledger window.",
        [
            ({"host": h.url, "quantile": qn}, v / 1000)
            for h in o.hosts
            for qn, v in (("0.5", h.p50_ms), ("0.95", h.p95_ms))
            if v is not None
        ],
    )
    g(
        "mailcli_ollama_calls_per_minute",
        "LLM call attempts per minute over the ledger window.",
        [({"host": h.url}, h.calls_per_min) for h in o.hosts],
    )
    g(
        "mailcli_ollama_errors",
        "Failed LLM call attempts in the ledger window.",
        [({"host": h.url}, h.errors) for h in o.hosts],
    )
    g(
        "mailcli_ollama_breaker",
        "1 for the host's circuit-breaker state, derived from the ledger.",
        [
            ({"host": h.url, "state": s}, float(h.breaker == s))
            for h in o.hosts
            if h.breaker is not None
            for s in BREAKER_STATES
        ],
    )
    g(
        "mailcli_ollama_limit",
        "The host's adaptive limit of requests in flight, shared by every worker (through Redis).",
        [({"host": h.url}, h.limit) for h in o.hosts if h.limit is not None],
    )
    g(
        "mailcli_ollama_in_flight",
        "Requests in flight to the host now, from every worker.",
        [({"host": h.url}, h.in_flight) for h in o.hosts if h.in_flight is not None],
    )
    g(
        "mailcli_ollama_wait_seconds",
        "Recent answers' average time spent waiting: the server's queue and the transport (round trip minus "
        "prompt evaluation and generation).",
        [({"host": h.url}, h.wait_ms / 1000) for h in o.hosts if h.wait_ms is not None],
    )
    g(
        "mailcli_ollama_tokens_per_second",
        "Prompt and answer tokens the host processed per second, over the last 10 s window.",
        [({"host": h.url}, h.tokens_per_s) for h in o.hosts if h.tokens_per_s is not None],
    )
    g(
        "mailcli_llm_fallbacks",
        "Results stored as source fallback, per phase.",
        [({"phase": p}, n) for p, n in sorted(o.fallbacks.items())],
    )
    return out.text()

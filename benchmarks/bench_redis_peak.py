"""Redis peak memory while an export is processed by the pool: the feeder's window keeps it bounded.

Setup, not timed: `mailcli ingest --no-enqueue` of N generated emails, marked phase 1 only (no LLM here:
the LLM phases would add their answers to the results stream, not to the queues), and the embedded Redis
stopped, so that the run starts a fresh server and `used_memory_peak` (INFO memory; CONFIG RESETSTAT does
not reset it in Redis 6.2) belongs to this run alone. Then `workers start --min 2 --max 2 --burst` to exit.

Baseline: what Redis would hold with every job enqueued at once, as without a feeder window: the Redis
memory of the jobs for a sample of K conversations (mailcli's own grouping and enqueueing, in a scratch
database of the same server, measured by used_memory before and after) per conversation, times all the
conversations of the export.
"""

from __future__ import annotations

from benchmarks.common import (
    Figure,
    Home,
    analysis_done,
    ingested,
    mark_phase1_only,
    redis_memory,
    synthetic,
)


def _all_at_once_bytes(home: Home, sample: int) -> tuple[float, int]:
    """(Redis bytes per conversation when enqueued as mailcli's jobs, conversations in the store)."""
    import redis

    from mailcli.dispatch.feeder import route
    from mailcli.dispatch.payloads import conversation_payloads
    from mailcli.queue.jobs import enqueue_conversations, group_into_jobs
    from mailcli.queue.names import QUEUES

    settings = home.settings()
    with home.store() as store:
        total = store.conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
        ids = [r[0] for r in store.conn.execute("SELECT id FROM conversations ORDER BY first_date, id LIMIT ?", (sample,))]
        mark_phase1_only(home.db)  # the options every job of the run carried
        payloads = conversation_payloads(store, ids, settings)
    scratch = redis.Redis(unix_socket_path=str(home.redis_socket), db=9)
    scratch.flushdb()
    before = int(scratch.info("memory")["used_memory"])
    by_priority: dict[str, list] = {}
    for conv in payloads:
        by_priority.setdefault(route(conv), []).append(conv)
    for p in QUEUES:
        for group in group_into_jobs(by_priority.get(p, [])):
            enqueue_conversations(scratch, p, group)
    after = int(scratch.info("memory")["used_memory"])
    scratch.flushdb()
    scratch.close()
    return (after - before) / len(payloads), total


def run(n: int = 1_000_000, sample: int = 2000) -> list[Figure]:
    data = synthetic(n)
    db = ingested(n)
    with Home() as home:
        home.use_db(db)
        mark_phase1_only(home.db)
        home.stop_redis()
        elapsed = home.burst_pool(7200)
        emails, _ = analysis_done(home.db)
        conn = home.redis()
        memory = redis_memory(conn)
        keys = conn.dbsize()
        job_keys = sum(1 for _ in conn.scan_iter("rq:job:*", count=1000))
        window = home.settings().window
        per_conv, conversations = _all_at_once_bytes(home, sample)
    peak = memory["used_memory_peak"]
    all_at_once = per_conv * conversations
    mb = 2**20
    return [
        Figure(
            scenario=f"Redis peak memory, {n:,}-email export through the pool ({'full' if n >= 1_000_000 else 'quick mode: not the 1,000,000 of the target'})",
            metric="MB",
            value=round(peak / mb, 1),
            baseline_name="every job enqueued at once (per-job size x jobs)",
            baseline=round(all_at_once / mb, 1),
            ratio=round(all_at_once / peak, 2),
            target="<= 256 MB",
            met=peak <= 256 * mb,
            runs=1,
            note=(
                f"used_memory_peak of a fresh embedded Redis over `workers start --min 2 --max 2 --burst` "
                f"({elapsed:.0f} s, {emails:,} emails, {conversations:,} conversations, feeder window "
                f"{window:,} conversations, phase 1 only); baseline: {per_conv / 1024:.1f} KB of Redis per "
                f"conversation (sample of {sample:,} enqueued as mailcli's jobs) x {conversations:,}; the export "
                f"is {data.stat().st_size / mb:.0f} MB on disk; after the run Redis still held "
                f"{memory['used_memory'] / mb:.0f} MB in {keys:,} keys, {job_keys:,} of them finished jobs (kept for "
                f"their result_ttl); ratio = baseline / value"
            ),
        )
    ]

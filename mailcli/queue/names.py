"""The queues' and keys' names, the queue depths and the decoding of Redis replies: what both the
pool and `mailcli status` use.

No rq here, nor redis-py: `mailcli status` imports this module without paying for either (rq costs
15-30 ms of every call, and status needs it only to show failed jobs). Every module that needs one of
these names imports it from here, mailcli.queue.jobs included.

Queues, in the order workers listen:
- `phase1`: jobs that need no LLM (conversations capped at phase 1, as `analyze --phase 1` caps them).
  Milliseconds a conversation, so they go first (shortest job first) and are not routed by priority:
  the priority is phase 1's own output, and computing it to route the job would run phase 1 twice.
- `critical` > `high` > `medium` > `low`: jobs that may call the LLM, by the priority phase 1 gives
  their conversation (forced by `ingest --priority`, or known from an earlier analysis).
"""

from __future__ import annotations

from typing import Any

from mailcli.choices import PRIORITIES

PHASE1_QUEUE = "phase1"  # jobs that need no LLM: see the module's docstring
QUEUES = (PHASE1_QUEUE, *PRIORITIES)  # the order workers listen in
QUEUE_PREFIX = "mailcli-"
RESULTS_STREAM = "mailcli:results"
SINK_GROUP = "sink"
PENDING_KEY = "mailcli:pending"  # pending count, published by the feeder for remote pools' autoscalers


def queue_name(queue: str) -> str:
    return QUEUE_PREFIX + queue


def as_text(v: Any) -> str:
    """A Redis reply's bytes (or a client's already decoded str) as str."""
    return v.decode() if isinstance(v, bytes) else str(v)


def decode_hash(h: dict | None) -> dict[str, str]:
    """An HGETALL reply with its fields and values as str, whether the client decodes or not."""
    return {as_text(k): as_text(v) for k, v in (h or {}).items()}


def needs_llm(conv: dict[str, Any]) -> bool:
    """A conversation's job may call the LLM unless its options cap it at phase 1."""
    return int(conv.get("options", {}).get("max_phase", 3) or 3) >= 2


def queue_depths(conn: Any) -> dict[str, dict[str, int]]:
    """Per queue, the jobs queued, started, failed and retrying (waiting in RQ's scheduled registry)."""
    with conn.pipeline(transaction=False) as pipe:
        for q in QUEUES:
            name = queue_name(q)
            pipe.llen(f"rq:queue:{name}")
            pipe.zcard(f"rq:wip:{name}")
            pipe.zcard(f"rq:failed:{name}")
            pipe.zcard(f"rq:scheduled:{name}")
        values = pipe.execute()
    out = {}
    for i, q in enumerate(QUEUES):
        queued, started, failed, scheduled = values[i * 4 : i * 4 + 4]
        out[q] = {"queued": queued, "started": started, "failed": failed, "retrying": scheduled}
    return out

"""Job functions, imported by workers by dotted path. A worker never opens SQLite: a job gets its
conversations in the payload and hands its results to the Redis stream the sink reads."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

from rq import get_current_job

from mailcli import contract
from mailcli.analysis.conversations import analyze_batch
from mailcli.contract import ConversationResult, JobPayload
from mailcli.queue.names import RESULTS_STREAM, needs_llm

log = logging.getLogger("mailcli.tasks")

_llm_cache: dict[tuple[str, str, str], Any] = {}
_llm_lock = threading.Lock()


def _llm_for(options: dict[str, Any], redis: Any = None):
    """One LLM seam per worker process and model pair: its HTTP pool and breakers outlive a job.

    The first time a seam is made (the worker's first job that may need an LLM), a background
    thread checks /api/tags for its models and loads them with keep_alive (`warm_up`): the job does
    not wait for it, and an Ollama that is down is a logged warning, never a failed worker or job.
    A job capped at phase 1 (`analyze --phase 1`) needs no seam and never touches Ollama.
    ``redis`` (the job's connection) carries each Ollama host's limit, shared by every worker.
    """
    if int(options.get("max_phase", 3) or 3) < 2:
        return None
    from mailcli.analysis.llm_phases import make_llm_phases
    from mailcli.config import load_settings

    settings = load_settings()
    key = (settings.ollama_host, options.get("phase2_model", ""), options.get("phase3_model", ""))
    with _llm_lock:
        llm = _llm_cache.get(key)
        if llm is None:
            llm = make_llm_phases(settings.with_overrides(phase2_model=key[1] or None, phase3_model=key[2] or None),
                                  redis=redis)
            _llm_cache[key] = llm
            threading.Thread(target=_warm_up, args=(llm,), name="mailcli-llm-warmup", daemon=True).start()
    return llm


def _warm_up(llm: Any) -> None:
    try:
        llm.warm_up()
    except Exception as exc:  # warm_up never raises by design; a bug there must not kill anything either
        log.warning("LLM warm-up failed: %s", exc)


def analyze_job(payload: JobPayload) -> dict[str, Any]:
    """Analyse the conversations of one job; each result goes to the results stream as it is ready.

    An Ollama that is down does not fail the job (RQ's retries are for real failures): phase 1 is
    published, the LLM phases stay owed (``partial``) and the failed attempts go to the ledger; the
    client's circuit breaker keeps the next jobs from knocking again until its cooldown.
    """
    job = get_current_job()
    conn = job.connection if job is not None else None
    job_id = job.id if job is not None else None
    contract.check(payload, f"job {job_id}")  # a worker refuses such a job before running it (pool.worker)
    conversations = payload.get("conversations", [])
    # the conversations of a job may carry different --phase caps: one that may owe an LLM phase decides
    wants_llm = [c.get("options", {}) for c in conversations if needs_llm(c)]
    llm = _llm_for(wants_llm[0], conn) if wants_llm else None
    emails = calls = 0
    statuses: dict[str, int] = {}
    ready: list[str] = []
    flushed = time.monotonic()

    def flush() -> None:
        nonlocal flushed
        if conn is not None and ready:
            with conn.pipeline(transaction=False) as pipe:
                for text in ready:
                    pipe.xadd(RESULTS_STREAM, {"job": job_id or "", "result": text})
                pipe.execute()
        ready.clear()
        flushed = time.monotonic()

    def publish(result: ConversationResult) -> None:
        nonlocal emails, calls
        emails += len(result["emails"])
        calls += len(result.get("llm_calls") or ())
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
        for e in result["emails"]:
            # the column's text, made here: the one sink then parses a string, not a nested object,
            # and writes it as it is (the sink is the pool's one writer; workers are many)
            if isinstance(e.get("phase1"), dict):
                e["phase1"] = json.dumps(e["phase1"])
        ready.append(json.dumps(result))
        # fast (phase 1) results go in one round trip per job; slow (LLM) ones at least every second
        if time.monotonic() - flushed > 1.0:
            flush()

    analyze_batch(payload, llm, on_result=publish)
    flush()
    return {"conversations": len(conversations), "emails": emails, "statuses": statuses, "llm_calls": calls}


def echo_check(payload: Any) -> dict[str, Any]:
    """`mailcli test-loading`: proves this worker imports mailcli and round-trips a payload."""
    import mailcli
    from mailcli.analysis.conversations import analyze_conversation

    conv = payload.get("analyze") if isinstance(payload, dict) else None
    return {
        "echo": payload,
        "analysis": analyze_conversation(conv) if conv else None,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "mailcli_version": mailcli.__version__,
        "mailcli_path": os.path.dirname(os.path.abspath(mailcli.__file__)),
        "pid": os.getpid(),
    }

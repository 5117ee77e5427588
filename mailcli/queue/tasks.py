"""Job functions, imported by workers by dotted path. A worker never opens SQLite: a job gets its
conversations in the payload and hands its results to the Redis stream the sink reads."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rq import get_current_job

from mailcli.analysis.pipeline import analyze_batch
from mailcli.queue.jobs import RESULTS_STREAM

_llm_cache: dict[tuple[str, str, str], Any] = {}


def _llm_for(options: dict[str, Any]):
    """One LLM seam per worker process and model pair: its HTTP pool and breakers outlive a job."""
    try:
        from mailcli.analysis.llm_phases import make_llm_phases
    except ImportError:
        return None
    from mailcli.config import load_settings

    settings = load_settings()
    key = (settings.ollama_host, options.get("phase2_model", ""), options.get("phase3_model", ""))
    if key not in _llm_cache:
        _llm_cache[key] = make_llm_phases(
            settings.with_overrides(phase2_model=key[1] or None, phase3_model=key[2] or None)
        )
    return _llm_cache[key]


def analyze_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Analyse the conversations of one job; each result goes to the results stream as it is ready."""
    job = get_current_job()
    conn = job.connection if job is not None else None
    job_id = job.id if job is not None else None
    conversations = payload.get("conversations", [])
    llm = _llm_for(conversations[0].get("options", {})) if conversations else None
    emails = 0
    statuses: dict[str, int] = {}

    def publish(result: dict[str, Any]) -> None:
        nonlocal emails
        emails += len(result["emails"])
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
        if conn is not None:
            conn.xadd(RESULTS_STREAM, {"job": job_id or "", "result": json.dumps(result)})

    analyze_batch(payload, llm, on_result=publish)
    return {"conversations": len(conversations), "emails": emails, "statuses": statuses}


def probe(payload: Any) -> dict[str, Any]:
    """`mailcli test-loading`: proves this worker imports mailcli and round-trips a payload."""
    import mailcli
    from mailcli.analysis.pipeline import analyze_conversation

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

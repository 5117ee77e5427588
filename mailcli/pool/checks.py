"""The checks behind `mailcli test-loading`: Redis, SQLite, a real worker process running the task
code (started exactly as the supervisor starts one), and Ollama."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from mailcli.config import Settings
from mailcli.pool.worker_command import worker_command, worker_env

WORKER_CHECK_TIMEOUT = 60.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True
    warning: bool = False


def check_redis(cfg: Settings) -> tuple[Check, Any]:
    from mailcli.redis_conn import RedisUnavailable, connect, describe, server_info

    try:
        conn = connect(cfg)
        info = server_info(conn)
    except RedisUnavailable as exc:
        return Check("redis", False, str(exc)), None
    persistence = "append-only" if info.get("aof_enabled") else "no persistence"
    detail = (
        f"{describe(cfg)}: redis {info.get('version')}, {int(info.get('used_memory') or 0) / 2**20:.1f} MB used,"
        f" {persistence}"
    )
    return Check("redis", True, detail), conn


def check_sqlite(cfg: Settings) -> Check:
    from mailcli.store.db import Store, StoreError
    from mailcli.store.schema import SCHEMA_VERSION

    try:
        with Store.open(cfg.db) as store:
            store.conn.execute("BEGIN IMMEDIATE")
            store.conn.execute("ROLLBACK")
            version = store.schema_version
    except StoreError as exc:
        return Check("sqlite", False, str(exc))
    ok = version == SCHEMA_VERSION
    return Check("sqlite", ok, f"{cfg.db}: writable, schema version {version} (expected {SCHEMA_VERSION})")


def check_worker(cfg: Settings, conn: Any) -> list[Check]:
    """Start a worker exactly as the supervisor does, on a private queue, and give it two jobs."""
    from rq import Queue
    from rq.job import Job
    from rq.serializers import JSONSerializer

    import mailcli
    from mailcli.queue.jobs import ECHO_CHECK_TASK

    qname = f"mailcli-check-{uuid.uuid4().hex[:8]}"
    q = Queue(qname, connection=conn, serializer=JSONSerializer)
    payload = {
        "nonce": uuid.uuid4().hex,
        "text": "Grüße — ✓ 日本",
        "numbers": [1, 2.5, None, True],
        "analyze": {
            "conversation_id": "check",
            "emails": [
                {
                    "rowid": 0,
                    "id": "check-1",
                    "subject": "URGENT: PO 4500012345 for $12,500.00",
                    "body": "Please confirm the purchase order by 3/4/2025.",
                    "from": "buyer@example.com",
                    "importance": "high",
                    "date": None,
                }
            ],
            "options": {"max_phase": 1},
        },
    }
    echo = q.enqueue(ECHO_CHECK_TASK, payload, result_ttl=300, failure_ttl=300, job_timeout=60)
    missing = q.enqueue(
        "mailcli.queue.tasks.no_such_function", {}, result_ttl=300, failure_ttl=300, job_timeout=60
    )
    name = f"{qname}.worker"
    cmd = worker_command(name, queues=[qname], burst=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, env=worker_env(cfg), capture_output=True, text=True, timeout=WORKER_CHECK_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        _remove_check(conn, qname, name, (echo.id, missing.id))
        output = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        last = (output.strip().splitlines() or ["it printed nothing"])[-1][:300]
        return [
            Check(
                "worker",
                False,
                f"the check's worker ({sys.executable}) had not finished two jobs after"
                f" {WORKER_CHECK_TIMEOUT:.0f}s; its last line: {last}",
            )
        ]
    took = time.monotonic() - started
    checks = []
    echo = Job.fetch(echo.id, connection=conn, serializer=JSONSerializer)
    result = echo.return_value()
    if result is None:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        res = echo.latest_result()
        why = (res.exc_string.strip().splitlines()[-1] if res and res.exc_string else tail[0])[:300]
        checks.append(Check("worker", False, f"worker {sys.executable} did not run the echo check: {why}"))
    else:
        here = os.path.dirname(os.path.abspath(mailcli.__file__))
        same_code = result["mailcli_version"] == mailcli.__version__ and result["mailcli_path"] == here
        echo_ok = result["echo"] == payload
        detail = (
            f"pid {result['pid']}: Python {result['python']} ({result['executable']}), mailcli"
            f" {result['mailcli_version']} at {result['mailcli_path']}; job round trip {took:.2f}s"
        )
        if not same_code:
            detail += (
                f" — but this CLI is mailcli {mailcli.__version__} at {here}: reinstall the worker's venv"
            )
        checks.append(Check("worker", same_code, detail))
        checks.append(
            Check("payload", echo_ok, "JSON payload round-tripped intact" if echo_ok else "payload changed")
        )
        analysis = result.get("analysis") or {}
        p1 = (analysis.get("emails") or [{}])[0].get("phase1", {})
        ok = p1.get("po_numbers") == ["4500012345"] and p1.get("priority") == "high"
        checks.append(
            Check(
                "task code",
                ok,
                f"phase 1 ran in the worker: PO {p1.get('po_numbers')}, priority {p1.get('priority')}"
                if p1
                else "the worker returned no analysis",
            )
        )
    missing = Job.fetch(missing.id, connection=conn, serializer=JSONSerializer)
    res = missing.latest_result()
    exc = (res.exc_string or "") if res else ""
    line = exc.strip().splitlines()[-1] if exc.strip() else ""
    ok = missing.get_status() == "failed" and "no_such_function" in line
    checks.append(
        Check(
            "missing function",
            ok,
            f"a job naming a missing function fails clearly: {line}"
            if ok
            else "a bad job did not fail clearly",
        )
    )
    _remove_check(conn, qname, name, (echo.id, missing.id))
    return checks


def _remove_check(conn: Any, qname: str, worker: str, job_ids: tuple[str, ...]) -> None:
    """Leave nothing of the check behind: its jobs, its private queue, its worker's published state."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from mailcli.pool.state import forget_worker
    from mailcli.queue.jobs import NO_JOB

    for job_id in job_ids:
        try:
            Job.fetch(job_id, connection=conn, serializer=JSONSerializer).delete()
        except NO_JOB:
            pass
    conn.delete(f"rq:queue:{qname}")
    conn.srem("rq:queues", f"rq:queue:{qname}")
    forget_worker(conn, worker)


def check_ollama(cfg: Settings) -> Check:
    from mailcli.llm.client import OllamaClient, OllamaError

    models = [cfg.phase2_model, cfg.phase3_model]
    try:
        with OllamaClient(cfg.ollama_host, connect_timeout=2.0, read_timeout=5.0, retries=0) as client:
            reachable = []
            for host in client.hosts:
                try:
                    client.version(host)
                    reachable.append(host)
                except OllamaError:
                    pass
            if not reachable:
                raise OllamaError(
                    f"Ollama unreachable at {', '.join(client.hosts)}: start `ollama serve` or set OLLAMA_HOST"
                )
            found = client.check_models(models)
    except (OllamaError, ValueError) as exc:
        return Check(
            "ollama", False, f"{exc} (phase 1 still works; phases 2 and 3 wait)", required=False, warning=True
        )
    absent = [m for m, hosts in found.items() if not hosts]
    if absent:
        fixes = "; ".join(f"run `ollama pull {m}`" for m in absent)
        return Check(
            "ollama",
            False,
            f"reachable, but missing {', '.join(absent)}: {fixes}",
            required=False,
            warning=True,
        )
    return Check(
        "ollama", True, f"{', '.join(cfg.ollama_hosts)}: {', '.join(models)} present", required=False
    )


def run_checks(cfg: Settings) -> tuple[list[Check], bool]:
    """Every check, in order; and whether Redis could be reached (without it the worker is not checked)."""
    checks: list[Check] = []
    redis_check, conn = check_redis(cfg)
    checks.append(redis_check)
    checks.append(check_sqlite(cfg))
    if conn is not None:
        checks.extend(check_worker(cfg, conn))
    checks.append(check_ollama(cfg))
    return checks, redis_check.ok

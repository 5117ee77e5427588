"""The wire contract: what a job carries and returns, and what happens across versions."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from mailcli import contract
from mailcli.queue.jobs import TASK, queue_for


def _payload(home, version):
    from mailcli.dispatch.payloads import conversation_payloads, pending_ids

    (home.path / "e.jsonl").write_text(
        json.dumps({"id": "a", "subject": "PO 4500012345", "body": "Please confirm.", "from": "x@y.example"}) + "\n"
    )
    assert home.run("ingest", str(home.path / "e.jsonl"), "--no-enqueue").returncode == 0
    with home.store() as store:
        convs = conversation_payloads(store, pending_ids(store), home.settings())
    return {"version": version, "conversations": convs}


def test_a_payload_and_its_results_carry_the_wire_version_and_every_key_it_names(home):
    from mailcli.analysis.conversations import analyze_batch

    payload = _payload(home, contract.WIRE_VERSION)
    conv = payload["conversations"][0]
    assert set(conv) == set(contract.ConversationIn.__annotations__)
    assert set(conv["emails"][0]) == set(contract.EmailIn.__annotations__)
    assert set(conv["options"]) == set(contract.Options.__annotations__)
    (result,) = analyze_batch(payload)
    assert result["version"] == contract.WIRE_VERSION
    assert set(result) == set(contract.ConversationResult.__annotations__)
    assert set(result["emails"][0]) == set(contract.EmailResult.__annotations__)


def test_a_worker_refuses_a_job_of_another_wire_version_and_puts_it_back(home):
    payload = _payload(home, contract.WIRE_VERSION + 1)
    conn = home.redis()
    q = queue_for(conn, "phase1")
    q.enqueue(TASK, payload, job_id="mailcli-from-the-future")
    out = subprocess.run(
        [sys.executable, "-m", "mailcli.pool.worker", "--name", "w-old", "--burst"],
        cwd=home.path, env=home.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 5, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if "refused" in ln]
    assert len(lines) == 1 and f"wire version {contract.WIRE_VERSION + 1}" in lines[0] and "pip install" in lines[0]
    assert conn.lpos(q.key, "mailcli-from-the-future") is not None, "the job must wait for a worker that speaks it"


def test_a_payload_without_a_version_is_version_1():
    assert contract.version_of({"conversations": []}) == 1
    assert contract.version_of({"version": "2"}) == -1  # not a version at all: never equal to ours


def test_the_sink_drops_a_result_of_another_wire_version_with_a_line(home, caplog):
    from mailcli.pool.sink import Sink
    from mailcli.queue.names import RESULTS_STREAM

    payload = _payload(home, contract.WIRE_VERSION)
    conn = home.redis()
    result = {"version": contract.WIRE_VERSION + 1, "conversation_id": payload["conversations"][0]["conversation_id"]}
    conn.xadd(RESULTS_STREAM, {"job": "j", "result": json.dumps(result)})
    with home.store() as store, caplog.at_level(logging.ERROR, logger="mailcli.sink"):
        sink = Sink(store, conn)
        sink.drain()
        sink.drain()
    assert conn.xlen(RESULTS_STREAM) == 0
    assert any("wire version" in r.getMessage() for r in caplog.records)


def test_failed_lists_a_failed_job_and_requeue_gives_its_conversations_back_to_it(home):
    """`mailcli failed --requeue`: the job is back on its queue and its conversations are its again."""
    from rq.job import Job, JobStatus
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer
    from synth import write_jsonl

    from mailcli.dispatch.feeder import mark_failed_jobs

    write_jsonl(home.path / "x.jsonl", 60, seed=2, body_bytes=200)
    assert home.run("ingest", str(home.path / "x.jsonl")).returncode == 0
    conn = home.redis()
    key = next(k.decode() for k in conn.keys("rq:queue:mailcli-*") if conn.type(k) == b"list" and conn.llen(k))
    job = Job.fetch(conn.lpop(key).decode(), connection=conn, serializer=JSONSerializer)
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry(job.origin, connection=conn, serializer=JSONSerializer).add(job, exc_string="Boom: it broke")
    convs = job.meta["conversations"]
    with home.store() as store:
        mark_failed_jobs(store, conn)
        assert {s for (s,) in store.conn.execute(
            f"SELECT status FROM conversations WHERE id IN ({','.join('?' * len(convs))})", convs)} == {"failed"}  # fmt: skip
    out = home.run("failed", "--json")
    listed = json.loads(out.stdout)["failed"]
    assert [(r["job_id"], r["conversations"]) for r in listed] == [(job.id, convs)]
    out = home.run("failed", "--requeue", "--json")
    assert json.loads(out.stdout)["requeued"] == 1
    with home.store() as store:
        rows = set(store.conn.execute(
            f"SELECT status, job_id FROM conversations WHERE id IN ({','.join('?' * len(convs))})", convs))  # fmt: skip
    assert rows == {("queued", job.id)}
    assert conn.lpos(key, job.id) is not None

"""Jobs as the feeder makes them: which queue, what RQ stores, what the sink writes."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from rq.serializers import JSONSerializer

from mailcli.queue.jobs import PayloadJob, queue_for
from mailcli.queue.names import PHASE1_QUEUE, QUEUES, queue_depths, queue_name

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def ingest(home) -> None:
    proc = home.run("ingest", "--no-enqueue", str(SAMPLES / "graph.jsonl"))
    assert proc.returncode == 0, proc.stderr


def test_a_payload_is_packed_once_and_written_back_as_read(home, monkeypatch):
    conn = home.redis()
    payload = {"conversations": [{"conversation_id": "c1", "emails": [{"body": "word " * 5000}]}]}
    job = queue_for(conn, "low").enqueue("mailcli.queue.tasks.analyze_job", payload, job_id="j-pack")
    stored = conn.hget(job.key, "data")
    # level 1, not RQ's 6: cheaper to pack, read back by plain zlib all the same
    assert zlib.decompress(stored) == job.data
    assert stored == zlib.compress(job.data, 1)

    fetched = PayloadJob.fetch("j-pack", connection=conn, serializer=JSONSerializer)
    assert list(fetched.args) == [payload]
    packed = []
    real = zlib.compress
    monkeypatch.setattr(zlib, "compress", lambda data, *a: packed.append(len(data)) or real(data, *a))
    fetched.meta["seen"] = True
    fetched.save()  # as RQ saves a job that ended
    assert conn.hget(job.key, "data") == stored
    assert max(packed, default=0) < 100  # the payload was not compressed again (RQ packs b"" in its place)

    # a job whose data changed is packed anew
    fetched.args = ({"conversations": []},)
    assert zlib.decompress(fetched.to_dict()["data"]) == fetched.data != job.data


def test_jobs_that_need_no_llm_skip_the_priority_routing(home, monkeypatch):
    """Capped at phase 1, a conversation's job goes to the phase1 queue, first in the workers' order,
    and the feeder never runs phase 1 to route it; one that may call the LLM is routed by priority."""
    import mailcli.dispatch.feeder as feeder

    assert QUEUES[0] == PHASE1_QUEUE
    ingest(home)
    from mailcli.store.lifecycle import mark_for_analysis

    with home.store() as store:
        mark_for_analysis(store, max_phase=1)
        calls = []
        monkeypatch.setattr(feeder, "priority_of", lambda *a, **k: calls.append(a) or "low")
        jobs = feeder.feed_once(store, home.redis(), home.settings())
        assert jobs > 0 and calls == []
        depths = queue_depths(home.redis())
        assert depths[PHASE1_QUEUE]["queued"] == jobs
        assert all(depths[p]["queued"] == 0 for p in QUEUES[1:])
        # routing to phase1 does not pin a priority on the conversation
        assert store.conn.execute("SELECT count(*) FROM conversations WHERE queue_priority IS NOT NULL").fetchone()[0] == 0

        # the same conversations owing the LLM phases: routed by the priority phase 1 gives them
        home.redis().delete(f"rq:queue:{queue_name(PHASE1_QUEUE)}")
        store.conn.execute("UPDATE conversations SET status = 'pending', job_id = NULL")
        store.conn.commit()
        mark_for_analysis(store, max_phase=3)
        monkeypatch.setattr(feeder, "priority_of", lambda *a, **k: calls.append(a) or "high")
        jobs = feeder.feed_once(store, home.redis(), home.settings())
        depths = queue_depths(home.redis())
        assert calls and depths["high"]["queued"] == jobs > 0
        assert depths[PHASE1_QUEUE]["queued"] == 0


@pytest.mark.parametrize("serialized", [False, True])
def test_phase1_arrives_as_text_or_object_and_is_stored_the_same(home, serialized):
    from mailcli.analysis.pipeline import analyze_batch
    from mailcli.dispatch.payloads import conversation_payloads, pending_ids
    from mailcli.store.lifecycle import mark_for_analysis
    from mailcli.store.results import apply_results

    ingest(home)
    with home.store() as store:
        mark_for_analysis(store, max_phase=1)
        payloads = conversation_payloads(store, pending_ids(store, 1000), home.settings())
        results: list[dict] = []
        analyze_batch({"conversations": payloads}, None, on_result=results.append)
        expected = {r["emails"][0]["rowid"]: r["emails"][0]["phase1"] for r in results}
        if serialized:  # as a worker publishes them (mailcli.queue.tasks.analyze_job)
            for r in results:
                for e in r["emails"]:
                    e["phase1"] = json.dumps(e["phase1"])
            results = json.loads(json.dumps(results))
        apply_results(store, results)
        got = dict(store.conn.execute("SELECT email_rowid, phase1 FROM email_analysis"))
    assert {k: json.loads(got[k]) for k in expected} == expected

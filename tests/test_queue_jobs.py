"""Jobs as the feeder makes them: which queue, what RQ stores, what the sink writes."""

from __future__ import annotations

import json
import sqlite3
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
        assert (
            store.conn.execute(
                "SELECT count(*) FROM conversations WHERE queue_priority IS NOT NULL"
            ).fetchone()[0]
            == 0
        )

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
    from mailcli.analysis.conversations import analyze_batch
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


def test_the_feeder_tops_up_to_its_window_and_no_further(home):
    """Round after round, at most `window` conversations are queued; a conversation done makes room for one."""
    import mailcli.dispatch.feeder as feeder

    ingest(home)
    conn, settings = home.redis(), home.settings()
    with home.store() as store:
        assert feeder.pending_count(store) > 4
        assert feeder.feed_once(store, conn, settings, window=3) > 0
        assert feeder.in_flight(store) == 3
        for _ in range(3):  # a full window: these rounds claim nothing
            assert feeder.feed_once(store, conn, settings, window=3) == 0
            assert feeder.in_flight(store) == 3
        store.conn.execute(
            "UPDATE conversations SET status = 'analyzed' WHERE id = (SELECT id FROM conversations WHERE status = 'queued' LIMIT 1)"
        )
        store.conn.commit()
        feeder.feed_once(store, conn, settings, window=3)
        assert feeder.in_flight(store) == 3


def test_priorities_read_before_a_claim_route_it_as_priorities_computed_inside(home, monkeypatch):
    """The feeder computes its emails' priorities before the claim's write transaction; inside it,
    routing only looks them up, and routes every conversation as computing them there would."""
    import mailcli.dispatch.feeder as feeder
    from mailcli.dispatch.payloads import conversation_payloads, pending_ids

    ingest(home)
    with home.store() as store:
        payloads = conversation_payloads(store, pending_ids(store, 1000), home.settings())
        known = feeder.email_priorities(store, 1000)
        assert len(known) == len(
            {(e["subject"], e["body"], e["importance"]) for c in payloads for e in c["emails"]}
        )
        inside = feeder.plan_jobs(payloads)
        assert feeder.plan_jobs(payloads, {}) == inside  # an email that joined since is computed inside
        monkeypatch.setattr(
            feeder, "priority_of", lambda *a, **k: pytest.fail("an email's priority computed again")
        )
        assert feeder.plan_jobs(payloads, known) == inside


def test_a_claim_that_does_not_commit_leaves_no_job_a_worker_could_run(home, monkeypatch):
    """The feeder saves a claim's jobs in Redis inside the claim's transaction, where no worker can
    take them, and pushes them to their queues only after the commit. When the commit fails (a full
    disk), the jobs are withdrawn: the same conversations claimed later are in one job each, never
    also in a job of the claim that did not commit (seen: eight revisions analysed twice when a
    full disk failed a claim's commit after its jobs were enqueued)."""
    import contextlib

    import mailcli.dispatch.feeder as feeder
    from mailcli.store.db import write_transaction

    ingest(home)
    conn = home.redis()
    with home.store() as store:

        @contextlib.contextmanager
        def full_disk_at_commit():
            with contextlib.suppress(RuntimeError), write_transaction(store.conn):
                yield store.conn
                raise RuntimeError("roll back instead of committing")
            raise sqlite3.OperationalError("database or disk is full")

        staged = []
        real_stage = feeder.stage_conversations
        monkeypatch.setattr(
            feeder, "stage_conversations", lambda *a: staged.append(real_stage(*a)) or staged[-1]
        )
        monkeypatch.setattr(store, "write", full_disk_at_commit)
        with pytest.raises(sqlite3.OperationalError):
            feeder.feed_once(store, conn, home.settings())
        assert staged, "the claim staged its jobs before the commit"
        assert not [k for k in conn.scan_iter("rq:job:*")], "a job of the failed claim is left in Redis"
        assert sum(d["queued"] for d in queue_depths(conn).values()) == 0
        assert not store.conn.in_transaction
        assert (
            store.conn.execute("SELECT count(*) FROM conversations WHERE status != 'pending'").fetchone()[0]
            == 0
        )

        monkeypatch.undo()
        jobs = feeder.feed_once(store, conn, home.settings())
        assert jobs > 0 and sum(d["queued"] for d in queue_depths(conn).values()) == jobs
        assert (
            store.conn.execute("SELECT count(*) FROM conversations WHERE status != 'queued'").fetchone()[0]
            == 0
        )


def test_a_commit_that_fails_leaves_no_transaction_open(tmp_path):
    """SQLite keeps a transaction open when its COMMIT fails (here a deferred foreign key, in the
    field a full disk): the next write_transaction would have joined it and never committed."""
    from mailcli.store.db import connect, write_transaction

    conn = connect(tmp_path / "t.db")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE c (pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError), write_transaction(conn):
        conn.execute("INSERT INTO c VALUES (42)")  # fails only at COMMIT
    assert not conn.in_transaction
    with write_transaction(conn):
        conn.execute("INSERT INTO p VALUES (1)")
    assert connect(tmp_path / "t.db").execute("SELECT count(*) FROM p").fetchone()[0] == 1

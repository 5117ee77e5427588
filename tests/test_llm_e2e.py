"""Phases 2 and 3 end to end: the CLI and real worker processes against the Ollama stand-in.

Every process a test starts is pointed at the stand-in with OLLAMA_HOST (the Home default is a
closed port). Counters and the request log are the stand-in's own: they say what really reached
"Ollama", whatever mailcli believes it sent.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import SAMPLES, wait_for
from ollama_standin import OllamaStandin

from mailcli.analysis.conversations import LLMUnavailable, analyze_batch, analyze_conversation
from mailcli.analysis.llm_phases import make_llm_phases
from mailcli.config import Settings
from mailcli.queue.names import queue_depths

GOOD = [str(SAMPLES / "graph.jsonl"), str(SAMPLES / "flat.jsonl"), str(SAMPLES / "mbox"), str(SAMPLES / "eml")]
OTHER_MODEL = "qwen2.5:7b"
LEDGER_FIELDS = ("model", "prompt_version", "input_hash", "duration_ms", "prompt_eval_count", "eval_count",
                    "done_reason", "http_status", "attempt", "outcome")  # fmt: skip


@pytest.fixture
def standin():
    with OllamaStandin(["llama3.2:3b", "phi4:14b", OTHER_MODEL], latency=0.02, slots=8, max_queue=64,
                       log_limit=5000) as s:  # fmt: skip
        yield s


def chats(standin: OllamaStandin) -> int:
    return standin.stats()["requests"].get("/api/chat", 0)


def chat_bodies(standin: OllamaStandin) -> list[dict[str, Any]]:
    return [e["body"] for e in list(standin.log) if e["path"] == "/api/chat"]


def run_ok(home, *args, env=None, timeout=120):
    proc = home.run(*args, env=env, timeout=timeout)
    assert proc.returncode == 0, f"mailcli {' '.join(args)}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def burst(home, env, workers=1, timeout=90):
    """`mailcli workers start --burst`: work everything queued, then exit 0."""
    n = str(workers)
    proc = home.popen("workers", "start", "--min", n, "--max", n, "--burst", env=env)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err
    return err


def export(home) -> list[dict[str, Any]]:
    """`mailcli export` (the CLI, a subprocess)."""
    return [json.loads(line) for line in run_ok(home, "export").stdout.splitlines()]


def records(home) -> list[dict[str, Any]]:
    """The same records read in this process (what `export` prints), for checks between steps."""
    from mailcli.store.read import export_records

    with home.store() as store:
        return list(export_records(store))


def statuses(home) -> dict[str, tuple[str, str | None]]:
    with home.store() as store:
        return {cid: (st, err) for cid, st, err in store.conn.execute("SELECT id, status, error FROM conversations")}


def ledger(home) -> list[dict[str, Any]]:
    with home.store() as store:
        cur = store.conn.execute("SELECT * FROM llm_calls ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]


def worker_logs(home) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((home.data / "logs").glob("worker-*.log")))


def warm_ups_done() -> bool:
    return not [t for t in threading.enumerate() if t.name == "mailcli-llm-warmup"]


def write_jsonl(home, name: str, lines: list[dict[str, Any]]) -> str:
    path = home.path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


def one_email_conversation(cid: str = "solo-1") -> dict[str, Any]:
    """A single, polite, non-urgent email: tier 1, so by its tier it owes phase 1 only."""
    return {"id": f"{cid}-m1", "conversation_id": cid, "subject": "Catalogue for next year",
            "body": "Hello, please find our catalogue attached. Regards, Ann", "from": "ann@example.org",
            "to": "sales@acme-industrial.com", "date": "2025-03-04T10:00:00Z", "message_id": f"<{cid}-m1@x>"}  # fmt: skip


def complete_conversation(cid: str, n: int = 3) -> list[dict[str, Any]]:
    """A request, replies, and a completion signal at the end: tier 3 (phases 1, 2 and 3)."""
    out = []
    for i in range(n):
        if i == 0:
            body = f"Could you please quote 20 units of part AB-{cid[-1]}1234? We need them by March 10, 2025."
        elif i < n - 1:
            body = "Update: we are working on your order and will confirm the shipping date."
        else:
            body = "Good news: your order has been shipped and delivered. The issue has been resolved."
        out.append({
            "id": f"{cid}-m{i}", "conversation_id": cid, "subject": f"{'Re: ' if i else ''}Quote request {cid}",
            "body": body, "from": "buyer@example.org" if i % 2 == 0 else "sales@acme-industrial.com",
            "to": "sales@acme-industrial.com", "date": f"2025-03-0{i + 1}T10:00:00Z",
            "message_id": f"<{cid}-m{i}@x>", "in_reply_to": f"<{cid}-m{i - 1}@x>" if i else None,
        })  # fmt: skip
    return out


# ------------------------------------------------------------------------------------ end to end


def test_pool_runs_phases_2_and_3_records_every_call_and_shows_them(home, standin):
    env = {"OLLAMA_HOST": standin.url}
    standin.configure(latency=0.05)  # long enough for a worker's requests to overlap on a busy machine
    run_ok(home, "ingest", *GOOD)
    # and a tier-1 conversation given all three phases by `analyze --all-phases`
    run_ok(home, "ingest", "--no-enqueue", write_jsonl(home, "solo.jsonl", [one_email_conversation("solo-1")]))
    run_ok(home, "analyze", "--all-phases", "--conversation", "solo-1")
    burst(home, env, workers=1)

    # `workers start` asks each host for its models once (is the LLM usable?); the worker's warm-up
    # checks /api/tags again and loads both models with a keep_alive
    loads = [e["body"] for e in standin.log if e["path"] == "/api/generate"]
    assert standin.stats()["requests"].get("/api/tags", 0) == 2
    assert sorted(b["model"] for b in loads) == ["llama3.2:3b", "phi4:14b"]
    assert all(b.get("keep_alive") == "5m" and not b.get("prompt") for b in loads)

    # one worker: its host's adaptive limit starts at 2 and grows on a server that never queues, up to the
    # ceiling MAILCLI_LLM_MAX_IN_FLIGHT (8); its jobs run phase 2 concurrently
    assert 2 <= standin.max_concurrency <= 8

    recs = export(home)
    (solo,) = [r for r in recs if r["conversation_id"] == "solo-1"]
    assert solo["conversation"]["tier"] == 1 and solo["status"] == "analyzed"
    assert solo["phase2"]["source"] == "model" and solo["conversation"]["phase3"]["source"] == "model"
    by_conv: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_conv.setdefault(r["conversation_id"], []).append(r)
    tiers = {cid: rs[0]["conversation"]["tier"] for cid, rs in by_conv.items()}
    assert {1, 2, 3} <= set(tiers.values()), tiers
    assert {r["status"] for r in recs} == {"analyzed"}
    for r in recs:
        if r is solo:
            continue
        tier, p2, p3 = r["conversation"]["tier"], r["phase2"], r["conversation"]["phase3"]
        if tier >= 2 or r["phase1"]["priority"] == "critical":
            assert p2 is not None and p2["source"] == "model", r["id"]
            assert p2["model"] == "llama3.2:3b" and p2["prompt_version"] and p2["summary"]
            assert "cached" not in p2
        else:
            assert p2 is None
        if tier == 3:
            assert p3 is not None and p3["source"] == "model" and p3["model"] == "phi4:14b" and p3["prompt_version"]
            assert p3["executive_summary"]
        else:
            assert p3 is None

    # the ledger holds every request the stand-in answered, with every field the ledger documents
    calls = ledger(home)
    assert len(calls) == chats(standin) > 0
    n2 = sum(r["phase2"] is not None for r in recs)
    n3 = sum(1 for rs in by_conv.values() if rs[0]["conversation"]["phase3"] is not None)
    assert sum(c["phase"] == 2 for c in calls) == n2 and sum(c["phase"] == 3 for c in calls) == n3
    for c in calls:
        assert all(c[k] is not None for k in LEDGER_FIELDS), c
        assert c["outcome"] == "ok" and c["http_status"] == 200 and c["attempt"] == 1
        assert c["host"] == standin.url and c["conversation_id"] in by_conv

    # results and show carry the LLM answers too
    tier3 = next(cid for cid, t in tiers.items() if t == 3)
    listed = {r["id"]: r for r in json.loads(run_ok(home, "results", "--json", "--limit", "100").stdout)}
    assert listed[tier3]["phase3_source"] == "model" and listed[tier3]["summary"]
    assert listed[tier3]["phase2_emails"] == len(by_conv[tier3])
    shown = run_ok(home, "show", tier3).stdout
    assert "email 1 of" in shown and "phase 2" in shown and "phase 3 (model, phi4:14b)" in shown
    assert "next steps" in shown
    assert "3:model" in run_ok(home, "results").stdout


def test_ollama_down_then_back_phase1_kept_partial_no_hot_loop_then_completed(home, standin):
    # Ollama down (Home's OLLAMA_HOST is a closed port)
    run_ok(home, "ingest", *GOOD)
    burst(home, env=None)
    assert all(r["phase1"] is not None for r in records(home))  # phase 1 stored for every email
    state = statuses(home)
    partial = {cid for cid, (st, _) in state.items() if st == "partial"}
    assert partial and {st for st, _ in state.values()} == {"analyzed", "partial"}
    assert all("Ollama unavailable" in state[cid][1] for cid in partial), [state[c] for c in partial]
    # the jobs succeeded (no RQ retry, nothing failed) and the breaker kept the HTTP attempts few
    assert all(d["failed"] == 0 and d["retrying"] == 0 for d in queue_depths(home.redis()).values())
    failed_attempts = ledger(home)
    assert failed_attempts and {c["outcome"] for c in failed_attempts} <= {"retry", "error"}
    assert all(c["http_status"] is None and c["error"] for c in failed_attempts)
    # 15 conversations owe an LLM answer, yet: 5 failures open the breaker (the warm-up's /api/tags
    # check is one, not in the ledger), + 2 more already under way (3 in flight), + 1 probe should
    # the run outlast the breaker's 30 s cooldown
    assert len(failed_attempts) <= 8, len(failed_attempts)
    assert "LLM warm-up: Ollama at http://127.0.0.1:9 is not reachable" in worker_logs(home)

    # Ollama back: `analyze --phase 2` completes them
    env = {"OLLAMA_HOST": standin.url}
    assert json.loads(run_ok(home, "analyze", "--phase", "2", "--json").stdout)["pending"] == len(partial)
    burst(home, env)
    after = records(home)
    assert {st for st, _ in statuses(home).values()} == {"analyzed"}
    owed3 = {r["conversation_id"] for r in after if r["conversation"]["tier"] == 3}
    assert owed3 and all(r["conversation"]["phase3"] is None for r in after)  # capped at phase 2
    phase2_calls = chats(standin)
    assert phase2_calls == sum(r["phase2"] is not None for r in after) > 0

    # a plain `analyze` adds the phase 3 the cap left out; the worker reuses the phase 2 answers
    assert json.loads(run_ok(home, "analyze", "--json").stdout)["pending"] == len(owed3)
    burst(home, env)
    final = export(home)
    assert chats(standin) == phase2_calls + len(owed3)
    assert {b["model"] for b in chat_bodies(standin)[phase2_calls:]} == {"phi4:14b"}
    for before, r in zip(after, final, strict=True):
        assert r["phase2"] == before["phase2"]  # the stored answer, not {"cached": true}
        assert r["status"] == "analyzed"
        if r["conversation_id"] in owed3:
            assert r["conversation"]["phase3"]["source"] == "model"
    assert len(ledger(home)) == len(failed_attempts) + chats(standin)


def test_incremental_no_call_when_unchanged_new_model_redoes_phase2_only_reanalyze_forces(home, standin):
    env = {"OLLAMA_HOST": standin.url}
    convs = complete_conversation("quote-a") + complete_conversation("quote-b")
    run_ok(home, "ingest", "--no-enqueue", write_jsonl(home, "two.jsonl", convs))
    run_ok(home, "analyze", "--inline", env=env)
    first = records(home)
    assert {r["conversation"]["tier"] for r in first} == {3} and {r["status"] for r in first} == {"analyzed"}
    assert chats(standin) == 6 + 2

    # unchanged emails, same model and prompt version: no LLM call at all
    run_ok(home, "analyze", "--inline", "--conversation", "quote-a", env=env)  # re-run, answers from the cache
    run_ok(home, "analyze", "--inline", env=env)  # nothing owed, nothing stale
    assert chats(standin) == 8
    assert records(home) == first

    # a new phase 2 model: phase 2 again for every email, phase 3 not (its input did not change)
    other = {**env, "MAILCLI_PHASE2_MODEL": OTHER_MODEL}
    assert json.loads(run_ok(home, "analyze", "--inline", "--json", env=other).stdout)["conversations"] == 2
    new = chat_bodies(standin)[8:]
    assert len(new) == 6 and {b["model"] for b in new} == {OTHER_MODEL}
    second = export(home)
    assert all(r["phase2"]["model"] == OTHER_MODEL and r["phase2"]["source"] == "model" for r in second)
    assert [r["conversation"]["phase3"] for r in second] == [r["conversation"]["phase3"] for r in first]
    run_ok(home, "analyze", "--inline", env=other)  # and again with that model: nothing to do
    assert chats(standin) == 14

    # --reanalyze forces every owed call of that conversation
    run_ok(home, "analyze", "--inline", "--reanalyze", "--conversation", "quote-a", env=other)
    forced = chat_bodies(standin)[14:]
    assert sorted(b["model"] for b in forced) == sorted([OTHER_MODEL] * 3 + ["phi4:14b"])
    assert len(ledger(home)) == chats(standin)


# ---------------------------------------------------------------------------------- in-process


def settings_for(url: str) -> Settings:
    return Settings(ollama_host=url)


def payload_email(i: int, conv: str) -> dict[str, Any]:
    return {"rowid": i, "id": f"m{i}", "subject": f"Quote {i}", "body": f"URGENT critical: quote part AB-{i}0001 asap",
            "from": "buyer@example.org", "importance": "high", "date": "2025-03-04T10:00:00Z", "phase2_key": None}  # fmt: skip


def test_a_job_of_small_conversations_fills_the_in_flight_slots(standin):
    standin.configure(latency=0.1)
    llm = make_llm_phases(settings_for(standin.url))
    payload = {"conversations": [
        {"conversation_id": f"c{i}", "revision": 1, "emails": [payload_email(i, f"c{i}")], "options": {}}
        for i in range(12)
    ]}  # fmt: skip  (critical single emails: each owes phase 2, not phase 3)
    seen: list[str] = []
    started = time.monotonic()
    results = analyze_batch(payload, llm, on_result=lambda r: seen.append(r["conversation_id"]))
    elapsed = time.monotonic() - started
    llm.close()
    assert [r["conversation_id"] for r in results] == [f"c{i}" for i in range(12)]  # payload order
    assert sorted(seen) == sorted(r["conversation_id"] for r in results)
    assert all(r["status"] == "analyzed" and r["emails"][0]["phase2"]["source"] == "model" for r in results)
    assert standin.max_concurrency == 3  # the client's limit, reached by one job
    assert elapsed < 12 * 0.1  # faster than one at a time could ever be (3 at a time: about 0.4 s)


class _DownLLM:
    """An LLM seam whose Ollama is gone: the attempts it made ride on the exception."""

    max_in_flight = 3

    def phase2_key(self, email):
        return "m|v|" + email["id"]

    def phase3_key(self, emails):
        return "m3|v|x"

    def run_phase2(self, emails, phase1):
        attempts = [{"call_key": f"k{e['rowid']}-{n}", "email_rowid": e["rowid"], "phase": 2, "model": "m",
                     "prompt_version": "v", "input_hash": "h", "host": "http://x:1", "duration_ms": 1.0,
                     "prompt_eval_count": None, "eval_count": None, "done_reason": None, "http_status": None,
                     "attempt": n, "outcome": "retry" if n < 2 else "error", "error": "refused",
                     "created_at": "2025-01-01T00:00:00Z"} for e in emails for n in (1, 2)]  # fmt: skip
        raise LLMUnavailable("Ollama unavailable for model 'm'", attempts)

    def run_phase3(self, *a):
        raise AssertionError("phase 3 must wait for phase 2")


def test_failed_attempts_on_llm_unavailable_reach_the_ledger(home):
    conv = {"conversation_id": "c1", "revision": 0, "options": {"all_phases": True},
            "emails": [payload_email(1, "c1"), payload_email(2, "c1")]}  # fmt: skip
    result = analyze_conversation(conv, _DownLLM())
    assert result["status"] == "partial" and "Ollama unavailable" in result["missing"][0]
    assert [(c["email_rowid"], c["attempt"]) for c in result["llm_calls"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # and the writer records them
    from mailcli.store.results import apply_results

    run_ok(home, "ingest", "--no-enqueue", write_jsonl(home, "x.jsonl", [one_email_conversation("c1")]))
    with home.store() as store:
        rowid = store.conn.execute("SELECT rowid FROM emails").fetchone()[0]
        conv = {**conv, "emails": [{**payload_email(1, "c1"), "rowid": rowid}]}
        result = analyze_conversation(conv, _DownLLM())
        apply_results(store, [result])
        apply_results(store, [result])  # delivered twice: recorded once
        got = store.conn.execute("SELECT email_rowid, attempt, outcome FROM llm_calls ORDER BY id").fetchall()
    assert got == [(rowid, 1, "retry"), (rowid, 2, "error")]


def test_warm_up_loads_both_models_and_never_raises(standin, caplog):
    llm = make_llm_phases(settings_for(standin.url))
    assert llm.warm_up() == {"llama3.2:3b": [standin.url], "phi4:14b": [standin.url]}
    loaded = {m["name"]: m for m in llm.client.ps()}
    assert set(loaded) == {"llama3.2:3b", "phi4:14b"}
    assert chats(standin) == 0  # loading is not an LLM call
    llm.close()

    standin.models = ["llama3.2:3b"]
    llm = make_llm_phases(settings_for(standin.url))
    with caplog.at_level(logging.WARNING, logger="mailcli.analysis.llm"):
        assert llm.warm_up() == {"llama3.2:3b": [standin.url], "phi4:14b": []}
    assert "run `ollama pull phi4:14b`" in caplog.text
    llm.close()

    caplog.clear()
    llm = make_llm_phases(settings_for("http://127.0.0.1:9"))
    with caplog.at_level(logging.WARNING, logger="mailcli.analysis.llm"):
        assert llm.warm_up() == {"llama3.2:3b": [], "phi4:14b": []}
    assert "not reachable" in caplog.text
    llm.close()


def test_worker_seam_is_cached_and_warmed_once_and_phase1_jobs_skip_it(standin, monkeypatch):
    from mailcli.queue import tasks

    monkeypatch.setenv("OLLAMA_HOST", standin.url)
    monkeypatch.setattr(tasks, "_llm_cache", {})
    assert tasks._llm_for({"max_phase": 1}) is None
    opts = {"phase2_model": "llama3.2:3b", "phase3_model": "phi4:14b"}
    first = tasks._llm_for(opts)
    assert tasks._llm_for(dict(opts)) is first
    wait_for(warm_ups_done, timeout=10, what="the warm-up thread")
    assert standin.stats()["requests"].get("/api/generate", 0) == 2
    assert standin.stats()["requests"].get("/api/tags", 0) == 1  # once per seam, not per job
    first.close()


def test_a_job_mixing_phase_caps_still_gets_its_llm(standin, monkeypatch):
    from mailcli.queue import tasks

    monkeypatch.setenv("OLLAMA_HOST", standin.url)
    monkeypatch.setattr(tasks, "_llm_cache", {})
    capped = {"conversation_id": "c1", "revision": 1, "emails": [payload_email(1, "c1")], "options": {"max_phase": 1}}
    full = {"conversation_id": "c2", "revision": 1, "emails": [payload_email(2, "c2")], "options": {"max_phase": 3}}
    out = tasks.analyze_job({"conversations": [capped, full]})
    assert out["statuses"] == {"analyzed": 2} and out["llm_calls"] == 1
    assert chats(standin) == 1
    wait_for(warm_ups_done, timeout=10, what="the warm-up thread")
    for llm in tasks._llm_cache.values():
        llm.close()


def test_each_phase_has_its_own_read_timeout():
    import httpx
    from ollama_standin import SchemaFaker

    from mailcli.analysis import llm_phases
    from mailcli.analysis.schemas import PHASE2_SCHEMA

    seen: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body["model"], request.extensions["timeout"]["read"]))
        answer = SchemaFaker(body["format"], b"x").value(body["format"])
        return httpx.Response(200, json={"model": body["model"], "message": {"role": "assistant",
                              "content": json.dumps(answer)}, "done": True, "done_reason": "stop"})  # fmt: skip

    llm = make_llm_phases(settings_for("http://mock:11434"), transport=httpx.MockTransport(handler))
    e = payload_email(1, "c1")
    p1 = analyze_conversation({"conversation_id": "c1", "emails": [e], "options": {"max_phase": 1}})["emails"][0]
    (answer,), _ = llm.run_phase2([e], [p1["phase1"]])
    assert answer["source"] == "model" and set(PHASE2_SCHEMA["required"]) <= set(answer)
    llm.run_phase3([e], [p1["phase1"]], [answer], {"score": 90, "is_complete": True, "tier": 3})
    assert seen == [("llama3.2:3b", llm_phases.PHASE2_READ_TIMEOUT), ("phi4:14b", llm_phases.PHASE3_READ_TIMEOUT)]
    llm.close()


def test_several_hosts_share_the_work_and_a_dead_one_is_left_alone():
    with OllamaStandin(latency=0.05, slots=2, max_queue=8) as a, OllamaStandin(latency=0.05, slots=2, max_queue=8) as b:
        llm = make_llm_phases(settings_for(f"{a.url},http://127.0.0.1:9,{b.url}"))
        payload = {"conversations": [
            {"conversation_id": f"c{i}", "revision": 1, "emails": [payload_email(i, f"c{i}")], "options": {}}
            for i in range(12)
        ]}  # fmt: skip
        results = analyze_batch(payload, llm)
        llm.close()
        assert all(r["status"] == "analyzed" for r in results)
        calls = [c for r in results for c in r["llm_calls"]]
        used = {c["host"] for c in calls if c["outcome"] == "ok"}
        assert used == {a.url, b.url} and chats(a) >= 3 and chats(b) >= 3
        dead = [c for c in calls if c["host"] == "http://127.0.0.1:9"]
        assert len(dead) <= 5 + 2  # its breaker opens after 5 failures (+ attempts already under way)


# ------------------------------------------------------------------ misconfiguration is said, once


def test_a_model_pulled_on_no_host_is_named_once_with_the_fix_and_exits_4(home, standin):
    """The issue's case: MAILCLI_PHASE2_MODEL names a model no host has. Every command that runs the
    work says so once, with `ollama pull`, exits 4, and phase 1 is still done and kept."""
    run_ok(home, "ingest", *GOOD, "--no-enqueue")
    env = {"OLLAMA_HOST": standin.url, "MAILCLI_PHASE2_MODEL": "no-such-model:1b"}
    line = 'model "no-such-model:1b" (phase 2) is not pulled on ' + standin.url

    inline = home.run("analyze", "--inline", "--reanalyze", env=env)
    assert inline.returncode == 4, inline.stderr
    assert "Traceback" not in inline.stderr
    assert inline.stderr.count(line) == 1 and inline.stderr.count("no-such-model") == 2  # the line and its fix
    assert "run `ollama pull no-such-model:1b` on that host" in inline.stderr
    assert "partial" in inline.stdout
    assert standin.stats()["responses"].get(404, 0) > 0  # the stand-in answered as Ollama does: 404
    assert all(r["phase1"] is not None for r in records(home))  # phase 1 done and kept
    assert "partial" in {st for st, _ in statuses(home).values()}

    queued = home.run("analyze", "--reanalyze", "--json", env=env)
    assert queued.returncode == 4 and queued.stderr.count(line) == 1, queued.stderr
    problems = json.loads(queued.stdout)["llm_problems"]
    assert [(p["kind"], p["model"], p["phase"]) for p in problems] == [("model_missing", "no-such-model:1b", 2)]

    pool = home.popen("workers", "start", "--min", "1", "--max", "1", "--burst", env=env)
    _, err = pool.communicate(timeout=120)
    assert pool.returncode == 4, err[-3000:]
    assert err.count(line) == 1 and "Traceback" not in err
    assert all(r["phase1"] is not None for r in records(home))
    owed = {st for st, _ in statuses(home).values()}
    assert owed <= {"analyzed", "partial"} and "partial" in owed

    # the fix: with the model there, the same commands exit 0 and say nothing about it
    fixed = home.run("analyze", "--inline", env={"OLLAMA_HOST": standin.url})
    assert fixed.returncode == 0 and "not pulled" not in fixed.stderr, fixed.stderr
    assert {st for st, _ in statuses(home).values()} == {"analyzed"}


def test_ollama_unreachable_is_said_once_with_the_fix_and_the_results_say_what_gives_phases_2_and_3(home):
    """Home's OLLAMA_HOST is a closed port: a warning (exit 0), once per command, phase 1 kept, and
    `results` ends with why conversations are partial and what completes them."""
    run_ok(home, "ingest", *GOOD, "--no-enqueue")
    line = "Ollama is not reachable at http://127.0.0.1:9"
    inline = run_ok(home, "analyze", "--inline")
    assert inline.stderr.count(line) == 1 and "`ollama serve`" in inline.stderr and "OLLAMA_HOST" in inline.stderr
    assert inline.stderr.count("127.0.0.1:9") == 1, inline.stderr  # the breaker opening is not said again
    queued = run_ok(home, "analyze", "--reanalyze")
    assert queued.stderr.count(line) == 1
    err = burst(home, env=None)
    assert err.count(line) == 1
    assert all(r["phase1"] is not None for r in records(home))
    shown = " ".join(run_ok(home, "results", env={"COLUMNS": "80"}).stdout.split())
    assert re.search(
        r"\d+ conversations are partial: phase 1 is done, but phases 2 and 3 are owed because Ollama was not"
        r" reachable at http://127.0.0.1:9\. To give them phases 2 and 3: start Ollama \(`ollama serve`\) .*"
        r"then `mailcli analyze` and `mailcli workers start --burst` \(or `mailcli analyze --inline`\)\.$",
        shown,
    ), shown[-600:]  # the last lines, after the table
    # capped at phase 1, a run owes no LLM phase: nothing to say
    capped = run_ok(home, "analyze", "--inline", "--phase", "1", "--reanalyze")
    assert "Ollama" not in capped.stderr
def test_three_workers_load_each_model_once_per_host_and_share_its_limit(home, standin):
    """The warm-up is claimed in Redis per host and model: a pool of 3 loads each model once, not 3 times.
    The calls keep_alive 5m: the model stays loaded while the run goes on and is unloaded 5 minutes after it."""
    from mailcli.llm.limiter import read_state

    env = {"OLLAMA_HOST": standin.url}
    standin.configure(latency=0.03, slots=2)
    run_ok(home, "ingest", *GOOD)
    burst(home, env, workers=3)
    loads = [e["body"] for e in standin.log if e["path"] == "/api/generate" and not e["body"].get("prompt")]
    assert sorted(b["model"] for b in loads) == ["llama3.2:3b", "phi4:14b"]
    chat_bodies_ = chat_bodies(standin)
    assert chat_bodies_ and all(b["keep_alive"] == "5m" for b in chat_bodies_)
    # /api/ps: loaded now, until about 5 minutes after the last call, not for ever
    (loaded,) = [m for m in json.loads(_get(standin.url + "/api/ps"))["models"] if m["name"] == "llama3.2:3b"]
    expires = datetime.fromisoformat(loaded["expires_at"].replace("Z", "+00:00"))
    left = (expires - datetime.now(UTC)).total_seconds()
    assert 200 < left <= 300
    # the host's shared limit, as every worker used it: no permit left behind, every answer counted
    conn = home.redis()
    state = read_state(conn, standin.url)
    conn.close()
    assert state is not None and state.in_flight == 0 and state.calls == chats(standin)
    assert 1.0 <= state.limit <= 8.0 and state.wait_ms is not None


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - the local stand-in
        return r.read().decode()


def test_warm_up_is_once_per_host_and_model_across_workers(home, standin):
    """Three workers' seams on one Redis: each model is loaded once on the host; without Redis each loads it."""
    conn = home.redis()
    seams = [make_llm_phases(settings_for(standin.url), redis=conn) for _ in range(3)]
    warmed = [s.warm_up() for s in seams]
    assert warmed[0] == {"llama3.2:3b": [standin.url], "phi4:14b": [standin.url]}
    assert warmed[1] == warmed[2] == {"llama3.2:3b": [], "phi4:14b": []}  # claimed by the first
    assert standin.stats()["requests"].get("/api/generate", 0) == 2
    alone = make_llm_phases(settings_for(standin.url))  # analyze --inline: its own warm-up
    assert alone.warm_up() == warmed[0]
    for s in [*seams, alone]:
        s.close()
    conn.close()

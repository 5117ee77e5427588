"""`mailcli report` at N emails against `mailcli export` of the same database, same run; and the file's size.

The store: the N generated emails analysed through phase 1 (the pool scenario's database, or `analyze
--inline --phase 1`, as the status scenario takes it), then given what phases 2 and 3 and their call
ledger would hold after a run, written in the shape the sink writes them (mailcli.store.results): every
email of a tier 2 or 3 conversation a phase 2 answer (3 % of them fallbacks with a reason, the rest
"model" answers with action items), every tier 3 conversation a phase 3 answer, and one ledger record
per call (two hosts, two models, latencies spread over 0.3-40 s, some retries, invalid answers and
repairs). No Ollama is needed and the figures do not depend on one.

Timed, interleaved, median of R each: the whole `mailcli report -o FILE` command against the whole
`mailcli export -o FILE` command (both read every email of the same database and write one file), launch
to exit; the target is the ratio (the report no slower than the export, which also reads every email and
writes one file), the seconds are the value. On this shared 2-core machine the wall time also measures
the other processes' load: the CPU time of both commands goes in the note. The page's size is the
second figure, against the export's size.
"""

from __future__ import annotations

import hashlib
import json
import random
import resource
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.bench_status import _analysed
from benchmarks.common import ARTEFACTS, Figure, Home, checkpoint, median, scratch


def _with_llm_results(db: Path, seed: int = 5) -> Path:
    """A copy of `db` holding phase 2/3 answers and ledger records shaped as the sink writes them."""
    from mailcli.analysis.llm_phases import phase2_fallback
    from mailcli.store.db import Store
    from mailcli.store.results import record_call

    out = scratch() / f"{db.stem}-llm.db"
    shutil.copyfile(db, out)
    rng = random.Random(seed)
    hosts = ["http://ollama-a:11434", "http://ollama-b:11434"]
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with Store.open(out) as store:
        c = store.conn
        rows = c.execute(
            "SELECT ea.email_rowid, ea.conversation_id, ea.phase1, e.subject, ca.tier"
            " FROM email_analysis ea JOIN emails e ON e.rowid = ea.email_rowid"
            " JOIN conversation_analysis ca ON ca.conversation_id = ea.conversation_id WHERE ca.tier >= 2"
        ).fetchall()
        tier3 = [cid for (cid,) in c.execute("SELECT conversation_id FROM conversation_analysis WHERE tier = 3")]
        clock = start
        seq = 0

        def call(cid: str, rowid: int | None, phase: int, outcome: str, error: str | None = None) -> None:
            nonlocal clock, seq
            seq += 1
            model = "llama3.2:3b" if phase == 2 else "phi4:14b"
            ms = rng.lognormvariate(7.3 if phase == 2 else 8.8, 0.6)
            clock += timedelta(milliseconds=ms / 4)  # four calls in flight
            record_call(c, {
                "call_key": hashlib.md5(f"{seed}-{seq}".encode()).hexdigest(), "email_rowid": rowid,
                "phase": phase, "model": model, "prompt_version": f"p{phase}-bench", "input_hash": f"{seq:064x}",
                "host": hosts[seq % 2], "duration_ms": round(ms, 1), "prompt_eval_count": rng.randint(600, 1400),
                "eval_count": rng.randint(120, 400), "done_reason": "stop", "http_status": 503 if outcome == "retry" else 200,
                "attempt": 1, "outcome": outcome, "error": error,
                "created_at": clock.isoformat(timespec="milliseconds"),
            }, cid, clock.isoformat(timespec="seconds"))  # fmt: skip

        with c:
            for rowid, cid, p1_text, subject, _tier in rows:
                p1 = json.loads(p1_text)
                answer = phase2_fallback({"subject": subject}, p1)
                meta = {"model": "llama3.2:3b", "prompt_version": "p2-bench", "input_hash": f"{rowid:064x}"}
                draw = rng.random()
                if draw < 0.03:
                    reason = f"invalid answer after one repair: not valid JSON (Unterminated string at character {rng.randint(300, 450)})"
                    answer.update(source="fallback", fallback_reason=reason, **meta)
                    call(cid, rowid, 2, "invalid", f"schema: {reason}")
                    call(cid, rowid, 2, "fallback", f"schema: {reason}")
                else:
                    answer.update(
                        source="model", confidence=0.8, **meta,
                        summary=f"{subject[:80]}: customer asks for an update",
                        action_items=[{"task": f"Confirm {p1['workflow_state'].lower()} for the customer",
                                       "owner": "order desk", "deadline": "2025-07-01"}],
                        risk_assessment="delivery date at risk if the order is not confirmed this week",
                    )  # fmt: skip
                    if draw < 0.06:
                        call(cid, rowid, 2, "retry", "http://ollama-a:11434 answered 503: server busy")
                    call(cid, rowid, 2, "ok")
                c.execute(
                    "UPDATE email_analysis SET phase2 = ?, phase2_key = ? WHERE email_rowid = ?",
                    (json.dumps(answer), f"llama3.2:3b|p2-bench|{rowid:064x}", rowid),
                )
            for cid in tier3:
                p3 = {
                    "executive_summary": "The customer's order is confirmed and shipped; the invoice is open.",
                    "strategic_insights": {"opportunity": "repeat order", "risk": "late payment", "relationship": "good"},
                    "escalation_needed": rng.random() < 0.1, "revenue_impact": "about 25,000 in open orders",
                    "cross_email_patterns": ["delivery dates slip"],
                    "workflow_intelligence": {"predicted_next_steps": ["Send the invoice", "Confirm receipt"],
                                              "bottleneck_risks": ["credit check"], "optimization_opportunities": []},
                    "source": "model", "model": "phi4:14b", "prompt_version": "p3-bench", "input_hash": cid,
                }  # fmt: skip
                call(cid, None, 3, "ok")
                c.execute(
                    "UPDATE conversation_analysis SET phase3 = ?, phase3_key = ? WHERE conversation_id = ?",
                    (json.dumps(p3), f"phi4:14b|p3-bench|{cid}", cid),
                )
    return checkpoint(out)


def _store(n: int) -> tuple[Path, str]:
    key = f"report-{n}"
    db, origin = _analysed(n)
    if key not in ARTEFACTS:
        ARTEFACTS[key] = _with_llm_results(Path(db))
    return ARTEFACTS[key], origin


def _browser_ready_ms(page: Path) -> str:
    """How long Chromium takes to open the page and draw it (the page's own ready flag), if it is here."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "Chromium/Playwright not available: page load not measured"
    if not chromium:
        return "Chromium not available: page load not measured"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            pg.goto(page.as_uri())
            pg.wait_for_function("window.mailcliReport && window.mailcliReport.ready", timeout=60_000)
            ms = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            pg.fill("#entity-filter", "45")
            filter_ms = (time.perf_counter() - t1) * 1000
        finally:
            browser.close()
    return (f"Chromium opens and draws the page in {ms:,.0f} ms, filters the entity index in {filter_ms:,.0f} ms"
            f"{' (page errors: ' + '; '.join(errors) + ')' if errors else ', no page errors'}")  # fmt: skip


def run(n: int = 100_000, repeats: int = 5) -> list[Figure]:
    db, origin = _store(n)
    ours, base, ours_cpu, base_cpu = [], [], [], []
    with Home() as home:
        home.use_db(db)
        page, export = home.path / "report.html", home.path / "export.jsonl"
        home.run("report", "-o", str(page))  # warm: page cache, bytecode
        for i in range(repeats):
            steps = [
                (ours, ours_cpu, ("report", "-o", str(page))),
                (base, base_cpu, ("export", "-o", str(export))),
            ]
            for wall, cpu, args in steps if i % 2 else steps[::-1]:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                home.run(*args)
                wall.append(time.perf_counter() - t0)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        size, export_size = page.stat().st_size, export.stat().st_size
        html = page.read_text(encoding="utf-8")
        emails = int(html.split("<title>mailcli report · ", 1)[1].split(" emails", 1)[0].replace(",", ""))
        browser_note = _browser_ready_ms(page)
    v, b = median(ours), median(base)
    return [
        Figure(
            scenario=f"report at {emails:,} emails: `mailcli report`, whole command",
            metric="s",
            value=round(v, 2),
            baseline_name="`mailcli export -o FILE` of the same database",
            baseline=round(b, 2),
            ratio=round(b / v, 2),
            target=">= 1.0x",
            met=b / v >= 1.0,
            runs=repeats,
            note=f"launch to exit, interleaved; CPU (user + sys) median {median(ours_cpu):.2f} s against"
            f" {median(base_cpu):.2f} s for export; store {origin}, plus phase 2/3 answers and a call ledger"
            " in the sink's shape; ratio = baseline / value",
            samples=[round(x, 2) for x in ours],
            baseline_samples=[round(x, 2) for x in base],
        ),
        Figure(
            scenario=f"report at {emails:,} emails: the page's size",
            metric="MB",
            value=round(size / 1e6, 2),
            baseline_name="the export (JSONL) of the same database",
            baseline=round(export_size / 1e6, 1),
            ratio=round(export_size / size, 1),
            target="<= 5 MB",
            met=size <= 5e6,
            runs=1,
            note=f"one self-contained file (Chart.js, script, style and data inside); {browser_note}",
        ),
    ]

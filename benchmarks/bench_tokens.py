"""Prompt tokens per email and wall time of phases 2 and 3, each email's own text against its whole body.

Threads are built from the synthetic generator's conversations, every reply quoting the whole message before
it (quotes included, so a thread's text grows with the square of its length), half the threads as Gmail
quotes ("On <date>, <name> wrote:" and "> " lines), half as Outlook ("-----Original Message-----" and a
From/Sent/To/Subject block), every email ending with a signature block and a legal footer.

Both runs are `mailcli analyze --inline --all-phases` on the same export, against an Ollama stand-in whose
answers take longer with longer prompts (prefill) and answers (generation):
- baseline: the prompts with each email's whole body (quoted history, signature and footer in), made by
  benchmarks/wholebody/sitecustomize.py on the command's PYTHONPATH;
- mailcli: the prompts as they are (mailcli.analysis.prompts.own_text and reply_note).
Prompt tokens are the ``prompt_eval_count`` Ollama reports, read back from the ledger (llm_calls).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import Figure, Home, scratch

FOOTER = (
    "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and intended solely for the "
    "addressee. If you are not the intended recipient, please notify the sender and delete this message. "
    "Any review, retransmission or dissemination of this information is prohibited."
)


def _own(body: str) -> str:
    from mailcli.analysis.phase1 import strip_quoted

    return strip_quoted(body)


def threads_with_history(path: Path, threads: int = 30, depth: int = 6, seed: int = 7) -> Path:
    """A JSONL export of ``threads`` conversations of ``depth`` emails, each reply quoting all before it."""
    from synth import generate

    by_conv: dict[str, list[dict]] = defaultdict(list)
    for rec in generate(threads * depth * 8, seed=seed):
        by_conv[rec["conversation_id"]].append(rec)
    convs = [c for c in by_conv.values() if len(c) >= 3][:threads]
    out = []
    for n, conv in enumerate(convs):
        gmail = n % 2 == 0
        prev: dict | None = None
        for rec in conv[:depth]:
            name, _, addr = rec["from"].partition(" <")
            signature = f"{name}\nSenior Account Manager\n{addr.rstrip('>')}\n+1 (555) 010-{n % 100:04d}\n"
            own = f"{_own(rec['body'])}\n{signature}\n{FOOTER}"
            if prev is not None:
                pname = prev["from"].partition(" <")[0]
                if gmail:
                    quoted = "\n".join("> " + line if line else ">" for line in prev["body"].splitlines())
                    own += f"\n\nOn {prev['date'][:10]} at {prev['date'][11:16]}, {prev['from']} wrote:\n{quoted}"
                else:
                    own += (f"\n\n-----Original Message-----\nFrom: {pname}\nSent: {prev['date']}\n"
                            f"To: {rec['from']}\nSubject: {prev['subject']}\n\n{prev['body']}")
            rec = {**rec, "body": own}
            out.append(rec)
            prev = rec
    with open(path, "w", encoding="utf-8") as f:
        for rec in out:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def _ledger(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT phase, count(*), sum(prompt_eval_count), sum(eval_count) FROM llm_calls "
            "WHERE outcome IN ('ok', 'invalid', 'repair', 'fallback') GROUP BY phase"
        ).fetchall()
        emails = conn.execute("SELECT count(*) FROM emails").fetchone()[0]
        missing = conn.execute(
            "SELECT count(*) FROM llm_calls WHERE outcome = 'ok' AND prompt_eval_count IS NULL"
        ).fetchone()[0]
    finally:
        conn.close()
    out = {"emails": emails, "missing_counts": missing}
    for phase, calls, prompt, answer in rows:
        out[f"p{phase}"] = {"calls": calls, "prompt": prompt or 0, "answer": answer or 0}
    return out


WHOLE_BODY_SITE = Path(__file__).parent / "wholebody"  # its sitecustomize makes the baseline's prompts


def _one_run(export: Path, whole_bodies: bool, latency: float, prefill: float, per_token: float, slots: int) -> dict:
    from ollama_standin import OllamaStandin

    with OllamaStandin(latency=latency, prefill=prefill, per_token=per_token, slots=slots, max_queue=512) as server, \
            Home() as home:
        home.run("ingest", "--no-enqueue", str(export))
        env = {"OLLAMA_HOST": server.url}
        if whole_bodies:
            env["PYTHONPATH"] = os.pathsep.join([str(WHOLE_BODY_SITE), home.env["PYTHONPATH"]])
        t0 = time.perf_counter()
        home.run("analyze", "--inline", "--all-phases", env=env)
        elapsed = time.perf_counter() - t0
        ledger = _ledger(home.db)
        statuses = [r["status"] for r in json.loads(home.run("results", "--json", "--limit", "100000").stdout)]
    return {"seconds": elapsed, "analyzed": statuses.count("analyzed"), "partial": statuses.count("partial"), **ledger}


def run(threads: int = 30, depth: int = 6, latency: float = 0.02, prefill: float = 0.0002,
        per_token: float = 0.0005, slots: int = 4) -> list[Figure]:
    export = threads_with_history(scratch() / f"quoted-{threads}x{depth}.jsonl", threads, depth)
    base = _one_run(export, True, latency, prefill, per_token, slots)
    ours = _one_run(export, False, latency, prefill, per_token, slots)
    figures = []
    for phase, what in ((2, "phase 2 prompt tokens per email"), (3, "phase 3 prompt tokens per email")):
        b = base[f"p{phase}"]["prompt"] / base["emails"]
        o = ours[f"p{phase}"]["prompt"] / ours["emails"]
        figures.append(Figure(
            scenario=f"Fewer tokens: {what} ({threads} threads x {depth} emails with quoted history)",
            metric="tokens", value=round(o, 1), baseline_name="whole bodies (quotes, signatures, footers)",
            baseline=round(b, 1), ratio=round(b / o, 2), target="n/a (fewer is better)", met=None, runs=1,
            note=f"prompt_eval_count from the ledger: {ours[f'p{phase}']['calls']} calls; answers "
            f"{ours[f'p{phase}']['answer']} tokens (baseline {base[f'p{phase}']['answer']}); calls without token "
            f"counts: {ours['missing_counts']}",
        ))
    figures.append(Figure(
        scenario=f"Fewer tokens: phases 2 + 3 wall time, analyze --inline ({threads * depth} emails; prefill "
        f"{prefill * 1000:.1f} ms/token, {slots} slots)",
        metric="s", value=round(ours["seconds"], 2), baseline_name="whole bodies", baseline=round(base["seconds"], 2),
        ratio=round(base["seconds"] / ours["seconds"], 2), target="n/a (report)", met=None, runs=1,
        note=f"analysed {ours['analyzed']} / partial {ours['partial']} (baseline {base['analyzed']} / "
        f"{base['partial']})",
    ))
    return figures


if __name__ == "__main__":
    for f in run():
        print(json.dumps(f.to_dict()))

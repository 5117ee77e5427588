"""LLM phases at the server's capacity: a worker pool against Ollama stand-ins of 1 and 4 slots, and both at once.

Each stand-in serves ``slots`` requests at once (OLLAMA_NUM_PARALLEL) and queues the rest (OLLAMA_MAX_QUEUE
512, as Ollama's default); an answer takes ``latency`` plus ``prefill`` per prompt token plus ``per_token``
per answer token, so the server's capacity is counted in slot-seconds, not calls. N generated emails all
owe phase 2 (`analyze --all-phases --phase 2`); `mailcli workers start --burst` with W workers works them,
every worker's client sharing each host's adaptive limit through Redis (mailcli.llm.limiter).

Per case, from the stand-ins' own counters:
- utilisation: slot-seconds spent answering / (slots x the window from the first request received to the
  last answer sent), per host; the target is >= 0.9 on every host;
- requests waiting at the server: the most at any moment and the time average, against its slots
  (target: about one per slot at most);
- timeouts: answers the client gave up on (ledger attempts that timed out, and answers the stand-in found
  abandoned), with the read timeout MAILCLI_LLM_TIMEOUT set to ``timeout``; the target is 0.
"""

from __future__ import annotations

import json
import sqlite3
import time

from benchmarks.common import Figure, Home, synthetic

# (name, workers, slots of each host, emails)
QUICK_CASES = (
    ("6 workers, 1-slot host", 6, (1,), 120),
    ("10 workers, 1-slot host", 10, (1,), 120),
    ("6 workers, 4-slot host", 6, (4,), 360),
    ("10 workers, 4-slot host", 10, (4,), 360),
    ("10 workers, 1-slot + 4-slot hosts", 10, (1, 4), 400),
)


def _timeouts(db) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM llm_calls WHERE error LIKE '%timed out%'").fetchone()[0]
    finally:
        conn.close()


def _one_case(workers: int, slots: tuple[int, ...], n: int, latency: float, prefill: float, per_token: float,
              timeout: float) -> dict:
    from ollama_standin import OllamaStandin

    standins = [OllamaStandin(latency=latency, prefill=prefill, per_token=per_token, slots=s, max_queue=512,
                              log_limit=max(1000, 4 * n)) for s in slots]
    for s in standins:
        s.start()
    try:
        with Home() as home:
            env = {"OLLAMA_HOST": ",".join(s.url for s in standins), "MAILCLI_LLM_TIMEOUT": str(timeout)}
            home.run("ingest", "--no-enqueue", str(synthetic(n)))
            home.run("analyze", "--all-phases", "--phase", "2", env=env)
            for s in standins:
                s.reset()
            t0 = time.time()
            proc = home.popen("workers", "start", "--min", str(workers), "--max", str(workers), "--burst", env=env)
            _, err = proc.communicate(timeout=1800)
            t1 = time.time()
            if proc.returncode != 0:
                raise RuntimeError(f"workers start --burst failed ({proc.returncode}): {err[-2000:]}")
            out = json.loads(home.run("results", "--json", "--limit", "1000000").stdout)
            chats = [e for s in standins for e in s.log if e["path"] == "/api/chat"]
            stats = [s.stats() for s in standins]
            first = min(e["at"] for e in chats)  # the first request received ...
            served_until = max(getattr(s, "last_answer", 0.0) for s in standins) or t1  # ... the last answer sent
            window = max(served_until - first, 1e-9)
            hosts = []
            for st, k in zip(stats, slots, strict=True):
                hosts.append({
                    "slots": k,
                    "served": st["served"],
                    "utilisation": st["busy_seconds"] / (k * window),
                    "max_waiting": st["max_waiting"],
                    "mean_waiting": st["wait_area"] / window,
                    "busy_503": st["busy_rejections"],
                    "abandoned": st["abandoned"],
                })
            return {
                "hosts": hosts,
                "timeouts": _timeouts(home.db) + sum(h["abandoned"] for h in hosts),
                "calls": sum(h["served"] for h in hosts),
                "window": window,
                "burst": t1 - t0,
                "statuses": sorted({r["status"] for r in out}),
                "emails": sum(r["emails"] for r in out),
            }
    finally:
        for s in standins:
            s.close()


def _patch_last_answer() -> None:
    """The stand-in notes when it last sent an answer (the end of the LLM window)."""
    from ollama_standin import OllamaStandin

    if getattr(OllamaStandin, "_bench_patched", False):
        return
    served = OllamaStandin._served

    def _served(self, seconds: float) -> None:
        served(self, seconds)
        self.last_answer = time.time()

    OllamaStandin._served = _served
    OllamaStandin._bench_patched = True


def run(cases=QUICK_CASES, latency: float = 0.1, prefill: float = 0.0001, per_token: float = 0.0005,
        timeout: float = 30.0, slow: bool = False) -> list[Figure]:
    _patch_last_answer()
    figures = []
    all_cases = list(cases)
    if slow:
        # the worst case, shortened: 5 s calls on a 1-slot host, 10 workers
        all_cases.append(("10 workers, 1-slot host, 5 s calls", 10, (1,), 60, 5.0))
    for case in all_cases:
        name, workers, slots, n = case[:4]
        lat = case[4] if len(case) > 4 else latency
        r = _one_case(workers, slots, n, lat, prefill, per_token, 120.0 if len(case) > 4 else timeout)
        util = min(h["utilisation"] for h in r["hosts"])
        waiting_ok = all(h["max_waiting"] <= h["slots"] + 1 for h in r["hosts"])
        per_host = "; ".join(
            f"{h['slots']}-slot host: utilisation {h['utilisation']:.3f}, {h['served']} answers, waiting max "
            f"{h['max_waiting']} / mean {h['mean_waiting']:.2f}, {h['busy_503']} busy (503)"
            for h in r["hosts"]
        )
        figures.append(Figure(
            scenario=f"LLM at capacity: {name} (L={lat}s + prefill + generation, {r['calls']} phase 2 calls)",
            metric="utilisation",
            value=round(util, 3),
            baseline_name="the server's capacity (slots x window)",
            baseline=1.0,
            ratio=round(util, 3),
            target=">= 0.9x, waiting <= ~1 per slot, 0 timeouts",
            met=util >= 0.9 and waiting_ok and r["timeouts"] == 0,
            runs=1,
            note=f"{per_host}; {r['timeouts']} timeouts; window {r['window']:.1f}s of a {r['burst']:.1f}s burst "
            f"run; statuses {r['statuses']}",
            samples=[round(h["utilisation"], 3) for h in r["hosts"]],
            baseline_samples=[1.0 for _ in r["hosts"]],
        ))
    return figures


if __name__ == "__main__":
    import sys

    for f in run(slow="--full" in sys.argv):
        print(json.dumps(f.to_dict()))

"""LLM throughput of the pool: phase 2 calls per second against the limit of the Ollama server.

An Ollama stand-in with a fixed latency L per answer and S parallel slots (and a queue, as Ollama's
OLLAMA_MAX_QUEUE, so a request beyond the slots waits instead of getting a 503) can answer at most
S / L requests a second. N generated emails all owe phase 2 (`analyze --all-phases --phase 2`), and
`mailcli workers start --burst` with W workers (3 requests in flight each, W x 3 >= S) works them.

Two figures, both against S / L:
- the LLM window, from the stand-in's own clocks: first request received to last answer sent;
- the whole burst run (`workers start --burst` from launch to exit: pool and worker start-up,
  warm-up, the sink's last commit and the shutdown included).
"""

from __future__ import annotations

import json
import threading
import time

from benchmarks.common import Figure, Home, median, synthetic


def _standin_class():
    from ollama_standin import OllamaStandin

    class TimedStandin(OllamaStandin):
        """The stand-in, also noting when each answer went out (it logs arrivals only)."""

        def reset(self) -> None:
            super().reset()
            self.answered_at: list[float] = []
            self._answer_lock = threading.Lock()

        def _answered(self, status: int) -> None:
            super()._answered(status)
            with self._answer_lock:
                self.answered_at.append(time.time())

    return TimedStandin


def _one_run(n: int, latency: float, slots: int, workers: int) -> dict:
    standin = _standin_class()(latency=latency, slots=slots, max_queue=512, log_limit=max(1000, 4 * n))
    with standin, Home() as home:
        env = {"OLLAMA_HOST": standin.url}
        home.run("ingest", "--no-enqueue", str(synthetic(n)))
        home.run("analyze", "--all-phases", "--phase", "2", env=env)
        standin.reset()
        t0 = time.time()
        proc = home.popen("workers", "start", "--min", str(workers), "--max", str(workers), "--burst", env=env)
        _, err = proc.communicate(timeout=600)
        t1 = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"workers start --burst failed ({proc.returncode}): {err[-2000:]}")
        chat_at = [e["at"] for e in standin.log if e["path"] == "/api/chat"]
        stats = standin.stats()
        calls = stats["requests"].get("/api/chat", 0)
        out = json.loads(home.run("results", "--json", "--limit", "1000000").stdout)
        return {
            "calls": calls,
            "emails": sum(r["emails"] for r in out),
            "statuses": sorted({r["status"] for r in out}),
            "window": max(standin.answered_at) - min(chat_at),
            "burst": t1 - t0,
            "to_first_call": min(chat_at) - t0,
            "after_last_answer": t1 - max(standin.answered_at),
            "max_active": stats["max_active"],
            "busy_rejections": stats["busy_rejections"],
            "responses": stats["responses"],
        }


def run(n: int = 600, latency: float = 0.2, slots: int = 8, workers: int = 4, repeats: int = 1) -> list[Figure]:
    limit = slots / latency
    runs = [_one_run(n, latency, slots, workers) for _ in range(repeats)]
    window_rates = [r["calls"] / r["window"] for r in runs]
    burst_rates = [r["calls"] / r["burst"] for r in runs]
    window_rate, burst_rate = median(window_rates), median(burst_rates)
    last = runs[-1]
    setup = f"L={latency}s, S={slots}, {workers} workers x 3 in flight, {last['calls']} phase 2 calls"
    health = "; ".join(
        f"statuses {r['statuses']}, peak {r['max_active']}/{slots} slots busy, {r['busy_rejections']} busy (503)"
        for r in runs
    )
    timing = ", ".join(
        f"{r['burst']:.1f}s ({r['to_first_call']:.1f}s to the first call, {r['after_last_answer']:.1f}s after "
        f"the last answer)" for r in runs
    )
    return [
        Figure(
            scenario=f"LLM calls, first to last ({setup})",
            metric="calls/s",
            value=round(window_rate, 1),
            baseline_name="S / L, what the server can answer",
            baseline=round(limit, 1),
            ratio=round(window_rate / limit, 3),
            target=">= 0.9x",
            met=window_rate / limit >= 0.9,
            runs=repeats,
            note=f"median; the stand-in's clocks: first request received to last answer sent; {health}",
            samples=[round(x, 2) for x in window_rates],
            baseline_samples=[round(limit, 2)] * repeats,
        ),
        Figure(
            scenario=f"LLM calls, whole burst run ({setup})",
            metric="calls/s",
            value=round(burst_rate, 1),
            baseline_name="S / L, what the server can answer",
            baseline=round(limit, 1),
            ratio=round(burst_rate / limit, 3),
            target="n/a (start-up and shutdown included)",
            met=None,
            runs=repeats,
            note=f"median; `workers start --burst` launch to exit: {timing} - pool and worker start-up and warm-up "
            f"before, the last sink commit, burst-done check and shutdown after",
            samples=[round(x, 2) for x in burst_rates],
            baseline_samples=[round(limit, 2)] * repeats,
        ),
    ]


if __name__ == "__main__":
    import sys

    kw = dict(arg.split("=", 1) for arg in sys.argv[1:])
    for f in run(**{k: (float(v) if "." in v else int(v)) for k, v in kw.items()}):
        print(json.dumps(f.to_dict()))

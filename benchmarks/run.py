"""`make bench`: every scenario, a Markdown table, and benchmarks/results.json.

    python -m benchmarks.run            # quick: fewer repeats, smaller sizes where a target allows
    python -m benchmarks.run --full     # the sizes the targets name
    python -m benchmarks.run --only ingest,llm
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.common import Figure, loadavg

# name -> (module, quick kwargs, full kwargs)
SCENARIOS: dict[str, tuple[str, dict, dict]] = {
    "ingest": ("benchmarks.bench_ingest", {"n": 100_000, "repeats": 3}, {"n": 100_000, "repeats": 5}),
    "worker_class": ("benchmarks.bench_worker_class", {"jobs": 300, "repeats": 3}, {"jobs": 1000, "repeats": 5}),
    # 6 and 10 workers against a 1-slot and a 4-slot Ollama stand-in and both together (~4 min); --full adds
    # 5 s calls on a 1-slot host (~5 min more)
    "llm": ("benchmarks.bench_llm", {}, {"slow": True}),
    "tokens": ("benchmarks.bench_tokens", {"threads": 30, "depth": 6}, {"threads": 60, "depth": 8}),
    # the 100,000 emails of the target in both modes (three interleaved pairs take ~3.5 min); the plain-RQ
    # baseline runs 10,000 one-email jobs in quick mode (its rate is per email)
    "pool": (
        "benchmarks.bench_pool",
        {"n": 100_000, "repeats": 3, "rq_emails": 10_000},
        {"n": 100_000, "repeats": 3, "rq_emails": 100_000},
    ),
    "roundtrip": ("benchmarks.bench_roundtrip", {"n": 200}, {"n": 200}),
    "autoscale": ("benchmarks.bench_autoscale", {"repeats": 3}, {"repeats": 5}),
    "recovery": ("benchmarks.bench_recovery", {"repeats": 5}, {"repeats": 5}),
    "memory": ("benchmarks.bench_memory", {"repeats": 2}, {"repeats": 3}),
    "redis_peak": ("benchmarks.bench_redis_peak", {"n": 200_000}, {"n": 1_000_000}),
    # after "pool": reuses the database it analysed (same size)
    "status": ("benchmarks.bench_status", {"n": 100_000, "repeats": 7}, {"n": 100_000, "repeats": 15}),
    # after "status": reuses the phase-1 database it analysed (same size), adds phase 2/3 rows and a ledger
    "report": ("benchmarks.bench_report", {"n": 100_000, "repeats": 3}, {"n": 100_000, "repeats": 5}),
}


def machine() -> str:
    import psutil

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB,"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.2f}"


def markdown(figures: list[Figure]) -> str:
    lines = [
        "| scenario | result | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        met = "n/a" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(
            f"| {f.scenario} | {_num(f.value)} {f.metric} | {_num(f.baseline)} {f.metric} ({f.baseline_name}) |"
            f" {f.ratio}x | {f.target} | {met} |"
        )
    lines.append("")
    lines.append("ratio > 1 is better than the baseline (value / baseline for rates, baseline / value for times and sizes).")
    lines.append("")
    for i, f in enumerate(figures, 1):
        if f.note:
            lines.append(f"{i}. {f.scenario}: {f.note}")
    return "\n".join(lines)


def precompile() -> str:
    """Write the bytecode caches of mailcli and the benchmark helpers before timing anything.

    Every timed command is a fresh interpreter. A user's second run of any command finds the caches its
    first run wrote, and installed packages (rq, sqlite-utils: the baselines) ship theirs; but with
    PYTHONDONTWRITEBYTECODE set (as in some containers and CI images) mailcli's editable sources would be
    compiled again by every process, which would be measured as mailcli's cost."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    ok = all(
        compileall.compile_dir(str(root / d), quiet=1, workers=1) for d in ("mailcli", "benchmarks", "tests")
    )
    return "precompiled (compileall)" + ("" if ok else ", with errors") + (
        "; PYTHONDONTWRITEBYTECODE is set" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    args = parser.parse_args(argv)
    wanted = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    bytecode = precompile()
    figures: list[Figure] = []
    runs: dict[str, dict] = {}
    errors: dict[str, str] = {}
    started = time.time()
    load_start = loadavg()
    for name in wanted:
        module, quick, full = SCENARIOS[name]
        kwargs = full if args.full else quick
        print(f"# {name} {kwargs} (load {loadavg()}) ...", file=sys.stderr, flush=True)
        t0 = time.time()
        before = loadavg()
        try:
            got = importlib.import_module(module).run(**kwargs)
        except Exception as exc:  # one broken scenario must not cost the whole run's figures
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"#   FAILED: {errors[name]}", file=sys.stderr, flush=True)
            got = []
        after = loadavg()
        for f in got:
            f.load = after
        figures.extend(got)
        runs[name] = {"seconds": round(time.time() - t0, 1), "kwargs": kwargs, "load_before": before, "load_after": after}
        print(f"#   {time.time() - t0:.0f}s (load {after})", file=sys.stderr, flush=True)
    seconds = round(time.time() - started)
    table = markdown(figures)
    print(f"Machine: {machine()}; mode {'full' if args.full else 'quick'}; {seconds} s;"
          f" load average (1, 5, 15 min) {load_start} at start, {loadavg()} at the end; bytecode {bytecode}\n")  # fmt: skip
    print(table)
    for name, err in errors.items():
        print(f"\nscenario {name} FAILED: {err}")
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine(),
                "mode": "full" if args.full else "quick",
                "seconds": seconds,
                "load": {"start": load_start, "end": loadavg(), "note": "os.getloadavg(): 1, 5, 15 min"},
                "bytecode": bytecode,
                "scenarios": runs,
                "errors": errors,
                "figures": [f.to_dict() for f in figures],
            },
            indent=2,
        )
        + "\n"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

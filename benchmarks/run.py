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

from benchmarks.common import Figure

# name -> (module, quick kwargs, full kwargs)
SCENARIOS: dict[str, tuple[str, dict, dict]] = {
    "ingest": ("benchmarks.bench_ingest", {"n": 100_000, "repeats": 3}, {"n": 100_000, "repeats": 5}),
    "worker_class": ("benchmarks.bench_worker_class", {"jobs": 300, "repeats": 3}, {"jobs": 1000, "repeats": 5}),
}


def machine() -> str:
    import psutil

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB,"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def markdown(figures: list[Figure]) -> str:
    lines = [
        "| scenario | result | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        met = "n/a" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(
            f"| {f.scenario} | {f.value:,} {f.metric} | {f.baseline:,} ({f.baseline_name}) | {f.ratio}x |"
            f" {f.target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    args = parser.parse_args(argv)
    wanted = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    figures: list[Figure] = []
    started = time.time()
    for name in wanted:
        module, quick, full = SCENARIOS[name]
        print(f"# {name} ...", file=sys.stderr, flush=True)
        t0 = time.time()
        figures.extend(importlib.import_module(module).run(**(full if args.full else quick)))
        print(f"#   {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    table = markdown(figures)
    print(f"Machine: {machine()}\n")
    print(table)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine(),
                "mode": "full" if args.full else "quick",
                "seconds": round(time.time() - started),
                "figures": [f.to_dict() for f in figures],
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

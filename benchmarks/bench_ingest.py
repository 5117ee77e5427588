"""Ingest N generated emails vs a bare `sqlite-utils insert --nl` of the same records, same run."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import BIN, Figure, Home, median, synthetic, timed


def run(n: int = 100_000, repeats: int = 3) -> list[Figure]:
    data = synthetic(n)
    ours, base = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            db = Path(tmp) / "bare.db"
            base.append(timed(lambda db=db: subprocess.run(
                [str(BIN / "sqlite-utils"), "insert", str(db), "emails", str(data), "--nl"],
                check=True, capture_output=True,
            )))  # fmt: skip
        with Home() as home:
            ours.append(timed(lambda home=home: home.run("ingest", str(data), "--no-enqueue")))
    ours_rate, base_rate = n / median(ours), n / median(base)
    ratio = ours_rate / base_rate
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        Figure(
            scenario=f"ingest {n:,} emails (threading + dedupe)",
            metric="emails/s",
            value=round(ours_rate),
            baseline_name="sqlite-utils insert --nl",
            baseline=round(base_rate),
            ratio=round(ratio, 2),
            target=">= 1.0x",
            met=ratio >= 1.0,
            runs=repeats,
            note="wall time of the whole command, Python start-up included, on both sides; runs interleaved;"
            f" ours parses JSONL in a second process when there is a core to spare ({cores} here), so it needs"
            " two free cores where sqlite-utils needs one: compare the load average",
            samples=[round(n / t) for t in ours],
            baseline_samples=[round(n / t) for t in base],
        )
    ]

"""Where a scenario's CPU goes, per process: py-spy over a whole command, its worker processes included.

    python -m benchmarks.profile pool [--emails 30000]     # `workers start --burst`, phase 1, 2 workers
    python -m benchmarks.profile ingest [--emails 100000]  # `ingest --no-enqueue`
    python -m benchmarks.profile status [--emails 100000]  # `status --json`, 20 times
    python -m benchmarks.profile -- CMD ...                # any command

py-spy samples every thread of every process of the command (--subprocesses) while it holds the GIL
(--gil): CPU in Python, not waits. Prints, per process, the frames with the most samples, counted once
per sample however deep they recur (inclusive). The raw samples stay in benchmarks/out/ for a
flamegraph. The figures of `make bench` come from runs without py-spy: it slows what it watches.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.common import BIN, Home, ingested, mark_phase1_only

OUT = Path(__file__).parent / "out"
SKIP = re.compile(r"^(<module>|_run_code|_run_module_as_main|_bootstrap|_bootstrap_inner|run) \(|threading\.py|runpy")


def summarise(raw: Path, top: int = 25) -> str:
    """Inclusive samples per frame, per process, from py-spy's raw (collapsed stack) output."""
    per_process: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        who = procs[-1] if procs else "process ?"
        who = re.sub(r'^process \d+:"(.*)"$', r"\1", who)
        who = re.sub(r"\S*/(python3?|mailcli)\b", r"\1", who)[:90]
        totals[who] += int(count)
        for frame in dict.fromkeys(f for f in frames if not f.startswith("process ") and not SKIP.search(f)):
            per_process[who][frame] += int(count)
    out = []
    for who, total in totals.most_common():
        out.append(f"\n## {who}: {total} samples with the GIL ({total / RATE:.1f} s of CPU at {RATE} Hz)")
        for frame, n in per_process[who].most_common(top):
            out.append(f"{n:7d} {100 * n / total:5.1f}%  {frame}")
    return "\n".join(out)


RATE = 100


def profile(cmd: list[str], name: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: `make install` installs it (a dev dependency)")
    OUT.mkdir(exist_ok=True)
    raw = OUT / f"profile-{name}.txt"
    t0 = time.perf_counter()
    subprocess.run(
        [spy, "record", "--subprocesses", "--gil", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(raw), "--", *cmd],
        env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"# {' '.join(cmd)}: {time.perf_counter() - t0:.1f} s under py-spy; raw samples in {raw}")
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", choices=["pool", "ingest", "status"])
    parser.add_argument("--emails", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    mailcli = [str(BIN / "mailcli")]
    if args.scenario is None:
        cmd = [c for c in args.cmd if c != "--"]
        if not cmd:
            parser.error("give a scenario or -- CMD")
        print(summarise(profile(cmd, "command"), args.top))
        return
    with Home() as home:
        if args.scenario == "ingest":
            from benchmarks.common import synthetic

            data = synthetic(args.emails or 100_000)
            raw = profile([*mailcli, "ingest", str(data), "--no-enqueue"], "ingest", home.env, home.path)
        elif args.scenario == "pool":
            home.use_db(ingested(args.emails or 30_000))
            mark_phase1_only(home.db)
            raw = profile([*mailcli, "workers", "start", "--min", "2", "--max", "2", "--burst"], "pool", home.env, home.path)
        else:
            home.use_db(ingested(args.emails or 100_000))
            home.run("analyze", "--inline", "--phase", "1")
            script = f"for i in $(seq 20); do {mailcli[0]} status --json > /dev/null; done"
            raw = profile(["bash", "-c", script], "status", {**home.env, **os.environ, **home.env}, home.path)
    print(summarise(raw, args.top))


if __name__ == "__main__":
    sys.exit(main())

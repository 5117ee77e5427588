"""Shared benchmark plumbing: timing, medians, fresh homes, and the result record."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))  # the Ollama stand-in lives with the tests


@dataclass
class Figure:
    scenario: str
    metric: str  # what `value` measures, e.g. "emails/s"
    value: float
    baseline_name: str
    baseline: float
    ratio: float  # value / baseline, oriented so that higher is better unless `lower_is_better`
    target: str  # e.g. ">= 1.0x"
    met: bool | None
    runs: int
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Home:
    """A throwaway mailcli home with the embedded Redis; removed (and its Redis stopped) on exit."""

    def __init__(self, redis_url: str | None = None):
        self.path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mcb"))
        self.data = self.path / "data"
        self.redis_url = redis_url

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env["MAILCLI_HOME"] = str(self.data)
        env["OLLAMA_HOST"] = env.get("BENCH_OLLAMA_HOST", "http://127.0.0.1:9")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def run(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "mailcli", *args], cwd=self.path, env={**self.env, **(env or {})},
            capture_output=True, text=True,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"mailcli {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "mailcli", *args], cwd=self.path, env={**self.env, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def settings(self):
        from mailcli.config import load_settings

        return load_settings(cwd=self.path, env={k: v for k, v in self.env.items() if k in ("MAILCLI_HOME", "REDIS_URL")})

    def close(self) -> None:
        from mailcli.queue.redis_server import EmbeddedRedis

        if (self.data / "redis").exists():
            try:
                EmbeddedRedis(self.data / "redis").stop()
            except Exception:
                pass
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Home:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_DATA: dict[tuple, Path] = {}


def synthetic(n: int, shape: str = "flat", seed: int = 42) -> Path:
    """A generated export, cached for the run (the generator is deterministic)."""
    key = (n, shape, seed)
    if key not in _DATA:
        from mailcli.synth import write_jsonl

        out = Path(tempfile.gettempdir()) / f"mailcli-bench-{shape}-{n}-{seed}.jsonl"
        if not out.exists():
            write_jsonl(out, n, seed=seed, shape=shape)
        _DATA[key] = out
    return _DATA[key]

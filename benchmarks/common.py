"""Shared benchmark plumbing: timing, medians, fresh homes, processes, and the result record."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))  # the Ollama stand-in and the pool tests' job helpers live there


@dataclass
class Figure:
    scenario: str
    metric: str  # what `value` measures, e.g. "emails/s"
    value: float
    baseline_name: str
    baseline: float
    # > 1 means better than the baseline: value / baseline for rates, baseline / value for times and sizes
    ratio: float
    target: str  # e.g. ">= 1.0x", "<= 5 s"
    met: bool | None  # None: no target, the factor is reported
    runs: int
    note: str = ""
    samples: list[float] = field(default_factory=list)  # the candidate's individual runs, in `metric`
    baseline_samples: list[float] = field(default_factory=list)
    load: list[float] | None = None  # os.getloadavg() when the scenario ended (set by run.py)

    def to_dict(self) -> dict:
        return asdict(self)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for(cond: Callable[[], object], timeout: float = 30.0, interval: float = 0.01, what: str = "condition"):
    """Poll `cond` until it returns something truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
    """Ask a process we started to stop (SIGTERM), kill it if it will not; returns its exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class Home:
    """A throwaway mailcli home with the embedded Redis; removed (and its Redis stopped) on exit."""

    def __init__(self, redis_url: str | None = None):
        self.path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mcb"))
        self.data = self.path / "data"
        self.redis_url = redis_url
        self._procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("REDIS_URL", "MAILCLI_DB", "MAILCLI_DEBUG", "MAILCLI_WINDOW"):
            env.pop(var, None)
        env["MAILCLI_HOME"] = str(self.data)
        env["OLLAMA_HOST"] = env.get("BENCH_OLLAMA_HOST", "http://127.0.0.1:9")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
        # pool workers run mailcli's task module only, plus the modules named here (the scenarios' blocked
        # and held jobs)
        env["MAILCLI_TASK_MODULES"] = "jobhelpers,benchmarks.trivial"
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    @property
    def db(self) -> Path:
        return self.data / "mailcli.db"

    @property
    def redis_socket(self) -> Path:
        return self.data / "redis" / "redis.sock"

    @property
    def redis_url_for_rq(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

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

    def spawn(self, *cmd: str, log: str = "proc", env: dict | None = None) -> subprocess.Popen:
        """A long-running process (a pool, a plain rq worker) whose output goes to a log file in the home
        (never a pipe nobody reads); stopped by close() if the scenario has not stopped it."""
        logf = open(self.path / f"{log}-{len(self._procs)}.log", "wb")
        try:
            proc = subprocess.Popen(
                list(cmd), cwd=self.path, env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            logf.close()
        proc.log_path = self.path / f"{log}-{len(self._procs)}.log"  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    def mailcli(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.spawn(sys.executable, "-m", "mailcli", *args, log="mailcli", env=env)

    def burst_pool(self, timeout: float, workers: int = 2) -> float:
        """`workers start --min N --max N --burst`, launch to exit, in seconds; raises if it fails."""
        t0 = time.perf_counter()
        proc = self.mailcli("workers", "start", "--min", str(workers), "--max", str(workers), "--burst")
        try:
            code = proc.wait(timeout)
        finally:
            stop_process(proc)
        elapsed = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"workers start --burst exited {code}: {self.log_tail(proc)}")
        return elapsed

    def rq_worker(self, *queues: str, burst: bool = False, name: str | None = None) -> subprocess.Popen:
        """A plain `rq worker` (in-process SimpleWorker, JSON serializer, as the pool's workers)."""
        cmd = [str(BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "-S", "json", "-u", self.redis_url_for_rq]
        cmd += ["--burst"] if burst else []
        cmd += ["-n", name] if name else []
        return self.spawn(*cmd, *queues, log="rq-worker")

    @staticmethod
    def log_tail(proc: subprocess.Popen, chars: int = 2000) -> str:
        try:
            return Path(proc.log_path).read_text(errors="replace")[-chars:]  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            return ""

    def settings(self):
        from mailcli.config import load_settings

        return load_settings(cwd=self.path, env={k: v for k, v in self.env.items() if k in ("MAILCLI_HOME", "REDIS_URL")})

    def redis(self):
        """A client for this home's Redis (the embedded server is started if it is not running)."""
        from mailcli.redis_conn import connect

        return connect(self.settings())

    def stop_redis(self) -> None:
        from mailcli.queue.redis_server import EmbeddedRedis

        if (self.data / "redis").exists():
            try:
                EmbeddedRedis(self.data / "redis").stop()
            except Exception:
                pass

    def store(self):
        from mailcli.store.db import Store

        return Store.open(self.db)

    def use_db(self, db: Path) -> None:
        """Start from a copy of `db` (a checkpointed SQLite file: see checkpoint())."""
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(db, self.db)
        os.chmod(self.db, 0o600)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                stop_process(proc, timeout=15)
        self.stop_redis()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Home:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def checkpoint(db: Path) -> Path:
    """Fold the WAL into the database file, so that the file alone is a complete copy."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db


def analysis_done(db: Path) -> tuple[int, int]:
    """(emails with a phase 1 result, conversations still owed); raises when the store is inconsistent."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        emails = conn.execute("SELECT count(*) FROM emails").fetchone()[0]
        analysed = conn.execute("SELECT count(*) FROM email_analysis WHERE phase1 IS NOT NULL").fetchone()[0]
        owed = conn.execute(
            "SELECT count(*) FROM conversations WHERE status IN ('pending', 'queued', 'failed')"
        ).fetchone()[0]
    finally:
        conn.close()
    if analysed != emails or owed:
        raise RuntimeError(f"analysis incomplete in {db}: {analysed}/{emails} emails, {owed} conversations owed")
    return analysed, owed


# -- generated data and shared artefacts, kept for one `benchmarks.run` process --------------------------

_SCRATCH: list[Path] = []
_DATA: dict[tuple, Path] = {}
ARTEFACTS: dict[str, Path] = {}  # e.g. "analysed-100000": a checkpointed, phase-1-analysed database


def scratch() -> Path:
    """A directory removed when the benchmark process exits."""
    if not _SCRATCH:
        _SCRATCH.append(Path(tempfile.mkdtemp(dir="/tmp", prefix="mcb-run-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]


def _generator_digest() -> str:
    import synth

    return hashlib.sha1(Path(synth.__file__).read_bytes()).hexdigest()[:10]


def synthetic(n: int, shape: str = "flat", seed: int = 42) -> Path:
    """A generated export (tests/synth.py, deterministic), cached under /tmp between runs; the cache name
    carries a digest of the generator, so a changed generator never serves stale data."""
    key = (n, shape, seed)
    if key not in _DATA:
        from synth import write_jsonl

        out = Path(tempfile.gettempdir()) / f"mailcli-bench-{shape}-{n}-{seed}-{_generator_digest()}.jsonl"
        if not out.exists():
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            write_jsonl(tmp, n, seed=seed, shape=shape)
            os.replace(tmp, out)
        _DATA[key] = out
    return _DATA[key]


def ingested(n: int) -> Path:
    """A checkpointed database holding the n generated emails (`ingest --no-enqueue`), made once per run."""
    key = f"ingested-{n}"
    if key not in ARTEFACTS:
        with Home() as home:
            home.run("ingest", str(synthetic(n)), "--no-enqueue")
            out = scratch() / f"{key}.db"
            shutil.copyfile(checkpoint(home.db), out)
        ARTEFACTS[key] = out
    return ARTEFACTS[key]


def mark_phase1_only(db: Path) -> int:
    """What `mailcli analyze --phase 1` marks (without enqueueing): every conversation owes phase 1 only."""
    from mailcli.store.db import Store
    from mailcli.store.lifecycle import mark_for_analysis

    with Store.open(db) as store:
        return mark_for_analysis(store, max_phase=1)


def redis_memory(conn) -> dict[str, int]:
    info = conn.info("memory")
    return {k: int(info[k]) for k in ("used_memory", "used_memory_peak", "used_memory_rss") if k in info}

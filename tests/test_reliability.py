"""Faults cost time, never data: every case ends with each input conversation analysed exactly once.

Real processes throughout: `mailcli ingest`, a supervised pool (`mailcli workers start --burst`),
real redis-servers that are stopped and restarted, an Ollama stand-in that misbehaves, kill -9.
The fast cases (unmarked) run in `make test`; the long ones are `@pytest.mark.slow`
(`make test-reliability`). Random choices use a seeded RNG; every wait is on a condition.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
import synth
from conftest import Home, _stop_embedded, wait_for
from ollama_standin import OllamaStandin
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from mailcli.pool import state
from mailcli.queue.names import RESULTS_STREAM, queue_depths, queue_name
from mailcli.queue.redis_server import EmbeddedRedis

DONE = {"analyzed", "partial"}
REDIS_SERVER = shutil.which("redis-server")


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def ollama():
    """An Ollama stand-in that answers at once (tests turn its fault knobs)."""
    with OllamaStandin(slots=8, seed=3) as server:
        yield server


def make_export(home: Home, n_emails: int, seed: int = 7) -> synth.SynthCounts:
    """A synthetic export of exactly n_emails records, and what ingesting it must give."""
    home.path.mkdir(parents=True, exist_ok=True)
    synth.write_jsonl(home.path / "export.jsonl", n_emails, seed=seed, body_bytes=400)
    return synth.expected_counts(n_emails, seed=seed)


def ingest(home: Home, *extra: str, env: dict | None = None) -> None:
    out = home.run("ingest", str(home.path / "export.jsonl"), *extra, env=env, timeout=300)
    assert out.returncode == 0, out.stderr


def db_rows(home: Home, sql: str, *params):
    conn = sqlite3.connect(f"file:{home.settings().db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def db_value(home: Home, sql: str, *params):
    return db_rows(home, sql, *params)[0][0]


def owed(home: Home) -> int:
    return db_value(home, "SELECT count(*) FROM conversations WHERE status IN ('pending', 'queued')")


def assert_runs_once(home: Home) -> int:
    """No conversation revision was analysed by two jobs (work done twice), and every conversation's
    current revision was analysed by a job whose result landed current. Returns the runs counted."""
    doubled = db_rows(
        home,
        "SELECT conversation_id, revision, group_concat(job_id, ' ') FROM analysis_runs"
        " GROUP BY conversation_id, revision HAVING count(*) > 1",
    )
    assert not doubled, f"{len(doubled)} conversation revisions analysed twice, e.g. {doubled[:3]}"
    unanswered = db_value(
        home,
        "SELECT count(*) FROM conversations c WHERE NOT EXISTS (SELECT 1 FROM analysis_runs r"
        " WHERE r.conversation_id = c.id AND r.revision = c.revision AND r.stale = 0)",
    )
    assert unanswered == 0, f"{unanswered} conversations have no analysis of their current revision"
    return db_value(home, "SELECT count(*) FROM analysis_runs")


def assert_exactly_once(
    home: Home, expected: synth.SynthCounts, conn: redis.Redis | None = None, *, runs_once: bool = True
) -> dict:
    """Every input email and conversation is in SQLite once and analysed once; nothing is owed or in flight.

    ``runs_once`` also checks that no conversation revision was analysed twice: true of every fault
    but the loss of Redis's data (a Redis without persistence restarting), which must redo work."""
    if runs_once:
        assert_runs_once(home)
    q = lambda sql: db_value(home, sql)  # noqa: E731
    emails, conversations = q("SELECT count(*) FROM emails"), q("SELECT count(*) FROM conversations")
    assert (emails, conversations) == (expected.unique_emails, expected.conversations), "ingest lost or doubled input"
    # one analysis row per email and per conversation, each attached to the right conversation
    assert q("SELECT count(*) FROM email_analysis") == emails
    assert q("SELECT count(DISTINCT email_rowid) FROM email_analysis") == emails
    assert q(
        "SELECT count(*) FROM email_analysis ea JOIN emails e ON e.rowid = ea.email_rowid"
        " WHERE ea.conversation_id = e.conversation_id AND ea.phase1 IS NOT NULL"
    ) == emails
    assert q("SELECT count(*) FROM conversation_analysis") == conversations
    assert q(
        "SELECT count(*) FROM conversation_analysis ca JOIN conversations c ON c.id = ca.conversation_id"
    ) == conversations
    statuses = dict(db_rows(home, "SELECT status, count(*) FROM conversations GROUP BY status"))
    assert set(statuses) <= DONE, f"conversations left owed or failed: {statuses}"
    mismatched = q(
        "SELECT count(*) FROM conversations c JOIN conversation_analysis ca ON ca.conversation_id = c.id"
        " WHERE c.status != ca.status"
    )
    assert mismatched == 0
    if conn is not None:
        assert conn.xlen(RESULTS_STREAM) == 0, "results left in Redis, not in SQLite"
        depths = queue_depths(conn)
        assert all(d["queued"] == 0 and d["started"] == 0 for d in depths.values()), depths
    # the export (what users read) has one analysed record per email
    from mailcli.store.db import Store
    from mailcli.store.read import export_records

    with Store.open(home.settings().db, readonly=True) as store:
        records = list(export_records(store))
    assert len(records) == emails and all(r["phase1"] is not None for r in records)
    assert len({(r["conversation_id"], r["id"]) for r in records}) == emails
    return statuses


def stop_proc(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def kill_tree_leftovers(home: Home) -> None:
    """Worker processes of this home still alive (orphans of a killed supervisor): end them."""
    import psutil

    marker = str(home.data)
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if "mailcli.pool.worker" in " ".join(p.info["cmdline"] or []) and (
                (p.info["environ"] or {}).get("MAILCLI_HOME") == marker
            ):
                p.kill()


class Pool:
    """`mailcli workers start ...` in a home; its log (stderr) goes to a file, never to a pipe that fills."""

    def __init__(self, home: Home, args: tuple[str, ...], env: dict | None, n: int):
        self.log_path = home.path / f"pool-{n}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli", "workers", "start", *args],
            cwd=home.path, env={**home.env, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self):
        return self.proc.poll()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def finish(self, timeout: float) -> str:
        """Wait for a burst pool to exit 0; return its log."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the pool did not finish within {timeout}s:\n{self.log()[-4000:]}") from None
        text = self.log()
        assert code == 0, text[-4000:]
        assert "Traceback" not in text, text[-4000:]
        return text

    def stop(self, timeout: float = 20) -> None:
        stop_proc(self.proc, timeout)
        self._log.close()


@contextlib.contextmanager
def pool(home: Home, *args: str, env: dict | None = None):
    """start() runs a pool in `home`; every pool started is stopped and its orphans killed, whatever happens."""
    pools: list[Pool] = []

    def start(*more: str, env2: dict | None = None) -> Pool:
        p = Pool(home, (*args, *more), {**(env or {}), **(env2 or {})}, len(pools) + 1)
        pools.append(p)
        return p

    try:
        yield start
    finally:
        for p in pools:
            p.stop()
        kill_tree_leftovers(home)


def finish(p: Pool, timeout: float) -> str:
    return p.finish(timeout)


def live_workers(conn: redis.Redis, state_: str | None = None) -> list[dict]:
    try:
        ws = [w for w in state.read_workers(conn) if w.get("state") not in ("stopped", None)]
    except redis.RedisError:
        return []
    return [w for w in ws if state_ is None or w.get("state") == state_]


def kill_busy_workers(home: Home, conn: redis.Redis, rng: random.Random, kills: int, proc: Pool,
                      gap: float = 0.3) -> int:  # fmt: skip
    """kill -9 a random busy worker, `kills` times (while the pool runs); returns how many were killed."""
    done = 0
    while done < kills and proc.poll() is None:
        busy = [w for w in live_workers(conn, "busy") if w.get("pool")]
        if not busy or owed(home) == 0:
            time.sleep(0.05)
            if owed(home) == 0:
                break
            continue
        victim = rng.choice(sorted(busy, key=lambda w: w["name"]))
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(victim["pid"]), signal.SIGKILL)
            done += 1
        # let the pool notice before the next kill, so kills keep landing on fresh jobs
        wait_for(lambda v=victim: not any(w["name"] == v["name"] for w in live_workers(conn)) or proc.poll() is not None,
                 timeout=10, what="the supervisor to bury the killed worker")  # fmt: skip
        time.sleep(gap * rng.random())
    return done


# ------------------------------------------------------------------------------------- kill -9 workers


def _kill_workers_case(home: Home, ollama, n_emails: int, kills: int, seed: int, timeout: float, window: int) -> None:
    expected = make_export(home, n_emails, seed=seed)
    ingest(home, "--no-enqueue")  # the pool's feeder enqueues, through its window
    conn = home.redis()
    rng = random.Random(seed)
    env = {"OLLAMA_HOST": ollama.url}
    with pool(home, "--min", "2", "--max", "4", "--burst", "--window", str(window), "--cooldown", "1", env=env) as start:
        proc = start()
        killed = kill_busy_workers(home, conn, rng, kills, proc)
        err = finish(proc, timeout)
    print(f"{killed} workers killed in a run of {expected.conversations} conversations")
    assert killed >= kills * 3 // 4, f"only {killed} of {kills} kills landed"
    assert_exactly_once(home, expected, conn)
    assert "holding job" in err  # the killed workers' jobs were requeued at once, not left to RQ's TTL


def test_kill_9_workers_again_and_again_loses_and_doubles_nothing(home, ollama):
    _kill_workers_case(home, ollama, n_emails=930, kills=3, seed=11, timeout=100, window=60)


@pytest.mark.slow
@pytest.mark.timeout(600)  # the run's own bound (finish's 540 s) is the one that counts
def test_kill_9_workers_throughout_a_5000_conversation_run(home, ollama):
    _kill_workers_case(home, ollama, n_emails=16_300, kills=40, seed=5, timeout=540, window=400)  # 5,009 conversations


# ------------------------------------------------------------------------------------- Redis restarts


def analysed(home: Home) -> int:
    return db_value(home, "SELECT count(*) FROM conversations WHERE status IN ('analyzed', 'partial')")


def _embedded_redis_outage_case(home: Home, ollama, n_emails: int, outages: int, seed: int, timeout: float) -> None:
    expected = make_export(home, n_emails, seed=seed)
    ingest(home, "--no-enqueue")
    ollama.latency = 0.01  # a run long enough to stop Redis in the middle of it
    server = EmbeddedRedis(home.data / "redis")
    with pool(home, "--min", "2", "--max", "3", "--burst", "--window", "40", env={"OLLAMA_HOST": ollama.url}) as start:
        p = start()
        for i in range(outages):
            target = (i + 1) * expected.conversations // (outages + 2)
            wait_for(lambda t=target: analysed(home) >= t or p.poll() is not None, timeout=timeout,
                     what=f"{target} conversations analysed")  # fmt: skip
            pid = server.pid()
            assert server.stop(), "the embedded Redis was not running"
            # nobody but the pool connects now: it must start the server again by itself
            wait_for(lambda pid=pid: server.pid() not in (None, pid), timeout=30, what="the pool to restart Redis")
        text = p.finish(timeout)
    assert "no heartbeat" not in text  # workers were not killed for Redis's outage
    assert_exactly_once(home, expected, home.redis())


@pytest.mark.slow
def test_embedded_redis_stopped_mid_run_is_restarted_by_the_pool_and_the_run_completes(home, ollama):
    _embedded_redis_outage_case(home, ollama, n_emails=300, outages=1, seed=3, timeout=100)


@pytest.mark.slow
def test_embedded_redis_stopped_again_and_again_in_a_long_run(home, ollama):
    _embedded_redis_outage_case(home, ollama, n_emails=4000, outages=5, seed=8, timeout=400)


def test_a_job_popped_by_a_worker_that_died_before_starting_it_is_put_back(home):
    """RQ pops from several queues with BLPOP, which keeps no copy: a worker killed right after the pop
    leaves its job in no list at all, and (without this) a burst run would wait for it for ever."""
    from mailcli.dispatch.feeder import STRANDED_AFTER, Reconciler
    from mailcli.queue.jobs import recover_job

    make_export(home, 90, seed=4)
    ingest(home)
    conn = home.redis()
    depths = queue_depths(conn)
    busiest = max(depths, key=lambda p: depths[p]["queued"])
    key = f"rq:queue:{queue_name(busiest)}"
    assert depths[busiest]["queued"] >= 2
    # a dead worker the supervisor knew held the job: requeued at once, at the front
    first = conn.lpop(key).decode()
    assert recover_job(conn, first) == "requeued"
    assert conn.lindex(key, 0).decode() == first
    # one nobody knew about (killed between the pop and saying so): found by the coordinator's
    # reconciler, once it has stayed popped and unstarted for STRANDED_AFTER seconds (a live worker
    # starts a popped job within milliseconds: seen once, it may be one that is starting)
    second = conn.lpop(key).decode()
    now = [1000.0]
    reconciler = Reconciler(clock=lambda: now[0])
    with home.store() as store:
        reconciler.run(store, conn)
        assert conn.lpos(key, second) is None
        now[0] += STRANDED_AFTER - 1
        reconciler.run(store, conn)
        assert conn.lpos(key, second) is None
        now[0] += 1
        reconciler.run(store, conn)
    assert conn.lpos(key, second) is not None
    assert sum(d["queued"] for d in queue_depths(conn).values()) == sum(d["queued"] for d in depths.values())
    # a job still waiting is left where it is
    assert recover_job(conn, second) == ""


class PrivateRedis:
    """Our own redis-server on a free 127.0.0.1 port (never the machine's shared one), restartable."""

    def __init__(self, directory: Path, *, appendonly: bool, password: str | None = None, extra: tuple = ()):
        assert REDIS_SERVER, "no redis-server on PATH"
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        self.extra = extra
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> PrivateRedis:
        cmd = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes" if self.appendonly else "no", "--save", "", "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"), *self.extra,
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                return self.client().ping()
            except redis.RedisError:
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()[-2000:]
                return False

        wait_for(up, timeout=20, what="the private redis-server to answer")
        return self

    def crash(self) -> None:
        """kill -9: what is not in the append-only file (or everything, without one) is gone."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.crash()


@pytest.fixture
def private_redis(tmp_path):
    servers: list[PrivateRedis] = []

    def make(**kw) -> PrivateRedis:
        s = PrivateRedis(tmp_path / f"redis{len(servers)}", **kw)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.close()


def _private_redis_restart_case(home_dir: Path, private_redis, ollama, *, appendonly: bool, n_emails: int,
                                restarts: int, seed: int, timeout: float) -> None:  # fmt: skip
    server = private_redis(appendonly=appendonly)
    home = Home(home_dir, server.url)
    expected = make_export(home, n_emails, seed=seed)
    ingest(home, "--no-enqueue")
    ollama.latency = 0.01
    # every job in Redis at once and two workers: a crash always loses jobs that wait in the queues
    with pool(home, "--min", "2", "--max", "2", "--burst", "--window", "100000", env={"OLLAMA_HOST": ollama.url}) as start:
        p = start()
        for i in range(restarts):
            target = (i + 1) * expected.conversations // (restarts + 2)
            wait_for(lambda t=target: analysed(home) >= t or p.poll() is not None, timeout=timeout,
                     what=f"{target} conversations analysed")  # fmt: skip
            server.crash()
            time.sleep(0.5)  # an outage, not a sync point: clients see refused connections meanwhile
            server.start()
        text = p.finish(timeout)
    if not appendonly and restarts:
        # everything Redis held was lost: the queued work came back from SQLite
        assert "whose jobs Redis lost" in text or "popped by a worker" in text
    # a crash (kill -9) loses what Redis had not yet written, even with an append-only file
    # (fsync every second): the work it held is done again, so runs are not counted here
    assert_exactly_once(home, expected, server.client(), runs_once=False)


@pytest.mark.skipif(not REDIS_SERVER, reason="no redis-server on PATH")
def test_private_redis_without_persistence_crashes_mid_run_and_sqlite_requeues_what_it_lost(
    tmp_path, private_redis, ollama
):
    _private_redis_restart_case(tmp_path / "home", private_redis, ollama, appendonly=False, n_emails=300,
                                restarts=1, seed=6, timeout=100)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not REDIS_SERVER, reason="no redis-server on PATH")
@pytest.mark.parametrize("appendonly", [False, True], ids=["no-persistence", "appendonly"])
def test_private_redis_crashes_again_and_again_in_a_long_run(tmp_path, private_redis, ollama, appendonly):
    _private_redis_restart_case(tmp_path / "home", private_redis, ollama, appendonly=appendonly, n_emails=4000,
                                restarts=4, seed=12, timeout=400)  # fmt: skip


# ------------------------------------------------------------------------------- kill -9 the supervisor


def kill_supervisor(p: Pool, conn: redis.Redis) -> None:
    """kill -9 a running pool's supervisor while results wait in Redis; its orphaned workers warm-stop."""
    import psutil

    orphans = [int(w["pid"]) for w in live_workers(conn) if w.get("pool")]
    # freeze it first, so results pile up in Redis that its sink has not written to SQLite. The
    # workers may have just finished everything the feeder had handed out (then nothing comes while
    # it is frozen): thaw it and try again until a frozen moment catches results in flight.
    for _ in range(20):
        os.kill(p.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: conn.xlen(RESULTS_STREAM) > 0, timeout=5, what="results waiting in Redis")
            break
        except AssertionError:
            os.kill(p.pid, signal.SIGCONT)
            wait_for(lambda: live_workers(conn, "busy"), timeout=30, what="a worker busy again")
    else:
        raise AssertionError("no results ever waited in Redis while the supervisor was frozen")
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(10)

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # they notice their parent is gone, finish the job in hand and leave
    wait_for(lambda: all(gone(x) for x in orphans), timeout=120, what="the orphaned workers to warm-stop")


def _kill_supervisor_case(home: Home, ollama, n_emails: int, kills: int, seed: int, timeout: float) -> None:
    expected = make_export(home, n_emails, seed=seed)
    ingest(home, "--no-enqueue")
    ollama.latency = 0.01
    conn = home.redis()
    args = ("--min", "2", "--max", "3", "--burst", "--window", "60")
    with pool(home, *args, env={"OLLAMA_HOST": ollama.url}) as start:
        for i in range(kills):
            p = start()
            target = (i + 1) * expected.conversations // (kills + 2)
            wait_for(lambda t=target: analysed(home) >= t and live_workers(conn, "busy"), timeout=timeout,
                     what=f"{target} conversations analysed, with jobs running")  # fmt: skip
            kill_supervisor(p, conn)
        text = start().finish(timeout)
    assert_exactly_once(home, expected, conn)
    return text


@pytest.mark.slow
def test_supervisor_killed_mid_run_and_started_again_completes_the_run(home, ollama):
    _kill_supervisor_case(home, ollama, n_emails=300, kills=1, seed=9, timeout=100)


@pytest.mark.slow
def test_supervisor_killed_again_and_again_in_a_long_run(home, ollama):
    _kill_supervisor_case(home, ollama, n_emails=4000, kills=4, seed=13, timeout=400)


@pytest.mark.slow
def test_redis_stopped_then_supervisor_killed_in_one_run_the_run_completes_exactly_once(home, ollama):
    """The fast version of the two slow cases above: the embedded Redis stopped mid-run (the pool starts it
    again), then the supervisor killed with results waiting in Redis and started again."""
    expected = make_export(home, 300, seed=14)
    ingest(home, "--no-enqueue")
    ollama.latency = 0.01
    server = EmbeddedRedis(home.data / "redis")
    args = ("--min", "2", "--max", "2", "--burst", "--window", "40")
    with pool(home, *args, env={"OLLAMA_HOST": ollama.url}) as start:
        p = start()
        wait_for(lambda: analysed(home) >= expected.conversations // 4, timeout=60, what="a quarter analysed")
        pid = server.pid()
        assert server.stop()
        wait_for(lambda: server.pid() not in (None, pid), timeout=30, what="the pool to restart Redis")
        conn = home.redis()
        wait_for(lambda: analysed(home) >= expected.conversations // 2 and live_workers(conn, "busy"), timeout=60,
                 what="half analysed, with jobs running")  # fmt: skip
        kill_supervisor(p, conn)
        start().finish(90)
    assert_exactly_once(home, expected, conn)


# ------------------------------------------------------------------------------------- Ollama faults


def llm_report(home: Home) -> dict:
    """What the LLM phases left behind: answers by source, attempts per request, owed conversations."""
    sources: dict[str, int] = {}
    for (raw,) in db_rows(home, "SELECT phase2 FROM email_analysis WHERE phase2 IS NOT NULL"):
        answer = json.loads(raw)
        sources[answer["source"]] = sources.get(answer["source"], 0) + 1
        if answer["source"] == "fallback":
            assert answer.get("fallback_reason"), "a fallback must say why"
        else:
            assert answer["source"] == "model" and "fallback_reason" not in answer
    outcomes = dict(db_rows(home, "SELECT outcome, count(*) FROM llm_calls GROUP BY outcome"))
    return {
        "phase2": sources,
        "outcomes": outcomes,
        "max_attempt": db_value(home, "SELECT coalesce(max(attempt), 0) FROM llm_calls"),
        "partial_without_reason": db_value(
            home, "SELECT count(*) FROM conversations WHERE status = 'partial' AND coalesce(error, '') = ''"
        ),
    }


FAULTS = {
    "500s": {"failure_rate": 0.5},
    "invalid-json": {"invalid_output_rate": 0.6},
    "cut-streams": {"cut_stream": 0.5},
    "503-storm": {"slots": 1, "max_queue": 0},
    "mixed": {"failure_rate": 0.15, "invalid_output_rate": 0.3, "cut_stream": 0.15, "slots": 2, "max_queue": 1},
}


def _ollama_faults_case(home: Home, ollama, knobs: dict, n_emails: int, seed: int, rerun: bool = True) -> None:
    expected = make_export(home, n_emails, seed=seed)
    ingest(home)
    ollama.configure(**knobs)
    env = {"OLLAMA_HOST": ollama.url}
    with pool(home, "--min", "3", "--max", "3", "--burst", env=env) as start:
        start().finish(180)
    statuses = assert_exactly_once(home, expected, home.redis())
    report = llm_report(home)
    # retries are bounded: the first call and the one repair, each with the client's 1 + 3 attempts
    assert report["max_attempt"] <= 8, report
    assert report["partial_without_reason"] == 0
    assert sum(report["phase2"].values()) > 0, report  # the faults cost answers, not all of them
    if knobs.get("invalid_output_rate"):
        assert report["phase2"].get("fallback", 0) > 0, report  # marked, never passed off as model output
    # what is still owed is done by a later run, once Ollama behaves: faults cost time, not data
    if statuses.get("partial") and rerun:
        ollama.configure(failure_rate=0, invalid_output_rate=0, cut_stream=0, slots=8, max_queue=0)
        assert home.run("analyze").returncode == 0
        with pool(home, "--min", "2", "--max", "2", "--burst", env=env) as start:
            start().finish(120)
        assert assert_exactly_once(home, expected, home.redis()) == {"analyzed": expected.conversations}


def test_ollama_faults_mixed_cost_time_not_data(home, ollama):
    _ollama_faults_case(home, ollama, FAULTS["mixed"], n_emails=90, seed=21, rerun=False)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["500s", "invalid-json", "cut-streams", "503-storm", "mixed"])
def test_each_ollama_fault_costs_time_not_data(home, ollama, fault):
    _ollama_faults_case(home, ollama, FAULTS[fault], n_emails=600, seed=22)


@pytest.mark.slow
def test_ollama_refusing_connections_leaves_phase_1_and_partial_conversations_that_say_why(home):
    expected = make_export(home, 150, seed=23)
    ingest(home)
    with pool(home, "--min", "2", "--max", "2", "--burst") as start:  # OLLAMA_HOST is a closed port
        start().finish(120)
    statuses = assert_exactly_once(home, expected, home.redis())
    assert statuses.get("partial"), statuses  # conversations owing phase 2 wait for Ollama
    reasons = {r for (r,) in db_rows(home, "SELECT error FROM conversations WHERE status = 'partial'")}
    assert all(r for r in reasons) and any("127.0.0.1:9" in r or "nreachable" in r or "refused" in r for r in reasons), reasons
    assert db_value(home, "SELECT count(*) FROM email_analysis WHERE phase2 IS NOT NULL") == 0


def test_answers_slower_than_the_timeout_are_bounded_and_phase_1_is_kept():
    """The read timeout at the LLM seam (a pool's is 120 s, too long for a test): a hung Ollama costs a
    bounded number of timeouts, then the conversation is partial with its phase 1 intact."""
    from mailcli.analysis.conversations import analyze_conversation
    from mailcli.analysis.llm_phases import OllamaLLMPhases
    from mailcli.llm.client import OllamaClient

    emails = [
        {"rowid": i, "id": f"e{i}", "subject": f"RE: PO 4500012345 urgent #{i}", "from": "a@b.com",
         "importance": "normal", "date": f"2025-03-0{i + 1}",
         "body": "Please ship PO 4500012345 today. The order has been shipped." if i else "Can you quote 40 units?"}
        for i in range(3)
    ]  # fmt: skip
    conv = {"conversation_id": "c1", "revision": 1, "emails": emails, "options": {"all_phases": True}}
    # Every answer would take 10 minutes: only the client's timeouts let the job end (or the test's
    # own timeout fails it).
    with OllamaStandin(hang=1.0, hang_seconds=600.0) as server:
        client = OllamaClient(server.url, read_timeout=0.3, retries=1, backoff_base=0.05, backoff_max=0.1,
                              breaker_threshold=3)  # fmt: skip
        llm = OllamaLLMPhases(client, phase2_model="llama3.2:3b", phase3_model="phi4:14b", max_in_flight=2,
                              phase2_timeout=0.3, phase3_timeout=0.3)  # fmt: skip
        try:
            result = analyze_conversation(conv, llm)
        finally:
            client.close()
    assert result["status"] == "partial" and result["missing"]
    assert all(e["phase1"]["po_numbers"] == ["4500012345"] for e in result["emails"][1:])
    assert all(e["phase2"] is None for e in result["emails"])  # owed, not invented
    assert {c["outcome"] for c in result["llm_calls"]} <= {"retry", "error"}


# ------------------------------------------------------------------------------------------- SQLite


def _reads_during_writes_case(home: Home, ollama, n_emails: int) -> None:
    expected = make_export(home, n_emails, seed=31)
    reads: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def reader(*args: str) -> None:
        while not stop.is_set():
            out = home.run(*args, timeout=120)
            reads.append((args[0], out.returncode, out.stderr))

    with pool(home, "--min", "2", "--max", "3", env={"OLLAMA_HOST": ollama.url}) as start:
        threads = [threading.Thread(target=reader, args=a, daemon=True)
                   for a in (("status", "--json"), ("results", "--json", "--limit", "50"), ("export",))]  # fmt: skip
        # the writers: an ingest (batched inserts) and a pool's sink (a transaction per batch of results)
        ingest_started = threading.Event()
        ingest_thread = threading.Thread(target=lambda: (ingest_started.set(), ingest(home)), daemon=True)
        ingest_thread.start()
        ingest_started.wait(5)
        for t in threads:
            t.start()
        start()
        ingest_thread.join(120)
        wait_for(lambda: db_value(home, "SELECT count(*) FROM conversations") == expected.conversations and owed(home) == 0,
                 timeout=120, what="every conversation analysed")  # fmt: skip
        stop.set()
        for t in threads:
            t.join(120)
    assert_exactly_once(home, expected, home.redis())
    kinds = {k for k, _, _ in reads}
    assert kinds == {"status", "results", "export"}, reads
    bad = [(k, code, err[-300:]) for k, code, err in reads if "locked" in err.lower() or "Traceback" in err]
    assert not bad, bad
    # a read before the first ingest commit may say "no database yet"; every other read succeeded
    failed = [(k, err[-300:]) for k, code, err in reads if code != 0 and "ingest" not in err]
    assert not failed, failed


@pytest.mark.slow
def test_status_results_and_export_read_during_heavy_writes_without_locked_errors(home, ollama):
    _reads_during_writes_case(home, ollama, 6000)


def _results_in_stream(home: Home, conn: redis.Redis) -> int:
    """What workers would have written: one result per conversation, on the results stream."""
    from mailcli.analysis.conversations import analyze_conversation
    from mailcli.dispatch.payloads import conversation_payloads, pending_ids

    with home.store() as store:
        payloads = conversation_payloads(store, pending_ids(store), home.settings())
    for conv in payloads:
        conn.xadd(RESULTS_STREAM, {"job": "job-1", "result": json.dumps(analyze_conversation(conv))})
    return len(payloads)


def test_a_full_database_keeps_every_result_in_redis_until_it_can_be_written(home):
    """SQLITE_FULL (forced with max_page_count): the sink's transaction rolls back, nothing is acknowledged,
    and once there is room every result is applied once."""
    from mailcli.pool.sink import Sink

    expected = make_export(home, 300, seed=32)
    ingest(home, "--no-enqueue")
    conn = home.redis()
    n = _results_in_stream(home, conn)
    assert n == expected.conversations
    with home.store() as store:
        sink = Sink(store, conn, batch=50)
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # not one page more: the disk is full
        assert sink.drain() == 0  # a fresh sink first reads what a predecessor left unacknowledged: none
        for _ in range(3):
            with pytest.raises(sqlite3.OperationalError, match="full"):
                sink.drain()
        assert conn.xlen(RESULTS_STREAM) == n  # nothing acknowledged, nothing dropped
        assert db_value(home, "SELECT count(*) FROM email_analysis") == 0  # nothing half-written
        store.conn.execute("PRAGMA max_page_count = 1073741823")  # space again
        wait_for(lambda: sink.drain() == 0 and conn.xlen(RESULTS_STREAM) == 0, timeout=30,
                 what="the sink to apply what waited")  # fmt: skip
    assert db_value(home, "SELECT count(*) FROM conversation_analysis") == expected.conversations
    assert db_value(home, "SELECT count(*) FROM email_analysis") == expected.unique_emails


@contextlib.contextmanager
def small_disk(size_mb: int):
    """A tmpfs of size_mb (root only); skipped where it cannot be mounted."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="mcfull", dir="/tmp"))
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(where)],
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def fill(path: Path, leave_bytes: int) -> None:
    """Write a ballast file until the filesystem holding `path` has about `leave_bytes` free."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 16)
        todo = max(0, free - leave_bytes)
        while todo > 0:
            try:
                todo -= f.write(chunk[: min(len(chunk), todo)])
            except OSError:
                break


class HomeWithDb(Home):
    """A home whose database lives elsewhere (MAILCLI_DB), e.g. on a small disk."""

    def __init__(self, path: Path, db: Path):
        super().__init__(path, None)
        self.db_path = db

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "MAILCLI_DB": str(self.db_path)}


def test_disk_full_under_a_running_pool_is_a_clear_error_and_loses_nothing(tmp_path, ollama):
    with small_disk(24) as disk:
        home = HomeWithDb(tmp_path / "home", disk / "mailcli.db")
        try:
            expected = make_export(home, 450, seed=33)
            ingest(home, "--no-enqueue")
            ballast = disk / "ballast"
            fill(ballast, leave_bytes=64 * 1024)
            with pool(home, "--min", "2", "--max", "2", "--burst", env={"OLLAMA_HOST": ollama.url}) as start:
                p = start()
                wait_for(lambda: "cannot write" in p.log() or p.poll() is not None, timeout=60,
                         what="the pool to say the disk is full")  # fmt: skip
                assert p.poll() is None, p.log()[-3000:]  # it waits for room: no crash, no giving up
                text = " ".join(p.log().split())
                assert "free disk space (nothing acknowledged is lost)" in text, text[-2000:]
                ballast.unlink()  # room again: the run goes on and completes
                p.finish(120)
            assert_exactly_once(home, expected, home.redis())
        finally:
            _stop_embedded(home.data)


def _ingest_into_a_full_disk(tmp_path: Path, disk: Path):
    home = HomeWithDb(tmp_path / "home", disk / "mailcli.db")
    make_export(home, 300, seed=35)
    ingest(home, "--no-enqueue")
    before = db_value(home, "SELECT count(*) FROM emails")
    synth.write_jsonl(home.path / "more.jsonl", 1200, seed=36, body_bytes=2000)
    ballast = disk / "ballast"
    fill(ballast, leave_bytes=96 * 1024)
    out = home.run("ingest", str(home.path / "more.jsonl"), "--no-enqueue")
    return home, before, ballast, out


@pytest.mark.slow
def test_ingest_into_a_full_disk_fails_and_keeps_what_was_committed_and_resumes(tmp_path):
    with small_disk(16) as disk:
        home, before, ballast, out = _ingest_into_a_full_disk(tmp_path, disk)
        try:
            assert out.returncode != 0
            assert db_value(home, "SELECT count(*) FROM emails") >= before  # nothing committed is lost
            ballast.unlink()
            again = home.run("ingest", str(home.path / "more.jsonl"), "--no-enqueue")
            assert again.returncode == 0, again.stderr
            more = synth.expected_counts(1200, seed=36)
            first = synth.expected_counts(300, seed=35)
            assert db_value(home, "SELECT count(*) FROM emails") == first.unique_emails + more.unique_emails
        finally:
            _stop_embedded(home.data)


@pytest.mark.slow
def test_ingest_into_a_full_disk_says_so_in_one_line_without_a_traceback(tmp_path):
    with small_disk(16) as disk:
        home, _, _, out = _ingest_into_a_full_disk(tmp_path, disk)
        try:
            assert out.returncode != 0
            assert "Traceback" not in out.stderr, out.stderr[-500:]
            assert "free disk space" in out.stderr
        finally:
            _stop_embedded(home.data)


# ---------------------------------------------------------------------------- jobs and workers that misbehave


def count_key(conn: redis.Redis, what: str, key: str) -> int:
    return int(conn.get(f"test:{what}:{key}") or 0)


def test_a_hung_job_times_out_and_is_retried_while_a_long_busy_job_is_not_killed(home):
    """RQ's job timeout ends a hung job (a failure, then a retry) inside a live worker; the supervisor's
    heartbeat check leaves alone a worker that is merely busy for longer than the heartbeat timeout."""
    conn = home.redis()
    with pool(home, "--min", "2", "--max", "2", env={"MAILCLI_HEARTBEAT_TIMEOUT": "2"}) as start:
        p = start()
        first = wait_for(lambda: len(live_workers(conn, "idle")) == 2 and live_workers(conn), what="two idle workers")
        q = Queue(queue_name("high"), connection=conn, serializer=JSONSerializer)
        spin = q.enqueue("jobhelpers.spin", {"id": "s1", "seconds": 3.5}, job_timeout=60)
        hung = q.enqueue("jobhelpers.stuck_once", {"id": "t1"}, job_timeout=2, retry=Retry(max=2, interval=1))

        def finished(job):
            return Job.fetch(job.id, connection=conn, serializer=JSONSerializer).get_status() == "finished"

        wait_for(lambda: finished(spin) and finished(hung), timeout=40, what="both jobs to finish")
        # the hung one: attempt 1 ended by RQ's timeout, the retry (moved back by the supervisor) finished
        assert count_key(conn, "attempts", "t1") == 2 and count_key(conn, "done", "t1") == 1
        worker_logs = "".join(f.read_text() for f in (home.data / "logs").glob("worker-*.log"))
        assert "JobTimeoutException" in worker_logs
        # the busy one ran once, and neither worker was killed or replaced
        assert count_key(conn, "started", "s1") == 1 and count_key(conn, "done", "s1") == 1
        assert sorted(w["pid"] for w in live_workers(conn)) == sorted(w["pid"] for w in first)
        assert "no heartbeat" not in p.log() and "killed" not in p.log()


@pytest.mark.slow
def test_workers_that_crash_on_start_cost_time_until_fixed_then_the_run_completes(home, tmp_path, ollama):
    """Broken worker code (a bad deploy): nothing is analysed, nothing is lost or failed; once fixed, the pool
    (backing off meanwhile) starts workers that finish the run."""
    site = tmp_path / "site"
    site.mkdir()
    flag = tmp_path / "broken"
    flag.touch()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if 'mailcli.pool.worker' in getattr(sys, 'orig_argv', []) and os.path.exists(os.environ['MC_BROKEN']):\n"
        "    sys.stderr.write('ImportError: cannot import name analyze_job (simulated bad deploy)\\n')\n"
        "    sys.stderr.flush()\n"
        "    os._exit(3)\n"
    )
    expected = make_export(home, 150, seed=41)
    ingest(home)
    env = {"MC_BROKEN": str(flag), "OLLAMA_HOST": ollama.url,
           "PYTHONPATH": f"{site}{os.pathsep}{home.env['PYTHONPATH']}"}  # fmt: skip
    conn = home.redis()
    with pool(home, "--min", "2", "--max", "2", "--burst", env=env) as start:
        p = start()
        wait_for(lambda: p.log().count("crashed on start") >= 3, timeout=30, what="three crashes on start")
        assert "simulated bad deploy" in p.log()
        assert analysed(home) == 0 and owed(home) == expected.conversations
        flag.unlink()  # the fix is deployed
        p.finish(90)
    assert_exactly_once(home, expected, conn)


@pytest.mark.slow
def test_workers_recycled_for_memory_after_their_jobs_lose_and_double_nothing(home, ollama):
    conn = home.redis()
    with pool(home, "--min", "1", "--max", "1") as start:  # what an idle worker weighs on this machine
        start()
        idle = wait_for(lambda: [int(w["rss"]) for w in live_workers(conn, "idle") if int(w.get("rss") or 0)],
                        what="an idle worker's RSS")[0]  # fmt: skip
    # a limit an idle worker is under and a working one (LLM client, answers) goes over, far from 1.5 x
    limit_mb = idle / 2**20 + 6
    expected = make_export(home, 450, seed=42)
    ingest(home)
    with pool(home, "--min", "2", "--max", "2", "--burst", "--max-memory", f"{limit_mb:.0f}",
              env={"OLLAMA_HOST": ollama.url}) as start:  # fmt: skip
        text = start(env2={}).finish(120)
    assert "recycling" in text, text[-2000:]
    assert_exactly_once(home, expected, conn)

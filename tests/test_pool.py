"""The supervised pool with real worker processes, real Redis and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from conftest import SAMPLES, TESTS, wait_for
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from mailcli.pool import state
from mailcli.queue.names import queue_depths, queue_name

GOOD = [str(SAMPLES / "graph.jsonl"), str(SAMPLES / "flat.jsonl"), str(SAMPLES / "mbox"), str(SAMPLES / "eml")]


def enqueue(conn, func="jobhelpers.blocked", priority="high", **payload):
    payload.setdefault("id", uuid.uuid4().hex[:10])
    q = Queue(queue_name(priority), connection=conn, serializer=JSONSerializer)
    return q.enqueue(func, payload, job_timeout=120, result_ttl=600), payload["id"]


def release(conn, key):
    conn.rpush(f"test:release:{key}", 1)


def count(conn, what, key) -> int:
    return int(conn.get(f"test:{what}:{key}") or 0)


def workers(conn, pool_only=True):
    return [w for w in state.read_workers(conn) if w.get("state") != "stopped"]


def busy_worker(conn, job_id):
    for w in state.read_workers(conn):
        if w.get("job_id") == job_id and w.get("state") == "busy":
            return w
    return None


def status_of(conn, job_id) -> str:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer).get_status()


def pool_info(conn) -> dict:
    pools = state.read_pools(conn)
    return pools[0] if pools else {}


def wait_rounds(conn, counter: str, n: int, what: str, proc: subprocess.Popen | None = None) -> None:
    """Wait until the pool has done ``n`` more rounds: ``ticks`` (each watches every worker, decides the
    pool's size and, once stopping, each worker's shutdown) or ``feeds`` (feeder rounds); or until
    ``proc``, the pool, has exited (the caller's assertions then say what went wrong)."""
    start = int(pool_info(conn).get(counter) or 0)

    def done() -> bool:
        return int(pool_info(conn).get(counter) or 0) >= start + n or (proc is not None and proc.poll() is not None)

    wait_for(done, what=what)


def stop_pool(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # the supervisor dumps its threads' stacks: why it is stuck
        time.sleep(1)
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"the pool did not stop within {timeout}s:\n{proc.stderr.read()[-6000:]}") from None


@pytest.fixture
def pool(home):
    """Start a pool in `home`; stopped (and checked for tracebacks) at the end."""
    procs = []

    def start(*args, env=None):
        proc = home.popen("workers", "start", *args, env=env)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        stop_pool(p)
        err = p.stderr.read() if p.stderr else ""
        assert "Traceback" not in err, err


def test_killed_worker_job_is_rerun_by_another_worker(any_home):
    """The time from the kill to the job's result is measured by benchmarks/bench_recovery.py."""
    home = any_home
    conn = home.redis()
    proc = home.popen("workers", "start", "--min", "2", "--max", "2")
    try:
        job, key = enqueue(conn)
        # the job function itself running (a worker says "busy" as soon as it has popped a job)
        victim = wait_for(lambda: count(conn, "started", key) == 1 and busy_worker(conn, job.id),
                          what="a worker to take the job")  # fmt: skip
        os.kill(int(victim["pid"]), signal.SIGKILL)
        # the job is taken up again by the other (or a replacement) worker
        wait_for(lambda: count(conn, "started", key) == 2, what="the job to start again")
        release(conn, key)
        wait_for(lambda: status_of(conn, job.id) == "finished", timeout=10, what="the job to finish")
        assert count(conn, "done", key) == 1
        # the dead worker was replaced: two workers again, none of them the victim
        wait_for(lambda: len(workers(conn)) == 2 and all(w["pid"] != victim["pid"] for w in workers(conn)),
                 what="a replacement worker")  # fmt: skip
    finally:
        assert stop_pool(proc) == 0


def test_sigterm_lets_running_job_finish_then_exits(home, pool):
    conn = home.redis()
    proc = pool("--min", "1", "--max", "1", "--timeout", "30")
    job, key = enqueue(conn)
    wait_for(lambda: count(conn, "started", key) == 1 and busy_worker(conn, job.id), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: pool_info(conn).get("state") == "stopping", what="the pool to begin stopping")
    # each tick of a stopping pool decides, for every worker, whether its deadline has passed
    # (verdicts.at_shutdown): ten of them, and the job still runs in the same worker
    wait_rounds(conn, "ticks", 10, what="ten ticks of the stopping pool", proc=proc)
    assert proc.poll() is None and count(conn, "done", key) == 0 and busy_worker(conn, job.id)
    release(conn, key)
    assert proc.wait(20) == 0
    assert status_of(conn, job.id) == "finished"
    assert sum(d["started"] for d in queue_depths(conn).values()) == 0


def test_shutdown_deadline_requeues_running_job_and_leaves_nothing_started(home, pool):
    conn = home.redis()
    proc = pool("--min", "1", "--max", "1", "--timeout", "1")
    job, key = enqueue(conn)
    wait_for(lambda: count(conn, "started", key) == 1 and busy_worker(conn, job.id), what="the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert status_of(conn, job.id) == "queued"
    assert sum(d["started"] for d in queue_depths(conn).values()) == 0
    assert queue_depths(conn)["high"]["queued"] == 1


def test_second_ctrl_c_stops_fast_and_still_requeues(home, pool):
    conn = home.redis()
    proc = pool("--min", "1", "--max", "1", "--timeout", "60")
    job, key = enqueue(conn)
    wait_for(lambda: count(conn, "started", key) == 1 and busy_worker(conn, job.id), what="the job to start")
    proc.send_signal(signal.SIGINT)
    # the first Ctrl-C handled (two at once could reach the handler as one)
    wait_for(lambda: pool_info(conn).get("state") == "stopping", what="the pool to begin stopping")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0  # the running job's --timeout is 60 s: the second Ctrl-C did not wait for it
    assert status_of(conn, job.id) == "queued"
    assert sum(d["started"] for d in queue_depths(conn).values()) == 0


def test_memory_over_limit_recycles_after_the_job(home, pool):
    conn = home.redis()
    pool("--min", "1", "--max", "1", "--max-memory", "150")
    job, key = enqueue(conn, func="jobhelpers.hog", mb=170)  # over 150, under 1.5 x 150
    first = wait_for(lambda: busy_worker(conn, job.id), what="the hog to start")
    wait_for(lambda: count(conn, "started", key) == 1, what="the hog to allocate")
    # over the limit (and under 1.5 x) for five looks of the supervisor: recycled after its job,
    # never killed in it (verdicts.judge)
    wait_rounds(conn, "ticks", 5, what="five looks at the hog")
    assert busy_worker(conn, job.id)["pid"] == first["pid"]
    release(conn, key)
    wait_for(lambda: status_of(conn, job.id) == "finished", what="the hog to finish")
    wait_for(lambda: any(w["pid"] != first["pid"] for w in workers(conn)), what="a fresh worker")
    assert count(conn, "started", key) == 1  # finished once, never killed


def test_memory_over_1_5x_limit_kills_at_once_and_requeues(home, pool):
    conn = home.redis()
    pool("--min", "1", "--max", "1", "--max-memory", "100")
    job, key = enqueue(conn, func="jobhelpers.hog", mb=300, max_seconds=2)
    wait_for(lambda: count(conn, "attempts", key) >= 1, what="the hog to start")
    # killed, requeued, killed again ... and after 3 kills it fails instead of looping forever
    wait_for(lambda: status_of(conn, job.id) == "failed", timeout=60, what="the poisonous job to fail")
    assert count(conn, "attempts", key) == 3 and count(conn, "done", key) == 0
    job = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert "killed 3 times" in job.latest_result().exc_string


def test_memory_limit_below_an_idle_worker_is_raised_to_it_not_recycled_for_ever(home, pool):
    conn = home.redis()
    proc = pool("--min", "1", "--max", "1", "--max-memory", "5")  # an idle worker alone takes ~35 MB
    wait_for(lambda: [p for p in state.read_pools(conn) if float(p.get("max_memory_mb") or 0) > 5],
             what="the pool to raise its limit to an idle worker's RSS")  # fmt: skip
    wait_for(lambda: [w for w in workers(conn) if w["state"] == "idle"], what="an idle worker")
    job, key = enqueue(conn)
    release(conn, key)
    wait_for(lambda: status_of(conn, job.id) == "finished", what="the job to finish")
    assert count(conn, "started", key) == 1  # never killed for the limit
    stop_pool(proc)
    err = " ".join(proc.stderr.read().split())  # the log wraps at the terminal's width
    assert err.count("below what an idle worker takes") == 1, err


def test_worker_without_heartbeat_is_killed_and_replaced(home, pool):
    conn = home.redis()
    pool("--min", "1", "--max", "1", env={"MAILCLI_HEARTBEAT_TIMEOUT": "3"})
    first = wait_for(lambda: [w for w in workers(conn) if w["state"] == "idle"], what="an idle worker")[0]
    os.kill(int(first["pid"]), signal.SIGSTOP)  # alive, but not living
    try:
        wait_for(lambda: any(w["pid"] != first["pid"] and w["state"] == "idle" for w in workers(conn)),
                 timeout=20, what="a replacement for the frozen worker")  # fmt: skip
    finally:
        try:
            os.kill(int(first["pid"]), signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_crash_loop_backs_off_and_says_why(home, pool):
    conn = home.redis()
    env = {"MAILCLI_TEST_WORKER_CRASH": "1", "PYTHONPATH": f"{TESTS / 'crashsite'}{os.pathsep}{home.env['PYTHONPATH']}"}
    proc = pool("--min", "1", "--max", "1", env=env)

    def pool_state():
        pools = state.read_pools(conn)
        return pools[0] if pools and pools[0].get("crash_reason") else None

    info = wait_for(pool_state, timeout=20, what="the crash reason")
    assert "cannot import name 'broken'" in info["crash_reason"]
    # every tick finds the pool below its minimum and would start a worker; backing off 0.5, 1, 2,
    # 4 s ... (verdicts.backoff), only a handful start in 15 ticks (3 s at least), not one a tick
    wait_rounds(conn, "ticks", 15, what="fifteen ticks")
    spawned = len(list((home.data / "logs").glob("worker-*.log")))
    assert spawned <= 6
    stop_pool(proc)
    assert "crashed on start" in proc.stderr.read()


def test_backlog_scales_up_to_max_then_cools_down_to_min(home, pool):
    conn = home.redis()
    pool("--min", "1", "--max", "3", "--cooldown", "1")
    wait_for(lambda: len(workers(conn)) == 1, what="the minimum pool")
    keys = [enqueue(conn)[1] for _ in range(5)]
    wait_for(lambda: len([w for w in workers(conn) if w["state"] == "busy"]) == 3, timeout=15,
             what="three busy workers")  # fmt: skip
    pools = state.read_pools(conn)
    assert "backlog" in pools[0]["decision"]
    assert len(workers(conn)) == 3  # never above max
    for k in keys:
        release(conn, k)
    wait_for(lambda: len(workers(conn)) == 1, timeout=20, what="the pool to cool down to min")


def test_workers_scale_and_stop_from_another_terminal(home, pool):
    conn = home.redis()
    proc = pool("--min", "1", "--max", "1")
    wait_for(lambda: len(workers(conn)) == 1, what="one worker")
    out = home.run("workers", "scale", "3")
    assert out.returncode == 0, out.stderr
    try:
        wait_for(lambda: len(workers(conn)) == 3, what="three workers")
    except AssertionError:
        # say what the pool saw: its workers, its size and decision, its log
        seen = [(w.get("name"), w.get("state")) for w in state.read_workers(conn)]
        pools = [(p.get("min"), p.get("max"), p.get("target"), p.get("current"), p.get("decision"))
                 for p in state.read_pools(conn)]  # fmt: skip
        stop_pool(proc)
        raise AssertionError(f"workers {seen}; pools {pools}; scale said {out.stdout!r};"
                             f" pool log: {proc.stderr.read()[-3000:]}") from None
    out = home.run("workers", "stop", "--timeout", "5")
    assert out.returncode == 0
    assert proc.wait(20) == 0


def test_max_jobs_recycles_worker(home, pool):
    conn = home.redis()
    pool("--min", "1", "--max", "1", "--max-jobs", "2")
    first = wait_for(lambda: workers(conn), what="a worker")[0]
    for _ in range(2):
        job, key = enqueue(conn)
        release(conn, key)
        wait_for(lambda j=job: status_of(conn, j.id) == "finished", what="a job")
    wait_for(lambda: any(w["pid"] != first["pid"] for w in workers(conn)), what="the recycled worker")


def test_burst_analyses_everything_and_exits_0(any_home):
    home = any_home
    assert home.run("ingest", *GOOD).returncode == 0
    proc = home.popen("workers", "start", "--min", "2", "--max", "4", "--burst")
    assert proc.wait(120) == 0, proc.stderr.read()
    rows = json.loads(home.run("results", "--json", "--limit", "1000").stdout)
    assert rows and {r["status"] for r in rows} <= {"analyzed", "partial"}
    records = [json.loads(x) for x in home.run("export").stdout.splitlines()]
    with home.store() as store:
        assert len(records) == store.counts()["emails"]
        assert store.conn.execute("SELECT count(*) FROM email_analysis").fetchone()[0] == len(records)
    assert all(r["phase1"] is not None for r in records)
    conn = home.redis()
    assert conn.xlen("mailcli:results") == 0
    assert sum(sum(d.values()) - d["failed"] for d in queue_depths(conn).values()) == 0


def test_remote_worker_in_another_directory_feeds_the_coordinators_database(home, tmp_path):
    assert home.run("ingest", *GOOD).returncode == 0
    coordinator = home.popen("workers", "start", "--min", "0", "--max", "0")
    socket_path = home.data / "redis" / "redis.sock"
    remote_dir = tmp_path / "elsewhere"
    remote_dir.mkdir()
    env = {**home.env, "REDIS_URL": f"unix://{socket_path}", "MAILCLI_HOME": str(remote_dir / "data")}
    remote = subprocess.Popen(
        [os.sys.executable, "-m", "mailcli", "workers", "start", "--remote", "--min", "1", "--max", "1", "--burst"],
        cwd=remote_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert remote.wait(120) == 0, remote.stderr.read()

        def all_done():
            with home.store() as store:
                return store.counts().get("conversations_pending", 0) == 0 and not store.conn.execute(
                    "SELECT count(*) FROM conversations WHERE status IN ('pending', 'queued')"
                ).fetchone()[0]

        wait_for(all_done, timeout=30, what="the coordinator's database to hold every result")
        assert not (remote_dir / "data" / "mailcli.db").exists()
    finally:
        stop_pool(coordinator)
        stop_pool(remote)


def test_test_loading_passes_with_a_real_worker(any_home):
    proc = any_home.run("test-loading", "--json")
    out = json.loads(proc.stdout)
    checks = {c["name"]: c for c in out["checks"]}
    assert proc.returncode == 0, out
    assert checks["worker"]["ok"] and checks["task code"]["ok"] and checks["missing function"]["ok"]
    assert "no_such_function" in checks["missing function"]["detail"]
    assert checks["ollama"]["required"] is False and checks["ollama"]["ok"] is False  # closed port: a warning


def test_pickled_job_on_our_queue_is_refused_without_running(home, pool):
    from rq.serializers import DefaultSerializer

    conn = home.redis()
    marker = home.path / "pwned"
    q = Queue(queue_name("high"), connection=conn, serializer=DefaultSerializer)
    q.enqueue("os.system", f"touch {marker}")
    pool("--min", "1", "--max", "1")
    wait_for(lambda: queue_depths(conn)["high"]["queued"] == 0, what="the worker to take the job")
    wait_for(lambda: queue_depths(conn)["high"]["failed"] == 1, what="the worker to fail the job")
    assert not marker.exists()


def test_feeder_keeps_at_most_window_conversations_in_redis(home, pool):
    assert home.run("ingest", *GOOD, "--no-enqueue").returncode == 0
    pool("--min", "0", "--max", "0", "--window", "3")  # a coordinator with no workers: nothing drains

    def queued():
        with home.store() as store:
            return store.conn.execute("SELECT count(*) FROM conversations WHERE status = 'queued'").fetchone()[0]

    wait_for(lambda: queued() == 3, what="the feeder to fill its window")
    conn = home.redis()
    jobs = sum(d["queued"] for d in queue_depths(conn).values())
    convs = sum(len(Job.fetch(j, connection=conn, serializer=JSONSerializer).meta["conversations"])
                for p in ("critical", "high", "medium", "low")
                for j in Queue(queue_name(p), connection=conn, serializer=JSONSerializer).job_ids)  # fmt: skip
    assert 1 <= jobs <= 3 and convs == 3
    wait_rounds(conn, "feeds", 3, what="three more feeder rounds")
    assert queued() == 3  # still no more than the window


def test_reload_restarts_workers_when_source_changes(home, pool):
    import mailcli

    conn = home.redis()
    pool("--min", "1", "--max", "1", "--reload")
    first = wait_for(lambda: [w for w in workers(conn) if w["state"] == "idle"], what="an idle worker")[0]
    src = os.path.join(os.path.dirname(mailcli.__file__), "__init__.py")
    st = os.stat(src)
    os.utime(src, (st.st_atime, time.time() + 5))
    try:
        wait_for(lambda: any(w["pid"] != first["pid"] and w["state"] == "idle" for w in workers(conn)),
                 timeout=20, what="a worker running the changed code")  # fmt: skip
    finally:
        os.utime(src, (st.st_atime, st.st_mtime))

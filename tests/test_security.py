"""Nothing in a queue or an email can take over a worker; secrets and email text stay where they belong.

- jobs are JSON and name a mailcli task: a pickled job, a JSON job naming any other function, a job
  with callbacks, an unreadable job hash are refused without running anything, and the worker lives on;
- a foreign entry on the results stream can not stall the sink;
- the embedded Redis listens on no TCP port, in a private directory; REDIS_URL passwords and rediss://
  work and are never printed or logged;
- the data directory and database are private; logs at the default level hold no email text.
(Prompt injection: tests/test_llm_phases.py::test_prompt_injection_stays_data and its neighbours.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis
from conftest import SAMPLES, Home, _stop_embedded, wait_for
from rq import Callback, Queue
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

from mailcli.queue.names import RESULTS_STREAM, queue_name
from mailcli.queue.redis_server import EmbeddedRedis

GOOD = [str(SAMPLES / "graph.jsonl"), str(SAMPLES / "flat.jsonl"), str(SAMPLES / "mbox"), str(SAMPLES / "eml")]
REDIS_SERVER = shutil.which("redis-server")
OPENSSL = shutil.which("openssl")


# ------------------------------------------------------------------------------------ hostile jobs


class _Boom:
    """Unpickling this runs a shell command: what a pickled job could do to a worker that unpickles."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Worker:
    """One pool worker process, started exactly as the supervisor starts it, on our real queues."""

    def __init__(self, home: Home, env: dict | None = None):
        self.log_path = home.path / "worker.log"
        self.home = home
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli.pool.worker", "--name", "mailcli.test.hostile", "--pool", "test"],
            cwd=home.path, env={**home.env, **(env or {})}, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def worker(home):
    started: list[Worker] = []

    def start(env: dict | None = None) -> Worker:
        w = Worker(home, env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def status(conn, job_id: str) -> str | None:
    raw = conn.hget(f"rq:job:{job_id}", "status")
    return raw.decode() if raw else None


def test_hostile_jobs_on_our_queue_are_refused_without_running_and_the_worker_lives_on(home, worker):
    conn = home.redis()
    markers = {name: home.path / name for name in ("unpickled", "pickled-call", "json-call", "callback")}
    high = queue_name("high")
    pickled = Queue(high, connection=conn, serializer=DefaultSerializer)
    as_json = Queue(high, connection=conn, serializer=JSONSerializer)
    jobs = {
        # RQ's default serializer: its payload runs a command the moment anything unpickles it
        "pickled": pickled.enqueue("os.system", _Boom(markers["unpickled"]), f"touch {markers['pickled-call']}"),
        # JSON, but naming a function that is not a mailcli task
        "json-call": as_json.enqueue("os.system", f"touch {markers['json-call']}"),
        # a mailcli task with a callback: callbacks are names too, and are never imported
        "callback": as_json.enqueue("mailcli.queue.tasks.echo_check", {"x": 1}, on_success=Callback("jobhelpers.touch_marker"),
                                    on_failure=Callback("jobhelpers.touch_marker")),  # fmt: skip
        # an object method with an instance: refused as well
        "instance": as_json.enqueue("os.system", "true"),
    }
    conn.hset(f"rq:job:{jobs['instance'].id}", "instance", json.dumps("abc"))
    # a job hash RQ can not even read, and after all of them an honest job
    conn.hset("rq:job:unreadable", mapping={"data": b"{}", "status": "no-such-status", "origin": high})
    conn.rpush(f"rq:queue:{high}", "unreadable")
    honest = as_json.enqueue("mailcli.queue.tasks.echo_check", {"echo": "still here"})

    w = worker(env={"MAILCLI_TEST_MARKER": str(markers["callback"])})
    wait_for(lambda: status(conn, honest.id) == "finished", timeout=30, what="the honest job after the hostile ones")
    assert w.proc.poll() is None, w.log()  # the same worker process, still running
    assert not [m.name for m in markers.values() if m.exists()], "a hostile job ran code"
    for name in ("pickled", "json-call", "instance"):
        assert status(conn, jobs[name].id) == "failed", name
    assert status(conn, jobs["callback"].id) == "finished"  # the task ran; its callbacks did not
    log = w.log()
    assert "DeserializationError" in log and "is not a mailcli task" in log
    assert "dropped job unreadable" in log
    result = Job.fetch(honest.id, connection=conn, serializer=JSONSerializer).return_value()
    assert result["echo"] == {"echo": "still here"}


@pytest.mark.slow
def test_a_pool_fed_hostile_jobs_does_not_crash_loop(home):
    """The same hostile jobs before a real pool: it works through them without a crash or a backoff."""
    conn = home.redis()
    high = queue_name("high")
    for _ in range(3):
        Queue(high, connection=conn, serializer=DefaultSerializer).enqueue("os.system", "true")
        conn.hset("rq:job:junk", mapping={"data": b"{}", "status": "bogus", "origin": high})
        conn.rpush(f"rq:queue:{high}", "junk")
    assert home.run("ingest", *GOOD).returncode == 0
    proc = home.popen("workers", "start", "--min", "1", "--max", "1", "--burst")
    try:
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    assert proc.returncode == 0, err[-3000:]
    assert "crashed on start" not in err and "died" not in err, err[-3000:]
    assert len(list((home.data / "logs").glob("worker-*.log"))) == 1  # one worker did it all
    with home.store() as store:
        owed = store.conn.execute("SELECT count(*) FROM conversations WHERE status IN ('pending', 'queued')")
        assert owed.fetchone()[0] == 0


def test_a_foreign_entry_on_the_results_stream_is_dropped_and_the_rest_applied(home):
    from mailcli.analysis.conversations import analyze_conversation
    from mailcli.dispatch.payloads import conversation_payloads, pending_ids
    from mailcli.pool.sink import Sink

    assert home.run("ingest", str(SAMPLES / "flat.jsonl"), "--no-enqueue").returncode == 0
    conn = home.redis()
    with home.store() as store:
        payloads = conversation_payloads(store, pending_ids(store), home.settings())
        good = [analyze_conversation(c) for c in payloads]
        conn.xadd(RESULTS_STREAM, {"job": "x", "result": json.dumps(good[0])})
        conn.xadd(RESULTS_STREAM, {"job": "x", "result": json.dumps({"conversation_id": "evil", "emails": 5})})
        conn.xadd(RESULTS_STREAM, {"job": "x", "result": "not json"})
        bad_rowid = {**good[1], "emails": [{**good[1]["emails"][0], "rowid": 10**9}]}
        conn.xadd(RESULTS_STREAM, {"job": "x", "result": json.dumps(bad_rowid)})
        for r in good[1:]:
            conn.xadd(RESULTS_STREAM, {"job": "x", "result": json.dumps(r)})
        sink = Sink(store, conn)
        wait_for(lambda: sink.drain() == 0 and conn.xlen(RESULTS_STREAM) == 0, timeout=20,
                 what="the sink to get past the foreign entries")  # fmt: skip
        done = store.conn.execute("SELECT count(*) FROM conversation_analysis").fetchone()[0]
    assert done == len(good)


# ------------------------------------------------------------------------------------------ Redis


def test_embedded_redis_has_no_tcp_port_and_a_private_socket_directory(home):
    conn = home.redis()
    assert conn.config_get("port")["port"] == "0"
    server = EmbeddedRedis(home.data / "redis")
    proc = psutil.Process(server.pid())
    assert not [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert stat.S_IMODE(os.stat(server.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) & 0o077 == 0
    assert conn.config_get("unixsocketperm")["unixsocketperm"] == "700"


def _tls_files(where: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    where.mkdir(parents=True, exist_ok=True)
    f = {k: where / f"{k}.pem" for k in ("ca", "ca-key", "cert", "key")}
    run = lambda *a: subprocess.run([OPENSSL, *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mailcli test CA",
        "-keyout", str(f["ca-key"]), "-out", str(f["ca"]))  # fmt: skip
    csr = where / "server.csr"
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(f["key"]), "-out", str(csr))
    ext = where / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(f["ca"]), "-CAkey", str(f["ca-key"]), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(f["cert"]))  # fmt: skip
    return f


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def secret_redis(tmp_path):
    """Our own redis-server with a password, on rediss:// (TLS) when this redis-server supports it."""
    if not REDIS_SERVER:
        pytest.skip("no redis-server on PATH")
    password = "s3cr3t-Pa55-" + os.urandom(6).hex()
    port = _free_port()
    cmd = [REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
           "--requirepass", password, "--logfile", str(tmp_path / "redis.log")]  # fmt: skip
    tls = None
    if OPENSSL:
        tls = _tls_files(tmp_path / "tls")
        cmd += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls["cert"]),
                "--tls-key-file", str(tls["key"]), "--tls-ca-cert-file", str(tls["ca"]), "--tls-auth-clients", "no"]  # fmt: skip
    else:
        cmd += ["--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kw = {"ssl": True, "ssl_ca_certs": str(tls["ca"])} if tls else {}
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5, **kw)

    def up():
        if proc.poll() is not None:
            log = (tmp_path / "redis.log").read_text() if (tmp_path / "redis.log").exists() else ""
            pytest.skip(f"this redis-server can not serve TLS here: {log[-300:]}")
        try:
            return client.ping()
        except redis.RedisError:
            return False

    wait_for(up, timeout=20, what="the password-protected redis-server")
    scheme = "rediss" if tls else "redis"
    query = f"?ssl_ca_certs={tls['ca']}" if tls else ""
    yield {"url": f"{scheme}://:{password}@127.0.0.1:{port}/0{query}", "password": password, "client": client,
           "tls": bool(tls), "bad_url": f"{scheme}://:wrong-{password[::-1]}@127.0.0.1:{port}/0{query}"}  # fmt: skip
    proc.kill()
    proc.wait(10)


def test_redis_password_over_tls_works_and_is_never_printed_or_logged(tmp_path, secret_redis):
    home = Home(tmp_path / "home", secret_redis["url"])
    home.path.mkdir()
    password = secret_redis["password"]
    try:
        outputs = []
        for args in (("ingest", str(SAMPLES / "flat.jsonl")), ("status", "--debug"),
                     ("workers", "start", "--min", "1", "--max", "1", "--burst")):  # fmt: skip
            out = home.run(*args, timeout=120)
            outputs.append(out.stdout + out.stderr)
            assert out.returncode == 0, (args, out.stderr[-2000:])
        assert secret_redis["client"].dbsize() > 0  # the work really went through this server
        assert "***@127.0.0.1" in outputs[1]  # status names the server, with the password hidden
        # a wrong password: exit 4, one clear line, and neither password in it
        bad = Home(tmp_path / "home", secret_redis["bad_url"]).run("status", "--json")
        assert bad.returncode == 4 and "Traceback" not in bad.stderr, bad.stderr
        outputs.append(bad.stdout + bad.stderr)
        logs = [p.read_text(errors="replace") for p in (home.data).rglob("*") if p.is_file() and p.suffix == ".log"]
        leaks = [text[:200] for text in outputs + logs if password in text or password[::-1] in text]
        assert not leaks, leaks
        # nor on a worker's command line (ps shows it to every user)
        for p in psutil.process_iter(["cmdline"]):
            assert password not in " ".join(p.info["cmdline"] or [])
    finally:
        _stop_embedded(home.data)


# ------------------------------------------------------------------------------------ files and logs


def assert_private(data: Path) -> None:
    """Nothing under the data directory is open to other users: directories 0700, files without group or
    other bits (the database, its WAL, logs, Redis's append-only file)."""
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    exposed = [
        f"{p.relative_to(data)} {oct(stat.S_IMODE(p.stat().st_mode))}"
        for p in [data, *data.rglob("*")]
        if not p.is_socket() and stat.S_IMODE(p.stat().st_mode) & 0o077
    ]
    assert not exposed, exposed


def _sample_secrets() -> set[str]:
    """Subjects and distinctive body lines of the samples: none may reach a log at the default level."""
    from mailcli.ingest.readers import Email, iter_many

    texts: set[str] = set()
    for rec in iter_many(GOOD):
        if isinstance(rec, Email):
            if len(rec.subject.strip()) >= 12:
                texts.add(rec.subject.strip())
            texts.update(line.strip() for line in rec.body.splitlines() if len(line.strip()) >= 30)
    return texts


def test_no_email_text_in_logs_at_the_default_level_and_every_file_is_private(home):
    """A pool on the samples (and a canary), with an Ollama that fails half the time so warnings and
    fallbacks are logged too, run under a permissive umask (022) as a user's shell would."""
    from ollama_standin import OllamaStandin

    canary = {"id": "canary-1", "conversation_id": "canary", "subject": "CANARY-SUBJECT-7781 urgent PO 4500012345",
              "body": "CANARY-BODY-9932 the order has been shipped, escalate today", "from": "x@example.com",
              "date": "2025-03-04T10:00:00Z"}  # fmt: skip
    (home.path / "canary.jsonl").write_text(json.dumps(canary) + "\n")

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailcli", *args], cwd=home.path, env={**home.env, **(env or {})},
                              capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))  # fmt: skip

    assert run("ingest", *GOOD, str(home.path / "canary.jsonl")).returncode == 0
    with OllamaStandin(failure_rate=0.3, invalid_output_rate=0.3, cut_stream=0.2, seed=5) as ollama:
        pool = run("workers", "start", "--min", "2", "--max", "2", "--burst", env={"OLLAMA_HOST": ollama.url})
    assert pool.returncode == 0, pool.stderr[-2000:]
    logs = {str(p): p.read_text(errors="replace") for p in (home.data / "logs").glob("*.log")}
    logs["pool output"] = pool.stderr + pool.stdout
    secrets = _sample_secrets() | {"CANARY-SUBJECT-7781", "CANARY-BODY-9932"}
    assert len(secrets) > 50
    leaks = {where: [s for s in secrets if s in text][:3] for where, text in logs.items()}
    assert not any(leaks.values()), leaks
    assert_private(home.data)

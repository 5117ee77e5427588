"""Shared fixtures: a private mailcli home, real Redis servers (embedded and external), helpers to run
the CLI as a user would and to wait on conditions (never on bare sleeps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TESTS = Path(__file__).resolve().parent
EXTERNAL_URL = os.environ.get("MAILCLI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# tests on the machine's Redis use a database number of their own (per test session, so two sessions
# on one machine do not flush each other's data), flushed before each test
EXTERNAL_TEST_DB = int(os.environ.get("MAILCLI_TEST_REDIS_DB", 1 + os.getpid() % 15))

sys.path.insert(0, str(TESTS))  # ollama_standin, jobhelpers


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    """Poll `cond` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def external_redis_url() -> str | None:
    base = EXTERNAL_URL.rsplit("/", 1)[0] if EXTERNAL_URL.count("/") > 2 else EXTERNAL_URL
    url = f"{base}/{EXTERNAL_TEST_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return None
    return url


class Home:
    """A mailcli working directory with its own data dir, and a way to run the CLI in it."""

    def __init__(self, path: Path, redis_url: str | None):
        self.path = path
        self.data = path / "data"
        self.redis_url = redis_url

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("REDIS_URL", "MAILCLI_DB", "OLLAMA_HOST", "MAILCLI_DEBUG"):
            env.pop(var, None)
        env["MAILCLI_HOME"] = str(self.data)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
        env["COLUMNS"] = "160"
        # pool tests run job functions of tests/jobhelpers.py; workers refuse any other non-mailcli task
        env["MAILCLI_TASK_MODULES"] = "jobhelpers"
        # a closed port: no test ever reaches a real Ollama by accident
        env["OLLAMA_HOST"] = "http://127.0.0.1:9"
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def settings(self, **overrides):
        from mailcli.config import load_settings

        env = {k: v for k, v in self.env.items() if k.startswith(("MAILCLI_", "REDIS_URL", "OLLAMA_"))}
        return load_settings(cwd=self.path, env=env, **overrides)

    def run(self, *args: str, input: str | None = None, timeout: float = 120, env: dict | None = None):
        return subprocess.run(
            [sys.executable, "-m", "mailcli", *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "mailcli", *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    def redis(self) -> redis.Redis:
        from mailcli.redis_conn import connect

        return connect(self.settings())

    def store(self):
        from mailcli.store.db import Store

        return Store.open(self.settings().db)


def _stop_embedded(data: Path) -> None:
    from mailcli.queue.redis_server import EmbeddedRedis

    rdir = data / "redis"
    if rdir.exists():
        try:
            EmbeddedRedis(rdir).stop()
        except Exception:
            pass


@pytest.fixture
def home() -> Iterator[Home]:
    """A home on the embedded Redis (started on first use, stopped at the end)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mc"))
    h = Home(path, None)
    try:
        yield h
    finally:
        _stop_embedded(h.data)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["embedded", "external"])
def any_home(request) -> Iterator[Home]:
    """The same test on the embedded Redis and on the machine's Redis (REDIS_URL), when it runs."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mc"))
    url = None
    if request.param == "external":
        url = external_redis_url()
        if url is None:
            shutil.rmtree(path, ignore_errors=True)
            pytest.skip("no Redis at MAILCLI_TEST_REDIS_URL")
        redis.Redis.from_url(url).flushdb()
    h = Home(path, url)
    try:
        yield h
    finally:
        if url:
            redis.Redis.from_url(url).flushdb()
        _stop_embedded(h.data)
        shutil.rmtree(path, ignore_errors=True)

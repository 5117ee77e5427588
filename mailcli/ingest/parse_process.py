"""A second process that parses JSONL chunks while the main process writes SQLite.

Both ends live here. The main process holds a :class:`ParseProcess`: it hands chunks over with
:meth:`~ParseProcess.submit` and takes the results back, in the same order, with
:meth:`~ParseProcess.result`. The child runs :func:`main` (``python -m mailcli.ingest.parse_process
FD``, FD one end of a socket pair): a fresh interpreter that imports the parsers and nothing of the
caller, so it never re-runs the caller's script (as multiprocessing's spawn does) nor inherits a
lock that another thread held (as fork can).

No deadlock, whatever the sizes: a thread in the child takes every chunk off the socket as it
arrives, so handing a chunk over never waits on the child finishing a result; the caller bounds
how many chunks are in flight, which bounds the child's memory.

The child ignores Ctrl-C (the main process handles it and closes the socket, which ends the
child), and its stderr goes to a private temporary file, so a crash shows as one line
(:class:`ChildProcessError`, with the last line the child wrote), never as a traceback.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from typing import Any

_READY = "ready"

log = logging.getLogger(__name__)


class ParseProcess:
    """The main process's handle on one parse process (start it with ``with``)."""

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair()
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "mailcli.ingest.parse_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        finally:
            theirs.close()
        self._ready = False
        self._unusable = False

    def ready(self) -> bool:
        """True once the child has started (its imports take ~0.1-0.2 s). Never waits. False for
        good if it died before it was ready (a broken environment): nothing was handed to it, so
        that is no error, and the caller parses itself."""
        if not self._ready and not self._unusable and select.select([self._sock], [], [], 0)[0]:
            try:
                self._receive()  # the child's first message says it is up
            except ChildProcessError as exc:
                log.debug("%s: parsing in the main process", exc)
                self._unusable = True
                return False
            self._ready = True
        return self._ready

    def submit(self, chunk: Any) -> None:
        try:
            send(self._sock, chunk)
        except OSError:  # a broken pipe: the child is gone
            raise self._died() from None

    def result(self) -> Any:
        """The result for the oldest chunk submitted and not yet taken back (waits for it)."""
        if not self._ready:
            self._receive()
            self._ready = True
        ok, value = self._receive()
        if ok:
            return value
        exc, remote_traceback = value
        raise exc from RemoteTraceback(remote_traceback)

    def close(self) -> None:
        """Stop the child: it sees the end of its input (and a result nobody takes fails to send),
        so it exits within one chunk's parsing time; killed if it does not."""
        self._sock.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> ParseProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _receive(self) -> Any:
        try:
            return receive(self._sock)
        except (EOFError, OSError):
            raise self._died() from None

    def _died(self) -> ChildProcessError:
        # an OSError: the CLI shows it as one red line and exits 1
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read()[-4000:].decode("utf-8", "replace").splitlines() if line.strip()]
        said = f": {lines[-1].strip()}" if lines else ""
        return ChildProcessError(
            f"the ingest's parse process stopped ({how}{said}); run the same command again to finish:"
            " what was stored is kept and skipped as duplicates"
        )


# --------------------------------------------------------------------------------------------
# Messages: a length, then a pickle. Received with MSG_WAITALL, so that a message of megabytes
# arrives in one system call without the GIL, whatever the receiving process's other thread does.
# --------------------------------------------------------------------------------------------


def send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(len(data).to_bytes(8, "little"))
    sock.sendall(data)


def receive(sock: socket.socket) -> Any:
    size = int.from_bytes(_receive_exactly(sock, 8), "little")
    return pickle.loads(_receive_exactly(sock, size))


def _receive_exactly(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:  # more than once only when a signal interrupts the wait
        n = sock.recv_into(view[got:], size - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return buf


def _child_env() -> dict[str, str]:
    """This environment, with the mailcli this process runs first on the path: the child parses
    with the same code, whatever the caller did to sys.path."""
    import mailcli

    root = os.path.dirname(os.path.dirname(os.path.abspath(mailcli.__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the parse process, as its cause."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


# --------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    from mailcli.ingest.run import parse_batch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    chunks: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_take_all, args=(sock, chunks), daemon=True).start()
    send(sock, _READY)
    while (chunk := chunks.get()) is not None:
        try:
            reply = (True, parse_batch(chunk))
        except Exception as exc:  # noqa: BLE001 - handed to the main process, which raises it
            reply = (False, (_picklable(exc), traceback.format_exc()))
        try:
            send(sock, reply)
        except OSError:  # the main process is gone
            return


def _take_all(sock: socket.socket, chunks: queue.SimpleQueue) -> None:
    """Move every chunk off the socket as soon as it arrives; None at the end of the input."""
    try:
        while True:
            chunks.put(receive(sock))
    except (EOFError, OSError):
        chunks.put(None)


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


if __name__ == "__main__":
    main(sys.argv[1:])
    os._exit(0)  # nothing to flush: skip tearing down the heap, which the main process waits on

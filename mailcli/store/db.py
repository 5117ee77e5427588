"""Opening the SQLite store: private files, WAL, migrations."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mailcli.private import make_private_dir
from mailcli.store.schema import SCHEMA_VERSION, current_version, migrate


class StoreError(Exception):
    """The database cannot be opened or written (permissions, full disk, newer schema)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken with BEGIN IMMEDIATE: the write lock is held from the first
    statement, so every read inside it sees the state the writes are based on (a deferred
    transaction would read first and only then wait for the lock, deciding on stale data).

    Nested use joins the outer transaction. Commits on success, rolls back on any exception.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        # inside the try: a COMMIT that fails (a full disk, a deferred constraint) leaves SQLite's
        # transaction open, and the next write_transaction would join it instead of beginning
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def connect(db_path: Path, *, readonly: bool = False, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection with the pragmas every mailcli process uses. Readers never block the writer (WAL).

    The connection is in autocommit mode (``isolation_level=None``): a statement outside
    :func:`write_transaction` commits on its own, and a transaction starts only where the code
    says BEGIN IMMEDIATE, never implicitly at some first write.
    """
    if readonly:
        if not db_path.exists():
            raise StoreError(f"no database at {db_path}: run `mailcli ingest FILE` first")
        conn = _connect_readonly(db_path, timeout)
    else:
        # a directory another user owns cannot be made private: whether it can be written decides
        try:
            make_private_dir(db_path.parent)
        except OSError as exc:  # cannot be created: under a file, on a read-only or virtual filesystem
            raise StoreError(
                f"cannot use the data directory {db_path.parent}: {exc.strerror or exc}; set MAILCLI_HOME"
                " (or data_dir in mailcli.toml) to a directory you can write"
            ) from None
        if not os.access(db_path.parent, os.W_OK) or (db_path.exists() and not os.access(db_path, os.W_OK)):
            raise StoreError(
                f"cannot write {db_path}: the data directory is read-only; make it writable"
                f" (chmod u+w {db_path.parent}) or point MAILCLI_HOME at a writable one"
            )
        old_umask = os.umask(0o077)
        try:
            conn = sqlite3.connect(db_path, timeout=timeout, check_same_thread=False, isolation_level=None)
        finally:
            os.umask(old_umask)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot open {db_path}: {exc}") from None
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-32768")  # 32 MB: bounded whatever the export's size
    return conn


def _connect_readonly(db_path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection. In a directory this user cannot write (its owner made it read-only,
    a read-only mount), SQLite cannot create the WAL's shared-memory file that readers use, so the
    file is opened as immutable instead: no locks, no WAL, which is right where nobody can write."""
    conn = sqlite3.connect(
        f"file:{db_path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False, isolation_level=None
    )
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(db_path.parent, os.W_OK):
            raise
    return sqlite3.connect(
        f"file:{db_path}?mode=ro&immutable=1", uri=True, timeout=timeout, check_same_thread=False,
        isolation_level=None,
    )  # fmt: skip


class Store:
    """The SQLite file: one writer (ingest, or the pool's sink), any number of readers."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, db_path: Path, *, readonly: bool = False) -> Store:
        try:
            conn = connect(db_path, readonly=readonly)
            if readonly:
                # an older schema is brought up to date where the directory is writable, and read
                # as it is where it is not (every later step only adds); a newer one is refused
                version = current_version(conn)
                if version > SCHEMA_VERSION:
                    conn.close()
                    raise StoreError(_newer(db_path, version))
                if version < SCHEMA_VERSION and os.access(db_path.parent, os.W_OK):
                    conn.close()
                    writer = connect(db_path)
                    try:
                        migrate(writer)
                    finally:
                        writer.close()
                    conn = connect(db_path, readonly=True)
                elif version == 0:
                    conn.close()
                    raise StoreError(
                        f"{db_path} holds no mailcli database yet: run `mailcli ingest FILE` first"
                    )
            else:
                migrate(conn)
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc):
                raise StoreError(
                    f"cannot write {db_path}: {exc}; make the data directory and the database writable"
                ) from None
            raise StoreError(f"cannot use database {db_path}: {exc}") from None
        except RuntimeError as exc:  # a schema newer than this mailcli
            raise StoreError(str(exc)) from None
        except PermissionError as exc:
            raise StoreError(
                f"cannot open {db_path}: {exc.strerror}; check the directory's permissions"
            ) from None
        return cls(conn, db_path)

    def write(self):
        """``with store.write():`` one BEGIN IMMEDIATE transaction (see :func:`write_transaction`)."""
        return write_transaction(self.conn)

    @property
    def schema_version(self) -> int:
        return current_version(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- small shared queries -------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        q = self.conn.execute
        out = {
            "emails": q("SELECT count(*) FROM emails").fetchone()[0],
            "conversations": q("SELECT count(*) FROM conversations").fetchone()[0],
            "rejects": q("SELECT count(*) FROM rejects").fetchone()[0],
        }
        for status, n in q("SELECT status, count(*) FROM conversations GROUP BY status"):
            out[f"conversations_{status}"] = n
        return out


def _newer(db_path: Path, version: int) -> str:
    return (
        f"{db_path} has schema version {version}, newer than this mailcli ({SCHEMA_VERSION}): upgrade mailcli"
    )

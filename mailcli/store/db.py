"""Opening the SQLite store: private files, WAL, migrations."""

from __future__ import annotations

import functools
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mailcli.store.schema import SCHEMA_VERSION, current_version, migrate

if TYPE_CHECKING:
    import sqlite_utils


class StoreError(Exception):
    """The database cannot be opened or written (permissions, full disk, newer schema)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents we create) readable by the owner only: these are people's emails."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    if path in missing or path.exists():
        # an existing data dir is tightened too; other users must not read the database
        try:
            os.chmod(path, 0o700)
        except PermissionError:
            pass


def connect(db_path: Path, *, readonly: bool = False, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection with the pragmas every mailcli process uses. Readers never block the writer (WAL)."""
    if readonly:
        if not db_path.exists():
            raise StoreError(f"no database at {db_path}: run `mailcli ingest FILE` first")
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
    else:
        make_private_dir(db_path.parent)
        old_umask = os.umask(0o077)
        try:
            conn = sqlite3.connect(db_path, timeout=timeout, check_same_thread=False)
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


class Store:
    """The SQLite file: one writer (ingest, or the pool's sink), any number of readers."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, made on first use: importing sqlite_utils costs
        ~45 ms that readers such as `mailcli status` (plain sqlite3) never need."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    @classmethod
    def open(cls, db_path: Path, *, readonly: bool = False) -> Store:
        try:
            conn = connect(db_path, readonly=readonly)
            if readonly:
                version = current_version(conn)
                if version != SCHEMA_VERSION:
                    conn.close()
                    conn = connect(db_path)
                    migrate(conn)
            else:
                migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot use database {db_path}: {exc}") from None
        except PermissionError as exc:
            raise StoreError(f"cannot open {db_path}: {exc.strerror}; check the directory's permissions") from None
        return cls(conn, db_path)

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

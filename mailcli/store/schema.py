"""SQLite schema and its migrations. One numbered step per change; never edit a released step."""

from __future__ import annotations

import re
import sqlite3

MIGRATIONS: list[str] = [
    # 1: foundation
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);

    CREATE TABLE emails (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL,                    -- the export record's id: the input's id, else the Message-ID
        dedupe_key TEXT NOT NULL UNIQUE,
        message_id TEXT,
        source_id TEXT,
        source_conversation_id TEXT,
        conversation_id TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        from_addr TEXT NOT NULL DEFAULT '',
        from_name TEXT NOT NULL DEFAULT '',
        date TEXT,
        in_reply_to TEXT,
        refs TEXT,                           -- JSON list of normalized Message-IDs
        importance TEXT NOT NULL DEFAULT 'normal',
        has_attachments INTEGER NOT NULL DEFAULT 0,
        notes TEXT,                          -- JSON list, e.g. a trimmed body
        source TEXT NOT NULL,
        locator TEXT NOT NULL,
        ingested_at TEXT NOT NULL
    );
    CREATE INDEX emails_conversation ON emails (conversation_id, date);
    CREATE INDEX emails_public_id ON emails (id);

    CREATE TABLE recipients (
        email_rowid INTEGER NOT NULL REFERENCES emails (rowid) ON DELETE CASCADE,
        kind TEXT NOT NULL,                  -- to | cc | bcc
        address TEXT NOT NULL
    );
    CREATE INDEX recipients_email ON recipients (email_rowid);

    -- thread keys (Message-IDs, References, source conversation ids) -> conversation: the id table
    -- of JWZ threading, persisted so later exports join existing threads.
    CREATE TABLE thread_keys (key TEXT PRIMARY KEY, conversation_id TEXT NOT NULL) WITHOUT ROWID;
    CREATE INDEX thread_keys_conversation ON thread_keys (conversation_id);

    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL DEFAULT '',
        email_count INTEGER NOT NULL DEFAULT 0,
        first_date TEXT,
        last_date TEXT,
        status TEXT NOT NULL DEFAULT 'pending',   -- pending | queued | analyzed | partial | failed
        priority TEXT,                            -- highest phase 1 priority once analysed
        queue_priority TEXT,                      -- forced by `ingest --priority`
        want_all_phases INTEGER NOT NULL DEFAULT 0,
        force INTEGER NOT NULL DEFAULT 0,         -- analyze --reanalyze: ignore cached LLM answers
        max_phase INTEGER NOT NULL DEFAULT 3,     -- analyze --phase N
        revision INTEGER NOT NULL DEFAULT 0,      -- bumped when emails join: a stale job's result re-pends
        queued_at TEXT,
        job_id TEXT,                              -- the RQ job holding it while queued
        error TEXT,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX conversations_status ON conversations (status);

    CREATE TABLE rejects (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        locator TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (source, locator, reason)
    );

    CREATE TABLE email_analysis (
        email_rowid INTEGER PRIMARY KEY REFERENCES emails (rowid) ON DELETE CASCADE,
        conversation_id TEXT NOT NULL,
        phase1 TEXT NOT NULL,                -- JSON, the export record's phase1
        priority TEXT NOT NULL,
        phase2 TEXT,                         -- JSON incl. source, model, prompt_version
        phase2_key TEXT,                     -- model|prompt_version|input_hash: what phase 2 answered
        analyzed_at TEXT NOT NULL
    );
    CREATE INDEX email_analysis_conversation ON email_analysis (conversation_id);

    CREATE TABLE conversation_analysis (
        conversation_id TEXT PRIMARY KEY,
        completeness INTEGER NOT NULL,
        is_complete INTEGER NOT NULL,
        tier INTEGER NOT NULL,
        detail TEXT,                         -- JSON: completeness reasons, phase plan
        phase3 TEXT,
        phase3_key TEXT,
        status TEXT NOT NULL,
        job_id TEXT,
        analyzed_at TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE llm_calls (
        id INTEGER PRIMARY KEY,
        call_key TEXT NOT NULL UNIQUE,       -- idempotency: a result delivered twice records once
        conversation_id TEXT,
        email_rowid INTEGER,
        phase INTEGER NOT NULL,
        model TEXT NOT NULL,
        prompt_version TEXT NOT NULL,
        input_hash TEXT NOT NULL,
        host TEXT,
        duration_ms REAL,
        prompt_eval_count INTEGER,
        eval_count INTEGER,
        done_reason TEXT,
        http_status INTEGER,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX llm_calls_created ON llm_calls (created_at);
    """,
    # 2: `mailcli status` counts phase 2 results and their fallbacks from this partial index, which
    # holds only the emails that have a phase 2 result; without it the count reads every
    # email_analysis row (24-34 ms at 100,000 emails, against 0-7 ms with it; docs/metrics.md "Cost").
    """
    CREATE INDEX email_analysis_phase2_source ON email_analysis (json_extract(phase2, '$.source'))
        WHERE phase2 IS NOT NULL;
    """,
    # 3: which job analysed which revision of a conversation: the audit trail of the work done (a
    # revision analysed by two jobs is work done twice), written with the result it describes
    """
    CREATE TABLE analysis_runs (
        conversation_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        stale INTEGER NOT NULL,              -- 1: the conversation had a newer revision when it landed
        applied_at TEXT NOT NULL,
        PRIMARY KEY (conversation_id, revision, job_id)
    ) WITHOUT ROWID;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it started at.

    All the missing steps run in one BEGIN IMMEDIATE transaction that also reads the version, so
    two processes starting at once on a fresh data directory take turns (the second finds the work
    done), and a process killed half-way leaves the database as it was. Every CREATE is written
    IF NOT EXISTS, which repairs a database an older mailcli left half-created (it ran the steps
    statement by statement and wrote the version last).
    """
    start = current_version(conn)
    if start == SCHEMA_VERSION:
        return start
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = current_version(conn)
        if start > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {start} is newer than this mailcli ({SCHEMA_VERSION}): upgrade mailcli"
            )
        for version in range(start + 1, SCHEMA_VERSION + 1):
            for statement in _split(MIGRATIONS[version - 1]):
                conn.execute(_if_not_exists(statement))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    conn.execute("COMMIT")
    return start


_CREATE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\s+(?!IF\s+NOT\s+EXISTS)", re.IGNORECASE)


def _if_not_exists(statement: str) -> str:
    """``CREATE TABLE x`` -> ``CREATE TABLE IF NOT EXISTS x`` (and indexes the same)."""
    return _CREATE.sub(lambda m: f"CREATE {m.group(1) or ''}{m.group(2)} IF NOT EXISTS ", statement, count=1)


def _split(script: str) -> list[str]:
    """Statements of a migration, so each runs inside the migration's one transaction."""
    out, buf = [], []
    for line in script.splitlines():
        code = line.split("--", 1)[0]
        buf.append(code)
        if code.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out

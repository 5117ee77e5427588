"""Two mailcli commands at once on one data directory lose nothing and do no work twice.

Each case starts real processes together, round after round with varied start offsets, and ends
with counts from the SQLite file: every email stored once and analysed, every conversation
threaded as it would be one command after the other, and (from `analysis_runs`, the audit of which
job analysed which revision) no conversation revision analysed by two jobs. The fast cases run in
`make test`; the many-round versions are `@pytest.mark.slow` (`make test-reliability`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import synth
from conftest import Home, _stop_embedded, wait_for
from test_reliability import (  # noqa: F401 - private_redis is a fixture
    assert_exactly_once,
    assert_runs_once,
    db_rows,
    db_value,
    make_export,
    owed,
    pool,
    private_redis,
)

# start offsets (seconds) of the second command: together, and staggered across the first's run
OFFSETS = (0.0, 0.03, 0.08, 0.15, 0.25, 0.4)


@pytest.fixture
def homes() -> Iterator[callable]:
    """make() gives a fresh home per round; all are cleaned up at the end."""
    made: list[Home] = []

    def make() -> Home:
        h = Home(Path(tempfile.mkdtemp(dir="/tmp", prefix="mcc")), None)
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            _stop_embedded(h.data)
            shutil.rmtree(h.path, ignore_errors=True)


def popen(home: Home, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mailcli", *args],
        cwd=home.path, env={**home.env, **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def together(home: Home, first: tuple, second: tuple, offset: float, timeout: float = 120) -> list[tuple]:
    """Run two commands, the second `offset` seconds after the first; [(code, stdout, stderr)] of each."""
    a = popen(home, *first)
    if offset:
        # the offset is this case's input (where in the first command's run the second lands), not a wait
        import time

        time.sleep(offset)
    b = popen(home, *second)
    out = []
    for p in (a, b):
        so, se = p.communicate(timeout=timeout)
        out.append((p.returncode, so, se))
    return out


def assert_clean(results: list[tuple]) -> None:
    for code, _so, se in results:
        assert code == 0, f"exit {code}:\n{se[-3000:]}"
        assert "Traceback" not in se, se[-3000:]


def write_replies(src: Path, dst: Path) -> int:
    """Another mailbox's export: one reply to the last email of every conversation in ``src``, with
    the reply's own source conversation id (so only In-Reply-To/References can thread it)."""
    last: dict[str, dict] = {}
    for line in src.read_text().splitlines():
        rec = json.loads(line)
        last[rec["conversation_id"]] = rec
    with dst.open("w") as f:
        for i, (_conv, rec) in enumerate(sorted(last.items())):
            reply = {
                "id": f"reply-{i}",
                "conversation_id": f"other-mailbox-{i}",
                "subject": "Re: " + rec["subject"],
                "body": "Thanks, noted. We will confirm by Friday.",
                "from": rec["to"][0] if rec.get("to") else "someone@example.com",
                "to": [rec["from"]],
                "date": "2026-06-01T10:00:00+00:00",
                "message_id": f"<reply.{i}@other.example>",
                "in_reply_to": rec["message_id"],
                "references": [*rec.get("references", []), rec["message_id"]],
            }
            f.write(json.dumps(reply) + "\n")
    return len(last)


# ------------------------------------------------------------------------------------------ schema


def test_a_half_created_database_is_repaired_not_refused(tmp_path):
    """An older mailcli created the schema statement by statement and wrote its version last: a
    process killed in between left tables but no version. Every such prefix opens and is completed."""
    from mailcli.store.db import Store
    from mailcli.store.schema import MIGRATIONS, SCHEMA_VERSION, _split

    statements = _split(MIGRATIONS[0])
    fresh = tmp_path / "fresh.db"
    Store.open(fresh).close()
    want = _schema(fresh)
    for k in range(1, len(statements) + 1):
        db = tmp_path / f"half-{k}.db"
        conn = sqlite3.connect(db, isolation_level=None)
        for stmt in statements[:k]:
            conn.execute(stmt)
        conn.close()
        with Store.open(db) as store:
            assert store.schema_version == SCHEMA_VERSION
        assert _schema(db) == want, f"after {k} of {len(statements)} statements"


def _schema(db: Path) -> set:
    conn = sqlite3.connect(db)
    try:
        return {(t, n) for t, n in conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


def test_a_migration_is_one_transaction(tmp_path):
    """A failing step leaves the database exactly as it was (no table without its version row)."""
    from mailcli.store import schema
    from mailcli.store.db import connect

    db = tmp_path / "m.db"
    conn = connect(db)
    broken = [*schema.MIGRATIONS[:1], "CREATE TABLE analysis_runs (x);\nCREATE TABLE oops (;"]
    saved = schema.MIGRATIONS[:]
    try:
        schema.MIGRATIONS[:] = broken
        schema.SCHEMA_VERSION = len(broken)
        with pytest.raises(sqlite3.OperationalError):
            schema.migrate(conn)
        assert schema.current_version(conn) == 0
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        schema.MIGRATIONS[:] = saved
        schema.SCHEMA_VERSION = len(saved)
        conn.close()


def test_two_commands_on_a_fresh_data_directory_at_once(homes):
    """Both create the schema at once: one waits for the other's transaction; both do their work."""
    for offset in OFFSETS[:3]:
        h = homes()
        h.path.mkdir(exist_ok=True)
        a, b = h.path / "a.jsonl", h.path / "b.jsonl"
        synth.write_jsonl(a, 40, seed=1, body_bytes=200)
        synth.write_jsonl(b, 40, seed=2, body_bytes=200)
        results = together(h, ("ingest", str(a), "--no-enqueue"), ("ingest", str(b), "--no-enqueue"), offset)
        assert_clean(results)
        want = synth.expected_counts(40, seed=1).unique_emails + synth.expected_counts(40, seed=2).unique_emails
        assert db_value(h, "SELECT count(*) FROM emails") == want, f"offset {offset}"


def test_killed_while_creating_the_schema_leaves_a_usable_database(homes):
    """kill -9 of the very first command at varied moments: the next command always opens the database."""
    import time

    for delay in (0.15, 0.25, 0.35, 0.45, 0.6):
        h = homes()
        h.path.mkdir(exist_ok=True)
        synth.write_jsonl(h.path / "e.jsonl", 30, seed=3, body_bytes=200)
        p = popen(h, "ingest", str(h.path / "e.jsonl"), "--no-enqueue")
        time.sleep(delay)  # where the kill lands is this round's input
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        out = h.run("ingest", str(h.path / "e.jsonl"), "--no-enqueue")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert db_value(h, "SELECT count(*) FROM emails") == synth.expected_counts(30, seed=3).unique_emails


# ------------------------------------------------------------------------------------------ ingest


def _create_schema(h: Home) -> None:
    """The database made by one command first (an ingest of an empty export)."""
    empty = h.path / "empty.jsonl"
    empty.write_text("")
    out = h.run("ingest", str(empty), "--no-enqueue")
    assert out.returncode == 0, out.stderr


def test_two_ingests_of_the_same_file_at_once_store_each_email_once(homes):
    for offset in OFFSETS[:4]:
        h = homes()
        expected = make_export(h, 3000, seed=21)
        f = str(h.path / "export.jsonl")
        _create_schema(h)
        results = together(h, ("ingest", f, "--no-enqueue"), ("ingest", f, "--no-enqueue"), offset)
        assert_clean(results)
        assert db_value(h, "SELECT count(*) FROM emails") == expected.unique_emails
        assert db_value(h, "SELECT count(*) FROM conversations") == expected.conversations


def _export_and_replies_case(homes, offsets, n_emails: int) -> None:
    for offset in offsets:
        h = homes()
        expected = make_export(h, n_emails, seed=22)
        n_replies = write_replies(h.path / "export.jsonl", h.path / "replies.jsonl")
        for first, second in (("export", "replies"), ("replies", "export")):
            h.data.exists() and shutil.rmtree(h.data)
            _create_schema(h)  # this case is about threading; two at once on a fresh directory is another
            results = together(
                h, ("ingest", str(h.path / f"{first}.jsonl"), "--no-enqueue"),
                ("ingest", str(h.path / f"{second}.jsonl"), "--no-enqueue"), offset,
            )  # fmt: skip
            assert_clean(results)
            emails = db_value(h, "SELECT count(*) FROM emails")
            conversations = db_value(h, "SELECT count(*) FROM conversations")
            assert (emails, conversations) == (expected.unique_emails + n_replies, expected.conversations), (
                f"{first} then {second} at +{offset}s: threads split"
            )


def test_an_export_and_another_mailboxs_replies_ingested_at_once_thread_together(homes):
    _export_and_replies_case(homes, OFFSETS[::2], n_emails=4000)


@pytest.mark.slow
def test_an_export_and_replies_ingested_at_once_many_rounds(homes):
    _export_and_replies_case(homes, (*OFFSETS, 0.05, 0.1, 0.2, 0.3, 0.5), n_emails=4000)


# ------------------------------------------------------------------------------------------ analysis


def test_replies_ingested_under_a_running_pool_are_all_analysed_once(homes):
    """Continuous ingestion: a pool works while replies to its conversations arrive."""
    _replies_under_pool_case(homes, (0.03, 0.4), n_emails=1500)


@pytest.mark.slow
def test_replies_ingested_under_a_running_pool_many_rounds(homes):
    _replies_under_pool_case(homes, (*OFFSETS, 0.6, 0.9), n_emails=6000)


def _replies_under_pool_case(homes, offsets, n_emails: int) -> None:
    import time

    for offset in offsets:
        h = homes()
        expected = make_export(h, n_emails, seed=23)
        n_replies = write_replies(h.path / "export.jsonl", h.path / "replies.jsonl")
        out = h.run("ingest", str(h.path / "export.jsonl"), "--no-enqueue")
        assert out.returncode == 0, out.stderr
        with pool(h, "--min", "2", "--max", "2", "--window", "200") as start:
            p = start()
            wait_for(lambda h=h: db_value(h, "SELECT count(*) FROM analysis_runs") > 0, timeout=60, what="work started")
            time.sleep(offset)  # where in the run the replies land is this round's input
            out = h.run("ingest", str(h.path / "replies.jsonl"), "--no-enqueue")
            assert out.returncode == 0, out.stderr
            wait_for(lambda h=h: owed(h) == 0, timeout=120, what="everything analysed")
            p.stop()
        _assert_all_analysed(h, expected.unique_emails + n_replies, expected.conversations)


def _assert_all_analysed(h: Home, emails: int, conversations: int) -> None:
    assert db_value(h, "SELECT count(*) FROM emails") == emails
    assert db_value(h, "SELECT count(*) FROM conversations") == conversations
    missing = db_value(
        h, "SELECT count(*) FROM emails e LEFT JOIN email_analysis ea ON ea.email_rowid = e.rowid"
        " WHERE ea.email_rowid IS NULL OR ea.conversation_id != e.conversation_id"
    )  # fmt: skip
    assert missing == 0, f"{missing} emails never analysed"
    orphans = db_value(
        h, "SELECT count(*) FROM conversation_analysis ca LEFT JOIN conversations c ON c.id = ca.conversation_id"
        " WHERE c.id IS NULL"
    )  # fmt: skip
    assert orphans == 0
    statuses = dict(db_rows(h, "SELECT status, count(*) FROM conversations GROUP BY status"))
    assert set(statuses) <= {"analyzed", "partial"}, statuses
    assert_runs_once(h)


def test_analyze_inline_while_replies_are_ingested_leaves_nothing_pending(homes):
    for offset in (0.0, 0.3):
        h = homes()
        expected = make_export(h, 1500, seed=24)
        n_replies = write_replies(h.path / "export.jsonl", h.path / "replies.jsonl")
        out = h.run("ingest", str(h.path / "export.jsonl"), "--no-enqueue")
        assert out.returncode == 0, out.stderr
        inline = popen(h, "analyze", "--inline", "--phase", "1")
        import time

        time.sleep(offset)  # the round's input: where in the inline run the replies land
        out = h.run("ingest", str(h.path / "replies.jsonl"), "--no-enqueue")
        ingest_done = time.monotonic()
        so, se = inline.communicate(timeout=180)
        inline_done = time.monotonic()
        assert inline.returncode == 0 and "Traceback" not in se, se
        if ingest_done < inline_done and owed(h):
            # the ingest committed its last batch before inline's last claim only if it ended well
            # before; a batch committed after inline found nothing pending is the next run's
            again = h.run("analyze", "--inline", "--phase", "1")
            assert again.returncode == 0, again.stderr
        assert owed(h) == 0
        _assert_all_analysed(h, expected.unique_emails + n_replies, expected.conversations)


def test_two_burst_pools_on_one_data_directory_analyse_each_conversation_once(homes):
    _two_burst_pools_case(homes, OFFSETS[:2])


@pytest.mark.slow
def test_two_burst_pools_on_one_data_directory_many_rounds(homes):
    _two_burst_pools_case(homes, (*OFFSETS, 0.6, 0.9))


def _two_burst_pools_case(homes, offsets) -> None:
    for offset in offsets:
        h = homes()
        expected = make_export(h, 1200, seed=25)
        assert h.run("ingest", str(h.path / "export.jsonl"), "--no-enqueue").returncode == 0
        args = ("workers", "start", "--min", "1", "--max", "2", "--burst", "--window", "150")
        results = together(h, args, args, offset, timeout=180)
        assert_clean(results)
        assert_exactly_once(h, expected)
        assert db_value(h, "SELECT count(*) FROM analysis_runs") == expected.conversations


def test_an_ingest_that_enqueues_beside_a_running_pool_does_no_work_twice(homes):
    _ingest_beside_pool_case(homes, (0.15,))


@pytest.mark.slow
def test_an_ingest_that_enqueues_beside_a_running_pool_many_rounds(homes):
    _ingest_beside_pool_case(homes, OFFSETS)


def _ingest_beside_pool_case(homes, offsets) -> None:
    for offset in offsets:
        h = homes()
        expected = make_export(h, 1500, seed=26)
        with pool(h, "--min", "2", "--max", "2", "--window", "300") as start:
            p = start()
            wait_for(lambda p=p: p.log().strip(), timeout=30, what="the pool up")
            import time

            time.sleep(offset)
            out = h.run("ingest", str(h.path / "export.jsonl"))  # its own feeder enqueues too
            assert out.returncode == 0, out.stderr
            wait_for(lambda h=h: owed(h) == 0, timeout=120, what="everything analysed")
            p.stop()
        assert_exactly_once(h, expected)
        assert db_value(h, "SELECT count(*) FROM analysis_runs") == expected.conversations


def test_start_up_reconcile_under_cpu_load_requeues_nothing(homes):
    """The documented flow (ingest, then a burst pool) with the CPU busy elsewhere: the pool's first
    reconcile sees its own workers finish and pop jobs, and must not call any of them lost."""
    _reconcile_under_load_case(homes, (27,))


@pytest.mark.slow
def test_start_up_reconcile_under_cpu_load_many_rounds(homes):
    _reconcile_under_load_case(homes, (28, 29, 30, 31, 32))


def _reconcile_under_load_case(homes, seeds) -> None:
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        for seed in seeds:
            h = homes()
            expected = make_export(h, 1500, seed=seed)
            assert h.run("ingest", str(h.path / "export.jsonl")).returncode == 0
            with pool(h, "--min", "2", "--max", "2", "--burst") as start:
                text = start().finish(240)
            assert "Redis lost" not in text and "died before starting" not in text, text[-3000:]
            assert_exactly_once(h, expected)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# ------------------------------------------------------------------------------------------ Redis gone


def test_the_embedded_redis_socket_removed_under_a_pool_is_said_and_recovered(homes):
    """A /tmp cleaner removes the socket of the embedded Redis while a pool runs: connections made
    before still work, new ones fail. The pool says so in one line naming Redis and restarts the
    server on a new socket, and the run completes, every conversation analysed once."""
    h = homes()
    expected = make_export(h, 1500, seed=29)
    assert h.run("ingest", str(h.path / "export.jsonl"), "--no-enqueue").returncode == 0
    sock = h.data / "redis" / "redis.sock"
    with pool(h, "--min", "2", "--max", "2", "--burst", "--window", "100") as start:
        p = start()
        wait_for(lambda: db_value(h, "SELECT count(*) FROM analysis_runs") > 20, timeout=60, what="work started")
        sock.rename(sock.with_name("moved.sock"))
        wait_for(lambda: "socket" in p.log() and "removed" in p.log(), timeout=15, what="the pool to say so")
        text = p.finish(180)
    assert "was removed while its server" in text
    assert_exactly_once(h, expected)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server on PATH")
def test_a_pool_whose_redis_is_gone_for_good_says_so_once_and_exits_4(tmp_path, private_redis):  # noqa: F811
    """An external Redis killed and not restarted: one line naming Redis and the fix within seconds,
    and exit 4 once MAILCLI_REDIS_OUTAGE_LIMIT has passed (not a pool waiting silently for ever)."""
    server = private_redis(appendonly=False)
    h = Home(tmp_path / "home", server.url)
    make_export(h, 300, seed=31)
    assert h.run("ingest", str(h.path / "export.jsonl"), "--no-enqueue").returncode == 0
    with pool(h, "--min", "1", "--max", "1", env={"MAILCLI_REDIS_OUTAGE_LIMIT": "3"}) as start:
        p = start()
        wait_for(lambda: db_value(h, "SELECT count(*) FROM analysis_runs") > 0, timeout=60, what="work started")
        server.crash()
        wait_for(lambda: "is unreachable" in p.log(), timeout=15, what="the line naming Redis")
        code = p.proc.wait(60)
        text = p.log()
    assert code == 4, text[-3000:]
    assert text.count("is unreachable") == 1, text[-3000:]
    assert "fix REDIS_URL" in text and "has been unreachable for 3 s" in text


def test_status_says_when_the_embedded_redis_lost_its_socket(home):
    from mailcli.queue.redis_server import EmbeddedRedis

    server = EmbeddedRedis(home.data / "redis")
    server.ensure()
    server.socket_path.unlink()
    out = home.run("status", "--json")
    assert out.returncode == 4, out.stdout + out.stderr
    snap = json.loads(out.stdout)
    assert "socket" in snap["redis"]["error"] and "removed" in snap["redis"]["error"]
    # any command that needs Redis restarts it on a new socket, from its append-only file
    out = home.run("workers", "scale", "2")
    assert server.is_running()


# ------------------------------------------------------------------------------------------ read-only


def test_read_only_commands_work_on_a_read_only_data_directory(home):
    """The owner made the data directory read-only (chmod 500): results, export and status read it;
    ingest says in one line that it cannot write, and the mode stays as the owner set it."""
    make_export(home, 200, seed=30)
    assert home.run("ingest", str(home.path / "export.jsonl"), "--no-enqueue").returncode == 0
    assert home.run("analyze", "--inline", "--phase", "1").returncode == 0
    home.run("status")  # whatever it says, it leaves no embedded Redis behind to write the directory
    _stop_embedded(home.data)
    as_user = _unprivileged(home)
    os.chmod(home.data, 0o500)
    os.chmod(home.data / "mailcli.db", 0o400)
    try:
        for args in (("results", "--limit", "5"), ("export", "-o", "-"), ("status", "--json")):
            out = _run_as(home, as_user, *args)
            assert "readonly" not in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
            assert out.returncode in (0, 4), (args, out.returncode, out.stderr)  # status: 4 = no Redis
        out = _run_as(home, as_user, "export", "-o", "-")
        assert len(out.stdout.splitlines()) == db_value(home, "SELECT count(*) FROM emails")
        out = _run_as(home, as_user, "ingest", str(home.path / "export.jsonl"))
        assert out.returncode == 1 and "read-only" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert (home.data.stat().st_mode & 0o777) == 0o500
    finally:
        os.chmod(home.data, 0o700)
        os.chmod(home.data / "mailcli.db", 0o600)


def _unprivileged(home: Home) -> list[str]:
    """As root, permissions do not bind: run the commands with the capabilities that bypass them
    dropped (capsh), as the owner of a read-only directory would be. Nothing to do for another user."""
    if os.geteuid() != 0:
        return []
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.skip("running as root without capsh (libcap2-bin): cannot make permissions bind")
    return [capsh, "--drop=cap_dac_override,cap_dac_read_search,cap_fowner", "--", "-c"]


def _run_as(home: Home, prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    import shlex

    cmd = [sys.executable, "-m", "mailcli", *args]
    full = [*prefix, shlex.join(cmd)] if prefix else cmd
    return subprocess.run(full, cwd=home.path, env=home.env, capture_output=True, text=True, timeout=60)

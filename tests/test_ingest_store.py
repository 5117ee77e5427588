"""Ingest into a real SQLite file: dedupe, threading into conversations, merges, rejects, privacy."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mailcli.ingest.model import Email, Reject
from mailcli.ingest.writer import IngestWriter, base_subject
from mailcli.store.db import Store


def mail(i: str, **kw) -> Email:
    kw.setdefault("subject", f"subject {i}")
    kw.setdefault("body", f"body {i}")
    return Email(source="t.jsonl", locator=f"line {i}", **kw)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "data" / "mailcli.db")
    yield s
    s.close()


def conversations(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cid, eid in store.conn.execute("SELECT conversation_id, id FROM emails ORDER BY rowid"):
        out.setdefault(cid, []).append(eid)
    return out


def test_data_dir_and_database_are_private(store, tmp_path):
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "mailcli.db").st_mode) & 0o077 == 0


def test_a_private_directory_is_made_so_whatever_the_umask_and_never_gains_a_bit(tmp_path):
    """The one rule for the database's, the embedded Redis's and the logs' directories."""
    from mailcli.private import make_private_dir

    old = os.umask(0o022)
    try:
        assert make_private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    assert make_private_dir(shared) and stat.S_IMODE(shared.stat().st_mode) == 0o700
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    os.chmod(read_only, 0o555)
    assert make_private_dir(read_only) and stat.S_IMODE(read_only.stat().st_mode) == 0o500


def test_database_uses_wal_and_records_schema_version(store):
    from mailcli.store.schema import SCHEMA_VERSION

    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION


def test_reply_joins_thread_by_in_reply_to_without_a_conversation_id(store):
    w = IngestWriter(store)
    w.add_emails([mail("a", message_id="a@x"), mail("b", message_id="b@x", in_reply_to="a@x")])
    assert list(conversations(store).values()) == [["a@x", "b@x"]]


def test_reply_with_another_source_conversation_id_joins_its_thread(store):
    w = IngestWriter(store)
    w.add_emails([mail("a", source_id="1", message_id="a@x", source_conversation_id="CONV-A")])
    # arrives later, in another batch, under another conversation id: References win
    w.add_emails(
        [mail("b", source_id="2", message_id="b@x", source_conversation_id="CONV-Z", references=["a@x"])]
    )
    convs = conversations(store)
    assert list(convs.values()) == [["1", "2"]]
    assert list(convs) == ["CONV-A"]


def test_email_linking_two_conversations_merges_them(store):
    w = IngestWriter(store)
    w.add_emails([mail("a", message_id="a@x"), mail("c", message_id="c@x")])
    assert len(conversations(store)) == 2
    w.add_emails([mail("d", message_id="d@x", references=["a@x", "c@x"])])
    convs = conversations(store)
    assert len(convs) == 1 and sorted(next(iter(convs.values()))) == ["a@x", "c@x", "d@x"]
    assert store.conn.execute("SELECT count(*) FROM conversations").fetchone()[0] == 1
    assert store.conn.execute("SELECT email_count FROM conversations").fetchone()[0] == 3


def test_same_export_twice_adds_nothing(store):
    emails = [mail(str(i), message_id=f"{i}@x") for i in range(5)]
    w = IngestWriter(store)
    w.add_emails(emails)
    before = store.conn.execute("SELECT revision FROM conversations ORDER BY id").fetchall()
    w2 = IngestWriter(store)
    w2.add_emails([mail(str(i), message_id=f"<{i}@X>".lower().strip("<>")) for i in range(5)])
    assert (w2.counts.ingested, w2.counts.duplicates) == (0, 5)
    assert not w2.counts.touched
    assert store.conn.execute("SELECT revision FROM conversations ORDER BY id").fetchall() == before


@pytest.mark.parametrize(
    "first, second, duplicate",
    [
        (dict(message_id="m@x"), dict(message_id="m@x"), True),
        (dict(message_id="m@x"), dict(message_id="m@x", body="b \r\n\n"), True),  # white space aside
        (dict(message_id="m@x"), dict(message_id="m@x", subject="changed"), False),  # a variant: kept
        (dict(source_id="42"), dict(source_id="42", body="other"), True),
        (
            dict(from_addr="a@b", date="2025-01-01T00:00:00+00:00"),
            dict(from_addr="a@b", date="2025-01-01T00:00:00+00:00"),
            True,
        ),
        (dict(from_addr="a@b"), dict(from_addr="c@d"), False),
        (dict(message_id="m@x"), dict(message_id="n@x"), False),
    ],
)
def test_dedupe_by_message_id_then_source_id_then_content_hash(store, first, second, duplicate):
    w = IngestWriter(store)
    w.add_emails([Email(source="f", locator="line 1", subject="s", body="b", **first)])
    w.add_emails([Email(source="f", locator="line 2", **{"subject": "s", "body": "b", **second})])
    assert w.counts.duplicates == (1 if duplicate else 0)


def test_duplicates_within_one_batch_are_counted(store):
    w = IngestWriter(store)
    w.add_emails([mail("a", message_id="a@x"), mail("a", message_id="a@x")])
    assert (w.counts.ingested, w.counts.duplicates, w.counts.variants) == (1, 1, 0)


def variants_of(store: Store, mid: str) -> list[tuple]:
    return store.conn.execute(
        "SELECT id, dedupe_key, subject, conversation_id FROM emails WHERE message_id = ? ORDER BY rowid",
        (mid,),
    ).fetchall()


@pytest.mark.parametrize(
    "batches", [[[0, 1, 2, 3]], [[0, 1], [2, 3]], [[0], [1], [2], [3]], [[1, 3], [0, 2]]]
)
def test_copies_of_a_message_id_that_differ_are_kept_as_variants_in_one_conversation(store, batches):
    """Identical copies are duplicates; differing ones are emails of their own, whichever batch
    (or ingest) they come in, and ingesting everything again adds nothing."""
    copies = [
        mail("0", message_id="m@x", subject="Bug#1: fixed", references=["r1@x"]),
        mail("1", message_id="m@x", subject="Bug#2: fixed", references=["r2@x"]),
        mail("2", message_id="m@x", subject="Bug#1: fixed", references=["r1@x"], body="body 0"),  # = 0
        mail("3", message_id="m@x", subject="Bug#3: fixed", references=["r3@x"]),
    ]
    copies[0].body = "body 0"
    w = IngestWriter(store)
    for batch in batches:
        w.add_emails([copies[i] for i in batch])
    assert (w.counts.ingested, w.counts.duplicates, w.counts.variants) == (3, 1, 2)
    rows = variants_of(store, "m@x")
    assert sorted(r[2] for r in rows) == ["Bug#1: fixed", "Bug#2: fixed", "Bug#3: fixed"]
    assert len({r[0] for r in rows}) == 3 and len({r[1] for r in rows}) == 3  # ids and keys unique
    assert sum(r[1] == "mid:m@x" for r in rows) == 1 and sum(r[1].startswith("var:") for r in rows) == 2
    assert len({r[3] for r in rows}) == 1  # one conversation, with every Reference of every copy
    again = IngestWriter(store)
    for batch in batches:
        again.add_emails([copies[i] for i in batch])
    assert (again.counts.ingested, again.counts.duplicates, again.counts.variants) == (0, 4, 0)
    assert variants_of(store, "m@x") == rows


@pytest.mark.parametrize("batches", [[[0, 1]], [[0], [1]], [[1], [0]]])
def test_copies_with_one_source_id_are_one_email_whatever_differs(store, batches):
    """A source id names one email in its mailbox: a second copy under it is a duplicate even when
    its subject differs (the first copy is kept), so no two stored emails share an export id."""
    copies = [
        mail("0", source_id="m1", message_id="m@x", subject="first"),
        mail("1", source_id="m1", message_id="m@x", subject="edited"),
    ]
    w = IngestWriter(store)
    for batch in batches:
        w.add_emails([copies[i] for i in batch])
    assert (w.counts.ingested, w.counts.duplicates, w.counts.variants) == (1, 1, 0)
    [(public_id, key, subject, _)] = variants_of(store, "m@x")
    assert (public_id, key, subject) == ("m1", "mid:m@x", copies[batches[0][0]].subject)


def test_rejects_are_stored_with_file_line_and_reason(store):
    w = IngestWriter(store)
    w.add_rejects([Reject("f.jsonl", "line 7", "invalid JSON: Expecting value")])
    row = store.conn.execute("SELECT source, locator, reason FROM rejects").fetchone()
    assert row == ("f.jsonl", "line 7", "invalid JSON: Expecting value")


def test_recipients_are_stored_per_kind(store):
    w = IngestWriter(store)
    w.add_emails([mail("a", message_id="a@x", to=["t@x"], cc=["c1@x", "c2@x"], bcc=["b@x"])])
    kinds = sorted(store.conn.execute("SELECT kind, address FROM recipients").fetchall())
    assert kinds == [("bcc", "b@x"), ("cc", "c1@x"), ("cc", "c2@x"), ("to", "t@x")]


def test_new_email_in_analysed_conversation_makes_it_pending_again(store):
    w = IngestWriter(store)
    w.add_emails([mail("a", message_id="a@x")])
    store.conn.execute("UPDATE conversations SET status = 'analyzed'")
    store.conn.commit()
    w.add_emails([mail("b", message_id="b@x", in_reply_to="a@x")])
    assert store.conn.execute("SELECT status, revision FROM conversations").fetchone() == ("pending", 2)


@pytest.mark.parametrize(
    "subject, base",
    [("Re: RE: Fwd: Order 12", "Order 12"), ("AW: Bestellung", "Bestellung"), ("Order", "Order"), ("", "")],
)
def test_conversation_subject_drops_reply_prefixes(subject, base):
    assert base_subject(subject) == base


def test_conversation_subject_is_the_earliest_emails(store):
    w = IngestWriter(store)
    w.add_emails(
        [
            mail(
                "b",
                message_id="b@x",
                in_reply_to="a@x",
                subject="Re: Quote",
                date="2025-01-02T00:00:00+00:00",
            ),
            mail("a", message_id="a@x", subject="Quote", date="2025-01-01T00:00:00+00:00"),
        ]
    )
    assert store.conn.execute("SELECT subject, first_date FROM conversations").fetchone() == (
        "Quote",
        "2025-01-01T00:00:00+00:00",
    )


@pytest.mark.parametrize("seed", range(5))
def test_conversation_aggregates_are_what_its_emails_say(store, seed):
    """A conversation new in a batch gets its count, dates and subject from the batch; one that
    grows or merges has them read back from the emails table. Both must agree with the emails."""
    import random

    rng = random.Random(seed)
    dates = [None, "2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00", "2025-01-03T00:00:00+00:00"]
    w = IngestWriter(store)
    n = 0
    for _batch in range(6):
        batch = []
        for _ in range(rng.randrange(1, 40)):
            n += 1
            refs = [f"{rng.randrange(n)}@x"] if rng.random() < 0.6 else []
            if rng.random() < 0.1:
                refs.append(f"{rng.randrange(n)}@x")  # links two threads: a merge
            batch.append(mail(str(n), message_id=f"{n}@x", references=refs, date=rng.choice(dates),
                              source_conversation_id=rng.choice([None, None, f"c{rng.randrange(5)}"]),
                              subject=rng.choice(["Quote", "Re: Quote", "Order", "Re: Order", ""])))  # fmt: skip
        w.add_emails(batch)
    stored = store.conn.execute(
        "SELECT id, subject, email_count, first_date, last_date FROM conversations"
    ).fetchall()
    assert sum(r[2] for r in stored) == n
    for cid, subject, count, first, last in stored:
        emails = store.conn.execute(
            "SELECT subject, date FROM emails WHERE conversation_id = ? ORDER BY date IS NULL, date, rowid",
            (cid,),
        ).fetchall()
        dated = [d for _, d in emails if d is not None]
        assert (subject, count, first, last) == (
            base_subject(emails[0][0]),
            len(emails),
            min(dated, default=None),
            max(dated, default=None),
        ), cid


def test_a_conversation_merged_away_by_one_thread_of_a_batch_is_not_given_to_another(store):
    """x@x replies into conversation p1@x; y@x, in the same batch but another thread of it, merges
    p1@x into a-q@x: x@x belongs to a-q@x too, not to a conversation that no longer exists."""
    w = IngestWriter(store)
    w.add_emails([mail("1", message_id="p1@x"), mail("2", message_id="p2@x", references=["p1@x"]),
                  mail("3", message_id="a-q@x")])  # fmt: skip
    w.add_emails([mail("x", message_id="x@x", references=["p1@x"]),
                  mail("y", message_id="y@x", references=["p2@x", "a-q@x"])])  # fmt: skip
    assert conversations(store) == {"a-q@x": ["p1@x", "p2@x", "a-q@x", "x@x", "y@x"]}
    assert store.conn.execute("SELECT id, email_count FROM conversations").fetchall() == [("a-q@x", 5)]
    assert {c for (c,) in store.conn.execute("SELECT DISTINCT conversation_id FROM thread_keys")} == {"a-q@x"}


def test_a_stored_duplicate_links_nothing(store):
    """Threading sees only the emails that are stored: a copy of a stored email (the same source
    id), with references of its own, must not join the emails it refers to (nor would it have,
    one by one)."""
    w = IngestWriter(store)
    w.add_emails([mail("x", source_id="x1")])
    w.add_emails([mail("a", message_id="a@x"), mail("x2", source_id="x1", references=["a@x", "c@x"]),
                  mail("c", message_id="c@x")])  # fmt: skip
    assert sorted(conversations(store).values()) == [["a@x"], ["c@x"], ["x1"]]
    assert w.counts.duplicates == 1


def test_a_variant_of_a_stored_message_id_links_what_its_references_name(store):
    w = IngestWriter(store)
    w.add_emails([mail("x", message_id="x@x")])
    w.add_emails([mail("a", message_id="a@x"), mail("x2", message_id="x@x", references=["a@x", "c@x"]),
                  mail("c", message_id="c@x")])  # fmt: skip
    [(_, ids)] = conversations(store).items()
    assert len(ids) == 4 and {"a@x", "c@x", "x@x"} < set(ids) and ids[2].startswith("x@x#")
    assert (w.counts.ingested, w.counts.duplicates, w.counts.variants) == (4, 0, 1)


def canonical(labels: list[int]) -> list[int]:
    first: dict[int, int] = {}
    return [first.setdefault(t, len(first)) for t in labels]


@pytest.mark.parametrize("seed", range(30))
def test_dropping_rows_regroups_only_the_threads_that_lost_one(seed):
    import random

    from mailcli.ingest.rows import prepare_batch, threads, without

    rng = random.Random(seed)
    n = rng.randrange(1, 60)
    emails = [
        mail(str(i), message_id=f"{i}@x", references=[f"{rng.randrange(n)}@x" for _ in range(rng.randrange(3))],
             source_conversation_id=rng.choice([None, None, f"c{rng.randrange(4)}"]))
        for i in range(n)
    ]  # fmt: skip
    batch = prepare_batch(emails)
    drop = {row[0] for row in batch.rows if rng.random() < 0.3}
    rows, (row_threads, key_threads) = without(batch, drop)
    expect_rows, expect_keys = threads(rows)
    assert rows == [row for row in batch.rows if row[0] not in drop]
    assert canonical(row_threads) == canonical(expect_rows)
    assert set(key_threads) == set(expect_keys)  # no key of a dropped row alone
    same = {(row_threads[i], expect_rows[i]) for i in range(len(rows))}
    assert all((key_threads[k], expect_keys[k]) in same for k in expect_keys)


def test_schema_migration_from_an_older_version_is_applied(tmp_path):
    import sqlite3

    from mailcli.store.schema import SCHEMA_VERSION, migrate

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    assert migrate(conn) == 0
    assert migrate(conn) == SCHEMA_VERSION  # idempotent: nothing to do the second time
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.commit()
    with pytest.raises(RuntimeError, match="newer than this mailcli"):
        migrate(conn)


def test_export_record_matches_spec_section_5_before_analysis(store):
    from mailcli.store.read import export_records

    IngestWriter(store).add_emails([mail("a", message_id="a@x", from_addr="a@b.com", from_name="Ann")])
    rec = next(export_records(store))
    assert list(rec) == ["id", "message_id", "conversation_id", "subject", "from", "date", "phase1", "phase2",
                         "conversation", "status"]  # fmt: skip
    assert rec["status"] == "pending" and rec["phase1"] is None and rec["from"] == "Ann <a@b.com>"
    json.dumps(rec)


def test_references_are_stored_as_json_dumps_writes_them():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mailcli.ingest.rows import _json_list

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(), min_size=1, max_size=4))
    def check(items):
        assert _json_list(items) == json.dumps(items)

    check()
    assert _json_list(["a@x", "b@y"]) == '["a@x", "b@y"]'

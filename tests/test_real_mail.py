"""Real mail nobody here wrote: notmuch's test corpora (tests/data/notmuch, see its README).

- a real mail folder tree (Maildirs at the top and in plain sub-folders, loose message files):
  every file is read, none is left over;
- Debian bug-tracker mail: a 7,939-byte header block, and copies of one Message-ID, identical
  (duplicates) or not (variants);
- threading: mailcli's conversations hold exactly the messages of notmuch's threads, on the
  notmuch mailing list (default), LKML (lkml) and the bug-tracker copies (duplicate). The thread
  lists in tests/data/notmuch/threads were written by notmuch 0.37 (notmuch_threads.py there);
  when notmuch is installed, it is asked again here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import TESTS

from mailcli.ingest.model import Email, Reject
from mailcli.ingest.readers import detect_format, iter_records
from mailcli.ingest.run import ingest_paths
from mailcli.store.db import Store

CORPORA = TESTS / "data" / "notmuch"
THREADS = CORPORA / "threads"


def message_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def read_paths(records: list, top: Path) -> list[str]:
    """The file each record came from, relative to ``top``."""
    out = []
    for r in records:
        source = Path(r.source)
        out.append(str((source / r.locator if source == top else source).relative_to(top)))
    return sorted(out)


def test_every_file_of_a_real_mail_tree_is_read():
    tree = CORPORA / "default"
    files = message_files(tree)
    # the layout the issue describes: Maildirs at the top and in plain sub-folders, loose files
    assert {"01:2,", "cur/29:2,", "new/04:2,", "foo/06:2,", "foo/new/03:2,", "bar/baz/cur/25:2,"} < set(files)
    assert len(files) == 53
    records = list(iter_records(tree))
    assert all(isinstance(r, Email) for r in records), [r for r in records if isinstance(r, Reject)]
    assert read_paths(records, tree) == files  # each file once, none left unread
    assert len({r.message_id for r in records}) == 52


def test_the_tree_is_stored_with_one_duplicate_and_said_so(tmp_path):
    with Store.open(tmp_path / "m.db") as store:
        first = ingest_paths(store, [str(CORPORA / "default")], parallel=False)
        again = ingest_paths(store, [str(CORPORA / "default")], parallel=False)
    assert first.line().startswith("53 read: 52 ingested, 1 duplicates, 0 rejected; 24 conversations")
    assert again.line().startswith("53 read: 0 ingested, 53 duplicates, 0 rejected; 0 conversations")


def test_a_bug_tracker_message_with_7939_bytes_of_headers_is_mail():
    path = CORPORA / "duplicate" / "msg-3-3:2,"
    assert path.read_bytes().index(b"\n\n") == 7939
    assert detect_format(path) == "eml"
    [email] = iter_records(path)
    assert isinstance(email, Email) and email.subject == "Bug#916807: Increase severity to 'serious'"


def test_copies_of_a_message_id_are_kept_when_they_differ_and_said_so(tmp_path):
    """msg-3-1 ... msg-3-5: five bug-tracker mails (one per bug) under one Message-ID, each with
    its own subject and References; msg-1-*, msg-2-*: a mail and the tracker's retitled copy."""
    with Store.open(tmp_path / "m.db") as store:
        first = ingest_paths(store, [str(CORPORA / "duplicate")], parallel=False)
        again = ingest_paths(store, [str(CORPORA / "duplicate")], parallel=False)
        rows = store.conn.execute(
            "SELECT subject, refs, conversation_id FROM emails WHERE message_id = ? ORDER BY locator",
            ("87r2ecrr6x.fsf@zephyr.silentflame.com",),
        ).fetchall()
    assert (first.ingested, first.variants, first.duplicates, first.rejected) == (9, 6, 0, 0)
    assert "9 ingested (6 kept as variants of an existing Message-ID)" in first.line()
    assert (again.ingested, again.variants, again.duplicates) == (0, 0, 9)
    assert [s.rpartition("Bug#")[2][:6] for s, _, _ in rows] == ["916805", "916808", "916807", "916811", "916867"]
    assert len({refs for _, refs, _ in rows}) == 5  # every copy's References kept
    assert len({conv for _, _, conv in rows}) == 1


def conversations(folder: Path, tmp_path: Path) -> list[list[str]]:
    with Store.open(tmp_path / "m.db") as store:
        ingest_paths(store, [str(folder)], batch_size=50)  # batches of 50: threads joined across them
        convs: dict[str, set[str]] = {}
        for conv, mid in store.conn.execute("SELECT conversation_id, message_id FROM emails"):
            convs.setdefault(conv, set()).add(mid)
    return sorted(sorted(ids) for ids in convs.values())


@pytest.mark.parametrize("corpus", ["default", "lkml", "duplicate"])
def test_conversations_are_notmuchs_threads(corpus, tmp_path):
    expected = json.loads((THREADS / f"{corpus}.json").read_text())
    assert conversations(CORPORA / corpus, tmp_path) == expected
    assert len(expected) == {"default": 24, "lkml": 7, "duplicate": 3}[corpus]


@pytest.mark.skipif(shutil.which("notmuch") is None, reason="notmuch is not installed")
@pytest.mark.parametrize("corpus", ["default", "lkml", "duplicate"])
def test_the_recorded_threads_are_what_notmuch_says(corpus):
    sys.path.insert(0, str(THREADS))
    try:
        from notmuch_threads import dumps, notmuch_threads
    finally:
        sys.path.remove(str(THREADS))
    env_before = os.environ.get("NOTMUCH_CONFIG")
    assert dumps(notmuch_threads(str(CORPORA / corpus))) == (THREADS / f"{corpus}.json").read_text()
    assert os.environ.get("NOTMUCH_CONFIG") == env_before

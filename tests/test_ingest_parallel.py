"""Ingest with a parse process: JSONL read here in chunks of lines, parsed in a second process, written
here in input order. It must store exactly what parsing everything in one process stores, and a
parse process that dies must end the command with one line, not a traceback or a hang."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import SAMPLES

from mailcli.ingest import run
from mailcli.ingest.jsonl import LineChunk, iter_jsonl, iter_line_chunks
from mailcli.ingest.parse_process import ParseProcess, RemoteTraceback
from mailcli.store.db import Store

# --------------------------------------------------------------------------------------------
# Chunks of lines parse as the whole file does
# --------------------------------------------------------------------------------------------

GOOD = json.dumps({"subject": "s", "body": "b", "message_id": "<m@x>"}) + "\n"
TRICKY = {
    "ordinary": [GOOD] * 5,
    "blank lines then pretty-printed": ["\n", "  \n", "\n", "{\n", '  "subject": "x"\n', "}\n"],
    "pretty-printed array": ["[\n", GOOD, "]\n"],
    "a lone brace after content is a bad line": [GOOD, "{\n", GOOD, "[\n", GOOD],
    "byte order mark": ["\ufeff" + GOOD, GOOD, "\ufeff" + GOOD],
    "crlf and bad json": [GOOD.replace("\n", "\r\n"), '{"subject": \n', "not json\r\n", GOOD],
    "graph page": [json.dumps({"@odata.context": "x", "value": [{"subject": "a"}, {"subject": "b"}]}) + "\n", GOOD],
    "no final newline": [GOOD, GOOD.rstrip("\n")],
}


@pytest.mark.parametrize("name", list(TRICKY))
@pytest.mark.parametrize("max_lines", [1, 2, 3, 100])
def test_line_chunks_parse_as_the_whole_stream_does(name, max_lines):
    lines = [line.encode("utf-8") for line in TRICKY[name]]
    whole = list(iter_jsonl(iter(lines), "f.jsonl"))
    chunks = list(iter_line_chunks(iter(lines), "f.jsonl", max_lines, 10**9))
    assert all(len(c.lines) <= max_lines for c in chunks)
    assert [r for c in chunks for r in c.records()] == whole


def test_line_chunks_are_bounded_by_bytes_too():
    lines = [b"x" * 100 + b"\n"] * 50
    chunks = list(iter_line_chunks(iter(lines), "f", 1000, 1000))
    assert [len(c.lines) for c in chunks] == [10] * 5
    assert [c.first_line for c in chunks] == [1, 11, 21, 31, 41]


def test_reading_stops_at_pretty_printed_json_as_the_parser_does():
    lines = [b"\n", b"{\n"] + [GOOD.encode()] * 100
    chunks = list(iter_line_chunks(iter(lines), "f", 1, 10**9))
    assert sum(len(c.lines) for c in chunks) == 2  # the rest of the file is never read


# --------------------------------------------------------------------------------------------
# The whole ingest: a parse process changes nothing in the database
# --------------------------------------------------------------------------------------------


def make_export(path: Path, n: int, seed: int = 5) -> Path:
    """Generated emails plus what a real export holds: exact duplicates, copies of a Message-ID
    with other text (variants), replies that link two
    conversations (merges), blank and bad lines, a Graph page on one line, a stray Latin-1 byte."""
    from synth import generate

    rng = random.Random(seed)
    records = list(generate(n, seed=seed))
    mids = [r["message_id"] for r in records]
    with open(path, "wb") as f:
        for i, rec in enumerate(records):
            f.write(json.dumps(rec).encode() + b"\n")
            x = rng.random()
            if x < 0.02:
                f.write(b'{"subject": "cut off\n')
            elif x < 0.03:
                f.write(b"\n")
            elif x < 0.04:
                f.write(b"[1, 2]\n")
            elif x < 0.05:
                f.write(json.dumps(records[rng.randrange(i + 1)]).encode() + b"\n")  # a duplicate
            elif x < 0.055:
                copy = {**records[rng.randrange(i + 1)], "body": f"resent {i}"}
                copy.pop("id", None)
                f.write(json.dumps(copy).encode() + b"\n")  # a variant: one Message-ID, other text
            elif x < 0.07 and i > 10:
                a, b = rng.sample(mids[:i], 2)
                link = {"subject": f"Re: both {i}", "body": "see both", "from": "x@y.example", "references": [a, b]}
                f.write(json.dumps(link).encode() + b"\n")  # merges two conversations
        f.write(json.dumps({"@odata.context": "x", "value": [{"subject": "page 1"}, {"subject": "page 2"}]}).encode())
        f.write(b'\n{"subject": "caf\xe9", "body": "latin-1 byte"}\n')
    return path


def dump(db: Path) -> dict[str, list]:
    """Every row of the tables ingest writes, minus the wall-clock timestamps."""
    clock = {"ingested_at", "updated_at", "created_at"}
    out = {}
    with Store.open(db) as store:
        for table, order in [("emails", "rowid"), ("recipients", "rowid"), ("thread_keys", "key"),
                             ("conversations", "id"), ("rejects", "id")]:  # fmt: skip
            cur = store.conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
            keep = [i for i, d in enumerate(cur.description) if d[0] not in clock]
            out[table] = [tuple(row[i] for i in keep) for row in cur]
    return out


def ingest(db: Path, paths: list[Path], *, parallel: bool, batch_size: int, runs: int = 1) -> list:
    summaries = []
    with Store.open(db) as store:
        for _ in range(runs):
            s = run.ingest_paths(store, [str(p) for p in paths], parallel=parallel, batch_size=batch_size)
            summaries.append((s.ingested, s.duplicates, s.variants, s.rejected, s.merged, s.conversations, s.rejects))
    return summaries


@pytest.fixture
def eager_parse_process(monkeypatch):
    """Every chunk after the first full one goes to the parse process (no parsing here while it
    starts); counts the chunks it parsed."""
    parsed = []
    submit = ParseProcess.submit
    monkeypatch.setattr(ParseProcess, "ready", lambda self: True)
    monkeypatch.setattr(ParseProcess, "submit", lambda self, chunk: (parsed.append(chunk), submit(self, chunk)))
    return parsed


def test_a_parse_process_stores_exactly_what_one_process_stores(tmp_path, eager_parse_process):
    export = make_export(tmp_path / "export.jsonl", 3000)
    paths = [SAMPLES / "graph.jsonl", export, SAMPLES / "malformed.jsonl", SAMPLES / "mbox", export, SAMPLES / "eml"]
    # twice: the second run adds nothing, in both modes
    one = ingest(tmp_path / "one.db", paths, parallel=False, batch_size=250, runs=2)
    assert not eager_parse_process
    two = ingest(tmp_path / "two.db", paths, parallel=True, batch_size=250, runs=2)
    assert len(eager_parse_process) > 20  # most chunks were parsed by the parse process
    assert one == two
    assert one[0][4] > 0 and one[1][0] == 0  # conversations were merged; nothing new the second time
    assert one[0][2] > 0 and one[1][2] == 0  # variants kept, and not again
    assert dump(tmp_path / "one.db") == dump(tmp_path / "two.db")


def test_rejects_keep_their_line_numbers_in_the_parse_process(tmp_path, eager_parse_process):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(GOOD.replace("m@x", f"m{i}@x") if i % 7 else "oops\n" for i in range(1, 200)))
    ingest(tmp_path / "p.db", [path], parallel=True, batch_size=10)
    assert eager_parse_process
    with Store.open(tmp_path / "p.db") as store:
        locators = [r[0] for r in store.conn.execute("SELECT locator FROM rejects ORDER BY id")]
    assert locators == [f"line {i}" for i in range(7, 200, 7)]


def test_an_input_of_one_chunk_starts_no_process(tmp_path, monkeypatch):
    def refuse(self):
        raise AssertionError("a parse process was started for a small input")

    monkeypatch.setattr(ParseProcess, "__init__", refuse)
    summary = ingest(tmp_path / "s.db", [SAMPLES / "flat.jsonl", SAMPLES / "graph.jsonl"], parallel=True, batch_size=5000)
    assert summary[0][0] > 20


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("executable", ["/bin/false", "/no/such/python"])
def test_a_parse_process_that_cannot_start_leaves_the_parsing_here(tmp_path, monkeypatch, executable):
    export = make_export(tmp_path / "export.jsonl", 600)
    one = ingest(tmp_path / "one.db", [export], parallel=False, batch_size=100)
    monkeypatch.setattr(sys, "executable", executable)  # dies at once / cannot be run at all
    two = ingest(tmp_path / "two.db", [export], parallel=True, batch_size=100)
    assert one == two
    assert dump(tmp_path / "one.db") == dump(tmp_path / "two.db")


def test_an_exception_in_the_parse_process_is_raised_here_with_its_traceback():
    with ParseProcess() as child:
        child.submit(LineChunk("f.jsonl", 1, False, [b"{}\n", 12345]))  # not bytes: a bug, not bad input
        with pytest.raises(AttributeError) as info:
            child.result()
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "iter_jsonl" in str(info.value.__cause__)


def test_a_parse_process_that_dies_is_a_child_process_error(tmp_path):
    child = ParseProcess()
    try:
        child._proc.kill()  # noqa: SLF001
        with pytest.raises(ChildProcessError, match="killed by signal 9"):
            for _ in range(100):  # the first sends may still fit in the socket's buffer
                child.submit(LineChunk("f.jsonl", 1, False, [GOOD.encode()] * 1000))
            child.result()
    finally:
        child.close()


def big_export(path: Path, n: int) -> Path:
    line = json.dumps({"id": "{i}", "subject": "order {i}", "body": "please ship part AX-4410-B " * 40,
                       "from": "buyer@example.com", "message_id": "<m{i}@example.com>"})  # fmt: skip
    with open(path, "w") as f:
        for i in range(n):
            f.write(line.replace("{i}", str(i)) + "\n")
    return path


def parse_children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        kids = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "mailcli.ingest.parse_process" in " ".join(k.cmdline())]


def busy_parse_child(proc: subprocess.Popen) -> psutil.Process:
    """The ingest's parse process, once it has started parsing (its start-up takes ~0.1 s of CPU)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        for kid in parse_children(proc):
            try:
                if kid.cpu_times().user > 0.4:
                    return kid
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.01)
    raise AssertionError("the ingest never had a busy parse process")


def test_killed_parse_process_ends_the_ingest_with_one_line_and_exit_1(home):
    data = big_export(home.path / "big.jsonl", 60_000)
    proc = home.popen("ingest", str(data), "--no-enqueue")
    busy_parse_child(proc).kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err and "parse process stopped" in err
    assert len(err.strip().splitlines()) == 1
    with home.store() as store:  # what was committed before stays, consistent
        n = store.conn.execute("SELECT count(*) FROM emails").fetchone()[0]
        assert n == store.conn.execute("SELECT coalesce(sum(email_count), 0) FROM conversations").fetchone()[0]
    again = home.run("ingest", str(data), "--no-enqueue", "--json")  # and running it again finishes it
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["ingested"] == 60_000 - n


def test_ctrl_c_stops_the_ingest_and_its_parse_process(home):
    data = big_export(home.path / "big.jsonl", 60_000)
    proc = home.popen("ingest", str(data), "--no-enqueue", start_new_session=True)
    child = busy_parse_child(proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "interrupted" in err
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_parse_process_runs_this_mailcli_whatever_the_callers_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # nothing there: the child still finds mailcli
    with ParseProcess() as child:
        child.submit(LineChunk("f.jsonl", 1, False, [GOOD.encode()]))
        prepared, rejects = child.result()
    assert len(prepared.rows) == 1 and not rejects


"""The CLI as a user runs it: real processes, a real SQLite file, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import io
import json

import pytest
from conftest import SAMPLES, TESTS

GOOD = [
    str(SAMPLES / "graph.jsonl"),
    str(SAMPLES / "flat.jsonl"),
    str(SAMPLES / "mbox"),
    str(SAMPLES / "eml"),
]
ALL = [*GOOD, str(SAMPLES / "malformed.jsonl")]


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def ingest_json(home, *paths, extra=()):
    proc = home.run("ingest", *paths, "--json", "--no-enqueue", *extra)
    no_traceback(proc)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def test_ingest_samples_counts_good_and_rejected_records(home):
    proc, out = ingest_json(home, *ALL)
    assert proc.returncode == 0
    assert out["ingested"] > 40 and out["rejected"] >= 4 and out["duplicates"] == 0
    assert all(r["source"].endswith("malformed.jsonl") for r in out["rejects"])
    assert all(r["locator"].startswith("line ") for r in out["rejects"])


def test_plain_summary_line_when_piped(home):
    proc = home.run("ingest", *GOOD, "--no-enqueue")
    assert proc.returncode == 0
    assert " ingested, 0 duplicates, 0 rejected" in proc.stdout


def test_a_mail_tree_with_copies_of_one_message_id_says_how_many_were_kept(home):
    corpus = str(TESTS / "data" / "notmuch" / "duplicate")
    proc = home.run("ingest", corpus, "--no-enqueue")
    no_traceback(proc)
    assert proc.returncode == 0
    assert "9 read: 9 ingested (6 kept as variants of an existing Message-ID), 0 duplicates, 0 rejected" in (
        " ".join(proc.stdout.split())
    )
    _, out = ingest_json(home, corpus)
    assert (out["ingested"], out["variants"], out["duplicates"]) == (0, 0, 9)


def test_empty_inputs_are_named_not_silent(home, tmp_path):
    """An empty file or folder holds no mail: said on stderr and counted, not a reject."""
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.mbox").write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    paths = [str(tmp_path / n) for n in ("empty.jsonl", "empty.mbox", "nothing")]
    proc = home.run("ingest", *paths, "--no-enqueue")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "0 read: 0 ingested, 0 duplicates, 0 rejected, 3 files passed over (not mail);" in " ".join(
        proc.stdout.split()
    )
    stderr = " ".join(proc.stderr.split())
    assert f"{paths[0]} (an empty file)" in stderr and f"{paths[2]} (an empty folder)" in stderr


def test_an_mbox_read_as_eml_is_a_reject_naming_the_format(home, tmp_path):
    box = tmp_path / "box.mbox"
    box.write_bytes(
        b"From a@x Mon Jan  1 00:00:00 2024\nSubject: 1\n\none\n\nFrom b@x Mon Jan  1 00:00:00 2024\nSubject: 2\n\ntwo\n"
    )
    proc = home.run("ingest", str(box), "--format", "eml", "--no-enqueue")
    no_traceback(proc)
    assert "this is an mbox; read it with --format mbox" in " ".join(proc.stderr.split())
    assert "0 ingested" in proc.stdout


def test_bookkeeping_files_in_a_maildir_are_named_and_do_not_fail_strict(home, tmp_path):
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "cur" / "1:2,S").write_bytes(b"From: a@x.com\nSubject: hi\nMessage-ID: <1@x>\n\nbody\n")
    (box / "dovecot-uidlist").write_text("3 V1 N2\n1 1:2,S\n")
    (box / ".DS_Store").write_bytes(b"\x00\x01")
    proc = home.run("ingest", str(box), "--no-enqueue", "--strict")
    no_traceback(proc)
    assert proc.returncode == 0
    line = " ".join(proc.stdout.split())
    assert "1 read: 1 ingested, 0 duplicates, 0 rejected, 2 files passed over (not mail);" in line
    assert ".DS_Store" in proc.stderr and "dovecot-uidlist" in proc.stderr
    _, out = ingest_json(home, str(box))
    assert out["skipped"] == 2 and sorted(out["skipped_paths"]) == [
        str(box / ".DS_Store"),
        str(box / "dovecot-uidlist"),
    ]


def test_strict_exits_3_when_records_were_rejected_but_keeps_the_good_ones(home):
    proc, out = ingest_json(home, str(SAMPLES / "malformed.jsonl"), extra=["--strict"])
    assert proc.returncode == 3
    assert out["ingested"] >= 1
    with home.store() as store:
        assert store.counts()["emails"] == out["ingested"]
        assert store.counts()["rejects"] == out["rejected"]


def test_ingesting_the_same_export_twice_adds_and_enqueues_nothing(home):
    _, first = ingest_json(home, *GOOD)
    proc, second = ingest_json(home, *GOOD)
    assert second["ingested"] == 0 and second["duplicates"] == first["ingested"]
    assert second["conversations"] == 0


def test_missing_path_is_a_one_line_usage_error(home):
    proc = home.run("ingest", "nope.jsonl")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_empty_file_ingests_nothing_and_succeeds(home):
    (home.path / "empty.jsonl").write_text("")
    proc, out = ingest_json(home, str(home.path / "empty.jsonl"))
    assert proc.returncode == 0 and out["ingested"] == 0 and out["rejected"] == 0


def test_binary_file_is_rejected_not_crashed_on(home):
    (home.path / "blob.bin").write_bytes(bytes(range(256)) * 64)
    proc, out = ingest_json(home, str(home.path / "blob.bin"))
    assert proc.returncode == 0 and out["rejected"] == 1 and out["ingested"] == 0


def test_stdin_dash_reads_jsonl(home):
    data = (SAMPLES / "flat.jsonl").read_text()
    proc = home.run("ingest", "-", "--json", "--no-enqueue", input=data)
    no_traceback(proc)
    assert json.loads(proc.stdout)["ingested"] > 0


def test_unknown_flag_and_bad_values_exit_2(home):
    assert home.run("ingest", "--bogus").returncode == 2
    proc = home.run("ingest", str(SAMPLES / "flat.jsonl"), "--format", "xml")
    assert proc.returncode == 2 and "xml" in proc.stderr
    no_traceback(proc)


def test_results_before_any_ingest_says_what_to_do(home):
    proc = home.run("results")
    no_traceback(proc)
    assert proc.returncode == 1 and "mailcli ingest" in proc.stderr


def test_inline_analysis_then_results_show_and_export(home):
    ingest_json(home, *GOOD)
    proc = home.run("analyze", "--inline", "--phase", "1", "--json")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["conversations"] > 10

    rows = json.loads(home.run("results", "--json", "--limit", "100").stdout)
    assert rows and all(r["status"] == "analyzed" for r in rows)
    assert rows[0]["priority"] == "critical"  # most urgent first

    table = home.run("results")
    assert table.returncode == 0 and "Conversations" in table.stdout

    cid = rows[0]["id"]
    shown = home.run("show", cid)
    assert shown.returncode == 0 and cid[:20] in shown.stdout
    detail = json.loads(home.run("show", cid, "--json").stdout)
    assert detail["messages"] and detail["messages"][0]["phase1"]["priority"]

    out = home.run("export")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == sum(r["emails"] for r in rows)
    for rec in records:
        assert set(rec) == {"id", "message_id", "conversation_id", "subject", "from", "date", "phase1", "phase2",
                            "conversation", "status"}  # fmt: skip
        assert set(rec["conversation"]) == {"completeness", "is_complete", "tier", "phase3"}
        assert rec["status"] == "analyzed" and rec["phase2"] is None
        assert isinstance(rec["phase1"]["financial_impact"], float)

    home.run("export", "--format", "csv", "-o", "out.csv")
    text = (home.path / "out.csv").read_text()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == len(records) and "po_numbers" in parsed[0]


def test_show_unknown_conversation_is_a_clear_error(home):
    ingest_json(home, str(SAMPLES / "flat.jsonl"))
    proc = home.run("show", "no-such-id")
    no_traceback(proc)
    assert proc.returncode == 2 and "no-such-id" in proc.stderr


def test_without_llm_conversations_owing_phase_2_are_partial_and_say_why(home):
    ingest_json(home, *GOOD)
    home.run("analyze", "--inline")
    rows = json.loads(home.run("results", "--json", "--limit", "100").stdout)
    statuses = {r["status"] for r in rows}
    assert "partial" in statuses  # tier 2/3 conversations owe phase 2; OLLAMA_HOST is a closed port
    partial = next(r for r in rows if r["status"] == "partial")
    assert partial["error"]


def test_analyze_without_redis_changes_nothing_and_names_the_fix(home):
    """An analyze that cannot reach the queues leaves every conversation as it was: a partial one
    keeps its status and its reason, and the line says how to analyse without Redis."""
    ingest_json(home, *GOOD)
    home.run("analyze", "--inline")
    before = {
        r["id"]: (r["status"], r["error"])
        for r in json.loads(home.run("results", "--json", "--limit", "100").stdout)
    }
    assert "partial" in {s for s, _ in before.values()}
    proc = home.run("analyze", env={"REDIS_URL": "redis://127.0.0.1:1"})
    no_traceback(proc)
    assert proc.returncode == 4, proc.stderr
    assert "Nothing was changed" in proc.stderr and "mailcli analyze --inline" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    after = {
        r["id"]: (r["status"], r["error"])
        for r in json.loads(home.run("results", "--json", "--limit", "100").stdout)
    }
    assert after == before


def test_ingest_enqueues_jobs_on_priority_queues(any_home):
    proc = any_home.run("ingest", *GOOD)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "jobs enqueued" in proc.stdout
    from mailcli.queue.names import queue_depths

    depths = queue_depths(any_home.redis())
    assert sum(d["queued"] for d in depths.values()) > 0
    assert depths["critical"]["queued"] > 0  # the samples hold an urgent, escalated thread
    with any_home.store() as store:
        assert store.counts().get("conversations_pending", 0) == 0
    # nothing new: a second ingest enqueues nothing
    again = any_home.run("ingest", *GOOD, "--json")
    assert json.loads(again.stdout)["conversations"] == 0
    assert sum(d["queued"] for d in queue_depths(any_home.redis()).values()) == sum(
        d["queued"] for d in depths.values()
    )


def test_results_fit_80_columns_and_show_accepts_the_shown_short_id(home):
    ingest_json(home, *GOOD)
    home.run("analyze", "--inline", "--phase", "1")
    table = home.run("results", env={"COLUMNS": "80"})
    assert table.returncode == 0
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    rows = json.loads(home.run("results", "--json").stdout)
    # every id as the table shows it (a Graph id's tail, a Message-ID's local part) names its row
    shown_ids = [line.split()[0] for line in table.stdout.splitlines() if line.strip().startswith("…")]
    assert any(i.endswith("@…") for i in shown_ids) and len(shown_ids) == len(set(shown_ids)) >= 10
    for short in shown_ids:
        shown = home.run("show", short, "--json")
        assert shown.returncode == 0, shown.stderr
        full = json.loads(shown.stdout)["id"]
        assert short.strip("…") in full and full in {r["id"] for r in rows}


def test_show_with_an_ambiguous_part_of_an_id_asks_for_more(home):
    ingest_json(home, *GOOD)
    proc = home.run("show", "A")  # a letter in many ids
    no_traceback(proc)
    assert proc.returncode == 2 and "several conversations" in proc.stderr


def test_large_mbox_streams_in_bounded_memory(home):
    """A 60 MB mbox: the ingest's peak RSS stays far below the file's size."""
    import subprocess
    import sys

    msg = (
        "From buyer@example.com Mon Mar  3 10:00:00 2025\n"
        "From: Buyer <buyer@example.com>\nTo: sales@acme-industrial.com\n"
        "Subject: Order {i}\nMessage-ID: <m{i}@example.com>\nDate: Mon, 3 Mar 2025 10:00:00 +0000\n\n"
        + ("Please ship part AX-4410-B. " * 40 + "\n") * 10
        + "\n"
    )
    path = home.path / "big.mbox"
    with open(path, "w") as f:
        i = 0
        while f.tell() < 60 * 2**20:
            f.write(msg.format(i=i))
            i += 1
    code = (
        "import resource, subprocess, sys;"
        f"p = subprocess.run([sys.executable, '-m', 'mailcli', 'ingest', {str(path)!r}, '--no-enqueue', '--json'],"
        " capture_output=True, text=True); print(p.stdout);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=home.env, cwd=home.path, capture_output=True, text=True
    )
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[0])["ingested"] == i
    peak_mb = int(lines[-1]) / 1024
    # interpreter and imports (~50 MB) + SQLite's page cache (32 MB) + one batch (<= 8M characters)
    assert peak_mb < 120, f"peak RSS {peak_mb:.0f} MB for a 60 MB mbox"


def test_progress_bar_on_a_terminal_shows_counts_and_rate(home):
    import os
    import pty
    import subprocess
    import sys

    from synth import write_jsonl

    data = write_jsonl(home.path / "gen.jsonl", 30_000, seed=7)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcli", "ingest", str(data), "--no-enqueue"],
        cwd=home.path, env={**home.env, "COLUMNS": "120", "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(60)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "ingest" in screen and " ok " in screen and "/s" in screen  # counts and rate while running
    assert "ingested" in screen  # the summary at the end


def test_inline_analysis_after_an_enqueuing_ingest_analyses_everything(home):
    """The README's no-worker path: `mailcli ingest FILE && mailcli analyze --inline`."""
    assert home.run("ingest", *GOOD).returncode == 0  # enqueues on the embedded Redis
    proc = home.run("analyze", "--inline", "--phase", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(home.run("results", "--json", "--limit", "100").stdout)
    assert rows and all(r["status"] == "analyzed" for r in rows)


def _answered_detail() -> dict:
    """A conversation as `show` gets it, with long phase 2 and phase 3 answers."""
    from mailcli.analysis.phase1 import analyze_email

    p1 = analyze_email(
        "PO 4500012345 urgent", "Please ship 20 units of AB-1234 by March 10, 2025. Total $12,500."
    ).to_dict()
    p2 = {
        "summary": "The customer confirms purchase order 4500012345 for twenty units and asks for delivery "
                   "before the tenth of March, with tracking information sent to the warehouse manager.",
        "workflow_validation": "consistent", "risk_assessment": "Delivery deadline is tight; expedited freight "
        "may be required and the customer mentioned cancellation if the date slips.",
        "missed_entities": {"people": ["Warehouse Manager Jonathan Richardson"], "locations": ["Rotterdam"],
                            "company_names": ["Northwind Logistics International"]},
        "action_items": [{"task": "Confirm availability of twenty units with the production planning team",
                          "owner": "sales operations", "deadline": "2025-03-05"}],
        "initial_response": "", "confidence": 0.82, "business_process": "order", "extracted_requirements": [],
        "source": "model", "model": "llama3.2:3b",
    }  # fmt: skip
    p3 = {"executive_summary": "A time-critical order whose fulfilment depends on expedited freight arrangements.",
          "strategic_insights": {"opportunity": "Repeat business", "risk": "Cancellation", "relationship": "Key"},
          "escalation_needed": True, "revenue_impact": "12,500.00 in amounts mentioned",
          "cross_email_patterns": ["expedited"], "workflow_intelligence": {
              "predicted_next_steps": ["Shipping confirmation with tracking number"], "bottleneck_risks": [],
              "optimization_opportunities": []}, "source": "model", "model": "phi4:14b"}  # fmt: skip
    message = {"id": "m1", "message_id": "m1@x", "conversation_id": "c1", "subject": "PO 4500012345 urgent",
               "from": "Jonathan Richardson <jonathan.richardson@northwind-logistics.example.com>",
               "date": "2025-03-04T10:00:00+00:00", "phase1": p1, "phase2": p2,
               "conversation": {}, "status": "analyzed"}  # fmt: skip
    return {"id": "AAQkAGI2TG93AAAbbbbccccddddeeeeffff0000111122223333=", "subject": "PO 4500012345 urgent",
            "status": "analyzed", "priority": "critical", "completeness": 85, "tier": 3, "is_complete": True,
            "error": None, "messages": [message, {**message, "id": "m2", "phase2": None}], "phase3": p3}  # fmt: skip


def test_show_reads_well_at_80_columns_no_word_split_and_phase_2_in_full_lines():
    import re

    from rich.console import Console

    from mailcli.cli.tables import conversation_view

    detail = _answered_detail()
    console = Console(width=80, record=True, color_system=None)
    console.print(conversation_view(detail))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    # every word of what is shown comes out whole: nothing is split inside a word or a header
    words = {w.strip(".,;") for w in re.findall(r"[\w.@-]+", text)}
    p2 = detail["messages"][0]["phase2"]
    source_words = " ".join(
        [
            p2["summary"],
            p2["risk_assessment"],
            p2["action_items"][0]["task"],
            *p2["missed_entities"]["people"],
            detail["phase3"]["executive_summary"],
        ]
    ).split()
    for word in source_words:
        assert word.strip(".,;") in words, word
    # stacked panels, one per email; the phase 2 rows are lines of prose, not one word a line
    assert "email 1 of 2" in text and "email 2 of 2" in text
    for label in ("phase 1", "entities", "phase 2", "summary", "actions", "risk", "missed", "confidence"):
        assert re.search(rf"│ {label}\s", text), label
    summary_lines = [ln for ln in lines if "customer confirms" in ln or "tracking information" in ln]
    assert summary_lines and all(len(ln.split()) >= 6 for ln in summary_lines)
    assert "phase 3 (model, phi4:14b)" in text and "next steps" in text


def test_email_text_that_looks_like_rich_markup_is_shown_as_written(home):
    """Subjects such as "[notmuch] [PATCH 1/2]" or a stray "[/foo]" are email text, not markup:
    results and show print them as written, never drop them, link them or crash on them."""
    import json as _json

    rows = [
        {"id": "m1", "conversation_id": "c1", "subject": "[notmuch] [PATCH 1/2] closing [/foo] tag",
         "body": "see [link=http://evil.example]click[/link] and [bold]this[/bold]", "from": "a@x.example"},
    ]  # fmt: skip
    (home.path / "m.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))
    assert home.run("ingest", str(home.path / "m.jsonl"), "--no-enqueue").returncode == 0
    assert home.run("analyze", "--inline", "--phase", "1").returncode == 0
    out = home.run("results")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "[notmuch]" in out.stdout and "[PATCH" in out.stdout
    out = home.run("show", "c1")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    flat = " ".join(out.stdout.split())
    assert "[notmuch] [PATCH 1/2] closing [/foo] tag" in flat
    assert "\x1b]8;" not in out.stdout  # no terminal hyperlink made of email text


def test_the_partial_note_names_the_whole_host_of_a_missing_model():
    from mailcli.cli.app import _partial_note
    from mailcli.config import Settings

    note = _partial_note(
        3, 'phase 2: model "llama3.2:3b" not found on http://127.0.0.1:11999: try pulling it', Settings()
    )
    assert "not pulled on http://127.0.0.1:11999" in note


def test_ingest_with_redis_unreachable_says_what_it_stored_then_why_nothing_was_enqueued(home):
    out = home.run("ingest", str(SAMPLES / "graph.jsonl"), env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 4, out.stderr
    assert "36 ingested" in out.stdout and "none enqueued: Redis is unreachable" in out.stdout
    assert "cannot connect to Redis" in out.stderr and "Traceback" not in out.stderr
    with home.store() as store:
        assert (
            store.conn.execute("SELECT count(*) FROM conversations WHERE status = 'pending'").fetchone()[0]
            == 9
        )


def test_debug_goes_before_or_after_the_command(home):
    """--debug is taken before the command too: it shows the traceback an expected error hides."""
    for args in (("--debug", "results"), ("results", "--debug")):
        proc = home.run(*args)
        assert proc.returncode == 1 and "Traceback" in proc.stderr, (args, proc.stderr)
    assert "Traceback" not in home.run("results").stderr


def test_help_paragraphs_flow_to_the_terminal_width():
    """Rich help keeps a docstring's line breaks; commands' help is reflowed so that at 80 columns a
    sentence is not broken twice (once by the terminal, once by the docstring)."""
    from mailcli.cli.app import _flow, app

    assert _flow("One line\n    and its end.\n\n    Next para\n    - item one\n    - item two\n") == (
        "One line and its end.\n\nNext para\n- item one\n- item two"
    )

    def helps(typer_app):
        for command in typer_app.registered_commands:
            yield command.help or ""
        for group in typer_app.registered_groups:
            yield from helps(group.typer_instance)

    texts = list(helps(app))
    assert len(texts) >= 10
    for text in texts:
        for paragraph in text.split("\n\n"):
            for line in paragraph.split("\n")[1:]:
                assert line[:1].isspace() or line.startswith(("- ", "* ")), (paragraph, line)


def test_export_into_a_missing_folder_creates_it_private(home, tmp_path):
    """export -o into a folder that does not exist yet: the folder is made (owner only, like the
    data directory) and the file is complete and owner-only; no temporary file is left."""
    import stat

    ingest_json(home, str(SAMPLES / "flat.jsonl"))
    out = tmp_path / "new" / "deeper" / "x.jsonl"
    proc = home.run("export", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 8
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.jsonl"]


def test_write_private_leaves_no_partial_file_on_failure(tmp_path):
    from mailcli.private import write_private

    def fail(fh):
        fh.write("half")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        write_private(tmp_path / "r.html", fail)
    assert list(tmp_path.iterdir()) == []

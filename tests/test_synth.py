"""tests/synth.py: deterministic, well-formed synthetic exports whose counts are known in advance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import synth

REPO = Path(__file__).resolve().parents[1]

FLAT_FIELDS = {
    "id": str,
    "conversation_id": str,
    "subject": str,
    "body": str,
    "from": str,
    "to": list,
    "cc": list,
    "date": str,
    "message_id": str,
    "in_reply_to": (str, type(None)),
    "references": list,
    "importance": str,
}
GRAPH_FIELDS = {
    "id": str,
    "internetMessageId": str,
    "conversationId": str,
    "subject": str,
    "body": dict,
    "bodyPreview": str,
    "from": dict,
    "sender": dict,
    "toRecipients": list,
    "ccRecipients": list,
    "receivedDateTime": str,
    "sentDateTime": str,
    "importance": str,
    "hasAttachments": bool,
    "internetMessageHeaders": list,
}
COMPLETION = re.compile(r"has been shipped|has been resolved|order is complete|delivered|RMA is closed")


def _mid(rec: dict) -> str:
    return rec.get("message_id") or rec["internetMessageId"]


def _conv(rec: dict) -> str:
    return rec.get("conversation_id") or rec["conversationId"]


def _links(rec: dict) -> tuple[str | None, list[str]]:
    if "message_id" in rec:
        return rec["in_reply_to"], rec["references"]
    headers = {h["name"]: h["value"] for h in rec["internetMessageHeaders"]}
    return headers.get("In-Reply-To"), headers.get("References", "").split()


def _body(rec: dict) -> str:
    return rec["body"] if isinstance(rec["body"], str) else rec["body"]["content"]


def _unique(records: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for r in records:
        if _mid(r) not in seen:
            seen.add(_mid(r))
            out.append(r)
    return out


def _threads(records: list[dict]) -> int:
    """Conversations the way ingest must see them: source conversation id joined with In-Reply-To/References."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    mids = set()
    for r in records:
        mid = "m:" + _mid(r)
        mids.add(mid)
        union(mid, "c:" + _conv(r))
        irt, refs = _links(r)
        for other in ([irt] if irt else []) + refs:
            union(mid, "m:" + other)
    return len({find(m) for m in mids})


@pytest.fixture(scope="module", params=synth.SHAPES)
def stream(request) -> tuple[str, list[dict]]:
    return request.param, list(synth.generate(6000, seed=11, shape=request.param))


# --- determinism --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", synth.SHAPES)
def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path, shape):
    a = synth.write_jsonl(tmp_path / "a.jsonl", 3000, seed=5, shape=shape)
    b = synth.write_jsonl(tmp_path / "b.jsonl", 3000, seed=5, shape=shape)
    c = synth.write_jsonl(tmp_path / "c.jsonl", 3000, seed=6, shape=shape)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # generate() itself is deterministic too, and write_jsonl writes exactly what it yields
    lines = a.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == list(synth.generate(3000, seed=5, shape=shape))


@pytest.mark.parametrize("shape", synth.SHAPES)
@pytest.mark.parametrize("body_bytes", [0, 1000, 5000])
def test_fast_writer_matches_the_json_encoder(tmp_path, shape, body_bytes):
    path = synth.write_jsonl(tmp_path / "w.jsonl", 1500, seed=21, shape=shape, body_bytes=body_bytes)
    expected = "".join(
        synth.to_json(r) + "\n" for r in synth.generate(1500, seed=21, shape=shape, body_bytes=body_bytes)
    )
    assert path.read_text(encoding="utf-8") == expected
    assert synth.to_json({"a": 'é\n"'}) == json.dumps(
        {"a": 'é\n"'}, ensure_ascii=False, separators=(",", ":")
    )


def test_message_ids_do_not_collide_across_seeds():
    a = {_mid(r) for r in synth.generate(2000, seed=1)}
    b = {_mid(r) for r in synth.generate(2000, seed=2)}
    assert not a & b


def test_body_size_changes_text_not_structure():
    small = list(synth.generate(800, seed=3, body_bytes=300))
    large = list(synth.generate(800, seed=3, body_bytes=3000))
    assert [_mid(r) for r in small] == [_mid(r) for r in large]
    assert [_links(r) for r in small] == [_links(r) for r in large]


# --- counts -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 2500])
def test_yields_exactly_n_records(n):
    assert sum(1 for _ in synth.generate(n, seed=n)) == n
    assert synth.expected_counts(n, seed=n).records == n


def test_duplicates_are_about_one_percent_and_exact_copies(stream):
    shape, records = stream
    first: dict[str, dict] = {}
    dups = 0
    for r in records:
        mid = _mid(r)
        if mid in first:
            dups += 1
            assert r == first[mid]
            assert r is not first[mid]
        else:
            first[mid] = r
    assert 0.005 <= dups / len(records) <= 0.015
    assert synth.expected_counts(len(records), seed=11, shape=shape).duplicates == dups


def test_expected_counts_agree_with_the_stream(stream):
    shape, records = stream
    counts = synth.expected_counts(len(records), seed=11, shape=shape)
    unique = _unique(records)
    assert counts.records == len(records)
    assert counts.unique_emails == len(unique) == len({r["id"] for r in records})
    assert counts.duplicates == len(records) - len(unique)
    assert counts.conversations == _threads(records)
    # every foreign reply has a conversation id of its own: naive grouping by id over-counts by exactly that
    assert len({_conv(r) for r in unique}) == counts.conversations + counts.foreign_replies
    assert counts.completed_conversations == sum(1 for r in unique if COMPLETION.search(_body(r)))


@pytest.mark.parametrize("n,seed", [(1, 1), (10, 2), (333, 3), (20000, 4)])
def test_expected_counts_for_other_sizes(n, seed):
    records = list(synth.generate(n, seed=seed))
    counts = synth.expected_counts(n, seed=seed)
    assert counts.unique_emails == len(_unique(records))
    assert counts.conversations == _threads(records)


def test_conversation_mix(stream):
    _, records = stream
    unique = _unique(records)
    sizes = Counter(_conv(r) for r in unique if not _conv(r).rsplit("-", 1)[1].startswith("x"))
    counts = synth.expected_counts(len(records), seed=11)
    assert max(sizes.values()) <= 8
    assert 2.5 <= len(unique) / counts.conversations <= 4.0
    assert 0.03 <= counts.foreign_replies / (len(unique) - counts.conversations) <= 0.07
    assert 0.25 <= counts.completed_conversations / counts.conversations <= 0.42


def test_completion_phrase_only_on_the_last_email_of_a_conversation(stream):
    _, records = stream
    unique = _unique(records)
    replied_to = {_links(r)[0] for r in unique}
    finished = [r for r in unique if COMPLETION.search(_body(r))]
    assert finished
    assert all(_mid(r) not in replied_to for r in finished)


# --- shape validity -----------------------------------------------------------------------------------------
def test_records_have_the_shape_fields_and_round_trip(stream):
    shape, records = stream
    fields = FLAT_FIELDS if shape == "flat" else GRAPH_FIELDS
    for r in records:
        assert json.loads(json.dumps(r, ensure_ascii=False)) == r
        for name, kind in fields.items():
            assert isinstance(r[name], kind), (name, r[name])
        assert r["importance"] in ("low", "normal", "high")
        assert r["subject"] and _body(r)
        if shape == "flat":
            assert re.fullmatch(r"[^<>]+ <[^@\s]+@[^@\s]+>", r["from"])
            assert all("@" in a for a in r["to"] + r["cc"])
            when = datetime.fromisoformat(r["date"])
        else:
            assert r["body"]["contentType"] in ("text", "html")
            assert set(r["from"]["emailAddress"]) == {"name", "address"}
            assert all("@" in x["emailAddress"]["address"] for x in r["toRecipients"] + r["ccRecipients"])
            assert r["bodyPreview"] == r["bodyPreview"][:255]
            when = datetime.fromisoformat(r["receivedDateTime"].replace("Z", "+00:00"))
        assert when.year == 2025


def test_reply_chains_point_backwards(stream):
    _, records = stream
    seen: set[str] = set()
    replies = 0
    for r in records:
        irt, refs = _links(r)
        if irt:
            replies += 1
            assert irt in seen
            assert refs and refs[-1] == irt and set(refs) <= seen
        else:
            assert refs == []
        seen.add(_mid(r))
    assert replies > len(records) / 2


def test_graph_has_html_bodies_and_flat_is_plain():
    graph = list(synth.generate(1000, seed=8, shape="graph"))
    html = [r for r in graph if r["body"]["contentType"] == "html"]
    assert 0.1 <= len(html) / len(graph) <= 0.3
    assert all(r["body"]["content"].startswith("<html>") for r in html)
    assert not any(r["body"].startswith("<") for r in synth.generate(300, seed=8))


def test_bodies_are_about_body_bytes_and_carry_business_entities():
    for size in (1000, 3000):
        bodies = [_body(r) for r in synth.generate(2000, seed=9, body_bytes=size)]
        mean = sum(len(b.encode()) for b in bodies) / len(bodies)
        assert 0.8 * size <= mean <= 1.25 * size, (size, mean)
    text = "\n".join(bodies)
    for pattern in (
        r"\bPO#?\s?\d{10}\b",
        r"\bP\.O\. #\d{10}\b",
        r"Purchase Order No\. \d{10}",
        r"Quote #\d{7,10}",
        r"Q-\d{6,10}",
        r"\bCase \d{8}\b",
        r"\bINC\d{7}\b",
        r"ticket #\d{8}",
        r"\$\d[\d,]*\.\d\d",
        r"USD \d",
        r"\d USD\b",
        r"€\d",
        r"\b2025-\d\d-\d\d\b",
        r"\b\d{1,2}/\d{1,2}/2025\b",
        r"\b[A-Z][a-z]{2} \d{1,2}, 2025\b",
        r"\b\d{1,2} [A-Z][a-z]+ 2025\b",
        r"\b[A-Z]{2,3}-\d{4}-[A-Z]\b",
        r"555-01\d\d",
        r"\b(?:urgent|critical|ASAP|escalate|deadline|today|emergency)\b",
        r"\brush\b",
        r"\b(?:cancel|void)\b",
        r"\n> ",
    ):
        assert re.search(pattern, text, flags=re.IGNORECASE if pattern.startswith(r"\b(") else 0), pattern


def test_thread_subjects_are_unique():
    """Subject-based grouping must never merge two synthetic conversations."""
    firsts = [r for r in _unique(list(synth.generate(5000, seed=12))) if r["in_reply_to"] is None]
    subjects = [r["subject"].removeprefix("URGENT: ") for r in firsts]
    assert len(set(subjects)) == len(subjects)


# --- API and CLI errors -------------------------------------------------------------------------------------
def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="shape"):
        synth.generate(5, shape="xml")  # at call time, not on first iteration
    with pytest.raises(ValueError, match="n_emails"):
        synth.expected_counts(-1)
    with pytest.raises(ValueError, match="body_bytes"):
        synth.generate(5, body_bytes=-3)
    with pytest.raises(ValueError, match="seed"):
        synth.generate(5, seed="7")


def test_cli_writes_the_same_file_as_write_jsonl(tmp_path, capsys):
    out = tmp_path / "sub" / "cli.jsonl"
    assert synth.main(["400", "-o", str(out), "--seed", "3", "--shape", "graph"]) == 0
    ref = synth.write_jsonl(tmp_path / "ref.jsonl", 400, seed=3, shape="graph")
    assert out.read_bytes() == ref.read_bytes()
    counts = synth.expected_counts(400, 3)
    assert f"{counts.unique_emails} unique emails" in capsys.readouterr().err


def test_script_entry_point(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "synth.py"), "50", "-o", str(out), "--seed", "4", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == synth.write_jsonl(tmp_path / "r.jsonl", 50, seed=4).read_bytes()
    bad = subprocess.run(
        [sys.executable, str(REPO / "tests" / "synth.py"), "10", "--shape", "xml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

"""Readers on bad, broken and hostile input: a Reject or a note, never a crash.

Rule under test: one unusable record becomes a ``Reject`` naming where it is and why, and the rest
of the file is still read; only a path that cannot be read at all raises ``InputError``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from mailcli.ingest.model import MAX_BODY_CHARS, Email, InputError, Reject, Skipped
from mailcli.ingest.readers import detect_format, iter_many, iter_records


def split(records) -> tuple[list[Email], list[Reject]]:
    records = list(records)
    return [r for r in records if isinstance(r, Email)], [r for r in records if isinstance(r, Reject)]


def jsonl(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
    return path


GOOD_1 = json.dumps({"subject": "first", "body": "b"})
GOOD_2 = json.dumps({"subject": "second", "body": "b"})


# ---------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------


def test_malformed_json_line_is_rejected_and_good_lines_around_it_kept(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", GOOD_1, '{"subject": "x", "body": "b" "oops": 1}', GOOD_2)
    good, bad = split(iter_records(path))
    assert [e.subject for e in good] == ["first", "second"]
    assert [e.locator for e in good] == ["line 1", "line 3"]
    [reject] = bad
    assert (reject.source, reject.locator) == (str(path), "line 2")
    assert reject.reason.startswith("invalid JSON: Expecting ',' delimiter at column")
    assert reject.reason.endswith("fix the line or remove it")


def test_truncated_json_line_says_it_was_cut_off(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", '{"subject": "cut", "body": "half a bo')
    [reject] = list(iter_records(path))
    assert "truncated" in reject.reason and reject.locator == "line 1"


@pytest.mark.parametrize(
    ("line", "got"),
    [("[1, 2]", "list"), ('"a string"', "string"), ("42", "int"), ("null", "null"), ("true", "bool")],
)
def test_json_that_is_not_an_object_is_rejected(tmp_path, line, got):
    [reject] = list(iter_records(jsonl(tmp_path / "n.jsonl", line)))
    hint = ": a JSON array is not JSON Lines; convert it with `jq -c '.[]' FILE`" if got == "list" else ""
    assert reject == Reject(str(tmp_path / "n.jsonl"), "line 1", f"expected a JSON object, got {got}{hint}")


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "x", "from": "a@x.com", "to": ["b@x.com"], "date": "2025-04-12T11:00:00-04:00"},
        {"unrelated": True},
        {},
        {"subject": None, "body": None},
        {"subject": "", "body": " ", "body_html": ""},  # empty strings have nothing to analyse either
        {"internetMessageId": "<a@x>", "subject": "", "body": {"contentType": "text", "content": ""}},
    ],
)
def test_missing_subject_and_body_is_rejected(tmp_path, obj):
    [reject] = list(iter_records(jsonl(tmp_path / "s.jsonl", json.dumps(obj))))
    assert reject.reason == "missing subject and body"


def test_empty_subject_and_body_with_attachments_is_kept(tmp_path):
    lines = [
        json.dumps({"subject": "", "body": "", "has_attachments": True}),
        json.dumps({"internetMessageId": "<a@x>", "subject": "", "hasAttachments": True}),
    ]
    good, bad = split(iter_records(jsonl(tmp_path / "a.jsonl", *lines)))
    assert not bad and [e.has_attachments for e in good] == [True, True]


def test_lone_surrogate_escapes_are_replaced_with_a_note(tmp_path):
    line = '{"subject": "bad \\ud800 escape", "body": "emoji \\ud83d\\ude00 is fine"}'
    [e] = list(iter_records(jsonl(tmp_path / "s.jsonl", line)))
    assert e.subject == "bad \ufffd escape"
    assert e.body == "emoji \U0001f600 is fine"
    e.subject.encode("utf-8")  # storable
    assert e.notes == ["invalid \\u escapes (lone surrogates) replaced with U+FFFD"]


def test_gmail_list_entry_without_content_says_how_to_fetch_messages(tmp_path):
    [reject] = list(iter_records(jsonl(tmp_path / "g.jsonl", json.dumps({"id": "1", "threadId": "2"}))))
    assert reject.reason.startswith("missing subject and body") and "format=full" in reject.reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"subject": 4500012399}, "field 'subject' must be a string, got int"),
        ({"body": ["a", "b"]}, "field 'body' must be a string, got list"),
        (
            {"to": {"address": "a@x.com"}},
            "field 'to' must be a list of addresses or a comma-separated string, got object",
        ),
        (
            {"cc": [1, 2]},
            "field 'cc' must be a list of addresses or a comma-separated string, got a list containing int",
        ),
        (
            {"references": ["<a@x>", None]},
            "field 'references' must be a list of strings, got a list containing null",
        ),
        (
            {"from": ["a@x.com"]},
            "field 'from' must be an address or an {emailAddress: {name, address}} object, got list",
        ),
        ({"message_id": 12}, "field 'message_id' must be a string, got int"),
        ({"references": 7}, "field 'references' must be a list or a space-separated string, got int"),
        ({"id": {"x": 1}}, "field 'id' must be a string, got object"),
        ({"id": True}, "field 'id' must be a string, got bool"),
    ],
)
def test_wrong_field_types_are_rejected_naming_the_field(tmp_path, fields, reason):
    obj = {"subject": "s", "body": "b", **fields}
    [reject] = list(iter_records(jsonl(tmp_path / "w.jsonl", json.dumps(obj))))
    assert reject.reason == reason


def test_graph_wrong_field_types_are_rejected_naming_the_field(tmp_path):
    lines = [
        json.dumps({"internetMessageId": "<a@x>", "subject": "s", "toRecipients": {"emailAddress": {}}}),
        json.dumps(
            {"internetMessageId": "<a@x>", "subject": "s", "body": {"contentType": "html", "content": 5}}
        ),
        json.dumps({"internetMessageId": "<a@x>", "subject": "s", "from": 17}),
        json.dumps({"internetMessageId": "<a@x>", "subject": "s", "from": {"emailAddress": "a@x.com"}}),
    ]
    _, bad = split(iter_records(jsonl(tmp_path / "g.jsonl", *lines)))
    assert [r.reason for r in bad] == [
        "field 'toRecipients' must be a list of addresses or a comma-separated string, got object",
        "field 'body.content' must be a string, got int",
        "field 'from' must be an address or an {emailAddress: {name, address}} object, got int",
        "field 'from' must be an address or an {emailAddress: {name, address}} object, got object",
    ]


def test_address_spellings_are_interchangeable_between_shapes(tmp_path):
    """Harmless: a Graph record with address strings, a flat record with Graph address objects."""
    lines = [
        json.dumps(
            {"internetMessageId": "<a@x>", "subject": "s", "from": "A <A@x.com>", "toRecipients": ["b@x.com"]}
        ),
        json.dumps(
            {"subject": "s", "from": {"emailAddress": {"address": "C@x.com"}}, "to": [{"address": "d@x.com"}]}
        ),
    ]
    good, bad = split(iter_records(jsonl(tmp_path / "a.jsonl", *lines)))
    assert not bad
    assert [(e.from_addr, e.to) for e in good] == [("a@x.com", ["b@x.com"]), ("c@x.com", ["d@x.com"])]


def test_junk_message_ids_are_dropped_not_used_for_deduplication(tmp_path):
    lines = [
        json.dumps({"subject": "s", "message_id": junk, "references": [junk, "<ok@x>"]})
        for junk in ("<<>>", "a b", "<>")
    ]
    good, _ = split(iter_records(jsonl(tmp_path / "j.jsonl", *lines)))
    assert [(e.message_id, e.references) for e in good] == [(None, ["ok@x"])] * 3


def test_harmless_types_are_coerced_or_noted_not_rejected(tmp_path):
    obj = {
        "id": 123,  # number id -> "123"
        "conversation_id": 7.0,
        "subject": "s",
        "date": {"not": "a date"},  # refinement field: note, not reject
        "importance": "whenever",
        "in_reply_to": ["<p@x>"],
    }
    [e] = list(iter_records(jsonl(tmp_path / "c.jsonl", json.dumps(obj))))
    assert isinstance(e, Email)
    assert (e.source_id, e.source_conversation_id, e.in_reply_to) == ("123", "7", "p@x")
    assert e.date is None and e.importance == "normal"
    assert e.notes == [
        "date unparseable: expected a string, got dict",
        "importance 'whenever' not understood; using normal",
    ]


def test_invalid_utf8_bytes_in_a_line_keep_the_record_with_a_note(tmp_path):
    bad_line = b'{"subject": "Caf\xe9 order", "body": "price \xff\xfe 5"}'
    good, bad = split(iter_records(jsonl(tmp_path / "u.jsonl", bad_line, GOOD_2)))
    assert not bad
    assert good[0].subject == "Caf\ufffd order"
    assert good[0].notes == ["invalid UTF-8 bytes replaced with U+FFFD"]
    assert good[1].notes == []


def test_huge_body_is_kept_trimmed_and_noted(tmp_path):
    size = 20 * 1024 * 1024
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        f.write('{"subject": "big", "body": "' + "x" * size + '"}\n' + GOOD_2 + "\n")
    good, bad = split(iter_records(path))
    assert not bad and len(good) == 2
    assert len(good[0].body) == MAX_BODY_CHARS
    assert good[0].notes == [f"body trimmed from {size} to {MAX_BODY_CHARS} characters"]


def test_huge_mime_body_is_kept_trimmed_and_noted(tmp_path):
    path = tmp_path / "big.eml"
    path.write_bytes(b"From: a@x.com\nSubject: big\n\n" + b"y" * (MAX_BODY_CHARS + 10))
    [e] = list(iter_records(path))
    assert len(e.body) == MAX_BODY_CHARS and e.notes[0].startswith("body trimmed from 1000010")


def test_blank_lines_are_skipped_silently(tmp_path):
    good, bad = split(iter_records(jsonl(tmp_path / "b.jsonl", "", GOOD_1, "   ", "\t", GOOD_2, "")))
    assert not bad and [e.locator for e in good] == ["line 2", "line 5"]


def test_pretty_printed_json_gets_one_reject_with_the_fix(tmp_path):
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps([{"subject": "a"}, {"subject": "b"}], indent=2))
    [reject] = list(iter_records(path))
    assert "not JSON Lines" in reject.reason and "jq -c" in reject.reason


def test_utf8_bom_on_the_first_line_is_ignored(tmp_path):
    path = jsonl(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + GOOD_1.encode(), GOOD_2)
    assert [e.subject for e in split(iter_records(path))[0]] == ["first", "second"]


# ---------------------------------------------------------------------------------------------
# Files and paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.mbox", "empty.eml", "empty"])
def test_empty_file_is_passed_over_and_named(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert list(iter_records(tmp_path / name)) == [Skipped(str(tmp_path / name), "an empty file")]


@pytest.mark.parametrize("name", ["noise.bin", "noise.jsonl", "noise.eml", "noise"])
def test_binary_file_is_one_reject_not_an_exception(tmp_path, name):
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(50_000)) + b"\x00\x00"
    path = tmp_path / name
    path.write_bytes(data)
    assert detect_format(path) == "binary"
    [reject] = list(iter_records(path))
    assert (reject.source, reject.locator) == (str(path), "file")
    assert "not a supported export" in reject.reason


def test_undecodable_noise_without_nul_bytes_is_binary(tmp_path):
    rng = random.Random(3)
    data = bytes(rng.choice([b for b in range(1, 256) if b != 10]) for _ in range(4096))
    path = tmp_path / "noise"
    path.write_bytes(data)
    assert detect_format(path) == "binary"


def test_missing_path_raises_input_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as info:
        iter_records(missing)  # raised at call time, before any iteration
    assert str(info.value) == f"{missing} does not exist: check the path"
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        detect_format(missing)


def test_iter_many_checks_every_path_before_reading(tmp_path):
    good = jsonl(tmp_path / "a.jsonl", GOOD_1)
    with pytest.raises(InputError, match="does not exist"):
        iter_many([good, tmp_path / "typo.jsonl"])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_raises_input_error(tmp_path):
    path = jsonl(tmp_path / "secret.jsonl", GOOD_1)
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            iter_records(path)
    finally:
        path.chmod(0o644)


def test_permission_problem_raises_input_error(tmp_path, monkeypatch):
    """Same as above, but also runs as root: the open() the reader does is made to fail."""
    from mailcli.ingest import readers

    path = jsonl(tmp_path / "secret.jsonl", GOOD_1)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(readers, "open", denied, raising=False)
    with pytest.raises(InputError) as info:
        iter_records(path)
    assert str(info.value) == f"cannot read {path}: permission denied: check its permissions"


def test_unreadable_file_inside_a_directory_is_a_reject_not_the_end(tmp_path, monkeypatch):
    from mailcli.ingest import readers

    jsonl(tmp_path / "a.jsonl", GOOD_1)
    jsonl(tmp_path / "b.jsonl", GOOD_2)
    real_open = readers._open

    def flaky(path):
        if path.name == "a.jsonl":
            raise PermissionError(13, "Permission denied")
        return real_open(path)

    monkeypatch.setattr(readers, "_open", flaky)
    good, bad = split(iter_records(tmp_path))
    assert [e.subject for e in good] == ["second"]
    assert [(Path(r.source).name, r.reason) for r in bad] == [
        ("a.jsonl", "cannot read file: Permission denied")
    ]


def test_unknown_format_and_misused_maildir_raise_input_error(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", GOOD_1)
    with pytest.raises(InputError, match="unknown format 'csv'"):
        iter_records(path, "csv")
    with pytest.raises(InputError, match="not a Maildir"):
        iter_records(tmp_path, "maildir")
    with pytest.raises(InputError, match="not a Maildir"):
        iter_records(path, "maildir")


def test_directory_of_mixed_files_keeps_good_records_and_rejects_the_png(tmp_path):
    jsonl(tmp_path / "a.jsonl", GOOD_1, GOOD_2)
    (tmp_path / "b.eml").write_bytes(b"From: a@x.com\nSubject: from eml\n\nbody\n")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    (tmp_path / "d.txt").write_text("shopping list\nmilk\n")
    good, bad = split(iter_records(tmp_path))
    assert [e.subject for e in good] == ["first", "second", "from eml"]
    assert [(r.source, r.locator) for r in bad] == [
        (str(tmp_path / "c.png"), "file"),
        (str(tmp_path / "d.txt"), "file"),
    ]
    assert bad[0].reason.endswith("not a supported export (expected .jsonl, .mbox, .eml or a Maildir)")
    assert bad[1].reason == "not a supported export (expected .jsonl, .mbox, .eml or a Maildir)"


def test_eml_without_headers_is_rejected(tmp_path):
    path = tmp_path / "letter.eml"
    path.write_bytes(b"Dear Sir,\n\nPlease find the invoice.\n")
    [reject] = list(iter_records(path))
    assert reject.locator == "letter.eml" and reject.reason.startswith("no email headers found")


# ---------------------------------------------------------------------------------------------
# Charsets and broken MIME
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["x-unknown", "utf-88", "unknown-8bit", "base64", '"bogus"'])
def test_unknown_charset_labels_fall_back_to_detection(tmp_path, label):
    text = "Sehr geehrte Damen und Herren, die Größe der Lieferung für München ist bestätigt. Grüße"
    data = f"From: a@x.com\nSubject: s\nContent-Type: text/plain; charset={label}\n\n".encode() + text.encode(
        "cp1252"
    )
    [e] = list(iter_records(_write(tmp_path / "c.eml", data)))
    assert isinstance(e, Email)
    assert "Größe" in e.body and "München" in e.body
    assert e.notes and label.strip('"') in e.notes[0]


def test_declared_charset_that_does_not_fit_the_bytes_falls_back(tmp_path):
    data = "From: a@x.com\nSubject: s\nContent-Type: text/plain; charset=us-ascii\n\nZoë – €99\n".encode()
    [e] = list(iter_records(_write(tmp_path / "c.eml", data)))
    assert e.body == "Zoë – €99"
    assert e.notes == ["text is not 'us-ascii' as declared; read as UTF-8"]


def test_undecodable_body_bytes_never_raise(tmp_path):
    data = (
        b"From: a@x.com\nSubject: s\nContent-Type: text/plain; charset=utf-8\n\n" + bytes(range(128, 256)) * 4
    )
    [e] = list(iter_records(_write(tmp_path / "c.eml", data)))
    assert isinstance(e, Email) and e.body


def test_encoded_word_subject_in_a_bad_charset_is_decoded_with_fallback(tmp_path):
    data = (
        b"From: =?x-unknown?Q?J=E9r=F4me?= <j@x.com>\n"
        b"Subject: =?utf-88?B?Q2Fmw6k=?= =?iso-8859-1?Q?cr=E8me?= plain\n\nb\n"
    )
    [e] = list(iter_records(_write(tmp_path / "c.eml", data)))
    assert e.subject == "Cafécrème plain"  # whitespace between adjacent encoded words is dropped
    assert e.from_name == "Jérôme" and e.from_addr == "j@x.com"


def test_broken_headers_degrade_instead_of_failing(tmp_path):
    data = (
        b"From: <<<@@>>\n"
        b'To: ,,,;;; "unterminated <b@x.com\n'
        b"Cc: undisclosed-recipients:;\n"
        b"Subject: =?utf-8?Q?caf=C3=A9 unterminated\n"
        b"Date: Mon, 32 Foo 2024 99:99:99 +9999\n"
        b"Message-ID: <>\n"
        b"References: <a@b> junk <c@d\n"
        b"X-Raw-8bit: r\xc3\xa9sum\xc3\xa9 \xff\n"
        b'Content-Type: text/plain; charset="utf-88"; ;;=\n'
        b"Content-Transfer-Encoding: base64\n"
        b"this line is garbage, not a header\n"
        b"\n"
        b"!!not base64!!\n"
    )
    [e] = list(iter_records(_write(tmp_path / "broken.eml", data)))
    assert isinstance(e, Email)
    assert e.subject == "=?utf-8?Q?caf=C3=A9 unterminated"  # left as it is, not a crash
    assert e.date is None and any(n.startswith("date unparseable") for n in e.notes)
    assert e.message_id is None  # "<>" must not become an id that merges unrelated mail
    assert e.references == ["a@b"]
    assert e.to == ["b@x.com"]


def test_header_only_8bit_text_is_decoded(tmp_path):
    data = b"From: J\xe9r\xf4me <j@x.com>\nSubject: r\xc3\xa9sum\xc3\xa9\n\nb\n"
    [e] = list(iter_records(_write(tmp_path / "c.eml", data)))
    assert (e.subject, e.from_name) == ("résumé", "Jérôme")


def test_multipart_without_boundary_keeps_its_text(tmp_path):
    data = b"From: a@x.com\nSubject: s\nContent-Type: multipart/mixed\n\nthe only text\n"
    [e] = list(iter_records(_write(tmp_path / "c.eml", data)))
    assert e.body == "the only text"


@pytest.mark.parametrize("depth", [200, 5000])
def test_deeply_nested_multipart_does_not_blow_the_stack(tmp_path, depth):
    head = b"From: a@x.com\nSubject: deep\nContent-Type: multipart/mixed; boundary=b0\n\n"
    parts = b"".join(
        f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n".encode() for i in range(depth)
    )
    tail = f"--b{depth}\nContent-Type: text/plain\n\ninner\n".encode()
    [record] = list(iter_records(_write(tmp_path / "deep.eml", head + parts + tail)))
    if depth == 5000:  # beyond what the stdlib parser can recurse into: a reject, not a crash
        assert isinstance(record, Reject) and "nested too deeply" in record.reason
    else:
        assert isinstance(record, Email) and record.subject == "deep"


def test_mbox_message_without_headers_is_rejected_and_others_kept(tmp_path):
    data = (
        b"From a@x Mon Mar 31 14:02:11 2025\nSubject: ok\n\nbody\n\n"
        b"From b@x Mon Mar 31 14:03:11 2025\n\njust text, no headers\n\n"
        b"From c@x Mon Mar 31 14:04:11 2025\nSubject: also ok\n\nbody\n"
    )
    good, bad = split(iter_records(_write(tmp_path / "x.mbox", data)))
    assert [e.subject for e in good] == ["ok", "also ok"]
    assert [(r.locator, r.reason.split(" (")[0]) for r in bad] == [("message 2", "no email headers found")]


def test_two_from_lines_in_a_row_report_the_empty_message(tmp_path):
    data = b"From a@x Mon Mar 31 14:02:11 2025\nFrom b@x Mon Mar 31 14:03:11 2025\nSubject: s\n\nb\n"
    records = list(iter_records(_write(tmp_path / "x.mbox", data)))
    assert [(r.locator, getattr(r, "reason", None)) for r in records] == [
        ("message 1", "empty message"),
        ("message 2", None),
    ]


def test_single_text_part_with_a_file_name_is_the_body(tmp_path):
    data = b'From: a@x.com\nSubject: s\nContent-Type: text/plain; name="note.txt"\n\nthe text\n'
    [e] = list(iter_records(_write(tmp_path / "n.eml", data)))
    assert e.body == "the text" and e.has_attachments is False


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Folder trees: every file read or named
# ---------------------------------------------------------------------------------------------


def message(subject: str, extra_headers: str = "") -> bytes:
    return f"{extra_headers}From: a@x.com\nSubject: {subject}\nMessage-ID: <{subject}@x>\n\nbody\n".encode()


def maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


@pytest.mark.parametrize("fmt", ["auto", "maildir"])
def test_a_maildir_tree_is_read_whole_and_what_is_not_mail_is_named(tmp_path, fmt):
    top = maildir(tmp_path / "Mail")
    (top / "cur" / "1:2,S").write_bytes(message("top"))
    (top / "cur" / "2:2,S").write_bytes(b"just some notes, no headers\n")  # in cur/ but not mail
    (top / "tmp" / "3").write_bytes(message("arriving"))
    (top / "loose").write_bytes(message("loose"))  # beside cur/
    (top / "dovecot-uidlist").write_bytes(b"3 V1700000000 N4\n1 1:2,S\n")
    (top / "courierimapkeywords").mkdir()
    (top / "courierimapkeywords" / ":list").write_bytes(b"$Label1\n\n1:2,S 0\n")
    (top / "notes.pdf").write_bytes(b"%PDF-1.4\n\x00\x01\x02binary")
    (top / ".uidvalidity").write_bytes(b"1\n")  # mbsync's bookkeeping: hidden, passed over
    (maildir(top / ".Sent") / "cur" / "4:2,S").write_bytes(message("plusplus"))  # Maildir++
    (maildir(top / "lists" / "dev") / "new" / "5").write_bytes(message("nested"))  # plain nesting
    (top / "lists" / "archive.mbox").write_bytes(b"From a@x Mon Jan  1 00:00:00 2024\n" + message("in mbox"))
    records = list(iter_records(top, fmt))
    emails, rejects = split(records)
    assert sorted(e.subject for e in emails) == ["in mbox", "loose", "nested", "plusplus", "top"]
    # files that are not mail, and a message left in tmp/: rejects, each with its reason
    named = {(Path(r.source) / r.locator if Path(r.source) == top else Path(r.source)).relative_to(top).as_posix():
             r.reason for r in rejects}  # fmt: skip
    assert sorted(named) == ["cur/2:2,S", "notes.pdf", "tmp/3"]
    assert "not an RFC 822 message" in named["cur/2:2,S"]
    assert "binary data" in named["notes.pdf"]
    assert "move it to new/" in named["tmp/3"]
    # mail tools' bookkeeping: passed over, each one named
    skipped = {
        Path(r.source).relative_to(top).as_posix(): r.reason for r in records if isinstance(r, Skipped)
    }
    assert skipped == {
        ".uidvalidity": "a hidden file",
        "courierimapkeywords": "a mail server's Maildir bookkeeping folder",
        "dovecot-uidlist": "a mail server's Maildir bookkeeping file",
    }
    assert len(records) == len(emails) + len(rejects) + len(skipped)


def test_a_symlink_back_up_the_tree_is_read_once(tmp_path):
    top = maildir(tmp_path / "Mail")
    (top / "cur" / "1").write_bytes(message("once"))
    (top / "again").symlink_to(top)
    assert [e.subject for e in iter_records(top)] == ["once"]


def test_a_header_block_longer_than_the_first_4_kb_is_detected(tmp_path):
    """The 4,096th byte falls inside a header name; the known headers come after it."""
    padding = "".join(f"X-Trace-{i:03d}: {'a' * 60}\n" for i in range(70))
    path = tmp_path / "1700000000.M1P2.host:2,S"  # no extension: detected by its headers
    path.write_bytes(message("long", padding))
    assert path.read_bytes().index(b"\n\n") > 4096
    assert detect_format(path) == "eml"
    [e] = iter_records(path)
    assert isinstance(e, Email) and e.subject == "long"


def test_a_maildir_with_new_only_and_a_maildirpp_folder_with_cur_only_are_read_whole(tmp_path):
    """A mailbox never opened has new/ but no cur/; a Maildir++ folder (.Sent) may hold cur/ alone:
    both are Maildirs, every message in them is read, and tmp/ is never taken for mail."""
    from mailcli.ingest.model import Email, Reject
    from mailcli.ingest.readers import iter_records

    md = tmp_path / "md"

    def msg(folder: Path, name: str, mid: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(
            f"Message-ID: <{mid}@x>\nFrom: a@x.example\nSubject: {mid}\n\nbody {mid}\n"
        )

    msg(md / "new", "1", "n1")
    msg(md / "new", "2", "n2")
    msg(md / "tmp", "3", "t3")  # being delivered: not yet mail
    msg(md / ".Sent" / "cur", "4:2,S", "s4")
    msg(md / ".Sent" / "cur", "5:2,S", "s5")
    for fmt in ("auto", "maildir"):
        records = list(iter_records(md, fmt))
        emails = sorted(r.message_id for r in records if isinstance(r, Email))
        assert emails == ["n1@x", "n2@x", "s4@x", "s5@x"], (fmt, records)
        assert [(r.locator, "tmp/" in r.reason) for r in records if isinstance(r, Reject)] == [
            ("tmp/3", True)
        ]


def test_an_mbox_cut_off_inside_its_last_message_keeps_it_with_a_note(tmp_path):
    """A copy interrupted mid-message: the last message is kept and says it may be cut off; a
    complete file has no such note."""
    from mailcli.ingest.mime import CUT_NOTE
    from mailcli.ingest.model import Email
    from mailcli.ingest.readers import iter_records

    whole = (
        b"From a@x Mon Jan  1 00:00:00 2024\nMessage-ID: <1@x>\nFrom: a@x.example\nSubject: one\n\nfirst body\n\n"
        b"From a@x Mon Jan  1 00:00:01 2024\nMessage-ID: <2@x>\nFrom: a@x.example\nSubject: two\n\n"
        b"a long second body that the copy cut in the middle of a line\n"
    )
    (tmp_path / "whole.mbox").write_bytes(whole)
    (tmp_path / "cut.mbox").write_bytes(whole[:-30])
    complete = [r for r in iter_records(tmp_path / "whole.mbox") if isinstance(r, Email)]
    cut = [r for r in iter_records(tmp_path / "cut.mbox") if isinstance(r, Email)]
    assert [CUT_NOTE in r.notes for r in complete] == [False, False]
    assert [CUT_NOTE in r.notes for r in cut] == [False, True]

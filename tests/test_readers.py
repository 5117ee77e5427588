"""Readers: every export shape becomes normalized ``Email`` records.

Bad and hostile input lives in test_readers_bad_input.py. Inputs are built in tmp_path so each
test shows exactly the bytes it feeds in.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import sys
from pathlib import Path

import pytest

from mailcli.ingest.jsonl import iter_jsonl
from mailcli.ingest.mime import iter_mbox
from mailcli.ingest.model import Email, Reject, Skipped
from mailcli.ingest.readers import FORMATS, detect_format, iter_many, iter_records
from mailcli.ingest.text import html_to_text

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def emails(records) -> list[Email]:
    records = list(records)
    bad = [r for r in records if not isinstance(r, Email)]
    assert not bad, f"unexpected rejects: {bad}"
    return records


def write_jsonl(path: Path, *objs) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def b64url(data: bytes | str, pad: bool = False) -> str:
    raw = data.encode() if isinstance(data, str) else data
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


# ---------------------------------------------------------------------------------------------
# JSONL: flat
# ---------------------------------------------------------------------------------------------


def test_flat_record_is_normalized(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        {
            "id": 42,  # a number id is coerced to a string
            "conversation_id": "c1",
            "subject": "PO 4500012345",
            "body": "Please ship.",
            "from": '"Dana W" <Dana.W@Globex.COM>',
            "to": ["Orders <ORDERS@acme.com>", "tom@acme.com"],
            "cc": "a@x.com, B <b@x.com>",
            "bcc": [],
            "date": "2025-03-04T10:00:00+02:00",
            "message_id": "<ABC@Globex.com>",
            "in_reply_to": "<parent@x>",
            "references": "<root@x> <parent@x>",
            "importance": "High",
        },
    )
    [e] = emails(iter_records(path))
    assert (e.source, e.locator) == (str(path), "line 1")
    assert e.source_id == "42" and e.source_conversation_id == "c1"
    assert (e.subject, e.body) == ("PO 4500012345", "Please ship.")
    assert (e.from_name, e.from_addr) == ("Dana W", "dana.w@globex.com")
    assert e.to == ["orders@acme.com", "tom@acme.com"]
    assert e.cc == ["a@x.com", "b@x.com"] and e.bcc == []
    assert e.date == "2025-03-04T08:00:00+00:00"
    assert e.message_id == "abc@globex.com" and e.in_reply_to == "parent@x"
    assert e.references == ["root@x", "parent@x"]
    assert e.importance == "high" and e.notes == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 04 Mar 2025 10:00:00 -0500", "2025-03-04T15:00:00+00:00"),  # RFC 2822
        ("2025-03-04T10:00:00Z", "2025-03-04T10:00:00+00:00"),
        ("2025-03-04T10:00:00.1234567Z", "2025-03-04T10:00:00+00:00"),  # Graph's 7 fraction digits
        ("2025-03-04 10:00:00", "2025-03-04T10:00:00+00:00"),  # naive is UTC
        (1741082400, "2025-03-04T10:00:00+00:00"),  # epoch seconds
        (None, None),
    ],
)
def test_flat_dates_become_utc_iso(tmp_path, value, expected):
    [e] = emails(iter_records(write_jsonl(tmp_path / "d.jsonl", {"subject": "s", "date": value})))
    assert e.date == expected and e.notes == []


def test_flat_unparseable_date_is_kept_with_a_note(tmp_path):
    [e] = emails(iter_records(write_jsonl(tmp_path / "d.jsonl", {"subject": "s", "date": "next Tuesday"})))
    assert e.date is None
    assert e.notes == ["date unparseable: 'next Tuesday'"]


def test_flat_body_html_is_used_when_there_is_no_plain_body(tmp_path):
    path = write_jsonl(
        tmp_path / "h.jsonl", {"subject": "s", "body_html": "<p>Hello</p><p>World &amp; co</p>"}
    )
    [e] = emails(iter_records(path))
    assert e.body == "Hello\nWorld & co"


def test_flat_plain_body_wins_over_body_html(tmp_path):
    path = write_jsonl(tmp_path / "h.jsonl", {"subject": "s", "body": "plain", "body_html": "<p>html</p>"})
    assert emails(iter_records(path))[0].body == "plain"


def test_flat_references_as_list_and_missing_subject_or_body_kept(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        {"body": "no subject", "references": ["<A@x>", "b@x", "<A@x>"]},
        {"subject": "no body"},
    )
    first, second = emails(iter_records(path))
    assert first.subject == "" and first.references == ["a@x", "b@x"]
    assert second.body == "" and second.subject == "no body"


# ---------------------------------------------------------------------------------------------
# JSONL: Microsoft Graph
# ---------------------------------------------------------------------------------------------

GRAPH = {
    "id": "AAMk1",
    "internetMessageId": "<SN6PR@outlook.com>",
    "conversationId": "AAQk1",
    "subject": "RE: valves",
    "bodyPreview": "Hi Dana",
    "body": {
        "contentType": "html",
        "content": "<html><head><style>p{margin:0}</style><title>t</title></head><body>"
        "<p>Hi Dana,</p><p>Shipped today.<br>Tracking 1Z999</p><script>alert(1)</script>"
        "<table><tr><td>Qty</td><td>50</td></tr><tr><td>Total</td><td>$12,500.00</td></tr></table>"
        "</body></html>",
    },
    "from": {"emailAddress": {"name": "Maria Chen", "address": "Maria.Chen@acme.com"}},
    "toRecipients": [{"emailAddress": {"name": "Dana", "address": "dana@globex.com"}}],
    "ccRecipients": [],
    "receivedDateTime": "2025-03-03T16:22:40Z",
    "sentDateTime": "2025-03-03T16:22:38Z",
    "importance": "high",
    "hasAttachments": True,
    "internetMessageHeaders": [
        {"name": "In-Reply-To", "value": "<Parent@globex.com>"},
        {"name": "References", "value": "<Root@globex.com> <Parent@globex.com>"},
    ],
}


def test_graph_message_html_body_becomes_text(tmp_path):
    [e] = emails(iter_records(write_jsonl(tmp_path / "g.jsonl", GRAPH)))
    assert e.body == "Hi Dana,\nShipped today.\nTracking 1Z999\nQty 50\nTotal $12,500.00"
    assert (e.source_id, e.source_conversation_id, e.message_id) == ("AAMk1", "AAQk1", "sn6pr@outlook.com")
    assert (e.from_name, e.from_addr, e.to) == ("Maria Chen", "maria.chen@acme.com", ["dana@globex.com"])
    assert e.date == "2025-03-03T16:22:38+00:00"  # sentDateTime first
    assert e.in_reply_to == "parent@globex.com"
    assert e.references == ["root@globex.com", "parent@globex.com"]
    assert e.importance == "high" and e.has_attachments is True


def test_graph_text_body_and_fallbacks(tmp_path):
    text = {**GRAPH, "body": {"contentType": "text", "content": "line 1\r\nline 2"}}
    no_body = {**GRAPH, "body": None, "uniqueBody": None, "from": None}
    first, second = emails(iter_records(write_jsonl(tmp_path / "g.jsonl", text, no_body)))
    assert first.body == "line 1\nline 2"  # Graph's CRLF normalized
    assert second.body == "Hi Dana" and second.from_addr == ""
    assert "bodyPreview" in second.notes[0]


def test_graph_pascal_case_from_powershell_is_understood(tmp_path):
    pascal = {
        "Id": "AAMk2",
        "Subject": "Hello",
        "Body": {"ContentType": "Text", "Content": "Body text"},
        "From": {"EmailAddress": {"Name": "A", "Address": "A@X.com"}},
        "ToRecipients": [{"EmailAddress": {"Address": "b@x.com"}}],
        "ReceivedDateTime": "2025-03-03T16:22:40Z",
    }
    [e] = emails(iter_records(write_jsonl(tmp_path / "p.jsonl", pascal)))
    assert (e.source_id, e.subject, e.body, e.from_addr, e.to) == (
        "AAMk2",
        "Hello",
        "Body text",
        "a@x.com",
        ["b@x.com"],
    )


def test_graph_api_page_on_one_line_yields_each_message(tmp_path):
    page = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#messages", "value": [GRAPH, GRAPH]}
    records = list(iter_records(write_jsonl(tmp_path / "page.jsonl", page)))
    assert [r.locator for r in records] == ["line 1 item 1", "line 1 item 2"]


def test_graph_page_with_only_a_next_link_is_read_too(tmp_path):
    page = {"value": [GRAPH], "@odata.nextLink": "https://graph.microsoft.com/v1.0/me/messages?$skip=10"}
    [e] = emails(iter_records(write_jsonl(tmp_path / "page.jsonl", page)))
    assert e.locator == "line 1 item 1"


# ---------------------------------------------------------------------------------------------
# JSONL: Gmail API
# ---------------------------------------------------------------------------------------------


def gmail_message(i: int, thread: str = "t1") -> dict:
    headers = [("From", "Ann <ann@x.com>"), ("To", "bob@x.com"), ("Subject", f"Re: part {i}"),
               ("Message-ID", f"<g{i}@x.com>"), ("Date", f"Tue, 4 Mar 2025 10:0{i}:00 +0000")]  # fmt: skip
    return {"id": f"m{i}", "threadId": thread, "historyId": "900", "snippet": f"text {i}",
            "payload": {"mimeType": "text/plain", "headers": [{"name": k, "value": v} for k, v in headers],
                        "body": {"data": b64url(f"message {i}")}}}  # fmt: skip


def test_gmail_thread_on_one_line_yields_each_message(tmp_path):
    """What users.threads.get returns: the thread's messages are the records, like a Graph page's."""
    thread = {
        "id": "t1",
        "historyId": "901",
        "messages": [gmail_message(1), gmail_message(2), {"id": "m3", "threadId": "t1"}],
    }
    records = list(iter_records(write_jsonl(tmp_path / "thread.jsonl", thread, gmail_message(4, "t2"))))
    assert [r.locator for r in records] == [
        "line 1 message 1",
        "line 1 message 2",
        "line 1 message 3",
        "line 2",
    ]
    assert [(r.body, r.source_conversation_id) for r in records if isinstance(r, Email)] == [
        ("message 1", "t1"), ("message 2", "t1"), ("message 4", "t2"),
    ]  # fmt: skip
    assert "format=full" in records[2].reason  # a stub without content: rejected, saying how to fetch it


def test_gmail_list_pages_name_what_to_fetch(tmp_path):
    """users.threads.list: threads with their messages are read; stubs are rejects saying why."""
    page = {"threads": [{"id": "t1", "historyId": "9", "messages": [gmail_message(1)]},
                        {"id": "t2", "snippet": "hi", "historyId": "9"}], "nextPageToken": "abc"}  # fmt: skip
    listed = {"messages": [{"id": "m1", "threadId": "t1"}], "resultSizeEstimate": 1}  # users.messages.list
    records = list(iter_records(write_jsonl(tmp_path / "pages.jsonl", page, listed)))
    assert [r.locator for r in records] == [
        "line 1 thread 1 message 1",
        "line 1 thread 2",
        "line 2 message 1",
    ]
    assert isinstance(records[0], Email) and records[0].body == "message 1"
    assert "users.threads.get" in records[1].reason and "format=full" in records[2].reason


def test_gmail_payload_multipart_base64url(tmp_path):
    message = {
        "id": "19579528477b260a",
        "threadId": "19579528477b0000",
        "internalDate": "1744281687000",
        "snippet": "Hi &amp; hello",
        "payload": {
            "mimeType": "multipart/mixed",
            "headers": [
                {"name": "From", "value": "=?utf-8?Q?J=C3=BCrgen?= <Juergen@Umbrella.com>"},
                {"name": "To", "value": 'priya@acme.com, "Raman, P" <p.raman@acme.com>'},
                {"name": "Subject", "value": "=?utf-8?B?R3LDvMOfZQ==?= from Hamburg"},
                {"name": "Message-ID", "value": "<CAF1@mail.gmail.com>"},
                {"name": "X-Priority", "value": "5 (Lowest)"},
            ],
            "parts": [
                {
                    "mimeType": "multipart/alternative",
                    "parts": [
                        {
                            "mimeType": "text/plain",
                            "headers": [{"name": "Content-Type", "value": 'text/plain; charset="UTF-8"'}],
                            "body": {"size": 12, "data": b64url("Grüße, Priya\r\n")},
                        },
                        {
                            "mimeType": "text/html",
                            "body": {"data": b64url("<div>Grüße, <b>Priya</b></div>", pad=True)},
                        },
                    ],
                },
                {
                    "mimeType": "application/pdf",
                    "filename": "coc.pdf",
                    "body": {"attachmentId": "ANGjdJ8", "size": 48213},
                },
            ],
        },
    }
    [e] = emails(iter_records(write_jsonl(tmp_path / "gm.jsonl", message)))
    assert (e.source_id, e.source_conversation_id) == ("19579528477b260a", "19579528477b0000")
    assert e.subject == "Grüße from Hamburg"
    assert (e.from_name, e.from_addr) == ("Jürgen", "juergen@umbrella.com")
    assert e.to == ["priya@acme.com", "p.raman@acme.com"]
    assert e.body == "Grüße, Priya"  # text/plain preferred over text/html
    assert e.has_attachments is True and e.importance == "low"
    assert e.message_id == "caf1@mail.gmail.com"
    assert e.date == "2025-04-10T10:41:27+00:00"  # no Date header: internalDate (ms)


def test_gmail_html_only_payload_becomes_text(tmp_path):
    message = {
        "id": "m2",
        "threadId": "t2",
        "payload": {
            "mimeType": "text/html",
            "headers": [
                {"name": "Subject", "value": "Hi"},
                {"name": "Date", "value": "Thu, 10 Apr 2025 06:41:27 -0400"},
            ],
            "body": {"data": b64url("<p>one</p><p>two</p>")},
        },
    }
    [e] = emails(iter_records(write_jsonl(tmp_path / "gm.jsonl", message)))
    assert e.body == "one\ntwo" and e.date == "2025-04-10T10:41:27+00:00"


def test_gmail_raw_message(tmp_path):
    raw = (
        b"From: Helena Voss <helena@umbrella.com>\r\nTo: priya@acme.com\r\n"
        b"Subject: Certificate\r\nDate: Thu, 10 Apr 2025 06:41:27 -0400\r\n"
        b"Message-ID: <raw1@mail.gmail.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Please send the CoC.\r\n"
    )
    [e] = emails(
        iter_records(write_jsonl(tmp_path / "raw.jsonl", {"id": "r1", "threadId": "t1", "raw": b64url(raw)}))
    )
    assert (e.source_id, e.source_conversation_id, e.message_id) == ("r1", "t1", "raw1@mail.gmail.com")
    assert (e.subject, e.body, e.from_addr) == ("Certificate", "Please send the CoC.", "helena@umbrella.com")
    assert e.date == "2025-04-10T10:41:27+00:00"


def test_shapes_are_detected_per_line_in_one_file(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        {"subject": "flat", "body": "b"},
        GRAPH,
        {
            "id": "g",
            "threadId": "t",
            "payload": {"mimeType": "text/plain", "headers": [{"name": "Subject", "value": "gm"}]},
        },
    )
    assert [e.subject for e in emails(iter_records(path))] == ["flat", "RE: valves", "gm"]


def test_sample_exports_read_as_documented():
    """samples/README.md: the counts every later stage relies on."""
    counts = {}
    for name in ("graph.jsonl", "flat.jsonl", "malformed.jsonl", "mbox/orders.mbox", "eml"):
        records = list(iter_records(SAMPLES / name))
        counts[name] = (
            sum(isinstance(r, Email) for r in records),
            sum(isinstance(r, Reject) for r in records),
        )
    assert counts == {
        "graph.jsonl": (36, 0),
        "flat.jsonl": (8, 0),
        "malformed.jsonl": (3, 4),
        "mbox/orders.mbox": (5, 0),
        "eml": (5, 0),
    }


# ---------------------------------------------------------------------------------------------
# mbox
# ---------------------------------------------------------------------------------------------

MBOX = (
    b"From 1797923456789012345@xxx Mon Mar 31 14:02:11 +0000 2025\n"
    b"X-GM-THRID: 1797923456789012345\n"
    b"X-Gmail-Labels: Inbox,Important\n"
    b"From: =?UTF-8?Q?J=C3=BCrgen_Wei=C3=9F?= <juergen@umbrella.com>\n"
    b"To: tom@acme.com\n"
    b"Subject: =?UTF-8?Q?PO_4500012350_=E2=80=93_gaskets?=\n"
    b"Date: Mon, 31 Mar 2025 16:02:11 +0200\n"
    b"Message-ID: <m1@umbrella.com>\n"
    b"Content-Type: text/plain; charset=UTF-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Total: =E2=82=AC1,442.00\n"
    b"\n"
    b"From 1797923456789012399@xxx Tue Apr 01 12:15:40 +0000 2025\n"
    b"X-GM-THRID: 1797923456789012345\n"
    b"From: Tom <tom@acme.com>\n"
    b"Subject: Re: PO 4500012350\n"
    b"In-Reply-To: <m1@umbrella.com>\n"
    b"References: <m1@umbrella.com>\n"
    b"Importance: high\n"
    b"\n"
    b"This is what I got back\n"
    b">From the warehouse: 72 in stock.\n"
    b">>From stays quoted once.\n"
    b"From time to time a body line starts with From and is not a separator.\n"
    b"\n"
    b"From MAILER-DAEMON Wed Apr  2 09:00:00 2025\n"
    b"From: c@x.com\n"
    b"Subject: third\n"
    b"\n"
    b"last\n"
)


def test_mbox_splits_messages_and_unescapes_from_lines(tmp_path):
    path = tmp_path / "takeout.mbox"
    path.write_bytes(MBOX)
    first, second, third = emails(iter_records(path))
    assert [e.locator for e in (first, second, third)] == ["message 1", "message 2", "message 3"]
    assert first.subject == "PO 4500012350 – gaskets"
    assert (first.from_name, first.from_addr) == ("Jürgen Weiß", "juergen@umbrella.com")
    assert first.body == "Total: €1,442.00"
    assert first.date == "2025-03-31T14:02:11+00:00"
    assert second.body == (
        "This is what I got back\nFrom the warehouse: 72 in stock.\n>From stays quoted once.\n"
        "From time to time a body line starts with From and is not a separator."
    )
    assert second.importance == "high" and second.in_reply_to == "m1@umbrella.com"
    assert third.subject == "third" and third.body == "last"


def test_mbox_gmail_thread_id_matches_the_gmail_api_thread_id(tmp_path):
    """X-GM-THRID is decimal; the Gmail API threadId is the same number in hex."""
    path = tmp_path / "takeout.mbox"
    path.write_bytes(MBOX)
    first, second, third = emails(iter_records(path))
    assert first.source_conversation_id == second.source_conversation_id == format(1797923456789012345, "x")
    assert third.source_conversation_id is None


def test_mbox_is_streamed_not_loaded(tmp_path):
    """The reader yields the first message before it has seen the end of the file."""
    consumed = []

    def endless():
        for i in itertools.count(1):
            for line in (
                f"From x@y Mon Mar 31 14:02:{i % 60:02d} 2025\n",
                f"Subject: m{i}\n",
                "\n",
                "body\n",
            ):
                consumed.append(line)
                yield line.encode()

    first_two = list(itertools.islice(iter_mbox(endless(), "s"), 2))
    assert [e.subject for e in first_two] == ["m1", "m2"]
    assert len(consumed) < 20


def test_jsonl_is_streamed_not_loaded():
    """Same for JSONL: one line at a time."""
    consumed = []

    def endless():
        for i in itertools.count(1):
            consumed.append(i)
            yield json.dumps({"subject": f"s{i}"}).encode() + b"\n"

    assert [e.subject for e in itertools.islice(iter_jsonl(endless(), "s"), 3)] == ["s1", "s2", "s3"]
    assert len(consumed) <= 4


def test_mbox_with_crlf_line_endings(tmp_path):
    path = tmp_path / "win.mbox"
    path.write_bytes(MBOX.replace(b"\n", b"\r\n"))
    records = emails(iter_records(path))
    assert len(records) == 3 and records[1].body.startswith("This is what I got back\nFrom the warehouse")


# ---------------------------------------------------------------------------------------------
# .eml directories and Maildir
# ---------------------------------------------------------------------------------------------


def eml(subject: str, body: str = "body", mid: str | None = None) -> bytes:
    mid = mid or subject.replace(" ", "")
    return f"From: a@x.com\nTo: b@x.com\nSubject: {subject}\nMessage-ID: <{mid}@x>\n\n{body}\n".encode()


def test_directory_of_eml_files(tmp_path):
    (tmp_path / "b.eml").write_bytes(eml("second"))
    (tmp_path / "a.eml").write_bytes(eml("first"))
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01junk")  # hidden files are never exports
    records = list(iter_records(tmp_path))
    assert [(e.subject, e.locator, e.source) for e in records if isinstance(e, Email)] == [
        ("first", "a.eml", str(tmp_path / "a.eml")),
        ("second", "b.eml", str(tmp_path / "b.eml")),
    ]
    assert [r for r in records if not isinstance(r, Email)] == [
        Skipped(str(tmp_path / ".DS_Store"), "a hidden file")
    ]


def test_maildir_reads_cur_and_new(tmp_path):
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "cur" / "1700000000.1.host:2,S").write_bytes(eml("seen"))
    (tmp_path / "new" / "1700000001.2.host").write_bytes(eml("unseen"))
    (tmp_path / "tmp" / "1700000002.3.host").write_bytes(eml("being delivered"))
    (tmp_path / ".Sent" / "cur").mkdir(parents=True)  # Maildir++ sub-folder
    (tmp_path / ".Sent" / "new").mkdir()
    (tmp_path / ".Sent" / "cur" / "1700000003.4.host:2,S").write_bytes(eml("sent"))
    assert detect_format(tmp_path) == "maildir"
    records = list(iter_records(tmp_path))
    assert [(e.subject, e.locator) for e in records if isinstance(e, Email)] == [
        ("seen", "cur/1700000000.1.host:2,S"),
        ("unseen", "new/1700000001.2.host"),
        ("sent", ".Sent/cur/1700000003.4.host:2,S"),
    ]
    assert all(e.source == str(tmp_path) for e in records if not isinstance(e, Skipped))
    # a delivery in progress is not read, but it is named
    [tmp] = [r for r in records if isinstance(r, Reject)]
    assert tmp.locator == "tmp/1700000002.3.host" and "tmp/" in tmp.reason and "move it to new/" in tmp.reason


def test_maildir_inside_a_directory_is_read_as_a_maildir(tmp_path):
    box = tmp_path / "export" / "INBOX"
    (box / "cur").mkdir(parents=True)
    (box / "new").mkdir()
    (box / "cur" / "1:2,S").write_bytes(eml("in maildir"))
    (tmp_path / "export" / "x.eml").write_bytes(eml("loose"))
    assert [e.subject for e in emails(iter_records(tmp_path / "export"))] == ["in maildir", "loose"]


# ---------------------------------------------------------------------------------------------
# stdin, detection, several paths
# ---------------------------------------------------------------------------------------------


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BufferedReader(io.BytesIO(data))


def test_stdin_dash_reads_jsonl(monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(b'{"subject": "one", "body": "x"}\n\n{"subject": "two"}\n'))
    records = emails(iter_records("-"))
    assert [(e.subject, e.source, e.locator) for e in records] == [
        ("one", "-", "line 1"),
        ("two", "-", "line 3"),
    ]


def test_stdin_without_peek_is_still_read(monkeypatch):
    class RawStdin:
        buffer = io.FileIO(os.open(os.devnull, os.O_RDONLY), closefd=True)

    monkeypatch.setattr(sys, "stdin", RawStdin)
    assert list(iter_records("-")) == [Skipped("-", "an empty file")]  # read, and nothing in it
    RawStdin.buffer.close()


def test_stdin_dash_recognises_a_piped_mbox(monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(MBOX))
    assert len(emails(iter_records("-"))) == 3


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("export", b'{"subject": "s"}\n', "jsonl"),
        ("export.json", b'{"subject": "s"}\n', "jsonl"),
        ("export.ndjson", b"", "jsonl"),
        ("Inbox", b"From x@y Mon Mar 31 14:02:11 2025\nSubject: s\n\nb\n", "mbox"),
        ("All mail.mbox", b"Subject: no From_ line\n\nb\n", "mbox"),
        ("message", b"Received: from x\n\tby y\nFrom: a@x.com\nSubject: s\n\nbody\n", "eml"),
        ("message.eml", b"whatever", "eml"),
        ("notes.txt", b"Dear diary,\nnothing here.\n", "unsupported"),
        ("notes.txt", b"Note: a colon does not make an email\n\ntext\n", "unsupported"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("export.jsonl", b"\x00\x01\x02garbage", "binary"),
        ("utf16.jsonl", '{"subject": "s"}\n'.encode("utf-16"), "jsonl"),
        ("utf16", '{"subject": "s"}\n'.encode("utf-16"), "jsonl"),
        ("utf16.txt", "just some text\n".encode("utf-16"), "unsupported"),
    ],
)
def test_auto_detection_of_files(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_format(path) == expected


def test_auto_detection_of_directories(tmp_path):
    assert detect_format(tmp_path) == "dir"
    (tmp_path / "cur").mkdir()
    (tmp_path / "new").mkdir()
    assert detect_format(tmp_path) == "maildir"


def test_files_without_extension_are_read_by_content(tmp_path):
    (tmp_path / "a").write_bytes(b'{"subject": "json"}\n')
    (tmp_path / "b").write_bytes(MBOX)
    (tmp_path / "c").write_bytes(eml("eml"))
    subjects = [e.subject for e in emails(iter_records(tmp_path))]
    assert subjects == ["json", "PO 4500012350 – gaskets", "Re: PO 4500012350", "third", "eml"]


def test_explicit_format_overrides_detection(tmp_path):
    path = tmp_path / "message.txt"
    path.write_bytes(eml("forced"))
    assert [e.subject for e in emails(iter_records(path, "eml"))] == ["forced"]
    assert FORMATS == ("auto", "jsonl", "mbox", "eml", "maildir")


def test_utf16_jsonl_from_powershell_is_read(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(('{"subject": "Grüße", "body": "b"}\r\n{"subject": "zwei"}\r\n').encode("utf-16"))
    assert [e.subject for e in emails(iter_records(path))] == ["Grüße", "zwei"]


def test_iter_many_reads_paths_in_order(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", {"subject": "a"})
    b = tmp_path / "b.eml"
    b.write_bytes(eml("b"))
    assert [e.subject for e in emails(iter_many([a, str(b)]))] == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# MIME bodies
# ---------------------------------------------------------------------------------------------

NESTED = b"""From: a@x.com
To: b@x.com
Subject: nested
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

Plain version.
--alt
Content-Type: multipart/related; boundary="rel"

--rel
Content-Type: text/html; charset=utf-8

<p>HTML version <img src="cid:logo"></p>
--rel
Content-Type: image/png
Content-ID: <logo>
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--rel--
--alt--
--outer
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer--
"""


def read_eml(tmp_path: Path, data: bytes, name: str = "m.eml") -> list[Email | Reject]:
    path = tmp_path / name
    path.write_bytes(data)
    return list(iter_records(path))


def test_nested_multipart_prefers_plain_text_and_sees_the_attachment(tmp_path):
    [e] = emails(read_eml(tmp_path, NESTED))
    assert e.body == "Plain version." and e.has_attachments is True


def test_alternative_with_an_empty_plain_part_falls_back_to_html(tmp_path):
    data = NESTED.replace(b"Plain version.", b"")
    [e] = emails(read_eml(tmp_path, data))
    assert e.body == "HTML version"


def test_inline_image_in_related_html_is_not_an_attachment(tmp_path):
    data = NESTED.split(b"--outer\nContent-Type: application/pdf")[0] + b"--outer--\n"
    [e] = emails(read_eml(tmp_path, data.replace(b"Plain version.", b"")))
    assert e.body == "HTML version" and e.has_attachments is False


def test_attachments_only_message_has_empty_body(tmp_path):
    data = b"""From: scanner@x.com
Subject: Scan
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: application/pdf
Content-Disposition: attachment; filename="scan.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--b--
"""
    [e] = emails(read_eml(tmp_path, data))
    assert e.body == "" and e.has_attachments is True and e.subject == "Scan"


def test_single_part_html_message_becomes_text(tmp_path):
    data = (
        b"From: a@x.com\nSubject: html\nContent-Type: text/html; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n<div>Caf=E9 cr=E8me</div><div>2nd</div>\n"
    )
    [e] = emails(read_eml(tmp_path, data))
    assert e.body == "Café crème\n2nd"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("X-Priority: 1 (Highest)", "high"),
        ("X-Priority: 2", "high"),
        ("X-Priority: 3", "normal"),
        ("X-Priority: 4", "low"),
        ("X-Priority: 5 (Lowest)", "low"),
        ("Importance: Low", "low"),
        ("X-MSMail-Priority: High", "high"),
        ("Priority: urgent", "high"),
    ],
)
def test_mime_importance_headers(tmp_path, header, expected):
    [e] = emails(read_eml(tmp_path, f"From: a@x.com\nSubject: s\n{header}\n\nb\n".encode()))
    assert e.importance == expected


# ---------------------------------------------------------------------------------------------
# HTML to text
# ---------------------------------------------------------------------------------------------


def test_html_to_text_drops_head_script_style_and_keeps_block_lines():
    html = (
        "<html><head><title>T</title><style>.x{}</style></head><body>"
        "<div>one<br>two</div><ul><li>a</li><li>b</li></ul><script>var x;</script>"
        "<p>&nbsp;</p><p>&nbsp;</p><p>&nbsp;</p><p>after blanks</p>"
        "<p>spaces   and\n newlines   collapse</p></body></html>"
    )
    assert html_to_text(html) == "one\ntwo\na\nb\n\nafter blanks\nspaces and newlines collapse"


def test_html_to_text_of_fragment_and_empty_input():
    assert html_to_text("plain <b>bold</b> text") == "plain bold text"
    assert html_to_text("") == ""


def test_html_to_text_survives_marker_lookalikes_and_nested_dropped_tags():
    html = "<div>a\ue000b\ue001c</div><svg><title>icon</title><style>x</style></svg><div>d</div>"
    assert html_to_text(html) == "abc\nd"


# ---------------------------------------------------------------------------------------------
# Speed (the ingest benchmark depends on it; see the module docstring of mailcli.ingest.jsonl)
# ---------------------------------------------------------------------------------------------

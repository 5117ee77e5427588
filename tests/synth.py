"""Deterministic synthetic email exports for benchmarks and tests.

``generate(n)`` yields exactly ``n`` JSON-ready records (flat or Microsoft Graph shape) of a fictional
industrial-parts distributor, Acme Industrial (``acme-industrial.com``), and its customers and freight
partner. The stream looks like a mailbox export:

* conversations of 1–8 emails (mean about 3.2), interleaved in date order, with proper
  ``message_id`` / ``in_reply_to`` / ``references`` chains and a ``conversation_id``;
* about 5 % of replies carry a conversation id of their own (a fresh one, never another thread's):
  only References/In-Reply-To threading joins them to their conversation;
* about 1 % of records are exact copies of a recent earlier record (same message id), for dedupe;
* bodies of about ``body_bytes`` characters mixing business prose with PO/quote/case numbers, amounts,
  dates, part numbers, phone numbers and urgency words; a request opens each conversation and the last
  email of about a third of the conversations carries a completion phrase ("has been shipped", ...).

The same ``(n_emails, seed, shape, body_bytes)`` always gives byte-identical output. The structure
(threads, duplicates, foreign conversation ids) depends only on ``(n_emails, seed)``;
:func:`expected_counts` replays it without building any text, so tests can check ingest counts exactly.

It lives beside the tests, not in the mailcli package: tests import it as ``synth`` (tests/conftest.py
puts tests/ on ``sys.path``), benchmarks do the same (benchmarks/common.py), and the wheel never ships it.

CLI, from the repository root: ``python tests/synth.py 100000 -o data/synth.jsonl --seed 7 --shape graph``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from bisect import bisect
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["SHAPES", "SynthCounts", "expected_counts", "generate", "main", "to_json", "write_jsonl"]

SHAPES = ("flat", "graph")

# --- structure --------------------------------------------------------------------------------
SIZE_WEIGHTS = (22, 22, 18, 13, 10, 7, 5, 3)  # conversation sizes 1..8, mean 3.23
_SIZE_CUM = list(accumulate(w / sum(SIZE_WEIGHTS) for w in SIZE_WEIGHTS))
_SIZE_CUM[-1] = 1.0
P_NEW = 0.31  # start a new conversation (about 1 / mean size), while 2..MAX_ACTIVE are open
MIN_ACTIVE, MAX_ACTIVE = 2, 12
DUP_RATE = 0.01
FOREIGN_RATE = 0.05  # of replies
COMPLETE_RATE = 0.42  # of conversations with >= 2 emails (about a third of all conversations)
RING = 256  # duplicates copy one of the last RING new records

_OWN = "acme-industrial.com"
_PARTNER = "northwind-logistics.com"
_EPOCH_2025 = 1735718400  # 2025-01-01T08:00:00Z
_SPAN = 360 * 86400
_END_2025 = 1767225599  # 2025-12-31T23:59:59Z


class SynthCounts(NamedTuple):
    """What a generated stream holds (the same for every shape and body size)."""

    records: int  # lines yielded
    unique_emails: int  # distinct message ids
    duplicates: int  # exact repeats of an earlier record
    conversations: int  # true conversations (after References threading)
    foreign_replies: int  # replies whose conversation_id differs from their thread's
    completed_conversations: int  # whose last email carries a completion phrase


class _Thread:
    __slots__ = (
        "tid",
        "size",
        "sent",
        "complete",
        "conv",
        "subject",
        "ref",
        "initiator",
        "responder",
        "cc",
        "urgent",
        "importance",
        "mids",
        "last",
    )

    def __init__(self, tid: int, size: int, complete: bool) -> None:
        self.tid = tid
        self.size = size
        self.sent = 0
        self.complete = complete


def _plan(n: int, seed: int) -> Iterator[tuple]:
    """The structure of the stream: ("dup", ring_index) or ("new", thread, index, is_last, foreign)."""
    rng = random.Random(seed)
    rand = rng.random
    active: list[_Thread] = []
    new = threads = 0
    for _ in range(n):
        if new and rand() < DUP_RATE:
            yield ("dup", rng.randrange(min(new, RING)))
            continue
        na = len(active)
        if na < MIN_ACTIVE or (na < MAX_ACTIVE and rand() < P_NEW):
            size = bisect(_SIZE_CUM, rand()) + 1
            th = _Thread(threads, size, size >= 2 and rand() < COMPLETE_RATE)
            threads += 1
            active.append(th)
            pos = na
        else:
            pos = rng.randrange(na)
            th = active[pos]
        idx = th.sent
        th.sent = idx + 1
        last = th.sent == th.size
        if last:  # swap-remove
            active[pos] = active[-1]
            active.pop()
        foreign = idx > 0 and rand() < FOREIGN_RATE
        new += 1
        yield ("new", th, idx, last, foreign)


def expected_counts(n_emails: int, seed: int = 42, shape: str = "flat") -> SynthCounts:
    """Counts for ``generate(n_emails, seed=seed, shape=shape)`` without building the records."""
    _check(n_emails, shape)
    dups = new = foreign = 0
    threads = completed = 0
    for ev in _plan(n_emails, seed):
        if ev[0] == "dup":
            dups += 1
            continue
        _, th, idx, last, is_foreign = ev
        new += 1
        foreign += is_foreign
        threads += idx == 0
        if last and th.complete:
            completed += 1
    return SynthCounts(n_emails, new, dups, threads, foreign, completed)


# --- vocabulary (built once, with a fixed seed, so output depends only on the caller's seed) ------
_FIRST = (
    "Dana",
    "Marcus",
    "Peter",
    "Joanna",
    "Helena",
    "Maria",
    "Tom",
    "Priya",
    "Greg",
    "Luis",
    "Ellen",
    "Nadia",
    "Kim",
    "Omar",
    "Sofia",
    "Raj",
    "Grace",
    "Victor",
    "Aisha",
    "Ben",
    "Chloe",
    "Diego",
    "Erin",
    "Farid",
    "Hannah",
    "Ivan",
    "Julia",
    "Kenji",
    "Lena",
    "Mateo",
    "Nora",
    "Oscar",
    "Paula",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Wes",
    "Yara",
    "Zoë",
    "François",
    "Jürgen",
    "Élodie",
    "Søren",
)
_LAST = (
    "Whitfield",
    "Lindqvist",
    "Novak",
    "Reyes",
    "Voss",
    "Chen",
    "Okafor",
    "Raman",
    "Halvorsen",
    "Ortega",
    "Park",
    "Brooks",
    "Alvarez",
    "Haddad",
    "Rossi",
    "Mehta",
    "Kowalski",
    "Nguyen",
    "Schmidt",
    "Dubois",
    "Tanaka",
    "Silva",
    "Murphy",
    "Ivanova",
    "Larsen",
    "Costa",
    "Fischer",
    "Moreau",
    "Weiß",
    "Lefèvre",
)
_CUSTOMER_DOMAINS = (
    "globex.com",
    "initech.com",
    "umbrella-corp.com",
    "oceanic-marine.example",
    "blue-ridge-machining.example",
    "harbor-foods.example",
    "summit-plastics.example",
    "redwood-paper.example",
    "lakeside-brewing.example",
    "ironclad-fab.example",
    "polar-cold-storage.example",
    "granite-quarry.example",
    "sunrise-textiles.example",
    "metro-water.example",
    "apex-automotive.example",
    "cedar-pharma.example",
)
_PART_PREFIX = ("AX", "HX", "VLV", "SK", "FLT", "BRG", "GSK", "CPL", "PK", "VFD", "MTR", "SEN", "PMP", "HOS")
_PARTS_TEXT = (
    "hydraulic control valve",
    "centrifugal pump",
    "ball valve",
    "seal kit",
    "filter cartridge",
    "sealed bearing",
    "flange gasket",
    "shaft coupling",
    "packing kit",
    "variable frequency drive",
    "gear motor",
    "pressure sensor",
    "pump impeller",
    "hydraulic hose assembly",
)

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_KINDS = {
    "order": (
        ("PO {ref} - {part} {ptext}", "Order PO#{ref}: {qty} x {part}", "P.O. #{ref} for {part}"),
        (
            "Please find attached our purchase order PO {ref} for {qty} x {part} ({ptext}).",
            "We would like to order {qty} units of {part}; our Purchase Order No. {ref} is attached.",
            "Please process P.O. #{ref} for {qty} x {part} and confirm the ship date.",
        ),
    ),
    "quote": (
        (
            "Quote #{ref} - {qty} x {part}",
            "Request for quotation - {part} (Quote #{ref})",
            "Pricing for {part} - quotation Q-{ref}",
        ),
        (
            "Could you send pricing for {qty} x {part}? Please reference Quote #{ref} in your reply.",
            "We are evaluating suppliers for {part} ({ptext}); can you update quotation Q-{ref} for {qty} units?",
            "Please quote {qty} x {part} with your best lead time; our reference is Quote #{ref}.",
        ),
    ),
    "support": (
        (
            "Case {ref8}: {part} {ptext} failure",
            "Ticket #{ref8} - {part} not working",
            "{part} problem (Case {ref8})",
        ),
        (
            "We have a problem with the {part} {ptext} units you supplied; I opened Case {ref8} on your portal.",
            "Our {part} keeps failing under load. Can your support team look into ticket #{ref8}?",
            "Could you help us troubleshoot the {part}? The issue is logged as Case {ref8}.",
        ),
    ),
    "shipping": (
        ("Shipping status for PO {ref}", "Delivery date for P.O. #{ref}", "Tracking for PO#{ref}"),
        (
            "Can you confirm the shipping status and tracking number for PO {ref}?",
            "When will P.O. #{ref} ship? Our dock needs the delivery date.",
            "Could you send the tracking details for PO#{ref} ({qty} x {part})?",
        ),
    ),
    "returns": (
        (
            "Return request - {part} (ticket #{ref8})",
            "RMA for {part} - ticket #{ref8}",
            "Refund request for {part}, ticket #{ref8}",
        ),
        (
            "We received the wrong {part} and would like to return {qty} units for a refund; ticket #{ref8}.",
            "Please issue an RMA for {qty} x {part}; the parts arrived damaged. Our ticket #{ref8}.",
            "Can we return the unused {part} units for credit? Reference ticket #{ref8}.",
        ),
    ),
}
_KIND_NAMES = tuple(_KINDS)

_BODY_T = (
    "The {part} {ptext} is in stock at our Columbus warehouse and can ship on {date}.",
    "Our quotation Q-{n6} covers {qty} x {part} at {amount}.",
    "I have opened Case {n8} so our engineers can review the {part}.",
    "The total for PO {n10} comes to {amount}, including freight.",
    "Tracking number {track} has been assigned to the shipment.",
    "Please call me at {phone} if anything is unclear.",
    "We are working on it and will send a status update by {date}.",
    "Delivery is scheduled for {date} at your receiving dock.",
    "Pricing for {part} has changed; the new cost is {amount} per unit.",
    "Please note the minimum order quantity of {qty} pieces for {part}.",
    "Our engineering team reviewed the drawings for {part} and approved the change.",
    "The invoice for P.O. #{n10} was sent to accounts payable on {date}.",
    "Freight will be billed separately at {amount}.",
    "A restocking fee of {amount} applies to returns after 30 days.",
    "Let me know if a partial shipment of {part} is acceptable.",
    "The {part} and {part2} can be consolidated on one pallet.",
    "Lead time for {part} is currently {lead} weeks from receipt of order.",
    "We received {qty} units of {part} against PO#{n10} this morning.",
    "Our supplier confirmed the {part2} backorder will clear by {date}.",
    "The certificate of conformance for {part} is attached.",
    "Quote #{n7} remains valid until {date}.",
    "Reference INC{n7} for the earlier field service visit.",
    "The price for {qty} x {part2} is {amount} before discount.",
    "Please send the updated drawing for {part} so we can check the tolerances.",
    "The warehouse counted {qty} pieces of {part} on the shelf.",
    "Payment of {amount} was received on {date}, thank you.",
    "We appreciate your continued business.",
    "Please let me know if you have any questions.",
    "I will check with the warehouse and get back to you.",
    "Our quality team inspected the lot and found no defects.",
    "The production schedule for next month is tight, so early confirmation helps.",
    "Please keep the original packaging in case a return is needed.",
    "Our accounts team will reconcile the invoice at month end.",
    "The site contact for deliveries is the maintenance supervisor.",
    "We can arrange a technician visit if the problem continues.",
    "All prices are in US dollars unless stated otherwise.",
)
_URGENT_T = (
    "This is urgent: our line is down until the {part} arrives.",
    "Please treat this as critical and expedite the shipment.",
    "We need this ASAP, ideally today.",
    "Please escalate this to your manager; our deadline is {date}.",
    "This is an emergency and we need an immediate response.",
    "Can you rush the order? Our deadline is {date}.",
    "If we do not hear back today we will have to escalate.",
)
_CANCEL_T = (
    "Please cancel PO {n10}; the project has been put on hold.",
    "Please void the invoice for P.O. #{n10} and cancel the remaining lines.",
)
_COMPLETE_T = (
    "Your order has been shipped; tracking number {track} is now active.",
    "The issue has been resolved and the case is now closed.",
    "The order is complete and was delivered on {date}.",
    "All items were delivered today and signed for at the dock.",
    "The refund of {amount} has been processed and the RMA is closed.",
    "Everything has been delivered, so this order is complete.",
)
_REPLY_OPEN = (
    "Thank you for your message.",
    "Thanks for the quick reply.",
    "Following up on the below.",
    "Thanks for the update.",
    "Sorry for the delay in getting back to you.",
    "Good morning,",
    "Thank you, that helps.",
    "Quick follow-up on this.",
    "Understood, thanks.",
    "Please see my answers below.",
)
_GREET = ("Hi {first},", "Hello {first},", "Dear {first},", "Good morning {first},", "{first},")
_CLOSE = ("Best regards,", "Thanks,", "Kind regards,", "Regards,", "Many thanks,", "Cheers,")


class _Vocab:
    __slots__ = (
        "body",
        "urgent",
        "cancel",
        "complete",
        "reply_open",
        "customers",
        "reps",
        "partners",
        "parts",
        "subject_t",
        "opener_t",
    )


def _n(r: random.Random, digits: int) -> str:
    return str(r.randrange(10 ** (digits - 1), 10**digits))


def _part(r: random.Random) -> tuple[str, str]:
    i = r.randrange(len(_PART_PREFIX))
    p = _PART_PREFIX[i]
    form = r.randrange(3)
    if form == 0:
        code = f"{p}-{r.randrange(1000, 9999)}-{r.choice('ABCMSV')}"
    elif form == 1:
        code = f"{p}{r.randrange(100, 999)}"
    else:
        code = f"{p}-{r.randrange(1000, 9999)}"
    return code, _PARTS_TEXT[i]


def _date(r: random.Random) -> str:
    m, d = r.randrange(1, 13), r.randrange(1, 29)
    form = r.randrange(5)
    if form == 0:
        return f"2025-{m:02d}-{d:02d}"
    if form == 1:
        return f"{m}/{d}/2025"
    if form == 2:
        return f"{_MONTHS[m - 1][:3]} {d}, 2025"
    if form == 3:
        return f"{_MONTHS[m - 1]} {d}, 2025"
    return f"{d} {_MONTHS[m - 1]} 2025"


def _amount(r: random.Random) -> str:
    v = (
        r.choice((r.randrange(20, 999), r.randrange(1000, 20000), r.randrange(20000, 90000)))
        + r.randrange(100) / 100
    )
    form = r.randrange(5)
    if form == 0:
        return f"${v:,.2f}"
    if form == 1:
        return f"USD {int(v):,}"
    if form == 2:
        return f"{v:,.2f} USD"
    if form == 3:
        return f"€{int(v)}"
    return f"${int(v):,}"


def _phone(r: random.Random) -> str:
    area = r.choice(("614", "617", "512", "713", "312"))
    line = f"555-01{r.randrange(100):02d}"
    form = r.randrange(3)
    return (f"+1 ({area}) {line}", f"{area}-{line}", f"({area}) {line}")[form]


def _track(r: random.Random) -> str:
    return r.choice((f"1Z999AA1{_n(r, 10)}", f"NWL{_n(r, 10)}"))


def _fill(r: random.Random, template: str) -> str:
    part, ptext = _part(r)
    return template.format(
        part=part,
        ptext=ptext,
        part2=_part(r)[0],
        qty=r.randrange(2, 500),
        lead=r.randrange(1, 13),
        date=_date(r),
        amount=_amount(r),
        phone=_phone(r),
        track=_track(r),
        n6=_n(r, 6),
        n7=_n(r, 7),
        n8=_n(r, 8),
        n10="45" + _n(r, 8),
    )


_VOCAB: _Vocab | None = None


def _vocab() -> _Vocab:
    global _VOCAB
    if _VOCAB is not None:
        return _VOCAB
    r = random.Random(20250304)  # fixed: the vocabulary never depends on the caller's seed
    v = _Vocab()
    v.body = [_fill(r, r.choice(_BODY_T)) for _ in range(4096)]
    v.urgent = [_fill(r, r.choice(_URGENT_T)) for _ in range(256)]
    v.cancel = [_fill(r, r.choice(_CANCEL_T)) for _ in range(64)]
    v.complete = [_fill(r, r.choice(_COMPLETE_T)) for _ in range(256)]
    v.reply_open = list(_REPLY_OPEN)
    ascii_fold = str.maketrans({"ë": "e", "ç": "c", "ü": "ue", "é": "e", "è": "e", "ø": "o", "ß": "ss"})

    def person(domain: str, title: str) -> tuple:
        """(name, address, first name, "Name <address>", domain, greetings, closings+signature)."""
        first, last = r.choice(_FIRST), r.choice(_LAST)
        addr = f"{(first + '.' + last).lower().translate(ascii_fold)}{r.randrange(10, 99)}@{domain}"
        name = f"{first} {last}"
        sig = f"{name}\n{title}\n{_phone(r)}"
        greets = tuple(g.format(first=first) + "\n\n" for g in _GREET)
        tails = tuple(f"\n\n{c}\n{sig}" for c in _CLOSE)
        return name, addr, first, f"{name} <{addr}>", domain, greets, tails

    v.customers = [
        person(
            r.choice(_CUSTOMER_DOMAINS),
            r.choice(("Procurement", "Maintenance", "Plant Engineering", "Purchasing", "Accounts Payable")),
        )
        for _ in range(600)
    ]
    v.reps = [
        person(
            _OWN,
            r.choice(
                (
                    "Customer Service | Acme Industrial",
                    "Sales Engineer | Acme Industrial",
                    "Technical Support | Acme Industrial",
                    "Returns Desk | Acme Industrial",
                )
            ),
        )
        for _ in range(24)
    ]
    v.partners = [person(_PARTNER, "Account Manager | Northwind Logistics") for _ in range(8)]
    v.parts = [_part(r) for _ in range(512)]
    v.subject_t = {k: t[0] for k, t in _KINDS.items()}
    v.opener_t = {k: t[1] for k, t in _KINDS.items()}
    _check_clean(v)
    _VOCAB = v
    return v


def _check_clean(v: _Vocab) -> None:
    """The fast JSONL writer needs every vocabulary string free of quotes, backslashes and control characters."""
    texts: list[str] = [*v.body, *v.urgent, *v.cancel, *v.complete, *v.reply_open, *_MONTHS]
    for person in (*v.customers, *v.reps, *v.partners):
        texts += [*person[:5], *person[5], *person[6]]
    for kind in _KINDS.values():
        texts += [*kind[0], *kind[1]]
    texts += [p for pair in v.parts for p in pair]
    bad = [t for t in texts if '"' in t or "\\" in t or any(ord(c) < 32 and c != "\n" for c in t)]
    if bad:
        raise RuntimeError(
            f"synth vocabulary holds characters the JSONL writer does not escape: {bad[:3]!r}"
        )


# --- generation ---------------------------------------------------------------------------------
def _check(n_emails: int, shape: str) -> None:
    if not isinstance(n_emails, int) or n_emails < 0:
        raise ValueError(f"n_emails must be a whole number >= 0, got {n_emails!r}")
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")


def _scramble(tid: int) -> int:
    """A thread-unique 8-digit number (104729 is prime, so this is a bijection below 10**8)."""
    return (tid * 104729 + 13) % 100_000_000


_OVERHEAD = 280  # typical greeting + opener + closing + signature + quoted parent, in characters
_PARAGRAPHS: dict[int, list[tuple[str, str]]] = {}


def _paragraphs(body_bytes: int) -> list[tuple[str, str]]:
    """Pre-built (paragraph, first sentence) pairs: two of them make the core of a ``body_bytes`` body."""
    cached = _PARAGRAPHS.get(body_bytes)
    if cached is not None:
        return cached
    body = _vocab().body
    r = random.Random(f"mailcli.synth.paragraphs:{body_bytes}")  # fixed per size, like the vocabulary (the seed
    # string is a constant: changing it would change every generated export)
    target = max(0, (body_bytes - _OVERHEAD) // 2)
    count = max(64, min(2048, 4_000_000 // max(target, 1)))
    out = []
    for _ in range(count):
        sents = [body[r.randrange(len(body))]]
        size = len(sents[0])
        while size < target:
            s = body[r.randrange(len(body))]
            sents.append(s)
            size += len(s) + 1
        out.append((" ".join(sents), sents[0]))
    if len(_PARAGRAPHS) > 8:
        _PARAGRAPHS.clear()
    _PARAGRAPHS[body_bytes] = out
    return out


def generate(
    n_emails: int, *, seed: int = 42, shape: str = "flat", body_bytes: int = 1000
) -> Iterator[dict[str, Any]]:
    """Yield exactly ``n_emails`` JSON-ready email records (see the module docstring).

    Arguments are checked at once (``ValueError``). A duplicate is a deep copy of one of the last 256 new
    records, so mutating a yielded record can change a later duplicate of it.
    """
    _check(n_emails, shape)
    if not isinstance(body_bytes, int) or body_bytes < 0:
        raise ValueError(f"body_bytes must be a whole number >= 0, got {body_bytes!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    return _generate(n_emails, seed, shape, body_bytes)


def _generate(n_emails: int, seed: int, shape: str, body_bytes: int) -> Iterator[dict[str, Any]]:
    v = _vocab()
    paras = _paragraphs(body_bytes)
    n_paras = len(paras)
    tr = random.Random(f"mailcli.synth:{seed}")  # text choices (a constant seed string, like the one above);
    # the structure uses Random(seed) in _plan
    trand, trange = tr.random, tr.randrange
    customers, reps, partners, parts = v.customers, v.reps, v.partners, v.parts
    urgent, n_urgent = v.urgent, len(v.urgent)
    cancel, n_cancel = v.cancel, len(v.cancel)
    complete, n_complete = v.complete, len(v.complete)
    reply_open, n_reply_open = v.reply_open, len(v.reply_open)
    n_greet, n_close = len(_GREET), len(_CLOSE)
    graph = shape == "graph"
    reply_prefix = "RE: " if graph else "Re: "
    gmtime, strftime = time.gmtime, time.strftime
    date_fmt = "%Y-%m-%dT%H:%M:%SZ" if graph else "%Y-%m-%dT%H:%M:%S+00:00"
    step = 2.0 * _SPAN / max(n_emails, 360)  # the whole stream spans about 360 days of 2025
    clock = float(_EPOCH_2025)
    ring: list[dict[str, Any]] = []
    k = 0  # new records so far
    foreign_no = 0
    seed_tag = str(seed).replace("-", "m")
    deepcopy = copy.deepcopy

    for ev in _plan(n_emails, seed):
        if ev[0] == "dup":
            yield deepcopy(ring[(k - 1 - ev[1]) % RING])
            continue
        _, th, idx, last, foreign = ev
        clock += trand() * step
        if idx == 0:  # a new conversation: who, what about
            kind = _KIND_NAMES[trange(len(_KIND_NAMES))]
            part, ptext = parts[trange(len(parts))]
            ref8 = f"{_scramble(th.tid):08d}"
            fmt = {
                "ref": ("23" if kind == "quote" else "45") + ref8,
                "ref8": ref8,
                "part": part,
                "ptext": ptext,
                "qty": trange(2, 500),
            }
            subjects, openers = v.subject_t[kind], v.opener_t[kind]
            th.subject = subjects[trange(len(subjects))].format(**fmt)
            th.ref = openers[trange(len(openers))].format(**fmt)
            th.initiator, th.responder = customers[trange(len(customers))], reps[trange(len(reps))]
            th.cc = partners[trange(len(partners))] if kind == "shipping" and trand() < 0.6 else None
            th.urgent = trand() < 0.12
            if th.urgent and trand() < 0.6:
                th.subject = "URGENT: " + th.subject
            th.importance = "high" if th.urgent and trand() < 0.7 else ("low" if trand() < 0.03 else "normal")
            th.conv = f"syn-conv-{seed_tag}-{th.tid}"
            th.mids = []
            th.last = None
        if th.cc is not None and idx % 3 == 2:  # the freight partner answers in some shipping threads
            sender, rcpt = th.cc, th.responder
        else:
            sender, rcpt = (th.initiator, th.responder) if idx % 2 == 0 else (th.responder, th.initiator)
        k += 1
        mid = f"<syn.{seed_tag}.{k}@{sender[4]}>"
        date = strftime(date_fmt, gmtime(min(int(clock), _END_2025)))

        # body: greeting, opener, two paragraphs, extras, closing + signature, quoted parent
        p1 = paras[int(trand() * n_paras)]
        p2 = paras[int(trand() * n_paras)]
        head = rcpt[5][int(trand() * n_greet)] + (
            th.ref if idx == 0 else reply_open[int(trand() * n_reply_open)]
        )
        extra = ""
        if th.urgent and (idx == 0 or trand() < 0.3):
            extra = " " + urgent[int(trand() * n_urgent)]
        if trand() < 0.02:
            extra += " " + cancel[int(trand() * n_cancel)]
        if last and th.complete:
            extra += "\n\n" + complete[int(trand() * n_complete)]
        tail = sender[6][int(trand() * n_close)]
        parent = th.last
        if parent is not None:
            tail = f"{tail}\n\nOn {parent[0]}, {parent[1]} wrote:\n> {parent[2]}\n> {parent[3]}"
        body = f"{head} {p1[0]}\n\n{p2[0]}{extra}{tail}"
        th.last = (f"{date[:10]} {date[11:16]}", sender[3], p1[1], p2[1])

        if foreign:
            foreign_no += 1
            conv = f"syn-conv-{seed_tag}-x{foreign_no}"
        else:
            conv = th.conv
        subject = reply_prefix + th.subject if idx else th.subject
        mids = th.mids
        in_reply_to = mids[-1] if mids else None
        refs = mids[-10:]
        importance = th.importance if idx == 0 or th.urgent else "normal"
        if graph:
            cc = th.cc
            rec = {
                "id": f"AAMk-syn-{seed_tag}-{k}",
                "internetMessageId": mid,
                "conversationId": conv,
                "subject": subject,
                "body": {"contentType": "text", "content": body},
                "bodyPreview": body[:255],
                "from": {"emailAddress": {"name": sender[0], "address": sender[1]}},
                "sender": {"emailAddress": {"name": sender[0], "address": sender[1]}},
                "toRecipients": [{"emailAddress": {"name": rcpt[0], "address": rcpt[1]}}],
                "ccRecipients": [{"emailAddress": {"name": cc[0], "address": cc[1]}}] if cc else [],
                "receivedDateTime": date,
                "sentDateTime": date,
                "importance": importance,
                "hasAttachments": trand() < 0.15,
                "internetMessageHeaders": (
                    [
                        {"name": "In-Reply-To", "value": in_reply_to},
                        {"name": "References", "value": " ".join(refs)},
                    ]
                    if in_reply_to
                    else []
                ),
            }
            if trand() < 0.2:  # some HTML bodies
                html = (
                    body.replace("&", "&amp;")
                    .replace("<", "&lt;")
                    .replace(">", "&gt;")
                    .replace("\n\n", "</p><p>")
                    .replace("\n", "<br>")
                )
                rec["body"] = {"contentType": "html", "content": f"<html><body><p>{html}</p></body></html>"}
        else:
            rec = {
                "id": f"syn-{seed_tag}-{k}",
                "conversation_id": conv,
                "subject": subject,
                "body": body,
                "from": sender[3],
                "to": [rcpt[1]],
                "cc": [th.cc[1]] if th.cc else [],
                "date": date,
                "message_id": mid,
                "in_reply_to": in_reply_to,
                "references": refs,
                "importance": importance,
            }
        mids.append(mid)
        if k <= RING:
            ring.append(rec)
        else:
            ring[(k - 1) % RING] = rec
        yield rec


def to_json(rec: dict[str, Any]) -> str:
    """One record as the JSONL line ``write_jsonl`` writes: compact, UTF-8 characters kept as they are."""
    return _ENCODE(rec)


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# Fast serializers for write_jsonl. Every string the generator emits is built from the vocabulary, which
# _check_clean() proves free of '"', '\\' and control characters other than newline: escaping is then one
# str.replace, and the lines are byte-identical to to_json() (the tests compare them).
def _q(s: str) -> str:
    return s.replace("\n", "\\n")


def _qlist(items: list[str]) -> str:
    return '["' + '","'.join(items) + '"]' if items else "[]"


def _line_flat(r: dict[str, Any]) -> str:
    irt = r["in_reply_to"]
    return (
        '{"id":"'
        + r["id"]
        + '","conversation_id":"'
        + r["conversation_id"]
        + '","subject":"'
        + r["subject"]
        + '","body":"'
        + _q(r["body"])
        + '","from":"'
        + r["from"]
        + '","to":'
        + _qlist(r["to"])
        + ',"cc":'
        + _qlist(r["cc"])
        + ',"date":"'
        + r["date"]
        + '","message_id":"'
        + r["message_id"]
        + '","in_reply_to":'
        + ("null" if irt is None else '"' + irt + '"')
        + ',"references":'
        + _qlist(r["references"])
        + ',"importance":"'
        + r["importance"]
        + '"}'
    )


def _ea(a: dict[str, Any]) -> str:
    e = a["emailAddress"]
    return '{"emailAddress":{"name":"' + e["name"] + '","address":"' + e["address"] + '"}}'


def _line_graph(r: dict[str, Any]) -> str:
    body = r["body"]
    hdrs = r["internetMessageHeaders"]
    return (
        '{"id":"'
        + r["id"]
        + '","internetMessageId":"'
        + r["internetMessageId"]
        + '","conversationId":"'
        + r["conversationId"]
        + '","subject":"'
        + r["subject"]
        + '","body":{"contentType":"'
        + body["contentType"]
        + '","content":"'
        + _q(body["content"])
        + '"},"bodyPreview":"'
        + _q(r["bodyPreview"])
        + '","from":'
        + _ea(r["from"])
        + ',"sender":'
        + _ea(r["sender"])
        + ',"toRecipients":['
        + ",".join(map(_ea, r["toRecipients"]))
        + '],"ccRecipients":['
        + ",".join(map(_ea, r["ccRecipients"]))
        + '],"receivedDateTime":"'
        + r["receivedDateTime"]
        + '","sentDateTime":"'
        + r["sentDateTime"]
        + '","importance":"'
        + r["importance"]
        + '","hasAttachments":'
        + ("true" if r["hasAttachments"] else "false")
        + ',"internetMessageHeaders":['
        + ",".join('{"name":"' + h["name"] + '","value":"' + h["value"] + '"}' for h in hdrs)
        + "]}"
    )


def write_jsonl(path: str | Path, n_emails: int, **kw: Any) -> Path:
    """Write ``generate(n_emails, **kw)`` as UTF-8 JSONL to ``path`` (parents created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        _write(f, n_emails, **kw)
    return path


def _write(f: Any, n_emails: int, *, seed: int = 42, shape: str = "flat", body_bytes: int = 1000) -> None:
    line = _line_graph if shape == "graph" else _line_flat
    batch: list[str] = []
    for rec in generate(n_emails, seed=seed, shape=shape, body_bytes=body_bytes):
        batch.append(line(rec))
        if len(batch) >= 2000:
            batch.append("")
            f.write("\n".join(batch))
            batch.clear()
    if batch:
        batch.append("")
        f.write("\n".join(batch))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python tests/synth.py",
        description="Write a deterministic synthetic email export (JSONL) for benchmarks and tests.",
        epilog="Example: python tests/synth.py 100000 -o data/synth.jsonl --seed 7 --shape graph",
    )
    ap.add_argument("n", type=int, help="number of records (duplicates included)")
    ap.add_argument("-o", "--output", default="-", help="output file ('-' for stdout, the default)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shape", choices=SHAPES, default="flat")
    ap.add_argument("--body-bytes", type=int, default=1000, help="approximate body length (default 1000)")
    ap.add_argument("--quiet", action="store_true", help="no summary on stderr")
    args = ap.parse_args(argv)
    if args.n < 0:
        ap.error("n must be >= 0")
    if args.body_bytes < 0:
        ap.error("--body-bytes must be >= 0")
    kw = {"seed": args.seed, "shape": args.shape, "body_bytes": args.body_bytes}
    t0 = time.perf_counter()
    try:
        if args.output == "-":
            _write(sys.stdout, args.n, **kw)
            sys.stdout.flush()
            where = "stdout"
        else:
            where = str(write_jsonl(args.output, args.n, **kw))
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(
            f"error: cannot write {args.output}: {exc.strerror or exc}; choose another path with -o",
            file=sys.stderr,
        )
        return 1
    dt = time.perf_counter() - t0
    if not args.quiet:
        c = expected_counts(args.n, args.seed, args.shape)
        rate = args.n / dt if dt > 0 else float("inf")
        print(
            f"wrote {c.records} records to {where} in {dt:.2f}s ({rate:,.0f}/s): {c.unique_emails} unique emails, "
            f"{c.duplicates} duplicates, {c.conversations} conversations, {c.foreign_replies} replies with a "
            f"foreign conversation id, {c.completed_conversations} completed",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Phase 1 rules and the `phase1` record of docs/export.md: one table per rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcli.analysis.phase1 import (
    Phase1Result,
    SenderLists,
    analyze_email,
    find_keywords,
    strip_quoted,
)
from mailcli.config import Settings

PHASE1_KEYS = [
    "po_numbers", "quote_numbers", "case_numbers", "part_numbers", "amounts", "dates", "emails",
    "phones", "workflow_state", "urgency_score", "priority", "financial_impact", "sender_category",
    "detected_patterns",
]  # fmt: skip


def body(text: str, **kwargs) -> Phase1Result:
    return analyze_email("", text, **kwargs)


# ------------------------------------------------------------------------------------------ PO


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PO 4500012345", ["4500012345"]),
        ("P.O. #4500012345", ["4500012345"]),
        ("Purchase Order No. 4500012345", ["4500012345"]),
        ("PO#4500012345", ["4500012345"]),
        ("PO: 4500012345", ["4500012345"]),
        ("po 4500012345", ["4500012345"]),
        ("purchase order number 4500012345", ["4500012345"]),
        ("PO No.: 4500012345", ["4500012345"]),
        ("PO 1234567", ["1234567"]),  # 7 digits: the shortest PO
        ("PO 123456789012", ["123456789012"]),  # 12 digits: the longest PO
        ("PO 450001", []),  # 6 digits is not a PO
        ("PO 4500012345678", []),  # 13 digits is not a PO
        ("4500012345", []),  # digits without PO
        ("IPO 4500012345", []),  # PO must start a word
        ("P.O. Box 1234567", []),
        ("PO 4500012345X", []),  # glued to a letter: not a number
    ],
)
def test_po_numbers_follow_po_keyword_with_7_to_12_digits(text, expected):
    assert body(text).po_numbers == expected


def test_po_numbers_are_unique_in_order_of_first_appearance():
    r = body("PO 4500000002, then PO 4500000001, again P.O. 4500000002")
    assert r.po_numbers == ["4500000002", "4500000001"]


# --------------------------------------------------------------------------------- quote / case


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Quote 123456", ["123456"]),
        ("quotation #1234567", ["1234567"]),
        ("Quote No. 12345678", ["12345678"]),
        ("Q#123456", ["123456"]),
        ("Q-123456", ["123456"]),
        ("quote: 1234567890", ["1234567890"]),  # 10 digits: the longest
        ("quote 12345", []),  # 5 digits is too short
        ("quote 12345678901", []),  # 11 digits is too long
        ("FAQ-123456", []),  # Q- must start a word
        ("Q 123456", []),  # a bare Q is not a quote marker
    ],
)
def test_quote_numbers_follow_quote_keyword_with_6_to_10_digits(text, expected):
    assert body(text).quote_numbers == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Case #123456", ["123456"]),
        ("ticket 7654321", ["7654321"]),
        ("SR 1234567", ["1234567"]),
        ("INC0012345", ["0012345"]),  # written together counts
        ("INC 0012345", ["0012345"]),
        ("incident: 12345678", ["12345678"]),
        ("Ticket No. 123456, case 123456", ["123456"]),  # unique
        ("case 12345", []),
        ("case 12345678901", []),
        ("showcase 1234567", []),  # "case" inside a word
    ],
)
def test_case_numbers_follow_case_keyword_with_6_to_10_digits(text, expected):
    assert body(text).case_numbers == expected


# -------------------------------------------------------------------------------- part numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Need ABC-12345 and XY123Z", ["ABC-12345", "XY123Z"]),
        ("abc-12345 and ABC-12345", ["ABC-12345"]),  # upper-cased, unique
        ("#AB-1234#", ["AB-1234"]),  # - and # only inside
        ("SKU#AB12345", ["SKU#AB12345"]),
        ("AB12", []),  # 4 characters: too short
        ("A123456789012345678Z", ["A123456789012345678Z"]),  # 20 characters: the longest
        ("A1234567890123456789Z", []),  # 21 characters
        ("ABCDEFG", []),  # no digit
        ("1234567", []),  # no letter
        ("100th", []),  # an ordinal
        ("ab12cd_x", []),  # part of a longer identifier
        ("second DEF456 first ABC123", ["DEF456", "ABC123"]),  # order of appearance
    ],
)
def test_part_numbers_are_letter_and_digit_tokens_of_5_to_20_chars(text, expected):
    assert body(text).part_numbers == expected


@pytest.mark.parametrize(
    "text",
    [
        "PO#4500012345",  # the token that produced a PO number
        "PO4500012345",
        "INC0012345",  # ... a case number
        "Q-123456",  # ... a quote number
        "4-Mar-2025",  # a date
        "2025-03-04T10:00",
        "a1b2c3@foo.com",  # an email address
        "USD3400",  # an amount
        "+1-555-123-4567",  # a phone number
        "https://example.com/files/AB12345",  # inside a link
    ],
)
def test_part_number_is_never_an_id_date_amount_email_phone_or_link(text):
    assert body(text).part_numbers == []


def test_bulk_order_of_six_parts_still_lists_every_part():
    r = body("AB1001 AB1002 AB1003 AB1004 AB1005 AB1006")
    assert r.part_numbers == ["AB1001", "AB1002", "AB1003", "AB1004", "AB1005", "AB1006"]


# ------------------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,234.56", [1234.56]),
        ("USD 1,234.56", [1234.56]),
        ("1,234.56 USD", [1234.56]),
        ("€99", [99.0]),
        ("99€", [99.0]),
        ("USD 3,400", [3400.0]),
        ("usd3400", [3400.0]),
        ("EUR 5", [5.0]),
        ("5 EUR", [5.0]),
        ("£10", [10.0]),
        ("GBP 7.50", [7.5]),
        ("$ 12", [12.0]),
        ("€99 then $1,000", [99.0, 1000.0]),  # order of appearance
        ("$5 and $5", [5.0, 5.0]),  # amounts are not deduplicated: both count
        ("$100 USD", [100.0]),  # one amount with two marks
        ("1,234.56", []),  # no currency mark
        ("USDA 100", []),  # a code inside a word is no currency mark
        ("EUR 1.234,56", []),  # a European-format number is not cut into a wrong amount
        ("$1,234,567.89", [1234567.89]),
        ("PO 4500012345", []),
    ],
)
def test_amounts_need_a_currency_mark(text, expected):
    assert body(text).amounts == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$1.10 and $2.20", 3.3), ("nothing", 0.0), ("USD 3,400 and €99", 3499.0)],
)
def test_financial_impact_is_the_sum_of_amounts(text, expected):
    r = body(text)
    assert r.financial_impact == expected
    assert isinstance(r.financial_impact, float)


# --------------------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-04", ["2025-03-04"]),
        ("3/4/2025", ["2025-03-04"]),  # US: month first
        ("12/25/2025", ["2025-12-25"]),
        ("Mar 4, 2025", ["2025-03-04"]),
        ("March 4, 2025", ["2025-03-04"]),
        ("4 March 2025", ["2025-03-04"]),
        ("Sept. 30, 2025", ["2025-09-30"]),
        ("4th Mar 2025", ["2025-03-04"]),
        ("2025-13-45", []),  # impossible dates are ignored
        ("13/25/2025", []),  # no 13th month in US order
        ("Feb 30, 2025", []),
        ("March 2025", []),  # no day
    ],
)
def test_dates_become_iso_strings(text, expected):
    assert body(text).dates == expected


def test_dates_are_unique_in_order_of_first_appearance():
    r = body("March 4, 2025, then 2025-01-02, and again 3/4/2025")
    assert r.dates == ["2025-03-04", "2025-01-02"]


# ------------------------------------------------------------------------------ emails, phones


def test_emails_are_lower_cased_unique_in_order():
    r = body("Mail John.Doe@Acme.com or sales@acme.co.uk; cc john.doe@acme.com")
    assert r.emails == ["john.doe@acme.com", "sales@acme.co.uk"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +1 (555) 123-4567 now", ["+1 (555) 123-4567"]),
        ("call 555-123-4567", ["555-123-4567"]),
        ("call (555) 123-4567", ["(555) 123-4567"]),
        ("call 555.123.4567", ["555.123.4567"]),
        ("call 1-800-555-1234", ["1-800-555-1234"]),
        ("call +44 20 7946 0958", ["+44 20 7946 0958"]),
        ("PO 4500012345", []),  # a PO number is not a phone
        ("ref 5551234567", []),  # a bare run of digits has no separators
        ("on 2025-03-04", []),  # a date is not a phone
        ("ABC-555-123-4567", []),  # inside a part number
    ],
)
def test_phones_need_separators_or_a_plus(text, expected):
    assert body(text).phones == expected


# ------------------------------------------------------------------------------------ keywords


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("I know", set()),  # "know" does not hold "now"
        ("statuses", set()),
        ("shipping", {"ship"}),  # an inflection is reported as its word
        ("ships", {"ship"}),
        ("shipped", {"shipped"}),  # its own row: done, not planned
        ("returned returning returns", {"return"}),
        ("refunded RMAs", {"refund", "rma"}),
        ("ordered orders ordering", {"order"}),
        ("quoted quotes quotations", {"quote", "quotation"}),
        ("purchased purchases", {"purchase"}),
        ("updates", {"update"}),
        ("reorder", set()),
        ("tracked track", set()),  # "tracking" only
        ("costs prices", set()),
        ("updated updating purchasing", set()),  # forms left out of WORKFLOW_INFLECTIONS
        ("close deliver resolve complete", set()),  # COMPLETION words count in their past forms only
        ("Working   on", {"working on"}),
        ("URGENT", {"urgent"}),
        ("status@acme.com", {"status"}),  # find_keywords alone does not know about addresses
    ],
)
def test_keywords_match_whole_words_and_their_listed_inflections(text, found):
    assert find_keywords(text.lower()) == found


def test_keyword_inside_an_email_address_is_not_counted():
    assert body("write to status@acme.com").workflow_state == "START_POINT"


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("Resolved", "COMPLETION"),
        ("case closed", "COMPLETION"),
        ("The order was delivered and the RMA closed.", "COMPLETION"),  # done wins over every other row
        ("The returned filters arrived and the refund is completed.", "COMPLETION"),
        ("Your order has been shipped, tracking 1Z999.", "SHIPPING"),  # shipped: done, over the order
        ("The quote? It shipped?", "SHIPPING"),  # order of rows, not of words in the text
        ("The RMA for your order is issued.", "RETURNS"),  # a return of an order
        ("We want a refund, the box went out with tracking 1Z999.", "RETURNS"),  # a return shipped
        ("return, rma or refund", "RETURNS"),
        ("Any status on my quote?", "QUOTE_PROCESSING"),  # a quote request mentioning status
        ("We will place the order once the quotation is in.", "QUOTE_PROCESSING"),
        ("pricing and cost", "QUOTE_PROCESSING"),
        ("Your order will ship Friday; tracking follows.", "ORDER_MANAGEMENT"),  # planned: a term of it
        ("update on the order", "ORDER_MANAGEMENT"),
        ("purchase order", "ORDER_MANAGEMENT"),
        ("we will ship it, tracking follows", "SHIPPING"),  # planned, no order word
        ("Tracking number NWX4471902", "SHIPPING"),
        ("status: we are working on it", "IN_PROGRESS"),  # the most general row
        ("in  progress", "IN_PROGRESS"),
        ("hello there", "START_POINT"),
        ("", "START_POINT"),
    ],
)
def test_workflow_state_is_the_first_row_of_the_precedence_table_that_matches(text, state):
    assert body(text).workflow_state == state


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("The filters were returned last week.", "RETURNS"),
        ("We are returning the filters.", "RETURNS"),
        ("It was refunded in full.", "RETURNS"),
        ("We ordered 10 FLT-1020-M filters.", "ORDER_MANAGEMENT"),
        ("We are ordering 50 valves.", "ORDER_MANAGEMENT"),
        ("Two orders are open.", "ORDER_MANAGEMENT"),
        ("We purchased them last year.", "ORDER_MANAGEMENT"),
        ("Shipping is booked for Friday.", "SHIPPING"),
        ("It ships Friday.", "SHIPPING"),
        ("We quoted $5 per unit.", "QUOTE_PROCESSING"),
        ("Two quotations are attached.", "QUOTE_PROCESSING"),
        ("Any updates?", "IN_PROGRESS"),
    ],
)
def test_workflow_words_count_in_their_inflections(text, state):
    assert body(text).workflow_state == state


def test_workflow_tables_are_consistent():
    from mailcli.analysis.phase1 import WORKFLOW_INFLECTIONS, WORKFLOW_PRECEDENCE

    states = {"COMPLETION", "IN_PROGRESS", "QUOTE_PROCESSING", "ORDER_MANAGEMENT", "SHIPPING", "RETURNS"}
    assert {state for state, _, _ in WORKFLOW_PRECEDENCE} == states
    assert all(len(reason) > 20 and words for _, reason, words in WORKFLOW_PRECEDENCE)
    words = [w for _, _, row in WORKFLOW_PRECEDENCE for w in row]
    forms = words + [f for fs in WORKFLOW_INFLECTIONS.values() for f in fs]
    assert len(forms) == len(set(forms))  # a written form belongs to one word of one row
    assert set(WORKFLOW_INFLECTIONS) <= set(words)


def test_urgency_stems_are_derived_from_the_urgency_words():
    from mailcli.analysis.phase1 import _URGENCY_STEMS, URGENCY_WORDS

    assert all(any(stem in word for stem in _URGENCY_STEMS) for word in URGENCY_WORDS)
    assert set(_URGENCY_STEMS) <= set(URGENCY_WORDS)


# ------------------------------------------------------------------------------------- urgency


@pytest.mark.parametrize(
    ("text", "importance", "score"),
    [
        ("urgent", "normal", 2),
        ("URGENT urgent Urgent", "normal", 2),  # once per distinct word
        ("critical", "normal", 3),
        ("asap", "normal", 2),
        ("immediate", "normal", 2),
        ("immediate and immediately", "normal", 2),  # one word group
        ("emergency", "normal", 3),
        ("escalate, escalated, escalation", "normal", 2),  # one word group
        ("deadline", "normal", 1),
        ("today", "normal", 1),
        ("urgent critical", "normal", 5),
        ("todays urgently", "normal", 0),  # whole words only
        ("urgent critical asap immediately emergency escalation deadline today", "normal", 10),  # 16, capped
        ("", "high", 2),  # +2 when importance is high
        ("urgent", "high", 4),
        ("urgent", "HIGH", 4),
        ("urgent", "low", 2),
        ("critical asap emergency", "high", 10),
        ("urgent critical asap immediately emergency escalation deadline today", "high", 10),  # cap holds
    ],
)
def test_urgency_scores_each_word_once_capped_at_10(text, importance, score):
    assert body(text, importance=importance).urgency_score == score


# ------------------------------------------------------------------------------------ priority


@pytest.mark.parametrize(
    ("text", "importance", "priority"),
    [
        ("urgent critical", "normal", "critical"),  # urgency >= 5
        ("critical", "high", "critical"),  # 3 + 2
        ("critical", "normal", "high"),  # urgency >= 3
        ("PO 4500012345", "normal", "high"),  # any PO number
        ("$10,000.01", "normal", "high"),  # any amount > 10,000
        ("USD 25,000", "normal", "high"),
        ("$10,000", "normal", "low"),  # not above 10,000, nothing else
        ("hello", "normal", "low"),  # urgency 0 and no PO/quote/case
        ("quote 123456", "normal", "medium"),  # a quote number keeps it off low
        ("case 123456", "normal", "medium"),
        ("today", "normal", "medium"),  # urgency 1
        ("urgent", "normal", "medium"),  # urgency 2
        ("", "high", "medium"),  # urgency 2 from importance alone
    ],
)
def test_priority_branches(text, importance, priority):
    assert body(text, importance=importance).priority == priority


# ------------------------------------------------------------------------------------ patterns


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("AB1001 AB1002 AB1003 AB1004 AB1005 AB1006", ["bulk_order"]),  # > 5 parts
        ("AB1001 AB1002 AB1003 AB1004 AB1005", []),  # exactly 5
        ("$50,000.01", ["high_value"]),  # impact > 50,000
        ("$30,000 and $20,000.50", ["high_value"]),  # the sum counts
        ("$50,000", []),
        ("please expedite", ["expedited"]),
        ("rush order", ["expedited"]),
        ("brush", []),
        ("cancel it", ["cancellation_risk"]),
        ("void the invoice", ["cancellation_risk"]),
        ("avoid", []),
        ("urgent critical", ["high_urgency"]),
        ("critical", []),
        (
            "urgent critical rush cancel $60,000 AB1001 AB1002 AB1003 AB1004 AB1005 AB1006",
            ["bulk_order", "high_value", "expedited", "cancellation_risk", "high_urgency"],
        ),
    ],
)
def test_detected_patterns(text, patterns):
    assert body(text).detected_patterns == patterns


def test_high_urgency_pattern_counts_high_importance():
    assert body("critical", importance="high").detected_patterns == ["high_urgency"]


# ------------------------------------------------------------------------------------- senders

SENDERS = SenderLists(
    own_domains=("Acme.com",),
    partner_domains=("partner.com",),
    key_senders=("VIP@customer.com", "bigcorp.com"),
)


@pytest.mark.parametrize(
    ("sender", "category"),
    [
        ("bob@acme.com", "internal"),
        ("Bob <BOB@ACME.COM>", "internal"),  # display name, case-insensitive
        ("x@eu.acme.com", "internal"),  # subdomain of an own domain
        ("x@notacme.com", "standard"),  # not a subdomain
        ("x@acme.com.evil.io", "standard"),
        ("x@partner.com", "partner"),
        ("x@mail.partner.com", "partner"),
        ("vip@customer.com", "key_customer"),  # a key sender by address
        ("other@customer.com", "standard"),  # ... only that address
        ("anyone@BigCorp.com", "key_customer"),  # a key sender by domain
        ("", "standard"),
        ("not an address", "standard"),
    ],
)
def test_sender_category_per_list(sender, category):
    assert body("hi", sender=sender, senders=SENDERS).sender_category == category


def test_sender_category_is_standard_without_lists():
    assert body("hi", sender="bob@acme.com").sender_category == "standard"


def test_sender_lists_from_settings():
    settings_ = Settings(own_domains=("acme.com",), partner_domains=("p.com",), key_senders=("k@x.com",))
    lists = SenderLists.from_settings(settings_)
    assert lists == SenderLists(("acme.com",), ("p.com",), ("k@x.com",))
    assert body("hi", sender="a@p.com", senders=lists).sender_category == "partner"


# ------------------------------------------------------------------------------ quoted history

QUOTED_REPLIES = [
    "Thanks, noted.\n\nOn Tue, Mar 4, 2025 at 10:00 AM John <john@x.com> wrote:\nPO 4500012345 for $20,000\n",
    "Thanks, noted.\nOn Tue, Mar 4, 2025 at 10:00 AM John Doe <\njohn@x.com> wrote:\nPO 4500012345 for $20,000",
    "Thanks, noted.\n> PO 4500012345 for $20,000\n",
    "Thanks, noted.\n-----Original Message-----\nFrom: John\nPO 4500012345 for $20,000",
    "Thanks, noted.\n________________\nFrom: John <john@x.com>\nSent: Tuesday, March 4, 2025\nTo: me\n"
    "PO 4500012345 for $20,000",
    "Thanks, noted. From: John Sent: Tuesday To: me\nPO 4500012345 for $20,000",
]


@pytest.mark.parametrize("text", QUOTED_REPLIES)
def test_quoted_history_is_not_counted_again(text):
    r = body(text)
    assert r.po_numbers == []
    assert r.amounts == []
    assert strip_quoted(text).startswith("Thanks, noted.")


def test_text_written_below_a_quote_is_kept():
    text = "On Tue, Mar 4, 2025, John wrote:\n> old PO 4500000001\n\nNew PO 4500000002 please"
    assert body(text).po_numbers == ["4500000002"]


@pytest.mark.parametrize("value", ["", None, "just text"])
def test_strip_quoted_keeps_unquoted_text(value):
    assert strip_quoted(value) == (value or "")


# -------------------------------------------------------------------------------------- record


def test_subject_counts_as_text():
    assert analyze_email("PO 4500012345 urgent", "").po_numbers == ["4500012345"]


def test_empty_email_is_the_spec_default_record():
    assert analyze_email("", "").to_dict() == {
        "po_numbers": [], "quote_numbers": [], "case_numbers": [], "part_numbers": [],
        "amounts": [], "dates": [], "emails": [], "phones": [], "workflow_state": "START_POINT",
        "urgency_score": 0, "priority": "low", "financial_impact": 0.0,
        "sender_category": "standard", "detected_patterns": [],
    }  # fmt: skip


def test_to_dict_has_exactly_the_spec_keys_in_order_and_is_json():
    r = analyze_email("RE: PO 4500012345", "Ship ABC-12345 by March 4, 2025, $1,234.56. +1 555-123-4567")
    d = r.to_dict()
    assert list(d) == PHASE1_KEYS
    assert json.loads(json.dumps(d)) == d


def test_from_dict_round_trips_and_tolerates_missing_keys():
    r = analyze_email("urgent PO 4500012345", "quote 123456 $20,000 AB12345 x@y.com 555-123-4567")
    assert Phase1Result.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert Phase1Result.from_dict({}) == Phase1Result()


def test_analysis_is_deterministic():
    args = ("Order", "PO 4500012345, AB12345, $5, 2025-03-04, urgent today")
    assert analyze_email(*args) == analyze_email(*args) == analyze_email(*args)


def test_unicode_digits_are_not_po_numbers_or_amounts():
    r = body("PO ٤٥٠٠٠١٢٣٤٥ and $٥")
    assert r.po_numbers == []
    assert r.amounts == []


# ---------------------------------------------------------------------- text that is not prose

PATCH_MAIL = (
    "Please review.\n\n"
    "Signed-off-by: Jane Dev <jane@example.org>\n"
    "---\n"
    " drivers/net/e1000e/netdev.c |  4 ++--\n"
    " 1 file changed, 2 insertions(+), 2 deletions(-)\n\n"
    "diff --git a/drivers/net/e1000e/netdev.c b/drivers/net/e1000e/netdev.c\n"
    "index 11fad8c..c5f841a 100644\n"
    "--- a/drivers/net/e1000e/netdev.c\n"
    "+++ b/drivers/net/e1000e/netdev.c\n"
    "@@ -10,7 +10,7 @@ static int e1000_probe(struct pci_dev *pdev)\n"
    " \tif (!order)\n"
    "-\t\treturn 0;\n"
    "+\t\treturn -EINVAL; /* SKU AB12345 costs $1,200 */\n"
    "\n"
    "-- \n"
    "1.7.3.1.g432b3.dirty\n"
)


@pytest.mark.parametrize(
    "text",
    [
        PATCH_MAIL,  # diffstat, trailer, diff hunks, signature
        "Try this:\n\tstatus = update(order);\n\tif (x) {\n\t\treturn 0;\n\t}\n",  # code lines
        "Try this:\n```\nstatus = order\nreturn 1\n```\n",  # code fence
        "#define RMA_PART AB12345\n#include <order.h>\n// ship it\n/* refund */",  # directives, comments
        "Hi\n-- \nJane, order desk, SKU AB12345, PO 4500012345, $20,000",  # signature
        "Hi\n________________________________\nacme-users mailing list\nPO 4500012345 order",  # list footer
        "Hi\nCONFIDENTIALITY NOTICE: this message, PO 4500012345 and $20,000 are confidential.",  # legal
        "Hi\n-----BEGIN PGP SIGNATURE-----\n\niQEcBAEBAgAGBQJO order AB12345\n-----END PGP SIGNATURE-----",
        "Fixed in commit 0123456789abcdef0123456789abcdef01234567 and 0xff534d42.",  # hex runs
        "Key: QUJDMTIzNDVQTyA0NTAwMDEyMzQ1IGZvciAkMjAsMDAwIGFuZCBTS1UgQUIxMjM0NQ==",  # base64 run
    ],
)
def test_text_that_is_not_prose_gives_no_business_fact_and_no_state(text):
    r = body(text)
    assert (r.po_numbers, r.quote_numbers, r.case_numbers, r.part_numbers, r.amounts) == ([], [], [], [], [])
    assert r.workflow_state == "START_POINT"
    assert r.detected_patterns == []


def test_a_prose_list_with_semicolons_is_prose():
    r = body("We need:\n- 20 x HX200;\n- 10 x VLV-3321 at $412.50;\n- a quote for the rest.")
    assert r.part_numbers == ["HX200", "VLV-3321"]
    assert r.amounts == [412.5]
    assert r.workflow_state == "QUOTE_PROCESSING"


def test_prose_around_a_patch_is_still_read():
    r = body("Please ship HX200 on PO 4500012345 for $1,200.00.\n" + PATCH_MAIL + "\nThanks")
    assert r.po_numbers == ["4500012345"]
    assert r.part_numbers == ["HX200"]
    assert r.amounts == [1200.0]
    assert r.workflow_state == "SHIPPING"


def test_contacts_in_a_signature_are_still_read():
    r = body("Thanks\n-- \nJane Doe, +1 (555) 123-4567, jane@acme.com, back on March 4, 2025")
    assert r.phones == ["+1 (555) 123-4567"]
    assert r.emails == ["jane@acme.com"]
    assert r.dates == ["2025-03-04"]


# ------------------------------------------------------------------- part numbers: context, shape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("part ab123 please", ["AB123"]),  # needs: keyword (any case)
        ("P/N hx-200", ["HX-200"]),
        ("SKU: abc123", ["ABC123"]),
        ("model xy1000 and item no. zz9000", ["XY1000", "ZZ9000"]),
        ("Part number HX200: in stock", ["HX200"]),  # ":" after a part is prose
        ("HX200", ["HX200"]),  # needs: catalogue shape
        ("VLV-3321 and BRG-6205-2RS", ["VLV-3321", "BRG-6205-2RS"]),
        ("ABC12345", ["ABC12345"]),  # hex letters, but letters then digits: a catalogue part
        ("hx200", []),  # lower case and no keyword: a name in code or a program
        ("ath9k e1000e python3 Emacs23", []),
        ("GLIB-2", []),  # one digit: no run of 3
        ("11fad8c C5F841A", []),  # excluded: hex hash (any case)
        ("part 11fad8c", []),  # ... even after a keyword
        ("glib-2.0 and GMIME-2.4 and 2.6.38-RC4", []),  # excluded: version
        ("1.7.3.1.G432B3", []),
        ("see WM8904.c and drivers/E1000E/", []),  # excluded: file or path
        ("$AB123 ptr->AB123 AB123(x) AB123[0] AB123=1", []),  # excluded: code identifier
        ("RFC2822 SHA-256 UTF-16 X86-64 ISO8859-1 I386 IPV6-100", []),  # excluded: technical name
        ("tracking 1Z999AA10123456784", []),  # excluded: other kind of number
        ("Tracking number: NWL7845512390", []),
        ("The lot number is L2502", []),
        ("pump (serial HX2-01447)", []),
        ("under PRO NWL7845523310", []),
    ],
)
def test_part_numbers_need_a_keyword_or_the_catalogue_shape(text, expected):
    assert body(text).part_numbers == expected


def test_part_number_rules_are_a_documented_table():
    from mailcli.analysis.phase1 import NON_PROSE_RULES, PART_NUMBER_RULES, WORKFLOW_WORD_EXCLUSIONS

    for table in (PART_NUMBER_RULES, NON_PROSE_RULES, WORKFLOW_WORD_EXCLUSIONS):
        assert table and all(isinstance(rule, str) and len(reason) > 20 for rule, reason in table)


# ------------------------------------------------------------------ workflow words in sentences


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("On error we return -EINVAL here.", "START_POINT"),  # return of a value
        ("Make it return 0 on success.", "START_POINT"),
        ("The function should return a pointer.", "START_POINT"),
        ("Check the return value first.", "START_POINT"),
        ("Please return the pumps for credit.", "RETURNS"),  # a return in a sentence
        ("We will return them next week.", "RETURNS"),
        ("<quote>the canonical format</quote>", "START_POINT"),  # markup or code
        ("Call update() and read obj.status.flags", "START_POINT"),
        ("Read the directory in inode order.", "START_POINT"),  # order as a sequence
        ("Apply the patches in order.", "START_POINT"),
        ("Your order is confirmed.", "ORDER_MANAGEMENT"),
        ("We want a return/refund.", "RETURNS"),  # a slash between words is prose
        ("see net/core/update and </quote>", "START_POINT"),  # a path, a closing tag
        ("The status of the order?", "ORDER_MANAGEMENT"),
        ("The function returns NULL on error.", "START_POINT"),  # return of a value
        ("sysconf returns -1 on FreeBSD", "START_POINT"),
        ("even if sysconf returns a positive value", "START_POINT"),
        ("the strnlen() function returns strlen(s), if that is less", "START_POINT"),
        ("in cases where -1 is returned.", "START_POINT"),
        ("Check the returned value.", "START_POINT"),
        ("We would like to return the 10 cartridges.", "RETURNS"),  # a number after "the": goods
        ("Please return the pumps, the error was ours.", "RETURNS"),  # the clause ends before "error"
        ("It adds sense to return status of the routine.", "START_POINT"),  # status of a program
        ("The exit status is 1.", "START_POINT"),
        ("Kill the buffer and update the search view.", "START_POINT"),  # update as a verb
        ("Known not to update mtime.", "START_POINT"),
        ("v2 updates the locking; security updates apply.", "START_POINT"),
        ("Do you have an update on this?", "IN_PROGRESS"),  # news
        ("Weekly status update", "IN_PROGRESS"),
        ("Any update?", "IN_PROGRESS"),
        ("The pumps have not shipped yet.", "START_POINT"),  # not done
        ("They haven't been delivered.", "START_POINT"),
        ("It will be delivered Friday.", "START_POINT"),
        ("not to update mtime until the filehandle is\n   closed.", "START_POINT"),  # a wrapped line
        ("It could then be immediately closed.", "START_POINT"),
        ("No, it was delivered.", "COMPLETION"),  # the "no" is another clause
        ("It was delivered this morning.", "COMPLETION"),
        ("Check the ordering of the writes.", "START_POINT"),  # order as a sequence
        ("memory ordering between CPUs", "START_POINT"),
    ],
)
def test_workflow_words_count_as_words_of_sentences(text, state):
    assert body(text).workflow_state == state


# -------------------------------------------------------------------------------- money in prose


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AX-4410-B valve 20 $250.00 $5,000.00", [250.0, 5000.0]),  # a mark before a number is its own
        ("qty 2 €6,850.00", [6850.0]),
        ("1,234.56 USD", [1234.56]),  # a mark after a number, with no number after the mark
        ("US$100 and C$ 20", [100.0, 20.0]),  # after a letter: a currency
        ('echo "$1: done" > msg; git commit -F msg $1', []),  # a script uses shell variables
        ("There could be a change to $1 (path), see $HOME", []),
        ("x=$5 and ${5}", []),  # glued to "=": a variable
        ("It costs $1 per unit", [1.0]),  # no shell variable anywhere: dollars
        ("$PATH and $HOME", []),
    ],
)
def test_money_needs_a_currency_mark_next_to_a_number_in_prose(text, expected):
    assert body(text).amounts == expected


# The prose rules on hostile bodies: no wall-clock assertion; quadratic (or worse) behaviour on a
# 200 KB body takes minutes, so the per-test timeout is what catches it.
PROSE_RULE_ADVERSARIAL_UNITS = [
    "AB123 ", "part ab123 ", "x = 1;\n", "\n--- a\n+++ b\n", "-----BEGIN PGP x-----", "0x12ab ",
    "deadbeef01234567 ", "\n```\n", "return 0 ", "in order ", "20 $250 ", "a" * 41 + " ", "lot AB1234 ",
    "(;x", "\n(;x", "a/b/update ", "\n-- \n", "\ndiff x\n+", "$x $1 ", "not shipped ", "an update ",
    "-1 is returned ", "ordering of ",
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", PROSE_RULE_ADVERSARIAL_UNITS)
def test_prose_rules_on_a_200kb_hostile_body_do_not_blow_up(unit):
    check_types(analyze_email("", unit * (200_000 // len(unit))))


# ------------------------------------------------------------------------ robustness and speed

FRAGMENTS = [
    "PO", "P.O.", "#", "No.", ":", "-", " ", "\n", "4500012345", "123456", "INC", "Q-", "quote",
    "$", "€", "USD", "1,234.56", "2025-03-04", "3/4/2025", "March", "4,", "2025", "+1", "(555)",
    "123-4567", "@", "acme.com", "x", "AB-12", "urgent", "shipped", "> ", "On Mon", "wrote:",
    "From: a", "Sent: b", "http://", "www.", "é", "\x00", "\u2028", "İ", "\ud800",
]  # fmt: skip
text_strategy = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=())),  # any code point, lone surrogates too
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join),  # near-miss entity soup
)


def check_types(r: Phase1Result) -> None:
    d = r.to_dict()
    assert list(d) == PHASE1_KEYS
    for key in ("po_numbers", "quote_numbers", "case_numbers", "part_numbers", "dates", "emails", "phones"):
        assert isinstance(d[key], list) and all(isinstance(x, str) for x in d[key])
    assert all(x.isascii() and x.isdigit() for x in d["po_numbers"] + d["quote_numbers"] + d["case_numbers"])
    assert all(isinstance(x, float) for x in d["amounts"])
    assert isinstance(d["urgency_score"], int) and 0 <= d["urgency_score"] <= 10
    assert d["priority"] in {"critical", "high", "medium", "low"}
    assert isinstance(d["financial_impact"], float)
    assert d["workflow_state"] in {
        "COMPLETION", "IN_PROGRESS", "QUOTE_PROCESSING", "ORDER_MANAGEMENT", "SHIPPING", "RETURNS", "START_POINT",
    }  # fmt: skip
    assert d["sender_category"] in {"internal", "partner", "key_customer", "standard"}
    assert all(isinstance(x, str) for x in d["detected_patterns"])
    for part in d["part_numbers"]:
        assert 5 <= len(part) <= 20 and part == part.upper()


@settings(max_examples=300, deadline=None)
@given(subject=text_strategy, text=text_strategy, importance=st.sampled_from(["low", "normal", "high", ""]))
def test_analyze_email_never_raises_and_returns_spec_types(subject, text, importance):
    r = analyze_email(subject, text, importance=importance, sender=subject, senders=SENDERS)
    check_types(r)
    json.dumps(r.to_dict())  # JSON-ready


ADVERSARIAL_UNITS = ["+1", "1a ", "x@", "$1", "p.o. ", "4 mar ", "(5", "On x wrote:\n> q\n", "1", "a1", "@a."]


# No wall-clock assertion: quadratic (or worse) behaviour on these bodies takes minutes, so the
# per-test timeout is what catches it; the time phase 1 takes is measured in benchmarks/.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", ADVERSARIAL_UNITS)
def test_adversarial_200kb_body_is_analyzed_without_blowing_up(unit):
    text = unit * (200_000 // len(unit))
    check_types(analyze_email("", text))


def test_priority_of_agrees_with_analyze_email_on_samples_and_generated_mail():
    """The feeder routes by priority_of; it must give exactly phase 1's priority."""
    import json
    from pathlib import Path

    from synth import generate

    from mailcli.analysis.phase1 import priority_of

    cases = [(r["subject"], r["body"], r.get("importance", "normal")) for r in generate(3000, seed=11)]
    for line in (Path(__file__).parent.parent / "samples" / "flat.jsonl").read_text().splitlines():
        rec = json.loads(line)
        cases.append((rec.get("subject", ""), rec.get("body") or "", rec.get("importance", "normal")))
    for email in _read_emails(_mailing_list_files()):
        cases.append((email.subject, email.body, email.importance))  # patches, code, signatures
    cases += [("", PATCH_MAIL + "urgent", "normal"), ("", "x\n-- \nPO 4500012345", "normal")]
    cases += [("URGENT asap", "", "high"), ("", "PO 4500012345", "normal"), ("quote 123456", "", "low"),
              ("", "$25,000.00 due", "normal"), ("hello", "see you today", "normal"), ("", "", "normal")]  # fmt: skip
    for subject, body, importance in cases:
        assert priority_of(subject, body, importance=importance) == analyze_email(
            subject, body, importance=importance
        ).priority, (subject, body[:200])


# ----------------------------------------------------------------------------- labelled mail sets
#
# Two labelled sets, read by the project's own readers as ingest reads them:
# * business: the 57 emails of samples/ (order-desk mail), labels in tests/data/business-labels.json;
# * not business: 263 real mailing-list emails (notmuch and LKML threads, patches and code), labels
#   of notmuch's corpora in tests/data/notmuch/, labels in tests/data/mailing-list-labels.json
#   (source and licence in tests/data/README.md).
# The figures are the ones the README's phase 1 table shows; test_readme_shows_the_measured_figures
# keeps the two in step.


def _here():
    from pathlib import Path

    return Path(__file__).parent


DATA = _here() / "data"
ROOT = _here().parent
FACT_FIELDS = ("po_numbers", "quote_numbers", "case_numbers", "part_numbers", "amounts")
BUSINESS_SOURCES = ("samples/graph.jsonl", "samples/flat.jsonl", "samples/malformed.jsonl", "samples/mbox", "samples/eml")


def _read_emails(paths):
    from mailcli.ingest.model import Email
    from mailcli.ingest.readers import iter_records

    for path in paths:
        for record in iter_records(path):
            assert isinstance(record, Email) or "malformed" in str(path), record
            if isinstance(record, Email):
                yield record


def business_set():
    """(label, phase 1 result) for each email of the business set."""
    labels = json.loads((DATA / "business-labels.json").read_text())
    pairs = []
    for email in _read_emails(ROOT / p for p in BUSINESS_SOURCES):
        source = _here().joinpath(email.source).resolve().relative_to(ROOT.resolve()).as_posix()
        key = source if source.startswith("samples/eml/") else f"{source} {email.locator}"
        result = analyze_email(email.subject, email.body, importance=email.importance)
        pairs.append((labels.pop(key), result))
    assert not labels, f"labelled emails not found: {sorted(labels)}"
    return pairs


def _mailing_list_files():
    """The labelled files, in notmuch's corpora (tests/data/notmuch/, kept whole for the reader tests)."""
    labels = json.loads((_here() / "data" / "mailing-list-labels.json").read_text())
    return [_here() / "data" / "notmuch" / name for name in sorted(labels)]


def mailing_list_set():
    from pathlib import Path

    labels = json.loads((DATA / "mailing-list-labels.json").read_text())
    pairs = []
    base = DATA / "notmuch"
    for email in _read_emails(_mailing_list_files()):
        result = analyze_email(email.subject, email.body, importance=email.importance)
        pairs.append((labels.pop(Path(email.source).resolve().relative_to(base.resolve()).as_posix()), result))
    assert not labels, f"labelled emails not found: {sorted(labels)}"
    return pairs


def business_figures(pairs) -> dict[str, float]:
    """Entity F1 (micro, over PO/quote/case/part numbers and amounts, each a multiset per email),
    priority accuracy and workflow accuracy."""
    from collections import Counter

    tp = fp = fn = 0
    for label, result in pairs:
        found = result.to_dict()
        for name in FACT_FIELDS:
            want, got = Counter(label[name]), Counter(found[name])
            hits = sum((want & got).values())
            tp, fp, fn = tp + hits, fp + sum(got.values()) - hits, fn + sum(want.values()) - hits
    n = len(pairs)
    return {
        "emails": n,
        "entity_f1": round(2 * tp / (2 * tp + fp + fn), 3),
        "priority_accuracy": round(sum(lab["priority"] == r.priority for lab, r in pairs) / n, 3),
        "workflow_accuracy": round(sum(lab["workflow_state"] == r.workflow_state for lab, r in pairs) / n, 3),
    }


def non_business_figures(pairs) -> dict[str, float]:
    """Share of emails given a PO/quote/case/part number or an amount their label does not hold, and
    share given a workflow state other than their label's."""
    n = len(pairs)
    false_fact = sum(
        any(x not in label[name] for name in FACT_FIELDS for x in r.to_dict()[name]) for label, r in pairs
    )
    wrong_state = sum(label["workflow_state"] != r.workflow_state for label, r in pairs)
    return {"emails": n, "false_fact_rate": false_fact / n, "workflow_rate": wrong_state / n}


def test_business_set_figures():
    figures = business_figures(business_set())
    assert figures == {"emails": 57, "entity_f1": 1.0, "priority_accuracy": 1.0, "workflow_accuracy": 0.702}


def test_mailing_list_set_is_read_as_no_business():
    figures = non_business_figures(mailing_list_set())
    assert figures["emails"] == 263
    assert figures["false_fact_rate"] <= 0.02
    assert figures["workflow_rate"] <= 0.05


def test_readme_shows_the_measured_figures():
    business = business_figures(business_set())
    other = non_business_figures(mailing_list_set())
    readme = (ROOT / "README.md").read_text()
    row_business = (
        f"| business (samples/, {business['emails']} emails) | {business['entity_f1']:.3f} "
        f"| {business['priority_accuracy']:.3f} | {business['workflow_accuracy']:.3f} |"
    )
    row_other = (
        f"| mailing lists (notmuch, LKML; {other['emails']} emails) | {other['false_fact_rate']:.1%} (≤ 2 %) "
        f"| {other['workflow_rate']:.1%} (≤ 5 %) |"
    )
    assert row_business in readme, row_business
    assert row_other in readme, row_other

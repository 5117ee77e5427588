"""Conversation completeness and the phases a conversation is owed (docs/architecture.md, "Analysis").

Deterministic and pure: the score is a function of the emails' text and their order only, so the
same conversation always gets the same score, tier and plan.

Point scheme (0-100):

=========== ====== ==========================================================================
component   points when
=========== ====== ==========================================================================
start         25   the first email asks or requests something: a "?", or a whole-word phrase
                   such as "please", "could you", "can you", "request", "need", "quote for"
length        15   the chain has a reply (2 emails or more)
middle     10 each  every email between the first and the last, at most 20 (two of them)
completion    40   the last email (or, failing that, the one before it) says the matter is
                   done: "shipped", "delivered", "resolved", "closed", "completed", "order is
                   complete", ... - unless the phrase is negated ("not yet shipped", "hasn't
                   been resolved"), put off ("will be shipped", "once it is delivered") or
                   asked ("Has it shipped?"). A last email that only denies completion ("still
                   not delivered") ends the search: an earlier "shipped" does not count.
=========== ====== ==========================================================================

Consequences, by design: one email never reaches 70 (at most 25 + 40); without a completion
signal a chain tops out at 60, so ``score >= 70`` already implies a completion signal; a
request answered by "your order has been shipped" scores 80.

Tiers: ``score >= 70`` -> 3 (phases 1, 2, 3); 40-69 -> 2 (phases 1, 2); below 40 -> 1 (phase 1).
Quoted history is removed first (``strip_quoted``): a reply quoting "has been shipped" from an
older message does not complete the chain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mailcli.analysis.phase1 import strip_quoted

START_POINTS = 25
LENGTH_POINTS = 15
MIDDLE_POINTS_EACH = 10
MIDDLE_POINTS_MAX = 20
COMPLETION_POINTS = 40
COMPLETE_SCORE = 70  # is_complete needs this score and a completion signal; also tier 3
TIER2_SCORE = 40
COMPLETION_WINDOW = 2  # the completion signal is looked for in this many last emails

# The phase plan, as data: plan_phases applies it to one conversation, and mailcli.store.lifecycle
# builds from it the query that finds analysed conversations lacking an answer they are owed.
PHASE2_TIER = 2  # from this tier on, every email gets phase 2
PHASE3_TIER = 3  # from this tier on, the conversation gets phase 3
PHASE2_PRIORITY = "critical"  # an email of this phase 1 priority gets phase 2 at any tier

_START_RE = re.compile(
    r"\?|\b(?:please|pls|kindly|could\s+you|can\s+you|would\s+you|will\s+you|would\s+like"
    r"|request|requesting|need|needs|quote\s+for|quotation\s+for|pricing\s+for|looking\s+for"
    r"|interested\s+in|inquiry|enquiry|rfq|help)\b",
    re.IGNORECASE,
)
_COMPLETION_RE = re.compile(
    r"\b(?:shipped|delivered|dispatched|closed|resolved|completed|fulfilled"
    r"|(?:is|are|now)\s+complete|(?:been|is|was)\s+fixed)\b",  # not a bare "fixed": "fixed price"
    re.IGNORECASE,
)
# Words that, shortly before a completion word in the same clause, mean it has not happened:
# negation ("not", "hasn't", "never", "yet to be"), the future or a condition ("will", "once",
# "when", "if", "until", "to be").
_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|nor|yet|will|shall|once|when|until|unless|if|whether|without|cannot|pending)\b"
    r"|n[’']t\b|[’']ll\b|\bto\s+be\b",
    re.IGNORECASE,
)
_NEGATION_WORDS_BEFORE = 4  # how many words before the completion word are looked at
_CLAUSE_END_RE = re.compile(r"[.!?;:,\n]")  # "No, it has been shipped": the "no" is another clause
_SENTENCE_END_RE = re.compile(r"[.!?\n]")
_LOOKAROUND_CHARS = 200  # bounds the context read around each match (keeps huge bodies linear)
_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class Completeness:
    score: int
    is_complete: bool
    tier: int
    has_start: bool
    has_completion: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


@dataclass(frozen=True)
class PhasePlan:
    phase2_emails: tuple[int, ...]  # indexes of the emails owed phase 2
    phase3: bool  # the conversation is owed phase 3


def tier_for(score: int) -> int:
    if score >= COMPLETE_SCORE:
        return 3
    if score >= TIER2_SCORE:
        return 2
    return 1


def _text(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def has_request(text: str) -> bool:
    return _START_RE.search(text) is not None


def _is_negated(text: str, start: int) -> bool:
    """True when the completion word at ``start`` is negated, put off or conditional."""
    window = max(0, start - _LOOKAROUND_CHARS)
    clause_start = max((m.end() for m in _CLAUSE_END_RE.finditer(text, window, start)), default=window)
    words_before = _WORD_RE.findall(text, clause_start, start)[-_NEGATION_WORDS_BEFORE:]
    return _NEGATION_RE.search(" ".join(words_before)) is not None


def _is_question(text: str, end: int) -> bool:
    """True when the sentence holding the word ends in "?" ("Has the order shipped, or not?")."""
    m = _SENTENCE_END_RE.search(text, end, end + _LOOKAROUND_CHARS)
    return m is not None and m.group() == "?"


def completion_signal(text: str) -> str | None:
    """The first completion phrase in ``text`` that states a fact, or None."""
    for m in _COMPLETION_RE.finditer(text):
        if not _is_negated(text, m.start()) and not _is_question(text, m.end()):
            return " ".join(m.group().lower().split())
    return None


def _denies_completion(text: str) -> bool:
    """A completion phrase is present but only negated, put off or asked ("still not delivered")."""
    return _COMPLETION_RE.search(text) is not None and completion_signal(text) is None


def assess(emails: Sequence[tuple[str, str]]) -> Completeness:
    """Score one conversation; ``emails`` are (subject, body) pairs in chronological order."""
    pairs = [(_text(subject), strip_quoted(_text(body))) for subject, body in emails]
    n = len(pairs)
    if n == 0:
        return Completeness(0, False, 1, False, False, ("no emails",))

    score = 0
    reasons: list[str] = []

    first_subject, first_body = pairs[0]
    has_start = has_request(first_subject + "\n" + first_body)
    if has_start:
        score += START_POINTS
        reasons.append(f"start: the first email asks or requests (+{START_POINTS})")
    else:
        reasons.append("start: the first email asks nothing (+0)")

    if n >= 2:
        score += LENGTH_POINTS
        reasons.append(f"length: {n} emails (+{LENGTH_POINTS})")
    middle = min(MIDDLE_POINTS_MAX, MIDDLE_POINTS_EACH * max(0, n - 2))
    if middle:
        score += middle
        reasons.append(f"middle: {n - 2} email(s) between first and last (+{middle})")

    signal = None
    # a thread's opening email is its request: words such as "resolved" or "delivered" in it ("make
    # sure it is delivered", "mark this as resolved") are asked for, not done, so only the replies
    # can complete a thread of two or more emails
    first_reply = 1 if n >= 2 else 0
    for index in range(n - 1, max(first_reply - 1, n - 1 - COMPLETION_WINDOW), -1):
        subject, body = pairs[index]
        # the body speaks for this email; a subject is inherited along the chain ("Re: not shipped?")
        text = body or subject
        signal = completion_signal(text)
        if signal:
            score += COMPLETION_POINTS
            reasons.append(f"completion: '{signal}' in email {index + 1} (+{COMPLETION_POINTS})")
            break
        if _denies_completion(text):
            # a later "still not delivered" outweighs an earlier "shipped"
            reasons.append(f"completion: email {index + 1} says it is not done yet (+0)")
            break
    else:
        reasons.append("completion: no completion signal in the last emails (+0)")

    score = max(0, min(100, score))
    has_completion = signal is not None
    return Completeness(
        score=score,
        is_complete=score >= COMPLETE_SCORE and has_completion,
        tier=tier_for(score),
        has_start=has_start,
        has_completion=has_completion,
        reasons=tuple(reasons),
    )


def plan_phases(tier: int, priorities: Sequence[str], all_phases: bool = False) -> PhasePlan:
    """Which emails get phase 2 and whether the conversation gets phase 3.

    Tier 3 (or ``all_phases``): phase 2 for every email and phase 3. Tier 2: phase 2 for every
    email. Tier 1: phase 1 only, except that a ``critical`` email always gets phase 2.
    """
    phase3 = all_phases or tier >= PHASE3_TIER
    if all_phases or tier >= PHASE2_TIER:
        return PhasePlan(phase2_emails=tuple(range(len(priorities))), phase3=phase3)
    chosen = tuple(i for i, p in enumerate(priorities) if str(p).lower() == PHASE2_PRIORITY)
    return PhasePlan(phase2_emails=chosen, phase3=phase3)

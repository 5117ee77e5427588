"""The closed sets of values that more than one part of mailcli names, each written once here.

It imports nothing of mailcli and nothing heavy: the CLI's modules (at import, for their help
text), the report, the store and the queues all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

# Phase 1's priorities, most urgent first: what `--priority` accepts, the order results and the
# report rank conversations in, and the names of the queues LLM work is routed by.
PRIORITIES = ("critical", "high", "medium", "low")

# What `mailcli ingest --format` accepts; "auto" detects the format of each file.
INPUT_FORMATS = ("auto", "jsonl", "mbox", "eml", "maildir")


def spoken(values: Sequence[str]) -> str:
    """``values`` as a sentence lists them: "a, b or c"."""
    if len(values) < 2:
        return "".join(values)
    return f"{', '.join(values[:-1])} or {values[-1]}"


def unknown_choice(option: str, value: str, values: Sequence[str]) -> str:
    """The one-line error for a value ``option`` does not accept, naming those it does."""
    return f"unknown {option} {value!r}: use {spoken(values)}"

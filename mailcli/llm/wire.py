"""Ollama's wire rules, on the standard library only: what the client (mailcli.llm.client, on httpx)
and `mailcli status` (its http.client probe and the breakers it derives from the call ledger) both
apply, so that they read an answer, word its error and judge a host the same way.

- An error body is `{"error": "..."}` JSON, or plain text; its message is clipped to one line's worth.
  A 200 answer is a JSON object, unless it is `{"error": "..."}`.
- A 408, 429 or 5xx answer is worth another attempt; any other answer but 200 rejects the request.
- A busy answer (429, 503: Ollama's queue is full) means the host is up: it does not count against
  its breaker. Other retryable failures do: no answer at all, a 408 or 5xx, or a 200 whose body is
  unusable. Any other attempt closes the breaker again.
- BREAKER_THRESHOLD such failures in a row open a host's breaker; BREAKER_COOLDOWN seconds after
  the last of them it is half-open, and the next request probes the host.
"""

from __future__ import annotations

import json
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half-open"]

ERROR_TEXT_LIMIT = 300  # characters of a server's or a transport's message kept in an error
BUSY_STATUSES = (429, 503)
BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN = 30.0


def clip(text: Any) -> str:
    """``text`` as a string of at most ERROR_TEXT_LIMIT characters, "..." marking a cut."""
    text = str(text)
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


def server_message(body: bytes | str) -> str:
    """The message of an error body: the "error" field of a JSON object, else the body's text
    (invalid UTF-8 replaced), clipped."""
    text = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()
    try:
        data = json.loads(text)
    except ValueError:
        return clip(text)
    if isinstance(data, dict) and "error" in data:
        return clip(data["error"])
    return clip(text)


def is_retryable_status(status: int) -> bool:
    """A non-200 answer that another attempt may not get: a timeout (408), busy (429) or a server
    error (5xx). Any other non-200 answer rejects the request itself."""
    return status in (408, 429) or status >= 500


def answer_error(host: str, status: int, message: str, what: str) -> str:
    """The one line for a non-200 answer from ``host`` to a request for ``what`` (a path or a model)."""
    if is_retryable_status(status):
        return f"{host} answered {status}: {message}"
    return f"Ollama at {host} rejected the request for {what} ({status}): {message}"


class BadAnswer(ValueError):
    """A 200 answer whose body is not the JSON object asked for; the message is the one line to report."""


def json_object(host: str, path: str, body: bytes) -> dict[str, Any]:
    """The JSON object of a 200 answer to ``path``; BadAnswer if the body is not JSON, not an object,
    or an object reporting an error."""
    try:
        data = json.loads(body)
    except ValueError:
        raise BadAnswer(f"{host} sent a body that is not JSON on {path}") from None
    if not isinstance(data, dict):
        raise BadAnswer(f"{host} sent unexpected JSON on {path}")
    if "error" in data:
        raise BadAnswer(f"{host}: {clip(data['error'])}")
    return data


# The one line for each way an attempt can fail before an answer is read, whichever transport made it.


def timed_out(host: str, kind: str) -> str:
    """``kind``: which wait ran out, ConnectTimeout or ReadTimeout (or another transport's name for it)."""
    return f"{host} timed out ({kind})"


def connect_failed(host: str, exc: BaseException) -> str:
    """Refused, no route, unknown name, a failed TLS handshake."""
    return f"could not connect to {host} ({clip(str(exc)) or type(exc).__name__})"


def dropped(host: str, exc: BaseException) -> str:
    """The connection closed or broke while the request was sent or its answer read."""
    return f"{host} dropped the connection mid-answer ({type(exc).__name__}: {clip(str(exc))})"


def transport_failed(host: str, exc: BaseException) -> str:
    """Any other failure of the transport."""
    return f"{host}: {type(exc).__name__}: {clip(str(exc))}"


def counts_against_breaker(http_status: int | None) -> bool:
    """Whether a failed attempt counts against its host's breaker, from the HTTP status it got
    (None: no answer; 200: an answer whose body was unusable)."""
    if http_status is None or http_status == 200:
        return True
    return is_retryable_status(http_status) and http_status not in BUSY_STATUSES


def breaker_state(
    failures: int,
    last_failure_at: float | None,
    now: float,
    threshold: int = BREAKER_THRESHOLD,
    cooldown: float = BREAKER_COOLDOWN,
) -> BreakerState:
    """A host's breaker after ``failures`` consecutive failed attempts, the last at ``last_failure_at``
    (same clock as ``now``): closed below the threshold, then open for ``cooldown`` seconds after
    the last failure, then half-open."""
    if failures < threshold or last_failure_at is None:
        return "closed"
    return "open" if now - last_failure_at < cooldown else "half-open"

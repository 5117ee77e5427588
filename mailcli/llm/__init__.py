"""Ollama on httpx: one client with bounded concurrency, retries, breakers and multi-host routing.

The client's names load on first use (PEP 562): `mailcli status` reads OLLAMA_HOST through
mailcli.llm.hosts and must not pay for importing httpx.
"""

from typing import Any

from mailcli.llm.errors import (
    IncompleteResponse,
    ModelNotFound,
    OllamaBadRequest,
    OllamaError,
    OllamaUnavailable,
)
from mailcli.llm.hosts import parse_hosts

_FROM_CLIENT = ("CallRecord", "Cancelled", "ChatResult", "OllamaClient")


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        from mailcli.llm import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CallRecord",
    "Cancelled",
    "ChatResult",
    "IncompleteResponse",
    "ModelNotFound",
    "OllamaBadRequest",
    "OllamaClient",
    "OllamaError",
    "OllamaUnavailable",
    "parse_hosts",
]

"""Ollama on httpx: one client with bounded concurrency, retries, breakers and multi-host routing."""

from mailcli.llm.client import CallRecord, ChatResult, OllamaClient, parse_hosts
from mailcli.llm.errors import (
    IncompleteResponse,
    ModelNotFound,
    OllamaBadRequest,
    OllamaError,
    OllamaUnavailable,
)

__all__ = [
    "CallRecord",
    "ChatResult",
    "IncompleteResponse",
    "ModelNotFound",
    "OllamaBadRequest",
    "OllamaClient",
    "OllamaError",
    "OllamaUnavailable",
    "parse_hosts",
]

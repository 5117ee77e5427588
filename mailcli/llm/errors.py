"""What can go wrong when talking to Ollama, each error saying how to fix it.

Messages name the host, the model and the HTTP status, never the prompt: prompts hold private mail.
"""

from __future__ import annotations


class OllamaError(Exception):
    """Base class: an Ollama call failed."""

    def __init__(self, message: str, *, host: str | None = None, model: str | None = None, status: int | None = None):
        super().__init__(message)
        self.host = host
        self.model = model
        self.status = status


class OllamaBadRequest(OllamaError):
    """Ollama answered 400 (or another 4xx): the request itself is wrong, so retrying can not help."""


class ModelNotFound(OllamaError):
    """Ollama answered 404 for the model: it is not pulled on that host."""

    def __init__(self, model: str, host: str, server_message: str = ""):
        super().__init__(
            f'model "{model}" not found on {host}: run `ollama pull {model}` on that host',
            host=host,
            model=model,
            status=404,
        )
        self.server_message = server_message


class IncompleteResponse(OllamaError):
    """The answer stopped early: a stream ended without ``done: true``, or a body was cut or unreadable.

    Retried by the client; seen by callers only as the ``last_error`` of an ``OllamaUnavailable``.
    """


class OllamaUnavailable(OllamaError):
    """Every attempt failed (busy, 5xx, timeouts, refused connections) or every host's breaker is open.

    ``last_error`` is the last attempt's failure (also chained as ``__cause__``); ``attempts`` how many
    requests were sent.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        host: str | None = None,
        status: int | None = None,
        attempts: int = 0,
        last_error: BaseException | None = None,
    ):
        super().__init__(message, host=host, model=model, status=status)
        self.attempts = attempts
        self.last_error = last_error

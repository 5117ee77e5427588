"""What every command shares: settings, consoles, logging, and turning expected errors into one line."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mailcli.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def console() -> Console:
    """The rich Console on stdout, made on first use: rich is imported here, not at start-up (20-30
    ms that `--json` and `--format prometheus` output never need)."""
    from rich.console import Console

    return Console()


@functools.cache
def err_console() -> Console:
    """The rich Console on stderr, made on first use (see `console`)."""
    from rich.console import Console

    return Console(stderr=True)


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Verbose logs (also MAILCLI_DEBUG=1).", envvar="MAILCLI_DEBUG")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


class CliError(Exception):
    """An expected failure: printed as one red line, exit with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def _expected_errors() -> dict[type[BaseException], int]:
    """Exception types that are the user's situation, not a bug, and their exit codes."""
    from mailcli.ingest.model import InputError
    from mailcli.store.db import StoreError

    table: dict[type[BaseException], int] = {
        InputError: EXIT_USAGE,
        ConfigError: EXIT_USAGE,
        StoreError: EXIT_FAILED,
    }
    from mailcli.llm.errors import OllamaError
    from mailcli.redis_conn import RedisUnavailable

    table[RedisUnavailable] = EXIT_UNREACHABLE
    table[OllamaError] = EXIT_UNREACHABLE
    return table


def escape(text: str) -> str:
    """``text`` shown as written inside a Rich markup string (file names, email text, server errors
    may hold "[...]"). rich.markup is imported here, when something is printed, not at start-up."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def fail(message: str, code: int) -> typer.Exit:
    err_console().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """No traceback for an expected error: a one-line message naming the problem and the fix."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or os.environ.get("MAILCLI_DEBUG", "") not in ("", "0")
        setup_logging(debug)
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            raise fail(str(exc), exc.code) from None
        except KeyboardInterrupt:
            err_console().print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # the reader went away (`mailcli export | head`): what it read was all it wanted; stop
            # quietly, and point stdout at nothing so the interpreter's last flush has nowhere to fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as exc:
            if debug:
                raise
            raise fail(_os_error_line(exc), EXIT_FAILED) from None
        except sqlite3.OperationalError as exc:
            if debug:
                raise
            raise fail(_sqlite_error_line(exc), EXIT_FAILED) from None
        except Exception as exc:
            for kind, code in _expected_errors().items():
                if isinstance(exc, kind):
                    if debug:
                        logging.getLogger("mailcli").exception("expected error")
                    raise fail(str(exc), code) from None
            raise

    return wrapper  # type: ignore[return-value]


def _sqlite_error_line(exc: sqlite3.OperationalError) -> str:
    text = str(exc)
    if "full" in text.lower():
        return f"{text}: free disk space and run the command again (nothing committed is lost)"
    if "locked" in text.lower() or "busy" in text.lower():
        return f"{text}: another process holds a long write lock on the database; wait for it or stop it"
    return f"database error: {text}; check the disk and the database file's permissions"


def _os_error_line(exc: OSError) -> str:
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"{where}no space left on device; free disk space and run the command again (nothing committed is lost)"
    if exc.errno == errno.EACCES:
        return f"{where}permission denied; check the file's permissions"
    return f"{where}{exc.strerror or exc}"


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    root = logging.getLogger("mailcli")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


def settings(**flags: Any) -> Settings:
    return load_settings(**flags)


def check_llm_once(cfg: Settings, phases: tuple[int, ...]) -> list[Any]:
    """Ask every Ollama host whether this run's LLM phases can work, and say each problem once on
    stderr with its fix (mailcli.llm.preflight). A model missing is an error, Ollama down a warning."""
    if not phases:
        return []
    from mailcli.llm.preflight import check_llm

    problems = check_llm(cfg, phases)
    for p in problems:
        label = "[bold red]error:[/]" if p.kind == "model_missing" else "[yellow]warning:[/]"
        err_console().print(f"{label} {escape(p.message)}", highlight=False, markup=True, soft_wrap=True)
    if problems:
        # said once, here: the client's and the phases' warnings about the same failure (a breaker
        # opening, emails left unanswered) would say it again; --debug still shows them
        for name in ("mailcli.llm", "mailcli.analysis.llm"):
            logger = logging.getLogger(name)
            if not logger.isEnabledFor(logging.DEBUG):
                logger.setLevel(logging.ERROR)
    return problems

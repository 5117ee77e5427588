"""One Settings object: flags > environment > mailcli.toml (working directory) > defaults (README, "Configuration")."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_OLLAMA = "http://127.0.0.1:11434"

# setting name -> environment variable
ENV_VARS = {
    "home": "MAILCLI_HOME",
    "db_path": "MAILCLI_DB",
    "redis_url": "REDIS_URL",
    "ollama_host": "OLLAMA_HOST",
    "phase2_model": "MAILCLI_PHASE2_MODEL",
    "phase3_model": "MAILCLI_PHASE3_MODEL",
    "llm_max_in_flight": "MAILCLI_LLM_MAX_IN_FLIGHT",
    "llm_timeout": "MAILCLI_LLM_TIMEOUT",
    "window": "MAILCLI_WINDOW",
    "redis_outage_limit": "MAILCLI_REDIS_OUTAGE_LIMIT",
    "heartbeat_timeout": "MAILCLI_HEARTBEAT_TIMEOUT",
    "heartbeat_interval": "MAILCLI_HEARTBEAT_INTERVAL",
    "task_modules": "MAILCLI_TASK_MODULES",
}


class ConfigError(Exception):
    """mailcli.toml or an environment variable holds something unusable."""


@dataclass(frozen=True)
class Settings:
    home: Path = Path("data")
    db_path: Path | None = None  # None: <home>/mailcli.db
    redis_url: str | None = None  # None: the embedded server under <home>/redis
    ollama_host: str = DEFAULT_OLLAMA
    phase2_model: str = "llama3.2:3b"
    phase3_model: str = "phi4:14b"
    own_domains: tuple[str, ...] = ()
    partner_domains: tuple[str, ...] = ()
    key_senders: tuple[str, ...] = ()  # addresses or domains
    # the ceiling of each Ollama host's adaptive limit of requests in flight (mailcli.llm.limiter)
    llm_max_in_flight: int = 8
    # read timeout of an LLM call, seconds; None: 120 (phase 2), 300 (phase 3)
    llm_timeout: float | None = None
    window: int = 10_000  # feeder: most conversation jobs held in Redis at once
    redis_outage_limit: int = 120  # seconds a pool waits for an unreachable Redis before it exits 4
    heartbeat_timeout: float = 15.0  # seconds without a worker's heartbeat before it is killed
    heartbeat_interval: float = 1.0  # seconds between a worker's heartbeats
    task_modules: tuple[str, ...] = ()  # modules besides mailcli's whose functions workers may run (tests)

    @property
    def db(self) -> Path:
        return self.db_path if self.db_path is not None else self.home / "mailcli.db"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def ollama_hosts(self) -> list[str]:
        return [h.strip().rstrip("/") for h in self.ollama_host.split(",") if h.strip()]

    def with_overrides(self, **flags: Any) -> Settings:
        """Apply command-line flags; a flag left at None does not override."""
        return replace(self, **{k: v for k, v in flags.items() if v is not None})


# settings that mailcli.toml must give as TOML strings (an environment variable is always one)
_STRINGS = ("home", "db_path", "redis_url", "ollama_host", "phase2_model", "phase3_model")


def _coerce(name: str, value: Any, where: str | None = None) -> Any:
    """``value`` as setting ``name`` takes it; ``where`` names where it was set (the environment
    variable, the key of mailcli.toml or the flag), for the error that says what to fix."""
    where = where or name
    try:
        return _coerce_value(name, value)
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc}") from None


def _coerce_value(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = str(kinds[name])
    if name in _STRINGS and not isinstance(value, str):
        raise ConfigError(f"must be a string (in quotes), got {value!r}")
    if name in ("home", "db_path"):
        return Path(os.path.expanduser(str(value)))
    if name == "ollama_host":
        _check_ollama_hosts(value)
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    if name in ("llm_max_in_flight", "window", "redis_outage_limit"):
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"must be a whole number, got {value!r}") from None
        if n < 1:
            raise ConfigError(f"must be at least 1, got {n}")
        return n
    if name in ("heartbeat_timeout", "heartbeat_interval"):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"must be a number of seconds, got {value!r}") from None
        if x <= 0:
            raise ConfigError(f"must be above 0, got {x}")
        return x
    if name == "task_modules":
        return tuple(m.strip() for m in (value.split(",") if isinstance(value, str) else value) if m.strip())
    if name == "llm_timeout":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"must be a number of seconds, got {value!r}") from None
        if not seconds > 0 or seconds == float("inf"):
            raise ConfigError(f"must be a number of seconds above 0, got {value!r}")
        return seconds
    if name in ("own_domains", "partner_domains", "key_senders"):
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple):
            raise ConfigError("must be a list of strings")
        return tuple(str(v).strip().lower() for v in value if str(v).strip())
    return str(value)


def load_settings(cwd: Path | None = None, env: dict[str, str] | None = None, **flags: Any) -> Settings:
    """Build Settings from defaults, then mailcli.toml, then the environment, then flags."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    toml_path = (cwd or Path.cwd()) / "mailcli.toml"
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path}: not valid TOML ({exc}); fix the file or remove it") from None
        section = data.get("mailcli", data)
        for key, value in section.items():
            if key in ("mailcli", "senders") and isinstance(value, dict):
                continue  # the tables, read on their own
            name = TOML_ALIASES.get(key, key)
            if name not in _TOML_KEYS:
                raise ConfigError(
                    f"{toml_path}: unknown setting {key!r}{_did_you_mean(key)}; fix or remove it"
                )
            values[name] = _coerce(name, value, f"{key} in {toml_path}")
        senders = data.get("senders", {})
        for key, value in senders.items():
            if key not in _SENDER_KEYS:
                raise ConfigError(
                    f"{toml_path}: unknown setting {key!r} in [senders]; use {', '.join(_SENDER_KEYS)}"
                )
            values[key] = _coerce(key, value, f"{key} in {toml_path}")
    for name, var in ENV_VARS.items():
        raw = env.get(var)
        if raw not in (None, ""):
            values[name] = _coerce(name, raw, var)
    for name, value in flags.items():
        if value is not None:
            values[name] = _coerce(name, value, "--" + name.replace("_", "-"))
    return Settings(**values)


def _check_ollama_hosts(value: str) -> None:
    """OLLAMA_HOST as Ollama reads it (mailcli.llm.hosts), and hosts that are names or addresses:
    a typo is said here, not found later as a host that never answers."""
    from urllib.parse import urlsplit

    from mailcli.llm.hosts import parse_hosts

    fix = "give URLs such as http://127.0.0.1:11434, several separated by commas"
    try:
        hosts = parse_hosts(value)
    except ValueError as exc:  # its message names the fix
        raise ConfigError(f"is not usable: {exc}") from None
    for url in hosts:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if (
            parts.scheme not in ("http", "https")
            or not host
            or any(c.isspace() or c in "<>\"'`{}|\\^" for c in host)
        ):
            raise ConfigError(f"has {url!r}, which is not an address Ollama can be reached at; {fix}")


# mailcli.toml's names: the settings' own, and friendlier ones for the common four
TOML_ALIASES = {"data_dir": "home", "db": "db_path", "redis": "redis_url", "ollama": "ollama_host"}
_SENDER_KEYS = ("own_domains", "partner_domains", "key_senders")
_TOML_KEYS = frozenset(f.name for f in fields(Settings))


def _did_you_mean(key: str) -> str:
    import difflib

    names = sorted({*TOML_ALIASES, *(_TOML_KEYS - set(TOML_ALIASES.values()))})
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}"

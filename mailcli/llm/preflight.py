"""Can this run's LLM phases work at all? One question to every Ollama host before the work starts.

A model pulled on no host, or no host answering, fails every phase 2 and 3 request the same way.
Found per email, that is hundreds of identical failures stored on `partial` conversations and no
word on the terminal. Found here, once, it is one line naming the model or the hosts and the fix,
said by the command the user ran (`analyze`, `workers start`). The run still goes on: phase 1
needs no LLM and its results are kept; the LLM phases stay owed until the fix and a `mailcli analyze`.

    problems = check_llm(settings, phases=(2, 3))
    for p in problems: print(p.message)
    exit_code = 4 if any(p.kind == "model_missing" for p in problems) else 0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from mailcli.llm.errors import OllamaError
from mailcli.llm.hosts import parse_hosts

TIMEOUT = 2.0  # seconds to connect to a host and to read its /api/tags answer


@dataclass
class LLMProblem:
    kind: str  # "unreachable": no host answered · "model_missing": no host that answered has the model
    message: str  # one line: what is wrong, what it costs this run, the fix
    hosts: list[str] = field(default_factory=list)
    model: str | None = None
    phase: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical(name: str) -> str:
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _list(hosts: list[str]) -> str:
    return hosts[0] if len(hosts) == 1 else ", ".join(hosts[:-1]) + " and " + hosts[-1]


def _reason(exc: OllamaError, host: str) -> str:
    """Why a host did not answer, without the client's wrapping ("could not connect to HOST (why)")."""
    text = str(getattr(exc, "last_error", None) or exc)
    prefix = f"could not connect to {host} ("
    return text[len(prefix) : -1] if text.startswith(prefix) and text.endswith(")") else text


def check_llm(settings: Any, phases: Iterable[int] = (2, 3), *, timeout: float = TIMEOUT) -> list[LLMProblem]:
    """The problems that would make every request of these phases fail; [] when each phase's model
    is pulled on at least one host that answers. One GET /api/tags per host, no retries."""
    from mailcli.llm.client import OllamaClient

    models = {2: settings.phase2_model, 3: settings.phase3_model}
    wanted = [(p, models[p]) for p in sorted(set(phases)) if p in models]
    if not wanted:
        return []
    try:
        hosts = parse_hosts(settings.ollama_host)
    except ValueError as exc:
        return [LLMProblem("unreachable", f"OLLAMA_HOST is not usable ({exc}): set it to the URL of a running Ollama")]
    pulled: dict[str, set[str]] = {}  # host -> its models, for the hosts that answered
    errors: dict[str, str] = {}
    with OllamaClient(hosts, retries=0, connect_timeout=timeout, read_timeout=timeout, max_in_flight=1) as client:
        for host in hosts:
            try:
                pulled[host] = {_canonical(m) for m in client.tags(host)}
            except OllamaError as exc:
                errors[host] = _reason(exc, host)
    owed = ("phase " if len(wanted) == 1 else "phases ") + " and ".join(str(p) for p, _ in wanted)
    if not pulled:
        first = next(iter(errors.values()), "no answer")
        return [
            LLMProblem(
                "unreachable",
                f"Ollama is not reachable at {_list(hosts)} ({first}): {owed} cannot run, so conversations "
                f"that owe {'it' if len(wanted) == 1 else 'them'} stay partial (phase 1 is kept). Fix: start Ollama "
                "(`ollama serve`) or set OLLAMA_HOST to a running server, then run `mailcli analyze`",
                hosts=hosts,
            )
        ]
    problems = []
    answered = list(pulled)
    for phase, model in wanted:
        if any(_canonical(model) in have for have in pulled.values()):
            continue
        where = "that host" if len(answered) == 1 else "one of them"
        problems.append(
            LLMProblem(
                "model_missing",
                f'model "{model}" (phase {phase}) is not pulled on {_list(answered)}: conversations that owe '
                f"phase {phase} stay partial (phase 1 is kept). Fix: run `ollama pull {model}` on {where} "
                f"(or set MAILCLI_PHASE{phase}_MODEL to a model it has), then run `mailcli analyze`",
                hosts=answered,
                model=model,
                phase=phase,
            )
        )
    return problems


def missing_model(problems: Iterable[LLMProblem]) -> bool:
    """A model missing on every host that answered: the commands exit 4 (a required service lacks it)."""
    return any(p.kind == "model_missing" for p in problems)

"""Phases 2 and 3 on the Ollama client: the `LLMPhases` seam of mailcli.analysis.conversations.

One email (phase 2) or one conversation (phase 3) is one *request*:

1. the chat call (the client retries busy hosts, 5xx, timeouts and dropped connections itself);
2. the answer is parsed and validated against the schema; if it does not match, ONE repair call with
   the same model and options, showing the model its answer and the error;
3. if the repaired answer still does not match, a deterministic fallback built from phase 1, stored
   and marked ``source: "fallback"`` with a ``fallback_reason``; model answers are ``source: "model"``.

Every HTTP attempt becomes one ledger record (``CALL_RECORD_KEYS``); ``attempt`` counts the attempts
of one request from 1 (the repair call's attempts follow the first call's). ``outcome`` is
``retry``/``error`` for a failed attempt (another follows / it was the last), and for an attempt that
got an answer: ``ok`` (valid first time), ``invalid`` (first answer invalid, a repair follows),
``repair`` (the repair answer was valid) or ``fallback`` (the repair answer was invalid too).

Ollama down, breakers open, a model that is not pulled or a request Ollama rejects raise
`LLMUnavailable` (the conversation stays ``partial`` and is retried later); once one email of a batch
hits that, the emails not started yet are not sent at all, so a dead host costs one bounded retry
cycle, not one per email. The records of the attempts made are on the exception's ``calls``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailcli.analysis import prompts
from mailcli.analysis.conversations import LLMUnavailable
from mailcli.analysis.schemas import (
    ENTITY_KINDS,
    PHASE2_SCHEMA,
    PHASE3_SCHEMA,
    SchemaError,
    parse_answer,
    validate_phase2,
    validate_phase3,
)
from mailcli.llm.client import CallRecord, Cancelled, OllamaClient
from mailcli.llm.errors import ModelNotFound, OllamaBadRequest, OllamaError, OllamaUnavailable
from mailcli.llm.limiter import RedisLimiter

log = logging.getLogger("mailcli.analysis.llm")

CALL_RECORD_KEYS = (
    "call_key",
    "email_rowid",
    "phase",
    "model",
    "prompt_version",
    "input_hash",
    "host",
    "duration_ms",
    "prompt_eval_count",
    "eval_count",
    "done_reason",
    "http_status",
    "attempt",
    "outcome",
    "error",
    "created_at",
)
ERROR_MAX_CHARS = 300
PHASE2_READ_TIMEOUT = 120.0
PHASE3_READ_TIMEOUT = 300.0
CONNECT_TIMEOUT = 5.0
WARM_UP_KEY = "mailcli:llm:warm:"  # + "<host>|<model>": the worker that loads that model there
# a claim lasts less than keep_alive: a worker starting after the model may have been unloaded loads it again
WARM_UP_CLAIM = 240


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 3] + "..."


@dataclass
class _Request:
    """One phase 2 email or phase 3 conversation: what is sent and the ledger records of its attempts."""

    phase: int
    model: str
    prompt_version: str
    input_hash: str
    email_rowid: int | None
    records: list[dict[str, Any]] = field(default_factory=list)

    def record(self, rec: CallRecord) -> dict[str, Any]:
        attempt = len(self.records) + 1
        seed = f"{self.phase}|{self.model}|{self.prompt_version}|{self.input_hash}|{self.email_rowid}|{attempt}"
        row = {
            # made once, here: the same record delivered twice keeps its key (the ledger ignores the copy)
            "call_key": hashlib.sha256(f"{seed}|{uuid.uuid4().hex}".encode()).hexdigest()[:32],
            "email_rowid": self.email_rowid,
            "phase": self.phase,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "input_hash": self.input_hash,
            "host": rec.host,
            "duration_ms": round(rec.duration_s * 1000.0, 1),
            "prompt_eval_count": rec.prompt_eval_count,
            "eval_count": rec.eval_count,
            "done_reason": rec.done_reason,
            "http_status": rec.status,
            "attempt": attempt,
            "outcome": rec.outcome,
            "error": _clip(rec.error),
            "created_at": _now(),
        }
        self.records.append(row)
        return row

    def settle(self, outcome: str, error: str | None = None) -> None:
        """Set the outcome of the attempt that just got an answer, once the answer is judged."""
        if self.records and self.records[-1]["outcome"] == "ok":
            self.records[-1]["outcome"] = outcome
            if error is not None:
                self.records[-1]["error"] = _clip(error)


class _Unavailable(Exception):
    """Internal: the request could not be answered because of Ollama (message is user-facing)."""

    def __init__(self, message: str, *, final: bool):
        super().__init__(message)
        self.final = final  # True: every other request would fail the same way (model missing, bad request)


class OllamaLLMPhases:
    """`LLMPhases` on one (thread-safe) `OllamaClient`; see the module docstring."""

    def __init__(
        self,
        client: OllamaClient,
        *,
        phase2_model: str,
        phase3_model: str,
        max_in_flight: int | None = None,
        phase2_timeout: float = PHASE2_READ_TIMEOUT,
        phase3_timeout: float = PHASE3_READ_TIMEOUT,
        keep_alive: str | float = prompts.KEEP_ALIVE,
    ):
        self.client = client
        self.phase2_model = phase2_model
        self.phase3_model = phase3_model
        self.max_in_flight = max(1, max_in_flight or client.max_in_flight)
        self.phase2_timeout = phase2_timeout
        self.phase3_timeout = phase3_timeout
        self.keep_alive = keep_alive
        self.options = dict(prompts.LLM_OPTIONS)
        self.redis: Any = None  # set by make_llm_phases for a pool worker: one warm-up per host and model

    def close(self) -> None:
        self.client.close()

    # --- keys: analyze_conversation skips an email whose stored key equals this one

    def phase2_key(self, email: dict[str, Any]) -> str:
        data, _ = prompts.phase2_data(email)
        return key_prefixes(self.phase2_model, self.phase3_model)[0] + prompts.input_hash(data)

    def phase3_key(self, emails: list[dict[str, Any]]) -> str:
        data, _, _ = prompts.phase3_data(emails)
        return key_prefixes(self.phase2_model, self.phase3_model)[1] + prompts.input_hash(data)

    # --- worker start: are the models there? load them before the first request needs them

    def warm_up(self) -> dict[str, list[str]]:
        """Check every host's /api/tags for both models and load the ones present (with keep_alive).

        Never raises: Ollama being down or a model not pulled is logged as a warning naming the fix,
        and the jobs go on (their LLM phases stay owed, conversations ``partial``). Returns, per
        model, the hosts that loaded it.
        """
        models = list(dict.fromkeys([self.phase2_model, self.phase3_model]))
        warmed: dict[str, list[str]] = {m: [] for m in models}
        hosts = ", ".join(self.client.hosts)
        try:
            found = self.client.check_models(models)  # one attempt per host, no retries
        except Exception as exc:  # never let a warm-up take a worker down
            log.warning("LLM warm-up: could not list the models on %s: %s", hosts, exc)
            return warmed
        if not any(found.values()):
            log.warning(
                "LLM warm-up: Ollama at %s is not reachable or has none of %s; phases 2 and 3 stay owed "
                "(conversations partial) until it is up: start it (`ollama serve`), pull the models, then run "
                "`mailcli analyze --phase 2`", hosts, ", ".join(models),
            )
            return warmed
        for model in models:
            if not found[model]:
                log.warning('LLM warm-up: model "%s" not found on %s: run `ollama pull %s` on that host',
                            model, hosts, model)
                continue
            lacking = [h for h in self.client.hosts if h not in found[model]]
            if lacking:
                log.warning('LLM warm-up: model "%s" not found on %s (or the host is down): run `ollama pull %s` '
                            "there", model, ", ".join(lacking), model)  # fmt: skip
            mine = self._claim_warm_up(model, found[model])
            if not mine:
                continue  # another worker loads it on those hosts
            try:
                warmed[model] = self.client.warm(model, keep_alive=self.keep_alive, timeout=self.phase3_timeout,
                                                 hosts=mine)
            except OllamaError as exc:
                log.warning("LLM warm-up: could not load %s: %s", model, exc)
        log.info("LLM warm-up: %s", ", ".join(f"{m} on {', '.join(h) or 'no host'}" for m, h in warmed.items()))
        return warmed

    def _claim_warm_up(self, model: str, hosts: list[str]) -> list[str]:
        """The hosts on which this worker loads ``model``: all of them without Redis; with it, those no
        other worker claimed within WARM_UP_CLAIM seconds (one load per host and model, not per worker)."""
        if self.redis is None:
            return list(hosts)
        mine = []
        for host in hosts:
            try:
                if self.redis.set(f"{WARM_UP_KEY}{host}|{model}", "1", nx=True, ex=WARM_UP_CLAIM):
                    mine.append(host)
            except Exception as exc:  # Redis trouble: load it here rather than not at all
                log.debug("LLM warm-up: no claim for %s on %s (%s)", model, host, exc)
                mine.append(host)
        return mine

    # --- phase 2

    def run_phase2(
        self, emails: list[dict[str, Any]], phase1: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]:
        if len(emails) != len(phase1):
            raise ValueError("run_phase2 needs one phase 1 result per email")
        if not emails:
            return [], []
        stop = threading.Event()
        results: list[dict[str, Any] | None] = [None] * len(emails)
        requests: list[_Request | None] = [None] * len(emails)
        failures: list[_Unavailable] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            if stop.is_set():
                return  # Ollama already failed for this batch: do not knock again
            email = emails[i]
            data, trim = prompts.phase2_data(email)
            req = _Request(2, self.phase2_model, prompts.PHASE2_PROMPT_VERSION, prompts.input_hash(data),
                           email.get("rowid"))
            requests[i] = req
            messages = prompts.phase2_messages(data, prompts.phase2_facts(phase1[i]))
            try:
                answer, fallback_reason, repaired = self._request(
                    req, messages, PHASE2_SCHEMA, self.phase2_timeout, stop
                )
            except Cancelled:
                return  # another email of the batch found Ollama unavailable while this one waited its turn
            except _Unavailable as exc:
                stop.set()
                with lock:
                    failures.append(exc)
                return
            if answer is None:
                answer = phase2_fallback(email, phase1[i])
            results[i] = self._finish(answer, req, trim, fallback_reason, repaired)

        workers = min(self.max_in_flight, len(emails))
        if workers == 1:
            for i in range(len(emails)):
                work(i)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailcli-phase2") as pool:
                for future in [pool.submit(work, i) for i in range(len(emails))]:
                    future.result()
        calls = [row for req in requests if req is not None for row in req.records]
        if failures:
            final = next((f for f in failures if f.final), None)
            if final is not None or all(r is None for r in results):
                raise _llm_unavailable(final or failures[0], calls)
            # some emails were answered before Ollama went away: keep them, the rest stay owed
            log.warning("phase 2: %d of %d emails not analysed: %s",
                        sum(r is None for r in results), len(results), failures[0])
        return results, calls

    # --- phase 3

    def run_phase3(
        self,
        emails: list[dict[str, Any]],
        phase1: list[dict[str, Any]],
        phase2: list[dict[str, Any] | None],
        completeness: dict[str, Any],
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        # phase 2 answers are not sent: cached ones are not available here, and the input (and its
        # key) must be a function of the emails alone for incremental re-analysis to be exact
        del phase2
        if len(emails) != len(phase1):
            raise ValueError("run_phase3 needs one phase 1 result per email")
        data, trim, included = prompts.phase3_data(emails)
        req = _Request(3, self.phase3_model, prompts.PHASE3_PROMPT_VERSION, prompts.input_hash(data), None)
        messages = prompts.phase3_messages(data, prompts.phase3_facts(phase1, completeness, included))
        try:
            answer, fallback_reason, repaired = self._request(req, messages, PHASE3_SCHEMA, self.phase3_timeout)
        except _Unavailable as exc:
            raise _llm_unavailable(exc, req.records) from None
        if answer is None:
            answer = phase3_fallback(emails, phase1)
        return self._finish(answer, req, trim, fallback_reason, repaired), req.records

    # --- one request: call, validate, one repair, else fallback

    def _request(
        self, req: _Request, messages: list[dict[str, str]], schema: Mapping[str, Any], timeout: float,
        cancel: threading.Event | None = None,
    ) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(valid answer or None, fallback reason, repaired?); raises _Unavailable or Cancelled."""
        content = self._chat(req, messages, schema, timeout, cancel)
        try:
            answer = parse_answer(content, schema)
        except SchemaError as first:
            req.settle("invalid", f"schema: {first}")
            log.info("phase %d answer from %s did not match the schema (%s); asking once more",
                     req.phase, req.model, first)
            content = self._chat(req, prompts.repair_messages(messages, content, str(first)), schema, timeout)
            try:
                answer = parse_answer(content, schema)
            except SchemaError as second:
                req.settle("fallback", f"schema: {second}")
                log.warning("phase %d answer from %s invalid after one repair (%s): using the fallback",
                            req.phase, req.model, second)
                return None, _clip(f"invalid answer after one repair: {second}"), True
            req.settle("repair")
            return answer, None, True
        req.settle("ok")
        return answer, None, False

    def _chat(self, req: _Request, messages: list[dict[str, str]], schema: Mapping[str, Any], timeout: float,
              cancel: threading.Event | None = None) -> str:
        try:
            result = self.client.chat(
                req.model,
                messages,
                format=schema,
                options=self.options,
                keep_alive=self.keep_alive,
                timeout=timeout,
                on_call=req.record,
                cancel=cancel,
            )
        except Cancelled:
            raise
        except ModelNotFound as exc:
            raise _Unavailable(str(exc), final=True) from None
        except OllamaBadRequest as exc:
            raise _Unavailable(str(exc), final=True) from None
        except OllamaUnavailable as exc:
            raise _Unavailable(
                f"{exc} (is Ollama running? start it with `ollama serve` or point OLLAMA_HOST at a running server)",
                final=False,
            ) from None
        except OllamaError as exc:
            raise _Unavailable(str(exc), final=False) from None
        return result.content

    def _finish(
        self, answer: dict[str, Any], req: _Request, trim: prompts.Trim, fallback_reason: str | None, repaired: bool
    ) -> dict[str, Any]:
        out = dict(answer)
        out["source"] = "model" if fallback_reason is None else "fallback"
        if fallback_reason is not None:
            out["fallback_reason"] = fallback_reason
        out["model"] = req.model
        out["prompt_version"] = req.prompt_version
        out["input_hash"] = req.input_hash
        out["repaired"] = repaired
        out.update(trim.to_dict())
        return out


# "(next probe in 30s)": true when the client says it, stale once stored as a conversation's reason
_COUNTDOWN_RE = re.compile(r" \(next probe in [0-9]+s\)")


def _llm_unavailable(exc: _Unavailable, calls: list[dict[str, Any]]) -> LLMUnavailable:
    # the attempts made go with it: analyze_conversation puts them in the ledger
    return LLMUnavailable(_COUNTDOWN_RE.sub("", str(exc)), calls)


# --------------------------------------------------------------------------------------- fallbacks


def _text(value: Any, limit: int) -> str:
    return " ".join(str(value or "").split())[:limit]


def phase2_fallback(email: Mapping[str, Any], phase1: Mapping[str, Any]) -> dict[str, Any]:
    """A phase 2 result built from phase 1 alone: no model judgement, confidence 0."""
    state = str(phase1.get("workflow_state") or "START_POINT")
    answer = {
        "summary": _text(email.get("subject"), 600) or "(no subject)",
        "workflow_validation": _text(f"not validated; phase 1 workflow state {state}", 300),
        "missed_entities": {kind: [] for kind in ENTITY_KINDS},
        "action_items": [],
        "risk_assessment": _text(
            f"phase 1 priority {phase1.get('priority', 'low')}, urgency {phase1.get('urgency_score', 0)}/10", 400
        ),
        "initial_response": "",
        "confidence": 0.0,
        "business_process": _text(state, 120),
        "extracted_requirements": [],
    }
    return validate_phase2(answer)


def phase3_fallback(emails: Sequence[Mapping[str, Any]], phase1: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A phase 3 result built from phase 1 alone."""
    subject = _text(emails[0].get("subject") if emails else "", 300) or "(no subject)"
    patterns: list[str] = []
    for p in phase1:
        for item in p.get("detected_patterns") or []:
            if item not in patterns:
                patterns.append(str(item))
    total = sum(float(p.get("financial_impact") or 0) for p in phase1)
    answer = {
        "executive_summary": _text(f"{len(emails)} email(s): {subject}", 1000),
        "strategic_insights": {"opportunity": "", "risk": "", "relationship": ""},
        "escalation_needed": any(p.get("priority") == "critical" for p in phase1),
        "revenue_impact": f"{total:,.2f} in amounts mentioned (phase 1)" if total else "",
        "cross_email_patterns": [_text(p, 200) for p in patterns[:10]],
        "workflow_intelligence": {"predicted_next_steps": [], "bottleneck_risks": [], "optimization_opportunities": []},
    }
    return validate_phase3(answer)


# ------------------------------------------------------------------------------------------ factory


def key_prefixes(phase2_model: str, phase3_model: str) -> tuple[str, str]:
    """The start of the phase 2 and phase 3 keys (``model|prompt_version|``) for these models.

    A stored answer whose key does not start so was made by another model or prompt version:
    `mailcli analyze` requeues its conversation (and only the affected phase asks the LLM again).
    """
    return f"{phase2_model}|{prompts.PHASE2_PROMPT_VERSION}|", f"{phase3_model}|{prompts.PHASE3_PROMPT_VERSION}|"


def make_llm_phases(settings: Any, *, redis: Any = None, **client_options: Any) -> OllamaLLMPhases:
    """The LLM seam for these settings: one client (all hosts of OLLAMA_HOST) shared by both phases.

    With ``redis`` (a pool worker's connection) each host's adaptive limit is shared through it by every
    worker; without, it is this process's own (`analyze --inline`). ``client_options`` override the
    OllamaClient arguments (tests pass ``transport``, ``retries``...).
    """
    timeout = getattr(settings, "llm_timeout", None)
    phase2_timeout = float(timeout or PHASE2_READ_TIMEOUT)
    phase3_timeout = float(timeout or PHASE3_READ_TIMEOUT)
    options: dict[str, Any] = {
        "max_in_flight": int(getattr(settings, "llm_max_in_flight", 8) or 8),
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": phase2_timeout,
        # a refused connection fails in a few seconds (3 retries, backoff capped at 2 s) and then
        # opens the host's breaker, after which calls fail at once until the cooldown probe
        "retries": 3,
        "backoff_base": 0.25,
        "backoff_max": 2.0,
    }
    options.update(client_options)
    if redis is not None and "limiter" not in options:
        options["limiter"] = RedisLimiter(redis, options["max_in_flight"])
    client = OllamaClient(settings.ollama_host, **options)
    llm = OllamaLLMPhases(
        client,
        phase2_model=settings.phase2_model,
        phase3_model=settings.phase3_model,
        max_in_flight=options["max_in_flight"],
        phase2_timeout=phase2_timeout,
        phase3_timeout=phase3_timeout,
    )
    llm.redis = redis
    return llm

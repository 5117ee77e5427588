"""JSON schemas for the phase 2 and phase 3 answers, and a strict validator for the subset they use.

The same schema is sent to Ollama as ``format`` (so the model's grammar can only produce what it
allows) and checked again here, because a model, a proxy or an older Ollama may not honour it.
Every object is closed (``additionalProperties: false``), every field is required, and every string
and array has a cap: whatever an email asks for, the answer can not be longer or wider than this.

Validation coerces nothing: ``"0.9"`` is not a number, ``true`` is not an integer, a confidence of
1.2 is invalid (not clamped). Error messages name the path and the rule, never the value, so they can
go to logs and the call ledger without leaking email content.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


class SchemaError(ValueError):
    """An answer does not match its schema; ``errors`` lists every violation (path: rule)."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        shown = "; ".join(errors[:5])
        if len(errors) > 5:
            shown += f"; and {len(errors) - 5} more"
        super().__init__(shown)


# --------------------------------------------------------------------------------- schema builders


def _text(max_length: int, *, min_length: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        out["minLength"] = min_length
    return out


def _nullable_text(max_length: int) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": max_length}


def _list(item: Mapping[str, Any], max_items: int) -> dict[str, Any]:
    return {"type": "array", "items": dict(item), "maxItems": max_items}


def _object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
        "additionalProperties": False,
    }


ENTITY_KINDS = (
    "project_names",
    "company_names",
    "people",
    "products",
    "technical_specs",
    "locations",
    "other_references",
)

PHASE2_SCHEMA: dict[str, Any] = _object(
    {
        "summary": _text(600, min_length=1),
        "workflow_validation": _text(300),
        "missed_entities": _object({kind: _list(_text(120), 10) for kind in ENTITY_KINDS}),
        "action_items": _list(
            _object({"task": _text(200, min_length=1), "owner": _nullable_text(100), "deadline": _nullable_text(60)}),
            10,
        ),
        "risk_assessment": _text(400),
        "initial_response": _text(1200),
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "business_process": _text(120),
        "extracted_requirements": _list(_text(200), 15),
    }
)

PHASE3_SCHEMA: dict[str, Any] = _object(
    {
        "executive_summary": _text(1000, min_length=1),
        "strategic_insights": _object({"opportunity": _text(400), "risk": _text(400), "relationship": _text(400)}),
        "escalation_needed": {"type": "boolean"},
        "revenue_impact": _text(300),
        "cross_email_patterns": _list(_text(200), 10),
        "workflow_intelligence": _object(
            {
                "predicted_next_steps": _list(_text(200), 8),
                "bottleneck_risks": _list(_text(200), 8),
                "optimization_opportunities": _list(_text(200), 8),
            }
        ),
    }
)


# ------------------------------------------------------------------------------------- validation

_SUPPORTED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    }
)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    raise ValueError(f"schema uses an unsupported type {kind!r}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check(value: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``value``, as ``path: rule`` strings (empty when valid)."""
    unknown = set(schema) - _SUPPORTED
    if unknown:
        raise ValueError(f"schema at {path} uses unsupported keywords {sorted(unknown)}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_ok(value, k) for k in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {_json_type(value)}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {json.dumps(schema['enum'])}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above the maximum {schema['maximum']}")
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors.extend(check(item, schema["items"], f"{path}[{i}]"))
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            extra = sorted(k for k in value if k not in props)
            if extra:
                # the names come from the model; clip them so a long key can not smuggle text out
                shown = ", ".join(repr(k[:40]) for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
                errors.append(f"{path}: fields not allowed by the schema: {shown}")
        missing = [name for name in schema.get("required", []) if name not in value]
        if missing:
            errors.append(f"{path}: missing required field(s) {', '.join(repr(m) for m in missing)}")
        for name, sub in props.items():
            if name in value:
                errors.extend(check(value[name], sub, f"{path}.{name}"))
    return errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_answer(content: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The model's content as a dict that matches ``schema``; SchemaError otherwise."""
    try:
        value = json.loads(content, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SchemaError([f"not valid JSON ({exc.msg} at character {exc.pos})"]) from None
    except (ValueError, RecursionError) as exc:
        raise SchemaError([f"not valid JSON ({exc})"]) from None
    errors = check(value, schema)
    if errors:
        raise SchemaError(errors)
    return value


def validate_phase2(value: Any) -> dict[str, Any]:
    errors = check(value, PHASE2_SCHEMA)
    if errors:
        raise SchemaError(errors)
    return value


def validate_phase3(value: Any) -> dict[str, Any]:
    errors = check(value, PHASE3_SCHEMA)
    if errors:
        raise SchemaError(errors)
    return value

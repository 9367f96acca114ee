"""What the simulated model answers: deterministic in the request, wire-format neutral.

The same (model, messages, schema, tools, seed, temperature, choice index) always gives the same
answer, so caches and reproducibility can be tested; faults are decided elsewhere and passed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from synth.fakegen import estimate_tokens, fake_instance, fake_text, fake_tool_call, material, rng_for

MALFORMED_KINDS = ("truncated", "invalid", "schema")
_JSON_OBJECT = {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1}
_STDLIB_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _DUMPS(value: Any) -> str:
    """Compact JSON as a model writes it; orjson unless the value holds what it refuses."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _STDLIB_DUMPS(value)


@dataclass
class Answer:
    text: str | None
    tool_calls: list[tuple[str, str, str]] | None  # (call id, function name, JSON arguments)
    finish: str  # "stop" | "length" | "tool_calls"
    completion_tokens: int


@dataclass
class Ask:
    """A chat request reduced to what shapes the answer (both wires map onto it)."""

    model: str
    messages: list[dict[str, Any]]
    schema: dict[str, Any] | None = None
    json_mode: bool = False  # JSON without a schema
    tools: list[dict[str, Any]] | None = None
    force_tool: str | bool = False  # True: any tool; a name: that tool
    allow_tools: bool = True
    seed: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def structured(self) -> bool:
        return self.schema is not None or self.json_mode


def answer(ask: Ask, index: int = 0, malformed: str | None = None) -> Answer:
    rng = rng_for(
        material(ask.model, ask.messages, ask.schema, ask.json_mode, ask.tools, ask.seed, ask.temperature, index)
    )
    if ask.tools and ask.allow_tools and ask.messages and ask.messages[-1].get("role") == "user":
        forced = ask.force_tool
        if forced or rng.random() < 0.5:
            tools = ask.tools
            if isinstance(forced, str):
                tools = [t for t in tools if (t.get("function") or t).get("name") == forced] or tools
            name, args = fake_tool_call(tools, rng)
            call_id = "call_" + rng_for(material(name, args, index)).getrandbits(96).to_bytes(12, "big").hex()
            return Answer(None, [(call_id, name, args)], "tool_calls", estimate_tokens(name) + estimate_tokens(args))
    if ask.structured:
        schema = ask.schema if ask.schema is not None else _JSON_OBJECT
        value = fake_instance(schema, rng)
        text = _DUMPS(value)
        if malformed:
            text = _malform(text, value, schema, malformed, rng)
    else:
        text = fake_text(rng)
    tokens = estimate_tokens(text)
    if ask.max_tokens is not None and tokens > ask.max_tokens:
        return Answer(text[: ask.max_tokens * 4], None, "length", ask.max_tokens)
    return Answer(text, None, "stop", tokens)


def _malform(text: str, value: Any, schema: dict[str, Any], kind: str, rng: Any) -> str:
    if kind == "schema":
        broken = _schema_invalid(value, schema)
        if broken is not None:
            return _DUMPS(broken)
        kind = "truncated"
    if kind == "invalid":
        # valid-looking but not JSON: a trailing comma before the closing bracket
        return text[:-1] + "," + text[-1] if text[-1:] in "}]" and len(text) > 2 else "{" + text
    cut = max(1, int(len(text) * rng.uniform(0.3, 0.8)))
    return text[:cut] if cut < len(text) else text[:-1]


def _schema_invalid(value: Any, schema: dict[str, Any]) -> Any:
    """Valid JSON that fails the schema: a required field dropped, or the wrong top-level type."""
    root = schema
    if "$ref" in root:  # pydantic puts nested roots behind a $ref at times
        name = root["$ref"].rsplit("/", 1)[-1]
        root = (root.get("$defs") or root.get("definitions") or {}).get(name, root)
    if isinstance(value, dict):
        required = [k for k in root.get("required", ()) if k in value]
        if required:
            return {k: v for k, v in value.items() if k != required[0]}
        return [value] if root.get("type") in ("object", "OBJECT") else None
    if isinstance(value, list):
        return {"items": value}
    if isinstance(value, str):
        return 12345
    if value is None:
        return None
    return "not a number" if isinstance(value, (int, float)) else None


def split_words(text: str, per_chunk: int = 4) -> list[str]:
    """Stream pieces of ``text`` (a few words each) that concatenate back to it exactly."""
    parts = text.split(" ")
    return [
        " ".join(parts[i : i + per_chunk]) + (" " if i + per_chunk < len(parts) else "")
        for i in range(0, len(parts), per_chunk)
    ] or [""]

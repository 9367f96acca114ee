"""Chat records (a ``messages`` column in OpenAI chat format, as the conversation generator writes)
as training files: OpenAI fine-tuning JSONL, ShareGPT, and plain chat ``messages``.

- ``openai``: ``{"messages": [...], "tools": [...]}`` per line, as OpenAI's chat fine-tuning takes
  it: system/user/assistant/tool roles, assistant ``tool_calls`` as ``{id, type: "function",
  function: {name, arguments}}``, tool answers with their ``tool_call_id``; ``tools`` declares the
  job's tools. Every line is validated; a record that is not a valid example is skipped and counted.
- ``sharegpt``: ``{"conversations": [{"from", "value"}]}`` with ``system``, ``human``, ``gpt``,
  ``function_call`` (``{"name", "arguments"}`` as JSON) and ``observation`` turns; ``tools`` as a
  JSON string when the job declares tools.
- ``messages``: ``{"id", "messages"}`` per line, the messages as generated (null fields left out).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any

import pyarrow as pa

from synth.errors import ConfigError
from synth.export.rows import dumps

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def is_chat(schema: pa.Schema) -> bool:
    """True when records carry chat ``messages`` (a list of structs with a ``role``)."""
    if "messages" not in schema.names:
        return False
    t = schema.field("messages").type
    return (
        (pa.types.is_list(t) or pa.types.is_large_list(t))
        and pa.types.is_struct(t.value_type)
        and t.value_type.get_field_index("role") >= 0
    )


def tool_declarations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's tools in OpenAI's ``tools`` form (from the generator section of its job file)."""
    tools = (spec.get("generator") or {}).get("tools") or []
    return [
        {
            "type": "function",
            "function": {
                k: v
                for k, v in (
                    ("name", t.get("name")),
                    ("description", t.get("description")),
                    ("parameters", t.get("parameters")),
                )
                if v is not None
            },
        }
        for t in tools
        if isinstance(t, dict) and t.get("name")
    ]


def clean(message: dict[str, Any]) -> dict[str, Any]:
    """A message without its null fields (an absent key, not ``null``, is what trainers expect)."""
    out = {k: v for k, v in message.items() if v is not None}
    if out.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c.get("id"), "type": c.get("type") or "function", "function": dict(c.get("function") or {})}
            for c in out["tool_calls"]
        ]
    elif "tool_calls" in out:
        del out["tool_calls"]
    return out


def openai_problem(example: dict[str, Any]) -> str | None:
    """Why a line is not a valid OpenAI chat fine-tuning example, or None when it is."""
    msgs = example.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "no messages"
    asked: set[str] = set()
    answered = False
    for i, m in enumerate(msgs):
        role = m.get("role")
        if role not in ROLES:
            return f"message {i}: role {role!r} is not one of {', '.join(ROLES)}"
        extra = set(m) - {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}
        if extra:
            return f"message {i}: unknown keys {sorted(extra)}"
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            return f"message {i}: content is not text"
        if role in ("system", "user") and not content:
            return f"message {i}: {role} message without content"
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if not content and not calls:
                return f"message {i}: assistant message with neither content nor tool calls"
            for c in calls:
                fn = c.get("function") or {}
                if c.get("type") != "function" or not c.get("id") or not fn.get("name"):
                    return f"message {i}: a tool call needs id, type 'function' and function.name"
                try:
                    json.loads(fn.get("arguments") or "")
                except (TypeError, ValueError):
                    return f"message {i}: tool call {c['id']}: arguments are not JSON"
                asked.add(c["id"])
            answered = True
        if role == "tool":
            if m.get("tool_call_id") not in asked:
                return f"message {i}: tool message answers no earlier tool call"
            if content is None:
                return f"message {i}: tool message without content"
    if not answered:
        return "no assistant message to learn from"
    return None


def to_openai(row: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    msgs = [clean(m) for m in row["messages"] or []]
    out: dict[str, Any] = {"messages": msgs}
    if tools and any(m.get("tool_calls") for m in msgs):
        out["tools"] = tools
    return out


def to_sharegpt(row: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    turns: list[dict[str, str]] = []
    for m in row["messages"] or []:
        role, content = m.get("role"), m.get("content")
        if role == "assistant" and m.get("tool_calls"):
            if content:
                turns.append({"from": "gpt", "value": content})
            for c in m["tool_calls"]:
                fn = c.get("function") or {}
                try:
                    args: Any = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = fn.get("arguments")
                turns.append(
                    {"from": "function_call", "value": dumps({"name": fn.get("name"), "arguments": args}).decode()}
                )
            continue
        turns.append({"from": SHAREGPT_FROM.get(role or "", role or ""), "value": content or ""})
    out: dict[str, Any] = {"conversations": turns}
    if tools and any(t["from"] == "function_call" for t in turns):
        out["tools"] = dumps([t["function"] for t in tools]).decode()
    return out


def write_chat(
    fmt: str,
    batches: Iterable[pa.RecordBatch],
    f: IO[bytes],
    *,
    spec: dict[str, Any],
    extra: list[str] = (),  # type: ignore[assignment]
) -> tuple[int, int, str | None]:
    """Write ``fmt`` lines; returns (written, skipped, the first skip's reason)."""
    tools = tool_declarations(spec)
    written = skipped = 0
    first: str | None = None
    for b in batches:
        lines = []
        for row in b.to_pylist():
            if fmt == "openai":
                ex = to_openai(row, tools)
                why = openai_problem(ex)
                if why:
                    skipped += 1
                    first = first or f"{row.get('id')}: {why}"
                    continue
            elif fmt == "sharegpt":
                ex = to_sharegpt(row, tools)
            elif fmt == "messages":
                ex = {"id": row.get("id"), "messages": [clean(m) for m in row["messages"] or []]}
                ex.update({k: row[k] for k in extra if k in row})
            else:  # pragma: no cover - the caller checks the format
                raise ConfigError(f"unknown chat format {fmt!r}")
            lines.append(dumps(ex) + b"\n")
        f.write(b"".join(lines))
        written += len(lines)
    return written, skipped, first

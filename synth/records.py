"""Plain data every layer speaks: requests, completions, usage; and the record envelope, defined
here once: the unit of work (deterministic id and seed), the columns the engine puts before every
payload row, and the dead-letter row of a unit that did not become a record.

The Arrow schemas (:data:`ENVELOPE`, :data:`DEAD_SCHEMA`) are built on first use, so importing this
module does not import pyarrow.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

M = TypeVar("M", bound=BaseModel)
Role = Literal["system", "user", "assistant", "tool"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Data):
    """A function call the model asked for (OpenAI chat format)."""

    id: str
    name: str
    arguments: str = Field(description="JSON-encoded arguments, as the model wrote them")


class ChatMessage(_Data):
    """One message in OpenAI chat format."""

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class Request(_Data):
    """One model call to make. ``id`` is deterministic: the job fingerprint plus an index."""

    id: str
    model: str = Field("default", description="route name from the job file, or 'kind:model'")
    messages: list[ChatMessage]
    # kept as the very object given (not a validated copy): every request of a generator shares one
    # schema, so a batch pickles it once and the gateway compiles and caches it by identity
    json_schema: SkipValidation[dict[str, Any] | None] = Field(None, description="ask for JSON matching this schema")
    schema_name: str = "output"
    tools: list[dict[str, Any]] | None = Field(None, description="OpenAI-format tool declarations")
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    n: int = 1
    metadata: dict[str, Any] = Field(default_factory=dict)


class Usage(_Data):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class RateLimitInfo(_Data):
    """What a provider's ``x-ratelimit-*`` headers said; every field optional."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


class Completion(_Data):
    """A provider's answer, normalised across providers."""

    request_id: str
    text: str | None = None
    parsed: Any = Field(None, description="the decoded structured output, when a schema was asked for")
    tool_calls: list[ToolCall] | None = None
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    model: str = ""
    provider: str = ""
    key_alias: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    cost_usd: float = 0.0
    cached: bool = False
    route: str = Field("", description="the route the request asked for (Request.model)")
    ratelimit: RateLimitInfo | None = Field(None, exclude=True, description="header info, not stored")

    def message(self) -> ChatMessage:
        """The assistant message to append to a chat history."""
        return ChatMessage(role="assistant", content=self.text, tool_calls=self.tool_calls)


class EmbeddingRequest(_Data):
    id: str = "embed"
    model: str = "default"
    texts: list[str]


class Embeddings(_Data):
    vectors: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    key_alias: str | None = None
    cost_usd: float = 0.0


# ---------------------------------------------------------------- the record envelope


def unit_id(fp: str, index: int) -> str:
    """A unit's id: the job fingerprint's first 12 characters and the unit's index."""
    return f"{fp[:12]}-{index:010d}"


def unit_index(uid: str) -> int:
    """The unit index an id was made from (the inverse of :func:`unit_id`)."""
    return int(uid.rsplit("-", 1)[1])


def unit_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Unit:
    """One planned unit of work."""

    index: int  # 0 .. count-1 across the whole job
    id: str  # deterministic: job fingerprint + index (unit_id)
    shard: int
    seed: int  # derived from the job seed and the index (unit_seed)

    def rng(self, salt: str = "") -> random.Random:
        """A private, reproducible random stream for this unit."""
        return random.Random(f"{self.seed}:{salt}")


# name -> Arrow type name, in column order: what the engine puts before every payload row
ENVELOPE_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "string"),
    ("job", "string"),
    ("shard", "int32"),
    ("generator", "string"),
    ("route", "string"),  # the route the unit's last call asked for
    ("model", "string"),
    ("provider", "string"),  # the job's provider entry that answered it
    ("key_alias", "string"),
    ("prompt_tokens", "int64"),
    ("completion_tokens", "int64"),
    ("cost_usd", "float64"),
    ("latency_ms", "float64"),
    ("attempts", "int32"),
    ("finish_reason", "string"),
    ("created_at", "timestamp"),
)
ENVELOPE_COLUMNS = frozenset(name for name, _ in ENVELOPE_FIELDS)
"""Columns the engine adds to every row; payload columns must not use these names."""


def envelope_row(unit: Unit, job: str, generator: str, calls: list[Completion], now: datetime) -> dict[str, Any]:
    """The envelope of one unit's rows: ids, lineage of its last call, usage and cost of all of them."""
    last = calls[-1] if calls else None
    return {
        "id": unit.id,
        "job": job,
        "shard": unit.shard,
        "generator": generator,
        "route": (last.route or None) if last else None,
        "model": last.model if last else None,
        "provider": last.provider if last else None,
        "key_alias": last.key_alias if last else None,
        "prompt_tokens": sum(c.usage.prompt_tokens for c in calls),
        "completion_tokens": sum(c.usage.completion_tokens for c in calls),
        "cost_usd": float(sum(c.cost_usd for c in calls)),
        "latency_ms": float(sum(c.latency_ms for c in calls)),
        "attempts": sum(c.attempts for c in calls),
        "finish_reason": last.finish_reason if last else None,
        "created_at": now,
    }


class DeadLetter(_Data):
    """A planned unit of work that did not become a record, and why: one row of ``dead_letters/``."""

    request_id: str = Field(description="the unit's id")
    job: str = ""
    shard: int = -1
    generator: str = ""
    error_kind: str
    message: str
    attempts: int = 0
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


_ARROW_OF: dict[Any, str] = {str: "string", int: "int32", datetime: "timestamp"}
DEAD_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (n, _ARROW_OF[f.annotation]) for n, f in DeadLetter.model_fields.items()
)


def _arrow_schema(fields: tuple[tuple[str, str], ...]) -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(name, types[t]) for name, t in fields])


_SCHEMAS: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``ENVELOPE`` and ``DEAD_SCHEMA``, the Arrow schemas, made when first asked for."""
    fields = {"ENVELOPE": ENVELOPE_FIELDS, "DEAD_SCHEMA": DEAD_FIELDS}.get(name)
    if fields is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _SCHEMAS:
        _SCHEMAS[name] = _arrow_schema(fields)
    return _SCHEMAS[name]


__all__ = [
    "DEAD_FIELDS",
    "ENVELOPE_COLUMNS",
    "ENVELOPE_FIELDS",
    "ChatMessage",
    "Completion",
    "DeadLetter",
    "EmbeddingRequest",
    "Embeddings",
    "RateLimitInfo",
    "Request",
    "Role",
    "ToolCall",
    "Unit",
    "Usage",
    "envelope_row",
    "trusted",
    "unit_id",
    "unit_index",
    "unit_seed",
]


_FIELDS: dict[type[BaseModel], tuple[int, dict[str, Any]]] = {}


def trusted(cls: type[M], fields: dict[str, Any]) -> M:
    """An instance of ``cls`` from values validated where they were made (a request rebuilt from
    its tuple in a gateway, a completion back in a worker). ``fields`` should give every field
    without a plain default (and may leave out ones with one); then this costs a third of
    ``model_construct``, which walks every field's default. Otherwise it is ``model_construct``."""
    info = _FIELDS.get(cls)
    if info is None:
        plain = {k: f.default for k, f in cls.model_fields.items() if f.default_factory is None and not f.is_required()}
        info = _FIELDS[cls] = (len(cls.model_fields), plain)
    n, plain = info
    if len(fields) != n:
        for k, v in plain.items():
            if k not in fields:
                fields[k] = v
        if len(fields) != n:
            return cls.model_construct(**fields)
    m = cls.__new__(cls)
    object.__setattr__(m, "__dict__", fields)
    object.__setattr__(m, "__pydantic_fields_set__", set(fields))
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m

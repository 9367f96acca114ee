"""Plain data every layer speaks: requests, completions, usage, dead letters. No logic here."""

from __future__ import annotations

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


class DeadLetter(_Data):
    """A planned unit of work that did not become a record, and why."""

    request_id: str
    error_kind: str
    message: str
    attempts: int = 0
    job: str = ""
    shard: int = -1
    generator: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


__all__ = [
    "ChatMessage",
    "Completion",
    "DeadLetter",
    "EmbeddingRequest",
    "Embeddings",
    "RateLimitInfo",
    "Request",
    "Role",
    "ToolCall",
    "Usage",
    "trusted",
]


_FIELDS: dict[type[BaseModel], int] = {}


def trusted(cls: type[M], fields: dict[str, Any]) -> M:
    """An instance of ``cls`` from values validated where they were made (a request rebuilt from
    its tuple in a gateway, a completion back in a worker). ``fields`` must give every field; then
    this costs a third of ``model_construct``, which walks every field's default. Otherwise it is
    ``model_construct``."""
    n = _FIELDS.get(cls)
    if n is None:
        n = _FIELDS[cls] = len(cls.model_fields)
    if len(fields) != n:
        return cls.model_construct(**fields)
    m = cls.__new__(cls)
    object.__setattr__(m, "__dict__", fields)
    object.__setattr__(m, "__pydantic_fields_set__", set(fields))
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m

"""The provider protocol, API keys, and the model-string parser.

A provider turns one :class:`~synth.records.Request` into one :class:`~synth.records.Completion`
with a given key, or raises a :class:`~synth.errors.ProviderError`. Everything else (key choice,
rate limits, retries, re-asks, pricing, routing, caching) wraps it in ``dispatch.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from synth.errors import ConfigError
from synth.records import Completion, EmbeddingRequest, Embeddings, Request

KNOWN_KINDS = ("openai", "openrouter", "compat", "gemini", "sim")


@dataclass(frozen=True)
class ApiKey:
    """A key and the alias it is known by. The secret never appears in repr, str or logs."""

    alias: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ApiKey(alias={self.alias!r}, secret='***')"

    __str__ = __repr__


@runtime_checkable
class Provider(Protocol):
    """One model behind one API. Plain async; knows nothing of Ray or key pools."""

    kind: str
    model: str

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        """Make one call. Fill ``text`` / ``parsed`` / ``tool_calls``, usage, finish reason and
        ``ratelimit`` (from response headers, when available). Raise a ProviderError subclass."""
        ...

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        ...

    async def aclose(self) -> None:
        ...


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string such as ``openai:gpt-4o-mini`` or ``sim:fast``."""

    kind: str
    model: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}"


def parse_model(text: str) -> ModelRef:
    """Parse ``kind:model``. ``compat`` is any OpenAI-compatible endpoint (needs a base_url)."""
    kind, sep, model = text.partition(":")
    if not sep or not model:
        raise ConfigError(
            f"model {text!r} is not of the form 'kind:model'; use e.g. 'openai:gpt-4o-mini', "
            f"'gemini:gemini-2.5-flash' or 'sim:default'"
        )
    kind = kind.strip().lower()
    if kind not in KNOWN_KINDS:
        raise ConfigError(
            f"unknown provider prefix {kind!r} in {text!r}; use one of {', '.join(KNOWN_KINDS)}"
        )
    return ModelRef(kind, model.strip())

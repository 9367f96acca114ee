"""The provider protocol, API keys, and the model-string parser.

A provider turns one :class:`~synth.records.Request` into one :class:`~synth.records.Completion`
with a given key, or raises a :class:`~synth.errors.ProviderError`. Everything else (key choice,
rate limits, retries, re-asks, pricing, routing, caching) wraps it as layers of policies
(:mod:`synth.providers.stack`), the provider at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from synth.records import Completion, EmbeddingRequest, Embeddings, Request


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

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings: ...

    async def aclose(self) -> None: ...


# The model-string parser lives with the job spec (which validates it); re-exported here.
from synth.spec import KNOWN_KINDS, ModelRef, parse_model  # noqa: E402

__all__ = ["KNOWN_KINDS", "ApiKey", "ModelRef", "Provider", "parse_model"]

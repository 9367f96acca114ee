"""The retriever protocol: a query in, context text (and the hits it came from) out.

Generators call the async methods; the sync ones exist for scripts and notebooks that run outside
an event loop. A retriever that finds nothing returns :data:`NO_RETRIEVAL_CONTEXT`, so prompts and
records always show the same marker for "no context" whatever the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from synth.errors import SynthError
from synth.records import Completion

NO_RETRIEVAL_CONTEXT = "No relevant context found."

T = TypeVar("T")


class RetrievalHit(BaseModel):
    """One retrieved chunk: its point id and similarity score, plus where it came from."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="point id in the collection")
    score: float = Field(description="similarity score (higher is closer)")
    doc_id: str | None = Field(None, description="id of the document the chunk belongs to")
    chunk: int | None = Field(None, description="chunk number within the document")


class RetrievalResult(BaseModel):
    """The context text handed to a prompt and the hits it was built from."""

    model_config = ConfigDict(extra="forbid")

    query: str = ""
    text: str = NO_RETRIEVAL_CONTEXT
    hits: list[RetrievalHit] = Field(default_factory=list)
    calls: list[Completion] = Field(
        default_factory=list, exclude=True, description="model calls the retrieval cost (query embeddings)"
    )

    @property
    def empty(self) -> bool:
        return not self.hits


@runtime_checkable
class Retriever(Protocol):
    """Anything that turns a query into context text."""

    def get_context(self, query: str) -> str: ...

    async def aget_context(self, query: str) -> str: ...

    def get_context_with_metadata(self, query: str) -> RetrievalResult: ...

    async def aget_context_with_metadata(self, query: str) -> RetrievalResult: ...


class BaseRetriever:
    """Derives the other three methods from :meth:`aget_context_with_metadata`."""

    async def aget_context_with_metadata(self, query: str) -> RetrievalResult:
        raise NotImplementedError

    async def aget_context(self, query: str) -> str:
        return (await self.aget_context_with_metadata(query)).text

    def get_context_with_metadata(self, query: str) -> RetrievalResult:
        return run_sync(self.aget_context_with_metadata(query))

    def get_context(self, query: str) -> str:
        return self.get_context_with_metadata(query).text

    async def aclose(self) -> None:
        """Release clients and temporary copies."""


class StaticRetriever(BaseRetriever):
    """Returns the best-matching of a fixed list of passages by shared words (tests, tiny corpora)."""

    def __init__(self, passages: dict[str, str], *, top_k: int = 2) -> None:
        self.passages = passages
        self.top_k = top_k

    async def aget_context_with_metadata(self, query: str) -> RetrievalResult:
        words = set(query.lower().split())
        scored = sorted(
            ((len(words & set(text.lower().split())) / (len(words) or 1), pid) for pid, text in self.passages.items()),
            key=lambda s: (-s[0], s[1]),
        )
        hits = [RetrievalHit(id=pid, score=score) for score, pid in scored[: self.top_k] if score > 0]
        return build_result(query, [self.passages[h.id] for h in hits], hits)


def build_result(query: str, texts: list[str], hits: list[RetrievalHit], separator: str = "\n\n") -> RetrievalResult:
    """Join retrieved texts; the canonical marker when there are none."""
    texts = [t for t in texts if t]
    if not texts:
        return RetrievalResult(query=query, text=NO_RETRIEVAL_CONTEXT, hits=[])
    return RetrievalResult(query=query, text=separator.join(texts), hits=hits)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code; refuse inside a running loop (it would deadlock)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise SynthError("a sync retrieval method was called inside a running event loop; await the a* method instead")


__all__ = [
    "NO_RETRIEVAL_CONTEXT",
    "BaseRetriever",
    "RetrievalHit",
    "RetrievalResult",
    "Retriever",
    "StaticRetriever",
    "build_result",
    "run_sync",
]

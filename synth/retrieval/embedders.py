"""Embedders: texts in, vectors out. The default goes through the provider layer (the job's LLM),
so embeddings share its keys, rate limits, retries and cost accounting; with the offline ``sim``
provider the vectors are deterministic hashes in which shared words mean similarity."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from synth.errors import ProviderError
from synth.records import Completion, EmbeddingRequest, Embeddings, Usage


@runtime_checkable
class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class _EmbedLLM(Protocol):
    def embed(self, request: EmbeddingRequest) -> Awaitable[Embeddings]: ...


class LLMEmbedder:
    """Wraps anything with ``async embed(EmbeddingRequest)`` (the dispatcher, a gateway client).

    Texts are sent in batches of ``batch_size``, at most ``concurrency`` batches at a time, and
    come back in input order. :meth:`embed_with_calls` also returns the answered batches, so a
    caller can charge their tokens and cost to the record that needed them.
    """

    def __init__(self, llm: _EmbedLLM, *, model: str = "default", batch_size: int = 64, concurrency: int = 4) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.llm = llm
        self.model = model
        self.batch_size = batch_size
        self._sem = asyncio.Semaphore(concurrency)
        self.usage = Usage()  # running total, for reports
        self.cost_usd = 0.0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return (await self.embed_with_calls(texts))[0]

    async def embed_with_calls(self, texts: list[str]) -> tuple[list[list[float]], list[Completion]]:
        """The vectors, and one usage entry per answered batch (see :func:`as_completion`)."""
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        results = list(await asyncio.gather(*(self._one(b) for b in batches)))
        out = [v for _, r in results for v in r.vectors]
        if len(out) != len(texts):
            raise ProviderError(f"embedding model {self.model!r} returned {len(out)} vectors for {len(texts)} texts")
        return out, [as_completion(r, rid) for rid, r in results]

    async def _one(self, texts: list[str]) -> tuple[str, Embeddings]:
        # a content-derived id keeps requests deterministic (caches and the simulator key on it)
        rid = "embed:" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:24]
        async with self._sem:
            emb = await self.llm.embed(EmbeddingRequest(id=rid, model=self.model, texts=texts))
        self.usage = self.usage + emb.usage
        self.cost_usd += emb.cost_usd
        return rid, emb


def as_completion(emb: Embeddings, request_id: str) -> Completion:
    """An embedding call in the shape the engine accounts tokens and cost from."""
    return Completion(
        request_id=request_id,
        usage=emb.usage,
        model=emb.model,
        provider=emb.provider,
        key_alias=emb.key_alias,
        cost_usd=emb.cost_usd,
        finish_reason="embedding",
    )


__all__ = ["Embedder", "LLMEmbedder", "as_completion"]

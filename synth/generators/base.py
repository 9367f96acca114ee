"""The generator protocol: what is asked, and what a record is.

A job plans ``count`` units with deterministic ids. A generator turns one unit into payload rows
(usually one row; a time series gives many), calling models through the injected :class:`LLM`.
It raises a :class:`~synth.errors.SynthError` when the unit cannot become a valid record; the
engine then writes a dead letter with the reason. Generators know nothing of Ray or keys.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Unit


@runtime_checkable
class LLM(Protocol):
    """What generators call. Raises ProviderError once retries and re-asks are spent."""

    def complete(self, request: Request) -> Awaitable[Completion]: ...

    def embed(self, request: EmbeddingRequest) -> Awaitable[Embeddings]: ...


@dataclass
class UnitResult:
    """Payload rows of one unit and the model calls that made them (for usage, cost, lineage).

    ``rows`` is a list of dicts or a ``pyarrow.Table`` (for vectorised generators)."""

    rows: Any
    calls: list[Completion] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)  # added to the run stats (e.g. duplicates)


@dataclass
class GenContext:
    """What the engine lends a generator in a worker."""

    job: str
    seed: int
    llm: LLM
    retriever: Any = None  # a synth.retrieval Retriever, when the job configures one
    claims: Any = None  # async claim(key: str) -> bool, for job-wide dedup; None means in-process only
    worker: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    async def claim(self, key: str) -> bool:
        """True the first time ``key`` is seen across the job (content-hash dedup)."""
        if self.claims is not None:
            return bool(await self.claims(key))
        seen = self.extras.setdefault("_seen", set())
        if key in seen:
            return False
        seen.add(key)
        return True


class Generator(Protocol):
    """One kind of data. ``Options`` is the pydantic model of its job-file fields."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __init__(self, options: BaseModel, *, job: Any) -> None: ...

    def partition_by(self) -> list[str]:
        """Default hive partition columns of its payload (may be empty)."""
        ...

    def arrow_schema(self) -> Any:
        """The pyarrow schema of its payload columns, or None to infer it from the rows."""
        ...

    async def setup(self, ctx: GenContext) -> None:
        """Once per worker before any unit (load files, plan scenarios, open retrievers)."""
        ...

    async def generate(self, unit: Unit, ctx: GenContext) -> UnitResult: ...


__all__ = ["LLM", "GenContext", "Generator", "Unit", "UnitResult"]

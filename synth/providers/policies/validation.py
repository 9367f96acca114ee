"""Structured output: the answer to a request with a JSON Schema is checked against it, and an
invalid one is re-asked: the bad answer and a correction are appended to the messages and the
seed (when set) is bumped, so a deterministic model answers differently; after the provider's
``max_reasks`` it raises MalformedOutput. The provider's default params are filled in here first
(they are part of what is asked, and of what the answer store keys on)."""

from __future__ import annotations

from collections.abc import Awaitable

from synth.errors import MalformedOutput
from synth.providers.policies.base import Call, Layer, Ledger
from synth.providers.retry import SchemaCheck, reask
from synth.records import Completion, EmbeddingRequest, Embeddings, Request


class ValidationLayer:
    """Validates and re-asks over ``inner``; a request without a schema passes straight through."""

    def __init__(self, inner: Layer, ledger: Ledger) -> None:
        self.inner = inner
        self.ledger = ledger
        self.schemas = SchemaCheck()

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        req = call.target.prepare(request)
        if req.json_schema is None:
            return self.inner.complete(req, call)
        return self._validated(req, call)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        return self.inner.embed(request, call)

    async def _validated(self, req: Request, call: Call) -> Completion:
        t = call.target
        schemas = self.schemas
        validator = schemas.validator(req.json_schema)  # type: ignore[arg-type]  # set: see complete()
        reasks = 0
        while True:
            try:
                comp = await self.inner.complete(req, call)
                error = schemas.problem(comp, validator)
                raw = comp.text
            except MalformedOutput as e:
                error, raw = str(e), e.raw
            if error is None:
                return comp
            if reasks >= t.spec.max_reasks:
                raise MalformedOutput(
                    f"{t.spec.model}: structured output still invalid after {reasks} re-asks: {error}",
                    raw=raw,
                    key_alias=None,
                )
            reasks += 1
            self.ledger.counts["reasks"] += 1
            req = reask(req, raw, error)

    def __repr__(self) -> str:
        return f"ValidationLayer({self.inner!r})"


__all__ = ["ValidationLayer"]

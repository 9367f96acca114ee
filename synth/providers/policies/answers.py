"""The answer store (:mod:`synth.providers.answers`): an answer this job already paid for (its
journal) or any job did (the response cache) is replayed instead of bought again; every answer
bought is journaled before it is used, an unparseable one too (it was paid for). The sim
provider, which costs nothing, is never journaled."""

from __future__ import annotations

from collections.abc import Awaitable

from synth.errors import MalformedOutput
from synth.providers.answers import AnswerStore
from synth.providers.journal import OK
from synth.providers.policies.base import Call, Layer, Ledger
from synth.records import Completion, EmbeddingRequest, Embeddings, Request


class AnswerLayer:
    """Replays from and records to ``store`` around ``inner``; passes through without one."""

    def __init__(self, inner: Layer, ledger: Ledger, store: AnswerStore | None) -> None:
        self.inner = inner
        self.ledger = ledger
        self.store = store

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        store = self.store
        if store is None or not call.target.journaled:
            return self.inner.complete(request, call)
        return self._answered(store, request, call)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        return self.inner.embed(request, call)

    async def _answered(self, store: AnswerStore, r: Request, call: Call) -> Completion:
        """One answer to ``r``: from the store when it has one (the request's attempts, usage and
        cost add up as if the call had been made), else bought and journaled."""
        t = call.target
        key = t.keymaker.key(r)
        found = store.find(t.digest, key, r.id)
        if found is not None:
            status, value = found
            if status != OK:
                raise MalformedOutput(f"{t.spec.model}: answer is not valid JSON (replayed)", raw=str(value))
            comp: Completion = value  # type: ignore[assignment]
            call.attempts += comp.attempts
            call.usage = comp.usage if call.usage is None else call.usage + comp.usage
            call.cost_usd += comp.cost_usd
            self.ledger.counts["replayed" if not comp.cached else "cache_hits"] += 1
            return comp
        attempts, usd = call.attempts, call.cost_usd
        try:
            comp = await self.inner.complete(r, call)
        except MalformedOutput as e:
            store.record(t.digest, key, r.id, None, cost_usd=call.cost_usd - usd, raw=e.raw)
            raise
        comp.attempts = call.attempts - attempts
        comp.cost_usd = call.cost_usd - usd
        store.record(t.digest, key, r.id, comp, cost_usd=comp.cost_usd)
        return comp

    def __repr__(self) -> str:
        return f"AnswerLayer({self.inner!r})"


__all__ = ["AnswerLayer"]

"""Pricing and cost accounting: what each call cost, added to the request's and the process's
totals. An answer costs its usage at the model's price; a failed call that may have been billed
(a timeout, an answer that could not be used) counts its worst case (prompt + ``max_out``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from synth.providers.metrics import alias_label
from synth.providers.policies.base import BILLED, NOT_BILLED, Call, Layer, Ledger
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Usage
from synth.spec import PriceSpec

Cost = Callable[[Usage, PriceSpec | None], float]


class PricingLayer:
    """Prices what ``inner`` answers with ``cost(usage, price)``; see the module's docstring."""

    def __init__(self, inner: Layer, ledger: Ledger, cost: Cost) -> None:
        self.inner = inner
        self.ledger = ledger
        self.cost = cost

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        return self._priced(request, call, self.inner.complete)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        return self._priced(request, call, self.inner.embed)

    async def _priced(self, request: Any, call: Call, send: Callable[[Any, Call], Awaitable[Any]]) -> Any:
        call.billed = NOT_BILLED
        try:
            result = await send(request, call)
        except BaseException:
            if call.billed != NOT_BILLED:
                t = call.target
                est = t.est_usd(call.prompt, call.max_out)
                self.ledger.cost_usd += est
                self.ledger.meter.spent(t.route, t.spec.model, alias_label(call.slot), 0, 0, est)
                if call.billed == BILLED:
                    call.cost_usd += est
            raise
        usage = result.usage
        usd = call.paid = self.cost(usage, call.target.price)
        ledger = self.ledger
        ledger.cost_usd += usd
        ledger.usage[0] += usage.prompt_tokens
        ledger.usage[1] += usage.completion_tokens
        t = call.target
        ledger.meter.spent(
            t.route, t.spec.model, alias_label(call.slot), usage.prompt_tokens, usage.completion_tokens, usd
        )
        call.usage = usage if call.usage is None else call.usage + usage
        call.cost_usd += usd
        return result

    def __repr__(self) -> str:
        return f"PricingLayer({self.inner!r})"


__all__ = ["PricingLayer"]

"""Budget: every call out holds its worst-case cost (prompt + ``max_out`` tokens, and their price)
on the job's :class:`~synth.providers.budget.Budget` until it returns, so spending stops at the
budget, not after it. A call that fits now is held by the key layer once a key is granted
(``call.gate``): requests waiting for a key hold nothing. One that does not fit waits its turn
here (:meth:`Budget.reserve`), or fails with BudgetExceeded once nothing can make room. An answer
settles for what it cost; a failed call gives its hold back, or keeps it as spent when it may
have been billed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from synth.providers.budget import Budget
from synth.providers.policies.base import NOT_BILLED, Call, Layer
from synth.records import Completion, EmbeddingRequest, Embeddings, Request


class BudgetLayer:
    """Holds and settles ``budget`` around ``inner``; passes straight through without a budget."""

    def __init__(self, inner: Layer, budget: Budget | None) -> None:
        self.inner = inner
        self.budget = budget

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        if self.budget is None:
            return self.inner.complete(request, call)
        return self._held(request, call, self.inner.complete, self.budget)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        if self.budget is None:
            return self.inner.embed(request, call)
        return self._held(request, call, self.inner.embed, self.budget)

    async def _held(self, request: Any, call: Call, send: Callable[[Any, Call], Awaitable[Any]], b: Budget) -> Any:
        tokens = call.tokens
        usd = call.held_usd = call.target.est_usd(call.prompt, call.max_out)
        call.gate = b
        call.held = False
        if b.waiting or not b.fits(usd, tokens):
            await b.reserve(usd, tokens)  # in turn; BudgetExceeded once it is spent
            call.held = True
        try:
            result = await send(request, call)
        except BaseException:
            if call.held:  # the key layer gave up the call, or it went out and failed
                call.held = False
                spent = call.billed != NOT_BILLED
                b.settle(usd, tokens, usd if spent else 0.0, tokens if spent else 0)
            raise
        call.held = False
        b.settle(usd, tokens, call.paid, call.used)
        return result

    def __repr__(self) -> str:
        return f"BudgetLayer({self.inner!r})"


__all__ = ["BudgetLayer"]

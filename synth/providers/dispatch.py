"""The dispatcher: what a gateway holds, and the :class:`~synth.generators.base.LLM` generators call.

It holds, for every provider of the job, the provider client, the pool of keys this process owns
and the price (:class:`~synth.providers.target.Target`), and the stack of policies a request goes
through (:func:`synth.providers.stack.build_stack`: routing, validation and re-ask, the answer
store, retry and the outage policy, budget, pricing, keys and rate limits, the client). This class
is the stack's face: the ``LLM`` protocol, batches, counters and shutdown.

``latency_ms`` on the answer is the time from the request entering :meth:`Dispatcher.complete`
to the answer, waits and retries included; ``attempts`` counts provider calls, re-asks included;
usage and cost add up every call made for the request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from synth.errors import ProviderError, SynthError
from synth.providers.answers import AnswerStore
from synth.providers.base import Provider
from synth.providers.budget import Budget
from synth.providers.clock import REAL_CLOCK, Clock
from synth.providers.counters import dispatcher_stats
from synth.providers.health import Health
from synth.providers.limits import DEFAULT_BURST_S
from synth.providers.metrics import NO_METER, Meter
from synth.providers.policies.answers import AnswerLayer
from synth.providers.policies.base import DEFAULT_MAX_TOKENS, Call
from synth.providers.pricing import cost as price_cost
from synth.providers.stack import build_stack
from synth.providers.target import Slot, Target, build_targets
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Usage
from synth.spec import BudgetSpec, JobSpec, PriceSpec, ProviderSpec

log = logging.getLogger("synth.providers")


class Dispatcher:
    """Routes, limits, retries, re-asks, prices and caches model calls. Implements ``LLM``."""

    def __init__(
        self,
        job: JobSpec,
        targets: Mapping[str, Target],
        *,
        clock: Clock = REAL_CLOCK,
        answers: AnswerStore | None = None,
        budget: BudgetSpec | None = None,
        shared_budget: bool = False,
        cost: Callable[[Usage, PriceSpec | None], float] = price_cost,
        rng: random.Random | None = None,
        meter: Meter = NO_METER,
    ) -> None:
        self.job = job
        self.targets = dict(targets)
        self.clock = clock
        budget = job.budget if budget is None else budget
        self.budget = (
            Budget(budget, clock=clock, shared=shared_budget) if (budget.max_usd or budget.max_tokens) else None
        )
        self.stack = build_stack(
            job,
            self.targets,
            clock=clock,
            budget=self.budget,
            answers=answers,
            cost=cost,
            rng=rng or random.Random(),
            meter=meter,
        )
        self._answers = self.stack.layer(AnswerLayer)
        self._ledger = self.stack.ledger
        self._top = self.stack.top

    @classmethod
    def from_spec(
        cls,
        job: JobSpec,
        *,
        slots: Sequence[Slot] | None = None,
        clock: Clock | None = None,
        provider_factory: Callable[[ProviderSpec], Provider] | None = None,
        env: Mapping[str, str] | None = None,
        budget: BudgetSpec | None = None,
        shared_budget: bool = False,
        burst_s: float = DEFAULT_BURST_S,
        rng: random.Random | None = None,
        answers: AnswerStore | None = None,
        meter: Meter = NO_METER,
    ) -> Dispatcher:
        """Build the dispatcher of one process. ``slots`` lists the keys it owns as
        ``(provider route, key index, share)``; index 0 of a keyless provider is its keyless slot.
        Without ``slots`` it owns every key at a ``1 / gateways`` share. A keyless provider that
        ``slots`` does not mention is owned at full share. ``budget`` overrides the job's (a
        gateway's part of it; ``shared_budget``: a part the driver deals again, worth waiting for).
        ``meter`` receives the stack's metrics (:mod:`synth.providers.metrics`)."""
        clock = clock or REAL_CLOCK
        targets = build_targets(
            job,
            slots,
            clock=clock,
            provider_factory=provider_factory,
            env=env,
            max_usd=(budget or job.budget).max_usd,
            burst_s=burst_s,
        )
        return cls(
            job,
            targets,
            clock=clock,
            answers=answers,
            budget=budget,
            shared_budget=shared_budget,
            rng=rng,
            meter=meter,
        )

    # ------------------------------------------------------------------ what the stack shares

    @property
    def answers(self) -> AnswerStore | None:
        return self._answers.store  # type: ignore[attr-defined]

    @answers.setter
    def answers(self, store: AnswerStore | None) -> None:
        self._answers.store = store  # type: ignore[attr-defined]

    @property
    def counts(self) -> Counter[str]:
        return self._ledger.counts

    @property
    def usage(self) -> list[int]:
        return self._ledger.usage

    @property
    def cost_usd(self) -> float:
        return self._ledger.cost_usd

    @property
    def stopped(self) -> str | None:
        return self._ledger.stopped

    @property
    def health(self) -> dict[str, Health]:
        return {r: t.health for r, t in self.targets.items()}

    def resolve(self, route: str) -> list[Target]:
        """The providers a request naming ``route`` is tried on, in order."""
        return list(self._top.resolve(route)[0])

    # ------------------------------------------------------------------ LLM protocol

    def complete(self, request: Request) -> Awaitable[Completion]:
        return self._top.complete(request, Call())

    def embed(self, request: EmbeddingRequest) -> Awaitable[Embeddings]:
        return self._top.embed(request, Call())

    async def complete_many(self, requests: Sequence[Request]) -> list[Completion | SynthError]:
        """A batch, concurrently: each item is the Completion or the error that request ended with."""
        results = await asyncio.gather(*(self.complete(r) for r in requests), return_exceptions=True)
        out: list[Completion | SynthError] = []
        for r, res in zip(requests, results):
            if isinstance(res, (Completion, SynthError)):
                out.append(res)
            elif isinstance(res, asyncio.CancelledError):
                raise res
            else:
                log.error("request %s failed unexpectedly", r.id, exc_info=res)
                out.append(ProviderError(f"unexpected {type(res).__name__}: {str(res)[:200]}"))
        return out

    # ------------------------------------------------------------------ reporting, shutdown

    def stats(self) -> dict[str, Any]:
        """Plain JSON-able counters of this process (keys by alias only)."""
        return dispatcher_stats(self)

    async def aclose(self) -> None:
        for t in self.targets.values():
            try:
                await t.provider.aclose()
            except Exception:  # closing must not hide the real outcome of a run
                log.warning("provider %s did not close cleanly", t.route, exc_info=True)
        if self.answers is not None:
            self.answers.ship(final=True)

    def __repr__(self) -> str:
        return f"Dispatcher(providers={list(self.targets)})"


__all__ = ["DEFAULT_MAX_TOKENS", "Dispatcher", "Slot", "Target"]

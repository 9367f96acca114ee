"""The provider stack of one process, composed in one place.

Read :func:`build_stack` top to bottom: it is the order a request goes through. Each policy is a
:class:`~synth.providers.policies.base.Layer` wrapping the next one; to add or remove a policy,
add or remove its line here. Gateways (:mod:`synth.engine.gateway`) and in-process use (the CLI,
dry runs, tests) build their stack here, through :meth:`synth.providers.dispatch.Dispatcher.from_spec`.

Why this order: the answer store sits under validation so a replayed answer is validated like a
bought one and every re-ask is journaled on its own; retry sits over budget and keys so each try
holds budget and a key only while it is out; pricing sits over the key layer because the key
layer decides whether a call that failed (a timeout) may still have been billed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from synth.providers.answers import AnswerStore
from synth.providers.breaker import BreakerLayer, job_breakers
from synth.providers.budget import Budget
from synth.providers.clock import Clock
from synth.providers.metrics import NO_METER, Meter
from synth.providers.policies.answers import AnswerLayer
from synth.providers.policies.base import Layer, Ledger
from synth.providers.policies.budget import BudgetLayer
from synth.providers.policies.client import ClientLayer
from synth.providers.policies.keys import KeyLayer
from synth.providers.policies.pricing import PricingLayer
from synth.providers.policies.retry import RetryLayer
from synth.providers.policies.routing import RoutingLayer
from synth.providers.policies.validation import ValidationLayer
from synth.providers.target import Target
from synth.records import Usage
from synth.spec import JobSpec, PriceSpec


@dataclass
class Stack:
    """The composed policies (``layers``, top first), and what they share."""

    top: RoutingLayer
    ledger: Ledger
    budget: Budget | None
    layers: list[Layer] = field(default_factory=list)

    def layer(self, kind: type) -> Layer:
        """The layer of class ``kind`` (KeyError when the stack has none)."""
        for x in self.layers:
            if isinstance(x, kind):
                return x
        raise KeyError(kind.__name__)


def build_stack(
    job: JobSpec,
    targets: Mapping[str, Target],
    *,
    clock: Clock,
    budget: Budget | None,
    answers: AnswerStore | None,
    cost: Callable[[Usage, PriceSpec | None], float],
    rng: random.Random,
    meter: Meter = NO_METER,
) -> Stack:
    """The policies over the clients of ``targets``, in the order a request meets them; the
    counting points of the layers also report to ``meter`` (:mod:`synth.providers.metrics`)."""
    ledger = Ledger(meter)
    breakers = job_breakers(job, clock)  # per provider: shared by routing (order) and the breaker layer (calls)
    return compose(
        ledger,
        budget,
        # route (strategy, open breakers last), fallback, failure window
        lambda inner: RoutingLayer(inner, ledger, job, targets, clock=clock, breakers=breakers, rng=rng),
        lambda inner: ValidationLayer(inner, ledger),  # structured output checked, re-asked
        lambda inner: AnswerLayer(inner, ledger, answers),  # journal and cache: replay, or record
        lambda inner: RetryLayer(inner, ledger, clock=clock, rng=rng, max_outage_s=job.engine.max_outage_s),
        lambda inner: BreakerLayer(inner, breakers, ledger),  # an open breaker sends nothing (but to a last resort)
        lambda inner: BudgetLayer(inner, budget),  # the worst case held while a call is out
        lambda inner: PricingLayer(inner, ledger, cost),  # what each call cost
        lambda inner: KeyLayer(inner, ledger, clock=clock, rng=rng),  # keys, rate limits, deadlines, bad keys
        bottom=ClientLayer(),  # sim, wire, OpenAI SDK, Gemini: the routed target's provider
    )


def compose(ledger: Ledger, budget: Budget | None, *wrappers: Callable[[Layer], Layer], bottom: Layer) -> Stack:
    """``wrappers`` (top first) each wrap the next, the last one ``bottom``."""
    layers = [bottom]
    for wrap in reversed(wrappers):
        layers.insert(0, wrap(layers[0]))
    top = layers[0]
    if not isinstance(top, RoutingLayer):
        raise TypeError(f"a provider stack starts with its routing layer, not {type(top).__name__}")
    return Stack(top, ledger, budget, layers)


__all__ = ["Stack", "build_stack", "compose"]

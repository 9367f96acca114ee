"""Routing: which providers a request's route reaches (``JobSpec.route_targets``, the one place a
route is resolved: the engine's workers and the dry run call it too), in which order they are tried (a
:class:`Strategy`), and what a failure of the last one means for the job (the failure window).

A route names providers; when one fails the next is tried (fallback), and the request's attempts,
usage and cost add up over all of them. A request's ``latency_ms`` is from entering this layer to
the answer, waits and retries included. When more than ``engine.max_failure_rate`` of the last
``engine.failure_window`` requests failed through their own fault, the job stops (JobStopped).

The strategy seam: for each route, :func:`strategy_for` gives an object with

* ``order(request, candidates) -> list[Target]``: the route's providers (``Target``, named by
  ``.route``) in the order to try them for this request; it may leave some out, never empty,
* ``observe(provider, ok, latency_s)``: the outcome of one provider's turn at a request (``ok``
  False when it failed and the next one was tried, or the request failed), and how long it took.

:class:`Fallback` (the job file's list order) is the plain one; a route's ``strategy`` picks one
of :mod:`synth.providers.strategies` instead (weighted, cost, latency, quality, hybrid). Either way
the providers whose circuit breaker is open (:mod:`synth.providers.breaker`) go last. The answer
names the provider that gave it (``Completion.provider``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from synth.errors import BadRequest, BudgetExceeded, JobStopped, ProviderError, RateLimited, Transient
from synth.providers.breaker import Breaker, arrange
from synth.providers.capabilities import job_capabilities
from synth.providers.clock import Clock
from synth.providers.counters import FailureWindow
from synth.providers.metrics import NO_KEY
from synth.providers.policies.base import Call, Layer, Ledger
from synth.providers.strategies import Strategy as RouteStrategy
from synth.providers.strategies import make_strategy
from synth.providers.target import Target
from synth.records import Completion, EmbeddingRequest, Embeddings, Request
from synth.spec import JobSpec

log = logging.getLogger("synth.providers")


class Strategy(Protocol):
    """The order a route's providers are tried in (see the module's docstring)."""

    def order(self, request: Request | EmbeddingRequest, candidates: list[Target]) -> Sequence[Target]: ...

    def observe(self, provider: str, ok: bool, latency_s: float) -> None: ...


class Fallback:
    """The given order: the first provider, then the next when it fails."""

    def order(self, request: Request | EmbeddingRequest, candidates: list[Target]) -> Sequence[Target]:
        return candidates

    def observe(self, provider: str, ok: bool, latency_s: float) -> None:
        return None

    def __repr__(self) -> str:
        return "Fallback()"


def _name(t: Target) -> str:
    return t.route


class Routed:
    """A route's strategy (:mod:`synth.providers.strategies`, on provider names) over targets, with
    the providers whose breaker is open moved last."""

    def __init__(self, strategy: RouteStrategy | None, breakers: Mapping[str, Breaker]) -> None:
        self.strategy = strategy  # None: the given order
        self.breakers = breakers

    def order(self, request: Request | EmbeddingRequest, candidates: list[Target]) -> Sequence[Target]:
        out = candidates
        if self.strategy is not None:
            by = {t.route: t for t in candidates}
            names = self.strategy.order(request if isinstance(request, Request) else None, list(by))
            out = [by[n] for n in names]
        return arrange(out, self.breakers, _name) if self.breakers else out

    def observe(self, provider: str, ok: bool, latency_s: float) -> None:
        if self.strategy is not None:
            self.strategy.observe(provider, ok, latency_s)

    def __repr__(self) -> str:
        return f"Routed({type(self.strategy).__name__ if self.strategy else 'Fallback'})"


def strategy_for(
    job: JobSpec,
    route: str,
    candidates: list[Target],
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    breakers: Mapping[str, Breaker] | None = None,
) -> Strategy:
    """The strategy of ``route`` (its providers are ``candidates``), behind its providers' breakers."""
    spec = job.route_spec(route) if route in job.routes else None
    mine = {t.route: breakers[t.route] for t in candidates if breakers and t.route in breakers}
    if (spec is None or spec.strategy == "fallback") and not mine:
        return Fallback()
    strategy = None
    if spec is not None and spec.strategy != "fallback":
        caps = {n: c for n, c in job_capabilities(job).items() if any(t.route == n for t in candidates)}
        strategy = make_strategy(spec, caps, clock=clock, rng=rng or random.Random(job.seed))
    return Routed(strategy, mine)


class RoutingLayer:
    """The top of the stack: resolves a request's route, tries its providers through ``inner``."""

    def __init__(
        self,
        inner: Layer,
        ledger: Ledger,
        job: JobSpec,
        targets: Mapping[str, Target],
        *,
        clock: Clock,
        breakers: Mapping[str, Breaker] | None = None,
        rng: random.Random | None = None,
    ):
        self.inner = inner
        self.ledger = ledger
        self.job = job
        self.targets = targets
        self.clock = clock
        self.breakers = breakers or {}
        self.rng = rng
        self.window = FailureWindow(job.engine.failure_window, job.engine.max_failure_rate)
        self._routes: dict[str, tuple[list[Target], Strategy]] = {}

    def resolve(self, route: str) -> tuple[list[Target], Strategy]:
        """The providers of ``route`` this process has, and its strategy; BadRequest for neither."""
        hit = self._routes.get(route)
        if hit is not None:
            return hit
        found = [self.targets[n] for n in self.job.route_targets(route) if n in self.targets]
        # a gateway holds only the keys dealt to it: a provider none of whose keys it holds is not
        # one of its choices (the gateways holding them serve it)
        found = [t for t in found if t.pool.slots] or found
        if not found:
            raise BadRequest(
                f"request names model {route!r}, which is neither a route nor a provider of the "
                f"job; use one of {sorted(set(self.job.routes) | set(self.targets))}"
            )
        strategy = strategy_for(self.job, route, found, clock=self.clock, rng=self.rng, breakers=self.breakers)
        hit = self._routes[route] = (found, strategy)
        return hit

    async def complete(self, request: Request, call: Call) -> Completion:
        clock = self.clock
        started = clock.now()
        ledger = self.ledger
        ledger.counts["requests"] += 1
        if ledger.stopped is not None:
            raise JobStopped(ledger.stopped)
        candidates, strategy = self.resolve(request.model)
        targets = strategy.order(request, candidates)
        n = len(targets)
        t0 = started
        for i, target in enumerate(targets):
            call.target = target
            call.last = i + 1 == n
            try:
                comp = await self.inner.complete(request, call)
            except BudgetExceeded:
                ledger.counts["errors.budget"] += 1
                raise
            except ProviderError as e:
                now = clock.now()
                strategy.observe(target.route, False, now - t0)
                t0 = now
                ledger.counts["errors." + e.kind] += 1
                target.counts["errors." + e.kind] += 1
                target.examples.setdefault(e.kind, str(e)[:300])
                if call.last:
                    e.attempts = call.attempts  # type: ignore[attr-defined]  # for the dead letter
                    # the failure window counts what units caused, not failures retried in vain
                    if not (isinstance(e, (RateLimited, Transient)) and call.attempts > 1):
                        self._outcome(False, e)
                    raise
                ledger.counts["fallbacks"] += 1
                log.info(
                    "route %s: %s failed (%s); falling back to %s",
                    request.model,
                    target.route,
                    e.kind,
                    targets[i + 1].route,
                )
                continue
            now = clock.now()
            strategy.observe(target.route, True, now - t0)
            # pydantic attribute writes cost a few microseconds each: only the ones that change
            if comp.provider != target.route:
                comp.provider = target.route
            if call.attempts != comp.attempts:
                comp.attempts = call.attempts
            if call.usage is not comp.usage and call.usage is not None:
                comp.usage = call.usage
            if call.cost_usd != comp.cost_usd:
                comp.cost_usd = call.cost_usd
            comp.latency_ms = (now - started) * 1000.0
            ledger.meter.served(target.route, target.spec.model, comp.key_alias or NO_KEY, now - started)
            ledger.counts["successes"] += 1
            target.counts["successes"] += 1
            self._outcome(True)
            return comp
        raise AssertionError("unreachable")  # pragma: no cover

    def _outcome(self, ok: bool, err: ProviderError | None = None) -> None:
        """Slide the failure window; past ``engine.max_failure_rate`` the job stops (JobStopped)."""
        why = self.window.add(ok, err)
        if why is not None:
            self.ledger.stop(why)

    async def embed(self, request: EmbeddingRequest, call: Call) -> Embeddings:
        ledger = self.ledger
        ledger.counts["embed_requests"] += 1
        candidates, strategy = self.resolve(request.model)
        targets = strategy.order(request, candidates)
        t0 = self.clock.now()
        for i, target in enumerate(targets):
            call.target = target
            call.last = i + 1 == len(targets)
            try:
                out = await self.inner.embed(request, call)
            except ProviderError as e:
                now = self.clock.now()
                strategy.observe(target.route, False, now - t0)
                t0 = now
                ledger.counts["errors." + e.kind] += 1
                if call.last:
                    raise
                ledger.counts["fallbacks"] += 1
                continue
            strategy.observe(target.route, True, self.clock.now() - t0)
            out.cost_usd = call.cost_usd
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"RoutingLayer({self.inner!r})"


__all__ = ["Fallback", "Routed", "RoutingLayer", "Strategy", "strategy_for"]

"""Routing strategies: in which order a route's providers are tried for one request.

Every strategy returns a full order of the route's providers (the first is where the request
goes; the rest are its fallbacks) and learns from :meth:`Strategy.observe` (each call's outcome
and latency). They are pure: time comes from an injected clock, chance from a seeded
``random.Random``.

``fallback``
    The order of the route.
``weighted``
    Splits first choices by the weights (smooth weighted round robin: exact proportions, no
    randomness), so several providers' quotas are used at once; the others follow in route order.
``cost``
    The cheapest provider whose model meets the request's needs (structured output, tools, context
    window; see :mod:`synth.providers.capabilities`); unpriced ones after the priced, models
    lacking what the request needs last.
``latency``
    The lowest p50 over each provider's last ``window`` calls within ``window_s`` seconds.
    Providers with too few recent calls are unknown: they rank after the known ones, except that a
    share ``explore`` of requests (and every request while none is known) tries the least recently
    measured one first, so a provider that became fast again is noticed.
``quality``
    The route's ``ranking``, else the capability table's quality (best first), then route order.
``hybrid``
    The best weighted sum of the three scores, each scaled to 0..1 across the route's providers
    (cheapest, fastest, best: 1); an unknown latency scores 0.5.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from synth.providers.capabilities import NO_NEEDS, Capabilities, Needs
from synth.records import Request
from synth.spec import RouteSpec


class _Now(Protocol):
    def now(self) -> float: ...


class Strategy:
    """The ``fallback`` strategy, and the interface of the others."""

    name = "fallback"

    def __init__(self, route: RouteSpec, caps: Mapping[str, Capabilities] | None = None) -> None:
        self.route = route
        self.providers = list(route.providers)
        self.caps = dict(caps or {})

    def order(self, request: Request | None, candidates: Sequence[str] | None = None) -> list[str]:
        """The providers of the route (or ``candidates``, a subset) in the order to try them."""
        return list(self.providers if candidates is None else candidates)

    def observe(self, provider: str, ok: bool, latency_s: float | None = None) -> None:
        """The outcome of a call to ``provider`` (``latency_s`` of an answered one)."""


def _needs(request: Request | None) -> Needs:
    return NO_NEEDS if request is None else Needs.of(request)


class Weighted(Strategy):
    name = "weighted"

    def __init__(self, route: RouteSpec, caps: Mapping[str, Capabilities] | None = None) -> None:
        super().__init__(route, caps)
        self.weights = dict(zip(self.providers, route.weights or [1.0] * len(self.providers)))
        self._current = dict.fromkeys(self.providers, 0.0)

    def _pick(self, names: Sequence[str]) -> str | None:
        live = [n for n in names if self.weights.get(n, 0.0) > 0]
        if not live:
            return None
        total = sum(self.weights[n] for n in live)
        for n in live:
            self._current[n] += self.weights[n]
        best = max(live, key=lambda n: self._current[n])  # first of equals: route order
        self._current[best] -= total
        return best

    def order(self, request: Request | None, candidates: Sequence[str] | None = None) -> list[str]:
        names = list(self.providers if candidates is None else candidates)
        first = self._pick(names)
        return names if first is None else [first, *(n for n in names if n != first)]


class Cost(Strategy):
    name = "cost"

    def order(self, request: Request | None, candidates: Sequence[str] | None = None) -> list[str]:
        names = list(self.providers if candidates is None else candidates)
        needs = _needs(request)

        def key(item: tuple[int, str]) -> tuple[int, float, int]:
            i, n = item
            c = self.caps.get(n)
            if c is None:
                return (1, 0.0, i)
            usd = c.usd(needs)
            return (2 if not c.meets(needs) else (0 if usd is not None else 1), usd or 0.0, i)

        return [n for _, n in sorted(enumerate(names), key=key)]


class Latency(Strategy):
    name = "latency"

    def __init__(
        self,
        route: RouteSpec,
        caps: Mapping[str, Capabilities] | None = None,
        *,
        clock: _Now | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(route, caps)
        from synth.providers.clock import REAL_CLOCK

        self.clock = clock or REAL_CLOCK
        self.rng = rng or random.Random(0)
        self.window = route.window
        self.min_samples = max(3, route.window // 10)
        self._samples: dict[str, deque[tuple[float, float]]] = {n: deque(maxlen=route.window) for n in self.providers}
        self._probed = dict.fromkeys(self.providers, 0)  # when each was last sent a probe (a count)
        self._probes = 0

    def observe(self, provider: str, ok: bool, latency_s: float | None = None) -> None:
        if ok and latency_s is not None and provider in self._samples:
            self._samples[provider].append((self.clock.now(), latency_s))

    def p50(self, provider: str) -> float | None:
        """The median latency of the provider's recent answers; None when too few are recent."""
        q = self._samples.get(provider)
        if not q:
            return None
        horizon = self.clock.now() - self.route.window_s
        while q and q[0][0] < horizon:
            q.popleft()
        if len(q) < self.min_samples:
            return None
        xs = sorted(x for _, x in q)
        return xs[len(xs) // 2]

    def _explore(self, names: list[str], known: dict[str, float]) -> str | None:
        """A provider to measure first: the least recently probed unknown one, or (rarely) any
        other than the best, so that the latencies stay live."""
        unknown = [n for n in names if n not in known]
        if unknown and (not known or self.rng.random() < self.route.explore):
            pick = min(unknown, key=lambda n: self._probed[n])
        elif len(names) > 1 and self.rng.random() < self.route.explore / 2:
            best = min(known, key=lambda n: known[n])
            pick = min((n for n in names if n != best), key=lambda n: self._probed[n])
        else:
            return None
        self._probes += 1
        self._probed[pick] = self._probes
        return pick

    def order(self, request: Request | None, candidates: Sequence[str] | None = None) -> list[str]:
        names = list(self.providers if candidates is None else candidates)
        known = {n: p for n in names if (p := self.p50(n)) is not None}
        rank = {n: i for i, n in enumerate(names)}
        ordered = sorted(names, key=lambda n: (n not in known, known.get(n, 0.0), rank[n]))
        probe = self._explore(names, known)
        return ordered if probe is None else [probe, *(n for n in ordered if n != probe)]


class Quality(Strategy):
    name = "quality"

    def ranking(self) -> list[str]:
        if self.route.ranking:
            return list(self.route.ranking)
        rank = {n: i for i, n in enumerate(self.providers)}

        def key(n: str) -> tuple[bool, float, int]:
            q = self.caps[n].quality if n in self.caps else None
            return (q is None, -(q or 0.0), rank[n])

        return sorted(self.providers, key=key)

    def order(self, request: Request | None, candidates: Sequence[str] | None = None) -> list[str]:
        names = set(self.providers if candidates is None else candidates)
        return [n for n in self.ranking() if n in names]


def _scaled(values: Mapping[str, float | None], *, low_is_good: bool) -> dict[str, float]:
    """Each value on 0..1 across providers (best 1); None scores 0.5."""
    known = [v for v in values.values() if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    out = {}
    for n, v in values.items():
        if v is None:
            out[n] = 0.5
        elif hi == lo:
            out[n] = 1.0
        else:
            x = (v - lo) / (hi - lo)
            out[n] = 1.0 - x if low_is_good else x
    return out


class Hybrid(Latency):
    name = "hybrid"

    def score(self, request: Request | None, names: Sequence[str]) -> dict[str, float]:
        needs = _needs(request)
        w = {"cost": 1.0, "latency": 1.0, "quality": 1.0, **(self.route.hybrid or {})}
        caps = {n: self.caps.get(n) for n in names}
        cost = _scaled({n: c.usd(needs) if c else None for n, c in caps.items()}, low_is_good=True)
        lat = _scaled({n: self.p50(n) for n in names}, low_is_good=True)
        if self.route.ranking:
            place = {n: i for i, n in enumerate(self.route.ranking)}
            qual = _scaled({n: float(place[n]) for n in names}, low_is_good=True)
        else:
            qual = _scaled({n: c.quality if c else None for n, c in caps.items()}, low_is_good=False)
        return {n: w["cost"] * cost[n] + w["latency"] * lat[n] + w["quality"] * qual[n] for n in names}

    def order(self, request: Request | None, candidates: Sequence[str] | None = None) -> list[str]:
        names = list(self.providers if candidates is None else candidates)
        needs = _needs(request)
        score = self.score(request, names)
        rank = {n: i for i, n in enumerate(names)}

        def key(n: str) -> tuple[bool, float, int]:
            c = self.caps.get(n)
            return (c is not None and not c.meets(needs), -score[n], rank[n])

        ordered = sorted(names, key=key)
        known = {n: p for n in names if (p := self.p50(n)) is not None}
        probe = self._explore(names, known) if known else None  # while none is known, the scores decide
        return ordered if probe is None else [probe, *(n for n in ordered if n != probe)]


STRATEGIES: dict[str, type[Strategy]] = {
    "fallback": Strategy,
    "weighted": Weighted,
    "cost": Cost,
    "latency": Latency,
    "quality": Quality,
    "hybrid": Hybrid,
}


def make_strategy(
    route: RouteSpec,
    caps: Mapping[str, Capabilities] | None = None,
    *,
    clock: _Now | None = None,
    rng: random.Random | None = None,
) -> Strategy:
    """The strategy a route names, over its providers' capabilities."""
    cls = STRATEGIES[route.strategy]
    if issubclass(cls, Latency):
        return cls(route, caps, clock=clock, rng=rng)
    return cls(route, caps)


__all__ = ["STRATEGIES", "Cost", "Hybrid", "Latency", "Quality", "Strategy", "Weighted", "make_strategy"]

"""What the provider stack tells a metrics system, and a cheap local tally of it.

The layers call a :class:`Meter` (``Ledger.meter``; :data:`NO_METER`, which does nothing, unless the
process passes one to :class:`~synth.providers.dispatch.Dispatcher`) at the points where they already
count: the key layer when a provider call ends, the pricing layer when a call is paid for, the
retry layer when it tries again, the routing layer when a request is answered. Labels are the
provider's route, its model and the key's alias (``none`` for a keyless provider): never a key.

:class:`Tally` adds those events up in plain dicts (well under a microsecond each) so that an
exporter pushes one update per series each period instead of one per request. The Ray exporter
(:class:`synth.engine.metrics.RayMeter`) names the series as below; Prometheus sees each with the
``ray_`` prefix Ray adds, counters also with the ``_total`` suffix (``ray_synth_requests_total``).

============================== ========= =====================================================
name                           type      what (labels: job, provider, model, key_alias, ...)
============================== ========= =====================================================
synth_requests                 counter   provider calls (each try, re-ask and fallback), by
                                         ``outcome``: ``ok`` or the error kind
synth_rate_limited             counter   calls answered 429 (also ``outcome="rate_limited"``)
synth_retries                  counter   tries again after a retryable failure, by ``kind``
synth_prompt_tokens            counter   prompt tokens of answered calls
synth_completion_tokens        counter   completion tokens of answered calls
synth_cost_usd                 counter   dollars: answers at their price, billed failures at
                                         their worst case
synth_call_latency_seconds     histogram one answered provider call, sent to answer
synth_request_latency_seconds  histogram one answered request, waits and retries included
                                         (labelled by the provider and key that answered)
synth_dead_letters             counter   units made into dead letters (labels: job, ``kind``)
============================== ========= =====================================================
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any, Protocol

NO_KEY = "none"  # the key_alias label of a keyless provider (the offline sim, a local server)

# seconds: from a local model's few milliseconds to a provider's slowest answers
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def alias_label(slot: Any) -> str:
    """The key_alias label of a call on ``slot`` (a KeySlot, or None before a key was granted)."""
    return slot.alias if slot is not None and slot.key is not None else NO_KEY


class Meter(Protocol):
    """Events of the provider stack (see the module's docstring); each must be cheap."""

    def answered(self, route: str, model: str, alias: str, latency_s: float) -> None:
        """A provider call came back with an answer after ``latency_s``."""

    def failed(self, route: str, model: str, alias: str, kind: str) -> None:
        """A provider call failed with an error of ``kind`` (``rate_limited`` for a 429)."""

    def spent(self, route: str, model: str, alias: str, prompt: int, completion: int, usd: float) -> None:
        """A call was paid for: its tokens (0 for a billed failure) and dollars."""

    def retried(self, route: str, model: str, alias: str, kind: str) -> None:
        """A request is tried again after a failure of ``kind``."""

    def served(self, route: str, model: str, alias: str, latency_s: float) -> None:
        """A request was answered ``latency_s`` after it entered the stack."""

    def dead(self, kind: str, n: int) -> None:
        """``n`` units became dead letters for errors of ``kind``."""


class NullMeter:
    """The default: counts nothing."""

    def answered(self, route: str, model: str, alias: str, latency_s: float) -> None:
        pass

    def failed(self, route: str, model: str, alias: str, kind: str) -> None:
        pass

    def spent(self, route: str, model: str, alias: str, prompt: int, completion: int, usd: float) -> None:
        pass

    def retried(self, route: str, model: str, alias: str, kind: str) -> None:
        pass

    def served(self, route: str, model: str, alias: str, latency_s: float) -> None:
        pass

    def dead(self, kind: str, n: int) -> None:
        pass


NO_METER = NullMeter()


class Tally:
    """A :class:`Meter` adding events up in memory until :meth:`drain`.

    Counters are keyed by ``(name, *labels)``. A histogram keeps, per ``(name, *labels)``, a count
    and a sum for each bucket of ``bounds`` (and one past the last): memory stays bounded however
    long nobody drains, and an exporter that observes each bucket's mean ``count`` times gets the
    same bucket counts, count and sum as observing every value."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts: dict[tuple[str, ...], float] = {}
        self.hists: dict[tuple[str, ...], list[float]] = {}  # [count0, sum0, count1, sum1, ...]

    def _add(self, key: tuple[str, ...], value: float) -> None:
        c = self.counts
        c[key] = c.get(key, 0) + value

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = [0.0] * (2 * len(self.bounds) + 2)
        i = 2 * bisect_left(self.bounds, value)  # Prometheus buckets: upper bound inclusive
        h[i] += 1
        h[i + 1] += value

    def answered(self, route: str, model: str, alias: str, latency_s: float) -> None:
        self._add(("synth_requests", route, model, alias, "ok"), 1)
        self._observe(("synth_call_latency_seconds", route, model, alias), latency_s)

    def failed(self, route: str, model: str, alias: str, kind: str) -> None:
        self._add(("synth_requests", route, model, alias, kind), 1)
        if kind == "rate_limited":
            self._add(("synth_rate_limited", route, model, alias), 1)

    def spent(self, route: str, model: str, alias: str, prompt: int, completion: int, usd: float) -> None:
        if prompt:
            self._add(("synth_prompt_tokens", route, model, alias), prompt)
        if completion:
            self._add(("synth_completion_tokens", route, model, alias), completion)
        if usd:
            self._add(("synth_cost_usd", route, model, alias), usd)

    def retried(self, route: str, model: str, alias: str, kind: str) -> None:
        self._add(("synth_retries", route, model, alias, kind), 1)

    def served(self, route: str, model: str, alias: str, latency_s: float) -> None:
        self._observe(("synth_request_latency_seconds", route, model, alias), latency_s)

    def dead(self, kind: str, n: int) -> None:
        if n:
            self._add(("synth_dead_letters", kind), n)

    def drain(self) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], list[float]]]:
        """What was counted since the last drain (counters, histograms), and a fresh start."""
        counts, hists = self.counts, self.hists
        self.counts, self.hists = {}, {}
        return counts, hists


def bucket_means(cells: list[float], bounds: tuple[float, ...]) -> Iterator[tuple[float, int]]:
    """(value, times) per non-empty bucket of a :class:`Tally` histogram: each bucket's mean, kept
    inside its bucket against rounding. Observing each value ``times`` times gives an exporter's
    histogram the same bucket counts, count and sum as observing every original value."""
    for b in range(len(cells) // 2):
        n = int(cells[2 * b])
        if n:
            mean = cells[2 * b + 1] / n
            if b < len(bounds):
                mean = min(mean, bounds[b])
            if b > 0:
                mean = max(mean, math.nextafter(bounds[b - 1], math.inf))
            yield mean, n


__all__ = ["LATENCY_BOUNDS", "bucket_means", "alias_label", "NO_KEY", "NO_METER", "Meter", "NullMeter", "Tally"]

"""The provider stack's metrics in Ray's metrics system (``ray.util.metrics``), so they show in the
Ray dashboard and on each node's Prometheus endpoint (``ray start --metrics-export-port``, or
``ray.init(_metrics_export_port=...)``).

:class:`RayMeter` is a :class:`~synth.providers.metrics.Tally`: the hot path only adds to local
dicts. :meth:`RayMeter.flush` pushes what was added since the last flush: one Ray call per counter
series, and one histogram observation per answered call (Ray's histograms take one value at a
time). A Ray metric call costs about 6 microseconds, twice what the tally costs for a whole
request, and no request waits on one. Gateways and workers flush every second
(:meth:`RayMeter.run`) and at their end. The names, types and labels are listed in
:mod:`synth.providers.metrics`; Prometheus shows them as ``ray_<name>`` (counters
``ray_<name>_total``), with Ray's own labels (node, worker) added.

The class takes no Ray handle: any process connected to Ray (a gateway, a worker, a driver that
makes shards itself) builds one with the job's name and passes it to
:meth:`~synth.providers.dispatch.Dispatcher.from_spec` (``meter=``). Without a connected Ray the
metrics go nowhere and cost next to nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from synth.providers.metrics import LATENCY_BOUNDS, Tally, bucket_means

log = logging.getLogger("synth.engine")

CALL_TAGS = ("job", "provider", "model", "key_alias")
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "synth_requests": ("provider calls, each try included, by outcome (ok or error kind)", (*CALL_TAGS, "outcome")),
    "synth_rate_limited": ("provider calls answered 429", CALL_TAGS),
    "synth_retries": ("requests tried again after a retryable failure, by its kind", (*CALL_TAGS, "kind")),
    "synth_prompt_tokens": ("prompt tokens of answered calls", CALL_TAGS),
    "synth_completion_tokens": ("completion tokens of answered calls", CALL_TAGS),
    "synth_cost_usd": ("dollars spent: answers at their price, billed failures at their worst case", CALL_TAGS),
    "synth_dead_letters": ("units that became dead letters, by error kind", ("job", "kind")),
}
HISTOGRAMS: dict[str, str] = {
    "synth_call_latency_seconds": "one answered provider call, sent to answer",
    "synth_request_latency_seconds": "one answered request from entering the provider stack, waits and retries included",
}
FLUSH_S = 1.0


class RayMeter(Tally):
    """A :class:`~synth.providers.metrics.Tally` that :meth:`flush` pushes to Ray's metrics."""

    def __init__(self, job: str, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        super().__init__(bounds)
        self.job = job
        self._metrics: dict[str, Any] | None = None  # made at the first flush, in the process that flushes

    def _made(self) -> dict[str, Any]:
        if self._metrics is None:
            from ray.util.metrics import Counter, Histogram

            made: dict[str, Any] = {
                name: Counter(name, description=doc, tag_keys=tags) for name, (doc, tags) in COUNTERS.items()
            }
            for name, doc in HISTOGRAMS.items():
                made[name] = Histogram(name, description=doc, boundaries=list(self.bounds), tag_keys=CALL_TAGS)
            self._metrics = made
        return self._metrics

    def flush(self) -> None:
        """Push what was counted since the last flush (a no-op when nothing was)."""
        counts, hists = self.drain()
        ray = sys.modules.get("ray")
        if not (counts or hists) or ray is None or not ray.is_initialized():
            return  # nothing to push, or no Ray to push to: dropped without importing Ray
        try:
            self._push(counts, hists)
        except Exception as e:  # noqa: BLE001 - metrics must never fail a run
            log.warning("metrics not exported: %s: %s", type(e).__name__, str(e)[:200])

    def _push(self, counts: dict[tuple[str, ...], float], hists: dict[tuple[str, ...], list[float]]) -> None:
        metrics = self._made()
        job = self.job
        for (name, *labels), value in counts.items():
            if value > 0:
                _, keys = COUNTERS[name]
                metrics[name].inc(value, tags=dict(zip(keys, (job, *labels))))
        for (name, *labels), cells in hists.items():
            h = metrics[name]
            tags = dict(zip(CALL_TAGS, (job, *labels)))
            for mean, n in bucket_means(cells, self.bounds):  # the same buckets, count and sum
                for _ in range(n):
                    h.observe(mean, tags=tags)

    async def run(self, period: float = FLUSH_S) -> None:
        """Flush every ``period`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(period)
                self.flush()
        finally:
            self.flush()


__all__ = ["COUNTERS", "FLUSH_S", "HISTOGRAMS", "RayMeter"]

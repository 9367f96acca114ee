"""Progress: a small actor that workers report finished shards to (the driver's live view is
:class:`~synth.engine.progress.Progress`)."""

from __future__ import annotations

from typing import Any

import ray

from synth.engine.progress import Progress, merge_gateway_stats


@ray.remote(num_cpus=0, max_restarts=-1)
class MonitorActor:
    """Finished-shard totals for the progress line, and the directory of the run's gateways that
    workers consult when one is lost (the driver publishes each replacement here)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.version = 0
        self.table: list[Any] = []
        self.stopping = False  # the caller stopped the run: workers start no more shards

    def stop(self) -> None:
        self.stopping = True

    def stopped(self) -> bool:
        return self.stopping

    def publish_gateways(self, version: int, table: list[Any]) -> None:
        if version > self.version:
            self.version, self.table = version, table

    def gateways(self) -> tuple[int, list[Any]]:
        return self.version, self.table

    def report(self, stats: dict[str, Any]) -> None:
        for k, v in stats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.totals[k] = self.totals.get(k, 0) + v

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)


__all__ = ["MonitorActor", "Progress", "merge_gateway_stats"]

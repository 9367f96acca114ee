"""Progress: a small actor that workers report finished shards to, and the driver's live view
(records, records/s, tokens/s, cost, 429s, errors, ETA)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import ray


@ray.remote(num_cpus=0, max_restarts=-1)
class MonitorActor:
    """Finished-shard totals for the progress line, and the directory of the run's gateways that
    workers consult when one is lost (the driver publishes each replacement here)."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.version = 0
        self.table: list[Any] = []

    def publish_gateways(self, version: int, table: list[Any]) -> None:
        if version > self.version:
            self.version, self.table = version, table

    def gateways(self) -> tuple[int, list[Any]]:
        return self.version, self.table

    def report(self, stats: dict[str, Any]) -> None:
        for k, v in stats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.totals[k] += v

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)


def merge_gateway_stats(stats: list[dict[str, Any]]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for s in stats:
        for k, v in s.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] += v
    return dict(out)


class Progress:
    """Renders a live line on a terminal, or a line every few seconds to a log."""

    def __init__(self, total_units: int, done_before: int, enabled: bool = True) -> None:
        self.total = total_units
        self.before = done_before
        self.enabled = enabled
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0
        self._live: Any = None
        if enabled and self.tty:
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._live = RichProgress(
                TextColumn("[bold]synth"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )
            self._task = self._live.add_task("run", total=total_units, completed=done_before, info="")
            self._live.start()

    def line(self, snap: dict[str, float], gw: dict[str, float]) -> str:
        el = max(1e-6, time.monotonic() - self.start)
        units = snap.get("units", 0)
        tokens = snap.get("prompt_tokens", 0) + snap.get("completion_tokens", 0)
        rate = snap.get("records", 0) / el
        left = self.total - self.before - units
        eta = f"{left / (units / el):.0f}s" if units else "?"
        return (
            f"{snap.get('records', 0):,.0f} records, {rate:,.0f}/s, {tokens / el:,.0f} tok/s, "
            f"${snap.get('cost_usd', 0):.4f}, 429s {gw.get('rate_limited', 0):,.0f}, "
            f"dead {snap.get('dead_letters', 0):,.0f}, eta {eta}"
        )

    def update(self, snap: dict[str, float], gw: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = self.line(snap, gw)
        if self._live is not None:
            self._live.update(self._task, completed=self.before + snap.get("units", 0), info=info)
        elif time.monotonic() - self._last_print > 5:
            self._last_print = time.monotonic()
            print(f"synth: {self.before + snap.get('units', 0):,.0f}/{self.total:,} units; {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()

"""The driver's live view of a run (records, records/s, tokens, cost, 429s, errors, ETA) and the
sum of gateways' counters. No Ray: both executors show the same line."""

from __future__ import annotations

import sys
import time
from typing import Any


def merge_gateway_stats(stats: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in stats:
        for k, v in s.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return dict(out)


class Progress:
    """Renders a live line on a terminal (refreshed every half second), or a plain line every
    ``every_s`` seconds when stderr is not a terminal (a log, CI).

    Counts are live: units as workers finish them (``live_*`` in the monitor's snapshot), calls,
    tokens, dollars, 429s, retries and cache hits as the gateways settle them, committed or not."""

    def __init__(self, total_units: int, done_before: int, enabled: bool = True, every_s: float = 10.0) -> None:
        self.total = total_units
        self.before = done_before
        self.enabled = enabled
        self.every_s = every_s
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last_print = time.monotonic()
        self._live: Any = None
        if enabled and self.tty:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._live = RichProgress(
                TextColumn("[bold]synth"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._live.add_task("run", total=total_units, completed=done_before, info="")
            self._live.start()

    @staticmethod
    def made(snap: dict[str, float]) -> float:
        """Units finished this run: live counts when workers report them, else committed shards'."""
        return max(snap.get("live_units", 0), snap.get("units", 0))

    def line(self, snap: dict[str, float], gw: dict[str, float]) -> str:
        el = max(1e-6, time.monotonic() - self.start)
        units = self.made(snap)
        records = max(snap.get("live_records", 0), snap.get("records", 0))
        dead = max(snap.get("live_dead", 0), snap.get("dead_letters", 0))
        tokens_in = gw.get("prompt_tokens", 0) + snap.get("local_prompt_tokens", 0)
        tokens_out = gw.get("completion_tokens", 0) + snap.get("local_completion_tokens", 0)
        usd = gw.get("cost_usd", 0) + snap.get("local_cost_usd", 0)
        hits = gw.get("cache_hits", 0) + gw.get("replayed", 0)
        left = self.total - self.before - units
        eta = f"{left / (units / el):,.0f}s" if units else "?"
        return (
            f"{records:,.0f} records, {records / el:,.0f}/s, tokens {tokens_in:,.0f} in / {tokens_out:,.0f} out, "
            f"${usd:.4f}, 429s {gw.get('rate_limited', 0):,.0f}, retries {gw.get('retries', 0):,.0f}, "
            f"dead {dead:,.0f}, cached {hits:,.0f}, eta {eta}"
        )

    def update(self, snap: dict[str, float], gw: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = self.line(snap, gw)
        done = min(self.total, self.before + self.made(snap))
        if self._live is not None:
            self._live.update(self._task, completed=done, info=info)
        elif time.monotonic() - self._last_print >= self.every_s:
            self._last_print = time.monotonic()
            print(f"synth: {done:,.0f}/{self.total:,} units; {info}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A one-off message (a key disabled ...), above the live line."""
        if not self.enabled:
            return
        if self._live is not None:
            self._live.console.print(f"synth: {text}")
        else:
            print(f"synth: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


__all__ = ["Progress", "merge_gateway_stats"]

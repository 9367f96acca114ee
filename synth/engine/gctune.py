"""Garbage-collector settings for processes that keep thousands of requests in flight."""

from __future__ import annotations

import gc
import time


class QuietGc:
    """Thousands of requests in flight make many short-lived objects: with default thresholds a
    third of a gateway's CPU went to the collector. Objects alive now (modules, the job) are moved
    out of its sight and young collections run less often; the full collection, which the higher
    thresholds would all but stop (and with it the reclaiming of cyclic garbage, so memory would
    grow with the run), runs at most every ``every_s`` seconds from :meth:`tick`."""

    def __init__(self, every_s: float = 10.0) -> None:
        gc.freeze()
        gc.set_threshold(20_000, 50, 1_000)
        self.every_s = every_s
        self._last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            gc.collect()


__all__ = ["QuietGc"]

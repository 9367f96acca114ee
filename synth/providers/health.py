"""How one provider is doing, as one process sees it: when it last answered, how long it has gone
without answering, and how long its answers take.

Two decisions rest on it. The **outage policy**: rate limits, 5xx and lost connections are the
provider's state, not the unit's, so a request that meets them is retried for as long as the
provider has answered anyone within ``engine.max_outage_s``; past that the job stops (resumable).
The **abandon deadline**: once :data:`MIN_SAMPLES` answers were seen, a call slower than
``max(FLOOR_S, FACTOR x p99)`` of recent latencies is abandoned and sent again, so one hung call
does not hold its shard for the whole ``timeout_s``. Calls already out when the deadline first
becomes known (or drops) are moved to it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

FLOOR_S = 5.0  # never abandon a call sooner than this
FACTOR = 4.0  # ... or sooner than this many times the p99 latency
MIN_SAMPLES = 50  # answers needed before the p99 is trusted; before that, the provider's timeout_s
REFRESH = 50  # recompute the p99 every this many answers
WINDOW = 1000  # latencies kept


class Health:
    """One provider's recent successes and latencies in this process."""

    def __init__(
        self, timeout_s: float, *, floor_s: float = FLOOR_S, factor: float = FACTOR, min_samples: int = MIN_SAMPLES
    ) -> None:
        self.timeout_s = timeout_s
        self.floor_s = floor_s
        self.factor = factor
        self.min_samples = min_samples
        self.ok = 0  # answers so far: a request's retries count toward max_retries only if this moved
        self.failing_since: float | None = None  # first retryable failure since the last answer
        self.p99: float | None = None
        self.abandon_s: float | None = None  # the adaptive deadline, when it is below timeout_s
        self._latencies: deque[float] = deque(maxlen=WINDOW)
        self._out: dict[Any, float] = {}  # timeout context of each call out -> when it was sent

    def answered(self, latency_s: float) -> None:
        self.ok += 1
        self.failing_since = None
        self._latencies.append(latency_s)
        n = len(self._latencies)
        if n >= self.min_samples and (self.p99 is None or self.ok % REFRESH == 0):
            self._refresh()

    def failed(self, now: float) -> None:
        """A retryable failure (429, 5xx, timeout, lost connection)."""
        if self.failing_since is None:
            self.failing_since = now

    def outage_s(self, now: float) -> float:
        """How long this provider has gone without an answer since it started failing (0 when not)."""
        return 0.0 if self.failing_since is None else now - self.failing_since

    def verdict(self, name: str, err: BaseException, now: float, limit: float, ahead: float = 0.0) -> str | None:
        """Why the job must stop after ``err`` (one line naming provider ``name``), or None: it has
        answered no one for ``limit`` seconds, or cannot send for ``ahead`` seconds more (a 429's
        retry-after on every key) that would take it past ``limit``."""
        outage = self.outage_s(now)
        if outage >= limit:
            return (
                f"provider {name} has failed every call for {outage:.1f} s (engine.max_outage_s {limit:g}); "
                f"the last: {str(err)[:200]}"
            )
        if ahead != float("inf") and outage + ahead > limit:
            return (
                f"provider {name} is rate limited for {ahead:.0f} s more, past engine.max_outage_s {limit:g}: "
                f"{str(err)[:200]}"
            )
        return None

    def _refresh(self) -> None:
        s = sorted(self._latencies)
        self.p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
        deadline = max(self.floor_s, self.factor * self.p99)
        old = self.abandon_s
        self.abandon_s = deadline if deadline < self.timeout_s else None
        if self.abandon_s is not None and (old is None or self.abandon_s < old):
            for cm, sent in list(self._out.items()):  # calls out under a later deadline: bring it in
                when = sent + self.abandon_s
                if cm.when() is None or when < cm.when():
                    cm.reschedule(when)

    # the event loop's clock: asyncio.timeout deadlines are on it, whatever clock the dispatcher uses
    def track(self, cm: Any, sent: float) -> None:
        self._out[cm] = sent

    def untrack(self, cm: Any) -> None:
        self._out.pop(cm, None)

    def deadline(self, backstop: float | None) -> float | None:
        """Seconds a call may take before it is abandoned: the adaptive deadline, else the backstop."""
        a = self.abandon_s
        if a is None:
            return backstop
        return a if backstop is None or a < backstop else backstop


def loop_time() -> float:
    return asyncio.get_running_loop().time()


__all__ = ["FACTOR", "FLOOR_S", "Health", "MIN_SAMPLES", "loop_time"]

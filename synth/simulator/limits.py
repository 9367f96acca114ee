"""Per-key rate limits as continuous token buckets (GCRA form) and OpenAI's ``x-ratelimit-*`` headers.

A bucket refills at ``limit / 60`` per second up to ``capacity = max(1, limit / 60 * burst_seconds)``.
It is stored as one number, the time at which it is full again (``tat``), so admission is O(1)
with no timers. A request is admitted when the bucket holds its cost; a cost larger than the
capacity is admitted when the bucket is full (it then goes into debt), so a big request is slow but
never impossible.

Header semantics (continuous buckets have no fixed window): ``limit`` is the per-minute limit,
``remaining`` is what the bucket admits right now (at most its capacity) and ``reset`` is the time
until the bucket is full again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class Bucket:
    __slots__ = ("limit", "rate", "capacity", "tat")

    def __init__(self, limit: float, burst_seconds: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.tat = 0.0

    def level(self, now: float) -> float:
        return self.capacity - max(0.0, self.tat - now) * self.rate

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0 when it fits now)."""
        need = min(cost, self.capacity)
        w = self.tat - (self.capacity - need) / self.rate - now
        return w if w > 1e-9 else 0.0  # float dust is not a wait

    def take(self, cost: float, now: float) -> None:
        self.tat = max(self.tat, now) + cost / self.rate

    def give(self, amount: float) -> None:
        """Refund (or, negative, charge) ``amount`` after the fact."""
        self.tat -= amount / self.rate

    def reset_s(self, now: float) -> float:
        return max(0.0, self.tat - now)


@dataclass
class KeyState:
    """Limits and live counters of one key."""

    requests: Bucket | None
    tokens: Bucket | None
    concurrency: int | None
    in_flight: int = 0
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class Rejection:
    kind: str  # "requests" | "tokens" | "concurrency"
    retry_after: float
    limit: float
    requested: float


def admit(state: KeyState, cost_tokens: float, now: float) -> Rejection | None:
    """Charge one request and ``cost_tokens`` tokens, or say why not (charging nothing)."""
    if state.concurrency is not None and state.in_flight >= state.concurrency:
        return Rejection("concurrency", 0.05, state.concurrency, 1)
    r, t = state.requests, state.tokens
    wait_r = r.wait(1.0, now) if r is not None else 0.0
    wait_t = t.wait(cost_tokens, now) if t is not None else 0.0
    if wait_r > 0.0 or wait_t > 0.0:
        if wait_r >= wait_t:
            return Rejection("requests", wait_r, r.limit if r else 0, 1)
        return Rejection("tokens", wait_t, t.limit if t else 0, cost_tokens)
    if r is not None:
        r.take(1.0, now)
    if t is not None:
        t.take(cost_tokens, now)
    state.in_flight += 1
    return None


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``7.66s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    sec = f"{math.ceil(s * 100) / 100:.2f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{sec}"
    if m:
        return f"{int(m)}m{sec}"
    return sec


def seconds_text(seconds: float) -> str:
    """A ``retry-after`` value: seconds, fractional, rounded up to the millisecond."""
    return f"{math.ceil(seconds * 1000) / 1000:.3f}".rstrip("0").rstrip(".") or "0"


def ratelimit_headers(state: KeyState, now: float) -> dict[str, str]:
    """``x-ratelimit-*`` headers for the limits this key has (none when unlimited)."""
    h: dict[str, str] = {}
    r, t = state.requests, state.tokens
    if r is not None:
        h["x-ratelimit-limit-requests"] = str(int(r.limit))
        h["x-ratelimit-remaining-requests"] = str(max(0, int(r.level(now))))
        h["x-ratelimit-reset-requests"] = duration(r.reset_s(now))
    if t is not None:
        h["x-ratelimit-limit-tokens"] = str(int(t.limit))
        h["x-ratelimit-remaining-tokens"] = str(max(0, int(t.level(now))))
        h["x-ratelimit-reset-tokens"] = duration(t.reset_s(now))
    return h

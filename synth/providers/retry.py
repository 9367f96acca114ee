"""Retry policy as pure functions: which failures to retry, and how long to wait before the next try.

Backoff is exponential with full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``),
which spreads retries of many requests that failed together. A provider's ``retry-after`` wins over
the computed delay. The waiting itself is done by the caller through its injected clock, which is
why this is not tenacity: the dispatcher retries on a different key, cools the failing one and
waits on a virtual clock in tests, none of which fits a decorator around one call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from synth.errors import RateLimited, Transient


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6  # retries after the first try, of rate-limited and transient failures
    base_s: float = 0.5  # first backoff ceiling
    cap_s: float = 30.0  # no wait longer than this (a retry-after above it is still honoured)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        return backoff_delay(retry, base_s=self.base_s, cap_s=self.cap_s, rng=rng)


def backoff_delay(retry: int, *, base_s: float = 0.5, cap_s: float = 30.0,
                  rng: random.Random | None = None) -> float:
    """Full-jitter delay before retry number ``retry`` (0 for the first retry)."""
    ceiling = min(cap_s, base_s * (2.0 ** min(retry, 62)))
    return (rng or random).uniform(0.0, ceiling)


def should_retry(error: BaseException, retries_done: int, policy: RetryPolicy) -> bool:
    """True when ``error`` is a 429 or a transient failure and the retry budget is not spent.
    (Malformed output is re-asked, not retried; auth failures move to another key.)"""
    return isinstance(error, (RateLimited, Transient)) and retries_done < policy.max_retries


def retry_delay(error: BaseException, retry: int, policy: RetryPolicy,
                rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` after ``error``: the provider's retry-after
    when it sent one, else the jittered backoff."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return max(0.0, float(error.retry_after))
    return policy.backoff(retry, rng)


__all__ = ["RetryPolicy", "backoff_delay", "retry_delay", "should_retry"]

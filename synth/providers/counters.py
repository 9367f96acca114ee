"""What a dispatcher counts: its report (plain JSON-able counters, keys by alias only) and the
sliding window of request outcomes that stops a job when most recent requests failed."""

from __future__ import annotations

from collections import deque
from typing import Any


class FailureWindow:
    """The last ``size`` request outcomes; ``add`` says why the job must stop once more than
    ``max_rate`` of a full window failed."""

    def __init__(self, size: int, max_rate: float) -> None:
        self.outcomes: deque[bool] = deque(maxlen=size)
        self.failed = 0
        self.max_rate = max_rate

    def add(self, ok: bool, err: BaseException | None = None) -> str | None:
        w = self.outcomes
        if len(w) == w.maxlen and not w[0]:
            self.failed -= 1
        w.append(ok)
        if ok:
            return None
        self.failed += 1
        if len(w) == w.maxlen and self.failed > self.max_rate * len(w):
            return (
                f"{self.failed} of the last {len(w)} requests failed (engine.max_failure_rate "
                f"{self.max_rate:g}); the last: {str(err)[:300]}"
            )
        return None


def dispatcher_stats(d: Any) -> dict[str, Any]:
    """A :class:`~synth.providers.dispatch.Dispatcher`'s counters, per provider and in total."""
    c = d.counts
    out: dict[str, Any] = {
        "requests": c["requests"],
        "successes": c["successes"],
        "errors": {k[7:]: v for k, v in c.items() if k.startswith("errors.")},
        "rate_limited": c["rate_limited"],
        "retries": c["retries"],
        "abandoned": c["abandoned"],
        "reasks": c["reasks"],
        "fallbacks": c["fallbacks"],
        "cache_hits": c["cache_hits"],
        "replayed": c["replayed"],
        "stopped": d.stopped,
        "embed_requests": c["embed_requests"],
        "prompt_tokens": d.usage[0],
        "completion_tokens": d.usage[1],
        "cost_usd": round(d.cost_usd, 8),
        "providers": {
            r: {
                "successes": t.counts["successes"],
                "errors": {k[7:]: v for k, v in t.counts.items() if k.startswith("errors.")},
                "keys": t.pool.stats(),
                "disabled_keys": [s.alias for s in t.pool.slots if s.limiter.disabled],
                "requests": sum(s.requests for s in t.pool.slots),
                "model": t.spec.model,
                "examples": dict(t.examples),
                "waiting": t.pool.waiting,
            }
            for r, t in d.targets.items()
        },
    }
    if d.answers is not None:
        out["answers"] = d.answers.stats()
    if d.budget is not None:
        b = d.budget
        out["budget"] = {
            "spent_usd": round(b.spent_usd, 8),
            "held_usd": round(b.held_usd, 8),
            "spent_tokens": b.spent_tokens,
            "held_tokens": b.held_tokens,
            "max_usd": b.max_usd,
            "max_tokens": b.max_tokens,
        }
    return out


__all__ = ["FailureWindow", "dispatcher_stats"]

"""The job's budget: in one process, dollars and tokens spent plus the worst case of the calls out
(:class:`Budget`); over a run's gateways, the part each holds and how unspent budget is dealt
again among them (the engine's driver calls :func:`capacity_shares`, :func:`gateway_part` and
:func:`deal`). How a call holds and settles it: :mod:`synth.providers.policies.budget`."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from synth.errors import BudgetExceeded
from synth.providers.clock import REAL_CLOCK, Clock
from synth.spec import BudgetSpec


class Budget:
    """Spending so far plus what in-flight calls may still cost; refuses a call that could cross it.

    A call that does not fit while other calls are out waits for them (they hold their worst case
    and usually settle for less), first come first served, instead of failing: spending ends close
    to the budget, not a batch of worst cases short of it. A ``shared`` budget is one gateway's
    part of the job's, which the driver deals again every half second; a call that does not fit
    with nothing out waits up to ``grace_s`` for a new part before the budget counts as spent."""

    def __init__(
        self, spec: BudgetSpec, *, clock: Clock = REAL_CLOCK, shared: bool = False, grace_s: float = 2.0
    ) -> None:
        self.max_usd = spec.max_usd
        self.max_tokens = spec.max_tokens
        self.spent_usd = self.held_usd = 0.0
        self.spent_tokens = self.held_tokens = 0
        self.in_flight = 0
        self.clock = clock
        self.shared = shared
        self.grace_s = grace_s
        self._queue: deque[tuple[float, int, asyncio.Future[None]]] = deque()
        self._stuck_since: float | None = None  # when the head of the queue last found nothing out
        self._timer: Any = None

    @property
    def waiting(self) -> bool:
        """Calls wait for room: a new one goes behind them."""
        return bool(self._queue)

    def fits(self, usd: float, tokens: int) -> bool:
        return (self.max_usd is None or self.spent_usd + self.held_usd + usd <= self.max_usd) and (
            self.max_tokens is None or self.spent_tokens + self.held_tokens + tokens <= self.max_tokens
        )

    def exceeded(self, usd: float = 0.0, tokens: int = 0) -> BudgetExceeded:
        """The error for a call of this size: it names the limit the call would cross."""
        over_usd = self.max_usd is not None and self.spent_usd + self.held_usd + usd > self.max_usd
        if self.max_tokens is not None and (not over_usd or self.max_usd is None):
            if self.max_usd is None or self.spent_tokens + self.held_tokens + tokens > self.max_tokens:
                return BudgetExceeded(
                    f"budget reached: {self.spent_tokens} tokens spent and {self.held_tokens} in flight of "
                    f"budget.max_tokens {self.max_tokens}; raise budget.max_tokens to generate more"
                )
        return BudgetExceeded(
            f"budget reached: ${self.spent_usd:.4f} spent and ${self.held_usd:.4f} in flight of "
            f"budget.max_usd ${self.max_usd or 0:g}; raise budget.max_usd to generate more"
        )

    def check(self, usd: float, tokens: int) -> None:
        """Raise BudgetExceeded when a call that may cost ``usd`` and ``tokens`` cannot fit now."""
        if not self.fits(usd, tokens):
            raise self.exceeded(usd, tokens)

    def hold(self, usd: float, tokens: int) -> None:
        self.check(usd, tokens)
        self.held_usd += usd
        self.held_tokens += tokens
        self.in_flight += 1

    def try_hold(self, usd: float, tokens: int) -> bool:
        """Hold a call's worst case if it fits now and nobody waits ahead of it."""
        if self._queue or not self.fits(usd, tokens):
            return False
        self.hold(usd, tokens)
        return True

    def settle(self, held_usd: float, held_tokens: int, usd: float, tokens: int) -> None:
        self.held_usd -= held_usd
        self.held_tokens -= held_tokens
        self.in_flight -= 1
        self.spent_usd += usd
        self.spent_tokens += tokens
        if self._queue:
            self._pump()

    def set_limits(self, max_usd: float | None, max_tokens: int | None) -> None:
        """A new part of a shared budget (the driver's deal)."""
        if max_usd is not None:
            self.max_usd = max_usd
        if max_tokens is not None:
            self.max_tokens = max_tokens
        self._pump()

    async def reserve(self, usd: float, tokens: int) -> None:
        """Hold a call's worst case, waiting in turn for room; raise BudgetExceeded once no call
        out can make room and, for a shared budget, no new part came within ``grace_s``."""
        if self.try_hold(usd, tokens):
            return
        if self._hopeless():
            raise self.exceeded(usd, tokens)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((usd, tokens, fut))
        self._pump()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.settle(usd, tokens, 0.0, 0)  # held for a caller that is gone: give it back
            raise

    def _hopeless(self) -> bool:
        if self.in_flight > 0:
            self._stuck_since = None  # the grace counts from when the last call out settled
            return False  # a call out will settle, most likely for less than it holds
        if not self.shared:
            return True
        now = self.clock.now()
        if self._stuck_since is None:
            self._stuck_since = now
        return now - self._stuck_since >= self.grace_s

    def _pump(self) -> None:
        """Hold for the waiting calls that fit, in order; fail them all when none can ever fit."""
        q = self._queue
        while q:
            u, t, fut = q[0]
            if fut.done():
                q.popleft()
                continue
            if not self.fits(u, t):
                break
            q.popleft()
            self.hold(u, t)
            fut.set_result(None)
            self._stuck_since = None
        if not q:
            self._stuck_since = None
            return
        if self._hopeless():
            u, t, _ = q[0]
            err = self.exceeded(u, t)
            while q:
                f = q.popleft()[2]
                if not f.done():
                    f.set_exception(err)
            self._stuck_since = None
        elif self.in_flight == 0 and self._timer is None:  # shared: look again when the grace ends
            left = self.grace_s - (self.clock.now() - (self._stuck_since or self.clock.now()))
            self._timer = self.clock.call_later(max(0.0, left) + 1e-3, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._pump()


def capacity_shares(weights: Sequence[Mapping[str, float]]) -> list[float]:
    """Each gateway's part of the job's budget from its capacity per route (``weights[i][route]``,
    e.g. its keys' requests per minute). Workers send a route's requests to its gateways in
    proportion to their capacity, so that is how each spends: a gateway holding two of three equal
    keys gets two thirds, not half (with half it would stop the job at three quarters of the
    budget). Several routes count alike."""
    routes = sorted({r for w in weights for r in w})
    if not routes:
        return [1.0 / max(1, len(weights))] * len(weights)
    totals = {r: sum(w.get(r, 0.0) for w in weights) or 1.0 for r in routes}
    return [sum(w.get(r, 0.0) / totals[r] for r in routes) / len(routes) for w in weights]


def gateway_part(spec: BudgetSpec, share: float, spent: tuple[float, int] = (0.0, 0)) -> BudgetSpec:
    """A gateway's part of the job's budget: ``share`` of it, less what a lost gateway it replaces
    had spent or held (``spent``: dollars, tokens)."""
    part = spec.model_copy()
    if spec.max_usd is not None:
        part.max_usd = max(0.0, spec.max_usd * share - spent[0])
    if spec.max_tokens is not None:
        part.max_tokens = max(1, int(spec.max_tokens * share) - spent[1])
    return part


def used(report: Mapping[str, Any], unit: str) -> float:
    """Spent plus held of ``unit`` (``usd`` or ``tokens``) in a gateway's budget report."""
    return float(report.get(f"spent_{unit}", 0) + report.get(f"held_{unit}", 0))


def deal(
    total: float,
    unit: str,
    reports: Sequence[Mapping[str, Any]],
    gone: Sequence[Mapping[str, Any]],
    capacity: Sequence[float],
    before: Sequence[float],
) -> tuple[list[float], list[float]]:
    """Deal what is left of a budget of ``total`` ``unit`` among live gateways again: half by
    capacity, half by what each used since the last deal (``before``: what each had used then).
    ``reports`` are the live gateways' budget reports, ``gone`` those of gateways lost before,
    whose use is gone from the budget for good. Returns each live gateway's new limit and what
    each has used now. The limits add up to the budget, so together they never spend more."""
    now = [used(r, unit) for r in reports]
    left = max(0.0, total - sum(used(r, unit) for r in gone) - sum(now))
    recent = [max(0.0, u - b) for u, b in zip(now, before)]
    cap, rec = sum(capacity), sum(recent)
    weights = [0.5 * c / cap + 0.5 * (r / rec if rec else c / cap) for c, r in zip(capacity, recent)]
    return [u + left * w for u, w in zip(now, weights)], now


__all__ = ["Budget", "capacity_shares", "deal", "gateway_part", "used"]

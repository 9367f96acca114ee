"""The job's budget in one process: dollars and tokens spent, plus the worst case of the calls out."""

from __future__ import annotations

import asyncio
from collections import deque
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


__all__ = ["Budget"]

"""Time as a seam: the rate limiter, retries and dispatcher read time and wait through a
:class:`Clock`, so tests swap in :class:`FakeClock` and token-bucket timings become exact and instant.

:class:`FakeClock` keeps virtual time. A sleeper wakes when virtual time reaches its deadline, in
deadline order; time moves when a test calls :meth:`FakeClock.advance`, or by itself (``auto=True``,
the default) as soon as every task of the event loop is waiting, jumping straight to the next
deadline. Example::

    clock = FakeClock()
    await clock.sleep(2.5)     # returns at once; clock.now() == 2.5
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Timer(Protocol):
    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds, a way to wait, and a way to be called back later."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], Any]) -> Timer:
        """Run ``callback()`` on the event loop after ``seconds``; the handle cancels it."""
        ...


class RealClock:
    """The event loop's own monotonic clock (``loop.time()`` is ``time.monotonic()``)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], Any]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

    def __repr__(self) -> str:
        return "RealClock()"


REAL_CLOCK = RealClock()


class _FakeTimer:
    __slots__ = ("deadline", "seq", "callback", "cancelled")

    def __init__(self, deadline: float, seq: int, callback: Callable[[], Any]) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _FakeTimer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class FakeClock:
    """Virtual time for tests. ``auto`` advances to the next deadline whenever the loop is idle."""

    def __init__(self, start: float = 0.0, *, auto: bool = True) -> None:
        self._now = float(start)
        self._timers: list[_FakeTimer] = []
        self._seq = itertools.count()
        self.auto = auto
        self._ticking = False

    def now(self) -> float:
        return self._now

    def call_later(self, seconds: float, callback: Callable[[], Any]) -> _FakeTimer:
        timer = _FakeTimer(self._now + max(0.0, seconds), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        if self.auto and not self._ticking:
            self._ticking = True
            asyncio.get_running_loop().call_soon(self._tick)
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, lambda: _wake(fut))
        try:
            await fut
        finally:
            timer.cancel()

    @property
    def pending(self) -> int:
        """Timers not yet fired (cancelled ones excluded)."""
        return sum(not t.cancelled for t in self._timers)

    def _fire_next(self, until: float) -> bool:
        """Fire every timer due at the earliest deadline <= ``until``; False when none is due."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers or self._timers[0].deadline > until:
            return False
        deadline = self._timers[0].deadline
        self._now = max(self._now, deadline)
        while self._timers and self._timers[0].deadline == deadline:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()
        return True

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        if _busy(loop):
            loop.call_soon(self._tick)  # let the ready tasks run first; time stands still meanwhile
            return
        if self._fire_next(float("inf")) and self._timers:
            loop.call_soon(self._tick)
            return
        if self._timers:
            loop.call_soon(self._tick)
        else:
            self._ticking = False

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order and letting each
        batch of woken tasks run before the next deadline."""
        target = self._now + seconds
        await _settle()
        while self._fire_next(target):
            await _settle()
        self._now = max(self._now, target)
        await _settle()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.6f}, pending={self.pending})"


def _busy(loop: asyncio.AbstractEventLoop) -> bool:
    """True while other callbacks are ready to run. CPython's loop keeps them in ``_ready``; on a
    loop without it we cannot tell, and count the loop idle after this tick (one pass)."""
    ready = getattr(loop, "_ready", None)
    return bool(ready)


async def _settle(rounds: int = 64) -> None:
    """Let ready tasks run until the loop has nothing ready (bounded)."""
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        await asyncio.sleep(0)
        if not _busy(loop):
            return


__all__ = ["REAL_CLOCK", "Clock", "FakeClock", "RealClock", "Timer"]


class Waker:
    """Sleep on a clock until a deadline (forever for ``math.inf``), or until :meth:`poke` is
    called because something changed (capacity freed, limits learned, a key disabled)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._poke: asyncio.Future[None] | None = None

    async def nap(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._poke = fut
        timer = None if seconds == float("inf") else self.clock.call_later(seconds, lambda: _wake(fut))
        try:
            await fut
        finally:
            self._poke = None
            if timer is not None:
                timer.cancel()

    def poke(self) -> None:
        poke = self._poke
        if poke is not None and not poke.done():
            poke.set_result(None)

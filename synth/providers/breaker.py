"""A circuit breaker per provider: stop sending to a provider that keeps failing, probe it now and
then, and take it back when it answers.

closed
    Calls go through. Each call's outcome is counted in per-second buckets over the last
    ``window_s`` seconds; once the window holds ``min_calls`` calls of which at least ``error_rate``
    failed, the breaker opens.
open
    Nothing is sent (:meth:`Breaker.allow` is False) for ``open_s`` seconds, except to a provider
    that is the last a request can try (see :class:`BreakerLayer`).
half-open
    Up to ``probes`` calls go through. If they all succeed it closes (with an empty window); a
    failure opens it again for another ``open_s``.

Only the provider's own health counts: 5xx, timeouts and lost connections are failures; 429s
(the key pool's business), bad requests and malformed answers (the unit's) are not counted at all.
Outcomes of calls made before the breaker opened that arrive while it is open are ignored.

Pure and synchronous, on an injected clock (``now()`` in seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

from synth.errors import ProviderError, RateLimited, Transient
from synth.spec import BreakerSpec, JobSpec

T = TypeVar("T")

State = Literal["closed", "open", "half_open"]


class _Now(Protocol):
    def now(self) -> float: ...


def counts_against(err: BaseException) -> bool | None:
    """True for a failure of the provider (5xx, timeout, lost connection), None for an error that
    says nothing of its health (429, bad request, malformed output, a key refused)."""
    if isinstance(err, RateLimited):
        return None
    if isinstance(err, Transient):
        return True
    return None


class Breaker:
    """One provider's breaker. ``record(ok)`` after each call; ``allow()`` before each."""

    def __init__(self, spec: BreakerSpec | None = None, clock: _Now | None = None, name: str = "") -> None:
        from synth.providers.clock import REAL_CLOCK

        self.spec = spec or BreakerSpec()
        self.clock = clock or REAL_CLOCK
        self.name = name
        self.state: State = "closed"
        self.opened_at = 0.0
        self.opens = 0  # times it opened: a stat
        self._buckets: deque[list[float]] = deque()  # [second, calls, failures], oldest first
        self._calls = 0
        self._failures = 0
        self._probes_out = 0
        self._probes_ok = 0

    # ------------------------------------------------------------------ the window

    def _slide(self, now: float) -> None:
        horizon = now - self.spec.window_s
        b = self._buckets
        while b and b[0][0] <= horizon:
            _, calls, fails = b.popleft()
            self._calls -= int(calls)
            self._failures -= int(fails)

    def _count(self, now: float, failed: bool) -> None:
        second = float(int(now))
        b = self._buckets
        if not b or b[-1][0] != second:
            b.append([second, 0, 0])
        b[-1][1] += 1
        self._calls += 1
        if failed:
            b[-1][2] += 1
            self._failures += 1

    @property
    def error_rate(self) -> float:
        self._slide(self.clock.now())
        return self._failures / self._calls if self._calls else 0.0

    # ------------------------------------------------------------------ the states

    def _tick(self, now: float) -> State:
        if self.state == "open" and now - self.opened_at >= self.spec.open_s:
            self.state = "half_open"
            self._probes_out = self._probes_ok = 0
        return self.state

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
        self.opens += 1
        self._buckets.clear()
        self._calls = self._failures = 0

    def allow(self) -> bool:
        """May a call go to this provider now? In half-open, True hands out one of the probes:
        the caller must then :meth:`record` its outcome (or :meth:`release` it unused)."""
        if not self.spec.enabled:
            return True
        state = self._tick(self.clock.now())
        if state == "closed":
            return True
        if state == "half_open" and self._probes_out < self.spec.probes:
            self._probes_out += 1
            return True
        return False

    def available(self) -> bool:
        """Would :meth:`allow` say yes (without taking a probe)?"""
        if not self.spec.enabled:
            return True
        state = self._tick(self.clock.now())
        return state == "closed" or (state == "half_open" and self._probes_out < self.spec.probes)

    def ready_in(self) -> float:
        """Seconds until a call may go (0 when one may now)."""
        if self.available():
            return 0.0
        if self.state == "open":
            return max(0.0, self.opened_at + self.spec.open_s - self.clock.now())
        return self.spec.open_s / 10  # half-open with its probes out: soon, one way or the other

    def close(self) -> None:
        """The provider answered a call made while open (it was the last one a request could try)."""
        if self.state != "closed":
            self.state = "closed"
            self._buckets.clear()
            self._calls = self._failures = 0

    def release(self) -> None:
        """A probe handed out by :meth:`allow` that was not used (or ended saying nothing of health)."""
        if self.state == "half_open" and self._probes_out > 0:
            self._probes_out -= 1

    def record(self, ok: bool | None) -> None:
        """The outcome of a call: True answered, False failed (see :func:`counts_against`), None
        says nothing of the provider's health."""
        if not self.spec.enabled:
            return
        now = self.clock.now()
        state = self._tick(now)
        if ok is None:
            self.release()
            return
        if state == "open":
            return  # a call made before it opened
        if state == "half_open":
            if not ok:
                self._open(now)
                return
            self._probes_ok += 1
            if self._probes_ok >= self.spec.probes:
                self.close()
            return
        self._slide(now)
        self._count(now, not ok)
        s = self.spec
        if not ok and self._calls >= s.min_calls and self._failures >= s.error_rate * self._calls:
            self._open(now)

    def __repr__(self) -> str:
        return f"Breaker({self.name!r}, {self.state}, error_rate={self.error_rate:.2f})"


class CircuitOpen(ProviderError):
    """The provider's breaker is open: nothing was sent; the route's next provider is tried."""

    kind = "circuit_open"


def job_breakers(job: JobSpec, clock: _Now | None = None) -> dict[str, Breaker]:
    """A breaker per provider of the job, by provider name."""
    return {p.route: Breaker(job.breaker_for(p), clock, p.route) for p in job.providers}


def arrange(order: Sequence[T], breakers: Mapping[str, Breaker], name: Callable[[T], str]) -> list[T]:
    """``order`` with the providers whose breaker is open moved last, the one that half-opens
    soonest at the very end (the one a request is sent to when every breaker is open)."""
    # the common case, every breaker closed, costs an attribute read per provider
    shut = [x for x in order if (b := breakers.get(name(x))) is not None and b.state != "closed" and not b.available()]
    if not shut:
        return list(order)
    shut.sort(key=lambda x: -breakers[name(x)].ready_in())
    return [x for x in order if x not in shut] + shut


class BreakerLayer:
    """The policy between retries and the key pool: every call to a provider passes its breaker.

    An open breaker refuses the call with :class:`CircuitOpen` (not retried: the routing layer
    tries the next provider), and so does a failure that leaves the breaker open, so a dead
    provider that has a fallback costs a request no backoff and is no outage that stops the job.
    The last provider a request can try is called whatever its breaker says: with nowhere else to
    go, the retry layer's outage policy decides (``engine.max_outage_s``), as without a breaker;
    an answer it gives closes its breaker."""

    def __init__(self, inner: Any, breakers: Mapping[str, Breaker], ledger: Any) -> None:
        self.inner = inner
        self.breakers = breakers
        self.ledger = ledger

    def complete(self, request: Any, call: Any) -> Awaitable[Any]:
        b = self.breakers.get(call.target.route)
        if b is None or not b.spec.enabled:
            return self.inner.complete(request, call)
        return self._through(b, request, call, self.inner.complete)

    def embed(self, request: Any, call: Any) -> Awaitable[Any]:
        b = self.breakers.get(call.target.route)
        if b is None or not b.spec.enabled:
            return self.inner.embed(request, call)
        return self._through(b, request, call, self.inner.embed)

    async def _through(self, b: Breaker, request: Any, call: Any, send: Callable[[Any, Any], Awaitable[T]]) -> T:
        if not b.allow():
            if not call.last:
                self.ledger.counts["breaker.refused"] += 1
                raise CircuitOpen(f"{call.target.route}: circuit open (the provider keeps failing); not sent")
            out = await send(request, call)  # nowhere else to go: the outage policy rules
            b.close()
            return out
        try:
            out = await send(request, call)
        except ProviderError as e:
            failed = counts_against(e)
            b.record(False if failed else None)
            if failed and not call.last and b.state == "open":
                # the breaker is open now (this failure, or a failed probe): fall back at once, not
                # after a backoff; and a provider the route has a fallback for is not an outage
                # that stops the job (the retry layer's engine.max_outage_s)
                self.ledger.counts["breaker.refused"] += 1
                raise CircuitOpen(f"{call.target.route}: {e.kind} with its circuit open; not retried") from e
            raise
        except BaseException:  # cancelled, or no call made (another key, the budget): says nothing
            b.release()
            raise
        b.record(True)
        return out

    def __repr__(self) -> str:
        return f"BreakerLayer({self.inner!r})"


__all__ = ["Breaker", "BreakerLayer", "CircuitOpen", "State", "arrange", "counts_against", "job_breakers"]

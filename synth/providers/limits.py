"""Per-key rate limits: continuous token buckets for requests and tokens, a concurrency cap, and a
cool-down after a 429.

A bucket holds up to ``rate * burst_s`` units and refills continuously at ``rate`` per second, the
way providers (and our simulator) meter a key. The client's burst defaults to a fraction of the
server's one second, so requests that reach the server a little later or earlier than they left
(event-loop lag, network jitter) still find the server's bucket non-empty. A request reserves its
prompt tokens plus ``max_tokens`` before it leaves, and :meth:`KeyLimiter.settle` refunds what the
answer did not use, as the server does.

Limits the job file leaves unset are learned from the provider's ``x-ratelimit-limit-*`` headers;
until the first answer says whether there are any, a key sends one request at a time. A limit the
job file does set is an upper bound, not a promise: when the headers show a lower one, the key
follows the lower (and goes back up to the claim if the headers later allow it), and a 429 that
carries no limit headers halves the claimed rate (at most once per cool-down), so a key whose
claim is too high settles at what the server serves instead of drawing 429s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

from synth.providers.clock import REAL_CLOCK, Clock, Waker
from synth.records import ChatMessage, RateLimitInfo
from synth.spec import Limits
from synth.tokens import estimate_tokens

INF = math.inf
DEFAULT_BURST_S = 0.5  # the simulator and most providers allow a 1 s burst; keep well inside it


class Bucket:
    """A continuous token bucket. ``level`` may go negative when one charge exceeds capacity."""

    __slots__ = ("rate", "capacity", "level", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate  # units per second
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> float:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.level

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken; a charge bigger than the bucket waits for a full
        bucket (and then drives it negative) so it is served at all."""
        cap = self.capacity
        level = self.level + (now - self.stamp) * self.rate  # refill without storing: this is hot
        if level > cap:
            level = cap
        need = amount if amount < cap else cap
        # float slack: a deficit below the clock's resolution would never be refilled
        return 0.0 if level >= need - 1e-9 * cap else (need - level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def give(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def __repr__(self) -> str:
        return f"Bucket(rate={self.rate:g}/s, level={self.level:.3f}/{self.capacity:g})"


def _bucket(per_minute: float | None, burst_s: float, now: float, floor: float) -> Bucket | None:
    if per_minute is None:
        return None
    rate = per_minute / 60.0
    return Bucket(rate, max(rate * burst_s, floor), now)


class KeyLimiter:
    """The limits of one key (or of this process's ``share`` of it).

    ``wait_time`` / ``charge`` are the non-blocking pair a :class:`~synth.providers.keys.KeyPool`
    uses to pick among keys; :meth:`acquire` is the blocking form for a single key."""

    def __init__(
        self,
        limits: Limits,
        *,
        share: float = 1.0,
        burst_s: float = DEFAULT_BURST_S,
        clock: Clock = REAL_CLOCK,
        learn: bool = True,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.clock = clock
        self.share = share
        self.burst_s = burst_s
        now = clock.now()
        self.configured = {"rpm": limits.rpm, "tpm": limits.tpm}
        self.rpm = _bucket(limits.rpm and limits.rpm * share, burst_s, now, 1.0)
        self.tpm = _bucket(limits.tpm and limits.tpm * share, burst_s, now, 1.0)
        # rps is a per-second cap: its burst is one second's worth (at least one request)
        self.rps = _bucket(limits.rps and limits.rps * share * 60, 1.0, now, 1.0)
        mc = limits.max_concurrency
        self.max_concurrency = None if mc is None else max(1, int(mc * share))
        self.in_flight = 0
        self.cooldown_until = -INF
        self._cut_until = -INF  # a 429 without headers lowers the claimed rate at most once per cool-down
        # learn unset limits from headers; meanwhile one request at a time
        self.learning = learn and (limits.rpm is None or limits.tpm is None)
        self.disabled = False
        self.sent = 0  # requests charged so far (to age header snapshots)
        self.tokens_sent = 0.0
        self._on_change = on_change
        self._gate: asyncio.Lock | None = None
        self._waker = Waker(clock)

    # ------------------------------------------------------------------ non-blocking core

    def wait_time(self, tokens: float, now: float | None = None) -> float:
        """Seconds until this key can send a request reserving ``tokens``; ``inf`` when it waits
        for an event (a request finishing) rather than for time."""
        if self.disabled or self.in_flight >= self._max_in_flight:
            return INF
        if now is None:
            now = self.clock.now()
        wait = self.cooldown_until - now
        if self.rpm is not None:
            w = self.rpm.wait(1, now)
            if w > wait:
                wait = w
        if self.tpm is not None:
            w = self.tpm.wait(tokens, now)
            if w > wait:
                wait = w
        if self.rps is not None:
            w = self.rps.wait(1, now)
            if w > wait:
                wait = w
        return wait if wait > 0.0 else 0.0

    @property
    def learning(self) -> bool:
        return self._learning

    @learning.setter
    def learning(self, value: bool) -> None:
        self._learning = value
        self._max_in_flight = 1 if value else (self.max_concurrency or 1 << 62)

    def charge(self, tokens: float, now: float | None = None) -> tuple[int, float, float]:
        """Take one request and ``tokens`` from the buckets. Returns a ticket for :meth:`adapt`."""
        now = self.clock.now() if now is None else now
        if self.rpm is not None:
            self.rpm.take(1, now)
        if self.tpm is not None:
            self.tpm.take(tokens, now)
        if self.rps is not None:
            self.rps.take(1, now)
        self.in_flight += 1
        self.sent += 1
        self.tokens_sent += tokens
        return (self.sent, self.tokens_sent, now)

    def settle(self, reserved: float, actual: float) -> None:
        """A request finished: refund (or charge) the difference between reserved and used tokens."""
        self.in_flight -= 1
        if self.tpm is not None and actual != reserved:
            now = self.clock.now()
            if actual < reserved:
                self.tpm.give(reserved - actual, now)
            else:
                self.tpm.take(actual - reserved, now)
        self._changed()

    def cancel(self, tokens: float) -> None:
        """Give back a charge whose request was never sent."""
        now = self.clock.now()
        self.in_flight -= 1
        for bucket, amount in ((self.rpm, 1), (self.tpm, tokens), (self.rps, 1)):
            if bucket is not None:
                bucket.give(amount, now)
        self._changed()

    def refused(self) -> None:
        """A 429: the server did not count the request, so neither do we (its cool-down paces the
        retry). At a limit of one request per burst, arrival jitter alone draws an occasional 429,
        and keeping its charge would lose that request's slot each time."""
        now = self.clock.now()
        for bucket in (self.rpm, self.rps):
            if bucket is not None:
                bucket.give(1, now)

    def cool_down(self, seconds: float) -> None:
        """Block this key for ``seconds`` (a 429's retry-after); other keys keep working."""
        self.cooldown_until = max(self.cooldown_until, self.clock.now() + max(0.0, seconds))

    def adapt(self, info: RateLimitInfo | None, ticket: tuple[int, float, float] | None = None) -> None:
        """Learn limits the job file did not give from ``x-ratelimit-limit-*``, and lower the
        buckets when ``x-ratelimit-remaining-*`` shows the server has less left than we think (the
        key is also used elsewhere). ``ticket`` (from :meth:`charge`) dates the snapshot."""
        was_learning = self._learning
        if info is None:
            if was_learning:
                self.learning = False
                self._changed()
            return
        if was_learning:
            self.learning = False
        now = self.clock.now()
        if self.configured["rpm"] is None and info.limit_requests and self.rpm is None:
            self.rpm = rpm = _bucket(info.limit_requests * self.share, self.burst_s, now, 1.0)
            assert rpm is not None  # a limit was given
            rpm.level = (
                0.0 if info.remaining_requests is None else min(rpm.capacity, info.remaining_requests * self.share)
            )
        if self.configured["tpm"] is None and info.limit_tokens and self.tpm is None:
            self.tpm = tpm = _bucket(info.limit_tokens * self.share, self.burst_s, now, 1.0)
            assert tpm is not None  # a limit was given
            tpm.level = 0.0 if info.remaining_tokens is None else min(tpm.capacity, info.remaining_tokens * self.share)
        # a claimed limit is an upper bound: follow the server's when it is lower
        if info.limit_requests and self.rpm is not None:
            self._follow(self.rpm, min(self.configured["rpm"] or INF, info.limit_requests) * self.share, now)
        if info.limit_tokens and self.tpm is not None:
            self._follow(self.tpm, min(self.configured["tpm"] or INF, info.limit_tokens) * self.share, now)
        if ticket is not None:
            sent, tokens_sent, at = ticket
            age = max(0.0, now - at)
            # What the server can have left now, at most: its count when it answered (+1 for its
            # integer rounding), refilled since we sent, minus what we sent after this request.
            # A server with a full bucket's worth left cannot lower ours: skip the arithmetic.
            rem, b = info.remaining_requests, self.rpm
            if rem is not None and b is not None and rem * self.share < b.capacity + self.sent - sent:
                bound = (rem + 1) * self.share + age * b.rate - (self.sent - sent)
                if b.refill(now) > bound:
                    b.level = bound
            rem, b = info.remaining_tokens, self.tpm
            if rem is not None and b is not None and rem * self.share < b.capacity + self.tokens_sent - tokens_sent:
                bound = rem * self.share + age * b.rate - (self.tokens_sent - tokens_sent)
                if b.refill(now) > bound + b.capacity * 0.05:
                    b.level = bound
        if was_learning:
            self._changed()

    def _follow(self, b: Bucket, per_minute: float, now: float) -> None:
        rate = per_minute / 60.0
        if rate == b.rate:
            return
        b.refill(now)
        b.rate = rate
        b.capacity = max(rate * self.burst_s, 1.0)
        b.level = min(b.level, b.capacity)

    def throttled(self, info: RateLimitInfo | None) -> None:
        """A 429 came back. With the server's limits in its headers, :meth:`adapt` already follows
        them; without, the claimed request rate was too high: halve it, once per cool-down."""
        if info is not None and (info.limit_requests or info.limit_tokens):
            return
        b, now = self.rpm, self.clock.now()
        if b is None or now < self._cut_until:
            return
        self._follow(b, max(1.0, b.rate * 30.0), now)  # half of rate * 60 per minute
        self._cut_until = max(self.cooldown_until, now)

    def disable(self) -> None:
        self.disabled = True
        self._changed()

    # ------------------------------------------------------------------ blocking form

    async def acquire(self, tokens: float) -> tuple[int, float, float]:
        """Wait (first come, first served) until this key may send a request reserving ``tokens``,
        then charge it. Raises RuntimeError when the key is disabled."""
        if self._gate is None:
            self._gate = asyncio.Lock()
        async with self._gate:
            while True:
                if self.disabled:
                    raise RuntimeError("key is disabled")
                wait = self.wait_time(tokens)
                if wait <= 0:
                    return self.charge(tokens)
                await self._nap(wait)

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds`` (forever when inf), waking early when something changes."""
        await self._waker.nap(seconds)

    def _changed(self) -> None:
        self._waker.poke()
        if self._on_change is not None:
            self._on_change()

    def snapshot(self) -> dict[str, float | int | bool | None]:
        now = self.clock.now()
        return {
            "rpm": None if self.rpm is None else round(self.rpm.rate * 60, 3),
            "tpm": None if self.tpm is None else round(self.tpm.rate * 60, 3),
            "in_flight": self.in_flight,
            "cooling_s": round(max(0.0, self.cooldown_until - now), 3),
            "disabled": self.disabled,
        }

    def __repr__(self) -> str:
        return f"KeyLimiter(rpm={self.rpm}, tpm={self.tpm}, rps={self.rps}, in_flight={self.in_flight})"


# ---------------------------------------------------------------- tokens and money


def prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    """The prompt size both clients and the simulator assume (see ``synth.fakegen.prompt_tokens``)."""
    total = 0
    for m in messages:
        total += estimate_tokens(m.content or "") + 4
        if m.tool_calls:
            for tc in m.tool_calls:
                total += estimate_tokens(tc.arguments or "")
    return total


__all__ = ["DEFAULT_BURST_S", "Bucket", "KeyLimiter", "prompt_tokens"]

"""The keys of one provider and their limits.

Keys are named by environment variable in the job file and read once, here, into
:class:`~synth.providers.base.ApiKey` objects whose repr hides the secret. Each key has its own
:class:`~synth.providers.limits.KeyLimiter`; a request takes the key that can serve it soonest
(then the one with fewest requests in flight), so N keys run side by side at the sum of their
limits. A key the provider rejects (401/403) is disabled and the others carry on; when none is
left, :class:`~synth.errors.NoKeysLeft` names them all.

A provider that needs no key (``sim``, a local server) gets one keyless slot (``key=None``) that
carries the provider's limits, if any.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from synth.errors import KeyMissing, NoKeysLeft
from synth.providers.base import ApiKey
from synth.providers.clock import REAL_CLOCK, Clock, Timer
from synth.providers.limits import DEFAULT_BURST_S, INF, KeyLimiter
from synth.spec import KeySpec, Limits, ProviderSpec

log = logging.getLogger("synth.providers")


@dataclass(eq=False)
class KeySlot:
    """One key (or the keyless slot) with its limiter and counters."""

    key: ApiKey | None
    alias: str
    limiter: KeyLimiter
    index: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"KeySlot(alias={self.alias!r}, {self.limiter!r})"


def key_limits(provider: Limits, key: Limits) -> Limits:
    """A key's own limits, falling back to the provider's per-key defaults field by field."""
    return Limits(
        rpm=key.rpm if key.rpm is not None else provider.rpm,
        tpm=key.tpm if key.tpm is not None else provider.tpm,
        rps=key.rps if key.rps is not None else provider.rps,
        max_concurrency=key.max_concurrency if key.max_concurrency is not None else provider.max_concurrency,
    )


class KeyPool:
    """The keys of one provider that this process owns.

    ``keys`` are ``(KeySpec, share)`` pairs (``share`` in (0, 1] scales that key's limits when it is
    split across processes); ``keyless_share`` makes the keyless slot when there are no keys."""

    def __init__(
        self,
        provider: ProviderSpec,
        keys: Sequence[tuple[int, KeySpec, float]] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock = REAL_CLOCK,
        burst_s: float = DEFAULT_BURST_S,
        keyless_share: float = 1.0,
    ) -> None:
        env = os.environ if env is None else env
        self.name = provider.route
        self.clock = clock
        self._queue: deque[tuple[float, asyncio.Future[tuple[KeySlot, tuple[int, float, float]]]]] = deque()
        self._timer: Timer | None = None
        self._pumping = False
        self.waiting = 0
        owned = [(i, k, 1.0 / provider.gateways) for i, k in enumerate(provider.keys)] if keys is None else keys
        self.slots: list[KeySlot] = []
        for index, spec, share in owned:
            secret = env.get(spec.env)
            if not secret:
                raise KeyMissing(
                    f"provider {self.name!r}: environment variable {spec.env} is not set; "
                    f"export it with the API key, or remove it from the job file"
                )
            limiter = KeyLimiter(
                key_limits(provider, spec), share=share, burst_s=burst_s, clock=clock, on_change=self._changed
            )
            self.slots.append(KeySlot(ApiKey(spec.name, secret), spec.name, limiter, index))
        self.keyless = not provider.keys
        if self.keyless and keyless_share > 0:
            limiter = KeyLimiter(
                key_limits(provider, Limits()),
                share=keyless_share,
                burst_s=burst_s,
                clock=clock,
                on_change=self._changed,
            )
            self.slots.append(KeySlot(None, "(no key)", limiter, 0))
        self.total = len(self.slots)

    # ------------------------------------------------------------------ choosing a key

    def pick(self, tokens: float) -> tuple[KeySlot | None, float]:
        """The key that can serve a request of ``tokens`` soonest, and how long until it can."""
        now = self.clock.now()
        best: KeySlot | None = None
        best_wait = INF
        live = False
        for slot in self.slots:
            lim = slot.limiter
            if lim.disabled:
                continue
            live = True
            wait = lim.wait_time(tokens, now)
            if wait < best_wait or (wait == best_wait and best is not None and lim.in_flight < best.limiter.in_flight):
                best, best_wait = slot, wait
                if wait == 0.0 and lim.in_flight == 0:
                    break  # cannot do better
        if not live:
            raise self.no_keys_left()
        return best, best_wait

    def try_acquire(self, tokens: float) -> tuple[KeySlot, tuple[int, float, float]] | None:
        """A key that can serve now, charged, when nobody is queued; else None (then :meth:`acquire`)."""
        if self._queue:
            return None
        slot, wait = self.pick(tokens)
        if slot is None or wait > 0:
            return None
        return slot, slot.limiter.charge(tokens)

    async def acquire(self, tokens: float) -> tuple[KeySlot, tuple[int, float, float]]:
        """Wait, first come first served, for the key that can serve soonest, and charge it."""
        got = self.try_acquire(tokens)
        if got is not None:
            return got
        fut: asyncio.Future[tuple[KeySlot, tuple[int, float, float]]] = asyncio.get_running_loop().create_future()
        self._queue.append((tokens, fut))
        self.waiting += 1
        try:
            self._pump()
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result()[0].limiter.cancel(tokens)  # granted, but its caller is gone: give it back
            raise
        finally:
            self.waiting -= 1

    def _pump(self) -> None:
        """Grant keys to the queued requests in order, as many as can be served now, in one pass
        (handing them over one by one through a lock costs an event-loop turn each, which starves
        the keys of requests under load); then wait for the head's key to have capacity."""
        if self._pumping:
            return
        self._pumping = True
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            queue = self._queue
            while queue:
                tokens, fut = queue[0]
                if fut.done():  # its caller was cancelled
                    queue.popleft()
                    continue
                try:
                    slot, wait = self.pick(tokens)
                except NoKeysLeft as e:
                    while queue:
                        _, f = queue.popleft()
                        if not f.done():
                            f.set_exception(e)
                    return
                if slot is None or wait > 0:
                    if wait < INF:
                        self._timer = self.clock.call_later(wait, self._pump)
                    return  # else a request finishing (or limits learned) calls _changed
                queue.popleft()
                fut.set_result((slot, slot.limiter.charge(tokens)))
        finally:
            self._pumping = False

    def _changed(self) -> None:
        """A key got capacity back (request finished, limits learned, key disabled): serve the queue."""
        if self._queue:
            self._pump()

    # ------------------------------------------------------------------ outcomes

    def disable(self, slot: KeySlot, reason: str) -> None:
        if slot.limiter.disabled:
            return
        slot.limiter.disable()
        left = sum(not s.limiter.disabled for s in self.slots)
        log.warning(
            "provider %s: key %s disabled (%s); %d of %d keys left", self.name, slot.alias, reason, left, self.total
        )

    @property
    def live(self) -> int:
        return sum(not s.limiter.disabled for s in self.slots)

    def no_keys_left(self) -> NoKeysLeft:
        if not self.slots:
            return NoKeysLeft(
                f"provider {self.name} has no keys assigned to this gateway; "
                f"assign it a key slot or route its requests to another gateway"
            )
        names = ", ".join(s.alias for s in self.slots)
        return NoKeysLeft(
            f"all {self.total} keys of provider {self.name} are disabled (revoked or invalid): "
            f"fix the keys named {names}"
        )

    def stats(self) -> dict[str, object]:
        return {s.alias: {"requests": s.requests, **s.errors, **s.limiter.snapshot()} for s in self.slots}

    def __repr__(self) -> str:
        return f"KeyPool({self.name!r}, keys={[s.alias for s in self.slots]}, live={self.live})"


def redact_causes(err: BaseException, secret: str) -> None:
    """Errors travel on to generators and logs; a foreign cause may show the request's headers in
    its repr (aiohttp's ClientResponseError does). Replace such a cause with its plain message,
    secret removed."""
    for attr in ("__cause__", "__context__"):
        cause = getattr(err, attr)
        if cause is not None and secret in repr(cause) + repr(getattr(cause, "__dict__", "")):
            setattr(err, attr, Exception(f"{type(cause).__name__}: {cause}".replace(secret, "***")))
            err.__suppress_context__ = True


__all__ = ["KeyPool", "KeySlot", "key_limits", "redact_causes"]

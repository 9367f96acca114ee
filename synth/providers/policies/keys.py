"""Key pool and rate limits: each call out goes on the key that can serve it soonest, within that
key's limits, under a deadline.

Per attempt this layer

1. reserves prompt + ``max_out`` tokens on a key (:class:`~synth.providers.keys.KeyPool`; waiting
   if none can serve now), then holds the call's worst case on the budget when the budget layer
   left that to it (``call.gate``), so requests waiting for a key hold nothing; with no room left
   it gives the key's tokens back and goes round again (:class:`Again`),
2. sends the call with a deadline: the provider's timeout backstop, or the adaptive abandon
   deadline of :mod:`synth.providers.health`, which also reaches calls already out,
3. settles the key's tokens with what the answer used (all of them for a timeout or a lost
   connection, none for a 429, the prompt for a refusal), learns the key's real limits from the
   answer's headers, cools a key that got a 429, and disables a key the provider rejects
   (401/403), going round again on another one.

How a failed call was paid for goes to ``call.billed`` for the pricing and budget layers above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from synth.errors import AuthError, MalformedOutput, ProviderError, RateLimited, Transient
from synth.providers.clock import Clock
from synth.providers.health import loop_time
from synth.providers.keys import redact_causes
from synth.providers.metrics import alias_label
from synth.providers.policies.base import BILLED, LOST, Again, Call, Layer, Ledger
from synth.providers.retry import retry_delay
from synth.records import Completion, EmbeddingRequest, Embeddings, Request

log = logging.getLogger("synth.providers")

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+: no extra task, unlike wait_for before 3.12


class KeyLayer:
    """Key choice, rate limits, deadlines and bad keys, over ``inner`` (the client)."""

    def __init__(self, inner: Layer, ledger: Ledger, *, clock: Clock, rng: Any) -> None:
        self.inner = inner
        self.ledger = ledger
        self.clock = clock
        self.rng = rng

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        return self._send(request, call, self.inner.complete)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        return self._send(request, call, self.inner.embed)

    async def _send(self, request: Any, call: Call, send: Callable[[Any, Call], Awaitable[Any]]) -> Any:
        t = call.target
        pool = t.pool
        tokens = call.tokens
        got = pool.try_acquire(tokens)  # the common case, without a coroutine
        slot, ticket = got if got is not None else await pool.acquire(tokens)
        lim = slot.limiter
        gate = call.gate
        # held only while the call is out: requests queued for a key hold nothing
        if gate is not None and not call.held:
            if not gate.try_hold(call.held_usd, tokens):
                lim.cancel(tokens)  # others took the room while this one waited for a key
                raise Again()
            call.held = True
        slot.requests += 1
        call.attempts += 1
        call.slot = slot
        health = t.health
        sent = self.clock.now()
        deadline = health.deadline(t.backstop)
        try:
            if _timeout is not None:
                # tracked so that a deadline learned (or lowered) later reaches calls already out
                async with _timeout(deadline) as cm:
                    health.track(cm, loop_time())
                    try:
                        result = await send(request, call)
                    finally:
                        health.untrack(cm)
            elif deadline is None:  # pragma: no cover - Python 3.10
                result = await send(request, call)
            else:  # pragma: no cover - Python 3.10
                result = await asyncio.wait_for(send(request, call), deadline)
        except ProviderError as e:
            err: ProviderError = e
            if slot.key is not None:
                redact_causes(err, slot.key.secret)
        except (TimeoutError, asyncio.TimeoutError):  # the provider overran its timeout: maybe billed
            took = self.clock.now() - sent
            if health.abandon_s is not None and took < t.timeout:
                self.ledger.counts["abandoned"] += 1
                err = Transient(
                    f"{t.spec.model} key {slot.alias!r}: no answer within {took:.1f}s "
                    f"({health.factor:g} x p99 latency {health.p99 or 0:.2f}s); abandoned (timeout)"
                )
            else:
                err = Transient(f"{t.spec.model} key {slot.alias!r}: no answer within {t.timeout:g}s (timeout)")
            err.billed = True  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            lim.settle(tokens, tokens)
            call.billed = LOST
            raise
        except Exception as e:  # a provider bug: keep the batch alive, report it once per request
            lim.settle(tokens, tokens)
            call.billed = LOST
            self.ledger.meter.failed(t.route, t.spec.model, alias_label(slot), ProviderError.kind)
            log.error("provider %s raised %s", t.route, type(e).__name__)
            log.debug("provider %s failure", t.route, exc_info=True)
            detail = str(e)[:200] if slot.key is None else str(e)[:200].replace(slot.key.secret, "***")
            raise ProviderError(f"{t.spec.model}: unexpected {type(e).__name__}: {detail}") from None
        else:
            took = self.clock.now() - sent
            health.answered(took)
            self.ledger.meter.answered(t.route, t.spec.model, alias_label(slot), took)
            usage = result.usage
            used = usage.total_tokens or (usage.prompt_tokens + usage.completion_tokens) or tokens
            call.used = used
            lim.settle(tokens, used)
            lim.adapt(getattr(result, "ratelimit", None), ticket)
            alias = slot.alias if slot.key is not None else None
            if result.key_alias != alias:
                result.key_alias = alias
            return result
        # ---- failure: account, learn
        slot.errors[err.kind] = slot.errors.get(err.kind, 0) + 1
        self.ledger.meter.failed(t.route, t.spec.model, alias_label(slot), err.kind)
        # an unusable answer was still billed; a call we gave up on may have been
        billed = isinstance(err, MalformedOutput) or getattr(err, "billed", False)
        if isinstance(err, RateLimited):
            lim.settle(tokens, 0)  # refused before any work: nothing was charged
            lim.refused()
        elif isinstance(err, Transient) and err.status is None:
            lim.settle(tokens, tokens)  # timeout or lost connection: assume the worst
        else:
            lim.settle(tokens, tokens if billed else call.prompt)
        if billed:
            call.billed = BILLED
        lim.adapt(getattr(err, "limits", None), ticket)
        if isinstance(err, AuthError) and slot.key is not None:
            pool.disable(slot, f"HTTP {err.status or 'auth'} error")
            raise Again()  # another key; NoKeysLeft from acquire when none is left
        if isinstance(err, RateLimited):
            self.ledger.counts["rate_limited"] += 1
            lim.cool_down(retry_delay(err, call.tries, t.policy, self.rng))
            lim.throttled(err.limits)  # type: ignore[arg-type]  # a RateLimitInfo or None
        raise err

    def __repr__(self) -> str:
        return f"KeyLayer({self.inner!r})"


__all__ = ["KeyLayer"]

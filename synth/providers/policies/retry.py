"""Retry with backoff, and the outage policy.

429s, 5xx, timeouts and lost connections are the provider's state, not the request's: they are
retried (a 429 on any key once the key layer has cooled the one that got it; the others after a
jittered backoff) for as long as the provider answers anyone within ``engine.max_outage_s``, then
the job stops (JobStopped, resumable). ``max_retries`` bounds only a request failing while the
provider answers others, and the tries before a fallback provider (``call.last`` false); 0 turns
retrying off. Anything else is the request's own problem and goes up at once.

This layer also sizes each attempt (``call.measure``) for the budget and key layers below.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from synth.errors import JobStopped, ProviderError, RateLimited, Transient
from synth.providers.clock import Clock
from synth.providers.limits import prompt_tokens
from synth.providers.metrics import alias_label
from synth.providers.policies.base import DEFAULT_MAX_TOKENS, Again, Call, Layer, Ledger
from synth.providers.retry import retry_delay, should_retry
from synth.providers.target import Target
from synth.records import Completion, EmbeddingRequest, Embeddings, Request
from synth.tokens import estimate_tokens

log = logging.getLogger("synth.providers")


class RetryLayer:
    """Sends through ``inner`` until it answers or the policy gives up."""

    def __init__(self, inner: Layer, ledger: Ledger, *, clock: Clock, rng: Any, max_outage_s: float) -> None:
        self.inner = inner
        self.ledger = ledger
        self.clock = clock
        self.rng = rng
        self.max_outage_s = max_outage_s

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        call.measure(prompt_tokens(request.messages), (request.max_tokens or DEFAULT_MAX_TOKENS) * request.n)
        return self._retried(request, call, self.inner.complete)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        call.measure(sum(estimate_tokens(t) for t in request.texts), 0)
        return self._retried(request, call, self.inner.embed)

    async def _retried(self, request: Any, call: Call, send: Callable[[Any, Call], Awaitable[Any]]) -> Any:
        t = call.target
        health = t.health
        policy = t.policy
        ledger = self.ledger
        call.tries = 0  # retryable failures of this request: the backoff's exponent
        counted = 0  # those that count toward max_retries: the provider answered others meanwhile
        mark = health.ok
        while True:
            if ledger.stopped is not None:
                raise JobStopped(ledger.stopped)
            try:
                return await send(request, call)
            except Again:
                continue
            except ProviderError as e:
                err = e
            if not isinstance(err, (RateLimited, Transient)) or policy.max_retries == 0:
                raise err  # the unit's own problem (or retrying is turned off)
            if not call.last and not should_retry(err, call.tries, policy):
                raise err  # a fallback provider comes next
            now = self.clock.now()
            health.failed(now)
            t.examples.setdefault(err.kind, str(err)[:300])
            if isinstance(err, Transient):
                if health.ok != mark:  # others were answered while this one failed
                    counted += 1
                mark = health.ok
                if counted > policy.max_retries:
                    raise err
            delay = retry_delay(err, call.tries, policy, self.rng) if isinstance(err, Transient) else 0.0
            self._check_outage(t, err, now, call.tokens)
            call.tries += 1
            ledger.counts["retries"] += 1
            ledger.meter.retried(t.route, t.spec.model, alias_label(call.slot), err.kind)
            if delay > 0:
                if log.isEnabledFor(logging.DEBUG):
                    alias = call.slot.alias if call.slot is not None else None
                    log.debug("provider %s key %s: %s; retry %d", t.route, alias, err.kind, call.tries)
                # the last try of an outage lands on its deadline, not a backoff later
                left = self.max_outage_s - health.outage_s(now)
                await self.clock.sleep(min(delay, max(0.0, left)))

    def _check_outage(self, t: Target, err: ProviderError, now: float, tokens: int) -> None:
        """Stop the job (JobStopped) when ``t`` has gone without an answer for longer than
        ``engine.max_outage_s``, or is rate limited for longer than that from now on."""
        ahead = 0.0
        if isinstance(err, RateLimited):
            try:
                ahead = t.pool.pick(tokens)[1]  # until a key of t can send again
            except ProviderError:  # no key left: the next acquire says so
                pass
        why = t.health.verdict(f"{t.route} ({t.spec.model})", err, now, self.max_outage_s, ahead)
        if why is None:
            return
        t.counts["errors." + err.kind] += 1
        raise JobStopped(self.ledger.stop(why))

    def __repr__(self) -> str:
        return f"RetryLayer({self.inner!r})"


__all__ = ["RetryLayer"]

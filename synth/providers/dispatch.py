"""The dispatcher: what a gateway holds, and the :class:`~synth.generators.base.LLM` generators call.

For every provider of the job it keeps the provider client, the pool of keys this process owns and
the price. A request names a route; the route's providers are tried in order (fallback), and on
each one the dispatcher

1. reserves prompt tokens + ``max_tokens`` on the key that can serve soonest (waiting if none can),
2. calls the provider with a timeout, and refunds the unused tokens when the answer comes back,
3. on 429 cools that key for the retry-after and retries on any key; on 5xx, timeouts and lost
   connections backs off and retries, for as long as the provider answers anyone within
   ``engine.max_outage_s`` (then JobStopped; ``max_retries`` bounds only a request failing where
   others succeed); on 401/403 disables the key; abandons and resends a hung call
   (:mod:`synth.providers.health`),
4. validates structured output against the request's JSON Schema and re-asks when it is invalid:
   the bad answer and a correction are appended to the messages and the seed (when set) is bumped,
   so a deterministic model answers differently; after ``max_reasks`` it raises MalformedOutput,
5. prices the answer and charges the budget. Every call out holds its worst-case cost (prompt +
   ``max_tokens``) until it returns, so spending stops at the budget, not after it; requests still
   waiting for a key hold nothing.

With an answer store (:mod:`synth.providers.answers`), every answer is journaled before it is
used, and a request whose content was answered before (by this job: its journal; by any job: the
response cache) gets that answer instead of a new call. The sim provider, which costs nothing, is
never journaled.

``latency_ms`` on the answer is the time from the request entering :meth:`Dispatcher.complete`
to the answer, waits and retries included; ``attempts`` counts provider calls, re-asks included;
usage and cost add up every call made for the request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from synth.errors import (
    AuthError,
    BadRequest,
    BudgetExceeded,
    JobStopped,
    MalformedOutput,
    ProviderError,
    RateLimited,
    SynthError,
    Transient,
)
from synth.providers.answers import AnswerStore, answered
from synth.providers.base import ApiKey, Provider
from synth.providers.budget import Budget
from synth.providers.clock import REAL_CLOCK, Clock
from synth.providers.counters import FailureWindow, dispatcher_stats
from synth.providers.health import Health, loop_time
from synth.providers.keys import redact_causes
from synth.providers.limits import DEFAULT_BURST_S, prompt_tokens
from synth.providers.pricing import cost as price_cost
from synth.providers.retry import SchemaCheck, reask, retry_delay, should_retry
from synth.providers.target import Slot, Target, build_targets
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Usage
from synth.spec import BudgetSpec, JobSpec, PriceSpec, ProviderSpec
from synth.tokens import estimate_tokens

log = logging.getLogger("synth.providers")

DEFAULT_MAX_TOKENS = 256  # reserved when neither the request nor the provider's params set max_tokens

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+: no extra task, unlike wait_for before 3.12


class Dispatcher:
    """Routes, limits, retries, re-asks, prices and caches model calls. Implements ``LLM``."""

    def __init__(
        self,
        job: JobSpec,
        targets: Mapping[str, Target],
        *,
        clock: Clock = REAL_CLOCK,
        answers: AnswerStore | None = None,
        budget: BudgetSpec | None = None,
        cost: Callable[[Usage, PriceSpec | None], float] = price_cost,
        rng: random.Random | None = None,
    ) -> None:
        self.job = job
        self.targets = dict(targets)
        self.clock = clock
        self.answers = answers
        # the job stops early when most recent requests fail: (max failure rate, window)
        self._window = FailureWindow(job.engine.failure_window, job.engine.max_failure_rate)
        self.stopped: str | None = None
        budget = job.budget if budget is None else budget
        self.budget = Budget(budget, clock=clock) if (budget.max_usd or budget.max_tokens) else None
        self._cost = cost
        self._rng = rng or random.Random()
        self._routes: dict[str, list[Target]] = {}
        self._schemas = SchemaCheck()
        self.health = {r: Health(t.timeout) for r, t in self.targets.items()}
        self.counts: Counter[str] = Counter()
        self.usage = [0, 0]  # prompt, completion tokens
        self.cost_usd = 0.0

    @classmethod
    def from_spec(
        cls,
        job: JobSpec,
        *,
        slots: Sequence[Slot] | None = None,
        clock: Clock | None = None,
        provider_factory: Callable[[ProviderSpec], Provider] | None = None,
        env: Mapping[str, str] | None = None,
        budget: BudgetSpec | None = None,
        burst_s: float = DEFAULT_BURST_S,
        rng: random.Random | None = None,
        answers: AnswerStore | None = None,
    ) -> Dispatcher:
        """Build the dispatcher of one process. ``slots`` lists the keys it owns as
        ``(provider route, key index, share)``; index 0 of a keyless provider is its keyless slot.
        Without ``slots`` it owns every key at a ``1 / gateways`` share. A keyless provider that
        ``slots`` does not mention is owned at full share. ``budget`` overrides the job's (a
        gateway's part of it)."""
        clock = clock or REAL_CLOCK
        targets = build_targets(
            job,
            slots,
            clock=clock,
            provider_factory=provider_factory,
            env=env,
            max_usd=(budget or job.budget).max_usd,
            burst_s=burst_s,
        )
        return cls(job, targets, clock=clock, answers=answers, budget=budget, rng=rng)

    # ------------------------------------------------------------------ routing

    def resolve(self, route: str) -> list[Target]:
        hit = self._routes.get(route)
        if hit is not None:
            return hit
        names = self.job.route_targets(route)
        found = [self.targets[n] for n in names if n in self.targets]
        if not found:  # a raw 'kind:model' matching a provider's model
            found = [t for t in self.targets.values() if t.spec.model == route]
        if not found:
            raise BadRequest(
                f"request names model {route!r}, which is neither a route nor a provider of the "
                f"job; use one of {sorted(set(self.job.routes) | set(self.targets))}"
            )
        self._routes[route] = found
        return found

    # ------------------------------------------------------------------ LLM protocol

    async def complete(self, request: Request) -> Completion:
        started = self.clock.now()
        self.counts["requests"] += 1
        if self.stopped is not None:
            raise JobStopped(self.stopped)
        targets = self.resolve(request.model)
        spent: list[Any] = [0, None, 0.0]  # attempts, usage, cost over every provider tried
        for i, target in enumerate(targets):
            try:
                comp = await self._complete_on(target, request, spent, i + 1 == len(targets))
            except BudgetExceeded:
                self.counts["errors.budget"] += 1
                raise
            except ProviderError as e:
                self.counts["errors." + e.kind] += 1
                target.counts["errors." + e.kind] += 1
                target.examples.setdefault(e.kind, str(e)[:300])
                if i + 1 == len(targets):
                    e.attempts = spent[0]  # type: ignore[attr-defined]  # for the dead letter
                    # the failure window counts what units caused, not failures retried in vain
                    if not (isinstance(e, (RateLimited, Transient)) and spent[0] > 1):
                        self._outcome(False, e)
                    raise
                self.counts["fallbacks"] += 1
                log.info(
                    "route %s: %s failed (%s); falling back to %s",
                    request.model,
                    target.route,
                    e.kind,
                    targets[i + 1].route,
                )
                continue
            # pydantic attribute writes cost a few microseconds each: only the ones that change
            if spent[0] != comp.attempts:
                comp.attempts = spent[0]
            if spent[1] is not comp.usage and spent[1] is not None:
                comp.usage = spent[1]
            if spent[2] != comp.cost_usd:
                comp.cost_usd = spent[2]
            comp.latency_ms = (self.clock.now() - started) * 1000.0
            self.counts["successes"] += 1
            target.counts["successes"] += 1
            self._outcome(True)
            return comp
        raise AssertionError("unreachable")  # pragma: no cover

    def _outcome(self, ok: bool, err: ProviderError | None = None) -> None:
        """Slide the failure window; past ``engine.max_failure_rate`` the job stops (JobStopped)."""
        why = self._window.add(ok, err)
        if why is not None and self.stopped is None:
            self.stopped = why
            log.error("stopping: %s", why)

    async def _complete_on(self, t: Target, request: Request, spent: list[Any], last: bool = True) -> Completion:
        req = t.prepare(request)
        validator = self._schemas.validator(req.json_schema) if req.json_schema is not None else None
        reasks = 0
        while True:
            max_out = (req.max_tokens or DEFAULT_MAX_TOKENS) * req.n
            prompt = prompt_tokens(req.messages)
            r = req

            def call(key: ApiKey | None, r: Request = r) -> Awaitable[Completion]:
                return t.provider.complete(r, key, timeout=t.timeout)

            try:
                comp = await self._answer(t, r, prompt, max_out, call, spent, last)
                error = None if validator is None else self._schemas.problem(comp, validator)
                raw = comp.text
            except MalformedOutput as e:
                if validator is None:
                    raise
                error, raw = str(e), e.raw
            if error is None:
                return comp
            if reasks >= t.spec.max_reasks:
                raise MalformedOutput(
                    f"{t.spec.model}: structured output still invalid after {reasks} re-asks: {error}",
                    raw=raw,
                    key_alias=None,
                )
            reasks += 1
            self.counts["reasks"] += 1
            req = reask(req, raw, error)

    async def _answer(
        self,
        t: Target,
        r: Request,
        prompt: int,
        max_out: int,
        call: Callable[[ApiKey | None], Awaitable[Completion]],
        spent: list[Any],
        last: bool = True,
    ) -> Completion:
        """One answer to ``r`` from ``t``: replayed from the answer store, or bought and journaled."""

        def buy() -> Awaitable[Completion]:
            return self._attempt(t, prompt, max_out, call, spent, last)

        store = self.answers if t.journaled else None
        if store is None:
            return await buy()
        return await answered(store, t, r, spent, buy, self.counts)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        self.counts["embed_requests"] += 1
        targets = self.resolve(request.model)
        tokens = sum(estimate_tokens(t) for t in request.texts)
        spent: list[Any] = [0, None, 0.0]
        for i, t in enumerate(targets):

            def call(key: ApiKey | None, t: Target = t) -> Awaitable[Embeddings]:
                return t.provider.embed(request, key, timeout=t.timeout)

            try:
                out: Embeddings = await self._attempt(t, tokens, 0, call, spent, i + 1 == len(targets))
            except ProviderError as e:
                self.counts["errors." + e.kind] += 1
                if i + 1 == len(targets):
                    raise
                self.counts["fallbacks"] += 1
                continue
            out.cost_usd = spent[2]
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete_many(self, requests: Sequence[Request]) -> list[Completion | SynthError]:
        """A batch, concurrently: each item is the Completion or the error that request ended with."""
        results = await asyncio.gather(*(self.complete(r) for r in requests), return_exceptions=True)
        out: list[Completion | SynthError] = []
        for r, res in zip(requests, results):
            if isinstance(res, (Completion, SynthError)):
                out.append(res)
            elif isinstance(res, asyncio.CancelledError):
                raise res
            else:
                log.error("request %s failed unexpectedly", r.id, exc_info=res)
                out.append(ProviderError(f"unexpected {type(res).__name__}: {str(res)[:200]}"))
        return out

    # ------------------------------------------------------------------ one call, with retries

    async def _attempt(
        self,
        t: Target,
        prompt: int,
        max_out: int,
        call: Callable[[ApiKey | None], Awaitable[Any]],
        spent: list[Any],
        last: bool = True,
    ) -> Any:
        """Call ``t`` until it answers, retrying 429s and transient failures within the policy
        (``last``: no fallback provider comes after ``t``, so the outage policy applies)."""
        tokens = prompt + max_out
        tries = 0  # retryable failures of this request: the backoff's exponent
        counted = 0  # those that count toward max_retries: the provider answered others meanwhile
        health = self.health[t.route]
        mark = health.ok
        pool = t.pool
        budget = self.budget
        held_usd = t.est_usd(prompt, max_out)
        reserved = False  # the budget already holds this call's worst case (it waited for room)
        while True:
            if self.stopped is not None:
                if reserved:
                    self._release(held_usd, tokens)
                raise JobStopped(self.stopped)
            if budget is not None and not reserved and (budget.waiting or not budget.fits(held_usd, tokens)):
                await budget.reserve(held_usd, tokens)  # in turn; BudgetExceeded once it is spent
                reserved = True
            try:
                got = pool.try_acquire(tokens)  # the common case, without a coroutine
                slot, ticket = got if got is not None else await pool.acquire(tokens)
            except BaseException:
                if reserved:
                    self._release(held_usd, tokens)
                raise
            lim = slot.limiter
            # held only while the call is out: requests queued for a key hold nothing
            if budget is not None and not reserved and not budget.try_hold(held_usd, tokens):
                lim.cancel(tokens)  # others took the room while this one waited for a key
                continue
            reserved = False
            slot.requests += 1
            spent[0] += 1
            sent = self.clock.now()
            deadline = health.deadline(t.backstop)
            try:
                if _timeout is not None:
                    # tracked so that a deadline learned (or lowered) later reaches calls already out
                    async with _timeout(deadline) as cm:
                        health.track(cm, loop_time())
                        try:
                            result = await call(slot.key)
                        finally:
                            health.untrack(cm)
                elif deadline is None:  # pragma: no cover - Python 3.10
                    result = await call(slot.key)
                else:  # pragma: no cover - Python 3.10
                    result = await asyncio.wait_for(call(slot.key), deadline)
            except ProviderError as e:
                err: ProviderError = e
                if slot.key is not None:
                    redact_causes(err, slot.key.secret)
            except (TimeoutError, asyncio.TimeoutError):  # the provider overran its timeout: maybe billed
                took = self.clock.now() - sent
                if health.abandon_s is not None and took < t.timeout:
                    self.counts["abandoned"] += 1
                    err = Transient(
                        f"{t.spec.model} key {slot.alias!r}: no answer within {took:.1f}s "
                        f"({health.factor:g} x p99 latency {health.p99 or 0:.2f}s); abandoned (timeout)"
                    )
                else:
                    err = Transient(f"{t.spec.model} key {slot.alias!r}: no answer within {t.timeout:g}s (timeout)")
                err.billed = True  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                lim.settle(tokens, tokens)
                self._release(held_usd, tokens, spent=True)
                raise
            except Exception as e:  # a provider bug: keep the batch alive, report it once per request
                lim.settle(tokens, tokens)
                self._release(held_usd, tokens, spent=True)
                log.error("provider %s raised %s", t.route, type(e).__name__)
                log.debug("provider %s failure", t.route, exc_info=True)
                detail = str(e)[:200] if slot.key is None else str(e)[:200].replace(slot.key.secret, "***")
                raise ProviderError(f"{t.spec.model}: unexpected {type(e).__name__}: {detail}") from None
            else:
                health.answered(self.clock.now() - sent)
                usage = result.usage
                used = usage.total_tokens or (usage.prompt_tokens + usage.completion_tokens) or tokens
                lim.settle(tokens, used)
                lim.adapt(getattr(result, "ratelimit", None), ticket)
                usd = self._cost(usage, t.price)
                if self.budget is not None:
                    self.budget.settle(held_usd, tokens, usd, used)
                self.cost_usd += usd
                self.usage[0] += usage.prompt_tokens
                self.usage[1] += usage.completion_tokens
                spent[1] = usage if spent[1] is None else spent[1] + usage
                spent[2] += usd
                alias = slot.alias if slot.key is not None else None
                if result.key_alias != alias:
                    result.key_alias = alias
                return result
            # ---- failure: account, learn, decide
            slot.errors[err.kind] = slot.errors.get(err.kind, 0) + 1
            # an unusable answer was still billed; a call we gave up on may have been
            billed = isinstance(err, MalformedOutput) or getattr(err, "billed", False)
            if isinstance(err, RateLimited):
                lim.settle(tokens, 0)  # refused before any work: nothing was charged
                lim.refused()
            elif isinstance(err, Transient) and err.status is None:
                lim.settle(tokens, tokens)  # timeout or lost connection: assume the worst
            else:
                lim.settle(tokens, tokens if billed else prompt)
            self._release(held_usd, tokens, spent=billed)
            if billed:
                spent[2] += held_usd
            lim.adapt(getattr(err, "limits", None), ticket)
            if isinstance(err, AuthError) and slot.key is not None:
                pool.disable(slot, f"HTTP {err.status or 'auth'} error")
                continue  # another key; NoKeysLeft from acquire when none is left
            if isinstance(err, RateLimited):
                self.counts["rate_limited"] += 1
                lim.cool_down(retry_delay(err, tries, t.policy, self._rng))
                lim.throttled(err.limits)
            if not isinstance(err, (RateLimited, Transient)) or t.policy.max_retries == 0:
                raise err  # the unit's own problem (or retrying is turned off)
            if not last and not should_retry(err, tries, t.policy):
                raise err  # a fallback provider comes next
            now = self.clock.now()
            health.failed(now)
            t.examples.setdefault(err.kind, str(err)[:300])
            if isinstance(err, Transient):
                if health.ok != mark:  # others were answered while this one failed
                    counted += 1
                mark = health.ok
                if counted > t.policy.max_retries:
                    raise err
            delay = retry_delay(err, tries, t.policy, self._rng) if isinstance(err, Transient) else 0.0
            self._check_outage(t, err, now, tokens)
            tries += 1
            self.counts["retries"] += 1
            if delay > 0:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("provider %s key %s: %s; retry %d", t.route, slot.alias, err.kind, tries)
                # the last try of an outage lands on its deadline, not a backoff later
                left = self.job.engine.max_outage_s - health.outage_s(now)
                await self.clock.sleep(min(delay, max(0.0, left)))

    def _check_outage(self, t: Target, err: ProviderError, now: float, tokens: int) -> None:
        """Stop the job (JobStopped) when ``t`` has gone without an answer for longer than
        ``engine.max_outage_s``, or is rate limited for longer than that from now on."""
        ahead = 0.0
        if isinstance(err, RateLimited):
            try:
                ahead = t.pool.pick(tokens)[1]  # until a key of t can send again
            except ProviderError:  # no key left: the caller's next acquire says so
                pass
        why = self.health[t.route].verdict(f"{t.route} ({t.spec.model})", err, now, self.job.engine.max_outage_s, ahead)
        if why is None:
            return
        t.counts["errors." + err.kind] += 1
        if self.stopped is None:
            self.stopped = why
            log.error("stopping: %s", why)
        raise JobStopped(self.stopped)

    def _release(self, held_usd: float, held_tokens: int, *, spent: bool = False) -> None:
        """Give back a failed call's budget hold; ``spent`` keeps it as spending (the call may have
        been billed: a timeout, an answer that could not be used)."""
        if self.budget is not None:
            self.budget.settle(held_usd, held_tokens, held_usd if spent else 0.0, held_tokens if spent else 0)
        if spent:
            self.cost_usd += held_usd

    # ------------------------------------------------------------------ reporting, shutdown

    def stats(self) -> dict[str, Any]:
        """Plain JSON-able counters of this process (keys by alias only)."""
        return dispatcher_stats(self)

    async def aclose(self) -> None:
        for t in self.targets.values():
            try:
                await t.provider.aclose()
            except Exception:  # closing must not hide the real outcome of a run
                log.warning("provider %s did not close cleanly", t.route, exc_info=True)
        if self.answers is not None:
            self.answers.ship(final=True)

    def __repr__(self) -> str:
        return f"Dispatcher(providers={list(self.targets)})"


__all__ = ["DEFAULT_MAX_TOKENS", "Dispatcher", "Slot", "Target"]

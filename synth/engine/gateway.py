"""Gateway actors own the scarce resource: API keys and their rate limits.

Each key slot (a provider's key, or a share of it) lives in exactly one gateway, so a key's limits
are enforced in one place across the cluster without locks. Workers reach gateways through
:class:`~synth.engine.client.GatewayClient`, which gathers the requests of many concurrent units into one call and
streams results back in small groups as they finish, so Ray costs a fraction of a millisecond per
request and a slow request never holds up the rest of its batch.

How keys map to gateways: each node runs ``engine.gateways_per_node`` gateway processes (default
1) and the keys are dealt to them round robin, so every key lives in exactly one process. A
provider's key can be split over ``gateways`` processes (ProviderSpec, default 1), each enforcing
``1/gateways`` of the key's RPM, TPM and concurrency. One asyncio process with the lean HTTP client
drives a few thousand requests/s; split a key only when its ceiling is above that.

Gateways are placed one per node in turn. A gateway process that crashes restarts on its node and
the requests it held are sent again. When its node is lost, its requests move to the other
gateways at once, and the driver starts a replacement holding the same keys on a surviving node,
with what is left of the lost one's budget share; workers switch to it when they see it
(:mod:`synth.engine.gateways`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from synth import errors as E
from synth.engine.gctune import QuietGc
from synth.engine.metrics import RayMeter
from synth.providers.budget import capacity_shares, gateway_part
from synth.providers.journal import completion_from_row, completion_row
from synth.records import ChatMessage, Completion, EmbeddingRequest, Embeddings, Request, ToolCall, trusted
from synth.spec import JobSpec

Slot = tuple[str, int, float]  # (provider route, key index, share of the key's limits)
log = logging.getLogger("synth.engine")

_ERRORS: dict[str, type[E.SynthError]] = {
    cls.kind: cls
    for cls in (
        E.RateLimited,
        E.Transient,
        E.AuthError,
        E.BadRequest,
        E.MalformedOutput,
        E.NoKeysLeft,
        E.BudgetExceeded,
        E.JobStopped,
        E.ConfigError,
        E.KeyMissing,
        E.ProviderError,
    )
}


def error_to_wire(e: BaseException) -> tuple[str, str, int]:
    kind = e.kind if isinstance(e, E.SynthError) else "internal"
    return (kind, str(e) if isinstance(e, E.SynthError) else f"{type(e).__name__}: {e}", getattr(e, "attempts", 0) or 0)


def error_from_wire(kind: str, message: str, attempts: int) -> BaseException:
    cls = _ERRORS.get(kind)
    err: BaseException = cls(message) if cls is not None else E.ProviderError(message)
    if cls is None:
        err.kind = kind  # type: ignore[attr-defined]
    err.attempts = attempts  # type: ignore[attr-defined]
    return err


def request_to_wire(r: Request) -> tuple[Any, ...]:
    """A request as a plain tuple (its schema and tools stay shared objects, pickled once per batch)."""
    msgs = [
        (
            m.role,
            m.content,
            m.name,
            [(t.id, t.name, t.arguments) for t in m.tool_calls] if m.tool_calls else None,
            m.tool_call_id,
        )
        for m in r.messages
    ]
    return (
        r.id,
        r.model,
        msgs,
        r.json_schema,
        r.schema_name,
        r.tools,
        r.temperature,
        r.top_p,
        r.max_tokens,
        r.seed,
        r.n,
        r.metadata,
    )


def request_from_wire(t: tuple[Any, ...]) -> Request:
    rid, model, msgs, schema, schema_name, tools, temperature, top_p, max_tokens, seed, n, metadata = t
    messages = [
        trusted(
            ChatMessage,
            {
                "role": role,
                "content": content,
                "name": name,
                "tool_call_id": call_id,
                "tool_calls": [trusted(ToolCall, {"id": i, "name": fn, "arguments": a}) for i, fn, a in calls]
                if calls
                else None,
            },
        )
        for role, content, name, calls, call_id in msgs
    ]
    return trusted(
        Request,
        {
            "id": rid,
            "model": model,
            "messages": messages,
            "json_schema": schema,
            "schema_name": schema_name,
            "tools": tools,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "seed": seed,
            "n": n,
            "metadata": metadata,
        },
    )


def completion_to_wire(c: Completion) -> tuple[Any, ...]:
    """A completion as a plain tuple: a third of the pickling cost of the model, both ways. Its
    fields are the journal's row (one encoding of an answer); the rate-limit headers stay behind:
    the gateway has learned from them, workers have no use for them."""
    return (c.request_id, *completion_row(c), c.cached)


def completion_from_wire(t: tuple[Any, ...]) -> Completion:
    return completion_from_row(list(t[1:-1]), t[0], cached=t[-1])


def plan_slots(job: JobSpec, keyed: list[str], gateways: int | None = None) -> list[list[Slot]]:
    """Spread every keyed provider's key slots over the gateways, round robin."""
    per: list[tuple[str, int, float]] = []
    for p in job.providers:
        if p.route not in keyed:
            continue
        n_keys = max(1, len(p.keys))
        for k in range(n_keys):
            per += [(p.route, k, 1.0 / p.gateways)] * p.gateways
    if not per:
        return []
    # at least as many gateways as the most split key has shares, at most one per slot
    g = min(len(per), max(gateways or len(per), *(p.gateways for p in job.providers if p.route in keyed)))
    out: list[dict[tuple[str, int], float]] = [{} for _ in range(g)]
    for i, (route, index, share) in enumerate(per):
        held = out[i % g]
        held[(route, index)] = held.get((route, index), 0.0) + share  # two shares in one process are one
    return [[(r, k, s) for (r, k), s in held.items()] for held in out if held]


def slot_weight(job: JobSpec, slots: list[Slot], route: str) -> float:
    """A gateway's share of a route's capacity: its keys' requests per minute (1 when unknown)."""
    spec = next(p for p in job.providers if p.route == route)
    total = 0.0
    for r, index, share in slots:
        if r == route:
            key = spec.keys[index] if spec.keys else None
            total += share * ((key.rpm if key else None) or spec.rpm or 1.0)
    return total


def budget_shares(job: JobSpec, groups: list[list[Slot]]) -> list[float]:
    """Each gateway's part of the job's budget, by its share of each route's key capacity
    (:func:`synth.providers.budget.capacity_shares`)."""
    return capacity_shares([{r: slot_weight(job, g, r) for r in {s[0] for s in g}} for g in groups])


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=10_000)  # type: ignore[call-overload]
class GatewayActor:
    def __init__(
        self,
        job_json: str,
        slots: list[Slot],
        budget_share: float,
        spent: tuple[float, int] = (0.0, 0),
        todo: list[int] | None = None,
        retried: list[int] | None = None,
    ) -> None:
        """``spent``: dollars and tokens a lost gateway this one replaces had spent or held.
        ``todo``: the shards this run makes; journaled answers of other shards are not loaded.
        ``retried``: units made again by --retry-failed, whose answers are bought afresh."""
        from synth.engine.answerstore import build_store
        from synth.providers.dispatch import Dispatcher

        self.gc = QuietGc()
        job = JobSpec.model_validate_json(job_json)
        budget = gateway_part(job.budget, budget_share, spent)
        self.routes = sorted({s[0] for s in slots})
        self.failure: tuple[str, str, int] | None = None
        self._shipping: asyncio.Task[None] | None = None
        self.meter = RayMeter(job.name)  # this process's calls, tokens, dollars, 429s, latencies
        self._metering: asyncio.Task[None] | None = None
        try:
            # answers journaled on this node before they are used; replayed instead of bought again
            self.answers = build_store(job, self.routes, set(todo or ()), set(retried or ()))
            # a part of the budget the driver deals again (share < 1) is worth waiting for
            self.dispatcher = Dispatcher.from_spec(
                job,
                slots=slots,
                answers=self.answers,
                budget=budget,
                shared_budget=budget_share < 1.0,
                meter=self.meter,
            )
        except E.SynthError as e:  # reported by ready(), so the driver shows it as one line
            self.failure = error_to_wire(e)

    def ready(self) -> list[str] | tuple[str, str, int]:
        return self.failure or self.routes

    async def complete_stream(self, requests: list[tuple[Any, ...]], flush_ms: float = 25.0):
        """Yield groups of (position, ok, completion or error tuple) as requests finish."""
        done: asyncio.Queue[tuple[int, bool, Any]] = asyncio.Queue()

        async def one(i: int, r: tuple[Any, ...]) -> None:
            try:
                done.put_nowait((i, True, completion_to_wire(await self.dispatcher.complete(request_from_wire(r)))))
            except BaseException as e:  # noqa: BLE001 - sent back to the caller as data
                done.put_nowait((i, False, error_to_wire(e)))

        start = asyncio.get_running_loop().create_task
        if self._shipping is None and self.answers is not None:
            from synth.engine.answerstore import ship_every

            self._shipping = start(ship_every(self.answers))
        if self._metering is None:
            self._metering = start(self.meter.run())
        tasks = [start(one(i, r)) for i, r in enumerate(requests)]
        remaining = len(tasks)
        while remaining:
            group = [await done.get()]
            if len(group) < remaining:
                await asyncio.sleep(flush_ms / 1000)  # gather what finishes meanwhile into one Ray object
                while not done.empty():
                    group.append(done.get_nowait())
            remaining -= len(group)
            yield group
        self.gc.tick()

    async def embed(self, request: EmbeddingRequest) -> Embeddings | tuple[str, str, int]:
        try:
            return await self.dispatcher.embed(request)
        except BaseException as e:  # noqa: BLE001
            return error_to_wire(e)

    def stats(self) -> dict[str, Any]:
        return self.dispatcher.stats()

    async def flush(self) -> dict[str, Any]:
        """At every stop: close the journal's open segments, ship them and feed the cache."""
        answers = getattr(self, "answers", None)
        if answers is not None:
            if self._shipping is not None:
                self._shipping.cancel()
                self._shipping = None
            await asyncio.get_running_loop().run_in_executor(None, lambda: answers.ship(final=True))
        self.meter.flush()
        return self.dispatcher.stats() if hasattr(self, "dispatcher") else {}

    async def set_budget(self, max_usd: float | None, max_tokens: int | None) -> None:
        """The driver moves unspent budget between gateways (:meth:`Gateways.rebalance`); async, so
        it runs on the event loop, where calls wait for room."""
        b = getattr(self, "dispatcher", None) and self.dispatcher.budget
        if b:
            b.set_limits(max_usd, max_tokens)

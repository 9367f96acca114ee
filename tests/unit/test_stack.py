"""The provider stack: composed in one place, in the order build_stack says, and each policy doing
its part through the one protocol, over the offline sim client."""

from __future__ import annotations

import random
from collections.abc import Awaitable
from typing import Any

import pytest

from synth.errors import BadRequest, BudgetExceeded, MalformedOutput, Transient
from synth.providers.answers import AnswerStore
from synth.providers.budget import Budget, capacity_shares, deal, gateway_part
from synth.providers.clients.sim import SimProvider
from synth.providers.clock import FakeClock
from synth.providers.dispatch import Dispatcher
from synth.providers.policies.answers import AnswerLayer
from synth.providers.policies.base import Call, Layer, Ledger
from synth.providers.policies.budget import BudgetLayer
from synth.providers.policies.client import ClientLayer
from synth.providers.policies.keys import KeyLayer
from synth.providers.policies.pricing import PricingLayer
from synth.providers.policies.retry import RetryLayer
from synth.providers.policies.routing import Fallback, RoutingLayer
from synth.providers.policies.validation import ValidationLayer
from synth.providers.pricing import cost
from synth.providers.stack import build_stack, compose
from synth.providers.target import Target, build_targets
from synth.records import ChatMessage, Completion, EmbeddingRequest, Embeddings, Request
from synth.spec import BudgetSpec, JobSpec

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


def job(**extra: Any) -> JobSpec:
    providers = extra.pop(
        "providers", [{"name": "a", "model": "sim:a", "price": PRICE}, {"name": "b", "model": "sim:b", "price": PRICE}]
    )
    return JobSpec.model_validate(
        {"name": "t", "count": 1, "generator": {"kind": "structured"}, "providers": providers, **extra}
    )


def targets(spec: JobSpec, clock: FakeClock) -> dict[str, Target]:
    return build_targets(spec, None, clock=clock, provider_factory=None, env={}, max_usd=None, burst_s=1.0)


def req(i: int = 0, model: str = "a", **kw: Any) -> Request:
    return Request(id=f"r{i}", model=model, messages=[ChatMessage(role="user", content=f"hello {i}")], **kw)


def on(t: Target, prompt: int = 10, max_out: int = 20) -> Call:
    call = Call()
    call.target = t
    call.measure(prompt, max_out)
    return call


class Failing:
    """A layer that fails the first ``n`` calls with ``error``, then asks ``inner``."""

    def __init__(self, inner: Layer, n: int, error: Exception) -> None:
        self.inner, self.n, self.error, self.calls = inner, n, error, 0

    async def complete(self, request: Request, call: Call) -> Completion:
        self.calls += 1
        if self.calls <= self.n:
            raise self.error
        return await self.inner.complete(request, call)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        return self.inner.embed(request, call)


# ---------------------------------------------------------------- composition


def test_build_stack_composes_the_policies_in_its_order_each_wrapping_the_next() -> None:
    clock = FakeClock()
    spec = job()
    stack = build_stack(
        spec, targets(spec, clock), clock=clock, budget=None, answers=None, cost=cost, rng=random.Random(0)
    )
    kinds = [type(x) for x in stack.layers]
    mine = [RoutingLayer, ValidationLayer, AnswerLayer, RetryLayer, BudgetLayer, PricingLayer, KeyLayer, ClientLayer]
    assert [k for k in kinds if k in mine] == mine  # in this order (other policies may sit between)
    assert kinds[0] is RoutingLayer and kinds[-1] is ClientLayer
    assert stack.top is stack.layers[0]
    for upper, lower in zip(stack.layers, stack.layers[1:]):
        assert upper.inner is lower  # type: ignore[attr-defined]
    assert repr(stack.top).startswith("RoutingLayer(ValidationLayer(AnswerLayer(RetryLayer(")


async def test_a_policy_is_added_or_removed_in_one_place() -> None:
    clock = FakeClock()
    spec = job()
    ts = targets(spec, clock)
    seen: list[str] = []

    class Spy:
        def __init__(self, inner: Layer) -> None:
            self.inner = inner

        async def complete(self, request: Request, call: Call) -> Completion:
            seen.append(call.target.route)
            return await self.inner.complete(request, call)

        def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
            return self.inner.embed(request, call)

    ledger = Ledger()
    stack = compose(
        ledger,
        None,
        lambda inner: RoutingLayer(inner, ledger, spec, ts, clock=clock),
        Spy,  # added: one line
        lambda inner: RetryLayer(inner, ledger, clock=clock, rng=random.Random(0), max_outage_s=60),
        lambda inner: KeyLayer(inner, ledger, clock=clock, rng=random.Random(0)),
        bottom=ClientLayer(),
    )
    comp = await stack.top.complete(req(1, model="b"), Call())
    assert seen == ["b"] and comp.text and comp.attempts == 1
    assert [type(x).__name__ for x in stack.layers] == ["RoutingLayer", "Spy", "RetryLayer", "KeyLayer", "ClientLayer"]
    # no pricing layer in this stack: nothing was priced
    assert comp.cost_usd == 0.0 and ledger.cost_usd == 0.0
    with pytest.raises(TypeError, match="starts with its routing layer"):
        compose(ledger, None, Spy, bottom=ClientLayer())


def test_the_dispatcher_is_the_stacks_face() -> None:
    d = Dispatcher.from_spec(job())
    assert d.counts is d.stack.ledger.counts and d.stack.top.targets is d.targets
    assert [t.route for t in d.resolve("a")] == ["a"]


# ---------------------------------------------------------------- each policy through the protocol


async def test_key_layer_sends_on_a_key_and_settles_it() -> None:
    clock = FakeClock()
    ts = targets(job(), clock)
    layer = KeyLayer(ClientLayer(), Ledger(), clock=clock, rng=random.Random(0))
    call = on(ts["a"])
    comp = await layer.complete(req(), call)
    assert comp.text and call.attempts == 1 and call.slot is ts["a"].pool.slots[0]
    assert call.used == comp.usage.total_tokens > 0 and comp.key_alias is None
    assert ts["a"].pool.slots[0].requests == 1 and ts["a"].health.ok == 1


async def test_pricing_layer_prices_each_answer_and_a_billed_failure_at_its_worst_case() -> None:
    clock = FakeClock()
    ts = targets(job(), clock)
    ledger = Ledger()
    keys = KeyLayer(ClientLayer(), ledger, clock=clock, rng=random.Random(0))
    layer = PricingLayer(keys, ledger, cost)
    call = on(ts["a"])
    comp = await layer.complete(req(), call)
    expected = cost(comp.usage, ts["a"].price)
    assert expected > 0 and call.cost_usd == call.paid == ledger.cost_usd == pytest.approx(expected)
    assert ledger.usage == [comp.usage.prompt_tokens, comp.usage.completion_tokens]
    timeout = Transient("no answer (timeout)")
    timeout.billed = True  # type: ignore[attr-defined]
    failing = PricingLayer(KeyLayer(Failing(ClientLayer(), 1, timeout), ledger, clock=clock, rng=None), ledger, cost)
    call2 = on(ts["a"], prompt=1000, max_out=1000)
    with pytest.raises(Transient):
        await failing.complete(req(2), call2)
    assert call2.cost_usd == pytest.approx(ts["a"].est_usd(1000, 1000)) == pytest.approx(0.003)


async def test_budget_layer_holds_while_out_and_refuses_past_the_budget() -> None:
    clock = FakeClock()
    ts = targets(job(), clock)
    ledger = Ledger()
    budget = Budget(BudgetSpec(max_tokens=100), clock=clock)
    layer = BudgetLayer(PricingLayer(KeyLayer(ClientLayer(), ledger, clock=clock, rng=None), ledger, cost), budget)
    call = on(ts["a"], prompt=10, max_out=20)
    await layer.complete(req(), call)
    assert budget.held_tokens == 0 and budget.in_flight == 0 and budget.spent_tokens == call.used > 0
    assert call.held is False
    with pytest.raises(BudgetExceeded, match="budget.max_tokens 100"):
        await layer.complete(req(1), on(ts["a"], prompt=10, max_out=200))
    assert budget.held_tokens == 0


async def test_retry_layer_retries_transient_failures_then_answers() -> None:
    clock = FakeClock()
    ts = targets(job(), clock)
    ledger = Ledger()
    failing = Failing(ClientLayer(), 2, Transient("HTTP 503", status=503))
    layer = RetryLayer(
        KeyLayer(failing, ledger, clock=clock, rng=None), ledger, clock=clock, rng=random.Random(0), max_outage_s=60
    )
    call = Call()
    call.target = ts["a"]
    comp = await layer.complete(req(), call)
    assert comp.text and call.attempts == 3 and ledger.counts["retries"] == 2 and failing.calls == 3
    assert call.tokens == call.prompt + 256  # sized by the retry layer: the default max_tokens


async def test_validation_layer_re_asks_an_invalid_answer() -> None:
    clock = FakeClock()
    ts = targets(job(), clock)
    ledger = Ledger()
    bad = MalformedOutput("not JSON", raw="{oops", key_alias=None)
    failing = Failing(ClientLayer(), 1, bad)
    layer = ValidationLayer(failing, ledger)
    call = on(ts["a"])
    comp = await layer.complete(req(json_schema=SCHEMA), call)
    assert isinstance(comp.parsed, dict) and "n" in comp.parsed
    assert ledger.counts["reasks"] == 1 and failing.calls == 2
    with pytest.raises(MalformedOutput):  # without a schema, nothing to re-ask
        await ValidationLayer(Failing(ClientLayer(), 1, bad), ledger).complete(req(), on(ts["a"]))


async def test_answer_layer_replays_what_was_bought(tmp_path: Any) -> None:
    clock = FakeClock()
    spec = job(providers=[{"name": "a", "model": "compat:m", "base_url": "http://127.0.0.1:9/v1", "price": PRICE}])
    ts = build_targets(
        spec, None, clock=clock, provider_factory=lambda p: SimProvider("m"), env={}, max_usd=None, burst_s=1.0
    )
    ledger = Ledger()
    store = AnswerStore([ts["a"].digest], spool=tmp_path)
    counting = Failing(
        PricingLayer(KeyLayer(ClientLayer(), ledger, clock=clock, rng=None), ledger, cost), 0, Exception()
    )
    layer = AnswerLayer(counting, ledger, store)
    first = await layer.complete(req(seed=1), on(ts["a"]))
    call = on(ts["a"])
    again = await layer.complete(req(seed=1), call)
    assert counting.calls == 1 and ledger.counts["replayed"] == 1
    assert again.text == first.text and call.cost_usd == first.cost_usd > 0 and call.attempts == 1


async def test_routing_layer_falls_back_and_tells_its_strategy() -> None:
    clock = FakeClock()
    spec = job(routes={"both": ["a", "b"]})
    ts = targets(spec, clock)
    ledger = Ledger()
    seen: list[tuple[str, bool]] = []

    class Recording(Fallback):
        def observe(self, provider: str, ok: bool, latency_s: float) -> None:
            seen.append((provider, ok))

    class FailOnA(Failing):
        async def complete(self, request: Request, call: Call) -> Completion:
            if call.target.route == "a":
                raise Transient("HTTP 503", status=503)
            return await self.inner.complete(request, call)

    layer = RoutingLayer(
        RetryLayer(
            KeyLayer(FailOnA(ClientLayer(), 0, Exception()), ledger, clock=clock, rng=None),
            ledger,
            clock=clock,
            rng=random.Random(0),
            max_outage_s=60,
        ),
        ledger,
        spec,
        ts,
        clock=clock,
    )
    layer._routes["both"] = (layer.resolve("both")[0], Recording())
    comp = await layer.complete(req(model="both"), Call())
    assert comp.text and seen == [("a", False), ("b", True)] and ledger.counts["fallbacks"] == 1
    assert comp.attempts == 1 + spec.providers[0].max_retries + 1  # a's tries before falling back, then b
    with pytest.raises(BadRequest, match="neither a route nor a provider"):
        await layer.complete(req(model="nope"), Call())


def test_a_route_is_resolved_in_one_place() -> None:
    spec = job(routes={"both": ["b", "a"]})
    assert spec.route_targets("both") == ["b", "a"]
    assert spec.route_targets("a") == ["a"]
    assert spec.route_targets("default") == ["a"]  # no provider named so: the first
    assert spec.route_targets("sim:b") == ["b"]  # a raw kind:model one provider has
    assert spec.route_targets("nope") == []


def test_budget_parts_and_deals() -> None:
    part = gateway_part(BudgetSpec(max_usd=10.0, max_tokens=1000), 0.25, spent=(1.0, 50))
    assert part.max_usd == pytest.approx(1.5) and part.max_tokens == 200
    assert capacity_shares([{"a": 2.0}, {"a": 1.0}]) == pytest.approx([2 / 3, 1 / 3])
    assert capacity_shares([{}, {}]) == [0.5, 0.5]
    caps, now = deal(10.0, "usd", [{"spent_usd": 2.0}, {"spent_usd": 1.0, "held_usd": 1.0}], [], [0.5, 0.5], [0, 0])
    assert now == [2.0, 2.0] and sum(caps) == pytest.approx(10.0) and caps == pytest.approx([5.0, 5.0])


async def test_a_gateway_routes_only_to_providers_whose_keys_it_holds() -> None:
    # keys are dealt to gateways: this one holds a's key only, so a weighted route over a and b
    # sends everything to a rather than failing on b (served by the gateway holding b's key)
    spec = job(
        providers=[
            {"name": "a", "model": "sim:a", "keys": [{"env": "KEY_A"}]},
            {"name": "b", "model": "sim:b", "keys": [{"env": "KEY_B"}]},
        ],
        routes={"both": {"strategy": "weighted", "providers": ["a", "b"], "weights": [1, 3]}},
    )
    d = Dispatcher.from_spec(spec, slots=[("a", 0, 1.0)], env={"KEY_A": "ka-123456789", "KEY_B": "kb-123456789"})
    got = [await d.complete(req(i, model="both")) for i in range(40)]
    assert {c.provider for c in got} == {"a"}
    stats = d.stats()
    assert not stats.get("fallbacks") and not stats.get("errors"), stats  # no call turned to a provider it cannot reach
    full = Dispatcher.from_spec(spec, env={"KEY_A": "ka-123456789", "KEY_B": "kb-123456789"})
    both = [await full.complete(req(i, model="both")) for i in range(40)]
    assert {c.provider for c in both} == {"a", "b"}  # holding both keys, it splits as weighted

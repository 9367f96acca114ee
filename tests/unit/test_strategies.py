"""Routing strategies and the circuit breaker, pure, on a hand-moved clock and seeded chance."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from synth.errors import BadRequest, RateLimited, Transient
from synth.providers.breaker import Breaker, arrange, counts_against
from synth.providers.capabilities import Capabilities
from synth.providers.strategies import make_strategy
from synth.records import ChatMessage, Request
from synth.spec import BreakerSpec, PriceSpec, RouteSpec


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def req(schema: bool = False, tools: bool = False, max_tokens: int | None = None, text: str = "hi") -> Request:
    return Request(
        id="r",
        messages=[ChatMessage(role="user", content=text)],
        json_schema={"type": "object"} if schema else None,
        tools=[{"type": "function", "function": {"name": "f"}}] if tools else None,
        max_tokens=max_tokens,
    )


def cap(model: str, i: float | None, o: float = 0.0, **kw: object) -> Capabilities:
    price = None if i is None else PriceSpec(input_per_mtok=i, output_per_mtok=o)
    return Capabilities(model, price=price, **kw)  # type: ignore[arg-type]


def firsts(strategy, n: int, request: Request | None = None) -> Counter[str]:
    return Counter(strategy.order(request)[0] for _ in range(n))


def test_fallback_keeps_the_route_order():
    s = make_strategy(RouteSpec(providers=["a", "b", "c"]))
    assert s.order(req()) == ["a", "b", "c"]
    assert s.order(req(), ["c", "a"]) == ["c", "a"]


def test_weighted_splits_exactly_and_keeps_the_rest_as_fallbacks():
    s = make_strategy(RouteSpec(strategy="weighted", providers=["a", "b", "c"], weights=[3, 1, 0]))
    assert firsts(s, 400) == {"a": 300, "b": 100}
    orders = {tuple(s.order(req())) for _ in range(8)}
    assert orders == {("a", "b", "c"), ("b", "a", "c")}  # c (weight 0) only ever a fallback
    # interleaved, not in runs: any 4 requests in a row hold 3 a's and 1 b
    seq = [s.order(None)[0] for _ in range(40)]
    assert all(Counter(seq[i : i + 4]) == {"a": 3, "b": 1} for i in range(0, 40, 4))


def test_weighted_among_the_candidates_left():
    s = make_strategy(RouteSpec(strategy="weighted", providers=["a", "b", "c"], weights=[3, 1, 1]))
    got = Counter(s.order(None, ["b", "c"])[0] for _ in range(100))
    assert got == {"b": 50, "c": 50}


def test_cost_picks_the_cheapest_able_model():
    caps = {
        "cheap": cap("x:cheap", 0.1, 0.4, structured=False, context=1000),
        "mid": cap("x:mid", 1.0, 4.0, tools=False),
        "dear": cap("x:dear", 5.0, 15.0),
        "free": cap("x:unknown", None),
    }
    s = make_strategy(RouteSpec(strategy="cost", providers=["dear", "free", "mid", "cheap"]), caps)
    assert s.order(req()) == ["cheap", "mid", "dear", "free"]  # unpriced after the priced
    assert s.order(req(schema=True)) == ["mid", "dear", "free", "cheap"]  # cheap has no structured output
    assert s.order(req(schema=True, tools=True)) == ["dear", "free", "cheap", "mid"]  # unable: last, by price
    assert s.order(req(max_tokens=2000)) == ["mid", "dear", "free", "cheap"]  # beyond cheap's context
    assert s.order(req(), ["dear", "mid"]) == ["mid", "dear"]


def test_latency_follows_the_live_p50_and_probes_the_unknown():
    clock = Clock()
    s = make_strategy(
        RouteSpec(strategy="latency", providers=["a", "b"], window=10, window_s=30), clock=clock, rng=random.Random(1)
    )
    # nothing known: requests take turns, so both get measured
    assert [s.order(None)[0] for _ in range(4)] == ["a", "b", "a", "b"]
    for _ in range(10):
        s.observe("a", True, 0.05)
        s.observe("b", True, 0.20)
    assert s.p50("a") == 0.05 and s.p50("b") == 0.20
    got = firsts(s, 1000)
    assert got["a"] > 950 and 0 < got["b"] < 50  # b still measured now and then
    # a slows down: once most of its window is slow, b takes the traffic
    for _ in range(6):
        s.observe("a", True, 0.5)
    assert s.p50("a") == 0.5
    assert firsts(s, 1000)["b"] > 950
    # failures are no latency; a window gone stale is unknown again
    s.observe("b", False, 9.0)
    assert s.p50("b") == 0.20
    clock.t += 31
    assert s.p50("a") is None and s.p50("b") is None


def test_quality_ranks_declared_then_table_then_order():
    caps = {"a": cap("x:a", 1, quality=0.6), "b": cap("x:b", 1, quality=0.9), "c": cap("x:c", 1)}
    assert make_strategy(RouteSpec(strategy="quality", providers=["a", "b", "c"]), caps).order(req()) == [
        "b",
        "a",
        "c",
    ]
    ranked = RouteSpec(strategy="quality", providers=["a", "b", "c"], ranking=["c", "a", "b"])
    assert make_strategy(ranked, caps).order(req()) == ["c", "a", "b"]
    assert make_strategy(ranked, caps).order(req(), ["b", "a"]) == ["a", "b"]


def test_hybrid_weighs_cost_latency_and_quality():
    clock = Clock()
    caps = {"cheap": cap("x:c", 0.1, 0.1, quality=0.5), "good": cap("x:g", 5.0, 5.0, quality=0.95)}

    def hybrid(**w: float):
        route = RouteSpec(strategy="hybrid", providers=["good", "cheap"], hybrid=w, explore=0)
        return make_strategy(route, caps, clock=clock, rng=random.Random(0))

    assert hybrid(cost=3, quality=1).order(req()) == ["cheap", "good"]
    assert hybrid(cost=1, quality=3).order(req()) == ["good", "cheap"]
    s = hybrid(cost=1, quality=1, latency=3)  # a tie on cost and quality: latency decides
    for _ in range(10):
        s.observe("good", True, 0.1)
        s.observe("cheap", True, 1.0)
    assert s.order(req()) == ["good", "cheap"]
    # a model unable to answer goes last whatever its score
    caps["cheap"] = cap("x:c", 0.1, 0.1, quality=0.5, structured=False)
    assert hybrid(cost=10).order(req(schema=True)) == ["good", "cheap"]


# ---------------------------------------------------------------- breaker


def test_breaker_opens_on_sustained_failure_only():
    clock = Clock()
    b = Breaker(BreakerSpec(error_rate=0.5, window_s=10, min_calls=10, open_s=5), clock)
    for _ in range(9):
        b.record(False)
    assert b.state == "closed"  # fewer than min_calls
    b.record(True)
    b.record(False)
    assert b.state == "open" and not b.allow() and b.ready_in() == 5.0
    # a mostly healthy provider never opens
    h = Breaker(BreakerSpec(error_rate=0.5, window_s=10, min_calls=10), clock)
    for i in range(300):
        h.record(i % 3 != 0)  # a third fail
    assert h.state == "closed" and h.error_rate == pytest.approx(1 / 3, abs=0.01)


def test_breaker_window_slides():
    clock = Clock()
    b = Breaker(BreakerSpec(error_rate=0.5, window_s=10, min_calls=10), clock)
    for _ in range(9):
        b.record(False)
    clock.t += 11  # those failures left the window
    for _ in range(9):
        b.record(True)
    b.record(False)
    assert b.state == "closed" and b.error_rate == pytest.approx(0.1)


def test_breaker_half_opens_probes_and_closes_or_reopens():
    clock = Clock()
    b = Breaker(BreakerSpec(min_calls=2, open_s=5, probes=2), clock)
    b.record(False)
    b.record(False)
    assert b.state == "open"
    b.record(True)  # an answer to a call made before it opened
    assert b.state == "open"
    clock.t += 5
    assert b.allow() and b.state == "half_open"
    assert b.allow() and not b.allow()  # two probes, no more
    b.record(True)
    b.record(False)  # one probe failed: open again, for another open_s
    assert b.state == "open" and b.opens == 2 and b.ready_in() == 5.0
    clock.t += 5
    assert b.allow() and b.allow()
    b.record(True)
    assert b.state == "half_open"
    b.record(True)
    assert b.state == "closed" and b.allow() and b.error_rate == 0.0


def test_breaker_ignores_what_says_nothing_of_health():
    clock = Clock()
    b = Breaker(BreakerSpec(min_calls=1, open_s=5), clock)
    assert counts_against(Transient("503")) is True
    assert counts_against(RateLimited("429")) is None
    assert counts_against(BadRequest("400")) is None
    for _ in range(20):
        b.record(None)
    assert b.state == "closed"
    b.record(False)
    clock.t += 5
    assert b.allow()  # the probe
    b.record(None)  # it ended in a 429: the probe is handed back
    assert b.allow()


def test_disabled_breaker_never_opens():
    b = Breaker(BreakerSpec(enabled=False, min_calls=1), Clock())
    for _ in range(50):
        b.record(False)
    assert b.allow() and b.state == "closed"


def test_arrange_moves_open_providers_last_soonest_at_the_end():
    clock = Clock()
    spec = BreakerSpec(min_calls=1)
    bs = {n: Breaker(spec.model_copy(update={"open_s": s}), clock, n) for n, s in [("a", 9), ("b", 3), ("c", 5)]}
    assert arrange(["a", "b", "c"], bs, str) == ["a", "b", "c"]
    bs["a"].record(False)
    assert arrange(["a", "b", "c"], bs, str) == ["b", "c", "a"]
    bs["b"].record(False)
    bs["c"].record(False)
    assert arrange(["a", "b", "c"], bs, str) == ["a", "c", "b"]  # all open: b half-opens first, so last


def test_an_answer_while_open_closes_the_breaker():
    b = Breaker(BreakerSpec(min_calls=1, open_s=60), Clock())
    b.record(False)
    assert b.state == "open" and not b.allow()
    b.close()  # a last-resort call was answered
    assert b.state == "closed" and b.allow() and b.error_rate == 0.0

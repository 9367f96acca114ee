"""Metrics of the provider stack: the layers report each call, 429, retry, token and dollar to the
meter at the points where the dispatcher's own counters count them, so the two agree; labels carry
key aliases, never keys."""

from __future__ import annotations

from typing import Any

from synth.providers.dispatch import Dispatcher
from synth.providers.metrics import LATENCY_BOUNDS, NO_KEY, Tally
from synth.records import ChatMessage, Request
from synth.spec import JobSpec

SECRET_A = "sk-meter-secret-alpha-7781"
SECRET_B = "sk-meter-secret-bravo-7782"


def job(sim_url: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "meter",
            "count": 1,
            "generator": {"kind": "structured"},
            "providers": [
                {
                    "name": "default",
                    "model": "compat:sim-model",
                    "base_url": f"{sim_url}/v1",
                    # the job believes alpha allows far more than the server does: 429s follow
                    "keys": [
                        {"env": "METER_KEY_A", "alias": "alpha", "rpm": 60_000},
                        {"env": "METER_KEY_B", "alias": "bravo", "rpm": 60_000},
                    ],
                    "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                },
                {"name": "local", "model": "sim:local"},
            ],
        }
    )


def summed(t: Tally, name: str, **where: Any) -> float:
    """The sum of the counter ``name`` over the series whose labels match ``where``."""
    pos = {"route": 1, "model": 2, "alias": 3, "outcome": 4}
    return sum(v for k, v in t.counts.items() if k[0] == name and all(k[pos[f]] == x for f, x in where.items()))


def observed(t: Tally, name: str, alias: str | None = None) -> int:
    return int(
        sum(sum(cells[0::2]) for k, cells in t.hists.items() if k[0] == name and (alias is None or k[3] == alias))
    )


async def test_the_meter_agrees_with_the_dispatchers_counters(simulator) -> None:
    simulator.set_keys({SECRET_A: {"rpm": 30}})
    tally = Tally()
    d = Dispatcher.from_spec(job(simulator.url), env={"METER_KEY_A": SECRET_A, "METER_KEY_B": SECRET_B}, meter=tally)
    try:
        reqs = [
            Request(id=f"r{i}", model="default", messages=[ChatMessage(role="user", content=f"hello {i}")])
            for i in range(40)
        ] + [Request(id="s", model="local", messages=[ChatMessage(role="user", content="hi")])]
        out = await d.complete_many(reqs)
    finally:
        await d.aclose()
        simulator.set_keys({SECRET_A: None})
    assert all(not isinstance(o, Exception) for o in out), out
    s = d.stats()
    keys = s["providers"]["default"]["keys"]
    assert s["rate_limited"] > 0 and s["retries"] >= s["rate_limited"]  # the server's limit was met
    # 429s, by key: the dispatcher's count and the meter's, both ways the meter shows them
    for alias in ("alpha", "bravo"):
        limited = keys[alias].get("rate_limited", 0)
        assert summed(tally, "synth_rate_limited", alias=alias) == limited
        assert summed(tally, "synth_requests", alias=alias, outcome="rate_limited") == limited
        assert summed(tally, "synth_requests", alias=alias) == keys[alias]["requests"]  # every call out
        # each answered call observed once in the call latency histogram
        assert observed(tally, "synth_call_latency_seconds", alias) == summed(
            tally, "synth_requests", alias=alias, outcome="ok"
        )
    assert summed(tally, "synth_rate_limited") == s["rate_limited"]
    assert summed(tally, "synth_retries") == s["retries"]
    assert summed(tally, "synth_retries", outcome="rate_limited") == s["rate_limited"]  # the kind, 5th label
    # the keyless sim: labelled as such, every request answered once
    assert summed(tally, "synth_requests", route="local", model="sim:local", alias=NO_KEY, outcome="ok") == 1
    assert observed(tally, "synth_request_latency_seconds") == s["successes"] == 41
    # tokens and dollars: the same totals as the ledger's
    assert summed(tally, "synth_prompt_tokens") == s["prompt_tokens"] > 0
    assert summed(tally, "synth_completion_tokens") == s["completion_tokens"] > 0
    assert abs(summed(tally, "synth_cost_usd") - s["cost_usd"]) < 1e-9 and s["cost_usd"] > 0
    labels = repr((tally.counts, tally.hists))
    assert SECRET_A not in labels and SECRET_B not in labels and "METER_KEY" not in labels


def test_a_histogram_keeps_count_and_sum_per_bucket_with_the_bound_inclusive() -> None:
    t = Tally()
    for v in (LATENCY_BOUNDS[0], LATENCY_BOUNDS[0] * 1.5, 500.0, 700.0):
        t.served("r", "m", "k", v)
    cells = t.hists[("synth_request_latency_seconds", "r", "m", "k")]
    assert cells[0:2] == [1, LATENCY_BOUNDS[0]]  # on a bound: that bound's bucket (Prometheus' le)
    assert cells[2:4] == [1, LATENCY_BOUNDS[0] * 1.5]
    assert cells[-2:] == [2, 1200.0]  # past the last bound: the +Inf bucket
    counts, hists = t.drain()
    assert hists and not t.hists and not t.counts  # drained: a fresh start

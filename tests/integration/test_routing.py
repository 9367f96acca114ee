"""Routing strategies and circuit breakers against two simulator processes as two providers, over
HTTP, through the real provider stack (in-process Dispatcher), and one whole `synth run`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pytest

from synth.api import load_job
from synth.errors import JobStopped
from synth.generators.base import GenContext, Unit
from synth.generators.registry import create_generator
from synth.providers.breaker import BreakerLayer
from synth.providers.dispatch import Dispatcher
from synth.records import ChatMessage, Completion, Request
from synth.spec import JobSpec, parse_job
from tests.support.simulator import SimulatorProcess

KEY_A, KEY_B = os.environ["HTTP_KEY_A"], os.environ["HTTP_KEY_B"]


@pytest.fixture(scope="module")
def sims():
    a = SimulatorProcess(latency_ms=10, seed=1).start()
    b = SimulatorProcess(latency_ms=10, seed=2).start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(autouse=True)
def _fresh(sims):
    for s in sims:
        s.restore()
    yield


def provider(name: str, sim: SimulatorProcess, env: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": f"compat:{model}",
        "base_url": sim.openai_url,
        "keys": [{"env": env, "alias": name}],
        "timeout_s": 10,
        **extra,
    }


def make_job(sims, route: Any, *, models=("gpt-4o-mini", "gpt-4o-mini"), **extra: Any) -> JobSpec:
    a, b = sims
    return parse_job(
        {
            "name": "routing",
            "count": 1,
            "generator": {"kind": "structured", "prompt": "p", "schema": {"type": "object"}, "model": "r"},
            "providers": [provider("a", a, "HTTP_KEY_A", models[0]), provider("b", b, "HTTP_KEY_B", models[1])],
            "routes": {"r": route},
            **extra,
        }
    )


def request(i: int, route: str = "r") -> Request:
    return Request(id=f"q{i}", model=route, messages=[ChatMessage(role="user", content=f"say {i}")], max_tokens=16)


async def send(d: Dispatcher, n: int, start: int = 0, at_once: int = 50) -> list[Completion]:
    """``n`` requests, ``at_once`` of them in flight at a time; every one must be answered."""
    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> Completion:
        async with gate:
            return await d.complete(request(i))

    return list(await asyncio.gather(*(one(i) for i in range(start, start + n))))


def by_provider(comps: list[Completion]) -> Counter[str]:
    return Counter(c.provider for c in comps)


def served(sim: SimulatorProcess) -> int:
    return int(sim.stats()["by_status"].get("200", 0))


async def test_weighted_splits_traffic_by_weights(sims):
    d = Dispatcher.from_spec(make_job(sims, {"strategy": "weighted", "providers": ["a", "b"], "weights": [3, 1]}))
    try:
        got = by_provider(await send(d, 400))
    finally:
        await d.aclose()
    assert abs(got["a"] / 400 - 0.75) <= 0.05 and got["a"] + got["b"] == 400
    # the simulators saw the same split: both quotas in use at once
    assert (served(sims[0]), served(sims[1])) == (got["a"], got["b"])


async def test_cost_uses_the_cheaper_until_its_keys_are_gone(sims):
    a, b = sims  # a: gpt-4o (dearer), b: gpt-4o-mini
    job = make_job(sims, {"strategy": "cost", "providers": ["a", "b"]}, models=("gpt-4o", "gpt-4o-mini"))
    d = Dispatcher.from_spec(job)
    try:
        first = by_provider(await send(d, 60))
        a_before = served(a)
        b.set_keys({KEY_B: {"revoked": True}})  # the cheaper provider's only key is revoked
        then = by_provider(await send(d, 60, start=100))
    finally:
        await d.aclose()
    assert first == {"b": 60} and a_before == 0
    assert then == {"a": 60} and served(a) == 60


async def test_latency_moves_traffic_to_the_faster_provider(sims):
    a, b = sims
    a.configure(latency_ms=10)
    b.configure(latency_ms=200)
    route = {"strategy": "latency", "providers": ["a", "b"], "window": 20, "window_s": 10}
    d = Dispatcher.from_spec(make_job(sims, route))
    try:
        before = by_provider(await send(d, 300, at_once=10))
        a.configure(latency_ms=1500)  # through the simulator's admin endpoint
        changed = time.monotonic()
        after = await send(d, 300, start=1000, at_once=10)
        took = time.monotonic() - changed
    finally:
        await d.aclose()
    assert before["a"] >= 250, before  # the fast one takes nearly all (the other is measured now and then)
    late = by_provider(after[150:])
    assert late["b"] >= 135, (late, took)  # moved over within the first half of the requests after the change
    print(f"latency: traffic moved within {took:.1f}s for 300 requests after the change; late split {dict(late)}")


async def test_breaker_sends_nothing_to_a_failing_provider_then_takes_it_back(sims):
    a, b = sims
    a.configure(error_rate=1.0)  # every answer a 500 or 503
    job = make_job(sims, ["a", "b"], engine={"breaker": {"open_s": 1.0, "min_calls": 10, "window_s": 10}})
    d = Dispatcher.from_spec(job)
    breaker = d.stack.layer(BreakerLayer).breakers["a"]  # type: ignore[attr-defined]
    try:
        t0 = time.monotonic()
        comps = await send(d, 300, at_once=100)
        took = time.monotonic() - t0
        assert by_provider(comps) == {"b": 300}  # every request answered, by the healthy one
        assert breaker.opens >= 1
        hit_a = a.stats()["requests"]
        assert hit_a < 150, hit_a  # far fewer calls than 300 requests x 7 tries
        print(f"breaker: 300 requests behind a dead first provider in {took:.2f}s; it got {hit_a} calls")
        # the provider recovers: a half-open probe succeeds and the traffic comes back
        a.configure(error_rate=0.0)
        back: list[Completion] = []
        deadline = time.monotonic() + 30
        while breaker.state != "closed" or not back:
            assert time.monotonic() < deadline, breaker
            back = [c for c in await send(d, 20, start=10_000 + len(back)) if c.provider == "a"]
        assert breaker.state == "closed"
        assert by_provider(await send(d, 40, start=20_000)) == {"a": 40}
    finally:
        await d.aclose()


async def test_conversation_roles_take_their_own_routes(sims):
    a, b = sims
    gen = {
        "kind": "conversation",
        "model": "respondent",
        "instructions": ["Explain tides", "Explain rain"],
        "turns": {"min": 2, "max": 2},
        "correspondent": {"model": "users"},  # the user simulator on a route of its own
    }
    job = load_job(
        {
            "name": "roles",
            "count": 4,
            "generator": gen,
            "providers": [provider("a", a, "HTTP_KEY_A"), provider("b", b, "HTTP_KEY_B", "gpt-4o")],
            "routes": {"respondent": ["a"], "users": {"strategy": "cost", "providers": ["b"]}},
        }
    )
    d = Dispatcher.from_spec(job)
    try:
        g = create_generator(job.generator, job)
        ctx = GenContext(job="roles", seed=0, llm=d)
        results = [await g.generate(Unit(i, f"u{i}", 0, 100 + i), ctx) for i in range(3)]
    finally:
        await d.aclose()
    calls = [c for r in results for c in r.calls]
    assert {c.provider for c in calls} == {"a", "b"}
    assert served(a) > 0 and served(b) > 0
    # the respondent's turns went to a, the user simulator's to b
    assert served(a) == sum(c.provider == "a" for c in calls)


RUN_JOB = """
name: {name}
count: {count}
seed: 3
generator:
  kind: structured
  model: bulk
  prompt: "Describe item {{{{n}}}}"
  vars: {{n: {{kind: range, low: 1, high: 1000000}}}}
  schema: {{type: object, properties: {{a: {{type: string}}}}, required: [a]}}
providers:
  - {{name: a, model: "compat:gpt-4o-mini", base_url: "{a}", keys: [{{env: HTTP_KEY_A}}]}}
  - {{name: b, model: "compat:gpt-4o-mini", base_url: "{b}", keys: [{{env: HTTP_KEY_B}}]}}
routes:
  bulk: {route}
engine: {{workers: 1}}
output: {{uri: "{out}", shard_size: 200}}
"""


def synth_run(sims, tmp_path: Path, name: str, route: str, count: int, address: str) -> tuple[Path, dict[str, Any]]:
    a, b = sims
    out = tmp_path / name
    job = tmp_path / f"{name}.yaml"
    job.write_text(RUN_JOB.format(name=name, count=count, a=a.openai_url, b=b.openai_url, route=route, out=out))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run(
        [sys.executable, "-m", "synth", "run", str(job), "--quiet", "--no-cache", "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads((out / "stats.json").read_text())


def test_synth_run_through_a_weighted_route(sims, tmp_path: Path, ray_address):
    a, b = sims
    route = "{strategy: weighted, providers: [a, b], weights: [3, 1]}"
    out, stats = synth_run(sims, tmp_path, "weighted", route, 400, ray_address)
    rows = pads.dataset(out / "data" if (out / "data").exists() else out, format="parquet").to_table()
    assert rows.num_rows == 400 and stats["records"] == 400
    n_a, n_b = served(a), served(b)
    assert n_a + n_b >= 400 and abs(n_a / (n_a + n_b) - 0.75) <= 0.05, (n_a, n_b)
    if "provider" in rows.column_names:
        got = Counter(rows.column("provider").to_pylist())
        assert abs(got["a"] / 400 - 0.75) <= 0.05, got


def test_synth_run_behind_a_provider_answering_only_500s(sims, tmp_path: Path, ray_address):
    a, b = sims
    a.configure(error_rate=1.0)
    _, stats = synth_run(sims, tmp_path, "dead-first", "[a, b]", 300, ray_address)
    assert stats["records"] == 300 and stats["dead_letters"] == 0  # exit 0 too (synth_run)
    assert served(b) >= 300 and served(a) == 0
    assert a.stats()["requests"] < 300 * 2  # without a breaker: about 300 x 7 (every request's retries)


async def test_a_dead_provider_with_a_fallback_is_no_outage_but_a_dead_route_is(sims):
    a, b = sims
    a.configure(error_rate=1.0)
    fast = {"breaker": {"open_s": 0.2, "min_calls": 5}, "max_outage_s": 1.0}
    d = Dispatcher.from_spec(make_job(sims, ["a", "b"], engine=fast))
    try:
        t0, answered = time.monotonic(), Counter[str]()
        while time.monotonic() - t0 < 3.0:  # three outage limits' worth of probes failing on a
            answered += by_provider(await send(d, 20, start=sum(answered.values())))
        assert set(answered) == {"b"} and d.stopped is None
    finally:
        await d.aclose()
    # the same provider alone: with nowhere else to go its requests are retried as without a
    # breaker, and the job stops once it has answered no one for engine.max_outage_s (resumable)
    d = Dispatcher.from_spec(make_job(sims, ["a"], engine=fast))
    try:
        with pytest.raises(JobStopped):
            await send(d, 50)
        assert "engine.max_outage_s" in (d.stopped or "")
    finally:
        await d.aclose()

"""The dispatcher with the real HTTP providers against the LLM API simulator: running at the sum of
the keys' limits without 429s, revoked keys, server errors, hangs, malformed output, and secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from synth.errors import MalformedOutput
from synth.providers.dispatch import Dispatcher
from synth.records import ChatMessage, Completion, Request
from synth.spec import JobSpec
from tests.support.simulator import SimulatorProcess

KEYS = {f"SYNTH_TEST_KEY_{i}": f"sk-ceiling-5ecret-{i}-Zq8wXv" for i in range(4)}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
    "required": ["city", "rank"],
    "additionalProperties": False,
}


@pytest.fixture
def sim(simulator: SimulatorProcess):
    simulator.restore()
    yield simulator
    simulator.restore()


def job(sim: SimulatorProcess, **provider: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "ceiling",
            "count": 1,
            "generator": {"kind": "structured"},
            "providers": [
                {
                    "name": "main",
                    "model": "openai:gpt-4o-mini",
                    "base_url": sim.openai_url,
                    "keys": [{"env": env, "alias": f"key{i}"} for i, env in enumerate(KEYS)],
                    **provider,
                }
            ],
        }
    )


def requests(n: int, **kw: Any) -> list[Request]:
    return [
        Request(
            id=f"r{i}",
            messages=[ChatMessage(role="user", content=f"write about item {i}")],
            max_tokens=40,
            seed=i,
            **kw,
        )
        for i in range(n)
    ]


def leaks(text: str) -> list[str]:
    return [s for s in KEYS.values() if s in text]


async def run_timed(d: Dispatcher, reqs: list[Request]) -> tuple[list[Any], list[float]]:
    t0 = time.monotonic()
    done: list[float] = []

    async def one(r: Request) -> Completion:
        c = await d.complete(r)
        done.append(time.monotonic() - t0)
        return c

    out = await asyncio.gather(*(one(r) for r in reqs), return_exceptions=True)
    return out, sorted(done)


def steady_rate(done: list[float]) -> float:
    """Answers per second between the 10th and 90th percentile, past the start-up burst."""
    a, b = len(done) // 10, len(done) * 9 // 10
    return (b - a) / (done[b] - done[a])


@pytest.mark.parametrize("configured", [True, False], ids=["limits-in-job", "limits-from-headers"])
async def test_four_keys_run_at_the_sum_of_their_limits(sim: SimulatorProcess, configured: bool) -> None:
    sim.configure(rpm=600, latency_ms=60, jitter=0.3)  # 4 keys x 10 requests/s
    ceiling = 4 * 600 / 60
    seconds = 10 if configured else 6
    d = Dispatcher.from_spec(job(sim, **({"rpm": 600} if configured else {})), env=KEYS)
    try:
        out, done = await run_timed(d, requests(int(ceiling * seconds)))
    finally:
        await d.aclose()
    assert all(isinstance(c, Completion) for c in out), [c for c in out if not isinstance(c, Completion)][:3]
    rate = steady_rate(done)
    served = sim.stats()
    assert served["ok"] == len(out)  # nothing lost, nothing answered twice
    assert abs(rate / ceiling - 1) <= 0.05, rate
    assert served["rate_limited"] <= 0.01 * served["requests"], served["by_status"]
    per_key = d.stats()["providers"]["main"]["keys"]
    assert all(abs(per_key[f"key{i}"]["requests"] - len(out) / 4) <= len(out) * 0.05 for i in range(4))


async def test_key_revoked_mid_run_the_others_finish(sim: SimulatorProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.configure(rpm=1200, latency_ms=30)
    d = Dispatcher.from_spec(job(sim, rpm=1200), env=KEYS)
    reqs = requests(240)
    revoked = asyncio.Event()

    async def one(r: Request) -> Completion:
        c = await d.complete(r)
        if d.stats()["successes"] == 60 and not revoked.is_set():
            revoked.set()
            await asyncio.to_thread(sim.set_keys, {KEYS["SYNTH_TEST_KEY_2"]: {"revoked": True}})
        return c

    try:
        out = await asyncio.gather(*(one(r) for r in reqs))
    finally:
        await d.aclose()
    assert revoked.is_set() and all(isinstance(c, Completion) for c in out)
    stats = d.stats()
    assert stats["providers"]["main"]["disabled_keys"] == ["key2"]
    assert stats["providers"]["main"]["keys"]["key2"]["auth"] >= 1
    late = [c for c in out[150:] if c.key_alias == "key2"]
    assert late == []  # nothing after the revocation went to key2 successfully
    assert "key2 disabled" in caplog.text and not leaks(caplog.text + json.dumps(stats))


async def test_server_errors_and_hangs_are_retried_until_they_succeed(sim: SimulatorProcess) -> None:
    sim.configure(error_rate=0.2, hang_rate=0.05, hang_s=3, latency_ms=10)
    d = Dispatcher.from_spec(job(sim, timeout_s=0.5, max_retries=8), env=KEYS)
    try:
        out = await d.complete_many(requests(120))
    finally:
        await d.aclose()
    assert all(isinstance(c, Completion) for c in out), [c for c in out if not isinstance(c, Completion)][:3]
    served = sim.stats()
    assert served["errors"] > 0 and served["hangs"] > 0
    retried = [c for c in out if isinstance(c, Completion) and c.attempts > 1]
    assert len(retried) >= served["errors"] // 2 and d.stats()["retries"] >= served["errors"] + served["hangs"]
    assert d.stats()["errors"] == {}


async def test_malformed_output_is_reasked_then_dead_lettered(sim: SimulatorProcess) -> None:
    sim.configure(malformed_rate=0.3)
    d = Dispatcher.from_spec(job(sim, max_reasks=2), env=KEYS)
    try:
        out = await d.complete_many(requests(60, json_schema=SCHEMA))
        ok = [c for c in out if isinstance(c, Completion)]
        assert len(ok) >= 50 and d.stats()["reasks"] > 0
        assert all(set(c.parsed) == {"city", "rank"} for c in ok)
        sim.configure(malformed_rate=1.0)
        out = await d.complete_many(requests(5, json_schema=SCHEMA))
    finally:
        await d.aclose()
    assert all(isinstance(e, MalformedOutput) for e in out)
    assert all(e.attempts == 3 and "after 2 re-asks" in str(e) for e in out)  # type: ignore[union-attr]


async def test_sdk_provider_through_the_dispatcher(sim: SimulatorProcess) -> None:
    sim.configure(rpm=600)
    d = Dispatcher.from_spec(job(sim, client="sdk", rpm=600), env=KEYS)
    try:
        out = await d.complete_many(requests(40, json_schema=SCHEMA))
    finally:
        await d.aclose()
    assert all(isinstance(c, Completion) and c.parsed is not None for c in out)
    assert {c.key_alias for c in out} == {"key0", "key1", "key2", "key3"}  # type: ignore[union-attr]


async def test_no_key_in_logs_errors_or_reprs(
    sim: SimulatorProcess, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.configure(rpm=1200, error_rate=0.2, malformed_rate=0.2)
    sim.set_keys({KEYS["SYNTH_TEST_KEY_0"]: {"revoked": True}, KEYS["SYNTH_TEST_KEY_1"]: {"rpm": 60}})
    d = Dispatcher.from_spec(job(sim, max_retries=1, max_reasks=0), env=KEYS)
    try:
        out = await d.complete_many(requests(40, json_schema=SCHEMA))
        sim.set_keys({k: {"revoked": True} for k in KEYS.values()})
        out += await d.complete_many(requests(8))
    finally:
        await d.aclose()
    errors = [o for o in out if not isinstance(o, Completion)]
    assert any(type(e).__name__ == "NoKeysLeft" for e in errors)
    text = "\n".join(
        [
            caplog.text,
            capsys.readouterr().out,
            capsys.readouterr().err,
            repr(d),
            json.dumps(d.stats()),
            *(str(e) + repr(e) + repr(e.__dict__) + repr(e.__cause__) for e in errors),
            *(o.model_dump_json() + repr(o) for o in out if isinstance(o, Completion)),
        ]
    )
    assert leaks(text) == []
    assert "key0" in text  # keys are named by alias

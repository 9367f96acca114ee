"""The dispatcher's logic against small providers of our own, on a virtual clock."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from synth import fakegen
from synth.errors import (
    AuthError,
    BadRequest,
    BudgetExceeded,
    JobStopped,
    MalformedOutput,
    NoKeysLeft,
    ProviderError,
    RateLimited,
    Transient,
)
from synth.generators.base import LLM
from synth.providers.base import ApiKey
from synth.providers.clock import FakeClock
from synth.providers.dispatch import Dispatcher
from synth.providers.limits import prompt_tokens
from synth.providers.pricing import cost, price_for
from synth.records import ChatMessage, Completion, EmbeddingRequest, Embeddings, Request, Usage
from synth.spec import JobSpec

SECRETS = {f"K{i}": f"sk-test-secret-{i}-abcdefgh" for i in range(1, 5)}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

Script = Callable[[Request, "ApiKey | None", int], Any]


class ScriptedProvider:
    """A Provider whose answers come from ``script(request, key, call_number)``: a string (the
    answer text), an exception to raise, or an awaitable that never finishes."""

    def __init__(
        self, kind: str, model: str, clock: FakeClock, script: Script | None = None, latency: float = 0.05
    ) -> None:
        self.kind, self.model = kind, model
        self.clock = clock
        self.script = script or (lambda req, key, n: '{"n": 1}')
        self.latency = latency
        self.calls: list[tuple[Request, str | None, float]] = []
        self.closed = False

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        self.calls.append((request, key.alias if key else None, self.clock.now()))
        await self.clock.sleep(self.latency)
        out = self.script(request, key, len(self.calls))
        if isinstance(out, BaseException):
            raise out
        if out == "hang":
            await asyncio.Event().wait()
        max_out = request.max_tokens or 50
        return Completion(
            request_id=request.id,
            text=out,
            provider=self.kind,
            model=self.model,
            usage=Usage(
                prompt_tokens=prompt_tokens(request.messages),
                completion_tokens=max_out,
                total_tokens=prompt_tokens(request.messages) + max_out,
            ),
        )

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        self.calls.append((Request(id="e", messages=[]), key.alias if key else None, self.clock.now()))
        return Embeddings(vectors=[[1.0, 0.0] for _ in request.texts], usage=Usage(prompt_tokens=3, total_tokens=3))

    async def aclose(self) -> None:
        self.closed = True


def job(providers: list[dict[str, Any]], **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "t", "count": 1, "generator": {"kind": "structured"}, "providers": providers, **extra}
    )


def provider(name: str, keys: int = 1, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": kw.pop("model", "openai:gpt-4o-mini"),
        "keys": [{"env": f"K{i}", "alias": f"{name}-k{i}"} for i in range(1, keys + 1)],
        **kw,
    }


def build(
    spec: JobSpec, scripts: dict[str, Script] | None = None, latency: float = 0.05, **kw: Any
) -> tuple[Dispatcher, dict[str, ScriptedProvider], FakeClock]:
    clock = FakeClock()
    made: dict[str, ScriptedProvider] = {}

    def factory(p: Any) -> ScriptedProvider:
        kind, _, model = p.model.partition(":")
        made[p.route] = ScriptedProvider(kind, model, clock, (scripts or {}).get(p.route), latency)
        return made[p.route]

    d = Dispatcher.from_spec(spec, clock=clock, provider_factory=factory, env=SECRETS, rng=random.Random(0), **kw)
    return d, made, clock


def req(i: int = 0, **kw: Any) -> Request:
    return Request(id=f"r{i}", messages=[ChatMessage(role="user", content=f"say something {i}")], **kw)


# ---------------------------------------------------------------- the basics


def test_prompt_tokens_agree_with_the_simulator_count() -> None:
    msgs = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="x" * 37),
        ChatMessage(role="assistant", content=None),
    ]
    assert prompt_tokens(msgs) == fakegen.prompt_tokens([m.model_dump() for m in msgs])


async def test_complete_sets_attempts_latency_cost_and_key_alias() -> None:
    d, made, clock = build(job([provider("main", params={"temperature": 0.3, "max_tokens": 40})]))
    assert isinstance(d, LLM)
    comp = await d.complete(req(1))
    sent, alias, _ = made["main"].calls[0]
    assert (sent.temperature, sent.max_tokens) == (0.3, 40)  # provider params fill unset fields
    assert comp.key_alias == "main-k1" == alias and comp.attempts == 1
    assert comp.latency_ms == pytest.approx(50.0)
    assert comp.cost_usd == pytest.approx(cost(comp.usage, price_for("openai:gpt-4o-mini")))
    assert comp.cost_usd > 0
    await d.complete(req(2, temperature=0.9))
    assert made["main"].calls[1][0].temperature == 0.9  # the request's own value wins
    s = d.stats()
    json.dumps(s)
    assert (s["requests"], s["successes"], s["providers"]["main"]["keys"]["main-k1"]["requests"]) == (2, 2, 2)
    await d.aclose()
    assert made["main"].closed


async def test_batch_runs_at_the_sum_of_key_limits() -> None:
    d, made, clock = build(job([provider("main", keys=3, rpm=60, tpm=10**6)]))
    out = await d.complete_many([req(i) for i in range(30)])
    assert all(isinstance(c, Completion) for c in out)
    assert [c.request_id for c in out] == [f"r{i}" for i in range(30)]  # type: ignore[union-attr]
    starts = sorted(t for _, _, t in made["main"].calls)
    assert starts == [float(i // 3) for i in range(30)]  # 3 per second, one per key
    assert Counter(a for _, a, _ in made["main"].calls) == {"main-k1": 10, "main-k2": 10, "main-k3": 10}


# ---------------------------------------------------------------- retries


async def test_429_cools_the_key_and_retries_at_once_on_another() -> None:
    def script(r: Request, key: ApiKey | None, n: int) -> Any:
        if n == 1:
            return RateLimited("slow down", retry_after=5.0, key_alias=key.alias if key else None)
        return '{"n": 1}'

    d, made, clock = build(job([provider("main", keys=2)]), {"main": script})
    comp = await d.complete(req())
    calls = made["main"].calls
    assert [a for _, a, _ in calls] == ["main-k1", "main-k2"] and calls[1][2] == pytest.approx(0.05)
    assert comp.attempts == 2 and comp.key_alias == "main-k2"
    s = d.stats()
    assert (s["rate_limited"], s["retries"]) == (1, 1)
    # cooled at t=0.05 for 5 s; now is 0.1
    assert s["providers"]["main"]["keys"]["main-k1"]["cooling_s"] == pytest.approx(0.05 + 5.0 - 0.1)
    await d.complete(req(2))  # the cooling key is skipped
    assert calls[2][1] == "main-k2"


async def test_429_on_the_only_key_waits_for_retry_after() -> None:
    script = lambda r, k, n: RateLimited("slow", retry_after=2.0) if n == 1 else '{"n": 1}'  # noqa: E731
    d, made, clock = build(job([provider("main")]), {"main": script})
    await d.complete(req())
    assert made["main"].calls[1][2] == pytest.approx(2.05)


async def test_transient_failures_back_off_and_succeed() -> None:
    script = lambda r, k, n: Transient("HTTP 503", status=503) if n <= 2 else '{"n": 1}'  # noqa: E731
    d, made, clock = build(job([provider("main")]), {"main": script})
    comp = await d.complete(req())
    assert comp.attempts == 3 and d.stats()["retries"] == 2
    starts = [t for _, _, t in made["main"].calls]
    assert starts[1] > starts[0] + 0.05 and starts[2] > starts[1] + 0.05  # backed off in between


async def test_retries_are_bounded() -> None:
    # a provider answering no one is retried with backoff for engine.max_outage_s, then the job stops
    # (max_retries bounds a request failing while others are answered: tests/unit/test_retryable.py)
    d, made, clock = build(
        job([provider("main", max_retries=3)], engine={"max_outage_s": 60}),
        {"main": lambda r, k, n: Transient("HTTP 500", status=500)},
    )
    with pytest.raises(JobStopped, match="failed every call for 60"):
        await d.complete(req())
    assert 60 <= clock.now() < 61 and 4 < len(made["main"].calls) < 30
    assert d.stats()["providers"]["main"]["errors"] == {"transient": 1}


async def test_bad_request_is_not_retried() -> None:
    d, made, clock = build(job([provider("main")]), {"main": lambda r, k, n: BadRequest("HTTP 400", status=400)})
    with pytest.raises(BadRequest):
        await d.complete(req())
    assert len(made["main"].calls) == 1


async def test_hang_times_out_and_is_retried() -> None:
    script = lambda r, k, n: "hang" if n == 1 else '{"n": 1}'  # noqa: E731
    d, made, clock = build(job([provider("main", timeout_s=0.02, max_retries=2)]), {"main": script})
    comp = await d.complete(req())
    assert comp.attempts == 2 and d.stats()["retries"] == 1


# ---------------------------------------------------------------- keys


async def test_revoked_key_is_disabled_and_another_serves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="synth.providers")

    def script(r: Request, key: ApiKey | None, n: int) -> Any:
        if key and key.alias == "main-k1":
            return AuthError("main-k1 was rejected (HTTP 401)", status=401, key_alias=key.alias)
        return '{"n": 1}'

    d, made, clock = build(job([provider("main", keys=2)]), {"main": script})
    out = await d.complete_many([req(i) for i in range(5)])
    assert all(isinstance(c, Completion) and c.key_alias == "main-k2" for c in out)
    s = d.stats()
    assert s["providers"]["main"]["disabled_keys"] == ["main-k1"]
    text = caplog.text + json.dumps(s) + repr(d) + repr(d.targets["main"].pool.slots)
    assert "main-k1 disabled" in caplog.text
    assert not any(secret in text for secret in SECRETS.values())


async def test_all_keys_revoked_raises_no_keys_left() -> None:
    script = lambda r, k, n: AuthError("rejected", status=401)  # noqa: E731
    d, made, clock = build(job([provider("main", keys=3)]), {"main": script})
    with pytest.raises(NoKeysLeft, match="all 3 keys of provider main are disabled .* main-k1, main-k2, main-k3"):
        await d.complete(req())
    assert len(made["main"].calls) == 3
    with pytest.raises(NoKeysLeft):  # and at once for the next request
        await d.complete(req(2))
    assert len(made["main"].calls) == 3


async def test_slots_restrict_the_keys_of_this_process() -> None:
    spec = job([provider("main", keys=4, rpm=60)])
    d, made, clock = build(spec, slots=[("main", 1, 1.0), ("main", 3, 0.5)])
    assert [s.alias for s in d.targets["main"].pool.slots] == ["main-k2", "main-k4"]
    assert d.targets["main"].pool.slots[1].limiter.rpm.rate == pytest.approx(0.5)  # type: ignore[union-attr]
    with pytest.raises(Exception, match="names no key"):
        build(spec, slots=[("main", 9, 1.0)])


# ---------------------------------------------------------------- structured output


async def test_invalid_output_is_reasked_until_valid() -> None:
    answers = ["not json", '{"n": "three"}', '{"n": 3}']
    d, made, clock = build(job([provider("main", max_reasks=2)]), {"main": lambda r, k, n: answers[n - 1]})
    comp = await d.complete(req(json_schema=SCHEMA, seed=7))
    assert comp.parsed == {"n": 3} and comp.attempts == 3
    sent = [r for r, _, _ in made["main"].calls]
    assert [r.seed for r in sent] == [7, 8, 9]  # a bumped seed makes a deterministic model answer anew
    last = sent[2].messages
    assert len(last) == 5 and last[1].content == "not json" and last[3].content == '{"n": "three"}'
    assert "JSON Schema" in (last[4].content or "") and "n" in (last[4].content or "")
    assert d.stats()["reasks"] == 2
    # usage and cost add up every call made for the request
    assert comp.usage.total_tokens == sum(prompt_tokens(r.messages) + 50 for r in sent)


async def test_reasks_end_in_malformed_output() -> None:
    d, made, clock = build(job([provider("main", max_reasks=2)]), {"main": lambda r, k, n: '{"m": 1}'})
    with pytest.raises(MalformedOutput, match="after 2 re-asks") as e:
        await d.complete(req(json_schema=SCHEMA))
    assert len(made["main"].calls) == 3 and e.value.raw == '{"m": 1}'


async def test_provider_side_malformed_output_is_reasked() -> None:
    script = lambda r, k, n: MalformedOutput("not JSON", raw="{oops") if n == 1 else '{"n": 2}'  # noqa: E731
    d, made, clock = build(job([provider("main")]), {"main": script})
    comp = await d.complete(req(json_schema=SCHEMA))
    assert comp.parsed == {"n": 2} and made["main"].calls[1][0].messages[1].content == "{oops"


async def test_invalid_schema_fails_before_any_call() -> None:
    d, made, clock = build(job([provider("main")]))
    with pytest.raises(BadRequest, match="not a valid JSON Schema"):
        await d.complete(req(json_schema={"type": "nonsense"}))
    assert made["main"].calls == []


# ---------------------------------------------------------------- routing


async def test_fallback_to_the_next_provider() -> None:
    spec = job([provider("a"), provider("b", model="openai:gpt-4o")], routes={"main": ["a", "b"]})
    d, made, clock = build(spec, {"a": lambda r, k, n: BadRequest("HTTP 400 from a", status=400)})
    comp = await d.complete(req(model="main"))
    assert comp.model == "gpt-4o" and d.stats()["fallbacks"] == 1
    assert len(made["a"].calls) == 1 and len(made["b"].calls) == 1


async def test_fallback_when_a_provider_has_no_keys_left() -> None:
    spec = job([provider("a", keys=2), provider("b", model="openai:gpt-4o")], routes={"main": ["a", "b"]})
    d, made, clock = build(spec, {"a": lambda r, k, n: AuthError("rejected", status=401)})
    comp = await d.complete(req(model="main"))
    assert comp.model == "gpt-4o" and len(made["a"].calls) == 2
    assert d.stats()["errors"] == {"no_keys_left": 1}


async def test_all_providers_fail_raises_the_last_error() -> None:
    spec = job([provider("a"), provider("b", model="openai:gpt-4o", max_retries=0)], routes={"main": ["a", "b"]})
    d, made, clock = build(
        spec, {"a": lambda r, k, n: BadRequest("from a"), "b": lambda r, k, n: Transient("from b", status=502)}
    )
    with pytest.raises(Transient, match="from b"):
        await d.complete(req(model="main"))


async def test_routes_by_name_default_and_raw_model_string() -> None:
    spec = job([provider("a"), provider("b", model="openai:gpt-4o")])
    d, made, clock = build(spec)
    assert (await d.complete(req())).model == "gpt-4o-mini"  # 'default' -> first provider
    assert (await d.complete(req(model="b"))).model == "gpt-4o"
    assert (await d.complete(req(model="openai:gpt-4o"))).model == "gpt-4o"
    with pytest.raises(BadRequest, match="neither a route nor a provider"):
        await d.complete(req(model="nope"))


# ---------------------------------------------------------------- budget


async def test_budget_stops_spending_at_max_usd_with_requests_in_flight() -> None:
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
    spec = job([provider("main", keys=4, price=price)], budget={"max_usd": 1.0})
    d, made, clock = build(spec)
    one = (prompt_tokens(req(0).messages) * 1000 + 50 * 2000) / 1e6  # every answer uses all of max_tokens
    out = await d.complete_many([req(i, max_tokens=50) for i in range(100)])
    ok = [c for c in out if isinstance(c, Completion)]
    refused = [c for c in out if isinstance(c, BudgetExceeded)]
    assert len(ok) == int(1.0 // one) and len(ok) + len(refused) == 100
    spent = sum(c.cost_usd for c in ok)
    assert spent <= 1.0 and d.stats()["budget"]["spent_usd"] == pytest.approx(spent)
    assert "raise budget.max_usd" in str(refused[0])
    assert len(made["main"].calls) == len(ok)  # refused requests never reached the provider


@pytest.mark.parametrize("keys", [1, 4])
async def test_budget_waits_for_calls_out_to_settle_and_ends_close_to_the_budget(keys: int) -> None:
    """Each key keeps one call out, holding its worst case; the answers use half of it. Requests
    queued for a key hold nothing, and a call that does not fit waits for the calls out to settle
    rather than failing, so spending ends within one answer of the budget."""
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
    spec = job([provider("main", keys=keys, price=price, max_concurrency=1)], budget={"max_usd": 1.0})
    d, made, clock = build(spec)

    def half(r, k, n):
        return Completion(
            request_id=r.id, text="{}", usage=Usage(prompt_tokens=prompt_tokens(r.messages), completion_tokens=25)
        )

    made["main"].complete = _answering(made["main"], half)  # type: ignore[method-assign]
    p = prompt_tokens(req(0).messages)
    reserve, actual = (p * 1000 + 50 * 2000) / 1e6, (p * 1000 + 25 * 2000) / 1e6
    out = await d.complete_many([req(i, max_tokens=50) for i in range(100)])  # most wait in the keys' queue
    ok = [c for c in out if isinstance(c, Completion)]
    spent = sum(c.cost_usd for c in ok)
    assert spent <= 1.0 and 1.0 - spent < reserve  # not one more worst case would have fitted
    assert len(ok) == max(k for k in range(1, 100) if (k - 1) * actual + reserve <= 1.0) > int(1.0 // reserve)
    assert all(isinstance(c, BudgetExceeded) for c in out if not isinstance(c, Completion))


def _answering(p: ScriptedProvider, make: Callable[..., Completion]) -> Callable[..., Any]:
    async def complete(request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        p.calls.append((request, key.alias if key else None, p.clock.now()))
        await p.clock.sleep(p.latency)
        return make(request, key, len(p.calls))

    return complete


async def test_budget_max_tokens() -> None:
    spec = job([provider("main")], budget={"max_tokens": 500})
    d, made, clock = build(spec)
    out = await d.complete_many([req(i, max_tokens=100) for i in range(10)])
    used = sum(c.usage.total_tokens for c in out if isinstance(c, Completion))
    assert 0 < used <= 500 and any(isinstance(c, BudgetExceeded) for c in out)


def test_budget_needs_a_price() -> None:
    spec = job(
        [provider("main", model="compat:my-local-model", base_url="http://127.0.0.1:1/v1")], budget={"max_usd": 1.0}
    )
    with pytest.raises(Exception, match="no price is known for compat:my-local-model"):
        build(spec)


# ---------------------------------------------------------------- the rest


async def test_embed_uses_a_key_and_prices() -> None:
    d, made, clock = build(job([provider("main", model="openai:text-embedding-3-small")]))
    out = await d.embed(EmbeddingRequest(texts=["a", "b"]))
    assert len(out.vectors) == 2 and out.key_alias == "main-k1"


async def test_complete_many_returns_errors_in_place() -> None:
    script = lambda r, k, n: BadRequest("no") if r.id == "r1" else '{"n": 1}'  # noqa: E731
    d, made, clock = build(job([provider("main")]), {"main": script})
    out = await d.complete_many([req(0), req(1), req(2)])
    assert [type(o) for o in out] == [Completion, BadRequest, Completion]
    assert isinstance(out[1], ProviderError)


# ---------------------------------------------------------------- the retry policy itself


def test_backoff_is_full_jitter_within_bounds() -> None:
    from synth.providers.retry import RetryPolicy, backoff_delay, retry_delay, should_retry

    rng = random.Random(1)
    for retry in range(12):
        ceiling = min(30.0, 0.5 * 2**retry)
        draws = [backoff_delay(retry, rng=rng) for _ in range(200)]
        assert all(0 <= x <= ceiling for x in draws) and max(draws) > ceiling * 0.8
    policy = RetryPolicy(max_retries=2)
    assert retry_delay(RateLimited("x", retry_after=7.5), 0, policy) == 7.5  # retry-after wins, even above cap
    assert retry_delay(RateLimited("x", retry_after=90), 0, policy) == 90
    assert 0 <= retry_delay(RateLimited("x"), 3, policy, rng) <= 4.0
    assert should_retry(Transient("x"), 1, policy) and not should_retry(Transient("x"), 2, policy)
    assert should_retry(RateLimited("x"), 0, policy)
    for e in (BadRequest("x"), AuthError("x"), MalformedOutput("x"), NoKeysLeft("x"), ValueError("x")):
        assert not should_retry(e, 0, policy)

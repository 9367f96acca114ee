"""The real providers (openai SDK, the wire client, google-genai) against the LLM API simulator:
content, structured output, multi-turn chats, tools, embeddings, and every failure mapped to our
errors without leaking a key."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from synth import fakegen
from synth.errors import AuthError, ConfigError, MalformedOutput, ProviderError, RateLimited, Transient
from synth.providers.base import ApiKey, Provider
from synth.providers.clients.gemini import GeminiProvider
from synth.providers.clients.headers import parse_duration, parse_ratelimit, parse_retry_after
from synth.providers.clients.openai import OpenAIProvider
from synth.providers.clients.sim import SimProvider
from synth.providers.clients.wire import WireProvider
from synth.providers.factory import check_reachable, create_provider
from synth.records import ChatMessage, EmbeddingRequest, Request
from synth.spec import ProviderSpec
from tests.support.simulator import SimulatorProcess

SECRET = "sk-test-5ecr3t-DO-NOT-LEAK-7f9a2c"
KEY = ApiKey("main", SECRET)
CLIENTS = ("sdk", "wire", "gemini")


@pytest.fixture(scope="module")
def sim():
    proc = SimulatorProcess().start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest):
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").restore()


def make(client: str, url: str) -> Provider:
    if client == "sdk":
        return OpenAIProvider("openai", "gpt-4o-mini", base_url=url + "/v1")
    if client == "wire":
        return WireProvider("openai", "gpt-4o-mini", base_url=url + "/v1")
    return GeminiProvider("gemini-2.5-flash", base_url=url)


@pytest.fixture(params=CLIENTS)
async def provider(request: pytest.FixtureRequest, sim: SimulatorProcess):
    p = make(request.param, sim.url)
    yield p
    await p.aclose()


class Priority(str, Enum):
    low = "low"
    high = "high"


class Step(BaseModel):
    title: str
    minutes: int


class Plan(BaseModel):
    goal: str
    priority: Priority
    steps: list[Step]
    owner: str | None = None


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def req(*messages: ChatMessage, **kw: Any) -> Request:
    return Request(id=kw.pop("id", "r-1"), messages=list(messages) or [user("Say something.")], **kw)


# ------------------------------------------------------------------------------------ answers


async def test_text(provider: Provider) -> None:
    c = await provider.complete(
        req(ChatMessage(role="system", content="Be brief."), user("Hello"), seed=1), KEY, timeout=10
    )
    assert c.text and c.parsed is None and c.tool_calls is None
    assert c.finish_reason == "stop"
    assert c.provider == provider.kind and c.key_alias == "main" and c.request_id == "r-1"
    assert c.model in ("gpt-4o-mini", "gemini-2.5-flash")
    assert c.usage.completion_tokens == fakegen.estimate_tokens(c.text)
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens > 0
    assert c.latency_ms > 0


async def test_structured_nested_model(provider: Provider) -> None:
    schema = Plan.model_json_schema()
    seen_priorities = set()
    for seed in range(6):
        c = await provider.complete(
            req(user("Plan my week."), json_schema=schema, schema_name="plan", seed=seed), KEY, timeout=10
        )
        plan = Plan.model_validate(c.parsed)
        jsonschema.validate(c.parsed, schema)
        assert json.loads(c.text or "") == c.parsed
        seen_priorities.add(plan.priority)
    assert len(seen_priorities) == 2  # the enum really varies: the schema reached the server


async def test_max_tokens_cuts_the_answer(provider: Provider) -> None:
    c = await provider.complete(req(user("Tell me a long story."), max_tokens=4, seed=2), KEY, timeout=10)
    assert c.finish_reason == "length"
    assert c.usage.completion_tokens == 4 and len(c.text or "") <= 16


async def test_multi_turn_chat(provider: Provider) -> None:
    history = [
        ChatMessage(role="system", content="You are a travel agent."),
        user("I want to go somewhere warm in March."),
        ChatMessage(role="assistant", content="Consider the Canary Islands or southern Spain."),
        user("Which one is cheaper for a family of four?"),
        ChatMessage(role="assistant", content="The Canary Islands, usually, outside school holidays."),
        user("Then plan five days there."),
    ]
    one = await provider.complete(req(history[-1], seed=5), KEY, timeout=10)
    full = await provider.complete(req(*history, seed=5), KEY, timeout=10)
    assert full.text and full.text != one.text
    # every turn was sent: the server counted all of them
    extra = sum(fakegen.estimate_tokens(m.content or "") for m in history[:-1])
    assert full.usage.prompt_tokens >= one.usage.prompt_tokens + extra


async def test_embeddings(provider: Provider) -> None:
    texts = ["a red sensor", "a red sensor network", "budget review"]
    e = await provider.embed(EmbeddingRequest(texts=texts), KEY, timeout=10)
    assert len(e.vectors) == 3
    for v, t in zip(e.vectors, texts):
        assert v == pytest.approx(fakegen.fake_embedding(t, 64), abs=1e-6)
    assert e.usage.prompt_tokens > 0 and e.key_alias == "main" and e.provider == provider.kind


WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    }
]


async def _tool_round_trip(provider: Provider) -> None:
    calls = []
    for seed in range(8):
        c = await provider.complete(req(user("Weather in Oslo?"), tools=WEATHER, seed=seed), KEY, timeout=10)
        if c.tool_calls:
            calls.append(c)
    assert calls, "the simulator never chose the tool in 8 tries"
    first = calls[0]
    (call,) = first.tool_calls or []
    assert call.name == "get_weather" and first.finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.arguments), WEATHER[0]["function"]["parameters"])
    # the tool's result goes back; the model answers in words
    follow = req(
        user("Weather in Oslo?"),
        first.message(),
        ChatMessage(role="tool", tool_call_id=call.id, content='{"temp": 3}'),
        tools=WEATHER,
        seed=1,
    )
    answer = await provider.complete(follow, KEY, timeout=10)
    assert answer.tool_calls is None and answer.text


@pytest.mark.parametrize("client", ["sdk", "wire"])
async def test_tool_calls(client: str, sim: SimulatorProcess) -> None:
    p = make(client, sim.url)
    try:
        await _tool_round_trip(p)
    finally:
        await p.aclose()


async def test_tool_calls_gemini(sim: SimulatorProcess) -> None:
    p = make("gemini", sim.url)
    try:
        await _tool_round_trip(p)
    finally:
        await p.aclose()


@pytest.mark.parametrize("client", ["sdk", "wire"])
async def test_sim_provider_answers_as_the_simulator_does(client: str, sim: SimulatorProcess) -> None:
    """``sim:<model>`` in process and the simulator serving ``<model>`` give the same seeded answers."""
    remote, local = make(client, sim.url), SimProvider("gpt-4o-mini")
    try:
        for r in (
            req(user("Hello"), seed=3),
            req(user("Plan."), json_schema=Plan.model_json_schema(), seed=4),
            req(user("Weather?"), tools=WEATHER, seed=1),
            req(user("Weather?"), tools=WEATHER, seed=2),
        ):
            a, b = await remote.complete(r, KEY, timeout=10), await local.complete(r, KEY, timeout=10)
            assert (a.text, a.parsed, a.tool_calls, a.finish_reason, a.usage) == (
                b.text,
                b.parsed,
                b.tool_calls,
                b.finish_reason,
                b.usage,
            )
    finally:
        await remote.aclose()


# ------------------------------------------------------------------------------------ failures


async def test_rate_limited_with_retry_after(provider: Provider, sim: SimulatorProcess) -> None:
    sim.set_keys({SECRET: {"rpm": 60}})  # a bucket of one request, refilled each second
    await provider.complete(req(), KEY, timeout=10)
    with pytest.raises(RateLimited) as err:
        await provider.complete(req(), KEY, timeout=10)
    e = err.value
    assert e.retry_after is not None and 0.5 < e.retry_after <= 1.01
    assert e.key_alias == "main" and e.status == 429
    if provider.kind != "gemini":  # Gemini sends no x-ratelimit-* headers
        assert e.limits is not None and e.limits.limit_requests == 60 and e.limits.remaining_requests == 0


async def test_revoked_key_is_an_auth_error(provider: Provider, sim: SimulatorProcess) -> None:
    sim.set_keys({SECRET: {"revoked": True}})
    with pytest.raises(AuthError) as err:
        await provider.complete(req(), KEY, timeout=10)
    assert err.value.status in (401, 403) and err.value.key_alias == "main"
    assert "'main'" in str(err.value) and "replace" in str(err.value)


async def test_unknown_key_is_an_auth_error(provider: Provider, sim: SimulatorProcess) -> None:
    sim.configure(keys=["sk-some-other-key"])  # Gemini answers 400 API_KEY_INVALID here
    with pytest.raises(AuthError):
        await provider.complete(req(), KEY, timeout=10)


async def test_server_error_is_transient(provider: Provider, sim: SimulatorProcess) -> None:
    sim.configure(error_rate=1.0)
    with pytest.raises(Transient) as err:
        await provider.complete(req(), KEY, timeout=10)
    assert err.value.status in (500, 503) and err.value.retryable


async def test_hang_is_transient_via_timeout(provider: Provider, sim: SimulatorProcess) -> None:
    await provider.complete(req(), KEY, timeout=10)  # the client now exists with a longer timeout
    sim.configure(hang_rate=1.0, hang_s=30)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Transient, match="timeout"):
        await provider.complete(req(), KEY, timeout=0.5)
    assert loop.time() - t0 < 5  # our timeout, not the server's


async def test_malformed_structured_output(provider: Provider, sim: SimulatorProcess) -> None:
    sim.configure(malformed_rate=1.0)
    schema = Plan.model_json_schema()
    outcomes = []
    for seed in range(8):
        try:
            c = await provider.complete(req(user("Plan."), json_schema=schema, seed=seed), KEY, timeout=10)
        except MalformedOutput as e:
            assert e.raw and e.key_alias == "main"
            with pytest.raises(ValueError):
                json.loads(e.raw)
            outcomes.append("unparseable")
        else:  # valid JSON that breaks the schema: the dispatcher's validation catches it
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(c.parsed, schema)
            outcomes.append("schema")
    assert "unparseable" in outcomes


@pytest.mark.parametrize("client", CLIENTS)
async def test_refused_connection_names_the_url(client: str) -> None:
    port = _closed_port()
    p = make(client, f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(Transient) as err:
            await p.complete(req(), KEY, timeout=5)
    finally:
        await p.aclose()
    assert f"127.0.0.1:{port}" in str(err.value) and "refused" in str(err.value)


async def test_secret_never_leaks(
    sim: SimulatorProcess, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SDKs included
    texts: list[str] = []
    scenarios: list[tuple[Callable[[], Any], Callable[[], Any]]] = [
        (lambda: sim.set_keys({SECRET: {"revoked": True}}), lambda: sim.set_keys({SECRET: None})),
        (lambda: sim.set_keys({SECRET: {"rpm": 60}}), lambda: sim.set_keys({SECRET: None})),
        (lambda: sim.configure(error_rate=1.0), lambda: sim.configure(error_rate=0.0)),
        (lambda: sim.configure(keys=["other"]), lambda: sim.configure(keys=None)),
    ]
    for client in CLIENTS:
        p = make(client, sim.url)
        texts.append(repr(p))
        c = await p.complete(req(), KEY, timeout=10)
        texts += [repr(c), c.model_dump_json(), repr(KEY), str(KEY)]
        for setup, undo in scenarios:
            setup()
            try:
                for _ in range(2):
                    await p.complete(req(), KEY, timeout=10)
            except ProviderError as e:
                texts += [str(e), repr(e), "".join(traceback.format_exception(e)), repr(e.__dict__)]
                cause: BaseException | None = e.__cause__
                while cause is not None:  # the SDKs' own errors, kept as causes
                    texts += [str(cause), repr(cause)]
                    cause = cause.__cause__ or cause.__context__
            undo()
        await p.aclose()
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text, *(str(r.args) for r in caplog.records)]
    assert len(texts) > 30
    assert not [t for t in texts if SECRET in t]
    assert not [t for t in texts if SECRET[3:15] in t]  # nor a recognisable piece of it


async def test_wire_transport_errors_name_no_secret() -> None:
    """A refused connection and a key a header cannot carry: clear errors, no key in any cause."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    p = WireProvider("compat", "m", base_url=url)
    bad = ApiKey("broken", SECRET + "\n")
    try:
        with pytest.raises(Transient) as refused:
            await p.complete(req(), KEY, timeout=5)
        with pytest.raises(AuthError) as unusable:
            await p.complete(req(), bad, timeout=5)
    finally:
        await p.aclose()
    assert "refused the connection" in str(refused.value)
    assert "'broken'" in str(unusable.value) and "line break" in str(unusable.value)
    assert not unusable.value.retryable
    texts = []
    for e in (refused.value, unusable.value):
        texts += [str(e), repr(e), "".join(traceback.format_exception(e))]
        cause: BaseException | None = e.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause), repr(getattr(cause, "details", None))]
            cause = cause.__cause__ or cause.__context__
    assert not [t for t in texts if SECRET[3:15] in t]


# ------------------------------------------------------------------------------------ factory


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_factory_picks_the_client() -> None:
    assert isinstance(create_provider(ProviderSpec(model="openai:gpt-4o-mini")), WireProvider)
    assert isinstance(create_provider(ProviderSpec(model="openai:gpt-4o-mini", client="wire")), WireProvider)
    sdk = create_provider(ProviderSpec(model="openrouter:openai/gpt-4o", client="sdk"))
    assert isinstance(sdk, OpenAIProvider) and sdk.base_url == "https://openrouter.ai/api/v1"
    g = create_provider(ProviderSpec(model="gemini:gemini-2.5-flash", base_url="http://127.0.0.1:9/v1beta"))
    assert isinstance(g, GeminiProvider) and (g.kind, g.model, g.base_url) == (
        "gemini",
        "gemini-2.5-flash",
        "http://127.0.0.1:9",
    )
    assert isinstance(create_provider(ProviderSpec(model="sim:default")), SimProvider)
    compat = create_provider(ProviderSpec(model="compat:llama3", base_url="http://127.0.0.1:8000/v1/"))
    assert isinstance(compat, WireProvider) and compat.base_url == "http://127.0.0.1:8000/v1"


def test_factory_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs a base_url"):
        create_provider(ProviderSpec(model="compat:llama3"))
    with pytest.raises(ConfigError, match="not valid Gemini options"):
        create_provider(ProviderSpec(model="gemini:gemini-2.5-flash", params={"no_such_option": 1}))


async def test_check_reachable(sim: SimulatorProcess) -> None:
    await check_reachable(sim.openai_url)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(ConfigError) as err:
        await check_reachable(url)
    assert str(err.value) == f"cannot connect to {url}: connection refused; start the server or fix base_url"
    with pytest.raises(ConfigError, match="not an http"):
        await check_reachable("localhost:8000")


# ------------------------------------------------------------------------------------ headers


def test_header_parsing() -> None:
    assert parse_duration("6m0s") == 360 and parse_duration("1.5s") == 1.5 and parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3s") == 3723 and parse_duration("7") == 7 and parse_duration("soon") is None
    info = parse_ratelimit(
        {
            "X-RateLimit-Limit-Requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "2s",
        }
    )
    assert info is not None
    assert (info.limit_requests, info.remaining_requests, info.reset_requests_s) == (500, 499, 0.12)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens_s) == (30000, 29000, 2.0)
    assert parse_ratelimit({"content-type": "application/json"}) is None
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert 50 < (parse_retry_after({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}) or 0)
    assert parse_retry_after({}) is None

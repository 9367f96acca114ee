from __future__ import annotations

import json
import math
from enum import Enum

import jsonschema
import pytest
from pydantic import BaseModel

from synth import fakegen
from synth.errors import BadRequest, MalformedOutput
from synth.providers.base import ApiKey, Provider
from synth.providers.clients.sim import SimProvider
from synth.providers.factory import create_provider
from synth.records import ChatMessage, EmbeddingRequest, Request, ToolCall
from synth.spec import ProviderSpec


class Tier(str, Enum):
    free = "free"
    pro = "pro"


class Address(BaseModel):
    city: str
    zip: str | None = None


class Customer(BaseModel):
    name: str
    tier: Tier
    tags: list[str]
    addresses: list[Address]
    age: int | None = None


SCHEMA = Customer.model_json_schema()
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                "required": ["city", "days"],
                "additionalProperties": False,
            },
        },
    }
]


def ask(text: str = "Write a customer record.", **kw: object) -> Request:
    fields: dict[str, object] = {"id": "job-0001", "messages": [ChatMessage(role="user", content=text)]}
    fields.update(kw)
    return Request.model_validate(fields)


@pytest.fixture
def sim() -> SimProvider:
    return SimProvider("default")


def test_is_a_provider_and_built_by_the_factory() -> None:
    p = create_provider(ProviderSpec(model="sim:gpt-4o-mini"))
    assert isinstance(p, SimProvider) and isinstance(p, Provider)
    assert (p.kind, p.model) == ("sim", "gpt-4o-mini")


async def test_same_request_same_answer(sim: SimProvider) -> None:
    a = await sim.complete(ask(seed=7), None, timeout=1)
    b = await SimProvider("default").complete(ask(seed=7), None, timeout=1)
    assert a.model_dump() == b.model_dump()
    assert a.text and a.finish_reason == "stop" and a.provider == "sim"
    c = await sim.complete(ask(seed=8), None, timeout=1)
    assert c.text != a.text


async def test_without_seed_the_id_varies_the_answer(sim: SimProvider) -> None:
    a = await sim.complete(ask(id="u1"), None, timeout=1)
    b = await sim.complete(ask(id="u2"), None, timeout=1)
    again = await sim.complete(ask(id="u1"), None, timeout=1)
    assert a.text != b.text
    assert again.text == a.text


async def test_structured_output_is_schema_valid(sim: SimProvider) -> None:
    for i in range(40):
        c = await sim.complete(ask(id=f"r{i}", json_schema=SCHEMA, schema_name="customer"), None, timeout=1)
        jsonschema.validate(c.parsed, SCHEMA)
        Customer.model_validate(c.parsed)
        assert json.loads(c.text or "") == c.parsed
        assert c.usage.completion_tokens == fakegen.estimate_tokens(c.text or "")


async def test_token_counts(sim: SimProvider) -> None:
    short = await sim.complete(ask("hi", seed=1), None, timeout=1)
    long = await sim.complete(ask("hi " * 400, seed=1), None, timeout=1)
    assert long.usage.prompt_tokens > short.usage.prompt_tokens + 250
    u = short.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.completion_tokens == fakegen.estimate_tokens(short.text or "")


async def test_tool_calls_when_tools_are_offered(sim: SimProvider) -> None:
    calls = [await sim.complete(ask(seed=s, tools=WEATHER), ApiKey("k1", "secret"), timeout=1) for s in range(20)]
    with_call = [c for c in calls if c.tool_calls]
    assert 3 <= len(with_call) <= 17  # the model sometimes answers in words, as real ones do
    for c in with_call:
        (tc,) = c.tool_calls or []
        assert tc.name == "get_weather" and c.finish_reason == "tool_calls" and c.text is None
        jsonschema.validate(json.loads(tc.arguments), WEATHER[0]["function"]["parameters"])
        assert c.key_alias == "k1"
    # after the tool's result, the model answers in words
    first = with_call[0]
    follow = ask(
        seed=1,
        tools=WEATHER,
        messages=[
            ChatMessage(role="user", content="Weather in Oslo?"),
            first.message(),
            ChatMessage(
                role="tool",
                tool_call_id=(first.tool_calls or [ToolCall(id="x", name="n", arguments="{}")])[0].id,
                content='{"temp": 3}',
            ),
        ],
    )
    answer = await sim.complete(follow, None, timeout=1)
    assert answer.tool_calls is None and answer.text


async def test_max_tokens_cuts_the_answer(sim: SimProvider) -> None:
    full = await sim.complete(ask(seed=3), None, timeout=1)
    assert full.usage.completion_tokens > 5
    cut = await sim.complete(ask(seed=3, max_tokens=5), None, timeout=1)
    assert cut.finish_reason == "length"
    assert cut.usage.completion_tokens == 5
    assert cut.text == (full.text or "")[:20]
    with pytest.raises(MalformedOutput) as err:
        await sim.complete(ask(seed=3, json_schema=SCHEMA, max_tokens=3), None, timeout=1)
    assert "max_tokens" in str(err.value) and err.value.raw


async def test_unusable_schema_is_a_bad_request(sim: SimProvider) -> None:
    with pytest.raises(BadRequest, match="JSON Schema"):
        await sim.complete(
            ask(json_schema={"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}, "required": ["x"]}),
            None,
            timeout=1,
        )


async def test_embeddings(sim: SimProvider) -> None:
    req = EmbeddingRequest(texts=["the red sensor", "the red sensor network", "quarterly budget"])
    e = await sim.embed(req, None, timeout=1)
    assert len(e.vectors) == 3 and all(len(v) == 64 for v in e.vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9) for v in e.vectors)
    assert e.vectors == (await sim.embed(req, None, timeout=1)).vectors
    assert e.usage.prompt_tokens == sum(fakegen.estimate_tokens(t) for t in req.texts)
    wide = await SimProvider("x", params={"embedding_dim": 8}).embed(req, None, timeout=1)
    assert len(wide.vectors[0]) == 8

"""The LLM API simulator against the official openai and google-genai SDKs, over HTTP, in a subprocess."""

from __future__ import annotations

import asyncio
import enum
import json
import math
import re
import subprocess
import sys
import time

import aiohttp
import jsonschema
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import BaseModel, Field, ValidationError

from synth.fakegen import estimate_tokens, fake_embedding, prompt_tokens
from synth.simulator import SimConfig, simulator
from synth.simulator.gemini_wire import to_json_schema
from synth.simulator.limits import Bucket, KeyState, admit, duration, seconds_text
from tests.support.simulator import SimulatorProcess, admin

DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
MESSAGES = [
    {"role": "system", "content": "You write product data."},
    {"role": "user", "content": "Describe a kettle in two sentences."},
]


class Colour(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Part(BaseModel):
    name: str
    colour: Colour
    weight_g: float = Field(ge=0, le=5000)
    note: str | None = None


class Product(BaseModel):
    title: str = Field(min_length=3)
    parts: list[Part] = Field(min_length=1, max_length=4)
    rating: int = Field(ge=1, le=5)
    discontinued: bool


@pytest.fixture(scope="module")
def sim():
    proc = SimulatorProcess().start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def fresh(sim: SimulatorProcess):
    sim.restore()
    yield


def oai(sim: SimulatorProcess, key: str = "sk-test-alpha", **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.openai_url, api_key=key, max_retries=0, **kw)


def gem(sim: SimulatorProcess, key: str = "gm-test-alpha") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=sim.url))


# ------------------------------------------------------------------------------------------ OpenAI


async def test_openai_text_is_deterministic_with_usage(sim: SimulatorProcess) -> None:
    async with oai(sim) as client:
        a = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=1)
        b = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=1)
        c = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=2)
        short = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=1, max_tokens=5)
        many = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=1, n=3)
    text = a.choices[0].message.content
    assert text and text == b.choices[0].message.content != c.choices[0].message.content
    assert a.choices[0].finish_reason == "stop" and a.model == "gpt-4o-mini" and a.id != b.id
    assert a.system_fingerprint and a.created > 0
    assert a.usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert a.usage.completion_tokens == estimate_tokens(text)
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    assert text.startswith(short.choices[0].message.content)
    assert len({ch.message.content for ch in many.choices}) == 3
    assert many.usage.completion_tokens == sum(estimate_tokens(ch.message.content) for ch in many.choices)


async def test_openai_structured_output_parses_into_nested_pydantic(sim: SimulatorProcess) -> None:
    notes = set()
    async with oai(sim) as client:
        for seed in range(12):
            r = await client.chat.completions.parse(
                model="gpt-4o-mini", messages=MESSAGES, seed=seed, response_format=Product
            )
            p = r.choices[0].message.parsed
            assert isinstance(p, Product) and all(isinstance(x.colour, Colour) for x in p.parts)
            notes.update(x.note is None for x in p.parts)
        js = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, response_format={"type": "json_object"}
        )
    assert notes == {True, False}  # the optional field is sometimes set, sometimes not
    assert isinstance(json.loads(js.choices[0].message.content), dict)


async def test_openai_streaming_matches_the_plain_answer(sim: SimulatorProcess) -> None:
    async with oai(sim) as client:
        plain = await client.chat.completions.create(model="m", messages=MESSAGES, seed=3)
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, seed=3, stream=True, stream_options={"include_usage": True}
        )
        pieces, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for ch in chunk.choices:
                pieces.append(ch.delta.content or "")
                finish = ch.finish_reason or finish
    assert len(pieces) > 3 and "".join(pieces) == plain.choices[0].message.content
    assert finish == "stop" and usage is not None and usage.total_tokens == plain.usage.total_tokens


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
        },
    },
]


async def test_openai_tool_calls(sim: SimulatorProcess) -> None:
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    kinds = set()
    async with oai(sim) as client:
        for i in range(10):
            msgs = [{"role": "user", "content": f"question {i}"}]
            r = await client.chat.completions.create(model="m", messages=msgs, tools=TOOLS, tool_choice="required")
            call = r.choices[0].message.tool_calls[0]
            assert r.choices[0].finish_reason == "tool_calls"
            jsonschema.validate(json.loads(call.function.arguments), params[call.function.name])
            auto = await client.chat.completions.create(model="m", messages=msgs, tools=TOOLS)
            kinds.add("tool" if auto.choices[0].message.tool_calls else "text")
        # after a tool answer the model speaks
        history = [
            *msgs,
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        after = await client.chat.completions.create(model="m", messages=history, tools=TOOLS, tool_choice="required")
        named = await client.chat.completions.create(
            model="m", messages=msgs, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}
        )
        stream = await client.chat.completions.create(
            model="m", messages=msgs, tools=TOOLS, tool_choice="required", stream=True
        )
        args = "".join(
            [
                c.choices[0].delta.tool_calls[0].function.arguments or ""
                async for c in stream
                if c.choices and c.choices[0].delta.tool_calls
            ]
        )
    assert kinds == {"tool", "text"}  # auto: about half and half
    assert after.choices[0].message.content and not after.choices[0].message.tool_calls
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    assert isinstance(json.loads(args), dict)


async def test_openai_embeddings_and_models(sim: SimulatorProcess) -> None:
    texts = ["solar panels in winter", "winter solar panel output", "chocolate cake recipe"]
    async with oai(sim) as client:
        r = await client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=32)
        f = await client.embeddings.create(model="text-embedding-3-small", input=texts[0], encoding_format="float")
        models = [m.id async for m in client.models.list()]
    vecs = [d.embedding for d in r.data]
    assert [len(v) for v in vecs] == [32, 32, 32]
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vecs[0], fake_embedding(texts[0], 32)))
    assert f.data[0].embedding == fake_embedding(texts[0], 64)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    assert r.usage.prompt_tokens == sum(estimate_tokens(t) for t in texts)
    assert "gpt-4o-mini" in models


async def test_openai_rate_limit_429_with_real_headers(sim: SimulatorProcess) -> None:
    sim.set_keys({"sk-tight": {"rpm": 60}, "sk-tokens": {"tpm": 600}})  # buckets of 1 request / 10 tokens
    async with oai(sim, "sk-tight") as tight, oai(sim, "sk-other") as other, oai(sim, "sk-tokens") as tok:
        ok = await tight.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as info:
            await tight.chat.completions.create(model="m", messages=MESSAGES)
        await other.chat.completions.create(model="m", messages=MESSAGES)  # other keys are not affected
        await tok.chat.completions.create(model="m", messages=MESSAGES, max_tokens=50)  # big: admitted when full
        with pytest.raises(openai.RateLimitError) as tinfo:
            await tok.chat.completions.create(model="m", messages=MESSAGES, max_tokens=50)
    assert ok.headers["x-ratelimit-limit-requests"] == "60"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    h = info.value.response.headers
    assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
    assert info.value.body["type"] == "requests"
    assert 0 < float(h["retry-after"]) <= 1.0 and 0 < int(h["retry-after-ms"]) <= 1000
    assert h["x-ratelimit-limit-requests"] == "60" and h["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.match(h["x-ratelimit-reset-requests"])
    th = tinfo.value.response.headers
    assert tinfo.value.body["type"] == "tokens" and th["x-ratelimit-limit-tokens"] == "600"
    assert DURATION.match(th["x-ratelimit-reset-tokens"]) and float(th["retry-after"]) > 1.0  # in debt
    stats = sim.stats()
    assert stats["rate_limited"] == 2 and stats["by_status"] == {"200": 3, "429": 2}
    assert not any("sk-tight" in label or "sk-other" in label for label in stats["by_key"])


async def test_rate_limited_requests_recover_after_retry_after(sim: SimulatorProcess) -> None:
    sim.configure(rpm=60, burst_seconds=5)  # one per second, burst of 5
    async with oai(sim) as client:
        results = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(8)), return_exceptions=True
        )
        limited = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(limited) == 3
        await asyncio.sleep(float(limited[0].response.headers["retry-after"]))
        await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_revoked_and_unknown_keys_get_401(sim: SimulatorProcess) -> None:
    sim.configure(revoked=["sk-revoked-1234"])
    sim.set_keys({"sk-override-5678": {"revoked": True}})
    for key in ("sk-revoked-1234", "sk-override-5678"):
        async with oai(sim, key) as client:
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
        assert key not in str(info.value) and "1234" not in str(info.value)
    sim.configure(keys=["sk-only"])
    async with oai(sim, "sk-stranger") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
    async with oai(sim, "sk-only") as client:
        await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_error_rate_gives_5xx(sim: SimulatorProcess) -> None:
    sim.configure(error_rate=1.0)
    async with oai(sim) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code in (500, 503)
    sim.configure(error_rate=0.5, seed=7)
    async with oai(sim) as client:
        results = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(40)), return_exceptions=True
        )
    failed = sum(isinstance(r, openai.InternalServerError) for r in results)
    assert 8 <= failed <= 32 and sim.stats()["errors"] == failed + 1


async def test_malformed_rate_breaks_structured_output(sim: SimulatorProcess) -> None:
    sim.configure(malformed_rate=1.0)
    fmt = {"type": "json_schema", "json_schema": {"name": "product", "schema": Product.model_json_schema()}}
    kinds = set()
    async with oai(sim) as client:
        for seed in range(12):
            r = await client.chat.completions.create(model="m", messages=MESSAGES, seed=seed, response_format=fmt)
            raw = r.choices[0].message.content
            with pytest.raises(ValidationError):
                Product.model_validate_json(raw)
            try:
                json.loads(raw)
                kinds.add("schema-invalid")
            except json.JSONDecodeError:
                kinds.add("invalid json")
        plain = await client.chat.completions.create(model="m", messages=MESSAGES)  # text is left alone
    assert kinds == {"schema-invalid", "invalid json"}
    assert plain.choices[0].finish_reason == "stop"


async def test_hang_until_client_timeout_frees_the_slot(sim: SimulatorProcess) -> None:
    sim.configure(hang_rate=1.0, concurrency=1)
    async with oai(sim, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert sim.stats()["hangs"] == 1
        # the client gave up: the server lets go of the request and its concurrency slot
        deadline = time.monotonic() + 5
        while sim.stats()["in_flight"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert sim.stats()["in_flight"] == 0
        sim.configure(hang_rate=0.0)
        r = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert r.choices[0].message.content


async def test_latency_model_and_concurrency_limit(sim: SimulatorProcess) -> None:
    sim.configure(ttft_ms=300, tpot_ms=0, concurrency=2)
    async with oai(sim) as client:
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(3)), return_exceptions=True
        )
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.3  # the simulated latency was served (a lower bound, not a timing claim)
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(limited) == 1 and "concurrent" in limited[0].message


async def test_bad_requests_get_400(sim: SimulatorProcess) -> None:
    async with oai(sim) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="m", messages=[])
    async with aiohttp.ClientSession() as s:
        async with s.post(
            sim.openai_url + "/chat/completions", data=b"{not json", headers={"Authorization": "Bearer k"}
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
        async with s.post(sim.openai_url + "/chat/completions", json={"messages": MESSAGES}) as r:
            assert r.status == 401  # no key


# ------------------------------------------------------------------------------------------ Gemini


async def test_gemini_text_usage_and_stream(sim: SimulatorProcess) -> None:
    client = gem(sim)
    cfg = types.GenerateContentConfig(system_instruction="You write product data.", temperature=0.3, seed=5)
    r = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Describe a kettle.", config=cfg)
    again = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="Describe a kettle.", config=cfg
    )
    text = r.text
    assert text and text == again.text
    u = r.usage_metadata
    expected_prompt = prompt_tokens(
        [{"role": "system", "content": "You write product data."}, {"role": "user", "content": "Describe a kettle."}]
    )
    assert u.prompt_token_count == expected_prompt and u.candidates_token_count == estimate_tokens(text)
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert r.candidates[0].finish_reason == types.FinishReason.STOP and r.model_version == "gemini-2.5-flash"
    chunks = [
        c
        async for c in await client.aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Describe a kettle.", config=cfg
        )
    ]
    assert len(chunks) > 2 and "".join(c.text or "" for c in chunks) == text
    assert chunks[-1].usage_metadata.total_token_count == u.total_token_count
    short = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="Describe a kettle.", config=types.GenerateContentConfig(max_output_tokens=4)
    )
    assert short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert short.usage_metadata.candidates_token_count == 4


async def test_gemini_structured_output(sim: SimulatorProcess) -> None:
    client = gem(sim)
    for seed in range(6):
        for cfg in (
            types.GenerateContentConfig(response_mime_type="application/json", response_schema=Product, seed=seed),
            types.GenerateContentConfig(
                response_mime_type="application/json", response_json_schema=Product.model_json_schema(), seed=seed
            ),
        ):
            r = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="a product", config=cfg)
            Product.model_validate_json(r.text)
    assert isinstance(r.parsed, dict)


def test_gemini_schema_dialect_normalises() -> None:
    s = to_json_schema(
        {
            "type": "OBJECT",
            "properties": {
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": "1", "maxItems": "2"},
                "n": {"type": "INTEGER", "nullable": True, "minimum": 1},
                "kind": {"type": "STRING", "format": "enum", "enum": ["a", "b"]},
            },
            "required": ["tags", "kind"],
            "propertyOrdering": ["tags", "n", "kind"],
        }
    )
    assert s == {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
            "n": {"type": ["integer", "null"], "minimum": 1},
            "kind": {"type": "string", "enum": ["a", "b"]},
        },
        "required": ["tags", "kind"],
    }


async def test_gemini_tools_embeddings_and_errors(sim: SimulatorProcess) -> None:
    client = gem(sim)
    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]),
    )
    r = await client.aio.models.generate_content(
        model="gemini-2.5-flash",
        contents="weather in Oslo?",
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[weather])],
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")),
        ),
    )
    assert r.function_calls[0].name == "get_weather" and isinstance(r.function_calls[0].args["city"], str)
    e = await client.aio.models.embed_content(
        model="text-embedding-004",
        contents=["a kettle", "a teapot"],
        config=types.EmbedContentConfig(output_dimensionality=16),
    )
    assert [len(x.values) for x in e.embeddings] == [16, 16]
    assert e.embeddings[0].values == pytest.approx(fake_embedding("a kettle", 16))

    sim.set_keys({"gm-tight": {"rpm": 60}, "gm-revoked": {"revoked": True}})
    tight = gem(sim, "gm-tight")
    await tight.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    with pytest.raises(genai_errors.ClientError) as info:
        await tight.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert any("RetryInfo" in d.get("@type", "") for d in info.value.details["error"]["details"])
    with pytest.raises(genai_errors.ClientError) as info:
        await gem(sim, "gm-revoked").aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 403 and "gm-revoked" not in str(info.value)
    sim.configure(error_rate=1.0)
    with pytest.raises(genai_errors.ServerError) as sinfo:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert sinfo.value.code in (500, 503)


# ------------------------------------------------------------------------------------------ admin, CLI, in-process


async def test_stats_count_by_status_and_key(sim: SimulatorProcess) -> None:
    sim.configure(burst_seconds=2)
    sim.set_keys({"sk-counted-key": {"rpm": 60}})  # burst of 2
    async with oai(sim, "sk-counted-key") as client:
        results = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(5)), return_exceptions=True
        )
    ok = [r for r in results if not isinstance(r, Exception)]
    stats = sim.stats()
    ((label, counters),) = stats["by_key"].items()
    assert label.startswith("sk-c") and "counted" not in label
    assert counters["ok"] == len(ok) == 2 and counters["rate_limited"] == 3 and counters["requests"] == 5
    assert stats["prompt_tokens"] == 2 * prompt_tokens(MESSAGES)
    assert stats["completion_tokens"] == sum(r.usage.completion_tokens for r in ok)
    assert stats["uptime_s"] > 0 and "ok_per_s" in stats
    sim.reset()
    assert sim.stats()["requests"] == 0


def test_admin_rejects_bad_config(sim: SimulatorProcess) -> None:
    with pytest.raises(RuntimeError, match="error_rate"):
        sim.configure(error_rate=2)
    with pytest.raises(RuntimeError, match="nonsense"):
        sim.configure(nonsense=1)
    with pytest.raises(RuntimeError, match="404"):
        admin(sim.url, "nope", {})
    assert sim.config()["error_rate"] == 0.0  # nothing was half-applied


def test_cli_prints_url_first_and_validates_options() -> None:
    proc = SimulatorProcess(rpm=5, revoked=["k1", "k2"], latency_ms=10).start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", proc.url)
        cfg = proc.config()
        assert cfg["rpm"] == 5 and cfg["revoked_keys"] == 2 and cfg["latency_ms"] == 10
        assert "k1" not in json.dumps(cfg)
    finally:
        proc.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "synth.simulator", "serve", "--error-rate", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ["error: --error-rate: Input should be less than or equal to 1"]


async def test_in_process_server_and_bucket_math() -> None:
    async with simulator(SimConfig(rpm=120, tpm=60000)) as sim:
        async with aiohttp.ClientSession() as s:
            async with s.get(sim.url + "/v1/models", headers={"Authorization": "Bearer k"}) as r:
                assert r.status == 200
            async with s.post(
                sim.url + "/v1/chat/completions",
                json={"messages": MESSAGES, "max_tokens": 400},
                headers={"Authorization": "Bearer k"},
            ) as r:
                body = await r.json()
                assert r.headers["x-ratelimit-limit-tokens"] == "60000"
                # 1000-token bucket: the prompt stays charged, the unused output reservation came back
                used = body["usage"]["total_tokens"]
                assert body["usage"]["completion_tokens"] < 300
                assert 1000 - used <= int(r.headers["x-ratelimit-remaining-tokens"]) <= 1000 - used + 10
        assert sim.stats.ok == 1
    # the bucket, with an explicit clock
    st = KeyState(requests=Bucket(60, 2.0), tokens=None, concurrency=None)
    assert admit(st, 0, 100.0) is None and admit(st, 0, 100.0) is None  # burst of 2
    rej = admit(st, 0, 100.0)
    assert rej is not None and rej.kind == "requests" and math.isclose(rej.retry_after, 1.0)
    assert admit(st, 0, 101.0) is None
    assert duration(0.02) == "20ms" and duration(1) == "1s" and duration(360) == "6m0s" and duration(7.661) == "7.67s"
    assert seconds_text(0.35) == "0.35" and seconds_text(2) == "2"

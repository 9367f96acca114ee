"""The lean wire client is a drop-in for the official SDK: it sends the same requests, reads the
same answers into the same Completions, and maps every failure to the same error.

Requests are compared on a small capture server (method, path, JSON body, auth header); answers
against the LLM API simulator; failures with canned responses from the capture server."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from aiohttp import web

from synth.errors import AuthError, BadRequest, MalformedOutput, ProviderError, RateLimited, Transient
from synth.providers.base import ApiKey, Provider
from synth.providers.clients.openai import OpenAIProvider
from synth.providers.clients.wire import WireProvider
from synth.records import ChatMessage, EmbeddingRequest, Request, ToolCall
from tests.support.simulator import SimulatorProcess

KEY = ApiKey("k1", "sk-equivalence-test-key")
PARAMS = {"frequency_penalty": 0.25, "reasoning_effort": "low", "vendor_option": {"a": 1}}  # last: not an SDK arg
PLAN = {
    "type": "object",
    "properties": {
        "goal": {"type": "string"},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
        "owner": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["goal", "steps"],
    "$defs": {
        "Step": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "minutes": {"type": "integer"}},
            "required": ["title", "minutes"],
        }
    },
}
STRICT = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "tags"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "find a record",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
]


def chat(*messages: ChatMessage, **kw: Any) -> Request:
    return Request(id="eq-1", messages=list(messages), **kw)


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


REQUESTS = {
    "text": chat(
        ChatMessage(role="system", content="Be brief."),
        user("Hi"),
        temperature=0.7,
        top_p=0.9,
        max_tokens=64,
        seed=3,
        n=2,
    ),
    "structured": chat(user("Plan."), json_schema=PLAN, schema_name="my plan!"),
    "strict": chat(user("Name and tags."), json_schema=STRICT, schema_name="card"),
    "tools": chat(
        user("Find Ada."),
        ChatMessage(
            role="assistant", content=None, tool_calls=[ToolCall(id="call_1", name="lookup", arguments='{"q": "Ada"}')]
        ),
        ChatMessage(role="tool", tool_call_id="call_1", content='{"found": true}'),
        ChatMessage(role="assistant", content="Found her.", name="agent"),
        user("And Grace?"),
        tools=TOOLS,
    ),
}

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello there."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


class Capture:
    """An HTTP server that records what it is sent and answers what it is told."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.status, self.headers, self.body, self.delay = 200, {}, json.dumps(COMPLETION).encode(), 0.0
        self.content_type = "application/json"

    def answer(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
    ) -> None:
        self.status, self.headers, self.delay, self.content_type = status, headers or {}, delay, content_type
        self.body = body if isinstance(body, bytes) else json.dumps(COMPLETION if body is None else body).encode()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "body": json.loads(raw),
                "auth": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type", "").split(";")[0],
            }
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body, headers=self.headers, content_type=self.content_type)


@pytest.fixture
async def capture():
    cap = Capture()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cap.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cap.url = f"http://127.0.0.1:{port}/v1"  # type: ignore[attr-defined]
    yield cap
    await runner.cleanup()


async def pair(kind: str, url: str, params: dict[str, Any] | None = None) -> tuple[Provider, Provider]:
    return (
        OpenAIProvider(kind, "gpt-4o-mini", base_url=url, params=params),
        WireProvider(kind, "gpt-4o-mini", base_url=url, params=params),
    )


# ------------------------------------------------------------------------------------ requests


@pytest.mark.parametrize("kind", ["openai", "compat"])
@pytest.mark.parametrize("name", list(REQUESTS))
async def test_same_request_on_the_wire(capture: Capture, kind: str, name: str) -> None:
    if REQUESTS[name].json_schema is not None:
        capture.answer(
            body={
                **COMPLETION,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": '{"name": "x", "tags": []}'},
                    }
                ],
            }
        )
    sdk, wire = await pair(kind, capture.url, PARAMS)  # type: ignore[attr-defined]
    for p in (sdk, wire):
        await p.complete(REQUESTS[name], KEY, timeout=5)
        await p.aclose()
    a, b = capture.seen
    assert a == b
    assert a["method"] == "POST" and a["path"] == "/v1/chat/completions"
    assert a["auth"] == f"Bearer {KEY.secret}" and a["content_type"] == "application/json"
    body = a["body"]
    assert body["model"] == "gpt-4o-mini" and body["vendor_option"] == {"a": 1}
    if name == "text":
        assert body["max_completion_tokens" if kind == "openai" else "max_tokens"] == 64
        assert (body["seed"], body["n"], body["temperature"]) == (3, 2, 0.7)
    if name == "structured":
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "my_plan_", "schema": PLAN},
        }  # not strict: optional fields and open objects
    if name == "strict":
        assert body["response_format"]["json_schema"]["strict"] is True
    if name == "tools":
        assert body["tools"] == TOOLS
        assert body["messages"][1]["tool_calls"] == [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "Ada"}'}}
        ]
        assert body["messages"][2] == {"role": "tool", "content": '{"found": true}', "tool_call_id": "call_1"}


async def test_same_embedding_request(capture: Capture) -> None:
    capture.answer(
        body={
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
            ],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )
    sdk, wire = await pair("openai", capture.url)  # type: ignore[attr-defined]
    out = []
    for p in (sdk, wire):
        out.append(await p.embed(EmbeddingRequest(texts=["a", "b"]), KEY, timeout=5))
        await p.aclose()
    a, b = capture.seen
    assert a == b and a["path"] == "/v1/embeddings"
    assert a["body"] == {"model": "gpt-4o-mini", "input": ["a", "b"], "encoding_format": "float"}
    assert out[0] == out[1] and out[0].vectors == [[1.0, 0.0], [0.0, 1.0]]  # put back in index order


# ------------------------------------------------------------------------------------ answers


@pytest.fixture(scope="module")
def sim():
    proc = SimulatorProcess().start()
    yield proc
    proc.stop()


async def test_same_completions_from_the_simulator(sim: SimulatorProcess) -> None:
    sim.configure(rpm=10**6)  # so that x-ratelimit-* headers are sent
    sdk, wire = await pair("openai", sim.openai_url)
    try:
        cases = [
            REQUESTS["text"].model_copy(update={"n": 1}),
            REQUESTS["structured"],
            REQUESTS["strict"],
            REQUESTS["tools"],
            *(chat(user("Find Ada."), tools=TOOLS, seed=s) for s in range(4)),
            chat(user("Long story."), max_tokens=3, seed=1),
        ]
        kinds = set()
        for r in cases:
            a, b = await sdk.complete(r, KEY, timeout=10), await wire.complete(r, KEY, timeout=10)
            assert a.model_dump(exclude={"latency_ms"}) == b.model_dump(exclude={"latency_ms"})
            assert a.ratelimit and b.ratelimit and a.ratelimit.limit_requests == b.ratelimit.limit_requests == 10**6
            kinds.add("tools" if a.tool_calls else "parsed" if a.parsed is not None else a.finish_reason)
        assert kinds == {"tools", "parsed", "stop", "length"}
        e1 = await sdk.embed(EmbeddingRequest(texts=["x y", "z"]), KEY, timeout=10)
        e2 = await wire.embed(EmbeddingRequest(texts=["x y", "z"]), KEY, timeout=10)
        assert e1 == e2 and len(e1.vectors) == 2
    finally:
        await sdk.aclose()
        await wire.aclose()
        sim.restore()


# ------------------------------------------------------------------------------------ failures

RL_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1.5s",
    "x-ratelimit-limit-tokens": "90000",
    "x-ratelimit-remaining-tokens": "1200",
    "x-ratelimit-reset-tokens": "6m0s",
}


CUT_JSON = '{"goal": "x", "steps": [{"ti'


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "x", "param": None, "code": None}}


FAILURES: dict[str, tuple[dict[str, Any], type[ProviderError], float | None]] = {
    "429-ms": (
        {
            "status": 429,
            "body": error_body("Rate limit reached"),
            "headers": {"retry-after-ms": "1500", "retry-after": "2", **RL_HEADERS},
        },
        RateLimited,
        1.5,
    ),
    "429-s": ({"status": 429, "body": error_body("Slow down"), "headers": {"retry-after": "2"}}, RateLimited, 2.0),
    "429-none": ({"status": 429, "body": error_body("Slow down")}, RateLimited, None),
    "401": ({"status": 401, "body": error_body("Incorrect API key provided")}, AuthError, None),
    "403": ({"status": 403, "body": error_body("Country not supported")}, AuthError, None),
    "400": ({"status": 400, "body": error_body("Invalid schema")}, BadRequest, None),
    "404": ({"status": 404, "body": error_body("The model does not exist")}, BadRequest, None),
    "409": ({"status": 409, "body": error_body("Conflict")}, Transient, None),
    "500": ({"status": 500, "body": error_body("The server had an error")}, Transient, None),
    "502-html": ({"status": 502, "body": b"<html>Bad gateway</html>", "content_type": "text/html"}, Transient, None),
    "200-not-json": ({"status": 200, "body": b"<html>oops</html>", "content_type": "text/html"}, Transient, None),
    "200-no-choices": ({"status": 200, "body": {"id": "x", "object": "chat.completion"}}, Transient, None),
    "malformed": (
        {
            "status": 200,
            "body": {
                **COMPLETION,
                "choices": [
                    {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": CUT_JSON}}
                ],
            },
        },
        MalformedOutput,
        None,
    ),
    "timeout": ({"status": 200, "delay": 5.0}, Transient, None),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_same_error_mapping(capture: Capture, case: str) -> None:
    answer, kind, retry_after = FAILURES[case]
    capture.answer(**answer)
    sdk, wire = await pair("openai", capture.url)  # type: ignore[attr-defined]
    errors = []
    for p in (sdk, wire):
        with pytest.raises(ProviderError) as err:
            await p.complete(REQUESTS["structured"], KEY, timeout=0.5)
        await p.aclose()
        errors.append(err.value)
    a, b = errors
    assert type(a) is type(b) is kind
    assert str(a) == str(b)
    assert (a.status, a.key_alias, a.retryable) == (b.status, b.key_alias, b.retryable)
    assert a.__cause__ is not None and b.__cause__ is not None
    if kind is RateLimited:
        assert a.retry_after == b.retry_after == retry_after  # type: ignore[attr-defined]
        assert a.limits == b.limits  # type: ignore[attr-defined]
        if case == "429-ms":
            assert a.limits.reset_tokens_s == 360 and a.limits.remaining_tokens == 1200  # type: ignore[attr-defined]
    if kind is MalformedOutput:
        assert a.raw == b.raw == CUT_JSON  # type: ignore[attr-defined]
        assert "max_tokens" in str(a)
    if case == "timeout":
        assert "timeout" in str(a)


async def test_same_refused_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    sdk, wire = await pair("compat", url)
    errors = []
    for p in (sdk, wire):
        with pytest.raises(Transient) as err:
            await p.complete(REQUESTS["text"], KEY, timeout=5)
        await p.aclose()
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert errors[0] == (
        f"compat:gpt-4o-mini: cannot connect to {url}: the server refused the connection; "
        "start the server or fix base_url"
    )

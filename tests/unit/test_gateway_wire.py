"""What crosses between workers and gateways: completions as plain tuples, errors as (kind, message,
attempts), each rebuilt to what it was."""

from __future__ import annotations

import math

import pytest

from synth import errors as E
from synth.engine.gateway import (
    completion_from_wire,
    completion_to_wire,
    error_from_wire,
    error_to_wire,
    request_from_wire,
    request_to_wire,
)
from synth.providers.clients.wire import json_value
from synth.records import ChatMessage, Completion, RateLimitInfo, Request, ToolCall, Usage, trusted


def test_completions_cross_unchanged_except_the_rate_limit_headers() -> None:
    full = Completion(
        request_id="r1",
        text='{"a": 1}',
        parsed={"a": 1},
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        finish_reason="stop",
        model="gpt-x",
        provider="openai",
        key_alias="KEY_A",
        latency_ms=12.5,
        attempts=2,
        cost_usd=0.25,
        cached=True,
        ratelimit=RateLimitInfo(limit_requests=100),
    )
    back = completion_from_wire(completion_to_wire(full))
    assert back.ratelimit is None
    assert back == full.model_copy(update={"ratelimit": None})
    calls = Completion(request_id="r2", tool_calls=[ToolCall(id="c1", name="lookup", arguments='{"q": "x"}')])
    back = completion_from_wire(completion_to_wire(calls))
    assert back.tool_calls == calls.tool_calls and back.text is None and back.usage == Usage()


def test_errors_cross_as_their_own_kind() -> None:
    err = E.RateLimited("key KEY_A: too many requests")
    err.attempts = 4  # type: ignore[attr-defined]
    back = error_from_wire(*error_to_wire(err))
    assert isinstance(back, E.RateLimited) and str(back) == str(err) and back.attempts == 4  # type: ignore[attr-defined]
    other = error_from_wire(*error_to_wire(ValueError("boom")))
    assert isinstance(other, E.ProviderError) and "ValueError: boom" in str(other)


def test_requests_cross_unchanged_and_share_their_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    req = Request(
        id="u1",
        model="fast",
        json_schema=schema,
        tools=tools,
        temperature=0.3,
        top_p=0.9,
        max_tokens=64,
        seed=7,
        n=2,
        metadata={"turn": 1},
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="assistant", tool_calls=[ToolCall(id="c1", name="lookup", arguments="{}")]),
            ChatMessage(role="tool", content="42", tool_call_id="c1", name="lookup"),
        ],
    )
    back = request_from_wire(request_to_wire(req))
    assert back == req and back.model_dump() == req.model_dump()
    assert back.json_schema is schema  # not copied: the gateway caches its compiled check by identity
    again = back.model_copy(update={"seed": 8})  # what a re-ask does to a request rebuilt here
    assert again.seed == 8 and again.messages == req.messages and back.seed == 7


def test_trusted_builds_what_validation_builds_and_falls_back_when_fields_are_missing() -> None:
    fields = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    built = trusted(Usage, dict(fields))
    assert built == Usage(**fields) and built.model_dump() == fields and repr(built) == repr(Usage(**fields))
    part = trusted(Completion, {"request_id": "r9", "text": "hi"})  # defaults needed: model_construct fills them
    assert part == Completion(request_id="r9", text="hi") and part.usage == Usage()


def test_model_json_is_read_fast_and_still_read_where_orjson_refuses() -> None:
    assert json_value('{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert json_value('{"n": 18446744073709551615}') == {"n": 2**64 - 1}  # exact up to 64 bits, as Arrow holds
    assert math.isnan(json_value('{"x": NaN}')["x"])
    with pytest.raises(ValueError):
        json_value('{"a": 1')

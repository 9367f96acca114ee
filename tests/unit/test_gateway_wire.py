"""What crosses between workers and gateways: completions as plain tuples, errors as (kind, message,
attempts), each rebuilt to what it was."""

from __future__ import annotations

from synth import errors as E
from synth.engine.gateway import completion_from_wire, completion_to_wire, error_from_wire, error_to_wire
from synth.records import Completion, RateLimitInfo, ToolCall, Usage


def test_completions_cross_unchanged_except_the_rate_limit_headers() -> None:
    full = Completion(request_id="r1", text='{"a": 1}', parsed={"a": 1}, usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
                      finish_reason="stop", model="gpt-x", provider="openai", key_alias="KEY_A", latency_ms=12.5,
                      attempts=2, cost_usd=0.25, cached=True, ratelimit=RateLimitInfo(limit_requests=100))
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

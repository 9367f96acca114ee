"""Rate limits, 5xx and hung calls are the provider's state, not the unit's: they are retried for as
long as the outage policy allows, then the job stops; a claimed limit is only an upper bound; a call
far slower than the provider's p99 is abandoned and sent again. On a virtual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synth.errors import BadRequest, JobStopped, RateLimited, Transient
from synth.providers.base import ApiKey
from synth.providers.clock import FakeClock
from synth.providers.limits import KeyLimiter
from synth.records import Completion, RateLimitInfo, Request
from synth.spec import Limits
from tests.unit.test_dispatch import build, job, provider, req

OK = '{"n": 1}'


# ---------------------------------------------------------------- the outage policy


async def test_an_outage_is_retried_until_max_outage_s_then_the_job_stops() -> None:
    spec = job([provider("main")], engine={"max_outage_s": 20})
    d, made, clock = build(spec, {"main": lambda r, k, n: Transient("HTTP 503", status=503)})
    out = await d.complete_many([req(i) for i in range(5)])
    assert all(isinstance(e, JobStopped) for e in out), out
    msg = str(out[0])
    assert "provider main (openai:gpt-4o-mini) has failed every call for 2" in msg and "max_outage_s 20" in msg
    assert "HTTP 503" in msg and "\n" not in msg
    assert 20.0 <= clock.now() < 21.0  # the last try lands on the deadline, not a backoff later
    assert len(made["main"].calls) > 5 * 4  # backed off and retried all along, not 6 tries and out
    s = d.stats()
    # each request ended on the outage: counted, for the run's "all N calls failed" line
    assert s["stopped"] == msg and s["providers"]["main"]["errors"] == {"transient": 5}
    with pytest.raises(JobStopped):  # the rest of the job stops at once
        await d.complete(req(99))


async def test_an_outage_that_ends_is_waited_out_with_no_failure() -> None:
    script = lambda r, k, n: Transient("connection refused") if 1.0 <= k_clock[0].now() < 100 else OK  # noqa: E731
    k_clock: list[FakeClock] = []
    d, made, clock = build(job([provider("main")]), {"main": script})
    k_clock.append(clock)
    await clock.sleep(1.0)
    out = await d.complete_many([req(i) for i in range(20)])
    assert all(isinstance(c, Completion) for c in out), out
    assert clock.now() >= 100 and d.stopped is None
    s = d.stats()
    assert s["errors"] == {} and s["retries"] > 20 * 6  # far past max_retries, since no one was answered


async def stream(d: Any, clock: FakeClock, n: int, every: float = 0.5, start: int = 1000) -> list[Any]:
    """Requests arriving one every ``every`` seconds: a provider answering others all along."""
    out = []
    for i in range(n):
        await clock.sleep(every)
        out.append(await d.complete_many([req(start + i)]))
    return out


async def test_max_retries_bounds_a_request_that_fails_while_others_are_answered() -> None:
    spec = job([provider("main", max_retries=3)], engine={"failure_window": 10, "max_failure_rate": 0.5})
    script = lambda r, k, n: Transient("HTTP 500", status=500) if r.id == "r0" else OK  # noqa: E731
    d, made, clock = build(spec, {"main": script})

    async def failing() -> None:
        await clock.sleep(1.0)  # once others are being answered
        await d.complete(req(0))

    with pytest.raises(Transient) as e:
        await asyncio.gather(failing(), stream(d, clock, 2000, every=0.01))
    # 3 retries counted; one more at most went uncounted (a backoff shorter than the next answer)
    assert 4 <= e.value.attempts <= 5  # type: ignore[attr-defined]
    assert d.stopped is None and d.stats()["errors"] == {"transient": 1}


async def test_failure_window_counts_unit_caused_failures_not_retried_ones() -> None:
    spec = job([provider("main", max_retries=1)], engine={"failure_window": 10, "max_failure_rate": 0.5})

    def script(r: Request, k: ApiKey | None, n: int) -> Any:
        i = int(r.id[1:])
        if 100 <= i < 1000:
            return BadRequest("HTTP 400: the unit's own")
        return Transient("HTTP 500", status=500) if i < 100 and i % 3 == 0 else OK

    d, made, clock = build(spec, {"main": script})
    failing = [d.complete(req(i)) for i in range(0, 60, 3)]  # 20 requests failing where others succeed
    out = await asyncio.gather(*failing, stream(d, clock, 200, every=0.1), return_exceptions=True)
    assert sum(isinstance(e, Transient) for e in out) == 20 and d.stopped is None
    bad = [(await d.complete_many([req(100 + i)]))[0] for i in range(8)]  # what the unit caused counts
    assert [type(e).__name__ for e in bad] == ["BadRequest"] * 6 + ["JobStopped"] * 2
    assert "6 of the last 10 requests failed" in str(d.stopped)


async def test_429s_wait_for_retry_after_and_are_never_dead_letters() -> None:
    spec = job([provider("main", max_retries=1)])

    def script(r: Request, k: ApiKey | None, n: int) -> Any:
        return RateLimited("HTTP 429", retry_after=1.0) if n <= 30 else OK

    d, made, clock = build(spec, {"main": script})
    comp = await d.complete(req())
    assert comp.attempts == 31 and d.stats()["rate_limited"] == 30 and clock.now() == pytest.approx(30 * 1.05 + 0.05)


async def test_a_retry_after_past_the_outage_limit_stops_at_once() -> None:
    spec = job([provider("main")], engine={"max_outage_s": 60})
    d, made, clock = build(spec, {"main": lambda r, k, n: RateLimited("daily quota", retry_after=3600.0)})
    with pytest.raises(JobStopped, match=r"rate limited for 3600 s more, past engine.max_outage_s 60"):
        await d.complete(req())
    assert clock.now() < 1.0 and len(made["main"].calls) == 1


async def test_max_retries_zero_turns_retrying_off() -> None:
    d, made, clock = build(
        job([provider("main", max_retries=0)]), {"main": lambda r, k, n: Transient("HTTP 502", status=502)}
    )
    with pytest.raises(Transient):
        await d.complete(req())
    assert len(made["main"].calls) == 1


async def test_a_fallback_is_tried_after_max_retries_not_after_an_outage() -> None:
    spec = job([provider("a", max_retries=2), provider("b", model="openai:gpt-4o")], routes={"main": ["a", "b"]})
    d, made, clock = build(spec, {"a": lambda r, k, n: Transient("HTTP 503", status=503)})
    comp = await d.complete(req(model="main"))
    assert comp.model == "gpt-4o" and len(made["a"].calls) == 3 and clock.now() < 10


# ---------------------------------------------------------------- hung calls


async def test_a_hung_call_is_abandoned_at_a_multiple_of_p99_and_sent_again() -> None:
    hung: set[str] = set()

    def script(r: Request, k: ApiKey | None, n: int) -> Any:
        if r.id == "r9" and r.id not in hung:  # out before the p99 is known: brought in when it is
            hung.add(r.id)
            return "hang"
        return OK

    d, made, clock = build(job([provider("main", timeout_s=60, rpm=6000, tpm=10**8)]), {"main": script})
    d.health["main"].floor_s = 0.05  # p99 is 0.05 s of virtual time: 4 x p99 = 0.2 s on the loop
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out = await d.complete_many([req(i) for i in range(80)])
    took = loop.time() - t0
    assert all(isinstance(c, Completion) for c in out), out
    h = d.health["main"]
    assert h.p99 == pytest.approx(0.05) and h.abandon_s == pytest.approx(0.2)
    assert d.stats()["abandoned"] == 1 and d.stats()["retries"] == 1
    assert took < 5.0  # not the 66 s backstop of timeout_s
    retried = [c for c in out if c.attempts == 2]  # type: ignore[union-attr]
    assert len(retried) == 1


async def test_before_enough_answers_the_timeout_is_the_providers() -> None:
    d, made, clock = build(job([provider("main", timeout_s=0.05)]), {"main": lambda r, k, n: "hang" if n == 1 else OK})
    assert d.health["main"].deadline(d.targets["main"].backstop) == d.targets["main"].backstop
    comp = await d.complete(req())
    assert comp.attempts == 2 and d.stats()["abandoned"] == 0


# ---------------------------------------------------------------- a claimed limit is an upper bound


async def test_headers_lower_a_claimed_limit_and_raise_it_back_up_to_the_claim() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=6000, tpm=10**7), clock=clock)
    t = await lim.acquire(1)
    lim.adapt(RateLimitInfo(limit_requests=60, remaining_requests=0), t)
    assert lim.rpm is not None and lim.rpm.rate == pytest.approx(1.0) and lim.rpm.capacity == 1.0
    lim.settle(1, 1)
    t = await lim.acquire(1)
    lim.adapt(RateLimitInfo(limit_requests=120), t)
    assert lim.rpm.rate == pytest.approx(2.0)
    lim.adapt(RateLimitInfo(limit_requests=10**6), t)
    assert lim.rpm.rate == pytest.approx(100.0)  # never above the claim


async def test_a_429_without_headers_halves_a_claimed_rate_once_per_cool_down() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=6000, tpm=10**7), clock=clock)
    lim.cool_down(1.0)
    lim.throttled(None)
    lim.throttled(None)  # the same burst of 429s: one cut
    assert lim.rpm is not None and lim.rpm.rate == pytest.approx(50.0)
    await clock.sleep(1.5)
    lim.throttled(RateLimitInfo(limit_requests=60))  # with headers, adapt follows them instead
    assert lim.rpm.rate == pytest.approx(50.0)
    lim.throttled(None)
    assert lim.rpm.rate == pytest.approx(25.0)

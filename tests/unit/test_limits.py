"""Token buckets, concurrency, cool-down and header learning on a virtual clock: exact and instant."""

from __future__ import annotations

import asyncio

import pytest

from synth.providers.clock import FakeClock, RealClock
from synth.providers.limits import Bucket, KeyLimiter
from synth.records import RateLimitInfo
from synth.spec import Limits


async def times_of(lim: KeyLimiter, clock: FakeClock, n: int, tokens: float = 1) -> list[float]:
    out = []
    for _ in range(n):
        await lim.acquire(tokens)
        out.append(round(clock.now(), 9))
    return out


# ---------------------------------------------------------------- the clock itself


async def test_fake_clock_wakes_sleepers_in_deadline_order_instantly() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.now()))

    await asyncio.gather(sleeper("c", 30), sleeper("a", 10), sleeper("b", 20), sleeper("a2", 10))
    assert woke == [("a", 10), ("a2", 10), ("b", 20), ("c", 30)]
    assert clock.pending == 0


async def test_fake_clock_manual_advance() -> None:
    clock = FakeClock(auto=False)
    woke: list[float] = []

    async def sleeper(s: float) -> None:
        await clock.sleep(s)
        woke.append(clock.now())

    tasks = [asyncio.create_task(sleeper(s)) for s in (1, 2, 5)]
    await clock.advance(2.5)
    assert woke == [1, 2] and clock.now() == 2.5
    await clock.advance(10)
    assert woke == [1, 2, 5] and clock.now() == 12.5
    await asyncio.gather(*tasks)


async def test_real_clock_is_monotonic() -> None:
    c = RealClock()
    a = c.now()
    await c.sleep(0)
    assert c.now() >= a


# ---------------------------------------------------------------- buckets


def test_bucket_refills_continuously_and_caps() -> None:
    b = Bucket(rate=2.0, capacity=4.0, now=0.0)
    b.take(4, 0.0)
    assert b.wait(1, 0.0) == 0.5
    assert b.refill(1.0) == 2.0
    assert b.refill(100.0) == 4.0
    b.take(10, 100.0)  # a charge above capacity drives it negative
    assert b.wait(10, 100.0) == pytest.approx(5.0)  # then waits for a full bucket (capacity 4 from -6)


async def test_rpm_bucket_exact_times() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=600, tpm=10**9), burst_s=0.5, clock=clock)  # 10/s, burst of 5
    got = await times_of(lim, clock, 8)
    assert got == pytest.approx([0, 0, 0, 0, 0, 0.1, 0.2, 0.3])
    # over a long run the rate is exactly the limit
    got = await times_of(lim, clock, 600)
    assert got[-1] == pytest.approx(0.3 + 60.0)


async def test_rpm_below_one_per_burst_still_serves_one_request() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=30, tpm=10**9), burst_s=0.5, clock=clock)  # 0.5/s, capacity floor 1
    assert await times_of(lim, clock, 3) == pytest.approx([0, 2, 4])


async def test_tpm_with_settle_refund_wakes_the_waiter_early() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=10**6, tpm=600), burst_s=1.0, clock=clock)  # 10 tokens/s, bucket 10
    await lim.acquire(10)
    assert clock.now() == 0
    second = asyncio.create_task(lim.acquire(10))

    async def answer() -> None:
        await clock.sleep(0.2)
        lim.settle(10, 4)  # 6 tokens refunded at t=0.2: level 2 + 6 = 8

    await asyncio.gather(answer(), second)
    assert clock.now() == pytest.approx(0.4)  # the 2 missing tokens take 0.2 s more
    lim.settle(10, 13)  # an answer longer than reserved charges the difference
    assert lim.tpm is not None and lim.tpm.level == pytest.approx(-3.0)


async def test_tpm_request_larger_than_bucket_waits_for_full_bucket() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=10**6, tpm=600), burst_s=1.0, clock=clock)
    await lim.acquire(30)  # bucket 10, starts full: served at once, level -20
    await lim.acquire(30)
    assert clock.now() == pytest.approx(3.0)


async def test_rps_cap() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=10**6, tpm=10**9, rps=2), clock=clock)
    assert await times_of(lim, clock, 6) == pytest.approx([0, 0, 0.5, 1.0, 1.5, 2.0])


async def test_max_concurrency_waits_for_a_finished_request() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=10**6, tpm=10**9, max_concurrency=2), clock=clock)
    await lim.acquire(1)
    await lim.acquire(1)
    third = asyncio.create_task(lim.acquire(1))

    async def finish_one() -> None:
        await clock.sleep(5)
        assert not third.done()
        lim.settle(1, 1)

    await asyncio.gather(finish_one(), third)
    assert clock.now() == 5 and lim.in_flight == 2


async def test_cool_down_blocks_the_key_for_retry_after() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=6000, tpm=10**9), clock=clock)
    await lim.acquire(1)
    lim.cool_down(3.0)
    lim.cool_down(1.0)  # a shorter cool-down never shortens a longer one
    await lim.acquire(1)
    assert clock.now() == 3.0


async def test_share_scales_limits() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=600, tpm=6000), share=0.25, clock=clock)
    assert lim.rpm is not None and lim.rpm.rate == pytest.approx(2.5)
    assert lim.tpm is not None and lim.tpm.rate == pytest.approx(25.0)
    assert KeyLimiter(Limits(max_concurrency=10), share=0.5).max_concurrency == 5
    assert KeyLimiter(Limits(max_concurrency=1), share=0.5).max_concurrency == 1
    with pytest.raises(ValueError):
        KeyLimiter(Limits(), share=0)


# ---------------------------------------------------------------- learning from headers


async def test_unset_limits_learned_from_headers_one_request_at_a_time_meanwhile() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(), clock=clock)
    ticket = await lim.acquire(100)
    assert lim.learning and lim.wait_time(100) == float("inf")  # second waits for the first answer
    second = asyncio.create_task(lim.acquire(100))

    async def answer() -> None:
        await clock.sleep(1.0)
        lim.settle(100, 50)
        lim.adapt(
            RateLimitInfo(limit_requests=120, remaining_requests=119, limit_tokens=60_000, remaining_tokens=59_900),
            ticket,
        )

    await asyncio.gather(answer(), second)
    assert clock.now() == 1.0
    assert lim.rpm is not None and lim.rpm.rate == pytest.approx(2.0)  # 120 rpm
    assert lim.tpm is not None and lim.tpm.rate == pytest.approx(1000.0)  # 60k tpm
    assert not lim.learning and lim.in_flight == 1


async def test_no_headers_means_no_limits() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(), clock=clock)
    await lim.acquire(1)
    lim.adapt(None)
    for _ in range(100):
        await lim.acquire(1)
    assert clock.now() == 0 and lim.rpm is None and lim.in_flight == 101


async def test_configured_limits_are_not_overridden_by_headers() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=60, tpm=1000), clock=clock)
    t = await lim.acquire(1)
    lim.adapt(RateLimitInfo(limit_requests=10_000, limit_tokens=10**7), t)
    assert lim.rpm is not None and lim.rpm.rate == 1.0
    assert lim.tpm is not None and lim.tpm.rate == pytest.approx(1000 / 60)


async def test_remaining_below_our_count_lowers_the_bucket() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=600, tpm=10**9), burst_s=0.5, clock=clock)  # 10/s, burst 5
    ticket = await lim.acquire(1)  # level 4
    await clock.sleep(0.1)  # level refills to 5 (capacity)
    # the server saw the key drained (someone else uses it): at most 1 + 0.1 s * 10/s = 2 left
    lim.adapt(RateLimitInfo(remaining_requests=0), ticket)
    assert lim.rpm is not None and lim.rpm.level == pytest.approx(2.0)
    got = await times_of(lim, clock, 4)
    assert got == pytest.approx([0.1, 0.1, 0.2, 0.3])


async def test_remaining_consistent_with_our_count_changes_nothing() -> None:
    clock = FakeClock()
    lim = KeyLimiter(Limits(rpm=600, tpm=60_000), burst_s=0.5, clock=clock)
    ticket = await lim.acquire(100)
    await lim.acquire(100)
    before = (lim.rpm.level, lim.tpm.level)  # type: ignore[union-attr]
    # the server's 1 s bucket is larger than ours: what it reports cannot lower our count
    lim.adapt(RateLimitInfo(remaining_requests=8, remaining_tokens=800), ticket)
    assert (lim.rpm.level, lim.tpm.level) == before  # type: ignore[union-attr]

"""Key pools: keys from the environment, choosing the key that serves soonest, revocation."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from synth.errors import KeyMissing, NoKeysLeft
from synth.providers.clock import FakeClock
from synth.providers.keys import KeyPool, key_limits
from synth.spec import KeySpec, Limits, ProviderSpec

SECRETS = {"K1": "sk-secret-one-111", "K2": "sk-secret-two-222", "K3": "sk-secret-three-333"}


def spec(n: int = 3, **limits: float) -> ProviderSpec:
    return ProviderSpec(
        name="p",
        model="openai:gpt-4o-mini",
        keys=[KeySpec(env=f"K{i + 1}", alias=f"key{i + 1}") for i in range(n)],
        **limits,
    )


def test_missing_variable_is_one_line_naming_it() -> None:
    with pytest.raises(KeyMissing) as e:
        KeyPool(spec(3), env={"K1": "a", "K2": "b"})
    msg = str(e.value)
    assert "K3" in msg and "\n" not in msg and "export" in msg


def test_keys_read_into_redacted_api_keys() -> None:
    pool = KeyPool(spec(2), env=SECRETS)
    assert [s.alias for s in pool.slots] == ["key1", "key2"]
    assert pool.slots[0].key is not None and pool.slots[0].key.secret == SECRETS["K1"]
    text = repr(pool) + repr(pool.slots) + str(pool.stats())
    assert not any(secret in text for secret in SECRETS.values())


def test_key_limits_fall_back_to_provider_field_by_field() -> None:
    got = key_limits(Limits(rpm=100, tpm=1000, max_concurrency=4), KeySpec(env="X", tpm=50))
    assert (got.rpm, got.tpm, got.rps, got.max_concurrency) == (100, 50, None, 4)


async def test_keys_run_in_parallel_at_the_sum_of_their_limits() -> None:
    clock = FakeClock()
    pool = KeyPool(spec(3, rpm=60, tpm=10**9), env=SECRETS, clock=clock)  # 1 rps each, bucket of 1
    got = []
    for _ in range(30):
        slot, _ = await pool.acquire(10)
        got.append((round(clock.now(), 6), slot.alias))
    # three requests per second (one per key), every key used equally
    assert [t for t, _ in got] == [float(i // 3) for i in range(30)]
    assert Counter(a for _, a in got) == {"key1": 10, "key2": 10, "key3": 10}


async def test_concurrent_waiters_are_served_first_come_first_served() -> None:
    clock = FakeClock()
    pool = KeyPool(spec(2, rpm=60, tpm=10**9), env=SECRETS, clock=clock)
    order: list[int] = []

    async def one(i: int) -> None:
        await pool.acquire(1)
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(10)))
    assert order == list(range(10)) and clock.now() == 4.0


async def test_freed_capacity_goes_to_every_queued_request_at_once() -> None:
    """When requests finish, all the waiters that now fit are granted in the same pass, in order,
    not one per event-loop turn (which starves the keys while the loop is busy)."""
    pool = KeyPool(spec(2, rpm=10**6, tpm=10**9, max_concurrency=3), env=SECRETS, clock=FakeClock())
    held = [await pool.acquire(1) for _ in range(6)]  # both keys full
    waiters = [asyncio.create_task(pool.acquire(1)) for _ in range(5)]
    await asyncio.sleep(0)
    assert pool.waiting == 5 and not any(w.done() for w in waiters)
    for slot, _ in held[:4]:
        slot.limiter.settle(1, 1)  # four requests finish in one callback
    await asyncio.sleep(0)  # one turn of the loop
    assert [w.done() for w in waiters] == [True] * 4 + [False]
    assert Counter(w.result()[0].alias for w in waiters[:4]) == Counter(s.alias for s, _ in held[:4])
    held[4][0].limiter.settle(1, 1)
    await asyncio.sleep(0)
    assert waiters[4].done() and pool.waiting == 0


async def test_a_cancelled_waiter_gives_back_what_it_was_granted() -> None:
    pool = KeyPool(spec(1, rpm=10**6, tpm=10**9, max_concurrency=1), env=SECRETS, clock=FakeClock())
    slot, _ = await pool.acquire(1)
    waiter = asyncio.create_task(pool.acquire(1))
    await asyncio.sleep(0)
    slot.limiter.settle(1, 1)  # granted to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slot.limiter.in_flight == 0 and pool.waiting == 0
    again, _ = await asyncio.wait_for(pool.acquire(1), 1)
    assert again is slot


async def test_picks_the_key_that_can_serve_soonest() -> None:
    clock = FakeClock()
    pool = KeyPool(spec(2, rpm=60, tpm=10**9), env=SECRETS, clock=clock)
    pool.slots[0].limiter.cool_down(10)
    slot, _ = await pool.acquire(1)
    assert slot.alias == "key2" and clock.now() == 0
    slot, _ = await pool.acquire(1)  # key2 refills in 1 s, key1 is cooling for 10 s
    assert slot.alias == "key2" and clock.now() == 1.0


async def test_least_in_flight_breaks_ties() -> None:
    clock = FakeClock()
    pool = KeyPool(spec(3), env=SECRETS, clock=clock)  # unlimited once learned
    for s in pool.slots:
        s.limiter.adapt(None)
    slots = [(await pool.acquire(1))[0].alias for _ in range(6)]
    assert Counter(slots) == {"key1": 2, "key2": 2, "key3": 2}


async def test_disabled_keys_and_no_keys_left(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    pool = KeyPool(spec(3, rpm=60, tpm=10**9), env=SECRETS, clock=clock)
    caplog.set_level(logging.WARNING, logger="synth.providers")
    pool.disable(pool.slots[0], "HTTP 401")
    pool.disable(pool.slots[1], "HTTP 401")
    for _ in range(3):
        slot, _ = await pool.acquire(1)
        assert slot.alias == "key3"
    assert clock.now() == 2.0
    waiter = asyncio.create_task(pool.acquire(1))  # waits for key3's bucket ...
    await asyncio.sleep(0)
    pool.disable(pool.slots[2], "HTTP 403")  # ... which is revoked meanwhile
    with pytest.raises(NoKeysLeft) as e:
        await waiter
    msg = str(e.value)
    assert msg.startswith("all 3 keys of provider p are disabled") and "key1, key2, key3" in msg
    assert "\n" not in msg
    assert "key1 disabled" in caplog.text and "0 of 3 keys left" in caplog.text
    assert not any(s in caplog.text + msg for s in SECRETS.values())


def test_keyless_provider_gets_one_unlimited_slot() -> None:
    pool = KeyPool(ProviderSpec(name="sim", model="sim:default"), env={})
    assert len(pool.slots) == 1 and pool.slots[0].key is None and pool.keyless


def test_owned_keys_and_shares() -> None:
    pool = KeyPool(spec(3, rpm=600, tpm=6000), [(2, spec(3).keys[2], 0.5)], env=SECRETS)
    assert [s.alias for s in pool.slots] == ["key3"]
    assert pool.slots[0].limiter.rpm is not None and pool.slots[0].limiter.rpm.rate == pytest.approx(5.0)
    # a key split across gateways by default: spec.gateways
    pool = KeyPool(spec(1, rpm=600, gateways=4), env=SECRETS)
    assert pool.slots[0].limiter.rpm is not None and pool.slots[0].limiter.rpm.rate == pytest.approx(2.5)


def test_pool_with_no_owned_keys_says_so() -> None:
    pool = KeyPool(spec(2), [], env=SECRETS)
    with pytest.raises(NoKeysLeft, match="no keys assigned to this gateway"):
        pool.pick(1)

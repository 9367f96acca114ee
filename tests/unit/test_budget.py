"""The budget of one process: calls that do not fit wait for the calls out, in turn, and a shared
budget (one gateway's part) waits a grace period for the driver's next deal. On a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from synth.errors import BudgetExceeded
from synth.providers.budget import Budget
from synth.providers.clock import FakeClock
from synth.spec import BudgetSpec


def budget(usd: float | None = 1.0, tokens: int | None = None, **kw: object) -> tuple[Budget, FakeClock]:
    clock = FakeClock(auto=False)
    return Budget(BudgetSpec(max_usd=usd, max_tokens=tokens), clock=clock, **kw), clock  # type: ignore[arg-type]


async def test_a_call_that_does_not_fit_waits_for_the_calls_out_and_goes_when_they_settle_for_less() -> None:
    b, _ = budget(1.0)
    b.hold(0.6, 0)
    waiting = asyncio.ensure_future(b.reserve(0.6, 0))
    await asyncio.sleep(0)
    assert not waiting.done() and b.waiting
    b.settle(0.6, 0, 0.3, 0)  # the call out cost half its worst case: room for the next
    await asyncio.sleep(0)
    assert waiting.done() and waiting.exception() is None
    assert b.held_usd == pytest.approx(0.6) and b.spent_usd == pytest.approx(0.3) and b.in_flight == 1


async def test_waiting_calls_go_in_order_and_all_fail_once_nothing_out_can_make_room() -> None:
    b, _ = budget(1.0)
    b.hold(0.5, 0)
    first = asyncio.ensure_future(b.reserve(0.5, 0))
    second = asyncio.ensure_future(b.reserve(0.5, 0))
    await asyncio.sleep(0)
    assert not b.try_hold(0.01, 0)  # nobody jumps the queue, however small
    b.settle(0.5, 0, 0.5, 0)  # it cost all it held: room for one more, not two
    await asyncio.sleep(0)
    assert first.done() and not second.done()
    b.settle(0.5, 0, 0.5, 0)  # the budget is spent and nothing is out
    await asyncio.sleep(0)
    with pytest.raises(BudgetExceeded, match=r"raise budget.max_usd"):
        second.result()
    with pytest.raises(BudgetExceeded):  # and a new call fails at once
        await b.reserve(0.1, 0)


async def test_a_shared_budget_waits_for_the_next_deal_then_gives_up_after_the_grace() -> None:
    b, clock = budget(1.0, shared=True, grace_s=2.0)
    b.hold(1.0, 0)
    b.settle(1.0, 0, 1.0, 0)  # this gateway's part is spent, nothing is out
    dealt = asyncio.ensure_future(b.reserve(0.4, 0))
    await asyncio.sleep(0)
    await clock.advance(1.0)
    assert not dealt.done()
    b.set_limits(1.5, None)  # the driver moved unspent budget here
    await asyncio.sleep(0)
    assert dealt.done() and dealt.exception() is None and b.held_usd == pytest.approx(0.4)
    b.settle(0.4, 0, 0.4, 0)
    starved = asyncio.ensure_future(b.reserve(0.4, 0))
    await clock.advance(1.9)
    assert not starved.done()
    await clock.advance(0.2)
    with pytest.raises(BudgetExceeded):
        starved.result()


async def test_tokens_name_their_own_limit_and_a_cancelled_wait_holds_nothing() -> None:
    b, _ = budget(None, tokens=100)
    b.hold(0, 80)
    gone = asyncio.ensure_future(b.reserve(0, 50))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    b.settle(0, 80, 0, 10)
    assert b.held_tokens == 0 and b.in_flight == 0 and not b.waiting
    with pytest.raises(BudgetExceeded, match=r"budget.max_tokens 100"):
        b.check(0, 95)


async def test_the_grace_counts_from_the_last_call_out_not_from_an_earlier_wait() -> None:
    b, clock = budget(1.0, shared=True, grace_s=2.0)
    b.hold(1.0, 0)
    b.settle(1.0, 0, 1.0, 0)  # spent, nothing out
    first = asyncio.ensure_future(b.reserve(0.5, 0))
    second = asyncio.ensure_future(b.reserve(0.5, 0))
    await asyncio.sleep(0)
    await clock.advance(1.5)
    b.set_limits(1.5, None)  # room for the first only; it goes out
    await asyncio.sleep(0)
    assert first.done() and not second.done()
    await clock.advance(1.0)  # 2.5 s after the wait began, but the first call is still out
    assert not second.done()
    b.settle(0.5, 0, 0.5, 0)  # now nothing is out: a full grace from here
    await clock.advance(1.9)
    assert not second.done()
    await clock.advance(0.2)
    with pytest.raises(BudgetExceeded):
        second.result()

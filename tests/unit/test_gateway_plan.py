"""How keys are dealt to gateways, and how the budget follows them."""

from __future__ import annotations

from typing import Any

import pytest

from synth.api import load_job
from synth.engine.gateway import budget_shares, plan_slots, slot_weight


@pytest.fixture(autouse=True)
def _key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        monkeypatch.setenv(f"K{i}", f"sk-plan-{i}")


def job(providers: list[dict[str, Any]]) -> Any:
    return load_job(
        {
            "name": "plan",
            "count": 10,
            "generator": {
                "kind": "structured",
                "prompt": "x",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
            "providers": providers,
            "budget": {"max_usd": 10.0},
        }
    )


def keys(*rpms: int) -> list[dict[str, Any]]:
    return [{"env": f"K{i}", "rpm": r} for i, r in enumerate(rpms)]


def test_three_equal_keys_on_two_gateways_split_the_budget_by_capacity() -> None:
    j = job([{"name": "a", "model": "compat:m", "base_url": "http://127.0.0.1:1/v1", "keys": keys(600, 600, 600)}])
    groups = plan_slots(j, ["a"], gateways=2)
    assert sorted(len(g) for g in groups) == [1, 2]  # every key in exactly one gateway
    shares = budget_shares(j, groups)
    assert sum(shares) == pytest.approx(1.0)
    assert sorted(shares) == pytest.approx([1 / 3, 2 / 3])  # not an even half each
    for g, s in zip(groups, shares):
        assert s == pytest.approx(slot_weight(j, g, "a") / 1800)


def test_unequal_keys_weigh_by_their_rpm() -> None:
    j = job([{"name": "a", "model": "compat:m", "base_url": "http://127.0.0.1:1/v1", "keys": keys(3000, 1000)}])
    groups = plan_slots(j, ["a"], gateways=2)
    shares = dict(zip((g[0][1] for g in groups), budget_shares(j, groups)))
    assert shares == pytest.approx({0: 0.75, 1: 0.25})


def test_a_split_key_and_two_routes() -> None:
    j = job(
        [
            {"name": "a", "model": "compat:m", "base_url": "http://127.0.0.1:1/v1", "keys": keys(600), "gateways": 2},
            {"name": "b", "model": "compat:n", "base_url": "http://127.0.0.1:1/v1", "keys": keys(600, 600)},
        ]
    )
    groups = plan_slots(j, ["a", "b"], gateways=2)
    assert len(groups) == 2
    # the split key is held half in each gateway; b's two keys are dealt one each
    assert all(sum(s for r, _, s in g if r == "a") == pytest.approx(0.5) for g in groups)
    shares = budget_shares(j, groups)
    assert shares == pytest.approx([0.5, 0.5]) and sum(shares) == pytest.approx(1.0)


def test_no_keyed_routes_share_evenly() -> None:
    assert budget_shares(job([{"name": "s", "model": "sim:m"}]), [[], []]) == [0.5, 0.5]

from __future__ import annotations

import logging

import pytest

from synth.providers.pricing import cost, estimate_price, price_for, table_price
from synth.records import Usage
from synth.spec import JobSpec, PriceSpec


def p(i: float, o: float) -> PriceSpec:
    return PriceSpec(input_per_mtok=i, output_per_mtok=o)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai:gpt-4o", (2.50, 10.00)),
        ("openai:gpt-4o-mini", (0.15, 0.60)),
        ("openai:gpt-4o-mini-2024-07-18", (0.15, 0.60)),  # dated version -> its family
        ("openai:gpt-4o-2024-08-06", (2.50, 10.00)),
        ("openai:gpt-4.1-nano", (0.10, 0.40)),
        ("openai:gpt-5-mini", (0.25, 2.00)),
        ("openai:o4-mini", (1.10, 4.40)),
        ("openrouter:openai/gpt-4o-mini", (0.15, 0.60)),  # vendor path stripped
        ("gemini:gemini-2.5-flash-lite", (0.10, 0.40)),  # longest prefix wins over gemini-2.5-flash
        ("gemini:gemini-2.5-flash", (0.30, 2.50)),
        ("gemini:gemini-2.5-pro", (1.25, 10.00)),
        ("gemini:gemini-2.0-flash-001", (0.10, 0.40)),
        ("openai:text-embedding-3-small", (0.02, 0.0)),
    ],
)
def test_table_lookup(model: str, expected: tuple[float, float]) -> None:
    price = price_for(model)
    assert price is not None
    assert (price.input_per_mtok, price.output_per_mtok) == expected


def test_prefix_needs_a_boundary() -> None:
    # "o3" must not price "o30-preview"; "gpt-4o" must not price "gpt-4omni"
    assert table_price("o30-preview") is None
    assert table_price("gpt-4omni") is None


def test_sim_is_free_and_estimates_the_named_model() -> None:
    assert price_for("sim:default") == p(0, 0)
    assert price_for("sim:gpt-4o-mini") == p(0, 0)
    assert estimate_price("sim:gpt-4o-mini") == p(0.15, 0.60)
    assert estimate_price("sim:gemini:gemini-2.5-flash") == p(0.30, 2.50)
    assert estimate_price("sim:default") is None
    assert estimate_price("openai:gpt-4o") == p(2.50, 10.00)


def test_overrides_from_the_job_file_win() -> None:
    job = JobSpec.model_validate(
        {
            "name": "j",
            "count": 1,
            "generator": {"kind": "structured"},
            "prices": {
                "openai:gpt-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 2},
                "my-model": {"input_per_mtok": 3, "output_per_mtok": 4},
            },
        }
    )
    assert price_for("openai:gpt-4o-mini", job.prices) == p(1, 2)
    assert price_for("openrouter:openai/gpt-4o-mini", job.prices) == p(1, 2)  # same bare name
    assert price_for("compat:my-model", job.prices) == p(3, 4)
    # a provider's own price beats both
    assert price_for("openai:gpt-4o-mini", job.prices, provider_price=p(9, 9)) == p(9, 9)
    # the sim stays free even when the real model is overridden, but its estimate follows the override
    assert price_for("sim:gpt-4o-mini", job.prices) == p(0, 0)
    assert estimate_price("sim:gpt-4o-mini", job.prices) == p(1, 2)
    assert price_for("sim:x", {"sim:x": p(5, 5)}) == p(5, 5)


def test_unknown_model_is_free_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="synth.providers.pricing"):
        assert price_for("compat:no-such-model-7f3a") is None
        assert price_for("compat:no-such-model-7f3a") is None
    warnings = [r for r in caplog.records if "no-such-model-7f3a" in r.getMessage()]
    assert len(warnings) == 1
    assert "prices:" in warnings[0].getMessage()
    assert cost(Usage(prompt_tokens=10**6, completion_tokens=10**6), None) == 0.0


def test_cost_arithmetic() -> None:
    usage = Usage(prompt_tokens=2_000_000, completion_tokens=500_000, total_tokens=2_500_000)
    assert cost(usage, p(0.15, 0.60)) == pytest.approx(0.30 + 0.30)
    assert cost(Usage(prompt_tokens=1000, completion_tokens=100), price_for("openai:gpt-4o")) == pytest.approx(
        1000 * 2.5 / 1e6 + 100 * 10 / 1e6
    )

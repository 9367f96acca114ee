"""What a call costs: a built-in price table, overridable from the job file.

The table is the price columns of the model table, ``synth/data/models.yaml``, which also holds
each model's capabilities (:mod:`synth.providers.capabilities`). Prices are USD per million tokens at the providers' standard (non-batch) list prices of mid-2025;
they move, so a job may override any of them (``prices:`` keyed by model string, or a provider's
``price:``). An unknown model costs 0 and is warned about once, never an error.

The offline ``sim`` provider is free, but ``sim:<real model>`` (e.g. ``sim:gpt-4o-mini``) can
report what the job would cost on that model: see :func:`estimate_price`. ::

    price = price_for("openai:gpt-4o-mini-2024-07-18", job.prices)
    usd = cost(completion.usage, price)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from synth.records import Usage
from synth.spec import PriceSpec

log = logging.getLogger(__name__)

MODELS_FILE = Path(__file__).resolve().parents[1] / "data" / "models.yaml"


def _load_models() -> dict[str, dict[str, Any]]:
    """The built-in model table (synth/data/models.yaml): price and capabilities per model name."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(MODELS_FILE, encoding="utf-8") as f:
        return {str(k).lower(): dict(v) for k, v in (yaml.load(f, Loader=loader) or {}).items()}


# model name -> its row of the table; price and capabilities are defined there once
MODELS: dict[str, dict[str, Any]] = _load_models()
# model name -> (input, output) USD per million tokens
TABLE: dict[str, tuple[float, float]] = {
    name: (float(row["input"]), float(row["output"])) for name, row in MODELS.items() if "input" in row
}
FREE = PriceSpec(input_per_mtok=0.0, output_per_mtok=0.0)
_warned: set[str] = set()


def _bare(model: str) -> tuple[str, str]:
    """``openrouter:openai/gpt-4o`` -> (``openrouter``, ``gpt-4o``); ``models/x`` -> ``x``."""
    kind, sep, name = model.partition(":")
    if not sep:
        kind, name = "", model
    name = name.strip().lower().rsplit("/", 1)[-1]
    return kind.strip().lower(), name


@lru_cache(maxsize=1024)
def known_model(name: str) -> str | None:
    """The table's name for a model name, matching dated or suffixed versions by the longest known
    prefix (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``, ``gemini-2.5-flash-001`` -> ``gemini-2.5-flash``)."""
    name = _bare(name)[1] if ":" in name or "/" in name else name.strip().lower()
    best = None
    for known in MODELS:
        if (name == known or name.startswith(known + "-") or name.startswith(known + "@")) and (
            best is None or len(known) > len(best)
        ):
            best = known
    return best


@lru_cache(maxsize=1024)
def table_price(name: str) -> PriceSpec | None:
    """The table's price for a model name (see :func:`known_model`), or None."""
    best = known_model(name)
    if best is None or best not in TABLE:
        return None
    i, o = TABLE[best]
    return PriceSpec(input_per_mtok=i, output_per_mtok=o)


def _override(model: str, overrides: Mapping[str, PriceSpec] | None) -> PriceSpec | None:
    if not overrides:
        return None
    if model in overrides:
        return overrides[model]
    name = _bare(model)[1]
    for key, price in overrides.items():  # "gpt-4o" also prices "openai:gpt-4o", and the reverse
        if _bare(key)[0] != "sim" and _bare(key)[1] == name:
            return price
    return None


def price_for(
    model: str,
    overrides: Mapping[str, PriceSpec] | None = None,
    *,
    provider_price: PriceSpec | None = None,
    warn: bool = True,
) -> PriceSpec | None:
    """The price of ``kind:model``: the provider's ``price``, then the job's ``prices`` (by full
    model string, then by bare name), then the table. ``sim:*`` is free. Unknown -> None (and a
    one-time warning, unless ``warn`` is false: a look at the table, not a call about to be priced);
    :func:`cost` treats None as free."""
    if provider_price is not None:
        return provider_price
    kind, name = _bare(model)
    if kind == "sim":  # free, unless the job prices this exact sim model
        return (overrides or {}).get(model, FREE)
    found = _override(model, overrides)
    if found is not None:
        return found
    found = table_price(name)
    if found is None and warn and model not in _warned:
        _warned.add(model)
        log.warning(
            "no price known for %s: its calls are counted as free; add it under 'prices:' in the job file", model
        )
    return found


def estimate_price(model: str, overrides: Mapping[str, PriceSpec] | None = None) -> PriceSpec | None:
    """What the job would cost for real. For ``sim:<name>`` that is the price of ``<name>``
    (``sim:gpt-4o-mini``, ``sim:gemini:gemini-2.5-flash``); None when ``<name>`` is not a priced
    model (``sim:default``). Other models: same as :func:`price_for`."""
    kind, sep, rest = model.partition(":")
    if kind.strip().lower() != "sim":
        return price_for(model, overrides)
    found = _override(rest, overrides) if sep else None
    if found is not None:
        return found
    return table_price(_bare(rest)[1]) if sep else None


def cost(usage: Usage, price: PriceSpec | None) -> float:
    """USD for one call's usage."""
    if price is None:
        return 0.0
    return (usage.prompt_tokens * price.input_per_mtok + usage.completion_tokens * price.output_per_mtok) / 1e6


__all__ = ["FREE", "MODELS", "TABLE", "cost", "estimate_price", "known_model", "price_for", "table_price"]

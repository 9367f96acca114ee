"""What a call costs: a built-in price table, overridable from the job file.

Prices are USD per million tokens at the providers' standard (non-batch) list prices of mid-2025;
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

from synth.records import Usage
from synth.spec import PriceSpec

log = logging.getLogger(__name__)

# model name -> (input, output) USD per million tokens
TABLE: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
    # Google (Gemini API, prompts up to 200k tokens)
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-embedding-001": (0.15, 0.0),
    "text-embedding-004": (0.0, 0.0),
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
def table_price(name: str) -> PriceSpec | None:
    """The table entry for a model name, matching dated or suffixed versions by the longest known
    prefix (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``, ``gemini-2.5-flash-001`` -> ``gemini-2.5-flash``)."""
    best = None
    for known in TABLE:
        if (name == known or name.startswith(known + "-") or name.startswith(known + "@")) and (
            best is None or len(known) > len(best)
        ):
            best = known
    if best is None:
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
    model: str, overrides: Mapping[str, PriceSpec] | None = None, *, provider_price: PriceSpec | None = None
) -> PriceSpec | None:
    """The price of ``kind:model``: the provider's ``price``, then the job's ``prices`` (by full
    model string, then by bare name), then the table. ``sim:*`` is free. Unknown -> None (and a
    one-time warning); :func:`cost` treats None as free."""
    if provider_price is not None:
        return provider_price
    kind, name = _bare(model)
    if kind == "sim":  # free, unless the job prices this exact sim model
        return (overrides or {}).get(model, FREE)
    found = _override(model, overrides)
    if found is not None:
        return found
    found = table_price(name)
    if found is None and model not in _warned:
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


__all__ = ["FREE", "TABLE", "cost", "estimate_price", "price_for", "table_price"]

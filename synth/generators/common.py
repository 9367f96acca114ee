"""Helpers every generator uses: the engine's column names, seeded numpy generators, durations,
inlined pydantic schemas and UTC datetimes."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pydantic import BaseModel

from synth.errors import ConfigError
from synth.records import ENVELOPE_COLUMNS  # re-exported: generators check their column names


def numpy_rng(seed: int, *salt: object) -> np.random.Generator:
    """A numpy Generator private to ``seed`` and ``salt`` (e.g. a unit's seed and a purpose)."""
    digest = hashlib.blake2b(repr((seed, *salt)).encode(), digest_size=16).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest, "little")))


_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in ``'1s'``, ``'5min'``, ``'1h'``, ``'1d'``, ``'2w'`` (a bare number is seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text).lower())
        if not m or m.group(2).rstrip("s") not in _UNITS and m.group(2) not in _UNITS:
            raise ConfigError(f"{what} {text!r} is not a duration; write e.g. '30s', '5min', '1h' or '1d'")
        unit = m.group(2) if m.group(2) in _UNITS else m.group(2).rstrip("s")
        seconds = float(m.group(1)) * _UNITS[unit]
    if not seconds > 0:
        raise ConfigError(f"{what} {text!r} must be positive")
    return seconds


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model.model_json_schema()`` with every ``$ref`` replaced by its definition, so providers
    that do not follow references still see the whole (non-recursive) schema."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**defs[node["$ref"].rsplit("/", 1)[-1]], **rest})
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


__all__ = ["ENVELOPE_COLUMNS", "inline_schema", "numpy_rng", "parse_duration", "utc"]

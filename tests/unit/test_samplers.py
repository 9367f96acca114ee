"""Samplers: each kind has its distribution, repeats with its seed, and rejects bad specs clearly."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel, Field, TypeAdapter

from synth.errors import ConfigError
from synth.generators.samplers import (
    SAMPLER_SPECS,
    SamplerSpec,
    build_sampler,
    inline_schema,
    numpy_rng,
    parse_duration,
    parse_sampler,
    sample,
)

N = 100_000
Z99 = 2.576


def draw(spec: dict, n: int = N, seed: int = 1):
    return build_sampler(spec).sample(numpy_rng(seed, "t"), n)


def test_choice_weights_are_respected_within_a_99_percent_interval():
    x = draw({"kind": "choice", "values": ["a", "b", "c"], "weights": [6, 3, 1]})
    for value, p in zip("abc", (0.6, 0.3, 0.1)):
        assert abs((x == value).mean() - p) < Z99 * np.sqrt(p * (1 - p) / N)
    assert build_sampler({"kind": "choice", "values": [1, 2]}).arrow_type == pa.int64()
    assert build_sampler({"kind": "choice", "values": [1, 2.5]}).arrow_type == pa.float64()
    assert build_sampler({"kind": "choice", "values": ["x", 2]}).arrow_type == pa.string()


@pytest.mark.parametrize(
    "spec, mean, std",
    [
        ({"kind": "uniform", "low": 2, "high": 8}, 5.0, 6 / np.sqrt(12)),
        ({"kind": "normal", "mean": -3, "std": 2}, -3.0, 2.0),
        ({"kind": "exponential", "mean": 4}, 4.0, 4.0),
        ({"kind": "poisson", "lam": 7}, 7.0, np.sqrt(7)),
        ({"kind": "uniform", "low": 1, "high": 6, "integer": True}, 3.5, np.sqrt(35 / 12)),
    ],
)
def test_numeric_kinds_have_their_mean_and_spread(spec, mean, std):
    x = np.asarray(draw(spec), dtype=float)
    assert abs(x.mean() - mean) < Z99 * std / np.sqrt(N)
    assert abs(x.std() - std) < 0.02 * std


def test_lognormal_median_bounds_rounding_and_integers():
    x = draw({"kind": "lognormal", "median": 20, "sigma": 0.7})
    assert abs(np.median(x) / 20 - 1) < 0.02
    clipped = draw({"kind": "normal", "mean": 0, "std": 10, "min": -1, "max": 2, "decimals": 1})
    assert clipped.min() == -1 and clipped.max() == 2 and np.allclose(clipped, np.round(clipped, 1))
    dice = draw({"kind": "uniform", "low": 1, "high": 6, "integer": True})
    assert dice.dtype == np.int64 and set(np.unique(dice)) == {1, 2, 3, 4, 5, 6}
    assert build_sampler({"kind": "normal", "integer": True}).arrow_type == pa.int64()


def test_bool_const_and_datetime():
    assert abs(draw({"kind": "bool", "p": 0.2}).mean() - 0.2) < Z99 * np.sqrt(0.16 / N)
    assert set(draw({"kind": "const", "value": "x"}, 10)) == {"x"}
    lo, hi = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 2, 1, tzinfo=timezone.utc)
    ts = draw({"kind": "datetime", "start": lo.isoformat(), "end": hi.isoformat()})
    assert ts.min() >= np.datetime64("2024-01-01") and ts.max() < np.datetime64("2024-02-01")
    assert pa.array(ts, type=build_sampler({"kind": "datetime", "start": lo, "end": hi}).arrow_type).null_count == 0
    iso = build_sampler({"kind": "datetime", "start": lo, "end": hi, "format": "iso"}).sample_one(numpy_rng(1))
    assert iso.startswith("2024-01") and iso.endswith("Z")
    day = build_sampler({"kind": "datetime", "start": lo, "end": hi, "format": "date"}).sample_one(numpy_rng(1))
    assert isinstance(day, (date, np.datetime64))


def test_ids_are_valid_unique_and_repeat_with_the_seed():
    ids = draw({"kind": "id"}, 1000)
    assert len(set(ids)) == 1000 and all(uuid.UUID(i).version == 4 for i in ids)
    assert list(ids) == list(draw({"kind": "id"}, 1000))
    hexes = draw({"kind": "id", "format": "hex", "length": 11, "prefix": "ord_"}, 50)
    assert all(len(h) == 15 and h.startswith("ord_") for h in hexes)
    assert draw({"kind": "id", "format": "int"}, 10).dtype == np.int64


def test_faker_is_seeded_and_typed():
    names = draw({"kind": "faker", "provider": "name"}, 50, seed=3)
    assert list(names) == list(draw({"kind": "faker", "provider": "name"}, 50, seed=3))
    assert list(names) != list(draw({"kind": "faker", "provider": "name"}, 50, seed=4))
    assert all("@" in e for e in draw({"kind": "faker", "provider": "email"}, 20))
    ints = build_sampler({"kind": "faker", "provider": "pyint", "args": {"min_value": 3, "max_value": 5}})
    assert ints.arrow_type == pa.int64() and set(ints.sample(numpy_rng(1), 200)) <= {3, 4, 5}
    dob = build_sampler({"kind": "faker", "provider": "date_of_birth"})
    assert dob.arrow_type == pa.string() and len(dob.sample_one(numpy_rng(1))) == 10
    french = draw({"kind": "faker", "provider": "city", "locale": "fr_FR"}, 5)
    assert len(french) == 5


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "choice", "values": ["a", "b", "c"], "weights": [1, 1, 1]},
        {"kind": "normal", "mean": 1},
        {"kind": "lognormal"},
        {"kind": "poisson", "lam": 3},
        {"kind": "bool"},
        {"kind": "id"},
        {"kind": "faker", "provider": "company"},
        {"kind": "uniform", "integer": True, "high": 9},
        {"kind": "datetime", "start": "2024-01-01", "end": "2024-01-02", "format": "iso"},
        {"kind": "datetime", "start": "2024-01-01", "end": "2024-01-02"},
    ],
)
def test_every_kind_is_deterministic_and_sample_one_agrees(spec):
    a, b = sample(spec, numpy_rng(9, "x"), 64), sample(spec, numpy_rng(9, "x"), 64)
    assert list(a) == list(b)
    one = build_sampler(spec).sample_one(numpy_rng(9, "x"))
    first = a[0].item() if isinstance(a[0], np.generic) else a[0]
    assert one == first and not isinstance(one, np.generic)


def test_streams_differ_by_seed_and_salt():
    spec = {"kind": "uniform"}
    assert not np.array_equal(sample(spec, numpy_rng(1, "a"), 8), sample(spec, numpy_rng(1, "b"), 8))
    assert not np.array_equal(sample(spec, numpy_rng(1, "a"), 8), sample(spec, numpy_rng(2, "a"), 8))


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"kind": "choice", "values": ["a", "b"], "weights": [1]}, "one per value"),
        ({"kind": "choice", "values": ["a"], "weights": [-1]}, "positive sum"),
        ({"kind": "gamma"}, "does not match any of the expected tags"),
        ({"kind": "normal", "std": -1}, "greater than or equal to 0"),
        ({"kind": "faker", "provider": "_private"}, "not a method name"),
        ({"kind": "uniform", "lo": 1}, "Extra inputs"),
    ],
)
def test_bad_specs_are_config_errors(spec, words):
    with pytest.raises(ConfigError, match=words):
        parse_sampler(spec, "vars.x")


def test_bad_specs_at_build_time():
    with pytest.raises(ConfigError, match="faker has no provider 'nonsense'"):
        build_sampler({"kind": "faker", "provider": "nonsense"})
    with pytest.raises(ConfigError, match="below low"):
        build_sampler({"kind": "uniform", "low": 3, "high": 1})
    with pytest.raises(ConfigError, match="end must be after start"):
        build_sampler({"kind": "datetime", "start": "2024-02-01", "end": "2024-01-01"})
    with pytest.raises(ConfigError, match="not a sampler spec"):
        build_sampler(42)


def test_union_is_usable_in_other_models_and_extensible():
    class Template(BaseModel):
        vars: dict[str, SamplerSpec] = Field(default_factory=dict)

    t = Template.model_validate({"vars": {"tone": {"kind": "choice", "values": ["dry", "warm"]}}})
    assert t.vars["tone"].kind == "choice"
    assert len(SAMPLER_SPECS) == len(TypeAdapter(SamplerSpec).json_schema()["oneOf"])

    class Squares(BaseModel):  # another module's kind: anything with build() works
        kind: str = "squares"

        def build(self):
            return build_sampler({"kind": "poisson", "lam": 2})

    assert len(build_sampler(Squares()).sample(numpy_rng(1), 5)) == 5


def test_durations_and_inline_schemas():
    assert parse_duration("5min") == 300 and parse_duration("1h") == 3600 and parse_duration("2days") == 172800
    assert parse_duration("250ms") == 0.25 and parse_duration(7) == 7 and parse_duration("1w") == 604800
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("3 fortnights")
    with pytest.raises(ConfigError, match="must be positive"):
        parse_duration("0s")

    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        a: Inner
        b: list[Inner]

    schema = inline_schema(Outer)
    assert "$defs" not in schema and "$ref" not in str(schema)
    assert schema["properties"]["b"]["items"]["properties"]["x"]["type"] == "integer"

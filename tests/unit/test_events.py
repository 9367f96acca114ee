"""Events: Poisson rates within their intervals, funnels respected, cohorts disjoint, texts batched."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from synth.errors import ConfigError
from synth.generators.base import GenContext, Unit
from synth.generators.eventmodel import EventCatalog, Rate, RateProfile, catalog_from_plan, plan_model
from synth.generators.events import EventsGenerator, EventsOptions, check_options, plan_catalog
from synth.generators.eventsim import arrivals
from synth.generators.samplers import numpy_rng
from synth.providers.clients.sim import SimProvider
from synth.records import Completion
from synth.spec import load_spec, parse_job

ROOT = Path(__file__).resolve().parents[2]
Z99 = 2.576
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()  # a Monday


class SimLLM:
    """The offline sim provider behind the generators' LLM protocol; records requests."""

    def __init__(self) -> None:
        self.provider = SimProvider()
        self.requests: list[Any] = []

    async def complete(self, request: Any) -> Completion:
        self.requests.append(request)
        return await self.provider.complete(request, None, timeout=10)

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


class EchoLLM:
    """Writes, for each listed event, a text quoting its line, so placement can be checked;
    ``short`` answers drop that many texts."""

    def __init__(self, short: int = 0) -> None:
        self.requests: list[Any] = []
        self.short = short

    async def complete(self, request: Any) -> Completion:
        self.requests.append(request)
        lines = re.findall(r"^\d+\. (.*)$", request.messages[-1].content, flags=re.M)
        texts = [f"about {line}" for line in lines]
        return Completion(request_id=request.id, parsed={"texts": texts[: len(texts) - self.short]})

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


def job_for(options: dict[str, Any], count: int) -> Any:
    return parse_job(
        {"name": "ev", "count": count, "seed": 5, "generator": {"kind": "events", **options}}, env={}, check_keys=False
    )


def units(gen: EventsGenerator, n: int, llm: Any = None, seed: int = 0) -> list[Any]:
    ctx = GenContext(job="ev", seed=5, llm=llm or EchoLLM())

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(gen.generate(Unit(index=i, id=f"ev-{i}", shard=0, seed=seed * 1000 + i), ctx) for i in range(n))
        )

    return asyncio.run(go())


def within(count: float, expected: float, z: float = Z99) -> bool:
    return abs(count - expected) < z * np.sqrt(expected)


# ---------------------------------------------------------------- rates


def test_rate_strings():
    assert Rate.model_validate("100/sec") == Rate(per_second=100.0)
    assert Rate.model_validate("5/min").per_second == pytest.approx(5 / 60)
    r = Rate.model_validate("3 / user / day")
    assert r.per_user and r.per_second == pytest.approx(3 / 86400)
    assert Rate.model_validate(2).per_second == 2.0
    assert Rate.model_validate("0.5/h").per_second == pytest.approx(1 / 7200)
    with pytest.raises(ValueError, match="not like"):
        Rate.model_validate("lots/day")


def test_constant_rate_arrivals_inside_a_99_percent_interval():
    t = arrivals(numpy_rng(1, "a"), 5.0, RateProfile(), T0, 3600.0)
    assert within(t.size, 18000) and np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 3600


def test_daily_and_weekly_profile_shapes_arrivals():
    profile = RateProfile(daily_amplitude=0.8, peak_hour=15, weekend_factor=0.5)
    days, base = 28, 0.2
    t = arrivals(numpy_rng(2, "b"), base, profile, T0, days * 86400.0)
    assert within(t.size, base * days * 86400)  # the stated rate is the long-run mean
    grid = T0 + np.arange(0, days * 86400, 30.0)
    hour = ((grid % 86400) // 3600).astype(int)
    expected = np.bincount(hour, weights=profile.factor(grid) * base * 30.0, minlength=24)
    got = np.bincount((((T0 + t) % 86400) // 3600).astype(int), minlength=24)
    assert all(within(g, e, 3.3) for g, e in zip(got, expected))  # 99.9% per hour, 24 hours
    assert got.argmax() in (14, 15) and got.argmin() in (2, 3)
    weekday = ((np.floor((T0 + t) / 86400).astype(int) + 3) % 7) >= 5
    per_day_weekend, per_day_week = weekday.sum() / 8, (~weekday).sum() / 20
    assert abs(per_day_weekend / per_day_week - 0.5) < 0.03


RATES = {
    "users": 600,
    "duration": "2d",
    "catalog": {
        "types": [
            {"name": "tick", "rate": "10/min", "payload": {"v": {"kind": "uniform"}}},
            {"name": "visit", "rate": "3/user/day", "payload": {"page": {"kind": "choice", "values": ["a", "b"]}}},
        ]
    },
}


def test_generator_rates_split_evenly_across_units_and_cohorts_are_disjoint():
    gen = EventsGenerator(RATES, job=job_for(RATES, 6))
    tables = [r.rows for r in units(gen, 6)]
    counts = [Counter(t["event_type"].to_pylist()) for t in tables]
    assert within(sum(c["tick"] for c in counts), 10 * 60 * 48)
    assert within(sum(c["visit"] for c in counts), 3 * 600 * 2)
    assert all(within(c["tick"], 10 * 60 * 48 / 6) and within(c["visit"], 3 * 100 * 2) for c in counts)
    seen: set[str] = set()
    for i, t in enumerate(tables):
        users = set(t["user_id"].to_pylist())
        assert users <= {f"u{k:03d}" for k in range(i * 100, (i + 1) * 100)}
        assert not users & seen
        seen |= users
    t = tables[0]
    assert t.schema == gen.arrow_schema() and gen.partition_by() == ["date", "event_type"]
    ticks = t.filter(pc.equal(t["event_type"], "tick"))
    assert ticks["page"].null_count == ticks.num_rows and ticks["v"].null_count == 0
    assert t["session_id"].null_count == t.num_rows and t["seq"].null_count == t.num_rows
    ts = t["timestamp"].to_numpy()
    assert np.all(np.diff(ts) >= np.timedelta64(0)) and ts.min() >= np.datetime64("2024-01-01")
    assert ts.max() < np.datetime64("2024-01-03") and len(set(t["event_id"].to_pylist())) == t.num_rows


# ---------------------------------------------------------------- funnels

FUNNEL = {"a": {"b": 0.5, "a": 0.2}, "b": {"c": 0.6}, "c": {"a": 0.3, "end": 0.7}}
P_END = {"a": 0.3, "b": 0.4, "c": 0.7}
ENTRY = {"a": 0.6, "b": 0.4}
SESSIONS = {
    "users": 2000,
    "duration": "2d",
    "catalog": {
        "types": [{"name": x} for x in "abc"],
        "sessions": {
            "rate": "5/user/day",
            "entry": ENTRY,
            "transitions": FUNNEL,
            "gap": {"kind": "uniform", "low": 1, "high": 10},
        },
    },
}


def test_funnel_transition_frequencies_within_99_percent_intervals():
    z = 3.26  # nine proportions checked: 99.89% each keeps the family at 99% (Bonferroni)
    gen = EventsGenerator(SESSIONS, job=job_for(SESSIONS, 1))
    t = units(gen, 1)[0].rows.sort_by([("session_id", "ascending"), ("seq", "ascending")])
    sess, seq = t["session_id"].to_numpy(zero_copy_only=False), t["seq"].to_numpy()
    kind = np.array(t["event_type"].to_pylist())
    secs = t["timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6 - T0
    assert t["user_id"].null_count == 0 and 2 * 5 * 2000 * 0.9 < (seq == 0).sum()

    first = kind[seq == 0]
    for k, p in ENTRY.items():
        assert abs((first == k).mean() - p) < z * np.sqrt(p * (1 - p) / first.size)
    same = sess[1:] == sess[:-1]
    assert np.all(seq[1:][same] == seq[:-1][same] + 1)  # consecutive positions, in time order
    gaps = secs[1:][same] - secs[:-1][same]
    assert gaps.min() >= 1 - 1e-6 and gaps.max() <= 10
    for src, row in FUNNEL.items():
        nxt = kind[1:][same & (kind[:-1] == src)]
        for dst, p in row.items():
            if dst == "end":
                continue
            q = p / (1 - P_END[src])  # given that the session went on
            assert abs((nxt == dst).mean() - q) <= z * np.sqrt(q * (1 - q) / nxt.size), (src, dst)
        # ends: last events of a session, away from the window edge (no truncation there)
        last = np.append(~same, True)
        early = (kind == src) & (secs < 2 * 86400 - 10)
        p = P_END[src]
        got = (last & early).sum() / early.sum()
        assert abs(got - p) < z * np.sqrt(p * (1 - p) / early.sum()), src


def test_max_events_caps_sessions():
    opts = {
        **SESSIONS,
        "users": 50,
        "catalog": {
            **SESSIONS["catalog"],
            "sessions": {
                **SESSIONS["catalog"]["sessions"],
                "max_events": 2,
                "transitions": {"a": {"a": 1.0}, "b": {"b": 1.0}},
            },
        },
    }
    opts["catalog"]["types"] = [{"name": "a"}, {"name": "b"}, {"name": "c", "rate": "1/user/day"}]
    t = units(EventsGenerator(opts, job=job_for(opts, 1)), 1)[0].rows
    seq = t["seq"].drop_null().to_numpy()
    assert seq.max() == 1 and (seq == 1).sum() > 0.95 * (seq == 0).sum()


# ---------------------------------------------------------------- payloads, users, texts, determinism

SHOP = {
    "users": 300,
    "duration": "1d",
    "text_batch": 7,
    "user_fields": {"country": {"kind": "choice", "values": ["US", "FR", "DE"]}},
    "catalog": {
        "types": [
            {"name": "view", "payload": {"ms": {"kind": "lognormal", "median": 300, "integer": True}}},
            {
                "name": "buy",
                "payload": {
                    "price": {"kind": "uniform", "low": 10, "high": 99, "decimals": 2},
                    "email": {"kind": "faker", "provider": "email"},
                },
                "text": {"review": {"prompt": "a one-line review", "max_words": 12}},
            },
        ],
        "sessions": {"rate": "4/user/day", "entry": {"view": 1}, "transitions": {"view": {"view": 0.5, "buy": 0.3}}},
    },
}


def test_payloads_user_fields_and_batched_texts():
    llm = EchoLLM()
    gen = EventsGenerator(SHOP, job=job_for(SHOP, 3))
    (res,) = units(gen, 1, llm=llm)
    t = res.rows
    buys = t.filter(pc.equal(t["event_type"], "buy"))
    k = buys.num_rows
    assert k > 50 and len(llm.requests) == -(-k // 7) and len(res.calls) == len(llm.requests)
    assert all(
        r.json_schema["properties"]["texts"]["minItems"] == r.json_schema["properties"]["texts"]["maxItems"]
        for r in llm.requests
    )
    for row in buys.to_pylist():  # each text was written for its own row
        assert f"price={row['price']:.4g}" in row["review"] and f"country={row['country']}" in row["review"]
    views = t.filter(pc.equal(t["event_type"], "view"))
    assert views["review"].null_count == views.num_rows and views["price"].null_count == views.num_rows
    assert t.schema.field("ms").type == pa.int64() and views["ms"].null_count == 0
    by_user: dict[str, set[str]] = {}
    for u, c in zip(t["user_id"].to_pylist(), t["country"].to_pylist()):
        by_user.setdefault(u, set()).add(c)
    assert all(len(c) == 1 for c in by_user.values())  # a user's fields hold on every event
    assert res.stats["texts_padded"] == 0


def test_short_text_answers_are_padded_and_counted():
    (res,) = units(EventsGenerator(SHOP, job=job_for(SHOP, 3)), 1, llm=EchoLLM(short=1))
    buys = res.rows.filter(pc.equal(res.rows["event_type"], "buy"))
    assert res.stats["texts_padded"] == len(res.calls) and buys["review"].to_pylist().count("") == len(res.calls)


def test_seeded_units_are_identical():
    gen = EventsGenerator(SHOP, job=job_for(SHOP, 3))
    a, b = units(gen, 2, seed=1), units(EventsGenerator(SHOP, job=job_for(SHOP, 3)), 2, seed=1)
    assert all(x.rows.equals(y.rows) for x, y in zip(a, b))
    assert not a[0].rows.equals(units(gen, 1, seed=2)[0].rows)


# ---------------------------------------------------------------- planned catalogs


def test_planned_catalog_is_validated_used_and_planned_once():
    opts = {"scenario": "a podcast app: plays, skips, likes, follows and comments", "users": 40, "duration": "1d"}
    gen = EventsGenerator(opts, job=job_for(opts, 4))
    assert gen.arrow_schema() is None
    llm = SimLLM()
    results = units(gen, 4, llm=llm)
    plans = [r for r in llm.requests if r.metadata["purpose"] == "events.catalog"]
    assert len(plans) == 1  # units waiting for the plan share it
    assert sum(c.request_id == plans[0].id for r in results for c in r.calls) == 1  # its cost is counted once
    schema = gen.arrow_schema()
    assert schema is not None and all(r.rows.schema == schema for r in results)
    assert sum(r.rows.num_rows for r in results) > 0


def test_any_schema_valid_plan_becomes_a_valid_catalog():
    sim, model = SimProvider(), plan_model(6)
    gen = EventsGenerator({"scenario": "a bank's mobile app", "users": 10, "max_types": 6})
    for i in range(30):
        parsed = asyncio.run(sim.complete(gen.plan_request("ev", i), None, timeout=5)).parsed
        catalog = catalog_from_plan(model.model_validate(parsed))
        assert isinstance(catalog, EventCatalog)
        EventsGenerator({"catalog": catalog.model_dump(), "users": 10})  # samplers build, columns agree
    cat, completion = asyncio.run(plan_catalog(gen, SimLLM(), "ev", 1))
    assert completion.parsed and EventCatalog.model_validate(cat.model_dump(mode="json")) == cat


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"catalog": {"types": [{"name": "a"}]}}, "never occur"),
        (
            {"catalog": {"types": [{"name": "a", "rate": "1/sec"}], "sessions": {"rate": "1/min", "entry": {"b": 1}}}},
            "unknown type",
        ),
        (
            {
                "catalog": {
                    "types": [{"name": "a", "rate": 1}],
                    "sessions": {"rate": "1/min", "entry": {"a": 1}, "transitions": {"a": {"a": 0.8, "end": 0.5}}},
                }
            },
            "sums to 1.3",
        ),
        (
            {"catalog": {"types": [{"name": "a", "rate": 1, "payload": {"user_id": {"kind": "uniform"}}}]}},
            "output columns",
        ),
        ({"catalog": {"types": [{"name": "a", "rate": 1}, {"name": "a", "rate": 2}]}}, "repeat"),
        ({"catalog": {"types": [{"name": "a", "rate": "fast"}]}}, "not like"),
        ({"scenario": "anything", "catalog": {"types": [{"name": "a", "rate": 1}]}}, "exactly one"),
        ({}, "exactly one"),
        ({"scenario": "a shop", "users": 0}, "users >= 1"),
        ({"scenario": "a shop", "duration": "1d", "end": "2024-02-01"}, "not both"),
        ({"scenario": "a shop", "end": "2023-02-01"}, "window is empty"),
        ({"scenario": "a shop", "user_fields": {"job": {"kind": "uniform"}}}, "taken"),
    ],
)
def test_bad_options_fail_with_a_clear_line(bad: dict[str, Any], words: str):
    with pytest.raises(ConfigError, match=words) as err:
        check_options(bad)
    assert all(line.startswith("generator.") for line in str(err.value).splitlines())


def test_type_conflicts_and_empty_cohorts_are_refused():
    clash = {
        "catalog": {
            "types": [
                {"name": "a", "rate": 1, "payload": {"x": {"kind": "uniform"}}},
                {"name": "b", "rate": 1, "payload": {"x": {"kind": "id"}}},
            ]
        }
    }
    with pytest.raises(ConfigError, match="column 'x'"):
        EventsGenerator(clash)
    with pytest.raises(ConfigError, match=r"count \(50\) exceeds users \(10\)"):
        EventsGenerator({**RATES, "users": 10}, job=job_for(RATES, 50))


def test_example_job_file_validates_and_runs_one_cohort():
    spec = load_spec(ROOT / "jobs/examples/events.yaml", check_keys=False)
    assert spec.generator.kind == "events"
    options = EventsOptions.model_validate(spec.generator.options)
    gen = EventsGenerator(options, job=spec)
    (res,) = units(gen, 1, llm=SimLLM())
    t = res.rows
    assert t.schema == gen.arrow_schema() and res.stats["users"] == 1000
    kinds = Counter(t["event_type"].to_pylist())
    assert set(kinds) == {x.name for x in options.catalog.types} and kinds["purchase"] > 0
    assert t.filter(pc.equal(t["event_type"], "purchase"))["review"].null_count == 0

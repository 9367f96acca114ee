"""Time series: planted structure is recovered, labels are exact, runs repeat, plans are used."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from synth.errors import ConfigError, MalformedOutput, Transient
from synth.generators.base import GenContext, Unit
from synth.generators.timeseries import TimeseriesGenerator, TimeseriesOptions, check_options
from synth.generators.tsmodel import ANOMALY_KINDS, ar1_filter, correlation_factor, synthesize
from synth.generators.tsparams import FieldSpec, SeriesParams, from_plan, planning_model
from synth.providers.clients.sim import SimProvider
from synth.records import Completion
from synth.spec import load_spec, parse_job

ROOT = Path(__file__).resolve().parents[2]


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


class AnswerLLM:
    """Answers every request with a fixed parsed value, or raises a given error."""

    def __init__(self, parsed: Any = None, error: Exception | None = None) -> None:
        self.parsed, self.error, self.calls = parsed, error, 0

    async def complete(self, request: Any) -> Completion:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Completion(request_id=request.id, parsed=self.parsed)

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


def job_for(options: dict[str, Any], count: int = 8) -> Any:
    return parse_job(
        {"name": "ts", "count": count, "seed": 3, "generator": {"kind": "timeseries", **options}},
        env={},
        check_keys=False,
    )


def run(gen: TimeseriesGenerator, index: int = 0, seed: int = 11, llm: Any = None) -> pa.Table:
    ctx = GenContext(job="ts", seed=3, llm=llm or AnswerLLM())
    return asyncio.run(gen.generate(Unit(index=index, id=f"ts-{index}", shard=0, seed=seed), ctx)).rows


def series(
    params: dict[str, Any], n: int, fields: list[dict[str, Any]] | None = None, freq: str = "1h", seed: int = 11
) -> pa.Table:
    opts = {"fields": fields or [{"name": "v"}], "frequency": freq, "length": n, "params": params}
    return run(TimeseriesGenerator(opts, job=job_for(opts)), seed=seed)


def dominant_periods(x: np.ndarray, k: int) -> list[float]:
    spec = np.abs(np.fft.rfft(x - x.mean()))
    spec[0] = 0
    bins = np.argsort(spec)[::-1][:k]
    return sorted(x.size / b for b in bins)


# ---------------------------------------------------------------- planted structure is recovered


def test_fft_recovers_daily_and_weekly_periods_within_two_percent():
    n = 24 * 7 * 24  # 24 weeks of hourly points
    t = series(
        {
            "fields": {
                "v": {
                    "level": 50,
                    "noise": {"scale": 1.0},
                    "seasonality": [{"period": "1d", "amplitude": 5}, {"period": "7d", "amplitude": 8, "phase": 0.3}],
                }
            }
        },
        n,
    )
    found = dominant_periods(t["v"].to_numpy(), 2)
    for got_steps, want_s in zip(found, (86400, 604800)):
        assert abs(got_steps * 3600 - want_s) / want_s < 0.02


def test_fft_recovers_an_off_grid_period():
    t = series(
        {
            "fields": {
                "v": {
                    "noise": {"kind": "ar1", "scale": 0.5, "phi": 0.5},
                    "seasonality": [{"period": 37 * 60, "amplitude": 2}],
                }
            }
        },
        5000,
        freq="1min",
    )
    (got,) = dominant_periods(t["v"].to_numpy(), 1)
    assert abs(got * 60 - 37 * 60) / (37 * 60) < 0.02


def test_linear_trend_slope_by_least_squares():
    n, change, sigma = 4000, 80.0, 2.0
    t = series(
        {"fields": {"v": {"level": 10, "trend": {"kind": "linear", "change": change}, "noise": {"scale": sigma}}}}, n
    )
    x = np.arange(n)
    slope = np.polyfit(x, t["v"].to_numpy(), 1)[0]
    stderr = sigma / np.sqrt(((x - x.mean()) ** 2).sum())
    assert abs(slope - change / (n - 1)) < 4 * stderr


def test_noise_free_shapes_are_exact():
    n = 1001
    t = series(
        {
            "fields": {
                "p": {
                    "level": 0,
                    "trend": {"kind": "piecewise", "knots": [{"at": 0.5, "value": 10}, {"at": 1.0, "value": 4}]},
                },
                "e": {"level": 1, "trend": {"kind": "exponential", "change": 9, "curvature": 4}},
                "s": {"level": 0, "shifts": [{"at": 0.25, "delta": 3}, {"at": 0.75, "delta": -1}]},
                "d": {"level": 0, "seasonality": [{"period": "1d", "amplitude": 1, "phase": 0.5}]},
            }
        },
        n,
        fields=[{"name": k} for k in "pesd"],
    )
    p, e, s, d = (t[k].to_numpy() for k in "pesd")
    assert p[0] == 0 and p[500] == pytest.approx(10) and p[1000] == pytest.approx(4) and p[250] == pytest.approx(5)
    assert e[0] == pytest.approx(1) and e[-1] == pytest.approx(10)
    assert np.all(np.diff(e) > 0) and np.all(np.diff(e, 2) > 0)  # rising, ever faster
    assert set(np.unique(s)) == {0.0, 3.0, 2.0} and s[249] == 0 and s[250] == 3 and s[750] == 2
    hours = t["timestamp"].to_numpy().astype("datetime64[h]").astype(int) % 24
    assert set(hours[d > 0.999]) == {12}  # phase 0.5 of a daily cycle peaks at noon UTC


def test_ar1_filter_matches_the_recursion():
    rng = np.random.default_rng(0)
    for n in (1, 5, 63, 64, 65, 1000, 10_001):
        for phi in (-0.9, 0.5, 0.99):
            e = rng.standard_normal(n)
            want, prev = np.empty(n), 0.0
            for i in range(n):
                prev = phi * prev + e[i]
                want[i] = prev
            np.testing.assert_allclose(ar1_filter(e, phi), want, rtol=1e-9, atol=1e-9)


def test_noise_processes_have_their_statistics():
    n = 200_000
    t = series(
        {
            "fields": {
                "ar": {"level": 0, "noise": {"kind": "ar1", "scale": 2.0, "phi": 0.8}},
                "st": {"level": 0, "noise": {"kind": "student_t", "scale": 1.0, "df": 6}},
                "g": {"level": 0, "noise": {"kind": "gaussian", "scale": 3.0}},
            }
        },
        n,
        fields=[{"name": k} for k in ("ar", "st", "g")],
    )
    ar, st, g = (t[k].to_numpy() for k in ("ar", "st", "g"))
    assert abs(np.corrcoef(ar[:-1], ar[1:])[0, 1] - 0.8) < 0.01
    assert abs(ar.std() - 2.0) < 0.1
    assert abs(st.std() - 1.0) < 0.05
    kurt = lambda x: ((x - x.mean()) ** 4).mean() / x.var() ** 2 - 3  # noqa: E731
    assert kurt(st) > 1.5 and abs(kurt(g)) < 0.1  # t(6) has excess kurtosis 3; gaussian 0
    assert abs(g.std() - 3.0) < 0.03
    assert abs(np.corrcoef(g[:-1], g[1:])[0, 1]) < 0.01


def test_correlated_fields_and_invalid_matrices_are_repaired():
    n = 50_000
    t = series(
        {
            "fields": {"a": {"noise": {"scale": 1}}, "b": {"noise": {"scale": 5}}},
            "correlations": [{"a": "a", "b": "b", "rho": 0.7}],
        },
        n,
        fields=[{"name": "a"}, {"name": "b"}],
    )
    assert abs(np.corrcoef(t["a"].to_numpy(), t["b"].to_numpy())[0, 1] - 0.7) < 0.015
    bad = SeriesParams.model_validate(
        {
            "correlations": [
                {"a": "a", "b": "b", "rho": 0.99},
                {"a": "b", "b": "c", "rho": 0.99},
                {"a": "a", "b": "c", "rho": -0.99},
            ]
        }
    )
    factor = correlation_factor(bad, ["a", "b", "c"])
    assert factor is not None
    np.testing.assert_allclose(np.diag(factor @ factor.T), 1.0)


# ---------------------------------------------------------------- anomalies, missing values, ranges

FIELDS = [FieldSpec(name="a"), FieldSpec(name="b")]


def _with_and_without(params: dict[str, Any], n: int = 2000) -> tuple[Any, Any]:
    p = SeriesParams.model_validate(params)
    base = SeriesParams.model_validate({**params, "anomalies": []})
    kw = {"start_s": 1.7e9, "step_s": 60.0, "n": n, "seed": 5}
    return synthesize(p, FIELDS, **kw), synthesize(base, FIELDS, **kw)


def test_anomaly_labels_match_the_planted_anomalies_exactly():
    noise = {"a": {"noise": {"scale": 1}}, "b": {"noise": {"kind": "ar1", "scale": 1}}}
    got, clean = _with_and_without(
        {
            "fields": noise,
            "anomalies": [
                {"kind": "spike", "field": "a", "at": 0.2, "points": 3, "magnitude": 10},
                {"kind": "dip", "at": 0.5, "points": 5, "magnitude": 7},
                {"kind": "drift", "field": "b", "at": 0.8, "points": 20, "magnitude": 15},
            ],
        }
    )
    n = 2000
    starts = [round(0.2 * (n - 3)), round(0.5 * (n - 5)), round(0.8 * (n - 20))]
    assert [(p.kind, p.start, p.stop) for p in got.planted] == [
        ("spike", starts[0], starts[0] + 3),
        ("dip", starts[1], starts[1] + 5),
        ("drift", starts[2], starts[2] + 20),
    ]
    want_a = np.zeros(n, bool)
    want_b = np.zeros(n, bool)
    want_a[starts[0] : starts[0] + 3] = want_a[starts[1] : starts[1] + 5] = True
    want_b[starts[1] : starts[1] + 5] = want_b[starts[2] : starts[2] + 20] = True
    np.testing.assert_array_equal(got.values["a"] != clean.values["a"], want_a)
    np.testing.assert_array_equal(got.values["b"] != clean.values["b"], want_b)
    np.testing.assert_array_equal(got.anomaly_code > 0, want_a | want_b)
    diff = got.values["b"][starts[2] : starts[2] + 20] - clean.values["b"][starts[2] : starts[2] + 20]
    np.testing.assert_allclose(diff, 15 * np.arange(1, 21) / 20)  # a drift ramps up to its magnitude
    assert ANOMALY_KINDS[got.anomaly_code[starts[1]] - 1] == "dip"


def test_random_anomalies_do_not_overlap_and_labels_are_their_union():
    got, clean = _with_and_without(
        {
            "fields": {"a": {"noise": {"scale": 1}}},
            "anomalies": [
                {"kind": "spike", "field": "a", "count": 40, "points": 2, "magnitude": 6},
                {"kind": "drift", "field": "a", "count": 5, "points": 30, "magnitude": 9},
                {"kind": "dip", "field": "a", "at": 0.5, "points": 4, "magnitude": 3},
            ],
        }
    )
    assert len(got.planted) + got.dropped == 40 + 5 + 1
    rows = np.zeros(2000, bool)
    for p in got.planted:
        assert not rows[p.start : p.stop].any()  # disjoint
        rows[p.start : p.stop] = True
    np.testing.assert_array_equal(got.anomaly_code > 0, rows)
    np.testing.assert_array_equal(got.values["a"] != clean.values["a"], rows)
    assert len(got.planted) >= 40  # collisions are rare


def test_jitter_varies_series_but_labels_stay_exact():
    p = SeriesParams.model_validate(
        {
            "fields": {"a": {"level": 5, "noise": {"scale": 1}, "seasonality": [{"period": 3600, "amplitude": 2}]}},
            "anomalies": [{"kind": "spike", "at": 0.5, "points": 3, "magnitude": 9}],
        }
    )
    runs = [synthesize(p, FIELDS, start_s=0.0, step_s=60.0, n=1000, seed=s, jitter=0.3) for s in (1, 2)]
    assert runs[0].planted[0].start != runs[1].planted[0].start
    assert abs(runs[0].values["a"].mean() - runs[1].values["a"].mean()) > 0.01
    for r in runs:
        rows = np.zeros(1000, bool)
        rows[r.planted[0].start : r.planted[0].stop] = True
        np.testing.assert_array_equal(r.anomaly_code > 0, rows)


def test_table_labels_missing_values_clipping_and_types():
    opts = {
        "fields": [{"name": "temp", "min": 0, "max": 10, "decimals": 1}, {"name": "count", "type": "int"}],
        "frequency": "5min",
        "length": 20_000,
        "start": "2024-03-01T23:00:00Z",
        "params": {
            "fields": {"temp": {"level": 9, "noise": {"scale": 2}}, "count": {"level": 100, "noise": {"scale": 5}}},
            "missing_rate": 0.1,
            "anomalies": [{"kind": "spike", "field": "count", "at": 0.1, "points": 4, "magnitude": 50}],
        },
    }
    gen = TimeseriesGenerator(opts, job=job_for(opts))
    t = run(gen, index=7)
    assert t.schema == gen.arrow_schema() and gen.partition_by() == ["date"]
    assert t.column("series_id").unique().to_pylist() == ["s7"]
    ts = t["timestamp"].to_numpy()
    assert ts[0] == np.datetime64("2024-03-01T23:00:00") and np.all(np.diff(ts) == np.timedelta64(5, "m"))
    assert t["date"].unique().to_pylist()[0].isoformat() == "2024-03-01"
    temp = t["temp"].drop_null().to_numpy()
    assert temp.min() >= 0 and temp.max() == 10 and np.allclose(temp, np.round(temp, 1))
    assert t.schema.field("count").type == pa.int64()
    for col in ("temp", "count"):  # 10% missing: inside a 99% binomial interval
        assert abs(t[col].null_count - 2000) < 2.576 * np.sqrt(20_000 * 0.1 * 0.9)
    labelled = t.filter(t["is_anomaly"])
    assert labelled.num_rows == 4
    assert labelled["anomaly_kind"].unique().to_pylist() == ["spike"]
    assert labelled["anomaly_field"].unique().to_pylist() == ["count"]
    assert t["anomaly_kind"].null_count == 20_000 - 4


def test_seeded_runs_are_byte_identical():
    opts = {
        "fields": [{"name": "a", "min": -5, "max": 5}, {"name": "b", "type": "int"}],
        "duration": "2d",
        "frequency": "1min",
        "jitter": 0.2,
        "params": {
            "fields": {"a": {"noise": {"kind": "student_t", "scale": 1}}},
            "missing_rate": 0.05,
            "anomalies": [{"kind": "spike", "count": 5, "magnitude": 3}],
        },
    }

    def ipc(seed: int) -> bytes:
        sink = pa.BufferOutputStream()
        table = run(TimeseriesGenerator(opts, job=job_for(opts)), index=2, seed=seed)
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return sink.getvalue().to_pybytes()

    assert ipc(1) == ipc(1)
    assert ipc(1) != ipc(2)


# ---------------------------------------------------------------- planned by a model

PLANNED = {
    "fields": [
        {"name": "temperature", "min": -25, "max": 10, "unit": "degC"},
        {"name": "humidity", "min": 30, "max": 100, "unit": "%"},
    ],
    "frequency": "15min",
    "duration": "3d",
    "series_per_plan": 4,
    "scenario": "cold-storage warehouse sensors; door openings cause short temperature spikes",
}


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_plan_schema_is_tight():
    gen = TimeseriesGenerator(PLANNED, job=job_for(PLANNED))
    schema = gen.plan_request(0, "ts", 3).json_schema
    nodes = list(_walk(schema))
    assert not any("$ref" in n for n in nodes)
    numbers = [n for n in nodes if n.get("type") in ("number", "integer")]
    assert numbers and all("minimum" in n and "maximum" in n for n in numbers)
    arrays = [n for n in nodes if n.get("type") == "array"]
    assert arrays and all("maxItems" in n for n in arrays)


def test_planned_params_are_validated_fitted_and_used_once_per_group():
    gen = TimeseriesGenerator(PLANNED, job=job_for(PLANNED, count=8))
    llm = SimLLM()
    ctx = GenContext(job="ts", seed=3, llm=llm)
    units = [Unit(index=i, id=f"ts-{i}", shard=0, seed=100 + i) for i in range(8)]

    async def go() -> list[Any]:
        return await asyncio.gather(*(gen.generate(u, ctx) for u in units))

    results = asyncio.run(go())
    assert len(llm.requests) == 2 and sorted(r.metadata["group"] for r in llm.requests) == [0, 1]
    assert sum(len(r.calls) for r in results) == 2  # each call is accounted once
    params = [asyncio.run(gen.params_for(u, ctx))[0] for u in units]
    assert params[0] == params[3] and params[4] == params[7] and params[0] != params[4]
    for p in params:
        for f in gen.options.fields:
            fp = p.fields[f.name]
            swing = sum(s.amplitude for s in fp.seasonality) + 3 * fp.noise.scale
            assert f.min <= fp.level - swing and fp.level + swing <= f.max  # fitted into the range
    t = results[5].rows
    assert t.num_rows == 3 * 96 and t["temperature"].drop_null().to_numpy().max() <= 10


def test_random_plans_always_become_valid_params():
    fields = [FieldSpec(**f) for f in PLANNED["fields"]]
    model = planning_model(fields, 900.0, 288)
    sim, gen = SimProvider(), TimeseriesGenerator(PLANNED)
    for i in range(25):  # the sim answers each seed with other random, schema-valid numbers
        parsed = asyncio.run(sim.complete(gen.plan_request(i, "ts", i), None, timeout=5)).parsed
        params = from_plan(model.model_validate(parsed), fields)
        assert all((a.at is None) == (a.count > 1) for a in params.anomalies)  # recurring ones sit at random
        arrays = synthesize(params, fields, start_s=1.7e9, step_s=900.0, n=288, seed=i)
        assert all(np.isfinite(v).all() for v in arrays.values.values())


def test_bad_or_failed_plans_raise_and_a_later_unit_plans_again():
    gen = TimeseriesGenerator(PLANNED, job=job_for(PLANNED))
    unit = Unit(index=0, id="ts-0", shard=0, seed=1)
    with pytest.raises(MalformedOutput, match="plan schema"):
        asyncio.run(gen.generate(unit, GenContext(job="ts", seed=3, llm=AnswerLLM(parsed={"fields": {}}))))
    failing = AnswerLLM(error=Transient("upstream 503"))
    with pytest.raises(Transient):
        asyncio.run(gen.generate(unit, GenContext(job="ts", seed=3, llm=failing)))
    assert run(gen, index=0, llm=SimLLM()).num_rows == 288


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"fields": [{"name": "a"}], "frequency": "5 parsecs"}, "not a duration"),
        ({"fields": [{"name": "a"}], "length": 10, "duration": "1d"}, "either length or duration"),
        ({"fields": [{"name": "date"}]}, "output or envelope columns"),
        ({"fields": [{"name": "cost_usd"}]}, "output or envelope columns"),
        ({"fields": [{"name": "a"}, {"name": "a"}]}, "repeat"),
        ({"fields": [{"name": "a", "min": 5, "max": 1}]}, "must be above min"),
        ({"fields": [{"name": "a"}], "params": {"fields": {"b": {}}}}, "unknown or repeated field"),
        (
            {
                "fields": [{"name": "a"}],
                "params": {"anomalies": [{"kind": "spike", "magnitude": 1, "at": 0.2, "count": 3}]},
            },
            "one instance",
        ),
        ({"fields": [{"name": "a"}], "scenario": "x y z", "params": {}}, "not both"),
        ({"fields": [{"name": "a"}], "colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_options_fail_with_a_clear_line(bad: dict[str, Any], words: str):
    with pytest.raises(ConfigError, match=words) as err:
        check_options(bad)
    assert all(line.startswith("generator.") for line in str(err.value).splitlines())


def test_planning_needs_ranges():
    with pytest.raises(ConfigError, match="need min and max"):
        TimeseriesGenerator({"fields": [{"name": "a"}], "scenario": "anything at all"})


def test_example_job_file_validates_and_runs_one_series():
    spec = load_spec(ROOT / "jobs/examples/timeseries.yaml", check_keys=False)
    assert spec.generator.kind == "timeseries"
    options = TimeseriesOptions.model_validate(spec.generator.options)
    assert options.scenario and spec.providers[0].model.startswith("sim:")
    gen = TimeseriesGenerator(options, job=spec)
    table = run(gen, llm=SimLLM())
    assert table.num_rows == options.points and table.schema == gen.arrow_schema()

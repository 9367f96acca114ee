"""Numeric sampling speed of the timeseries and events generators into Arrow, on one core.

What is timed: ``generate()`` of whole units, from parameters to a finished ``pyarrow.Table``
(no engine, no Parquet, no model calls). A *point* is one value of one field: rows x fields.
The target is 5,000,000 points/s on one core::

    python benchmarks/timeseries.py            # full table
    python benchmarks/timeseries.py --quick    # smaller, for a smoke run

:func:`bench_job` times a whole job (100,000,000 points by default) through any callable that
runs a JobSpec, e.g. the engine on a local Ray; it reports the end-to-end points/s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from synth.generators.base import GenContext, Unit  # noqa: E402
from synth.generators.events import EventsGenerator  # noqa: E402
from synth.generators.timeseries import TimeseriesGenerator  # noqa: E402
from synth.records import Completion  # noqa: E402
from synth.spec import JobSpec, load_spec, parse_job  # noqa: E402

TARGET = 5_000_000
ROOT = Path(__file__).resolve().parents[1]

SIMPLE = {"fields": [{"name": "v"}], "params": {"fields": {"v": {"level": 10, "noise": {"scale": 1}}}}}
FULL = {
    "fields": [
        {"name": "temperature", "min": -25, "max": 10, "decimals": 2},
        {"name": "humidity", "min": 30, "max": 100, "decimals": 1},
        {"name": "power_kw", "min": 0, "max": 80},
        {"name": "door_opens", "type": "int", "min": 0, "max": 20},
    ],
    "jitter": 0.1,
    "params": {
        "fields": {
            "temperature": {
                "level": -18,
                "trend": {"kind": "linear", "change": 1.5},
                "seasonality": [{"period": "1d", "amplitude": 1.2, "phase": 0.6}, {"period": "7d", "amplitude": 0.5}],
                "noise": {"kind": "ar1", "scale": 0.3, "phi": 0.9},
            },
            "humidity": {
                "level": 70,
                "seasonality": [{"period": "1d", "amplitude": 5}],
                "noise": {"kind": "student_t", "scale": 2, "df": 5},
                "shifts": [{"at": 0.4, "delta": 4}],
            },
            "power_kw": {
                "level": 40,
                "trend": {"kind": "piecewise", "knots": [{"at": 0.5, "value": 8}]},
                "noise": {"scale": 3},
            },
            "door_opens": {"level": 3, "seasonality": [{"period": "1d", "amplitude": 2}], "noise": {"scale": 1}},
        },
        "correlations": [
            {"a": "temperature", "b": "humidity", "rho": 0.5},
            {"a": "temperature", "b": "power_kw", "rho": -0.4},
        ],
        "anomalies": [
            {"kind": "spike", "field": "temperature", "count": 20, "points": 3, "magnitude": 6},
            {"kind": "drift", "field": "power_kw", "count": 2, "points": 500, "magnitude": 15},
        ],
        "missing_rate": 0.01,
    },
}


class _Texts:
    """Answers text batches instantly, so only the sampling is timed."""

    async def complete(self, request: Any) -> Completion:
        n = request.json_schema["properties"]["texts"]["minItems"]
        return Completion(request_id=request.id, parsed={"texts": ["ok"] * n})

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


def _time_units(gen: Any, units: int, repeats: int, llm: Any = None) -> tuple[float, int]:
    """Best wall time of generating ``units`` units, and the rows they made."""
    ctx = GenContext(job="bench", seed=1, llm=llm or _Texts())

    async def once() -> int:
        rows = 0
        for i in range(units):
            rows += (await gen.generate(Unit(index=i, id=f"b-{i}", shard=0, seed=i), ctx)).rows.num_rows
        return rows

    best, rows = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        rows = asyncio.run(once())
        best = min(best, time.perf_counter() - start)
    return best, rows


def bench_timeseries(quick: bool = False) -> list[dict[str, Any]]:
    out = []
    budget = 1_000_000 if quick else 4_000_000  # points per measurement
    for label, base in (("1 field, gaussian", SIMPLE), ("4 fields, full model", FULL)):
        fields = len(base["fields"])
        for length in (1_000, 100_000) if quick else (1_000, 100_000, 1_000_000):
            units = max(budget // (length * fields), 1)
            opts = {**base, "frequency": "1min", "length": length}
            job = {"name": "bench", "count": units, "generator": {"kind": "timeseries", **opts}}
            gen = TimeseriesGenerator(opts, job=parse_job(job, env={}, check_keys=False))
            secs, rows = _time_units(gen, units, 2 if quick else 3)
            out.append(
                {
                    "case": label,
                    "series_len": length,
                    "series": units,
                    "rows_per_s": rows / secs,
                    "points_per_s": rows * fields / secs,
                }
            )
    return out


def bench_events(quick: bool = False) -> dict[str, Any]:
    spec = load_spec(ROOT / "jobs/examples/events.yaml", check_keys=False)
    gen = EventsGenerator(spec.generator.options, job=spec)
    secs, rows = _time_units(gen, 1 if quick else 3, 1 if quick else 2)
    cols = len(gen.arrow_schema() or [])
    return {
        "case": "events example (1 cohort = 1,000 users x 7 days)",
        "rows_per_s": rows / secs,
        "points_per_s": rows * cols / secs,
        "rows": rows,
    }


def bench_job(run_job: Callable[[JobSpec], Any], points: int = 100_000_000, length: int = 1_000_000) -> dict[str, Any]:
    """Time a whole ``points``-value timeseries job (4 fields, full model) run by ``run_job``,
    e.g. ``lambda spec: synth.run(spec)`` on a local Ray; returns end-to-end points/s."""
    fields = len(FULL["fields"])
    count = max(points // (length * fields), 1)
    spec = parse_job(
        {
            "name": "bench-timeseries",
            "count": count,
            "seed": 1,
            "generator": {"kind": "timeseries", **FULL, "frequency": "1min", "length": length},
            "output": {"uri": "./out/${job}", "shard_size": 1},
        },
        env={},
        check_keys=False,
    )
    start = time.perf_counter()
    run_job(spec)
    secs = time.perf_counter() - start
    return {"points": count * length * fields, "seconds": secs, "points_per_s": count * length * fields / secs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    rows = bench_timeseries(args.quick)
    print(f"{'case':<24} {'series len':>10} {'series':>7} {'rows/s':>13} {'points/s':>13} {'vs 5M/s':>8}")
    for r in rows:
        print(
            f"{r['case']:<24} {r['series_len']:>10,} {r['series']:>7,} {r['rows_per_s']:>13,.0f} "
            f"{r['points_per_s']:>13,.0f} {r['points_per_s'] / TARGET:>7.2f}x"
        )
    ev = bench_events(args.quick)
    print(
        f"\n{ev['case']}: {ev['rows_per_s']:,.0f} events/s, {ev['points_per_s']:,.0f} values/s "
        f"({ev['rows']:,} events per run; model texts answered instantly)"
    )
    print("points = rows x fields; one core (BLAS threads pinned to 1); best of the repeats")


if __name__ == "__main__":
    main()

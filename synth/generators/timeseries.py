"""Time series: a model plans the shape, numpy draws the points.

One unit is one series: an entity (a sensor, a store, a server) with one or more fields sampled
on the same clock, whose noise may be correlated. Parameters (level, trend, seasonalities,
noise, level shifts, anomalies, missing values) come from the job file (``params``) or are
planned by a model from ``scenario``: one small structured-output call per group of
``series_per_plan`` consecutive series (so 10,000 series cost at most 10,000 calls). Choose a
``series_per_plan`` that divides ``output.shard_size`` so each group is planned once.

Output is long format, one row per point: ``series_id, timestamp, date, <fields>, is_anomaly,
anomaly_kind, anomaly_field``, partitioned by ``date``. Example job section::

    generator:
      kind: timeseries
      fields: [{name: temperature, min: -5, max: 12, unit: degC}]
      frequency: 5min
      duration: 7d
      scenario: cold-storage warehouse; door openings cause short temperature spikes
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth.errors import ConfigError, MalformedOutput
from synth.generators.base import GenContext, Unit, UnitResult
from synth.generators.common import ENVELOPE_COLUMNS, inline_schema, parse_duration, utc
from synth.generators.tsmodel import ANOMALY_KINDS, SeriesArrays, synthesize
from synth.generators.tsparams import FieldSpec, SeriesParams, from_plan, planning_model
from synth.records import ChatMessage, Completion, Request

RESERVED = {"series_id", "timestamp", "date", "is_anomaly", "anomaly_kind", "anomaly_field"} | ENVELOPE_COLUMNS
_US = 1_000_000
_DAY_US = 86_400 * _US


class TimeseriesOptions(BaseModel):
    """The ``generator:`` section of a timeseries job (besides ``kind`` and ``model``)."""

    model_config = ConfigDict(extra="forbid")

    fields: list[FieldSpec] = Field(..., min_length=1, max_length=64, description="the columns of each series")
    start: datetime = Field(datetime(2024, 1, 1, tzinfo=timezone.utc), description="first timestamp (UTC if no offset)")
    frequency: str = Field("1h", description="time between points: '1s', '5min', '1h', '1d' ...")
    length: int | None = Field(None, ge=2, le=500_000_000, description="points per series (or give duration)")
    duration: str | None = Field(None, description="time covered by each series, e.g. '7d' (or give length)")
    params: SeriesParams | None = Field(None, description="fixed parameters of every series")
    scenario: str | None = Field(None, min_length=3, description="description a model plans parameters from")
    series_per_plan: int = Field(1, ge=1, description="consecutive series that share one planned scenario")
    jitter: float = Field(0.0, ge=0, le=1, description="per-series random variation of the parameters (0.1 = 10%)")
    series_prefix: str = Field("s", description="series_id is this prefix plus the series index")

    @model_validator(mode="after")
    def _check(self) -> TimeseriesOptions:
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"field names {dup} repeat; give each field its own name")
        clash = sorted(RESERVED & set(names))
        if clash:
            raise ValueError(f"field names {clash} are output or envelope columns already; rename them")
        try:
            parse_duration(self.frequency, "frequency")
            if self.duration is not None:
                parse_duration(self.duration, "duration")
            if self.params is not None:
                self.params.check(names)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if self.length is not None and self.duration is not None:
            raise ValueError("give either length or duration, not both")
        if self.params is not None and self.scenario is not None:
            raise ValueError("give either params (fixed) or scenario (planned by a model), not both")
        if self.points < 2:
            raise ValueError(f"duration {self.duration} at frequency {self.frequency} is under 2 points")
        return self

    @property
    def step_us(self) -> int:
        return max(int(round(parse_duration(self.frequency) * _US)), 1)

    @property
    def points(self) -> int:
        if self.length is not None:
            return self.length
        if self.duration is not None:
            return int(parse_duration(self.duration) * _US // self.step_us)
        return 1000


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "little") >> 1


class TimeseriesGenerator:
    """Series of several fields with trend, seasonality, noise, shifts, anomalies, missing values."""

    kind: ClassVar[str] = "timeseries"
    Options: ClassVar[type[BaseModel]] = TimeseriesOptions

    def __init__(self, options: BaseModel | dict[str, Any], *, job: Any = None) -> None:
        if not isinstance(options, TimeseriesOptions):
            options = check_options(options if isinstance(options, dict) else options.model_dump())
        self.options: TimeseriesOptions = options
        self.job = job
        self.route = getattr(getattr(job, "generator", None), "model", "default")
        count = int(getattr(job, "count", 0) or 0)
        self._width = len(str(max(count - 1, 0))) if count else 6
        self._groups = -(-count // options.series_per_plan) if count else None
        self._n, self._step_us = options.points, options.step_us
        self._start_us = int(utc(options.start).timestamp() * _US)
        self._plan_model = planning_model(options.fields, self._step_us / _US, self._n) if options.scenario else None
        self._plan_schema = inline_schema(self._plan_model) if self._plan_model else None
        self._plans: OrderedDict[int, asyncio.Future[SeriesParams]] = OrderedDict()
        self._clock: tuple[pa.Array, pa.Array] | None = None
        self._unlabelled: list[pa.Array] | None = None
        self._kinds = pa.array(list(ANOMALY_KINDS))
        self._targets = pa.array([f.name for f in options.fields] + ["all"])
        self._schema = pa.schema(
            [("series_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")), ("date", pa.date32())]
            + [(f.name, pa.int64() if f.type == "int" else pa.float64()) for f in options.fields]
            + [("is_anomaly", pa.bool_()), ("anomaly_kind", pa.string()), ("anomaly_field", pa.string())]
        )

    def partition_by(self) -> list[str]:
        return ["date"]

    def arrow_schema(self) -> pa.Schema:
        return self._schema

    async def setup(self, ctx: GenContext) -> None:
        return None

    async def generate(self, unit: Unit, ctx: GenContext) -> UnitResult:
        params, calls = await self.params_for(unit, ctx)
        arrays = synthesize(
            params,
            self.options.fields,
            start_s=self._start_us / _US,
            step_s=self._step_us / _US,
            n=self._n,
            seed=unit.seed,
            jitter=self.options.jitter,
        )
        table = self.to_table(arrays, f"{self.options.series_prefix}{unit.index:0{self._width}d}")
        stats = {
            "points": float(self._n * len(self.options.fields)),
            "anomalies": float(len(arrays.planted)),
            "anomalies_dropped": float(arrays.dropped),
        }
        return UnitResult(rows=table, calls=calls, stats=stats)

    # ------------------------------------------------------------ parameters

    async def params_for(self, unit: Unit, ctx: GenContext) -> tuple[SeriesParams, list[Completion]]:
        """The unit's parameters, and the model calls this unit made to get them."""
        if self._plan_model is None:
            return self.options.params or SeriesParams(), []
        group = unit.index // self.options.series_per_plan
        fut = self._plans.get(group)
        if fut is not None:
            self._plans.move_to_end(group)
            return await asyncio.shield(fut), []
        fut = asyncio.get_running_loop().create_future()
        self._plans[group] = fut
        while len(self._plans) > 256 and next(iter(self._plans.values())).done():
            self._plans.popitem(last=False)
        try:
            params, completion = await self._plan(group, ctx)
        except BaseException as e:
            self._plans.pop(group, None)  # a later unit of the group asks again
            fut.set_exception(e)
            fut.exception()  # the waiting units re-raise it; nothing is left unretrieved
            raise
        fut.set_result(params)
        return params, [completion]

    def plan_request(self, group: int, job_name: str, job_seed: int) -> Request:
        o = self.options
        lines = [
            f"- {f.name} ({f.type}{', ' + f.unit if f.unit else ''}; range {f.min:g} to {f.max:g})"
            + (f": {f.description}" if f.description else "")
            for f in o.fields
        ]
        of = f" of {self._groups}" if self._groups else ""
        prompt = (
            f"Scenario: {o.scenario}\n\nFields of each series:\n" + "\n".join(lines) + "\n\n"
            f"Sampling: one point every {o.frequency}, {self._n} points from {utc(o.start).isoformat()}.\n"
            f"Plan series group {group + 1}{of}; groups should differ plausibly. Periods are in seconds "
            "(3600 hourly, 86400 daily, 604800 weekly); positions 'at' are fractions of the series "
            "from 0 to 1; other numbers are in the field's units."
        )
        system = (
            "You plan the parameters of synthetic time series so that they look like real "
            "measurements of the scenario. Answer with JSON matching the schema."
        )
        return Request(
            id=f"{job_name}:timeseries-plan:{group}",
            model=self.route,
            messages=[ChatMessage(role="system", content=system), ChatMessage(role="user", content=prompt)],
            json_schema=self._plan_schema,
            schema_name="series_plan",
            seed=_seed(job_seed, "plan", group),
            metadata={"purpose": "timeseries.plan", "group": group},
        )

    async def _plan(self, group: int, ctx: GenContext) -> tuple[SeriesParams, Completion]:
        assert self._plan_model is not None
        completion = await ctx.llm.complete(self.plan_request(group, ctx.job, ctx.seed))
        try:
            plan = self._plan_model.model_validate(completion.parsed)
        except ValidationError as e:
            first = e.errors()[0]
            raise MalformedOutput(
                f"series plan {group}: {'.'.join(map(str, first['loc']))}: {first['msg']} "
                f"({e.error_count()} problems); the model's answer does not match the plan schema"
            ) from None
        return from_plan(plan, self.options.fields), completion

    # ------------------------------------------------------------ arrow

    def to_table(self, arrays: SeriesArrays, series_id: str) -> pa.Table:
        n = arrays.anomaly_code.size
        if self._clock is None:  # every series shares its timestamps: build them once
            ts = self._start_us + np.arange(n, dtype=np.int64) * self._step_us
            self._clock = (
                pa.array(ts, type=pa.timestamp("us", tz="UTC")),
                pa.array((ts // _DAY_US).astype(np.int32), type=pa.date32()),
            )
        cols: list[pa.Array] = [pa.repeat(series_id, n).cast(pa.string()), *self._clock]
        for f in self.options.fields:
            v = arrays.values[f.name]
            cols.append(pa.array(v.astype(np.int64) if f.type == "int" else v, mask=arrays.missing[f.name]))
        if arrays.planted:
            code, which = arrays.anomaly_code, arrays.anomaly_field
            cols += [
                pa.array(code > 0),
                pc.take(self._kinds, pa.array(code - 1, mask=code == 0)),
                pc.take(self._targets, pa.array(which, mask=which < 0)),
            ]
        else:  # the common case: no labels, shared columns
            if self._unlabelled is None:
                self._unlabelled = [pa.repeat(False, n), pa.nulls(n, pa.string()), pa.nulls(n, pa.string())]
            cols += self._unlabelled
        return pa.Table.from_arrays(cols, schema=self._schema)


def check_options(data: dict[str, Any]) -> TimeseriesOptions:
    """Validate a generator section (without kind/model); raise ConfigError, one line per problem."""
    try:
        return TimeseriesOptions.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            "\n".join(f"generator.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        ) from None


__all__ = ["RESERVED", "TimeseriesGenerator", "TimeseriesOptions", "check_options"]

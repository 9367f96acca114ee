"""Parameters of one time series: given in the job file, or planned by a model.

:class:`SeriesParams` is what the numeric core (:mod:`synth.generators.tsmodel`) draws from.
For model planning, :func:`planning_model` builds a *tight* twin of it for the job's fields:
every number is bounded by the field's ``min``/``max``, every choice is an enum, lists are short,
so any schema-valid answer (even a random one) describes a sane series. :func:`from_plan` turns
an answer into :class:`SeriesParams` and :func:`fit_to_range` scales it into the field's range.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from synth.errors import ConfigError
from synth.generators.common import parse_duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _seconds(v: Any) -> Any:
    try:
        return parse_duration(v, "period") if isinstance(v, str) else v
    except ConfigError as e:
        raise ValueError(str(e)) from None


Seconds = Annotated[float, BeforeValidator(_seconds)]


class FieldSpec(Strict):
    """One measured quantity of a series (one column of the output)."""

    name: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="column name")
    type: Literal["float", "int"] = Field("float", description="column type; int rounds to whole numbers")
    min: float | None = Field(None, description="clip values below this (and bound planned parameters)")
    max: float | None = Field(None, description="clip values above this (and bound planned parameters)")
    decimals: int | None = Field(None, ge=0, le=12, description="round float values to this many decimals")
    unit: str | None = Field(None, description="unit shown to the planning model, e.g. 'degC' or '%'")
    description: str | None = Field(None, description="what the field measures, for the planning model")

    @model_validator(mode="after")
    def _range(self) -> FieldSpec:
        if self.min is not None and self.max is not None and self.max <= self.min:
            raise ValueError(f"field {self.name!r}: max ({self.max}) must be above min ({self.min})")
        return self

    @property
    def span(self) -> float | None:
        return None if self.min is None or self.max is None else self.max - self.min


class Seasonality(Strict):
    """A cosine cycle, anchored to the Unix epoch so a daily cycle peaks at the same UTC hour."""

    period: Seconds = Field(..., gt=0, description="cycle length: '12h', '1d', '7d' or seconds")
    amplitude: float = Field(..., ge=0, description="half the peak-to-trough swing, in the field's units")
    phase: float = Field(0.0, ge=0, le=1, description="where in the cycle the peak falls (daily: 0.5 = 12:00 UTC)")


class Knot(Strict):
    at: float = Field(..., ge=0, le=1, description="position as a fraction of the series")
    value: float = Field(..., description="trend offset at that position")


class Trend(Strict):
    """Offset added to the level; ``change`` is its total over the series."""

    kind: Literal["none", "linear", "exponential", "piecewise"] = Field("none", description="trend shape")
    change: float = Field(0.0, description="linear/exponential: total change from first to last point")
    curvature: float = Field(3.0, gt=0, le=20, description="exponential: how sharply the growth accelerates")
    knots: list[Knot] = Field(default_factory=list, max_length=64, description="piecewise: offsets at positions")


class Noise(Strict):
    kind: Literal["gaussian", "student_t", "ar1"] = Field("gaussian", description="noise process")
    scale: float = Field(0.0, ge=0, description="standard deviation of the noise")
    df: float = Field(4.0, ge=2.1, le=1000, description="student_t: degrees of freedom (lower = heavier tails)")
    phi: float = Field(0.8, ge=-0.99, le=0.99, description="ar1: lag-one autocorrelation")


class LevelShift(Strict):
    at: float = Field(..., ge=0, le=1, description="position as a fraction of the series")
    delta: float = Field(..., description="added to every later point (a change point, not an anomaly)")


class FieldParams(Strict):
    level: float | None = Field(None, description="base value (default: middle of min..max, else 0)")
    trend: Trend = Field(default_factory=Trend)
    seasonality: list[Seasonality] = Field(default_factory=list, max_length=16)
    noise: Noise = Field(default_factory=Noise)
    shifts: list[LevelShift] = Field(default_factory=list, max_length=64, description="level shifts")


class Anomaly(Strict):
    """Labelled deviations: spikes (+), dips (-), drifts (a ramp up to ``magnitude`` that then ends)."""

    kind: Literal["spike", "dip", "drift"] = Field(..., description="anomaly shape")
    field: str | None = Field(None, description="field it hits (default: every field)")
    at: float | None = Field(None, ge=0, le=1, description="start as a fraction of the series (default: random)")
    count: int = Field(1, ge=1, le=100_000, description="instances at random positions (only without 'at')")
    points: int = Field(1, ge=1, description="length in points")
    magnitude: float = Field(..., ge=0, description="size in the field's units")

    @model_validator(mode="after")
    def _count(self) -> Anomaly:
        if self.at is not None and self.count != 1:
            raise ValueError("an anomaly with 'at' is one instance; drop 'count' or drop 'at' for random positions")
        return self


class Correlation(Strict):
    a: str = Field(..., description="a field name")
    b: str = Field(..., description="another field name")
    rho: float = Field(..., ge=-0.99, le=0.99, description="correlation of their noise innovations")


class SeriesParams(Strict):
    """Everything that shapes one series; fields not listed get the defaults."""

    fields: dict[str, FieldParams] = Field(default_factory=dict, description="parameters by field name")
    correlations: list[Correlation] = Field(default_factory=list, description="noise correlations")
    anomalies: list[Anomaly] = Field(default_factory=list, max_length=256, description="planted anomalies")
    missing_rate: float = Field(0.0, ge=0, le=0.9, description="fraction of values left empty, per field")

    def check(self, names: list[str], where: str = "params") -> SeriesParams:
        """Raise ConfigError when a field name is unknown."""
        known = set(names)
        bad = [f"{where}.fields.{k}" for k in self.fields if k not in known]
        bad += [f"{where}.correlations: {c.a}/{c.b}" for c in self.correlations if {c.a, c.b} - known or c.a == c.b]
        bad += [f"{where}.anomalies: {a.field}" for a in self.anomalies if a.field is not None and a.field not in known]
        if bad:
            raise ConfigError(f"{'; '.join(bad)}: unknown or repeated field; use two of {sorted(known)}")
        return self


# ---------------------------------------------------------------- model planning


def _bounded(lo: float, hi: float, desc: str) -> Any:
    return (float, Field(..., ge=lo, le=hi, description=desc))


def planning_model(fields: list[FieldSpec], step_s: float, n: int) -> type[BaseModel]:
    """A tight pydantic model of one plan for these fields (all numbers bounded, all choices enums)."""
    missing = [f.name for f in fields if f.span is None]
    if missing:
        raise ConfigError(f"fields {missing} need min and max to be planned from a scenario; add them")
    names = [f.name for f in fields]
    duration = step_s * max(n - 1, 1)
    longest = max(n // 20, 1)
    per_field: dict[str, Any] = {}
    for f in fields:
        span, tag = float(f.span or 1.0), f.name.title().replace("_", "")
        season = create_model(
            f"Season{tag}",
            __config__=ConfigDict(extra="forbid"),
            period_s=_bounded(min(4 * step_s, duration), duration, "cycle length in seconds (86400 = daily)"),
            amplitude=_bounded(0.0, span / 4, "half the peak-to-trough swing"),
            phase=_bounded(0.0, 1.0, "where in the cycle the peak falls (daily: 0.5 = 12:00 UTC)"),
        )
        knot = create_model(
            f"Knot{tag}",
            __config__=ConfigDict(extra="forbid"),
            at=_bounded(0.0, 1.0, "position (fraction)"),
            value=_bounded(-span / 2, span / 2, "offset there"),
        )
        shift = create_model(
            f"Shift{tag}",
            __config__=ConfigDict(extra="forbid"),
            at=_bounded(0.05, 0.95, "position (fraction)"),
            delta=_bounded(-span / 4, span / 4, "step added from there on"),
        )
        noise = create_model(
            f"Noise{tag}",
            __config__=ConfigDict(extra="forbid"),
            kind=(Literal["gaussian", "student_t", "ar1"], Field(..., description="noise process")),
            scale=_bounded(0.0, span / 10, "noise standard deviation"),
            df=_bounded(2.5, 30.0, "student_t degrees of freedom"),
            phi=_bounded(0.0, 0.95, "ar1 lag-one autocorrelation"),
        )
        per_field[f.name] = (
            create_model(
                f"Plan{tag}",
                __config__=ConfigDict(extra="forbid"),
                level=_bounded(float(f.min), float(f.max), f"base value in {f.unit or 'units'}"),
                trend_kind=(
                    Literal["none", "linear", "exponential", "piecewise"],
                    Field(..., description="trend shape"),
                ),
                trend_change=_bounded(-span / 2, span / 2, "linear/exponential: total change over the series"),
                trend_knots=(list[knot], Field(..., max_length=3, description="piecewise: offsets at positions")),
                seasonality=(list[season], Field(..., max_length=3, description="cycles")),
                noise=(noise, Field(...)),
                shifts=(list[shift], Field(..., max_length=2, description="level shifts (change points)")),
            ),
            Field(...),
        )
    targets = Literal[tuple(names + ["all"])]
    anomaly = create_model(
        "PlannedAnomaly",
        __config__=ConfigDict(extra="forbid"),
        kind=(Literal["spike", "dip", "drift"], Field(..., description="anomaly shape")),
        field=(targets, Field(..., description="field it hits, or 'all'")),
        at=_bounded(0.0, 1.0, "start (fraction of the series) when it happens once"),
        recurs=(int, Field(..., ge=1, le=20, description="1: once, at 'at'; more: that many times at random")),
        points=(int, Field(..., ge=1, le=longest, description="length in points")),
        magnitude=_bounded(0.0, max(float(f.span or 1.0) for f in fields) / 2, "size in the field's units"),
    )
    extra: dict[str, Any] = {}
    if len(names) > 1:
        one_of = Literal[tuple(names)]
        corr = create_model(
            "PlannedCorrelation",
            __config__=ConfigDict(extra="forbid"),
            a=(one_of, Field(...)),
            b=(one_of, Field(...)),
            rho=_bounded(-0.9, 0.9, "noise correlation"),
        )
        extra["correlations"] = (list[corr], Field(..., max_length=len(names) * (len(names) - 1) // 2))
    fields_model = create_model("PlannedFields", __config__=ConfigDict(extra="forbid"), **per_field)
    return create_model(
        "SeriesPlan",
        __config__=ConfigDict(extra="forbid"),
        fields=(fields_model, Field(...)),
        anomalies=(list[anomaly], Field(..., max_length=6, description="labelled anomalies to plant")),
        missing_rate=_bounded(0.0, 0.05, "fraction of values left empty"),
        **extra,
    )


def from_plan(plan: BaseModel, fields: list[FieldSpec]) -> SeriesParams:
    """SeriesParams from a validated plan; then fitted into each field's range."""
    data = plan.model_dump()
    out: dict[str, FieldParams] = {}
    spans = {f.name: float(f.span or 1.0) for f in fields}
    for name, p in data["fields"].items():
        kind = p["trend_kind"]
        out[name] = FieldParams(
            level=p["level"],
            trend=Trend(kind=kind, change=p["trend_change"], knots=[Knot(**k) for k in p["trend_knots"]]),
            seasonality=[
                Seasonality(period=s["period_s"], amplitude=s["amplitude"], phase=s["phase"]) for s in p["seasonality"]
            ],
            noise=Noise(**p["noise"]),
            shifts=[LevelShift(**s) for s in p["shifts"]],
        )
    anomalies = [
        Anomaly(
            kind=a["kind"],
            field=None if a["field"] == "all" else a["field"],
            at=a["at"] if a["recurs"] == 1 else None,
            count=a["recurs"],
            points=a["points"],
            magnitude=min(a["magnitude"], spans.get(a["field"], min(spans.values()))),
        )
        for a in data["anomalies"]
    ]
    corr = [Correlation(**c) for c in data.get("correlations", []) if c["a"] != c["b"]]
    params = SeriesParams(fields=out, correlations=corr, anomalies=anomalies, missing_rate=data["missing_rate"])
    return fit_to_range(params, fields)


def _offsets(p: FieldParams) -> tuple[float, float]:
    """Lowest and highest offset from the level that trend and shifts reach."""
    t = p.trend
    points = [0.0]
    if t.kind in ("linear", "exponential"):
        points.append(t.change)
    elif t.kind == "piecewise":
        points += [k.value for k in t.knots]
    shifts = [0.0]
    for s in sorted(p.shifts, key=lambda s: s.at):
        shifts.append(shifts[-1] + s.delta)
    return min(points) + min(shifts), max(points) + max(shifts)


def fit_to_range(params: SeriesParams, fields: list[FieldSpec]) -> SeriesParams:
    """Scale deviations down and move the level so the series stays inside min..max (with a
    3-sigma noise margin). Anomalies may still leave the range; values are clipped later."""
    fitted = dict(params.fields)
    for f in fields:
        p = params.fields.get(f.name)
        if p is None or f.span is None:
            continue
        span = f.span
        lo_off, hi_off = _offsets(p)
        swing = sum(s.amplitude for s in p.seasonality) + 3 * p.noise.scale
        width = (hi_off - lo_off) + 2 * swing
        k = min(1.0, 0.98 * span / width) if width > 0 else 1.0
        p = p.model_copy(deep=True)
        if k < 1.0:
            p.trend.change *= k
            for kn in p.trend.knots:
                kn.value *= k
            for s in p.shifts:
                s.delta *= k
            for season in p.seasonality:
                season.amplitude *= k
            p.noise.scale *= k
        lo_off, hi_off = _offsets(p)
        swing = sum(s.amplitude for s in p.seasonality) + 3 * p.noise.scale
        level = (f.min + f.max) / 2 if p.level is None else p.level  # type: ignore[operator]
        level = min(max(level, f.min - lo_off + swing), f.max - hi_off - swing)  # type: ignore[operator]
        p.level = level
        fitted[f.name] = p
    return params.model_copy(update={"fields": fitted})


__all__ = [
    "Anomaly",
    "Correlation",
    "FieldParams",
    "FieldSpec",
    "Knot",
    "LevelShift",
    "Noise",
    "Seasonality",
    "SeriesParams",
    "Trend",
    "fit_to_range",
    "from_plan",
    "planning_model",
]

"""The event catalog: event types, payload samplers, rates, rate profiles, sessions and funnels.

Given in the job file as :class:`EventCatalog`, or planned by a model: :class:`CatalogPlan` is a
tight schema (bounded numbers, enums, type references by index) so that any schema-valid answer
becomes a usable catalog through :func:`catalog_from_plan`, which renames, renormalises and
fills gaps instead of failing.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synth.errors import ConfigError
from synth.generators import samplers as S

NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
END = "end"  # transition target that ends a session
RESERVED = {"event_id", "timestamp", "date", "event_type", "user_id", "session_id", "seq"} | S.ENVELOPE_COLUMNS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e-?\d+)?)\s*/\s*(user\s*/\s*)?([a-z]+)\s*$")


class Rate(Strict):
    """Events per second, overall or per user. Job files write ``'100/sec'``, ``'5/min'``,
    ``'3/user/day'``; a bare number is per second."""

    per_second: float = Field(..., ge=0, description="mean events per second")
    per_user: bool = Field(False, description="the rate is per user (summed over a unit's users)")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"per_second": float(v)}
        if isinstance(v, str):
            m = _RATE.match(v.lower())
            try:
                if not m:
                    raise ConfigError("")
                seconds = S.parse_duration("1" + m.group(3))
            except ConfigError:
                raise ValueError(f"rate {v!r} is not like '100/sec', '5/min' or '3/user/day'") from None
            return {"per_second": float(m.group(1)) / seconds, "per_user": bool(m.group(2))}
        return v


class RateProfile(Strict):
    """How a rate varies with time (UTC). The rate given is the long-run mean: the profile
    moves events between hours and days without changing the weekly total."""

    daily_amplitude: float = Field(0.0, ge=0, le=1, description="0 = flat day; 1 = the trough reaches zero")
    peak_hour: float = Field(14.0, ge=0, lt=24, description="hour of day (UTC) of the daily peak")
    weekend_factor: float = Field(1.0, ge=0, le=10, description="weekend rate relative to weekdays")

    def factor(self, t_s: np.ndarray) -> np.ndarray:
        """Rate multiplier at Unix times ``t_s`` (seconds)."""
        out = np.ones_like(t_s, dtype=np.float64)
        if self.daily_amplitude:
            hours = (t_s % 86400.0) / 3600.0
            out *= 1 + self.daily_amplitude * np.cos(2 * np.pi * (hours - self.peak_hour) / 24)
        if self.weekend_factor != 1.0:
            weekday = (np.floor(t_s / 86400.0).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
            out *= np.where(weekday >= 5, self.weekend_factor, 1.0) * 7 / (5 + 2 * self.weekend_factor)
        return out

    @property
    def max_factor(self) -> float:
        week = max(self.weekend_factor, 1.0) * 7 / (5 + 2 * self.weekend_factor) if self.weekend_factor != 1 else 1.0
        return (1 + self.daily_amplitude) * week


class TextField(Strict):
    prompt: str = Field(..., min_length=3, description="what the model writes, e.g. 'a one-line product review'")
    max_words: int = Field(40, ge=1, le=400, description="length limit given to the model")


class EventType(Strict):
    name: str = Field(..., pattern=NAME, max_length=64, description="event type (also a partition value)")
    description: str | None = Field(None, description="what the event means (shown to the text model)")
    rate: Rate | None = Field(None, description="arrivals outside sessions: '100/sec', '5/min', '2/user/day'")
    profile: RateProfile | None = Field(None, description="this type's own rate profile (default: the catalog's)")
    payload: dict[str, S.SamplerSpec] = Field(default_factory=dict, description="payload columns and their samplers")
    text: dict[str, TextField] = Field(default_factory=dict, description="payload columns written by the model")


class Sessions(Strict):
    """Sessions: starts arrive at ``rate``; each walks the funnel from ``entry`` until it ends."""

    rate: Rate = Field(..., description="session starts: e.g. '2/user/day' or '30/min'")
    profile: RateProfile | None = Field(None, description="profile of session starts (default: the catalog's)")
    entry: dict[str, float] = Field(..., min_length=1, description="first event type -> relative weight")
    transitions: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="type -> next type (or 'end') -> probability; the rest ends the session"
    )
    gap: S.SamplerSpec = Field(S.ExponentialSpec(mean=30.0), description="seconds between events of a session")
    max_events: int = Field(100, ge=1, le=100_000, description="most events in one session")


class EventCatalog(Strict):
    types: list[EventType] = Field(..., min_length=1, max_length=512, description="the event types")
    sessions: Sessions | None = Field(None, description="session structure and funnel")
    profile: RateProfile = Field(default_factory=RateProfile, description="default rate profile")

    @model_validator(mode="after")
    def _consistent(self) -> EventCatalog:
        names = [t.name for t in self.types]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"event types {dup} repeat; give each type its own name")
        for t in self.types:
            clash = sorted((set(t.payload) | set(t.text)) & RESERVED)
            if clash:
                raise ValueError(f"type {t.name!r}: payload names {clash} are output columns already; rename them")
        reached: set[str] = set()
        s = self.sessions
        if s is not None:
            known = set(names)
            rows = [("entry", s.entry)] + [(f"transitions.{k}", v) for k, v in s.transitions.items()]
            for label, row in rows:
                src = label.removeprefix("transitions.")
                if label != "entry" and src not in known:
                    raise ValueError(f"sessions.{label}: unknown type {src!r}; known: {sorted(known)}")
                bad = sorted(set(row) - known - ({END} if label != "entry" else set()))
                if bad:
                    raise ValueError(f"sessions.{label}: unknown type(s) {bad}; use one of {sorted(known)} or 'end'")
                if any(p < 0 for p in row.values()):
                    raise ValueError(f"sessions.{label}: probabilities must be >= 0")
                total = sum(row.values())
                if label == "entry" and total <= 0:
                    raise ValueError("sessions.entry: weights need a positive sum")
                if label != "entry" and total > 1 + 1e-6:
                    raise ValueError(
                        f"sessions.{label} sums to {total:.3g}; keep it <= 1 (the remainder ends the session)"
                    )
                reached |= {k for k, p in row.items() if p > 0}
        never = [t.name for t in self.types if t.rate is None and t.name not in reached]
        if never:
            raise ValueError(f"event types {never} never occur; give them a rate or reach them in sessions")
        return self


# ---------------------------------------------------------------- model planning

FAKER_PROVIDERS = (
    "name",
    "first_name",
    "last_name",
    "email",
    "company",
    "city",
    "country",
    "country_code",
    "street_address",
    "postcode",
    "phone_number",
    "job",
    "user_name",
    "url",
    "ipv4",
    "user_agent",
    "currency_code",
    "color_name",
    "word",
    "catch_phrase",
)


def plan_model(max_types: int) -> type[BaseModel]:
    """The tight schema a model answers when it plans a catalog (types referenced by index)."""
    hi = max_types - 1

    class PlannedField(Strict):
        name: str = Field(..., max_length=40, description="payload column name, snake_case")
        kind: Literal["choice", "uniform", "normal", "lognormal", "poisson", "bool", "id", "faker"]
        values: list[str] = Field(..., max_length=8, description="choice: the values")
        low: float = Field(..., ge=-1e6, le=1e6, description="numeric kinds: typical low end")
        high: float = Field(..., ge=-1e6, le=1e6, description="numeric kinds: typical high end")
        faker: Literal[FAKER_PROVIDERS] = Field(..., description="faker: what kind of value")  # type: ignore[valid-type]

    class PlannedText(Strict):
        name: str = Field(..., max_length=40, description="text column name")
        prompt: str = Field(..., max_length=300, description="what to write for each event")

    class PlannedType(Strict):
        name: str = Field(..., max_length=40, description="event type, snake_case")
        description: str = Field(..., max_length=200)
        rate_per_user_per_day: float = Field(..., ge=0, le=50, description="arrivals outside sessions (0 = none)")
        fields: list[PlannedField] = Field(..., max_length=5)
        texts: list[PlannedText] = Field(..., max_length=1)

    class PlannedEntry(Strict):
        type: int = Field(..., ge=0, le=hi, description="index of a type in 'types'")
        weight: float = Field(..., ge=0, le=1)

    class PlannedStep(Strict):
        source: int = Field(..., ge=0, le=hi, description="index of the current type")
        target: int = Field(..., ge=-1, le=hi, description="index of the next type; -1 ends the session")
        p: float = Field(..., ge=0, le=1, description="probability")

    class CatalogPlan(Strict):
        types: list[PlannedType] = Field(..., min_length=1, max_length=max_types)
        sessions_per_user_per_day: float = Field(..., ge=0, le=20, description="0 = no sessions")
        mean_gap_s: float = Field(..., ge=1, le=3600, description="mean seconds between events of a session")
        entry: list[PlannedEntry] = Field(..., max_length=max_types)
        transitions: list[PlannedStep] = Field(..., max_length=max_types * 4)
        peak_hour: float = Field(..., ge=0, le=23)
        daily_amplitude: float = Field(..., ge=0, le=1)
        weekend_factor: float = Field(..., ge=0.2, le=3)

    return CatalogPlan


def _ident(text: str, fallback: str, taken: set[str]) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")[:40]
    name = name if name and name[0].isalpha() else fallback
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _sampler(f: Any) -> Any:
    lo, hi = sorted((float(f.low), float(f.high)))
    if f.kind == "choice":
        return S.ChoiceSpec(values=list(dict.fromkeys(v for v in f.values if v)) or ["unknown"])
    if f.kind == "uniform":
        return S.UniformSpec(low=lo, high=hi, decimals=2)
    if f.kind == "normal":
        return S.NormalSpec(mean=(lo + hi) / 2, std=max((hi - lo) / 6, 1e-9), decimals=2)
    if f.kind == "lognormal":
        return S.LognormalSpec(median=max((lo + hi) / 2, 1e-3), sigma=0.5, decimals=2)
    if f.kind == "poisson":
        return S.PoissonSpec(lam=min(max((lo + hi) / 2, 0.0), 1e4))
    if f.kind == "bool":
        return S.BoolSpec(p=0.5)
    if f.kind == "id":
        return S.IdSpec()
    return S.FakerSpec(provider=f.faker)


def catalog_from_plan(plan: Any) -> EventCatalog:
    """A valid catalog from any schema-valid plan: names made identifiers and unique, indexes
    wrapped, probabilities renormalised, unreachable types given a small rate of their own."""
    taken: set[str] = set()
    names = [_ident(t.name, f"event_{i}", taken) for i, t in enumerate(plan.types)]
    arrow: dict[str, Any] = {}  # one arrow type per column name across types
    types: list[dict[str, Any]] = []
    for name, t in zip(names, plan.types):
        cols: set[str] = set(RESERVED)
        payload: dict[str, Any] = {}
        for f in t.fields:
            spec = _sampler(f)
            col = _ident(f.name, "field", cols)
            kind = S.build_sampler(spec).arrow_type
            if arrow.setdefault(col, kind) != kind:
                col = _ident(f"{name}_{col}", "field", cols)
                arrow.setdefault(col, kind)
            payload[col] = spec
        text = {_ident(x.name, "text", cols): TextField(prompt=x.prompt or "a short description") for x in t.texts}
        rate = Rate(per_second=t.rate_per_user_per_day / 86400, per_user=True) if t.rate_per_user_per_day else None
        types.append({"name": name, "description": t.description, "rate": rate, "payload": payload, "text": text})
    k = len(names)
    sessions = None
    if plan.sessions_per_user_per_day > 0:
        entry: dict[str, float] = {}
        for e in plan.entry:
            entry[names[e.type % k]] = entry.get(names[e.type % k], 0.0) + e.weight
        if sum(entry.values()) <= 0:
            entry = {names[0]: 1.0}
        trans: dict[str, dict[str, float]] = {}
        for s in plan.transitions:
            row = trans.setdefault(names[s.source % k], {})
            dst = END if s.target < 0 else names[s.target % k]
            row[dst] = row.get(dst, 0.0) + s.p
        for row in trans.values():
            total = sum(row.values())
            if total > 1:
                for dst in row:
                    row[dst] /= total
        sessions = Sessions(
            rate=Rate(per_second=plan.sessions_per_user_per_day / 86400, per_user=True),
            entry=entry,
            transitions=trans,
            gap=S.ExponentialSpec(mean=plan.mean_gap_s),
            max_events=50,
        )
    reached = set()
    if sessions is not None:
        reached = {n for row in [sessions.entry, *sessions.transitions.values()] for n, p in row.items() if p > 0}
    for t in types:
        if t["rate"] is None and t["name"] not in reached:
            t["rate"] = Rate(per_second=1 / 86400, per_user=True)
    profile = RateProfile(
        daily_amplitude=plan.daily_amplitude, peak_hour=plan.peak_hour, weekend_factor=plan.weekend_factor
    )
    return EventCatalog(types=[EventType(**t) for t in types], sessions=sessions, profile=profile)


__all__ = [
    "END",
    "FAKER_PROVIDERS",
    "RESERVED",
    "EventCatalog",
    "EventType",
    "Rate",
    "RateProfile",
    "Sessions",
    "TextField",
    "catalog_from_plan",
    "plan_model",
]

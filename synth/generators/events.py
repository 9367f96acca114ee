"""Event streams: users, sessions and funnels over a time window, with sampled payloads.

One unit is one cohort of users over the whole window: unit ``i`` of ``count`` owns users
``[i*users//count, (i+1)*users//count)``, so sessions never cross units, per-user rates split
evenly, and overall rates (``'100/sec'``) are split into ``count`` equal independent Poisson
streams (which sum to the stated rate). The catalog comes from the job file or is planned by a
model from ``scenario`` (one structured-output call per worker with a fixed seed; to freeze it,
plan once with :func:`plan_catalog` and paste the catalog into the job file). Text payload
fields are written by the model in batches: one request returns a list of ``text_batch`` texts.

Output, one row per event, partitioned by ``date`` and ``event_type``: ``event_id, timestamp,
date, event_type, user_id, session_id, seq``, then user fields, payload fields and text fields
(null where an event type lacks the field).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synth.errors import ConfigError, MalformedOutput
from synth.generators.base import GenContext, Unit, UnitResult
from synth.generators.common import inline_schema, numpy_rng, parse_duration, utc
from synth.generators.eventmodel import RESERVED, EventCatalog, EventType, catalog_from_plan, plan_model
from synth.generators.eventsim import Funnel, arrivals, walk
from synth.generators.samplers import Sampler, SamplerSpec, build_sampler
from synth.records import ChatMessage, Completion, Request

_US = 1_000_000
_NUMPY = {
    pa.int64(): np.int64,
    pa.float64(): np.float64,
    pa.bool_(): bool,
    pa.timestamp("us", tz="UTC"): "datetime64[us]",
    pa.date32(): "datetime64[D]",
}


class EventsOptions(BaseModel):
    """The ``generator:`` section of an events job (besides ``kind`` and ``model``)."""

    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(datetime(2024, 1, 1, tzinfo=timezone.utc), description="window start (UTC if no offset)")
    end: datetime | None = Field(None, description="window end (or give duration)")
    duration: str | None = Field(None, description="window length, e.g. '7d' (default 1d)")
    users: int = Field(1000, ge=0, description="users across the job, split evenly into the units")
    user_prefix: str = Field("u", description="user_id is this prefix plus the user index")
    user_fields: dict[str, SamplerSpec] = Field(default_factory=dict, description="per-user columns on every event")
    catalog: EventCatalog | None = Field(None, description="event types, rates, payloads, sessions")
    scenario: str | None = Field(None, min_length=3, description="description a model plans the catalog from")
    max_types: int = Field(8, ge=1, le=32, description="most event types a planned catalog may have")
    text_batch: int = Field(20, ge=1, le=200, description="texts written by one model request")
    text_concurrency: int = Field(16, ge=1, le=1024, description="text requests in flight per unit")

    @model_validator(mode="after")
    def _check(self) -> EventsOptions:
        if (self.catalog is None) == (self.scenario is None):
            raise ValueError("give either catalog (fixed) or scenario (planned by a model), exactly one")
        if self.end is not None and self.duration is not None:
            raise ValueError("give either end or duration, not both")
        try:
            span = self.span_s
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if span <= 0:
            raise ValueError("the window is empty: end must be after start")
        clash = sorted(set(self.user_fields) & RESERVED)
        if self.catalog is not None:
            clash += sorted({c for t in self.catalog.types for c in (*t.payload, *t.text)} & set(self.user_fields))
        if clash:
            raise ValueError(f"columns {clash} are taken (output or payload columns); rename the user fields")
        if self.scenario is not None and self.users < 1:
            raise ValueError("a planned catalog has per-user rates: set users >= 1")
        return self

    @property
    def span_s(self) -> float:
        if self.end is not None:
            return (utc(self.end) - utc(self.start)).total_seconds()
        return parse_duration(self.duration or "1d", "duration")


def check_options(data: dict[str, Any]) -> EventsOptions:
    """Validate a generator section (without kind/model); raise ConfigError, one line per problem."""
    try:
        return EventsOptions.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            "\n".join(f"generator.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        ) from None


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "little") >> 1


def _arrow_type(sampler: Sampler) -> pa.DataType:
    kind = getattr(sampler, "arrow_type", None)
    return kind if kind is not None else pa.array(list(sampler.sample(numpy_rng(0, "probe"), 1))).type


class _Prepared:
    """A catalog turned into samplers, column types and a funnel."""

    def __init__(self, catalog: EventCatalog, user_fields: dict[str, Any]) -> None:
        self.catalog = catalog
        self.names = pa.array([t.name for t in catalog.types])
        self.users = {k: build_sampler(v) for k, v in user_fields.items()}
        self.payload = [{k: build_sampler(v) for k, v in t.payload.items()} for t in catalog.types]
        columns: dict[str, pa.DataType] = {k: _arrow_type(s) for k, s in self.users.items()}
        for t, samplers in zip(catalog.types, self.payload):
            for col, s in samplers.items():
                if columns.setdefault(col, _arrow_type(s)) != _arrow_type(s):
                    raise ConfigError(
                        f"catalog: column {col!r} of type {t.name!r} is {_arrow_type(s)} but "
                        f"{columns[col]} elsewhere; rename it or use one type"
                    )
        for t in catalog.types:
            for col in t.text:
                if columns.setdefault(col, pa.string()) != pa.string():
                    raise ConfigError(f"catalog: text column {col!r} of {t.name!r} is a sampled column elsewhere")
        self.columns = columns
        sess = catalog.sessions
        self.funnel = Funnel.of(catalog, sess) if sess is not None else None
        self.gap = build_sampler(sess.gap) if sess is not None else None
        self.schema = pa.schema(
            [
                ("event_id", pa.string()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
                ("date", pa.date32()),
                ("event_type", pa.string()),
                ("user_id", pa.string()),
                ("session_id", pa.string()),
                ("seq", pa.int32()),
            ]
            + list(columns.items())
        )
        self.per_user = any(t.rate is not None and t.rate.per_user for t in catalog.types) or (
            sess is not None and sess.rate.per_user
        )


class EventsGenerator:
    """Users, sessions, funnels and timed events with payloads; one unit per user cohort."""

    kind: ClassVar[str] = "events"
    Options: ClassVar[type[BaseModel]] = EventsOptions

    def __init__(self, options: BaseModel | dict[str, Any], *, job: Any = None) -> None:
        if not isinstance(options, EventsOptions):
            options = check_options(options if isinstance(options, dict) else options.model_dump())
        self.options: EventsOptions = options
        self.job = job
        self.route = getattr(getattr(job, "generator", None), "model", "default")
        self.count = int(getattr(job, "count", 1) or 1)
        self._t0_us = int(utc(options.start).timestamp() * _US)
        self._span_s = options.span_s
        self._prepared = _Prepared(options.catalog, options.user_fields) if options.catalog else None
        per_user = options.scenario is not None or (self._prepared is not None and self._prepared.per_user)
        if per_user and self.count > options.users:
            raise ConfigError(
                f"count ({self.count}) exceeds users ({options.users}): units would have no users; "
                "set count <= users (one unit is one cohort of users)"
            )
        self.catalog_model = plan_model(options.max_types) if options.scenario else None  # what a model answers
        self._planning: asyncio.Future[_Prepared] | None = None
        self._width = len(str(max(options.users - 1, 0)))

    def partition_by(self) -> list[str]:
        return ["date", "event_type"]

    def arrow_schema(self) -> pa.Schema | None:
        """Known up front for a fixed catalog; a planned one is known after the first unit."""
        return self._prepared.schema if self._prepared is not None else None

    async def setup(self, ctx: GenContext) -> None:
        return None

    # ------------------------------------------------------------ catalog

    def plan_request(self, job_name: str, job_seed: int) -> Request:
        o = self.options
        prompt = (
            f"Scenario: {o.scenario}\n\nDesign the event catalog of this product: up to {o.max_types} event "
            f"types with payload fields, per-user rates for events that happen outside sessions, and the "
            f"session funnel (entry weights and transition probabilities between types, referenced by their "
            f"index in 'types'; target -1 ends the session). The window is {o.span_s / 86400:g} days for "
            f"{o.users} users. Use snake_case names."
        )
        return Request(
            id=f"{job_name}:events-catalog",
            model=self.route,
            temperature=0.0,
            seed=_seed(job_seed, "catalog"),
            messages=[
                ChatMessage(
                    role="system",
                    content="You design realistic product analytics event "
                    "catalogs. Answer with JSON matching the schema.",
                ),
                ChatMessage(role="user", content=prompt),
            ],
            json_schema=inline_schema(self.catalog_model) if self.catalog_model else None,
            schema_name="event_catalog",
            metadata={"purpose": "events.catalog"},
        )

    async def _catalog(self, ctx: GenContext) -> tuple[_Prepared, list[Completion]]:
        if self._prepared is not None:
            return self._prepared, []
        if self._planning is not None:
            return await asyncio.shield(self._planning), []
        self._planning = asyncio.get_running_loop().create_future()
        try:
            catalog, completion = await plan_catalog(self, ctx.llm, ctx.job, ctx.seed)
            prepared = _Prepared(catalog, self.options.user_fields)
        except BaseException as e:
            fut, self._planning = self._planning, None
            fut.set_exception(e)
            fut.exception()
            raise
        self._prepared = prepared
        self._planning.set_result(prepared)
        return prepared, [completion]

    # ------------------------------------------------------------ one cohort

    def _timeline(self, unit: Unit, prep: _Prepared, lo: int, hi: int) -> tuple[Any, ...]:
        """Time-sorted events of the cohort's users: offsets (s), type, user, session, seq."""
        cat, nu, span = prep.catalog, hi - lo, self._span_s
        t0_s = self._t0_us / _US

        def stream_rate(rate: Any) -> float:
            return rate.per_second * nu if rate.per_user else rate.per_second / self.count

        parts: list[tuple[np.ndarray, ...]] = []  # t, type, user, session, seq
        for k, et in enumerate(cat.types):
            if et.rate is None:
                continue
            rng = numpy_rng(unit.seed, "arrivals", et.name)
            t = arrivals(rng, stream_rate(et.rate), et.profile or cat.profile, t0_s, span)
            user = rng.integers(lo, hi, size=t.size) if nu else np.full(t.size, -1)
            none = np.full(t.size, -1)
            parts.append((t, np.full(t.size, k), user, none, none))
        n_sessions = 0
        if cat.sessions is not None and prep.funnel is not None and prep.gap is not None:
            rng = numpy_rng(unit.seed, "sessions")
            starts = arrivals(rng, stream_rate(cat.sessions.rate), cat.sessions.profile or cat.profile, t0_s, span)
            n_sessions = starts.size
            users = rng.integers(lo, hi, size=starts.size) if nu else np.full(starts.size, -1)
            w = walk(rng, starts, prep.funnel, prep.gap, cat.sessions.max_events, span)
            parts.append((w.t, w.type, users[w.session], w.session, w.seq))
        t, etype, user, session, seq = (
            np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(5)
        )
        order = np.argsort(t, kind="stable")  # a session's events keep their order on equal times
        return (
            t[order],
            etype[order].astype(np.int64),
            user[order].astype(np.int64),
            session[order].astype(np.int64),
            seq[order].astype(np.int64),
            n_sessions,
        )

    async def generate(self, unit: Unit, ctx: GenContext) -> UnitResult:
        prep, calls = await self._catalog(ctx)
        o, cat = self.options, prep.catalog
        lo, hi = unit.index * o.users // self.count, (unit.index + 1) * o.users // self.count
        t, etype, user, session, seq, n_sessions = self._timeline(unit, prep, lo, hi)
        n, nu = t.size, hi - lo

        values: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # column -> (buffer, present)

        def put(col: str, rows: np.ndarray, vals: Any) -> None:
            if col not in values:
                dtype: Any = _NUMPY.get(prep.columns[col], object)
                values[col] = (
                    np.zeros(n, dtype=dtype) if dtype is not object else np.full(n, None, dtype=object),
                    np.zeros(n, dtype=bool),
                )
            buf, present = values[col]
            buf[rows] = vals
            present[rows] = True

        has_user = np.flatnonzero(user >= 0)
        for col, s in prep.users.items():
            per_user = np.asarray(s.sample(numpy_rng(unit.seed, "user", col), nu)) if nu else np.zeros(0)
            put(col, has_user, per_user[user[has_user] - lo] if nu else [])
        by_type = [np.flatnonzero(etype == k) for k in range(len(cat.types))]
        for k, samplers in enumerate(prep.payload):
            for col, s in samplers.items():
                put(col, by_type[k], s.sample(numpy_rng(unit.seed, "payload", cat.types[k].name, col), by_type[k].size))
        stats = {"events": float(n), "sessions": float(n_sessions), "users": float(nu)}
        for k, et in enumerate(cat.types):
            for col, tf in et.text.items():
                texts, more, padded = await self._texts(unit, ctx, et, col, tf, by_type[k], values)
                put(col, by_type[k], texts)
                calls += more
                stats["texts_padded"] = stats.get("texts_padded", 0.0) + padded

        ts = self._t0_us + np.floor(t * _US).astype(np.int64)
        ids = [f"{o.user_prefix}{u:0{self._width}d}" for u in range(lo, hi)]
        cols: dict[str, pa.Array] = {
            "event_id": pc.binary_join_element_wise(f"{unit.index}-", pc.cast(pa.array(np.arange(n)), pa.string()), ""),
            "timestamp": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
            "date": pa.array((ts // (86_400 * _US)).astype(np.int32), type=pa.date32()),
            "event_type": pc.take(prep.names, pa.array(etype)),
            "user_id": pc.take(pa.array(ids, type=pa.string()), pa.array(user - lo, mask=user < 0)),
            "session_id": pc.binary_join_element_wise(
                f"{unit.index}-", pc.cast(pa.array(session, mask=session < 0), pa.string()), ""
            ),
            "seq": pa.array(seq.astype(np.int32), mask=seq < 0),
        }
        for col, kind in prep.columns.items():
            if col in values:
                buf, present = values[col]
                cols[col] = pa.array(buf, type=kind, mask=~present, from_pandas=True)
            else:
                cols[col] = pa.nulls(n, kind)
        return UnitResult(
            rows=pa.Table.from_arrays([cols[f.name] for f in prep.schema], schema=prep.schema), calls=calls, stats=stats
        )

    async def _texts(
        self,
        unit: Unit,
        ctx: GenContext,
        et: EventType,
        col: str,
        tf: Any,
        rows: np.ndarray,
        values: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[list[str], list[Completion], int]:
        """One text per row, ``text_batch`` per request, each listing the rows' sampled fields."""
        size, gate = self.options.text_batch, asyncio.Semaphore(self.options.text_concurrency)
        context = [c for c in (*self.options.user_fields, *et.payload) if c in values][:8]
        schema = {
            "type": "object",
            "additionalProperties": False,
            "required": ["texts"],
            "properties": {"texts": {"type": "array", "items": {"type": "string"}, "minItems": 0, "maxItems": 0}},
        }

        async def batch(b: int, chunk: np.ndarray) -> tuple[list[str], Completion, int]:
            lines = [
                f"{i + 1}. " + ", ".join(f"{c}={_show(values[c][0][r])}" for c in context) for i, r in enumerate(chunk)
            ]
            prompt = (
                f"Event type: {et.name}"
                + (f" ({et.description})" if et.description else "")
                + f"\nFor each event below write {tf.prompt}, at most {tf.max_words} words, consistent with "
                f"its fields. Return exactly {len(chunk)} texts in order.\n" + "\n".join(lines)
            )
            sch = {
                **schema,
                "properties": {
                    "texts": {
                        **schema["properties"]["texts"],  # type: ignore[index]
                        "minItems": len(chunk),
                        "maxItems": len(chunk),
                    }
                },
            }
            req = Request(
                id=f"{unit.id}:text:{et.name}:{col}:{b}",
                model=self.route,
                json_schema=sch,
                schema_name="texts",
                seed=_seed(unit.seed, et.name, col, b),
                messages=[
                    ChatMessage(
                        role="system",
                        content="You write short realistic texts for event data. Answer with JSON matching the schema.",
                    ),
                    ChatMessage(role="user", content=prompt),
                ],
                metadata={"purpose": "events.text", "event_type": et.name, "field": col},
            )
            async with gate:
                done = await ctx.llm.complete(req)
            got = done.parsed.get("texts") if isinstance(done.parsed, dict) else None
            if not isinstance(got, list):
                raise MalformedOutput(f"text batch {req.id}: answer has no 'texts' list; the model ignored the schema")
            got = [str(x) for x in got][: len(chunk)]
            short = len(chunk) - len(got)
            return got + [""] * short, done, short

        jobs = [batch(b, rows[i : i + size]) for b, i in enumerate(range(0, rows.size, size))]
        out = await asyncio.gather(*jobs)
        return [x for texts, _, _ in out for x in texts], [c for _, c, _ in out], sum(p for _, _, p in out)


def _show(v: Any) -> str:
    v = v.item() if isinstance(v, np.generic) else v
    return f"{v:.4g}" if isinstance(v, float) else str(v)


async def plan_catalog(gen: EventsGenerator, llm: Any, job_name: str, seed: int) -> tuple[EventCatalog, Completion]:
    """Ask the model for a catalog and make it valid. ``catalog.model_dump(mode='json')`` is a
    ``catalog:`` section to freeze in a job file."""
    if gen.catalog_model is None:
        raise ConfigError("plan_catalog: the generator options have no scenario to plan from; give one")
    completion = await llm.complete(gen.plan_request(job_name, seed))
    try:
        plan = gen.catalog_model.model_validate(completion.parsed)
    except ValidationError as e:
        first = e.errors()[0]
        raise MalformedOutput(
            f"event catalog: {'.'.join(map(str, first['loc']))}: {first['msg']} "
            f"({e.error_count()} problems); the model's answer does not match the schema"
        ) from None
    return catalog_from_plan(plan), completion


__all__ = ["EventsGenerator", "EventsOptions", "check_options", "plan_catalog"]

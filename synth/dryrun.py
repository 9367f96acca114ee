"""``synth run JOB --dry-run``: make a sample of the job's units on the offline ``sim`` provider and
project tokens, dollars and wall time for the whole job at its configured limits.

Nothing is written: no output folder, no journal, no response cache. No Ray either: the sample goes
through the same generator (:func:`~synth.engine.shardrun.run_shard`) and dispatcher layers as a real
run, in one asyncio loop.

How the sample is made
    The job is copied with every provider turned into ``sim:<its model name>`` under the same
    name, so routes and fallbacks resolve as in the real job and, for seeded requests, the sim gives
    the same answers the LLM API simulator would for that model. The copy has no keys, no budget
    and no cache. The sample is the job's *first* ``sample`` units (cut into the job's own shards),
    with the real job's unit ids: generators that share one call among neighbouring units (a
    time-series plan per ``series_per_plan`` series, an instruction batch per leaf or document) pay
    for it at the real rate, which a sample spread over the job would not.

How it is projected
    Every model call is metered at the provider, per unit (the generator's ``setup`` calls apart)
    and per route. Each route is priced as the provider it would use first in the real job
    (``job.route_targets``), with the job's ``prices:`` and the provider's ``price:`` applied; a
    model with no known price is named, never guessed. Totals are the per-unit mean times
    ``count``, plus setup once per worker; the dollar range is the mean's 95 % interval from the
    sample's spread. Wall time: see :mod:`synth.dryreport` (keys' ceiling, Little's law); the latency
    of one call is not in the job file and defaults to :data:`DEFAULT_LATENCY_S`. The time the
    sample took to make (generators and sim, no waiting) scaled to the job and its workers is a
    floor for generators that compute more than they call.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections import defaultdict
from contextvars import ContextVar
from typing import Any

from synth.dryreport import DryRunReport, ProviderProjection, engine_in_flight, throughput
from synth.engine.plan import Shard, fingerprint, shard_count
from synth.engine.shardrun import run_shard
from synth.generators.base import GenContext, Unit, UnitResult
from synth.providers.base import ApiKey, Provider
from synth.providers.pricing import estimate_price, price_for
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Usage
from synth.spec import JobSpec, PriceSpec, ProviderSpec, parse_model

DEFAULT_LATENCY_S = 1.0  # one call, prompt to last token: typical of a hosted chat model's short answer
Z95 = 1.96  # two-sided 95 % normal quantile

_UNIT: ContextVar[int | None] = ContextVar("synth_dryrun_unit", default=None)  # None: setup


# ---------------------------------------------------------------- the sample


class Meter:
    """Usage per (unit index, or None for setup; route): [calls, prompt tokens, completion tokens],
    and the most calls each unit had out at once."""

    def __init__(self) -> None:
        self.usage: dict[tuple[int | None, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        self.out: dict[int | None, int] = defaultdict(int)
        self.peak: dict[int | None, int] = defaultdict(int)

    def enter(self) -> int | None:
        unit = _UNIT.get()
        self.out[unit] += 1
        self.peak[unit] = max(self.peak[unit], self.out[unit])
        return unit

    def leave(self, unit: int | None, route: str, usage: Usage | None) -> None:
        self.out[unit] -= 1
        if usage is not None:
            row = self.usage[(unit, route)]
            row[0] += 1
            row[1] += usage.prompt_tokens
            row[2] += usage.completion_tokens

    def calls_at_once(self) -> float:
        """Mean over the units that called a model of the most calls they had out at once."""
        peaks = [v for k, v in self.peak.items() if k is not None]
        return sum(peaks) / len(peaks) if peaks else 1.0


class _MeteredProvider:
    """A provider that meters every call it answers (retries and re-asks included)."""

    def __init__(self, inner: Provider, route: str, meter: Meter) -> None:
        self.inner, self.route, self.meter = inner, route, meter
        self.kind, self.model = inner.kind, inner.model

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        unit, comp = self.meter.enter(), None
        try:
            # the sim answers without yielding: yield once, so calls a unit makes together overlap
            # here as they would on a real provider, and the meter sees how many are out at once
            await asyncio.sleep(0)
            comp = await self.inner.complete(request, key, timeout=timeout)
            return comp
        finally:
            self.meter.leave(unit, self.route, comp.usage if comp is not None else None)

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        unit, out = self.meter.enter(), None
        try:
            await asyncio.sleep(0)
            out = await self.inner.embed(request, key, timeout=timeout)
            return out
        finally:
            self.meter.leave(unit, self.route, out.usage if out is not None else None)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Tagged:
    """The job's generator, marking which unit each model call is made for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind = inner.kind

    def arrow_schema(self) -> Any:
        return self.inner.arrow_schema()

    async def generate(self, unit: Unit, ctx: GenContext) -> UnitResult:
        _UNIT.set(unit.index)  # this lane's task context; tasks the unit starts inherit it
        result: UnitResult = await self.inner.generate(unit, ctx)
        return result


def sim_copy(job: JobSpec) -> JobSpec:
    """The job with every provider served by the offline sim under the same name (so routes resolve
    as in the real job): no keys, no limits, no budget, no cache."""
    data = job.model_dump(mode="json")
    data["providers"] = [
        {
            "name": p.route,
            "model": p.model if p.model.startswith("sim:") else f"sim:{parse_model(p.model).model}",
            "params": p.params,
            "max_retries": p.max_retries,
            "max_reasks": p.max_reasks,
            "timeout_s": p.timeout_s,
        }
        for p in job.providers
    ]
    data["budget"] = {}
    data["cache"] = {**data["cache"], "enabled": False}
    return JobSpec.model_validate(data)


def first_provider(job: JobSpec, route: str) -> ProviderSpec:
    """The provider a route's requests go to first (as the dispatcher resolves it)."""
    by_route = {p.route: p for p in job.providers}
    for name in job.route_targets(route):
        if name in by_route:
            return by_route[name]
    return next((p for p in job.providers if p.model == route), job.providers[0])


def sample_shards(job: JobSpec, sample: int) -> list[Shard]:
    """The job's first ``sample`` units, in the job's own shards. The first half is a piece of its
    own: it pays for first-use costs (imports, compiled schemas), and only the rest is timed."""
    n, size = min(sample, job.count), job.output.shard_size
    pieces = [Shard(k, k * size, min(n, (k + 1) * size)) for k in range(shard_count(n, size))]
    warm = n // 2
    if 0 < warm < pieces[0].stop:
        first = pieces.pop(0)
        pieces[:0] = [Shard(first.index, first.start, warm), Shard(first.index, warm, first.stop)]
    return pieces


async def make_sample(job: JobSpec, sample: int) -> tuple[Meter, dict[str, Any]]:
    """Make the sample on the sim; the meter of its calls and the shards' outcome counts."""
    from synth.generators.registry import create_generator
    from synth.providers.dispatch import Dispatcher
    from synth.providers.factory import create_provider

    sim = sim_copy(job)
    meter = Meter()
    llm = Dispatcher.from_spec(sim, provider_factory=lambda p: _MeteredProvider(create_provider(p), p.route, meter))
    generator = create_generator(sim.generator, sim)
    fp = fingerprint(job)  # the real job's ids, so requests (and seeded answers) are the real run's
    ctx = GenContext(job=job.name, seed=job.seed, llm=llm)
    out: dict[str, Any] = {
        "units": 0,
        "records": 0,
        "dead_letters": 0,
        "dead_example": None,
        "aborted": None,
        "seconds": 0.0,
        "timed": 0,
    }
    try:
        await generator.setup(ctx)
        tagged = _Tagged(generator)
        seen: dict[int, set[str]] = defaultdict(set)
        pieces = sample_shards(job, sample)
        for i, shard in enumerate(pieces):
            # dedup within a shard, as workers do
            async def claim(key: str, _seen: set[str] = seen[shard.index]) -> bool:
                if key in _seen:
                    return False
                _seen.add(key)
                return True

            shard_ctx = GenContext(job=job.name, seed=job.seed, llm=llm, claims=claim, extras=ctx.extras)
            started = time.perf_counter()
            res = await run_shard(
                tagged,  # type: ignore[arg-type]
                shard_ctx,
                shard,
                fp,
                concurrency=job.engine.concurrency,
            )
            if i > 0 or len(pieces) == 1:
                out["seconds"] += time.perf_counter() - started
                out["timed"] += shard.size
            out["units"] += shard.size
            if res.aborted:
                out["aborted"] = res.aborted
                break
            out["records"] += res.stats["records"]
            out["dead_letters"] += res.stats["dead_letters"]
            examples = res.stats.get("dead_examples") or {}
            if examples and out["dead_example"] is None:
                kind, msg = next(iter(examples.items()))
                out["dead_example"] = f"{kind}: {msg}"
    finally:
        if hasattr(generator, "aclose"):
            await generator.aclose()
        await llm.aclose()
    return meter, out


# ---------------------------------------------------------------- projection


def project(
    job: JobSpec,
    meter: Meter,
    made: dict[str, Any],
    *,
    workers: int | None = None,
    latency_s: float = DEFAULT_LATENCY_S,
) -> DryRunReport:
    """The whole job's numbers from a sample's meter (see the module docstring)."""
    n = max(1, made["units"])
    workers = max(
        1, min(workers or job.engine.workers or os.cpu_count() or 1, shard_count(job.count, job.output.shard_size))
    )
    most_out = engine_in_flight(job, workers, meter.calls_at_once())
    by_route = {p.route: p for p in job.providers}
    prices: dict[str, PriceSpec | None] = {}
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # first provider -> projected
    unit_usd: dict[int, float] = defaultdict(float)
    for (unit, route), (calls, prompt, completion) in meter.usage.items():
        p = first_provider(job, route)
        if p.route not in prices:
            prices[p.route] = price_for(p.model, job.prices, provider_price=p.price)
        scale = workers if unit is None else job.count / n  # setup runs once per worker
        row = totals[p.route]
        row[0] += calls * scale
        row[1] += prompt * scale
        row[2] += completion * scale
        price = prices[p.route]
        if unit is not None and price is not None:
            unit_usd[unit] += _usd(prompt, completion, price)
    providers: list[ProviderProjection] = []
    for route, (n_calls, n_prompt, n_completion) in totals.items():
        spec, price = by_route[route], prices[route]
        tp = throughput(
            spec, (n_prompt + n_completion) / n_calls if n_calls else 0.0, latency_s=latency_s, max_in_flight=most_out
        )
        providers.append(
            ProviderProjection(
                route=route,
                model=spec.model,
                price=price,
                calls=round(n_calls),
                prompt_tokens=round(n_prompt),
                completion_tokens=round(n_completion),
                usd=None if price is None else _usd(n_prompt, n_completion, price),
                throughput=tp,
                wall_s=n_calls / tp.rate_rps if n_calls else 0.0,
            )
        )
    priced = [p.usd for p in providers if p.usd is not None]
    usd = sum(priced) if priced else None
    low = high = None
    if usd is not None and made["units"] >= 2:
        values = [unit_usd.get(i, 0.0) for i in range(made["units"])]  # the sample is units 0 .. n-1
        half = Z95 * statistics.stdev(values) / math.sqrt(len(values)) * job.count
        low, high = max(0.0, usd - half), usd + half
    calls_s = max((p.wall_s for p in providers), default=0.0)
    compute_s = made["seconds"] / max(1, made["timed"]) * job.count / workers
    return DryRunReport(
        job=job.name,
        count=job.count,
        sample_units=made["units"],
        sample_records=made["records"],
        sample_dead_letters=made["dead_letters"],
        dead_example=made["dead_example"],
        aborted=made["aborted"],
        workers=workers,
        providers=providers,
        calls=sum(p.calls for p in providers),
        prompt_tokens=sum(p.prompt_tokens for p in providers),
        completion_tokens=sum(p.completion_tokens for p in providers),
        usd=usd,
        usd_low=low,
        usd_high=high,
        unpriced=sorted({p.model for p in providers if p.price is None}),
        sim_estimate=_sim_estimate(job, providers),
        calls_s=calls_s,
        compute_s=compute_s,
        wall_s=max(calls_s, compute_s),
        max_usd=job.budget.max_usd,
        max_tokens=job.budget.max_tokens,
    )


def _usd(prompt: float, completion: float, price: PriceSpec) -> float:
    return (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6


def _sim_estimate(job: JobSpec, providers: list[ProviderProjection]) -> tuple[str, float] | None:
    """A job on the sim costs nothing; say what its tokens would cost on the model it stands for
    (``sim:gpt-4o-mini`` for gpt-4o-mini, ``sim:default`` for gpt-4o-mini), as a real sim run does."""
    sims = [p for p in providers if p.model.startswith("sim:") and not p.usd]  # a job may price its sim
    if not sims:
        return None
    usd, names = 0.0, []
    for p in sims:
        price = estimate_price(p.model, job.prices)
        name = p.model.split(":", 1)[1]
        if price is None:
            name, price = "gpt-4o-mini", estimate_price("sim:gpt-4o-mini")
        assert price is not None
        names.append(name)
        usd += _usd(p.prompt_tokens, p.completion_tokens, price)
    return ", ".join(dict.fromkeys(names)), usd


async def dry_run_async(
    job: JobSpec, *, sample: int = 20, workers: int | None = None, latency_s: float = DEFAULT_LATENCY_S
) -> DryRunReport:
    if sample < 1:
        from synth.errors import ConfigError

        raise ConfigError(f"--sample must be at least 1, not {sample}")
    meter, made = await make_sample(job, sample)
    return project(job, meter, made, workers=workers, latency_s=latency_s)


def dry_run(
    job: JobSpec, *, sample: int = 20, workers: int | None = None, latency_s: float = DEFAULT_LATENCY_S
) -> DryRunReport:
    """Make ``sample`` units of ``job`` on the sim and project the whole job; writes nothing.
    ``workers`` defaults to ``engine.workers``, else one per CPU of this machine; ``latency_s`` is
    the expected time of one call on the real provider."""
    return asyncio.run(dry_run_async(job, sample=sample, workers=workers, latency_s=latency_s))


__all__ = [
    "DEFAULT_LATENCY_S",
    "DryRunReport",
    "Meter",
    "dry_run",
    "dry_run_async",
    "first_provider",
    "make_sample",
    "project",
    "sim_copy",
]

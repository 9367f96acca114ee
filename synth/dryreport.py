"""What a dry run reports (:mod:`synth.dryrun` makes the sample), and the rate arithmetic.

Rate model: a key serves at most ``min(rpm / 60, tpm / 60 / tokens per call, rps)`` requests/s; a
provider's ceiling is the sum over its keys (limits a key leaves unset fall back to the provider's,
as in the key pool; a key with none set is "unlimited": its limits would be learned from the
provider's headers). The engine keeps at most ``workers x shards_per_worker x min(concurrency,
shard_size)`` units out (no more than the job has), each with as many calls in flight as the
sample's units had at once (usually one: a unit's calls follow one another), and no more than the
keys' ``max_concurrency`` when every key sets one. By Little's law a rate ``r`` keeps
``r x latency`` requests in flight, so the rate is ``min(ceiling, most in flight / latency)`` and the
time is calls / rate.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from synth.spec import JobSpec, Limits, PriceSpec, ProviderSpec


class Throughput(BaseModel):
    """Requests/s a provider sustains for a job, and how many are in flight meanwhile."""

    ceiling_rps: float | None = Field(description="sum of the keys' limits in requests/s; None = unlimited")
    max_in_flight: float = Field(description="most requests the engine (and the keys' max_concurrency) keep out")
    latency_s: float
    rate_rps: float = Field(description="min(ceiling, max_in_flight / latency)")
    in_flight: float = Field(description="Little's law: rate x latency")
    bound: str = Field(description="'keys' when the ceiling binds, else 'latency'")


def key_rps(rpm: float | None, tpm: float | None, rps: float | None, tokens_per_call: float) -> float | None:
    """Requests/s one key allows: the tightest of its set limits; None when none is set."""
    caps = []
    if rpm is not None:
        caps.append(rpm / 60.0)
    if tpm is not None and tokens_per_call > 0:
        caps.append(tpm / 60.0 / tokens_per_call)
    if rps is not None:
        caps.append(rps)
    return min(caps) if caps else None


def throughput(provider: ProviderSpec, tokens_per_call: float, *, latency_s: float, max_in_flight: float) -> Throughput:
    """The rate ``provider`` sustains: its keys' ceiling, or the latency bound when that is lower
    or the keys are unlimited."""
    from synth.providers.keys import key_limits

    keys = [key_limits(provider, k) for k in provider.keys] or [key_limits(provider, Limits())]
    rates = [key_rps(k.rpm, k.tpm, k.rps, tokens_per_call) for k in keys]
    ceiling = None if any(r is None for r in rates) else sum(r for r in rates if r is not None)
    caps = [k.max_concurrency for k in keys]
    if all(c is not None for c in caps):
        max_in_flight = min(max_in_flight, float(sum(c for c in caps if c is not None)))
    latency_bound = max_in_flight / latency_s
    rate = latency_bound if ceiling is None else min(ceiling, latency_bound)
    return Throughput(
        ceiling_rps=ceiling,
        max_in_flight=max_in_flight,
        latency_s=latency_s,
        rate_rps=rate,
        in_flight=rate * latency_s,
        bound="keys" if ceiling is not None and ceiling <= latency_bound else "latency",
    )


def engine_in_flight(job: JobSpec, workers: int, calls_per_unit: float = 1.0) -> float:
    """Most model calls the engine keeps out: units in flight times each unit's calls at once."""
    eng = job.engine
    units = min(job.count, workers * eng.shards_per_worker * min(eng.concurrency, job.output.shard_size))
    return units * max(1.0, calls_per_unit)


class ProviderProjection(BaseModel):
    """What the whole job would send to one provider (the first of a route)."""

    route: str
    model: str
    price: PriceSpec | None = Field(description="None: no price known")
    calls: int
    prompt_tokens: int
    completion_tokens: int
    usd: float | None
    throughput: Throughput
    wall_s: float


class DryRunReport(BaseModel):
    """The projection of a whole job from a sample made on the offline sim."""

    job: str
    count: int = Field(description="planned units of the whole job")
    sample_units: int
    sample_records: int
    sample_dead_letters: int
    dead_example: str | None = None
    aborted: str | None = None
    workers: int = Field(description="workers the real run starts (setup runs once in each)")
    providers: list[ProviderProjection]
    calls: int
    prompt_tokens: int
    completion_tokens: int
    usd: float | None = Field(description="priced calls only; None when no call is priced")
    usd_low: float | None = Field(None, description="95% interval of the total from the sample's spread")
    usd_high: float | None = None
    unpriced: list[str] = Field(default_factory=list, description="models with no known price")
    sim_estimate: tuple[str, float] | None = Field(None, description="a sim job: its tokens on the model it stands for")
    calls_s: float = Field(description="time of the model calls at the projected rates")
    compute_s: float = Field(description="the sample's own making time (generators, sim) scaled to the job and workers")
    wall_s: float = Field(description="the larger of calls_s and compute_s")
    max_usd: float | None = None
    max_tokens: int | None = None

    @property
    def over_budget(self) -> bool | None:
        """True when the projection passes ``budget``; None when the job sets none."""
        if self.max_usd is None and self.max_tokens is None:
            return None
        tokens = self.prompt_tokens + self.completion_tokens
        return bool(
            (self.max_usd is not None and (self.usd or 0.0) > self.max_usd)
            or (self.max_tokens is not None and tokens > self.max_tokens)
        )

    def render(self) -> str:
        lines = [
            f"dry run of {self.job}: {self.sample_units:,} of {self.count:,} units made on the offline sim "
            f"({self.sample_records:,} records, {self.sample_dead_letters:,} dead letters); nothing written"
        ]
        if self.aborted:
            lines.append(f"  the sample stopped early: {self.aborted}")
        if self.dead_example:
            lines.append(f"  a dead letter: {self.dead_example}")
        lines.append(
            f"projected for {self.count:,} units: {self.calls:,} calls, {self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion tokens"
        )
        lines.append("cost: " + self._cost_text())
        for p in self.providers:
            t = p.throughput
            ceiling = "unlimited (no rpm/tpm set)" if t.ceiling_rps is None else f"{t.ceiling_rps:,.2f} requests/s"
            if p.price is None:
                price = "no price known"
            elif p.model.startswith("sim:") and not (p.price.input_per_mtok or p.price.output_per_mtok):
                price = "free"
            else:
                price = f"${p.price.input_per_mtok:g} / ${p.price.output_per_mtok:g} per million tokens in / out"
            lines.append(
                f"  {p.route} ({p.model}, {price}): {p.calls:,} calls; keys' ceiling {ceiling}; "
                f"{t.rate_rps:,.2f} requests/s ({t.bound}-bound), {t.in_flight:,.1f} in flight at "
                f"{t.latency_s:g} s per call (at most {t.max_in_flight:,.0f})"
            )
        w = f"{self.workers} worker{'' if self.workers == 1 else 's'}"
        lines.append(
            f"time: about {_duration(self.wall_s)} ({_duration(self.calls_s)} of model calls; "
            f"making the units needs {_duration(self.compute_s)} on {w})"
        )
        lines.append("budget: " + self._budget_text())
        return "\n".join(lines)

    def _cost_text(self) -> str:
        if self.usd is None and not self.unpriced:
            return "$0 (no model calls)"
        text = "unknown" if self.usd is None else _money(self.usd)
        if (
            self.usd is not None
            and self.usd_low is not None
            and self.usd_high is not None
            and self.usd_high > self.usd_low
        ):
            text += f" (95% range {_money(self.usd_low)} to {_money(self.usd_high)})"
        if self.unpriced:
            text += (
                f"; no price known for {', '.join(self.unpriced)} (its calls are not counted): add it under "
                "'prices:' or as the provider's 'price:'"
            )
        if self.sim_estimate is not None:
            text += f"; the sim is free: about {_money(self.sim_estimate[1])} on {self.sim_estimate[0]}"
        return text

    def _budget_text(self) -> str:
        verdict = self.over_budget
        if verdict is None:
            return "none set"
        parts = []
        if self.max_usd is not None:
            parts.append(f"max_usd {_money(self.max_usd)}")
        if self.max_tokens is not None:
            parts.append(f"max_tokens {self.max_tokens:,}")
        return f"{', '.join(parts)}: " + (
            "the projection EXCEEDS it; the run would stop there" if verdict else "the projection is within it"
        )


def _money(usd: float) -> str:
    """Dollars to the cent from $1, else to three significant digits (a small job's cost shows)."""
    if usd >= 1 or usd <= 0:
        return f"${usd:,.2f}"
    return f"${usd:.{2 - math.floor(math.log10(usd))}f}"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:,.1f} s"
    if s < 7200:
        return f"{s / 60:,.1f} min"
    return f"{s / 3600:,.1f} h"


__all__ = ["DryRunReport", "ProviderProjection", "Throughput", "engine_in_flight", "key_rps", "throughput"]

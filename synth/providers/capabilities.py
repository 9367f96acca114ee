"""What a provider's model can do: context window, structured output, tools, a declared quality
tier, and its price. Read from the model table (``synth/data/models.yaml``, shared with
:mod:`synth.providers.pricing`), then the job's ``models:`` (by model string or bare name), then the
provider's own ``capabilities:``; the price is :func:`~synth.providers.pricing.price_for`'s.

What the table does not say is taken as able: only a declared lack (``structured: false``, a
context smaller than the request) rules a model out, in cost routing and at load.

``sim:<model>`` stands in for ``<model>`` (``sim:gpt-4o-mini`` can what gpt-4o-mini can, and costs
nothing); ``sim:default`` can everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from synth.providers.limits import prompt_tokens
from synth.providers.pricing import MODELS, known_model, price_for
from synth.records import Request
from synth.spec import CapabilitySpec, JobSpec, PriceSpec, ProviderSpec, parse_model

FEATURES = ("structured", "tools")
FEATURE_NAMES = {"structured": "structured output", "tools": "tool calls"}


@dataclass(frozen=True)
class Needs:
    """What a request asks of a model."""

    structured: bool = False
    tools: bool = False
    tokens: int = 0  # prompt + the output it reserves

    @classmethod
    def of(cls, request: Request) -> Needs:
        out = (request.max_tokens or 0) * request.n
        return cls(request.json_schema is not None, bool(request.tools), prompt_tokens(request.messages) + out)


NO_NEEDS = Needs()


@dataclass(frozen=True)
class Capabilities:
    """One provider's model: None means not known (taken as able)."""

    model: str
    context: int | None = None
    structured: bool | None = None
    tools: bool | None = None
    quality: float | None = None
    price: PriceSpec | None = None

    def lacks(self, needs: Needs) -> list[str]:
        """What of ``needs`` this model declares it cannot do (empty: it can, as far as is known)."""
        out = [FEATURE_NAMES[f] for f in FEATURES if getattr(needs, f) and getattr(self, f) is False]
        if needs.tokens and self.context is not None and needs.tokens > self.context:
            out.append(f"context window of {needs.tokens} tokens (it has {self.context})")
        return out

    def meets(self, needs: Needs) -> bool:
        return not self.lacks(needs)

    def usd(self, needs: Needs) -> float | None:
        """What a request of this size costs here (output at its reservation), None when unpriced."""
        p = self.price
        if p is None:
            return None
        tokens = max(needs.tokens, 1)
        return (tokens * p.input_per_mtok + tokens * p.output_per_mtok) / 1e6


def _table_row(name: str) -> dict[str, object]:
    known = known_model(name)
    return dict(MODELS[known]) if known is not None else {}


def _override(model: str, overrides: Mapping[str, CapabilitySpec]) -> CapabilitySpec | None:
    if model in overrides:
        return overrides[model]
    bare = parse_model(model).model.lower().rsplit("/", 1)[-1]
    return next((c for k, c in overrides.items() if k.lower().rsplit(":", 1)[-1].rsplit("/", 1)[-1] == bare), None)


def capabilities_for(provider: ProviderSpec, job: JobSpec | None = None) -> Capabilities:
    """The capabilities of a provider's model: table, then the job's ``models:``, then the provider's own."""
    ref = parse_model(provider.model)
    name = ref.model
    if ref.kind == "sim":  # sim:<model> stands in for <model>; sim:default can everything
        name = name.partition(":")[2] if name.partition(":")[0] in ("openai", "gemini", "openrouter") else name
    row = _table_row(name)
    fields = {k: row.get(k) for k in ("context", "structured", "tools", "quality")}
    for over in (_override(provider.model, job.models) if job is not None else None, provider.capabilities):
        if over is not None:
            fields.update({k: getattr(over, k) for k in over.model_fields_set})
    price = price_for(
        provider.model, job.prices if job is not None else None, provider_price=provider.price, warn=False
    )
    return Capabilities(
        provider.model,
        context=int(fields["context"]) if fields["context"] is not None else None,  # type: ignore[call-overload]
        structured=fields["structured"],  # type: ignore[arg-type]
        tools=fields["tools"],  # type: ignore[arg-type]
        quality=float(fields["quality"]) if fields["quality"] is not None else None,  # type: ignore[arg-type]
        price=price,
    )


def job_capabilities(job: JobSpec) -> dict[str, Capabilities]:
    """Every provider of the job by name."""
    return {p.route: capabilities_for(p, job) for p in job.providers}


def route_needs(job: JobSpec) -> dict[str, Needs]:
    """What the job's generator asks of each route it calls, as far as its options say: structured
    output (structured and events generators, a conversation's structured user simulator,
    instruction sources and simulated tools) and tools (a conversation with tools)."""
    g = job.generator
    opts = g.options
    needs: dict[str, set[str]] = {}

    def need(route: str | None, what: str) -> None:
        needs.setdefault(route or g.model, set()).add(what)

    if g.kind in ("structured", "events"):
        need(g.model, "structured")
    if g.kind == "timeseries" and opts.get("scenario"):
        need(g.model, "structured")
    if g.kind == "conversation":
        corr = opts.get("correspondent") or {}
        if isinstance(corr, dict) and corr.get("mode") == "structured":
            need(corr.get("model"), "structured")
        for tool in opts.get("tools") or ():
            need(g.model, "tools")
            if isinstance(tool, dict) and not tool.get("function"):
                need(tool.get("model"), "structured")  # a tool without a handler is simulated by a model
    src = opts.get("instructions")
    if isinstance(src, dict) and (src.get("kind") in ("topics", "documents") or src.get("generate")):
        need(src.get("model"), "structured")  # the instruction writer answers {"items": [...]}
    return {r: Needs(structured="structured" in w, tools="tools" in w) for r, w in needs.items()}


def capability_problems(job: JobSpec) -> list[str]:
    """One line per route whose every provider lacks what the generator asks of it: such a job
    could only fail (``generator.model``'s structured job routed to a model without structured
    output). A route where some provider can serve is left to cost routing."""
    caps = job_capabilities(job)
    lines = []
    for route, needs in route_needs(job).items():
        names = [n for n in job.route_targets(route) if n in caps] or [
            p.route for p in job.providers if p.model == route
        ]
        lacking = {n: caps[n].lacks(needs) for n in names}
        if names and all(lacking.values()):
            where = "generator.model" if route == job.generator.model else "generator"
            asked = " and ".join(FEATURE_NAMES[f] for f in FEATURES if getattr(needs, f))
            what = "; ".join(f"{n} ({caps[n].model}) has no {' or '.join(w)}" for n, w in lacking.items())
            lines.append(
                f"{where}: route {route!r} is asked for {asked}, but {what}; route it to a model that has "
                f"it, or set the model's capabilities under 'models:' if the table is wrong"
            )
    return lines


__all__ = [
    "Capabilities",
    "Needs",
    "NO_NEEDS",
    "capabilities_for",
    "capability_problems",
    "job_capabilities",
    "route_needs",
]

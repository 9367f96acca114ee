"""The provider half of the job file: model strings, keys and limits, providers, routes (and their
strategies), circuit breakers and model capabilities. Pydantic models with unknown fields refused;
:mod:`synth.spec` re-exports every name, so ``from synth.spec import ProviderSpec`` keeps working.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synth.errors import ConfigError

if TYPE_CHECKING:
    from synth.spec import JobSpec

KNOWN_KINDS = ("openai", "openrouter", "compat", "gemini", "sim")  # the built-in kinds; plugins add more
STRATEGIES = ("fallback", "weighted", "cost", "latency", "quality", "hybrid")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string such as ``openai:gpt-4o-mini`` or ``sim:fast``."""

    kind: str
    model: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}"


def parse_model(text: str) -> ModelRef:
    """Parse ``kind:model``: a kind registered in the ``synth.providers`` entry-point group (the
    built-ins are; ``compat`` is any OpenAI-compatible endpoint and needs a base_url), or a
    ``package.module:Class`` kind (``package.module:Class:model``). See :mod:`synth.plugins`."""
    from synth.plugins import split_model

    return ModelRef(*split_model(text))


HTTP_URL = re.compile(r"^https?://[^/\s]+")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Limits(Strict):
    """Per-key limits. Unset means: learn it from the provider's ``x-ratelimit-*`` headers."""

    rpm: float | None = Field(None, gt=0, description="requests per minute for one key")
    tpm: float | None = Field(None, gt=0, description="tokens per minute (prompt + output) for one key")
    rps: float | None = Field(None, gt=0, description="optional requests per second cap for one key")
    max_concurrency: int | None = Field(None, gt=0, description="most requests in flight on one key")


class KeySpec(Limits):
    """One API key, named by the environment variable that holds it."""

    env: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable holding the key")
    alias: str | None = Field(None, description="name used in logs, stats and records (default: the variable name)")

    @property
    def name(self) -> str:
        return self.alias or self.env


class PriceSpec(Strict):
    input_per_mtok: float = Field(..., ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(..., ge=0, description="USD per million completion tokens")


class CapabilitySpec(Strict):
    """What a model can do, overriding the built-in table (unset fields keep the table's value).
    Prices are set with ``price:`` / ``prices:``, the one place a price is given."""

    context: int | None = Field(None, gt=0, description="context window in tokens (prompt + output)")
    structured: bool | None = Field(None, description="answers JSON Schema constrained output")
    tools: bool | None = Field(None, description="calls tools (functions)")
    quality: float | None = Field(None, ge=0, le=1, description="declared quality score, 0 to 1 (quality routing)")


class BreakerSpec(Strict):
    """A provider's circuit breaker: opens when at least ``error_rate`` of the calls of the last
    ``window_s`` seconds failed (5xx, timeouts, lost connections; 429s and bad requests do not
    count), given ``min_calls`` calls; then sends it nothing for ``open_s``, lets ``probes`` calls
    through (half-open), and closes when they succeed."""

    enabled: bool = Field(True, description="false: never open")
    error_rate: float = Field(0.5, gt=0, le=1, description="share of failed calls in the window that opens it")
    window_s: float = Field(10.0, gt=0, description="sliding window of the error rate, in seconds")
    min_calls: int = Field(10, ge=1, description="fewest calls in the window before it may open")
    open_s: float = Field(5.0, gt=0, description="seconds it stays open before letting probes through")
    probes: int = Field(1, ge=1, description="calls let through while half-open; all succeeding closes it")


class ProviderSpec(Limits):
    """One model behind one API, with its keys."""

    name: str | None = Field(None, description="route name generators refer to (default: the model string)")
    model: str = Field(
        ...,
        description="'kind:model', e.g. openai:gpt-4o-mini, gemini:gemini-2.5-flash, "
        "openrouter:meta-llama/llama-3.1-8b-instruct, compat:<model> (with base_url), sim:default",
    )
    base_url: str | None = Field(None, description="API base URL (OpenAI-compatible servers such as vLLM, Ollama)")
    keys: list[KeySpec] = Field(default_factory=list, description="API keys by environment variable name")
    timeout_s: float = Field(60.0, gt=0, description="timeout of one call")
    max_retries: int = Field(
        6,
        ge=0,
        description="transient failures of one request retried while the provider "
        "answers others (a provider answering no one is retried for "
        "engine.max_outage_s instead), and before a fallback; 0: no retries",
    )
    max_reasks: int = Field(2, ge=0, description="re-asks of malformed or schema-invalid structured output")
    client: Literal["auto", "sdk", "wire"] = Field(
        "auto", description="openai kinds: 'wire' is the lean HTTP client, 'sdk' the official SDK; auto = wire"
    )
    price: PriceSpec | None = Field(None, description="overrides the built-in price table for this model")
    capabilities: CapabilitySpec | None = Field(
        None, description="overrides the built-in capability table (context, structured, tools, quality) for this model"
    )
    breaker: BreakerSpec | None = Field(
        None, description="this provider's circuit breaker; the fields it sets win over engine.breaker"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="default request params (temperature, max_tokens, seed)"
    )
    gateways: int = Field(1, ge=1, description="gateway processes per key; a key's limit is split evenly among them")

    @property
    def route(self) -> str:
        return self.name or self.model

    @field_validator("model")
    @classmethod
    def _model_form(cls, v: str) -> str:
        try:
            parse_model(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url_form(cls, v: str | None) -> str | None:
        # a URL without a scheme would be taken as a relative path by the HTTP clients
        if v is not None and not HTTP_URL.match(v.strip()):
            raise ValueError(f"{v!r} is not an http(s) URL; write it with its scheme, e.g. http://127.0.0.1:8000/v1")
        return v


class RouteSpec(Strict):
    """A route with a strategy choosing which of its providers a request goes to first; the others
    follow as fallbacks. A plain list of provider names is ``{strategy: fallback, providers: [...]}``."""

    strategy: Literal["fallback", "weighted", "cost", "latency", "quality", "hybrid"] = Field(
        "fallback",
        description="fallback: in order; weighted: split by weights; cost: cheapest model able to answer; "
        "latency: lowest recent p50; quality: declared ranking; hybrid: weighted score of cost, latency, quality",
    )
    providers: list[str] = Field(..., min_length=1, description="provider names of the route")
    weights: list[float] | None = Field(None, description="weighted: one weight >= 0 per provider, in order")
    ranking: list[str] | None = Field(
        None,
        description="quality (and hybrid): provider names best first (default: the capability table's "
        "quality, then the order of providers)",
    )
    hybrid: dict[Literal["cost", "latency", "quality"], float] | None = Field(
        None, description="hybrid: weight of each score, e.g. {cost: 2, latency: 1, quality: 1} (default 1 each)"
    )
    window: int = Field(50, ge=3, description="latency, hybrid: the p50 is over each provider's last this many calls")
    window_s: float = Field(30.0, gt=0, description="latency, hybrid: and over at most this many seconds")
    explore: float = Field(
        0.05, ge=0, le=1, description="latency, hybrid: share of requests sent first to a provider to measure it"
    )

    @model_validator(mode="after")
    def _combinations(self) -> RouteSpec:
        n, s = len(self.providers), self.strategy
        problems = []
        if len(set(self.providers)) != n:
            problems.append("providers: a provider is named twice; name each once")
        if self.weights is not None and s != "weighted":
            problems.append(f"weights: only the weighted strategy takes weights (this route is {s}); remove them")
        if s == "weighted":
            if self.weights is None:
                problems.append(f"weights: the weighted strategy needs one weight per provider ({n})")
            elif len(self.weights) != n:
                problems.append(f"weights: {len(self.weights)} weights for {n} providers; give one per provider")
            elif any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                problems.append("weights: weights must be >= 0 with at least one above 0")
        if self.ranking is not None:
            if s not in ("quality", "hybrid"):
                problems.append(f"ranking: only quality and hybrid routes take a ranking (this route is {s})")
            elif sorted(set(self.ranking)) != sorted(self.providers) or len(self.ranking) != n:
                problems.append(f"ranking: must name each provider of the route once ({self.providers})")
        if self.hybrid is not None:
            if s != "hybrid":
                problems.append(f"hybrid: only the hybrid strategy takes score weights (this route is {s})")
            elif any(w < 0 for w in self.hybrid.values()) or not any(w > 0 for w in self.hybrid.values()):
                problems.append("hybrid: weights must be >= 0 with at least one above 0")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def route_schema(schema: dict[str, Any]) -> None:
    """The job's JSON Schema with a route's mapping form spelled out (it is kept as written, for
    the job's identity, and validated as a RouteSpec)."""
    schema["properties"]["routes"]["additionalProperties"]["anyOf"][1] = RouteSpec.model_json_schema()


def route_problems(route: str, value: list[str] | dict[str, Any], names: list[str]) -> list[str]:
    """One located line per problem of ``routes.<route>`` (its own fields, unknown provider names)."""
    from pydantic import ValidationError

    from synth.spec import validation_lines

    where = f"routes.{route}"
    if isinstance(value, list):
        providers = value
    else:
        try:
            providers = RouteSpec.model_validate(value).providers
        except ValidationError as e:
            lines = []
            for line in validation_lines(e, prefix=where):
                head, _, rest = line.partition(": ")
                # the route-wide check names each field itself: put the route before each
                located = head == where and all(": " in m for m in rest.splitlines())
                lines += [f"{where}.{m}" for m in rest.splitlines()] if located else [line]
            return lines
        where += ".providers"
    return [
        f"{where}[{j}]: route {route!r} names unknown provider {t!r}; use one of {names}"
        for j, t in enumerate(providers)
        if t not in names
    ]


# the environment variables each kind's own SDK reads for its key, first set wins
CONVENTION_KEYS = {
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openrouter": ("OPENROUTER_API_KEY",),
}


def apply_conventions(spec: JobSpec, env: dict[str, str]) -> JobSpec:
    """Fill what a provider leaves unsaid from its kind's usual environment variables: a provider
    with no ``keys`` gets its kind's key variable (by name; the value stays in the environment), an
    ``openai:`` provider with no ``base_url`` gets ``OPENAI_BASE_URL``. What the job says wins."""
    for i, p in enumerate(spec.providers):
        kind = parse_model(p.model).kind
        update: dict[str, Any] = {}
        if not p.keys:
            var = next((v for v in CONVENTION_KEYS.get(kind, ()) if env.get(v)), None)
            if var:
                update["keys"] = [KeySpec(env=var)]
        base_url = env.get("OPENAI_BASE_URL", "").strip()
        if kind == "openai" and not p.base_url and base_url:
            if not HTTP_URL.match(base_url):
                raise ConfigError(
                    f"OPENAI_BASE_URL: {base_url!r} (used by providers[{i}]) is not an http(s) URL; "
                    "set it with its scheme, e.g. http://127.0.0.1:8000/v1, or set base_url"
                )
            update["base_url"] = base_url
        if update:
            spec.providers[i] = p.model_copy(update=update)
    return spec


__all__ = [
    "CONVENTION_KEYS",
    "KNOWN_KINDS",
    "STRATEGIES",
    "BreakerSpec",
    "CapabilitySpec",
    "KeySpec",
    "Limits",
    "ModelRef",
    "PriceSpec",
    "ProviderSpec",
    "RouteSpec",
    "Strict",
    "apply_conventions",
    "parse_model",
    "route_problems",
    "route_schema",
]

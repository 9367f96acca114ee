"""The job file: pydantic models (unknown fields refused, every field described), ``${VAR}`` and
``${VAR:-default}`` substitution, an optional ``.env`` file, and one line per problem on error.

API keys are named by environment variable only; the value is read where it is used (the gateway)
and never stored in the spec.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from synth.enginespec import EngineSpec
from synth.errors import ConfigError, KeyMissing
from synth.providerspec import (
    KNOWN_KINDS,
    STRATEGIES,
    BreakerSpec,
    CapabilitySpec,
    KeySpec,
    Limits,
    ModelRef,
    PriceSpec,
    ProviderSpec,
    RouteSpec,
    Strict,
    apply_conventions,
    parse_model,
    route_problems,
    route_schema,
)

if TYPE_CHECKING:
    from synth.defaults import Defaults


class BudgetSpec(Strict):
    max_usd: float | None = Field(None, gt=0, description="stop spending at this many US dollars")
    max_tokens: int | None = Field(None, gt=0, description="stop at this many total tokens")


class StorageSpec(Strict):
    """Object-storage settings; unset fields fall back to the standard AWS environment variables."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, R2 ...)")
    region: str | None = Field(None, description="bucket region")
    key_env: str | None = Field(None, description="environment variable holding the access key id")
    secret_env: str | None = Field(None, description="environment variable holding the secret access key")
    anonymous: bool = Field(False, description="unsigned requests (public buckets)")


class OutputSpec(Strict):
    uri: str = Field("./out/${job}", description="fsspec URI of the dataset folder; ${job} is the job name")
    format: Literal["parquet", "jsonl", "json", "csv"] = Field(
        "parquet",
        description="file format of the data files: parquet; jsonl (one JSON object per line); json (one JSON "
        "array of records per file); csv (RFC 4180 with a header row, nested fields as JSON text, "
        "times ISO 8601). Fixed for the life of an output: resuming with another format is refused",
    )
    partition_by: list[str] | None = Field(None, description="hive partition columns (default: the generator's)")
    shard_size: int = Field(1000, gt=0, description="planned units per shard, the unit of commit and resume")
    compression: str = Field("zstd", description="parquet compression codec")
    storage: StorageSpec = Field(default_factory=StorageSpec)
    max_dead_letter_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="largest share of planned units that may end as dead letters in a run "
        "that exits 0; above it the run exits non-zero (6)",
    )
    max_outage_s: float = Field(
        120.0,
        ge=0,
        description="how long an object store may fail every operation in a row (retried with backoff) "
        "before the run stops with a storage error (exit 3); resumable",
    )

    @field_validator("uri")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        unknown = unknown_protocol(v)
        if unknown:
            raise ValueError(unknown)
        return v


class CacheSpec(Strict):
    """The response cache: answers to identical requests (same provider kind, model, messages,
    schema, tools, parameters and seed) are reused instead of bought again."""

    enabled: bool = Field(True, description="reuse answers to identical requests (--no-cache turns it off)")
    path: str | None = Field(
        None,
        description="fsspec URI of the cache folder (default: $SYNTH_CACHE_DIR, else "
        "${XDG_CACHE_HOME:-~/.cache}/synth); a bucket a cluster shares works",
    )
    ttl_s: float | None = Field(None, gt=0, description="answers older than this many seconds are not reused")
    max_entries: int = Field(100_000, gt=0, description="LRU size of each gateway's in-memory cache of parsed answers")


class GeneratorSpec(BaseModel):
    """``kind`` picks a registered generator; the other fields are that generator's own options,
    validated by it at load time."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field(..., description="structured, conversation, timeseries, events, or a plugin's name")
    model: str = Field("default", description="route (provider name) the generator calls")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class JobSpec(Strict):
    """A synth job: what to generate, with which models, under which limits, and where to."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=route_schema)

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="job name")
    count: int = Field(..., gt=0, description="planned units (records; series for timeseries)")
    seed: int = Field(0, description="seed of every random choice; same seed, same data")
    generator: GeneratorSpec
    providers: list[ProviderSpec] = Field(default_factory=list, description="models and keys (default: sim)")
    routes: dict[str, list[str] | dict[str, Any]] = Field(
        default_factory=dict,
        description="route name -> provider names tried in order (fallbacks), or {strategy, providers, ...} "
        f"(a RouteSpec; strategies: {', '.join(STRATEGIES)})",
    )
    prices: dict[str, PriceSpec] = Field(default_factory=dict, description="price overrides by model string")
    models: dict[str, CapabilitySpec] = Field(
        default_factory=dict, description="capability overrides (context, structured, tools, quality) by model string"
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    _route_specs: dict[str, RouteSpec] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _defaults_and_routes(self) -> JobSpec:
        # each problem is a line "<field>: <message>" (validation_lines shows them as they are)
        if not self.providers:
            self.providers = [ProviderSpec(name="default", model="sim:default")]
        names = [p.route for p in self.providers]
        problems = [
            f"providers[{i}].name: provider name {n!r} is used by an earlier provider too; give each provider "
            f"its own 'name'"
            for i, n in enumerate(names)
            if n in names[:i]
        ]
        for route, value in self.routes.items():
            problems += route_problems(route, value, names)
        if not problems and not self.serves(self.generator.model):
            problems.append(
                f"generator.model: {self.generator.model!r} names no provider of the job (providers: {names}, "
                f"routes: {sorted(self.routes)}); set it to one of them, or add a provider"
                + (
                    " (no providers given: the offline sim:default serves the route 'default')"
                    if names == ["default"] and self.providers[0].model == "sim:default"
                    else ""
                )
            )
        if problems:
            raise ValueError("\n".join(problems))
        self.output.uri = self.output.uri.replace("${job}", self.name)
        return self

    def serves(self, route: str) -> bool:
        """Whether a route (or a raw 'kind:model' a provider has) reaches at least one provider."""
        return bool(self.route_targets(route))

    def route_targets(self, route: str) -> list[str]:
        """Names of the providers ``route`` reaches, in the order given (a strategy may pick another
        first); empty when none does. The one resolver of routes: a name under ``routes:``, a
        provider's name, ``default`` (the first provider when none is named so), or a raw
        ``kind:model`` one of the providers has."""
        names = [p.route for p in self.providers]
        if route in self.routes:
            listed = list(self.route_spec(route).providers)
        elif route == "default" and "default" not in names and names:
            listed = [names[0]]
        else:
            listed = [route]
        found = [n for n in listed if n in names]
        return found or [p.route for p in self.providers if p.model == route]

    def route_spec(self, route: str) -> RouteSpec:
        """The route's strategy and providers; a name that is no route is a fallback over itself."""
        hit = self._route_specs.get(route)
        if hit is None:
            value = self.routes.get(route)
            if isinstance(value, dict):
                hit = RouteSpec.model_validate(value)
            else:
                hit = RouteSpec(providers=value if value is not None else (self.route_targets(route) or [route]))
            self._route_specs[route] = hit
        return hit

    def breaker_for(self, provider: ProviderSpec) -> BreakerSpec:
        """The job's breaker settings with the fields the provider sets winning."""
        own = provider.breaker
        if own is None:
            return self.engine.breaker
        return self.engine.breaker.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})

    def redacted(self) -> dict[str, Any]:
        """The spec as plain data. Holds no secrets by construction (keys are variable names)."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(value: Any, env: dict[str, str], loc: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed document.
    ``${job}`` is left for the spec to fill."""
    if isinstance(value, dict):
        return {k: substitute(v, env, f"{loc}.{k}" if loc else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env, f"{loc}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name == "job":
            return m.group(0)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{loc}: environment variable {name} is not set; set it or write ${{{name}:-default}}")

    out = _VAR.sub(repl, value)
    # a whole-value substitution of a number stays a number
    if out != value and _VAR.fullmatch(value):
        try:
            return yaml.safe_load(out) if out.strip() else out
        except yaml.YAMLError:
            return out
    return out


# the member tags pydantic puts in the location of a union's errors ('str', 'dict[str,any]' ...)
_UNION_TAG = re.compile(r"^(str|int|float|bool|[a-z-]+\[.*\])$")


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or _UNION_TAG.match(str(part)):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "job"


_LOCATED = re.compile(r"^[A-Za-z_][\w.\[\]-]*: ")


def unknown_protocol(uri: str) -> str | None:
    """Why fsspec cannot open ``uri`` (a protocol it does not know), or None."""
    import fsspec

    for part in uri.split("::"):
        proto = part.split("://", 1)[0].lower() if "://" in part else "file"
        if proto in fsspec.available_protocols():
            continue
        return (
            f"protocol {proto!r} of {uri!r} is not known; use a local path or a URI such as "
            f"s3://bucket/prefix, gs://, az://, file://"
        )
    return None


def validation_lines(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per field: the errors of a union's members at one field are joined with 'or'."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for e in err.errors():
        loc = format_loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"] and not prefix and all(_LOCATED.match(m) for m in msg.splitlines()):
            lines += msg.splitlines()  # a job-wide check that names each field itself
            continue
        if prefix:
            loc = f"{prefix}.{loc}" if loc != "job" else prefix
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (synth spec schema lists every field)"
        msgs = found.setdefault(loc, [])
        if msg not in msgs:
            msgs.append(msg)
    return [f"{loc}: {' or '.join(msgs)}" for loc, msgs in found.items()] + lines


def parse_job(data: Any, env: dict[str, str] | None = None, *, check_keys: bool = True) -> JobSpec:
    """Validate a parsed job document. Raises ConfigError with one line per problem."""
    env = dict(os.environ) if env is None else env
    if not isinstance(data, dict):
        raise ConfigError("job file must be a mapping of fields (name, count, generator, ...)")
    data = substitute(data, env)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError("\n".join(validation_lines(e))) from None
    apply_conventions(spec, env)
    if check_keys:
        missing = [
            f"providers[{i}].keys[{j}]: environment variable {k.env} is not set"
            for i, p in enumerate(spec.providers)
            for j, k in enumerate(p.keys)
            if not env.get(k.env)
        ]
        if missing:
            raise KeyMissing("\n".join(missing))
    return spec


def read_document(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"job file {str(p)!r} does not exist; pass the path of a .yaml or .json job file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p.name}: not UTF-8 text (byte {e.start}); save the job file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p.name}: cannot read the job file ({e.strerror or e}); check the path") from None
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(e, json.JSONDecodeError):
            where = f" at line {e.lineno}, column {e.colno}"
        raise ConfigError(f"{p.name}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}{where}") from None


def load_env_file(path: str | Path | None) -> dict[str, str]:
    """Read a ``.env`` file into the process environment (existing variables win)."""
    if path is None or not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    for k, v in values.items():
        os.environ.setdefault(k, v)
    return values


def load_spec(
    path: str | Path,
    *,
    env_file: str | Path | None = None,
    check_keys: bool = True,
    defaults: bool | Defaults = True,
) -> JobSpec:
    """Load a job file (YAML or JSON), reading ``.env`` beside it when present, with the defaults
    files merged under it (:mod:`synth.defaults`): ``defaults`` True finds them, False uses none,
    or give a loaded :class:`~synth.defaults.Defaults`."""
    load_env_file(env_file if env_file is not None else Path(path).parent / ".env")
    return parse_job(with_defaults(read_document(path), defaults), check_keys=check_keys)


def with_defaults(doc: Any, defaults: bool | Defaults = True) -> Any:
    """A job document with the defaults files merged under it: the one place job files meet them."""
    if defaults is False:
        return doc
    from synth.defaults import apply_defaults, load_defaults  # builds on this module

    return apply_defaults(doc, load_defaults() if defaults is True else defaults)


__all__ = [
    "KNOWN_KINDS",
    "BreakerSpec",
    "BudgetSpec",
    "CapabilitySpec",
    "CacheSpec",
    "EngineSpec",
    "GeneratorSpec",
    "JobSpec",
    "KeySpec",
    "Limits",
    "ModelRef",
    "OutputSpec",
    "PriceSpec",
    "ProviderSpec",
    "RouteSpec",
    "StorageSpec",
    "load_spec",
    "parse_job",
    "parse_model",
    "substitute",
    "with_defaults",
]

"""Value samplers shared by every generator's template variables and payload fields.

A sampler spec is a small pydantic model picked by ``kind`` (see :data:`SamplerSpec`); its
``build()`` gives a :class:`Sampler` that draws ``n`` values at once from a numpy ``Generator``::

    spec = parse_sampler({"kind": "choice", "values": ["a", "b"], "weights": [3, 1]})
    values = build_sampler(spec).sample(numpy_rng(42, "plan"), 1000)

Draws depend only on the generator's state, so the same seed gives the same values. Numeric
kinds return numpy arrays; text kinds return object arrays of ``str``. Another module may add
kinds: any pydantic model with a ``kind`` literal and a ``build() -> Sampler`` method works with
:func:`build_sampler`; combine it with :data:`SAMPLER_SPECS` into a wider union.
"""

from __future__ import annotations

import functools
import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from synth.errors import ConfigError
from synth.generators.common import ENVELOPE_COLUMNS, inline_schema, numpy_rng, parse_duration, utc  # re-exported

# ---------------------------------------------------------------- the protocol


@runtime_checkable
class Sampler(Protocol):
    """Draws values. ``arrow_type`` is the pyarrow type of what it returns."""

    arrow_type: pa.DataType

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray | list[Any]: ...

    def sample_one(self, rng: np.random.Generator) -> Any: ...


class _FnSampler:
    """A sampler from a function ``(rng, n) -> array``."""

    def __init__(self, fn: Any, arrow_type: pa.DataType) -> None:
        self._fn, self.arrow_type = fn, arrow_type

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray | list[Any]:
        return self._fn(rng, n)

    def sample_one(self, rng: np.random.Generator) -> Any:
        value = self._fn(rng, 1)[0]
        return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------- specs


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Numeric(_Spec):
    min: float | None = Field(None, description="clip draws below this")
    max: float | None = Field(None, description="clip draws above this")
    integer: bool = Field(False, description="round to whole numbers (int64)")
    decimals: int | None = Field(None, ge=0, le=12, description="round floats to this many decimals")

    def _finish(self, draw: Any) -> _FnSampler:
        lo, hi, integer, decimals = self.min, self.max, self.integer, self.decimals

        def fn(rng: np.random.Generator, n: int) -> np.ndarray:
            x = draw(rng, n)
            if lo is not None or hi is not None:
                x = np.clip(x, lo, hi)
            if integer:
                return np.rint(x).astype(np.int64)
            return np.round(x, decimals) if decimals is not None else x

        return _FnSampler(fn, pa.int64() if integer else pa.float64())


class ChoiceSpec(_Spec):
    """One of ``values``, with optional ``weights`` (any positive scale)."""

    kind: Literal["choice"] = "choice"
    values: list[Any] = Field(..., min_length=1, description="the values to choose among")
    weights: list[float] | None = Field(None, description="relative weights, one per value")

    @model_validator(mode="after")
    def _weights(self) -> ChoiceSpec:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(
                    f"weights has {len(self.weights)} entries for {len(self.values)} values; give one per value"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        return self

    def build(self) -> Sampler:
        vals = self.values
        if all(isinstance(v, bool) for v in vals):
            kind, table = pa.bool_(), np.array(vals, dtype=bool)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            kind, table = pa.int64(), np.array(vals, dtype=np.int64)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            kind, table = pa.float64(), np.array(vals, dtype=np.float64)
        else:
            kind, table = pa.string(), np.array([v if isinstance(v, str) else str(v) for v in vals], dtype=object)
        p = None if self.weights is None else np.asarray(self.weights, float) / sum(self.weights)
        k = len(vals)
        return _FnSampler(lambda rng, n: table[rng.choice(k, size=n, p=p)], kind)


class UniformSpec(_Numeric):
    """Uniform on ``[low, high)``."""

    kind: Literal["uniform"] = "uniform"
    low: float = Field(0.0, description="lower bound")
    high: float = Field(1.0, description="upper bound")

    def build(self) -> Sampler:
        if self.high < self.low:
            raise ConfigError(f"uniform sampler: high {self.high} is below low {self.low}; swap them")
        lo, hi = self.low, self.high
        if self.integer:  # every whole number in [low, high] equally likely
            return _FnSampler(lambda rng, n: rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, size=n), pa.int64())
        return self._finish(lambda rng, n: rng.uniform(lo, hi, size=n))


class NormalSpec(_Numeric):
    """Gaussian with ``mean`` and ``std``; ``min``/``max`` clip."""

    kind: Literal["normal"] = "normal"
    mean: float = Field(0.0, description="mean")
    std: float = Field(1.0, ge=0, description="standard deviation")

    def build(self) -> Sampler:
        return self._finish(lambda rng, n: rng.normal(self.mean, self.std, size=n))


class LognormalSpec(_Numeric):
    """Log-normal: ``median`` and ``sigma`` (standard deviation of the log)."""

    kind: Literal["lognormal"] = "lognormal"
    median: float = Field(1.0, gt=0, description="median of the values")
    sigma: float = Field(0.5, ge=0, description="standard deviation of log(value)")

    def build(self) -> Sampler:
        mu = float(np.log(self.median))
        return self._finish(lambda rng, n: rng.lognormal(mu, self.sigma, size=n))


class ExponentialSpec(_Numeric):
    """Exponential with the given ``mean`` (e.g. waiting times)."""

    kind: Literal["exponential"] = "exponential"
    mean: float = Field(1.0, gt=0, description="mean of the values")

    def build(self) -> Sampler:
        return self._finish(lambda rng, n: rng.exponential(self.mean, size=n))


class PoissonSpec(_Spec):
    """Poisson counts with mean ``lam``."""

    kind: Literal["poisson"] = "poisson"
    lam: float = Field(1.0, ge=0, description="mean count")

    def build(self) -> Sampler:
        return _FnSampler(lambda rng, n: rng.poisson(self.lam, size=n).astype(np.int64), pa.int64())


class BoolSpec(_Spec):
    """True with probability ``p``."""

    kind: Literal["bool"] = "bool"
    p: float = Field(0.5, ge=0, le=1, description="probability of true")

    def build(self) -> Sampler:
        return _FnSampler(lambda rng, n: rng.random(n) < self.p, pa.bool_())


class ConstSpec(_Spec):
    """Always ``value``."""

    kind: Literal["const"] = "const"
    value: Any = Field(..., description="the value")

    def build(self) -> Sampler:
        return ChoiceSpec(values=[self.value]).build()


class DatetimeSpec(_Spec):
    """Instants uniform in ``[start, end)``, as timestamps, ISO strings or dates."""

    kind: Literal["datetime"] = "datetime"
    start: datetime = Field(..., description="earliest instant (UTC when no offset is given)")
    end: datetime = Field(..., description="latest instant (exclusive)")
    format: Literal["timestamp", "iso", "date"] = Field("timestamp", description="output form")

    def build(self) -> Sampler:
        lo = int(utc(self.start).timestamp() * 1_000_000)
        hi = int(utc(self.end).timestamp() * 1_000_000)
        if hi <= lo:
            raise ConfigError("datetime sampler: end must be after start")
        fmt = self.format

        def fn(rng: np.random.Generator, n: int) -> np.ndarray:
            us = rng.integers(lo, hi, size=n).astype("datetime64[us]")
            if fmt == "timestamp":
                return us
            if fmt == "date":
                return us.astype("datetime64[D]")
            return np.array([s + "Z" for s in np.datetime_as_string(us, unit="s")], dtype=object)

        kind = {"timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32(), "iso": pa.string()}[fmt]
        return _FnSampler(fn, kind)


class IdSpec(_Spec):
    """Identifiers drawn from the rng (so they repeat with the seed): uuid4, hex or int."""

    kind: Literal["id"] = "id"
    format: Literal["uuid", "hex", "int"] = Field("uuid", description="uuid4 text, hex text or 63-bit int")
    prefix: str = Field("", description="text put before uuid/hex ids")
    length: int = Field(16, ge=4, le=64, description="hex digits of 'hex' ids")

    def build(self) -> Sampler:
        fmt, prefix, length = self.format, self.prefix, self.length
        if fmt == "int":
            return _FnSampler(lambda rng, n: rng.integers(0, 2**63 - 1, size=n, dtype=np.int64), pa.int64())

        def fn(rng: np.random.Generator, n: int) -> np.ndarray:
            if fmt == "hex":
                raw = rng.bytes(n * ((length + 1) // 2)).hex()
                step = (length + 1) // 2 * 2
                return np.array([prefix + raw[i * step : i * step + length] for i in range(n)], dtype=object)
            b = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
            b[:, 6] = (b[:, 6] & 0x0F) | 0x40  # version 4
            b[:, 8] = (b[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
            return np.array([prefix + str(uuid.UUID(bytes=row.tobytes())) for row in b], dtype=object)

        return _FnSampler(fn, pa.string())


@functools.lru_cache(maxsize=16)
def _faker(locale: str) -> Any:
    try:
        from faker import Faker
    except ImportError:  # pragma: no cover - faker is a core dependency
        raise ConfigError("faker samplers need the faker package; pip install faker") from None
    try:
        return Faker(locale)
    except AttributeError:
        raise ConfigError(f"faker locale {locale!r} is unknown; use e.g. 'en_US', 'de_DE', 'fr_FR'") from None


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


class FakerSpec(_Spec):
    """A Faker provider method (``name``, ``email``, ``address``, ``company``, ``city``, ...),
    seeded from the rng so values repeat with the seed."""

    kind: Literal["faker"] = "faker"
    provider: str = Field(..., description="Faker method name, e.g. name, email, address, company, phone_number")
    locale: str = Field("en_US", description="Faker locale")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the method")

    @field_validator("provider")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.startswith("_") or not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError(f"faker provider {v!r} is not a method name; use e.g. 'name' or 'email'")
        return v

    def build(self) -> Sampler:
        fake = _faker(self.locale)
        fn = getattr(fake, self.provider, None)
        if not callable(fn):
            raise ConfigError(f"faker has no provider {self.provider!r}; use e.g. name, email, address, company, city")
        args = self.args
        try:
            probe = _plain(fn(**args))
        except TypeError as e:
            raise ConfigError(f"faker provider {self.provider!r}: bad args {args}: {e}") from None
        kind = (
            pa.bool_()
            if isinstance(probe, bool)
            else pa.int64()
            if isinstance(probe, int)
            else pa.float64()
            if isinstance(probe, float)
            else pa.string()
        )
        dtype: Any = {pa.bool_(): bool, pa.int64(): np.int64, pa.float64(): np.float64}.get(kind, object)

        def draw(rng: np.random.Generator, n: int) -> np.ndarray:
            fake.seed_instance(int(rng.integers(0, 2**63 - 1)))
            return np.array([_plain(fn(**args)) for _ in range(n)], dtype=dtype)

        return _FnSampler(draw, kind)


SAMPLER_SPECS: tuple[type[BaseModel], ...] = (
    ChoiceSpec,
    UniformSpec,
    NormalSpec,
    LognormalSpec,
    ExponentialSpec,
    PoissonSpec,
    BoolSpec,
    ConstSpec,
    DatetimeSpec,
    IdSpec,
    FakerSpec,
)

SamplerSpec = Annotated[
    ChoiceSpec
    | UniformSpec
    | NormalSpec
    | LognormalSpec
    | ExponentialSpec
    | PoissonSpec
    | BoolSpec
    | ConstSpec
    | DatetimeSpec
    | IdSpec
    | FakerSpec,
    Field(discriminator="kind"),
]
"""Any built-in sampler spec, chosen by its ``kind`` field."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(SamplerSpec)


def parse_sampler(data: Any, where: str = "sampler") -> Any:
    """Validate a sampler spec from plain data; one line per problem on error."""
    if isinstance(data, BaseModel):
        return data
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        lines = [f"{where}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None


def build_sampler(spec: Any) -> Sampler:
    """A sampler from a spec model (or plain data of a built-in spec)."""
    spec = parse_sampler(spec) if isinstance(spec, dict) else spec
    build = getattr(spec, "build", None)
    if build is None:
        raise ConfigError(f"{type(spec).__name__} is not a sampler spec; give a mapping with a 'kind'")
    return build()


def sample(spec: Any, rng: np.random.Generator, n: int) -> np.ndarray | list[Any]:
    """``n`` values of ``spec`` drawn from ``rng``."""
    return build_sampler(spec).sample(rng, n)


__all__ = [
    "ENVELOPE_COLUMNS",
    "SAMPLER_SPECS",
    "BoolSpec",
    "ChoiceSpec",
    "ConstSpec",
    "DatetimeSpec",
    "ExponentialSpec",
    "FakerSpec",
    "IdSpec",
    "LognormalSpec",
    "NormalSpec",
    "PoissonSpec",
    "Sampler",
    "SamplerSpec",
    "UniformSpec",
    "build_sampler",
    "inline_schema",
    "numpy_rng",
    "parse_duration",
    "parse_sampler",
    "sample",
    "utc",
]

"""Prompt templates and the variables that fill them.

A template is ``str.format`` text (``"Write about {topic}"``) or, when it contains ``{{`` or
``{%``, Jinja in a sandbox (``"Write about {{ topic }}"``). Its variables are sampled per unit,
seeded, from:

* a list (``[a, b, c]``: uniform choice of the values as written) or a scalar (constant);
* ``{kind: values, values, weights}``: weighted choice of any values (objects too);
* any sampler of :mod:`synth.generators.samplers` by ``kind`` (choice with weights, uniform,
  normal, lognormal, poisson, datetime, id, faker, ...);
* ``{kind: range, low, high, step}``: evenly spaced numbers, ends included;
* ``{kind: file, uri, field}``: a random line of a txt file, or a random row (or one ``field`` of
  it) of a jsonl, csv or parquet file, on any fsspec URI (a glob reads every match).

Each variable draws from its own stream (seed, name, attempt), so adding a variable leaves the
others' values unchanged and 100,000 units give 100,000 independent combinations.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import posixpath
import string
from typing import Annotated, Any, Literal, Union

import numpy as np
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from synth.errors import ConfigError
from synth.generators.samplers import SAMPLER_SPECS, build_sampler

# ---------------------------------------------------------------- paths


def resolve_uri(uri: str, job: Any = None, where: str = "generator") -> str:
    """A relative local path is taken from the job file's folder when the job knows it (else the
    working folder), and must stay inside it: a path that climbs out with '..' is refused."""
    if "://" in uri or "::" in uri or posixpath.isabs(uri) or uri.startswith("~"):
        return uri
    if posixpath.normpath(uri.replace("\\", "/")).split("/")[0] == "..":
        raise ConfigError(
            f"{where}: {uri!r} climbs out of the folder it is relative to with '..'; "
            f"give a path inside it or an absolute path"
        )
    base = getattr(job, "base_dir", None)
    return posixpath.join(str(base), uri) if base else uri


def read_text(uri: str, where: str) -> str:
    import fsspec

    try:
        with fsspec.open(uri, "rt", compression="infer", encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{where}: file {uri!r} not found; give a path or fsspec URI that exists") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: {uri!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except (OSError, ValueError, ImportError) as e:  # a folder, no permission, an unknown protocol ...
        raise ConfigError(f"{where}: cannot read {uri!r} ({_reason(e)}); give a readable file") from None


def _reason(e: BaseException) -> str:
    """An error's cause in words, without its class name."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "unreadable"


def read_values(uri: str, where: str, field: str | None = None) -> list[Any]:
    """Non-empty lines of txt files, or rows (or one field of each row) of jsonl/csv/parquet files."""
    from synth.retrieval.index import expand

    try:
        fs, files, _ = expand(uri)
    except Exception as e:  # noqa: BLE001 - one line naming the option, whatever the filesystem said
        raise ConfigError(f"{where}: cannot read {uri!r}: {e}") from None
    out: list[Any] = []
    try:
        for f in files:
            out.extend(_file_values(fs, f, where, field))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: {uri!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {uri!r} ({_reason(e)}); give a readable file") from None
    if not out:
        raise ConfigError(f"{where}: no values in {uri!r}; supported: txt lines, jsonl, csv, parquet rows")
    return out


def _check_text_start(fs: Any, path: str, where: str, uri: str) -> None:
    """Read the start of a text file the workers will read whole: a file that is not UTF-8 text
    is refused at load, not once per unit."""
    from synth.retrieval.index import ROW_SUFFIXES, file_suffix

    if file_suffix(path) in ROW_SUFFIXES or fs.isdir(path):
        return
    try:
        with fs.open(path, "rt", compression="infer", encoding="utf-8") as fh:
            fh.read(1 << 16)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: {uri!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {uri!r} ({_reason(e)}); give a readable file") from None


def _file_values(fs: Any, f: str, where: str, field: str | None) -> list[Any]:
    from synth.retrieval.index import ROW_SUFFIXES, file_suffix, read_rows

    if file_suffix(f) in ROW_SUFFIXES:
        rows = read_rows(fs, f)
        if field is None:
            return list(rows)
        missing = [i for i, r in enumerate(rows) if field not in r]
        if missing:
            raise ConfigError(f"{where}: row {missing[0]} of {f} has no field {field!r}")
        return [r[field] for r in rows]
    with fs.open(f, "rt", compression="infer", encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


# ---------------------------------------------------------------- variable sources


class _Var(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RangeVar(_Var):
    """Evenly spaced numbers from ``low`` to ``high`` (both included), ``step`` apart."""

    kind: Literal["range"] = "range"
    low: float = Field(..., description="first value")
    high: float = Field(..., description="last value (included when on a step)")
    step: float = Field(1, gt=0, description="spacing; whole-number bounds and step give integers")

    @model_validator(mode="after")
    def _order(self) -> RangeVar:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}; swap them")
        return self

    def build(self) -> _RangeSampler:
        return _RangeSampler(self)


class _RangeSampler:
    def __init__(self, spec: RangeVar) -> None:
        self.spec = spec
        self.n = int((spec.high - spec.low) // spec.step) + 1
        self.integer = all(float(x).is_integer() for x in (spec.low, spec.step))

    def sample_one(self, rng: np.random.Generator) -> Any:
        return self.sample_bits(int(rng.integers(0, 2**63)))

    def sample_bits(self, bits: int) -> Any:
        """The value a uniform 63-bit integer picks (the bias of ``% n`` is below n / 2**63)."""
        x = self.spec.low + self.spec.step * (bits % self.n)
        return int(x) if self.integer else round(x, 10)


class FileVar(_Var):
    """A random line (txt) or row (jsonl, csv, parquet) of a file on any fsspec URI."""

    kind: Literal["file"] = "file"
    uri: str = Field(..., description="path, fsspec URI or glob of txt/jsonl/csv/parquet files")
    field: str | None = Field(None, description="take this field of each row instead of the whole row")

    def build(self) -> _ListSampler:
        raise ConfigError("file variables are loaded by VarSampler.load(); build() is not used for them")


class ValuesVar(_Var):
    """One of ``values`` exactly as written (text, numbers, objects), uniform or by ``weights``.
    A bare list in a job file means this."""

    kind: Literal["values"] = "values"
    values: list[Any] = Field(..., min_length=1, description="the values to choose among")
    weights: list[float] | None = Field(None, description="relative weights, one per value")

    @model_validator(mode="after")
    def _weights(self) -> ValuesVar:
        w = self.weights
        if w is not None and (len(w) != len(self.values) or any(x < 0 for x in w) or sum(w) <= 0):
            raise ValueError("weights needs one value >= 0 per value, with a positive sum")
        return self

    def build(self) -> _ListSampler:
        return _ListSampler(self.values, self.weights)


class _ListSampler:
    def __init__(self, values: list[Any], weights: list[float] | None = None) -> None:
        self.values = values
        self.cum = list(itertools.accumulate(weights)) if weights else None

    def sample_one(self, rng: np.random.Generator) -> Any:
        return self.sample_bits(int(rng.integers(0, 2**63)))

    def sample_bits(self, bits: int) -> Any:
        if self.cum is None:
            return self.values[bits % len(self.values)]
        return self.values[bisect.bisect_right(self.cum, (bits >> 10) * 2.0**-53 * self.cum[-1])]


def _shorthand(v: Any) -> Any:
    if isinstance(v, list):
        return {"kind": "values", "values": v}
    if not isinstance(v, (dict, BaseModel)):
        return {"kind": "const", "value": v}
    return v


VarSpec = Annotated[  # type: ignore[valid-type]
    Annotated[Union[SAMPLER_SPECS + (ValuesVar, RangeVar, FileVar)], Field(discriminator="kind")],  # noqa: UP007 - a union built from a tuple
    BeforeValidator(_shorthand),
]
"""A template variable source: a list, a scalar, a sampler spec, a range or a file."""


class VarSampler:
    """Draws every variable of a template for a unit. Call :meth:`load` before sampling."""

    def __init__(self, specs: dict[str, Any], *, job: Any = None, where: str = "generator.vars") -> None:
        self.specs = specs
        self.job = job
        self.where = where
        self._samplers: dict[str, Any] | None = None
        self._bits = np.random.PCG64(0)
        self._gen = np.random.Generator(self._bits)
        for name, spec in specs.items():  # fail fast on a missing file, before any worker starts
            if isinstance(spec, FileVar):
                import fsspec

                uri = resolve_uri(spec.uri, job, f"{where}.{name}.uri")
                try:
                    fs, path = fsspec.core.url_to_fs(uri)
                    found = fs.glob(path) if any(c in path for c in "*?[") else fs.exists(path)
                except (OSError, ValueError, ImportError) as e:  # e.g. an unknown protocol
                    raise ConfigError(
                        f"{where}.{name}.uri: cannot open {uri!r} ({_reason(e)}); give a path or fsspec URI that exists"
                    ) from None
                if found is True:
                    _check_text_start(fs, path, f"{where}.{name}.uri", uri)
                if not found:
                    raise ConfigError(f"{where}.{name}.uri: {uri!r} not found; give a path or fsspec URI that exists")

    def load(self) -> None:
        samplers: dict[str, Any] = {}
        for name, spec in self.specs.items():
            if isinstance(spec, FileVar):
                samplers[name] = _ListSampler(
                    read_values(
                        resolve_uri(spec.uri, self.job, f"{self.where}.{name}.uri"), f"{self.where}.{name}", spec.field
                    )
                )
            else:
                samplers[name] = build_sampler(spec)
        self._samplers = samplers

    def sample(self, seed: int, attempt: int = 0) -> dict[str, Any]:
        if self._samplers is None:
            self.load()
        assert self._samplers is not None
        out: dict[str, Any] = {}
        for name, s in self._samplers.items():
            d = hashlib.blake2b(f"{seed}:{name}:{attempt}".encode(), digest_size=32).digest()
            if isinstance(s, _UNIFORM):  # one draw straight from the hash: a quarter of the cost
                out[name] = s.sample_bits(int.from_bytes(d[:8], "little") >> 1)
            else:
                out[name] = _plain(s.sample_one(self._rng(d)))
        return out

    def _rng(self, d: bytes) -> np.random.Generator:
        """The stream of one variable of one unit attempt, from its 32-byte hash. Setting a PCG64
        state is about 3x cheaper than seeding a new generator, and this runs for every variable
        of every unit; each draw completes before the next state is set."""
        self._bits.state = {
            "bit_generator": "PCG64",
            "has_uint32": 0,
            "uinteger": 0,
            "state": {"state": int.from_bytes(d[:16], "little"), "inc": int.from_bytes(d[16:], "little") | 1},
        }
        return self._gen


_UNIFORM = (_RangeSampler, _ListSampler)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def sub_seed(seed: int, *salt: object) -> int:
    """A 31-bit request seed derived from a unit's seed and a purpose (turn, attempt ...)."""
    digest = hashlib.blake2b(repr((seed, *salt)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


_VARS_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def vars_json(values: dict[str, Any]) -> str:
    """Canonical JSON of a unit's variables (the ``vars`` lineage column): keys sorted, text as
    written (UTF-8, not escaped), anything else JSON has no type for as its ``str``."""
    try:
        return orjson.dumps(values, option=_VARS_OPTS, default=str).decode()
    except orjson.JSONEncodeError:  # e.g. integers past 64 bits, which the standard library writes
        return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


# ---------------------------------------------------------------- templates


class PromptTemplate:
    """A prompt with named holes; ``render(values)`` fills them."""

    def __init__(
        self, text: str, *, syntax: Literal["auto", "format", "jinja"] = "auto", where: str = "generator.prompt"
    ) -> None:
        self.text = text
        self.where = where
        self.syntax = ("jinja" if "{{" in text or "{%" in text else "format") if syntax == "auto" else syntax
        if self.syntax == "jinja":
            from jinja2 import StrictUndefined, TemplateSyntaxError, meta
            from jinja2.sandbox import SandboxedEnvironment

            env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
            try:
                self.names = set(meta.find_undeclared_variables(env.parse(text)))
                self._jinja = env.from_string(text)
            except TemplateSyntaxError as e:
                raise ConfigError(f"{where}: template error at line {e.lineno}: {e.message}") from None
        else:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
            except ValueError as e:
                raise ConfigError(f"{where}: {e}; write literal braces as {{{{ and }}}}") from None
            if any(f == "" or f.isdigit() for f in fields):
                raise ConfigError(
                    f"{where}: positional field '{{}}' in the template; name every variable, e.g. {{topic}}"
                )
            self.names = {f.split(".")[0].split("[")[0] for f in fields}

    def check(self, available: set[str]) -> None:
        """Refuse a template that uses a variable nobody defines."""
        missing = sorted(self.names - available)
        if missing:
            raise ConfigError(
                f"{self.where}: uses undefined variable(s) {missing}; define them under vars "
                f"(defined: {sorted(available) or 'none'})"
            )

    def render(self, values: dict[str, Any]) -> str:
        try:
            if self.syntax == "jinja":
                return self._jinja.render(**values)
            return self.text.format(**values)
        except Exception as e:  # noqa: BLE001 - a bad lookup into a sampled row, e.g. {row[missing]}
            raise ConfigError(f"{self.where}: cannot render with {sorted(values)}: {type(e).__name__}: {e}") from None


__all__ = [
    "FileVar",
    "PromptTemplate",
    "RangeVar",
    "ValuesVar",
    "VarSampler",
    "VarSpec",
    "read_text",
    "read_values",
    "resolve_uri",
    "sub_seed",
    "vars_json",
]

"""Quick generation: a whole job built from a few options (``synth generate KIND`` and
``synth.generate``), written and resumed like any other.

The generator block of a built-in kind is its ``synth init`` starter's, changed only where an option
says so; a plugin kind gets ``schema`` and ``prompt`` as its own options. A schema is a JSON Schema
or the short field form ``{temperature: {type: number, min: -20, max: 40}, city: {type: string,
enum: [Oslo, Lima]}}``, converted to JSON Schema (to time-series fields, or to events' per-user
columns). ``--output users.csv`` (a name ending .csv, .jsonl, .json or .parquet) keeps the committed,
resumable dataset beside it in ``users.csv.parts/`` and writes the single file from it once the run is
complete, under a temporary name moved into place.

    import synth
    table = synth.generate("structured", count=100, schema={"city": {"type": "string"}})
    rows = table.to_pylist()
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from synth.errors import ConfigError
from synth.records import ENVELOPE_COLUMNS
from synth.spec import JobSpec

if TYPE_CHECKING:
    import pyarrow as pa

STARTED = ("structured", "conversation", "timeseries", "events")  # kinds with a `synth init` starter
FILE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
ROUTES = ("cost", "latency", "quality")
PARTS = ".parts"
GENERIC_PROMPT = "Write one realistic, specific and varied example record."
_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "text": "string"}
_FORMATS = {"datetime": "date-time", "date": "date", "time": "time", "email": "email", "uuid": "uuid", "uri": "uri"}
_SCHEMA_KEYS = ("$schema", "$ref", "properties", "allOf", "anyOf", "oneOf")


# ---------------------------------------------------------------- schemas


def read_schema(source: str | Path | dict[str, Any], where: str = "--schema") -> dict[str, Any]:
    """A JSON Schema from a file (YAML or JSON) or a mapping, in either form; checked."""
    if isinstance(source, dict):
        doc: Any = source
        label = where
    else:
        p = Path(source)
        label = f"{where} {str(p)!r}"
        if not p.is_file():
            raise ConfigError(f"{label} does not exist; give a JSON Schema or a field list, as a YAML or JSON file")
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{label}: not valid YAML or JSON{at}; fix the file") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{label}: must be a mapping of fields (name: {{type: ...}}) or a JSON Schema object")
    schema = doc if doc.get("type") == "object" or any(k in doc for k in _SCHEMA_KEYS) else _object(doc, label)
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        at = "/".join(str(x) for x in e.path) or "the schema"
        raise ConfigError(f"{label}: not a valid JSON Schema at {at}: {e.message}") from None
    return schema


def _object(fields: dict[str, Any], label: str) -> dict[str, Any]:
    props = {str(k): _field(v, f"{label}: field {k!r}") for k, v in fields.items()}
    return {"type": "object", "additionalProperties": False, "required": list(props), "properties": props}


def _field(spec: Any, label: str) -> dict[str, Any]:
    """One field of the short form as JSON Schema: min/max, type names such as datetime, nested
    objects (``properties`` or ``fields``) and list items in the short form too."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{label}: give a type name or a mapping such as {{type: number, min: 0, max: 10}}")
    out = dict(spec)
    t = out.get("type")
    if isinstance(t, str):
        t = _TYPES.get(t, t)
        if t in _FORMATS:
            out.setdefault("format", _FORMATS[t])
            t = "string"
        out["type"] = t
    if "values" in out and "enum" not in out:
        out["enum"] = out.pop("values")
    for short in ("min", "max"):  # bounds of a number, a string's length or a list's size
        if short in out:
            out[short + {"string": "Length", "array": "Items"}.get(str(t), "imum")] = out.pop(short)
    nested = out.pop("fields", None) or out.get("properties")
    if isinstance(nested, dict) and not any(k in nested for k in ("type",)):
        out.update(_object(nested, label))
    if isinstance(out.get("items"), (str, dict)) and not (isinstance(out["items"], dict) and "$ref" in out["items"]):
        out["items"] = _field(out["items"], f"{label} items")
    return out


def _numeric_fields(schema: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """Time-series fields (numbers, with their bounds) from a schema's properties."""
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        t = prop.get("type")
        if t not in ("number", "integer"):
            raise ConfigError(
                f"{label}: field {name!r} is {t or 'untyped'}; time-series fields are numbers (type number or integer)"
            )
        f: dict[str, Any] = {"name": name, "type": "int" if t == "integer" else "float"}
        for key, to in (("minimum", "min"), ("maximum", "max"), ("description", "description"), ("unit", "unit")):
            if prop.get(key) is not None:
                f[to] = prop[key]
        fields.append(f)
    return fields


def _samplers(schema: dict[str, Any], label: str) -> dict[str, Any]:
    """Events' per-user columns from a schema's properties: enums are choices, bounded numbers uniform."""
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        t = prop.get("type")
        if "enum" in prop:
            out[name] = {"kind": "choice", "values": prop["enum"]}
        elif t == "boolean":
            out[name] = {"kind": "bool"}
        elif t in ("number", "integer"):
            low, high = prop.get("minimum", 0), prop.get("maximum", 100)
            out[name] = {"kind": "uniform", "low": low, "high": high, "integer": t == "integer"}
        else:
            raise ConfigError(
                f"{label}: field {name!r} ({t or 'untyped'}): events' user fields are enums, booleans or bounded "
                "numbers; give it an enum, or use --save-job and edit the job's user_fields"
            )
    return out


# ---------------------------------------------------------------- the job


def starter(kind: str) -> dict[str, Any]:
    """The parsed ``synth init`` starter of a kind (generator block, output shard size)."""
    from synth.starter import template

    doc: dict[str, Any] = yaml.safe_load(template(kind))
    return doc


def _generator(kind: str, schema: dict[str, Any] | None, prompt: str | None) -> tuple[dict[str, Any], int]:
    """The generator block and the starter's shard size (a multiple keeps e.g. series_per_plan a divisor)."""
    if kind not in STARTED:
        from synth.generators.registry import get_generator

        try:
            get_generator(kind)
        except ConfigError as e:  # one line naming the registered kinds
            raise ConfigError(f"KIND {kind!r}: {str(e).removeprefix('generator.kind: ')}") from None
        g: dict[str, Any] = {"kind": kind}
        if schema is not None:
            g["schema"] = schema
        if prompt is not None:
            g["prompt"] = prompt
        return g, 100
    base = starter(kind)
    g = copy.deepcopy(base["generator"])
    shard = int(base.get("output", {}).get("shard_size", 100))
    if kind == "structured":
        g["layout"] = "columns"  # one column per field: a CSV or table reads as the schema
        if schema is not None:
            g["schema"] = schema
            g.pop("system", None)
            g.pop("vars", None)
            g["prompt"] = GENERIC_PROMPT
        if prompt is not None:
            g["prompt"] = prompt
            used = set(re.findall(r"\{\{?\s*([A-Za-z_]\w*)", prompt))
            g["vars"] = {k: v for k, v in (g.get("vars") or {}).items() if k in used}
        if not g.get("vars"):
            g.pop("vars", None)
            g["keep_prompt"] = False  # the same text on every row says nothing
    elif kind == "timeseries":
        if schema is not None:
            g["fields"] = _numeric_fields(schema, "--schema")
            names = ", ".join(f["name"] for f in g["fields"])
            g["scenario"] = f"Realistic, varied measurements of {names}."
        if prompt is not None:
            g["scenario"] = prompt
    elif kind == "events":
        if schema is not None:
            g["user_fields"] = _samplers(schema, "--schema")
        if prompt is not None:
            g.pop("catalog", None)  # a model plans the event types from the description
            g["scenario"] = prompt
    else:  # conversation
        if schema is not None:
            raise ConfigError(
                "--schema: a conversation has no record schema; leave --schema out, or use --save-job and edit the job"
            )
        if prompt is not None:
            g["instructions"]["seeds"] = [prompt]  # the topic tree grows from it
    return g, shard


def _models(model: str | None, fallback: list[str]) -> list[str]:
    from synth.spec import parse_model

    models = [model or "sim:default", *fallback]
    for i, m in enumerate(models):
        try:
            parse_model(m)
        except ConfigError as e:
            raise ConfigError(f"{'--model' if i == 0 else '--fallback'} {m!r}: {e}") from None
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise ConfigError(f"--fallback: {', '.join(twice)} is given twice; name each model once")
    return models


def _shard_size(count: int, base: int) -> int:
    """Shards of about a twentieth of the job (so --stream shows records early), a multiple of the
    starter's size, at most about 1,000 units."""
    return base * max(1, min(max(1, 1000 // base), math.ceil(count / 20 / base)))


@dataclass
class Quick:
    """A built job: its document, and the single file to write from its output (or None)."""

    doc: dict[str, Any]
    file: str | None = None

    @property
    def drop(self) -> tuple[str, ...]:
        """Columns that say nothing here: a structured job with no prompt variables has empty ``vars``."""
        g = self.doc["generator"]
        return ("vars",) if g["kind"] == "structured" and not g.get("vars") else ()

    def spec(self) -> JobSpec:
        from synth.api import load_job

        return load_job(self.doc)

    def yaml(self, command: str | None = None) -> str:
        head = "# A job made by synth generate; run (or resume) it with: synth run THIS_FILE\n"
        if command:
            head += f"# made by: {command}\n"
        if self.file:
            head += (
                f"# The records go to {self.doc['output']['uri']}; the single file {self.file} is written from it\n"
                "# by running the same synth generate command again (it resumes), or by synth export.\n"
            )
        return head + yaml.safe_dump(self.doc, sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path, command: str | None = None) -> Path:
        """Write the job as YAML, atomically (a temporary file beside it, then renamed)."""
        p = Path(path)
        if p.suffix.lower() not in (".yaml", ".yml"):
            raise ConfigError(f"--save-job {str(p)!r}: give a path ending in .yaml")
        if not p.parent.is_dir():
            raise ConfigError(f"--save-job: folder {str(p.parent)!r} does not exist; create it or give another path")
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(self.yaml(command).replace("THIS_FILE", str(p)), encoding="utf-8")
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return p


def build(
    kind: str,
    *,
    count: int = 100,
    schema: str | Path | dict[str, Any] | None = None,
    prompt: str | None = None,
    model: str | None = None,
    fallback: list[str] | str | None = None,
    route: str | None = None,
    budget: float | None = None,
    format: str | None = None,  # noqa: A002 - the CLI's option name
    output: str | None = None,
    name: str | None = None,
    seed: int = 0,
    shard_size: int | None = None,
) -> Quick:
    """The job ``synth generate`` runs (see the module doc); every bad option is one line."""
    if count < 1:
        raise ConfigError(f"--count {count}: give at least 1")
    if route is not None and route not in ROUTES:
        raise ConfigError(f"--route {route!r}: use one of {', '.join(ROUTES)}")
    if format is not None and format not in FILE_FORMATS.values():
        raise ConfigError(f"--format {format!r}: use one of parquet, jsonl, json, csv")
    if budget is not None and budget <= 0:
        raise ConfigError(f"--budget {budget}: give a positive number of US dollars")
    fallback = [m.strip() for m in fallback.split(",") if m.strip()] if isinstance(fallback, str) else fallback or []
    models = _models(model, fallback)
    parsed = read_schema(schema) if schema is not None else None
    gen, base = _generator(kind, parsed, prompt)
    doc: dict[str, Any] = {"name": "", "count": count, "seed": seed, "generator": gen}
    # providers always named: the offline sim unless --model, whatever a defaults file holds
    if len(models) == 1 and not route:
        doc["providers"] = [{"name": "default", "model": models[0]}]
    else:  # providers named by their model string, tried by the route's strategy
        doc["providers"] = [{"model": m} for m in models]
        doc["routes"] = {"default": {"strategy": route or "fallback", "providers": models}}
    if budget is not None:
        doc["budget"] = {"max_usd": budget}
    out: dict[str, Any] = {"shard_size": shard_size or _shard_size(count, base)}
    file = None
    if output and Path(output.rstrip("/")).suffix.lower() in FILE_FORMATS and not output.endswith("/"):
        file = output
        wanted = FILE_FORMATS[Path(output).suffix.lower()]
        if format is not None and format != wanted:
            raise ConfigError(f"--format {format} does not match --output {output!r}; drop --format or rename the file")
        format = wanted
        output = output + PARTS  # the resumable dataset, beside the file; parquet keeps the types
    elif format is not None:
        out["format"] = format
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", kind).strip("-.") or "quick"
    doc["name"] = name or stem
    if output is None:  # the same options resume the same output; other options get their own
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:8]
        output = f"./out/{doc['name']}-{digest}"
    out["uri"] = output if "://" in output else str(Path(output).absolute())
    doc["output"] = out
    if file is not None and "://" not in file:
        file = str(Path(file).absolute())
    return Quick(doc, file)


# ---------------------------------------------------------------- after the run


def payload_columns(schema: pa.Schema, drop: tuple[str, ...] = ()) -> list[str]:
    """The record's own columns (and ``id``): what a single file, --stream and generate() hold."""
    return [n for n in schema.names if n == "id" or (n not in ENVELOPE_COLUMNS and n not in drop)]


def write_file(quick: Quick, *, overwrite: bool = True) -> int:
    """The single file from the finished dataset, written under a temporary name and moved into
    place: the records' own columns, in shard order. Returns the records written."""
    assert quick.file is not None
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synth.dataset import Output, batches
    from synth.export.rows import dumps, write_csv, write_jsonl
    from synth.export.target import Target

    fmt = FILE_FORMATS[Path(quick.file).suffix.lower()]
    ds = Output(quick.doc["output"]["uri"]).dataset()
    cols = payload_columns(ds.schema, quick.drop)
    sub = pa.schema([ds.schema.field(c) for c in cols])
    rows = batches(ds, cols)
    n = 0
    with Target(quick.file, overwrite=overwrite).file() as f:
        if fmt == "csv":
            n = write_csv(rows, f, sub)
        elif fmt == "jsonl":
            n = write_jsonl(rows, f)
        elif fmt == "parquet":
            with pq.ParquetWriter(f, sub, compression="zstd") as w:
                for b in rows:
                    w.write_batch(b)
                    n += b.num_rows
        else:  # one JSON array, a record per line
            f.write(b"[")
            for b in rows:
                for row in b.to_pylist():
                    f.write((b",\n" if n else b"\n") + dumps(row))
                    n += 1
            f.write(b"\n]\n")
    return n


def check_file_target(quick: Quick, overwrite: bool) -> None:
    """A file that is there but was not written from this job's parts is not replaced silently."""
    if quick.file is None or overwrite or "://" in quick.file:
        return
    parts = Path(quick.doc["output"]["uri"])
    if Path(quick.file).exists() and not parts.exists():
        raise ConfigError(
            f"{quick.file} exists and was not made by synth generate; pass --overwrite or another --output"
        )


def generate(kind: str, *, envelope: bool = False, address: str | None = None, **options: Any) -> pa.Table:
    """Make ``count`` records of ``kind`` and return them as a ``pyarrow.Table`` (``.to_pylist()``
    for a list of dicts): the records' own columns and ``id`` (every column with ``envelope``).

    Options as ``synth generate``: count, schema (a path or a mapping, either form), prompt, model,
    fallback, route, budget, format, output, name, seed, shard_size. The output (default
    ``./out/<kind>-<hash of the options>``) is a committed, resumable dataset: calling again with
    the same options resumes it, and a single-file ``output`` is written as the CLI writes it.
    Raises a SynthError when the run does not complete (budget, failures, too many dead letters)."""
    overwrite = bool(options.pop("overwrite", False))
    quick = build(kind, **options)
    check_file_target(quick, overwrite)
    from synth.api import preflight
    from synth.engine.run import run_job

    res = run_job(quick.spec(), address=address, overwrite=overwrite, progress=False, preflight=preflight)
    raise_for_outcome(res)
    if quick.file:
        write_file(quick)
    import synth

    table = synth.open(quick.doc["output"]["uri"]).to_table()
    return table if envelope else table.select(payload_columns(table.schema, quick.drop))


def raise_for_outcome(res: Any) -> None:
    """A run that did not end well as the error ``synth run``'s exit code names."""
    from synth.errors import BudgetExceeded, JobStopped, NoKeysLeft, SynthError
    from synth.outcome import EXIT, outcome

    code, message = outcome(res)
    if not code:
        return
    cls = {EXIT["budget"]: BudgetExceeded, EXIT["stopped"]: JobStopped, EXIT["no_keys"]: NoKeysLeft}.get(code)
    err = (cls or SynthError)(message)
    err.exit_code = code
    raise err


__all__ = ["FILE_FORMATS", "Quick", "build", "generate", "payload_columns", "read_schema", "write_file"]

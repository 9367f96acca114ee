"""Structured records: one JSON object per unit, matching a JSON Schema or a pydantic model.

The prompt is a template whose variables are sampled per unit (see :mod:`.templates`). The answer
is asked for with ``Request.json_schema``; the dispatcher re-asks invalid output and finally
raises ``MalformedOutput`` (a dead letter). An exact duplicate of a record already made (same
canonical JSON) is dropped and the unit tries again with fresh variables and a new seed, up to
``max_attempts``; the drops are counted in ``stats["duplicates"]``.

Payload columns: ``record`` (a typed struct derived from the schema; ``layout: columns`` puts
its fields at the top level instead), ``vars`` (the unit's variables as canonical JSON, for
lineage) and ``prompt``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synth.errors import ConfigError, MalformedOutput, SynthError
from synth.generators.base import GenContext, Unit, UnitResult
from synth.generators.templates import PromptTemplate, VarSampler, VarSpec, read_text, resolve_uri, sub_seed, vars_json
from synth.records import ENVELOPE_COLUMNS, ChatMessage, Request, trusted

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class DuplicateRecord(SynthError):
    """Every attempt of a unit produced a record that already exists."""

    kind = "duplicate"


# ---------------------------------------------------------------- JSON Schema -> Arrow


def json_schema_to_arrow(schema: dict[str, Any]) -> pa.DataType:
    """The Arrow type of values matching ``schema``: objects with properties become structs,
    arrays lists, and anything Arrow cannot type (free-form objects, mixed unions, recursion)
    a string column holding JSON. ``$ref`` into ``$defs``/``definitions`` is followed."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def conv(node: Any, seen: frozenset[str]) -> pa.DataType:
        if not isinstance(node, dict) or not node:
            return pa.string()
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name in seen or name not in defs:
                return pa.string()
            return conv(defs[name], seen | {name})
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                options = [o for o in node[key] if not (isinstance(o, dict) and o.get("type") == "null")]
                types = {conv(o, seen) for o in options}
                return types.pop() if len(types) == 1 else pa.string()
        if "const" in node or "enum" in node:
            values = [node["const"]] if "const" in node else list(node["enum"])
            return _value_type([v for v in values if v is not None])
        t = node.get("type")
        if isinstance(t, list):
            t = [x for x in t if x != "null"]
            t = t[0] if len(t) == 1 else ("number" if set(t) == {"integer", "number"} else None)
        if t is None:
            t = "object" if "properties" in node else "array" if "items" in node else None
        if t == "object":
            props = node.get("properties") or {}
            if not props:
                return pa.string()
            return pa.struct([pa.field(k, conv(v, seen)) for k, v in props.items()])
        if t == "array":
            items = node.get("items")
            return pa.list_(conv(items, seen)) if isinstance(items, dict) else pa.string()
        return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}.get(t or "", pa.string())

    return conv(schema, frozenset())


def _value_type(values: list[Any]) -> pa.DataType:
    if values and all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.int64()
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pa.float64()
    return pa.string()


def conform(value: Any, t: pa.DataType) -> Any:
    """Shape a JSON value for an Arrow type from :func:`json_schema_to_arrow`: JSON-encode what
    lands in a string column, drop keys a struct does not declare."""
    return conformer(t)(value)


_CONFORMERS: dict[pa.DataType, Callable[[Any], Any]] = {}


def conformer(t: pa.DataType) -> Callable[[Any], Any]:
    """:func:`conform` for one type, built once: this runs for every record, and asking Arrow what
    each field's type is, record after record, cost more than the shaping itself."""
    fn = _CONFORMERS.get(t)
    if fn is None:
        fn = _CONFORMERS[t] = _build_conformer(t)
    return fn


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _build_conformer(t: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_struct(t):
        fields = [(f.name, conformer(f.type)) for f in t]
        return lambda v: {n: fn(v.get(n)) for n, fn in fields} if isinstance(v, dict) else None
    if pa.types.is_list(t):
        item = conformer(t.value_type)
        return lambda v: [item(x) for x in v] if isinstance(v, list) else None
    if pa.types.is_string(t):
        return lambda v: v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
    if pa.types.is_integer(t):
        return lambda v: int(v) if _number(v) else None
    if pa.types.is_floating(t):
        return lambda v: float(v) if _number(v) else None
    if pa.types.is_boolean(t):
        return lambda v: v if isinstance(v, bool) else None
    return lambda v: v


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(prefix: str, value: Any) -> str:
    return f"{prefix}:{hashlib.sha256(canonical_json(value).encode()).hexdigest()}"


# ---------------------------------------------------------------- schemas


def load_schema(
    spec: str | dict[str, Any], *, job: Any = None, where: str = "generator.schema"
) -> tuple[dict[str, Any], type[BaseModel] | None]:
    """(JSON Schema, pydantic model or None) from an inline schema, a file URI or 'pkg.mod:Model'."""
    model: type[BaseModel] | None = None
    if isinstance(spec, dict):
        schema = spec
    elif _IMPORT_PATH.match(spec) and "://" not in spec:
        model = import_object(spec, where)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"{where}: {spec!r} is not a pydantic model class")
        schema = model.model_json_schema()
    else:
        text = read_text(resolve_uri(spec, job, where), where)
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: {spec!r} is not valid JSON (line {e.lineno}, column {e.colno})") from None
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: a JSON Schema must be an object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        path = "/".join(str(p) for p in e.path) or "root"
        raise ConfigError(f"{where}: invalid JSON Schema at {path}: {e.message}") from None
    if not pa.types.is_struct(json_schema_to_arrow(schema)):
        raise ConfigError(f"{where}: the root must be an object with properties (type: object)")
    return schema, model


def import_object(path: str, where: str) -> Any:
    """The object named by 'pkg.module:attr', or a one-line ConfigError."""
    mod_name, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(
            f"{where}: cannot import module {mod_name!r} ({e}); is it installed or on PYTHONPATH?"
        ) from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ConfigError(f"{where}: module {mod_name!r} has no attribute {attr!r}") from None


# ---------------------------------------------------------------- the generator


class StructuredOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | dict[str, Any] = Field(
        ...,
        alias="schema",
        description="JSON Schema of one record: a .json file (path or fsspec URI), an inline object, "
        "or a pydantic model as 'pkg.module:Model'",
    )
    prompt: str | None = Field(None, description="prompt template ({var} or {{ var }}); one of prompt / prompt_file")
    prompt_file: str | None = Field(None, description="file (path or fsspec URI) holding the prompt template")
    system: str | None = Field(None, description="system message sent before the prompt")
    vars: dict[str, VarSpec] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="template variables: a list, a constant, a sampler, a range or a file"
    )
    template_syntax: Literal["auto", "format", "jinja"] = Field(
        "auto", description="auto: jinja when the template contains '{{' or '{%', else str.format"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature")
    max_tokens: int | None = Field(None, gt=0, description="most output tokens per call")
    dedup: bool = Field(
        True,
        description="drop a record that repeats one made earlier in the same shard and try "
        "again (within a shard, so a shard makes the same records on any worker and on resume)",
    )
    max_attempts: int = Field(5, ge=1, le=50, description="attempts per unit when records come out duplicated")
    layout: Literal["record", "columns"] = Field(
        "record", description="record: one struct column 'record'; columns: the record's fields as top-level columns"
    )
    keep_prompt: bool = Field(True, description="store the rendered prompt in a 'prompt' column")
    schema_name: str = Field(
        "record", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="name of the schema sent to the model"
    )


def _message(role: str, content: str) -> ChatMessage:
    return trusted(
        ChatMessage, {"role": role, "content": content, "name": None, "tool_calls": None, "tool_call_id": None}
    )


class StructuredGenerator:
    """Records matching a JSON Schema, from sampled prompts."""

    kind: ClassVar[str] = "structured"
    Options: ClassVar[type[BaseModel]] = StructuredOptions

    def __init__(self, options: StructuredOptions, *, job: Any) -> None:
        self.options = o = options
        self.job = job
        self.route = job.generator.model if job is not None else "default"
        if (o.prompt is None) == (o.prompt_file is None):
            raise ConfigError("generator: give exactly one of prompt or prompt_file")
        text = (
            o.prompt
            if o.prompt is not None
            else read_text(resolve_uri(o.prompt_file or "", job, "generator.prompt_file"), "generator.prompt_file")
        )
        self.template = PromptTemplate(
            text,
            syntax=o.template_syntax,
            where="generator.prompt" if o.prompt is not None else "generator.prompt_file",
        )
        self.template.check(set(o.vars))
        self.vars = VarSampler(o.vars, job=job)
        self.json_schema, self.model_cls = load_schema(o.schema_, job=job)
        self.record_type: pa.StructType = json_schema_to_arrow(self.json_schema)
        extra = [("vars", pa.string())] + ([("prompt", pa.string())] if o.keep_prompt else [])
        if o.layout == "columns":
            names = {f.name for f in self.record_type}
            clash = sorted(names & (ENVELOPE_COLUMNS | {n for n, _ in extra}))
            if clash:
                raise ConfigError(
                    f"generator.layout: record fields {clash} clash with standard columns; use layout: record"
                )
            self._schema = pa.schema(list(self.record_type) + extra)
        else:
            self._schema = pa.schema([("record", self.record_type)] + extra)

    def partition_by(self) -> list[str]:
        return []

    def arrow_schema(self) -> pa.Schema:
        return self._schema

    async def setup(self, ctx: GenContext) -> None:
        self.vars.load()

    def request(self, unit: Unit, attempt: int) -> tuple[Request, dict[str, Any], str]:
        """The request of one attempt, with the variables and prompt it was built from."""
        values = self.vars.sample(unit.seed, attempt)
        prompt = self.template.render(values)
        # built without validation: every field comes from validated options (this runs per record)
        messages = [_message("system", self.options.system)] if self.options.system else []
        messages.append(_message("user", prompt))
        req = trusted(
            Request,
            {
                "id": unit.id if attempt == 0 else f"{unit.id}:a{attempt}",
                "model": self.route,
                "messages": messages,
                "json_schema": self.json_schema,
                "schema_name": self.options.schema_name,
                "tools": None,
                "temperature": self.options.temperature,
                "top_p": None,
                "max_tokens": self.options.max_tokens,
                "seed": sub_seed(unit.seed, "structured", attempt),
                "n": 1,
                "metadata": {},
            },
        )
        return req, values, prompt

    async def generate(self, unit: Unit, ctx: GenContext) -> UnitResult:
        calls = []
        duplicates = 0
        for attempt in range(self.options.max_attempts):
            req, values, prompt = self.request(unit, attempt)
            completion = await ctx.llm.complete(req)
            calls.append(completion)
            record = self._record(completion.parsed, completion.text)
            if self.options.dedup and not await ctx.claim(content_key("structured", record)):
                duplicates += 1
                continue
            row = self._row(record, values, prompt)
            return UnitResult(rows=[row], calls=calls, stats={"duplicates": float(duplicates)})
        raise DuplicateRecord(
            f"all {self.options.max_attempts} attempts gave records already generated; "
            f"add variety to the prompt variables or raise generator.max_attempts"
        )

    def _record(self, parsed: Any, text: str | None) -> dict[str, Any]:
        if parsed is None:
            raise MalformedOutput("the model returned no structured output", raw=text)
        if self.model_cls is not None:
            try:
                return self.model_cls.model_validate(parsed).model_dump(mode="json")
            except ValidationError as e:
                first = e.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or "record"
                raise MalformedOutput(
                    f"output does not fit {self.model_cls.__name__}: {loc}: {first['msg']}", raw=text
                ) from None
        if not isinstance(parsed, dict):
            raise MalformedOutput(f"expected a JSON object, got {type(parsed).__name__}", raw=text)
        return parsed

    def _row(self, record: dict[str, Any], values: dict[str, Any], prompt: str) -> dict[str, Any]:
        shaped = conformer(self.record_type)(record)
        row: dict[str, Any] = dict(shaped) if self.options.layout == "columns" else {"record": shaped}
        row["vars"] = vars_json(values)
        if self.options.keep_prompt:
            row["prompt"] = prompt
        return row


__all__ = [
    "DuplicateRecord",
    "StructuredGenerator",
    "StructuredOptions",
    "canonical_json",
    "conform",
    "content_key",
    "import_object",
    "json_schema_to_arrow",
    "load_schema",
]

"""Structured records: JSON Schema -> Arrow, sampled prompts, seeded determinism, dedup, dead letters."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, Field

from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.errors import ConfigError, MalformedOutput
from synth.generators.base import GenContext, Unit
from synth.generators.registry import create_generator
from synth.generators.structured import (
    DuplicateRecord,
    StructuredGenerator,
    conform,
    json_schema_to_arrow,
    load_schema,
)
from synth.generators.templates import PromptTemplate, VarSampler
from synth.providers.dispatch import Dispatcher
from synth.records import Completion, Request
from synth.spec import parse_job

NESTED = {
    "type": "object",
    "$defs": {
        "Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
        "Node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
        },
    },
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": ["number", "null"]},
        "active": {"type": "boolean"},
        "tier": {"enum": ["gold", "silver"]},
        "level": {"enum": [1, 2, 3]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"$ref": "#/$defs/Address"},
        "orders": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer"},
                    "lines": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
        "extra": {"type": "object"},
        "mixed": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "maybe_addr": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
        "tree": {"$ref": "#/$defs/Node"},
    },
}

PRODUCT = "jobs/examples/schemas/product.json"


def job_of(gen: dict[str, Any], count: int = 40, seed: int = 5, **kw: Any) -> Any:
    return parse_job({"name": "t-structured", "count": count, "seed": seed, "generator": gen, **kw})


def product_gen(**over: Any) -> dict[str, Any]:
    gen = {
        "kind": "structured",
        "schema": PRODUCT,
        "prompt": "A {category} by {brand} for {audience}, about {price} USD, made of {material}.",
        "vars": {
            "category": {"kind": "file", "uri": "jobs/examples/data/categories.txt"},
            "material": {"kind": "file", "uri": "jobs/examples/data/materials.jsonl", "field": "name"},
            "brand": {"kind": "choice", "values": ["Acme", "Globex", "Initech"], "weights": [3, 2, 1]},
            "price": {"kind": "range", "low": 5, "high": 500, "step": 5},
            "audience": ["students", "parents", "hikers"],
        },
    }
    gen.update(over)
    return gen


async def run(job: Any, *, shard_size: int = 20) -> list[Any]:
    """The job's shards through the engine's shard runner, with the dispatcher over the sim provider."""
    gen = create_generator(job.generator, job)
    llm = Dispatcher.from_spec(job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=llm)
    await gen.setup(ctx)
    fp = fingerprint(job)
    out = []
    for k, start in enumerate(range(0, job.count, shard_size)):
        out.append(await run_shard(gen, ctx, Shard(k, start, min(job.count, start + shard_size)), fp, concurrency=8))
    return out


def parquet_bytes(tables: list[pa.Table]) -> bytes:
    t = pa.concat_tables(tables).drop_columns(["created_at", "latency_ms"])  # wall-clock columns
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- JSON Schema -> Arrow


def test_nested_json_schema_gives_typed_struct_and_list_columns() -> None:
    t = json_schema_to_arrow(NESTED)
    addr = pa.struct([("city", pa.string()), ("zip", pa.string())])
    assert t.field("name").type == pa.string()
    assert t.field("age").type == pa.int64()
    assert t.field("score").type == pa.float64()
    assert t.field("active").type == pa.bool_()
    assert t.field("tier").type == pa.string()
    assert t.field("level").type == pa.int64()
    assert t.field("tags").type == pa.list_(pa.string())
    assert t.field("address").type == addr
    assert t.field("orders").type == pa.list_(
        pa.struct([("sku", pa.string()), ("qty", pa.int64()), ("lines", pa.list_(pa.float64()))])
    )
    assert t.field("extra").type == pa.string()  # free-form object: JSON text
    assert t.field("mixed").type == pa.string()  # mixed union: JSON text
    assert t.field("maybe_addr").type == addr  # nullable ref
    # recursion stops at the first repeat: JSON text below it
    assert t.field("tree").type == pa.struct([("name", pa.string()), ("children", pa.list_(pa.string()))])


def test_conform_shapes_values_for_the_arrow_type() -> None:
    t = json_schema_to_arrow(NESTED)
    value = {
        "name": "a",
        "age": 3.0,
        "extra": {"k": [1, 2]},
        "mixed": 7,
        "undeclared": 1,
        "orders": [{"sku": "x", "qty": 2, "lines": [1, 2.5]}],
        "tree": {"name": "root", "children": [{"name": "leaf", "children": []}]},
    }
    row = conform(value, t)
    assert "undeclared" not in row and row["age"] == 3 and isinstance(row["age"], int)
    assert json.loads(row["extra"]) == {"k": [1, 2]} and row["mixed"] == "7"
    assert json.loads(row["tree"]["children"][0]) == {"name": "leaf", "children": []}
    table = pa.Table.from_pylist([{"record": row}], schema=pa.schema([("record", t)]))
    assert table.column("record")[0].as_py()["orders"][0]["lines"] == [1.0, 2.5]


def test_pydantic_model_import_path_gives_schema_and_typed_record() -> None:
    schema, model = load_schema("tests.unit.test_structured:Review")
    assert model is Review and schema["properties"]["stars"]["type"] == "integer"
    t = json_schema_to_arrow(schema)
    assert t.field("aspects").type == pa.list_(pa.struct([("name", pa.string()), ("positive", pa.bool_())]))


class Aspect(BaseModel):
    name: str
    positive: bool


class Review(BaseModel):
    title: str
    stars: int = Field(ge=1, le=5)
    aspects: list[Aspect]


# ---------------------------------------------------------------- generation


async def test_seeded_runs_are_byte_identical_and_seed_changes_data() -> None:
    a = await run(job_of(product_gen()))
    b = await run(job_of(product_gen()))
    c = await run(job_of(product_gen(), seed=6))
    ta, tb, tc = ([o.records for o in x] for x in (a, b, c))
    assert all(o.dead is None for o in a), [o.dead.to_pylist() for o in a if o.dead is not None]
    assert sum(t.num_rows for t in ta) == 40
    assert parquet_bytes(ta) == parquet_bytes(tb)
    assert parquet_bytes(ta) != parquet_bytes(tc)
    table = pa.concat_tables(ta)
    rec = table.schema.field("record").type
    assert rec.field("price").type == pa.struct([("amount", pa.float64()), ("currency", pa.string())])
    assert rec.field("variants").type == pa.list_(pa.struct([("color", pa.string()), ("stock", pa.int64())]))
    first = table.slice(0, 1).to_pylist()[0]
    assert first["record"]["price"]["currency"] in {"USD", "EUR", "GBP"}
    v = json.loads(first["vars"])  # lineage: the variables the prompt was built from
    assert set(v) == {"category", "material", "brand", "price", "audience"}
    assert (
        first["prompt"]
        == f"A {v['category']} by {v['brand']} for {v['audience']}, about {v['price']} USD, made of {v['material']}."
    )


def test_prompt_variables_are_diverse_and_follow_weights() -> None:
    job = job_of(product_gen(), count=1)
    gen = create_generator(job.generator, job)
    assert isinstance(gen, StructuredGenerator)
    gen.vars.load()
    prompts, brands = set(), []
    for i in range(2000):
        req, values, prompt = gen.request(Unit(i, f"u{i}", 0, 10_000 + i), 0)
        prompts.add(prompt)
        brands.append(values["brand"])
        assert 5 <= values["price"] <= 500 and values["price"] % 5 == 0
    assert len(prompts) >= 1900  # 10 x 7 x 3 x 100 x 3 combinations
    assert brands.count("Acme") > brands.count("Globex") > brands.count("Initech") > 0


def test_range_and_values_variables_are_uniform_or_follow_weights_across_units() -> None:
    from pydantic import TypeAdapter

    from synth.generators.templates import VarSpec

    specs = TypeAdapter(dict[str, VarSpec]).validate_python(
        {
            "d": {"kind": "range", "low": 1, "high": 10},
            "x": {"kind": "range", "low": 0, "high": 1, "step": 0.25},
            "w": {"kind": "values", "values": ["rare", "common"], "weights": [1, 3]},
        }
    )
    vs = VarSampler(specs)
    seen = [vs.sample(seed, attempt) for seed in range(5000) for attempt in (0, 1)]
    assert seen[:50] == [vs.sample(seed, attempt) for seed in range(25) for attempt in (0, 1)]  # deterministic
    counts = Counter(s["d"] for s in seen)
    assert sorted(counts) == list(range(1, 11))
    assert all(abs(n - 1000) < 150 for n in counts.values()), counts  # 5 standard deviations
    assert {s["x"] for s in seen} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert abs(sum(s["w"] == "common" for s in seen) / len(seen) - 0.75) < 0.025
    assert vs.sample(7, 0) != vs.sample(7, 1)  # an attempt draws afresh


def test_file_variables_on_any_fsspec_uri() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/vars/cities.txt", b"Oslo\n\nLima\n")
    fs.pipe("/vars/people.jsonl", b'{"name": "Ada", "age": 36}\n{"name": "Alan", "age": 41}\n')
    fs.pipe("/vars/pets.csv", b"kind,legs\ncat,4\nbird,2\n")
    buf = io.BytesIO()
    pq.write_table(pa.table({"colour": ["red", "blue"]}), buf)
    fs.pipe("/vars/colours.parquet", buf.getvalue())
    from pydantic import TypeAdapter

    from synth.generators.templates import VarSpec

    ta = TypeAdapter(dict[str, VarSpec])
    specs = ta.validate_python(
        {
            "city": {"kind": "file", "uri": "memory://vars/cities.txt"},
            "person": {"kind": "file", "uri": "memory://vars/people.jsonl"},
            "pet": {"kind": "file", "uri": "memory://vars/pets.csv", "field": "kind"},
            "colour": {"kind": "file", "uri": "memory://vars/colours.parquet", "field": "colour"},
            "n": 3,
            "who": [{"name": "Ada"}, {"name": "Bo"}],  # a bare list keeps its values as written
            "w": {"kind": "values", "values": ["never", "always"], "weights": [0, 2]},
        }
    )
    vs = VarSampler(specs)
    seen = [vs.sample(seed) for seed in range(50)]
    assert {s["city"] for s in seen} == {"Oslo", "Lima"}
    assert {s["person"]["name"] for s in seen} == {"Ada", "Alan"}
    assert {s["pet"] for s in seen} == {"cat", "bird"} and {s["colour"] for s in seen} == {"red", "blue"}
    assert {s["n"] for s in seen} == {3} and {s["w"] for s in seen} == {"always"}
    assert sorted({s["who"]["name"] for s in seen}) == ["Ada", "Bo"]
    t = PromptTemplate("{person[name]} ({person[age]}) in {city}")
    assert t.render(seen[0]).endswith(f"in {seen[0]['city']}")
    j = PromptTemplate("{{ person.name | upper }} likes {{ pet }}{% if n > 2 %}!{% endif %}")
    assert j.syntax == "jinja" and j.names == {"person", "pet", "n"}
    assert j.render(seen[0]) == f"{seen[0]['person']['name'].upper()} likes {seen[0]['pet']}!"


def test_jinja_templates_are_sandboxed() -> None:
    t = PromptTemplate("{{ x.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match="cannot render"):
        t.render({"x": "a"})


class PoolLLM:
    """Answers structured requests from a small pool, so records repeat (a test double of the LLM protocol)."""

    def __init__(self, pool: list[dict[str, Any]], parsed: bool = True) -> None:
        self.pool, self.parsed, self.requests = pool, parsed, []

    async def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        rec = self.pool[(len(self.requests) - 1) % len(self.pool)]
        return Completion(request_id=request.id, text=json.dumps(rec), parsed=rec if self.parsed else None)

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


SIMPLE = {
    "kind": "structured",
    "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "prompt": "give {x}",
    "vars": {"x": {"kind": "range", "low": 1, "high": 9}},
    "max_attempts": 3,
}


async def test_duplicates_are_dropped_counted_and_regenerated_then_dead_lettered() -> None:
    job = job_of(SIMPLE, count=4)
    gen = create_generator(job.generator, job)
    llm = PoolLLM([{"n": 1}, {"n": 1}, {"n": 2}, {"n": 1}, {"n": 2}, {"n": 1}])
    ctx = GenContext(job=job.name, seed=0, llm=llm)
    await gen.setup(ctx)
    r1 = await gen.generate(Unit(0, "u0", 0, 11), ctx)
    r2 = await gen.generate(Unit(1, "u1", 0, 12), ctx)
    r3 = None
    with pytest.raises(DuplicateRecord, match="all 3 attempts") as err:
        r3 = await gen.generate(Unit(2, "u2", 0, 13), ctx)
    assert r3 is None and err.value.kind == "duplicate"
    assert (r1.stats["duplicates"], r2.stats["duplicates"]) == (0.0, 1.0)
    assert (r1.rows[0]["record"]["n"], r2.rows[0]["record"]["n"]) == (1, 2)
    assert len(r2.calls) == 2  # the duplicate attempt is paid for, and charged
    ids = [r.id for r in llm.requests]
    assert ids[:3] == ["u0", "u1", "u1:a1"] and len(set(r.seed for r in llm.requests)) == len(llm.requests)


async def test_missing_structured_output_raises_malformed() -> None:
    job = job_of(SIMPLE, count=1)
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=0, llm=PoolLLM([{"n": 1}], parsed=False))
    await gen.setup(ctx)
    with pytest.raises(MalformedOutput, match="no structured output"):
        await gen.generate(Unit(0, "u0", 0, 1), ctx)


async def test_invalid_output_is_reasked_then_becomes_a_dead_letter_with_its_reason() -> None:
    # the offline model ignores 'pattern'; the dispatcher re-asks, then gives up
    schema = {
        "type": "object",
        "required": ["code"],
        "properties": {"code": {"type": "string", "pattern": "^[0-9]{9}$"}},
    }
    job = job_of({**SIMPLE, "schema": schema}, count=3)
    outcomes = await run(job)
    dead = pa.concat_tables([o.dead for o in outcomes if o.dead is not None]).to_pylist()
    assert len(dead) == 3 and all(o.records is None for o in outcomes)
    assert {d["error_kind"] for d in dead} == {"malformed_output"}
    assert all("re-asks" in d["message"] and "code" in d["message"] for d in dead)
    assert all(d["attempts"] == 3 for d in dead)  # first answer + 2 re-asks


def test_columns_layout_puts_fields_on_top_and_refuses_clashes() -> None:
    job = job_of({**SIMPLE, "layout": "columns", "keep_prompt": False})
    assert create_generator(job.generator, job).arrow_schema().names == ["n", "vars"]
    clash = {**SIMPLE, "layout": "columns", "schema": {"type": "object", "properties": {"id": {"type": "string"}}}}
    with pytest.raises(ConfigError, match=r"^generator.layout: record fields \['id'\] clash"):
        create_generator(job_of(clash).generator, job_of(clash))


@pytest.mark.parametrize(
    "over, pattern",
    [
        ({"prompt": "about {topic} and {x}"}, r"^generator.prompt: uses undefined variable\(s\) \['topic'\]"),
        ({"schema": "nope/missing.json"}, r"^generator.schema: file 'nope/missing.json' not found"),
        (
            {"schema": {"type": "object", "properties": {"a": {"type": "strng"}}}},
            r"^generator.schema: invalid JSON Schema at",
        ),
        ({"schema": {"type": "array", "items": {"type": "string"}}}, r"^generator.schema: the root must be an object"),
        (
            {"schema": "tests.unit.test_structured:NotThere"},
            r"^generator.schema: module 'tests.unit.test_structured' has no",
        ),
        ({"vars": {"x": {"kind": "gaussian"}}}, r"^generator.vars.x: Input tag 'gaussian'"),
        (
            {"vars": {"x": {"kind": "file", "uri": "missing/*.txt"}}},
            r"^generator.vars.x.uri: 'missing/\*.txt' not found",
        ),
        ({"prompt": None}, r"^generator: give exactly one of prompt or prompt_file"),
        ({"max_attempts": 0, "temprature": 1}, r"^generator.max_attempts: .*\ngenerator.temprature: unknown field"),
    ],
)
def test_bad_options_give_one_line_config_errors(over: dict[str, Any], pattern: str) -> None:
    job = job_of({**SIMPLE, **over})
    with pytest.raises(ConfigError, match=pattern) as err:
        create_generator(job.generator, job)
    assert all(line.startswith("generator") for line in str(err.value).splitlines())

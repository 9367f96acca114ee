"""The record envelope, defined once in synth.records: its columns (route and provider included), the
dead-letter row, the unit, and what resuming an output made before the route column does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import synth.records as records
from synth.engine import plan, shardrun
from synth.engine.manifest import Manifest
from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.engine.sink import ShardSink
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.generators import base, common, structured
from synth.generators.base import GenContext
from synth.generators.registry import create_generator
from synth.providers.dispatch import Dispatcher
from synth.records import Completion, DeadLetter, Usage, trusted
from synth.spec import parse_job


def job(tmp_path: Path, **kw):
    doc = {
        "name": "env",
        "count": 6,
        "seed": 3,
        "generator": {
            "kind": "structured",
            "prompt": "Item {n}",
            "vars": {"n": {"kind": "range", "low": 1, "high": 1000}},
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            "max_attempts": 1,
        },
        "providers": [{"name": "cheap", "model": "sim:m1"}],
        "routes": {"fast": ["cheap"]},
        "output": {"uri": str(tmp_path / "o"), "shard_size": 6},
    }
    doc.update(kw)
    return parse_job(doc, env={})


def test_one_definition_everywhere() -> None:
    names = [n for n, _ in records.ENVELOPE_FIELDS]
    assert records.ENVELOPE.names == names and set(names) == records.ENVELOPE_COLUMNS
    assert {"route", "provider", "model", "id"} <= records.ENVELOPE_COLUMNS
    assert common.ENVELOPE_COLUMNS is structured.ENVELOPE_COLUMNS is records.ENVELOPE_COLUMNS
    assert shardrun.ENVELOPE is records.ENVELOPE and shardrun.DEAD_SCHEMA is records.DEAD_SCHEMA
    assert records.DEAD_SCHEMA.names == list(DeadLetter.model_fields)
    assert base.Unit is records.Unit and plan.unit_id is records.unit_id
    u = next(Shard(0, 0, 1).units("f" * 16, 7))
    assert records.unit_index(u.id) == 0 and u.seed == records.unit_seed(7, 0)


def test_trusted_fills_plain_defaults_and_leaves_the_rest_to_model_construct() -> None:
    c = trusted(Completion, {"request_id": "r", "text": "t", "usage": Usage(), "provider": "p"})
    assert (c.route, c.model, c.cost_usd, c.ratelimit, c.provider) == ("", "", 0.0, None, "p")
    assert c == Completion(request_id="r", text="t", provider="p")
    d = trusted(Completion, {"request_id": "r"})  # usage has a factory: model_construct makes it
    assert d.usage == Usage() and d.route == ""


async def test_records_carry_the_route_asked_for_and_dead_letters_their_reason(tmp_path: Path) -> None:
    j = job(tmp_path, generator={**job(tmp_path).generator.model_dump(by_alias=True), "model": "fast"})
    gen = create_generator(j.generator, j)
    ctx = GenContext(job=j.name, seed=j.seed, llm=Dispatcher.from_spec(j))
    await gen.setup(ctx)
    out = await run_shard(gen, ctx, Shard(0, 0, 6), fingerprint(j))
    rows = out.records.to_pylist()
    assert len(rows) == 6 and out.dead is None
    assert {(r["route"], r["provider"], r["model"]) for r in rows} == {("fast", "cheap", "m1")}
    assert out.records.schema.names[: len(records.ENVELOPE_FIELDS)] == records.ENVELOPE.names

    class Broken:
        kind = "broken"

        async def generate(self, unit, ctx):
            raise ValueError(f"no {unit.index}")

        def arrow_schema(self):
            return None

    out = await run_shard(Broken(), ctx, Shard(1, 6, 8), fingerprint(j))  # type: ignore[arg-type]
    assert out.records is None and out.dead.schema == records.DEAD_SCHEMA
    dead = [DeadLetter.model_validate(r) for r in out.dead.to_pylist()]
    assert [(d.error_kind, d.message, d.shard, d.generator) for d in dead] == [
        ("internal", "ValueError: no 6", 1, "broken"),
        ("internal", "ValueError: no 7", 1, "broken"),
    ]


async def test_an_output_made_before_the_route_column_is_refused_in_one_line(tmp_path: Path) -> None:
    j = job(tmp_path)
    st = Storage(j.output)
    m = Manifest(st)
    m.open(j)
    meta = json.loads(st.read_bytes("_manifest/job.json"))
    assert meta["envelope"] == records.ENVELOPE.names
    old = {k: v for k, v in meta.items() if k != "envelope"}  # job.json as synth wrote it before
    st.write_bytes("_manifest/job.json", json.dumps(old).encode())
    # nothing committed yet: the output simply takes this version's columns
    assert Manifest(st).open(j) == set()
    assert json.loads(st.read_bytes("_manifest/job.json"))["envelope"] == records.ENVELOPE.names

    gen = create_generator(j.generator, j)
    ctx = GenContext(job=j.name, seed=j.seed, llm=Dispatcher.from_spec(j))
    await gen.setup(ctx)
    made = await run_shard(gen, ctx, Shard(0, 0, 6), fingerprint(j))
    ShardSink(j.output, []).publish(st, 0, made.records, made.dead, made.stats, Shard(0, 0, 6).piece())
    st.write_bytes("_manifest/job.json", json.dumps(old).encode())
    with pytest.raises(StorageError) as e:
        Manifest(st).open(j)
    msg = str(e.value)
    assert "\n" not in msg and "without route" in msg and "--overwrite" in msg and "new output path" in msg
    assert Manifest(st).open(j, overwrite=True) == set()  # the way out the line names

"""The generator registry: built-ins and plugins by entry point, import paths, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.errors import ConfigError
from synth.generators.base import GenContext
from synth.generators.conversation import ConversationGenerator
from synth.generators.registry import ENTRY_POINT_GROUP, available_generators, create_generator, get_generator
from synth.generators.structured import StructuredGenerator
from synth.providers.dispatch import Dispatcher
from synth.spec import parse_job

PLUGIN = """
from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from synth.generators.base import UnitResult
from synth.records import ChatMessage, Request


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str = Field(..., description="what to say")
    times: int = Field(1, ge=1, description="how often")


class EchoGenerator:
    kind: ClassVar[str] = "echo"
    Options: ClassVar[type[BaseModel]] = EchoOptions

    def __init__(self, options, *, job):
        self.options = options
        self.route = job.generator.model

    def partition_by(self):
        return []

    def arrow_schema(self):
        return pa.schema([("said", pa.string()), ("reply", pa.string())])

    async def setup(self, ctx):
        self.ready = True

    async def generate(self, unit, ctx):
        said = " ".join([self.options.word] * self.options.times)
        c = await ctx.llm.complete(Request(id=unit.id, model=self.route, seed=unit.seed,
                                           messages=[ChatMessage(role="user", content=said)]))
        return UnitResult(rows=[{"said": said, "reply": c.text}], calls=[c])
"""


def install_plugin(root: Path, module: str, entry: str, name: str = "echo", body: str = PLUGIN) -> None:
    """A minimal installed distribution: a module and a dist-info declaring its entry point."""
    (root / f"{module}.py").write_text(body)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {entry}\n")


def job_of(gen: dict, count: int = 3) -> object:
    return parse_job({"name": "t-registry", "count": count, "generator": gen})


def test_builtins_are_registered_by_entry_point() -> None:
    known = available_generators()
    assert {"structured", "conversation", "timeseries", "events"} <= set(known)
    assert known["structured"] == "synth.generators.structured:StructuredGenerator"
    assert get_generator("structured") is StructuredGenerator
    assert get_generator("conversation") is ConversationGenerator


def test_a_class_named_by_import_path() -> None:
    assert get_generator("synth.generators.structured:StructuredGenerator") is StructuredGenerator


async def test_a_plugin_registered_by_entry_point_is_found_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, "synth_echo_plugin", "synth_echo_plugin:EchoGenerator")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available_generators()["echo"] == "synth_echo_plugin:EchoGenerator"
    job = job_of({"kind": "echo", "word": "hi", "times": 2})
    gen = create_generator(job.generator, job)
    assert type(gen).__module__ == "synth_echo_plugin"
    ctx = GenContext(job=job.name, seed=0, llm=Dispatcher.from_spec(job))
    await gen.setup(ctx)
    out = await run_shard(gen, ctx, Shard(0, 0, 3), fingerprint(job))
    rows = out.records.to_pylist()
    assert [r["said"] for r in rows] == ["hi hi"] * 3 and all(r["reply"] for r in rows)
    # provider: the job's provider entry that answered; route: what the request asked for
    assert all(r["generator"] == "echo" and r["provider"] == "default" and r["route"] == "default" for r in rows)
    with pytest.raises(ConfigError, match=r"^generator.times: Input should be greater than or equal to 1$"):
        create_generator(job_of({"kind": "echo", "word": "hi", "times": 0}).generator, job)
    sys.modules.pop("synth_echo_plugin", None)


def test_a_broken_plugin_is_reported_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "synth_broken_plugin", "synth_broken_plugin:Missing", name="broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"^generator.kind: 'broken' is registered as 'synth_broken_plugin:Missing' "
        r"but failed to import: AttributeError",
    ):
        get_generator("broken")
    install_plugin(
        tmp_path, "synth_nonclass_plugin", "synth_nonclass_plugin:thing", name="nonclass", body="thing = 42\n"
    )
    with pytest.raises(
        ConfigError, match=r"^generator.kind: 'nonclass' \(synth_nonclass_plugin:thing\) is not a class"
    ):
        get_generator("nonclass")
    sys.modules.pop("synth_broken_plugin", None)
    sys.modules.pop("synth_nonclass_plugin", None)


@pytest.mark.parametrize(
    "kind, pattern",
    [
        (
            "structurd",
            r"^generator.kind: unknown generator 'structurd'; use one of: .*structured.*, or 'package.module:Class'$",
        ),
        ("no_such_pkg.mod:Gen", r"^generator.kind: cannot import 'no_such_pkg.mod'"),
        ("synth.generators.structured:Nope", r"^generator.kind: module 'synth.generators.structured' has no 'Nope'$"),
        (
            "synth.generators.structured:StructuredOptions",
            r"^generator.kind: .* lacks kind, Options, generate, setup, partition_by, arrow_schema",
        ),
    ],
)
def test_unknown_kinds_give_one_line_errors(kind: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        get_generator(kind)
    assert len(str(err.value).splitlines()) == 1


def test_bad_options_give_one_line_per_problem_prefixed_generator() -> None:
    job = job_of(
        {
            "kind": "structured",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            "prompt": "x",
            "max_attempts": "many",
            "layout": "table",
            "colour": "red",
        }
    )
    with pytest.raises(ConfigError) as err:
        create_generator(job.generator, job)
    lines = str(err.value).splitlines()
    assert lines == [
        "generator.max_attempts: Input should be a valid integer, unable to parse string as an integer",
        "generator.layout: Input should be 'record' or 'columns'",
        "generator.colour: unknown field; check the spelling (synth spec schema lists every field)",
    ]


@pytest.mark.parametrize("name", ["structured", "conversation", "rag"])
async def test_example_jobs_load_and_generate(name: str) -> None:
    from synth.api import load_job

    job = load_job(f"jobs/examples/{name}.yaml", overrides={"count": 4} if name != "rag" else None)
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=Dispatcher.from_spec(job))
    await gen.setup(ctx)
    out = await run_shard(gen, ctx, Shard(0, 0, 4), fingerprint(job))
    assert out.dead is None and out.records.num_rows == 4
    assert out.records.schema.names[-len(gen.arrow_schema().names) :] == gen.arrow_schema().names

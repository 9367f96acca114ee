"""Plugins of every group (providers, instruction sources, prompt modifiers, retrievers) found by entry
point and by 'package.module:Class', through the one registry (synth.plugins); one-line errors; a
sim job loads no SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.errors import ConfigError
from synth.generators.base import GenContext
from synth.generators.instructions import INSTRUCTIONS
from synth.generators.modifiers import MODIFIERS
from synth.generators.registry import create_generator
from synth.plugins import PROVIDERS, provider_kinds
from synth.providers.dispatch import Dispatcher
from synth.providers.factory import create_provider
from synth.retrieval.registry import RETRIEVERS
from synth.spec import ProviderSpec, parse_job

MODULE = "synth_kit_plugin"
PLUGIN = """
from pydantic import BaseModel
from synth.generators.instructions import Instruction
from synth.records import Completion, Usage
from synth.retrieval.base import BaseRetriever, RetrievalHit, build_result


class FixedSource:
    class Options(BaseModel):
        text: str

    def __init__(self, options, job):
        self.text = options.text

    def check(self, count):
        return None

    async def setup(self, ctx):
        return None

    async def instruction(self, unit, ctx):
        return Instruction(text=f"{self.text} #{unit.index}", source="fixed")


class ShoutModifier:
    class Options(BaseModel):
        word: str

    def __init__(self, options, job, where):
        self.word = options.word

    async def setup(self, ctx):
        return None

    async def modify(self, shaped, query, unit, ctx):
        shaped.system += " " + self.word

    async def on_turn(self, shaped, query, turn, unit, ctx):
        return None

    async def aclose(self):
        return None


class DictRetriever(BaseRetriever):
    class Options(BaseModel):
        passages: dict[str, str]

    @classmethod
    async def from_options(cls, options, *, embedder, job):
        self = cls()
        self.passages = options.passages
        return self

    async def aget_context_with_metadata(self, query):
        pid = sorted(self.passages)[0]
        return build_result(query, [self.passages[pid]], [RetrievalHit(id=pid, score=1.0)])


class Echo:
    kind = "echo"

    def __init__(self, spec):
        self.model = spec.model.rpartition(":")[2]

    async def complete(self, request, key, *, timeout):
        said = request.messages[-1].content or ""
        return Completion(request_id=request.id, text=said[::-1], usage=Usage(), model=self.model, provider="echo")

    async def embed(self, request, key, *, timeout):
        raise NotImplementedError

    async def aclose(self):
        return None


def not_a_provider(spec):
    return 42
"""
ENTRIES = {
    "synth.instructions": {"fixed": f"{MODULE}:FixedSource"},
    "synth.modifiers": {"shout": f"{MODULE}:ShoutModifier", "broken": f"{MODULE}:Missing"},
    "synth.retrievers": {"dict": f"{MODULE}:DictRetriever"},
    "synth.providers": {"echo": f"{MODULE}:Echo", "nonprov": f"{MODULE}:not_a_provider"},
}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin distribution on sys.path: a module and a dist-info declaring its entry points."""
    (tmp_path / f"{MODULE}.py").write_text(PLUGIN)
    info = tmp_path / f"{MODULE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "".join(f"[{g}]\n" + "".join(f"{n} = {v}\n" for n, v in e.items()) for g, e in ENTRIES.items())
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(MODULE, None)


def conversation(instructions: dict, modifiers: list[dict], count: int = 3):
    return parse_job(
        {
            "name": "plug",
            "count": count,
            "generator": {
                "kind": "conversation",
                "instructions": instructions,
                "modifiers": modifiers,
                "turns": {"min": 1, "max": 1},
            },
        },
        env={},
    )


def test_builtins_register_like_plugins() -> None:
    assert provider_kinds() == {
        "compat": "synth.providers.factory:openai_provider",
        "gemini": "synth.providers.factory:gemini_provider",
        "openai": "synth.providers.factory:openai_provider",
        "openrouter": "synth.providers.factory:openai_provider",
        "sim": "synth.providers.factory:sim_provider",
    }
    assert set(INSTRUCTIONS.names()) >= {"list", "file", "topics", "documents", "personas"}
    assert set(MODIFIERS.names()) >= {"persona", "rag"} and set(RETRIEVERS.names()) >= {"qdrant", "static"}


@pytest.mark.parametrize("by", ["entry point", "import path"])
async def test_source_modifier_and_retriever_plugins_shape_the_dialog(installed: Path, by: str) -> None:
    def kind(name: str, cls: str) -> str:
        return name if by == "entry point" else f"{MODULE}:{cls}"

    job = conversation(
        {"kind": kind("fixed", "FixedSource"), "text": "tell me"},
        [
            {"kind": kind("shout", "ShoutModifier"), "word": "LOUDLY"},
            {"kind": "rag", "retriever": {"kind": kind("dict", "DictRetriever"), "passages": {"p1": "Stoats are"}}},
        ],
    )
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=Dispatcher.from_spec(job))
    await gen.setup(ctx)
    out = await run_shard(gen, ctx, Shard(0, 0, 3), fingerprint(job))
    assert out.dead is None
    for i, row in enumerate(out.records.to_pylist()):
        system, user = row["messages"][0]["content"], row["messages"][1]["content"]
        assert user == f"tell me #{i}" and row["instruction_source"] == "fixed"
        assert "LOUDLY" in system and "Stoats are" in system
        assert row["retrieval"][0]["hits"][0]["id"] == "p1"
    await gen.aclose()


def test_provider_plugins_by_entry_point_and_by_import_path(installed: Path) -> None:
    p = create_provider(ProviderSpec(model="echo:v2"))
    assert type(p).__module__ == MODULE and p.model == "v2"
    p = create_provider(ProviderSpec(model=f"{MODULE}:Echo:v3"))
    assert type(p).__module__ == MODULE and p.model == "v3"
    with pytest.raises(ConfigError, match=r"^provider 'n' \(nonprov:x\): 'nonprov' made a int, not a provider"):
        create_provider(ProviderSpec(name="n", model="nonprov:x"))


async def test_a_job_through_a_provider_plugin(installed: Path) -> None:
    job = parse_job(
        {
            "name": "plug",
            "count": 2,
            "generator": {"kind": "conversation", "instructions": ["abc", "xyz"], "turns": {"min": 1, "max": 1}},
            "providers": [{"name": "mirror", "model": "echo:v1"}],
        },
        env={},
    )
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=Dispatcher.from_spec(job))
    await gen.setup(ctx)
    rows = (await run_shard(gen, ctx, Shard(0, 0, 2), fingerprint(job))).records.to_pylist()
    assert [r["messages"][-1]["content"] for r in rows] == ["cba", "zyx"]
    assert {(r["provider"], r["model"], r["route"]) for r in rows} == {("mirror", "v1", "default")}


@pytest.mark.parametrize(
    "instructions, modifiers, pattern",
    [
        (
            {"kind": "wiki"},
            [],
            r"^generator.instructions: Input tag 'wiki' is not a known instruction source; use one of: "
            r"documents, file, fixed, list, personas, topics, or 'package.module:Class'$",
        ),
        ({"kind": "fixed"}, [], r"^generator.instructions.text: Field required$"),
        (
            ["q"],
            [{"kind": "broken"}],
            r"^generator.modifiers\[0\].kind: 'broken' is registered as 'synth_kit_plugin:Missing' "
            r"but failed to import: AttributeError",
        ),
        (["q"], [{"kind": "shout", "word": 3}], r"^generator.modifiers\[0\].word: Input should be a valid string$"),
        (
            ["q"],
            [{"kind": "rag", "retriever": {"kind": "nope"}}],
            r"^generator.modifiers\[0\].retriever.kind: unknown retriever 'nope'; use one of: dict, qdrant, static, "
            r"or 'package.module:Class'$",
        ),
        (
            ["q"],
            [{"kind": "rag", "retriever": {"kind": "no_such_pkg.mod:R"}}],
            r"^generator.modifiers\[0\].retriever.kind: cannot import 'no_such_pkg.mod'",
        ),
    ],
)
def test_bad_plugin_kinds_and_options_are_one_line(installed: Path, instructions, modifiers, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as e:
        job = conversation(instructions, modifiers)
        create_generator(job.generator, job)
    assert len(str(e.value).splitlines()) == 1


def test_an_unknown_provider_kind_names_the_registered_ones(installed: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_job({"name": "x", "count": 1, "generator": {"kind": "structured"}, "providers": [{"model": "ecko:v"}]})
    assert str(e.value) == (
        "providers[0].model: unknown provider prefix 'ecko' in 'ecko:v'; use one of: compat, echo, gemini, nonprov, "
        "openai, openrouter, sim, or 'package.module:Class:model'"
    )
    assert PROVIDERS.is_known("echo") and not PROVIDERS.is_known("ecko")


def test_a_sim_job_loads_no_sdk() -> None:
    code = (
        "import asyncio, sys\n"
        "from synth.api import load_job\n"
        "from synth.providers.dispatch import Dispatcher\n"
        "from synth.records import ChatMessage, Request\n"
        "job = load_job('jobs/examples/structured.yaml', overrides={'count': 2})\n"
        "d = Dispatcher.from_spec(job)\n"
        "c = asyncio.run(d.complete(Request(id='r', messages=[ChatMessage(role='user', content='hi')])))\n"
        "assert c.text, c\n"
        "print(sorted(m for m in ('openai', 'google.genai') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[]"

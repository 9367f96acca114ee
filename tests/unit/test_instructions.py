"""Instruction sources: exact document coverage across any sharding, deterministic topic trees,
memoised batches, personas crossed with topics."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import pytest

from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.errors import ConfigError, Transient
from synth.generators.base import GenContext, Unit
from synth.generators.instructions import _norm
from synth.generators.registry import create_generator
from synth.providers.dispatch import Dispatcher
from synth.records import Completion, Request
from synth.retrieval.index import load_documents
from synth.spec import parse_job

DOCS = Path(__file__).resolve().parents[1] / "data" / "docs"


class Counting:
    """Wraps the dispatcher and counts the requests it sees (an LLM-protocol decorator)."""

    def __init__(self, inner: Any, fail_first: int = 0) -> None:
        self.inner, self.requests, self.fail_first = inner, [], fail_first

    async def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        if len(self.requests) <= self.fail_first:
            raise Transient("upstream 503")
        return await self.inner.complete(request)

    async def embed(self, request: Any) -> Any:
        return await self.inner.embed(request)


def job_of(instructions: Any, count: int, seed: int = 1, **gen: Any) -> Any:
    return parse_job(
        {
            "name": "t-instr",
            "count": count,
            "seed": seed,
            "generator": {"kind": "conversation", "instructions": instructions, "turns": {"min": 1, "max": 1}, **gen},
        }
    )


async def worker(job: Any, llm: Any = None) -> tuple[Any, GenContext]:
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=llm or Dispatcher.from_spec(job))
    await gen.setup(ctx)
    return gen, ctx


async def test_document_coverage_is_exact_whatever_the_sharding() -> None:
    job = job_of({"kind": "documents", "uri": str(DOCS), "per_document": 3}, count=12)
    texts = {d.id: d.text.strip() for d in load_documents(str(DOCS))}
    fp = fingerprint(job)
    # two workers, odd shard sizes, shards run in a shuffled order
    cuts = [0, 5, 7, 12]
    shards = [Shard(k, a, b) for k, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    random.Random(3).shuffle(shards)
    workers = [await worker(job), await worker(job)]
    docs: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    by_unit: dict[str, tuple[str, str]] = {}
    for i, shard in enumerate(shards):
        gen, ctx = workers[i % 2]
        out = await run_shard(gen, ctx, shard, fp)
        assert out.dead is None
        for row, uid in zip(out.records.to_pylist(), out.records.column("id").to_pylist()):
            docs[row["document_id"]] += 1
            by_unit[uid] = (row["document_id"], row["instruction"])
            assert row["instruction_source"] == "documents"
            assert texts[row["document_id"]] in row["messages"][0]["content"]  # the respondent sees the document
        stats.update(out.stats["generator_stats"])
    assert docs == {"bicycles.md": 3, "composting.txt": 3, "sourdough.md": 3, "telescopes.md": 3}
    assert (stats["documents"], stats["document_instructions"]) == (4, 12)
    # the same unit gets the same document and question on a single worker, in order
    gen, ctx = await worker(job)
    single = await run_shard(gen, ctx, Shard(0, 0, 12), fp)
    for row, uid in zip(single.records.to_pylist(), single.records.column("id").to_pylist()):
        assert by_unit[uid] == (row["document_id"], row["instruction"])


def test_document_count_must_match_the_corpus() -> None:
    job = job_of({"kind": "documents", "uri": str(DOCS), "per_document": 3}, count=10)
    with pytest.raises(
        ConfigError,
        match=r"^count: document coverage needs count = 4 documents x 3 per_document = 12, "
        r"not 10; set count: 12$",
    ):
        create_generator(job.generator, job)


async def test_topic_tree_is_deduplicated_and_identical_on_every_worker() -> None:
    spec = {"kind": "topics", "seeds": ["cooking", "astronomy", "Cooking "], "depth": 2, "breadth": 3, "per_leaf": 4}
    job = job_of(spec, count=40)
    calls_a, calls_b = Counting(Dispatcher.from_spec(job)), Counting(Dispatcher.from_spec(job))
    (ga, _), (gb, _) = await worker(job, calls_a), await worker(job, calls_b)
    leaves = ga.source.leaves
    assert leaves == gb.source.leaves and len(leaves) >= 2
    assert [r.id for r in calls_a.requests] == [r.id for r in calls_b.requests]
    assert {leaf.split(" > ")[0] for leaf in leaves} <= {"cooking", "astronomy"}
    nodes = {tuple(leaf.split(" > ")[:k]) for leaf in leaves for k in range(2, leaf.count(" > ") + 2)}
    names = [_norm(n[-1]) for n in nodes]
    assert len(names) == len(set(names)) and not set(names) & {"cooking", "astronomy"}  # no topic twice
    setup_calls = len(calls_a.requests)
    assert 2 <= setup_calls <= 2 + 2 * 3  # one per expanded node: 2 seeds, then at most 3 children each


async def test_instructions_are_written_once_per_leaf_and_setup_cost_is_charged_once() -> None:
    job = job_of({"kind": "topics", "seeds": ["gardening"], "depth": 1, "breadth": 3, "per_leaf": 4}, count=12)
    llm = Counting(Dispatcher.from_spec(job))
    gen, ctx = await worker(job, llm)
    n_setup = len(llm.requests)
    out = await run_shard(gen, ctx, Shard(0, 0, 12), fingerprint(job))
    rows = out.records.to_pylist()
    leaves = gen.source.leaves
    batch_calls = [r for r in llm.requests[n_setup:] if r.json_schema is not None]
    assert len(batch_calls) == min(3, len(leaves))  # 12 units / 4 per leaf = 3 groups, one call each
    assert [row["topic"] for row in rows] == [leaves[(i // 4) % len(leaves)] for i in range(12)]
    charged = [[u["role"] for u in row["usage"]].count("instruction") for row in rows]
    assert sum(charged) == n_setup + len(batch_calls)  # every call is charged to exactly one record


async def test_a_failed_batch_is_retried_by_the_next_unit() -> None:
    job = job_of({"kind": "topics", "seeds": ["tea"], "depth": 0, "per_leaf": 3}, count=3)
    llm = Counting(Dispatcher.from_spec(job), fail_first=1)
    gen, ctx = await worker(job, llm)
    out = await run_shard(gen, ctx, Shard(0, 0, 3), fingerprint(job), concurrency=3)
    assert out.dead.to_pylist()[0]["error_kind"] == "transient"  # the unit whose call failed
    assert out.records.num_rows == 2  # the units waiting on it asked again, once
    assert sum(1 for r in llm.requests if r.json_schema is not None) == 2


async def test_personas_are_crossed_with_topics() -> None:
    spec = {"kind": "personas", "personas": ["a chef", "a pilot"], "topics": ["sleep", "maps", "knots"]}
    job = job_of(spec, count=12)
    gen, ctx = await worker(job)
    out = await run_shard(gen, ctx, Shard(0, 0, 12), fingerprint(job))
    rows = out.records.to_pylist()
    pairs = [(r["user_persona"], r["topic"]) for r in rows]
    assert pairs[:6] == [
        ("a chef", "sleep"),
        ("a pilot", "sleep"),
        ("a chef", "maps"),
        ("a pilot", "maps"),
        ("a chef", "knots"),
        ("a pilot", "knots"),
    ]
    assert pairs[6:] == pairs[:6]  # the second round asks the model for new instructions
    assert all(r["instruction"] for r in rows)


async def test_generated_personas_are_deterministic() -> None:
    spec = {"kind": "personas", "generate": 4, "topics": ["taxes"], "persona_hint": "small-business owners"}
    job = job_of(spec, count=4)
    (a, _), (b, _) = await worker(job), await worker(job)
    assert a.source.personas == b.source.personas and 1 <= len(a.source.personas) <= 4
    assert len({_norm(p) for p in a.source.personas}) == len(a.source.personas)


async def test_list_and_file_sources() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/instr/q.jsonl", b'{"q": "one?"}\n{"q": "two?"}\n{"q": "three?"}\n')
    gen, ctx = await worker(job_of({"kind": "file", "uri": "memory://instr/q.jsonl", "field": "q"}, count=5))
    texts = [(await gen.source.instruction(Unit(i, f"u{i}", 0, i), ctx)).text for i in range(5)]
    assert texts == ["one?", "two?", "three?", "one?", "two?"]
    gen, ctx = await worker(job_of({"kind": "list", "items": ["a", "b", "c"], "order": "random"}, count=50))
    picks = [(await gen.source.instruction(Unit(i, f"u{i}", 0, 1000 + i), ctx)).text for i in range(50)]
    again = [(await gen.source.instruction(Unit(i, f"u{i}", 0, 1000 + i), ctx)).text for i in range(50)]
    assert picks == again and set(picks) == {"a", "b", "c"}
    gen, ctx = await worker(job_of(str(DOCS / "composting.txt"), count=2))  # a path is a file source
    assert (await gen.source.instruction(Unit(0, "u0", 0, 0), ctx)).text.startswith("Home composting")
    with pytest.raises(ConfigError, match="rows are not text; set generator.instructions.field"):
        await worker(job_of({"kind": "file", "uri": "memory://instr/q.jsonl"}, count=1))


@pytest.mark.parametrize(
    "spec, pattern",
    [
        (
            {"kind": "personas", "topics": ["x"]},
            r"^generator.instructions: give exactly one of personas, personas_file",
        ),
        ({"kind": "documents", "uri": "/no/such/docs"}, r"'/no/such/docs' does not exist"),
        ({"kind": "topics", "seeds": []}, r"^generator.instructions.topics.seeds: List should have at least 1 item"),
        ({"kind": "wiki"}, r"^generator.instructions: Input tag 'wiki'"),
    ],
)
def test_bad_instruction_sources(spec: dict[str, Any], pattern: str) -> None:
    job = job_of(spec, count=4)
    with pytest.raises(Exception, match=pattern):
        create_generator(job.generator, job)

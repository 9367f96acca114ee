"""Retrieval: chunking, idempotent `synth index`, the Qdrant retriever (embedded local mode), RAG records."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import fsspec
import pytest

from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.errors import ConfigError, StorageError, SynthError
from synth.generators.base import GenContext
from synth.generators.registry import create_generator
from synth.providers.dispatch import Dispatcher
from synth.retrieval.base import NO_RETRIEVAL_CONTEXT, Retriever, StaticRetriever
from synth.retrieval.embedders import LLMEmbedder
from synth.retrieval.index import chunk_text, index_documents, load_documents, point_id
from synth.retrieval.qdrant import QdrantRetriever
from synth.spec import parse_job

DOCS = Path(__file__).resolve().parents[1] / "data" / "docs"
JOB = parse_job({"name": "t-retrieval", "count": 1, "generator": {"kind": "structured"}})


def llm() -> Dispatcher:
    return Dispatcher.from_spec(JOB)


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test corpus indexed once into a local Qdrant folder (tests copy it before changing it)."""
    path = tmp_path_factory.mktemp("qdrant") / "kb"
    asyncio.run(index_documents(str(DOCS), "kb", path=str(path), llm=llm(), chunk_size=300, overlap=50))
    return path


def point_ids(path: Path, collection: str = "kb") -> set[str]:
    from qdrant_client import QdrantClient

    c = QdrantClient(path=str(path))
    try:
        points, _ = c.scroll(collection, limit=10_000)
        return {str(p.id) for p in points}
    finally:
        c.close()


# ---------------------------------------------------------------- chunking and loading


def test_chunks_are_deterministic_bounded_overlapping_and_cover_the_text() -> None:
    text = (DOCS / "sourdough.md").read_text()
    chunks = chunk_text(text, 200, 40)
    assert chunks == chunk_text(text, 200, 40) and len(chunks) >= 4
    assert all(0 < len(c) <= 200 for c in chunks)
    words = text.split()
    assert [w for w in " ".join(chunks).split() if w in words] and set(words) <= set(" ".join(chunks).split())
    for a, b in zip(chunks, chunks[1:]):  # neighbours share a few words
        assert set(a.split()[-3:]) & set(b.split()[:12])
    assert chunk_text("short", 200, 40) == ["short"] and chunk_text("  ", 200, 40) == []
    with pytest.raises(ConfigError, match="overlap < chunk_size"):
        chunk_text(text, 100, 100)


def test_documents_load_from_files_rows_and_fsspec_uris() -> None:
    docs = load_documents(str(DOCS))
    assert [d.id for d in docs] == ["bicycles.md", "composting.txt", "sourdough.md", "telescopes.md"]
    rows = load_documents(str(DOCS.parent / "docs.jsonl"))
    assert [d.id for d in rows] == ["tea-green", "tea-black", "tea-oolong"]
    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/a.md", b"alpha text")
    fs.pipe("/corpus/sub/b.txt", b"beta text")
    fs.pipe("/corpus/rows.jsonl", b'{"text": "gamma"}\n{"text": "delta"}\n')
    assert [d.id for d in load_documents("memory://corpus")] == ["a.md", "rows.jsonl:0", "rows.jsonl:1", "sub/b.txt"]
    assert [d.id for d in load_documents("memory://corpus/*.md")] == ["a.md"]
    fs.pipe("/dup/rows.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(ConfigError, match="document ids repeat"):
        load_documents("memory://dup")
    with pytest.raises(StorageError, match="does not exist"):
        load_documents("memory://nothing-here")


# ---------------------------------------------------------------- synth index


async def test_indexing_twice_changes_nothing_and_changed_documents_update(tmp_path: Path) -> None:
    src = tmp_path / "docs"
    shutil.copytree(DOCS, src)
    path = str(tmp_path / "q")
    first = await index_documents(str(src), "kb", path=path, llm=llm(), chunk_size=300, overlap=50)
    assert first.documents == 4 and first.new_points == first.chunks == first.points > 4
    assert first.embedding_tokens > 0
    ids = point_ids(tmp_path / "q")
    assert point_id("sourdough.md", 0) in ids and len(ids) == first.points

    again = await index_documents(str(src), "kb", path=path, llm=llm(), chunk_size=300, overlap=50)
    assert (again.new_points, again.updated_points, again.deleted_points) == (0, 0, 0)
    assert again.unchanged_points == again.points == first.points and again.embedding_tokens == 0
    assert point_ids(tmp_path / "q") == ids

    (src / "sourdough.md").write_text("# Sourdough bread\n\nFeed the starter daily.\n")  # shrinks to one chunk
    (src / "tea.txt").write_text("Green tea likes water below boiling.")
    third = await index_documents(str(src), "kb", path=path, llm=llm(), chunk_size=300, overlap=50)
    old_sourdough = sum(1 for i in ids if i in {point_id("sourdough.md", k) for k in range(10)})
    assert (third.new_points, third.updated_points) == (1, 1)
    assert third.deleted_points == old_sourdough - 1
    assert third.points == first.points + 1 - (old_sourdough - 1)


async def test_index_refuses_bad_targets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of --path"):
        await index_documents(str(DOCS), "kb", llm=llm())
    with pytest.raises(ConfigError, match="no documents found"):
        (tmp_path / "empty").mkdir()
        await index_documents(str(tmp_path / "empty"), "kb", path=str(tmp_path / "q"), llm=llm())


# ---------------------------------------------------------------- the retriever


async def test_qdrant_retriever_finds_the_document_sharing_the_words(kb: Path) -> None:
    embedder = LLMEmbedder(llm())
    a = await QdrantRetriever.open("kb", embedder=embedder, path=str(kb), top_k=2)
    b = await QdrantRetriever.open("kb", embedder=embedder, path=str(kb), top_k=2)  # copies: no lock conflict
    try:
        assert isinstance(a, Retriever)
        res = await a.aget_context_with_metadata("how often should I feed my sourdough starter with flour and water")
        assert res.hits[0].doc_id == "sourdough.md" and res.hits[0].score >= res.hits[1].score
        assert res.hits[0].id in point_ids_cached(kb) and res.calls and res.calls[0].usage.prompt_tokens > 0
        assert "starter" in res.text
        res_b = await b.aget_context_with_metadata("telescope aperture eyepiece magnification focal length")
        assert res_b.hits[0].doc_id == "telescopes.md"
        assert (
            await a.aget_context("bicycle chain lubricant wear")
            == (await a.aget_context_with_metadata("bicycle chain lubricant wear")).text
        )
        none = await QdrantRetriever.open("kb", embedder=embedder, path=str(kb), score_threshold=0.999)
        miss = await none.aget_context_with_metadata("quantum chromodynamics")
        assert miss.text == NO_RETRIEVAL_CONTEXT and miss.empty
        await none.aclose()
    finally:
        await a.aclose()
        await b.aclose()
    assert a._temp_dir is None


_IDS: dict[str, set[str]] = {}


def point_ids_cached(path: Path) -> set[str]:
    if str(path) not in _IDS:
        _IDS[str(path)] = point_ids(path)
    return _IDS[str(path)]


def test_sync_methods_work_outside_an_event_loop(kb: Path) -> None:
    point_ids_cached(kb)
    r = asyncio.run(QdrantRetriever.open("kb", embedder=LLMEmbedder(llm()), path=str(kb)))
    hit = r.get_context_with_metadata("compost pile green brown material turn")
    assert hit.hits[0].doc_id == "composting.txt" and r.get_context("compost pile") != NO_RETRIEVAL_CONTEXT

    async def inside() -> None:
        with pytest.raises(SynthError, match="inside a running event loop"):
            r.get_context("compost")

    asyncio.run(inside())
    asyncio.run(r.aclose())


# qdrant-client leaves the lock file of a refused second open to the garbage collector
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_local_folder_from_an_fsspec_uri_and_open_mode_lock(kb: Path) -> None:
    mem = fsspec.filesystem("memory")
    mem.put(str(kb), "/qcopy", recursive=True)
    r = await QdrantRetriever.open("kb", embedder=LLMEmbedder(llm()), path="memory://qcopy")
    assert (await r.aget_context_with_metadata("telescope aperture")).hits[0].doc_id == "telescopes.md"
    await r.aclose()
    with pytest.raises(ConfigError, match=r"collection 'nope' not found .* holds \['kb'\]"):
        await QdrantRetriever.open("nope", embedder=LLMEmbedder(llm()), path=str(kb))
    owner = await QdrantRetriever.open("kb", embedder=LLMEmbedder(llm()), path=str(kb), local_mode="open")
    try:
        with pytest.raises(ConfigError, match="open in another process; use local_mode 'copy'"):
            await QdrantRetriever.open("kb", embedder=LLMEmbedder(llm()), path=str(kb), local_mode="open")
    finally:
        await owner.aclose()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
async def test_an_unreachable_server_is_one_storage_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(StorageError, match=rf"^cannot reach Qdrant at '{url}' \(\w+\); check that the server is up"):
        await QdrantRetriever.open("kb", embedder=LLMEmbedder(llm()), url=url, api_key="secret-qdrant-key")
    with pytest.raises(StorageError, match="cannot reach Qdrant") as err:
        await index_documents(str(DOCS), "kb", url=url, api_key="secret-qdrant-key", llm=llm())
    assert "secret-qdrant-key" not in str(err.value)


async def test_static_retriever_and_empty_marker() -> None:
    r = StaticRetriever({"p1": "green tea water", "p2": "bicycle chain"}, top_k=1)
    res = await r.aget_context_with_metadata("tea water temperature")
    assert [h.id for h in res.hits] == ["p1"] and res.text == "green tea water"
    assert (await r.aget_context("zebra")) == NO_RETRIEVAL_CONTEXT


# ---------------------------------------------------------------- RAG records


def rag_job(kb: Path, **modifier: Any) -> Any:
    return parse_job(
        {
            "name": "t-rag",
            "count": 6,
            "seed": 2,
            "generator": {
                "kind": "conversation",
                "instructions": [
                    "How should I feed a sourdough starter?",
                    "Which telescope aperture suits planets?",
                    "How do I keep a compost pile moist and hot?",
                ],
                "turns": {"min": 1, "max": 3},
                "modifiers": [{"kind": "rag", "top_k": 2, **modifier}],
            },
        }
    )


async def run_job(job: Any) -> Any:
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=Dispatcher.from_spec(job))
    await gen.setup(ctx)
    try:
        return await run_shard(gen, ctx, Shard(0, 0, job.count), fingerprint(job), concurrency=4)
    finally:
        await gen.aclose()


async def test_rag_records_cite_hits_that_exist_in_the_collection(kb: Path) -> None:
    out = await run_job(rag_job(kb, collection="kb", path=str(kb), per_turn=True))
    assert out.dead is None
    rows = out.records.to_pylist()
    known = point_ids_cached(kb)
    expect = {0: "sourdough.md", 1: "telescopes.md", 2: "composting.txt"}
    for i, row in enumerate(rows):
        rets = row["retrieval"]
        assert [r["turn"] for r in rets] == list(range(row["turns"]))  # once per answer in per-turn mode
        assert all(h["id"] in known for r in rets for h in r["hits"])
        assert rets[0]["query"] == row["instruction"] and rets[0]["hits"][0]["doc_id"] == expect[i % 3]
        hit_text = row["messages"][0]["content"]
        assert "<context>" in hit_text and NO_RETRIEVAL_CONTEXT not in hit_text
        # every later retrieval is a system message right before the follow-up it was made for
        for k, m in enumerate(row["messages"][2:], start=2):
            if m["role"] == "system":
                assert row["messages"][k + 1]["role"] == "user"
        assert [u["role"] for u in row["usage"]].count("embedding") == row["turns"]
    assert out.stats["prompt_tokens"] > 0


async def test_rag_over_documents_indexed_in_memory_by_each_worker() -> None:
    out = await run_job(rag_job(Path("."), source=str(DOCS), chunk_size=300, overlap=50))
    rows = out.records.to_pylist()
    assert rows[0]["retrieval"][0]["hits"][0]["doc_id"] == "sourdough.md"
    extra = [[u["role"] for u in r["usage"]].count("embedding") - len(r["retrieval"]) for r in rows]
    assert all(len(r["retrieval"]) == 1 for r in rows)  # fixed per dialog by default
    assert sorted(extra) == [0] * 5 + [1]  # the worker's index build (one batch) is charged once


@pytest.mark.parametrize(
    "modifier, pattern",
    [
        ({"collection": "kb"}, r"^generator.modifiers\[0\]: collection 'kb' needs a path or a url$"),
        ({"path": "/tmp/x"}, r"^generator.modifiers\[0\].collection: name the collection"),
        (
            {"collection": "kb", "path": "/nonexistent/q"},
            r"^generator.modifiers\[0\].path: '/nonexistent/q' is not a Qdrant folder",
        ),
        ({"source": "/nonexistent/docs"}, r"^generator.modifiers\[0\].source: '/nonexistent/docs' does not exist"),
        ({"source": str(DOCS), "url": "http://127.0.0.1:9"}, r"^generator.modifiers\[0\]: give one of path"),
        (
            {"collection": "kb", "url": "http://127.0.0.1:9", "api_key_env": "SYNTH_TEST_UNSET_QDRANT_KEY"},
            r"^generator.modifiers\[0\].api_key_env: environment variable SYNTH_TEST_UNSET_QDRANT_KEY is not set$",
        ),
        ({"top_k": 0}, r"^generator.modifiers\[0\].rag.top_k: Input should be greater than or equal to 1$"),
    ],
)
def test_bad_rag_options_give_one_line_errors(modifier: dict[str, Any], pattern: str) -> None:
    job = rag_job(Path("."), **modifier)
    with pytest.raises(ConfigError, match=pattern):
        create_generator(job.generator, job)

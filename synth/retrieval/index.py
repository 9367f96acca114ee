"""``synth index``: load documents, chunk them, embed the chunks and upsert them into Qdrant.

Idempotent: a chunk's point id is ``uuid5(doc id, chunk number)`` and its payload carries a hash of
its text (and of the document's chunk count), so running the same source twice embeds nothing and
changes nothing; a changed document re-embeds only its changed chunks and drops chunks it no longer
has. Documents are txt/md files (one document per file) or rows of jsonl/csv/parquet files, on
any fsspec URI, a folder or a glob.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import re
import uuid
from typing import Any

from pydantic import BaseModel, Field

from synth.errors import ConfigError, StorageError
from synth.retrieval.embedders import LLMEmbedder

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
ROW_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "synth.retrieval.chunk")
_GLOB = re.compile(r"[*?\[]")


class Document(BaseModel):
    id: str
    text: str
    source: str = ""


class IndexReport(BaseModel):
    """What one ``synth index`` run did."""

    collection: str
    documents: int = Field(description="documents read from the source")
    chunks: int = Field(description="chunks cut from them")
    new_points: int = Field(description="points that did not exist before")
    updated_points: int = Field(description="points whose text changed and were re-embedded")
    unchanged_points: int = Field(description="points already present and identical (not re-embedded)")
    deleted_points: int = Field(0, description="stale chunks of changed documents removed")
    points: int = Field(description="points in the collection after the run")
    embedding_tokens: int = 0
    cost_usd: float = 0.0


def point_id(doc_id: str, chunk_no: int) -> str:
    """Deterministic point id of a chunk: re-indexing the same document hits the same points."""
    return str(uuid.uuid5(_NS, f"{doc_id}\x00{chunk_no}"))


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Cut ``text`` into chunks of at most ``size`` characters, overlapping by about ``overlap``,
    preferring to cut at whitespace. Pure and deterministic."""
    if size < 1 or not 0 <= overlap < size:
        raise ConfigError(f"chunking needs chunk_size >= 1 and 0 <= overlap < chunk_size (got {size}, {overlap})")
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    chunks, start, n = [], 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            cut = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
            if cut > start:
                end = cut
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        while nxt < end and not text[nxt - 1].isspace():  # start the overlap at a word
            nxt += 1
        start = nxt
    return chunks


def file_suffix(path: str) -> str:
    """The format suffix of a file name, ignoring a compression suffix (``a.jsonl.gz`` -> ``.jsonl``)."""
    p = path.lower()
    for comp in (".gz", ".bz2", ".zst", ".xz"):
        p = p.removesuffix(comp)
    return posixpath.splitext(p)[1]


def expand(source: str) -> tuple[Any, list[str], str]:
    """(filesystem, matching files, base folder ids are relative to) for a file, folder or glob."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    if _GLOB.search(path):
        prefix = _GLOB.split(path, 1)[0]  # ids are relative to the folder the pattern starts in
        base = prefix.rstrip("/") if prefix.endswith("/") else posixpath.dirname(prefix)
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        base, files = path.rstrip("/"), sorted(fs.find(path))
    elif fs.exists(path):
        base, files = posixpath.dirname(path), [path]
    else:
        raise StorageError(f"{source!r} does not exist; give a file, a folder or a glob of documents")
    return fs, [f for f in files if file_suffix(f) in TEXT_SUFFIXES + ROW_SUFFIXES], base


def read_rows(fs: Any, path: str) -> list[dict[str, Any]]:
    """Rows of a jsonl, csv or parquet file (compression inferred from the name)."""
    suffix = file_suffix(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            return pq.read_table(fh).to_pylist()
    with fs.open(path, "rt", compression="infer", encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            return list(csv.DictReader(io.StringIO(fh.read())))
        rows = []
        for no, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ConfigError(
                        f"{path}:{no}: not valid JSON; each line of a .jsonl file must be one object"
                    ) from None
        return rows


def load_documents(source: str, *, text_field: str = "text", id_field: str = "id") -> list[Document]:
    """Documents from ``source``. A text file is one document (id: its path under the source);
    a row is one document (id: its ``id_field``, else ``<file>:<row number>``)."""
    fs, files, base = expand(source)
    docs: list[Document] = []
    for f in files:
        rel = posixpath.relpath(f, base) if base else f
        if file_suffix(f) in TEXT_SUFFIXES:
            with fs.open(f, "rt", compression="infer", encoding="utf-8") as fh:
                docs.append(Document(id=rel, text=fh.read(), source=rel))
            continue
        for no, row in enumerate(read_rows(fs, f)):
            if not isinstance(row, dict) or text_field not in row:
                raise ConfigError(f"{rel} row {no}: no {text_field!r} field; set the text field name")
            rid = row.get(id_field)
            docs.append(
                Document(id=str(rid) if rid not in (None, "") else f"{rel}:{no}", text=str(row[text_field]), source=rel)
            )
    if not docs:
        raise ConfigError(f"no documents found in {source!r}; supported: {', '.join(TEXT_SUFFIXES + ROW_SUFFIXES)}")
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ConfigError(f"document ids repeat in {source!r} (e.g. {dup}); give each row a unique {id_field!r}")
    return docs


def chunk_points(
    docs: list[Document], chunk_size: int, overlap: int
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """(point id, payload) of every chunk, and the chunk count of every document."""
    points: list[tuple[str, dict[str, Any]]] = []
    n_chunks: dict[str, int] = {}
    for d in docs:
        chunks = chunk_text(d.text, chunk_size, overlap)
        n_chunks[d.id] = len(chunks)
        for no, text in enumerate(chunks):
            h = hashlib.sha256(f"{len(chunks)}\x00{text}".encode()).hexdigest()[:16]
            payload = {"doc_id": d.id, "chunk": no, "chunks": len(chunks), "text": text, "source": d.source, "hash": h}
            points.append((point_id(d.id, no), payload))
    return points, n_chunks


async def index_into(
    client: Any,
    collection: str,
    docs: list[Document],
    embedder: LLMEmbedder | Any,
    *,
    chunk_size: int = 800,
    overlap: int = 100,
) -> IndexReport:
    """Upsert the chunks of ``docs`` into ``collection`` on an open ``AsyncQdrantClient``,
    embedding only chunks that are new or changed."""
    from qdrant_client import models

    points, n_chunks = chunk_points(docs, chunk_size, overlap)
    new = updated = unchanged = deleted = 0
    changed_docs: set[str] = set()
    exists = await client.collection_exists(collection)
    for i in range(0, len(points), 512):
        batch = points[i : i + 512]
        known: dict[str, Any] = {}
        if exists:
            got = await client.retrieve(collection, ids=[pid for pid, _ in batch], with_payload=["hash"])
            known = {str(r.id): (r.payload or {}).get("hash") for r in got}
        todo = [(pid, p) for pid, p in batch if known.get(pid) != p["hash"]]
        unchanged += len(batch) - len(todo)
        for pid, p in todo:
            if pid in known:
                updated += 1
                changed_docs.add(p["doc_id"])
            else:
                new += 1
        if not todo:
            continue
        vectors = await embedder.embed([p["text"] for _, p in todo])
        if not exists:
            await client.create_collection(
                collection, vectors_config=models.VectorParams(size=len(vectors[0]), distance=models.Distance.COSINE)
            )
            exists = True
        await client.upsert(
            collection, points=[models.PointStruct(id=pid, vector=v, payload=p) for (pid, p), v in zip(todo, vectors)]
        )
    for doc_id in sorted(changed_docs):  # a document that shrank leaves chunks past its new end
        stale = models.Filter(
            must=[
                models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id)),
                models.FieldCondition(key="chunk", range=models.Range(gte=n_chunks[doc_id])),
            ]
        )
        deleted += (await client.count(collection, count_filter=stale, exact=True)).count
        await client.delete(collection, points_selector=models.FilterSelector(filter=stale))
    total = (await client.count(collection, exact=True)).count if exists else 0
    usage = getattr(embedder, "usage", None)
    return IndexReport(
        collection=collection,
        documents=len(docs),
        chunks=len(points),
        new_points=new,
        updated_points=updated,
        unchanged_points=unchanged,
        deleted_points=deleted,
        points=total,
        embedding_tokens=usage.total_tokens if usage is not None else 0,
        cost_usd=getattr(embedder, "cost_usd", 0.0),
    )


async def index_documents(
    source_uri: str,
    collection: str,
    *,
    llm: Any,
    path: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    chunk_size: int = 800,
    overlap: int = 100,
    model: str = "default",
    batch_size: int = 64,
    text_field: str = "text",
    id_field: str = "id",
) -> IndexReport:
    """Index ``source_uri`` into ``collection`` at a local folder ``path`` or a server ``url``;
    ``model`` is the route of the embedding model on ``llm`` (anything with ``async embed``)."""
    from qdrant_client import AsyncQdrantClient

    if bool(path) == bool(url):
        raise ConfigError("give exactly one of --path (local Qdrant folder) or --url (Qdrant server)")
    chunk_text("", chunk_size, overlap)  # check the chunking options before reading anything
    docs = load_documents(source_uri, text_field=text_field, id_field=id_field)
    try:
        client = (
            AsyncQdrantClient(url=url, api_key=api_key, check_compatibility=False)
            if url
            else AsyncQdrantClient(path=path)
        )
    except RuntimeError as e:
        raise StorageError(f"Qdrant folder {path!r} is open in another process; close it and run again") from e
    try:
        try:
            await client.collection_exists(collection)
        except Exception as e:  # noqa: BLE001 - connection errors of any transport, said once
            raise StorageError(
                f"cannot reach Qdrant at {url!r} ({type(e).__name__}); check that the server is up and the url is right"
            ) from e
        return await index_into(
            client,
            collection,
            docs,
            LLMEmbedder(llm, model=model, batch_size=batch_size),
            chunk_size=chunk_size,
            overlap=overlap,
        )
    finally:
        await client.close()


__all__ = [
    "ROW_SUFFIXES",
    "TEXT_SUFFIXES",
    "Document",
    "IndexReport",
    "chunk_text",
    "expand",
    "chunk_points",
    "file_suffix",
    "index_documents",
    "index_into",
    "load_documents",
    "point_id",
    "read_rows",
]

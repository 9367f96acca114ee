"""A retriever over a Qdrant collection built by ``synth index``.

Two modes:

* **server** (``url=``): an ``AsyncQdrantClient`` for the async paths (a sync client is made on
  demand for the sync ones). Any number of workers share it.
* **embedded local** (``path=``, the default): qdrant-client's local mode keeps a whole collection
  in memory and locks its folder, so one folder can be open in one client at a time. With
  ``local_mode="copy"`` (default) each worker copies the collection's files (only that collection)
  into a private temporary folder and opens the copy: any number of workers per machine, read-only
  with respect to the original, fine for the small-to-medium corpora local mode is meant for. The
  path may be any fsspec URI (``s3://bucket/index``), so every node of a cluster can fetch the same
  index. ``local_mode="open"`` opens the folder itself, when this process is its only user.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from synth.errors import ConfigError, StorageError
from synth.records import Completion
from synth.retrieval.base import BaseRetriever, RetrievalHit, RetrievalResult, build_result, run_sync
from synth.retrieval.embedders import Embedder, LLMEmbedder


class QdrantOptions(BaseModel):
    """``retriever: {kind: qdrant, ...}`` in a rag modifier."""

    model_config = ConfigDict(extra="forbid")
    collection: str = Field(..., description="collection built with `synth index`")
    path: str | None = Field(None, description="local Qdrant folder (relative to the job file, or any fsspec URI)")
    url: str | None = Field(None, description="Qdrant server URL")
    api_key_env: str | None = Field(None, description="environment variable holding the server's API key")
    local_mode: Literal["copy", "open"] = Field("copy", description="copy: a private copy per worker; open: in place")
    top_k: int = Field(4, ge=1, le=50, description="chunks retrieved per query")
    score_threshold: float | None = Field(None, description="drop hits scoring below this")


class QdrantRetriever(BaseRetriever):
    """Embeds the query, asks Qdrant for the ``top_k`` nearest chunks, joins their text."""

    Options = QdrantOptions

    @classmethod
    async def from_options(cls, o: QdrantOptions, *, embedder: Embedder, job: Any = None) -> QdrantRetriever:
        """The retriever plugin entry (see :mod:`synth.retrieval.registry`)."""
        path = o.path
        base = getattr(job, "base_dir", None)
        if path and base and "://" not in path and not os.path.isabs(os.path.expanduser(path)):
            path = os.path.join(str(base), path)
        api_key = os.environ.get(o.api_key_env) if o.api_key_env else None
        if o.api_key_env and not api_key:
            raise ConfigError(f"retriever.api_key_env: environment variable {o.api_key_env} is not set")
        return await cls.open(
            o.collection,
            embedder=embedder,
            path=path,
            url=o.url,
            api_key=api_key,
            local_mode=o.local_mode,
            top_k=o.top_k,
            score_threshold=o.score_threshold,
        )

    def __init__(
        self,
        *,
        collection: str,
        embedder: Embedder,
        async_client: Any,
        client: Any = None,
        top_k: int = 4,
        score_threshold: float | None = None,
        text_field: str = "text",
        separator: str = "\n\n",
        url: str | None = None,
        api_key: str | None = None,
        temp_dir: str | None = None,
    ) -> None:
        self.collection = collection
        self.embedder = embedder
        self.async_client = async_client
        self.client = client
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.text_field = text_field
        self.separator = separator
        self._url = url
        self._api_key = api_key
        self._temp_dir = temp_dir
        if temp_dir:  # workers rarely close generators: remove the copy when this object goes
            self._cleanup = weakref.finalize(self, shutil.rmtree, temp_dir, True)

    def __repr__(self) -> str:  # never shows the api key
        where = self._url or "local"
        return f"QdrantRetriever(collection={self.collection!r}, at={where!r}, top_k={self.top_k})"

    @classmethod
    async def open(
        cls,
        collection: str,
        *,
        embedder: Embedder,
        path: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        local_mode: Literal["copy", "open"] = "copy",
        **kw: Any,
    ) -> QdrantRetriever:
        """Open a collection by server ``url`` or local ``path`` (see the module docstring)."""
        from qdrant_client import AsyncQdrantClient

        if bool(path) == bool(url):
            raise ConfigError("give the Qdrant index exactly one of 'path' (local folder) or 'url' (server)")
        temp_dir = None
        if url:
            aclient = AsyncQdrantClient(url=url, api_key=api_key, check_compatibility=False)
        elif local_mode == "copy":
            temp_dir = copy_local_collection(str(path), collection)
            aclient = AsyncQdrantClient(path=temp_dir)
        else:
            try:
                aclient = AsyncQdrantClient(path=str(path))
            except RuntimeError as e:  # the folder lock is held by another client
                raise ConfigError(
                    f"Qdrant folder {path!r} is open in another process; use local_mode 'copy' or a server url"
                ) from e
        self = cls(
            collection=collection,
            embedder=embedder,
            async_client=aclient,
            url=url,
            api_key=api_key,
            temp_dir=temp_dir,
            **kw,
        )
        try:
            exists = await aclient.collection_exists(collection)
        except Exception as e:  # noqa: BLE001 - connection errors of any transport, said once
            await self.aclose()
            raise StorageError(
                f"cannot reach Qdrant at {url or path!r} ({type(e).__name__}); "
                f"check that the server is up and the url is right"
            ) from e
        if not exists:
            await self.aclose()
            where = url or path
            raise ConfigError(
                f"Qdrant collection {collection!r} not found at {where!r}; build it with "
                f"`synth index SOURCE --collection {collection} {'--url' if url else '--path'} {where}`"
            )
        return self

    async def aget_context_with_metadata(self, query: str) -> RetrievalResult:
        vector, calls = await self._embed(query)
        res = await self.async_client.query_points(
            self.collection, query=vector, limit=self.top_k, with_payload=True, score_threshold=self.score_threshold
        )
        return self._result(query, res.points, calls)

    def get_context_with_metadata(self, query: str) -> RetrievalResult:
        if self._url is None:  # local mode: the async client is loop-free, so run it here
            return run_sync(self.aget_context_with_metadata(query))
        from qdrant_client import QdrantClient

        if self.client is None:
            self.client = QdrantClient(url=self._url, api_key=self._api_key, check_compatibility=False)
        vector, calls = run_sync(self._embed(query))
        res = self.client.query_points(
            self.collection, query=vector, limit=self.top_k, with_payload=True, score_threshold=self.score_threshold
        )
        return self._result(query, res.points, calls)

    async def _embed(self, query: str) -> tuple[list[float], list[Completion]]:
        if isinstance(self.embedder, LLMEmbedder):
            vectors, calls = await self.embedder.embed_with_calls([query])
            return vectors[0], calls
        return (await self.embedder.embed([query]))[0], []

    def _result(self, query: str, points: list[Any], calls: list[Completion]) -> RetrievalResult:
        hits, texts = [], []
        for p in points:
            payload = p.payload or {}
            chunk = payload.get("chunk")
            hits.append(
                RetrievalHit(
                    id=str(p.id),
                    score=float(p.score),
                    doc_id=payload.get("doc_id"),
                    chunk=int(chunk) if chunk is not None else None,
                )
            )
            texts.append(str(payload.get(self.text_field) or ""))
        result = build_result(query, texts, hits, self.separator)
        result.calls = calls
        return result

    async def aclose(self) -> None:
        await self.async_client.close()
        if self.client is not None:
            self.client.close()
        if self._temp_dir:
            self._cleanup()
            self._temp_dir = None


def copy_local_collection(path: str, collection: str) -> str:
    """Copy one collection of a local-mode Qdrant folder (local path or fsspec URI) into a new
    temporary folder and return it. The lock file is left behind, so the copy opens freely."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    meta_path = f"{root}/meta.json"
    if not fs.exists(meta_path):
        raise ConfigError(f"{path!r} is not a Qdrant local folder (no meta.json); build it with `synth index`")
    meta = json.loads(fs.cat_file(meta_path))
    if collection not in meta.get("collections", {}):
        known = sorted(meta.get("collections", {}))
        raise ConfigError(f"Qdrant collection {collection!r} not found in {path!r}; it holds {known}")
    tmp = tempfile.mkdtemp(prefix="synth-qdrant-")
    src, dst = f"{root}/collection/{collection}", os.path.join(tmp, "collection", collection)
    os.makedirs(dst)
    for f in fs.find(src):
        target = os.path.join(dst, os.path.relpath(f, src))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(f, target)
    # keep only this collection's entries (collections, per-collection indexes) and its aliases
    keep = {
        k: ({c: v for c, v in val.items() if c == collection} if isinstance(val, dict) else val)
        for k, val in meta.items()
    }
    keep["aliases"] = {a: c for a, c in meta.get("aliases", {}).items() if c == collection}
    with open(os.path.join(tmp, "meta.json"), "w") as fh:
        json.dump(keep, fh)
    return tmp


__all__ = ["QdrantRetriever", "copy_local_collection"]

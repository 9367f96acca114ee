"""Prompt modifiers: what the respondent knows and who it is, shaped per dialog.

* ``persona``: the respondent adopts a persona (listed or from a file), picked per unit, seeded.
* ``rag``: context retrieved for the instruction is put in the system prompt, and the hit ids and
  scores go to the record's ``retrieval`` column. The retrieval is fixed for the whole dialog by
  default; with ``per_turn: true`` every follow-up gets its own retrieval, inserted as a system
  message just before it, so the record shows exactly what the model saw at each turn.

Where the context comes from (embeddings always from the job's own models):

* ``collection`` + ``path`` or ``url``: a collection built by ``synth index``, opened in ``setup``
  (a local folder is copied per worker, see :mod:`synth.retrieval.qdrant`);
* ``source``: documents every worker indexes into an in-memory collection at ``setup``, for
  small corpora (no separate index step; the embedding cost is paid once per worker and charged
  to its first dialog);
* neither: the retriever the engine lends (``GenContext.retriever``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from synth.errors import ConfigError, KeyMissing
from synth.generators.base import GenContext, Unit
from synth.generators.templates import read_values, resolve_uri
from synth.plugins import Registry, options_of
from synth.records import Completion
from synth.retrieval.base import RetrievalResult


@dataclass
class Shaped:
    """The respondent's setup for one dialog, built up by the modifiers in order."""

    system: str
    persona: str | None = None
    retrievals: list[tuple[int, RetrievalResult]] = field(default_factory=list)  # (turn, result)
    calls: list[Completion] = field(default_factory=list)


class PromptModifier(Protocol):
    async def setup(self, ctx: GenContext) -> None: ...

    async def modify(self, shaped: Shaped, query: str, unit: Unit, ctx: GenContext) -> None:
        """Once per dialog, before the first answer; ``query`` is the instruction."""
        ...

    async def on_turn(self, shaped: Shaped, query: str, turn: int, unit: Unit, ctx: GenContext) -> str | None:
        """Before answer ``turn`` (>= 1): text of a system message to insert before the follow-up."""
        ...

    async def aclose(self) -> None: ...


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonaModifierSpec(_Spec):
    kind: Literal["persona"] = "persona"
    personas: list[str] | None = Field(None, description="persona descriptions")
    file: str | None = Field(None, description="file of personas: txt lines, or jsonl/csv/parquet rows with 'field'")
    field: str | None = Field(None, description="row field holding the persona")
    order: Literal["random", "cycle"] = Field(
        "random", description="random: seeded pick per unit; cycle: unit i gets i mod n"
    )
    template: str = Field(
        "Adopt this persona in all your answers: {persona}",
        description="text appended to the system prompt; {persona} is replaced",
    )


class RetrieverRef(BaseModel):
    """A retriever kind and that class's fields."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field(..., description="a registered retriever or 'package.module:Class'")


class RagModifierSpec(_Spec):
    kind: Literal["rag"] = "rag"
    collection: str | None = Field(None, description="Qdrant collection built with `synth index` (with path or url)")
    path: str | None = Field(None, description="local Qdrant folder (path or fsspec URI); one of path / url / source")
    url: str | None = Field(None, description="Qdrant server URL")
    source: str | None = Field(
        None,
        description="documents each worker indexes in memory at setup instead "
        "(small corpora: no `synth index` step, embeddings paid once per worker)",
    )
    chunk_size: int = Field(800, ge=50, description="source: characters per chunk")
    overlap: int = Field(100, ge=0, description="source: characters shared by neighbouring chunks")
    api_key_env: str | None = Field(None, description="environment variable holding the Qdrant server API key")
    local_mode: Literal["copy", "open"] = Field(
        "copy",
        description="copy: each worker opens a private copy of the "
        "folder; open: open it in place (single process only)",
    )
    top_k: int = Field(4, ge=1, le=50, description="chunks retrieved per query")
    score_threshold: float | None = Field(None, description="drop hits scoring below this")
    embed_model: str | None = Field(
        None, description="route computing query embeddings (default: the generator's model)"
    )
    per_turn: bool = Field(False, description="retrieve again for every follow-up instead of once per dialog")
    retriever: RetrieverRef | None = Field(
        None,
        description="a retriever by kind (qdrant, static, a plugin in synth.retrievers, or "
        "'package.module:Class') with its fields, instead of collection/path/url/source",
    )
    template: str = Field(
        "Use the following context to answer. If it does not hold the answer, say so.\n<context>\n{context}\n</context>",
        description="text appended to the system prompt; {context} is replaced",
    )


class PluginModifierSpec(BaseModel):
    """Any other kind: a modifier registered in the ``synth.modifiers`` entry-point group, or
    ``package.module:Class``; the other fields are that class's ``Options``."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field(..., description="a registered prompt modifier or 'package.module:Class'")


def _spec_kind(v: Any) -> str:
    kind = v.get("kind") if isinstance(v, dict) else getattr(v, "kind", None)
    return kind if kind in ("persona", "rag") else "plugin"


ModifierSpec = Annotated[
    Annotated[PersonaModifierSpec, Tag("persona")]
    | Annotated[RagModifierSpec, Tag("rag")]
    | Annotated[PluginModifierSpec, Tag("plugin")],
    Discriminator(_spec_kind),
    BeforeValidator(lambda v: MODIFIERS.known_kind(v)),
]


def _fill(template: str, **values: str) -> str:
    out = template
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    return out


def _join(system: str, extra: str) -> str:
    return f"{system.rstrip()}\n\n{extra}" if system.strip() else extra


class PersonaModifier:
    def __init__(self, spec: PersonaModifierSpec, job: Any, where: str) -> None:
        if (spec.personas is None) == (spec.file is None):
            raise ConfigError(f"{where}: give exactly one of personas or file")
        if "{persona}" not in spec.template:
            raise ConfigError(f"{where}.template: must contain {{persona}}")
        self.spec, self.job, self.where = spec, job, where
        self.personas: list[str] = list(spec.personas or [])

    async def setup(self, ctx: GenContext) -> None:
        if self.spec.file is not None:
            values = read_values(resolve_uri(self.spec.file, self.job), f"{self.where}.file", self.spec.field)
            self.personas = [str(v) for v in values]
        if not self.personas:
            raise ConfigError(f"{self.where}: no personas given")

    async def modify(self, shaped: Shaped, query: str, unit: Unit, ctx: GenContext) -> None:
        n = len(self.personas)
        persona = self.personas[unit.index % n if self.spec.order == "cycle" else unit.rng("persona").randrange(n)]
        shaped.persona = persona
        shaped.system = _join(shaped.system, _fill(self.spec.template, persona=persona))

    async def on_turn(self, shaped: Shaped, query: str, turn: int, unit: Unit, ctx: GenContext) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


class RagModifier:
    def __init__(self, spec: RagModifierSpec, job: Any, where: str) -> None:
        self._plugin: tuple[type, Any] | None = None
        if spec.retriever is not None:
            if spec.path or spec.url or spec.source or spec.collection:
                raise ConfigError(f"{where}.retriever: give the retriever or collection/path/url/source, not both")
            from synth.retrieval.registry import retriever_options

            fields = dict(spec.retriever.model_extra or {})
            self._plugin = retriever_options(spec.retriever.kind, fields, f"{where}.retriever")
        if sum(bool(x) for x in (spec.path, spec.url, spec.source)) > 1:
            raise ConfigError(
                f"{where}: give one of path (local Qdrant folder), url (Qdrant server) or source (documents)"
            )
        if (spec.path or spec.url) and not spec.collection:
            raise ConfigError(f"{where}.collection: name the collection to query at {spec.path or spec.url!r}")
        if spec.collection and not (spec.path or spec.url or spec.source):
            raise ConfigError(f"{where}: collection {spec.collection!r} needs a path or a url")
        if spec.source:
            from synth.retrieval.index import chunk_text, expand

            chunk_text("", spec.chunk_size, spec.overlap)
            try:
                found = expand(resolve_uri(spec.source, job))[1]
            except Exception as e:  # noqa: BLE001 - one line naming the option
                raise ConfigError(f"{where}.source: {e}") from None
            if not found:
                raise ConfigError(f"{where}.source: no txt, md, jsonl, csv or parquet documents in {spec.source!r}")
        if "{context}" not in spec.template:
            raise ConfigError(f"{where}.template: must contain {{context}}")
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise KeyMissing(f"{where}.api_key_env: environment variable {spec.api_key_env} is not set")
        if spec.collection is not None and spec.path:  # fail fast, before any worker starts
            import fsspec

            fs, root = fsspec.core.url_to_fs(resolve_uri(spec.path, job))
            if not fs.exists(root.rstrip("/") + "/meta.json"):
                raise ConfigError(
                    f"{where}.path: {spec.path!r} is not a Qdrant folder; build it with "
                    f"`synth index SOURCE --collection {spec.collection} --path {spec.path}`"
                )
        self.spec, self.job, self.where = spec, job, where
        self.route = spec.embed_model or (job.generator.model if job is not None else "default")
        self.retriever: Any = None
        self._owned = False
        self._pending: list[Completion] = []  # setup embeddings, charged to the first dialog

    async def setup(self, ctx: GenContext) -> None:
        s = self.spec
        from synth.retrieval.embedders import LLMEmbedder
        from synth.retrieval.qdrant import QdrantRetriever

        if self._plugin is not None:
            from synth.retrieval.registry import build_retriever

            cls, options = self._plugin
            embedder = LLMEmbedder(ctx.llm, model=self.route)
            self.retriever = await build_retriever(cls, options, embedder=embedder, job=self.job)
            self._owned = True
            return
        if s.source:
            self.retriever, self._pending = await self._index_in_memory(ctx)
            self._owned = True
            return
        if not (s.path or s.url):
            if ctx.retriever is None:
                raise ConfigError(f"{self.where}: no path, url or source given and the job provides no retriever")
            self.retriever = ctx.retriever
            return

        api_key = None
        if s.api_key_env:
            api_key = os.environ.get(s.api_key_env)
            if not api_key:
                raise KeyMissing(f"{self.where}.api_key_env: environment variable {s.api_key_env} is not set")
        path = resolve_uri(s.path, self.job) if s.path else None
        self.retriever = await QdrantRetriever.open(
            s.collection or "",
            embedder=LLMEmbedder(ctx.llm, model=self.route),
            path=path,
            url=s.url,
            api_key=api_key,
            local_mode=s.local_mode,
            top_k=s.top_k,
            score_threshold=s.score_threshold,
        )
        self._owned = True

    async def _index_in_memory(self, ctx: GenContext) -> tuple[Any, list[Completion]]:
        from qdrant_client import AsyncQdrantClient

        from synth.retrieval.embedders import LLMEmbedder
        from synth.retrieval.index import index_into, load_documents
        from synth.retrieval.qdrant import QdrantRetriever

        s = self.spec
        docs = load_documents(resolve_uri(s.source or "", self.job))
        embedder = LLMEmbedder(ctx.llm, model=self.route)
        raw: list[Completion] = []

        class _Recording:  # keeps the answered batches so their cost can be charged
            async def embed(self, texts: list[str]) -> list[list[float]]:
                vectors, calls = await embedder.embed_with_calls(texts)
                raw.extend(calls)
                return vectors

        client = AsyncQdrantClient(location=":memory:")
        name = s.collection or "documents"
        await index_into(client, name, docs, _Recording(), chunk_size=s.chunk_size, overlap=s.overlap)
        retriever = QdrantRetriever(
            collection=name, embedder=embedder, async_client=client, top_k=s.top_k, score_threshold=s.score_threshold
        )
        return retriever, raw

    async def _retrieve(self, shaped: Shaped, query: str, turn: int) -> RetrievalResult:
        result: RetrievalResult = await self.retriever.aget_context_with_metadata(query)
        shaped.retrievals.append((turn, result))
        shaped.calls.extend(result.calls)
        return result

    async def modify(self, shaped: Shaped, query: str, unit: Unit, ctx: GenContext) -> None:
        if self._pending:
            shaped.calls.extend(self._pending)
            self._pending = []
        result = await self._retrieve(shaped, query, 0)
        shaped.system = _join(shaped.system, _fill(self.spec.template, context=result.text))

    async def on_turn(self, shaped: Shaped, query: str, turn: int, unit: Unit, ctx: GenContext) -> str | None:
        if not self.spec.per_turn:
            return None
        result = await self._retrieve(shaped, query, turn)
        return _fill(self.spec.template, context=result.text)

    async def aclose(self) -> None:
        close = getattr(self.retriever, "aclose", None) if self._owned else None
        if close is not None:
            await close()
            self.retriever = None


def _check_modifier(obj: Any, origin: str) -> Any:
    if not isinstance(obj, type) or not callable(getattr(obj, "modify", None)):
        raise ConfigError(f"{origin} is not a prompt modifier class (it needs setup, modify, on_turn and aclose)")
    return obj


MODIFIERS = Registry("synth.modifiers", field="generator.modifiers.kind", what="prompt modifier", check=_check_modifier)


def build_modifier(spec: Any, job: Any, where: str) -> PromptModifier:
    """The modifier ``spec.kind`` names, built-ins and plugins alike (``cls(spec, job, where)``); a
    plugin's fields are validated by its ``Options`` when it declares one."""
    cls = MODIFIERS.load(spec.kind, field=f"{where}.kind")
    if isinstance(spec, PluginModifierSpec):
        spec = options_of(cls, dict(spec.model_extra or {}), where)
    return cls(spec, job, where)


__all__ = [
    "MODIFIERS",
    "ModifierSpec",
    "PersonaModifier",
    "PersonaModifierSpec",
    "PluginModifierSpec",
    "PromptModifier",
    "RagModifier",
    "RagModifierSpec",
    "RetrieverRef",
    "Shaped",
    "build_modifier",
]

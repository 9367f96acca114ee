"""Instruction sources: what the user asks first in a conversation.

Every source maps a unit to its instruction deterministically from the unit's index and the job
seed, so the same unit gets the same instruction on any worker, whatever the sharding:

* ``list`` / ``file``: given instructions, cycled (or picked at random, seeded).
* ``topics``: a model expands seed topics into a deduplicated topic tree (structured output, once
  per worker in ``setup``: a few calls, identical everywhere because requests are seeded), then
  writes ``per_leaf`` instructions per leaf in one call. Consecutive units share a leaf, so each
  batch is written about once per job (memoised per worker), not once per unit.
* ``documents``: every document of a corpus gets exactly ``per_document`` instructions: unit ``i``
  asks about document ``i // per_document``. The job's ``count`` must be documents x per_document.
* ``personas``: personas (listed, from a file, or written by a model) crossed with topics; the
  instruction is written in the persona's voice, and the persona also plays the user later on.

Model calls made in ``setup`` are charged to the first unit the worker generates.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from synth.errors import ConfigError, MalformedOutput
from synth.generators.base import GenContext, Unit
from synth.generators.templates import read_values, resolve_uri, sub_seed
from synth.plugins import Registry, options_of
from synth.records import ChatMessage, Completion, Request


@dataclass
class Instruction:
    """The opening user message and where it came from."""

    text: str
    source: str
    topic: str | None = None
    document_id: str | None = None
    context: str | None = None  # text the respondent may use (the document the question is about)
    persona: str | None = None  # who asks (the correspondent plays this persona)
    calls: list[Completion] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


class InstructionSource(Protocol):
    """Maps units to instructions. ``check`` runs at load time, ``setup`` once per worker."""

    def check(self, count: int) -> None: ...

    async def setup(self, ctx: GenContext) -> None: ...

    async def instruction(self, unit: Unit, ctx: GenContext) -> Instruction: ...


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListInstructions(_Spec):
    kind: Literal["list"] = "list"
    items: list[str] = Field(..., min_length=1, description="the instructions")
    order: Literal["cycle", "random"] = Field(
        "cycle", description="cycle: unit i gets item i mod n; random: seeded pick"
    )


class FileInstructions(_Spec):
    kind: Literal["file"] = "file"
    uri: str = Field(..., description="txt (one instruction per line), jsonl, csv or parquet; path, fsspec URI or glob")
    field: str | None = Field(None, description="column holding the instruction in jsonl/csv/parquet rows")
    order: Literal["cycle", "random"] = Field(
        "cycle", description="cycle: unit i gets row i mod n; random: seeded pick"
    )


class _LLMSpec(_Spec):
    model: str | None = Field(None, description="route writing the instructions (default: the generator's model)")
    guidance: str = Field("", description="extra guidance for the instruction writer (audience, style, language)")


class TopicInstructions(_LLMSpec):
    kind: Literal["topics"] = "topics"
    seeds: list[str] = Field(..., min_length=1, description="seed topics to expand")
    depth: int = Field(1, ge=0, le=4, description="levels of subtopics below the seeds")
    breadth: int = Field(4, ge=1, le=20, description="subtopics asked for per node")
    per_leaf: int = Field(5, ge=1, le=50, description="instructions written per leaf topic in one call")


class DocumentInstructions(_LLMSpec):
    kind: Literal["documents"] = "documents"
    uri: str = Field(
        ..., description="documents: txt/md files (one per file) or jsonl/csv/parquet rows; path, URI or glob"
    )
    per_document: int = Field(1, ge=1, le=100, description="instructions per document (count = documents x this)")
    text_field: str = Field("text", description="row field holding the document text")
    id_field: str = Field("id", description="row field holding the document id")
    max_chars: int = Field(6000, ge=200, description="document text shown to the models is cut to this length")


class PersonaInstructions(_LLMSpec):
    kind: Literal["personas"] = "personas"
    personas: list[str] | None = Field(None, description="persona descriptions")
    personas_file: str | None = Field(None, description="file of personas (txt lines or rows with personas_field)")
    personas_field: str | None = Field(None, description="field holding the persona in jsonl/csv/parquet rows")
    generate: int | None = Field(None, ge=1, le=200, description="have the model write this many personas instead")
    persona_hint: str = Field("people who would use an AI assistant", description="who the generated personas are")
    topics: list[str] = Field(..., min_length=1, description="topics crossed with the personas")
    per_pair: int = Field(1, ge=1, le=50, description="instructions per (persona, topic) pair, written in one call")


class PluginInstructions(BaseModel):
    """Any other kind: a source registered in the ``synth.instructions`` entry-point group, or
    ``package.module:Class``; the other fields are that class's ``Options``."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field(..., description="a registered instruction source or 'package.module:Class'")


_BUILTIN_SPECS = {"list": ListInstructions, "file": FileInstructions, "topics": TopicInstructions}
_BUILTIN_SPECS |= {"documents": DocumentInstructions, "personas": PersonaInstructions}


def _spec_kind(v: Any) -> str:
    kind = v.get("kind", "list") if isinstance(v, dict) else getattr(v, "kind", None)
    return kind if kind in _BUILTIN_SPECS else "plugin"


InstructionSpec = Annotated[
    Annotated[ListInstructions, Tag("list")]
    | Annotated[FileInstructions, Tag("file")]
    | Annotated[TopicInstructions, Tag("topics")]
    | Annotated[DocumentInstructions, Tag("documents")]
    | Annotated[PersonaInstructions, Tag("personas")]
    | Annotated[PluginInstructions, Tag("plugin")],
    Discriminator(_spec_kind),
    BeforeValidator(lambda v: INSTRUCTIONS.known_kind(v)),
]

_LIST_SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "string"}}},
    "required": ["items"],
    "additionalProperties": False,
}


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .")


def _distinct(items: Any, limit: int | None = None) -> list[str]:
    out, seen = [], set()
    for it in items if isinstance(items, list) else []:
        if isinstance(it, str) and _norm(it) and _norm(it) not in seen:
            seen.add(_norm(it))
            out.append(it.strip())
    return out[:limit] if limit else out


class _Base:
    kind: ClassVar[str] = ""

    def __init__(self, spec: Any, job: Any) -> None:
        self.spec = spec
        self.job = job
        self.route = getattr(spec, "model", None) or (job.generator.model if job is not None else "default")
        self.seed = job.seed if job is not None else 0
        self.name = job.name if job is not None else "job"
        self.pending: list[Completion] = []  # setup calls, charged to the first unit
        self._batches: OrderedDict[str, asyncio.Future[tuple[list[str], list[Completion]]]] = OrderedDict()

    def check(self, count: int) -> None:
        return None

    async def setup(self, ctx: GenContext) -> None:
        return None

    def _charge(self, ins: Instruction) -> Instruction:
        if self.pending:
            ins.calls, self.pending = self.pending + ins.calls, []
        return ins

    async def _ask_list(self, ctx: GenContext, key: str, prompt: str, n: int) -> tuple[list[str], list[Completion]]:
        """One structured call answering ``{"items": [...]}``; deterministic id and seed from ``key``."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        req = Request(
            id=f"{self.name}:{self.kind}:{digest}",
            model=self.route,
            seed=sub_seed(self.seed, key),
            messages=[ChatMessage(role="user", content=prompt)],
            json_schema=_LIST_SCHEMA,
            schema_name="items",
        )
        c = await ctx.llm.complete(req)
        items = _distinct((c.parsed or {}).get("items") if isinstance(c.parsed, dict) else None, n)
        if not items:
            raise MalformedOutput(f"the instruction writer returned no usable items for {key[:80]!r}", raw=c.text)
        return items, [c]

    async def _batch(self, ctx: GenContext, key: str, prompt: str, n: int) -> tuple[list[str], list[Completion]]:
        """Memoised :meth:`_ask_list`: units sharing a batch wait for one call; only the first
        caller is charged for it. A failed call is forgotten, so the next unit tries again."""
        while (fut := self._batches.get(key)) is not None:
            self._batches.move_to_end(key)
            try:
                items, _ = await asyncio.shield(fut)
                return items, []
            except Exception:  # noqa: BLE001 - the owner failed and forgot the key: try ourselves
                continue
        fut = asyncio.get_running_loop().create_future()
        self._batches[key] = fut
        while len(self._batches) > 256:
            self._batches.popitem(last=False)
        try:
            result = await self._ask_list(ctx, key, prompt, n)
        except BaseException as e:
            self._batches.pop(key, None)
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        fut.set_result((result[0], []))
        return result

    def _guidance(self) -> str:
        g = getattr(self.spec, "guidance", "")
        return f" {g.strip()}" if g else ""


class ListSource(_Base):
    kind = "list"

    def __init__(self, spec: Any, job: Any) -> None:
        super().__init__(spec, job)
        self.items: list[str] = list(spec.items) if isinstance(spec, ListInstructions) else []

    async def setup(self, ctx: GenContext) -> None:
        if isinstance(self.spec, FileInstructions):
            where = "generator.instructions.uri"
            values = read_values(resolve_uri(self.spec.uri, self.job), where, self.spec.field)
            if any(not isinstance(v, str) for v in values):
                raise ConfigError(
                    f"{where}: rows are not text; set generator.instructions.field to the instruction column"
                )
            self.items = values

    async def instruction(self, unit: Unit, ctx: GenContext) -> Instruction:
        n = len(self.items)
        i = unit.index % n if self.spec.order == "cycle" else unit.rng("instruction").randrange(n)
        return Instruction(text=self.items[i], source=self.spec.kind)


class TopicSource(_Base):
    kind = "topics"

    async def setup(self, ctx: GenContext) -> None:
        s = self.spec
        seen = {_norm(t) for t in s.seeds}
        level: list[tuple[str, ...]] = [(t,) for t in _distinct(s.seeds)]
        leaves: list[tuple[str, ...]] = []
        for _ in range(s.depth):
            answers = await asyncio.gather(
                *(
                    self._ask_list(
                        ctx,
                        "subtopics:" + " > ".join(path),
                        f"List {s.breadth} distinct, specific subtopics of the topic '{' > '.join(path)}'. "
                        f"Answer with short noun phrases.{self._guidance()}",
                        s.breadth,
                    )
                    for path in level
                )
            )
            nxt: list[tuple[str, ...]] = []
            for path, (subs, calls) in zip(level, answers):
                self.pending.extend(calls)
                kids = [t for t in subs if _norm(t) not in seen]
                seen.update(_norm(t) for t in kids)
                if not kids:
                    leaves.append(path)
                nxt.extend(path + (t,) for t in kids)
            level = nxt
        self.leaves = [" > ".join(p) for p in leaves + level]

    async def instruction(self, unit: Unit, ctx: GenContext) -> Instruction:
        k, n = self.spec.per_leaf, len(self.leaves)
        group, j = divmod(unit.index, k)
        topic, round_ = self.leaves[group % n], group // n
        items, calls = await self._batch(
            ctx,
            f"leaf:{topic}:{round_}",
            f"Write {k} distinct, self-contained requests or questions a user could ask an AI assistant "
            f"about '{topic}'. Vary their kind, length and difficulty.{self._guidance()}"
            + (f" (set {round_ + 1}: avoid the most obvious ones)" if round_ else ""),
            k,
        )
        return self._charge(Instruction(text=items[j % len(items)], source="topics", topic=topic, calls=calls))


class DocumentSource(_Base):
    kind = "documents"

    def __init__(self, spec: Any, job: Any) -> None:
        super().__init__(spec, job)
        from synth.retrieval.index import load_documents

        self.docs = load_documents(resolve_uri(spec.uri, job), text_field=spec.text_field, id_field=spec.id_field)

    def check(self, count: int) -> None:
        want = len(self.docs) * self.spec.per_document
        if count != want:
            raise ConfigError(
                f"count: document coverage needs count = {len(self.docs)} documents x {self.spec.per_document} "
                f"per_document = {want}, not {count}; set count: {want}"
            )

    async def instruction(self, unit: Unit, ctx: GenContext) -> Instruction:
        k = self.spec.per_document
        d, j = divmod(unit.index, k)
        doc = self.docs[d % len(self.docs)]
        text = doc.text[: self.spec.max_chars]
        items, calls = await self._batch(
            ctx,
            f"doc:{doc.id}",
            f"Here is a document:\n<document>\n{text}\n</document>\nWrite {k} distinct questions or requests a "
            f"user could ask that this document answers. Each must make sense without seeing the document."
            f"{self._guidance()}",
            k,
        )
        stats = {"document_instructions": 1.0, "documents": 1.0 if j == 0 else 0.0}
        return Instruction(
            text=items[j % len(items)], source="documents", document_id=doc.id, context=text, calls=calls, stats=stats
        )


class PersonaSource(_Base):
    kind = "personas"

    def __init__(self, spec: Any, job: Any) -> None:
        super().__init__(spec, job)
        given = int(spec.personas is not None) + int(spec.personas_file is not None) + int(spec.generate is not None)
        if given != 1:
            raise ConfigError("generator.instructions: give exactly one of personas, personas_file or generate")

    async def setup(self, ctx: GenContext) -> None:
        s = self.spec
        if s.personas is not None:
            self.personas = _distinct(s.personas)
        elif s.personas_file is not None:
            self.personas = _distinct(
                [
                    str(v)
                    for v in read_values(
                        resolve_uri(s.personas_file, self.job), "generator.instructions.personas_file", s.personas_field
                    )
                ]
            )
        else:
            self.personas, calls = await self._ask_list(
                ctx,
                f"personas:{s.persona_hint}:{s.generate}",
                f"Describe {s.generate} distinct personas, {s.persona_hint}, one sentence each: who they are, "
                f"what they know and how they write.{self._guidance()}",
                s.generate,
            )
            self.pending.extend(calls)
        self.topics = _distinct(s.topics)

    async def instruction(self, unit: Unit, ctx: GenContext) -> Instruction:
        k, p, t = self.spec.per_pair, len(self.personas), len(self.topics)
        group, j = divmod(unit.index, k)
        persona, topic, round_ = self.personas[group % p], self.topics[(group // p) % t], group // (p * t)
        items, calls = await self._batch(
            ctx,
            f"pair:{persona}:{topic}:{round_}",
            f"You are this person: {persona}\nWrite {k} distinct messages you would send to an AI assistant about "
            f"'{topic}', in your own voice.{self._guidance()}",
            k,
        )
        return self._charge(
            Instruction(text=items[j % len(items)], source="personas", topic=topic, persona=persona, calls=calls)
        )


def _check_source(obj: Any, origin: str) -> Any:
    if not isinstance(obj, type) or not callable(getattr(obj, "instruction", None)):
        raise ConfigError(f"{origin} is not an instruction source class (it needs check, setup and instruction)")
    return obj


INSTRUCTIONS = Registry(
    "synth.instructions", field="generator.instructions.kind", what="instruction source", check=_check_source
)


def build_instruction_source(spec: Any, job: Any) -> InstructionSource:
    """The source ``spec.kind`` names, built-ins and plugins alike (``cls(spec, job)``); a plugin's
    fields are validated by its ``Options`` when it declares one."""
    cls = INSTRUCTIONS.load(spec.kind)
    if isinstance(spec, PluginInstructions):
        spec = options_of(cls, dict(spec.model_extra or {}), "generator.instructions")
    return cls(spec, job)


__all__ = [
    "DocumentInstructions",
    "INSTRUCTIONS",
    "FileInstructions",
    "Instruction",
    "InstructionSource",
    "InstructionSpec",
    "ListInstructions",
    "PersonaInstructions",
    "PluginInstructions",
    "TopicInstructions",
    "build_instruction_source",
]

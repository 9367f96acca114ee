"""Multi-turn conversations: an instruction opens, a respondent answers, a correspondent follows up.

Per unit: the instruction source gives the opening user message; the prompt modifiers shape the
respondent's system prompt (persona, retrieved context); the number of turns is sampled between
``turns.min`` and ``turns.max`` (seeded); after each answer but the last, the correspondent (a
user simulator, its own route) writes the next user message, or ends the dialog early by
answering the end token (``[END]``) or, in ``structured`` mode, ``{"continue": false}``. With
tools declared, the respondent may call them and the whole trace (assistant ``tool_calls`` and
``tool`` messages) is kept. Any failure ends the unit as a dead letter: never a truncated dialog.

Payload: ``messages`` (OpenAI chat format), the instruction and where it came from, the personas,
the retrievals (hit ids and scores per turn), per-call usage, the turn count and who ended it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from synth.errors import MalformedOutput, SynthError
from synth.generators.base import GenContext, Unit, UnitResult
from synth.generators.instructions import Instruction, InstructionSpec, build_instruction_source
from synth.generators.modifiers import ModifierSpec, Shaped, build_modifier
from synth.generators.templates import sub_seed
from synth.generators.tools import ToolBox, ToolSpec
from synth.records import ChatMessage, Completion, Request


class ToolLoop(SynthError):
    kind = "tool_loop"


# ---------------------------------------------------------------- options


def _instruction_shorthand(v: Any) -> Any:
    if isinstance(v, list):
        return {"kind": "list", "items": v}
    if isinstance(v, str):
        return {"kind": "file", "uri": v}
    return v


class TurnsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int = Field(1, ge=1, le=50, description="fewest respondent answers")
    max: int = Field(3, ge=1, le=50, description="most respondent answers")

    @model_validator(mode="after")
    def _order(self) -> TurnsSpec:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class CorrespondentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="route of the user simulator (default: the generator's model)")
    system: str | None = Field(None, description="system prompt of the user simulator (default: a built-in one)")
    mode: Literal["sentinel", "structured"] = Field(
        "sentinel",
        description="sentinel: a reply containing end_token ends the dialog; "
        "structured: it answers {continue, message}",
    )
    end_token: str = Field("[END]", min_length=1, description="what the user simulator answers to end the dialog")
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature of the user simulator")


class ConversationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instructions: Annotated[InstructionSpec, BeforeValidator(_instruction_shorthand)] = Field(
        ...,
        description="what the user asks first: a list, a file, or a source with kind list, file, topics, "
        "documents or personas",
    )
    system: str = Field("You are a helpful assistant.", description="the respondent's base system prompt")
    modifiers: list[ModifierSpec] = Field(
        default_factory=list, description="persona and rag modifiers, applied in order"
    )
    turns: TurnsSpec = Field(default_factory=TurnsSpec, description="range of the number of answers per dialog")
    correspondent: CorrespondentSpec = Field(default_factory=CorrespondentSpec, description="the user simulator")
    tools: list[ToolSpec] = Field(default_factory=list, description="tools the respondent may call")
    max_tool_rounds: int = Field(4, ge=1, le=20, description="most tool-call rounds before one answer")
    document_context: bool = Field(
        True, description="documents source: give the respondent the document it is asked about"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="respondent sampling temperature")
    max_tokens: int | None = Field(None, gt=0, description="most output tokens per respondent call")


# ---------------------------------------------------------------- arrow schema

TOOL_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("name", pa.string()),
        ("tool_calls", pa.list_(TOOL_CALL)),
        ("tool_call_id", pa.string()),
    ]
)
HIT = pa.struct([("id", pa.string()), ("score", pa.float64()), ("doc_id", pa.string()), ("chunk", pa.int64())])
RETRIEVAL = pa.struct([("turn", pa.int32()), ("query", pa.string()), ("empty", pa.bool_()), ("hits", pa.list_(HIT))])
USAGE = pa.struct(
    [
        ("turn", pa.int32()),
        ("role", pa.string()),
        ("request_id", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
    ]
)
SCHEMA = pa.schema(
    [
        ("messages", pa.list_(MESSAGE)),
        ("instruction", pa.string()),
        ("instruction_source", pa.string()),
        ("topic", pa.string()),
        ("document_id", pa.string()),
        ("persona", pa.string()),
        ("user_persona", pa.string()),
        ("retrieval", pa.list_(RETRIEVAL)),
        ("usage", pa.list_(USAGE)),
        ("turns", pa.int32()),
        ("tool_calls", pa.int32()),
        ("ended_by", pa.string()),
    ]
)


def message_row(m: ChatMessage) -> dict[str, Any]:
    """A chat message in OpenAI format (tool calls nested as ``{id, type, function{name, arguments}}``)."""
    calls = (
        [{"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}} for t in m.tool_calls]
        if m.tool_calls
        else None
    )
    return {"role": m.role, "content": m.content, "name": m.name, "tool_calls": calls, "tool_call_id": m.tool_call_id}


_END_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["continue", "message"],
    "properties": {"continue": {"type": "boolean"}, "message": {"type": "string"}},
}


# ---------------------------------------------------------------- the generator


class ConversationGenerator:
    kind: ClassVar[str] = "conversation"
    Options: ClassVar[type[BaseModel]] = ConversationOptions

    def __init__(self, options: ConversationOptions, *, job: Any) -> None:
        self.options = o = options
        self.route = job.generator.model if job is not None else "default"
        self.source = build_instruction_source(o.instructions, job)
        if job is not None:
            self.source.check(job.count)
        self.modifiers = [build_modifier(m, job, f"generator.modifiers[{i}]") for i, m in enumerate(o.modifiers)]
        self.tools = ToolBox(o.tools, job)
        self.correspondent_route = o.correspondent.model or self.route

    def partition_by(self) -> list[str]:
        return []

    def arrow_schema(self) -> pa.Schema:
        return SCHEMA

    async def setup(self, ctx: GenContext) -> None:
        await self.source.setup(ctx)
        for m in self.modifiers:
            await m.setup(ctx)

    async def aclose(self) -> None:
        for m in self.modifiers:
            await m.aclose()

    async def generate(self, unit: Unit, ctx: GenContext) -> UnitResult:
        calls: list[Completion] = []
        usage: list[dict[str, Any]] = []
        try:
            return await self._dialog(unit, ctx, calls, usage)
        except SynthError as e:
            e.calls = calls  # type: ignore[attr-defined]  # what the failed dialog cost
            raise

    async def _dialog(
        self, unit: Unit, ctx: GenContext, calls: list[Completion], usage: list[dict[str, Any]]
    ) -> UnitResult:
        o = self.options
        ins = await self.source.instruction(unit, ctx)
        self._account(calls, usage, ins.calls, 0, "instruction")
        shaped = Shaped(system=o.system)
        if ins.context and o.document_context:
            shaped.system = f"{shaped.system.rstrip()}\n\nReference document:\n<document>\n{ins.context}\n</document>"
        for m in self.modifiers:
            await m.modify(shaped, ins.text, unit, ctx)
        self._account(calls, usage, shaped.calls, 0, "embedding", first=True)
        shaped.calls = []

        messages = [ChatMessage(role="system", content=shaped.system), ChatMessage(role="user", content=ins.text)]
        n_turns = unit.rng("turns").randint(o.turns.min, o.turns.max)
        ended_by, answers, tool_calls = "max_turns", 0, 0
        for turn in range(n_turns):
            if turn:
                for m in self.modifiers:
                    extra = await m.on_turn(shaped, messages[-1].content or "", turn, unit, ctx)
                    if extra:
                        messages.insert(len(messages) - 1, ChatMessage(role="system", content=extra))
                self._account(calls, usage, shaped.calls, turn, "embedding", first=True)
                shaped.calls = []
            tool_calls += await self._respond(messages, unit, turn, ctx, calls, usage)
            answers += 1
            if turn == n_turns - 1:
                break
            follow = await self._follow_up(messages, ins, unit, turn, ctx, calls, usage)
            if follow is None:
                ended_by = "correspondent"
                break
            messages.append(ChatMessage(role="user", content=follow))

        retrieval = [
            {"turn": t, "query": r.query, "empty": r.empty, "hits": [h.model_dump() for h in r.hits]}
            for t, r in shaped.retrievals
        ]
        row = {
            "messages": [message_row(m) for m in messages],
            "instruction": ins.text,
            "instruction_source": ins.source,
            "topic": ins.topic,
            "document_id": ins.document_id,
            "persona": shaped.persona,
            "user_persona": ins.persona,
            "retrieval": retrieval,
            "usage": usage,
            "turns": answers,
            "tool_calls": tool_calls,
            "ended_by": ended_by,
        }
        stats = {**ins.stats, "turns": float(answers), "ended_early": float(ended_by == "correspondent")}
        return UnitResult(rows=[row], calls=calls, stats=stats)

    @staticmethod
    def _account(
        calls: list[Completion],
        usage: list[dict[str, Any]],
        new: list[Completion],
        turn: int,
        role: str,
        first: bool = False,
    ) -> None:
        # embeddings go first: the engine's envelope reports the model of the last call
        if first:
            calls[:0] = new
        else:
            calls.extend(new)
        usage.extend(
            {
                "turn": turn,
                "role": role,
                "request_id": c.request_id,
                "prompt_tokens": c.usage.prompt_tokens,
                "completion_tokens": c.usage.completion_tokens,
                "cost_usd": c.cost_usd,
            }
            for c in new
        )

    async def _respond(
        self,
        messages: list[ChatMessage],
        unit: Unit,
        turn: int,
        ctx: GenContext,
        calls: list[Completion],
        usage: list[dict[str, Any]],
    ) -> int:
        """One respondent answer, after any tool rounds; returns the number of tool calls made."""
        o, made = self.options, 0
        for rnd in range(o.max_tool_rounds + 1):
            rid = f"{unit.id}:t{turn}:r{rnd}"
            req = Request(
                id=rid,
                model=self.route,
                messages=list(messages),
                seed=sub_seed(unit.seed, "respond", turn, rnd),
                tools=self.tools.declarations() or None,
                temperature=o.temperature,
                max_tokens=o.max_tokens,
            )
            c = await ctx.llm.complete(req)
            self._account(calls, usage, [c], turn, "respondent")
            if c.tool_calls:
                if not self.tools:
                    raise MalformedOutput("the respondent called a tool but none are declared")
                if rnd == o.max_tool_rounds:
                    break
                messages.append(ChatMessage(role="assistant", content=c.text or None, tool_calls=c.tool_calls))
                for k, tc in enumerate(c.tool_calls):
                    msg, used = await self.tools.call(tc, f"{rid}:tool{k}", sub_seed(unit.seed, turn, rnd, k), ctx)
                    self._account(calls, usage, used, turn, "tool")
                    messages.append(msg)
                    made += 1
                continue
            if not (c.text or "").strip():
                raise MalformedOutput(f"the respondent returned an empty answer at turn {turn}")
            messages.append(ChatMessage(role="assistant", content=c.text))
            return made
        raise ToolLoop(
            f"the respondent was still calling tools after {o.max_tool_rounds} rounds at turn {turn}; "
            f"raise generator.max_tool_rounds"
        )

    async def _follow_up(
        self,
        messages: list[ChatMessage],
        ins: Instruction,
        unit: Unit,
        turn: int,
        ctx: GenContext,
        calls: list[Completion],
        usage: list[dict[str, Any]],
    ) -> str | None:
        """The correspondent's next user message, or None when it ends the dialog."""
        spec = self.options.correspondent
        structured = spec.mode == "structured"
        c = await ctx.llm.complete(
            Request(
                id=f"{unit.id}:t{turn}:c",
                model=self.correspondent_route,
                seed=sub_seed(unit.seed, "correspond", turn),
                messages=self._correspondent_view(messages, ins),
                temperature=spec.temperature,
                json_schema=_END_SCHEMA if structured else None,
                schema_name="next_message",
            )
        )
        self._account(calls, usage, [c], turn, "correspondent")
        if structured:
            p = c.parsed if isinstance(c.parsed, dict) else None
            if p is None:
                raise MalformedOutput("the correspondent returned no {continue, message} object", raw=c.text)
            if not p.get("continue"):
                return None
            text = str(p.get("message") or "")
        else:
            text = c.text or ""
            if spec.end_token in text:
                return None
        if not text.strip():
            raise MalformedOutput(f"the correspondent returned an empty message at turn {turn}")
        return text.strip()

    def _correspondent_view(self, messages: list[ChatMessage], ins: Instruction) -> list[ChatMessage]:
        """The dialog from the user's side: roles swapped, system and tool messages left out."""
        spec = self.options.correspondent
        if spec.system:
            system = spec.system
        else:
            who = f"You are this person: {ins.persona}\n" if ins.persona else ""
            how = (
                f"When your needs are met or the conversation has run its course, answer only {spec.end_token}."
                if spec.mode == "sentinel"
                else "Answer with continue=false when your needs are met, else continue=true and your message."
            )
            system = (
                f"{who}You are a user talking with an AI assistant. You opened with: {ins.text!r}\n"
                f"Write only your next message to the assistant: a natural follow-up in your own voice. {how}"
            )
        view = [ChatMessage(role="system", content=system)]
        for m in messages:
            if m.role == "user":
                view.append(ChatMessage(role="assistant", content=m.content))
            elif m.role == "assistant" and m.content and not m.tool_calls:
                view.append(ChatMessage(role="user", content=m.content))
        return view


__all__ = [
    "ConversationGenerator",
    "ConversationOptions",
    "CorrespondentSpec",
    "SCHEMA",
    "ToolLoop",
    "TurnsSpec",
    "message_row",
]

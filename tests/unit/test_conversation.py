"""Conversations: turn loop, user simulator, early end, tool-calling traces, failures as dead letters."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.engine.plan import Shard, fingerprint
from synth.engine.shardrun import run_shard
from synth.errors import ConfigError, MalformedOutput, Transient
from synth.generators.base import GenContext, Unit
from synth.generators.conversation import SCHEMA, ConversationGenerator, ToolLoop
from synth.generators.instructions import Instruction
from synth.generators.registry import create_generator
from synth.generators.tools import ToolFailed
from synth.providers.dispatch import Dispatcher
from synth.records import ChatMessage, Completion, Request, ToolCall
from synth.spec import parse_job

PRICES = {"tea": 4.5, "coffee": 7.25}


def price_lookup(item: str) -> dict[str, Any]:
    """A user tool function (sync)."""
    return {"item": item, "price": PRICES.get(item, 1.0)}


async def stock_level(item: str, store: str = "main") -> str:
    """A user tool function (async)."""
    await asyncio.sleep(0)
    return f"{item}@{store}: 12"


def broken_tool(item: str) -> str:
    raise RuntimeError("inventory database is down")


ITEM = {"type": "object", "required": ["item"], "properties": {"item": {"type": "string", "enum": ["tea", "coffee"]}}}
WEATHER_RESULT = {
    "type": "object",
    "required": ["temp_c", "sky"],
    "additionalProperties": False,
    "properties": {"temp_c": {"type": "number"}, "sky": {"type": "string", "enum": ["clear", "rain"]}},
}
TOOLS = [
    {
        "name": "price_lookup",
        "description": "price of an item",
        "parameters": ITEM,
        "function": "tests.unit.test_conversation:price_lookup",
    },
    {
        "name": "stock_level",
        "description": "stock of an item",
        "parameters": ITEM,
        "function": "tests.unit.test_conversation:stock_level",
    },
    {
        "name": "weather",
        "description": "weather in a city",
        "result_schema": WEATHER_RESULT,
        "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
    },
]


def job_of(gen: dict[str, Any], count: int = 12, seed: int = 4) -> Any:
    base = {"kind": "conversation", "instructions": ["What does tea cost?", "Is coffee in stock?", "Weather in Oslo?"]}
    return parse_job({"name": "t-conv", "count": count, "seed": seed, "generator": {**base, **gen}})


async def run(job: Any, llm: Any = None) -> Any:
    gen = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=llm or Dispatcher.from_spec(job))
    await gen.setup(ctx)
    return await run_shard(gen, ctx, Shard(0, 0, job.count), fingerprint(job), concurrency=6)


def payload(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table.drop_columns(["created_at", "latency_ms"]), buf)
    return buf.getvalue()


# ---------------------------------------------------------------- with the offline model


async def test_dialogs_are_well_formed_typed_and_seeded() -> None:
    gen = {"turns": {"min": 2, "max": 4}, "modifiers": [{"kind": "persona", "personas": ["a pirate", "a nurse"]}]}
    a, b = await run(job_of(gen)), await run(job_of(gen))
    assert a.dead is None and a.records.num_rows == 12
    assert payload(a.records) == payload(b.records)
    assert a.records.schema.field("messages").type == SCHEMA.field("messages").type
    for row in a.records.to_pylist():
        msgs = row["messages"]
        assert msgs[0]["role"] == "system" and row["persona"] in msgs[0]["content"]
        assert msgs[1] == {
            "role": "user",
            "content": row["instruction"],
            "name": None,
            "tool_calls": None,
            "tool_call_id": None,
        }
        roles = [m["role"] for m in msgs[1:]]
        assert roles[-1] == "assistant" and all(r in ("user", "assistant") for r in roles)
        assert all(x != y for x, y in zip(roles, roles[1:]))  # strict alternation without tools
        assert 2 <= row["turns"] <= 4 and roles.count("assistant") == row["turns"] and row["ended_by"] == "max_turns"
        assert [u["role"] for u in row["usage"]].count("correspondent") == row["turns"] - 1
        assert all(u["prompt_tokens"] > 0 for u in row["usage"])
    assert len({r["turns"] for r in a.records.to_pylist()}) > 1  # the count is sampled


async def test_tool_calling_trace_is_complete_and_results_come_from_functions_or_a_simulator() -> None:
    out = await run(job_of({"tools": TOOLS, "turns": {"min": 1, "max": 2}}, count=24))
    assert out.dead is None
    rows = out.records.to_pylist()
    assert sum(r["tool_calls"] for r in rows) >= 5
    names = set()
    for row in rows:
        msgs, pending = row["messages"], {}
        for m in msgs:
            if m["role"] == "assistant" and m["tool_calls"]:
                for tc in m["tool_calls"]:
                    assert tc["type"] == "function"
                    pending[tc["id"]] = (tc["function"]["name"], json.loads(tc["function"]["arguments"]))
            elif m["role"] == "tool":
                name, args = pending.pop(m["tool_call_id"])  # answers a call made just before
                assert m["name"] == name
                names.add(name)
                if name == "price_lookup":
                    assert json.loads(m["content"]) == price_lookup(args["item"])
                elif name == "stock_level":
                    assert m["content"] == f"{args['item']}@main: 12"
                else:
                    jsonschema.validate(json.loads(m["content"]), WEATHER_RESULT)
        assert not pending and msgs[-1]["role"] == "assistant" and msgs[-1]["content"]
        assert row["tool_calls"] == sum(1 for m in msgs if m["role"] == "tool")
        assert [u["role"] for u in row["usage"]].count("tool") == sum(
            1 for m in msgs if m["role"] == "tool" and m["name"] == "weather"
        )
    assert names == {"price_lookup", "stock_level", "weather"}


# ---------------------------------------------------------------- with a scripted model


class ScriptLLM:
    """A test double of the LLM protocol: answers by who asks (respondent, correspondent, tool
    simulator), from functions of the request."""

    def __init__(
        self,
        respond: Callable[[Request], Completion] | None = None,
        correspond: Callable[[Request], Completion] | None = None,
    ) -> None:
        self.respond = respond or (lambda r: Completion(request_id=r.id, text=f"answer {r.id}"))
        self.correspond = correspond or (lambda r: Completion(request_id=r.id, text=f"follow-up {r.id}"))
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        if request.id.endswith(":c"):
            return self.correspond(request)
        if ":tool" in request.id:
            return Completion(request_id=request.id, text="sunny", parsed={"temp_c": 21, "sky": "clear"})
        return self.respond(request)

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError


async def one(gen: dict[str, Any], llm: ScriptLLM, index: int = 0) -> Any:
    job = job_of(gen)
    g = create_generator(job.generator, job)
    ctx = GenContext(job=job.name, seed=job.seed, llm=llm)
    await g.setup(ctx)
    return await g.generate(Unit(index, f"u{index}", 0, 99 + index), ctx)


async def test_correspondent_ends_early_with_the_end_token() -> None:
    def correspond(r: Request) -> Completion:
        done = r.id.endswith(":t1:c")
        return Completion(request_id=r.id, text="Thanks, that is all. [END]" if done else "Tell me more.")

    llm = ScriptLLM(correspond=correspond)
    res = await one({"turns": {"min": 4, "max": 4}}, llm)
    row = res.rows[0]
    assert (row["turns"], row["ended_by"], res.stats["ended_early"]) == (2, "correspondent", 1.0)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert row["messages"][3]["content"] == "Tell me more." and "[END]" not in json.dumps(row["messages"])
    view = next(r for r in llm.requests if r.id.endswith(":t0:c")).messages
    # the user simulator sees the dialog from the user's side
    assert [m.role for m in view] == ["system", "assistant", "user"]
    assert view[1].content == row["instruction"] and view[2].content == row["messages"][2]["content"]
    assert "[END]" in view[0].content and len(res.calls) == 4


async def test_structured_correspondent_continues_then_stops() -> None:
    answers = iter([{"continue": True, "message": "And then?"}, {"continue": False, "message": ""}])
    llm = ScriptLLM(correspond=lambda r: Completion(request_id=r.id, parsed=next(answers)))
    res = await one({"turns": {"min": 5, "max": 5}, "correspondent": {"mode": "structured", "model": "default"}}, llm)
    row = res.rows[0]
    assert (row["turns"], row["ended_by"]) == (2, "correspondent")
    asks = [r for r in llm.requests if r.id.endswith(":c")]
    assert asks[0].json_schema["required"] == ["continue", "message"]


async def test_a_failure_mid_dialog_is_a_dead_letter_not_a_truncated_record() -> None:
    def respond(r: Request) -> Completion:
        if ":t1:" in r.id and r.id.startswith("u"):
            raise Transient("sim: 503 after retries")
        return Completion(request_id=r.id, text="ok")

    with pytest.raises(Transient, match="503") as err:
        await one({"turns": {"min": 3, "max": 3}}, ScriptLLM(respond=respond))
    assert len(err.value.calls) == 2  # what the failed dialog had cost: one answer, one follow-up

    job = job_of({"turns": {"min": 3, "max": 3}}, count=4)
    g = create_generator(job.generator, job)
    fails = {1, 3}

    def respond_some(r: Request) -> Completion:
        index = int(r.id.split(":")[0].rsplit("-", 1)[1])
        if index in fails and ":t2:" in r.id:
            raise Transient("upstream kept failing")
        return Completion(request_id=r.id, text="fine")

    ctx = GenContext(job=job.name, seed=job.seed, llm=ScriptLLM(respond=respond_some))
    await g.setup(ctx)
    out = await run_shard(g, ctx, Shard(0, 0, 4), fingerprint(job))
    dead = out.dead.to_pylist()
    assert [d["error_kind"] for d in dead] == ["transient", "transient"]
    assert all("upstream kept failing" in d["message"] for d in dead)
    assert out.records.num_rows == 2 and all(r["turns"] == 3 for r in out.records.to_pylist())


def tool_call(name: str, args: str) -> Callable[[Request], Completion]:
    def respond(r: Request) -> Completion:
        if r.messages[-1].role == "user":
            return Completion(request_id=r.id, tool_calls=[ToolCall(id="call_1", name=name, arguments=args)])
        return Completion(request_id=r.id, text="done")

    return respond


@pytest.mark.parametrize(
    "name, args, error, match",
    [
        ("teleport", "{}", MalformedOutput, "unknown tool 'teleport'"),
        ("price_lookup", "{item: tea", MalformedOutput, "not JSON"),
        ("price_lookup", '{"item": "wine"}', MalformedOutput, r"bad arguments: item: 'wine' is not one of"),
        ("price_lookup", "{}", MalformedOutput, "'item' is a required property"),
    ],
)
async def test_bad_tool_calls_raise(name: str, args: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        await one({"tools": TOOLS, "turns": {"min": 1, "max": 1}}, ScriptLLM(respond=tool_call(name, args)))


async def test_tool_function_errors_fail_or_are_reported() -> None:
    broken = {"name": "stock", "parameters": ITEM, "function": "tests.unit.test_conversation:broken_tool"}
    llm = ScriptLLM(respond=tool_call("stock", '{"item": "tea"}'))
    with pytest.raises(ToolFailed, match="inventory database is down") as err:
        await one({"tools": [broken], "turns": {"min": 1, "max": 1}}, llm)
    assert err.value.kind == "tool_error"
    res = await one({"tools": [{**broken, "on_error": "report"}], "turns": {"min": 1, "max": 1}}, llm)
    tool_msg = res.rows[0]["messages"][3]
    assert tool_msg["role"] == "tool" and "inventory database is down" in json.loads(tool_msg["content"])["error"]
    assert res.rows[0]["messages"][-1]["content"] == "done"


async def test_endless_tool_calls_stop_at_max_tool_rounds() -> None:
    always = ScriptLLM(
        respond=lambda r: Completion(
            request_id=r.id,
            tool_calls=[ToolCall(id=f"c{len(r.messages)}", name="weather", arguments='{"city": "Oslo"}')],
        )
    )
    with pytest.raises(ToolLoop, match="after 2 rounds"):
        await one({"tools": TOOLS, "max_tool_rounds": 2}, always)
    assert sum(1 for r in always.requests if ":tool" in r.id) == 2


async def test_personas_from_the_instruction_source_play_the_user() -> None:
    job = job_of({"instructions": {"kind": "personas", "personas": ["a beekeeper"], "topics": ["honey"]}})
    g = create_generator(job.generator, job)
    assert isinstance(g, ConversationGenerator)
    view = g._correspondent_view(
        [
            ChatMessage(role="system", content="sys"),
            ChatMessage(role="user", content="q"),
            ChatMessage(role="assistant", tool_calls=[ToolCall(id="1", name="x", arguments="{}")]),
            ChatMessage(role="tool", content="r", tool_call_id="1"),
            ChatMessage(role="assistant", content="a"),
        ],
        Instruction(text="q", source="personas", persona="a beekeeper"),
    )
    assert [(m.role, m.content) for m in view[1:]] == [("assistant", "q"), ("user", "a")]
    assert view[0].content.startswith("You are this person: a beekeeper")


@pytest.mark.parametrize(
    "gen, pattern",
    [
        (
            {"turns": {"min": 3, "max": 2}},
            r"^generator.turns: Value error, max \(2\) is below min \(3\)|^generator.turns: max",
        ),
        ({"modifiers": [{"kind": "mood"}]}, r"^generator.modifiers\[0\]: Input tag 'mood'"),
        ({"tools": [TOOLS[0], TOOLS[0]]}, r"^generator.tools: tool names must be unique"),
        (
            {"tools": [{"name": "x", "parameters": {"type": "objekt"}}]},
            r"^generator.tools\[0\].parameters: invalid JSON Schema",
        ),
        (
            {"tools": [{"name": "x", "function": "no_such_module:fn"}]},
            r"^generator.tools\[0\].function: cannot import module",
        ),
        ({"instructions": []}, r"^generator.instructions.list.items: List should have at least 1 item"),
        ({"modifiers": [{"kind": "persona"}]}, r"^generator.modifiers\[0\]: give exactly one of personas or file"),
        (
            {"correspondent": {"mode": "chat"}},
            r"^generator.correspondent.mode: Input should be 'sentinel' or 'structured'",
        ),
    ],
)
def test_bad_options_give_one_line_config_errors(gen: dict[str, Any], pattern: str) -> None:
    job = job_of(gen)
    with pytest.raises(ConfigError, match=pattern) as err:
        create_generator(job.generator, job)
    assert len(str(err.value).splitlines()) == 1

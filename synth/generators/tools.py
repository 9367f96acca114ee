"""Tools the respondent may call in a dialog.

A tool is declared with a name, a description and JSON Schema parameters. Its result comes from
a Python function (``function: pkg.module:func``, sync or async, called with the arguments as
keywords) or, without one, from a model simulating the tool (structured output against
``result_schema`` when given). Arguments are checked against the parameters schema; a call the
model gets wrong (unknown tool, invalid JSON, wrong arguments) ends the dialog as a dead letter,
so no record holds a broken trace.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from synth.errors import ConfigError, MalformedOutput, SynthError
from synth.generators.base import GenContext
from synth.generators.templates import sub_seed
from synth.records import ChatMessage, Completion, Request, ToolCall


class ToolFailed(SynthError):
    """A tool's Python function raised."""

    kind = "tool_error"


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$", description="tool name the model calls")
    description: str = Field("", description="what the tool does, shown to the model")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}, description="JSON Schema of the arguments"
    )
    function: str | None = Field(
        None, description="'pkg.module:func' computing the result (sync or async); unset: a model simulates the tool"
    )
    result_schema: dict[str, Any] | None = Field(None, description="JSON Schema of a simulated result")
    model: str | None = Field(None, description="route simulating the tool (default: the generator's model)")
    on_error: Literal["fail", "report"] = Field(
        "fail", description="when the function raises: fail the dialog (dead letter) or report the error to the model"
    )


class ToolBox:
    """The declared tools of a generator: declarations for requests, and execution of calls."""

    def __init__(self, specs: list[ToolSpec], job: Any, where: str = "generator.tools") -> None:
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        from synth.generators.structured import import_object

        self.specs = {s.name: s for s in specs}
        if len(self.specs) != len(specs):
            raise ConfigError(f"{where}: tool names must be unique")
        self.route = job.generator.model if job is not None else "default"
        self.functions: dict[str, Any] = {}
        self.validators: dict[str, Any] = {}
        for i, s in enumerate(specs):
            for label, schema in (("parameters", s.parameters), ("result_schema", s.result_schema)):
                if schema is None:
                    continue
                try:
                    validator_for(schema).check_schema(schema)
                except SchemaError as e:
                    raise ConfigError(f"{where}[{i}].{label}: invalid JSON Schema: {e.message}") from None
            self.validators[s.name] = validator_for(s.parameters)(s.parameters)
            if s.function:
                fn = import_object(s.function, f"{where}[{i}].function")
                if not callable(fn):
                    raise ConfigError(f"{where}[{i}].function: {s.function!r} is not callable")
                self.functions[s.name] = fn

    def __bool__(self) -> bool:
        return bool(self.specs)

    def declarations(self) -> list[dict[str, Any]]:
        """OpenAI-format tool declarations for ``Request.tools``."""
        return [
            {"type": "function", "function": {"name": s.name, "description": s.description, "parameters": s.parameters}}
            for s in self.specs.values()
        ]

    async def call(
        self, tc: ToolCall, request_id: str, seed: int, ctx: GenContext
    ) -> tuple[ChatMessage, list[Completion]]:
        """Run one tool call; the tool message for the trace and any model calls it took."""
        spec = self.specs.get(tc.name)
        if spec is None:
            raise MalformedOutput(f"the respondent called unknown tool {tc.name!r}; declared: {sorted(self.specs)}")
        try:
            args = json.loads(tc.arguments or "{}")
        except json.JSONDecodeError:
            raise MalformedOutput(
                f"tool {tc.name!r} was called with arguments that are not JSON", raw=tc.arguments
            ) from None
        error = next(iter(self.validators[tc.name].iter_errors(args)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.path) or "arguments"
            raise MalformedOutput(
                f"tool {tc.name!r} was called with bad arguments: {where}: {error.message}", raw=tc.arguments
            )
        calls: list[Completion] = []
        if tc.name in self.functions:
            content = await self._run_function(spec, args)
        else:
            content, c = await self._simulate(spec, args, request_id, seed, ctx)
            calls.append(c)
        return ChatMessage(role="tool", content=content, tool_call_id=tc.id, name=tc.name), calls

    async def _run_function(self, spec: ToolSpec, args: dict[str, Any]) -> str:
        try:
            result = self.functions[spec.name](**args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as e:  # noqa: BLE001 - user code: any exception is the tool's failure
            if spec.on_error == "report":
                return json.dumps({"error": f"{type(e).__name__}: {e}"})
            raise ToolFailed(f"tool {spec.name!r} raised {type(e).__name__}: {e}") from e
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)

    async def _simulate(
        self, spec: ToolSpec, args: dict[str, Any], request_id: str, seed: int, ctx: GenContext
    ) -> tuple[str, Completion]:
        system = (
            f"You simulate the tool '{spec.name}'. {spec.description}\n"
            "Given its arguments, return exactly what the tool would return: realistic, specific and "
            "consistent with the arguments. Return only the result."
        )
        req = Request(
            id=request_id,
            model=spec.model or self.route,
            seed=sub_seed(seed, "tool", spec.name),
            messages=[
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=json.dumps(args, ensure_ascii=False, sort_keys=True)),
            ],
            json_schema=spec.result_schema,
            schema_name=f"{spec.name}_result"[:64],
        )
        c = await ctx.llm.complete(req)
        if spec.result_schema is not None:
            if c.parsed is None:
                raise MalformedOutput(f"the simulator of tool {spec.name!r} returned no structured result", raw=c.text)
            return json.dumps(c.parsed, ensure_ascii=False, sort_keys=True), c
        if not (c.text or "").strip():
            raise MalformedOutput(f"the simulator of tool {spec.name!r} returned an empty result")
        return c.text or "", c


__all__ = ["ToolBox", "ToolFailed", "ToolSpec"]

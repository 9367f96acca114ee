"""The offline ``sim`` provider: in-process, no network, no keys, deterministic.

It answers like a model would, from :mod:`synth.fakegen`: schema-valid JSON when a schema is
asked for, sometimes a tool call when tools are offered after a user turn, plain text otherwise,
with token counts and ``finish_reason="length"`` when ``max_tokens`` cuts the answer.

The same request gives the same answer. The content is seeded exactly as the LLM API simulator
seeds it (model, wire messages, schema, tools, seed, temperature), so a seeded request gets the
same answer from ``sim:<model>`` as from the simulator serving ``<model>``. Without a seed the
request id takes the seed's place, so identical prompts still give varied records, as sampling
would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from synth import fakegen
from synth.errors import BadRequest, MalformedOutput
from synth.providers.base import ApiKey
from synth.providers.clients.wire import message_json
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, ToolCall, Usage

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class SimProvider:
    """``sim:<anything>``; ``params`` may set ``embedding_dim`` (default 64)."""

    kind = "sim"

    def __init__(self, model: str = "default", *, params: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self._name = f"sim:{model}"
        self.embedding_dim = int((params or {}).get("embedding_dim", 64))

    def __repr__(self) -> str:
        return f"SimProvider({self._name!r})"

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        msgs = [message_json(m) for m in request.messages]
        seed: Any = request.seed if request.seed is not None else f"id:{request.id}"
        rng = fakegen.rng_for(
            fakegen.material(
                self.model, msgs, request.json_schema, False, request.tools or None, seed, request.temperature, 0
            )
        )
        alias = key.alias if key else None
        text: str | None = None
        parsed: Any = None
        tool_calls: list[ToolCall] | None = None
        finish = "stop"
        try:
            if request.tools and msgs[-1]["role"] == "user" and rng.random() < 0.5:
                name, args = fakegen.fake_tool_call(request.tools, rng)
                call_id = (
                    "call_" + fakegen.rng_for(fakegen.material(name, args, 0)).getrandbits(96).to_bytes(12, "big").hex()
                )
                tool_calls = [ToolCall(id=call_id, name=name, arguments=args)]
                out_tokens = fakegen.estimate_tokens(name) + fakegen.estimate_tokens(args)
                finish = "tool_calls"
            elif request.json_schema is not None:
                parsed = fakegen.fake_instance(request.json_schema, rng)
                text = _DUMPS(parsed)
                out_tokens = fakegen.estimate_tokens(text)
            else:
                text = fakegen.fake_text(rng)
                out_tokens = fakegen.estimate_tokens(text)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise BadRequest(
                f"{self._name}: cannot answer this schema or tool declaration ({exc}); check the JSON Schema",
                key_alias=alias,
            ) from exc

        limit = request.max_tokens
        if limit is not None and out_tokens > limit and tool_calls is None:
            text = (text or "")[: limit * 4]
            out_tokens = limit
            finish = "length"
            if parsed is not None:  # a cut JSON answer is broken, as it would be for real
                raise MalformedOutput(
                    f"{self._name}: the answer was cut at max_tokens={limit} and is not valid JSON; raise max_tokens",
                    raw=text,
                    key_alias=alias,
                )
        prompt = fakegen.prompt_tokens(msgs)
        return Completion(
            request_id=request.id,
            text=text,
            parsed=parsed,
            tool_calls=tool_calls,
            usage=Usage(prompt_tokens=prompt, completion_tokens=out_tokens, total_tokens=prompt + out_tokens),
            finish_reason=finish,
            model=self.model,
            provider="sim",
            key_alias=alias,
        )

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        vectors = [fakegen.fake_embedding(t, self.embedding_dim) for t in request.texts]
        tokens = sum(fakegen.estimate_tokens(t) for t in request.texts)
        return Embeddings(
            vectors=vectors,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
            model=self.model,
            provider="sim",
            key_alias=key.alias if key else None,
        )

    async def aclose(self) -> None:
        return None


__all__ = ["SimProvider"]

"""The OpenAI wire: ``/v1/chat/completions`` (plain, structured, tools, streaming), ``/v1/embeddings``
and ``/v1/models``, with OpenAI's error bodies and rate-limit headers."""

from __future__ import annotations

import base64
import itertools
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from synth.fakegen import estimate_tokens, fake_embedding, prompt_tokens
from synth.simulator.content import Answer, Ask, answer, split_words
from synth.simulator.http import BadInput, Settle, dumps, json_response
from synth.simulator.limits import Rejection, seconds_text

if TYPE_CHECKING:
    from synth.simulator.server import Simulator

MODELS = ("sim-default", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small")
FINGERPRINT = "fp_synthsim"
_ids = itertools.count(1)
_PREFIX = os.urandom(4).hex()
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

_AUTH = {
    "missing": "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    "invalid": "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    "revoked": "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
}
_SERVER = {
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
    504: "The server timed out while processing your request.",
}


def _new_id(prefix: str) -> str:
    return f"{prefix}-{_PREFIX}{next(_ids):x}"


class OpenAIWire:
    def key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def auth_error(self, problem: str) -> web.Response:
        code = None if problem == "missing" else "invalid_api_key"
        return json_response(
            {"error": {"message": _AUTH[problem], "type": "invalid_request_error", "param": None, "code": code}},
            status=401,
        )

    def error(self, status: int, message: str) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return json_response(
            {"error": {"message": message or _SERVER.get(status, "error"), "type": kind, "param": None, "code": None}},
            status=status,
        )

    def rate_limited(self, rej: Rejection, headers: dict[str, str], model: str) -> web.Response:
        wait = seconds_text(rej.retry_after)
        if rej.kind == "concurrency":
            msg = f"Too many concurrent requests for {model or 'this model'}: limit {int(rej.limit)}. Please try again."
        else:
            unit = "requests per min (RPM)" if rej.kind == "requests" else "tokens per min (TPM)"
            msg = (
                f"Rate limit reached for {model or 'this model'} in organization org-sim on {unit}: "
                f"Limit {int(rej.limit)}, Requested {int(rej.requested)}. Please try again in {wait}s."
            )
        h = dict(headers)
        h["retry-after"] = wait
        h["retry-after-ms"] = str(max(1, round(rej.retry_after * 1000)))
        kind = "tokens" if rej.kind == "tokens" else "requests"
        return json_response(
            {"error": {"message": msg, "type": kind, "param": None, "code": "rate_limit_exceeded"}},
            status=429,
            headers=h,
        )


WIRE = OpenAIWire()


class ChatJob:
    __slots__ = ("ask", "model", "n", "stream", "include_usage", "prompt_tokens", "reserved", "structured")

    def __init__(self, ask: Ask, n: int, stream: bool, include_usage: bool, prompt: int, reserved: int) -> None:
        self.ask, self.model, self.n, self.stream = ask, ask.model, n, stream
        self.include_usage, self.prompt_tokens, self.reserved = include_usage, prompt, reserved
        self.structured = ask.structured


class Chat:
    def parse(self, body: Any, request: web.Request, sim: Simulator) -> ChatJob:
        if not isinstance(body, dict):
            raise BadInput("expected a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadInput("'messages' must be a non-empty list")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise BadInput("'max_tokens' must be a positive integer")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 128:
            raise BadInput("'n' must be an integer from 1 to 128")
        schema, json_mode = None, False
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        elif fmt.get("type") == "json_object":
            json_mode = True
        choice = body.get("tool_choice")
        force: str | bool = False
        if choice == "required":
            force = True
        elif isinstance(choice, dict):
            force = (choice.get("function") or {}).get("name") or True
        ask = Ask(
            model=str(body.get("model", "")),
            messages=messages,
            schema=schema,
            json_mode=json_mode,
            tools=body.get("tools") or None,
            force_tool=force,
            allow_tools=choice != "none",
            seed=body.get("seed"),
            temperature=body.get("temperature"),
            max_tokens=max_tokens,
        )
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        reserved = (max_tokens or sim.config.default_max_tokens) * n
        return ChatJob(ask, n, stream, include_usage, prompt_tokens(messages), reserved)

    async def answer(
        self, request: web.Request, job: ChatJob, fault: str | None, sim: Simulator, settle: Settle
    ) -> web.StreamResponse:
        answers = [answer(job.ask, i, fault) for i in range(job.n)]
        completion = sum(a.completion_tokens for a in answers)
        longest = max(a.completion_tokens for a in answers)
        if job.stream:
            return await self._stream(request, job, answers, completion, sim, settle)
        await sim.sleep(sim.jitter(sim.ttft + sim.tpot * longest))
        headers = settle(completion)
        return json_response(
            {
                "id": _new_id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": job.model,
                "choices": [
                    {"index": i, "message": _message(a), "logprobs": None, "finish_reason": a.finish}
                    for i, a in enumerate(answers)
                ],
                "usage": {
                    "prompt_tokens": job.prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": job.prompt_tokens + completion,
                },
                "system_fingerprint": FINGERPRINT,
            },
            headers=headers,
        )

    async def _stream(
        self, request: web.Request, job: ChatJob, answers: list[Answer], completion: int, sim: Simulator, settle: Settle
    ) -> web.StreamResponse:
        await sim.sleep(sim.jitter(sim.ttft))
        headers = settle(completion)
        resp = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
        await resp.prepare(request)
        base = {
            "id": _new_id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": job.model,
            "system_fingerprint": FINGERPRINT,
        }
        usage_null = {"usage": None} if job.include_usage else {}

        def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
            c = {
                **base,
                "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **usage_null,
            }
            return b"data: " + dumps(c) + b"\n\n"

        buf: list[bytes] = []
        for i, a in enumerate(answers):
            buf.append(chunk(i, {"role": "assistant", "content": "" if a.text is not None else None, "refusal": None}))
            if a.tool_calls:
                for k, (cid, name, args) in enumerate(a.tool_calls):
                    buf.append(
                        chunk(
                            i,
                            {
                                "tool_calls": [
                                    {
                                        "index": k,
                                        "id": cid,
                                        "type": "function",
                                        "function": {"name": name, "arguments": ""},
                                    }
                                ]
                            },
                        )
                    )
                    for piece in _pieces(args, 24):
                        buf.append(chunk(i, {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}))
                        buf = await _flush(resp, buf, sim, estimate_tokens(piece))
            else:
                for piece in split_words(a.text or ""):
                    buf.append(chunk(i, {"content": piece}))
                    buf = await _flush(resp, buf, sim, estimate_tokens(piece))
            buf.append(chunk(i, {}, a.finish))
        if job.include_usage:
            buf.append(
                b"data: "
                + dumps(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": job.prompt_tokens,
                            "completion_tokens": completion,
                            "total_tokens": job.prompt_tokens + completion,
                        },
                    }
                )
                + b"\n\n"
            )
        buf.append(b"data: [DONE]\n\n")
        await resp.write(b"".join(buf))
        await resp.write_eof()
        return resp


async def _flush(resp: web.StreamResponse, buf: list[bytes], sim: Simulator, tokens: int) -> list[bytes]:
    """Send what is buffered and wait the time of ``tokens``; with no per-token latency, keep
    buffering so a fast stream is one write."""
    if sim.tpot <= 0:
        return buf
    await resp.write(b"".join(buf))
    await sim.sleep(sim.jitter(sim.tpot * tokens))
    return []


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _message(a: Answer) -> dict[str, Any]:
    m: dict[str, Any] = {"role": "assistant", "content": a.text, "refusal": None}
    if a.tool_calls:
        m["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in a.tool_calls
        ]
    return m


class EmbedJob:
    __slots__ = ("model", "texts", "dim", "b64", "prompt_tokens", "reserved", "structured")

    def __init__(self, model: str, texts: list[str], dim: int, b64: bool) -> None:
        self.model, self.texts, self.dim, self.b64 = model, texts, dim, b64
        self.prompt_tokens = sum(estimate_tokens(t) for t in texts)
        self.reserved = 0
        self.structured = False


class Embed:
    def parse(self, body: Any, request: web.Request, sim: Simulator) -> EmbedJob:
        if not isinstance(body, dict) or "input" not in body:
            raise BadInput("'input' is required")
        raw = body["input"]
        items = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in items]  # token arrays
        if not texts:
            raise BadInput("'input' must not be empty")
        dim = body.get("dimensions") or sim.config.embedding_dim
        if not isinstance(dim, int) or dim < 1:
            raise BadInput("'dimensions' must be a positive integer")
        return EmbedJob(str(body.get("model", "")), texts, dim, body.get("encoding_format") == "base64")

    async def answer(
        self, request: web.Request, job: EmbedJob, fault: str | None, sim: Simulator, settle: Settle
    ) -> web.StreamResponse:
        await sim.sleep(sim.jitter(sim.ttft))
        data = []
        for i, t in enumerate(job.texts):
            vec = fake_embedding(t, job.dim)
            emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if job.b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        headers = settle(0)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": job.model,
                "usage": {"prompt_tokens": job.prompt_tokens, "total_tokens": job.prompt_tokens},
            },
            headers=headers,
        )


def add_routes(app: web.Application, sim: Simulator) -> None:
    chat, embed = Chat(), Embed()
    models = {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "synth-sim"} for m in MODELS],
    }

    async def chat_route(request: web.Request) -> web.StreamResponse:
        return await sim.handle(request, WIRE, chat)

    async def embed_route(request: web.Request) -> web.StreamResponse:
        return await sim.handle(request, WIRE, embed)

    async def models_route(request: web.Request) -> web.Response:
        problem = sim.key_problem(WIRE.key(request))
        if problem is not None:
            return WIRE.auth_error(problem)
        name = request.match_info.get("name")
        if name:
            return json_response({"id": name, "object": "model", "created": 1700000000, "owned_by": "synth-sim"})
        return json_response(models)

    app.router.add_post("/v1/chat/completions", chat_route)
    app.router.add_post("/v1/embeddings", embed_route)
    app.router.add_get("/v1/models", models_route)
    app.router.add_get("/v1/models/{name}", models_route)

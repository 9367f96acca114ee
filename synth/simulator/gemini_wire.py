"""The Gemini wire (``generativelanguage`` v1beta as google-genai speaks it): ``:generateContent``,
``:streamGenerateContent?alt=sse``, ``:embedContent``, ``:batchEmbedContents`` and the model list,
with Google's JSON error format.

Key errors follow the real API: a missing key is 403 PERMISSION_DENIED, an unknown key 400
INVALID_ARGUMENT (reason API_KEY_INVALID), a revoked key 403 PERMISSION_DENIED. A 429 is
RESOURCE_EXHAUSTED with a ``RetryInfo`` detail; Gemini sends no ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

from synth.fakegen import estimate_tokens, fake_embedding, prompt_tokens
from synth.simulator.content import Answer, Ask, answer, split_words
from synth.simulator.http import BadInput, Op, Settle, dumps, json_response
from synth.simulator.limits import Rejection, seconds_text

if TYPE_CHECKING:
    from synth.simulator.server import Simulator

MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "text-embedding-004", "gemini-embedding-001")
_ids = itertools.count(1)
_PREFIX = os.urandom(4).hex()
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_SERVER = {
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def _error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if details:
        err["details"] = details
    return {"error": err}


class GeminiWire:
    def key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key")

    def auth_error(self, problem: str) -> web.Response:
        if problem == "invalid":
            return json_response(
                _error_body(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                        }
                    ],
                ),
                status=400,
            )
        if problem == "revoked":
            return json_response(
                _error_body(403, "Your API key was reported as leaked or revoked. Please use another API key."),
                status=403,
            )
        return json_response(
            _error_body(
                403,
                "Method doesn't allow unregistered callers (callers without "
                "established identity). Please use API Key or other form of "
                "API consumer identity to call this API.",
            ),
            status=403,
        )

    def error(self, status: int, message: str) -> web.Response:
        return json_response(_error_body(status, message or _SERVER.get(status, "error")), status=status)

    def rate_limited(self, rej: Rejection, headers: dict[str, str], model: str) -> web.Response:
        metric = {"requests": "requests", "tokens": "input_token_count", "concurrency": "concurrent_requests"}[rej.kind]
        body = _error_body(
            429,
            f"You exceeded your current quota ({metric}), please check your plan and "
            f"billing details. Please retry in {seconds_text(rej.retry_after)}s.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": f"generativelanguage.googleapis.com/generate_content_{metric}",
                            "quotaValue": str(int(rej.limit)),
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{seconds_text(rej.retry_after)}s",
                },
            ],
        )
        return json_response(body, status=429)


WIRE = GeminiWire()

_INT_KEYS = frozenset(("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"))
_DROP = frozenset(("propertyOrdering", "nullable", "example", "title", "description", "default"))


def to_json_schema(s: Any) -> Any:
    """Gemini's OpenAPI-style ``Schema`` (uppercase types, ``nullable``, int64 as strings) as JSON Schema."""
    if isinstance(s, list):
        return [to_json_schema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out: dict[str, Any] = {}
    for k, v in s.items():
        if k in _DROP:
            continue
        if k == "type":
            t = [x.lower() for x in v] if isinstance(v, list) else str(v).lower()
            if t != "type_unspecified":
                out["type"] = t
        elif k in ("properties", "$defs", "definitions"):
            out[k] = {name: to_json_schema(sub) for name, sub in v.items()}
        elif k in ("items", "not") or (k == "additionalProperties" and isinstance(v, dict)):
            out[k] = to_json_schema(v)
        elif k in ("anyOf", "oneOf", "allOf", "prefixItems"):
            out[k] = [to_json_schema(x) for x in v]
        elif k in _INT_KEYS:
            out[k] = int(v)
        elif k in ("minimum", "maximum") and isinstance(v, str):
            out[k] = float(v)
        elif k == "format" and v == "enum":
            continue
        else:
            out[k] = v
    if s.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _text_of(parts: list[dict[str, Any]]) -> str:
    out = []
    for p in parts or ():
        if "text" in p:
            out.append(str(p["text"]))
        elif "functionCall" in p or "functionResponse" in p:
            out.append(json.dumps(p.get("functionCall") or p.get("functionResponse"), sort_keys=True))
    return "".join(out)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        msgs.append({"role": "system", "content": _text_of(system.get("parts", []))})
    for c in body.get("contents") or ():
        parts = c.get("parts") or []
        role = "assistant" if c.get("role") == "model" else "user"
        if role == "user" and parts and all("functionResponse" in p for p in parts):
            role = "tool"
        msgs.append({"role": role, "content": _text_of(parts)})
    return msgs


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    out = []
    for tool in body.get("tools") or ():
        for fn in tool.get("functionDeclarations") or ():
            # the API takes both spellings, and google-genai sends this field in snake case
            params = (
                fn.get("parametersJsonSchema")
                or fn.get("parameters_json_schema")
                or to_json_schema(fn.get("parameters"))
                or {"type": "object"}
            )
            out.append({"name": fn["name"], "parameters": params})
    return out or None


class GenJob:
    __slots__ = ("ask", "model", "n", "prompt_tokens", "reserved", "structured")

    def __init__(self, ask: Ask, n: int, prompt: int, reserved: int) -> None:
        self.ask, self.model, self.n = ask, ask.model, n
        self.prompt_tokens, self.reserved, self.structured = prompt, reserved, ask.structured


class Generate:
    def __init__(self, stream: bool) -> None:
        self.stream = stream

    def parse(self, body: Any, request: web.Request, sim: Simulator) -> GenJob:
        if not isinstance(body, dict) or not body.get("contents"):
            raise BadInput("* GenerateContentRequest.contents: contents is not specified")
        cfg = body.get("generationConfig") or {}
        messages = _messages(body)
        schema: dict[str, Any] | None = None
        if cfg.get("responseJsonSchema") is not None:
            schema = cfg["responseJsonSchema"]
        elif cfg.get("responseSchema") is not None:
            schema = to_json_schema(cfg["responseSchema"])
        json_mode = schema is None and cfg.get("responseMimeType") == "application/json"
        mode = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        allowed = mode.get("allowedFunctionNames") or []
        force: str | bool = (allowed[0] if len(allowed) == 1 else True) if mode.get("mode") == "ANY" else False
        max_tokens = cfg.get("maxOutputTokens")
        if max_tokens is not None:
            max_tokens = int(max_tokens)
        n = int(cfg.get("candidateCount") or 1)
        ask = Ask(
            model=_model(request),
            messages=messages,
            schema=schema,
            json_mode=json_mode,
            tools=_tools(body),
            force_tool=force,
            allow_tools=mode.get("mode") != "NONE",
            seed=cfg.get("seed"),
            temperature=cfg.get("temperature"),
            max_tokens=max_tokens,
        )
        reserved = (max_tokens or sim.config.default_max_tokens) * n
        return GenJob(ask, n, prompt_tokens(messages), reserved)

    async def answer(
        self, request: web.Request, job: GenJob, fault: str | None, sim: Simulator, settle: Settle
    ) -> web.StreamResponse:
        answers = [answer(job.ask, i, fault) for i in range(job.n)]
        completion = sum(a.completion_tokens for a in answers)
        rid = f"{_PREFIX}{next(_ids):x}"
        usage = {
            "promptTokenCount": job.prompt_tokens,
            "candidatesTokenCount": completion,
            "totalTokenCount": job.prompt_tokens + completion,
        }
        if not self.stream:
            await sim.sleep(sim.jitter(sim.ttft + sim.tpot * max(a.completion_tokens for a in answers)))
            settle(completion)
            return json_response(
                {
                    "candidates": [_candidate(a, i, _parts(a)) for i, a in enumerate(answers)],
                    "usageMetadata": usage,
                    "modelVersion": job.model,
                    "responseId": rid,
                }
            )
        await sim.sleep(sim.jitter(sim.ttft))
        settle(completion)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"modelVersion": job.model, "responseId": rid}
        buf: list[bytes] = []
        for i, a in enumerate(answers):
            pieces: list[list[dict[str, Any]]] = (
                [_parts(a)] if a.tool_calls else [[{"text": p}] for p in split_words(a.text or "")]
            )
            for k, parts in enumerate(pieces):
                last = i == len(answers) - 1 and k == len(pieces) - 1
                cand = _candidate(a, i, parts, finish=(k == len(pieces) - 1))
                chunk = {
                    "candidates": [cand],
                    **head,
                    "usageMetadata": usage if last else {"promptTokenCount": job.prompt_tokens},
                }
                buf.append(b"data: " + dumps(chunk) + b"\r\n\r\n")
                if sim.tpot > 0:
                    await resp.write(b"".join(buf))
                    buf = []
                    await sim.sleep(sim.jitter(sim.tpot * estimate_tokens(json.dumps(parts))))
        if buf:
            await resp.write(b"".join(buf))
        await resp.write_eof()
        return resp


def _model(request: web.Request) -> str:
    return request.match_info["target"].partition(":")[0]


def _parts(a: Answer) -> list[dict[str, Any]]:
    if a.tool_calls:
        return [{"functionCall": {"name": name, "args": json.loads(args)}} for _, name, args in a.tool_calls]
    return [{"text": a.text or ""}]


def _candidate(a: Answer, index: int, parts: list[dict[str, Any]], finish: bool = True) -> dict[str, Any]:
    c: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish:
        c["finishReason"] = _FINISH[a.finish]
    return c


class EmbedJob:
    __slots__ = ("model", "items", "prompt_tokens", "reserved", "structured", "batch")

    def __init__(self, model: str, items: list[tuple[str, int]], batch: bool) -> None:
        self.model, self.items, self.batch = model, items, batch
        self.prompt_tokens = sum(estimate_tokens(t) for t, _ in items)
        self.reserved = 0
        self.structured = False


class Embed:
    def __init__(self, batch: bool) -> None:
        self.batch = batch

    def parse(self, body: Any, request: web.Request, sim: Simulator) -> EmbedJob:
        if not isinstance(body, dict):
            raise BadInput("expected a JSON object")
        reqs = body.get("requests") if self.batch else [body]
        if not reqs:
            raise BadInput("* BatchEmbedContentsRequest.requests: requests is not specified")
        items = []
        for r in reqs:
            content = r.get("content")
            if not content:
                raise BadInput("* EmbedContentRequest.content: content is not specified")
            dim = int(r.get("outputDimensionality") or sim.config.embedding_dim)
            items.append((_text_of(content.get("parts", [])), dim))
        return EmbedJob(_model(request), items, self.batch)

    async def answer(
        self, request: web.Request, job: EmbedJob, fault: str | None, sim: Simulator, settle: Settle
    ) -> web.StreamResponse:
        await sim.sleep(sim.jitter(sim.ttft))
        vectors = [{"values": fake_embedding(t, d)} for t, d in job.items]
        settle(0)
        return json_response({"embeddings": vectors} if job.batch else {"embedding": vectors[0]})


def add_routes(app: web.Application, sim: Simulator) -> None:
    ops: dict[str, Op] = {
        "generateContent": Generate(False),
        "streamGenerateContent": Generate(True),
        "embedContent": Embed(False),
        "batchEmbedContents": Embed(True),
    }
    listing = {
        "models": [
            {
                "name": f"models/{m}",
                "displayName": m,
                "supportedGenerationMethods": (
                    ["embedContent", "batchEmbedContents"]
                    if "embed" in m
                    else ["generateContent", "streamGenerateContent"]
                ),
            }
            for m in MODELS
        ]
    }

    async def model_route(request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        op = ops.get(method)
        if op is None:
            return WIRE.error(404, f"Method {method!r} is not found for models/{model}.")
        return await sim.handle(request, WIRE, op)

    async def list_route(request: web.Request) -> web.Response:
        problem = sim.key_problem(WIRE.key(request))
        if problem is not None:
            return WIRE.auth_error(problem)
        return json_response(listing)

    for version in ("v1beta", "v1", "v1alpha"):
        app.router.add_post(f"/{version}/models/{{target}}", model_route)
        app.router.add_get(f"/{version}/models", list_route)

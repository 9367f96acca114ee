"""Gemini through the official ``google-genai`` SDK (``client.aio.models``).

OpenAI-format chats are mapped to Gemini's: system messages become the system instruction,
``assistant`` turns become ``model`` turns, tool calls and tool results become function-call and
function-response parts, and OpenAI tool declarations become function declarations. One client
per key, with the SDK's retries off (including its silent retry of failed connections): the
dispatcher retries and must see every 429.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from synth.errors import AuthError, BadRequest, ConfigError, ProviderError, Transient
from synth.providers.base import ApiKey
from synth.providers.clients.headers import (
    connection_error,
    error_detail,
    is_refused,
    parse_duration,
    parse_ratelimit,
    scrub,
    status_error,
    timeout_error,
)
from synth.providers.clients.wire import decode_output
from synth.records import ChatMessage, Completion, EmbeddingRequest, Embeddings, Request, ToolCall, Usage

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
_NO_KEY = "no-key"  # the SDK insists on a key; a keyless test server ignores it
_VERSION = re.compile(r"^(.*?)/(v\d+(?:alpha|beta)?\d*)/?$")
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
}
# request params with a different name in GenerateContentConfig
_PARAM_NAMES = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "stop": "stop_sequences",
    "n": "candidate_count",
}


def _split_base_url(base_url: str | None) -> tuple[str | None, str | None]:
    """``http://host/v1beta`` -> (``http://host``, ``v1beta``): the SDK adds the version itself.
    Without one, ``v1beta``: JSON-schema outputs and tools need it."""
    if not base_url:
        return None, None
    m = _VERSION.match(base_url.rstrip("/"))
    return (m.group(1), m.group(2)) if m else (base_url.rstrip("/"), "v1beta")


def _args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def contents(messages: list[ChatMessage]) -> tuple[str | None, list[types.Content]]:
    """OpenAI-format messages -> (system instruction, Gemini contents)."""
    system: list[str] = []
    out: list[types.Content] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the tool results
    for m in messages:
        if m.role == "system":
            if m.content:
                system.append(m.content)
            continue
        parts: list[types.Part] = []
        if m.role == "tool":
            role = "user"
            name = names.get(m.tool_call_id or "", m.name or "tool")
            parts.append(
                types.Part(
                    function_response=types.FunctionResponse(
                        id=m.tool_call_id, name=name, response={"result": m.content or ""}
                    )
                )
            )
        else:
            role = "model" if m.role == "assistant" else "user"
            if m.content:
                parts.append(types.Part(text=m.content))
            for t in m.tool_calls or ():
                names[t.id] = t.name
                call = types.FunctionCall(id=t.id, name=t.name, args=_args(t.arguments))
                parts.append(types.Part(function_call=call))
        if not parts:
            parts.append(types.Part(text=""))
        if out and out[-1].role == role:  # Gemini wants alternating turns; merge neighbours
            out[-1].parts = [*(out[-1].parts or ()), *parts]
        else:
            out.append(types.Content(role=role, parts=parts))
    return ("\n\n".join(system) or None), out


def function_declarations(tools: list[dict[str, Any]]) -> list[types.Tool]:
    """OpenAI ``{"type": "function", "function": {...}}`` tools -> one Gemini tool."""
    decls = []
    for t in tools:
        fn = t.get("function") or t
        if t.get("type", "function") != "function" or "name" not in fn:
            raise BadRequest(f"gemini takes function tools only; got {str(t)[:80]}")
        decls.append(
            types.FunctionDeclaration(
                name=fn["name"], description=fn.get("description"), parameters_json_schema=fn.get("parameters") or None
            )
        )
    return [types.Tool(function_declarations=decls)]


def _headers_of(exc: genai_errors.APIError) -> Mapping[str, Any] | None:
    resp: Any = getattr(exc, "response", None)
    resp = getattr(resp, "_response", resp)
    return getattr(resp, "headers", None)


def _retry_delay(details: Any) -> float | None:
    """Gemini's 429 carries ``google.rpc.RetryInfo`` ``retryDelay`` ("17s") in the error details."""
    err = details.get("error", details) if isinstance(details, dict) else None
    for d in (err or {}).get("details") or ():
        if isinstance(d, dict) and "retryDelay" in d:
            return parse_duration(str(d["retryDelay"]))
    return None


class GeminiProvider:
    """Gemini chat and embeddings with ``google-genai``."""

    kind = "gemini"

    def __init__(self, model: str, *, base_url: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.base_url, self._api_version = _split_base_url(base_url)
        self._where = f"gemini:{model}"
        self._defaults: dict[str, Any] = {}
        for k, v in (params or {}).items():
            self._defaults[_PARAM_NAMES.get(k, k)] = v
        try:  # bad params fail at load, not on the first call
            types.GenerateContentConfig(**self._defaults)
        except Exception as exc:  # pydantic ValidationError
            raise ConfigError(
                f"{self._where}: params {sorted(self._defaults)} are not valid Gemini options: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        self._clients: dict[str | None, tuple[str, int, genai.Client]] = {}
        self._http: dict[int, types.HttpOptions] = {}

    def __repr__(self) -> str:
        return f"GeminiProvider({self._where!r}, base_url={self.base_url or DEFAULT_BASE_URL!r})"

    def _client(self, key: ApiKey | None, timeout: float) -> tuple[genai.Client, types.HttpOptions | None]:
        """The key's client, and per-call HTTP options only when the timeout differs from the
        client's own (per-call options cost the SDK a deep copy on every request)."""
        alias, secret = (key.alias, key.secret) if key else (None, _NO_KEY)
        ms = max(1, int(timeout * 1000))
        hit = self._clients.get(alias)
        if hit is None or hit[0] != secret:
            opts = types.HttpOptions(
                # explicit, so the SDK's own environment switches (GOOGLE_GEMINI_BASE_URL,
                # GOOGLE_GENAI_USE_VERTEXAI) never send calls somewhere the job did not say
                base_url=self.base_url or DEFAULT_BASE_URL,
                api_version=self._api_version,
                timeout=ms,
                retry_options=types.HttpRetryOptions(attempts=1),  # also stops its hidden connect retry
            )
            hit = (secret, ms, genai.Client(api_key=secret, http_options=opts, vertexai=False))
            self._clients[alias] = hit
        if hit[1] == ms:
            return hit[2], None
        h = self._http.get(ms)
        if h is None:
            h = self._http[ms] = types.HttpOptions(timeout=ms)
        return hit[2], h

    def _config(
        self, request: Request, system: str | None, http: types.HttpOptions | None
    ) -> types.GenerateContentConfig:
        cfg: dict[str, Any] = dict(self._defaults)
        if http is not None:
            cfg["http_options"] = http
        if system:
            cfg["system_instruction"] = system
        if request.temperature is not None:
            cfg["temperature"] = request.temperature
        if request.top_p is not None:
            cfg["top_p"] = request.top_p
        if request.max_tokens is not None:
            cfg["max_output_tokens"] = request.max_tokens
        if request.seed is not None:
            cfg["seed"] = request.seed
        if request.n != 1:
            cfg["candidate_count"] = request.n
        if request.json_schema is not None:
            cfg["response_mime_type"] = "application/json"
            cfg["response_json_schema"] = request.json_schema
        if request.tools:
            cfg["tools"] = function_declarations(request.tools)
            cfg["automatic_function_calling"] = {"disable": True}
        return types.GenerateContentConfig(**cfg)

    def _error(self, exc: BaseException, key: ApiKey | None, timeout: float) -> ProviderError:
        """Translate an SDK or transport error, once."""
        alias = key.alias if key else None
        if isinstance(exc, genai_errors.APIError):
            detail = error_detail(exc.details if exc.details is not None else exc.message)
            if exc.code == 400 and ("API_KEY_INVALID" in str(exc.details) or "API key not valid" in detail):
                return AuthError(
                    f"{self._where} key {alias!r} was rejected (HTTP 400): {detail}; check the key or replace it",
                    status=400,
                    key_alias=alias,
                )
            return status_error(
                int(exc.code or 0) or 500,
                detail,
                where=self._where,
                key_alias=alias,
                headers=_headers_of(exc),
                secret=key.secret if key else None,
                retry_after=_retry_delay(exc.details),
            )
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return timeout_error(self._where, alias, timeout)
        if isinstance(exc, (aiohttp.ClientError, OSError)):
            return connection_error(
                self._where,
                self.base_url or DEFAULT_BASE_URL,
                alias,
                f"{exc.__class__.__name__}: {exc}",
                refused=is_refused(exc),
            )
        if isinstance(exc, genai_errors.UnknownApiResponseError):
            return Transient(f"{self._where}: the server sent a body that is not JSON", key_alias=alias)
        # the SDK refusing to build the request (an option this API does not take): retrying cannot help
        return BadRequest(
            f"{self._where}: the request was refused by the client library: {scrub(str(exc))[:200]}", key_alias=alias
        )

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        system, history = contents(request.messages)
        client, http = self._client(key, timeout)
        config = self._config(request, system, http)
        t0 = time.perf_counter()
        try:
            resp = await client.aio.models.generate_content(model=self.model, contents=history, config=config)
        except (
            genai_errors.APIError,
            genai_errors.UnknownApiResponseError,
            aiohttp.ClientError,
            asyncio.TimeoutError,
            TimeoutError,
            OSError,
            ValueError,
        ) as exc:
            raise self._error(exc, key, timeout) from exc
        return self._completion(resp, request, key, (time.perf_counter() - t0) * 1000.0)

    def _completion(
        self, resp: types.GenerateContentResponse, request: Request, key: ApiKey | None, latency_ms: float
    ) -> Completion:
        alias = key.alias if key else None
        cand = resp.candidates[0] if resp.candidates else None
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in cand.content.parts if cand and cand.content and cand.content.parts else ():
            if part.text is not None and not part.thought:
                texts.append(part.text)
            elif part.function_call is not None:
                fc = part.function_call
                calls.append(
                    ToolCall(
                        id=fc.id or f"call_{len(calls)}",
                        name=fc.name or "",
                        arguments=json.dumps(fc.args or {}, separators=(",", ":")),
                    )
                )
        text = "".join(texts) if texts else None
        reason = cand.finish_reason if cand else None
        finish = (
            None
            if reason is None
            else _FINISH.get(getattr(reason, "value", str(reason)), str(getattr(reason, "value", reason)).lower())
        )
        if calls and finish == "stop":
            finish = "tool_calls"  # as OpenAI reports it
        if cand is None and resp.prompt_feedback is not None:
            finish = "content_filter"
        parsed = None
        if request.json_schema is not None and not calls:
            parsed = decode_output(text, request, where=self._where, key_alias=alias, finish_reason=finish)
        return Completion(
            request_id=request.id,
            text=text,
            parsed=parsed,
            tool_calls=calls or None,
            usage=_usage(resp.usage_metadata),
            finish_reason=finish,
            model=resp.model_version or self.model,
            provider="gemini",
            key_alias=alias,
            latency_ms=latency_ms,
            ratelimit=parse_ratelimit(resp.sdk_http_response.headers if resp.sdk_http_response else None),
        )

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        alias = key.alias if key else None
        client, http = self._client(key, timeout)
        config = types.EmbedContentConfig(http_options=http) if http is not None else None
        try:
            resp = await client.aio.models.embed_content(  # one content per text, not one with many parts
                model=self.model,
                contents=[types.Content(parts=[types.Part(text=t)]) for t in request.texts],
                config=config,
            )
            vectors = [list(e.values or ()) for e in resp.embeddings or ()]
        except (
            genai_errors.APIError,
            genai_errors.UnknownApiResponseError,
            aiohttp.ClientError,
            asyncio.TimeoutError,
            TimeoutError,
            OSError,
            ValueError,
        ) as exc:
            raise self._error(exc, key, timeout) from exc
        if len(vectors) != len(request.texts):
            raise Transient(
                f"{self._where}: asked for {len(request.texts)} embeddings, got {len(vectors)}", key_alias=alias
            )
        u = getattr(resp, "usage_metadata", None)
        tokens = getattr(u, "prompt_token_count", None) or getattr(u, "total_token_count", None)
        if not tokens:  # the Gemini API does not report embedding tokens: estimate, ~4 chars a token
            tokens = sum(max(1, len(t) // 4) for t in request.texts)
        return Embeddings(
            vectors=vectors,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
            model=self.model,
            provider="gemini",
            key_alias=alias,
        )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for _, _, client in clients.values():
            try:
                await client.aio.aclose()
            except RuntimeError:  # its session belonged to a loop that is gone
                pass


def _usage(u: Any) -> Usage:
    if u is None:
        return Usage()
    p = u.prompt_token_count or 0
    c = (u.candidates_token_count or 0) + (u.thoughts_token_count or 0)  # thinking is billed as output
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=u.total_token_count or p + c)


__all__ = ["GeminiProvider", "contents", "function_declarations"]

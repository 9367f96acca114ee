"""OpenAI, OpenRouter and any OpenAI-compatible server through the official ``openai`` SDK.

The SDK is the reference implementation of the wire format; :class:`~synth.providers.clients.wire.WireProvider`
does the same job with a tenth of the CPU and is the default (``client: auto``). Choose this one
with ``client: sdk``. One ``AsyncOpenAI`` client per key, with the SDK's own retries off: the
dispatcher retries and must see every 429.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx2
import openai
from openai.resources.chat.completions import AsyncCompletions

from synth.errors import ProviderError, Transient
from synth.providers.base import ApiKey
from synth.providers.clients.headers import (
    connection_error,
    error_detail,
    is_refused,
    parse_ratelimit,
    status_error,
    timeout_error,
)
from synth.providers.clients.wire import OPENAI_KINDS, chat_body, decode_output, embed_body, not_json, openai_base_url
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, ToolCall, Usage

# create() keyword arguments; anything else from the provider's params goes in extra_body
_CREATE_ARGS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"}
_NO_KEY = "no-key"  # the SDK insists on a key; keyless local servers ignore it
_MAX_CONNECTIONS = 10_000  # per key; the dispatcher bounds what is in flight


class OpenAIProvider:
    """Chat completions and embeddings with the official SDK."""

    def __init__(
        self, kind: str, model: str, *, base_url: str | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        if kind not in OPENAI_KINDS:
            raise ValueError(f"OpenAIProvider serves {OPENAI_KINDS}, not {kind!r}")
        self.kind = kind
        self.model = model
        self.base_url = openai_base_url(kind, model, base_url)
        self.params = dict(params or {})
        self._where = f"{kind}:{model}"
        self._clients: dict[str | None, tuple[str, openai.AsyncOpenAI]] = {}

    def __repr__(self) -> str:
        return f"OpenAIProvider({self._where!r}, base_url={self.base_url!r})"

    def _client(self, key: ApiKey | None) -> openai.AsyncOpenAI:
        alias, secret = (key.alias, key.secret) if key else (None, _NO_KEY)
        hit = self._clients.get(alias)
        if hit is None or hit[0] != secret:
            # the SDK's aiohttp transport: its default httpx pool costs 3x the CPU at 1,000 requests in flight
            http = openai.DefaultAioHttpClient(limits=httpx2.Limits(max_connections=_MAX_CONNECTIONS))
            hit = (secret, openai.AsyncOpenAI(api_key=secret, base_url=self.base_url, max_retries=0, http_client=http))
            self._clients[alias] = hit
        return hit[1]

    def _error(self, exc: Exception, key: ApiKey | None, timeout: float) -> ProviderError:
        """Translate an SDK error, once."""
        alias = key.alias if key else None
        if isinstance(exc, openai.APITimeoutError) and not is_refused(exc):  # its aiohttp transport
            return timeout_error(self._where, alias, timeout)  # reports a refused connect as a timeout
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            reason = f"{cause.__class__.__name__}: {cause}" if cause else str(exc)
            return connection_error(self._where, self.base_url, alias, reason, refused=is_refused(exc))
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if exc.body is not None else exc.response.text
            return status_error(
                exc.status_code,
                error_detail(body),
                where=self._where,
                key_alias=alias,
                headers=exc.response.headers,
                secret=key.secret if key else None,
            )
        return Transient(f"{self._where}: unexpected client error {exc.__class__.__name__}", key_alias=alias)

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        body = chat_body(self.kind, self.model, request, self.params)
        extra = {k: body.pop(k) for k in list(body) if k not in _CREATE_ARGS}
        if extra:
            body["extra_body"] = extra
        t0 = time.perf_counter()
        try:
            raw = await self._client(key).chat.completions.with_raw_response.create(**body, timeout=timeout)
        except openai.OpenAIError as exc:
            raise self._error(exc, key, timeout) from exc
        answer = self._parse(raw, key)
        latency = (time.perf_counter() - t0) * 1000.0
        return self._completion(answer, request, key, latency, raw.headers)

    def _parse(self, raw: Any, key: ApiKey | None) -> Any:
        """The SDK's model of a 2xx body; it hands back plain text when the body is not JSON."""
        try:
            answer = raw.parse()
        except ValueError as exc:
            raise not_json(self._where, raw.status_code, key.alias if key else None) from exc
        if isinstance(answer, (str, bytes)):
            try:
                json.loads(answer)
            except ValueError as exc:
                raise not_json(self._where, raw.status_code, key.alias if key else None) from exc
        return answer

    def _completion(
        self, answer: Any, request: Request, key: ApiKey | None, latency_ms: float, headers: Mapping[str, str]
    ) -> Completion:
        alias = key.alias if key else None
        try:
            choice = answer.choices[0]
            msg = choice.message
        except (AttributeError, IndexError, TypeError) as exc:
            raise Transient(
                f"{self._where}: the answer has no choices; the server sent an unexpected body", key_alias=alias
            ) from exc
        tool_calls = [
            ToolCall(id=c.id or f"call_{i}", name=c.function.name, arguments=c.function.arguments or "{}")
            for i, c in enumerate(msg.tool_calls or ())
        ] or None
        parsed = None
        if request.json_schema is not None and not tool_calls:
            parsed = decode_output(
                msg.content,
                request,
                where=self._where,
                key_alias=alias,
                finish_reason=choice.finish_reason,
                refusal=getattr(msg, "refusal", None),
            )
        u = answer.usage
        usage = (
            Usage(
                prompt_tokens=u.prompt_tokens or 0,
                completion_tokens=u.completion_tokens or 0,
                total_tokens=u.total_tokens or (u.prompt_tokens or 0) + (u.completion_tokens or 0),
            )
            if u is not None
            else Usage()
        )
        return Completion(
            request_id=request.id,
            text=msg.content,
            parsed=parsed,
            tool_calls=tool_calls,
            usage=usage,
            finish_reason=choice.finish_reason,
            model=answer.model or self.model,
            provider=self.kind,
            key_alias=alias,
            latency_ms=latency_ms,
            ratelimit=parse_ratelimit(headers),
        )

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        body = embed_body(self.model, request)
        alias = key.alias if key else None
        try:
            raw = await self._client(key).embeddings.with_raw_response.create(**body, timeout=timeout)
        except openai.OpenAIError as exc:
            raise self._error(exc, key, timeout) from exc
        answer = self._parse(raw, key)
        try:
            rows = sorted(answer.data, key=lambda r: r.index)
            vectors = [list(r.embedding) for r in rows]
        except (AttributeError, TypeError) as exc:
            raise Transient(
                f"{self._where}: the embeddings answer has no data; the server sent an unexpected body", key_alias=alias
            ) from exc
        u = answer.usage
        usage = Usage(prompt_tokens=u.prompt_tokens or 0, total_tokens=u.total_tokens or 0) if u else Usage()
        return Embeddings(
            vectors=vectors, usage=usage, model=answer.model or self.model, provider=self.kind, key_alias=alias
        )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await client.close()


__all__ = ["OpenAIProvider"]

"""The OpenAI chat-completions wire format, and a lean HTTP client for it.

:class:`WireProvider` speaks to OpenAI, OpenRouter and any OpenAI-compatible server (vLLM,
Ollama, llama.cpp) over one pooled pyreqwest client. It builds the request JSON by hand and
reads the answer as plain dicts: the official SDK spends 3 to 5 ms of CPU per call on models and
retries we do not need, this spends a tenth of that. It behaves like :class:`OpenAIProvider`
(same request body, same errors); ``tests/integration/test_wire_equivalence.py`` holds them to it.

The request building and answer decoding below are shared with the SDK provider.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import PyreqwestError, RequestTimeoutError
from pyreqwest.http import Url

from synth.errors import AuthError, ConfigError, MalformedOutput, Transient
from synth.providers.base import ApiKey
from synth.providers.clients.headers import (
    connection_error,
    error_detail,
    parse_ratelimit,
    status_error,
    timeout_error,
)
from synth.records import ChatMessage, Completion, EmbeddingRequest, Embeddings, Request, ToolCall, Usage, trusted

OPENAI_KINDS = ("openai", "openrouter", "compat")
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "openrouter": "https://openrouter.ai/api/v1"}
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


def openai_base_url(kind: str, model: str, base_url: str | None) -> str:
    """The API root for an OpenAI-style kind; ``compat`` has no default."""
    if base_url:
        return base_url.rstrip("/")
    if kind in DEFAULT_BASE_URLS:
        return DEFAULT_BASE_URLS[kind]
    raise ConfigError(
        f"{kind}:{model} needs a base_url: set the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1"
    )


# ---------------------------------------------------------------- request


_STRICT: dict[int, tuple[Any, bool]] = {}  # by identity: the requests of a batch share their schema


def strict_ok(schema: Any) -> bool:
    """Whether OpenAI's strict structured-output mode accepts the schema unchanged: the root is
    an object and every object lists all its properties as required and forbids extra ones."""
    hit = _STRICT.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    ok = isinstance(schema, dict) and schema.get("type") == "object" and _strict_node(schema)
    if len(_STRICT) >= 1024:
        _STRICT.clear()
    _STRICT[id(schema)] = (schema, ok)
    return ok


def _strict_node(node: Any) -> bool:
    if isinstance(node, list):
        return all(_strict_node(n) for n in node)
    if not isinstance(node, dict):
        return True
    props = node.get("properties")
    if node.get("type") == "object" or props is not None:
        if node.get("additionalProperties") is not False:
            return False
        if set(node.get("required") or ()) != set(props or ()):
            return False
    for k in ("properties", "$defs", "definitions"):
        sub = node.get(k)
        if isinstance(sub, dict) and not all(_strict_node(v) for v in sub.values()):
            return False
    for k in ("items", "anyOf", "oneOf", "allOf", "prefixItems"):
        if k in node and not _strict_node(node[k]):
            return False
    return True


def response_format(request: Request) -> dict[str, Any]:
    name = _NAME_OK.sub("_", request.schema_name)[:64] or "output"
    schema = request.json_schema
    spec: dict[str, Any] = {"name": name, "schema": schema}
    if strict_ok(schema):
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


def message_json(m: ChatMessage) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        d["name"] = m.name
    if m.tool_calls:
        d["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in m.tool_calls
        ]
    if m.tool_call_id is not None:
        d["tool_call_id"] = m.tool_call_id
    return d


def chat_body(kind: str, model: str, request: Request, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``/chat/completions`` JSON body. Request fields win over the provider's ``params``."""
    body: dict[str, Any] = {"model": model, "messages": [message_json(m) for m in request.messages]}
    if defaults:
        for k, v in defaults.items():
            if k not in body:
                body[k] = v
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body.pop("max_tokens", None)
        body.pop("max_completion_tokens", None)
        # OpenAI's reasoning models refuse max_tokens; every current OpenAI model takes this name
        body["max_completion_tokens" if kind == "openai" else "max_tokens"] = request.max_tokens
    if request.seed is not None:
        body["seed"] = request.seed
    if request.n != 1:
        body["n"] = request.n
    if request.tools:
        body["tools"] = request.tools
    if request.json_schema is not None:
        body["response_format"] = response_format(request)
    return body


def embed_body(model: str, request: EmbeddingRequest) -> dict[str, Any]:
    return {"model": model, "input": request.texts, "encoding_format": "float"}


# ---------------------------------------------------------------- answer


def json_value(text: str) -> Any:
    """JSON text a model wrote, decoded. orjson takes a fifth of the time; what it refuses and the
    standard library accepts (NaN, Infinity) is still read."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode_output(
    text: str | None,
    request: Request,
    *,
    where: str,
    key_alias: str | None,
    finish_reason: str | None,
    refusal: str | None = None,
) -> Any:
    """The decoded JSON of a structured answer, or MalformedOutput carrying the raw text."""
    if request.json_schema is None:
        return None
    if text is None:
        why = f"the model refused: {refusal}" if refusal else "the answer has no content"
        raise MalformedOutput(f"{where}: {why}", raw=refusal, key_alias=key_alias)
    body = text.strip()
    if body.startswith("```"):  # models without a schema mode often fence their JSON
        body = body.strip("`").removeprefix("json").strip()
    try:
        return json_value(body)
    except ValueError as exc:
        hint = "; it was cut at max_tokens: raise max_tokens" if finish_reason == "length" else ""
        raise MalformedOutput(
            f"{where}: the answer is not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]}){hint}",
            raw=text,
            key_alias=key_alias,
        ) from exc


def usage_json(u: Mapping[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    p = u.get("prompt_tokens") or 0
    c = u.get("completion_tokens") or 0
    t = u.get("total_tokens") or p + c
    if type(p) is int and type(c) is int and type(t) is int:  # the usual answer: no validation to pay
        return trusted(Usage, {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t})
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=t)


def completion_json(
    data: Any,
    request: Request,
    *,
    kind: str,
    model: str,
    key_alias: str | None,
    latency_ms: float,
    headers: Mapping[str, Any] | None,
) -> Completion:
    """A chat-completion response body (plain dicts) -> Completion."""
    where = f"{kind}:{model}"
    try:
        choice = data["choices"][0]
        msg = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise Transient(
            f"{where}: the answer has no choices; the server sent an unexpected body", key_alias=key_alias
        ) from exc
    text = msg.get("content")
    finish = choice.get("finish_reason")
    calls = msg.get("tool_calls")
    tool_calls = (
        [
            ToolCall(
                id=c.get("id") or f"call_{i}",
                name=c["function"]["name"],
                arguments=c["function"].get("arguments") or "{}",
            )
            for i, c in enumerate(calls)
        ]
        if calls
        else None
    )
    parsed = None
    if request.json_schema is not None and not tool_calls:
        parsed = decode_output(
            text, request, where=where, key_alias=key_alias, finish_reason=finish, refusal=msg.get("refusal")
        )
    fields = {
        "request_id": request.id,
        "text": text,
        "parsed": parsed,
        "tool_calls": tool_calls,
        "usage": usage_json(data.get("usage")),
        "finish_reason": finish,
        "model": data.get("model") or model,
        "provider": kind,
        "key_alias": key_alias,
        "latency_ms": latency_ms,
        "attempts": 1,
        "cost_usd": 0.0,
        "cached": False,
        "ratelimit": parse_ratelimit(headers),
    }
    if (text is None or type(text) is str) and (finish is None or type(finish) is str) and type(fields["model"]) is str:
        return trusted(Completion, fields)  # every other field is built above with its type
    return Completion(**fields)


def embeddings_json(data: Any, *, kind: str, model: str, key_alias: str | None) -> Embeddings:
    try:
        rows = sorted(data["data"], key=lambda r: r.get("index", 0))
        vectors = [r["embedding"] for r in rows]
    except (KeyError, TypeError) as exc:
        raise Transient(
            f"{kind}:{model}: the embeddings answer has no data; the server sent an unexpected body",
            key_alias=key_alias,
        ) from exc
    return Embeddings(
        vectors=vectors,
        usage=usage_json(data.get("usage")),
        model=data.get("model") or model,
        provider=kind,
        key_alias=key_alias,
    )


def not_json(where: str, status: int, key_alias: str | None) -> Transient:
    return Transient(
        f"{where}: the server sent a body that is not JSON (HTTP {status})", status=status, key_alias=key_alias
    )


# ---------------------------------------------------------------- client


class WireProvider:
    """OpenAI-compatible chat completions and embeddings over one pooled HTTP client.

    The client is pyreqwest (Rust's reqwest and hyper): connection handling, HTTP parsing and the
    timeout run outside the interpreter, so a request costs about 0.15 ms of Python CPU where
    aiohttp costs 0.24 ms (``benchmarks/providers.py``); a gateway's event loop stays free.
    """

    enforces_timeout = True  # the request's timeout is a total deadline: connect, send and read

    def __init__(
        self,
        kind: str,
        model: str,
        *,
        base_url: str | None = None,
        params: Mapping[str, Any] | None = None,
        max_connections: int = 0,
    ) -> None:
        if kind not in OPENAI_KINDS:
            raise ConfigError(f"the wire client speaks the OpenAI API only; {kind!r} is not one of {OPENAI_KINDS}")
        self.kind = kind
        self.model = model
        self.base_url = openai_base_url(kind, model, base_url)
        self.params = dict(params or {})
        self._where = f"{kind}:{model}"
        try:  # parsed once, not per call
            self._chat_url = Url(f"{self.base_url}/chat/completions")
            self._embed_url = Url(f"{self.base_url}/embeddings")
        except ValueError:
            raise ConfigError(
                f"{self._where}: base_url {self.base_url!r} is not a URL; give e.g. http://127.0.0.1:8000/v1"
            ) from None
        self._max_connections = max_connections  # 0: no cap; the gateway bounds concurrency per key
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[float, timedelta] = {}

    def __repr__(self) -> str:
        return f"WireProvider({self._where!r}, base_url={self.base_url!r})"

    def _get_client(self) -> Client:
        c = self._client
        loop = asyncio.get_running_loop()
        if c is None or self._loop is not loop:  # awaitables belong to the loop that made the client
            b = ClientBuilder().error_for_status(False).default_headers({"Content-Type": "application/json"})
            b = b.gzip(False).brotli(False).zstd(False).deflate(False).follow_redirects(False)
            if self._max_connections:
                b = b.max_connections(self._max_connections)
            c = self._client = b.build()
            self._loop = loop
        return c

    def _timeout(self, seconds: float) -> timedelta:
        t = self._timeouts.get(seconds)
        if t is None:
            t = self._timeouts[seconds] = timedelta(seconds=seconds)
        return t

    async def _post(
        self, url: Url, body: dict[str, Any], key: ApiKey | None, timeout: float
    ) -> tuple[Any, Mapping[str, str]]:
        alias = key.alias if key else None
        req = self._get_client().post(url).timeout(self._timeout(timeout))
        if key is not None:  # sensitive: kept out of the client's debug output
            try:
                req = req.header("Authorization", f"Bearer {key.secret}", is_sensitive=True)
            except ValueError:
                raise AuthError(
                    f"{self._where} key {alias!r}: the key holds characters an HTTP header cannot "
                    "carry (a line break?); fix its environment variable",
                    key_alias=alias,
                ) from None
        try:
            resp = await req.body_bytes(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)).build().send()
            raw = memoryview(await resp.bytes())
        except RequestTimeoutError as exc:
            raise timeout_error(self._where, alias, timeout) from exc
        except PyreqwestError as exc:  # its message and causes name the URL, never the headers
            reason = transport_reason(exc)
            raise connection_error(
                self._where, self.base_url, alias, reason, refused="connection refused" in reason.lower()
            ) from exc
        status, headers = resp.status, resp.headers
        if status >= 400:
            raise status_error(
                status,
                error_detail(bytes(raw)),
                where=self._where,
                key_alias=alias,
                headers=headers,
                secret=key.secret if key else None,
            ) from HTTPStatus(status)
        try:
            return orjson.loads(raw), headers
        except orjson.JSONDecodeError as exc:
            raise not_json(self._where, status, alias) from exc

    async def complete(self, request: Request, key: ApiKey | None, *, timeout: float) -> Completion:
        t0 = time.perf_counter()
        data, headers = await self._post(
            self._chat_url, chat_body(self.kind, self.model, request, self.params), key, timeout
        )
        return completion_json(
            data,
            request,
            kind=self.kind,
            model=self.model,
            key_alias=key.alias if key else None,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            headers=headers,
        )

    async def embed(self, request: EmbeddingRequest, key: ApiKey | None, *, timeout: float) -> Embeddings:
        data, _ = await self._post(self._embed_url, embed_body(self.model, request), key, timeout)
        return embeddings_json(data, kind=self.kind, model=self.model, key_alias=key.alias if key else None)

    async def aclose(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            await c.close()


class HTTPStatus(Exception):
    """The server's error status, kept as the cause of the synth error it became."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def transport_reason(exc: BaseException) -> str:
    """The innermost causes of a client error, e.g. ``tcp connect error: Connection refused``."""
    details = getattr(exc, "details", None) or {}
    causes = [c.get("message", "") for c in details.get("causes") or () if isinstance(c, dict)]
    return ": ".join(causes[-2:]) or f"{exc.__class__.__name__}: {exc}"


__all__ = [
    "DEFAULT_BASE_URLS",
    "OPENAI_KINDS",
    "WireProvider",
    "chat_body",
    "completion_json",
    "decode_output",
    "embed_body",
    "embeddings_json",
    "not_json",
    "openai_base_url",
    "response_format",
    "strict_ok",
]

"""HTTP answers -> our types: ``x-ratelimit-*`` / ``retry-after`` headers, and status codes ->
:mod:`synth.errors`. Shared by every HTTP provider so that all of them map failures the same way.

Headers are read from any case-insensitive mapping (httpx, aiohttp) or a plain dict.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from synth.errors import AuthError, BadRequest, ProviderError, RateLimited, Transient
from synth.records import RateLimitInfo, trusted

_NUM = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"{_NUM}|(?:{_NUM}h)?(?:{_NUM}m(?!s))?(?:{_NUM}s)?(?:{_NUM}ms)?")
# things that look like API keys, in case a server echoes one back in an error body
_KEYLIKE = re.compile(r"\b(?:sk-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{10,})|(?i:bearer\s+\S+)")


def _get(headers: Mapping[str, Any], name: str) -> Any:
    value = headers.get(name)
    if value is None and type(headers) is dict:  # plain dicts are case-sensitive
        lower = name.lower()
        for k, v in headers.items():
            if k.lower() == lower:
                return v
    return value


def parse_duration(text: str | None) -> float | None:
    """``"6m0s"``, ``"1.5s"``, ``"20ms"``, ``"1h2m3s"`` or a bare number of seconds -> seconds."""
    if text is None:
        return None
    text = str(text).strip()
    # fast paths for the usual one-unit forms ("120ms", "1.5s", "7")
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("", 1.0)):
        num = text[: len(text) - len(suffix)] if text.endswith(suffix) else None
        if num and num.replace(".", "", 1).isdecimal():
            return float(num) * scale
    m = _DURATION.fullmatch(text)
    if m is None or not any(m.groups()):
        return None
    bare, h, mi, sec, ms = m.groups()
    if bare is not None:
        return float(bare)
    return float(h or 0) * 3600.0 + float(mi or 0) * 60.0 + float(sec or 0) + float(ms or 0) / 1000.0


def _int(text: Any) -> int | None:
    if text is None:
        return None
    if isinstance(text, str) and text.isdecimal():  # the common case, without an exception path
        return int(text)
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def parse_ratelimit(headers: Mapping[str, Any] | None) -> RateLimitInfo | None:
    """The ``x-ratelimit-*`` headers as :class:`RateLimitInfo`, or None when there are none."""
    if not headers:
        return None
    lr = _get(headers, "x-ratelimit-limit-requests")
    lt = _get(headers, "x-ratelimit-limit-tokens")
    rr = _get(headers, "x-ratelimit-remaining-requests")
    rt = _get(headers, "x-ratelimit-remaining-tokens")
    if lr is None and lt is None and rr is None and rt is None:
        return None
    return trusted(
        RateLimitInfo,
        {  # every value below is an int, a float or None already
            "limit_requests": _int(lr),
            "remaining_requests": _int(rr),
            "reset_requests_s": parse_duration(_get(headers, "x-ratelimit-reset-requests")),
            "limit_tokens": _int(lt),
            "remaining_tokens": _int(rt),
            "reset_tokens_s": parse_duration(_get(headers, "x-ratelimit-reset-tokens")),
        },
    )


def parse_retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds to wait: ``retry-after-ms`` wins over ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = _get(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = _get(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(str(value)).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def scrub(text: str, secret: str | None = None) -> str:
    """Remove a key (and anything shaped like one) from text that will be shown or logged."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)


def error_detail(body: Any, limit: int = 200) -> str:
    """The human part of an error body: ``error.message`` (OpenAI, Gemini) or the text itself."""
    data = body
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            data = body
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        msg = err.get("message") if isinstance(err, dict) else err
        text = str(msg if msg is not None else data)
    else:
        text = str(data if data is not None else "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_error(
    status: int,
    detail: str,
    *,
    where: str,
    key_alias: str | None,
    headers: Mapping[str, Any] | None = None,
    secret: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The synth error for an HTTP error status. ``where`` names the model (``openai:gpt-4o``);
    ``retry_after`` is the wait the body asked for, when the headers name none."""
    detail = scrub(detail, secret)
    key = f" key {key_alias!r}" if key_alias else ""
    said = f": {detail}" if detail else ""
    if status == 429:
        wait = parse_retry_after(headers)
        wait = retry_after if wait is None else wait
        hint = f"; retry after {wait:g}s" if wait is not None else ""
        return RateLimited(
            f"{where}{key}: rate limited (HTTP 429){said}{hint}",
            retry_after=wait,
            key_alias=key_alias,
            limits=parse_ratelimit(headers),
        )
    if status in (401, 403):
        return AuthError(
            f"{where}{key} was rejected (HTTP {status}){said}; check the key or replace it",
            status=status,
            key_alias=key_alias,
        )
    if status in (408, 409) or status >= 500:
        return Transient(f"{where}{key}: server error (HTTP {status}){said}", status=status, key_alias=key_alias)
    if status == 404:
        return BadRequest(
            f"{where}: not found (HTTP 404){said}; check the model name and base_url",
            status=status,
            key_alias=key_alias,
        )
    return BadRequest(f"{where}: request rejected (HTTP {status}){said}", status=status, key_alias=key_alias)


def timeout_error(where: str, key_alias: str | None, timeout: float) -> Transient:
    key = f" key {key_alias!r}" if key_alias else ""
    return Transient(f"{where}{key}: no answer within {timeout:g}s (timeout)", key_alias=key_alias)


def connection_error(where: str, url: str, key_alias: str | None, reason: str, *, refused: bool) -> Transient:
    """A failed connection. ``refused`` gives the wording the run's preflight recognises."""
    if refused:
        msg = f"{where}: cannot connect to {url}: the server refused the connection; start the server or fix base_url"
    else:
        msg = f"{where}: connection to {url} failed: {scrub(reason)}"
    return Transient(msg, key_alias=key_alias)


def is_refused(exc: BaseException) -> bool:
    """True when ``exc`` (or anything it was caused by) is a refused TCP connection."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        if isinstance(e, ConnectionRefusedError):
            return True
        if isinstance(getattr(e, "os_error", None), ConnectionRefusedError):  # aiohttp keeps the OSError here
            return True
        text = str(e).lower()
        if "connection refused" in text or "connect call failed" in text:
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


__all__ = [
    "connection_error",
    "error_detail",
    "is_refused",
    "parse_duration",
    "parse_ratelimit",
    "parse_retry_after",
    "scrub",
    "status_error",
    "timeout_error",
]

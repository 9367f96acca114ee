"""Job-file provider spec -> provider instance, and the reachability preflight.

SDKs are imported only when their kind is used, so a ``sim`` job never loads ``openai`` or
``google-genai``.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from synth.errors import ConfigError
from synth.providers.base import Provider, parse_model
from synth.spec import ProviderSpec


def create_provider(spec: ProviderSpec) -> Provider:
    """The provider for ``spec.model``. OpenAI kinds use the lean wire client unless
    ``client: sdk``; ``client`` means nothing for gemini and sim."""
    ref = parse_model(spec.model)
    params = spec.params
    if ref.kind == "sim":
        from synth.providers.sim import SimProvider

        return SimProvider(ref.model, params=params)
    if ref.kind == "gemini":
        from synth.providers.gemini import GeminiProvider

        return GeminiProvider(ref.model, base_url=spec.base_url, params=params)
    if spec.client == "sdk":
        from synth.providers.openai import OpenAIProvider

        return OpenAIProvider(ref.kind, ref.model, base_url=spec.base_url, params=params)
    from synth.providers.wire import WireProvider

    return WireProvider(ref.kind, ref.model, base_url=spec.base_url, params=params)


async def check_reachable(base_url: str, *, timeout: float = 5.0) -> None:
    """Open (and close) a TCP connection to ``base_url``'s host, or raise a one-line ConfigError."""
    parts = urlsplit(base_url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"base_url {base_url!r} is not an http(s) URL; write it like http://127.0.0.1:8000/v1")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"base_url {base_url!r} has an invalid port; fix base_url") from None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError:
        raise ConfigError(
            f"cannot connect to {base_url}: connection refused; start the server or fix base_url") from None
    except socket.gaierror:
        raise ConfigError(f"cannot connect to {base_url}: unknown host {host!r}; fix base_url") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise ConfigError(f"cannot connect to {base_url}: no answer within {timeout:g}s; "
                          "check the network or fix base_url") from None
    except OSError as exc:
        raise ConfigError(f"cannot connect to {base_url}: {exc.strerror or exc}; "
                          "start the server or fix base_url") from None
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


__all__ = ["check_reachable", "create_provider"]

"""Job-file provider spec -> provider instance, and the reachability preflight.

SDKs are imported only when their kind is used, so a ``sim`` job never loads ``openai`` or
``google-genai``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
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


async def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """``getaddrinfo`` in a daemon thread, awaited for at most ``timeout``. Not the loop's executor:
    ``asyncio.run`` joins its threads on the way out and the interpreter joins them at exit, so a
    resolver that hangs would hold both past the timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[list[tuple]] = loop.create_future()

    def settle(result: list[tuple] | None, exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(result or [])

    def work() -> None:
        result, exc = None, None
        try:
            result = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task as is
            exc = e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop is closed: nobody waits for this answer any more
            pass

    threading.Thread(target=work, name="synth-resolve", daemon=True).start()
    return await asyncio.wait_for(fut, timeout)


async def _connect(infos: list[tuple], deadline: float) -> None:
    """Open (and close) a TCP connection to the first address that takes one; raise the last
    address's error when none does."""
    loop = asyncio.get_running_loop()
    error: BaseException = OSError("no address")
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), max(0.0, deadline - loop.time()))
            return
        except (asyncio.TimeoutError, TimeoutError):
            raise
        except OSError as exc:
            error = exc
        finally:
            sock.close()
    raise error


async def check_reachable(base_url: str, *, timeout: float = 3.0, fix: str = "fix base_url") -> None:
    """Resolve ``base_url``'s host and open (and close) a TCP connection to it, all within
    ``timeout`` seconds, or raise a one-line ConfigError ending with ``fix``."""
    parts = urlsplit(base_url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"base_url {base_url!r} is not an http(s) URL; write it like http://127.0.0.1:8000/v1")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"base_url {base_url!r} has an invalid port; {fix}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        infos = await _resolve(host, port, timeout)
        await _connect(infos, deadline)
    except ConnectionRefusedError:
        raise ConfigError(f"cannot connect to {base_url}: connection refused; start the server or {fix}") from None
    except socket.gaierror:
        raise ConfigError(f"cannot connect to {base_url}: unknown host {host!r}; {fix}") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise ConfigError(
            f"cannot connect to {base_url}: no answer within {timeout:g}s; check the network or {fix}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot connect to {base_url}: {exc.strerror or exc}; start the server or {fix}") from None


__all__ = ["check_reachable", "create_provider"]

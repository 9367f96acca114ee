"""Job-file provider spec -> provider instance, and the reachability preflight.

Provider kinds are plugins (:mod:`synth.plugins`, entry-point group ``synth.providers``); the
built-in kinds register the factories below in synth's own ``pyproject.toml``. SDKs are imported
only inside them, so a ``sim`` job never loads ``openai`` or ``google-genai``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from urllib.parse import urlsplit

from synth.errors import ConfigError
from synth.plugins import PROVIDERS, split_model
from synth.providers.base import Provider
from synth.spec import ProviderSpec


def create_provider(spec: ProviderSpec) -> Provider:
    """The provider for a job's provider entry, made by its kind's registered factory (or the
    ``package.module:Class`` its model string names). A broken plugin is one ConfigError line."""
    kind, _ = split_model(spec.model)
    where = f"provider {spec.route!r} ({spec.model})"
    make = PROVIDERS.load(kind, field=where)
    try:
        provider = make(spec)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not crashed on
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        raise ConfigError(f"{where}: the {kind!r} provider failed to start: {msg}") from None
    if not isinstance(provider, Provider):
        raise ConfigError(
            f"{where}: {kind!r} made a {type(provider).__name__}, not a provider; it needs kind, model, "
            "complete, embed and aclose (see synth.plugins)"
        )
    return provider


# ---------------------------------------------------------------- the built-in kinds


def sim_provider(spec: ProviderSpec) -> Provider:
    """``sim:<model>``: the offline simulator (no keys, no network)."""
    from synth.providers.clients.sim import SimProvider

    return SimProvider(split_model(spec.model)[1], params=spec.params)


def gemini_provider(spec: ProviderSpec) -> Provider:
    """``gemini:<model>``: google-genai (``client`` means nothing here)."""
    from synth.providers.clients.gemini import GeminiProvider

    return GeminiProvider(split_model(spec.model)[1], base_url=spec.base_url, params=spec.params)


def openai_provider(spec: ProviderSpec) -> Provider:
    """``openai:``, ``openrouter:`` and ``compat:`` (any OpenAI-compatible base_url): the lean wire
    client unless ``client: sdk``."""
    kind, model = split_model(spec.model)
    if spec.client == "sdk":
        from synth.providers.clients.openai import OpenAIProvider

        return OpenAIProvider(kind, model, base_url=spec.base_url, params=spec.params)
    from synth.providers.clients.wire import WireProvider

    return WireProvider(kind, model, base_url=spec.base_url, params=spec.params)


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


__all__ = ["check_reachable", "create_provider", "gemini_provider", "openai_provider", "sim_provider"]

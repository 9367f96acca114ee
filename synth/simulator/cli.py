"""``synth sim serve``: run the LLM API simulator. Its first line of stdout is the URL it listens on."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import typer
from pydantic import ValidationError

from synth.simulator.config import SimConfig

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="The LLM API simulator (OpenAI and Gemini wire formats)."
)


@app.callback()
def _group() -> None:
    """The LLM API simulator (OpenAI and Gemini wire formats)."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(0, help="port (0 picks a free one)"),
    rpm: float | None = typer.Option(None, help="requests per minute per key (default: unlimited)"),
    tpm: float | None = typer.Option(None, help="tokens per minute per key (default: unlimited)"),
    concurrency: int | None = typer.Option(None, help="most requests in flight per key"),
    burst_seconds: float = typer.Option(1.0, help="bucket capacity, in seconds of refill"),
    latency_ms: float | None = typer.Option(None, help="mean total latency of a typical (~100 token) answer"),
    ttft_ms: float | None = typer.Option(None, help="time to first token"),
    tpot_ms: float | None = typer.Option(None, help="time per output token"),
    jitter: float = typer.Option(0.0, help="latency varies uniformly by +- this fraction"),
    error_rate: float = typer.Option(0.0, help="share of requests answered 500/503"),
    malformed_rate: float = typer.Option(0.0, help="share of structured answers made invalid"),
    hang_rate: float = typer.Option(0.0, help="share of requests never answered"),
    hang_s: float = typer.Option(300.0, help="how long a hanging request is held open"),
    revoked: str = typer.Option("", help="comma-separated keys answered 401"),
    keys: str | None = typer.Option(None, help="comma-separated keys accepted (default: any non-empty key)"),
    seed: int = typer.Option(0, help="seed of the fault and jitter draws"),
) -> None:
    """Serve the OpenAI (/v1/...) and Gemini (/v1beta/models/...) APIs with simulated limits and faults."""
    try:
        config = SimConfig(
            host=host,
            port=port,
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            burst_seconds=burst_seconds,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
            jitter=jitter,
            error_rate=error_rate,
            malformed_rate=malformed_rate,
            hang_rate=hang_rate,
            hang_s=hang_s,
            revoked=revoked,
            keys=[k.strip() for k in keys.split(",") if k.strip()] if keys is not None else None,
            seed=seed,
        )
    except ValidationError as e:
        for err in e.errors():
            typer.echo(f"error: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    try:
        _run(_serve(config))
    except OSError as e:
        typer.echo(f"error: cannot listen on {host}:{port}: {e.strerror or e}; pick another --port", err=True)
        raise typer.Exit(1) from None


def _run(main: Any) -> None:
    """On uvloop when installed: the simulator's own CPU per request falls by about a fifth, which
    matters when it shares a machine with the client it measures."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve(config: SimConfig) -> None:
    from synth.simulator.server import start_server

    runner, url = await start_server(config)
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()

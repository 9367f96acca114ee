"""Every command's way of failing: one line per problem on stderr and the error's exit code;
an unexpected error is one line too, unless SYNTH_DEBUG asks for the traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import typer

from synth.errors import SynthError

T = TypeVar("T")
RESUME = "interrupted: committed shards are kept; run the same command again to resume"


def guarded(fn: Callable[[], T], *, interrupted: str | None = RESUME) -> T:
    """``fn()``, with SynthError, Ctrl-C (exit 130, saying ``interrupted`` when given) and any other
    error turned into a one-line message and a non-zero exit."""
    try:
        return fn()
    except SynthError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        if interrupted:
            typer.echo(interrupted, err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - an unexpected failure still gets one line, unless debugging
        if os.environ.get("SYNTH_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        typer.echo(f"error: {type(e).__name__}: {first} (set SYNTH_DEBUG=1 for the traceback)", err=True)
        raise typer.Exit(1) from None


__all__ = ["RESUME", "guarded"]

"""``synth bench``: runs the benchmark suite (benchmarks/bench.py) of a source checkout. The suite
is not part of the installed package; from a wheel this says so in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer


def bench_cmd(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="a small version of every section that fits in a short run"),
    out: Path | None = typer.Option(
        None, "--out", help="folder for bench.md, bench.json and the plots (default: benchmarks/results)"
    ),
    only: str | None = typer.Option(None, "--only", help="sections to run, comma-separated numbers 1-8"),
) -> None:
    """Benchmark synth against its LLM API simulator: a markdown table, a JSON file and PNG plots.
    Other options are passed to benchmarks/bench.py (see its --help)."""
    script = next(
        (p for p in (Path(__file__).resolve().parents[1], Path.cwd()) if (p / "benchmarks" / "bench.py").is_file()),
        None,
    )
    if script is None:
        typer.echo(
            "error: benchmarks/bench.py not found: synth bench runs from a source checkout of synth (cd into it)",
            err=True,
        )
        raise typer.Exit(2)
    args = [*(["--quick"] if quick else []), *(["--out", str(out)] if out else []), *(["--only", only] if only else [])]
    code = subprocess.call([sys.executable, str(script / "benchmarks" / "bench.py"), *args, *ctx.args], cwd=script)
    raise typer.Exit(code)

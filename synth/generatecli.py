"""``synth generate``: quick generation without a job file. The job is built by :mod:`synth.quick`
and streamed by :mod:`synth.streaming`; this renders the outcome and picks the exit code."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import typer

STREAM_CLOSED = 141  # 128 + SIGPIPE: what a pipeline shows for a writer whose reader left


def generate_cmd(
    kind: str = typer.Argument(..., help="structured, conversation, timeseries, events, or a plugin generator's kind"),
    count: int = typer.Option(100, "--count", "-n", help="units to make (records; series; event cohorts; dialogs)"),
    schema: Path | None = typer.Option(
        None, "--schema", help="JSON Schema, or fields {name: {type, min, max, enum}}, as a YAML or JSON file"
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="the prompt (structured), scenario (timeseries, events) or topic (conversation)"
    ),
    model: str | None = typer.Option(None, "--model", help="PROVIDER:MODEL, e.g. openai:gpt-4o-mini (default: sim)"),
    fallback: str | None = typer.Option(None, "--fallback", help="models tried next, comma-separated: M1,M2"),
    route: str | None = typer.Option(None, "--route", help="cost, latency or quality: how the models are ordered"),
    budget: float | None = typer.Option(None, "--budget", help="stop spending at this many US dollars"),
    fmt: str | None = typer.Option(None, "--format", "-f", help="parquet, jsonl, json or csv"),
    output: str | None = typer.Option(
        None, "--output", "-o", help="a folder (any fsspec URI), or one file: users.csv, x.jsonl, x.json, x.parquet"
    ),
    stream: bool = typer.Option(False, "--stream", help="write the records to stdout as JSON lines as shards commit"),
    save_job: Path | None = typer.Option(None, "--save-job", help="also write the job built, as YAML, for synth run"),
    name: str | None = typer.Option(None, "--name", help="job name (default: the kind)"),
    seed: int = typer.Option(0, "--seed", help="same options and seed, same ids (and, on sim, the same data)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: run here)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace what the output holds"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    """Generate data without a job file: the job is built from the options (the kind's `synth init`
    starter, changed where an option says) and run like `synth run`: committed shard by shard, and
    resumed by running the same command again. A single-file --output is written from the dataset
    kept beside it (users.csv.parts/) once the run is complete.

    Example: synth generate structured --schema fields.yaml --count 500 --output users.csv

    Exit codes as synth run; --stream into a reader that stops early (| head): exit 141, shards kept.
    """
    from synth.cli import _terminate_as_interrupt, guarded
    from synth.outcome import outcome, print_summary

    command = "synth generate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["generate"] else None

    def build() -> Any:
        from synth.quick import build as build_job
        from synth.quick import check_file_target

        quick = build_job(
            kind, count=count, schema=schema, prompt=prompt, model=model, fallback=fallback, route=route,
            budget=budget, format=fmt, output=output, name=name, seed=seed,
        )  # fmt: skip
        check_file_target(quick, overwrite)
        spec = quick.spec()
        if save_job is not None:
            typer.echo(f"wrote {quick.save(save_job, command)}", err=True)
        return quick, spec

    quick, spec = guarded(build)
    streamer: dict[str, Any] = {}
    done = threading.Event()
    if stream:
        from synth.streaming import Follower, to_stdout

        follower = Follower(spec.output.uri, spec.output.storage.model_dump(exclude_none=True))
        streamer = to_stdout(follower, done, quick.drop)

    def go() -> Any:
        from synth.api import preflight
        from synth.engine.run import run_job

        try:
            return run_job(spec, address=address, overwrite=overwrite, progress=not quiet, preflight=preflight)
        except KeyboardInterrupt:
            if streamer.get("broken"):
                return None  # the reader of --stream left: stopped as Ctrl-C stops a run
            raise

    with _terminate_as_interrupt():
        res = guarded(go)
        done.set()
        if streamer:
            streamer["thread"].join()
    if res is None or streamer.get("broken"):
        typer.echo(
            f"stopped: the reader of --stream closed its end after {streamer['lines']:,} records; committed shards "
            "are kept, and the same command resumes",
            err=True,
        )
        raise typer.Exit(STREAM_CLOSED)
    print_summary(res)
    code, message = outcome(res)
    if code:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code)
    if quick.file:
        from synth.quick import write_file

        typer.echo(f"wrote {guarded(lambda: write_file(quick)):,} records to {quick.file}", err=True)

"""Command line: thin over the SDK. Renders every SynthError as one line per problem and picks the
exit code; nothing here knows how a job runs."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from synth.guard import guarded
from synth.jobscli import jobs_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Distributed synthetic-data generation on Ray.")
spec_app = typer.Typer(no_args_is_help=True, help="Inspect and check job files.")
app.add_typer(spec_app, name="spec")
cache_app = typer.Typer(no_args_is_help=True, help="The response cache and a job's answer journal.")
app.add_typer(cache_app, name="cache")
app.add_typer(jobs_app, name="jobs")


def _mount_optional(argv: list[str] | None = None) -> None:
    """The simulator's commands, loaded only when asked for or listed (its web server costs a
    third of a second to import, on every command)."""
    first = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    if first not in (None, "sim"):
        return
    try:
        from synth.simulator.cli import app as sim_app

        app.add_typer(sim_app, name="sim", help="The LLM API simulator (OpenAI and Gemini wire formats).")
    except ImportError:  # pragma: no cover - the simulator ships with the package
        pass


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does: what is made is committed and the answer journal shipped."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def run(
    job: Path = typer.Argument(..., help="job file (YAML or JSON)"),
    output: str | None = typer.Option(None, "--output", "-o", help="output URI (overrides output.uri)"),
    count: int | None = typer.Option(None, "--count", "-n", help="planned units (overrides count)"),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (default: RAY_ADDRESS, else this process or an embedded Ray)"
    ),
    executor: str | None = typer.Option(
        None,
        "--executor",
        help="local (this process, no Ray), ray, or auto: local for small jobs without a cluster "
        "(overrides engine.executor)",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace what the output path holds"),
    env_file: Path | None = typer.Option(
        None, "--env-file", help=".env file with key variables (default: .env beside the job)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's own logs and warnings on the terminal too"),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="make the dead-lettered units of committed shards again (same ids)"
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="do not reuse cached answers (the job's own journal still replays)"
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="run a sample on the offline sim and project tokens, dollars and time; writes nothing"
    ),
    sample: int = typer.Option(20, "--sample", min=1, help="units the dry run makes"),
) -> None:
    """Run a job to completion; run it again after an interruption to resume.

    Example: synth run jobs/examples/structured.yaml -o ./out/products -n 1000

    Exit codes: 0 done; 1 unexpected failure or shards left; 2 bad job file or unreachable provider;
    3 storage; 4 budget reached; 5 no usable key left; 6 too many dead letters; 7 stopped by the
    failure rate."""
    overrides = {
        "output.uri": output,
        "count": count,
        "cache.enabled": False if no_cache else None,
        "engine.executor": executor,
    }
    if dry_run:

        def plan() -> Any:
            from synth.api import load_job
            from synth.dryrun import dry_run as project

            # no key is used by a dry run, so none needs to be set yet
            return project(load_job(job, env_file=env_file, overrides=overrides, check_keys=False), sample=sample)

        typer.echo(guarded(plan).render())
        return

    def go() -> Any:
        from synth.api import load_job, preflight

        spec = load_job(job, env_file=env_file, overrides=overrides)
        from synth.engine.run import run_job  # after the job is valid: a bad one is refused without loading Ray

        return run_job(
            spec,
            address=address,
            overwrite=overwrite,
            progress=not quiet,
            preflight=preflight,
            retry_failed=retry_failed,
            verbose=verbose,
        )

    from synth.outcome import outcome, print_summary

    with _terminate_as_interrupt():
        res = guarded(go)
    print_summary(res)
    code, message = outcome(res)
    if code:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code)


@app.command()
def submit(
    job: Path = typer.Argument(..., help="job file"),
    address: str = typer.Option(..., "--address", help="Ray dashboard address, e.g. http://head:8265"),
    output: str | None = typer.Option(None, "--output", "-o"),
    count: int | None = typer.Option(None, "--count", "-n"),
    wait: bool = typer.Option(False, "--wait", help="follow the job's logs until it ends"),
) -> None:
    """Submit a job to a Ray cluster as a Ray job (keys must be set in the cluster's environment)."""

    def go() -> str:
        from synth.api import load_job
        from synth.engine.submit import submit_job

        spec = load_job(job, overrides={"output.uri": output, "count": count}, check_keys=False)
        return submit_job(spec, address=address, wait=wait)

    typer.echo(guarded(go))


@app.command("init")
def init_cmd(
    kind: str = typer.Argument("structured", help="structured, conversation, timeseries, events or rag"),
    path: Path | None = typer.Argument(None, help="job file to write (default: KIND.yaml here)"),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
) -> None:
    """Write a commented starter job that runs as is on the offline sim provider; its comments say
    how to switch to a real model (keys by environment variable name, limits, routes).

    Example: synth init conversation chat.yaml && synth run chat.yaml"""
    from synth.starter import KINDS, init, next_steps

    if path is None and kind not in KINDS and kind.lower().endswith((".yaml", ".yml")):
        kind, path = "structured", Path(kind)  # `synth init job.yaml`: the default kind
    typer.echo(next_steps(*guarded(lambda: init(kind, path, force=force))))


from synth.benchcli import bench_cmd  # noqa: E402
from synth.generatecli import generate_cmd  # noqa: E402 - its own module keeps this one small

app.command("generate")(generate_cmd)
app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(bench_cmd)


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the job file's JSON Schema (for editors)."""
    from synth.spec import JobSpec

    typer.echo(json.dumps(JobSpec.model_json_schema(), indent=2))


@spec_app.command("check")
def spec_check(job: Path = typer.Argument(...), env_file: Path | None = typer.Option(None, "--env-file")) -> None:
    """Validate a job file, keys included, without running it."""
    from synth.api import load_job

    spec = guarded(lambda: load_job(job, env_file=env_file))
    typer.echo(f"ok: {spec.name}: {spec.count:,} {spec.generator.kind} units -> {spec.output.uri}")


config_app = typer.Typer(no_args_is_help=True, help="Defaults files merged under every job file.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    job: Path | None = typer.Argument(None, help="job file (default: show the merged defaults alone)"),
    full: bool = typer.Option(False, "--full", help="every field of the validated job, defaults included"),
) -> None:
    """Print the merged job (or the merged defaults) as YAML, secrets redacted, with the files it came from.

    Example: synth config show jobs/examples/structured.yaml"""
    from synth.defaults import show

    text, problems = guarded(lambda: show(job, full=full))
    typer.echo(text)
    if problems:
        typer.echo("\n".join(f"error: {line}" for line in problems), err=True)
        raise typer.Exit(2)


@cache_app.command("stats")
def cache_stats(
    where: str | None = typer.Argument(
        None, help="a cache folder or a job's output (any fsspec URI); default: the user cache"
    ),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Answers stored in a cache folder or a job's journal: entries, bytes, models, dollars, ages.

    Example: synth cache stats ./out/products"""

    def go() -> Any:
        from synth.engine.answerstore import folder_stats, user_cache_dir

        return folder_stats(where or user_cache_dir())

    st = guarded(go)
    if as_json:
        typer.echo(json.dumps(st))
        return
    import datetime as dt

    def when(ts: float | None) -> str:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds") if ts else "-"

    typer.echo(
        f"{st['uri']}: {st['entries']:,} answers ({st['bytes'] / 1e6:,.1f} MB) of {st['models']} models in "
        f"{st['segments']} segments, bought for ${st['usd']:.4f}; oldest {when(st['oldest'])}, newest {when(st['newest'])}"
    )


@cache_app.command("clear")
def cache_clear(
    where: str | None = typer.Argument(None, help="a cache folder (any fsspec URI); default: the user cache"),
    older_than: float | None = typer.Option(None, "--older-than", help="only answers older than this many seconds"),
) -> None:
    """Remove cached answers (all, or the old ones). A job's own journal is never removed by this.

    Example: synth cache clear --older-than 604800"""

    def go() -> int:
        from synth.engine.answerstore import clear, user_cache_dir

        return clear(where or user_cache_dir(), older_than)

    typer.echo(f"removed {guarded(go):,} cached answers")


@app.command()
def index(
    source: str = typer.Argument(
        ..., help="documents: txt, md, jsonl or parquet; a file, folder or glob on any fsspec URI"
    ),
    collection: str = typer.Option(..., "--collection", help="Qdrant collection name"),
    path: str | None = typer.Option(None, "--path", help="local Qdrant folder (default ./qdrant)"),
    url: str | None = typer.Option(None, "--url", help="Qdrant server URL instead of a local folder"),
    chunk_size: int = typer.Option(800, "--chunk-size", help="characters per chunk"),
    overlap: int = typer.Option(100, "--overlap", help="characters shared by neighbouring chunks"),
    job: Path | None = typer.Option(
        None, "--job", help="job file whose providers give the embedding model (default: offline sim)"
    ),
    model: str = typer.Option("default", "--model", help="route of the embedding model in the job file"),
) -> None:
    """Load documents into a Qdrant collection (running it twice changes nothing)."""

    def go() -> Any:
        import asyncio

        from synth.providers.dispatch import Dispatcher
        from synth.retrieval.index import index_documents
        from synth.spec import load_spec, parse_job

        # only the providers matter here: the generator section is not validated
        spec = load_spec(job) if job else parse_job({"name": "index", "count": 1, "generator": {"kind": "none"}})

        async def main() -> Any:
            llm = Dispatcher.from_spec(spec)
            try:
                return await index_documents(
                    source,
                    collection,
                    path=path if (path or url) else "./qdrant",
                    url=url,
                    llm=llm,
                    chunk_size=chunk_size,
                    overlap=overlap,
                    model=model,
                )
            finally:
                await llm.aclose()

        return asyncio.run(main())

    report = guarded(go)
    typer.echo(report.model_dump_json() if hasattr(report, "model_dump_json") else str(report))


def _endpoint(url: str | None) -> dict[str, Any] | None:
    return {"endpoint_url": url} if url else None


ENDPOINT_HELP = "S3-compatible endpoint (default: AWS_ENDPOINT_URL); export uses it for --to too"


@app.command("inspect")
def inspect_cmd(
    output: str = typer.Argument(..., help="a job's output folder: local path or any fsspec URI (s3://...)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON document, for scripts"),
    samples: int = typer.Option(3, "--samples", min=0, help="sample records to show"),
    max_rows: int | None = typer.Option(
        None, "--max-rows", min=1, help="summarise columns over at most this many rows (default: all)"
    ),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """What an output holds: records, dead letters, shards committed of planned, tokens and cost, top
    failure reasons, a summary per column and a few sample records. Works while a job runs and on an
    unfinished one (only committed shards count).

    Example: synth inspect ./out/products --json"""

    def go() -> Any:
        from synth.inspect import inspect

        return inspect(output, samples=samples, max_rows=max_rows, storage=_endpoint(endpoint_url))

    doc = guarded(go)
    if as_json:
        typer.echo(json.dumps(doc, default=str))
        return
    from synth.inspect import render

    render(doc)


@app.command("export")
def export_cmd(
    output: str = typer.Argument(..., help="a job's output folder: local path or any fsspec URI (s3://...)"),
    fmt: str = typer.Option(..., "--format", "-f", help="jsonl, csv, sql, hf, openai, sharegpt or messages"),
    to: str | None = typer.Option(
        None, "--to", help="file or folder (any fsspec URI); for sql a SQLAlchemy URL or a path (SQLite file)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace what --to holds"),
    with_envelope: bool = typer.Option(
        False, "--with-envelope", help="keep the envelope columns (model, provider, tokens, cost, ...)"
    ),
    table: str = typer.Option("records", "--table", help="table name for --format sql"),
    push: str | None = typer.Option(None, "--push", help="for --format hf: also push to this Hugging Face Hub repo"),
    batch_rows: int = typer.Option(2048, "--batch-rows", min=1, help="records read and written per batch"),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """Export an output's committed records (never its dead letters), streaming batch by batch.
    Written under a temporary name and moved into place when complete.

    jsonl: one JSON object per record
    csv: one row per record, nested fields as JSON strings
    sql: a table through SQLAlchemy (--to a URL, or a path for an SQLite file; --table)
    hf: a Hugging Face datasets folder for load_from_disk; --push REPO also uploads it (token: HF_TOKEN)
    openai: chat fine-tuning JSONL, each line validated (chat records)
    sharegpt: {"conversations": [{"from", "value"}]} per line (chat records)
    messages: {"id", "messages"} per line (chat records)

    Example: synth export ./out/dialogs --format openai --to train.jsonl"""

    def go() -> Any:
        from synth.export import export

        return export(
            output,
            fmt,
            to,
            overwrite=overwrite,
            with_envelope=with_envelope,
            table=table,
            push=push,
            batch_rows=batch_rows,
            storage=_endpoint(endpoint_url),
            to_storage=_endpoint(endpoint_url),
        )

    typer.echo(guarded(go).line())


def main(argv: list[str] | None = None) -> None:
    try:  # recent typer vendors click; its usage errors are that copy's classes
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - typer on the click package
        from click import exceptions as cx  # type: ignore[no-redef]

    _mount_optional(argv)
    try:
        code = app(args=argv, prog_name="synth", standalone_mode=False)
    except cx.NoArgsIsHelpError:
        app(args=argv, prog_name="synth")  # prints the help
        return
    except cx.ClickException as e:  # a bad argument or option: one line, like every other error
        ctx = getattr(e, "ctx", None)
        where = f"; see '{ctx.command_path} --help'" if ctx is not None else "; see 'synth --help'"
        typer.echo(f"error: {' '.join(e.format_message().split()).rstrip('.')}{where}", err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

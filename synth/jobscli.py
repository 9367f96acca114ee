"""`synth jobs`: the Ray jobs of a cluster (list, status, logs, stop) over the Ray Jobs API. The
logic is in synth.engine.jobs; this only renders it and picks the exit code."""

from __future__ import annotations

import json

import typer

from synth.guard import guarded

jobs_app = typer.Typer(
    no_args_is_help=True,
    help="Ray jobs on a cluster (list, status, logs, stop), through the Ray Jobs API at the dashboard's URL.",
)

ADDRESS_HELP = "Ray dashboard URL, e.g. http://head:8265 (default: RAY_ADDRESS, else http://127.0.0.1:8265)"


@jobs_app.command("list")
def jobs_list(
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help="one JSON array, for scripts"),
) -> None:
    """Every job the cluster knows, oldest first: id, status, synth job name, start time, entrypoint.

    Example: synth jobs list --address http://127.0.0.1:8265"""
    from synth.engine.jobs import list_jobs

    rows = guarded(lambda: list_jobs(address), interrupted=None)
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in rows]))
        return
    for r in rows:
        typer.echo(r.line())
    if not rows:
        typer.echo("no jobs")


@jobs_app.command("status")
def jobs_status(
    job_id: str = typer.Argument(..., help="the job's submission id (what `synth submit` printed)"),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help="one JSON object, for scripts"),
) -> None:
    """One job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), times and Ray's message.

    Example: synth jobs status raysubmit_XyZ123 --address http://127.0.0.1:8265"""
    from synth.engine.jobs import job_status

    row = guarded(lambda: job_status(job_id, address), interrupted=None)
    if as_json:
        typer.echo(row.model_dump_json())
        return
    typer.echo(row.line())
    if row.message:
        typer.echo(f"message: {row.message}")


@jobs_app.command("logs")
def jobs_logs(
    job_id: str = typer.Argument(..., help="the job's submission id"),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing until the job ends"),
) -> None:
    """A job's output (its driver's stdout and stderr).

    Example: synth jobs logs raysubmit_XyZ123 --follow"""
    from synth.engine.jobs import job_logs

    def go() -> None:
        for chunk in job_logs(job_id, address, follow=follow):
            typer.echo(chunk, nl=False)

    guarded(go, interrupted=None)


@jobs_app.command("stop")
def jobs_stop(
    job_id: str = typer.Argument(..., help="the job's submission id"),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    wait: float = typer.Option(60.0, "--wait", min=0, help="seconds to wait for the job to end (0: do not wait)"),
) -> None:
    """Stop a running job. A stopped synth run keeps its committed shards: submit it again to resume.

    Example: synth jobs stop raysubmit_XyZ123 --address http://127.0.0.1:8265

    Exit 1 when the job is still running after --wait seconds."""
    from synth.engine.jobs import TERMINAL, stop_job

    row = guarded(lambda: stop_job(job_id, address, wait_s=wait), interrupted=None)
    typer.echo(row.line())
    if row.status not in TERMINAL and wait > 0:
        typer.echo(
            f"error: Ray job {job_id} is still {row.status} after {wait:g} s; check `synth jobs status`", err=True
        )
        raise typer.Exit(1)

"""The driver: plan, claim the output, run the shards (in this process, or on Ray: gateways and
workers streaming through Ray Data into the datasink), show progress, and write the stats file.
Ray is imported only when the run uses it."""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

import synth
from synth.engine import report
from synth.engine.answerstore import resolve_cache, spool_dir
from synth.engine.lease import hold
from synth.engine.manifest import Manifest
from synth.engine.plan import fingerprint, shard_count
from synth.engine.storage import Storage
from synth.errors import BudgetExceeded, NoKeysLeft, SynthError
from synth.spec import JobSpec

log = logging.getLogger("synth.engine")
ROUNDS = 3  # passes over the uncommitted shards when infrastructure fails under a run


class RunResult(BaseModel):
    """What a run did. ``complete`` is true when every planned unit is a record or a dead letter."""

    job: str
    output: str
    fingerprint: str
    planned_units: int
    shards_total: int
    shards_skipped: int = Field(description="already committed by an earlier run")
    shards_written: int
    records: int
    rows: int
    dead_letters: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    wall_s: float
    complete: bool
    aborted: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)


def choose_executor(job: JobSpec, address: str | None, units: int) -> str:
    """'local' or 'ray' (see ``engine.executor``): a cluster named, or a Ray already running in this
    process, means Ray; else a job of at most ``engine.local_max_units`` runs in this process."""
    mode = job.engine.executor
    if mode != "auto":
        return mode
    ray = sys.modules.get("ray")
    if address or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
        return "ray"
    return "local" if units <= job.engine.local_max_units else "ray"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import pyarrow

    return {
        "synth": synth.__version__,
        "ray": version("ray"),
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


def _collect(manifest: Manifest) -> dict[str, Any]:
    totals: dict[str, Any] = {
        "units": 0,
        "records": 0,
        "rows": 0,
        "dead_letters": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "bytes": 0,
        "dead_by_kind": {},
        "generator_stats": {},
    }
    entries = manifest.commit_entries()
    for e in entries:
        for k in (
            "units",
            "records",
            "rows",
            "dead_letters",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "bytes",
        ):
            totals[k] += e.get(k, 0)
        for bucket in ("dead_by_kind", "generator_stats"):
            for k, v in (e.get(bucket) or {}).items():
                totals[bucket][k] = totals[bucket].get(k, 0) + v
    totals["shards_committed"] = len(entries)
    return totals


def estimate(job: JobSpec, prompt_tokens: int, completion_tokens: int) -> dict[str, Any] | None:
    """For the offline sim: what the same tokens would cost on the model it stands for
    (``sim:gpt-4o-mini`` stands for gpt-4o-mini; ``sim:default`` for gpt-4o-mini too)."""
    from synth.providers.pricing import cost, estimate_price
    from synth.records import Usage

    targets = job.route_targets(job.generator.model)
    spec = next((p for p in job.providers if p.route in targets), job.providers[0])
    if not spec.model.startswith("sim:"):
        return None
    price = estimate_price(spec.model, job.prices)
    model = spec.model.split(":", 1)[1]
    if price is None:
        model, price = "gpt-4o-mini", estimate_price("sim:gpt-4o-mini")
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return {"model": model, "usd": round(cost(usage, price), 6)}


def run_job(
    job: JobSpec,
    *,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    preflight: Any = None,
    retry_failed: bool = False,
    verbose: bool = False,
    stop: threading.Event | None = None,
) -> RunResult:
    """Run (or resume, or extend) ``job``. ``retry_failed`` makes the dead-lettered units of
    committed shards again; ``verbose`` lets Ray's own logs reach the terminal. Setting ``stop``
    (from another thread) stops the run as Ctrl-C does: what is committed stays, paid answers are
    journaled, and KeyboardInterrupt is raised."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)
    job = resolve_cache(job)
    storage = Storage(job.output)
    storage.preflight()
    if preflight is not None:
        preflight(job)  # providers' endpoints reachable, generator options valid; before anything is written
    with hold(storage):  # one run per output: another live run's lease refuses this one (exit 3)
        return _run_held(
            job,
            storage,
            started,
            started_at,
            address=address,
            overwrite=overwrite,
            progress=progress,
            retry_failed=retry_failed,
            verbose=verbose,
            stop=stop,
        )


def _run_held(
    job: JobSpec,
    storage: Storage,
    started: float,
    started_at: datetime,
    *,
    address: str | None,
    overwrite: bool,
    progress: bool,
    retry_failed: bool,
    verbose: bool,
    stop: threading.Event | None = None,
) -> RunResult:
    manifest = Manifest(storage)
    committed = manifest.open(job, overwrite=overwrite)
    manifest.clean_interrupted(committed)
    fp = fingerprint(job)
    n_shards = shard_count(job.count, job.output.shard_size)
    todo = manifest.todo(job, retry_failed=retry_failed)
    # units made again by --retry-failed: their stored answers ended as dead letters, so they are
    # bought afresh rather than replayed
    heads = manifest.heads() if retry_failed else {}
    seen_retry = sorted(
        i for s in todo if s.only and s.index in heads for i in s.only if i < int(heads[s.index]["stop"])
    )
    from synth.generators.registry import create_generator

    partition_by = job.output.partition_by
    if partition_by is None:
        partition_by = list(create_generator(job.generator, job).partition_by())

    sink_results: list[dict[str, Any]] = []
    gw_stats: dict[str, float] = {}
    seen: dict[str, Any] = {
        "stop": stop,
        "reports": [],
        "keys": report.KeyWatch(),
        "retried": seen_retry,
    }  # what the gateways last said
    aborted: str | None = None
    rounds = 0
    tally = {"gateways_replaced": 0}
    if todo:
        if not storage.local:  # answers a killed run left on this machine reach the output first
            from synth.providers.answers import ship_leftovers

            ship_leftovers(spool_dir(storage, job), storage)
        executor = choose_executor(job, address, sum(s.size for s in todo))
        ray_output = ExitStack()
        started_here = False
        try:
            if executor == "ray":
                from synth.engine.execute import execute, init_ray
                from synth.engine.quiet import ray_logs

                # from here to the end of Ray, its output goes to <output>/_logs/
                ray_output.enter_context(ray_logs(storage, verbose))
                started_here = init_ray(address)
            else:
                from synth.engine.local import execute_local as execute
            for attempt in range(ROUNDS):
                rounds += 1
                try:
                    gw_stats, results = execute(job, todo, partition_by, len(committed), progress, tally, seen)
                    sink_results += results
                    break
                except SynthError:
                    raise
                except Exception as e:  # noqa: BLE001 - a lost node or worker: run what is left again
                    if attempt + 1 == ROUNDS:
                        raise
                    log.warning(
                        "a round of the run failed (%s: %s); running the uncommitted shards again",
                        type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else "",
                    )
                    done = manifest.committed()
                    manifest.clean_interrupted(done)
                    todo = manifest.todo(job, pending=todo)
                    if not todo:
                        break
        finally:
            if started_here:
                from synth.engine.execute import shutdown_ray

                shutdown_ray()
            ray_output.close()
        aborts = [r["aborted"] for r in sink_results if r.get("aborted")]
        aborted = aborts[0] if aborts else None

    totals = _collect(manifest)
    complete = totals["shards_committed"] == n_shards and totals["units"] == job.count
    wall = time.monotonic() - started
    stats = {
        "job": job.name,
        "fingerprint": fp,
        "output": storage.uri,
        "planned_units": job.count,
        "shards": {
            "total": n_shards,
            "committed": totals["shards_committed"],
            "skipped_this_run": len(committed),
            "written_this_run": len([r for r in sink_results if not r.get("aborted")]),
        },
        "complete": complete,
        "aborted": aborted,
        "cost_estimate": estimate(job, totals["prompt_tokens"], totals["completion_tokens"]),
        **{k: v for k, v in totals.items() if k != "shards_committed"},
        "requests": gw_stats,
        "rounds": rounds,
        "gateways_replaced": tally["gateways_replaced"],
        "timing": {
            "started_at": started_at.isoformat(),
            "wall_s": round(wall, 3),
            "records_per_s_this_run": round(sum(r.get("records", 0) for r in sink_results) / max(wall, 1e-9), 2),
        },
        "versions": _versions(),
        "spec": job.redacted(),
        **_outcomes(job, manifest, seen),
    }
    manifest.write_stats(stats)
    return RunResult(
        job=job.name,
        output=storage.uri,
        fingerprint=fp,
        planned_units=job.count,
        shards_total=n_shards,
        shards_skipped=len(committed),
        shards_written=stats["shards"]["written_this_run"],
        records=totals["records"],
        rows=totals["rows"],
        dead_letters=totals["dead_letters"],
        prompt_tokens=totals["prompt_tokens"],
        completion_tokens=totals["completion_tokens"],
        cost_usd=totals["cost_usd"],
        wall_s=wall,
        complete=complete,
        aborted=aborted,
        stats=stats,
    )


def _outcomes(job: JobSpec, manifest: Manifest, seen: dict[str, Any]) -> dict[str, Any]:
    """What the summary and the exit code need: failure reasons, per-provider outcomes, keys that
    were disabled or cooled, and what the journal and cache saved."""
    reports = seen["reports"]
    by_route = report.providers(reports)
    return {
        "max_dead_letter_rate": job.output.max_dead_letter_rate,
        "failure_reasons": report.failure_reasons(manifest.commit_entries()),
        "providers": by_route,
        "all_failed": report.all_failed(by_route),
        "keys": seen["keys"].summary(),
        "answers": report.answers(reports),
    }


__all__ = ["BudgetExceeded", "NoKeysLeft", "RunResult", "choose_executor", "run_job"]

"""The driver: plan, claim the output, start gateways and workers, stream shards through Ray Data
into the datasink, show progress, and write the stats file. It holds no data."""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import warnings
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any

import ray
from pydantic import BaseModel, Field
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import synth
from synth.engine import reaper, report
from synth.engine.answerstore import resolve_cache, spool_dir
from synth.engine.gateways import Gateways
from synth.engine.lease import hold
from synth.engine.manifest import Manifest
from synth.engine.monitor import MonitorActor, Progress
from synth.engine.plan import fingerprint, shard_count
from synth.engine.quiet import ray_logs
from synth.engine.sink import ShardSink
from synth.engine.storage import Storage
from synth.engine.worker import ShardWorker
from synth.errors import BudgetExceeded, NoKeysLeft, SynthError
from synth.spec import JobSpec

log = logging.getLogger("synth.engine")
_REAPER: list[Any] = []  # the watcher of an embedded Ray started by this process
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


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Join a cluster (``address`` or RAY_ADDRESS) or start an embedded local Ray. True if started here."""
    if ray.is_initialized():
        return False
    addr = address or os.environ.get("RAY_ADDRESS")
    common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if addr:
        ray.init(address=addr, **common)
    else:
        # write tasks come every few seconds; by default Ray ends an idle worker after 1 s, and a
        # fresh one spends a second or two of CPU importing pyarrow before each write
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
            _system_config={"idle_worker_killing_time_threshold_ms": 600_000},
            **common,
        )
        # if this process is killed, its embedded Ray goes with it rather than lingering
        _REAPER.append(reaper.start())
    return True


def shutdown_ray() -> None:
    """The end of a Ray this process started (embedded or joined)."""
    ray.shutdown()
    while _REAPER:
        reaper.stop(_REAPER.pop())


def _versions() -> dict[str, str]:
    import pyarrow

    return {
        "synth": synth.__version__,
        "ray": ray.__version__,
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
) -> RunResult:
    """Run (or resume, or extend) ``job``. ``retry_failed`` makes the dead-lettered units of
    committed shards again; ``verbose`` lets Ray's own logs reach the terminal."""
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
        ray_output = ExitStack()  # from here to the end of Ray, its output goes to <output>/_logs/
        ray_output.enter_context(ray_logs(storage, verbose))
        started_here = False
        try:
            started_here = init_ray(address)
            for attempt in range(ROUNDS):
                rounds += 1
                try:
                    gw_stats, results = _execute(job, todo, partition_by, len(committed), progress, tally, seen)
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


def _quiet_ray_data() -> None:
    """Our progress line replaces Ray Data's own bars and execution logs."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # it only says that the bars are off, as a warning, in the middle of our progress line
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


@ray.remote(num_cpus=0)
def _warm() -> None:
    import synth.engine.sink  # noqa: F401 - pyarrow, fsspec and the sink, loaded once per pooled worker


def _execute(
    job: JobSpec,
    todo: list[Any],
    partition_by: list[str],
    done_before: int,
    show: bool,
    tally: dict[str, int],
    seen: dict[str, Any],
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    _quiet_ray_data()
    # the first write tasks would otherwise each start a worker process and import pyarrow in the
    # middle of the run; started now, those workers are ready (and kept: see init_ray) by then
    warm = [_warm.remote() for _ in range(2)]
    gateways = Gateways(job)
    gateways.todo = sorted({s.index for s in todo})
    gateways.retried = seen.get("retried", [])
    gateways.start()
    # on the driver's node: the progress totals and the gateway directory must outlive any worker node
    monitor = MonitorActor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ).remote()
    ray.wait(warm, num_returns=len(warm), timeout=30)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = job.engine.workers or max(1, cpus)
    items = [s.item() for s in todo]
    # blocks are the unit Ray Data hands a worker; a pool that may grow gets small ones, so workers
    # that start late still find blocks no one has taken
    grows = (job.engine.max_workers or 0) > workers
    blocks = job.engine.max_workers * 16 if grows else workers * 4  # type: ignore[operator]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), blocks)))
    with warnings.catch_warnings():
        # the actor options below have no named replacement yet; pyproject keeps Ray below the
        # release that drops them, so users need not read about it on every run
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated", category=DeprecationWarning)
        ds = ds.map_batches(
            ShardWorker,
            batch_size=1,
            compute=worker_pool(workers, job.engine.max_workers),
            scheduling_strategy="SPREAD",
            num_cpus=min(1.0, cpus / workers) * 0.9,
            fn_constructor_kwargs={
                "job_json": job.model_dump_json(),
                "gateways": gateways.by_route,
                "weights": gateways.weights,
                "index": gateways.index,
                "monitor": monitor,
            },
            max_restarts=-1,
            max_task_retries=3,
        )
    sink = _CollectingSink(job.output, partition_by)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.1, "max_retries": 3})
        except BaseException as e:  # noqa: BLE001 - re-raised in the driver thread
            failure.append(e)

    thread = threading.Thread(target=write, name="synth-write", daemon=True)
    # units this run makes (whole shards, the rest of a shard, retried units); the others are done
    bar = Progress(job.count, max(0, job.count - sum(s.size for s in todo)), enabled=show)
    thread.start()
    gw: dict[str, float] = {}
    try:
        while thread.is_alive():
            thread.join(0.5)
            try:
                gateways.check(monitor)
            except Exception:  # noqa: BLE001 - a failed look at the cluster is tried again next time
                log.debug("checking for lost gateways failed", exc_info=True)
            try:
                snap = ray.get(monitor.snapshot.remote(), timeout=5)
                gw = gateways.stats(timeout=5)
                gateways.rebalance()
                bar.update(snap, gw)
                for line in seen["keys"].news(gateways.last_stats + gateways.retired):
                    bar.note(line)
            except Exception:  # noqa: BLE001 - progress is best effort; the run goes on
                pass
        gw = gateways.stats(timeout=10)
    finally:
        tally["gateways_replaced"] += gateways.replaced
        bar.close()
        gateways.flush()  # every stop ships the answer journal: finish, budget, failure, interrupt
        seen["reports"] = gateways.last_stats + gateways.retired
        gateways.kill()
        ray.kill(monitor)
    if failure:
        raise _unwrap(failure[0])
    return gw, sink.results


def worker_pool(workers: int, max_workers: int | None) -> ray.data.ActorPoolStrategy:
    """A fixed pool, or one Ray Data grows while shards wait and the cluster has room for another
    worker (a node joined); it never shrinks below the starting size."""
    if max_workers is None or max_workers <= workers:
        return ray.data.ActorPoolStrategy(size=workers)
    return ray.data.ActorPoolStrategy(min_size=workers, max_size=max_workers)


def _unwrap(e: BaseException) -> BaseException:
    """Ray wraps errors raised in workers; show ours as they were."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 10:
        if isinstance(cur, SynthError):
            return cur
        cause = getattr(cur, "cause", None) or cur.__cause__
        cur = cause if isinstance(cause, BaseException) else None
        seen += 1
    return e


class _CollectingSink(ShardSink):
    """Keeps the per-shard summaries on the driver once the write completes."""

    results: list[dict[str, Any]]

    def on_write_start(self, schema: Any = None) -> None:
        self.results = []

    def on_write_complete(self, write_result: Any) -> None:
        self.results = [r for rs in write_result.write_returns for r in rs]


__all__ = ["BudgetExceeded", "NoKeysLeft", "RunResult", "init_ray", "run_job"]

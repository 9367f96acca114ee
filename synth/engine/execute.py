"""One pass of a run over Ray: gateways, the monitor, the worker pool and the datasink, with the
progress line, until the write completes. The driver (:mod:`synth.engine.run`) plans and reports."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from synth.engine import reaper
from synth.engine.gateways import Gateways
from synth.engine.metrics import RayMeter
from synth.engine.monitor import MonitorActor
from synth.engine.progress import Progress
from synth.engine.sink import ShardSink
from synth.engine.worker import ShardWorker
from synth.errors import SynthError
from synth.spec import JobSpec

log = logging.getLogger("synth.engine")


_REAPER: list[Any] = []  # the watcher of an embedded Ray started by this process


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


def _quiet_ray_data() -> None:
    """Our progress line replaces Ray Data's own bars and execution logs."""
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


def execute(
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
    monitor = MonitorActor.options(  # type: ignore[attr-defined]
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
    ds: Any = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), blocks)))
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
    stop = seen.get("stop")
    stopping = False
    try:
        while thread.is_alive():
            thread.join(0.5)
            if stop is not None and stop.is_set() and not stopping:
                # workers start no more shards; those in flight commit, then the write ends
                stopping = True
                monitor.stop.remote()
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
    _count_dead(job, sink.results)
    if stopping:
        raise KeyboardInterrupt  # the caller stopped the run: as Ctrl-C, once the write has ended
    return gw, sink.results


def _count_dead(job: JobSpec, results: list[dict[str, Any]]) -> None:
    """Dead letters reach the metrics from the driver, once their shards are committed: a shard a
    lost worker made and another made again counts once, and the driver outlives the workers, so
    the last count is exported."""
    meter = RayMeter(job.name)
    for r in results:
        for kind, n in (r.get("dead_by_kind") or {}).items():
            meter.dead(kind, n)
    meter.flush()


def worker_pool(workers: int, max_workers: int | None) -> ray.data.ActorPoolStrategy:
    """A fixed pool, or one Ray Data grows while shards wait and the cluster has room for another
    worker (a node joined); it never shrinks below the starting size."""
    if max_workers is None or max_workers <= workers:
        return ray.data.ActorPoolStrategy(size=workers)
    return ray.data.ActorPoolStrategy(min_size=workers, max_size=max_workers)


def _unwrap(e: BaseException) -> BaseException:
    """Ray wraps errors raised in workers, as a class deriving from both RayTaskError and ours whose
    message carries the remote traceback; show ours as it was raised."""
    cur: BaseException | None = e
    for _ in range(10):
        if cur is None:
            break
        if isinstance(cur, SynthError) and not isinstance(cur, ray.exceptions.RayTaskError):
            return cur
        cause = getattr(cur, "cause", None) or cur.__cause__
        cur = cause if isinstance(cause, BaseException) else None
    return e


class _CollectingSink(ShardSink):
    """Keeps the per-shard summaries on the driver once the write completes."""

    results: list[dict[str, Any]]

    def on_write_start(self, schema: Any = None) -> None:
        self.results = []

    def on_write_complete(self, write_result: Any) -> None:
        self.results = [r for rs in write_result.write_returns for r in rs]


__all__ = ["execute", "init_ray", "shutdown_ray", "worker_pool"]

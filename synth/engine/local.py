"""The single-process executor: one asyncio loop holds the provider stack (every key and limit of
the job, its budget whole, the answer journal), makes shards with the same code as a Ray worker
(:func:`~synth.engine.shardrun.make_shard`) and publishes them with the same code as the Ray
datasink (:class:`~synth.engine.publish.Publisher`). No Ray is imported: a small job starts in about
a second instead of the many seconds a Ray cluster, its actors and Ray Data take to start.

What it gives up is scale, not guarantees: shards commit one by one in the same manifest, answers
are journaled before use and replayed on resume, and a stop of any kind ships the journal."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from synth.engine.answerstore import build_store, ship_every
from synth.engine.gctune import QuietGc
from synth.engine.plan import Shard, fingerprint
from synth.engine.progress import Progress
from synth.engine.publish import Publisher
from synth.engine.shardrun import ShardOutcome, make_shard
from synth.engine.storage import Storage
from synth.generators.base import GenContext
from synth.providers.metrics import NO_METER
from synth.spec import JobSpec

if TYPE_CHECKING:
    from synth.engine.prommetrics import PromMeter

log = logging.getLogger("synth.engine")
TICK_S = 0.5  # progress line refresh
MAX_OPEN = 128
PUBLISHING = 2  # finished shards waiting for their files and commit: generation goes on meanwhile


def slots(job: JobSpec) -> list[tuple[str, int, float]]:
    """Every key of every provider, whole: this process is the only one holding them."""
    return [(p.route, k, 1.0) for p in job.providers for k in range(max(1, len(p.keys)))]


def in_flight(job: JobSpec) -> int:
    """Units kept unfinished at once, as a Ray worker keeps ``shards_per_worker`` shards of up to
    ``concurrency`` units each."""
    return job.engine.concurrency * job.engine.shards_per_worker


def max_open(job: JobSpec) -> int:
    """Shards open at once (memory is about this many shards): room for :func:`in_flight` units plus
    one shard draining behind each, at least four."""
    per = min(job.engine.concurrency, job.output.shard_size)
    return max(4, min(MAX_OPEN, 2 * -(-in_flight(job) // per)))


def execute_local(
    job: JobSpec,
    todo: list[Shard],
    partition_by: list[str],
    done_before: int,
    show: bool,
    tally: dict[str, int],
    seen: dict[str, Any],
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Make and commit ``todo``; returns the provider counters and a summary per shard, as the Ray
    executor does (:func:`synth.engine.execute.execute`)."""
    from synth.providers.dispatch import Dispatcher

    routes = sorted({p.route for p in job.providers})
    meter: PromMeter | None = None
    if job.engine.metrics_port:
        from synth.engine.prommetrics import PromMeter

        meter = PromMeter(job.name)
        meter.serve(job.engine.metrics_port)
    answers = build_store(job, routes, {s.index for s in todo}, set(seen.get("retried", [])))
    dispatcher = Dispatcher.from_spec(job, slots=slots(job), answers=answers, meter=meter or NO_METER)
    run = _LocalRun(job, todo, partition_by, show, dispatcher, seen["keys"], seen.get("stop"), meter)
    try:
        results = asyncio.run(run.main(answers))
        if run.stopped:
            raise KeyboardInterrupt  # the caller stopped the run: as Ctrl-C
    finally:
        if answers is not None:  # every stop ships the journal: finish, budget, failure, interrupt
            answers.ship(final=True)
        seen["reports"] = [dispatcher.stats()]
        if meter is not None:
            meter.close()
    return dispatcher.stats(), results


class _LocalRun:
    def __init__(
        self,
        job: JobSpec,
        todo: list[Shard],
        partition_by: list[str],
        show: bool,
        dispatcher: Any,
        keys: Any,
        stop: threading.Event | None = None,
        meter: PromMeter | None = None,
    ) -> None:
        from synth.generators.registry import create_generator

        self.job = job
        self.todo = iter(todo)
        self.dispatcher = dispatcher
        self.generator = create_generator(job.generator, job)
        self.fp = fingerprint(job)
        self.publisher = Publisher(job.output, partition_by)
        self.storage = Storage(job.output)
        self.live: dict[str, float] = {}
        self.results: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.keys = keys  # notes of keys disabled or cooling, above the progress line
        self.bar = Progress(job.count, max(0, job.count - sum(s.size for s in todo)), enabled=show)
        self.gc = QuietGc()
        self.stop = stop
        self.meter = meter  # flushed each tick: a local run's metrics endpoint (engine.metrics_port)
        self.stopped = False
        self._work: asyncio.Future[Any] | None = None
        self._room = asyncio.Semaphore(PUBLISHING)
        self._unfinished = 0  # units of the open shards not yet made
        self._wake = asyncio.Event()
        self._publishes: set[asyncio.Task[None]] = set()
        self.failed: list[BaseException] = []

    def _unit_done(self, ok: bool) -> None:
        live = self.live
        live["live_units"] = live.get("live_units", 0) + 1
        key = "live_records" if ok else "live_dead"
        live[key] = live.get(key, 0) + 1

    async def main(self, answers: Any) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        # encoding and writing files releases the GIL; two threads keep a slow store from
        # holding up the shards behind it
        pool = ThreadPoolExecutor(2, thread_name_prefix="synth-publish")
        background = [loop.create_task(self._tick())]
        if answers is not None and not self.storage.local:
            background.append(loop.create_task(ship_every(answers)))  # as a gateway ships it
        try:
            ctx = GenContext(job=self.job.name, seed=self.job.seed, llm=self.dispatcher, worker=0)
            await self.generator.setup(ctx)
            self._work = asyncio.ensure_future(self._feed(ctx, pool))
            try:
                await self._work
            except asyncio.CancelledError:
                if not self.stopped:
                    raise
            # shards made are written and committed, on a stop too
            await asyncio.gather(*self._publishes, return_exceptions=True)
            if self.failed:
                raise self.failed[0]
            self._draw()
        finally:
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            pool.shutdown(wait=True)  # no write of a shard lands after the run has returned
            self.bar.close()
            await self.dispatcher.aclose()
        return self.results

    async def _feed(self, ctx: GenContext, pool: ThreadPoolExecutor) -> None:
        """Open shards while fewer than :func:`in_flight` units are unfinished. A shard opens as units
        of the others finish, not when a whole shard has: the units of a shard end together (they
        share the keys' rate), so waiting for whole shards would leave the keys idle for a full
        latency at every turn, seconds when answers take seconds."""
        want, most = in_flight(self.job), max_open(self.job)
        making: set[asyncio.Task[None]] = set()
        try:
            for shard in self.todo:
                while (self._unfinished >= want or len(making) >= most) and not (self.aborted or self.failed):
                    self._wake.clear()
                    await self._wake.wait()
                if self.aborted or self.failed:
                    break
                self._unfinished += shard.size
                task = asyncio.get_running_loop().create_task(self._make(ctx, pool, shard))
                making.add(task)
                task.add_done_callback(making.discard)
                task.add_done_callback(lambda _: self._wake.set())  # after the discard: room seen
            while making:  # the shards open: a failure ends the rest, an abort lets them finish
                done, _ = await asyncio.wait(making, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    exc = None if t.cancelled() else t.exception()
                    if exc is not None:
                        raise exc
        except BaseException:
            for t in making:
                t.cancel()
            await asyncio.gather(*making, return_exceptions=True)
            raise

    async def _make(self, ctx: GenContext, pool: ThreadPoolExecutor, shard: Shard) -> None:
        left = [shard.size]

        def unit_done(ok: bool) -> None:
            left[0] -= 1
            self._unfinished -= 1
            self._unit_done(ok)
            self._wake.set()

        try:
            res: ShardOutcome = await make_shard(
                self.generator, ctx, shard, self.fp, concurrency=self.job.engine.concurrency, on_unit=unit_done
            )
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError):
                self.failed.append(e)
            raise
        finally:
            self._unfinished -= left[0]  # units an abort skipped
            self._wake.set()
        if res.aborted:
            self.aborted.append(res.aborted)
            self.results.append({"shard": shard.index, "aborted": res.aborted})
            return
        # the shard is written and committed while the others go on
        await self._room.acquire()
        task = asyncio.get_running_loop().create_task(self._publish(pool, shard, res))
        self._publishes.add(task)
        task.add_done_callback(self._publishes.discard)

    async def _publish(self, pool: ThreadPoolExecutor, shard: Shard, res: ShardOutcome) -> None:
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                pool, self.publisher.publish, self.storage, shard.index, res.records, res.dead, res.stats, shard.piece()
            )
            self.results.append(done)
            if self.meter is not None:  # dead letters count once committed, as on Ray
                for kind, n in (res.stats.get("dead_by_kind") or {}).items():
                    self.meter.dead(kind, n)
            self.gc.tick()
        except BaseException as e:
            self.failed.append(e)  # no more shards open; the error ends the run
            raise
        finally:
            self._room.release()

    def _draw(self) -> None:
        gw = self.dispatcher.stats()
        self.bar.update(self.live, gw)
        for line in self.keys.news([gw]):
            self.bar.note(line)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if self.stop is not None and self.stop.is_set() and self._work is not None and not self.stopped:
                self.stopped = True  # shards in flight end uncommitted; their paid answers are journaled
                self._work.cancel()
            try:
                self._draw()
                if self.meter is not None:
                    self.meter.flush()
            except Exception:  # noqa: BLE001 - progress and metrics are best effort; the run goes on
                log.debug("progress update failed", exc_info=True)


__all__ = ["execute_local", "in_flight", "max_open", "slots"]

"""Generator workers: Ray Data actors that turn shard descriptors into finished-shard rows.

They hold no keys: model calls go to gateway actors (or, for the offline ``sim`` provider, to an
in-process dispatcher, since it has no keys or limits to share)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np

from synth.engine.client import GatewayClient
from synth.engine.gctune import QuietGc
from synth.engine.metrics import RayMeter
from synth.engine.plan import Shard, fingerprint
from synth.engine.publish import to_ipc
from synth.engine.shardrun import make_shard
from synth.generators.base import GenContext
from synth.spec import JobSpec


def local_routes(job: JobSpec) -> set[str]:
    """Provider routes served in-process: the offline sim, which has no keys or limits. Not with a
    budget: every worker would hold all of it, so the sim is then served by a gateway, where the
    budget is enforced once."""
    if job.budget.max_usd is not None or job.budget.max_tokens is not None:
        return set()
    return {p.route for p in job.providers if p.model.startswith("sim:")}


class ShardWorker:
    def __init__(
        self,
        job_json: str,
        gateways: dict[str, list[Any]],
        weights: dict[str, list[float]] | None = None,
        monitor: Any = None,
        worker: int = 0,
        index: dict[str, list[int]] | None = None,
    ) -> None:
        from synth.generators.registry import create_generator
        from synth.providers.dispatch import Dispatcher

        self.job = JobSpec.model_validate_json(job_json)
        self.fp = fingerprint(self.job)
        self.generator = create_generator(self.job.generator, self.job)
        sim = local_routes(self.job)
        self.meter = RayMeter(self.job.name)  # the in-process sim's calls, and the dead letters made here
        local = (
            Dispatcher.from_spec(self.job, slots=[(r, 0, 1.0) for r in sorted(sim)], meter=self.meter) if sim else None
        )
        eng = self.job.engine
        self.llm = GatewayClient(
            gateways,
            batch_size=eng.batch_size,
            wait_ms=eng.batch_wait_ms,
            local=local,
            local_routes=sim,
            job=self.job,
            weights=weights,
            index=index,
            directory=monitor,
        )
        self.ctx = GenContext(job=self.job.name, seed=self.job.seed, llm=self.llm, worker=worker)
        self.monitor = monitor
        self._setup: asyncio.Future[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self.gc = QuietGc()  # workers hold thousands of units in flight too
        self._live: dict[str, float] = {}  # units finished since the last report to the monitor
        self._reporter: asyncio.Task[None] | None = None
        self._metering: asyncio.Task[None] | None = None
        self._local_sent = (0, 0, 0.0)
        self._stopping = False  # the driver was asked to stop: shards not started are left for a later run

    def _unit_done(self, ok: bool) -> None:
        live = self._live
        live["live_units"] = live.get("live_units", 0) + 1
        key = "live_records" if ok else "live_dead"
        live[key] = live.get(key, 0) + 1

    async def _report_every(self, period: float = 1.0) -> None:
        """Live progress: what this worker finished (and spent in-process) each second."""
        while True:
            await asyncio.sleep(period)
            self._send_live()
            try:
                self._stopping = bool(await self.monitor.stopped.remote())
            except Exception:  # noqa: BLE001 - the monitor restarting: asked again next time
                pass

    def _send_live(self) -> None:
        out, self._live = self._live, {}
        local = self.llm.local
        if local is not None:
            now = (local.usage[0], local.usage[1], local.cost_usd)
            sent, self._local_sent = self._local_sent, now
            out.update(
                {
                    "local_prompt_tokens": now[0] - sent[0],
                    "local_completion_tokens": now[1] - sent[1],
                    "local_cost_usd": now[2] - sent[2],
                }
            )
        if self.monitor is not None and any(out.values()):
            self.monitor.report.remote(out)

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        if self._setup is None:
            self._setup = asyncio.ensure_future(self.generator.setup(self.ctx))
        await self._setup
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.job.engine.shards_per_worker)
        if self._reporter is None and self.monitor is not None:
            self._reporter = asyncio.ensure_future(self._report_every())
        if self._metering is None:
            self._metering = asyncio.ensure_future(self.meter.run())
        async with self._slots:  # Ray Data hands a worker several batches at once; memory is bounded here
            return await self._make(batch)

    async def _make(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"shard": [], "piece": [], "records": [], "dead": [], "stats": [], "aborted": []}
        for i in range(len(batch["shard"])):
            shard = Shard.from_item(**{key: batch[key][i] for key in ("shard", "start", "stop", "part", "only")})
            if self._stopping:
                for key, value in (("records", b""), ("dead", b""), ("stats", "{}")):
                    out[key].append(value)
                out["shard"].append(shard.index)
                out["piece"].append(json.dumps(shard.piece()))
                out["aborted"].append("stopped: the run was stopped before this shard started")
                continue
            res = await make_shard(
                self.generator,
                self.ctx,
                shard,
                self.fp,
                concurrency=self.job.engine.concurrency,
                on_unit=self._unit_done,
            )
            out["shard"].append(shard.index)
            out["piece"].append(json.dumps(shard.piece()))
            out["records"].append(to_ipc(res.records))
            out["dead"].append(to_ipc(res.dead))
            out["stats"].append(json.dumps(res.stats))
            out["aborted"].append(res.aborted)
            if self.monitor is not None:
                self.monitor.report.remote({**res.stats, "shards": 1, "aborted": 1 if res.aborted else 0})
            self.gc.tick()
        self.meter.flush()  # at the end of each batch too: a worker may be ended before its next tick
        return out

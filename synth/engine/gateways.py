"""The run's gateways, as the driver keeps them: placed one per node in turn, watched, and replaced
when their node is lost.

A gateway pinned to a node that leaves the cluster cannot restart, and its keys would sit out the
rest of the run. :meth:`Gateways.check` notices the node is gone, starts a gateway holding the same
key slots on the surviving node with the fewest gateways, gives it what the lost one had not
spent (or held for calls in flight) of its budget share, and publishes the new table to the
directory (the run's :class:`~synth.engine.monitor.MonitorActor`), where workers find it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from synth.engine.gateway import GatewayActor, Slot, budget_shares, error_from_wire, plan_slots, slot_weight
from synth.engine.monitor import merge_gateway_stats
from synth.engine.worker import local_routes
from synth.providers.budget import deal
from synth.spec import JobSpec

log = logging.getLogger("synth.engine")
CHECK_S = 2.0  # how often the driver looks for lost nodes
READY_S = 120.0  # how long a replacement may take to start


def _alive_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


class Gateways:
    def __init__(self, job: JobSpec) -> None:
        self.job = job
        self.job_json = job.model_dump_json()
        self.actors: list[Any] = []
        self.nodes: list[str | None] = []  # where each gateway runs (None: not pinned, or given up)
        self.slots: list[list[Slot]] = []
        self.shares: list[float] = []
        self.by_route: dict[str, list[Any]] = {}
        self.weights: dict[str, list[float]] = {}
        self.index: dict[str, list[int]] = {}  # route -> each handle's number in the table
        self.last_stats: list[dict[str, Any]] = []
        self.retired: list[dict[str, Any]] = []  # last known stats of gateways that were lost
        self.replaced = 0
        self.gone: set[int] = set()  # lost and not replaced: their keys sit out the run
        self._used: dict[tuple[str, int], float] = {}  # budget used at the last rebalance
        self._calls: list[Any] = []
        self._checked = 0.0
        self.todo: list[int] = []  # shards this run makes: only their journaled answers are loaded
        self.retried: list[int] = []  # units --retry-failed makes again: bought afresh, not replayed
        self.flushed: list[dict[str, Any]] = []

    def _create(self, i: int, node: str | None, spent: tuple[float, int] = (0.0, 0)) -> Any:
        where = NodeAffinitySchedulingStrategy(node, soft=False) if node else "SPREAD"
        return GatewayActor.options(scheduling_strategy=where).remote(  # type: ignore[attr-defined]
            self.job_json, self.slots[i], self.shares[i], spent, self.todo, self.retried
        )

    def start(self) -> None:
        """One gateway per node in turn, so keys are spread over the cluster; a gateway that cannot
        start (e.g. a key variable unset on its node) stops the run with its one-line error."""
        sim = local_routes(self.job)
        keyed = [p.route for p in self.job.providers if p.route not in sim]
        nodes = _alive_nodes()
        self.slots = plan_slots(self.job, keyed, gateways=max(1, len(nodes)) * self.job.engine.gateways_per_node)
        self.shares = budget_shares(self.job, self.slots)
        self.nodes = [nodes[i % len(nodes)] if nodes else None for i in range(len(self.slots))]
        self.actors = [self._create(i, self.nodes[i]) for i in range(len(self.slots))]
        self.last_stats = [{} for _ in self.actors]
        for i, (slots, routes) in enumerate(zip(self.slots, ray.get([a.ready.remote() for a in self.actors]))):
            if isinstance(routes, tuple):
                self.kill()
                kind, msg, _ = routes
                if kind == "key_missing":
                    msg += " (keys are read on the Ray node running the gateway: set the variable there)"
                raise error_from_wire(kind, msg, 0)
            for r in routes:
                self.by_route.setdefault(r, []).append(self.actors[i])
                self.weights.setdefault(r, []).append(slot_weight(self.job, slots, r))
                self.index.setdefault(r, []).append(i)

    def _spent(self, i: int) -> tuple[float, int]:
        """What gateway ``i`` had spent or held at its last report: a replacement must not spend it again."""
        b = self.last_stats[i].get("budget") or {}
        return (b.get("spent_usd", 0.0) + b.get("held_usd", 0.0), b.get("spent_tokens", 0) + b.get("held_tokens", 0))

    def check(self, directory: Any, *, force: bool = False) -> int:
        """Replace the gateways whose node is gone; returns how many were replaced now."""
        if not self.actors or (not force and time.monotonic() - self._checked < CHECK_S):
            return 0
        self._checked = time.monotonic()
        alive = _alive_nodes()
        lost = [i for i, n in enumerate(self.nodes) if n is not None and n not in alive]
        if not lost or not alive:
            return 0
        done = 0
        for i in lost:
            node = min(alive, key=lambda n: (self.nodes.count(n), n))
            actor = self._create(i, node, self._spent(i))
            try:
                ready = ray.get(actor.ready.remote(), timeout=READY_S)
            except Exception as e:  # noqa: BLE001 - that node may be going too; the others carry on
                ready = ("internal", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", 0)
            if isinstance(ready, tuple):
                ray.kill(actor)
                self.nodes[i] = None
                self.gone.add(i)
                log.warning(
                    "gateway %d's node left the cluster and no replacement started (%s); its keys sit "
                    "out the rest of this run",
                    i,
                    ready[1],
                )
                continue
            self.retired.append(self.last_stats[i])
            self.last_stats[i] = {}
            self.actors[i], self.nodes[i] = actor, node
            self.replaced += 1
            done += 1
            log.warning("gateway %d's node left the cluster; its keys now run on node %s", i, node[:12])
        if done:
            directory.publish_gateways.remote(self.replaced, list(self.actors))
        return done

    def stats(self, timeout: float) -> dict[str, float]:
        """Every gateway's counters summed, lost ones at their last report; a gateway that does not
        answer in time counts as it last did."""
        if not self.actors:
            return {}
        refs = [a.stats.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        done = set(ready)
        for i, ref in enumerate(refs):
            if ref in done:
                try:
                    self.last_stats[i] = ray.get(ref)
                except Exception:  # noqa: BLE001 - dead or restarting: keep its last report
                    pass
        return merge_gateway_stats(self.last_stats + self.retired)

    def rebalance(self) -> None:
        """Move the budget no gateway has used yet to where it is being spent.

        Each gateway stops the job when its own part of the budget is gone, so a fixed split would
        stop it early whenever spending is uneven (a revoked key, a lost node, a slow provider).
        From the gateways' last reports, what is left of the whole budget is dealt again: half by
        key capacity, half by what each spent since the last deal. The parts still add up to the
        budget, so together they can never spend more; a gateway that spent past its report
        finds that much less room."""
        b = self.job.budget
        live = [i for i in range(len(self.actors)) if i not in self.gone]
        if (b.max_usd is None and b.max_tokens is None) or len(live) < 2:
            return
        reports = [self.last_stats[i].get("budget") for i in live]
        if any(r is None for r in reports):
            return  # until every gateway has reported once
        capacity = [self.shares[i] for i in live]
        caps: dict[str, list[float]] = {}
        for unit, total in (("usd", b.max_usd), ("tokens", b.max_tokens)):
            if total is None:
                continue
            # gateways lost before: what they used is gone from the budget for good
            out = [s.get("budget") or {} for s in self.retired] + [
                self.last_stats[i].get("budget") or {} for i in self.gone
            ]
            before = [self._used.get((unit, i), 0.0) for i in live]
            caps[unit], now = deal(total, unit, reports, out, capacity, before)  # type: ignore[arg-type]
            self._used.update({(unit, i): u for i, u in zip(live, now)})
        self._settle_calls()
        for k, i in enumerate(live):
            usd = caps["usd"][k] if "usd" in caps else None
            tokens = int(caps["tokens"][k]) if "tokens" in caps else None
            self._calls.append(self.actors[i].set_budget.remote(usd, tokens))

    def _settle_calls(self) -> None:
        """Collect answered budget calls, errors too (a dead gateway's), so Ray has none to report."""
        if not self._calls:
            return
        ready, self._calls = ray.wait(self._calls, num_returns=len(self._calls), timeout=0)
        for ref in ready:
            try:
                ray.get(ref)
            except Exception:  # noqa: BLE001 - its loss is handled by check()
                pass

    def flush(self, timeout: float = 30.0) -> None:
        """Ship every gateway's answer journal (at every stop, before the gateways go)."""
        if not self.actors:
            return
        refs = [a.flush.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for i, ref in enumerate(refs):
            if ref in ready:
                try:
                    self.last_stats[i] = ray.get(ref) or self.last_stats[i]
                except Exception:  # noqa: BLE001 - a lost gateway's journal ships with its node's next run
                    log.warning("gateway %d could not ship its answer journal", i)

    def kill(self) -> None:
        self._calls.clear()
        for a in self.actors:
            ray.kill(a)


__all__ = ["Gateways"]

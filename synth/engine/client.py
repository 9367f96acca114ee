"""The LLM a worker's generator calls: it batches concurrent requests per route to gateway actors.

Requests of many units are gathered into one Ray call per gateway, and results stream back in
small groups as they finish (see :class:`~synth.engine.gateway.GatewayActor`). A gateway that dies
is handled here: its unanswered requests are sent again (to the same gateway once Ray has
restarted it, or to the route's other gateways), and when the driver publishes a replacement for a
gateway whose node was lost, the client switches to it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from ray.exceptions import ActorUnschedulableError, RayActorError

from synth import errors as E
from synth.engine.gateway import completion_from_wire, error_from_wire, request_to_wire
from synth.records import Completion, EmbeddingRequest, Embeddings, Request
from synth.spec import JobSpec

Pending = list[tuple[Request, "asyncio.Future[Completion]"]]
REFRESH_S = 1.0  # how often a client missing a gateway asks the directory for a replacement


class _StreamLost(Exception):
    """A gateway's result stream ended without results."""


# a gateway died, is restarting, or was pinned to a node that is gone
_GATEWAY_LOST = (RayActorError, ActorUnschedulableError, _StreamLost)


class GatewayClient:
    """Sends a route's requests to its gateways in proportion to their key capacity.

    ``index`` gives each handle's number in the run's gateway table and ``directory`` is the actor
    (:class:`~synth.engine.monitor.MonitorActor`) that publishes that table when the driver
    replaces a lost gateway; without them, a lost gateway's keys sit out the rest of the run."""

    def __init__(
        self,
        gateways: dict[str, list[Any]],
        *,
        batch_size: int = 256,
        wait_ms: float = 5.0,
        local: Any = None,
        local_routes: set[str] | None = None,
        job: JobSpec | None = None,
        weights: dict[str, list[float]] | None = None,
        index: dict[str, list[int]] | None = None,
        directory: Any = None,
    ) -> None:
        # the full layout, kept to put a replaced gateway back: route -> [(table index, capacity share)]
        self._layout: dict[str, list[tuple[int, float]]] = {}
        self._handles: dict[int, Any] = {}
        auto: dict[int, int] = {}  # without an index, each distinct handle gets its own number
        for r, hs in gateways.items():
            ids = (index or {}).get(r) or [auto.setdefault(id(h), -1 - len(auto)) for h in hs]
            ws = (weights or {}).get(r) or [1.0] * len(hs)
            self._layout[r] = list(zip(ids, ws))
            self._handles.update(zip(ids, hs))
        # own copy, pruned as gateways are lost or run out of keys: route -> [(gateway, share)]
        self.gateways: dict[str, list[tuple[Any, float]]] = {
            r: [(self._handles[i], w) for i, w in lay] for r, lay in self._layout.items()
        }
        self.directory = directory
        self._version = 0
        self._lost: set[int] = set()  # table indices whose gateway died and was dropped
        self._exhausted: set[tuple[str, int]] = set()  # (route, index): that gateway's keys are gone
        self._refreshed = 0.0
        self._refreshing: asyncio.Future[None] | None = None
        self._load: dict[int, int] = defaultdict(int)  # requests this worker has in flight per gateway
        self.batch_size = batch_size
        self.wait = wait_ms / 1000
        self.flush_ms = max(5.0, wait_ms)  # gateways gather results as long as workers gather requests
        self.local = local  # an in-process Dispatcher for keyless offline providers (sim)
        self.local_routes = local_routes or set()
        self.job = job
        self._pending: dict[str, Pending] = defaultdict(list)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._routes: dict[str, str] = {}  # model -> the route its requests go to

    # ------------------------------------------------------------------ the gateway table

    def _index_of(self, gw: Any) -> int | None:
        return next((i for i, h in self._handles.items() if h is gw), None)

    def _drop(self, route: str, gw: Any) -> None:
        self.gateways[route] = [hw for hw in self.gateways[route] if hw[0] is not gw]

    async def refresh(self) -> bool:
        """Take the directory's newest table; True when this call changed a gateway handle."""
        if self.directory is None:
            return False
        if self._refreshing is not None:  # one question at a time; the others wait for its answer
            await asyncio.shield(self._refreshing)
            return False
        self._refreshing = asyncio.get_running_loop().create_future()
        self._refreshed = time.monotonic()
        try:
            version, table = await self.directory.gateways.remote()
        except Exception:  # noqa: BLE001 - the directory restarting: try again later
            return False
        finally:
            self._refreshing.set_result(None)
            self._refreshing = None
        if version <= self._version:
            return False
        self._version = version
        changed = False
        for i, h in enumerate(table):
            if h is None or i not in self._handles or self._handles[i] == h:
                continue
            old, self._handles[i] = self._handles[i], h
            changed = True
            self._lost.discard(i)
            for route, lay in self._layout.items():
                if (route, i) in self._exhausted or all(x != i for x, _ in lay):
                    continue
                share = next(w for x, w in lay if x == i)
                self.gateways[route] = [hw for hw in self.gateways.get(route, []) if hw[0] is not old]
                self.gateways[route].append((h, share))
        return changed

    def _maybe_refresh(self) -> None:
        if self._lost and self.directory is not None and time.monotonic() - self._refreshed >= REFRESH_S:
            self._refreshed = time.monotonic()
            asyncio.ensure_future(self.refresh())

    # ------------------------------------------------------------------ LLM protocol

    def _least_loaded(self, route: str) -> tuple[Any, float]:
        return min(self.gateways[route], key=lambda hw: self._load[id(hw[0])] / hw[1])

    def _route(self, model: str) -> str:
        route = self._routes.get(model)
        if route is None:
            # the route's first provider: its gateways try the others when it fails
            targets = self.job.route_targets(model) if self.job is not None else []
            route = self._routes[model] = targets[0] if targets else model
        return route

    def _is_local(self, route: str) -> bool:
        return route in self.local_routes

    async def complete(self, request: Request) -> Completion:
        route = self._route(request.model)
        if self._is_local(route):
            return await self.local.complete(request)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Completion] = loop.create_future()
        q = self._pending[route]
        q.append((request, fut))
        if len(q) >= self.batch_size:
            self._flush(route)
        elif route not in self._timers:
            self._timers[route] = loop.call_later(self.wait, self._flush, route)
        return await fut

    def _flush(self, route: str) -> None:
        timer = self._timers.pop(route, None)
        if timer is not None:
            timer.cancel()
        batch, self._pending[route] = self._pending[route], []
        if batch:
            asyncio.ensure_future(self._send(route, batch))

    async def _send(self, route: str, batch: Pending, tries: int = 0) -> None:
        """Spread a batch over the route's gateways by load per unit of key capacity, so a big
        batch never queues behind one key while the others idle."""
        self._maybe_refresh()
        if not self.gateways.get(route):
            err = E.ConfigError(f"no gateway holds keys for route {route!r}")
            for _, f in batch:
                if not f.done():
                    f.set_exception(err)
            return
        groups: dict[int, tuple[Any, Pending]] = {}
        for item in batch:
            gw, _ = self._least_loaded(route)
            self._load[id(gw)] += 1
            groups.setdefault(id(gw), (gw, []))[1].append(item)
        await asyncio.gather(*(self._send_to(route, gw, items, tries) for gw, items in groups.values()))

    async def _send_to(self, route: str, gw: Any, batch: Pending, tries: int) -> None:
        exhausted: Pending = []
        pending = len(batch)
        try:
            stream = gw.complete_stream.options(num_returns="streaming").remote(
                [request_to_wire(r) for r, _ in batch], self.flush_ms
            )
            async for ref in stream:
                items = await ref
                if not isinstance(items, list):  # the stream was cut (e.g. the gateway's node went away)
                    raise _StreamLost(type(items).__name__)
                for i, ok, res in items:
                    pending -= 1
                    self._load[id(gw)] -= 1
                    f = batch[i][1]
                    if f.done():
                        continue
                    if ok:
                        f.set_result(completion_from_wire(res))
                    elif res[0] == "no_keys_left" and len(self.gateways.get(route, ())) > 1:
                        exhausted.append(batch[i])  # this gateway's keys are gone; others may have some
                    else:
                        f.set_exception(error_from_wire(*res))
        except _GATEWAY_LOST:
            await self._resend_after_loss(route, gw, batch, pending, tries)
            return
        except Exception as e:  # noqa: BLE001 - anything else ends its requests, never leaves them waiting
            self._load[id(gw)] -= pending
            err = E.Transient(
                f"gateway call failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            )
            for _, f in batch:
                if not f.done():
                    f.set_exception(err)
            return
        if exhausted:
            index = self._index_of(gw)
            if index is not None:
                self._exhausted.add((route, index))
            self._drop(route, gw)
            await self._send(route, exhausted, tries)

    async def _on_lost(self, route: str, gw: Any, tries: int) -> bool:
        """A call to ``gw`` failed because the gateway is gone: take a published replacement
        (True), or after repeated failures drop it from the route while others remain (Ray
        restarts a crashed gateway on its node; one whose node is gone cannot restart)."""
        index = self._index_of(gw)
        await self.refresh()
        if index is not None and self._handles.get(index) is not gw:  # replaced, by this refresh or another
            return True
        if tries >= 1 and len(self.gateways.get(route, ())) > 1:
            if index is not None:
                self._lost.add(index)
            self._drop(route, gw)
        await asyncio.sleep(min(10.0, 0.25 * 2**tries))  # let Ray restart it
        return False

    async def _resend_after_loss(self, route: str, gw: Any, batch: Pending, pending: int, tries: int) -> None:
        """The gateway died: its unanswered requests are sent again."""
        self._load[id(gw)] -= pending
        left = [(r, f) for r, f in batch if not f.done()]
        if left and tries < 8:
            await self._on_lost(route, gw, tries)
            await self._send(route, left, tries + 1)
            return
        for _, f in left:
            f.set_exception(E.Transient("gateway process died repeatedly; see the Ray logs"))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        route = self._route(request.model)
        if self._is_local(route):
            return await self.local.embed(request)
        for tries in range(8):
            if not self.gateways.get(route):
                raise E.ConfigError(f"no gateway holds keys for route {route!r}")
            gw, _ = self._least_loaded(route)
            self._load[id(gw)] += 1
            try:
                res = await gw.embed.remote(request)
            except _GATEWAY_LOST:
                self._load[id(gw)] -= 1
                await self._on_lost(route, gw, tries)
                continue
            self._load[id(gw)] -= 1
            if isinstance(res, tuple):
                raise error_from_wire(*res)
            return res
        raise E.Transient("gateway process died repeatedly; see the Ray logs")


__all__ = ["GatewayClient"]

"""The simulator's core: key checks, per-key limits, faults, latency, stats, and the admin API.

Every model endpoint of both wires runs through :meth:`Simulator.handle`: check the key, parse,
admit against the key's buckets (429 otherwise), draw a fault, let the wire answer (sleeping the
simulated latency), settle the token reservation, count. Admin endpoints live under ``/_sim/``
and never need a key.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from synth.simulator import gemini_wire, openai_wire
from synth.simulator.config import KeyOverride, SimConfig
from synth.simulator.content import MALFORMED_KINDS
from synth.simulator.http import Op, Wire, json_response
from synth.simulator.limits import Bucket, KeyState, admit, ratelimit_headers
from synth.simulator.stats import Stats, key_label

SIM: web.AppKey[Simulator] = web.AppKey("sim")


class Simulator:
    """State of one simulator: config, per-key buckets, stats. Build the app with :meth:`app`."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.initial = (config or SimConfig()).model_copy(deep=True)
        self.config = self.initial.model_copy(deep=True)
        self.overrides: dict[str, KeyOverride] = {}
        self.stats = Stats()
        self.url = ""
        self._states: dict[str, KeyState] = {}
        self._labels: dict[str, str] = {}
        self.rng = random.Random(self.config.seed)
        self._derive()

    # ------------------------------------------------------------------ config

    def _derive(self) -> None:
        c = self.config
        self.ttft, self.tpot = c.latency_s()
        self._accepted = set(c.keys) if c.keys is not None else None
        self._revoked = set(c.revoked)
        self._states.clear()  # limits changed: every key starts with a full bucket

    def configure(self, **patch: Any) -> SimConfig:
        if "seed" in patch:
            self.rng = random.Random(patch["seed"])
        self.config = SimConfig.model_validate({**self.config.model_dump(), **patch})
        self._derive()
        return self.config

    def set_keys(self, overrides: dict[str, dict[str, Any] | None]) -> None:
        for key, o in overrides.items():
            if o is None:
                self.overrides.pop(key, None)
            else:
                self.overrides[key] = KeyOverride.model_validate(o)
            self._states.pop(key, None)

    def reset(self, *, config: bool = False, keys: bool = False) -> None:
        self.stats.reset()
        if keys:
            self.overrides.clear()
        if config:
            self.config = self.initial.model_copy(deep=True)
            self.rng = random.Random(self.config.seed)
        self._derive()

    # ------------------------------------------------------------------ keys

    def label(self, key: str) -> str:
        lab = self._labels.get(key)
        if lab is None:
            lab = key_label(key)
            if len(self._labels) < 100_000:
                self._labels[key] = lab
        return lab

    def key_problem(self, key: str | None) -> str | None:
        if not key:
            return "missing"
        o = self.overrides.get(key)
        if (o is not None and o.revoked) or (key in self._revoked and not (o is not None and o.revoked is False)):
            return "revoked"
        if self._accepted is not None and key not in self._accepted and o is None:
            return "invalid"
        return None

    def state(self, key: str) -> KeyState:
        st = self._states.get(key)
        if st is None:
            c, o = self.config, self.overrides.get(key) or KeyOverride()
            rpm, tpm = o.rpm or c.rpm, o.tpm or c.tpm
            st = KeyState(
                requests=Bucket(rpm, c.burst_seconds) if rpm else None,
                tokens=Bucket(tpm, c.burst_seconds) if tpm else None,
                concurrency=o.concurrency or c.concurrency,
                stats=self.stats.for_key(self.label(key)),
            )
            self._states[key] = st
        return st

    # ------------------------------------------------------------------ faults and latency

    def draw_fault(self, structured: bool) -> str | None:
        c, r = self.config, self.rng
        if c.hang_rate and r.random() < c.hang_rate:
            return "hang"
        if c.error_rate and r.random() < c.error_rate:
            return "error"
        if structured and c.malformed_rate and r.random() < c.malformed_rate:
            return MALFORMED_KINDS[r.randrange(len(MALFORMED_KINDS))]
        return None

    def jitter(self, seconds: float) -> float:
        j = self.config.jitter
        return seconds * (1.0 + j * (2.0 * self.rng.random() - 1.0)) if j and seconds > 0 else seconds

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    # ------------------------------------------------------------------ the request path

    async def handle(self, request: web.Request, wire: Wire, op: Op) -> web.StreamResponse:
        self.stats.arrived()
        key = wire.key(request)
        problem = self.key_problem(key)
        if problem is not None:
            resp = wire.auth_error(problem)
            self.stats.status(resp.status, None)
            return resp
        assert key is not None
        st = self.state(key)
        try:
            raw = await request.read()
            job = op.parse(orjson.loads(raw) if raw else None, request, self)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # JSONDecodeError is a ValueError
            self.stats.status(400, st.stats)
            return wire.error(400, f"invalid request body: {e}")
        now = time.monotonic()
        rej = admit(st, job.prompt_tokens + job.reserved, now)
        if rej is not None:
            self.stats.status(429, st.stats)
            return wire.rate_limited(rej, ratelimit_headers(st, now), getattr(job, "model", ""))
        settled = False

        def settle(completion_tokens: int) -> dict[str, str]:
            nonlocal settled
            settled = True
            if st.tokens is not None and completion_tokens != job.reserved:
                st.tokens.give(job.reserved - completion_tokens)
            self.stats.status(200, st.stats)
            self.stats.success(st.stats, job.prompt_tokens, completion_tokens)
            return ratelimit_headers(st, time.monotonic())

        fault = self.draw_fault(job.structured)
        try:
            if fault == "hang":
                self.stats.unanswered(st.stats, hang=True)
                await asyncio.sleep(self.config.hang_s)
                self.stats.status(504, st.stats)
                return wire.error(504, "the request timed out")
            if fault == "error":
                await self.sleep(self.jitter(self.ttft))
                status = 500 if self.rng.random() < 0.5 else 503
                self.stats.status(status, st.stats)
                return wire.error(status, "")
            return await op.answer(request, job, fault, self, settle)
        except asyncio.CancelledError:  # the client went away
            if not settled and fault != "hang":
                self.stats.unanswered(st.stats, hang=False)
            raise
        finally:
            st.in_flight -= 1
            if not settled and st.tokens is not None:
                st.tokens.give(job.reserved)  # nothing was produced

    # ------------------------------------------------------------------ admin API

    def config_view(self) -> dict[str, Any]:
        d = self.config.model_dump(exclude={"revoked", "keys"})
        d["revoked_keys"] = len(self.config.revoked)
        d["accepted_keys"] = None if self.config.keys is None else len(self.config.keys)
        d["key_overrides"] = {self.label(k): v.model_dump(exclude_none=True) for k, v in self.overrides.items()}
        return d

    async def _admin(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        try:
            body = await request.json() if request.can_read_body else {}
            if action == "stats" and request.method == "GET":
                window = float(request.query.get("window", "10"))
                snap = self.stats.snapshot(window)
                snap["in_flight"] = sum(s.in_flight for s in self._states.values())
                return json_response(snap)
            if action == "config" and request.method == "GET":
                return json_response(self.config_view())
            if action == "config" and request.method == "POST":
                self.configure(**(body or {}))
                return json_response(self.config_view())
            if action == "keys" and request.method == "POST":
                self.set_keys(body or {})
                return json_response(self.config_view())
            if action == "reset" and request.method == "POST":
                body = body or {}
                self.reset(config=bool(body.get("config")), keys=bool(body.get("keys")))
                return json_response({"ok": True})
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            return json_response({"error": msg}, status=400)
        except (ValueError, TypeError) as e:
            return json_response({"error": str(e)}, status=400)
        return json_response({"error": f"no admin endpoint {request.method} /_sim/{action}"}, status=404)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/_sim/{action}", self._admin)
        openai_wire.add_routes(app, self)
        gemini_wire.add_routes(app, self)
        return app


async def start_server(config: SimConfig | None = None, sim: Simulator | None = None) -> tuple[web.AppRunner, str]:
    """Start a simulator in this event loop; returns the runner (``await runner.cleanup()`` stops
    it) and its URL. The :class:`Simulator` is ``runner.app[SIM]``."""
    sim = sim or Simulator(config)
    cfg = sim.config
    app = sim.app()
    app[SIM] = sim
    # handler_cancellation: a client that gives up frees its concurrency slot at once
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    site = web.SockSite(runner, sock, backlog=2048)
    await site.start()
    port = sock.getsockname()[1]
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    sim.url = f"http://{host}:{port}"
    return runner, sim.url


@asynccontextmanager
async def simulator(config: SimConfig | None = None) -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the block::

    async with simulator(SimConfig(rpm=600)) as sim:
        client = AsyncOpenAI(base_url=sim.url + "/v1", api_key="k")
    """
    sim = Simulator(config)
    runner, _ = await start_server(sim=sim)
    try:
        yield sim
    finally:
        await runner.cleanup()

"""What the simulator's server and its two wires share: the protocols of an endpoint and of an API
family, the 400 error, and JSON responses. Kept apart so the wires and the server import it, not
each other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from synth.simulator.limits import Rejection

if TYPE_CHECKING:  # annotations only: the server imports this module, not the other way round
    from synth.simulator.server import Simulator

Settle = Callable[[int], dict[str, str]]


class BadInput(ValueError):
    """The request body is not what the endpoint accepts (answered 400)."""


class Job(Protocol):
    prompt_tokens: int
    reserved: int  # output tokens reserved on admission
    structured: bool


class Wire(Protocol):
    """How one API family names keys and words its errors."""

    def key(self, request: web.Request) -> str | None: ...

    def auth_error(self, problem: str) -> web.Response: ...

    def error(self, status: int, message: str) -> web.Response: ...

    def rate_limited(self, rej: Rejection, headers: dict[str, str], model: str) -> web.Response: ...


class Op(Protocol):
    """One endpoint: parse a body into a job, then answer it."""

    def parse(self, body: Any, request: web.Request, sim: Simulator) -> Job: ...

    def answer(
        self, request: web.Request, job: Any, fault: str | None, sim: Simulator, settle: Settle
    ) -> Awaitable[web.StreamResponse]: ...


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)  # compact UTF-8, as json.dumps(separators=...)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(obj), status=status, headers=headers, content_type="application/json")


__all__ = ["BadInput", "Job", "Op", "Settle", "Wire", "dumps", "json_response"]

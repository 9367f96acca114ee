"""The one seam of the provider layer: a :class:`Layer` answers a request for a :class:`Call`, and
every policy is a layer that wraps the next one, down to the client.

A ``Call`` is what the layers of one request share, so no layer needs another's internals: the
provider the routing layer picked (``target``), what the request has spent so far over every
provider and re-ask (``attempts``, ``usage``, ``cost_usd``), its size (``prompt``, ``max_out``),
and per attempt the key slot, the budget hold and whether a failed call was billed. The
:class:`Ledger` is what they share across requests: the counters of the process and why the job
stopped, if it did.

A layer's ``complete``/``embed`` may be a plain method returning the next layer's awaitable when
it has nothing to do for a call: that saves a coroutine frame on the hot path.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from synth.providers.metrics import NO_METER, Meter
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Usage

if TYPE_CHECKING:
    from synth.providers.keys import KeySlot
    from synth.providers.target import Target

log = logging.getLogger("synth.providers")

DEFAULT_MAX_TOKENS = 256  # reserved when neither the request nor the provider's params set max_tokens

# how a failed call was paid for (Call.billed): not at all, as part of the request, or by a call
# whose request is gone (cancelled, or a provider bug): the process paid, the request reports nothing
NOT_BILLED, BILLED, LOST = 0, 1, 2


class Layer(Protocol):
    """One policy (or the client at the bottom): answer ``request`` for ``call``, or raise."""

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]: ...

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]: ...


class Call:
    """What the layers of one request share (see the module's docstring)."""

    __slots__ = (
        "target",
        "last",
        "attempts",
        "usage",
        "cost_usd",
        "prompt",
        "max_out",
        "tokens",
        "tries",
        "slot",
        "gate",
        "held",
        "held_usd",
        "billed",
        "used",
        "paid",
    )

    def __init__(self) -> None:
        self.target: Target = None  # type: ignore[assignment]  # set by the routing layer
        self.last = True  # no fallback provider comes after this target
        self.attempts = 0  # provider calls, re-asks and every provider tried included
        self.usage: Usage | None = None
        self.cost_usd = 0.0
        self.prompt = 0  # this attempt's size: prompt tokens, worst-case output tokens, their sum
        self.max_out = 0
        self.tokens = 0
        self.tries = 0  # retryable failures so far on this target: the backoff's exponent
        self.slot: KeySlot | None = None  # the key slot of the call out (or last out)
        self.gate: Any = None  # a budget to hold on once a key is granted (``try_hold(usd, tokens)``)
        self.held = False  # the budget holds this call's worst case
        self.held_usd = 0.0  # ... of this many dollars
        self.billed = NOT_BILLED  # how the failed call out was paid for
        self.used = 0  # tokens the answered call counts against its key and the budget
        self.paid = 0.0  # dollars the answered call cost

    def measure(self, prompt: int, max_out: int) -> None:
        self.prompt = prompt
        self.max_out = max_out
        self.tokens = prompt + max_out


class Again(Exception):
    """Go round again: the attempt made no call and spent nothing (a key was disabled, or the
    budget filled up while this request waited for a key). Raised below the retry layer, which
    loops on it without counting a retry."""


class Ledger:
    """What the layers share across requests: counters, tokens and dollars of this process, why
    the job stopped (every request then raises JobStopped), and the metrics the counting points
    also report to (:mod:`synth.providers.metrics`)."""

    def __init__(self, meter: Meter = NO_METER) -> None:
        self.meter = meter
        self.counts: Counter[str] = Counter()
        self.usage = [0, 0]  # prompt, completion tokens
        self.cost_usd = 0.0
        self.stopped: str | None = None

    def stop(self, why: str) -> str:
        """Stop the job (the first reason wins); returns the reason it stopped for."""
        if self.stopped is None:
            self.stopped = why
            log.error("stopping: %s", why)
        return self.stopped


__all__ = ["BILLED", "DEFAULT_MAX_TOKENS", "LOST", "NOT_BILLED", "Again", "Call", "Layer", "Ledger"]

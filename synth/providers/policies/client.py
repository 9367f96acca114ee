"""The bottom of the stack: the provider client of the routed target, called with the key the key
layer granted (:class:`~synth.providers.base.Provider`: sim, the lean OpenAI-compatible wire
client, the OpenAI SDK, Gemini)."""

from __future__ import annotations

from collections.abc import Awaitable

from synth.providers.policies.base import Call
from synth.records import Completion, EmbeddingRequest, Embeddings, Request


class ClientLayer:
    """Calls ``call.target.provider``; plain methods, so the call costs no coroutine of its own."""

    def complete(self, request: Request, call: Call) -> Awaitable[Completion]:
        t = call.target
        slot = call.slot
        return t.provider.complete(request, None if slot is None else slot.key, timeout=t.timeout)

    def embed(self, request: EmbeddingRequest, call: Call) -> Awaitable[Embeddings]:
        t = call.target
        slot = call.slot
        return t.provider.embed(request, None if slot is None else slot.key, timeout=t.timeout)

    def __repr__(self) -> str:
        return "ClientLayer()"


__all__ = ["ClientLayer"]

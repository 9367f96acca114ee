"""An offline synth provider: answers every chat request with its last user message, reversed.

It implements :class:`synth.providers.base.Provider` and is registered under the ``synth.providers``
entry-point group as ``echo``, so a job names it ``model: echo:<anything>``.
"""

from __future__ import annotations

from typing import Any

from synth.errors import BadRequest
from synth.records import Completion, EmbeddingRequest, Embeddings, Request, Usage


class EchoProvider:
    kind = "echo"

    def __init__(self, model: str, *, prefix: str = "") -> None:
        self.model = model
        self.prefix = prefix

    @classmethod
    def from_spec(cls, spec: Any) -> EchoProvider:
        """The factory synth calls with the job's provider entry (model 'echo:<model>')."""
        return cls(spec.model.partition(":")[2], prefix=str(spec.params.get("prefix", "")))

    async def complete(self, request: Request, key: Any, *, timeout: float) -> Completion:
        if request.json_schema is not None:
            raise BadRequest("the echo provider has no structured output")
        asked = next((m.content or "" for m in reversed(request.messages) if m.role == "user"), "")
        text = self.prefix + asked[::-1]
        usage = Usage(prompt_tokens=len(asked.split()), completion_tokens=len(text.split()))
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        return Completion(
            request_id=request.id,
            text=text,
            usage=usage,
            finish_reason="stop",
            model=self.model,
            provider=self.kind,
            key_alias=None if key is None else key.alias,
        )

    async def embed(self, request: EmbeddingRequest, key: Any, *, timeout: float) -> Embeddings:
        raise BadRequest("the echo provider has no embeddings")

    async def aclose(self) -> None:
        return None

"""Retriever kinds: ``retriever: {kind: ...}`` of a rag modifier -> a retriever.

The ``synth.retrievers`` entry-point group (built-ins ``qdrant`` and ``static`` included), or
``package.module:Class`` (see :mod:`synth.plugins`). A retriever class implements
:class:`synth.retrieval.base.Retriever` (deriving from ``BaseRetriever`` needs only
``aget_context_with_metadata``) and is built from the job's fields by, in this order:

* ``from_options(options, *, embedder, job)`` (a classmethod, may be async), where ``options`` is
  its ``Options`` model when it declares one (else the dict of fields) and ``embedder`` embeds
  through the job's own models (keys, limits and cost included);
* otherwise ``cls(**options)``.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel

from synth.errors import ConfigError
from synth.plugins import Registry, options_of


def _check_retriever(obj: Any, origin: str) -> Any:
    if not isinstance(obj, type) or not callable(getattr(obj, "aget_context_with_metadata", None)):
        raise ConfigError(f"{origin} is not a retriever class (it needs aget_context_with_metadata; see Retriever)")
    return obj


RETRIEVERS = Registry("synth.retrievers", field="retriever.kind", what="retriever", check=_check_retriever)


def retriever_options(kind: str, fields: dict[str, Any], where: str) -> tuple[type, Any]:
    """The class ``kind`` names and its validated options (load time: fails before any worker)."""
    cls = RETRIEVERS.load(kind, field=f"{where}.kind")
    return cls, options_of(cls, fields, where)


async def build_retriever(cls: type, options: Any, *, embedder: Any, job: Any) -> Any:
    make = getattr(cls, "from_options", None)
    if make is not None:
        out = make(options, embedder=embedder, job=job)
        return await out if inspect.isawaitable(out) else out
    fields = options.model_dump() if isinstance(options, BaseModel) else dict(options)
    return cls(**fields)


__all__ = ["RETRIEVERS", "build_retriever", "retriever_options"]

"""Planning: deterministic unit ids, shards, and the output-shaping part of a job spec.

Pure functions, no Ray: the same spec and seed always give the same ids, on any machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

from synth.generators.base import Unit
from synth.spec import JobSpec

# Fields of a provider that change what a model answers (not keys, limits or timeouts).
_PROVIDER_SHAPING = ("name", "model", "base_url", "params")


def shaping_spec(job: JobSpec) -> dict[str, Any]:
    """The part of a job spec that changes the output. Resuming with a different one is refused."""
    return {
        "name": job.name,
        "count": job.count,
        "seed": job.seed,
        "generator": job.generator.model_dump(mode="json"),
        "providers": [p.model_dump(mode="json", include=set(_PROVIDER_SHAPING)) for p in job.providers],
        "routes": job.routes,
        "format": job.output.format,
        "partition_by": job.output.partition_by,
        "shard_size": job.output.shard_size,
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fingerprint(job: JobSpec) -> str:
    """Identity of the records a job makes. Excludes ``count`` and ``shard_size`` so that the ids of
    the first N units do not depend on how many are planned or how they are cut."""
    shaping = shaping_spec(job)
    shaping.pop("count")
    shaping.pop("shard_size")
    return _digest(shaping)[:16]


def unit_id(fp: str, index: int) -> str:
    return f"{fp[:12]}-{index:010d}"


def unit_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # first unit index
    stop: int  # one past the last

    @property
    def size(self) -> int:
        return self.stop - self.start

    def units(self, fp: str, seed: int) -> Iterator[Unit]:
        for i in range(self.start, self.stop):
            yield Unit(index=i, id=unit_id(fp, i), shard=self.index, seed=unit_seed(seed, i))


def shard_count(count: int, shard_size: int) -> int:
    return -(-count // shard_size)


def shards(count: int, shard_size: int, skip: set[int] | frozenset[int] = frozenset()) -> Iterator[Shard]:
    """Shards not yet committed, in order. Never materialises the full list."""
    for k in range(shard_count(count, shard_size)):
        if k not in skip:
            yield Shard(k, k * shard_size, min(count, (k + 1) * shard_size))


def spec_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two shaping specs, e.g. ``count: 100 -> 200``."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += spec_differences(a, b, path)
        elif a != b:
            out.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")
    return out

"""Planning: deterministic unit ids, shards, and the output-shaping part of a job spec.

Pure functions, no Ray: the same spec and seed always give the same ids, on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synth.records import Unit, unit_id, unit_seed
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


@dataclass(frozen=True)
class Shard:
    """A piece of work on one shard. ``part`` is the commit generation it will be committed as: 0 for
    a shard's first piece, then one more for each later piece (units added by a larger count, or
    dead-lettered units made again). With ``only``, just those unit indices are made."""

    index: int
    start: int  # first unit index
    stop: int  # one past the last
    part: int = 0
    only: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        return len(self.only) if self.only is not None else self.stop - self.start

    def units(self, fp: str, seed: int) -> Iterator[Unit]:
        for i in self.only if self.only is not None else range(self.start, self.stop):
            yield Unit(index=i, id=unit_id(fp, i), shard=self.index, seed=unit_seed(seed, i))

    def item(self) -> dict[str, Any]:
        """The work item handed to workers (plain scalars, so Ray Data keeps one column type)."""
        only = "" if self.only is None else json.dumps(list(self.only), separators=(",", ":"))
        return {"shard": self.index, "start": self.start, "stop": self.stop, "part": self.part, "only": only}

    @classmethod
    def from_item(cls, shard: Any, start: Any, stop: Any, part: Any = 0, only: Any = "") -> Shard:
        idx = tuple(int(i) for i in json.loads(only)) if only else None
        return cls(int(shard), int(start), int(stop), int(part), idx)

    def piece(self) -> dict[str, Any]:
        """What the sink needs to commit this piece (``retry``: the shard's old dead letters are
        all among ``only`` and are replaced by what this piece makes)."""
        return {"part": self.part, "start": self.start, "stop": self.stop, "retry": self.only is not None}


def shard_count(count: int, shard_size: int) -> int:
    return -(-count // shard_size)


def shards(count: int, shard_size: int, skip: set[int] | frozenset[int] = frozenset()) -> Iterator[Shard]:
    """Shards not yet committed, in order. Never materialises the full list."""
    for k in range(shard_count(count, shard_size)):
        if k not in skip:
            yield Shard(k, k * shard_size, min(count, (k + 1) * shard_size))


def pieces(
    count: int, shard_size: int, heads: Mapping[int, tuple[int, int]], retry: Mapping[int, Sequence[int]] | None = None
) -> Iterator[Shard]:
    """What is left to make, in shard order. ``heads``: committed shard -> (its latest generation,
    one past the last unit it covers); ``retry``: committed shard -> unit indices to make again.

    A shard not committed is made whole; a committed one that covers less than ``count`` now asks
    for gets its missing units as a new piece; retried units join that piece (one piece per shard
    per run, so two workers never commit the same shard at once)."""
    retry = retry or {}
    for k in range(shard_count(count, shard_size)):
        start, stop = k * shard_size, min(count, (k + 1) * shard_size)
        if k not in heads:
            yield Shard(k, start, stop)
            continue
        gen, covered = heads[k]
        again = tuple(sorted(retry.get(k, ())))
        if again:
            yield Shard(k, start, max(stop, covered), gen + 1, again + tuple(range(covered, stop)))
        elif covered < stop:
            yield Shard(k, covered, stop, gen + 1)


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

"""Where a run's answers are kept: the job's journal under its output, a local spool for remote
outputs, and the response cache. Builds the :class:`~synth.providers.answers.AnswerStore` a gateway
holds; also the ``synth cache`` commands' view of a cache or journal folder."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synth.engine.storage import Storage
from synth.providers.answers import ANSWERS, JOURNAL, AnswerStore, Folder, LocalFolder, load_segments
from synth.providers.journal import model_digest, parse_segment
from synth.spec import JobSpec, OutputSpec

SHIP_S = 3.0  # how often a process's answer journal reaches a remote output
log = logging.getLogger("synth.engine")


def user_cache_dir() -> str:
    """``$SYNTH_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/synth``."""
    if os.environ.get("SYNTH_CACHE_DIR"):
        return os.environ["SYNTH_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "synth")


def resolve_cache(job: JobSpec) -> JobSpec:
    """The job with its local folders fixed where the driver runs: the cache (default: the user's)
    and a relative output folder, so every gateway and worker of the run, on any node and in any
    working folder (a cluster's workers do not run in the caller's), uses the same ones."""
    job = job.model_copy(deep=True)
    if not job.cache.path:
        job.cache.path = user_cache_dir()
    elif "://" not in job.cache.path:
        job.cache.path = os.path.abspath(os.path.expanduser(job.cache.path))
    if "://" not in job.output.uri:
        job.output.uri = os.path.abspath(os.path.expanduser(job.output.uri))
    return job


def spool_dir(storage: Storage, job: JobSpec | None = None) -> Path:
    """Where this node appends answers: the output's journal itself when the output is a local
    folder; else a local folder per output (under the local cache folder), shipped to the output
    every few seconds."""
    if storage.local:
        return Path(storage.root) / JOURNAL
    digest = hashlib.sha256(storage.uri.encode()).hexdigest()[:16]
    path = job.cache.path if job is not None and job.cache.path else None
    base = path if path and "://" not in path else user_cache_dir()
    return Path(base).expanduser() / "spool" / digest


def folder_for(uri: str, like: OutputSpec | None = None) -> Folder:
    """A cache or journal folder at any fsspec URI (credentials as the output's)."""
    if "://" not in uri or uri.startswith("file://"):
        return LocalFolder(uri.removeprefix("file://"))
    spec = OutputSpec(uri=uri, storage=like.storage if like else OutputSpec().storage)
    return Storage(spec)


def unit_of(job: JobSpec) -> Callable[[str], int | None]:
    """The unit index a request id belongs to, or None for ids that name no unit (a generator's
    setup calls)."""
    from synth.engine.plan import fingerprint

    prefix = fingerprint(job)[:12] + "-"

    def unit(rid: str) -> int | None:
        if not rid.startswith(prefix):
            return None
        head = rid.split(":", 1)[0][len(prefix) :]
        return int(head) if head.isdigit() else None

    return unit


def unit_skipper(job: JobSpec, todo: set[int], retried: set[int] = frozenset()) -> Callable[[str], bool]:  # type: ignore[assignment]
    """True for a request id of a unit whose shard this run does not make (its answer is in the
    dataset already) or that --retry-failed makes again. Ids that name no unit are always kept."""
    unit = unit_of(job)
    size = job.output.shard_size

    def skip(rid: str) -> bool:
        u = unit(rid)
        return u is not None and (u // size not in todo or u in retried)

    return skip


def build_store(
    job: JobSpec,
    routes: list[str],
    todo: set[int],
    retried: set[int] = frozenset(),  # type: ignore[assignment]
) -> AnswerStore | None:
    """The answer store of a process holding ``routes``; None when none of them is journaled."""
    digests = [
        model_digest(p.model, p.base_url) for p in job.providers if p.route in routes and not p.model.startswith("sim:")
    ]
    if not digests:
        return None
    storage = Storage(job.output)
    cache = folder_for(job.cache.path, job.output) if job.cache.enabled and job.cache.path else None
    return AnswerStore(
        digests,
        spool=spool_dir(storage, job),
        journal=storage,
        cache=cache,
        ttl_s=job.cache.ttl_s,
        max_entries=job.cache.max_entries,
        skip=unit_skipper(job, todo, retried),
        use_cache=job.cache.enabled,
        bypass=_retried(job, retried) if retried else None,
    )


async def ship_every(answers: AnswerStore, period: float = SHIP_S) -> None:
    """Ship the journal to the job's store every ``period`` seconds until cancelled (a lost node or
    process loses at most that much of it; what is not shipped stays in the local spool)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(period)
        try:
            await loop.run_in_executor(None, answers.ship)
        except Exception as e:  # noqa: BLE001 - kept locally and shipped at the next try or the stop
            log.warning("shipping the answer journal failed: %s: %s", type(e).__name__, str(e)[:200])


def _retried(job: JobSpec, retried: set[int]) -> Callable[[str], bool]:
    unit = unit_of(job)
    return lambda rid: unit(rid) in retried


def folder_stats(uri: str) -> dict[str, Any]:
    """Entries, bytes, models and ages of the answers under a cache folder or a job's output."""
    folder = folder_for(uri)
    out: dict[str, Any] = {
        "uri": uri,
        "models": 0,
        "segments": 0,
        "entries": 0,
        "bytes": 0,
        "usd": 0.0,
        "oldest": None,
        "newest": None,
    }
    for top in (ANSWERS, JOURNAL):
        for digest in folder.list(top) if isinstance(folder, Storage) else _dirs(folder, top):
            names = [n for n in folder.list(f"{top}/{digest}") if n.endswith(".jsonl")]
            if not names:
                continue
            out["models"] += 1
            out["segments"] += len(names)
            for e in load_segments(folder, f"{top}/{digest}", lambda e: True):
                out["entries"] += 1
                out["bytes"] += len(e.line)
                out["usd"] += e.cost_usd
                out["oldest"] = e.ts if out["oldest"] is None else min(out["oldest"], e.ts)
                out["newest"] = e.ts if out["newest"] is None else max(out["newest"], e.ts)
    out["usd"] = round(out["usd"], 6)
    return out


def _dirs(folder: Folder, rel: str) -> list[str]:
    root = Path(getattr(folder, "root", ".")) / rel
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def clear(uri: str, older_than_s: float | None = None) -> int:
    """Remove a cache folder's answers (all, or those older than ``older_than_s``); returns entries
    removed. A job's journal is not touched by this: it belongs to its dataset."""
    folder = folder_for(uri)
    removed = 0
    now = time.time()
    digests = folder.list(ANSWERS) if isinstance(folder, Storage) else _dirs(folder, ANSWERS)
    for digest in digests:
        rel = f"{ANSWERS}/{digest}"
        for name in [n for n in folder.list(rel) if n.endswith(".jsonl")]:
            data = folder.read_bytes(f"{rel}/{name}") or b""
            entries = list(parse_segment(data))
            keep = [e for e in entries if older_than_s is not None and now - e.ts <= older_than_s]
            removed += len(entries) - len(keep)
            if len(keep) == len(entries):
                continue
            if keep:
                folder.write_bytes(f"{rel}/{name}", b"".join(e.line + b"\n" for e in keep))
            else:
                _remove(folder, f"{rel}/{name}")
    return removed


def _remove(folder: Folder, rel: str) -> None:
    if isinstance(folder, Storage):
        folder.remove(rel)
    else:
        Path(getattr(folder, "root", ".")).joinpath(rel).unlink(missing_ok=True)


__all__ = [
    "build_store",
    "clear",
    "folder_for",
    "folder_stats",
    "resolve_cache",
    "ship_every",
    "spool_dir",
    "unit_skipper",
    "user_cache_dir",
]

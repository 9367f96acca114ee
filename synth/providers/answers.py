"""The answer store a dispatcher consults before buying an answer, and feeds after: the job's
journal first (answers this job already paid for), then the response cache (answers any job paid
for), then the provider. Format and durability: :mod:`synth.providers.journal`.

Folders are anything with ``list``, ``read_bytes`` and ``write_bytes`` on paths relative to a
root (the engine passes its object-storage ``Storage``; :class:`LocalFolder` is a plain folder), so
this module knows no filesystem library.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from synth.providers.journal import (
    MALFORMED,
    OK,
    Entry,
    SegmentWriter,
    completion_row,
    encode_entry,
    parse_segment,
)
from synth.records import Completion

log = logging.getLogger("synth.providers")

JOURNAL = "_journal"
ANSWERS = "answers"
ROTATE_BYTES = 16 * 1024**2  # a remote journal's open segment is uploaded whole each time: keep it small


class Folder(Protocol):
    def list(self, rel: str) -> list[str]: ...
    def read_bytes(self, rel: str) -> bytes | None: ...
    def write_bytes(self, rel: str, data: bytes) -> None: ...


class LocalFolder:
    """A local folder as a :class:`Folder`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def list(self, rel: str) -> list[str]:
        p = self.root / rel
        return sorted(x.name for x in p.iterdir() if x.is_file()) if p.is_dir() else []

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        tmp.write_bytes(data)
        os.replace(tmp, target)


def load_segments(folder: Folder, rel: str, keep: Callable[[Entry], bool]) -> Iterable[Entry]:
    for name in folder.list(rel):
        if not name.endswith(".jsonl"):
            continue
        data = folder.read_bytes(f"{rel}/{name}")
        if data:
            yield from (e for e in parse_segment(data) if keep(e))


class AnswerStore:
    """Journal + cache for the models of one process (a gateway, or an in-process dispatcher).

    ``spool`` is the local folder this process appends to (``<spool>/<digest>/``); ``journal`` is
    where the job's journal lives (``<journal>/_journal/<digest>/``): when it is the same place as
    the spool (a local output), nothing needs shipping. ``skip`` drops journal entries of work
    already committed (their answers are in the dataset). ``cache`` (``<cache>/answers/<digest>/``)
    gets every closed segment too."""

    def __init__(
        self,
        digests: Iterable[str],
        *,
        spool: str | Path,
        journal: Folder | None = None,
        cache: Folder | None = None,
        ttl_s: float | None = None,
        max_entries: int = 100_000,
        skip: Callable[[str], bool] | None = None,
        use_cache: bool = True,
        bypass: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.digests = sorted(set(digests))
        self.spool = Path(spool)
        self.journal = journal
        self.cache = cache
        self.ttl_s = ttl_s
        self.clock = clock
        self.use_cache = use_cache
        self.bypass = bypass  # requests to buy afresh whatever is stored (units retried after failing)
        self.max_entries = max_entries
        self._writers: dict[str, SegmentWriter] = {}
        self._shipped: dict[str, int] = {}  # open segment path -> lines uploaded
        self._lock = threading.Lock()  # ship() runs in a thread beside appends
        self._journal: dict[str, dict[str, Entry]] = {d: {} for d in self.digests}
        self._cache: dict[str, dict[str, Entry]] = {d: {} for d in self.digests}
        self._fresh: OrderedDict[tuple[str, str], Entry] = OrderedDict()  # answered in this process
        self.counts = {"journal_hits": 0, "cache_hits": 0, "misses": 0, "saved_usd": 0.0, "journaled": 0}
        self._load(skip or (lambda rid: False))

    # ------------------------------------------------------------------ loading

    def _load(self, skip: Callable[[str], bool]) -> None:
        now = self.clock()
        local = LocalFolder(self.spool)
        for d in self.digests:
            index = self._journal[d]
            sources: list[tuple[Folder, str]] = [(local, d)]
            if self.journal is not None:
                sources.append((self.journal, f"{JOURNAL}/{d}"))
            for folder, rel in sources:
                for e in load_segments(folder, rel, lambda e: not skip(e.request_id)):
                    index.setdefault(e.key, e)
            if self.cache is not None and self.use_cache:
                ttl = self.ttl_s
                fresh = (lambda e, ttl=ttl: now - e.ts <= ttl) if ttl else (lambda e: True)
                cidx = self._cache[d]
                for e in load_segments(self.cache, f"{ANSWERS}/{d}", fresh):
                    cidx.setdefault(e.key, e)

    def sizes(self) -> dict[str, int]:
        return {
            "journal_entries": sum(map(len, self._journal.values())),
            "cache_entries": sum(map(len, self._cache.values())),
        }

    # ------------------------------------------------------------------ lookups

    def find(self, digest: str, key: str, request_id: str) -> tuple[str, Completion | str] | None:
        """A stored answer: ("ok", completion) or ("malformed", raw text); None to buy it.

        From the journal (or answered earlier in this process) the answer is what was bought,
        cost included, so the record is the one an uninterrupted run makes; from the cache it is
        marked ``cached`` at no cost."""
        if self.bypass is not None and self.bypass(request_id):
            self.counts["misses"] += 1
            return None
        e = self._fresh.get((digest, key)) or self._journal.get(digest, {}).get(key)
        cached = False
        if e is None and self.use_cache:
            e = self._cache.get(digest, {}).get(key)
            if e is not None and self.ttl_s and self.clock() - e.ts > self.ttl_s:
                e = None
            cached = e is not None
        if e is None:
            self.counts["misses"] += 1
            return None
        self.counts["cache_hits" if cached else "journal_hits"] += 1
        self.counts["saved_usd"] += e.cost_usd
        if e.status == MALFORMED:
            return MALFORMED, e.raw()
        comp = e.completion(request_id, cached=cached)
        if cached:
            comp.cost_usd, comp.attempts, comp.latency_ms, comp.key_alias = 0.0, 0, 0.0, None
        return OK, comp

    # ------------------------------------------------------------------ recording

    def record(
        self,
        digest: str,
        key: str,
        request_id: str,
        comp: Completion | None,
        *,
        cost_usd: float,
        raw: str | None = None,
    ) -> None:
        """Journal an answer before it is used (``comp``), or an unparseable one (``raw``)."""
        status, payload = (OK, completion_row(comp)) if comp is not None else (MALFORMED, raw or "")
        line = encode_entry(key, request_id, status, payload, cost_usd, self.clock())
        with self._lock:
            w = self._writers.get(digest)
            if w is None:
                w = self._writers[digest] = SegmentWriter(self.spool / digest)
            w.append(line)
        self.counts["journaled"] += 1
        self._fresh[(digest, key)] = Entry(key, request_id, self.clock(), status, cost_usd, line)
        if len(self._fresh) > self.max_entries:
            self._fresh.popitem(last=False)

    # ------------------------------------------------------------------ shipping

    def ship(self, final: bool = False) -> int:
        """Copy what was appended to the job's journal (when it lives elsewhere) and closed
        segments to the cache; ``final`` closes the open segments first. Returns files written."""
        written = 0
        with self._lock:
            closed: list[tuple[str, Path]] = []
            for d, w in self._writers.items():
                if w.appended and (
                    final
                    or (self.journal is not None and self._remote_journal() and w.path.stat().st_size >= ROTATE_BYTES)
                ):
                    path = w.rotate()
                    if path is not None:
                        closed.append((d, path))
            open_paths = [(d, w.path, w.appended) for d, w in self._writers.items() if w.appended]
        if self._remote_journal():
            for d, path in closed:
                written += self._upload(d, path)
            for d, path, lines in open_paths:
                if self._shipped.get(str(path)) != lines:
                    written += self._upload(d, path)
                    self._shipped[str(path)] = lines
        if self.cache is not None:
            for d, path in closed:
                data = path.read_bytes()
                self.cache.write_bytes(f"{ANSWERS}/{d}/{path.name}", data)
                written += 1
        if self._remote_journal():
            for _, path in closed:  # shipped: the job's store has it now
                path.unlink(missing_ok=True)
                self._shipped.pop(str(path), None)
        return written

    def _remote_journal(self) -> bool:
        if self.journal is None:
            return False
        root = getattr(self.journal, "root", None)
        local = getattr(self.journal, "local", isinstance(self.journal, LocalFolder))
        return not (local and root is not None and Path(str(root)) / JOURNAL == self.spool)

    def _upload(self, digest: str, path: Path) -> int:
        assert self.journal is not None
        self.journal.write_bytes(f"{JOURNAL}/{digest}/{path.name}", path.read_bytes())
        return 1

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "saved_usd": round(self.counts["saved_usd"], 8)}


def ship_leftovers(spool: str | Path, journal: Folder) -> int:
    """Upload segments a killed run left in a local spool (a remote output's), then remove them."""
    root = Path(spool)
    if not root.is_dir():
        return 0
    n = 0
    for seg in sorted(root.glob("*/*.jsonl")):
        journal.write_bytes(f"{JOURNAL}/{seg.parent.name}/{seg.name}", seg.read_bytes())
        seg.unlink()
        n += 1
    shutil.rmtree(root, ignore_errors=True)
    return n


__all__ = ["ANSWERS", "AnswerStore", "Folder", "JOURNAL", "LocalFolder", "load_segments", "ship_leftovers"]

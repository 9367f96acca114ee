"""A response cache: identical requests get the stored answer instead of a new model call.

The key is a hash of what is sent to the model: the request minus its ``id`` and ``metadata``
(which never reach the model), after the provider's default params are merged in. Entries live in
an in-memory LRU; with a folder they are also written to ``<folder>/responses.sqlite`` so a re-run
(or another process on the same machine) reuses them. A hit is returned with ``cached=True``,
``cost_usd=0`` and the asking request's id.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections import OrderedDict
from pathlib import Path

from synth.errors import ConfigError
from synth.records import Completion, Request

log = logging.getLogger("synth.providers")

_EXCLUDE = {"id", "metadata"}
_COMMIT_EVERY = 256


def request_key(request: Request) -> str:
    """A stable digest of the request content (everything but ``id`` and ``metadata``)."""
    data = request.model_dump_json(exclude=_EXCLUDE).encode()
    return hashlib.blake2b(data, digest_size=20).hexdigest()


class ResponseCache:
    def __init__(self, max_entries: int = 100_000, path: str | Path | None = None) -> None:
        self.max_entries = max_entries
        self._mem: OrderedDict[str, Completion] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, str]] = []
        self.hits = 0
        self.misses = 0
        if path is not None:
            folder = Path(path).expanduser()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(folder / "responses.sqlite", timeout=30, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, completion TEXT)")
            except (OSError, sqlite3.Error) as e:
                raise ConfigError(
                    f"cache.path {str(folder)!r} is not a usable folder ({e}); "
                    f"point it at a writable local folder or remove it") from None

    def get(self, key: str, request_id: str) -> Completion | None:
        hit = self._mem.get(key)
        if hit is not None:
            self._mem.move_to_end(key)
        elif self._db is not None:
            row = self._db.execute("SELECT completion FROM responses WHERE key = ?", (key,)).fetchone()
            if row is not None:
                hit = Completion.model_validate_json(row[0])
                self._remember(key, hit)
        if hit is None:
            self.misses += 1
            return None
        self.hits += 1
        return hit.model_copy(update={
            "request_id": request_id, "cached": True, "cost_usd": 0.0, "attempts": 0,
            "latency_ms": 0.0, "key_alias": None})

    def put(self, key: str, completion: Completion) -> None:
        self._remember(key, completion)
        if self._db is not None:
            # written in batches, each one short transaction, so processes sharing the folder
            # never hold the write lock for long
            self._pending.append((key, completion.model_dump_json()))
            if len(self._pending) >= _COMMIT_EVERY:
                self.flush()

    def _remember(self, key: str, completion: Completion) -> None:
        self._mem[key] = completion
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_entries:
            self._mem.popitem(last=False)

    def flush(self) -> None:
        if self._db is not None and self._pending:
            rows, self._pending = self._pending, []
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
            self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return len(self._mem)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._mem)}


__all__ = ["ResponseCache", "request_key"]

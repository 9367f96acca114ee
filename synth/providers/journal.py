"""The answer journal: every answer a provider returns, keyed by the content of its request.

One format serves two stores:

- the **job's journal**, under ``<output>/_journal/``: a resumed job (after a kill, a budget stop,
  a lost node, a failure) replays every answer it already paid for instead of buying it again;
- the **response cache** (``cache.path``, by default a user-level folder): a later job asking the
  same thing gets the stored answer.

A segment is a file of JSON lines, one answer each, appended by one writer (one process) with one
``os.write`` per answer, so once an answer is used it is in the operating system's hands and a
SIGKILL of any process loses nothing; a line cut short by a crash does not parse and is skipped.
Segments live in one folder per model (``<model digest>/<writer>-<seq>.jsonl``) so a job loads only
the answers of its own models. No line ever holds an API key: the key is not part of a request's
content, and a completion carries only the key's alias.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from synth.records import Completion, Request, ToolCall, Usage, trusted

SEGMENT_SUFFIX = ".jsonl"
OK, MALFORMED = "ok", "malformed"  # an answer, or an unparseable answer (paid, and re-asked)


def model_digest(model: str, base_url: str | None) -> str:
    """The folder of one model's answers: the same model behind another endpoint is another model."""
    return hashlib.blake2b(f"{model}\n{base_url or ''}".encode(), digest_size=8).hexdigest()


class KeyMaker:
    """Content keys of requests to one model: provider kind and model, endpoint, default params,
    messages, schema, tools, sampling parameters and seed. Never the API key, the request id or
    its metadata. A schema or tool list shared by many requests is hashed once."""

    def __init__(self, model: str, base_url: str | None, params: dict[str, Any]) -> None:
        self.base = orjson.dumps([model, base_url or "", params], option=orjson.OPT_SORT_KEYS)
        self._shared: dict[int, tuple[Any, bytes]] = {}

    def _digest(self, obj: Any) -> bytes:
        if obj is None:
            return b""
        hit = self._shared.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        d = hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
        if len(self._shared) > 1024:
            self._shared.clear()
        self._shared[id(obj)] = (obj, d)  # the object is kept alive, so its id is not reused
        return d

    def key(self, r: Request) -> str:
        msgs = [
            (
                m.role,
                m.content,
                m.name,
                [(t.id, t.name, t.arguments) for t in m.tool_calls] if m.tool_calls else None,
                m.tool_call_id,
            )
            for m in r.messages
        ]
        body = orjson.dumps([msgs, r.schema_name, r.temperature, r.top_p, r.max_tokens, r.seed, r.n])
        h = hashlib.blake2b(self.base, digest_size=20)
        h.update(self._digest(r.json_schema))
        h.update(self._digest(r.tools))
        h.update(body)
        return h.hexdigest()


def completion_row(c: Completion) -> list[Any]:
    u = c.usage
    calls = [(t.id, t.name, t.arguments) for t in c.tool_calls] if c.tool_calls else None
    return [
        c.text,
        c.parsed,
        calls,
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
        c.finish_reason,
        c.model,
        c.provider,
        c.key_alias,
        c.latency_ms,
        c.attempts,
        c.cost_usd,
    ]


def completion_from_row(row: list[Any], request_id: str, *, cached: bool) -> Completion:
    text, parsed, calls, pt, ct, tt, finish, model, provider, alias, latency, attempts, cost = row
    tool_calls = [trusted(ToolCall, {"id": i, "name": n, "arguments": a}) for i, n, a in calls] if calls else None
    usage = trusted(Usage, {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": tt})
    return trusted(
        Completion,
        {
            "request_id": request_id,
            "text": text,
            "parsed": parsed,
            "tool_calls": tool_calls,
            "usage": usage,
            "finish_reason": finish,
            "model": model,
            "provider": provider,
            "key_alias": alias,
            "latency_ms": latency,
            "attempts": attempts,
            "cost_usd": cost,
            "cached": cached,
            "ratelimit": None,
        },
    )


@dataclass(frozen=True)
class Entry:
    """One journal line, decoded lazily: ``row`` stays JSON until the answer is used."""

    key: str
    request_id: str
    ts: float
    status: str  # OK or MALFORMED
    cost_usd: float
    line: bytes

    def completion(self, request_id: str, *, cached: bool) -> Completion:
        row = orjson.loads(self.line)["c"]
        return completion_from_row(row, request_id, cached=cached)

    def raw(self) -> str:
        """The unusable text of a MALFORMED entry."""
        return str(orjson.loads(self.line)["c"])


def encode_entry(key: str, request_id: str, status: str, payload: Any, cost_usd: float, ts: float) -> bytes:
    return (
        orjson.dumps({"k": key, "i": request_id, "t": round(ts, 3), "s": status, "$": cost_usd, "c": payload}) + b"\n"
    )


def parse_segment(data: bytes) -> Iterator[Entry]:
    """Every whole line of a segment; a line cut short (a crash mid-write) or damaged is skipped."""
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            d = orjson.loads(line)
            yield Entry(d["k"], d["i"], float(d["t"]), d["s"], float(d.get("$", 0.0)), line)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue


class SegmentWriter:
    """Appends lines to local segment files of one model folder; each append is one ``write``
    on an ``O_APPEND`` descriptor, in the kernel's page cache when it returns."""

    def __init__(self, folder: str | Path, writer: str | None = None) -> None:
        self.folder = Path(folder)
        self.writer = writer or f"{int(time.time()):x}-{uuid.uuid4().hex[:10]}"
        self.seq = 0
        self._fd: int | None = None
        self.appended = 0  # lines in the open segment

    @property
    def name(self) -> str:
        return f"{self.writer}-{self.seq:06d}{SEGMENT_SUFFIX}"

    @property
    def path(self) -> Path:
        return self.folder / self.name

    def append(self, line: bytes) -> None:
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.appended += 1

    def rotate(self) -> Path | None:
        """Close the open segment (returning its path, when it holds anything); the next append
        starts a new one."""
        if self._fd is None:
            return None
        os.close(self._fd)
        self._fd = None
        done = self.path
        self.seq += 1
        self.appended = 0
        return done

    def close(self) -> Path | None:
        return self.rotate()


def newest(entries: Iterable[Entry]) -> dict[str, Entry]:
    """Index entries by key; for a key written twice (two writers raced), the first kept is as good."""
    out: dict[str, Entry] = {}
    for e in entries:
        out.setdefault(e.key, e)
    return out


__all__ = [
    "Entry",
    "KeyMaker",
    "MALFORMED",
    "OK",
    "SegmentWriter",
    "completion_from_row",
    "completion_row",
    "encode_entry",
    "model_digest",
    "newest",
    "parse_segment",
]

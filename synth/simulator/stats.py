"""Counters of what the simulator served: by status, by key label, tokens, and a per-second ring for
achieved rates. Keys are only ever shown by :func:`key_label` (not reversible)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

_RING = 64  # seconds of history for windowed rates


def key_label(key: str) -> str:
    """A short, non-reversible label: the first 4 characters and a SHA-256 prefix."""
    return f"{key[:4]}…{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _key_counters() -> dict[str, int]:
    return {
        "requests": 0,
        "ok": 0,
        "rate_limited": 0,
        "errors": 0,
        "hangs": 0,
        "cancelled": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.first_request_at: float | None = None  # wall clock of the first request since the reset
        self.by_status: dict[int, int] = {}
        self.by_key: dict[str, dict[str, int]] = {}
        self.requests = self.ok = self.rate_limited = self.errors = self.hangs = self.cancelled = 0
        self.prompt_tokens = self.completion_tokens = 0
        self._sec = [-1] * _RING
        self._ok = [0] * _RING
        self._tok = [0] * _RING
        self._429 = [0] * _RING

    def for_key(self, label: str) -> dict[str, int]:
        c = self.by_key.get(label)
        if c is None:
            c = self.by_key[label] = _key_counters()
        return c

    def _slot(self, now: float) -> int:
        sec = int(now)
        i = sec % _RING
        if self._sec[i] != sec:
            self._sec[i] = sec
            self._ok[i] = self._tok[i] = self._429[i] = 0
        return i

    def arrived(self) -> None:
        """A request reached the server (before any check): timestamps the first one."""
        if self.first_request_at is None:
            self.first_request_at = time.time()

    def status(self, code: int, key: dict[str, int] | None) -> None:
        """Any answered request (success, error or rejection)."""
        self.requests += 1
        self.by_status[code] = self.by_status.get(code, 0) + 1
        if key is not None:
            key["requests"] += 1
        if code == 429:
            self.rate_limited += 1
            self._429[self._slot(time.monotonic())] += 1
            if key is not None:
                key["rate_limited"] += 1
        elif code >= 500:
            self.errors += 1
            if key is not None:
                key["errors"] += 1

    def success(self, key: dict[str, int], prompt: int, completion: int) -> None:
        self.ok += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        key["ok"] += 1
        key["prompt_tokens"] += prompt
        key["completion_tokens"] += completion
        i = self._slot(time.monotonic())
        self._ok[i] += 1
        self._tok[i] += prompt + completion

    def unanswered(self, key: dict[str, int], hang: bool) -> None:
        if hang:
            self.hangs += 1
            key["hangs"] += 1
        else:
            self.cancelled += 1
            key["cancelled"] += 1

    def snapshot(self, window: float = 10.0) -> dict[str, Any]:
        now = time.monotonic()
        cur = int(now)
        w = max(1, min(int(window), _RING - 2, int(now - self.started) or 1))
        # complete seconds only: the current one is still filling
        secs = set(range(cur - w, cur))
        ok = tok = r429 = 0
        for i in range(_RING):
            if self._sec[i] in secs:
                ok += self._ok[i]
                tok += self._tok[i]
                r429 += self._429[i]
        return {
            "uptime_s": round(now - self.started, 3),
            "started_at": self.started_wall,
            "first_request_at": self.first_request_at,
            "requests": self.requests,
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "errors": self.errors,
            "hangs": self.hangs,
            "cancelled": self.cancelled,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_key": self.by_key,
            "window_s": w,
            "ok_per_s": ok / w,
            "tokens_per_s": tok / w,
            "rate_limited_per_s": r429 / w,
        }

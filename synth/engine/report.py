"""What a run tells its user, from the gateways' reports and the manifest: per-provider outcomes,
the top failure reasons with an example each, keys that were disabled or cooled for long, and what
the answer journal and cache saved. Plain functions over plain dicts (no Ray)."""

from __future__ import annotations

from collections import Counter
from typing import Any

COOL_REPORT_S = 60.0  # a key cooling down for longer than this is reported


def providers(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per provider route, over every gateway (and in-process dispatcher) report: model, calls
    made, requests answered, errors by kind and one example message per kind."""
    out: dict[str, dict[str, Any]] = {}
    for rep in reports:
        for route, p in (rep.get("providers") or {}).items():
            o = out.setdefault(
                route, {"model": p.get("model", route), "calls": 0, "successes": 0, "errors": Counter(), "examples": {}}
            )
            o["calls"] += p.get("requests", 0)
            o["successes"] += p.get("successes", 0)
            o["errors"].update(p.get("errors") or {})
            for k, v in (p.get("examples") or {}).items():
                o["examples"].setdefault(k, v)
    for o in out.values():
        o["errors"] = dict(o["errors"])
    return out


def all_failed(by_route: dict[str, dict[str, Any]]) -> str | None:
    """The first error line of a run in which every call to a provider failed."""
    for o in by_route.values():
        failed = sum(o["errors"].values())
        if o["calls"] and not o["successes"] and failed:
            kind = max(o["errors"], key=o["errors"].get)
            example = o["examples"].get(kind, kind)
            return f"all {o['calls']:,} calls to {o['model']} failed: {example}"
    return None


def answers(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Journal replays, cache hits, misses and dollars saved, over every gateway."""
    tot: dict[str, float] = {}
    for rep in reports:
        for k, v in (rep.get("answers") or {}).items():
            if isinstance(v, (int, float)):
                tot[k] = tot.get(k, 0) + v
    return {
        "journal_hits": int(tot.get("journal_hits", 0)),
        "cache_hits": int(tot.get("cache_hits", 0)),
        "misses": int(tot.get("misses", 0)),
        "journaled": int(tot.get("journaled", 0)),
        "saved_usd": round(tot.get("saved_usd", 0.0), 6),
    }


def failure_reasons(entries: list[dict[str, Any]], top: int = 5) -> list[dict[str, Any]]:
    """The most frequent dead-letter kinds of the committed shards, with one example message."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for e in entries:
        counts.update(e.get("dead_by_kind") or {})
        for k, v in (e.get("dead_examples") or {}).items():
            examples.setdefault(k, v)
    return [{"kind": k, "count": n, "example": examples.get(k, "")} for k, n in counts.most_common(top)]


class KeyWatch:
    """Reports, once per key, a key disabled (revoked) or cooling down for more than a minute."""

    def __init__(self) -> None:
        self.disabled: dict[str, str] = {}  # "route/alias" -> route
        self.cooled: dict[str, float] = {}  # "route/alias" -> longest cool-down seen

    def news(self, reports: list[dict[str, Any]]) -> list[str]:
        lines: list[str] = []
        for rep in reports:
            for route, p in (rep.get("providers") or {}).items():
                for alias, k in (p.get("keys") or {}).items():
                    name = f"{route}/{alias}"
                    if k.get("disabled") and name not in self.disabled:
                        self.disabled[name] = route
                        lines.append(
                            f"key {alias} of provider {route} is disabled (the provider refused it: "
                            "revoked or wrong); the other keys carry on"
                        )
                    cooling = float(k.get("cooling_s") or 0.0)
                    if cooling > COOL_REPORT_S and name not in self.cooled:
                        lines.append(
                            f"key {alias} of provider {route} is cooling down for {cooling:.0f} s "
                            "(rate limited); the other keys carry on"
                        )
                    if cooling > COOL_REPORT_S:
                        self.cooled[name] = max(self.cooled.get(name, 0.0), cooling)
        return lines

    def summary(self) -> dict[str, Any]:
        return {"disabled": sorted(self.disabled), "cooled_over_60s": sorted(self.cooled)}


__all__ = ["KeyWatch", "all_failed", "answers", "failure_reasons", "providers"]

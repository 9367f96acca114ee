"""Retry and re-ask policy: which failures to retry and how long to wait before the next try (pure
functions), and what to do with structured output that does not match its schema.

Backoff is exponential with full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``),
which spreads retries of many requests that failed together. A provider's ``retry-after`` wins over
the computed delay. The waiting itself is done by the caller through its injected clock, which is
why this is not tenacity: the dispatcher retries on a different key, cools the failing one and
waits on a virtual clock in tests, none of which fits a decorator around one call.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import jsonschema

from synth.errors import BadRequest, RateLimited, Transient
from synth.providers.clients.wire import json_value
from synth.records import ChatMessage, Completion, Request

REASK = (
    "Your previous answer does not match the required JSON Schema ({error}). Answer again with "
    "only one JSON value that matches the schema."
)


@dataclass(frozen=True)
class RetryPolicy:
    # transient failures of one request retried while the provider answers others, and before a
    # fallback provider; a provider answering no one is retried for engine.max_outage_s instead
    max_retries: int = 6
    base_s: float = 0.5  # first backoff ceiling
    cap_s: float = 30.0  # no wait longer than this (a retry-after above it is still honoured)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        return backoff_delay(retry, base_s=self.base_s, cap_s=self.cap_s, rng=rng)


def backoff_delay(retry: int, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> float:
    """Full-jitter delay before retry number ``retry`` (0 for the first retry)."""
    ceiling = min(cap_s, base_s * (2.0 ** min(retry, 62)))
    return (rng or random).uniform(0.0, ceiling)


def should_retry(error: BaseException, retries_done: int, policy: RetryPolicy) -> bool:
    """True when ``error`` is a 429 or a transient failure and the retry budget is not spent: the
    rule before a fallback provider. (Malformed output is re-asked, not retried; auth failures move
    to another key; on the last provider of a route the dispatcher applies the outage policy.)"""
    return isinstance(error, (RateLimited, Transient)) and retries_done < policy.max_retries


def retry_delay(error: BaseException, retry: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` after ``error``: the provider's retry-after
    when it sent one, else the jittered backoff."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return max(0.0, float(error.retry_after))
    return policy.backoff(retry, rng)


# ---------------------------------------------------------------- structured output


# keywords that draft 7 does not know: a schema using any of them is checked by jsonschema alone
_NEWER_KEYWORDS = frozenset(
    {
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "minContains",
        "maxContains",
    }
)
_DRAFT7_OR_OLDER = ("draft-04", "draft-06", "draft-07")


_DRAFT_2019_OR_LATER = ("2019-09", "2020-12")
_DRAFT7 = "http://json-schema.org/draft-07/schema#"


def _uses_newer_keywords(node: Any, newer: bool = False) -> bool:
    """True when ``node`` uses a keyword draft 7 does not know, or (``newer``: the schema declares
    2019-09 or 2020-12) one whose meaning changed since: ``dependencies`` (dropped, so ignored)
    and ``$ref`` beside other keywords (applied together since, ignored in draft 7)."""
    if isinstance(node, list):
        return any(_uses_newer_keywords(n, newer) for n in node)
    if not isinstance(node, dict):
        return False
    if not _NEWER_KEYWORDS.isdisjoint(node) or isinstance(node.get("items"), list):
        return True  # (``items`` as a list means tuples in draft 7 but is invalid in 2020-12)
    if newer and ("dependencies" in node or ("$ref" in node and len(node.keys() - {"$ref", "description"}) > 0)):
        return True
    return any(_uses_newer_keywords(v, newer) for v in node.values() if isinstance(v, (dict, list)))


def _compile_fast(schema: dict[str, Any]) -> Any:
    """A compiled check (fastjsonschema, ~10x jsonschema's speed) when it means the same as
    jsonschema for this schema, else None. A 2019-09 or 2020-12 schema whose keywords all mean
    what they meant in draft 7 (most generated schemas: types, properties, enums, bounds, arrays
    of one item schema, references) is compiled as draft 7."""
    declared = str(schema.get("$schema", ""))
    newer = any(d in declared for d in _DRAFT_2019_OR_LATER)
    if (declared and not newer and not any(d in declared for d in _DRAFT7_OR_OLDER)) or _uses_newer_keywords(
        schema, newer
    ):
        return None
    if newer:
        schema = {**schema, "$schema": _DRAFT7}
    try:
        import fastjsonschema

        return fastjsonschema.compile(schema, use_default=False, use_formats=False, detailed_exceptions=False)
    except Exception:  # noqa: BLE001 - anything it cannot compile is checked by jsonschema alone
        return None


@dataclass(frozen=True)
class Validator:
    full: Any  # jsonschema's validator: the reference, and the source of error messages
    fast: Any = None  # compiled check of the valid case, when one means the same


class SchemaCheck:
    """Validators compiled once per schema. Looked up by identity first (the requests of one batch
    share their schema object), then by content (requests arriving as fresh copies)."""

    def __init__(self) -> None:
        self._validators: dict[str, Validator] = {}
        self._by_id: dict[int, tuple[dict[str, Any], Validator]] = {}

    def validator(self, schema: dict[str, Any]) -> Validator:
        hit = self._by_id.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        v = self._validators.get(key)
        if v is None:
            cls = jsonschema.validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except jsonschema.SchemaError as e:
                raise BadRequest(
                    f"the request's json_schema is not a valid JSON Schema: {e.message}; fix the generator's schema"
                ) from None
            v = self._validators[key] = Validator(cls(schema), _compile_fast(schema))
        if len(self._by_id) >= 1024:
            self._by_id.clear()
        self._by_id[id(schema)] = (schema, v)  # holding the object keeps its id from being reused
        return v

    @staticmethod
    def problem(comp: Completion, validator: Validator) -> str | None:
        """None when the answer is valid, else why not. Fills ``parsed`` when the text parses."""
        value = comp.parsed
        if value is None:
            if comp.tool_calls:
                return None  # the model asked for a tool; the caller's loop handles it
            try:
                value = comp.parsed = json_value(comp.text or "")
            except ValueError as e:
                return f"not valid JSON ({getattr(e, 'msg', e)} at position {getattr(e, 'pos', '?')})"
        if validator.fast is not None:
            try:
                validator.fast(value)
                return None
            except Exception:  # noqa: BLE001 - jsonschema has the last word, and the message
                pass
        err = jsonschema.exceptions.best_match(validator.full.iter_errors(value))
        if err is None:
            return None
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        return f"at {where}: {err.message[:200]}"


def reask(request: Request, raw: str | None, problem: str) -> Request:
    """The request again with the bad answer and a correction appended, and the seed (when set)
    bumped so that a deterministic model answers differently."""
    return request.model_copy(
        update={
            "messages": [
                *request.messages,
                ChatMessage(role="assistant", content=raw or ""),
                ChatMessage(role="user", content=REASK.format(error=problem[:300])),
            ],
            "seed": None if request.seed is None else request.seed + 1,
        }
    )


__all__ = ["REASK", "RetryPolicy", "SchemaCheck", "Validator", "backoff_delay", "reask", "retry_delay", "should_retry"]

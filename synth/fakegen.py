"""Deterministic fake content: token estimates, text, schema-valid JSON, tool calls, embeddings.

Shared by the offline ``sim`` provider and the LLM API simulator, so both answer the same request
with the same content. Everything is seeded from :func:`material` through SHA-256 (never ``hash()``),
so results are identical across processes and machines. Example::

    rng = rng_for(material("sim:default", messages, schema, seed))
    payload = fake_instance(schema, rng)  # valid against ``schema``
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import orjson

from synth.fakeembed import fake_embedding
from synth.tokens import estimate_tokens, prompt_tokens

__all__ = [
    "estimate_tokens",
    "fake_embedding",
    "fake_instance",
    "fake_text",
    "fake_tool_call",
    "material",
    "prompt_tokens",
    "rng_for",
]


# ---------------------------------------------------------------------------------------- seeding


_MATERIAL_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def material(*parts: object) -> bytes:
    """Stable bytes of request parts, for seeding (key order and process do not matter). orjson
    takes a fifth of the standard library's time, and this runs for every simulated answer; what it
    refuses (integers past 64 bits) is written by the standard library."""
    try:
        return orjson.dumps(parts, option=_MATERIAL_OPTS, default=str)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode(
            "utf-8", "surrogatepass"
        )


def rng_for(material: bytes | str) -> random.Random:
    """A ``random.Random`` seeded from the SHA-256 of ``material``."""
    if isinstance(material, str):
        material = material.encode("utf-8", "surrogatepass")
    return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:16], "big"))


# ---------------------------------------------------------------------------------------- text

_WORDS = (
    "the a an of to in for on with by from as at about across after among around before behind "
    "between during into over through under within without data model system record value signal "
    "customer order product service account report network sensor market policy process result "
    "question answer example pattern feature trend event window metric budget region team user "
    "review summary request response batch stream cluster pipeline schedule forecast estimate "
    "shows suggests improves reduces measures tracks explains describes supports requires "
    "includes compares predicts increases remains changes follows delivers balances connects "
    "quickly carefully steadily often rarely usually clearly roughly nearly mostly recently "
    "new large small early late stable common useful simple complex daily weekly local global "
    "annual average careful reliable strong weak higher lower final initial main key second"
).split()
_NOUNS = _WORDS[_WORDS.index("data") : _WORDS.index("shows")]
_N_WORDS = len(_WORDS)


_BYTE_WORDS = tuple(_WORDS[i % _N_WORDS] for i in range(256))  # one random byte picks a word


def fake_text(rng: random.Random, *, min_words: int = 15, max_words: int = 120) -> str:
    """Plausible English-ish sentences of ``min_words`` to ``max_words`` words."""
    n = rng.randint(min_words, max(min_words, max_words)) if max_words > 0 else 0
    if n <= 0:
        return ""
    words = [_BYTE_WORDS[b] for b in rng.getrandbits(8 * n).to_bytes(n, "little")]
    lengths = rng.getrandbits(8 * (n // 6 + 1)).to_bytes(n // 6 + 1, "little")
    out: list[str] = []
    i = k = 0
    while i < n:
        j = min(n, i + 6 + lengths[k] % 9)  # sentences of 6 to 14 words
        k += 1
        if n - j < 3:  # no dangling two-word sentence
            j = n
        sentence = " ".join(words[i:j])
        out.append(sentence[0].upper() + sentence[1:] + ".")
        i = j
    return " ".join(out)


# ---------------------------------------------------------------------------------------- JSON

_MAX_DEPTH = 8  # below this depth optional parts are dropped so recursive schemas terminate
_COMBINERS = ("anyOf", "oneOf")


def fake_instance(schema: dict[str, Any], rng: random.Random) -> Any:
    """An instance valid against the JSON Schema ``schema`` (drafts 4 to 2020-12 as pydantic and
    the OpenAI/Gemini structured-output dialects use them). ``$ref`` resolves against ``schema``."""
    return _gen(schema, rng, schema, 0)


def _resolve(s: Any, root: dict[str, Any]) -> Any:
    seen = 0
    while isinstance(s, dict) and "$ref" in s:
        ref = s["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        target: Any = root
        for part in ref[1:].split("/"):
            if part:
                target = target[part.replace("~1", "/").replace("~0", "~")]
        if len(s) > 1:  # sibling keywords next to $ref (2019+): merge them in
            target = _merge([target, {k: v for k, v in s.items() if k != "$ref"}], root)
        s = target
        seen += 1
        if seen > 64:
            raise ValueError(f"$ref cycle at {ref!r}")
    return s


def _merge(parts: list[Any], root: dict[str, Any]) -> dict[str, Any]:
    """Flatten ``allOf``: union of properties and required, tightest numeric bounds."""
    out: dict[str, Any] = {}
    for p in parts:
        p = _resolve(p, root)
        if not isinstance(p, dict):
            continue
        if "allOf" in p:
            p = {**{k: v for k, v in p.items() if k != "allOf"}, **_merge(p["allOf"], root)}
        for k, v in p.items():
            if k == "properties":
                out["properties"] = {**out.get("properties", {}), **v}
            elif k == "required":
                out["required"] = list(dict.fromkeys([*out.get("required", []), *v]))
            elif k in ("minimum", "exclusiveMinimum", "minLength", "minItems") and k in out:
                if not isinstance(v, bool):
                    out[k] = max(out[k], v)
            elif k in ("maximum", "exclusiveMaximum", "maxLength", "maxItems") and k in out:
                if not isinstance(v, bool):
                    out[k] = min(out[k], v)
            else:
                out[k] = v
    return out


def _pick_branch(options: list[Any], rng: random.Random, root: dict[str, Any], depth: int) -> Any:
    branches = [_resolve(o, root) for o in options]
    # number-or-string is how Decimal-like types say "a number, maybe written as a string" (pydantic
    # checks the string); patterned strings cannot be faked reliably: prefer the numeric branch
    numeric = any(isinstance(b, dict) and b.get("type") in ("number", "integer") for b in branches)
    safe = [
        b for b in branches if not (isinstance(b, dict) and b.get("type") == "string" and ("pattern" in b or numeric))
    ] or branches
    if depth >= _MAX_DEPTH:
        nulls = [b for b in safe if isinstance(b, dict) and b.get("type") == "null"]
        if nulls:
            return nulls[0]
    return safe[rng.randrange(len(safe))]


def _infer_type(s: dict[str, Any]) -> str:
    if "properties" in s or "additionalProperties" in s or "required" in s:
        return "object"
    if "items" in s or "prefixItems" in s or "minItems" in s:
        return "array"
    if "minimum" in s or "maximum" in s or "exclusiveMinimum" in s or "exclusiveMaximum" in s:
        return "number"
    return "string"


def _gen(s: Any, rng: random.Random, root: dict[str, Any], depth: int) -> Any:
    if s is True or s is None or s == {}:
        return _word(rng)
    if s is False:
        raise ValueError("schema 'false' admits no instance")
    if "$ref" in s:
        s = _resolve(s, root)
    if "allOf" in s:
        s = _merge([{k: v for k, v in s.items() if k != "allOf"}, *s["allOf"]], root)
    if "const" in s:
        return s["const"]
    if "enum" in s:
        return s["enum"][rng.randrange(len(s["enum"]))]
    for comb in _COMBINERS:
        if comb in s:
            rest = {k: v for k, v in s.items() if k != comb}
            branch = _pick_branch(s[comb], rng, root, depth)
            return _gen(_merge([rest, branch], root) if rest else branch, rng, root, depth)
    t = s.get("type")
    if isinstance(t, list) and t:
        types = [x.lower() for x in t]
        non_null = [x for x in types if x != "null"]
        # favour real values over null; at depth, null ends recursion
        if "null" in types and (depth >= _MAX_DEPTH or not non_null or rng.random() < 0.15):
            t = "null"
        else:
            t = non_null[rng.randrange(len(non_null))]
    elif isinstance(t, str):
        t = t.lower()
    else:
        t = _infer_type(s)
    gen = _GENERATORS.get(t)
    if gen is None:
        raise ValueError(f"unsupported JSON Schema type {t!r}")
    return gen(s, rng, root, depth)


def _object(s: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> dict[str, Any]:
    props: dict[str, Any] = s.get("properties") or {}
    required = set(s.get("required") or ())
    keep = 0.7 if depth < _MAX_DEPTH else 0.0
    out: dict[str, Any] = {}
    for name, sub in props.items():
        if name in required or rng.random() < keep:
            out[name] = _gen(sub, rng, root, depth + 1)
    extra = s.get("additionalProperties")
    min_props = s.get("minProperties", 0)
    if isinstance(extra, dict) and extra and not props:
        want = max(min_props, rng.randint(1, 3) if depth < _MAX_DEPTH else 0)
        want = min(want, s.get("maxProperties", want))
        while len(out) < want:
            out[f"{_word(rng)}_{len(out)}"] = _gen(extra, rng, root, depth + 1)
    elif len(out) < min_props:  # fill from optional properties first
        for name, sub in props.items():
            if len(out) >= min_props:
                break
            if name not in out:
                out[name] = _gen(sub, rng, root, depth + 1)
    return out


def _array(s: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> list[Any]:
    prefix = s.get("prefixItems") or []
    items = s.get("items", {})
    if isinstance(items, list):  # draft-4 tuple form
        prefix, items = items, s.get("additionalItems", {})
    lo = s.get("minItems", 0)
    hi = s.get("maxItems")
    if hi is None:  # shorter lists deeper down keep recursive schemas small
        hi = max(lo, 3 if depth < 4 else 1)
    out = [_gen(p, rng, root, depth + 1) for p in prefix[:hi]]
    if prefix and items is False:
        n = len(out)
    elif depth >= _MAX_DEPTH:
        n = max(lo, len(out))
    else:
        low = max(lo, len(out), min(1, hi))
        n = rng.randint(low, max(low, hi))
    unique = s.get("uniqueItems", False)
    seen = {json.dumps(x, sort_keys=True) for x in out} if unique else set()
    tries = 0
    while len(out) < n and tries < n * 20 + 20:
        v = _gen(items, rng, root, depth + 1)
        tries += 1
        if unique:
            k = json.dumps(v, sort_keys=True)
            if k in seen:
                continue
            seen.add(k)
        out.append(v)
    return out


_FORMATS: dict[str, Any] = {
    "date": lambda r: f"{r.randint(2000, 2029):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: (
        f"{r.randint(2000, 2029):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        f"T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
    ),
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
    "email": lambda r: f"{_word(r)}.{_word(r)}{r.randint(1, 99)}@example.com",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-"
        f"{0x8000 | r.getrandbits(14):04x}-{r.getrandbits(48):012x}"
    ),
    "uri": lambda r: f"https://example.com/{_word(r)}/{r.randint(1, 9999)}",
    "hostname": lambda r: f"{_word(r)}.example.com",
    "ipv4": lambda r: ".".join(str(r.randint(1, 254)) for _ in range(4)),
    "duration": lambda r: f"PT{r.randint(0, 23)}H{r.randint(0, 59)}M",
}
_FORMATS["url"] = _FORMATS["uri-reference"] = _FORMATS["iri"] = _FORMATS["uri"]
_FORMATS["idn-email"] = _FORMATS["email"]


def _word(rng: random.Random) -> str:
    return _NOUNS[rng.randrange(len(_NOUNS))]


def _string(s: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> str:
    fmt = _FORMATS.get(s.get("format", ""))
    lo = s.get("minLength", 0)
    hi = s.get("maxLength")
    if fmt is not None:
        v = fmt(rng)
    else:
        v = " ".join(rng.choices(_WORDS, k=rng.randint(1, 6)))
        if hi is None or hi > 8:
            v = v[0].upper() + v[1:]
    if len(v) < lo:
        while len(v) < lo:
            v += " " + _WORDS[rng.randrange(_N_WORDS)]
        v = v[:lo]
        if v.endswith(" "):
            v = v[:-1] + "s"
    if hi is not None and len(v) > hi:
        v = v[:hi]
        if v.endswith(" ") and len(v) > lo:
            v = v[:-1]
    return v


def _bounds(s: dict[str, Any], integer: bool) -> tuple[float, float]:
    """Inclusive (low, high) from minimum/maximum and the exclusive forms (draft-4 booleans too)."""
    step = 1 if integer else 1e-6
    lows, highs = [], []
    lo, hi, xlo, xhi = (s.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
    if lo is not None:
        lows.append(lo + step if xlo is True else lo)
    if xlo is not None and not isinstance(xlo, bool):
        lows.append(xlo + step)
    if hi is not None:
        highs.append(hi - step if xhi is True else hi)
    if xhi is not None and not isinstance(xhi, bool):
        highs.append(xhi - step)
    low = max(lows) if lows else None
    high = min(highs) if highs else None
    if low is None:
        low = 0 if high is None or high >= 0 else high - 100
    if high is None:
        high = low + 100
    return low, high


def _integer(s: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> int:
    low, high = _bounds(s, True)
    lo, hi = math.ceil(low), math.floor(high)
    mult = s.get("multipleOf")
    if mult and isinstance(mult, int) and mult > 0:
        k_lo, k_hi = -(-lo // mult), hi // mult
        return rng.randint(k_lo, max(k_lo, k_hi)) * mult
    return rng.randint(lo, max(lo, hi))


def _number(s: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> float | int:
    low, high = _bounds(s, False)
    mult = s.get("multipleOf")
    if mult:
        k_lo, k_hi = math.ceil(low / mult), math.floor(high / mult)
        return rng.randint(k_lo, max(k_lo, k_hi)) * mult
    v = round(rng.uniform(low, high), 2)
    if v < low or v > high:  # rounding stepped over an exclusive bound
        v = rng.uniform(low, high)
    return v


_GENERATORS: dict[str, Any] = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": lambda s, rng, root, depth: rng.random() < 0.5,
    "null": lambda s, rng, root, depth: None,
}


# ---------------------------------------------------------------------------------------- tools


def fake_tool_call(tools: list[dict[str, Any]], rng: random.Random) -> tuple[str, str]:
    """Pick one tool (OpenAI ``{"type": "function", "function": {...}}`` or a bare function dict)
    and fake its arguments: ``(name, JSON arguments valid against its parameters)``."""
    if not tools:
        raise ValueError("fake_tool_call needs at least one tool")
    tool = tools[rng.randrange(len(tools))]
    fn = tool.get("function") or tool
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return str(fn["name"]), json.dumps(fake_instance(params, rng), separators=(",", ":"))

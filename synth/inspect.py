"""``synth inspect``: what an output holds, from its manifest and one streaming pass over its
committed records: counts, cost and tokens, top failure reasons, a summary per column (type, nulls,
distinct values, lengths, ranges) and a few sample records. Works on finished and unfinished
outputs, local or on object storage; memory stays flat (distinct counts are estimated past
``EXACT_DISTINCT`` values)."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth.dataset import Output, batches
from synth.records import ENVELOPE_COLUMNS

EXACT_DISTINCT = 4096  # the k of the k-minimum-values sketch: exact up to this many distinct values
REASONS_KEPT = 10_000  # distinct failure reasons counted; later new ones count as "other"


class _Distinct:
    """Distinct values by the k smallest 64-bit hashes seen (KMV): exact up to k, then an estimate
    within a few percent, in constant memory."""

    def __init__(self, k: int = EXACT_DISTINCT) -> None:
        self.k = k
        self.mins = np.empty(0, dtype=np.uint64)

    def add(self, arr: pa.Array) -> None:
        from pandas.util import hash_array  # vectorised 64-bit hashes (pandas comes with Ray Data)

        uniq = pc.unique(arr.drop_null())
        if not len(uniq):
            return
        if pa.types.is_dictionary(uniq.type):
            uniq = uniq.cast(uniq.type.value_type)
        values = uniq.to_numpy(zero_copy_only=False)
        if values.dtype.kind in "mM":
            values = values.view("int64")
        try:
            h = hash_array(values, categorize=False).astype(np.uint64)
        except TypeError:  # objects pandas does not hash (decimals): by their text
            h = hash_array(np.array([str(v) for v in values], dtype=object), categorize=False).astype(np.uint64)
        self.mins = np.unique(np.concatenate([self.mins, h]))[: self.k]

    def value(self) -> tuple[int, bool]:
        """(count, exact)."""
        if len(self.mins) < self.k:
            return len(self.mins), True
        kth = float(self.mins[-1]) / 2.0**64
        return int(round((self.k - 1) / kth)), False


def _scalar(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t))


class _Column:
    def __init__(self, field: pa.Field) -> None:
        self.name, self.type = field.name, field.type
        self.count = self.nulls = 0
        self.distinct = _Distinct() if _scalar(field.type) and not pa.types.is_null(field.type) else None
        self.lo: Any = None
        self.hi: Any = None
        self.len_lo: int | None = None
        self.len_hi: int | None = None
        self.len_sum = 0
        self.len_n = 0
        self.num_sum = 0.0
        self.num_n = 0

    def add(self, arr: pa.Array) -> None:
        self.count += len(arr)
        self.nulls += arr.null_count
        if self.distinct is not None:
            self.distinct.add(arr)
        t = self.type
        if pa.types.is_dictionary(t):
            arr, t = arr.cast(t.value_type), t.value_type
        lengths = None
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            lengths = pc.utf8_length(arr)
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            lengths = pc.list_value_length(arr)
        if lengths is not None:
            mm = pc.min_max(lengths)
            if mm["min"].is_valid:
                lo, hi = mm["min"].as_py(), mm["max"].as_py()
                self.len_lo = lo if self.len_lo is None else min(self.len_lo, lo)
                self.len_hi = hi if self.len_hi is None else max(self.len_hi, hi)
                self.len_sum += pc.sum(lengths).as_py() or 0
                self.len_n += len(lengths) - lengths.null_count
        if (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_temporal(t)
            or pa.types.is_boolean(t)
            or pa.types.is_decimal(t)
        ):
            mm = pc.min_max(arr)
            if mm["min"].is_valid:
                lo, hi = mm["min"].as_py(), mm["max"].as_py()
                self.lo = lo if self.lo is None else min(self.lo, lo)
                self.hi = hi if self.hi is None else max(self.hi, hi)
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                s = pc.sum(arr).as_py()
                if s is not None:
                    self.num_sum += float(s)
                    self.num_n += len(arr) - arr.null_count

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": str(self.type), "shape": shape(self.type)}
        out.update(count=self.count, nulls=self.nulls)
        if self.distinct is not None:
            n, exact = self.distinct.value()
            out.update(distinct=n, distinct_exact=exact)
        if self.len_n:
            out.update(len_min=self.len_lo, len_max=self.len_hi, len_mean=round(self.len_sum / self.len_n, 2))
        if self.lo is not None:
            out.update(min=_plain(self.lo), max=_plain(self.hi))
        if self.num_n:
            out["mean"] = round(self.num_sum / self.num_n, 6)
        return out


def _plain(v: Any) -> Any:
    """A value as JSON can hold it (times as ISO text)."""
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


# the value a validation message quotes ("at code: 'Lower' does not match ...") and unit ids vary
# from one dead letter to the next: without them, messages of one cause group together
_VALUE = re.compile(
    r"""(at [^:]{1,200}: |^|: )('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d[\d.e+-]*|None|True|False)(?= (?:is|does) )"""
)
_UNIT_ID = re.compile(r"\b[0-9a-f]{12}-\d{10}\b")


def reason(message: str | None) -> str:
    """A dead letter's message without the values that differ between letters of one cause."""
    text = " ".join((message or "").split())
    return _UNIT_ID.sub("<id>", _VALUE.sub(r"\1<value>", text))[:240]


def failure_reasons(out: Output, top: int = 5) -> list[dict[str, Any]]:
    """The most frequent causes (error kind and message, values left out) of the committed dead
    letters, each with one message as it was written; streamed."""
    if not out.dead_files:
        return []
    seen: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    other = 0
    for b in batches(out.dead_letters(), columns=["error_kind", "message"]):
        for kind, msg in zip(b.column(0).to_pylist(), b.column(1).to_pylist()):
            key = (kind or "", reason(msg))
            if key in seen or len(seen) < REASONS_KEPT:
                seen[key] += 1
                example.setdefault(key, " ".join((msg or "").split())[:240])
            else:
                other += 1
    reasons = [{"kind": k, "message": m, "count": n, "example": example[(k, m)]} for (k, m), n in seen.most_common(top)]
    if other:
        reasons.append({"kind": "other", "message": "(further distinct reasons)", "count": other})
    return reasons


def inspect(
    uri: str, *, samples: int = 3, max_rows: int | None = None, storage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything ``synth inspect`` shows, as plain data (the ``--json`` document)."""
    out = Output(uri, storage)
    totals = out.totals()
    stats = out.stats() or {}
    running = out.running()
    complete = out.complete
    status = "complete" if complete else ("running" if running else "unfinished")
    ds = out.dataset()
    cols = [_Column(f) for f in ds.schema]
    sample_rows: list[dict[str, Any]] = []
    scanned = 0
    if out.data_files:
        for b in batches(ds):
            if max_rows is not None and scanned >= max_rows:
                break
            if max_rows is not None and scanned + b.num_rows > max_rows:
                b = b.slice(0, max_rows - scanned)
            for c, arr in zip(cols, b.columns):
                c.add(arr)
            if len(sample_rows) < samples:
                sample_rows += [_plain(r) for r in b.slice(0, samples - len(sample_rows)).to_pylist()]
            scanned += b.num_rows
    return {
        "output": out.uri,
        "job": out.spec.get("name"),
        "generator": out.generator,
        "format": out.format,
        "status": status,
        "complete": complete,
        "running": running,
        "units": {"planned": out.planned_units, "committed": out.covered_units},
        "shards": {"planned": out.planned_shards, "committed": len(out.heads)},
        "records": totals["records"],
        "rows": totals["rows"],
        "dead_letters": totals["dead_letters"],
        "dead_by_kind": totals["dead_by_kind"],
        "tokens": {
            "prompt": totals["prompt_tokens"],
            "completion": totals["completion_tokens"],
            "total": totals["prompt_tokens"] + totals["completion_tokens"],
        },
        "cost_usd": totals["cost_usd"],
        "cost_estimate": stats.get("cost_estimate"),
        "bytes": totals["bytes"],
        "failure_reasons": failure_reasons(out),
        "rows_scanned": scanned,
        "columns": [dict(c.summary(), envelope=c.name in ENVELOPE_COLUMNS) for c in cols],
        "samples": sample_rows,
        "logs": out.logs(),
    }


# ------------------------------------------------------------------ rendering for people


def shape(t: pa.DataType) -> str:
    """A type's shape in a few characters: ``list<struct>``, not every field."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{shape(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_map(t):
        return "map"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}]"
    if pa.types.is_dictionary(t):
        return shape(t.value_type)
    return str(t)


def _drop_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str) and len(v) > 16 and v[4:5] == "-":  # an ISO time: to the minute
        return v[:16].replace("T", " ")
    return _short(v, 19)


def _short(v: Any, width: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    s = " ".join(s.split())
    return s if len(s) <= width else s[: width - 1] + "…"


def render(doc: dict[str, Any], console: Any = None) -> None:
    """``synth inspect`` for people: rich tables on the terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    status = doc["status"]
    note = {
        "complete": "[green]complete[/green]",
        "running": "[yellow]running[/yellow]: a run holds this output now; counts are what it has committed so far",
        "unfinished": "[yellow]unfinished[/yellow]: only committed shards are counted; run the job again to resume it",
    }[status]
    head = Table(box=box.SIMPLE, show_header=False, title=f"{doc['output']}  ({doc['job']}, {doc['generator']})")
    head.add_column(style="bold")
    head.add_column()
    est = doc.get("cost_estimate") or {}
    rows = [
        ("status", note),
        ("shards", f"{doc['shards']['committed']:,} committed of {doc['shards']['planned']:,} planned"),
        ("units", f"{doc['units']['committed']:,} of {doc['units']['planned']:,} planned"),
        ("records", f"{doc['records']:,}" + (f" ({doc['rows']:,} rows)" if doc["rows"] != doc["records"] else "")),
        ("dead letters", f"{doc['dead_letters']:,}" + "".join(f"  {k}: {n:,}" for k, n in doc["dead_by_kind"].items())),
        ("tokens", f"{doc['tokens']['prompt']:,} prompt + {doc['tokens']['completion']:,} completion"),
        (
            "cost",
            f"${doc['cost_usd']:.4f}"
            + (f" (about ${est['usd']:.4f} on {est.get('model')})" if est.get("usd") and not doc["cost_usd"] else ""),
        ),
        ("format", f"{doc['format']}, {doc['bytes'] / 1e6:,.2f} MB"),
    ]
    for k, v in rows:
        head.add_row(k, v)
    con.print(head)
    if doc["failure_reasons"]:
        t = Table(title="top failure reasons", box=box.SIMPLE_HEAD)
        for c in ("count", "kind", "message"):
            t.add_column(c, justify="right" if c == "count" else "left")
        for r in doc["failure_reasons"]:
            t.add_row(f"{r['count']:,}", r["kind"], _short(r["message"], 90))
        con.print(t)
    if doc["columns"]:
        t = Table(title=f"columns ({doc['rows_scanned']:,} rows scanned)", box=box.SIMPLE_HEAD)
        for c in ("column", "type", "nulls", "distinct", "length", "range"):
            t.add_column(c, no_wrap=True, overflow="ellipsis", min_width=len(c) if c != "range" else 12)
        for c in doc["columns"]:
            distinct = "-" if "distinct" not in c else f"{'' if c['distinct_exact'] else '~'}{c['distinct']:,}"
            length = (
                ""
                if "len_min" not in c
                else f"{c['len_min']}" + (f"..{c['len_max']}" if c["len_max"] != c["len_min"] else "")
            )
            rng = "" if "min" not in c else _num(c["min"]) + (f" .. {_num(c['max'])}" if c["max"] != c["min"] else "")
            name = f"[dim]{c['name']}[/dim]" if c["envelope"] else c["name"]
            t.add_row(name, c["shape"], f"{c['nulls']:,}", distinct, length, rng)
        con.print(t)
    for i, r in enumerate(doc["samples"]):
        payload = _drop_nulls({k: v for k, v in r.items() if k not in ENVELOPE_COLUMNS or k == "id"})
        con.print(f"[bold]sample {i + 1}[/bold] " + _short(payload, 400), soft_wrap=True, highlight=False)

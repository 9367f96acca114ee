"""Flat rows: JSON lines (nested fields stay nested) and CSV (nested fields as JSON strings)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv


def _default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return str(v)  # Decimal, timedelta and the like


def dumps(obj: Any) -> bytes:
    """One JSON value, UTF-8, times as ISO 8601."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def write_jsonl(batches: Iterable[pa.RecordBatch], f: IO[bytes]) -> int:
    n = 0
    for b in batches:
        f.write(b"".join(dumps(row) + b"\n" for row in b.to_pylist()))
        n += b.num_rows
    return n


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_dictionary(t) and pa.types.is_nested(t.value_type)


def flat_schema(schema: pa.Schema) -> pa.Schema:
    """The schema with every nested column as a JSON string (for CSV and SQL)."""
    return pa.schema([pa.field(f.name, pa.string()) if _nested(f.type) else f for f in schema])


def flatten(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch whose nested columns (lists, structs, maps) are JSON strings; nulls stay null."""
    cols = []
    for f, col in zip(batch.schema, batch.columns):
        if _nested(f.type):
            col = pa.array([None if v is None else dumps(v).decode() for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def write_csv(batches: Iterable[pa.RecordBatch], f: IO[bytes], schema: pa.Schema) -> int:
    """RFC 4180 CSV with a header row; nulls are empty fields."""
    flat = flat_schema(schema)
    n = 0
    with pacsv.CSVWriter(f, flat, write_options=pacsv.WriteOptions(include_header=True)) as w:
        for b in batches:
            w.write_batch(flatten(b, flat))
            n += b.num_rows
    return n

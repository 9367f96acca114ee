"""The output formats of a job's records: how a piece of a shard is encoded as one data file, and how
a csv or json data file is read back into Arrow.

| format | a data file holds |
|---|---|
| ``parquet`` | Parquet, every Arrow type as is |
| ``jsonl`` | one JSON object per line |
| ``json`` | one JSON array of objects, one record per line; nested fields nested; times ISO 8601 |
| ``csv`` | RFC 4180 with a header row (see :func:`encode_csv`); nested fields as JSON text |

Text files do not carry their column types, so a csv or json commit entry records the Arrow schema
of its data files (``arrow_schema``): readers get back the columns and types that were written
(a CSV's nested fields stay JSON strings)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler

FORMATS = ("parquet", "jsonl", "json", "csv")
TYPED = ("json", "csv")  # text formats whose commit entries record the files' Arrow schema
SCHEMA_KEY = "arrow_schema"
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
# JSON text holds no such types: parsed as strings, then cast
_AS_TEXT = (pa.types.is_date, pa.types.is_time, pa.types.is_decimal, pa.types.is_duration, pa.types.is_binary)


def _default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return str(v)  # Decimal, timedelta and the like


def dumps(v: Any) -> bytes:
    """One JSON value: UTF-8, times ISO 8601 (UTC as ``Z``), bytes as hex."""
    return orjson.dumps(v, default=_default, option=_JSON_OPTIONS)


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_dictionary(t) and pa.types.is_nested(t.value_type)


def _iso(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as ISO 8601 text (``2024-05-01T12:00:00.000000Z``); nulls stay null."""
    return pc.utf8_replace_slice(pc.cast(col, pa.string()), 10, 11, "T")


def encode_csv(table: pa.Table) -> bytes:
    """CSV dialect: RFC 4180 (comma separator, double quotes, a quote inside a field doubled) with
    LF line ends, UTF-8 without a BOM, a header row; strings are always quoted and a null is an
    empty unquoted field; nested fields (structs, lists, maps) are JSON text; timestamps ISO 8601."""
    cols = []
    for f, col in zip(table.schema, table.columns):
        if _nested(f.type):
            col = pa.array([None if v is None else dumps(v).decode() for v in col.to_pylist()], pa.string())
        elif pa.types.is_timestamp(f.type):
            col = _iso(col)
        cols.append(col)
    buf = io.BytesIO()
    pacsv.write_csv(pa.Table.from_arrays(cols, names=table.column_names), buf)
    return buf.getvalue()


def encode_json(table: pa.Table) -> bytes:
    """One JSON array, one record per line (a line-by-line reader can take it apart too)."""
    rows = [dumps(row) for row in table.to_pylist()]
    return b"[\n" + b",\n".join(rows) + b"\n]\n"


def encode(table: pa.Table, fmt: str, compression: str) -> bytes:
    """One data file's bytes in ``fmt``."""
    if fmt == "jsonl":
        buf = io.BytesIO()
        for row in table.to_pylist():
            buf.write(json.dumps(row, default=str, ensure_ascii=False).encode() + b"\n")
        return buf.getvalue()
    if fmt == "csv":
        return encode_csv(table)
    if fmt == "json":
        return encode_json(table)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    return buf.getvalue()


# ------------------------------------------------------------------ schemas in commit entries
def schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()


def schema_of_text(text: str) -> pa.Schema:
    return ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema holding every one of ``schemas`` (a column null in one, an integer widened in another)."""
    distinct = list({s.to_string(show_schema_metadata=False): s.remove_metadata() for s in schemas}.values())
    return distinct[0] if len(distinct) == 1 else pa.unify_schemas(distinct, promote_options="permissive")


def read_schema(fmt: str, schema: pa.Schema) -> pa.Schema:
    """The columns a reader gets from files written with ``schema``: a CSV's nested fields are strings."""
    if fmt != "csv":
        return schema
    return pa.schema([pa.field(f.name, pa.string()) if _nested(f.type) else f for f in schema])


# ------------------------------------------------------------------ reading
def decode(data: bytes, fmt: str, schema: pa.Schema | None = None) -> pa.Table:
    """A csv or json data file as a table. ``schema``: what it was written with (its columns, in
    order, missing ones as nulls); None infers the types from the text."""
    if fmt == "csv":
        return _decode_csv(data, schema)
    if fmt == "json":
        return _decode_json(data, schema)
    raise ValueError(f"not a text format with a decoder: {fmt!r}")


def _decode_csv(data: bytes, schema: pa.Schema | None) -> pa.Table:
    # quoted fields are strings, never null: "" and "NA" stay text while an empty unquoted field is null
    opts = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
    if schema is not None:
        flat = read_schema("csv", schema)
        opts.column_types = {f.name: f.type for f in flat}
        opts.include_columns = flat.names
        opts.include_missing_columns = True
    table = pacsv.read_csv(pa.BufferReader(data), convert_options=opts)
    return table if schema is None else table.cast(read_schema("csv", schema))


def _decode_json(data: bytes, schema: pa.Schema | None) -> pa.Table:
    rows = orjson.loads(data)
    if not isinstance(rows, list):
        raise ValueError("a json data file holds one array of records")
    if not rows:
        return (schema or pa.schema([])).empty_table()
    lines = pa.BufferReader(b"\n".join(orjson.dumps(r) for r in rows))
    if schema is None:
        return pajson.read_json(lines)
    parse = pa.schema([pa.field(f.name, pa.string()) if any(t(f.type) for t in _AS_TEXT) else f for f in schema])
    opts = pajson.ParseOptions(explicit_schema=parse, unexpected_field_behavior="ignore")
    return pajson.read_json(lines, parse_options=opts).select(schema.names).cast(schema)


def to_ipc_file(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


class Decoding(FSSpecHandler):
    """An fsspec filesystem, read-only in use, on which every ``.csv`` and ``.json`` file opens as an
    Arrow IPC file decoded with ``schema``: a ``pyarrow.dataset`` over it reads text data files
    lazily, one file at a time, with their written types."""

    def __init__(self, fs: Any, fmt: str, schema: pa.Schema | None) -> None:
        super().__init__(fs)
        self.format = fmt
        self.schema = schema

    def open_input_file(self, path: str) -> Any:
        if path.endswith(f".{self.format}"):
            return pa.BufferReader(to_ipc_file(decode(self.fs.cat_file(path), self.format, self.schema)))
        return super().open_input_file(path)

    def open_input_stream(self, path: str) -> Any:
        return self.open_input_file(path)

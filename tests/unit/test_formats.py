"""The csv and json output formats without Ray: the files as Python's csv and json modules read
them, read back into Arrow with their written types, published in partitions and pieces by the
sink, and a change of format on resume refused."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from synth.dataset import Output
from synth.engine.formats import SCHEMA_KEY, decode, encode, read_schema, schema_of_text
from synth.engine.manifest import Manifest
from synth.engine.plan import Shard
from synth.engine.sink import ShardSink
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import parse_job

T0 = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
ADDRESS = pa.struct([("city", pa.string()), ("zip", pa.string()), ("floors", pa.list_(pa.int64()))])
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("name", pa.string()),
        ("rating", pa.int64()),
        ("score", pa.float64()),
        ("ok", pa.bool_()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("day", pa.date32()),
        ("address", ADDRESS),
        ("tags", pa.list_(pa.string())),
    ]
)
ROWS = [
    {
        "id": "a1",
        "name": 'say "hi", then\nleave',
        "rating": 3,
        "score": 0.5,
        "ok": True,
        "created_at": T0,
        "day": date(2024, 5, 1),
        "address": {"city": "Lyon", "zip": "01234", "floors": [1, 2]},
        "tags": ["x", "y,z"],
    },
    {  # text that looks like a number, a null marker or nothing stays text; nulls stay null
        "id": "a2",
        "name": "",
        "rating": None,
        "score": None,
        "ok": False,
        "created_at": None,
        "day": None,
        "address": None,
        "tags": [],
    },
    {
        "id": "007",
        "name": "NA",
        "rating": -1,
        "score": 1e-9,
        "ok": None,
        "created_at": T0.replace(microsecond=0),
        "day": date(1999, 12, 31),
        "address": {"city": None, "zip": "9", "floors": None},
        "tags": None,
    },
]


def table() -> pa.Table:
    return pa.Table.from_pylist(ROWS, schema=SCHEMA)


def test_csv_file_has_a_header_nested_fields_as_json_and_iso_times():
    data = encode(table(), "csv", "zstd")
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert list(rows[0]) == SCHEMA.names and len(rows) == 3
    assert rows[0]["name"] == 'say "hi", then\nleave'
    assert rows[0]["created_at"] == "2024-05-01T12:00:00.250000Z"
    assert rows[2]["created_at"] == "2024-05-01T12:00:00.000000Z"
    assert rows[0]["day"] == "2024-05-01" and rows[0]["ok"] == "true" and rows[0]["rating"] == "3"
    assert json.loads(rows[0]["address"]) == ROWS[0]["address"]
    assert json.loads(rows[0]["tags"]) == ["x", "y,z"] and json.loads(rows[1]["tags"]) == []
    assert rows[1]["address"] == "" and rows[1]["rating"] == ""  # null: an empty field


def test_csv_reads_back_with_the_written_types_nested_fields_as_json_text():
    got = decode(encode(table(), "csv", "zstd"), "csv", SCHEMA)
    assert got.schema == read_schema("csv", SCHEMA)
    assert got.schema.field("address").type == pa.string() and got.schema.field("day").type == pa.date32()
    flat = got.to_pylist()
    for want, row in zip(ROWS, flat):
        for col in ("address", "tags"):
            assert (None if row[col] is None else json.loads(row[col])) == want[col]
        assert {k: v for k, v in row.items() if k not in ("address", "tags")} == {
            k: v for k, v in want.items() if k not in ("address", "tags")
        }
    # "", "NA" and "007" stay strings; the nulls stay null
    assert [r["name"] for r in flat] == [ROWS[0]["name"], "", "NA"] and flat[2]["id"] == "007"
    assert flat[1]["rating"] is None and flat[1]["address"] is None


def test_json_file_is_one_array_one_record_per_line_and_reads_back_exactly():
    data = encode(table(), "json", "zstd")
    doc = json.loads(data)
    assert isinstance(doc, list) and len(doc) == 3
    assert doc[0]["address"] == ROWS[0]["address"] and doc[0]["created_at"] == "2024-05-01T12:00:00.250000Z"
    assert doc[0]["day"] == "2024-05-01" and doc[1]["rating"] is None
    assert data.decode().splitlines()[0] == "[" and len(data.decode().splitlines()) == 5
    got = decode(data, "json", SCHEMA)
    assert got.schema == SCHEMA and got.to_pylist() == table().to_pylist()
    # without a schema the types are inferred from the text
    assert decode(data, "json").column("rating").to_pylist() == [3, None, -1]


def job(tmp_path, fmt: str, count: int = 6, **out):
    doc = {
        "name": "t",
        "count": count,
        "seed": 1,
        "generator": {"kind": "structured", "prompt": "p"},
        "output": {"uri": str(tmp_path / "o"), "shard_size": 10, "format": fmt, **out},
    }
    return parse_job(doc, env={})


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_sink_publishes_partitions_and_pieces_that_read_back_as_one_dataset(tmp_path, fmt):
    j = job(tmp_path, fmt, count=6, partition_by=["rating"])
    st = Storage(j.output)
    Manifest(st).open(j)
    sink = ShardSink(j.output, ["rating"])
    first = table().append_column("shard", pa.array([0, 0, 0], pa.int32()))
    sink.publish(st, 0, first, None, {"records": 3}, Shard(0, 0, 3).piece())
    # a later piece of the shard: a new column type (null before) is merged into the entry's schema
    more = pa.Table.from_pylist([{**ROWS[0], "id": "b1", "rating": 3, "name": "later"}], schema=SCHEMA)
    more = more.append_column("shard", pa.array([0], pa.int32())).append_column("extra", pa.array(["e"]))
    sink.publish(st, 0, more, None, {"records": 1}, Shard(0, 3, 4, part=1).piece())

    entry = Manifest(st).entry(0, 1)
    assert entry is not None and all(f.endswith(f".{fmt}") for f in entry["files"])
    assert "data/rating=3/shard-00000000.g0001." + fmt in entry["files"]
    assert "data/rating=__HIVE_DEFAULT_PARTITION__/shard-00000000." + fmt in entry["files"]
    written = schema_of_text(entry[SCHEMA_KEY])
    assert "rating" not in written.names and written.field("extra").type == pa.string()

    out = Output(str(tmp_path / "o"))
    assert out.format == fmt
    got = out.dataset().to_table().sort_by("id").to_pylist()
    assert [r["id"] for r in got] == ["007", "a1", "a2", "b1"]
    assert {r["id"]: r["rating"] for r in got} == {"007": -1, "a1": 3, "a2": None, "b1": 3}
    assert [r["extra"] for r in got] == [None, None, None, "e"]
    address = got[1]["address"]
    assert (json.loads(address) if fmt == "csv" else address) == ROWS[0]["address"]
    assert got[1]["created_at"] == T0 and got[0]["day"] == date(1999, 12, 31)


def test_resuming_with_another_format_is_refused_in_one_line(tmp_path):
    Manifest(Storage(job(tmp_path, "csv").output)).open(job(tmp_path, "csv"))
    with pytest.raises(StorageError) as e:
        Manifest(Storage(job(tmp_path, "json").output)).open(job(tmp_path, "json"))
    assert 'format: "csv" -> "json"' in str(e.value) and "\n" not in str(e.value)


def test_csv_output_on_object_storage_reads_back_through_synth_open(s3_bucket):
    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/out"
    doc = {
        "name": "t",
        "count": 3,
        "seed": 1,
        "generator": {"kind": "structured", "prompt": "p"},
        "output": {"uri": uri, "shard_size": 10, "format": "csv", "storage": {"endpoint_url": endpoint}},
    }
    j = parse_job(doc, env={})
    st = Storage(j.output)
    Manifest(st).open(j)
    ShardSink(j.output, []).publish(st, 0, table(), None, {"records": 3}, Shard(0, 0, 3).piece())
    got = Output(uri, {"endpoint_url": endpoint}).dataset().to_table()
    assert got.schema == read_schema("csv", SCHEMA)
    assert got.column("id").to_pylist() == ["a1", "a2", "007"] and got.column("created_at")[0].as_py() == T0

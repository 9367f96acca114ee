"""csv and json outputs end to end: a structured job on the offline sim with a nested object field,
partitioned, made in a partial run and resumed to exactly N; every row and column of the data files
read with Python's csv and json modules agrees with what synth.open reads back."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import synth
from synth.records import ENVELOPE_COLUMNS
from tests.support.runs import job_doc, stats_of, synth_run, write_job

N = 120
SCHEMA = {
    "type": "object",
    "required": ["title", "rating", "address", "tags"],
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "rating": {"type": "integer", "minimum": 1, "maximum": 3},
        "address": {
            "type": "object",
            "required": ["city", "zip"],
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
}
PAYLOAD = ["title", "rating", "address", "tags", "vars", "prompt"]


def file_rows(out: Path, fmt: str) -> list[dict[str, Any]]:
    """Every record of the data files as Python's csv or json module reads it, with the partition
    column taken from the folder name."""
    rows = []
    for f in sorted((out / "data").rglob(f"*.{fmt}")):
        folder = f.parent.name.split("=", 1)[1]
        rating = folder if fmt == "csv" else int(folder)  # text in CSV
        if fmt == "csv":
            with f.open(newline="", encoding="utf-8") as fh:
                got = list(csv.DictReader(fh))
        else:
            got = json.loads(f.read_text(encoding="utf-8"))
        rows += [{**r, "rating": rating} for r in got]
    return rows


@pytest.mark.parametrize(("fmt", "executor"), [("csv", "ray"), ("json", "local")])
def test_partial_run_resumed_to_n_reads_back_with_csv_json_and_synth_open(tmp_path, ray_address, fmt, executor):
    out = tmp_path / "out"
    doc = job_doc("formats", out, N, shard=25)
    doc["generator"].update(schema=SCHEMA, layout="columns")
    doc["output"].update(format=fmt, partition_by=["rating"])
    job = write_job(tmp_path / "job.yaml", doc)

    where = {"address": ray_address} if executor == "ray" else {}
    partial = synth_run(job, "-n", "60", "--executor", executor, **where)  # shards 0, 1 whole; shard 2 in part
    assert partial.returncode == 0, partial.stderr[-2000:]
    assert stats_of(out)["records"] + stats_of(out)["dead_letters"] == 60
    before = {f.relative_to(out) for f in (out / "data").rglob("*") if f.is_file()}
    r = synth_run(job, "--executor", executor, **where)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = stats_of(out)
    assert stats["complete"] and stats["records"] == N and stats["dead_letters"] == 0

    # every data file carries the format's extension; the partial run's files are still there, and
    # the resumed shard 2 added a generation of its own
    files = [f for f in (out / "data").rglob("*") if f.is_file()]
    assert files and all(f.suffix == f".{fmt}" for f in files)
    assert before <= {f.relative_to(out) for f in files}
    assert any(".g0001." in f.name for f in files)

    rows = file_rows(out, fmt)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == N

    table = synth.open(str(out)).to_table()
    assert table.num_rows == N
    assert set(table.column_names) == set(PAYLOAD) | ENVELOPE_COLUMNS
    opened = {r["id"]: r for r in table.to_pylist()}
    assert set(opened) == set(ids)
    for row in rows:
        back = opened[row["id"]]
        assert set(row) == set(back)
        for col, value in row.items():
            want = back[col]
            if col == "address":  # nested: a JSON string in CSV (and read back as one), an object in JSON
                assert isinstance(want, str if fmt == "csv" else dict)
                got = json.loads(value) if fmt == "csv" else value
                assert got == (json.loads(want) if fmt == "csv" else want)
                assert set(got) == {"city", "zip"}
            elif col == "tags":
                assert (json.loads(value) if fmt == "csv" else value) == (json.loads(want) if fmt == "csv" else want)
            elif isinstance(want, datetime):  # ISO 8601, UTC
                assert value.endswith("Z") and datetime.fromisoformat(value.replace("Z", "+00:00")) == want
            elif fmt == "csv" and isinstance(want, float):
                assert float(value) == want
            elif fmt == "csv":  # CSV holds text; a null is an empty field
                assert value == ("" if want is None else str(want).lower() if isinstance(want, bool) else str(want))
            else:
                assert value == want

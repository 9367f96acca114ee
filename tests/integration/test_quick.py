"""Quick generation end to end on the offline sim: `synth generate` into a single CSV read back with
Python's csv module, --stream into a reader that stops early (the run ends cleanly and the saved job
finishes the same output), bad options refused in one line before anything is written, and the SDK:
synth.generate returns the records, synth.stream yields each committed record once while the job
runs and stops the run when the loop is left."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import synth
from synth.quick import build
from tests.support.runs import env, error_lines

FIELDS = """\
temperature: {type: number, min: -20, max: 40}
city: {type: string, enum: [Oslo, Lima, Pune]}
reading: {type: integer, min: 0, max: 9}
"""


def synth_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synth", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
    )


def test_csv_file_from_a_short_schema(tmp_path):
    (tmp_path / "s.yaml").write_text(FIELDS)
    args = ("generate", "structured", "--schema", "s.yaml", "--count", "500", "--format", "csv", "--output", "x.csv")
    r = synth_cli(*args, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    with (tmp_path / "x.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 500 and len({row["id"] for row in rows}) == 500
    assert set(rows[0]) == {"id", "temperature", "city", "reading"}  # every field, no envelope, no empty vars
    assert all(-20 <= float(row["temperature"]) <= 40 and 0 <= int(row["reading"]) <= 9 for row in rows)
    assert {row["city"] for row in rows} <= {"Oslo", "Lima", "Pune"}
    # the dataset it was written from sits beside it; no temporary file is left
    assert (tmp_path / "x.csv.parts" / "stats.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml", "x.csv", "x.csv.parts"]
    # the same command again resumes (nothing to make) and writes the same file
    before = (tmp_path / "x.csv").read_bytes()
    again = synth_cli(*args, "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "x.csv").read_bytes() == before


def test_json_schema_file_into_a_jsonl_folder(tmp_path):
    schema = {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    r = synth_cli(
        "generate", "structured", "--schema", "s.json", "-n", "60", "-f", "jsonl", "-o", "out", "-q", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    files = list((tmp_path / "out" / "data").rglob("*.jsonl"))
    assert files
    table = synth.open(str(tmp_path / "out")).to_table()
    assert table.num_rows == 60 and {"sku", "qty"} <= set(table.column_names)


def test_stream_into_a_reader_that_stops_early_then_the_saved_job_finishes(tmp_path):
    """`synth generate --stream | head -3`: the reader leaves, the run stops as on Ctrl-C (exit 141,
    no traceback), what is committed is whole, and `synth run` of the saved job finishes it."""
    n = 18_000  # 60 shards of 300 (in this process): the reader leaves long before the last commits
    (tmp_path / "s.yaml").write_text(FIELDS)
    cmd = ["generate", "structured", "--schema", "s.yaml", "-n", str(n), "-o", "y.jsonl", "--stream"]
    p = subprocess.Popen(
        [sys.executable, "-m", "synth", *cmd, "--save-job", "job.yaml", "-q"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    head = [json.loads(p.stdout.readline()) for _ in range(3)]
    p.stdout.close()  # as `head -3` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=600) == 141, err[-2000:]
    assert "Traceback" not in err and "BrokenPipe" not in err and error_lines(err) == []
    assert "stopped: the reader of --stream closed its end" in err
    assert [set(r) for r in head] == [{"id", "temperature", "city", "reading"}] * 3

    parts = tmp_path / "y.jsonl.parts"
    committed = synth.open(str(parts)).to_table(columns=["id"])["id"].to_pylist()
    assert len(committed) == len(set(committed)) < n  # whole shards only, the run stopped early
    assert {r["id"] for r in head} <= set(committed)
    assert not (tmp_path / "y.jsonl").exists()  # the file is written only from a complete dataset

    done = synth_cli("run", "job.yaml", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((parts / "stats.json").read_text())
    assert stats["complete"] and stats["records"] == n and stats["shards"]["skipped_this_run"] >= 1
    ids = synth.open(str(parts)).to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == n
    # the generate command again writes the single file from the finished dataset
    r = synth_cli(*cmd[:-1], "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sum(1 for _ in (tmp_path / "y.jsonl").open()) == n


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tabular"], "KIND 'tabular': unknown generator"),
        (["structured", "--schema", "bad.yaml"], "--schema 'bad.yaml': not valid YAML or JSON"),
        (["structured", "--schema", "notschema.yaml"], "not a valid JSON Schema"),
        (["structured", "--schema", "missing.yaml"], "does not exist"),
        (["structured", "--model", "gpt-4o"], "--model 'gpt-4o'"),
        (["structured", "--model", "nope:x"], "unknown provider prefix 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, says):
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    (tmp_path / "notschema.yaml").write_text("a: {type: strin}\n")
    r = synth_cli("generate", *args, "-o", "out", "--save-job", "job.yaml", cwd=tmp_path)
    assert r.returncode == 2
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "notschema.yaml"]


def test_sdk_generate_returns_the_records(tmp_path):
    fields = {"city": {"type": "string", "enum": ["Oslo", "Lima"]}, "t": {"type": "number", "min": 0, "max": 5}}
    table = synth.generate("structured", count=100, schema=fields, output=str(tmp_path / "g"))
    assert table.num_rows == 100 and table.column_names == ["id", "city", "t"]
    rows = table.to_pylist()
    assert len({r["id"] for r in rows}) == 100 and all(r["city"] in ("Oslo", "Lima") and 0 <= r["t"] <= 5 for r in rows)
    # with fallbacks and a route, the envelope says which provider answered
    routed = synth.generate(
        "structured", count=20, model="sim:a", fallback="sim:b", route="cost", envelope=True, output=str(tmp_path / "r")
    )
    assert routed.num_rows == 20 and set(routed["provider"].to_pylist()) <= {"sim:a", "sim:b"}


@pytest.mark.parametrize("suffix", ["json", "parquet"])
def test_sdk_single_json_or_parquet_file(tmp_path, suffix):
    import pyarrow.parquet as pq

    target = tmp_path / f"t.{suffix}"
    table = synth.generate(
        "timeseries", count=4, schema={"v": {"type": "integer", "min": 0, "max": 9}}, output=str(target)
    )
    if suffix == "json":
        rows = json.loads(target.read_text())
    else:
        rows = pq.read_table(target).to_pylist()
    assert len(rows) == table.num_rows > 4 and {"id", "series_id", "timestamp", "v"} <= set(rows[0])
    assert [r["id"] for r in rows] == table["id"].to_pylist() and all(
        0 <= r["v"] <= 9 for r in rows if r["v"] is not None
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"t.{suffix}", f"t.{suffix}.parts"]


def test_sdk_stream_yields_every_record_once_while_the_job_runs(tmp_path):
    n = 600
    q = build("structured", count=n, output=str(tmp_path / "s"), shard_size=25)
    q.doc["providers"][0]["rpm"] = 3000  # 12 s however fast the machine: the first batch comes while it runs
    spec = q.spec()
    out = tmp_path / "s"
    ids: list[str] = []
    running_at_first = None
    for table in synth.stream(spec):
        if running_at_first is None:  # the run writes stats.json when it ends
            running_at_first = not (out / "stats.json").exists()
        ids += table["id"].to_pylist()
    assert running_at_first is True
    assert len(ids) == len(set(ids)) == n
    assert set(ids) == set(synth.open(str(out)).to_table(columns=["id"])["id"].to_pylist())


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_sdk_stream_left_early_stops_the_run_and_it_resumes(tmp_path, request, executor):
    if executor == "ray":
        request.getfixturevalue("ray_local")  # this process's Ray: the run's workers outlive a stopped driver
    # 6,000 requests at 6,000 a minute take a minute however fast the machine: the stop, which
    # reaches the run within a second or two, always lands half way
    n, shard = 6000, 25
    q = build("structured", count=n, output=str(tmp_path / "e"), shard_size=shard)
    q.doc["providers"][0]["rpm"] = 6000
    spec = q.spec()
    spec.engine.executor = executor
    it = synth.stream(spec)
    first = next(it)
    it.close()  # leaving the loop: the run stops, committed shards stay
    committed = synth.open(str(tmp_path / "e")).to_table(columns=["id"])["id"].to_pylist()
    assert set(first["id"].to_pylist()) <= set(committed) and len(committed) == len(set(committed)) < n
    # the stop waited for the write to end: nothing of this run writes on behind the caller's back
    assert not [t for t in threading.enumerate() if t.name in ("synth-write", "synth-stream-run")]
    spec.providers[0].rpm = None  # the resume need not wait on the limit,
    spec.engine.executor = "local"  # nor on Ray: which executor resumes is not what this is about
    res = synth.run(spec)
    assert res.complete and res.records == n and res.shards_skipped >= 1
    ids = synth.open(str(tmp_path / "e")).to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == n

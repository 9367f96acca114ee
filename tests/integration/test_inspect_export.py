"""synth inspect and synth export on outputs the engine made: the conversation example and a
structured job with dead letters, run once per module on the offline sim; read back with sqlite3,
csv, datasets.load_from_disk; from the local S3 server; unfinished and damaged outputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import synth
from synth.records import ENVELOPE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
ROLES = {"system", "user", "assistant", "tool"}

STRUCTURED = {
    "name": "items",
    "count": 40,
    "seed": 5,
    "generator": {
        "kind": "structured",
        "prompt": "Item {n}",
        "vars": {"n": {"kind": "range", "low": 1, "high": 1000}},
        "schema": {
            "type": "object",
            "required": ["title", "rating", "tags"],
            "properties": {
                "title": {"type": "string", "maxLength": 40},
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                # the offline sim ignores patterns: a unit that fills this optional field is re-asked, then dead-lettered
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            },
        },
    },
    "output": {"shard_size": 10},
}


@pytest.fixture
def cli(capsys):
    """The command line in this process (the module's runs are too slow to repeat per call):
    returns (exit code, stdout, stderr) as ``synth ARGS`` would."""
    from synth.cli import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


def synth_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m synth ARGS`` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "synth", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **(env or {})},
        timeout=240,
    )


@pytest.fixture(scope="module")
def outputs(ray_local, tmp_path_factory):
    """(conversation output, structured output, their run results)."""
    base = tmp_path_factory.mktemp("outputs")
    here = os.getcwd()
    os.chdir(ROOT)  # the example names its data files relative to the repository root
    try:
        conv = (
            synth.run(ROOT / "jobs" / "examples" / "conversation.yaml", count=12, output=str(base / "conv")),
            str(base / "conv"),
        )
    finally:
        os.chdir(here)
    doc = json.loads(json.dumps(STRUCTURED))
    doc["output"]["uri"] = str(base / "items")
    items = synth.run(doc), str(base / "items")
    assert conv[0].complete and items[0].complete
    assert items[0].records > 0 and items[0].dead_letters > 0
    return {"conv": conv, "items": items}


def test_inspect_json_matches_the_data(cli, outputs):
    res, uri = outputs["items"]
    r = cli("inspect", uri, "--json", "--samples", "2")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    table = synth.open(uri).to_table()
    assert doc["status"] == "complete" and doc["records"] == res.records == table.num_rows
    assert doc["dead_letters"] == res.dead_letters and doc["records"] + doc["dead_letters"] == 40
    assert doc["shards"] == {"planned": 4, "committed": 4}
    assert doc["tokens"]["prompt"] == res.prompt_tokens > 0
    dead = pq.read_table(f"{uri}/dead_letters")
    assert sum(x["count"] for x in doc["failure_reasons"]) == dead.num_rows == res.dead_letters
    assert {x["kind"] for x in doc["failure_reasons"]} == set(dead["error_kind"].to_pylist())
    assert all(x["example"] in dead["message"].to_pylist() for x in doc["failure_reasons"])
    cols = {c["name"]: c for c in doc["columns"]}
    assert set(cols) == set(table.column_names)
    assert cols["id"]["distinct"] == res.records and cols["id"]["nulls"] == 0
    assert cols["record"]["shape"] == "struct"
    assert [s["id"] for s in doc["samples"]] == table["id"].to_pylist()[:2]


def test_inspect_text_for_people(cli, outputs):
    res, uri = outputs["items"]
    r = cli("inspect", uri)
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout and "4 committed of 4 planned" in r.stdout
    assert f"{res.dead_letters}" in r.stdout and "malformed_output" in r.stdout
    assert "sample 1" in r.stdout and "record" in r.stdout


def test_export_to_sqlite_and_csv(cli, outputs, tmp_path):
    res, uri = outputs["items"]
    import sqlite3

    r = cli("export", uri, "--format", "sql", "--to", str(tmp_path / "items.db"), "--table", "items")
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(tmp_path / "items.db")
    assert con.execute("select count(*) from items").fetchone() == (res.records,)
    payload = [c for c in synth.open(uri).schema.names if c == "id" or c not in ENVELOPE_COLUMNS]
    assert [c[1] for c in con.execute("pragma table_info(items)")] == payload and "record" in payload
    rec = json.loads(con.execute("select record from items limit 1").fetchone()[0])
    assert {"title", "rating", "tags"} <= set(rec)
    r = cli("export", uri, "--format", "csv", "--to", str(tmp_path / "items.csv"), "--with-envelope")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "items.csv", newline="")))
    assert len(rows) == res.records and {"id", "model", "prompt_tokens", "record"} <= set(rows[0])
    assert all(1 <= json.loads(row["record"])["rating"] <= 5 for row in rows)


def test_export_to_a_hugging_face_folder(cli, outputs, tmp_path):
    import datasets

    res, uri = outputs["conv"]
    r = cli("export", uri, "--format", "hf", "--to", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert ds.num_rows == res.records and "messages" in ds.column_names and "prompt_tokens" not in ds.column_names
    assert ds[0]["messages"][0]["role"] == "system"


def test_openai_fine_tuning_file_of_the_conversation_example(cli, outputs, tmp_path):
    res, uri = outputs["conv"]
    r = cli("export", uri, "--format", "openai", "--to", str(tmp_path / "train.jsonl"))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in open(tmp_path / "train.jsonl")]
    assert len(lines) == res.records
    tool_calls = 0
    for ex in lines:
        assert set(ex) <= {"messages", "tools"}
        asked: set[str] = set()
        for m in ex["messages"]:
            assert m["role"] in ROLES and None not in m.values()
            if m["role"] == "assistant":
                assert m.get("content") or m.get("tool_calls")
                for c in m.get("tool_calls", []):
                    assert set(c) == {"id", "type", "function"} and c["type"] == "function"
                    assert set(c["function"]) == {"name", "arguments"}
                    json.loads(c["function"]["arguments"])
                    asked.add(c["id"])
                    tool_calls += 1
            if m["role"] == "tool":
                assert m["tool_call_id"] in asked and isinstance(m["content"], str)
        assert ex["messages"][-1]["role"] == "assistant" or any(m["role"] == "assistant" for m in ex["messages"])
        for t in ex.get("tools", []):
            assert t["type"] == "function" and {"name", "parameters"} <= set(t["function"])
    assert tool_calls > 0  # the example's tools are used in some dialogs


def test_sharegpt_and_messages(cli, outputs, tmp_path):
    res, uri = outputs["conv"]
    assert cli("export", uri, "-f", "sharegpt", "--to", str(tmp_path / "s.jsonl")).returncode == 0
    lines = [json.loads(x) for x in open(tmp_path / "s.jsonl")]
    assert len(lines) == res.records
    for ex in lines:
        assert all(set(t) == {"from", "value"} and isinstance(t["value"], str) for t in ex["conversations"])
        assert {t["from"] for t in ex["conversations"]} <= {"system", "human", "gpt", "function_call", "observation"}
    assert cli("export", uri, "-f", "messages", "--to", str(tmp_path / "m.jsonl")).returncode == 0
    ids = [json.loads(x)["id"] for x in open(tmp_path / "m.jsonl")]
    assert sorted(ids) == sorted(synth.open(uri).to_table(columns=["id"])["id"].to_pylist())


def test_chat_format_of_structured_records_is_refused(cli, outputs, tmp_path):
    _, uri = outputs["items"]
    r = cli("export", uri, "--format", "openai", "--to", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "needs chat records" in r.stderr and "structured" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_inspect_and_export_from_s3(outputs, s3_bucket, tmp_path):
    import s3fs

    endpoint, bucket = s3_bucket
    res, uri = outputs["items"]
    s3fs.S3FileSystem(endpoint_url=endpoint).put(uri + "/", f"{bucket}/items", recursive=True)
    r = synth_cli("inspect", f"s3://{bucket}/items", "--json", "--endpoint-url", endpoint)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] == res.records
    out = tmp_path / "from-s3.jsonl"
    r = synth_cli("export", f"s3://{bucket}/items", "-f", "jsonl", "--to", str(out), env={"AWS_ENDPOINT_URL": endpoint})
    assert r.returncode == 0, r.stderr
    local_ids = synth.open(uri).to_table(columns=["id"])["id"].to_pylist()
    assert sorted(json.loads(x)["id"] for x in open(out)) == sorted(local_ids) and len(local_ids) == res.records


def test_unfinished_output_shows_only_committed_records(cli, outputs, tmp_path):
    res, uri = outputs["items"]
    part = tmp_path / "part"
    shutil.copytree(uri, part)
    # as after a kill between publishing shard 3 and committing it: its files are there, its entry is not
    (part / "_manifest" / "commits" / "shard-00000003.json").unlink()
    (part / "stats.json").unlink()
    committed = synth.open(str(part)).to_table()
    assert 0 < committed.num_rows < res.records
    assert not any(i.endswith(tuple(f"-{u:010d}" for u in range(30, 40))) for i in committed["id"].to_pylist())
    r = cli("inspect", str(part), "--json")
    doc = json.loads(r.stdout)
    assert doc["status"] == "unfinished" and doc["shards"] == {"planned": 4, "committed": 3}
    assert doc["records"] == committed.num_rows == doc["rows_scanned"]
    text = cli("inspect", str(part)).stdout
    assert "unfinished" in text and "3 committed of 4 planned" in text
    r = cli("export", str(part), "-f", "jsonl", "--to", str(tmp_path / "p.jsonl"))
    assert r.returncode == 0, r.stderr
    assert sum(1 for _ in open(tmp_path / "p.jsonl")) == committed.num_rows


@pytest.mark.parametrize("fmt,target", [("jsonl", "x.jsonl"), ("sql", "x.db"), ("hf", "hf")])
def test_a_failing_export_leaves_nothing(cli, outputs, tmp_path, fmt, target):
    _, uri = outputs["items"]
    broken = tmp_path / "broken"
    shutil.copytree(uri, broken)
    last = sorted((broken / "data").glob("shard-*.parquet"))[-1]
    last.write_bytes(last.read_bytes()[:200])  # damaged after the first shards have been exported
    dest = tmp_path / "dest"
    dest.mkdir()
    r = cli("export", str(broken), "-f", fmt, "--to", str(dest / target), "--batch-rows", "3")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")
    assert list(dest.iterdir()) == []


def test_help_has_examples():
    for cmd in ("inspect", "export"):
        r = synth_cli(cmd, "--help")
        assert r.returncode == 0 and f"Example: synth {cmd}" in r.stdout

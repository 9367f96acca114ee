"""The engine end to end on a real local Ray: sim and HTTP providers, local folders and local S3,
readers, determinism, resume, and failures that must write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import synth

pytestmark = pytest.mark.usefixtures("ray_local")

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "kind": {"type": "string", "enum": ["a", "b", "c"]},
    },
    "required": ["title", "rating", "tags", "kind"],
}


def job(uri: str, count: int = 300, shard: int = 100, **kw):
    doc = {
        "name": "eng",
        "count": count,
        "seed": 3,
        "generator": {
            "kind": "structured",
            "prompt": "Review number {n} of a {thing}.",
            "schema": SCHEMA,
            "vars": {"n": {"kind": "range", "low": 1, "high": 100000}, "thing": ["lamp", "desk", "mug"]},
        },
        "output": {"uri": uri, "shard_size": shard},
    }
    doc.update(kw)
    return doc


@pytest.fixture(params=["ray", "local"])
def executor(request) -> str:
    """Both executors: the session's Ray, and this process alone (no Ray)."""
    return request.param


def read(uri: str):
    return pads.dataset(f"{uri}/data", format="parquet", partitioning="hive").to_table()


def test_sim_job_writes_exactly_n_records_readable_everywhere(tmp_path, executor):
    uri = str(tmp_path / "out")
    res = synth.run(job(uri, engine={"executor": executor}))
    assert res.complete and res.records == 300 and res.dead_letters == 0 and res.shards_written == 3
    table = read(uri)
    ids = table["id"].to_pylist()
    assert len(ids) == 300 == len(set(ids))
    assert table.schema.field("record").type.get_field_index("tags") >= 0  # typed struct, not a JSON string
    # the job's provider entry that answered (no providers: the sim one named default), and the route asked for
    assert set(table["provider"].to_pylist()) == {"default"} and set(table["route"].to_pylist()) == {"default"}
    assert min(table["completion_tokens"].to_pylist()) > 0
    # pandas and DuckDB read the same folder
    import duckdb
    import pandas as pd

    assert len(pd.read_parquet(f"{uri}/data")) == 300
    assert duckdb.sql(f"select count(distinct id) from read_parquet('{uri}/data/**/*.parquet')").fetchall()[0][0] == 300
    stats = json.loads(open(f"{uri}/stats.json").read())
    assert stats["records"] == 300 and stats["complete"] and stats["versions"]["ray"]
    assert stats["spec"]["name"] == "eng"


def test_a_token_budget_on_the_sim_is_kept_once_for_all_workers(tmp_path):
    """Without a budget the offline sim answers inside each worker; with one, a gateway serves it,
    so that two workers do not each spend the whole budget."""
    res = synth.run(
        job(str(tmp_path / "out"), count=2000, shard=50, budget={"max_tokens": 20_000}, engine={"workers": 2})
    )
    assert not res.complete and res.aborted and res.aborted.startswith("budget")
    spent = res.stats["requests"]["prompt_tokens"] + res.stats["requests"]["completion_tokens"]
    assert 15_000 < spent <= 20_000, spent
    assert res.prompt_tokens + res.completion_tokens <= spent  # committed shards only


def test_same_spec_same_ids_and_payload(tmp_path):
    # on Ray and in one process: the executor is not part of what a job makes
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    synth.run(job(a, count=200, engine={"executor": "ray"}))
    synth.run(job(b, count=200, engine={"executor": "local"}))
    ta, tb = (read(u).sort_by("id").drop_columns(["created_at", "latency_ms"]) for u in (a, b))
    assert ta.equals(tb)
    c = str(tmp_path / "c")
    synth.run(job(c, count=200, seed=4))
    assert read(c).sort_by("id")["id"].to_pylist() != ta["id"].to_pylist()


def test_rerun_skips_committed_shards_and_refuses_a_changed_spec(tmp_path, executor):
    uri = str(tmp_path / "out")
    first = synth.run(job(uri, engine={"executor": executor}))
    again = synth.run(job(uri, engine={"executor": executor}))
    assert again.shards_skipped == 3 and again.shards_written == 0 and again.records == first.records
    with pytest.raises(synth.StorageError, match=r"seed: 3 -> 4"):
        synth.run(job(uri, seed=4))
    # a larger count extends the dataset (tests/integration/test_extend.py); --overwrite starts over
    bigger = synth.run(job(uri, count=400, seed=4, engine={"executor": executor}), overwrite=True)
    assert bigger.records == 400 and len(set(read(uri)["id"].to_pylist())) == 400


def test_partitioned_jsonl_output(tmp_path):
    uri = str(tmp_path / "out")
    res = synth.run(
        job(
            uri,
            count=120,
            shard=60,
            output={"uri": uri, "shard_size": 60, "format": "jsonl", "partition_by": ["generator"]},
        )
    )
    assert res.complete
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "data").rglob("*.jsonl"))
    assert files == ["data/generator=structured/shard-00000000.jsonl", "data/generator=structured/shard-00000001.jsonl"]
    rows = [json.loads(line) for f in files for line in open(tmp_path / "out" / f)]
    assert len({r["id"] for r in rows}) == 120


def test_s3_output_through_s3fs(s3_bucket, executor):
    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/ds"
    out = {"uri": uri, "shard_size": 50, "storage": {"endpoint_url": endpoint}}
    res = synth.run(job(uri, count=150, shard=50, output=out, engine={"executor": executor}))
    assert res.complete and res.records == 150
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    table = pads.dataset(f"{bucket}/ds/data", filesystem=fs, format="parquet").to_table()
    assert len(set(table["id"].to_pylist())) == 150
    assert fs.exists(f"{bucket}/ds/stats.json") and fs.exists(f"{bucket}/ds/_manifest/job.json")
    assert not [p for p in fs.find(f"{bucket}/ds") if p.endswith("/")]  # no empty "folder" objects


def test_dead_letters_are_kept_apart_with_reasons(tmp_path, executor):
    uri = str(tmp_path / "out")
    bad = dict(
        SCHEMA,
        properties={**SCHEMA["properties"], "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}},
        required=SCHEMA["required"] + ["code"],
    )
    doc = job(uri, count=40, shard=20, engine={"executor": executor})
    doc["generator"]["schema"] = bad
    res = synth.run(doc)
    # the offline sim ignores regex patterns, so every answer is schema-invalid: re-asked, then a dead letter
    assert res.complete and res.records + res.dead_letters == 40 and res.dead_letters > 0
    dead = pq.read_table(f"{uri}/dead_letters")
    assert set(dead["error_kind"].to_pylist()) == {"malformed_output"}
    assert all(dead["message"].to_pylist())
    ids = set(dead["request_id"].to_pylist()) | (set(read(uri)["id"].to_pylist()) if res.records else set())
    assert len(ids) == 40


def cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "synth", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=240
    )


def test_bad_job_file_exits_nonzero_with_one_line_and_writes_nothing(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(
        f"name: x\ncount: -1\ngenerator: {{kind: structured, prompt: p, schema: {{type: object}}}}\noutput: {{uri: {tmp_path / 'o'}}}\n"
    )
    r = cli("run", str(f))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: count: Input should be greater than 0"]
    assert not (tmp_path / "o").exists()


def test_unknown_generator_and_missing_key_are_one_line(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("name: x\ncount: 1\ngenerator: {kind: nosuchkind}\n")
    r = cli("run", str(f))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nosuchkind" in r.stderr
    f.write_text(
        "name: x\ncount: 1\ngenerator: {kind: structured, prompt: p, schema: {type: object, properties: {a: {type: string}}}}\n"
        "providers: [{model: 'openai:gpt-4o-mini', keys: [{env: SYNTH_NOT_SET_KEY}]}]\n"
    )
    r = cli("run", str(f))
    assert r.returncode == 2
    assert r.stderr.strip() == "error: providers[0].keys[0]: environment variable SYNTH_NOT_SET_KEY is not set"


def test_unreachable_bucket_fails_fast_and_writes_nothing(tmp_path):
    from tests.conftest import free_port

    port = free_port()
    f = tmp_path / "job.yaml"
    f.write_text(
        "name: x\ncount: 5\ngenerator: {kind: structured, prompt: p, schema: {type: object, properties: {a: {type: string}}}}\n"
        f"output: {{uri: 's3://nowhere/x', storage: {{endpoint_url: 'http://127.0.0.1:{port}'}}}}\n"
    )
    r = cli("run", str(f))
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach s3://nowhere/x")


def test_refused_base_url_is_one_line(tmp_path):
    from tests.conftest import free_port

    f = tmp_path / "job.yaml"
    f.write_text(
        "name: x\ncount: 5\ngenerator: {kind: structured, prompt: p, schema: {type: object, properties: {a: {type: string}}}}\n"
        f"providers: [{{model: 'compat:m', base_url: 'http://127.0.0.1:{free_port()}/v1'}}]\n"
        f"output: {{uri: '{tmp_path / 'o'}'}}\n"
    )
    r = cli("run", str(f))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "providers[0].base_url" in lines[0] and "refused" in lines[0]
    assert not (tmp_path / "o").exists()

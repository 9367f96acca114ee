"""Storage and manifest against a real local S3-compatible server, through s3fs."""

from __future__ import annotations

import json

import pytest

from synth.engine.manifest import Manifest
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import OutputSpec, parse_job

GEN = {"kind": "structured", "prompt": "p"}


def out(uri: str, endpoint: str | None = None) -> OutputSpec:
    return OutputSpec(uri=uri, storage={"endpoint_url": endpoint} if endpoint else {})


def test_s3_write_list_remove(s3_bucket):
    endpoint, bucket = s3_bucket
    st = Storage(out(f"s3://{bucket}/ds", endpoint))
    st.preflight()
    st.write_bytes("a/b.json", b"{}")
    assert st.list("a") == ["b.json"]
    assert st.read_bytes("a/b.json") == b"{}"
    assert st.read_bytes("a/none.json") is None
    st.remove("a/b.json")
    assert st.list("a") == []


def test_unreachable_endpoint_is_one_line_and_writes_nothing():
    from tests.conftest import free_port

    st = Storage(out("s3://nobucket/x", f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(StorageError) as e:
        st.preflight()
    assert "\n" not in str(e.value)
    assert "cannot reach s3://nobucket/x" in str(e.value) and "endpoint_url" in str(e.value)


def test_missing_bucket_is_named(s3_server):
    st = Storage(out("s3://no-such-bucket-here/x", s3_server))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here'.*does not exist"):
        st.preflight()


def test_storage_pickles_without_credentials(s3_bucket, monkeypatch):
    import pickle

    endpoint, bucket = s3_bucket
    monkeypatch.setenv("SYNTH_TEST_S3_SECRET", "very-secret-value-123")
    monkeypatch.setenv("SYNTH_TEST_S3_KEY", "synth-test-access")
    spec = OutputSpec(
        uri=f"s3://{bucket}/p",
        storage={"endpoint_url": endpoint, "key_env": "SYNTH_TEST_S3_KEY", "secret_env": "SYNTH_TEST_S3_SECRET"},
    )
    st = Storage(spec)
    assert b"very-secret-value-123" not in pickle.dumps(st)


def test_manifest_commits_intents_and_refuses_a_changed_job(tmp_path):
    job = parse_job({"name": "t", "count": 10, "generator": GEN, "output": {"uri": str(tmp_path / "o")}}, env={})
    st = Storage(job.output)
    m = Manifest(st)
    assert m.open(job) == set()
    m.intend(0, ["data/shard-00000000.parquet"])
    st.write_bytes("data/shard-00000000.parquet", b"x")
    m.intend(1, ["data/shard-00000001.parquet"])
    st.write_bytes("data/shard-00000001.parquet", b"y")
    m.commit(1, {"records": 5, "files": ["data/shard-00000001.parquet"]})
    assert m.committed() == {1}
    # shard 0 was interrupted while publishing: its file goes, the committed one stays
    assert m.clean_interrupted(m.committed()) == 1
    assert st.list("data") == ["shard-00000001.parquet"]
    assert m.committed_files() == [st.url("data/shard-00000001.parquet")]
    # the same job resumes; a different one is refused with the difference named (a larger count
    # extends the job instead: tests/integration/test_extend.py)
    assert Manifest(st).open(job) == {1}
    changed = parse_job(
        {"name": "t", "count": 20, "seed": 3, "generator": GEN, "output": {"uri": str(tmp_path / "o")}}, env={}
    )
    with pytest.raises(StorageError, match="seed: 0 -> 3"):
        Manifest(st).open(changed)
    assert Manifest(st).open(changed, overwrite=True) == set()
    assert json.loads(st.read_bytes("_manifest/job.json"))["spec"]["count"] == 20

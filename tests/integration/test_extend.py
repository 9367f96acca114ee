"""`synth run` as a subprocess: a finished dataset extended to a larger count (the files of the
first run stay byte for byte, a partial last shard is completed by a piece of its own), a smaller
count refused, and `--retry-failed` turning the dead letters of a failed run into records."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.engine.manifest import Manifest
from synth.engine.plan import fingerprint, unit_id
from synth.engine.storage import Storage
from synth.spec import parse_job
from tests.support.runs import http_provider, ids_of, job_doc, synth_run, write_job

JOB = job_doc("extend", "OUT", 100)


def extend_job(tmp_path: Path, doc: dict) -> tuple[Path, Path]:
    out = tmp_path / "out"
    return write_job(tmp_path / "job.yaml", {**doc, "output": {**doc["output"], "uri": str(out)}}), out


def files(out: Path) -> dict[str, bytes]:
    """Every data and dead-letter file, relative path -> bytes."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for d in ("data", "dead_letters")
        for p in (out / d).rglob("*")
        if p.is_file()
    }


def planned(doc: dict, n: int) -> set[str]:
    fp = fingerprint(parse_job({**doc, "count": n}, env={}, check_keys=False))
    return {unit_id(fp, i) for i in range(n)}


@pytest.mark.parametrize("first", [300, 250])
def test_extend_a_finished_dataset_keeps_its_files(tmp_path, first):
    job, out = extend_job(tmp_path, JOB)
    r = synth_run(job, "-n", str(first))
    assert r.returncode == 0, r.stderr[-2000:]
    before = files(out)
    rows_before = {f: pq.read_table(out / f).to_pylist() for f in before if f.startswith("data/")}
    assert len(ids_of(out)) == first

    r = synth_run(job, "-n", "400")
    assert r.returncode == 0, r.stderr[-2000:]
    # the files of the first run are all still there, byte for byte (so are their rows)
    after = files(out)
    assert {f: after.get(f) for f in before} == before
    assert {f: pq.read_table(out / f).to_pylist() for f in rows_before} == rows_before
    got = ids_of(out)
    assert len(got) == len(set(got)) == 400 and set(got) == planned(JOB, 400)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] and stats["planned_units"] == 400 and stats["units"] == 400
    assert stats["records"] + stats["dead_letters"] == 400
    assert json.loads((out / "_manifest" / "job.json").read_text())["spec"]["count"] == 400
    commits = sorted(p.name for p in (out / "_manifest" / "commits").glob("*.json"))
    if first == 250:  # units [250, 300) completed shard 2 as a piece of its own, committed by its own entry
        assert commits == [
            "shard-00000000.json",
            "shard-00000001.json",
            "shard-00000002.g0001.json",
            "shard-00000003.json",
        ]
        piece = sorted(f for f in after if "shard-00000002.g0001" in f)
        assert piece and all(f not in before for f in piece)
        assert sorted(pq.read_table(out / piece[0])["id"].to_pylist()) == sorted(planned(JOB, 300) - planned(JOB, 250))
    else:
        assert commits == [f"shard-{k:08d}.json" for k in range(4)]

    # a smaller count is refused in one line, and nothing changes
    snapshot = files(out), (out / "stats.json").read_bytes(), (out / "_manifest" / "job.json").read_bytes()
    r = synth_run(job, "-n", "250")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "400" in err[0] and "250" in err[0] and "--overwrite" in err[0], r.stderr
    assert (files(out), (out / "stats.json").read_bytes(), (out / "_manifest" / "job.json").read_bytes()) == snapshot


def test_retry_failed_turns_dead_letters_into_records(tmp_path, simulator):
    provider = http_provider(simulator.url, limits={"rpm": 60000}, model="compat:sim-model", max_retries=0)
    doc = job_doc("extend", "OUT", 120, shard=40, providers=[provider], engine={"max_failure_rate": 1.0})
    job, out = extend_job(tmp_path, doc)
    simulator.configure(error_rate=1.0)
    try:
        r = synth_run(job)
    finally:
        simulator.restore()
    assert r.returncode != 0, r.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dead_letters"] == 120 and stats["records"] == 0
    assert len(list((out / "dead_letters").glob("*.parquet"))) == 3

    r = synth_run(job, "--retry-failed")
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] and (stats["units"], stats["records"], stats["dead_letters"]) == (120, 120, 0)
    assert stats["dead_by_kind"] == {}
    m = Manifest(
        Storage(parse_job({**doc, "output": {"uri": str(out), "shard_size": 40}}, env={}, check_keys=False).output)
    )
    # no dead letters referenced by the manifest, none left on disk, no intents
    assert [f for e in m.commit_entries() for f in e["files"] if not f.startswith("data/")] == []
    assert not list((out / "dead_letters").rglob("*.parquet"))
    assert not list((out / "_manifest" / "intents").glob("*"))
    got = ids_of(out)
    assert len(got) == len(set(got)) == 120 and set(got) == planned(doc, 120)
    from_manifest = [i for f in m.committed_files() for i in pq.read_table(f)["id"].to_pylist()]
    assert sorted(from_manifest) == sorted(got)
    # nothing left to retry: a second retry makes nothing
    r = synth_run(job, "--retry-failed")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "stats.json").read_text())["shards"]["written_this_run"] == 0

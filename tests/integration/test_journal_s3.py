"""A remote output: the journal is spooled on the gateway's node and shipped to the bucket, where a
resumed run (or a copy of the dataset) finds it; the cache can live in a bucket too."""

from __future__ import annotations

import json

import pytest
import s3fs

import synth
from tests.integration.test_engine_http import job as http_job

pytestmark = pytest.mark.usefixtures("ray_local")


def test_journal_ships_to_the_bucket_and_the_cache_serves_another_output(simulator, s3_bucket, tmp_path):
    simulator.restore()
    endpoint, bucket = s3_bucket
    doc = http_job(simulator.url, f"s3://{bucket}/first", count=80)
    doc["providers"] = doc["providers"][:1]
    doc["output"]["storage"] = {"endpoint_url": endpoint}
    doc["cache"] = {"path": f"s3://{bucket}/cache"}
    res = synth.run(doc)
    assert res.complete and res.records == 80
    asked = simulator.stats()["ok"]
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    journal = fs.find(f"{bucket}/first/_journal")
    lines = sum(len(fs.cat(p).splitlines()) for p in journal)
    assert journal and lines >= 80  # every answer bought, in the dataset's own store
    assert fs.find(f"{bucket}/cache/answers")
    # the same requests into another output are answered by the bucket's cache
    doc["output"]["uri"] = f"s3://{bucket}/second"
    again = synth.run(doc)
    assert again.records == 80 and simulator.stats()["ok"] == asked
    stats = json.loads(fs.cat(f"{bucket}/second/stats.json"))
    assert stats["answers"]["cache_hits"] == 80
    for p in fs.find(bucket):
        assert b"sk-http-secret" not in fs.cat(p), p

"""A relative output folder is the caller's, also on a cluster whose workers run elsewhere."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.runs import env, ids_of, job_doc, stats_of, synth_cmd, write_job

pytestmark = [pytest.mark.ray]


def test_a_relative_output_lands_in_the_callers_folder_on_a_shared_ray(ray_address, tmp_path):
    job = write_job(tmp_path / "job.yaml", job_doc("rel", "rel/out", 40, shard=20))
    r = subprocess.run(
        synth_cmd(job, address=ray_address), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "rel" / "out"
    got = ids_of(out)
    assert len(got) == len(set(got)) == 40
    assert stats_of(out)["output"] == str(out)

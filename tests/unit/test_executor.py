"""Which executor a run gets: local for small jobs without a cluster, Ray otherwise, as the job says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synth.engine.run import choose_executor
from tests.support.runs import job_doc


def spec(tmp_path, **engine):
    from synth.api import load_job

    return load_job(job_doc("ex", tmp_path / "out", 100, engine=engine) if engine else job_doc("ex", tmp_path, 100))


def test_auto_is_local_for_a_small_job_without_a_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # as in a process that has not started Ray
    job = spec(tmp_path)
    assert choose_executor(job, None, 100) == "local"
    assert choose_executor(job, None, job.engine.local_max_units) == "local"
    assert choose_executor(job, None, job.engine.local_max_units + 1) == "ray"


def test_a_named_cluster_means_ray(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    job = spec(tmp_path)
    assert choose_executor(job, "127.0.0.1:6379", 10) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose_executor(job, None, 10) == "ray"


def test_a_ray_this_process_started_means_ray(tmp_path, monkeypatch, ray_local):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert choose_executor(spec(tmp_path), None, 10) == "ray"


@pytest.mark.parametrize("mode", ["local", "ray"])
def test_the_job_file_decides_when_it_names_one(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    job = spec(tmp_path, executor=mode, local_max_units=5)
    assert choose_executor(job, None, 10) == mode
    assert choose_executor(job, "127.0.0.1:6379", 10_000_000) == mode


def test_a_local_run_never_imports_ray(tmp_path):
    # the point of the local executor: nothing of Ray's start-up is paid
    code = (
        "import sys, synth\n"
        f"r = synth.run({job_doc('ex', tmp_path / 'out', 60, shard=20)!r})\n"
        "assert r.complete and r.records == 60, r\n"
        "print('ray' in sys.modules, 'ray.data' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]

"""`synth submit`: a job sent through the Ray Jobs API to a Ray head started here (`ray start
--head --block`, stopped by its PID), with its key only in the cluster's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml

from tests.conftest import _stop_group, free_port
from tests.support.runs import job_doc

SECRET = "sk-submit-5ecr3t-NOT-IN-METADATA"


@pytest.fixture
def ray_head(tmp_path: Path):
    """A Ray head on 127.0.0.1 with every fixed-port service on a free port; yields the dashboard URL."""
    ports = {
        k: free_port()
        for k in (
            "port",
            "dashboard-port",
            "ray-client-server-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
    }
    env = {**os.environ, "SUBMIT_KEY": SECRET}
    env.pop("RAY_ADDRESS", None)
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray,
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--include-dashboard",
        "true",
        "--num-cpus",
        "2",
        "--object-store-memory",
        str(512 * 1024**2),
        *(a for k, v in ports.items() for a in (f"--{k}", str(v))),
    ]
    # the job's python is the one on the PATH of whoever started Ray: this environment's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(tmp_path / "ray-head.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 90
        while True:  # the Jobs API answers once the dashboard and its agent are up
            try:
                with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start: {(tmp_path / 'ray-head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(proc)  # the head and the processes it started, by our PID
        log.close()
        # `ray start` leaves the head's address for later bare ray.init() calls: remove ours
        current = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
        if current.exists() and current.read_text().strip() == f"127.0.0.1:{ports['port']}":
            current.unlink()


def test_submitted_job_builds_the_dataset_with_the_clusters_key(ray_head: str, simulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        yaml.safe_dump(
            {
                "name": "submitted",
                "count": 60,
                "seed": 3,
                "generator": {
                    "kind": "structured",
                    "prompt": "Item {n}",
                    "vars": {"n": {"kind": "range", "low": 1, "high": 999}},
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                },
                "providers": [
                    {
                        "name": "default",
                        "model": "compat:m",
                        "base_url": simulator.openai_url,
                        "keys": [{"env": "SUBMIT_KEY"}],
                    }
                ],
                "output": {"uri": str(out), "shard_size": 20},
                "engine": {"workers": 1},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SUBMIT_KEY")}  # no key here
    r = subprocess.run(
        [sys.executable, "-m", "synth", "submit", str(job_file), "--address", ray_head, "--wait"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    job_id = r.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_"), r.stdout[-500:]
    ids = pads.dataset(out / "data", partitioning="hive").to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == 60
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"] == 60
    # what Ray keeps of the job names the key variable, never the key
    with urllib.request.urlopen(f"{ray_head}/api/jobs/{job_id}", timeout=10) as resp:
        info = resp.read().decode()
    assert json.loads(info)["status"] == "SUCCEEDED"
    assert "synth_job" in info and SECRET not in info and SECRET not in json.dumps(stats)
    assert SECRET not in r.stdout + r.stderr


def test_submit_address_wins_over_ray_address_and_unreachable_is_one_line(tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job_doc("nowhere", tmp_path / "out", 5)))
    named, ambient = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "RAY_ADDRESS": ambient}
    r = subprocess.run(
        [sys.executable, "-m", "synth", "submit", str(job_file), "--address", named],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach the Ray Jobs API at {named}: "), r.stderr

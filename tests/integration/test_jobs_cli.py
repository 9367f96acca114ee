"""`synth jobs list/status/logs/stop` against a real Ray head with its dashboard (the Jobs API): one
job that finishes, one that runs until it is stopped, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ray.job_submission import JobStatus, JobSubmissionClient

from tests.conftest import free_port
from tests.integration.test_submit import ray_head  # noqa: F401 - the Ray head fixture, reused


def synth(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return subprocess.run(
        [sys.executable, "-m", "synth", "jobs", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )


def wait_for(client: JobSubmissionClient, job_id: str, status: JobStatus, log_line: str) -> None:
    deadline = time.monotonic() + 120
    while client.get_job_status(job_id) != status or log_line not in client.get_job_logs(job_id):
        assert time.monotonic() < deadline, (job_id, client.get_job_status(job_id), client.get_job_logs(job_id))
        time.sleep(0.3)  # polling the job's observable status, bounded by the deadline


def test_jobs_commands_list_show_follow_and_stop_real_jobs(ray_head: str) -> None:  # noqa: F811
    client = JobSubmissionClient(ray_head)
    done = client.submit_job(entrypoint="python -c \"print('made 3 records')\"", metadata={"synth_job": "tiny"})
    running = client.submit_job(
        entrypoint="python -c \"import signal; print('waiting for stop', flush=True); signal.pause()\"",
        metadata={"synth_job": "endless"},
    )
    wait_for(client, done, JobStatus.SUCCEEDED, "made 3 records")
    wait_for(client, running, JobStatus.RUNNING, "waiting for stop")

    r = synth("list", "--address", ray_head, "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert (rows[done]["status"], rows[done]["name"]) == ("SUCCEEDED", "tiny")
    assert (rows[running]["status"], rows[running]["name"]) == ("RUNNING", "endless")
    assert rows[done]["start"] and rows[done]["end"] and rows[running]["end"] is None

    # the address from RAY_ADDRESS, and a plain table: one line per job
    r = synth("list", env={"RAY_ADDRESS": ray_head})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith(f"{done}  SUCCEEDED  tiny") for line in lines), r.stdout
    assert any(line.startswith(f"{running}  RUNNING") for line in lines), r.stdout

    # --address wins over a RAY_ADDRESS that points nowhere
    r = synth("status", done, "--address", ray_head, env={"RAY_ADDRESS": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{done}  SUCCEEDED  tiny  started ") and "message:" in r.stdout

    r = synth("logs", done, "--address", ray_head)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "made 3 records", (r.stdout, r.stderr)
    assert f"Running entrypoint for job {done}" in r.stdout  # the job's whole log, as Ray keeps it
    r = synth("logs", done, "--address", ray_head, "--follow")  # an ended job: its logs, then the end
    assert r.returncode == 0 and "made 3 records" in r.stdout, (r.stdout, r.stderr)

    r = synth("stop", running, "--address", ray_head, "--wait", "60")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{running}  STOPPED"), r.stdout
    assert client.get_job_status(running) == JobStatus.STOPPED
    r = synth("stop", done, "--address", ray_head)  # already ended: left as it is
    assert r.returncode == 0 and r.stdout.startswith(f"{done}  SUCCEEDED"), (r.stdout, r.stderr)

    # an unknown id and an unreachable address: one line each, exit 2
    for args in (("status", "raysubmit_nosuchjob"), ("logs", "raysubmit_nosuchjob"), ("stop", "raysubmit_nosuchjob")):
        r = synth(*args, "--address", ray_head)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == (
            f"error: no Ray job raysubmit_nosuchjob at {ray_head}; `synth jobs list` shows its jobs"
        ), r.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    r = synth("list", "--address", nowhere)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: cannot reach the Ray Jobs API at {nowhere}: "), r.stderr

"""Submitting a job to a Ray cluster through the Ray Jobs API.

The job spec travels as a file in the job's working directory; it names key variables, never key
values, so nothing secret reaches Ray's job metadata. Keys must be set in the cluster's environment
(for KubeRay, from a Kubernetes secret: see cluster/)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from synth.errors import ConfigError
from synth.spec import JobSpec


def submit_job(job: JobSpec, *, address: str | None, wait: bool = False) -> str:
    """Submit ``job`` to the cluster at ``address`` (as ``synth jobs`` resolves it: the option wins
    over RAY_ADDRESS); returns the Ray job id."""
    from ray.job_submission import JobStatus

    from synth.engine.jobs import connect

    client, address = connect(address)
    with tempfile.TemporaryDirectory(prefix="synth-submit-") as tmp:
        Path(tmp, "job.json").write_text(json.dumps(job.model_dump(mode="json")))
        job_id = client.submit_job(
            entrypoint="python -m jobs.build job.json",
            # the spec is merged with this machine's defaults files already: none on the cluster
            runtime_env={"working_dir": tmp, "env_vars": {"SYNTH_CONFIG": "none"}},
            metadata={"synth_job": job.name},
        )
    if wait:
        import asyncio

        async def follow() -> None:
            async for lines in client.tail_job_logs(job_id):
                print(lines, end="")

        asyncio.run(follow())
        status = client.get_job_status(job_id)
        if status != JobStatus.SUCCEEDED:
            raise ConfigError(f"Ray job {job_id} ended {status}; see `ray job logs {job_id}`")
    return job_id

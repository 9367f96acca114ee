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


def submit_job(job: JobSpec, *, address: str, wait: bool = False) -> str:
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection errors vary by transport
        raise ConfigError(
            f"cannot reach the Ray cluster at {address}: {type(e).__name__}; check --address (the dashboard URL, e.g. http://head:8265)"
        ) from None
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

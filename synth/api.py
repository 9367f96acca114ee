"""The SDK: load a job file, validate it whole (including the generator's own options), run it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from synth.errors import ConfigError
from synth.spec import JobSpec, load_spec, parse_job


def load_job(source: str | Path | dict[str, Any] | JobSpec, *, env_file: str | Path | None = None,
             overrides: dict[str, Any] | None = None, check_keys: bool = True) -> JobSpec:
    """Load and validate a job from a YAML/JSON file, a dict, or a JobSpec.

    ``overrides`` patches top-level or dotted fields, e.g. ``{"count": 10, "output.uri": "s3://b/x"}``.
    Raises ConfigError with one line per problem."""
    if isinstance(source, JobSpec):
        job = source
    elif isinstance(source, dict):
        job = parse_job(source, check_keys=check_keys)
    else:
        job = load_spec(source, env_file=env_file, check_keys=check_keys)
    if overrides:
        data = job.model_dump(mode="json", exclude_unset=False)
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        job = parse_job(data, check_keys=check_keys)
    validate_generator(job)
    return job


def validate_generator(job: JobSpec) -> None:
    from synth.generators.registry import create_generator

    create_generator(job.generator, job)


def preflight(job: JobSpec) -> None:
    """Fail fast on what can be checked before anything is written: reachable endpoints."""
    from synth.providers.factory import check_reachable

    async def check() -> None:
        for i, p in enumerate(job.providers):
            if p.base_url:
                try:
                    await check_reachable(p.base_url)
                except ConfigError as e:
                    raise ConfigError(f"providers[{i}].base_url: {e}") from None

    asyncio.run(check())


def run(job: str | Path | dict[str, Any] | JobSpec, *, output: str | None = None, count: int | None = None,
        address: str | None = None, overwrite: bool = False, progress: bool = False) -> Any:
    """Run a job to completion on Ray (embedded local Ray unless ``address`` or RAY_ADDRESS is set).

    Returns a :class:`synth.engine.run.RunResult`. Running it again after an interruption resumes
    it: committed shards are skipped."""
    spec = load_job(job, overrides={"output.uri": output, "count": count})
    from synth.engine.run import run_job

    return run_job(spec, address=address, overwrite=overwrite, progress=progress, preflight=preflight)

"""The SDK: load a job file, validate it whole (including the generator's own options), run it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth.errors import ConfigError
from synth.spec import JobSpec, load_spec, parse_job, with_defaults

if TYPE_CHECKING:
    from synth.defaults import Defaults


def load_job(
    source: str | Path | dict[str, Any] | JobSpec,
    *,
    env_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    check_keys: bool = True,
    defaults: bool | Defaults = True,
) -> JobSpec:
    """Load and validate a job from a YAML/JSON file, a dict, or a JobSpec.

    A file or dict gets the defaults files merged under it (``./synth.yaml``, the user file; see
    :mod:`synth.defaults`); ``defaults=False`` uses none, or pass a loaded ``Defaults``.
    ``overrides`` patches top-level or dotted fields, e.g. ``{"count": 10, "output.uri": "s3://b/x"}``.
    Raises ConfigError with one line per problem."""
    if isinstance(source, JobSpec):
        job = source
    elif isinstance(source, dict):
        job = parse_job(with_defaults(source, defaults), check_keys=check_keys)
    else:
        job = load_spec(source, env_file=env_file, check_keys=check_keys, defaults=defaults)
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
    from synth.generators.registry import create_generator, get_generator

    create_generator(job.generator, job)
    options = get_generator(job.generator.kind).Options.model_validate(job.generator.options)
    lines = [
        f"generator.{where}: {route!r} names no provider of the job; set it to a provider's name or a route "
        f"(providers: {[p.route for p in job.providers]}), or leave it out to use generator.model"
        for where, route in _option_routes(options)
        if not job.serves(route)
    ]
    if not lines:
        lines = check_capabilities(job)
    if lines:
        raise ConfigError("\n".join(lines))


def check_capabilities(job: JobSpec) -> list[str]:
    """One line per route the generator asks for what none of its providers' models can do (a
    structured job routed only to models without structured output): it could only fail."""
    from synth.providers.capabilities import capability_problems

    return capability_problems(job)


def _option_routes(node: Any, where: str = "") -> list[tuple[str, str]]:
    """(location, route) of every option that names a route (its description says so), e.g. a
    conversation's ``correspondent.model``: a route no provider serves is refused at load, not
    once per unit."""
    from pydantic import BaseModel

    found: list[tuple[str, str]] = []
    if isinstance(node, BaseModel):
        for name, field in type(node).model_fields.items():
            value = getattr(node, name)
            at = f"{where}.{field.alias or name}" if where else (field.alias or name)
            if isinstance(value, str) and (field.description or "").startswith("route"):
                found.append((at, value))
            else:
                found += _option_routes(value, at)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _option_routes(v, f"{where}[{i}]")
    elif isinstance(node, dict):
        for k, v in node.items():
            found += _option_routes(v, f"{where}.{k}")
    return found


def preflight(job: JobSpec, *, timeout: float = 3.0) -> None:
    """Fail fast on what can be checked before anything is written: every non-``sim`` provider's
    endpoint (its ``base_url``, else its kind's public default) resolves and takes a TCP
    connection. Each endpoint is checked once, all at the same time, so the whole check takes at
    most about ``timeout`` seconds. One line per provider that cannot be reached."""
    import os

    from synth.providers.base import parse_model
    from synth.providers.clients.wire import openai_base_url
    from synth.providers.factory import check_reachable

    lines: list[tuple[int, str]] = []
    checks: list[tuple[int, str, str, str]] = []  # (index, where, url, how to fix it) per provider
    for i, p in enumerate(job.providers):
        ref = parse_model(p.model)
        if ref.kind == "sim" or (not p.base_url and ref.kind not in ("openai", "openrouter", "compat", "gemini")):
            continue  # offline, or a plugin kind that reaches its service its own way
        if p.base_url:
            from_env = ref.kind == "openai" and p.base_url == os.environ.get("OPENAI_BASE_URL", "").strip()
            checks.append(
                (
                    i,
                    f"providers[{i}].base_url (provider {p.route!r})",
                    p.base_url,
                    "fix OPENAI_BASE_URL (or set base_url)" if from_env else "fix base_url",
                )
            )
            continue
        try:
            if ref.kind == "gemini":
                from synth.providers.clients.gemini import DEFAULT_BASE_URL as url
            else:
                url = openai_base_url(ref.kind, ref.model, None)
        except ConfigError as e:  # compat: has no default
            lines.append((i, f"providers[{i}] (provider {p.route!r}): {e}"))
            continue
        setting = "base_url (or OPENAI_BASE_URL)" if ref.kind == "openai" else "base_url"
        checks.append(
            (i, f"providers[{i}] (provider {p.route!r})", url, f"set {setting} to an endpoint this machine can reach")
        )

    async def check_all() -> dict[tuple[str, str], BaseException | None]:
        endpoints = list(dict.fromkeys((url, fix) for _, _, url, fix in checks))
        done = await asyncio.gather(
            *(check_reachable(url, timeout=timeout, fix=fix) for url, fix in endpoints), return_exceptions=True
        )
        return dict(zip(endpoints, done))

    results = asyncio.run(check_all()) if checks else {}
    for i, where, url, fix in checks:
        err = results[(url, fix)]
        if isinstance(err, ConfigError):
            lines.append((i, f"{where}: {err}"))
        elif err is not None:
            raise err
    if lines:
        raise ConfigError("\n".join(line for _, line in sorted(lines)))


def run(
    job: str | Path | dict[str, Any] | JobSpec,
    *,
    output: str | None = None,
    count: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Any:
    """Run a job to completion on Ray (embedded local Ray unless ``address`` or RAY_ADDRESS is set).

    Returns a :class:`synth.engine.run.RunResult`. Running it again after an interruption resumes
    it: committed shards are skipped."""
    spec = load_job(job, overrides={"output.uri": output, "count": count})
    from synth.engine.run import run_job

    return run_job(spec, address=address, overwrite=overwrite, progress=progress, preflight=preflight)

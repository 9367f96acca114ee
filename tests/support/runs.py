"""Jobs and runs for scenario tests: the job templates, `synth run` as a subprocess (its own embedded
Ray, or ``address=`` a Ray already running), a job run in a background thread, and what a finished
output holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from synth.engine.manifest import Manifest
from synth.engine.run import run_job
from synth.engine.storage import Storage
from synth.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]
KEY_A = "sk-http-secret-alpha-0001"  # HTTP_KEY_A's value, set by conftest

# a structured record of two fields, its prompt numbered by a drawn n
GENERATOR: dict[str, Any] = {
    "kind": "structured",
    "prompt": "Item {n}",
    "vars": {"n": {"kind": "range", "low": 1, "high": 1000000}},
    "schema": {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}


def job_doc(
    name: str,
    out: Path | str,
    count: int,
    *,
    shard: int = 100,
    seed: int = 5,
    prompt: str | None = None,
    providers: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A structured job of ``count`` units into ``out`` (the offline sim unless ``providers``)."""
    doc: dict[str, Any] = {
        "name": name,
        "count": count,
        "seed": seed,
        "generator": {**GENERATOR, "prompt": prompt or GENERATOR["prompt"]},
        "output": {"uri": str(out), "shard_size": shard},
        **extra,
    }
    if providers is not None:
        doc["providers"] = providers
    return doc


def http_provider(url: str, *, limits: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """The job's ``default`` provider: the simulator at ``url`` (its root) over the OpenAI wire,
    with HTTP_KEY_A under ``limits`` (default 6,000 requests a minute)."""
    key = {"env": "HTTP_KEY_A", "alias": "alpha", **(limits or {"rpm": 6000})}
    return {"name": "default", "model": "compat:gpt-4o-mini", "base_url": url + "/v1", "keys": [key], **more}


def write_job(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def env(**extra: str) -> dict[str, str]:
    """This process's environment (conftest's variables included) without RAY_ADDRESS."""
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **extra}


def synth_cmd(job: Path, *extra: str, address: str | None = None, quiet: bool = True) -> list[str]:
    """``python -m synth run job``; with ``address`` it joins that Ray instead of starting its own."""
    cmd = [sys.executable, "-m", "synth", "run", str(job), *(["--quiet"] if quiet else []), *extra]
    return cmd + (["--address", address] if address else [])


def synth_run(
    job: Path,
    *extra: str,
    address: str | None = None,
    quiet: bool = True,
    environ: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synth_cmd(job, *extra, address=address, quiet=quiet),
        env=environ or env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_synth(
    job: Path, *extra: str, address: str | None = None, environ: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        synth_cmd(job, *extra, address=address),
        env=environ or env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(p: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    """Wait for ``p``: (exit code, stderr)."""
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def stop(p: subprocess.Popen[str]) -> None:
    """Kill ``p`` (ours, by its PID) if it still runs."""
    if p.poll() is None:
        p.kill()
        p.communicate()


def wait_for(cond: Callable[[], Any], deadline_s: float, what: str, p: subprocess.Popen[str] | None = None) -> None:
    """Poll an observable condition, bounded by ``deadline_s``; fail early if ``p`` ends first."""
    end = time.monotonic() + deadline_s
    while not cond():
        if p is not None and p.poll() is not None:
            err = p.stderr.read() if p.stderr else ""
            raise AssertionError(f"the run ended (exit {p.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ids_of(out: Path) -> list[str]:
    return pads.dataset(str(out / "data"), partitioning="hive").to_table(columns=["id"])["id"].to_pylist()


def stats_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "stats.json").read_text())  # type: ignore[no-any-return]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def start_run(job: JobSpec) -> tuple[threading.Thread, dict[str, Any], Manifest]:
    """Start ``run_job(job)`` in a thread; its RunResult lands in ``result["run"]``, or the repr of
    what it raised in ``result["error"]``. The manifest shows the shards committed so far."""
    result: dict[str, Any] = {}

    def go() -> None:
        try:
            result["run"] = run_job(job, progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the scenario
            result["error"] = repr(e)

    t = threading.Thread(target=go)
    t.start()
    return t, result, Manifest(Storage(job.output))

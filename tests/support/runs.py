"""A job run in a background thread, for scenarios that change the cluster while it runs."""

from __future__ import annotations

import threading
from typing import Any

from synth.engine.manifest import Manifest
from synth.engine.run import run_job
from synth.engine.storage import Storage
from synth.spec import JobSpec


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

"""A worker actor that dies mid-run (its process killed) is restarted and its shard made again: the
job completes with every unit exactly once. The job's output folder is relative: it lands in the
caller's folder although the cluster's workers run elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.support.runs import (
    env,
    finish,
    http_provider,
    ids_of,
    job_doc,
    stats_of,
    stop,
    synth_cmd,
    wait_for,
    write_job,
)

pytestmark = [pytest.mark.ray]

WORKER = "MapBatches(ShardWorker)"  # how Ray names a worker actor's process


def _workers(since: float) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if WORKER in cmd and (p.info["create_time"] or 0) >= since:
                found.append(p)
        except (psutil.Error, TypeError):
            continue
    return found


def test_a_killed_worker_actor_loses_and_repeats_nothing(ray_address, simulator, tmp_path):
    n = 600
    out = tmp_path / "rel" / "out"
    doc = job_doc("workerloss", "rel/out", n, shard=50, providers=[http_provider(simulator.url, limits={"rpm": 3000})])
    job = write_job(tmp_path / "job.yaml", doc)
    started = time.time() - 1
    cmd = synth_cmd(job, "--no-cache", address=ray_address)
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any((out / "_manifest" / "commits").glob("*.json")), 300, "the first commit", p)
        victims = _workers(started)  # this run's workers: started after it, on the session's Ray
        assert victims, "no worker actor process found"
        os.kill(victims[0].pid, signal.SIGKILL)
        code, err = finish(p, timeout=600)
    finally:
        stop(p)
    assert code == 0, err[-3000:]
    ids = ids_of(out)
    assert len(ids) == len(set(ids)) == n
    stats = stats_of(out)
    assert stats["complete"] and stats["dead_letters"] == 0
    assert stats["output"] == str(out)

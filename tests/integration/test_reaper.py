"""A SIGKILLed `synth run` leaves no Ray process behind: the reaper ends what the driver started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from tests.integration.test_resume import JOB


def test_sigkilled_run_leaves_no_ray_process(tmp_path):
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("OUT", str(out)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth", "run", str(job), "--quiet", "--executor", "ray"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    driver = psutil.Process(proc.pid)
    commits = out / "_manifest" / "commits"
    deadline = time.monotonic() + 240
    ray_procs: list[psutil.Process] = []
    try:
        while time.monotonic() < deadline and not (commits.exists() and list(commits.glob("*.json"))):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)  # polling an observable condition, bounded by the deadline
        ray_procs = [p for p in driver.children(recursive=True) if "reaper" not in " ".join(p.cmdline())]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    names = sorted({p.name() for p in ray_procs if p.is_running()})
    assert any("raylet" in n or "gcs" in n for n in names), names  # the embedded Ray was running
    killed = time.monotonic()
    left = ray_procs
    while left and time.monotonic() - killed < 30:
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)  # polling the processes' state, bounded
    assert not left, [(p.pid, p.name()) for p in left]
    print(f"\n{len(ray_procs)} Ray processes gone {time.monotonic() - killed:.1f} s after the kill")

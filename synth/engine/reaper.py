"""A watcher that outlives an embedded Ray's driver: when the ``synth run`` that started a local Ray
is killed (SIGKILL leaves no chance to shut down), Ray's processes would linger for seconds (actors,
workers) to minutes (dashboard and runtime-env agents), holding CPU and ports. The reaper, a tiny
process of its own, keeps the list of the driver's descendants and ends them when the driver is gone.

Processes are identified by PID and start time, so a PID reused by an unrelated process is never
signalled. Run as ``python -m synth.engine.reaper DRIVER_PID``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 2.0  # between SIGTERM and SIGKILL


def start(driver_pid: int | None = None) -> subprocess.Popen[bytes] | None:
    """Start the reaper of this process's Ray; None when it cannot be started (nothing depends on it)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "synth.engine.reaper", str(driver_pid or os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        return None


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """After a clean shutdown: the reaper has nothing left to do."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _is_ray(p: psutil.Process) -> bool:
    """Ray's own processes (raylet, gcs_server, workers ``ray::...``, dashboard and runtime-env
    agents): anything else the driver started is not the reaper's to end."""
    try:
        text = " ".join([p.name(), *p.cmdline()])
    except psutil.Error:
        return False
    return "ray::" in text or "raylet" in text or "gcs_server" in text or "/ray/" in text


def _descendants(driver: psutil.Process, me: int) -> dict[int, float]:
    out: dict[int, float] = {}
    try:
        for p in driver.children(recursive=True):
            if p.pid != me and _is_ray(p):
                try:
                    out[p.pid] = p.create_time()
                except psutil.Error:
                    pass
    except psutil.Error:
        pass
    return out


def _end(known: dict[int, float]) -> None:
    procs = []
    for pid, born in known.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - born) < 0.01:  # the same process, not a reused PID
                procs.append(p)
        except psutil.Error:
            continue
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def watch(driver_pid: int) -> None:
    me = os.getpid()
    try:
        driver = psutil.Process(driver_pid)
        born = driver.create_time()
    except psutil.Error:
        return
    known: dict[int, float] = {}
    while True:
        try:
            alive = (
                driver.is_running()
                and abs(driver.create_time() - born) < 0.01
                and driver.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            alive = False
        if not alive:
            # what the driver started has been re-parented; end it, and anything it started since
            for pid in list(known):
                try:
                    known.update(_descendants(psutil.Process(pid), me))
                except psutil.Error:
                    pass
            _end(known)
            return
        known.update(_descendants(driver, me))
        known = {pid: t for pid, t in known.items() if psutil.pid_exists(pid)}
        time.sleep(POLL_S)  # a watcher's poll of the driver's liveness, not a wait on our own work


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the driver
    watch(int(sys.argv[1]))


if __name__ == "__main__":
    main()
